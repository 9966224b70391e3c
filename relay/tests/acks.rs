//! Acknowledged, idempotent sends (`ref`) and replies (`replyTo`) through real sockets, the
//! same scenario on one node in memory, on one node with history on disk (across a restart),
//! and in a cluster (the resend lands on the other node, a private `redis-server`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use serde_json::{json, Value};
use support::durable::TempDir;
use support::redis::{two_nodes, Redis};
use support::{Client, TestRelay};

/// Sends `text` with `reference` and returns the `ack`, skipping the sender's own events
/// (its message event may come before or after the ack).
async fn send_acked(client: &mut Client, text: &str, reference: &str) -> Value {
    client
        .send(json!({"type":"message","text":text,"ref":reference}))
        .await;
    let ack = client.recv_until("ack").await;
    assert_eq!(ack["ref"], reference, "{ack}");
    ack
}

/// The messages `watcher` gets until the one with `text` (which must come).
async fn messages_until(watcher: &mut Client, text: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = watcher.recv_until("message").await;
        let done = event["text"] == text;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// First half: alice sends with a ref, bob sees it once, carrying the ref. Returns the ack.
async fn first_send(alice: &mut Client, bob: &mut Client) -> Value {
    let ack = send_acked(alice, "hello", "c-1").await;
    assert_eq!(ack["room"], "general");
    let (seq, id) = (ack["seq"].as_u64().unwrap(), ack["id"].as_str().unwrap());
    let seen = messages_until(bob, "hello").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["seq"], seq);
    assert_eq!(seen[0]["id"], id);
    assert_eq!(seen[0]["ref"], "c-1", "the event carries the ref");
    ack
}

/// Second half, on a new connection of alice (after a reconnect, a restart, or on another
/// node): the resend of `c-1` gets the same ack and no second message; then a reply.
async fn resend_and_reply(alice: &mut Client, bob: &mut Client, first: &Value) {
    let again = send_acked(alice, "hello", "c-1").await;
    assert_eq!(&again, first, "the resend's ack is the first send's");
    let reply = json!({"type":"message","text":"answer","ref":"c-2","replyTo":first["seq"]});
    alice.send(reply).await;
    let ack = alice.recv_until("ack").await;
    assert_eq!(ack["ref"], "c-2");
    assert_eq!(
        ack["seq"].as_u64().unwrap(),
        first["seq"].as_u64().unwrap() + 1
    );
    let seen = messages_until(bob, "answer").await;
    assert_eq!(
        seen.len(),
        1,
        "no second `hello` before the reply: {seen:?}"
    );
    assert_eq!(seen[0]["replyTo"], first["seq"]);
    assert_eq!(seen[0]["ref"], "c-2");
    // Nothing came twice in the room's history either.
    alice.send(json!({"type":"history"})).await;
    let page = alice.recv_until("history").await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello", "answer"]);
}

#[tokio::test]
async fn in_memory_a_resend_after_a_reconnect_is_acknowledged_once_more_not_delivered() {
    let relay = TestRelay::start().await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    let (mut bob, _) = relay.joined("general", "bob").await;
    let ack = first_send(&mut alice, &mut bob).await;
    drop(alice);
    let (mut alice, _) = relay.joined("general", "alice").await;
    resend_and_reply(&mut alice, &mut bob, &ack).await;

    // Another person's `c-1` is a message of its own.
    let carol = send_acked(&mut bob, "mine", "c-1").await;
    assert_ne!(carol["seq"], ack["seq"]);
}

#[tokio::test]
async fn on_disk_a_resend_after_a_restart_is_still_recognised() {
    let dir = TempDir::new("acks");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    let (mut bob, _) = relay.joined("general", "bob").await;
    let ack = first_send(&mut alice, &mut bob).await;
    drop((alice, bob));
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (mut bob, _) = relay.joined("general", "bob").await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    resend_and_reply(&mut alice, &mut bob, &ack).await;
}

#[tokio::test]
async fn in_a_cluster_a_resend_on_another_node_is_recognised() {
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis, "acks").await;
    let (mut alice, _) = a.joined("general", "alice").await;
    let (mut bob, _) = b.joined("general", "bob").await;
    let ack = first_send(&mut alice, &mut bob).await;
    drop(alice);
    let (mut alice, _) = b.joined("general", "alice").await;
    resend_and_reply(&mut alice, &mut bob, &ack).await;
}

#[tokio::test]
async fn errors_carry_the_ref_and_plain_messages_are_unchanged() {
    let relay = TestRelay::start().await;
    let (mut alice, _) = relay.joined("general", "alice").await;

    alice
        .send(json!({"type":"message","room":"elsewhere","text":"x","ref":"c-7"}))
        .await;
    assert_eq!(alice.expect_error("not_joined").await["ref"], "c-7");
    alice
        .send(json!({"type":"message","text":"","ref":"c-8"}))
        .await;
    assert_eq!(alice.expect_error("empty_text").await["ref"], "c-8");
    alice
        .send(json!({"type":"typing","room":"elsewhere","ref":"t-1"}))
        .await;
    assert_eq!(
        alice.expect_error("not_joined").await["ref"],
        "t-1",
        "any command's ref"
    );
    alice
        .send(json!({"type":"message","text":"re","replyTo":1,"ref":"c-9"}))
        .await;
    let refused = alice.expect_error("no_such_message").await;
    assert_eq!(refused["ref"], "c-9", "nothing to reply to yet");
    for bad in [String::new(), "r".repeat(65)] {
        alice
            .send(json!({"type":"message","text":"x","ref":bad}))
            .await;
        let refused = alice.expect_error("invalid_ref").await;
        assert!(refused.get("ref").is_none(), "an invalid ref is not echoed");
    }
    // 64 characters (not bytes) is the limit.
    send_acked(&mut alice, "long ref", &"é".repeat(64)).await;

    // Without the new fields: no ack, and the event has none of them.
    alice.send(json!({"type":"message","text":"plain"})).await;
    let event = alice.recv_until("message").await;
    let event = if event["text"] == "plain" {
        event
    } else {
        alice.recv_until("message").await
    };
    assert_eq!(event["text"], "plain");
    assert!(event.get("ref").is_none() && event.get("replyTo").is_none());
    let after = alice.drain().await;
    assert!(
        after.iter().all(|e| e["type"] != "ack"),
        "no ack without a ref: {after:?}"
    );
}
