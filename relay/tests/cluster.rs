//! Cluster mode through real sockets and a real Redis: each test starts its own
//! `redis-server` on a free loopback port and several relay nodes on port 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::redis::{readyz, redis_command, wait_ready, Redis};
use support::{Client, TestRelay, EVENT_TIMEOUT};

async fn node(redis: &Redis, adjust: impl FnOnce(&mut relay::Config)) -> TestRelay {
    let url = redis.url();
    let node = TestRelay::with(|c| {
        c.redis_url = Some(url);
        c.cluster_name = "test".into();
        adjust(c);
    })
    .await;
    wait_ready(&node.addr.to_string(), true).await;
    node
}

async fn join(node: &TestRelay, room: &str, username: &str) -> (Client, Value) {
    node.joined(room, username).await
}

#[tokio::test]
async fn messages_cross_nodes_with_one_seq_per_room() {
    let redis = Redis::start().await;
    let a = node(&redis, |_| {}).await;
    let b = node(&redis, |_| {}).await;
    let c = node(&redis, |_| {}).await;
    let (mut alice, joined) = join(&a, "general", "alice").await;
    assert_eq!(joined["seq"], 0);
    let (mut bob, joined) = join(&b, "general", "bob").await;
    assert_eq!(joined["count"], 2, "presence is cluster-wide: {joined}");
    let (carol, joined) = join(&c, "general", "carol").await;
    assert_eq!(joined["count"], 3);
    let names: Vec<&str> = joined["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    for name in ["alice", "bob", "carol"] {
        assert!(names.contains(&name), "{joined}");
    }
    // Join events reach the other nodes' members.
    let event = alice.recv_type("user_joined").await;
    assert_eq!(
        (event["username"].as_str(), event["count"].as_u64()),
        (Some("bob"), Some(2))
    );
    assert_eq!(alice.recv_type("user_joined").await["username"], "carol");
    assert_eq!(bob.recv_type("user_joined").await["username"], "carol");

    // Concurrent senders on three nodes: every member sees the same seqs in the same order.
    const EACH: usize = 20;
    let mut tasks = Vec::new();
    for (i, mut client) in [alice, bob, carol].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                client
                    .send(json!({"type":"message","text":format!("{i}:{n}")}))
                    .await;
            }
            let mut seen = Vec::new();
            while seen.len() < 3 * EACH {
                let m = client.recv_type("message").await;
                seen.push((
                    m["seq"].as_u64().unwrap(),
                    m["text"].as_str().unwrap().to_owned(),
                ));
            }
            seen
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(task.await.unwrap());
    }
    let expected: Vec<u64> = (1..=(3 * EACH) as u64).collect();
    for order in &orders {
        assert_eq!(order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), expected);
        assert_eq!(order, &orders[0], "every node delivers one order");
    }
    // Each sender's own messages keep their order.
    for i in 0..3 {
        let mine: Vec<&String> = orders[0]
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.starts_with(&format!("{i}:")))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|n| format!("{i}:{n}")).collect();
        assert_eq!(mine, sent.iter().collect::<Vec<_>>());
    }
    // Typing crosses nodes too, never echoed to the typist.
    let (mut dave, _) = join(&a, "general", "dave").await;
    let (mut erin, _) = join(&b, "general", "erin").await;
    dave.recv_until("user_joined").await; // erin
    dave.send(json!({"type":"typing","isTyping":true})).await;
    let typing = erin.recv_until("typing").await;
    assert_eq!(typing["username"], "dave");
    assert!(dave.drain().await.iter().all(|e| e["type"] != "typing"));
}

#[tokio::test]
async fn history_and_resume_through_another_node_and_after_every_node_restarted() {
    let redis = Redis::start().await;
    let a = node(&redis, |c| c.history = 5).await;
    let (mut alice, first) = join(&a, "hist", "alice").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        alice
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
        assert_eq!(alice.recv_type("message").await["seq"], n);
    }
    // A reconnect to another node resumes after seq 1 and gets exactly 2 and 3.
    let b = node(&redis, |c| c.history = 5).await;
    let mut again = b.client().await;
    again
        .send(json!({"type":"join","room":"hist","username":"alice2","since":1,"epoch":epoch}))
        .await;
    let joined = again.recv_type("joined").await;
    assert_eq!(joined["epoch"], epoch.as_str(), "the epoch is cluster-wide");
    assert_eq!(joined["recovered"], true);
    let texts: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3"]);

    // Every node gone: history lives on in Redis.
    drop(alice);
    drop(again);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let fresh = node(&redis, |c| c.history = 5).await;
    let mut client = fresh.client().await;
    client
        .send(json!({"type":"join","room":"hist","username":"late","since":2,"epoch":epoch}))
        .await;
    let joined = client.recv_type("joined").await;
    assert_eq!(joined["seq"], 3);
    assert_eq!(joined["recovered"], true);
    assert_eq!(joined["history"][0]["text"], "m3");
    // A gap older than the capped history: recovered false with everything kept.
    for n in 4..=9 {
        client
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
        assert_eq!(client.recv_type("message").await["seq"], n);
    }
    let mut old = fresh.client().await;
    old.send(json!({"type":"join","room":"hist","username":"old","since":1,"epoch":epoch}))
        .await;
    let joined = old.recv_type("joined").await;
    assert_eq!(joined["recovered"], false);
    let seqs: Vec<u64> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn presence_of_a_node_killed_without_goodbye_expires() {
    let redis = Redis::start().await;
    let a = node(&redis, |c| c.presence_ttl = Duration::from_millis(600)).await;
    let (mut alice, _) = join(&a, "lobby", "alice").await;

    // Node B is a separate process, so it can die by SIGKILL with no chance to say goodbye.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", &addr.to_string(), "--redis-url", &redis.url()])
        .args(["--cluster-name", "test", "--presence-ttl", "600ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&addr.to_string(), true).await;
    let mut bob = Client::connect(&format!("ws://{addr}/ws")).await;
    bob.send(json!({"type":"join","room":"lobby","username":"bob"}))
        .await;
    assert_eq!(bob.recv_type("joined").await["count"], 2);
    assert_eq!(alice.recv_type("user_joined").await["username"], "bob");

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Within the TTL plus a prune interval, alice hears that bob left.
    let left = tokio::time::timeout(EVENT_TIMEOUT, alice.recv_until("user_left"))
        .await
        .unwrap();
    assert_eq!(left["username"], "bob");
    assert_eq!(left["count"], 1);
    let (_carol, joined) = join(&a, "lobby", "carol").await;
    assert_eq!(joined["count"], 2, "bob is gone from presence: {joined}");
}

#[tokio::test]
async fn redis_outage_degrades_to_local_delivery_and_recovers_with_gaps_reported() {
    let mut redis = Redis::start().await;
    let a = node(&redis, |_| {}).await;
    let b = node(&redis, |_| {}).await;
    let (mut alice, _) = join(&a, "ops", "alice").await;
    let (mut carol, _) = join(&a, "ops", "carol").await;
    let (mut bob, _) = join(&b, "ops", "bob").await;
    alice.recv_type("user_joined").await;
    alice.recv_type("user_joined").await;
    carol.recv_type("user_joined").await;
    alice.send(json!({"type":"message","text":"before"})).await;
    for client in [&mut alice, &mut carol, &mut bob] {
        assert_eq!(client.recv_type("message").await["seq"], 1);
    }

    redis.kill();
    for client in [&mut alice, &mut carol, &mut bob] {
        let notice = client.recv_type("cluster").await;
        assert_eq!(notice["state"], "degraded");
    }
    wait_ready(&a.addr.to_string(), false).await;
    wait_ready(&b.addr.to_string(), false).await;

    // Local delivery goes on, marked local, with the last cluster seq.
    alice.send(json!({"type":"message","text":"during"})).await;
    for client in [&mut alice, &mut carol] {
        let m = client.recv_type("message").await;
        assert_eq!(
            (m["text"].as_str(), m["local"].as_bool()),
            (Some("during"), Some(true))
        );
        assert_eq!(m["seq"], 1);
    }
    assert!(
        bob.drain().await.iter().all(|e| e["type"] != "message"),
        "nothing crosses nodes without Redis"
    );

    // Redis returns empty (no persistence): nodes reconnect by themselves, say a new life of
    // the room began and that messages may be missing.
    redis.spawn().await;
    let mut epochs = Vec::new();
    for client in [&mut alice, &mut carol, &mut bob] {
        let notice = client.recv_type("cluster").await;
        assert_eq!(notice["state"], "restored", "{notice}");
        assert_eq!(notice["recovered"], false);
        epochs.push(notice["epoch"].as_str().unwrap().to_owned());
    }
    assert!(epochs.iter().all(|e| e == &epochs[0]), "{epochs:?}");
    wait_ready(&a.addr.to_string(), true).await;
    wait_ready(&b.addr.to_string(), true).await;
    bob.send(json!({"type":"message","text":"after"})).await;
    for client in [&mut alice, &mut carol, &mut bob] {
        let m = client.recv_type("message").await;
        assert_eq!(
            (m["text"].as_str(), m["seq"].as_u64()),
            (Some("after"), Some(1))
        );
        assert!(m.get("local").is_none());
    }
}

#[tokio::test]
async fn a_node_cut_off_from_redis_replays_what_it_missed_from_history() {
    let redis = Redis::start().await;
    // Node A logs in as its own Redis user, so it alone can be cut off (and kept off).
    let reply = redis_command(
        &redis,
        &["ACL", "SETUSER", "nodea", "on", ">pw", "~*", "&*", "+@all"],
    )
    .await;
    assert!(reply.starts_with("+OK"), "{reply}");
    let url = format!("redis://nodea:pw@127.0.0.1:{}", redis.port);
    let a = TestRelay::with(|c| {
        c.redis_url = Some(url);
        c.cluster_name = "test".into();
    })
    .await;
    wait_ready(&a.addr.to_string(), true).await;
    let b = node(&redis, |_| {}).await;
    let (mut alice, _) = join(&a, "replay", "alice").await;
    let (mut bob, _) = join(&b, "replay", "bob").await;
    alice.recv_type("user_joined").await;

    redis_command(&redis, &["ACL", "SETUSER", "nodea", "off"]).await;
    redis_command(&redis, &["CLIENT", "KILL", "USER", "nodea"]).await;
    assert_eq!(alice.recv_type("cluster").await["state"], "degraded");
    wait_ready(&a.addr.to_string(), false).await;
    // B still reaches Redis: its messages are sequenced and kept, but A cannot hear them.
    for n in 1..=3 {
        bob.send(json!({"type":"message","text":format!("b{n}")}))
            .await;
        assert_eq!(bob.recv_type("message").await["seq"], n);
    }
    assert_eq!(readyz(&b.addr.to_string()).await, Some(200));

    redis_command(&redis, &["ACL", "SETUSER", "nodea", "on"]).await;
    // A reconnects by itself, replays 1..3 in order, then says nothing was lost.
    for n in 1..=3 {
        let m = alice.recv_type("message").await;
        assert_eq!(
            (m["seq"].as_u64(), m["text"].as_str()),
            (Some(n), Some(format!("b{n}").as_str()))
        );
    }
    let restored = alice.recv_type("cluster").await;
    assert_eq!(restored["state"], "restored");
    assert_eq!(restored["recovered"], true);
    assert_eq!(restored["seq"], 3);
    wait_ready(&a.addr.to_string(), true).await;
    alice.send(json!({"type":"message","text":"back"})).await;
    assert_eq!(bob.recv_type("message").await["seq"], 4);
    assert_eq!(alice.recv_type("message").await["seq"], 4);
}

#[tokio::test]
async fn a_node_shutting_down_removes_its_members_at_once() {
    let redis = Redis::start().await;
    // A long TTL: only the goodbye can explain a prompt user_left.
    let a = node(&redis, |c| c.presence_ttl = Duration::from_secs(120)).await;
    let b = node(&redis, |c| c.presence_ttl = Duration::from_secs(120)).await;
    let (mut alice, _) = join(&a, "bye", "alice").await;
    let (mut bob, _) = join(&b, "bye", "bob").await;
    assert_eq!(alice.recv_type("user_joined").await["username"], "bob");
    let shutdown = tokio::spawn(b.shutdown());
    assert_eq!(bob.expect_close().await, 1001);
    let left = alice.recv_until("user_left").await;
    assert_eq!(
        (left["username"].as_str(), left["count"].as_u64()),
        (Some("bob"), Some(1))
    );
    shutdown.await.unwrap().unwrap();
    let (_carol, joined) = join(&a, "bye", "carol").await;
    assert_eq!(joined["count"], 2);
}

#[tokio::test]
async fn a_full_backplane_queue_answers_server_busy_and_loses_nothing_it_accepted() {
    let redis = Redis::start().await;
    let a = node(&redis, |c| c.cluster_queue = 2).await;
    let (mut alice, _) = join(&a, "busy", "alice").await;
    // Redis stops answering commands for a moment, so the node's queue fills up.
    let reply = redis_command(&redis, &["CLIENT", "PAUSE", "1500", "ALL"]).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    const SENT: usize = 20;
    for n in 0..SENT {
        alice
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
    }
    let mut busy = 0;
    let mut delivered = Vec::new();
    while busy + delivered.len() < SENT {
        let event = alice.recv().await;
        match event["type"].as_str() {
            Some("error") => {
                assert_eq!(event["code"], "server_busy", "{event}");
                busy += 1;
            }
            Some("message") => delivered.push(event["seq"].as_u64().unwrap()),
            _ => panic!("unexpected {event}"),
        }
    }
    assert!(busy > 0, "the queue of 2 must overflow");
    assert!(
        !delivered.is_empty(),
        "what was accepted is delivered once Redis answers"
    );
    let expected: Vec<u64> = (1..=delivered.len() as u64).collect();
    assert_eq!(
        delivered, expected,
        "accepted messages keep one gapless order"
    );
}

#[tokio::test]
async fn a_join_and_a_disconnect_in_one_batch_leave_no_ghost() {
    let redis = Redis::start().await;
    let a = node(&redis, |_| {}).await;
    let (mut bob, _) = join(&a, "busy-room", "bob").await;
    // Hold the node's backplane in one round trip, so what follows queues up behind it and is
    // taken as one batch.
    let reply = redis_command(&redis, &["CLIENT", "PAUSE", "500", "ALL"]).await;
    assert!(reply.starts_with("+OK"), "{reply}");
    bob.send(json!({"type":"message","text":"hold"})).await;
    let mut carol = a.client().await;
    carol
        .send(json!({"type":"join","room":"ghost","username":"carol"}))
        .await;
    drop(carol); // gone before her join is done
    assert_eq!(bob.recv_type("message").await["text"], "hold");
    let (_dave, joined) = join(&a, "ghost", "dave").await;
    assert_eq!(joined["count"], 1, "carol left no ghost: {joined}");
    assert_eq!(joined["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn members_pruned_while_their_node_was_cut_off_are_announced_again() {
    let redis = Redis::start().await;
    let reply = redis_command(
        &redis,
        &["ACL", "SETUSER", "nodea", "on", ">pw", "~*", "&*", "+@all"],
    )
    .await;
    assert!(reply.starts_with("+OK"), "{reply}");
    let ttl = Duration::from_millis(600);
    let url = format!("redis://nodea:pw@127.0.0.1:{}", redis.port);
    let a = TestRelay::with(|c| {
        c.redis_url = Some(url);
        c.cluster_name = "test".into();
        c.presence_ttl = ttl;
    })
    .await;
    wait_ready(&a.addr.to_string(), true).await;
    let b = node(&redis, |c| c.presence_ttl = ttl).await;
    let (_alice, _) = join(&a, "cut", "alice").await;
    let (mut bob, _) = join(&b, "cut", "bob").await;

    // A is cut off longer than the TTL: B prunes alice and tells bob.
    redis_command(&redis, &["ACL", "SETUSER", "nodea", "off"]).await;
    redis_command(&redis, &["CLIENT", "KILL", "USER", "nodea"]).await;
    let left = bob.recv_until("user_left").await;
    assert_eq!(
        (left["username"].as_str(), left["count"].as_u64()),
        (Some("alice"), Some(1))
    );
    // A comes back: alice is still there, so bob hears she is back.
    redis_command(&redis, &["ACL", "SETUSER", "nodea", "on"]).await;
    let back = bob.recv_until("user_joined").await;
    assert_eq!(
        (back["username"].as_str(), back["count"].as_u64()),
        (Some("alice"), Some(2))
    );
    let (_carol, joined) = join(&b, "cut", "carol").await;
    assert_eq!(joined["count"], 3, "{joined}");
}
