//! Read state through real sockets, in every mode (memory, history on disk, cluster): a
//! `read` moves a person's position forward only, reaches the room's other members and the
//! person's other connections but never the connection that sent it, and a later `joined`
//! carries `lastRead` and `unread` (messages by others after it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use serde_json::{json, Value};
use support::durable::TempDir;
use support::redis::{wait_ready, Redis};
use support::{Client, TestRelay};

/// Reads events until the message with `seq` (skipping presence and earlier messages).
async fn until_message(client: &mut Client, seq: u64) {
    loop {
        let event = client.recv_until("message").await;
        if event["seq"] == seq {
            return;
        }
    }
}

async fn send_messages(from: &mut Client, texts: &[&str]) {
    for text in texts {
        from.send(json!({"type":"message","text":text})).await;
    }
}

fn read(seq: u64) -> Value {
    json!({"type":"read","room":"general","seq":seq})
}

/// The `lastRead` and `unread` of a `joined`.
fn position(joined: &Value) -> (u64, u64) {
    (
        joined["lastRead"]
            .as_u64()
            .expect("lastRead is always present"),
        joined["unread"].as_u64().expect("unread is always present"),
    )
}

/// Clients of one scenario: `alice` reads, `alice_too` is her other connection, `bob` and
/// `carol` are the room's other members. Each may be on a node of its own (cluster).
struct Room {
    alice: Client,
    alice_too: Client,
    bob: Client,
    carol: Client,
}

/// Joins the four, in order, to `general` on the given relays, and has bob send three
/// messages that everyone receives.
async fn room_of(on: [&TestRelay; 4]) -> Room {
    let (mut alice, joined) = on[0].joined("general", "alice").await;
    assert_eq!(
        position(&joined),
        (0, 0),
        "nobody has read anything: {joined}"
    );
    let (mut alice_too, _) = on[1].joined("general", "alice").await;
    let (mut bob, _) = on[2].joined("general", "bob").await;
    let (mut carol, _) = on[3].joined("general", "carol").await;
    send_messages(&mut bob, &["one", "two", "three"]).await;
    for client in [&mut alice, &mut alice_too, &mut bob, &mut carol] {
        until_message(client, 3).await;
    }
    Room {
        alice,
        alice_too,
        bob,
        carol,
    }
}

/// Alice reads up to 2, then back to 1 (nothing), then past the room's end (clamped to 3).
async fn reads_reach_everyone_but_the_sender(mut room: Room) -> Room {
    room.alice.send(read(2)).await;
    for client in [&mut room.bob, &mut room.alice_too, &mut room.carol] {
        let event = client.recv_type("read").await;
        assert_eq!(event["room"], "general", "{event}");
        assert_eq!(event["username"], "alice", "{event}");
        assert_eq!(event["seq"], 2, "{event}");
        assert!(event["userId"].as_str().is_some_and(|id| !id.is_empty()));
    }
    room.alice.send(read(1)).await;
    room.alice.send(read(99)).await;
    for client in [&mut room.bob, &mut room.alice_too, &mut room.carol] {
        // The next event: the backwards read sent nothing.
        let event = client.recv_type("read").await;
        assert_eq!(event["seq"], 3, "clamped to the room's latest: {event}");
    }
    // The others got it, so it was delivered: the sender got none of it.
    assert!(
        room.alice.drain().await.is_empty(),
        "the connection that read never gets its own read event"
    );
    room.alice.send(read(3)).await;
    room.bob.send(json!({"type":"message","text":"four"})).await;
    let next = room.carol.recv().await;
    assert_eq!(
        (&next["type"], &next["seq"]),
        (&json!("message"), &json!(4)),
        "a read that does not move the position sends nothing: {next}"
    );
    for client in [&mut room.alice, &mut room.alice_too, &mut room.bob] {
        until_message(client, 4).await;
    }
    room
}

/// After alice read to 3 and bob sent 4: alice sends 5, bob 6 and 7. Joins then see
/// `lastRead` and the messages by others after it.
async fn joins_see_their_position(mut room: Room, on: [&TestRelay; 3]) {
    send_messages(&mut room.alice, &["five"]).await;
    until_message(&mut room.bob, 5).await;
    send_messages(&mut room.bob, &["six", "seven"]).await;
    until_message(&mut room.carol, 7).await;
    let (_alice, joined) = on[0].joined("general", "alice").await;
    assert_eq!(
        position(&joined),
        (3, 3),
        "4, 6 and 7 are bob's; 5 is her own: {joined}"
    );
    let (_bob, joined) = on[1].joined("general", "bob").await;
    assert_eq!(
        position(&joined),
        (0, 1),
        "only 5 is someone else's: {joined}"
    );
    let (_dave, joined) = on[2].joined("general", "dave").await;
    assert_eq!(position(&joined), (0, 7), "{joined}");
}

#[tokio::test]
async fn memory_reads_reach_others_and_joins_see_them() {
    let relay = TestRelay::start().await;
    let room = room_of([&relay; 4]).await;
    let room = reads_reach_everyone_but_the_sender(room).await;
    joins_see_their_position(room, [&relay; 3]).await;
}

#[tokio::test]
async fn a_bad_read_is_refused_with_a_code() {
    let relay = TestRelay::start().await;
    let mut alice = relay.client().await;
    alice.send(read(1)).await;
    alice.expect_error("not_joined").await;
    let (mut alice, _) = relay.joined("general", "alice").await;
    alice.send(json!({"type":"read"})).await;
    alice.expect_error("invalid_read").await;
    alice.send(json!({"type":"read","seq":0})).await;
    alice.expect_error("invalid_read").await;
    alice.send(json!({"type":"read","seq":"3"})).await;
    alice.expect_error("invalid_json").await;
    alice
        .send(json!({"type":"read","room":"elsewhere","seq":1}))
        .await;
    alice.expect_error("not_joined").await;
    alice.send(json!({"type":"read","seq":5})).await;
    assert!(
        alice.drain().await.is_empty(),
        "a read in an empty room moves nothing"
    );
    let (_again, joined) = relay.joined("general", "alice").await;
    assert_eq!(position(&joined), (0, 0));
}

#[tokio::test]
async fn durable_reads_survive_a_restart() {
    let dir = TempDir::new("reads");
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let room = room_of([&relay; 4]).await;
    let room = reads_reach_everyone_but_the_sender(room).await;
    joins_see_their_position(room, [&relay; 3]).await;
    relay.stored().await;
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (mut bob, joined) = relay.joined("general", "bob").await;
    assert_eq!(position(&joined), (0, 1), "{joined}");
    let (mut alice, joined) = relay.joined("general", "alice").await;
    assert_eq!(position(&joined), (3, 3), "read back from disk: {joined}");
    alice.send(read(6)).await;
    assert_eq!(bob.recv_until("read").await["seq"], 6);
    relay.stored().await;
    // Closed first: shutdown would otherwise wait for them to go.
    drop((alice, bob));
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (alice, joined) = relay.joined("general", "alice").await;
    assert_eq!(position(&joined), (6, 1), "only 7 is after 6: {joined}");
    drop(alice);
    relay.shutdown().await.unwrap();
}

/// The schema of the first release (version 1), as that relay created it.
const SCHEMA_V1: &str = "
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        epoch TEXT NOT NULL,
        last_seq INTEGER NOT NULL
    );
    CREATE TABLE messages (
        room_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (room_id, seq)
    ) WITHOUT ROWID;
    PRAGMA application_id = 1129466969;
    PRAGMA user_version = 1;
";

#[tokio::test]
async fn a_version_1_file_gets_the_reads_table_and_keeps_its_history() {
    let dir = TempDir::new("reads-v1");
    {
        std::fs::create_dir_all(dir.path()).unwrap();
        let db = rusqlite::Connection::open(dir.db()).unwrap();
        db.execute_batch(SCHEMA_V1).unwrap();
        db.execute_batch(
            "INSERT INTO rooms (id, name, epoch, last_seq) VALUES (1, 'general', '00aa', 1);
             INSERT INTO messages VALUES (1, 1, 1, '{\"type\":\"message\",\"id\":\"old-m1\",\
             \"seq\":1,\"room\":\"general\",\"userId\":\"old-1\",\"username\":\"bob\",\
             \"text\":\"before\",\"timestamp\":1}');",
        )
        .unwrap();
    }
    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (mut bob, _) = relay.joined("general", "bob").await;
    let (mut alice, joined) = relay.joined("general", "alice").await;
    assert_eq!(
        (&joined["epoch"], &joined["seq"]),
        (&json!("00aa"), &json!(1))
    );
    assert_eq!(joined["history"][0]["text"], "before");
    assert_eq!(position(&joined), (0, 1), "{joined}");
    alice.send(read(1)).await;
    assert_eq!(bob.recv_until("read").await["seq"], 1);
    relay.stored().await;
    drop((alice, bob));
    relay.shutdown().await.unwrap();

    let relay = TestRelay::durable(dir.path(), |_| {}).await;
    let (alice, joined) = relay.joined("general", "alice").await;
    assert_eq!(position(&joined), (1, 0), "{joined}");
    drop(alice);
    relay.shutdown().await.unwrap();
    let db = rusqlite::Connection::open(dir.db()).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, relay::store::schema::SCHEMA_VERSION);
    let stored: i64 = db
        .query_row("SELECT seq FROM reads WHERE person = 'alice'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(stored, 1);
}

async fn node(redis: &Redis) -> TestRelay {
    let url = redis.url();
    let node = TestRelay::with(|c| {
        c.redis_url = Some(url);
        c.cluster_name = "reads".into();
    })
    .await;
    wait_ready(&node.addr.to_string(), true).await;
    node
}

#[tokio::test]
async fn cluster_reads_cross_nodes_and_joins_anywhere_see_them() {
    let redis = Redis::start().await;
    let a = node(&redis).await;
    let b = node(&redis).await;
    // Alice reads on A; her other connection and bob are on B, carol on A beside her.
    let room = room_of([&a, &b, &b, &a]).await;
    let room = reads_reach_everyone_but_the_sender(room).await;
    // A third node loads the room at this join: its position comes from Redis.
    let c = node(&redis).await;
    joins_see_their_position(room, [&c, &b, &a]).await;
}

const SECRET: &str = "a-test-secret-that-is-32-bytes-or-more!";

/// A connection authenticated as `sub` named `name`, joined to `general`.
async fn authenticated(relay: &TestRelay, sub: &str, name: &str) -> (Client, Value) {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "name": name, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut client = Client::connect(&format!("{}?token={token}", relay.url())).await;
    client.send(json!({"type":"join","room":"general"})).await;
    let joined = client.recv_type("joined").await;
    (client, joined)
}

#[tokio::test]
async fn with_authentication_a_person_is_the_tokens_subject_not_its_name() {
    let relay = TestRelay::with(|c| {
        c.auth_secret = Some(relay::config::Secret(SECRET.into()));
    })
    .await;
    // Two persons both named Sam; the first on two connections.
    let (mut first, _) = authenticated(&relay, "u1", "Sam").await;
    let (mut first_too, _) = authenticated(&relay, "u1", "Sam").await;
    let (mut second, _) = authenticated(&relay, "u2", "Sam").await;
    second.send(json!({"type":"message","text":"hi"})).await;
    until_message(&mut first, 1).await;
    first.send(json!({"type":"message","text":"mine"})).await;
    for client in [&mut first, &mut first_too, &mut second] {
        until_message(client, 2).await;
    }
    first.send(read(2)).await;
    for client in [&mut first_too, &mut second] {
        let event = client.recv_type("read").await;
        assert_eq!((&event["userId"], &event["seq"]), (&json!("u1"), &json!(2)));
    }
    assert!(first.drain().await.is_empty());
    let (_u1, joined) = authenticated(&relay, "u1", "Sam").await;
    assert_eq!(position(&joined), (2, 0), "{joined}");
    let (_u2, joined) = authenticated(&relay, "u2", "Sam").await;
    assert_eq!(
        position(&joined),
        (0, 1),
        "u1's message only: the same name is another person: {joined}"
    );
}
