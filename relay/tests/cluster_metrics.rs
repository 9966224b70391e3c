//! The backplane's metrics are recorded: a global debugging recorder (its own test binary, so
//! no other test's node writes to the same gauges) against a real redis-server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use support::redis::{wait_ready, Redis};
use support::TestRelay;

/// Every metric's value at this moment (a snapshot drains histograms, so take one per check).
fn snapshot(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect()
}

#[tokio::test]
async fn connection_state_and_lag_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let mut redis = Redis::start().await;
    let url = redis.url();
    let node = TestRelay::with(|c| {
        c.redis_url = Some(url);
        c.cluster_name = "metrics".into();
    })
    .await;
    wait_ready(&node.addr.to_string(), true).await;
    let (mut alice, _) = node.joined("m", "alice").await;
    alice.send(json!({"type":"message","text":"hi"})).await;
    alice.recv_type("message").await;

    let values = snapshot(&snapshotter);
    match values.get("relay_redis_connected") {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 1.0),
        other => panic!("relay_redis_connected: {other:?}"),
    }
    match values.get("relay_redis_lag_seconds") {
        Some(DebugValue::Histogram(samples)) => {
            assert!(!samples.is_empty());
            assert!(samples
                .iter()
                .all(|s| (0.0..10.0).contains(&s.into_inner())));
        }
        other => panic!("relay_redis_lag_seconds: {other:?}"),
    }
    for counter in [
        "relay_redis_publish_errors_total",
        "relay_redis_subscribe_errors_total",
    ] {
        assert!(
            matches!(values.get(counter), Some(DebugValue::Counter(0))),
            "{counter} is registered and zero"
        );
    }

    redis.kill();
    wait_ready(&node.addr.to_string(), false).await;
    match snapshot(&snapshotter).get("relay_redis_connected") {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0),
        other => panic!("relay_redis_connected: {other:?}"),
    }
}
