//! The generator against the real relay (started in-process on port 0).

mod support;

use std::sync::Mutex;
use std::time::Duration;

use loadgen::Config;
use support::inproc::Relay;

static SERIAL: Mutex<()> = Mutex::new(());

fn config(url: &str) -> Config {
    Config {
        urls: vec![url.to_string()],
        clients: 300,
        rooms: 20,
        rate: 1500.0,
        duration: Duration::from_millis(1500),
        drain: Duration::from_secs(1),
        connect_rate: 3000.0,
        threads: Some(1),
        no_progress: true,
        quiet: true,
        ..Config::default()
    }
}

#[test]
fn exact_counts_and_schema_against_the_relay() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config::without_limits());
    let json = support::temp_path("relay-report.json");
    let hdr = support::temp_path("relay.hdr");
    let plot = support::temp_path("relay.svg");
    let mut c = config(&relay.ws_url());
    c.json = Some(json.clone());
    c.hdr = Some(hdr.clone());
    c.plot = Some(plot.clone());
    c.server_pids = vec![std::process::id()];
    let r = loadgen::run(c).expect("run");
    let m = &r.messages;
    assert_eq!(
        (r.connect.joined, r.connect.failed.total),
        (300, 0),
        "{:?}",
        r.connect
    );
    assert!(m.sent >= 2000, "{m:?}");
    assert_eq!(m.sent, m.due, "{m:?}");
    assert_eq!(m.expected, m.sent * 15, "{m:?}");
    assert_eq!(m.delivered, m.expected, "{m:?}");
    assert_eq!(
        (m.missing, m.duplicated, m.out_of_order, m.seq_gaps),
        (0, 0, 0, 0),
        "{m:?}"
    );
    assert!(r.server_events.errors.is_empty(), "{:?}", r.server_events);
    assert!(r.server.is_some());

    let v = support::check_report_file(&json);
    assert_eq!(v["messages"]["delivered"].as_u64(), Some(m.delivered));
    let bytes = std::fs::read(&hdr).expect("hdr written");
    let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .expect("V2 deflate histogram");
    assert_eq!(h.len(), m.delivered);
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.contains("<polyline"));
    for p in [json, hdr, plot] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn multi_process_binary_against_the_relay() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config::without_limits());
    let json = support::temp_path("relay-workers.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--url",
            &relay.ws_url(),
            "--clients",
            "300",
            "--rooms",
            "20",
            "--rate",
            "1500",
        ])
        .args([
            "--duration",
            "1500ms",
            "--drain",
            "1s",
            "--connect-rate",
            "3000",
        ])
        .args([
            "--workers",
            "2",
            "--source-ips",
            "2",
            "--no-progress",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("spawn loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("MESSAGES"), "{stdout}");
    let v = support::check_report_file(&json);
    let m = &v["messages"];
    assert_eq!(v["loadgen"]["processes"], 2);
    assert_eq!(v["config"]["source_ips"], 2);
    assert_eq!(v["connect"]["joined"], 300);
    assert!(m["sent"].as_u64().unwrap_or(0) >= 2000, "{m}");
    assert_eq!(m["expected"], m["delivered"], "{m}");
    assert_eq!(m["missing"], 0);
    assert_eq!(m["duplicated"], 0);
    assert_eq!(m["out_of_order"], 0);
    let _ = std::fs::remove_file(json);
}
