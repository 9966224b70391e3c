//! `--scenario reconnect-storm` against the real relay in-process on a loopback port: a
//! quarter of the clients drop at once, reconnect and resume with `since` and `epoch`, and
//! every count must come out exact (bounded: 200 clients, a few seconds).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly"
)]

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use loadgen::storm::StormPlan;
use loadgen::{Config, Scenario};
use support::inproc::Relay;

/// One run at a time: they share two cores with the relay.
static SERIAL: Mutex<()> = Mutex::new(());

fn storm_config(url: &str) -> Config {
    let mut c = Config {
        urls: vec![url.to_string()],
        scenario: Scenario::ReconnectStorm,
        clients: 200,
        rooms: 10,
        rate: 400.0,
        duration: Duration::from_secs(3),
        drain: Duration::from_millis(800),
        connect_rate: 3000.0,
        threads: Some(1),
        no_progress: true,
        quiet: true,
        ..Config::default()
    };
    c.storm.storm_at = Some(Duration::from_secs(1));
    c
}

#[test]
fn dropped_clients_resume_with_everything_they_missed() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config::without_limits());
    let json = support::temp_path("storm.json");
    let html = support::temp_path("storm.html");
    let mut c = storm_config(&relay.ws_url());
    // Away for up to 300 ms each: the rooms move on meanwhile (about 12 messages per room),
    // so the rejoins' histories have something to bring.
    c.storm.storm_spread = Duration::from_millis(300);
    c.observe.metrics_urls = vec![relay.metrics_url()];
    c.json = Some(json.clone());
    c.observe.html = Some(html.clone());
    let plan = StormPlan::of(&c).expect("a storm run");
    let expect_dropped = (0..200).filter(|&i| plan.drops(i)).count() as u64;
    assert!((45..=55).contains(&expect_dropped), "{expect_dropped}");

    let started = Instant::now();
    let r = loadgen::run(c).expect("storm run");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(r.connect.joined, 200, "{:?}", r.connect);
    assert_eq!(r.config.scenario, "reconnect-storm");
    let s = r.observe.storm.as_ref().expect("storm section");
    let table = loadgen::report::render_table(&r);

    // Everyone dropped came back, resumed, and the relay had kept all they missed.
    assert_eq!(s.dropped, expect_dropped, "{s:#?}");
    assert_eq!(s.resumed, s.dropped, "{s:#?}\n{table}");
    assert_eq!(s.recovered, s.dropped, "{s:#?}");
    assert_eq!((s.not_recovered, s.recovered_absent, s.failed), (0, 0, 0));
    assert_eq!(s.history_truncated, 0);
    assert_eq!(s.time_to_resumed_ms.count, s.dropped);
    let back = s.all_back_s.expect("all back");
    // The last one reconnects up to 300 ms after the drop: back within a few seconds.
    assert!(back > 0.0 && back < 5.0, "{back}");
    assert!(s.time_to_resumed_ms.max <= back * 1e3 + 1.0, "{s:#?}");

    // The gap: every message between `since` and the rejoin came in its history, once.
    let g = &s.gap;
    assert!(
        g.messages > 0,
        "the rooms moved on while they were away: {g:?}"
    );
    assert_eq!(g.in_history, g.messages, "{g:?}");
    assert_eq!(g.missing, 0, "{g:?}");
    assert!(g.via_history >= g.messages, "{g:?}");
    assert!(
        g.sends_skipped > 0,
        "away for up to 300 ms at 2 msg/s each: {g:?}"
    );

    // Exact counts for both groups: nothing lost, repeated or reordered.
    let d = &s.dropped_clients;
    assert_eq!(d.clients, s.dropped);
    assert!(d.expected > 0);
    assert_eq!(
        (
            d.delivered,
            d.missing,
            d.duplicated,
            d.out_of_order,
            d.seq_gaps
        ),
        (d.expected, 0, 0, 0, 0),
        "{d:?}"
    );
    let o = &s.others;
    assert_eq!(o.clients, 200 - s.dropped);
    assert_eq!(
        (
            o.delivered,
            o.missing,
            o.duplicated,
            o.out_of_order,
            o.seq_gaps
        ),
        (o.expected, 0, 0, 0, 0),
        "{o:?}"
    );
    // And the run as a whole (the histories' deliveries included).
    let m = &r.messages;
    assert!(m.expected_exact, "{m:?}");
    assert_eq!(
        (m.missing, m.duplicated, m.out_of_order, m.seq_gaps),
        (0, 0, 0, 0),
        "{m:?}"
    );
    assert_eq!(m.delivered, d.delivered + o.delivered);
    assert_eq!(r.connect.failed.total, 0);

    // The others' latency around the storm, and the relay's own count still agreeing: it
    // counts what it queued live (the frames thrown away at the drop too, not the histories).
    // It may count a few more: frames it queued to a dropped connection between our FIN and
    // its noticing it, never written. Each of those is a message of some client's gap.
    let l = &s.others_latency;
    assert!(l.before.count > 0 && l.during.count > 0, "{l:?}");
    assert!(l.window_s >= 0.1, "{l:?}");
    assert!(!l.p99_timeline.is_empty());
    let metrics = r.observe.relay_metrics.as_ref().expect("relay metrics");
    let check = metrics.delivered.as_ref().expect("delivered check");
    assert_eq!(check.allowance, g.messages, "{check:?}");
    assert!(
        check.matches && check.difference >= -(check.tolerance as i64),
        "{check:?} (storm {g:?})"
    );
    // The relay saw the dropped clients vanish (no close frame) and the rest leave politely.
    assert!(
        metrics.closed_by_code.get("none") >= Some(&s.dropped),
        "{metrics:?}"
    );

    assert!(table.contains("RECONNECT STORM"), "{table}");
    assert!(table.contains("all back and resumed after"), "{table}");
    assert!(
        table.contains(&format!("{} of 200 clients dropped at 1.0s", s.dropped)),
        "{table}"
    );
    assert!(
        table.contains("lost, repeated and reordered nothing"),
        "{table}"
    );
    let v = support::check_report_file(&json);
    assert_eq!(v["storm"]["recovered"], s.dropped);
    assert_eq!(v["config"]["scenario"], "reconnect-storm");
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.contains("id=\"storm\""));
    assert!(page.contains("Reconnect storm"));
    assert!(page.contains("clients dropped at 1.0s"));
    assert!(!page.contains("<script"));
    assert!(
        !page.contains("class=\"answer bad\""),
        "a clean storm is not flagged"
    );
    for p in [json, html] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_dropped_client_that_cannot_get_back_is_counted_not_hidden() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The relay lets one address open 40 connections at once and then one a second: the
    // ramp-up uses the burst, so (almost) every reconnect half a second later is refused
    // with 429, and the report must say who did not get back.
    let mut rc = relay::Config::without_limits();
    rc.connection_rate_per_ip = 1.0;
    rc.connection_burst_per_ip = 40;
    let relay = Relay::start(rc);
    let mut c = storm_config(&relay.ws_url());
    c.clients = 40;
    c.rooms = 4;
    c.rate = 80.0;
    c.duration = Duration::from_millis(1500);
    c.drain = Duration::from_millis(300);
    c.connect_timeout = Duration::from_secs(2);
    c.storm.storm_at = Some(Duration::from_millis(500));
    c.storm.storm_fraction = 1.0;
    let r = loadgen::run(c).expect("storm run");
    let s = r.observe.storm.as_ref().expect("storm section");
    assert_eq!(r.connect.joined, 40);
    assert_eq!(s.dropped, 40, "{s:#?}");
    // A token or two refills before the storm: those reconnects resume. Each client is
    // counted once either way.
    assert_eq!(s.resumed + s.failed, s.dropped, "{s:#?}");
    assert!(s.failed >= 35, "{s:#?}");
    assert_eq!(s.all_back_s, None);
    assert!(
        !r.messages.expected_exact,
        "lost clients make the count uncertain"
    );
    assert!(
        r.connect
            .failure_samples
            .iter()
            .any(|f| f.starts_with("reconnect storm:")),
        "{:?}",
        r.connect.failure_samples
    );
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("NOT ALL BACK"), "{table}");
}

#[test]
fn the_storm_flags_are_in_the_help_with_their_env_vars() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .output()
        .expect("spawn");
    let help = String::from_utf8_lossy(&out.stdout);
    for s in [
        "reconnect-storm",
        "--storm-fraction",
        "LOADGEN_STORM_FRACTION",
        "--storm-at",
        "LOADGEN_STORM_AT",
        "--storm-spread",
        "LOADGEN_STORM_SPREAD",
    ] {
        assert!(help.contains(s), "{s} missing from --help");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--scenario",
            "reconnect-storm",
            "--duration",
            "2s",
            "--storm-at",
            "5s",
            "--url",
            "ws://127.0.0.1:9/ws",
        ])
        .output()
        .expect("spawn");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--storm-at"), "{err}");
}
