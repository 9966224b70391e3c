//! Webhooks (`--webhook-url`, docs/HOOKS.md "Webhooks") against a real HTTP backend
//! (`support::backend`): batches arrive signed and verifiable, in seq order per room; a
//! backend that refuses or is down for a while gets everything afterwards (duplicates only
//! with the same `eventId`); with the durable store a relay restarted while the backend is
//! down delivers the backlog; the cluster delivers each event once; an overflowing memory
//! buffer is counted; what the publish hook refused is not posted, what it filtered is
//! posted as published.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relay::hooks::http::FailureKind;
use relay::telemetry::metrics::hooks::HookKind;
use serde_json::{json, Value};
use support::backend::{Backend, Recorded, Reply};
use support::durable::TempDir;
use support::redis::Redis;
use support::{Client, TestRelay};

const SECRET: &str = "webhook-test-secret";
const PATH: &str = "/webhook";

fn webhook(backend: &Backend) -> impl FnOnce(&mut relay::Config) {
    let url = backend.url(PATH);
    move |c: &mut relay::Config| {
        c.webhook_url = Some(url);
        c.webhook_secret = Some(relay::config::Secret(SECRET.into()));
        c.webhook_linger = Duration::from_millis(5);
    }
}

/// The events of `requests`, in arrival order.
fn events_of(requests: &[Recorded]) -> Vec<Value> {
    requests
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .collect()
}

/// Waits for requests (each arrival is awaited, no sleep) until the events of the accepted
/// ones (`accepted` picks them by arrival index) satisfy `done`; returns those requests.
async fn until(
    backend: &Backend,
    accepted: impl Fn(usize) -> bool,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Recorded> {
    let mut want = 1;
    loop {
        let got = backend.wait_for(PATH, want).await;
        let taken: Vec<Recorded> = got
            .iter()
            .enumerate()
            .filter(|(i, _)| accepted(*i))
            .map(|(_, r)| r.clone())
            .collect();
        if done(&events_of(&taken)) {
            return taken;
        }
        want = got.len() + 1;
    }
}

/// The log events (messages, edits, deletes) of each room: seqs in arrival order.
fn seqs_by_room(events: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut rooms: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in events {
        if event["type"].as_str().unwrap().starts_with("message") {
            rooms
                .entry(event["room"].as_str().unwrap().to_owned())
                .or_default()
                .push(event["seq"].as_u64().unwrap());
        }
    }
    rooms
}

fn count_messages(events: &[Value], room: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == "message" && e["room"] == room)
        .count()
}

/// Every eventId names one event: a duplicate is the same event again.
fn duplicates_are_the_same_event(events: &[Value]) {
    let mut seen: HashMap<String, &Value> = HashMap::new();
    for event in events {
        let id = event["eventId"]
            .as_str()
            .expect("every event has an eventId");
        if let Some(first) = seen.insert(id.to_owned(), event) {
            assert_eq!(first, event, "one eventId, two different events");
        }
    }
}

/// Seqs as they arrived with repeats removed: what a backend de-duplicating by eventId
/// keeps (a redelivered batch repeats a run of them).
fn deduplicated(seqs: &[u64]) -> Vec<u64> {
    let mut kept = Vec::new();
    for &seq in seqs {
        if !kept.contains(&seq) {
            kept.push(seq);
        }
    }
    kept
}

async fn join(relay: &TestRelay, room: &str, name: &str) -> Client {
    relay.joined(room, name).await.0
}

/// Sends `text` to `room` and waits for its own echo (the message is ordered).
async fn say(client: &mut Client, room: &str, text: &str) -> u64 {
    client
        .send(json!({"type":"message","room":room,"text":text}))
        .await;
    loop {
        let event = client.recv_until("message").await;
        if event["text"] == text {
            return event["seq"].as_u64().unwrap();
        }
    }
}

#[tokio::test]
async fn batches_arrive_signed_and_in_order_per_room_with_stable_ids() {
    let backend = Backend::start().await;
    let relay = TestRelay::with(webhook(&backend)).await;
    let mut alice = join(&relay, "a", "alice").await;
    let mut bob = join(&relay, "b", "bob").await;
    for i in 0..20 {
        alice
            .send(json!({"type":"message","room":"a","text":format!("a{i}")}))
            .await;
        bob.send(json!({"type":"message","room":"b","text":format!("b{i}")}))
            .await;
    }
    let first = say(&mut alice, "a", "edit me").await;
    alice
        .send(json!({"type":"edit","room":"a","seq":first,"text":"edited"}))
        .await;
    alice
        .send(json!({"type":"delete","room":"a","seq":first}))
        .await;
    let got = until(
        &backend,
        |_| true,
        |events| {
            events.iter().any(|e| e["type"] == "message_deleted")
                && count_messages(events, "b") == 20
        },
    )
    .await;
    for request in &got {
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        request
            .verify(SECRET, Duration::from_secs(300))
            .unwrap_or_else(|why| panic!("the signature verifies: {why}"));
        assert!(request
            .verify("not the secret", Duration::from_secs(300))
            .is_err());
    }
    let events = events_of(&got);
    duplicates_are_the_same_event(&events);
    let rooms = seqs_by_room(&events);
    assert_eq!(
        rooms["a"],
        (1..=23).collect::<Vec<u64>>(),
        "in seq order, none missing"
    );
    assert_eq!(rooms["b"], (1..=20).collect::<Vec<u64>>());
    let message = events
        .iter()
        .find(|e| e["type"] == "message" && e["text"] == "a0")
        .unwrap();
    let epoch = message["eventId"]
        .as_str()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap();
    assert_eq!(
        message["eventId"],
        format!("a:{epoch}:1"),
        "<room>:<epoch>:<seq>"
    );
    assert_eq!(message["username"], "alice");
    let edited = events
        .iter()
        .find(|e| e["type"] == "message_edited")
        .unwrap();
    assert_eq!(
        (&edited["target"], &edited["text"]),
        (&json!(first), &json!("edited"))
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "user_joined" && e["username"] == "bob" && e["room"] == "b"),
        "presence too"
    );
    drop((alice, bob));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_backend_that_refuses_or_is_down_gets_everything_afterwards() {
    let mut backend = Backend::start().await;
    // The first three requests are refused (non-2xx), then the backend goes down.
    let refused = 3;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    backend.answer(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) < refused {
            Reply::status(503)
        } else {
            Reply::json(json!({}))
        }
    });
    let relay = TestRelay::with(webhook(&backend)).await;
    let stats = relay
        .relay
        .hub()
        .metrics
        .hooks
        .of(HookKind::Webhook)
        .clone();
    let mut alice = join(&relay, "r", "alice").await;
    for i in 0..10 {
        say(&mut alice, "r", &format!("before {i}")).await;
    }
    backend.wait_for(PATH, refused).await;
    backend.stop();
    for i in 0..20 {
        say(&mut alice, "r", &format!("down {i}")).await;
    }
    // Retried while down: poll the relay's own count (the backend sees nothing now).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stats.failures(FailureKind::Connect) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retries while down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stats.failures(FailureKind::Status) >= refused as u64);
    backend.restart().await;
    let got = until(
        &backend,
        |i| i >= refused,
        |events| count_messages(events, "r") >= 30,
    )
    .await;
    let events = events_of(&got);
    duplicates_are_the_same_event(&events);
    let seqs = deduplicated(&seqs_by_room(&events)["r"]);
    assert_eq!(
        seqs,
        (1..=30).collect::<Vec<u64>>(),
        "nothing missing, in order"
    );
    drop(alice);
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_durable_relay_restarted_while_the_backend_is_down_delivers_the_backlog() {
    let dir = TempDir::new("webhook-backlog");
    let mut backend = Backend::start().await;
    backend.stop();
    let relay = TestRelay::durable(dir.path(), webhook(&backend)).await;
    let mut alice = join(&relay, "r", "alice").await;
    for i in 0..10 {
        say(&mut alice, "r", &format!("m{i}")).await;
    }
    relay.stored().await;
    drop(alice);
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), webhook(&backend)).await;
    backend.restart().await;
    let got = until(
        &backend,
        |_| true,
        |events| count_messages(events, "r") >= 10,
    )
    .await;
    let events = events_of(&got);
    duplicates_are_the_same_event(&events);
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "the whole backlog, in order"
    );
    relay.shutdown().await.unwrap();
    let db = rusqlite::Connection::open(dir.db()).unwrap();
    let cursor: i64 = db
        .query_row(
            "SELECT c.seq FROM webhook_cursors c JOIN rooms r ON r.id = c.room_id \
             WHERE r.name = 'r'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cursor, 10, "the next start does not deliver them again");
}

#[tokio::test]
async fn the_cluster_delivers_each_event_once_not_once_per_node() {
    let redis = Redis::start().await;
    let backend = Backend::start().await;
    let node = |redis: &Redis| {
        let url = redis.url();
        let hook = webhook(&backend);
        move |c: &mut relay::Config| {
            c.redis_url = Some(url);
            c.cluster_name = "webhooks".into();
            hook(c);
        }
    };
    let a = TestRelay::with(node(&redis)).await;
    let b = TestRelay::with(node(&redis)).await;
    for relay in [&a, &b] {
        support::redis::wait_ready(&relay.addr.to_string(), true).await;
    }
    let mut alice = join(&a, "r", "alice").await;
    let mut bob = join(&b, "r", "bob").await;
    for i in 0..10 {
        say(&mut alice, "r", &format!("a{i}")).await;
        say(&mut bob, "r", &format!("b{i}")).await;
    }
    // Each node posts its own events in order: once both fences arrived, every copy a node
    // would (wrongly) post of the other's messages would have come before its fence.
    say(&mut alice, "r", "fence a").await;
    say(&mut bob, "r", "fence b").await;
    let got = until(
        &backend,
        |_| true,
        |events| {
            ["fence a", "fence b"]
                .iter()
                .all(|fence| events.iter().any(|e| e["text"] == *fence))
        },
    )
    .await;
    let events = events_of(&got);
    let mut seqs = seqs_by_room(&events)["r"].clone();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=22).collect::<Vec<u64>>(),
        "each message exactly once"
    );
    let joins = |name: &str| {
        events
            .iter()
            .filter(|e| e["type"] == "user_joined" && e["username"] == name)
            .count()
    };
    assert_eq!((joins("alice"), joins("bob")), (1, 1), "each join once");

    // Bob leaves (node b had no other member of the room): his user_left is posted once.
    bob.send(json!({"type":"leave","room":"r"})).await;
    alice.recv_until("user_left").await;
    say(&mut alice, "r", "fence c").await;
    let got = until(
        &backend,
        |_| true,
        |events| {
            events.iter().any(|e| e["text"] == "fence c")
                && events.iter().any(|e| e["type"] == "user_left")
        },
    )
    .await;
    let events = events_of(&got);
    let lefts = events
        .iter()
        .filter(|e| e["type"] == "user_left" && e["username"] == "bob")
        .count();
    assert_eq!(lefts, 1, "one user_left");
    drop((alice, bob));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_overflowing_memory_buffer_is_counted_and_the_rest_delivered_in_order() {
    let mut backend = Backend::start().await;
    backend.stop();
    let hook = webhook(&backend);
    let relay = TestRelay::with(move |c| {
        hook(c);
        c.webhook_buffer = 5;
        c.webhook_batch = 2;
    })
    .await;
    let mut alice = join(&relay, "r", "alice").await;
    for i in 0..20 {
        say(&mut alice, "r", &format!("m{i}")).await;
    }
    let dropped = support::http::scrape(relay.addr)
        .await
        .get("relay_webhook_dropped_total{reason=\"buffer_full\"}");
    // 21 events (alice's user_joined and 20 messages): at most a batch of 2 being retried
    // and 5 waiting are kept.
    assert!(dropped >= 14.0, "dropped {dropped}");
    backend.restart().await;
    let kept = 21 - dropped as usize;
    let got = until(
        &backend,
        |_| true,
        |events| {
            let ids: HashSet<&str> = events
                .iter()
                .map(|e| e["eventId"].as_str().unwrap())
                .collect();
            ids.len() >= kept
        },
    )
    .await;
    let events = events_of(&got);
    duplicates_are_the_same_event(&events);
    let seqs = deduplicated(&seqs_by_room(&events)["r"]);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "what was kept arrives in seq order: {seqs:?}"
    );
    drop(alice);
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_webhook_hears_what_the_publish_hook_let_through_as_it_was_published() {
    let backend = Backend::start().await;
    backend.answer(|request| {
        if request.path != "/publish" {
            return Reply::json(json!({}));
        }
        match request.json()["text"].as_str() {
            Some(text) if text.contains("spam") => {
                Reply::json(json!({"allow": false, "reason": "no spam"}))
            }
            Some(text) => Reply::json(json!({"allow": true, "text": text.replace("darn", "d**n")})),
            None => Reply::json(json!({"allow": true})),
        }
    });
    let hook = webhook(&backend);
    let publish = backend.url("/publish");
    let relay = TestRelay::with(move |c| {
        hook(c);
        c.publish_hook = Some(publish);
    })
    .await;
    let mut alice = join(&relay, "r", "alice").await;
    alice
        .send(json!({"type":"message","room":"r","text":"buy spam"}))
        .await;
    alice.expect_error("rejected").await;
    alice
        .send(json!({"type":"message","room":"r","text":"oh darn"}))
        .await;
    assert_eq!(alice.recv_until("message").await["text"], "oh d**n");
    say(&mut alice, "r", "fine").await;
    let got = until(
        &backend,
        |_| true,
        |events| events.iter().any(|e| e["text"] == "fine"),
    )
    .await;
    let events = events_of(&got);
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["oh d**n", "fine"],
        "the refused one is not posted, the filtered one as filtered"
    );
    drop(alice);
    relay.shutdown().await.unwrap();
}
