//! The admin HTTP API through real sockets: auth, listing, a server message seen by real
//! clients, disconnects seen as close code 4000, input errors; the separate admin listener
//! and `/readyz` during shutdown.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::net::SocketAddr;

use serde_json::{json, Value};
use support::http::{self, HttpResponse};
use support::raw::RawClient;
use support::TestRelay;
use tokio::net::TcpListener;

const TOKEN: &str = "s3cret-admin-token-for-tests";

async fn with_admin() -> TestRelay {
    TestRelay::with(|c| c.admin_token = Some(TOKEN.parse().unwrap())).await
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    let auth = format!("Bearer {TOKEN}");
    let body = body.map(|b| b.to_string());
    http::request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_deref(),
    )
    .await
}

/// Expects a JSON error with `status`; returns its message.
fn expect_error(response: &HttpResponse, status: u16) -> String {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn admin_routes_do_not_exist_without_a_token() {
    let relay = TestRelay::start().await;
    for (method, path) in [
        ("GET", "/admin/rooms"),
        ("GET", "/admin/rooms/x"),
        ("POST", "/admin/disconnect"),
        ("POST", "/admin/rooms/x/messages"),
    ] {
        let response = admin(relay.addr, method, path, Some(json!({}))).await;
        assert_eq!(response.status, 404, "{method} {path}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused() {
    let relay = with_admin().await;
    let wrong_same_length = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("Authorization", "Bearer nope-nope-nope-nope")],
        &[("Authorization", &wrong_same_length)],
        &[("Authorization", TOKEN)],
        &[("Authorization", "Basic YWRtaW46YWRtaW4=")],
    ];
    for headers in cases {
        let response = http::request(relay.addr, "GET", "/admin/rooms", headers, None).await;
        expect_error(&response, 401);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"relay-admin\""),
            "{headers:?}"
        );
    }
    // Refused before anything else: a POST with a valid body changes nothing.
    let (mut alice, _) = relay.joined("lobby", "alice").await;
    let response = http::request(
        relay.addr,
        "POST",
        "/admin/rooms/lobby/messages",
        &[],
        Some(r#"{"text":"sneaky"}"#),
    )
    .await;
    expect_error(&response, 401);
    assert!(alice.drain().await.is_empty(), "nothing was published");

    let response = admin(relay.addr, "GET", "/admin/rooms", None).await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let relay = with_admin().await;
    let status = |authorization: String| {
        let addr = relay.addr;
        async move {
            let headers = [("Authorization", authorization.as_str())];
            http::request(addr, "GET", "/admin/rooms", &headers, None)
                .await
                .status
        }
    };
    for scheme in ["bearer", "BEARER", "BeArEr", "Bearer "] {
        assert_eq!(status(format!("{scheme} {TOKEN}")).await, 200, "{scheme:?}");
    }
    assert_eq!(status(format!("bearer {TOKEN}x")).await, 401);
    assert_eq!(status(format!("bearerx {TOKEN}")).await, 401);
    assert_eq!(status(format!("bearer{TOKEN}")).await, 401);
}

#[tokio::test]
async fn list_rooms_and_members_publish_and_disconnect() {
    let relay = with_admin().await;
    let (mut alice, alice_joined) = relay.joined("lobby", "alice").await;
    let (mut bob, bob_joined) = relay.joined("lobby", "bob").await;
    let (mut carol, _) = relay.joined("other room/2", "carol").await;
    alice.recv_type("user_joined").await;

    let rooms = admin(relay.addr, "GET", "/admin/rooms", None).await;
    assert_eq!(rooms.status, 200);
    assert_eq!(
        rooms.json(),
        json!({"rooms":[{"room":"lobby","members":2},{"room":"other room/2","members":1}]})
    );

    let lobby = admin(relay.addr, "GET", "/admin/rooms/lobby", None)
        .await
        .json();
    assert_eq!(lobby["room"], "lobby");
    assert_eq!(lobby["epoch"], alice_joined["epoch"]);
    assert_eq!(lobby["count"], 2);
    let mut members: Vec<(String, String)> = lobby["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["userId"].as_str().unwrap().into(),
                m["username"].as_str().unwrap().into(),
            )
        })
        .collect();
    members.sort();
    let mut expected = vec![
        (
            alice_joined["clientId"].as_str().unwrap().to_owned(),
            "alice".to_owned(),
        ),
        (
            bob_joined["clientId"].as_str().unwrap().to_owned(),
            "bob".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(members, expected);
    // Room names are percent-encoded path segments, "/" included.
    let other = admin(relay.addr, "GET", "/admin/rooms/other%20room%2F2", None).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_eq!(other.json()["members"][0]["username"], "carol");

    // A server message: a normal `message` event from userId "server", with a seq.
    alice.send(json!({"type":"message","text":"before"})).await;
    alice.recv_type("message").await;
    bob.recv_type("message").await;
    let published = admin(
        relay.addr,
        "POST",
        "/admin/rooms/lobby/messages",
        Some(json!({"text":"maintenance at noon","username":"ops"})),
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.body);
    assert_eq!(
        published.json(),
        json!({"room":"lobby","seq":2,"delivered":2})
    );
    for client in [&mut alice, &mut bob] {
        let event = client.recv_type("message").await;
        assert_eq!(event["userId"], "server");
        assert_eq!(event["username"], "ops");
        assert_eq!(event["text"], "maintenance at noon");
        assert_eq!(event["seq"], 2);
    }
    let published = admin(
        relay.addr,
        "POST",
        "/admin/rooms/lobby/messages",
        Some(json!({"text":"default name"})),
    )
    .await;
    assert_eq!(published.json()["seq"], 3);
    assert_eq!(alice.recv_type("message").await["username"], "server");
    assert_eq!(bob.recv_type("message").await["username"], "server");
    // It is in history like any message.
    let (_late, late_joined) = relay.joined("lobby", "late").await;
    let history = late_joined["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[1]["userId"], "server");
    assert_eq!(history[1]["seq"], 2);
    alice.recv_type("user_joined").await;

    // Disconnect one connection by clientId: it sees 4000, the others see it leave.
    let bob_id = bob_joined["clientId"].as_str().unwrap();
    let response = admin(
        relay.addr,
        "POST",
        "/admin/disconnect",
        Some(json!({"clientId": bob_id})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json(), json!({"disconnected":[bob_id]}));
    assert_eq!(
        bob.recv_type("user_joined").await["username"],
        "late",
        "what was queued comes first"
    );
    assert_eq!(bob.expect_close().await, 4000);
    assert_eq!(alice.recv_until("user_left").await["username"], "bob");

    // Disconnect a user by username, wherever they are.
    let response = admin(
        relay.addr,
        "POST",
        "/admin/disconnect",
        Some(json!({"username": "carol"})),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["disconnected"].as_array().unwrap().len(), 1);
    assert_eq!(carol.expect_close().await, 4000);

    let scrape = http::scrape(relay.addr).await;
    assert_eq!(scrape.get("relay_messages_admin_total"), 2.0);
    assert_eq!(scrape.get("relay_messages_received_total"), 1.0);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let relay = TestRelay::with(|c| {
        c.admin_token = Some(TOKEN.parse().unwrap());
        c.max_text_chars = 10;
    })
    .await;
    let (mut alice, _) = relay.joined("lobby", "alice").await;
    let post = |path: &'static str, body: &'static str| {
        let auth = format!("Bearer {TOKEN}");
        async move {
            http::request(
                relay.addr,
                "POST",
                path,
                &[("Authorization", &auth)],
                Some(body),
            )
            .await
        }
    };
    let messages = "/admin/rooms/lobby/messages";
    assert!(expect_error(&post(messages, "{not json").await, 400).contains("invalid JSON"));
    assert!(expect_error(&post(messages, r#"{"username":"x"}"#).await, 400).contains("text"));
    assert!(expect_error(&post(messages, r#"{"text":""}"#).await, 400).contains("1-10"));
    expect_error(
        &post(messages, r#"{"text":"far too long for ten"}"#).await,
        400,
    );
    assert!(expect_error(
        &post(messages, r#"{"text":"hi","colour":"red"}"#).await,
        400
    )
    .contains("colour"));
    expect_error(&post(messages, r#"{"text":"hi","username":""}"#).await, 400);
    assert!(expect_error(
        &post("/admin/rooms/nowhere/messages", r#"{"text":"hi"}"#).await,
        404
    )
    .contains("room"));
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(70_000));
    let auth = format!("Bearer {TOKEN}");
    let response = http::request(
        relay.addr,
        "POST",
        messages,
        &[("Authorization", &auth)],
        Some(&huge),
    )
    .await;
    expect_error(&response, 413);

    let disconnect = "/admin/disconnect";
    expect_error(&post(disconnect, "{}").await, 400);
    expect_error(
        &post(disconnect, r#"{"clientId":"a","username":"b"}"#).await,
        400,
    );
    expect_error(&post(disconnect, r#"{"clientId":"nobody-1"}"#).await, 404);
    expect_error(&post(disconnect, r#"{"username":"nobody"}"#).await, 404);

    let response = admin(relay.addr, "GET", messages, None).await;
    expect_error(&response, 405);
    assert_eq!(response.header("allow"), Some("POST"));
    expect_error(
        &admin(relay.addr, "DELETE", "/admin/rooms", None).await,
        405,
    );
    expect_error(&admin(relay.addr, "GET", "/admin/nothing", None).await, 404);
    expect_error(
        &admin(relay.addr, "GET", "/admin/rooms/nowhere", None).await,
        404,
    );
    expect_error(
        &admin(relay.addr, "GET", "/admin/rooms/%FF", None).await,
        400,
    );

    assert!(
        alice.drain().await.is_empty(),
        "no bad request reached the room"
    );
}

#[tokio::test]
async fn a_separate_admin_listener_and_readyz_through_shutdown() {
    let relay = TestRelay::with(|c| {
        c.admin_token = Some(TOKEN.parse().unwrap());
        // Only says "not on the main listener"; the test binds the admin listener itself.
        c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = listener.local_addr().unwrap();
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = relay.relay.clone();
    let admin_task = tokio::spawn(async move {
        server
            .serve_admin(listener, async {
                let _ = admin_stopped.await;
            })
            .await;
    });

    // Admin paths exist only on the admin listener.
    assert_eq!(
        admin(relay.addr, "GET", "/admin/rooms", None).await.status,
        404
    );
    assert_eq!(
        admin(admin_addr, "GET", "/admin/rooms", None).await.status,
        200
    );
    let unauthenticated = http::get(admin_addr, "/admin/rooms").await;
    assert_eq!(unauthenticated.status, 401);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(http::get(admin_addr, path).await.status, 200, "{path}");
        assert_eq!(http::get(relay.addr, path).await.status, 200, "{path}");
    }
    let ready = http::get(admin_addr, "/readyz").await;
    assert_eq!(ready.body, "ready\n");

    // Shutdown: one client that never answers the close keeps the drain going while the
    // admin listener (which outlives the main one) reports not ready.
    let mut stubborn = RawClient::connect(relay.addr, None).await;
    let (mut polite, _) = relay.joined("lobby", "polite").await;
    let addr = relay.addr;
    let stopping = tokio::spawn(relay.shutdown());
    assert_eq!(polite.expect_close().await, 1001);
    let not_ready = http::get(admin_addr, "/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.body, "shutdown: shutting down\n");
    let metrics = http::scrape(admin_addr).await;
    assert_eq!(metrics.get("relay_ready"), 0.0);
    assert_eq!(http::get(admin_addr, "/healthz").await.status, 200, "alive");
    // The stubborn client got its 1001 too; once it goes, the drain ends.
    assert_eq!(stubborn.read_until_close().await.0, Some(1001));
    drop(stubborn);
    stopping.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "main listener closed"
    );
    stop_admin.send(()).unwrap();
    admin_task.await.unwrap();
}
