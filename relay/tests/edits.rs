//! Edits and deletes through real sockets: by the author only, as events in the room's order
//! (so a client resuming with `since` gets those it missed), and history showing each message
//! as it is now. The same scenario on one node in memory, on one node with history on disk
//! (an edit of a message only the disk still has, then a restart), and in a cluster (the
//! change made on one node, seen and replayed on the other; a private `redis-server`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use serde_json::{json, Value};
use support::durable::TempDir;
use support::http;
use support::redis::{two_nodes, Redis};
use support::{Client, TestRelay};

/// Sends `text` from `client` and returns its seq (from the client's own copy).
async fn say(client: &mut Client, text: &str) -> u64 {
    client.send(json!({"type":"message","text":text})).await;
    loop {
        let event = client.recv_until("message").await;
        if event["text"] == text {
            return event["seq"].as_u64().unwrap();
        }
    }
}

fn entry(history: &Value, seq: u64) -> &Value {
    history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["seq"] == seq)
        .unwrap_or_else(|| panic!("seq {seq} in {history}"))
}

/// alice edits then deletes her message while bob watches (on `b`, maybe another node);
/// bob may not touch it; a joiner, a resuming client and scroll-back see it as it is now.
async fn edit_and_delete(a: &TestRelay, b: &TestRelay) {
    let (mut alice, _) = a.joined("general", "alice").await;
    let (mut bob, _) = b.joined("general", "bob").await;
    let typo = say(&mut alice, "tpyo").await;
    bob.recv_until("message").await;
    let theirs = say(&mut bob, "bob's").await;

    alice
        .send(json!({"type":"edit","seq":typo,"text":"typo"}))
        .await;
    let edited = bob.recv_until("message_edited").await;
    assert_eq!(edited["room"], "general");
    assert_eq!(edited["target"], typo);
    assert_eq!(edited["text"], "typo");
    assert_eq!(
        edited["seq"],
        theirs + 1,
        "an edit takes the room's next seq"
    );
    assert!(edited["editedAt"].as_u64().unwrap() > 0);
    assert_eq!(alice.recv_until("message_edited").await, edited);

    for refused in [
        json!({"type":"edit","seq":typo,"text":"mine now","ref":"e-1"}),
        json!({"type":"delete","seq":typo}),
    ] {
        bob.send(refused).await;
        let error = bob.recv_until("error").await;
        assert_eq!(error["code"], "not_author", "{error}");
    }
    alice
        .send(json!({"type":"edit","seq":999,"text":"x","ref":"e-2"}))
        .await;
    let error = alice.recv_until("error").await;
    assert_eq!(
        (&error["code"], &error["ref"]),
        (&json!("no_such_message"), &json!("e-2"))
    );

    alice.send(json!({"type":"delete","seq":typo})).await;
    let deleted = bob.recv_until("message_deleted").await;
    assert_eq!(
        deleted,
        json!({"type":"message_deleted","room":"general","seq":theirs + 2,"target":typo})
    );
    alice.recv_until("message_deleted").await;
    alice
        .send(json!({"type":"edit","seq":typo,"text":"back"}))
        .await;
    assert_eq!(
        alice.recv_until("error").await["code"],
        "no_such_message",
        "a delete is final"
    );

    // A new member sees the room as it is now, the changes in their places.
    let (_, joined) = b.joined("general", "carol").await;
    let history = &joined["history"];
    let gone = entry(history, typo);
    assert_eq!(gone["deleted"], true);
    assert!(gone.get("text").is_none(), "{gone}");
    assert_eq!(entry(history, theirs)["text"], "bob's");
    assert_eq!(entry(history, theirs + 1)["type"], "message_edited");
    assert_eq!(entry(history, theirs + 2)["type"], "message_deleted");

    // A client that saw up to bob's message resumes and gets the changes it missed.
    let mut back = b.client().await;
    back.send(json!({"type":"join","room":"general","username":"bob",
                     "since":theirs,"epoch":joined["epoch"]}))
        .await;
    let resumed = back.recv_until("joined").await;
    assert_eq!(resumed["recovered"], true);
    let kinds: Vec<&str> = resumed["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message_edited", "message_deleted"]);

    back.send(json!({"type":"history"})).await;
    let page = back.recv_until("history").await;
    assert_eq!(entry(&page["messages"], typo)["deleted"], true);
}

#[tokio::test]
async fn in_memory_the_author_edits_and_deletes_and_history_shows_it() {
    let relay = TestRelay::start().await;
    edit_and_delete(&relay, &relay).await;
}

#[tokio::test]
async fn in_a_cluster_a_change_on_one_node_is_seen_and_replayed_on_the_other() {
    let redis = Redis::start().await;
    let (a, b) = two_nodes(&redis, "edits").await;
    edit_and_delete(&a, &b).await;
}

#[tokio::test]
async fn on_disk_the_same_and_an_edit_of_a_message_only_the_disk_keeps() {
    let dir = TempDir::new("edits");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    edit_and_delete(&relay, &relay).await;
    drop(relay);

    // Memory keeps 2 messages: the first is edited from its row on disk.
    let dir = TempDir::new("edits-old");
    let relay = TestRelay::durable(dir.path(), |c| c.history = 2).await;
    let (mut alice, _) = relay.joined("old", "alice").await;
    let first = say(&mut alice, "frist").await;
    for text in ["two", "three"] {
        say(&mut alice, text).await;
    }
    alice
        .send(json!({"type":"edit","seq":first,"text":"first"}))
        .await;
    let edited = alice.recv_until("message_edited").await;
    assert_eq!(edited["target"], first);
    relay.stored().await;
    drop(alice);
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), |c| c.history = 2).await;
    let (mut alice, _) = relay.joined("old", "alice").await;
    alice
        .send(json!({"type":"history","before":first + 1}))
        .await;
    let page = alice.recv_until("history").await;
    let message = entry(&page["messages"], first);
    assert_eq!(
        (&message["text"], &message["edited"]),
        (&json!("first"), &json!(true))
    );
}

#[tokio::test]
async fn a_moderator_deletes_any_message_through_the_admin_api() {
    const TOKEN: &str = "s3cret-admin-token-for-tests";
    let relay = TestRelay::with(|c| c.admin_token = Some(TOKEN.parse().unwrap())).await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    let seq = say(&mut alice, "spam").await;
    let auth = format!("Bearer {TOKEN}");
    let delete = |path: String| {
        let auth = auth.clone();
        let addr = relay.addr;
        async move { http::request(addr, "DELETE", &path, &[("Authorization", &auth)], None).await }
    };
    let done = delete(format!("/admin/rooms/general/messages/{seq}")).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        done.json(),
        json!({"room":"general","target":seq,"deleted":true})
    );
    let deleted = alice.recv_until("message_deleted").await;
    assert_eq!(deleted["target"], seq);
    assert_eq!(
        delete(format!("/admin/rooms/general/messages/{seq}"))
            .await
            .status,
        404
    );
    assert_eq!(
        delete("/admin/rooms/general/messages/x".into())
            .await
            .status,
        400
    );
    assert_eq!(
        delete("/admin/rooms/nowhere/messages/1".into())
            .await
            .status,
        404
    );
}
