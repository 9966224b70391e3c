//! Scroll-back (`{"type":"history"}`) through real sockets: paging a single node's memory to
//! the room's first message, the command's checks, and the same paging in cluster mode on a
//! node that did not see the messages live (a private `redis-server`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use serde_json::{json, Value};
use support::redis::{redis_command, wait_ready, Redis};
use support::{Client, TestRelay};

/// Sends `n` messages from `client` and returns their events as every member gets them.
async fn publish(client: &mut Client, n: u64) -> Vec<Value> {
    for i in 1..=n {
        client
            .send(json!({"type":"message","text":format!("m{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    while seen.len() < n as usize {
        seen.push(client.recv_until("message").await);
    }
    seen
}

/// Asks for a page and returns the answer, which must be the next event.
async fn page(client: &mut Client, command: Value) -> Value {
    client.send(command).await;
    client.recv_type("history").await
}

fn seqs(answer: &Value) -> Vec<u64> {
    answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// Pages `room` back to its first message 10 at a time, checking every entry against the
/// message event as it was delivered live.
async fn page_to_the_start(client: &mut Client, room: &str, live: &[Value]) {
    let first = page(client, json!({"type":"history","room":room,"limit":10})).await;
    assert_eq!(first["room"], room);
    assert_eq!(seqs(&first), (16..=25).collect::<Vec<_>>());
    assert_eq!(first["hasMore"], true);
    assert_eq!(
        first["messages"].as_array().unwrap()[..],
        live[15..25],
        "each entry is the stored message event"
    );
    let second = page(
        client,
        json!({"type":"history","room":room,"before":16,"limit":10}),
    )
    .await;
    assert_eq!(seqs(&second), (6..=15).collect::<Vec<_>>());
    assert_eq!(second["hasMore"], true);
    let last = page(
        client,
        json!({"type":"history","room":room,"before":6,"limit":10}),
    )
    .await;
    assert_eq!(seqs(&last), (1..=5).collect::<Vec<_>>());
    assert_eq!(last["hasMore"], false);
    assert_eq!(last["messages"].as_array().unwrap()[..], live[..5]);
    let past = page(
        client,
        json!({"type":"history","room":room,"before":1,"limit":10}),
    )
    .await;
    assert_eq!(
        (seqs(&past), &past["hasMore"]),
        (vec![], &json!(false)),
        "nothing before the first message"
    );
}

#[tokio::test]
async fn a_single_node_pages_back_to_the_first_message() {
    let relay = TestRelay::start().await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    let (mut bob, _) = relay.joined("general", "bob").await;
    let live = publish(&mut alice, 25).await;
    for _ in 0..25 {
        bob.recv_type("message").await;
    }
    page_to_the_start(&mut bob, "general", &live).await;

    // No `before`, no `limit`, no `room`: the latest 50 of the current room.
    let all = page(&mut bob, json!({"type":"history"})).await;
    assert_eq!(seqs(&all), (1..=25).collect::<Vec<_>>());
    assert_eq!(all["hasMore"], false);
    assert_eq!(
        page(&mut bob, json!({"type":"history","before":1000,"limit":1})).await["messages"][0],
        live[24],
        "`before` past the room is the latest"
    );
    // The answers went to bob only.
    assert!(alice
        .drain()
        .await
        .iter()
        .all(|e| e["type"] != "history" && e["type"] != "message"));
}

#[tokio::test]
async fn history_checks_membership_then_its_bounds() {
    let relay = TestRelay::start().await;
    let mut stranger = relay.client().await;
    stranger.send(json!({"type":"history"})).await;
    stranger.expect_error("not_joined").await;

    let (mut alice, _) = relay.joined("one", "alice").await;
    publish(&mut alice, 3).await;
    alice
        .send(json!({"type":"history","room":"elsewhere"}))
        .await;
    alice.expect_error("not_joined").await;
    // Membership comes before the bounds.
    alice
        .send(json!({"type":"history","room":"elsewhere","limit":0}))
        .await;
    alice.expect_error("not_joined").await;
    for bad in [
        json!({"type":"history","limit":0}),
        json!({"type":"history","limit":101}),
        json!({"type":"history","limit":u64::MAX}),
        json!({"type":"history","before":0}),
    ] {
        alice.send(bad.clone()).await;
        let error = alice.expect_error("invalid_history").await;
        assert!(
            error["message"].as_str().unwrap().contains("1-100"),
            "{bad}"
        );
    }
    for bad in [
        json!({"type":"history","limit":"10"}),
        json!({"type":"history","before":-1}),
        json!({"type":"history","before":1.5}),
    ] {
        alice.send(bad).await;
        alice.expect_error("invalid_json").await;
    }
    for limit in [1, 100] {
        let answer = page(&mut alice, json!({"type":"history","limit":limit})).await;
        assert_eq!(seqs(&answer).len(), limit.min(3));
    }

    // Without `room`, the current room: the one joined last.
    alice
        .send(json!({"type":"join","room":"two","username":"alice"}))
        .await;
    alice.recv_type("joined").await;
    let answer = page(&mut alice, json!({"type":"history"})).await;
    assert_eq!(answer["room"], "two");
    assert_eq!(seqs(&answer), Vec::<u64>::new());
    assert_eq!(answer["hasMore"], false);
    let answer = page(&mut alice, json!({"type":"history","room":"one"})).await;
    assert_eq!(seqs(&answer), [1, 2, 3]);
}

#[tokio::test]
async fn a_cluster_node_pages_the_rooms_stream_it_never_saw_live() {
    let redis = Redis::start().await;
    let url = redis.url();
    let cluster = |history: usize| {
        let url = url.clone();
        move |c: &mut relay::Config| {
            c.redis_url = Some(url);
            c.cluster_name = "hist".into();
            c.history = history;
        }
    };
    // A keeps 100 in Redis (its publishes cap the stream); B keeps only 5 in memory, so
    // everything older that B answers comes from the stream.
    let a = TestRelay::with(cluster(100)).await;
    let b = TestRelay::with(cluster(5)).await;
    for node in [&a, &b] {
        wait_ready(&node.addr.to_string(), true).await;
    }
    let (mut alice, _) = a.joined("general", "alice").await;
    let live = publish(&mut alice, 25).await;
    let (mut bob, joined) = b.joined("general", "bob").await;
    assert_eq!(
        seqs(&json!({"messages": joined["history"]})),
        [21, 22, 23, 24, 25]
    );
    page_to_the_start(&mut bob, "general", &live).await;

    // Redis gone: B answers from its own copy of the room's tail, with no error.
    drop(redis);
    wait_ready(&b.addr.to_string(), false).await;
    bob.send(json!({"type":"history","limit":10})).await;
    let answer = bob.recv_until("history").await;
    assert_eq!(seqs(&answer), [21, 22, 23, 24, 25]);
    assert_eq!(answer["hasMore"], false);
}

#[tokio::test]
async fn a_full_backplane_queue_answers_history_with_server_busy() {
    let redis = Redis::start().await;
    let url = redis.url();
    let node = TestRelay::with(|c| {
        c.redis_url = Some(url);
        c.cluster_name = "busy".into();
        c.cluster_queue = 2;
    })
    .await;
    wait_ready(&node.addr.to_string(), true).await;
    let (mut alice, _) = node.joined("general", "alice").await;
    publish(&mut alice, 3).await;
    // Redis stops answering for a moment, so the node's queue fills up.
    let reply = redis_command(&redis, &["CLIENT", "PAUSE", "1000", "ALL"]).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    const ASKED: usize = 10;
    for _ in 0..ASKED {
        alice.send(json!({"type":"history"})).await;
    }
    let (mut busy, mut answered) = (0, 0);
    while busy + answered < ASKED {
        let event = alice.recv().await;
        match event["type"].as_str() {
            Some("error") => {
                assert_eq!(event["code"], "server_busy", "{event}");
                busy += 1;
            }
            Some("history") => {
                assert_eq!(seqs(&event), [1, 2, 3]);
                answered += 1;
            }
            _ => panic!("unexpected {event}"),
        }
    }
    assert!(busy > 0, "the queue of 2 must overflow");
    assert!(
        answered > 0,
        "what was queued is answered once Redis is back"
    );
}

#[tokio::test]
async fn a_durable_node_pages_from_disk_past_its_memory_and_after_a_restart() {
    let dir = support::durable::TempDir::new("history");
    // Memory keeps 5 messages per room; the disk keeps every one.
    let relay = TestRelay::durable(dir.path(), |c| c.history = 5).await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    let live = publish(&mut alice, 25).await;
    page_to_the_start(&mut alice, "general", &live).await;
    drop(alice);
    relay.shutdown().await.unwrap();

    // After a restart the room opens with its newest 5 from disk, and pages the rest.
    let relay = TestRelay::durable(dir.path(), |c| c.history = 5).await;
    let (mut bob, joined) = relay.joined("general", "bob").await;
    assert_eq!(joined["seq"], 25);
    assert_eq!(joined["history"].as_array().unwrap()[..], live[20..25]);
    page_to_the_start(&mut bob, "general", &live).await;
    relay.shutdown().await.unwrap();
}
