//! One presence per person, through real sockets, in every mode (memory, history on disk,
//! cluster of two nodes on one Redis): a person's several connections are one entry in
//! `users` and count once, `user_joined` comes with the first and `user_left` only once the
//! last has gone and `--presence-grace` passed without a rejoin; an explicit `leave` of the
//! last one is announced at once (docs/PROTOCOL.md, "Presence").
//!
//! In cluster mode the observer is on one node and the person on the other, so every event
//! crossed Redis.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::modes::{Mode, Setup};
use support::{Client, TestRelay, EVENT_TIMEOUT};

/// The grace of most tests: long enough that a reconnect on a busy test machine is within
/// it, short enough to wait out.
const GRACE: Duration = Duration::from_secs(1);
/// A grace no test waits out: an event that comes within `EVENT_TIMEOUT` did not wait it.
const LONG_GRACE: Duration = Duration::from_secs(600);
const SECRET: &str = "a-test-secret-that-is-32-bytes-or-more!";
const ROOM: &str = "lobby";

/// Waits until `setup`'s `far` relay has closed its side of every connection but `open`: it
/// has then taken the closed ones out of their rooms (or queued that for its backend, in
/// order before anything sent later). Polled: a closed connection sends nobody anything.
async fn far_has_connections(setup: &Setup, open: usize) {
    let hub = setup.far().relay.hub().clone();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while hub.connection_count() != open {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the relay notices the disconnect");
}

fn with_grace(grace: Duration) -> impl Fn(&mut relay::Config) + Clone {
    move |c| c.presence_grace = grace
}

async fn join(relay: &TestRelay, username: &str) -> (Client, Value) {
    relay.joined(ROOM, username).await
}

/// The usernames in an event's `users`, sorted.
fn names(event: &Value) -> Vec<String> {
    let mut names: Vec<String> = event["users"]
        .as_array()
        .unwrap_or_else(|| panic!("users listed: {event}"))
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Asserts `event` is a presence event of `kind` about `username`, with `users` `listed`.
fn assert_presence(event: &Value, kind: &str, username: &str, listed: &[&str]) {
    assert_eq!(event["type"], kind, "{event}");
    assert_eq!(event["username"], username, "{event}");
    assert_eq!(
        event["count"],
        listed.len(),
        "one count per person: {event}"
    );
    assert_eq!(names(event), listed, "one entry per person: {event}");
}

async fn two_tabs_are_one_presence_and_leave_once_after_the_grace(mode: Mode) {
    let setup = Setup::new(mode, "presence", with_grace(GRACE)).await;
    let (mut olga, _) = join(setup.near(), "olga").await;
    let (tab1, joined) = join(setup.far(), "alice").await;
    assert_eq!(names(&joined), ["alice", "olga"]);
    assert_presence(
        &olga.recv_type("user_joined").await,
        "user_joined",
        "alice",
        &["alice", "olga"],
    );

    let (tab2, joined) = join(setup.far(), "alice").await;
    assert_eq!(joined["count"], 2, "alice counts once: {joined}");
    assert_eq!(names(&joined), ["alice", "olga"]);
    assert!(
        olga.drain().await.is_empty(),
        "alice's second tab is not announced"
    );

    // Bob is the clock: he disconnects after alice's first tab did, so his `user_left` comes
    // after any that tab could have caused.
    let (bob, _) = join(setup.far(), "bob").await;
    olga.recv_type("user_joined").await;
    let far_before = setup.far().relay.hub().connection_count();
    drop(tab1);
    far_has_connections(&setup, far_before - 1).await;
    drop(bob);
    assert_presence(
        &olga.recv_type("user_left").await,
        "user_left",
        "bob",
        &["alice", "olga"],
    );
    assert!(
        olga.drain().await.is_empty(),
        "alice is still here through her second tab"
    );

    let gone = Instant::now();
    drop(tab2);
    let left = olga.recv_type("user_left").await;
    assert!(
        gone.elapsed() >= GRACE,
        "user_left waits the grace: {:?}",
        gone.elapsed()
    );
    assert_presence(&left, "user_left", "alice", &["olga"]);
    assert!(olga.drain().await.is_empty(), "alice left once");
}

async fn a_reconnect_within_the_grace_shows_no_leave_or_join(mode: Mode) {
    let setup = Setup::new(mode, "presence", with_grace(GRACE)).await;
    let (mut olga, _) = join(setup.near(), "olga").await;
    let (tab, _) = join(setup.far(), "alice").await;
    olga.recv_type("user_joined").await;

    // A reload: the old connection drops, a new one joins, on the same relay and (cluster)
    // then on the other node as well.
    let far_before = setup.far().relay.hub().connection_count();
    drop(tab);
    far_has_connections(&setup, far_before - 1).await;
    let (mut reloaded, joined) = join(setup.far(), "alice").await;
    assert_eq!(names(&joined), ["alice", "olga"], "{joined}");
    let (elsewhere, _) = join(setup.near(), "alice").await;
    drop(reloaded);
    reloaded = elsewhere;

    // Bob is the clock: his grace ends after alice's first connection's would have.
    let (bob, _) = join(setup.far(), "bob").await;
    assert_presence(
        &olga.recv_type("user_joined").await,
        "user_joined",
        "bob",
        &["alice", "bob", "olga"],
    );
    drop(bob);
    assert_presence(
        &olga.recv_type("user_left").await,
        "user_left",
        "bob",
        &["alice", "olga"],
    );
    assert!(
        olga.drain().await.is_empty(),
        "no leave and join for alice's reload"
    );

    // Her last connection leaves explicitly: announced at once.
    reloaded.send(json!({"type":"leave","room":ROOM})).await;
    reloaded.recv_until("left").await;
    assert_presence(
        &olga.recv_type("user_left").await,
        "user_left",
        "alice",
        &["olga"],
    );
}

async fn moving_to_another_node_within_the_grace_shows_no_leave_or_join(mode: Mode) {
    let setup = Setup::new(mode, "presence", with_grace(GRACE)).await;
    let (mut olga, _) = join(setup.near(), "olga").await;
    let (laptop, _) = join(setup.far(), "alice").await;
    olga.recv_type("user_joined").await;

    // Alice's network changes: her connection to one node drops and she comes back through
    // the other (in cluster mode; one relay otherwise) while the first one's grace runs.
    let far_before = setup.far().relay.hub().connection_count();
    drop(laptop);
    far_has_connections(&setup, far_before - 1).await;
    let (mut moved, joined) = join(setup.near(), "alice").await;
    assert_eq!(names(&joined), ["alice", "olga"], "{joined}");

    // Bob is the clock: his grace ends after the dropped connection's.
    let (bob, _) = join(setup.far(), "bob").await;
    olga.recv_type("user_joined").await;
    drop(bob);
    assert_presence(
        &olga.recv_type("user_left").await,
        "user_left",
        "bob",
        &["alice", "olga"],
    );
    assert!(
        olga.drain().await.is_empty(),
        "no leave and join for alice's move"
    );
    moved.send(json!({"type":"leave","room":ROOM})).await;
    moved.recv_until("left").await;
    assert_presence(
        &olga.recv_type("user_left").await,
        "user_left",
        "alice",
        &["olga"],
    );
}

async fn an_explicit_leave_of_the_last_tab_is_announced_at_once(mode: Mode) {
    let setup = Setup::new(mode, "presence", with_grace(LONG_GRACE)).await;
    let (mut olga, _) = join(setup.near(), "olga").await;
    let (mut tab1, _) = join(setup.far(), "alice").await;
    let (mut tab2, _) = join(setup.far(), "alice").await;
    let (tab3, _) = join(setup.far(), "alice").await;
    olga.recv_type("user_joined").await;

    tab1.send(json!({"type":"leave","room":ROOM})).await;
    tab1.recv_type("left").await;
    assert!(
        olga.drain().await.is_empty(),
        "alice is still here through her other tabs"
    );
    // A tab that disconnects, then the last one leaves: at once (the disconnected one's
    // grace does not hold the leave back; LONG_GRACE is far past EVENT_TIMEOUT).
    let far_before = setup.far().relay.hub().connection_count();
    drop(tab3);
    far_has_connections(&setup, far_before - 1).await;
    assert!(olga.drain().await.is_empty());
    tab2.send(json!({"type":"leave","room":ROOM})).await;
    tab2.recv_type("left").await;
    assert_presence(
        &olga.recv_type("user_left").await,
        "user_left",
        "alice",
        &["olga"],
    );
    assert!(olga.drain().await.is_empty(), "alice left once");
}

fn token(sub: &str, name: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "name": name, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn joined_as(relay: &TestRelay, sub: &str, name: &str) -> (Client, Value) {
    let url = format!("ws://{}/ws?token={}", relay.addr, token(sub, name));
    let mut client = Client::connect(&url).await;
    client.send(json!({"type":"join","room":ROOM})).await;
    let joined = client.recv_type("joined").await;
    (client, joined)
}

async fn with_authentication_one_sub_is_one_person_whatever_its_names(mode: Mode) {
    let setup = Setup::new(mode, "presence", |c: &mut relay::Config| {
        c.presence_grace = GRACE;
        c.auth_secret = Some(relay::config::Secret(SECRET.into()));
        c.auth_leeway = Duration::ZERO;
    })
    .await;
    let (mut olga, _) = joined_as(setup.near(), "u-olga", "Olga").await;
    let (phone, _) = joined_as(setup.far(), "u-alice", "Alice").await;
    let joined_event = olga.recv_type("user_joined").await;
    assert_eq!(joined_event["userId"], "u-alice", "{joined_event}");
    let (laptop, joined) = joined_as(setup.far(), "u-alice", "Alice Smith").await;
    assert_eq!(joined["count"], 2, "one person: {joined}");
    let users = joined["users"].as_array().unwrap();
    let alice: Vec<&Value> = users.iter().filter(|u| u["id"] == "u-alice").collect();
    assert_eq!(alice.len(), 1, "one entry, its id the sub: {joined}");
    assert!(olga.drain().await.is_empty(), "the laptop is not announced");

    drop(phone);
    drop(laptop);
    let left = olga.recv_type("user_left").await;
    assert_eq!(left["userId"], "u-alice", "{left}");
    assert_eq!(left["count"], 1, "{left}");
    assert!(olga.drain().await.is_empty(), "alice left once");
}

macro_rules! in_every_mode {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Mode::Memory).await;
            })*
        }
        mod durable {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Mode::Durable).await;
            })*
        }
        mod cluster {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(super::Mode::Cluster).await;
            })*
        }
    };
}

in_every_mode!(
    two_tabs_are_one_presence_and_leave_once_after_the_grace,
    a_reconnect_within_the_grace_shows_no_leave_or_join,
    moving_to_another_node_within_the_grace_shows_no_leave_or_join,
    an_explicit_leave_of_the_last_tab_is_announced_at_once,
    with_authentication_one_sub_is_one_person_whatever_its_names,
);
