//! Authentication, Origin, rate limits and connection limits, through real sockets: refusals
//! are HTTP statuses before any WebSocket exists; limits inside a connection are `error`
//! events and close codes (docs/PROTOCOL.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::upgrade::upgrade;
use support::{Client, TestRelay};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "a-test-secret-that-is-32-bytes-or-more!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// base64url without padding, for hand-made tokens.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

async fn hs256_relay() -> TestRelay {
    TestRelay::with(|c| {
        c.auth_secret = Some(relay::config::Secret(SECRET.into()));
        c.auth_leeway = std::time::Duration::ZERO;
    })
    .await
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600})
}

#[tokio::test]
async fn bad_tokens_get_401_before_any_websocket() {
    let relay = hs256_relay().await;
    let status = |target: String| {
        let addr = relay.addr;
        async move { upgrade(addr, &target, &[]).await }
    };

    let missing = status("/ws".into()).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("bearer"));
    assert_eq!(status("/ws?token=not-a-jwt".into()).await.status, 401);

    let expired = hs256(&json!({"sub":"alice","exp": now() - 30}), SECRET);
    assert_eq!(status(format!("/ws?token={expired}")).await.status, 401);

    let forged = hs256(&claims("alice"), "another-secret-that-is-also-32-bytes!!");
    assert_eq!(status(format!("/ws?token={forged}")).await.status, 401);

    let payload = b64url(claims("alice").to_string().as_bytes());
    let alg_none = format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    assert_eq!(status(format!("/ws?token={alg_none}")).await.status, 401);

    // The right secret, but HS384: the algorithm is pinned by configuration.
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &claims("alice"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(status(format!("/ws?token={hs384}")).await.status, 401);

    let no_sub = hs256(&json!({"exp": now() + 600}), SECRET);
    assert_eq!(status(format!("/ws?token={no_sub}")).await.status, 401);

    let valid = hs256(&claims("alice"), SECRET);
    assert_eq!(status(format!("/ws?token={valid}")).await.status, 101);
    assert_eq!(
        relay.relay.stats().connections_opened,
        1,
        "only the valid token became a WebSocket"
    );
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(
        scrape.get(r#"relay_connections_rejected_total{reason="unauthorized"}"#),
        7.0
    );
}

#[tokio::test]
async fn identity_and_rooms_come_from_the_token() {
    let relay = hs256_relay().await;
    let alice_token = hs256(
        &json!({"sub":"u-alice","name":"Alice","rooms":["general"],"exp": now() + 600}),
        SECRET,
    );
    // A browser's way: the token as a subprotocol next to "chatrelay".
    let mut request = relay.url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("chatrelay, {alice_token}").parse().unwrap(),
    );
    let (mut alice, response) = Client::connect_request(request).await;
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "chatrelay",
        "the 101 selects the protocol the browser offered"
    );

    let bob_token = hs256(&json!({"sub":"u-bob","exp": now() + 600}), SECRET);
    let mut bob = Client::connect(&format!("{}?token={bob_token}", relay.url())).await;
    bob.send(json!({"type":"join","room":"general","username":"whoever"}))
        .await;
    let joined = bob.recv_type("joined").await;
    assert_eq!(joined["users"], json!([{"id":"u-bob","username":"u-bob"}]));

    alice
        .send(json!({"type":"join","room":"general","username":"mallory"}))
        .await;
    let joined = alice.recv_type("joined").await;
    assert_ne!(
        joined["clientId"], "u-alice",
        "clientId stays per connection"
    );
    let mut users = joined["users"].as_array().unwrap().clone();
    users.sort_by_key(|u| u["id"].to_string());
    assert_eq!(
        users,
        vec![
            json!({"id":"u-alice","username":"Alice"}),
            json!({"id":"u-bob","username":"u-bob"})
        ]
    );
    let seen = bob.recv_type("user_joined").await;
    assert_eq!(
        (&seen["userId"], &seen["username"]),
        (&json!("u-alice"), &json!("Alice"))
    );

    alice
        .send(json!({"type":"message","text":"hi","username":"mallory"}))
        .await;
    let message = bob.recv_type("message").await;
    assert_eq!(message["userId"], "u-alice");
    assert_eq!(message["username"], "Alice");

    alice.recv_type("message").await;
    alice.send(json!({"type":"join","room":"random"})).await;
    alice.expect_error("forbidden_room").await;
    assert!(
        relay.relay.hub().room("random").is_none(),
        "no room was made"
    );
}

#[tokio::test]
async fn es256_public_key_and_no_algorithm_confusion() {
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let dir = std::env::temp_dir().join(format!("chatrelay-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public_pem = dir.join("public.pem");
    std::fs::write(&public_pem, key.public_key_pem()).unwrap();
    let relay = TestRelay::with(|c| {
        c.auth_public_key = Some(public_pem.clone());
        c.auth_algorithm = Some("ES256".into());
    })
    .await;

    let es256 = encode(
        &Header::new(Algorithm::ES256),
        &claims("carol"),
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let mut carol = Client::connect(&format!("{}?token={es256}", relay.url())).await;
    carol.send(json!({"type":"join","room":"r"})).await;
    assert_eq!(carol.recv_type("joined").await["users"][0]["id"], "carol");

    // The classic confusion: HS256 "signed" with the public key as the HMAC secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(key.public_key_pem().as_bytes()),
    )
    .unwrap();
    let head = upgrade(relay.addr, &format!("/ws?token={confused}"), &[]).await;
    assert_eq!(head.status, 401);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn token_names_and_rooms_claim_compare_in_nfc() {
    let relay = hs256_relay().await;
    // The issuer wrote the names decomposed (NFD); the client joins with the composed form.
    let token = hs256(
        &json!({"sub":"u-rene\u{301}e","name":"Rene\u{301}e","rooms":["cafe\u{301}"],"exp": now() + 600}),
        SECRET,
    );
    let mut client = Client::connect(&format!("{}?token={token}", relay.url())).await;
    client.send(json!({"type":"join","room":"caf\u{e9}"})).await;
    let joined = client.recv_type("joined").await;
    assert_eq!(joined["room"], "caf\u{e9}");
    assert_eq!(
        joined["users"],
        json!([{"id":"u-ren\u{e9}e","username":"Ren\u{e9}e"}])
    );
    // A bidi override in the token's name refuses the token, as a control character does.
    let spoof = hs256(
        &json!({"sub":"u-x","name":"admin\u{202E}","exp": now() + 600}),
        SECRET,
    );
    let refused = upgrade(relay.addr, &format!("/ws?token={spoof}"), &[]).await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn token_expiry_while_connected_closes_with_4401() {
    let relay = hs256_relay().await;
    let token = hs256(&json!({"sub":"dave","exp": now() + 2}), SECRET);
    let mut dave = Client::connect(&format!("{}?token={token}", relay.url())).await;
    dave.send(json!({"type":"join","room":"r"})).await;
    dave.recv_type("joined").await;
    assert_eq!(dave.expect_close().await, 4401);
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let relay = TestRelay::with(|c| {
        c.allowed_origins = vec!["https://chat.example.com".into(), "*.example.org".into()];
    })
    .await;
    let status = |origin: Option<&'static str>| {
        let addr = relay.addr;
        async move {
            let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
            upgrade(addr, "/ws", &headers).await.status
        }
    };
    assert_eq!(status(None).await, 403);
    assert_eq!(status(Some("https://evil.example.net")).await, 403);
    assert_eq!(status(Some("https://chat.example.com.evil.net")).await, 403);
    assert_eq!(status(Some("https://example.org")).await, 403);
    assert_eq!(status(Some("https://chat.example.com")).await, 101);
    assert_eq!(status(Some("http://app.example.org")).await, 101);
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(
        scrape.get(r#"relay_connections_rejected_total{reason="origin"}"#),
        4.0
    );
}

#[tokio::test]
async fn over_the_message_rate_errors_then_closes_with_4029() {
    let relay = TestRelay::with_limits(|c| {
        c.message_rate = 0.2; // one token per 5 s: nothing refills during the test
        c.message_burst = 3;
        c.rate_limit_strikes = 4;
    })
    .await;
    let (mut listener, _) = relay.joined("r", "listener").await;
    let (mut sender, _) = relay.joined("r", "sender").await;
    listener.recv_type("user_joined").await;
    for i in 0..3 {
        sender
            .send(json!({"type":"message","text":format!("m{i}")}))
            .await;
        sender.recv_type("message").await;
    }
    sender.send(json!({"type":"message","text":"over"})).await;
    let error = sender.expect_error("rate_limited").await;
    assert!(error["message"].as_str().unwrap().contains("slow down"));
    let relayed: Vec<String> = listener
        .drain()
        .await
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        relayed,
        ["m0", "m1", "m2"],
        "the refused message was not relayed"
    );

    // Keep going: 4 strikes are allowed in the window, the next refusal closes.
    for _ in 0..10 {
        sender.send(json!({"type":"message","text":"flood"})).await;
    }
    assert_eq!(sender.expect_close().await, 4029);
    let stats = relay.relay.stats();
    assert_eq!(stats.rate_limit_closes, 1);
    assert_eq!(stats.messages_published, 3);
}

#[tokio::test]
async fn commands_have_their_own_looser_bucket() {
    let relay = TestRelay::with_limits(|c| {
        c.message_rate = 0.2;
        c.message_burst = 1;
        c.command_rate = 0.2;
        c.command_burst = 4;
    })
    .await;
    let (mut client, _) = relay.joined("r", "typist").await; // 1 command
    client.send(json!({"type":"message","text":"one"})).await;
    client.recv_type("message").await;
    client.send(json!({"type":"message","text":"two"})).await;
    client.recv_type("error").await;
    // Messages are spent, commands are not: 2 typing + 1 ping still fit in the burst of 4.
    client.send(json!({"type":"typing"})).await;
    client.send(json!({"type":"typing","isTyping":false})).await;
    assert!(client.drain().await.is_empty(), "typing is never echoed");
    client.send(json!({"type":"typing"})).await;
    let refused = client.recv_type("error").await;
    assert_eq!(refused["code"], "rate_limited");
}

#[tokio::test]
async fn connections_past_the_per_ip_cap_get_429() {
    let relay = TestRelay::with(|c| c.max_connections_per_ip = 2).await;
    let _a = relay.client().await;
    let _b = relay.client().await;
    let refused = upgrade(relay.addr, "/ws", &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(relay.relay.stats().connections_opened, 2);
    // The cap counts connections, not upgrades: plain HTTP from this address is refused too.
    assert_eq!(support::http::get(relay.addr, "/metrics").await.status, 429);
}

#[tokio::test]
async fn connections_past_the_total_cap_get_503() {
    let relay = TestRelay::with(|c| c.max_connections = 2).await;
    let _a = relay.client().await;
    let _b = relay.client().await;
    let refused = upgrade(relay.addr, "/ws", &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn new_connections_past_the_rate_get_503() {
    // One every two seconds with a burst of one: the second connection at once is refused.
    let relay = TestRelay::with(|c| c.connection_rate = 0.5).await;
    let _a = relay.client().await;
    let refused = upgrade(relay.addr, "/ws", &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn wildcard_origins_match_the_parsed_host_and_port() {
    let relay = TestRelay::with(|c| c.allowed_origins = vec!["*.example.com".into()]).await;
    let status = |origins: &'static [&'static str]| {
        let addr = relay.addr;
        async move {
            let headers: Vec<(&str, &str)> = origins.iter().map(|o| ("Origin", *o)).collect();
            upgrade(addr, "/ws", &headers).await.status
        }
    };
    assert_eq!(status(&["https://evil.com/.example.com"]).await, 403);
    assert_eq!(status(&["https://a.example.com@evil.com"]).await, 403);
    assert_eq!(status(&["https://user@a.example.com"]).await, 403);
    assert_eq!(status(&["https://a.example.com:8443"]).await, 403);
    assert_eq!(
        status(&["https://a.example.com", "https://evil.com"]).await,
        403
    );
    assert_eq!(
        status(&["https://a.example.com", "https://a.example.com"]).await,
        403,
        "two Origin headers, even equal ones"
    );
    assert_eq!(status(&["https://a.example.com"]).await, 101);
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(
        scrape.get(r#"relay_connections_rejected_total{reason="origin"}"#),
        6.0
    );
}

#[tokio::test]
async fn a_token_not_valid_yet_gets_401() {
    let relay = hs256_relay().await;
    let early = hs256(
        &json!({"sub":"erin","nbf": now() + 120,"exp": now() + 600}),
        SECRET,
    );
    assert_eq!(
        upgrade(relay.addr, &format!("/ws?token={early}"), &[])
            .await
            .status,
        401
    );
    let started = hs256(
        &json!({"sub":"erin","nbf": now() - 5,"exp": now() + 600}),
        SECRET,
    );
    assert_eq!(
        upgrade(relay.addr, &format!("/ws?token={started}"), &[])
            .await
            .status,
        101
    );
}

#[tokio::test]
async fn nbf_within_the_leeway_is_accepted() {
    let relay = TestRelay::with(|c| {
        c.auth_secret = Some(relay::config::Secret(SECRET.into()));
        c.auth_leeway = std::time::Duration::from_secs(60);
    })
    .await;
    let skewed = hs256(
        &json!({"sub":"f","nbf": now() + 20,"exp": now() + 600}),
        SECRET,
    );
    assert_eq!(
        upgrade(relay.addr, &format!("/ws?token={skewed}"), &[])
            .await
            .status,
        101
    );
    let future = hs256(
        &json!({"sub":"f","nbf": now() + 300,"exp": now() + 600}),
        SECRET,
    );
    assert_eq!(
        upgrade(relay.addr, &format!("/ws?token={future}"), &[])
            .await
            .status,
        401
    );
}
