//! The app backend's hooks (docs/HOOKS.md) against a real HTTP backend
//! (`support::backend`): the shared client and its signing first, then the publish and join
//! hooks through real WebSocket clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use relay::hooks::http::{FailureKind, HookError, HookStats, Pool};
use serde_json::{json, Value};

use support::backend::{Backend, Recorded, Reply};
use support::modes::{Mode, Setup};
use support::{Client, TestRelay};

const SECRET: &str = "hook-test-secret";

#[tokio::test]
async fn the_client_posts_json_signed_and_reuses_its_connection() {
    let backend = Backend::start().await;
    backend.answer(|_| Reply::json(json!({"ok": true})));
    let pool = Pool::new(Some(SECRET)).unwrap();
    let stats = Arc::new(HookStats::default());
    let hook = pool
        .hook("--publish-hook", &backend.url("/hook"), 4, stats.clone())
        .unwrap();
    for i in 0..3 {
        let body = Bytes::from(json!({"n": i}).to_string());
        let answer = hook.post_json(body, Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&answer.body[..], br#"{"ok":true}"#);
    }
    let got = backend.wait_for("/hook", 3).await;
    for (i, request) in got.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.json(), json!({"n": i}));
        request
            .verify(SECRET, Duration::from_secs(300))
            .unwrap_or_else(|why| panic!("request {i}: {why}"));
        assert!(request
            .verify("another secret", Duration::from_secs(300))
            .is_err());
    }
    assert_eq!(stats.requests(), 3);
    assert_eq!(stats.failures(FailureKind::Connect), 0);
}

#[tokio::test]
async fn without_a_secret_requests_are_not_signed() {
    let backend = Backend::start().await;
    let pool = Pool::new(None).unwrap();
    let stats = Arc::new(HookStats::default());
    let hook = pool
        .hook("--join-hook", &backend.url("/j"), 1, stats)
        .unwrap();
    hook.post_json(Bytes::from_static(b"{}"), Duration::from_secs(5))
        .await
        .unwrap();
    let got = backend.wait_for("/j", 1).await;
    assert_eq!(got[0].header("x-chatrelay-signature"), None);
    assert_eq!(got[0].header("x-chatrelay-timestamp"), None);
}

#[tokio::test]
async fn failures_have_kinds_and_a_backend_that_comes_back_is_used_again() {
    let mut backend = Backend::start().await;
    let pool = Pool::new(None).unwrap();
    let stats = Arc::new(HookStats::default());
    let hook = pool
        .hook("--publish-hook", &backend.url("/h"), 2, stats.clone())
        .unwrap();
    let post = || hook.post_json(Bytes::from_static(b"{}"), Duration::from_millis(300));

    backend.answer(|_| Reply::status(503));
    assert!(matches!(post().await, Err(HookError::Status(s)) if s == 503));
    backend.answer(|_| Reply::json(json!({})).after(Duration::from_secs(2)));
    assert!(matches!(post().await, Err(HookError::Timeout(_))));
    backend.answer(|_| Reply::json(json!({"allow": true})));
    assert!(post().await.is_ok(), "a pooled connection after a timeout");

    backend.stop();
    let down = post().await;
    assert!(
        matches!(down, Err(HookError::Connect(_))),
        "backend down: {down:?}"
    );
    backend.restart().await;
    assert!(post().await.is_ok(), "backend back on the same port");

    assert_eq!(stats.requests(), 5);
    assert_eq!(stats.failures(FailureKind::Status), 1);
    assert_eq!(stats.failures(FailureKind::Timeout), 1);
    assert_eq!(stats.failures(FailureKind::Connect), 1);
    // All but the one sent while it was down reached the backend (the slow one too).
    assert_eq!(backend.requests_to("/h").len(), 4);
}

// --- The publish and join hooks, through real clients -------------------------------------

const ROOM: &str = "lobby";

fn publish_hook(backend: &Backend) -> impl Fn(&mut relay::Config) + Clone {
    let url = backend.url("/publish");
    move |c: &mut relay::Config| {
        c.publish_hook = Some(url.clone());
        c.webhook_secret = Some(relay::config::Secret(SECRET.into()));
    }
}

/// The moderation a test backend does: "spam" refused, "darn" filtered, anything else
/// allowed as is.
fn moderate(request: &Recorded) -> Reply {
    match request.json()["text"].as_str() {
        Some(text) if text.contains("spam") => {
            Reply::json(json!({"allow": false, "reason": "no spam here"}))
        }
        Some(text) if text.contains("darn") => {
            Reply::json(json!({"allow": true, "text": text.replace("darn", "d**n")}))
        }
        _ => Reply::json(json!({"allow": true})),
    }
}

/// The sender's own copy of its message with `reference` and its `ack`, which may come in
/// either order (the ack is a direct reply, the copy comes with the room's delivery).
async fn sent(client: &mut Client, reference: &str) -> Value {
    let (mut copy, mut ack) = (None, None);
    while copy.is_none() || ack.is_none() {
        let event = client.recv().await;
        match event["type"].as_str() {
            Some("message") => copy = Some(event),
            Some("ack") => {
                assert_eq!(event["ref"], reference, "{event}");
                ack = Some(event);
            }
            _ => panic!("unexpected {event}"),
        }
    }
    copy.unwrap()
}

/// Alice (on `near`) and Bob (on `far`) in [`ROOM`], Bob having seen Alice arrive.
async fn alice_and_bob(setup: &Setup) -> (Client, Client) {
    let (mut bob, _) = setup.far().joined(ROOM, "bob").await;
    let (alice, _) = setup.near().joined(ROOM, "alice").await;
    bob.recv_type("user_joined").await;
    (alice, bob)
}

async fn the_publish_hook_allows_filters_and_refuses(mode: Mode) {
    let backend = Backend::start().await;
    backend.answer(moderate);
    let setup = Setup::new(mode, "hooks", publish_hook(&backend)).await;
    let (mut alice, mut bob) = alice_and_bob(&setup).await;

    alice
        .send(json!({"type":"message","text":"hello","ref":"r1"}))
        .await;
    let message = bob.recv_type("message").await;
    assert_eq!(message["text"], "hello");
    sent(&mut alice, "r1").await;

    alice
        .send(json!({"type":"message","text":"buy spam now","ref":"r2"}))
        .await;
    let refused = alice.expect_error("rejected").await;
    assert_eq!(refused["ref"], "r2");
    assert_eq!(refused["message"], "no spam here");

    alice
        .send(json!({"type":"message","text":"darn it","replyTo":message["seq"],"ref":"r3"}))
        .await;
    assert_eq!(sent(&mut alice, "r3").await["text"], "d**n it");
    let filtered = bob.recv_type("message").await;
    assert_eq!(filtered["text"], "d**n it", "{filtered}");
    assert_eq!(
        filtered["seq"],
        message["seq"].as_u64().unwrap() + 1,
        "the refused one took no seq"
    );
    assert!(
        bob.drain().await.is_empty(),
        "the refused message reached no one"
    );

    // Edits are checked too.
    alice
        .send(json!({"type":"edit","seq":message["seq"],"text":"spam spam"}))
        .await;
    alice.expect_error("rejected").await;
    alice
        .send(json!({"type":"edit","seq":message["seq"],"text":"hello, darn"}))
        .await;
    let edited = bob.recv_type("message_edited").await;
    assert_eq!(edited["text"], "hello, d**n", "{edited}");

    let asked = backend.wait_for("/publish", 5).await;
    let first = asked[0].json();
    assert_eq!(
        first,
        json!({"room": ROOM, "userId": first["userId"], "username": "alice", "text": "hello",
               "ref": "r1", "replyTo": null}),
    );
    assert!(first["userId"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(asked[2].json()["replyTo"], message["seq"]);
    assert_eq!(asked[3].json()["edit"], message["seq"]);
    for request in &asked {
        request.verify(SECRET, Duration::from_secs(300)).unwrap();
    }
}

#[tokio::test]
async fn the_publish_hook_allows_filters_and_refuses_in_memory() {
    the_publish_hook_allows_filters_and_refuses(Mode::Memory).await;
}

#[tokio::test]
async fn the_publish_hook_allows_filters_and_refuses_with_history_on_disk() {
    the_publish_hook_allows_filters_and_refuses(Mode::Durable).await;
}

#[tokio::test]
async fn the_publish_hook_allows_filters_and_refuses_in_a_cluster() {
    the_publish_hook_allows_filters_and_refuses(Mode::Cluster).await;
}

#[tokio::test]
async fn a_resend_of_an_acknowledged_ref_is_not_asked_again() {
    let backend = Backend::start().await;
    let setup = Setup::new(Mode::Memory, "hooks", publish_hook(&backend)).await;
    let (mut alice, mut bob) = alice_and_bob(&setup).await;
    for _ in 0..2 {
        alice
            .send(json!({"type":"message","text":"once","ref":"same"}))
            .await;
        alice.recv_until("ack").await;
    }
    assert_eq!(bob.recv_type("message").await["text"], "once");
    assert!(bob.drain().await.is_empty(), "delivered once");
    assert_eq!(backend.requests_to("/publish").len(), 1);
}

async fn a_slow_publish_hook(
    failure: relay::config::HookFailure,
) -> (Client, Client, Backend, Setup) {
    let backend = Backend::start().await;
    backend.answer(|_| Reply::json(json!({"allow": true})).after(Duration::from_secs(3)));
    let hook = publish_hook(&backend);
    let setup = Setup::new(Mode::Memory, "hooks", move |c| {
        hook(c);
        c.hook_timeout = Duration::from_millis(200);
        c.hook_failure = failure;
    })
    .await;
    let (alice, bob) = alice_and_bob(&setup).await;
    (alice, bob, backend, setup)
}

#[tokio::test]
async fn a_publish_hook_that_times_out_refuses_when_closed() {
    let (mut alice, mut bob, backend, _setup) =
        a_slow_publish_hook(relay::config::HookFailure::Closed).await;
    alice
        .send(json!({"type":"message","text":"hello","ref":"late"}))
        .await;
    let error = alice.expect_error("hook_unavailable").await;
    assert_eq!(error["ref"], "late");
    assert!(bob.drain().await.is_empty());
    backend.wait_for("/publish", 1).await;
}

#[tokio::test]
async fn a_publish_hook_that_times_out_lets_through_when_open() {
    let (mut alice, mut bob, _backend, setup) =
        a_slow_publish_hook(relay::config::HookFailure::Open).await;
    alice
        .send(json!({"type":"message","text":"hello","ref":"late"}))
        .await;
    assert_eq!(bob.recv_type("message").await["text"], "hello");
    alice.recv_until("ack").await;
    let scrape = support::http::scrape(setup.near().addr).await;
    assert_eq!(
        scrape.get("relay_hook_failures_total{hook=\"publish\",kind=\"timeout\"}"),
        1.0
    );
    assert_eq!(
        scrape.get("relay_hook_requests_total{hook=\"publish\"}"),
        1.0
    );
    assert_eq!(
        scrape.get("relay_hook_duration_seconds_count{hook=\"publish\"}"),
        1.0
    );
}

/// A client that sends and leaves at once (a bot, a tab closed right after Enter) still has
/// its message published once the hook allows it, whether it closed or just hung up.
#[tokio::test]
async fn a_message_at_the_hook_is_not_lost_when_its_sender_leaves() {
    let backend = Backend::start().await;
    backend.answer(|_| Reply::json(json!({"allow": true})).after(Duration::from_millis(300)));
    let setup = Setup::new(Mode::Memory, "hooks", publish_hook(&backend)).await;
    let (mut alice, mut bob) = alice_and_bob(&setup).await;
    alice
        .send(json!({"type":"message","text":"sent, then closed"}))
        .await;
    alice.close_now().await;
    assert_eq!(bob.recv_type("message").await["text"], "sent, then closed");

    let (mut carol, _) = setup.near().joined(ROOM, "carol").await;
    carol
        .send(json!({"type":"message","text":"sent, then hung up"}))
        .await;
    drop(carol);
    // Alice's leave and Carol's arrival come first.
    assert_eq!(
        bob.recv_until("message").await["text"],
        "sent, then hung up"
    );
}

#[tokio::test]
async fn a_backend_that_is_down_or_answers_nonsense_is_a_failure() {
    let mut backend = Backend::start().await;
    let setup = Setup::new(Mode::Memory, "hooks", publish_hook(&backend)).await;
    let (mut alice, mut bob) = alice_and_bob(&setup).await;
    backend.answer(|_| Reply::raw("not json"));
    alice.send(json!({"type":"message","text":"a"})).await;
    alice.expect_error("hook_unavailable").await;
    backend.answer(|_| Reply::status(500));
    alice.send(json!({"type":"message","text":"b"})).await;
    alice.expect_error("hook_unavailable").await;
    backend.stop();
    alice.send(json!({"type":"message","text":"c"})).await;
    alice.expect_error("hook_unavailable").await;
    backend.restart().await;
    backend.answer(|_| Reply::json(json!({"allow": true})));
    alice.send(json!({"type":"message","text":"d"})).await;
    assert_eq!(bob.recv_type("message").await["text"], "d");
    let scrape = support::http::scrape(setup.near().addr).await;
    for kind in ["invalid", "status", "connect"] {
        assert_eq!(
            scrape.get(&format!(
                "relay_hook_failures_total{{hook=\"publish\",kind=\"{kind}\"}}"
            )),
            1.0,
            "{kind}"
        );
    }
}

/// The hook answers the texts in reverse order of their arrival (the first waits longest);
/// the room still gets them as sent, and the sender's later commands wait their turn.
#[tokio::test]
async fn one_senders_messages_keep_their_order_and_other_rooms_do_not_wait() {
    let backend = Backend::start().await;
    backend.answer(|request| {
        let delay = match request.json()["text"].as_str() {
            Some("first") => 3000,
            Some("second") => 1000,
            _ => 0,
        };
        Reply::json(json!({"allow": true})).after(Duration::from_millis(delay))
    });
    let hook = publish_hook(&backend);
    let setup = Setup::new(Mode::Memory, "hooks", move |c| {
        hook(c);
        c.hook_timeout = Duration::from_secs(10);
    })
    .await;
    let (mut alice, mut bob) = alice_and_bob(&setup).await;
    let (mut carol, _) = setup.near().joined("other", "carol").await;
    let (mut dave, _) = setup.near().joined("other", "dave").await;
    carol.recv_type("user_joined").await;

    for text in ["first", "second", "third"] {
        alice.send(json!({"type":"message","text":text})).await;
    }
    alice.send(json!({"type":"typing","isTyping":true})).await;
    backend.wait_for("/publish", 3).await;
    // Another room's message goes through while alice's wait at the hook.
    carol
        .send(json!({"type":"message","text":"meanwhile"}))
        .await;
    assert_eq!(dave.recv_type("message").await["text"], "meanwhile");
    assert!(
        bob.drain().await.is_empty(),
        "alice's first message is still at the hook"
    );
    let texts: Vec<Value> = [
        bob.recv_type("message").await,
        bob.recv_type("message").await,
        bob.recv_type("message").await,
    ]
    .iter()
    .map(|m| m["text"].clone())
    .collect();
    assert_eq!(texts, [json!("first"), json!("second"), json!("third")]);
    // Her typing came after her messages, and waited for them.
    assert_eq!(bob.recv_type("typing").await["username"], "alice");
}

#[tokio::test]
async fn messages_waiting_for_the_hook_are_bounded_per_connection() {
    let backend = Backend::start().await;
    backend.answer(|_| Reply::json(json!({"allow": true})).after(Duration::from_millis(500)));
    let hook = publish_hook(&backend);
    let setup = Setup::new(Mode::Memory, "hooks", move |c| {
        hook(c);
        c.hook_timeout = Duration::from_secs(5);
    })
    .await;
    let (_alice, mut bob) = alice_and_bob(&setup).await;
    let mut raw = support::raw::RawClient::over(setup.near(), None).await;
    raw.send_join(ROOM, "mallory").await;
    assert_eq!(bob.recv_type("user_joined").await["username"], "mallory");
    // 40 messages in one write: the relay reads them at once and keeps 32 waiting.
    let mut burst = Vec::new();
    for i in 0..40 {
        let text = format!(r#"{{"type":"message","text":"m{i}","ref":"r{i}"}}"#);
        burst.extend(support::raw::frame(
            true,
            support::raw::TEXT,
            text.as_bytes(),
        ));
    }
    raw.send_raw(&burst).await;
    let mut delivered = 0;
    let mut limited = 0;
    while delivered + limited < 40 {
        let frame = raw.read_frame().await.expect("open");
        let event: Value = serde_json::from_slice(&frame.payload).unwrap();
        match event["type"].as_str() {
            Some("ack") => delivered += 1,
            Some("error") => {
                assert_eq!(event["code"], "rate_limited", "{event}");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(
        limited > 0 && delivered >= 32,
        "{delivered} sent, {limited} refused"
    );
}

fn join_hook(backend: &Backend) -> impl Fn(&mut relay::Config) + Clone {
    let url = backend.url("/join");
    move |c: &mut relay::Config| c.join_hook = Some(url.clone())
}

/// "vip" is private: only "alice" may join, and shows as "Alice (VIP)"; anything else is open.
fn guard(request: &Recorded) -> Reply {
    let body = request.json();
    match (body["room"].as_str(), body["username"].as_str()) {
        (Some("vip"), Some("alice")) => {
            Reply::json(json!({"allow": true, "username": "Alice (VIP)"}))
        }
        (Some("vip"), _) => Reply::json(json!({"allow": false, "reason": "members only"})),
        _ => Reply::json(json!({"allow": true})),
    }
}

async fn the_join_hook_allows_renames_and_denies(mode: Mode) {
    let backend = Backend::start().await;
    backend.answer(guard);
    let setup = Setup::new(mode, "hooks", join_hook(&backend)).await;
    let (mut bob, joined) = setup.far().joined(ROOM, "bob").await;
    assert_eq!(joined["room"], ROOM);

    bob.send(json!({"type":"join","room":"vip","ref":"j1"}))
        .await;
    let denied = bob.expect_error("forbidden_room").await;
    assert_eq!(denied["message"], "members only");
    assert_eq!(denied["ref"], "j1");
    bob.send(json!({"type":"message","room":"vip","text":"let me in"}))
        .await;
    bob.expect_error("not_joined").await;

    let mut alice = setup.near().client().await;
    alice
        .send(json!({"type":"join","room":"vip","username":"alice"}))
        .await;
    let joined = alice.recv_type("joined").await;
    assert_eq!(joined["room"], "vip");
    alice
        .send(json!({"type":"message","room":"vip","text":"hi"}))
        .await;
    assert_eq!(alice.recv_type("message").await["username"], "Alice (VIP)");

    let asked = backend.wait_for("/join", 3).await;
    assert_eq!(
        asked[0].json(),
        json!({"room": ROOM, "userId": asked[0].json()["userId"], "username": "bob", "claims": null})
    );
    assert_eq!(asked[1].json()["room"], "vip");
}

#[tokio::test]
async fn the_join_hook_allows_renames_and_denies_in_memory() {
    the_join_hook_allows_renames_and_denies(Mode::Memory).await;
}

#[tokio::test]
async fn the_join_hook_allows_renames_and_denies_in_a_cluster() {
    the_join_hook_allows_renames_and_denies(Mode::Cluster).await;
}

#[tokio::test]
async fn the_join_hook_sees_the_tokens_claims() {
    const AUTH: &str = "a-test-secret-of-at-least-32-bytes!!";
    let backend = Backend::start().await;
    let hook = join_hook(&backend);
    let relay = TestRelay::with(move |c| {
        hook(c);
        c.auth_secret = Some(relay::config::Secret(AUTH.into()));
    })
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": "u-1", "name": "Ann", "exp": exp, "plan": "pro"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(AUTH.as_bytes()),
    )
    .unwrap();
    let mut ann = Client::connect(&format!("ws://{}/ws?token={token}", relay.addr)).await;
    ann.send(json!({"type":"join","room":ROOM})).await;
    ann.recv_type("joined").await;
    let asked = backend.wait_for("/join", 1).await;
    assert_eq!(
        asked[0].json(),
        json!({"room": ROOM, "userId": "u-1", "username": "Ann", "claims": claims})
    );
}

#[tokio::test]
async fn commands_sent_right_after_a_join_wait_for_its_answer() {
    let backend = Backend::start().await;
    backend.answer(|_| Reply::json(json!({"allow": true})).after(Duration::from_millis(300)));
    let relay = TestRelay::with(join_hook(&backend)).await;
    let mut alice = relay.client().await;
    // No wait for `joined`: the message is carried out once the join is.
    alice
        .send(json!({"type":"join","room":ROOM,"username":"alice"}))
        .await;
    alice
        .send(json!({"type":"message","text":"right away","ref":"m"}))
        .await;
    alice.recv_type("joined").await;
    assert_eq!(sent(&mut alice, "m").await["text"], "right away");
}

#[tokio::test]
async fn join_answers_are_cached_for_join_hook_cache() {
    let backend = Backend::start().await;
    backend.answer(guard);
    let hook = join_hook(&backend);
    let relay = TestRelay::with(move |c| {
        hook(c);
        c.join_hook_cache = Duration::from_secs(60);
    })
    .await;
    for _ in 0..2 {
        let mut bob = relay.client().await;
        bob.send(json!({"type":"join","room":"vip","username":"bob"}))
            .await;
        bob.expect_error("forbidden_room").await;
        let (_alice, joined) = relay.joined("vip", "alice").await;
        assert_eq!(joined["room"], "vip");
    }
    assert_eq!(
        backend.requests_to("/join").len(),
        2,
        "asked once per person"
    );

    // Without a cache every join asks.
    let uncached = Backend::start().await;
    let relay = TestRelay::with(join_hook(&uncached)).await;
    for _ in 0..2 {
        relay.joined(ROOM, "bob").await;
    }
    assert_eq!(uncached.requests_to("/join").len(), 2);
}

#[tokio::test]
async fn a_join_hook_that_fails_refuses_when_closed_and_admits_when_open() {
    let mut backend = Backend::start().await;
    backend.stop();
    let closed = TestRelay::with(join_hook(&backend)).await;
    let mut bob = closed.client().await;
    bob.send(json!({"type":"join","room":ROOM,"username":"bob","ref":"j"}))
        .await;
    assert_eq!(bob.expect_error("hook_unavailable").await["ref"], "j");

    let hook = join_hook(&backend);
    let open = TestRelay::with(move |c| {
        hook(c);
        c.hook_failure = relay::config::HookFailure::Open;
    })
    .await;
    open.joined(ROOM, "bob").await;
    let scrape = support::http::scrape(open.addr).await;
    assert_eq!(
        scrape.get("relay_hook_failures_total{hook=\"join\",kind=\"connect\"}"),
        1.0
    );
}

/// The relay stops reading a connection while its joins wait for the hook, so the pongs the
/// client sends meanwhile sit unread: the heartbeat must not take that for a dead client.
#[tokio::test]
async fn a_client_whose_joins_wait_for_the_hook_is_not_closed_by_the_heartbeat() {
    const PING: Duration = Duration::from_millis(300);
    let backend = Backend::start().await;
    // Never in time: each join waits the whole `--hook-timeout`.
    backend.answer(|_| Reply::json(json!({"allow": true})).after(Duration::from_secs(30)));
    let hook = join_hook(&backend);
    let relay = TestRelay::with(move |c| {
        hook(c);
        c.ping_interval = PING;
        c.hook_timeout = PING * 3;
    })
    .await;
    let mut bob = relay.client().await;
    // Checked one at a time: the reads stay held for about three hook timeouts, many ping
    // intervals, while the client answers every ping (`recv` reads, so tungstenite pongs).
    for i in 0..3 {
        let (room, reference) = (format!("r{i}"), format!("j{i}"));
        bob.send(json!({"type":"join","room":room,"username":"bob","ref":reference}))
            .await;
    }
    for i in 0..3 {
        let error = bob.recv_type("error").await;
        assert_eq!(error["code"], "hook_unavailable", "{error}");
        assert_eq!(error["ref"], format!("j{i}"));
    }
    assert!(bob.drain().await.is_empty(), "still open");
    assert_eq!(relay.relay.stats().heartbeat_closes, 0);
}

#[tokio::test]
async fn a_hook_url_that_is_not_http_is_a_startup_error() {
    let mut config = relay::Config::without_limits();
    config.memory = true;
    config.publish_hook = Some("ftp://example.com/hook".into());
    let err = relay::Relay::try_new(config).expect_err("refused");
    assert!(err.to_string().contains("--publish-hook"), "{err}");
}
