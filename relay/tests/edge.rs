//! The relay's edge through real sockets: what one HTTP request may carry (Host,
//! `Sec-WebSocket-Key`), how many requests one connection may make, new connections per
//! address, and client addresses behind trusted proxies (docs/SECURITY.md, "Edge").

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use support::upgrade::request_over;
use support::TestRelay;
use tokio::net::TcpStream;

async fn raw_request(addr: std::net::SocketAddr, request: &str) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    request_over(stream, request).await.status
}

fn upgrade_with_key(key: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

#[tokio::test]
async fn a_websocket_key_that_is_not_16_bytes_of_base64_gets_400() {
    let relay = TestRelay::start().await;
    for key in [
        "x",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZXh4eA==",
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZ-==",
        "dGhlIHNhbXBsZSBub25jZR==",
    ] {
        assert_eq!(
            raw_request(relay.addr, &upgrade_with_key(key)).await,
            400,
            "{key}"
        );
    }
    let two_keys = upgrade_with_key("dGhlIHNhbXBsZSBub25jZQ==").replace(
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version",
    );
    assert_eq!(raw_request(relay.addr, &two_keys).await, 400, "two keys");
    assert_eq!(
        raw_request(relay.addr, &upgrade_with_key("dGhlIHNhbXBsZSBub25jZQ==")).await,
        101
    );
    assert_eq!(relay.relay.stats().connections_opened, 1);
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(
        scrape.get(r#"relay_connections_rejected_total{reason="bad_upgrade"}"#),
        7.0
    );
}

#[tokio::test]
async fn an_http11_request_without_exactly_one_host_gets_400() {
    let relay = TestRelay::start().await;
    let addr = relay.addr;
    assert_eq!(
        raw_request(addr, "GET /healthz HTTP/1.1\r\n\r\n").await,
        400
    );
    assert_eq!(
        raw_request(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await,
        400
    );
    let no_host_upgrade =
        upgrade_with_key("dGhlIHNhbXBsZSBub25jZQ==").replace("Host: localhost\r\n", "");
    assert_eq!(raw_request(addr, &no_host_upgrade).await, 400);
    assert_eq!(
        raw_request(addr, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await,
        200
    );
    // HTTP/1.0 has no Host requirement.
    assert_eq!(
        raw_request(addr, "GET /healthz HTTP/1.0\r\n\r\n").await,
        200
    );
    assert_eq!(relay.relay.stats().connections_opened, 0);
}
