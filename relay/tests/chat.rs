//! Chat behaviour through real sockets: fan-out, ordering, history, presence, typing, rooms.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::collections::HashSet;

use serde_json::{json, Value};
use support::tls::Transport;
use support::TestRelay;

crate::over_both_transports! {
    a_message_reaches_every_member_including_the_sender,
    concurrent_senders_see_one_order_per_room,
    typing_reaches_others_but_never_the_typist,
}

async fn a_message_reaches_every_member_including_the_sender(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let (mut alice, joined) = relay.joined("general", "alice").await;
    assert_eq!(joined["room"], "general");
    assert_eq!(joined["seq"], 0);
    assert_eq!(joined["count"], 1);
    assert_eq!(joined["history"], json!([]));
    let alice_id = joined["clientId"].as_str().unwrap().to_owned();
    let (mut bob, _) = relay.joined("general", "bob").await;
    let (mut carol, _) = relay.joined("elsewhere", "carol").await;
    alice.recv_type("user_joined").await;

    alice
        .send(json!({"type":"message","text":"hello <b>world</b>"}))
        .await;
    for client in [&mut alice, &mut bob] {
        let m = client.recv_type("message").await;
        assert_eq!(m["text"], "hello <b>world</b>");
        assert_eq!(m["room"], "general");
        assert_eq!(m["username"], "alice");
        assert_eq!(m["userId"], alice_id.as_str());
        assert_eq!(m["seq"], 1);
        assert!(m["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(m["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000_000));
    }
    assert!(carol.drain().await.is_empty(), "other rooms see nothing");
    // The tutorial alias works the same.
    bob.send(json!({"type":"chat","text":"hi"})).await;
    assert_eq!(alice.recv_type("message").await["seq"], 2);
    assert_eq!(bob.recv_type("message").await["username"], "bob");
}

async fn concurrent_senders_see_one_order_per_room(transport: Transport) {
    const CLIENTS: usize = 4;
    const EACH: usize = 50;
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (client, _) = relay.joined("race", &format!("u{i}")).await;
        clients.push(client);
    }
    // Everyone joined before anyone sends: drain the presence events.
    for (i, client) in clients.iter_mut().enumerate() {
        for _ in i + 1..CLIENTS {
            client.recv_type("user_joined").await;
        }
    }
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                client
                    .send(json!({"type":"message","text":format!("{i}:{n}")}))
                    .await;
            }
            let mut order = Vec::new();
            while order.len() < CLIENTS * EACH {
                let m = client.recv_type("message").await;
                order.push((
                    m["seq"].as_u64().unwrap(),
                    m["id"].as_str().unwrap().to_owned(),
                ));
            }
            order
        }));
    }
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(task.await.unwrap());
    }
    for order in &orders {
        let seqs: Vec<u64> = order.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=(CLIENTS * EACH) as u64).collect::<Vec<_>>(),
            "seq rises by exactly 1"
        );
        assert_eq!(order, &orders[0], "every member sees the same order");
    }
    let ids: HashSet<_> = orders[0].iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), CLIENTS * EACH, "ids are unique");
}

async fn send_texts(client: &mut support::Client, texts: &[&str]) {
    for text in texts {
        client.send(json!({"type":"message","text":text})).await;
        client.recv_type("message").await;
    }
}

fn texts(history: &Value) -> Vec<&str> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn history_since_and_recovered() {
    let relay = TestRelay::with(|c| c.history = 3).await;
    let (mut alice, _) = relay.joined("h", "alice").await;
    send_texts(&mut alice, &["one", "two", "three", "four", "five"]).await;

    let (mut bob, joined) = relay.joined("h", "bob").await;
    assert_eq!(joined["seq"], 5);
    assert_eq!(
        texts(&joined["history"]),
        ["three", "four", "five"],
        "the last N, oldest first"
    );
    assert!(
        joined.get("recovered").is_none(),
        "recovered only answers a since"
    );
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(joined["history"][0]["seq"], 3);

    let rejoin =
        |since: u64, epoch: &str| json!({"type":"join","room":"h","since":since,"epoch":epoch});
    bob.send(rejoin(3, &epoch)).await;
    let j = bob.recv_type("joined").await;
    assert_eq!(texts(&j["history"]), ["four", "five"]);
    assert_eq!(j["recovered"], true);

    bob.send(rejoin(5, &epoch)).await;
    let j = bob.recv_type("joined").await;
    assert_eq!(j["history"], json!([]));
    assert_eq!(j["recovered"], true, "nothing missed");

    bob.send(rejoin(1, &epoch)).await;
    let j = bob.recv_type("joined").await;
    assert_eq!(j["recovered"], false, "message 2 is no longer kept");
    assert_eq!(texts(&j["history"]), ["three", "four", "five"]);

    bob.send(rejoin(4, "another-life")).await;
    let j = bob.recv_type("joined").await;
    assert_eq!(
        j["recovered"], false,
        "seqs of another epoch mean nothing here"
    );
    assert_eq!(texts(&j["history"]).len(), 3);

    bob.send(json!({"type":"join","room":"h","since":99})).await;
    assert_eq!(
        bob.recv_type("joined").await["recovered"],
        false,
        "since ahead of the room"
    );

    // Rejoining was harmless: alice saw bob join once and nothing since.
    assert_eq!(alice.drain().await.len(), 1);
}

#[tokio::test]
async fn presence_events_and_the_users_cutoff() {
    let relay = TestRelay::with(|c| c.presence_list_max = 2).await;
    let (mut alice, joined) = relay.joined("p", "alice").await;
    assert_eq!(joined["users"].as_array().unwrap().len(), 1);
    let (mut bob, joined) = relay.joined("p", "bob").await;
    assert_eq!(joined["count"], 2);
    let names: HashSet<_> = joined["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, HashSet::from(["alice", "bob"]));

    let event = alice.recv_type("user_joined").await;
    assert_eq!(
        (event["username"].clone(), event["count"].clone()),
        (json!("bob"), json!(2))
    );
    assert_eq!(event["users"].as_array().unwrap().len(), 2);
    assert_eq!(event["userId"], joined["clientId"]);

    let (carol, joined) = relay.joined("p", "carol").await;
    assert_eq!(joined["count"], 3);
    assert!(
        joined.get("users").is_none(),
        "above the cut-off only count is sent"
    );
    let event = alice.recv_type("user_joined").await;
    assert_eq!(event["count"], 3);
    assert!(event.get("users").is_none());
    bob.recv_type("user_joined").await;

    drop(carol);
    let event = alice.recv_type("user_left").await;
    assert_eq!(
        (event["username"].clone(), event["count"].clone()),
        (json!("carol"), json!(2))
    );
    assert_eq!(
        event["users"].as_array().unwrap().len(),
        2,
        "back under the cut-off"
    );
    bob.recv_type("user_left").await;

    bob.send(json!({"type":"leave"})).await;
    assert_eq!(bob.recv_type("left").await["room"], "p");
    let event = alice.recv_type("user_left").await;
    assert_eq!(event["username"], "bob");
    assert_eq!(event["count"], 1);
    bob.send(json!({"type":"message","text":"still here?"}))
        .await;
    bob.expect_error("not_joined").await;
}

async fn typing_reaches_others_but_never_the_typist(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let (mut alice, _) = relay.joined("t", "alice").await;
    let (mut bob, _) = relay.joined("t", "bob").await;
    alice.recv_type("user_joined").await;
    alice.send(json!({"type":"typing","isTyping":true})).await;
    let event = bob.recv_type("typing").await;
    assert_eq!(event["username"], "alice");
    assert_eq!(event["isTyping"], true);
    assert_eq!(event["room"], "t");
    alice.send(json!({"type":"typing","isTyping":false})).await;
    assert_eq!(bob.recv_type("typing").await["isTyping"], false);
    assert!(alice.drain().await.is_empty(), "typing is never echoed");
}

#[tokio::test]
async fn several_rooms_per_connection_and_the_current_room() {
    let relay = TestRelay::start().await;
    let (mut alice, _) = relay.joined("a", "alice").await;
    alice.send(json!({"type":"join","room":"b"})).await;
    let joined = alice.recv_type("joined").await;
    assert_eq!(joined["room"], "b");
    let (mut in_a, _) = relay.joined("a", "watcher-a").await;
    let (mut in_b, _) = relay.joined("b", "watcher-b").await;
    alice.drain().await;

    alice.send(json!({"type":"message","text":"to b"})).await;
    let m = in_b.recv_type("message").await;
    assert_eq!(
        (m["room"].clone(), m["username"].clone()),
        (json!("b"), json!("alice")),
        "the last joined room, same username"
    );
    alice
        .send(json!({"type":"message","text":"to a","room":"a"}))
        .await;
    assert_eq!(in_a.recv_type("message").await["text"], "to a");
    alice
        .send(json!({"type":"message","text":"x","room":"nope"}))
        .await;
    alice.recv_type("message").await;
    alice.recv_type("message").await;
    alice.expect_error("not_joined").await;

    // Leaving the current room makes the previous one current.
    alice.send(json!({"type":"leave"})).await;
    assert_eq!(alice.recv_type("left").await["room"], "b");
    alice
        .send(json!({"type":"message","text":"back to a"}))
        .await;
    assert_eq!(in_a.recv_type("message").await["text"], "back to a");
    assert!(in_b.drain().await.iter().all(|e| e["type"] == "user_left"));
}

#[tokio::test]
async fn rejoining_is_harmless_and_keeps_one_membership() {
    let relay = TestRelay::start().await;
    let (mut alice, _) = relay.joined("r", "alice").await;
    let (mut bob, _) = relay.joined("r", "bob").await;
    alice.recv_type("user_joined").await;
    bob.send(json!({"type":"join","room":"r","username":"bob"}))
        .await;
    let joined = bob.recv_type("joined").await;
    assert_eq!(joined["count"], 2);
    assert!(alice.drain().await.is_empty(), "no second user_joined");
    alice.send(json!({"type":"message","text":"once"})).await;
    bob.recv_type("message").await;
    assert!(bob.drain().await.is_empty(), "a message arrives once");
}

#[tokio::test]
async fn an_empty_room_keeps_its_history_for_a_returning_user() {
    let relay = TestRelay::start().await;
    let (mut alice, joined) = relay.joined("linger", "alice").await;
    let epoch = joined["epoch"].clone();
    send_texts(&mut alice, &["kept"]).await;
    drop(alice);
    // A fresh connection resumes in the same room life while it lingers.
    let mut again = relay.client().await;
    again
        .send(json!({"type":"join","room":"linger","username":"alice","since":0,"epoch":epoch}))
        .await;
    let joined = again.recv_type("joined").await;
    assert_eq!(joined["epoch"], epoch);
    assert_eq!(joined["recovered"], true);
    assert_eq!(texts(&joined["history"]), ["kept"]);
}
