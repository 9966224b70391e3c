//! `GET /metrics` through real sockets: scrapes before and after real traffic, and the
//! counters and histograms must have moved by exactly what the traffic did.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::time::Duration;

use relay::telemetry::metrics::{names, LATENCY_SAMPLE_EVERY};
use serde_json::json;
use support::http::{self, scrape};
use support::raw::RawClient;
use support::TestRelay;

/// `after - before` of one series.
fn delta(before: &http::Scrape, after: &http::Scrape, series: &str) -> f64 {
    after.get(series) - before.get(series)
}

#[tokio::test]
async fn messages_move_the_counters_and_histograms_by_the_right_amounts() {
    const MEMBERS: usize = 3;
    const MESSAGES: usize = 20;
    let relay = TestRelay::start().await;
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(relay.joined("metrics", &format!("m{i}")).await.0);
    }
    // Every member has seen every join (each drain's pong comes after them).
    for member in &mut members {
        member.drain().await;
    }
    let before = scrape(relay.addr).await;

    let mut client_bytes = 0;
    for n in 0..MESSAGES {
        let command = json!({"type":"message","text":format!("hello {n}")}).to_string();
        // Client frames under 126 bytes: 2 header bytes and a 4-byte mask.
        client_bytes += command.len() + 6;
        members[0].send_text(&command).await;
    }
    for member in &mut members {
        for n in 0..MESSAGES {
            let event = member.recv_type("message").await;
            assert_eq!(event["text"], format!("hello {n}"));
        }
        // The pong proves the relay finished with everything this member sent before it,
        // and that this member's writer has written (and dropped) every message frame.
        member.drain().await;
        client_bytes += json!({"type":"ping"}).to_string().len() + 6;
    }
    let after = scrape(relay.addr).await;

    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d(names::MESSAGES_RECEIVED), MESSAGES as f64);
    assert_eq!(d(names::MESSAGES_DELIVERED), (MESSAGES * MEMBERS) as f64);
    assert_eq!(d(names::FRAMES_RECEIVED), (MESSAGES + MEMBERS) as f64);
    assert_eq!(d(names::BYTES_RECEIVED), client_bytes as f64);
    // Each member got MESSAGES message frames (70+ bytes each) and a pong.
    assert!(
        d(names::BYTES_SENT) >= (MESSAGES * MEMBERS * 70) as f64,
        "{}",
        d(names::BYTES_SENT)
    );
    assert_eq!(d("relay_fanout_seconds_count"), MESSAGES as f64);
    assert!(d("relay_fanout_seconds_sum") > 0.0);
    // Message numbers start at 1 in a new relay; one in LATENCY_SAMPLE_EVERY is timed.
    let sampled = (1..=MESSAGES as u64)
        .filter(|n| n % LATENCY_SAMPLE_EVERY == 1)
        .count();
    assert_eq!(d("relay_delivery_latency_seconds_count"), sampled as f64);
    assert_eq!(
        d("relay_delivery_latency_seconds_bucket{le=\"+Inf\"}"),
        sampled as f64
    );
    // Every frame written went out in some flusher round: at least one round, and no round
    // wrote more connections than there are.
    let rounds = d("relay_flush_round_seconds_count");
    assert!(rounds >= 1.0, "{rounds}");
    assert_eq!(d("relay_flush_round_delay_seconds_count"), rounds);
    assert_eq!(d("relay_flush_round_connections_count"), rounds);
    assert!(d("relay_flush_round_connections_sum") >= MEMBERS as f64);
    assert!(d("relay_flush_round_connections_sum") <= rounds * MEMBERS as f64);
    assert_eq!(after.get(names::CONNECTIONS_OPEN), MEMBERS as f64);
    assert_eq!(after.get(names::CONNECTIONS_ACCEPTED), MEMBERS as f64);
    assert_eq!(after.get(names::ROOMS), 1.0);
    assert_eq!(after.get(names::ROOM_MEMBERS), MEMBERS as f64);
    assert_eq!(after.get(names::READY), 1.0);
    // Sampled once a second, not at the scrape (the unit test in `metrics` checks it).
    after.get(names::OUTBOUND_QUEUED_BYTES);
    // Sampled by a one-second timer: present, whatever its count is yet.
    after.get("relay_outbound_queue_bytes_count");
}

#[tokio::test]
async fn closes_are_counted_by_code() {
    let relay = TestRelay::with(|c| c.ping_interval = Duration::from_millis(300)).await;
    // The observer answers the relay's pings whenever it reads, so it reads throughout.
    let (mut observer, _) = relay.joined("closes", "observer").await;
    let before = scrape(relay.addr).await;

    // A client that closes first: the relay answers with 1000.
    let (mut leaver, _) = relay.joined("closes", "leaver").await;
    observer.recv_type("user_joined").await;
    leaver
        .send_message(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    assert_eq!(leaver.expect_close().await, 1000);
    // The count is taken before the connection leaves its rooms.
    observer.recv_until("user_left").await;

    // A client that never answers pings: closed with 4001.
    let mut silent = RawClient::connect(relay.addr, None).await;
    silent.send_join("closes", "silent").await;
    observer.recv_until("user_joined").await;
    let silent_side = async move {
        let (code, _) = silent.read_until_close().await;
        code
        // `silent` is dropped here: the relay sees the end of stream.
    };
    let (code, left) = tokio::join!(silent_side, observer.recv_until("user_left"));
    assert_eq!(code, Some(4001));
    assert_eq!(left["username"], "silent");

    let after = scrape(relay.addr).await;
    let d = |series: &str| delta(&before, &after, series);
    let closed = |code: &str, reason: &str| {
        format!(
            "{}{{code=\"{code}\",reason=\"{reason}\"}}",
            names::CONNECTIONS_CLOSED
        )
    };
    assert_eq!(d(&closed("client", "client_closed")), 1.0);
    assert_eq!(d(&closed("4001", "heartbeat_timeout")), 1.0);
    assert_eq!(d(&closed("4008", "slow_consumer")), 0.0);
    assert_eq!(d(&closed("none", "no_close_handshake")), 0.0);
}

#[tokio::test]
async fn a_bad_upgrade_is_counted_as_rejected() {
    let relay = TestRelay::start().await;
    let series = format!("{}{{reason=\"bad_upgrade\"}}", names::CONNECTIONS_REJECTED);
    assert_eq!(scrape(relay.addr).await.get(&series), 0.0);
    let response = http::request(
        relay.addr,
        "GET",
        "/ws",
        &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        None,
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(scrape(relay.addr).await.get(&series), 1.0);
}

#[tokio::test]
async fn each_relay_in_a_process_reports_only_its_own_traffic() {
    let busy = TestRelay::start().await;
    let idle = TestRelay::start().await;
    let (mut client, _) = busy.joined("own", "alice").await;
    client.send(json!({"type":"message","text":"hi"})).await;
    client.recv_type("message").await;
    client.drain().await;
    let busy_scrape = scrape(busy.addr).await;
    let idle_scrape = scrape(idle.addr).await;
    assert_eq!(busy_scrape.get(names::MESSAGES_RECEIVED), 1.0);
    assert_eq!(busy_scrape.get("relay_fanout_seconds_count"), 1.0);
    assert_eq!(idle_scrape.get(names::MESSAGES_RECEIVED), 0.0);
    assert_eq!(idle_scrape.get("relay_fanout_seconds_count"), 0.0);
    assert_eq!(idle_scrape.get(names::CONNECTIONS_OPEN), 0.0);
}

#[tokio::test]
async fn the_reserved_redis_names_recorded_with_the_macros_appear() {
    let relay = TestRelay::start().await;
    // What the Redis backplane does: the `metrics` macros, process-wide.
    metrics::counter!(names::REDIS_PUBLISH_ERRORS).increment(2);
    metrics::gauge!(names::REDIS_CONNECTED).set(1.0);
    metrics::histogram!(names::REDIS_LAG_SECONDS).record(0.003);
    let response = http::get(relay.addr, "/metrics").await;
    let scrape = http::Scrape::parse(&response.body);
    assert!(scrape.get(names::REDIS_PUBLISH_ERRORS) >= 2.0);
    assert_eq!(scrape.get(names::REDIS_CONNECTED), 1.0);
    // A real histogram (buckets configured), not a summary.
    assert!(scrape.get("relay_redis_lag_seconds_bucket{le=\"0.005\"}") >= 1.0);
    assert!(response
        .body
        .contains("# HELP relay_redis_publish_errors_total Failed publishes to Redis."));
}

#[tokio::test]
async fn the_process_cpu_and_memory_are_exported_on_linux() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let relay = TestRelay::start().await;
    let first = scrape(relay.addr).await;
    let rss = first.get(names::PROCESS_RESIDENT_BYTES);
    // This test process (relay, runtime, test harness) holds more than a few MB.
    assert!(rss > 1e6 && rss < 64e9, "rss {rss}");
    assert!(first.get(names::PROCESS_VIRTUAL_BYTES) >= rss);
    assert!(first.get(names::PROCESS_THREADS) >= 1.0);
    let cpu = first.get(names::PROCESS_CPU_SECONDS);
    assert!(cpu >= 0.0, "cpu {cpu}");
    // Burn CPU on this thread until the counter (the whole process's, read at the scrape)
    // shows it: bounded, and however busy the shared machine is.
    let mut burnt = 0.0;
    for _ in 0..100 {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let now = scrape(relay.addr).await.get(names::PROCESS_CPU_SECONDS);
        assert!(
            now >= cpu + burnt,
            "a counter never falls: {now} after {cpu}"
        );
        burnt = now - cpu;
        if burnt >= 0.2 {
            break;
        }
    }
    assert!(burnt >= 0.2, "cpu rose by {burnt} s after 10 s of spinning");
    let response = http::get(relay.addr, "/metrics").await;
    assert!(response
        .body
        .contains("# TYPE process_cpu_seconds_total counter\n"));
    assert!(response
        .body
        .contains("# TYPE process_resident_memory_bytes gauge\n"));
}

#[test]
fn every_metric_is_documented_and_the_dashboard_is_valid_json() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(format!("{root}/docs/METRICS.md")).unwrap();
    for (name, _) in names::PER_RELAY
        .iter()
        .chain(names::REDIS)
        .chain(names::PROCESS)
    {
        assert!(doc.contains(&format!("| `{name}` |")), "METRICS.md: {name}");
    }
    let dashboard = std::fs::read_to_string(format!("{root}/docs/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 5);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                names::PER_RELAY
                    .iter()
                    .chain(names::REDIS)
                    .any(|(name, _)| expr.contains(name)),
                "{expr} uses no relay metric"
            );
        }
    }
}

#[tokio::test]
async fn room_members_follow_joins_leaves_and_disconnects() {
    let relay = TestRelay::start().await;
    let (mut stay, _) = relay.joined("a", "stay").await;
    stay.send(json!({"type":"join","room":"b"})).await;
    stay.recv_type("joined").await;
    let (mut leaver, _) = relay.joined("a", "leaver").await;
    stay.recv_type("user_joined").await;
    let (gone, _) = relay.joined("b", "gone").await;
    stay.recv_type("user_joined").await;
    assert_eq!(scrape(relay.addr).await.get(names::ROOM_MEMBERS), 4.0);

    leaver.send(json!({"type":"leave","room":"a"})).await;
    stay.recv_type("user_left").await;
    drop(gone);
    stay.recv_type("user_left").await;
    let after = scrape(relay.addr).await;
    assert_eq!(after.get(names::ROOM_MEMBERS), 2.0, "stay in a and b");
    assert_eq!(after.get(names::ROOMS), 2.0);
}
