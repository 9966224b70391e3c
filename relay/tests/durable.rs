//! History on disk (`--data-dir`): what any client received survives a restart and
//! `kill -9`, rooms carry their epoch and seq on, retention trims, and every bad situation
//! (a directory in use or not creatable, a newer, foreign or damaged database, a full disk)
//! gets a clear line or a documented answer, never a panic or silent loss.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::durable::{refused, RelayProcess, TempDir};
use support::raw::{self, RawClient, RawFrame};
use support::{Client, TestRelay, EVENT_TIMEOUT};

async fn join(url: &str, room: &str, name: &str, extra: Value) -> (Client, Value) {
    let mut client = Client::connect(url).await;
    let mut join = json!({"type":"join","room":room,"username":name});
    if let (Some(join), Some(extra)) = (join.as_object_mut(), extra.as_object()) {
        join.extend(extra.clone());
    }
    client.send(join).await;
    let joined = client.recv_type("joined").await;
    (client, joined)
}

fn history_seqs(joined: &Value) -> Vec<(u64, String)> {
    joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Polls `check` until it holds (background work with no event to await: retention).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stored_count(dir: &TempDir) -> i64 {
    let db =
        rusqlite::Connection::open_with_flags(dir.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    db.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn every_message_a_client_received_survives_kill_9() {
    let dir = TempDir::new("kill9");
    let data = dir.path().to_str().unwrap().to_owned();
    let relay = RelayProcess::start(&["--data-dir", &data, "--history", "500"]).await;
    let (mut alice, joined) = join(&relay.url(), "crash", "alice", json!({})).await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let (mut bob, _) = join(&relay.url(), "crash", "bob", json!({})).await;
    alice.recv_type("user_joined").await;

    // 200 messages from two clients, interleaved; then kill -9 with the last ones perhaps
    // still on their way.
    for n in 0..100 {
        alice
            .send(json!({"type":"message","text":format!("a{n}")}))
            .await;
        bob.send(json!({"type":"message","text":format!("b{n}")}))
            .await;
    }
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    for client in [&mut alice, &mut bob] {
        for _ in 0..150 {
            let m = client.recv_type("message").await;
            let (seq, text) = (m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap());
            if let Some(before) = seen.insert(seq, text.to_owned()) {
                assert_eq!(before, text, "two messages with seq {seq}");
            }
        }
    }
    relay.kill9().await;

    let relay = RelayProcess::start(&["--data-dir", &data, "--history", "500"]).await;
    let (_carol, joined) = join(&relay.url(), "crash", "carol", json!({})).await;
    assert_eq!(joined["epoch"], epoch.as_str(), "the room's life goes on");
    let history = history_seqs(&joined);
    let stored: BTreeMap<u64, String> = history.iter().cloned().collect();
    assert_eq!(stored.len(), history.len(), "no seq repeated: {history:?}");
    for (seq, text) in &seen {
        assert_eq!(
            stored.get(seq),
            Some(text),
            "seq {seq} was received but is not stored"
        );
    }
    let seqs: Vec<u64> = stored.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "contiguous from 1"
    );
    assert_eq!(joined["seq"].as_u64(), seqs.last().copied());

    // Resuming from the last seq seen before the crash: recovered, and only what was missed.
    let last_seen = *seen.keys().last().unwrap();
    let (mut dave, joined) = join(
        &relay.url(),
        "crash",
        "alice",
        json!({"since": last_seen, "epoch": epoch}),
    )
    .await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let missed = history_seqs(&joined);
    assert!(missed.iter().all(|(seq, _)| *seq > last_seen), "{missed:?}");
    // The next message continues the room's seq.
    dave.send(json!({"type":"message","text":"after"})).await;
    let after = dave.recv_type("message").await;
    assert_eq!(after["seq"].as_u64(), Some(*seqs.last().unwrap() + 1));
    relay.kill9().await;
}

#[tokio::test]
async fn a_graceful_restart_keeps_rooms_and_resume_recovers() {
    let dir = TempDir::new("restart");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (mut alice, joined) = relay.joined("kept", "alice").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    for n in 1..=5 {
        alice
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
        assert_eq!(alice.recv_type("message").await["seq"], n);
    }
    drop(alice);
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let mut alice = relay.client().await;
    alice
        .send(json!({"type":"join","room":"kept","username":"alice","since":3,"epoch":epoch}))
        .await;
    let joined = alice.recv_type("joined").await;
    assert_eq!(joined["epoch"], epoch.as_str());
    assert_eq!(joined["seq"], 5);
    assert_eq!(joined["recovered"], true);
    assert_eq!(
        history_seqs(&joined),
        vec![(4, "m4".to_owned()), (5, "m5".to_owned())]
    );
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn durable_rooms_fan_out_in_one_order_to_every_member() {
    let dir = TempDir::new("order");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        members.push(relay.joined("order", name).await.0);
    }
    for (i, member) in members.iter_mut().enumerate() {
        for n in 0..20 {
            member
                .send(json!({"type":"message","text":format!("{i}-{n}")}))
                .await;
        }
    }
    let mut orders = Vec::new();
    for member in &mut members {
        let mut order = Vec::new();
        while order.len() < 60 {
            let event = member.recv().await;
            if event["type"] == "message" {
                order.push((event["seq"].as_u64().unwrap(), event["text"].to_string()));
            }
        }
        assert_eq!(
            order.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=60).collect::<Vec<_>>()
        );
        orders.push(order);
    }
    assert!(orders.windows(2).all(|w| w[0] == w[1]), "one order for all");
    relay.stored().await;
    assert_eq!(stored_count(&dir), 60);
}

#[tokio::test]
async fn messages_read_in_one_round_are_stored_in_one_transaction() {
    let dir = TempDir::new("round");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let mut raw = RawClient::over(&relay, None).await;
    raw.send_join("round", "burst").await;
    let text = |frame: RawFrame| String::from_utf8(frame.payload).unwrap();
    assert!(text(raw.read_frame().await.unwrap()).contains(r#""type":"joined""#));
    let before = relay.relay.stats().store_transactions;
    // 50 messages in one write: one read, so one scheduler round.
    let burst: Vec<u8> = (0..50)
        .flat_map(|n| {
            let message = format!(r#"{{"type":"message","text":"m{n}"}}"#);
            raw::frame(true, raw::TEXT, message.as_bytes())
        })
        .collect();
    raw.send_raw(&burst).await;
    let mut seqs = Vec::new();
    while seqs.len() < 50 {
        let event: Value = serde_json::from_str(&text(raw.read_frame().await.unwrap())).unwrap();
        if event["type"] == "message" {
            seqs.push(event["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    let stats = relay.relay.stats();
    // Handed to the writer per message, the writer (on its own thread) woke for the first
    // and committed the rest in several transactions as they trickled in.
    let transactions = stats.store_transactions - before;
    assert!(
        transactions <= 2,
        "the round's 50 messages go in one transaction (two if the write was read in two \
         parts), not {transactions}"
    );
    assert_eq!(stats.store_written, 50);
    assert_eq!(stored_count(&dir), 50);
}

#[tokio::test]
async fn retention_trims_by_count_and_by_age() {
    let dir = TempDir::new("retain-count");
    let relay = TestRelay::durable(dir.path(), |c| {
        c.retain_messages = 10;
        c.retain_age = Duration::ZERO;
        c.retain_interval = Duration::from_millis(50);
    })
    .await;
    let (mut alice, _) = relay.joined("long", "alice").await;
    for n in 0..30 {
        alice
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
    }
    for _ in 0..30 {
        alice.recv_type("message").await;
    }
    eventually("10 messages kept", || stored_count(&dir) == 10).await;
    assert!(relay.relay.stats().store_trimmed >= 20);
    relay.shutdown().await.unwrap();

    let dir = TempDir::new("retain-age");
    let relay = TestRelay::durable(dir.path(), |c| {
        c.retain_messages = 0;
        c.retain_age = Duration::from_secs(2);
        c.retain_interval = Duration::from_millis(50);
    })
    .await;
    let (mut alice, _) = relay.joined("old", "alice").await;
    for n in 0..5 {
        alice
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
        alice.recv_type("message").await;
    }
    relay.stored().await;
    assert_eq!(stored_count(&dir), 5, "kept until they are 2 s old");
    eventually("old messages removed", || stored_count(&dir) == 0).await;
    // The room's seq goes on past what retention removed.
    alice.send(json!({"type":"message","text":"new"})).await;
    assert_eq!(alice.recv_type("message").await["seq"], 6);
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_disk_keeps_live_traffic_going_and_says_so() {
    let dir = TempDir::new("full");
    // A database capped at 96 KiB: writes past it fail with SQLITE_FULL, as on a full disk.
    let relay = TestRelay::durable(dir.path(), |c| {
        c.store_max_bytes = 96 * 1024;
        c.room_linger = Duration::ZERO;
    })
    .await;
    let (mut alice, _) = relay.joined("full", "alice").await;
    let (mut bob, _) = relay.joined("full", "bob").await;
    alice.recv_type("user_joined").await;
    let text = "x".repeat(1500);
    for n in 0..200u64 {
        alice
            .send(json!({"type":"message","text":format!("{n} {text}")}))
            .await;
        // Live traffic goes on: every message still reaches both members, in order.
        for client in [&mut alice, &mut bob] {
            assert_eq!(client.recv_type("message").await["seq"], n + 1);
        }
    }
    let stats = relay.relay.stats();
    assert!(stats.store_write_errors > 0, "{stats:?}");
    assert!(
        stats.store_unsaved > 0 && stats.store_written > 0,
        "{stats:?}"
    );
    let ready = support::http::get(relay.addr, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("history store"), "{}", ready.body);
    let scrape = support::http::scrape(relay.addr).await;
    assert!(scrape.get("relay_store_write_errors_total") > 0.0);
    assert_eq!(
        scrape.get("relay_store_unsaved_messages_total"),
        stats.store_unsaved as f64
    );

    // The room empties and retires; reopened from disk it carries on above the seqs that
    // were delivered but not stored: none is handed out twice.
    drop(alice);
    drop(bob);
    let hub = relay.relay.hub().clone();
    eventually("the room retired", || hub.room("full").is_none()).await;
    let (mut carol, joined) = relay.joined("full", "carol").await;
    assert_eq!(joined["seq"], 200, "{joined}");
    carol.send(json!({"type":"message","text":"after"})).await;
    assert_eq!(carol.recv_type("message").await["seq"], 201);
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_leave_comes_after_the_messages_its_client_sent() {
    let dir = TempDir::new("leave-order");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (mut alice, _) = relay.joined("bye", "alice").await;
    for n in 0..50 {
        alice
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
    }
    alice.send(json!({"type":"leave"})).await;
    let mut messages = 0;
    loop {
        let event = alice.recv().await;
        match event["type"].as_str() {
            Some("message") => messages += 1,
            Some("left") => break,
            _ => {}
        }
    }
    assert_eq!(
        messages, 50,
        "every message sent before the leave, before `left`"
    );
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_data_directories_are_refused_with_one_line() {
    // Not creatable: below a regular file.
    let dir = TempDir::new("bad");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let below_file = file.join("data");
    let (status, out) = refused(&["--data-dir", below_file.to_str().unwrap()]).await;
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains("--data-dir") && out.contains("cannot be created"),
        "{out}"
    );

    // Garbage where the database should be: refused, and left as it was.
    let garbage = TempDir::new("garbage");
    std::fs::write(garbage.db(), vec![0x5a; 8192]).unwrap();
    let (status, out) = refused(&["--data-dir", garbage.path().to_str().unwrap()]).await;
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains("is damaged") && out.contains("will not overwrite"),
        "{out}"
    );
    assert_eq!(std::fs::read(garbage.db()).unwrap(), vec![0x5a; 8192]);

    // Another program's SQLite database.
    let foreign = TempDir::new("foreign");
    rusqlite::Connection::open(foreign.db())
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    let (status, out) = refused(&["--data-dir", foreign.path().to_str().unwrap()]).await;
    assert_eq!(status, Some(2), "{out}");
    assert!(out.contains("not a chatrelay database"), "{out}");

    // A database from a newer relay.
    let newer = TempDir::new("newer");
    rusqlite::Connection::open(newer.db())
        .unwrap()
        .execute_batch(
            "CREATE TABLE rooms (x); PRAGMA application_id = 1129466969; PRAGMA user_version = 99;",
        )
        .unwrap();
    let (status, out) = refused(&["--data-dir", newer.path().to_str().unwrap()]).await;
    assert_eq!(status, Some(2), "{out}");
    assert!(
        out.contains("newer chatrelay") && out.contains("schema 99"),
        "{out}"
    );

    // A database damaged in the middle: the checks at start-up find it.
    let damaged = TempDir::new("damaged");
    {
        let relay = TestRelay::durable(damaged.path(), |_| {}).await;
        let (mut alice, _) = relay.joined("r", "alice").await;
        for n in 0..300 {
            alice
                .send(json!({"type":"message","text":format!("{n} {}", "y".repeat(200))}))
                .await;
        }
        for _ in 0..300 {
            alice.recv_type("message").await;
        }
        relay.shutdown().await.unwrap();
    }
    let mut bytes = std::fs::read(damaged.db()).unwrap();
    assert!(bytes.len() > 5 * 4096, "{} bytes", bytes.len());
    // Every page after the schema's: whatever b-tree pages they are, their headers are gone.
    for b in &mut bytes[2 * 4096..] {
        *b = 0xff;
    }
    std::fs::write(damaged.db(), &bytes).unwrap();
    let (status, out) = refused(&["--data-dir", damaged.path().to_str().unwrap()]).await;
    assert_eq!(status, Some(2), "{out}");
    assert!(out.contains("is damaged"), "{out}");
    assert_eq!(
        out.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{out}"
    );
}

#[tokio::test]
async fn one_relay_per_data_directory() {
    let dir = TempDir::new("in-use");
    let data = dir.path().to_str().unwrap().to_owned();
    let first = RelayProcess::start(&["--data-dir", &data]).await;
    let (status, out) = refused(&["--data-dir", &data]).await;
    assert_eq!(status, Some(2), "{out}");
    assert!(out.contains("another relay is using it"), "{out}");
    first.kill9().await;
}
