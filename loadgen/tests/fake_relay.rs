//! End-to-end runs of the generator against the in-process fake relay (real loopback sockets).

mod support;

use std::sync::Mutex;
use std::time::Duration;

use loadgen::{Config, Scenario};
use support::fake::{FakeOptions, FakeRelay};

/// The machine has 2 cores: runs in this file take turns so their timings stay meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(url: String, clients: u64, rooms: u64, rate: f64, duration_ms: u64) -> Config {
    Config {
        urls: vec![url],
        clients,
        rooms,
        rate,
        duration: Duration::from_millis(duration_ms),
        drain: Duration::from_millis(1000),
        connect_rate: 2000.0,
        no_progress: true,
        quiet: true,
        threads: Some(2),
        ..Config::default()
    }
}

#[test]
fn counts_are_exact_against_fake_relay() {
    let _turn = serial();
    let relay = FakeRelay::start(FakeOptions::default()).expect("fake relay");
    let report = loadgen::run(config(relay.url(), 200, 10, 2000.0, 1000)).expect("run");
    let m = &report.messages;
    assert_eq!(report.connect.joined, 200, "{report:#?}");
    assert_eq!(report.connect.failed.total, 0);
    assert!(m.sent > 1500, "{m:?}");
    assert_eq!(m.sent, m.due);
    assert_eq!(m.expected, m.sent * 20);
    assert_eq!(m.delivered, m.expected, "{m:?}");
    assert_eq!(
        (m.missing, m.duplicated, m.out_of_order, m.seq_gaps),
        (0, 0, 0, 0)
    );
    assert_eq!(report.latency_ms.count, m.delivered);
    assert!(report.latency_ms.p50 < 100.0, "{:?}", report.latency_ms);
}

#[test]
fn a_stall_shows_in_the_latency_tail() {
    let _turn = serial();
    let relay = FakeRelay::start(FakeOptions {
        stall_after: Some(300),
        stall_for: Duration::from_millis(300),
        ..FakeOptions::default()
    })
    .expect("fake relay");
    let report = loadgen::run(config(relay.url(), 100, 5, 1000.0, 1500)).expect("run");
    let (m, l) = (&report.messages, &report.latency_ms);
    assert_eq!(m.delivered, m.expected, "{m:?}");
    // Messages due during the stall waited for it: open-loop timing must show ~300 ms.
    assert!(l.max >= 250.0, "stall not visible: {l:?}");
    assert!(l.p50 < 50.0, "median should be unaffected: {l:?}");
}

#[test]
fn broadcast_and_churn_scenarios_run() {
    let _turn = serial();
    let relay = FakeRelay::start(FakeOptions::default()).expect("fake relay");
    let mut c = config(relay.url(), 50, 10, 200.0, 500);
    c.scenario = Scenario::Broadcast;
    let r = loadgen::run(c).expect("broadcast");
    assert_eq!(r.config.rooms, 1);
    assert_eq!(r.messages.expected, r.messages.sent * 50);
    assert_eq!(r.messages.delivered, r.messages.expected);

    let mut c = config(relay.url(), 60, 3, 300.0, 1000);
    c.scenario = Scenario::Churn;
    c.churn_rate = 100.0;
    let r = loadgen::run(c).expect("churn");
    let churn = r.churn.expect("churn section");
    assert!(churn.leaves >= 80, "{churn:?}");
    assert_eq!(churn.rejoins, churn.leaves);
    assert!(!r.messages.expected_exact);
    assert_eq!(r.messages.duplicated, 0);
}

#[test]
fn idle_reports_memory_per_connection() {
    let _turn = serial();
    let relay = FakeRelay::start(FakeOptions::default()).expect("fake relay");
    let mut c = config(relay.url(), 200, 10, 0.0, 200);
    c.scenario = Scenario::Idle;
    // The fake relay lives in this process, so this process is "the server".
    c.server_pids = vec![std::process::id()];
    let r = loadgen::run(c).expect("idle");
    assert_eq!(r.connect.joined, 200);
    assert_eq!((r.messages.sent, r.messages.expected), (0, 0));
    let server = r.server.expect("server section");
    let slope = server.memory_per_connection.expect("idle slope");
    assert!(
        slope.joined_full > slope.joined_half && slope.joined_half >= 100,
        "{slope:?}"
    );
    assert!(server.rss_bytes > 0);
}
