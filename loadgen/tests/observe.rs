//! `--metrics-url`, `--scenario capacity` and `--html` against the real relay in-process on a
//! loopback port (each test bounded: short send phases, small client counts).

mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use loadgen::capacity::{Limit, Outcome};
use loadgen::{Config, Scenario};
use support::inproc::Relay;

/// One test at a time, even the quick ones (a process spawned beside a run delays its timers):
/// they share two cores with the relay.
static SERIAL: Mutex<()> = Mutex::new(());

fn config(url: &str) -> Config {
    Config {
        urls: vec![url.to_string()],
        clients: 100,
        rooms: 10,
        rate: 500.0,
        duration: Duration::from_millis(2500),
        drain: Duration::from_millis(700),
        connect_rate: 3000.0,
        threads: Some(1),
        no_progress: true,
        quiet: true,
        ..Config::default()
    }
}

#[test]
fn metrics_url_cross_checks_deliveries() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config::without_limits());
    let json = support::temp_path("observe-metrics.json");
    let mut c = config(&relay.ws_url());
    c.observe.metrics_urls = vec![relay.metrics_url()];
    c.json = Some(json.clone());
    let r = loadgen::run(c).expect("run");
    assert_eq!(r.connect.joined, 100, "{:?}", r.connect);
    assert_eq!(r.messages.missing, 0, "{:?}", r.messages);
    let m = r.observe.relay_metrics.as_ref().expect("relay_metrics");
    assert_eq!(m.error, None, "{m:?}");
    // Before, about one a second during 2.5 s, after.
    assert!(m.scrapes >= 3, "{m:?}");
    let d = m.delivered.as_ref().expect("delivered check");
    assert!(d.matches, "{d:?}");
    assert_eq!(d.relay, r.messages.delivered, "{d:?}");
    assert!(d.relay > 0);
    assert_eq!(m.connections_open_before, Some(100), "{m:?}");
    assert!(m.connections_open_max >= Some(100), "{m:?}");
    assert!(m.rejected_by_reason.is_empty(), "{m:?}");
    // The relay's process metrics (this test process's, the relay being in-process): CPU
    // over the run and RSS, in the report and its table.
    let cpu = m
        .cpu_seconds
        .expect("process_cpu_seconds_total is exported");
    assert!((0.0..60.0).contains(&cpu), "{m:?}");
    assert!(m.cpu_percent.is_some(), "{m:?}");
    let rss = m
        .rss_bytes
        .expect("process_resident_memory_bytes is exported");
    assert!(rss > 1 << 20, "{m:?}");
    assert!(m.rss_max_bytes >= Some(rss), "{m:?}");
    assert!(m
        .samples
        .iter()
        .all(|s| s.rss_bytes.is_some() && s.cpu_seconds.is_some()));
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("% of one core)   rss "), "{table}");
    assert!(!table.contains("not exported"), "{table}");
    assert!(table.contains("RELAY METRICS"), "{table}");
    assert!(table.contains("delivered: relay"), "{table}");
    let v = support::check_report_file(&json);
    assert_eq!(
        v["relay_metrics"]["delivered"]["matches"],
        serde_json::Value::Bool(true)
    );
    let _ = std::fs::remove_file(json);
}

#[test]
fn metrics_url_on_the_admin_listener_with_the_admin_token() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const TOKEN: &str = "loadgen-test-admin-token";
    let mut rc = relay::Config::without_limits();
    rc.admin_token = Some(TOKEN.parse().expect("a valid admin token"));
    let (relay, admin) = Relay::start_with_admin(rc);
    let admin_url = format!("http://{admin}/metrics");

    // The token goes out as the relay's admin API expects it: its admin routes answer 200
    // with it and 401 (with the hint) without it.
    let rooms =
        loadgen::scrape::MetricsUrl::parse(&format!("http://{admin}/admin/rooms")).expect("url");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = rt
        .block_on(loadgen::scrape::get(&rooms, Some(TOKEN)))
        .expect("200 with the token");
    assert!(body.contains("rooms"), "{body}");
    let refused = rt
        .block_on(loadgen::scrape::get(&rooms, None))
        .expect_err("401 without it");
    assert!(refused.to_string().contains("--admin-token"), "{refused}");
    let wrong = rt.block_on(loadgen::scrape::get(&rooms, Some("not-the-admin-token")));
    assert!(wrong.is_err(), "a wrong token is refused too");

    // A whole run scraping the admin listener with the token: the same cross-check, CPU and
    // RSS as on the main listener.
    let mut c = config(&relay.ws_url());
    c.clients = 50;
    c.duration = Duration::from_millis(1500);
    c.observe.metrics_urls = vec![admin_url];
    c.observe.admin_token = Some(TOKEN.into());
    let r = loadgen::run(c).expect("run");
    assert_eq!(r.connect.joined, 50, "{:?}", r.connect);
    let m = r.observe.relay_metrics.as_ref().expect("relay_metrics");
    assert_eq!((m.error.as_deref(), m.failed_scrapes), (None, 0), "{m:?}");
    let d = m.delivered.as_ref().expect("delivered check");
    assert!(d.matches && d.relay == r.messages.delivered, "{d:?}");
    assert!(
        m.cpu_seconds.is_some() && m.rss_bytes > Some(1 << 20),
        "{m:?}"
    );
    assert_eq!(m.connections_open_before, Some(50), "{m:?}");
}

#[test]
fn unreachable_metrics_url_is_a_report_line() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config::without_limits());
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut c = config(&relay.ws_url());
    c.clients = 20;
    c.duration = Duration::from_millis(500);
    c.drain = Duration::from_millis(300);
    c.observe.metrics_urls = vec![format!("http://127.0.0.1:{port}/metrics")];
    let r = loadgen::run(c).expect("the run goes on without the relay's numbers");
    let m = r.observe.relay_metrics.as_ref().expect("relay_metrics");
    assert_eq!(m.scrapes, 0);
    assert!(m.failed_scrapes >= 2, "{m:?}");
    assert!(m.delivered.is_none());
    let e = m.error.as_deref().unwrap_or("");
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("scrape error: GET"), "{table}");

    // A malformed URL is refused before anything starts.
    let mut c = config(&relay.ws_url());
    c.observe.metrics_urls = vec!["https://127.0.0.1:1/metrics".into()];
    let e = loadgen::run(c).expect_err("https is refused");
    assert!(e.to_string().contains("https"), "{e}");
}

#[test]
fn capacity_finds_the_connection_limit() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The relay takes 150 connections: 60 and 120 clients hold, 180 lose clients.
    let mut rc = relay::Config::without_limits();
    rc.max_connections = 150;
    let relay = Relay::start(rc);
    let json = support::temp_path("observe-capacity.json");
    let html = support::temp_path("observe-capacity.html");
    let mut c = config(&relay.ws_url());
    c.scenario = Scenario::Capacity;
    c.clients = 60;
    c.rooms = 6;
    c.rate = 120.0;
    c.drain = Duration::from_millis(400);
    c.connect_timeout = Duration::from_secs(3);
    c.observe.step_clients = 60;
    c.observe.step_duration = Some(Duration::from_millis(800));
    c.observe.max_steps = 6;
    c.observe.slo = vec!["p99<5s".parse().expect("slo")];
    c.observe.metrics_urls = vec![relay.metrics_url()];
    c.json = Some(json.clone());
    c.observe.html = Some(html.clone());
    // A step on which the generator fell behind (a late timer on this shared 2-core machine:
    // the saturation test is strict by design) says nothing about the relay: try again, at
    // most three times in all.
    let mut attempts = 0;
    let r = loop {
        attempts += 1;
        let started = Instant::now();
        let r = loadgen::run(c.clone()).expect("capacity run");
        assert!(started.elapsed() < Duration::from_secs(60));
        let cap = r.observe.capacity.as_ref().expect("capacity");
        if cap.answer.limit != Limit::Generator || attempts == 3 {
            break r;
        }
    };
    let cap = r.observe.capacity.as_ref().expect("capacity");
    let outcomes: Vec<Outcome> = cap.steps.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Held, Outcome::Held, Outcome::Broke],
        "{:#?}",
        cap.steps
    );
    let last = &cap.steps[2];
    assert_eq!(last.clients, 180);
    assert!(last.failed > 0, "{last:?}");
    assert!(last.reasons[0].contains("failed to join"), "{last:?}");
    // At its cap the relay refuses the scrape on its main listener too (HTTP 503): that step
    // has no relay numbers, and says so rather than guessing.
    assert_eq!(last.relay_delivered_matches, None, "{last:?}");
    assert_eq!(cap.answer.limit, Limit::Relay);
    assert_eq!(cap.answer.clients, Some(120));
    let s = &cap.answer.sentence;
    assert!(
        s.starts_with("The relay holds 120 clients at 120 msg/s"),
        "{s}"
    );
    assert!(s.contains("at 180 clients, "), "{s}");
    // The report's body is the step that held.
    assert_eq!(r.config.scenario, "capacity");
    assert_eq!(r.connect.joined, 120);
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("CAPACITY"), "{table}");
    assert!(table.contains(s.as_str()), "{table}");

    let v = support::check_report_file(&json);
    assert_eq!(v["capacity"]["answer"]["clients"], 120);
    assert_eq!(v["capacity"]["steps"][2]["outcome"], "broke");
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.contains("id=\"answer\""));
    assert!(page.contains("The relay holds 120 clients"));
    assert!(page.contains("<svg"));
    assert!(!page.contains("<script"), "no scripts in the page");
    // Nothing to fetch: no links, images, stylesheets or fonts from anywhere.
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "self-contained"
    );
    for p in [json, html] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn report_interval_rows_and_latency() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config::without_limits());
    let json = support::temp_path("observe-intervals.json");
    let mut c = config(&relay.ws_url());
    c.duration = Duration::from_secs(2);
    c.drain = Duration::from_millis(500);
    c.server_pids = vec![std::process::id()];
    c.observe.report_interval = Some(Duration::from_millis(500));
    c.json = Some(json.clone());
    let r = loadgen::run(c).expect("run");
    let iv = r.observe.intervals.as_ref().expect("intervals");
    // 2.5 s in 0.5 s intervals: 5 or 6 rows (the first and last may be partial).
    assert!((4..=7).contains(&iv.rows.len()), "{iv:#?}");
    assert!(iv.rows.iter().all(|row| row.server_rss_bytes.is_some()));
    let with_latency = iv.rows.iter().filter(|row| row.p99_ms.is_some()).count();
    assert!(with_latency >= 3, "{iv:#?}");
    // The intervals add up to the run's deliveries (rates x lengths, within rounding).
    let summed: f64 = iv
        .rows
        .iter()
        .map(|row| row.delivered_per_second * (row.end_s - row.start_s))
        .sum();
    let delivered = r.messages.delivered as f64;
    assert!(
        (summed - delivered).abs() <= delivered * 0.02 + 10.0,
        "{summed} vs {delivered}"
    );
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("INTERVALS"), "{table}");
    let v = support::check_report_file(&json);
    assert!(v["intervals"]["rows"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let _ = std::fs::remove_file(json);
}

#[test]
fn capacity_needs_a_step() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = config("ws://127.0.0.1:9/ws");
    c.scenario = Scenario::Capacity;
    let e = loadgen::run(c).expect_err("no step size");
    assert!(e.to_string().contains("--step-clients"), "{e}");
}

#[test]
fn help_names_the_new_flags() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .output()
        .expect("spawn");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "LOADGEN_METRICS_URL",
        "LOADGEN_ADMIN_TOKEN",
        "LOADGEN_STEP_CLIENTS",
        "LOADGEN_STEP_RATE",
        "LOADGEN_STEP_DURATION",
        "LOADGEN_MAX_STEPS",
        "LOADGEN_SLO",
        "LOADGEN_HTML",
        "LOADGEN_REPORT_INTERVAL",
        "capacity",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}
