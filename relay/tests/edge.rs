//! The relay's edge through real sockets: what one HTTP request may carry (Host,
//! `Sec-WebSocket-Key`), how many requests one connection may make, new connections per
//! address, and client addresses behind trusted proxies (docs/SECURITY.md, "Edge").

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::net::{IpAddr, SocketAddr};

use support::upgrade::{request_over, upgrade_over};
use support::{TestRelay, EVENT_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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

/// A connection from loopback address `source` (127.0.0.2, ...: one host, many addresses).
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    tokio::time::timeout(EVENT_TIMEOUT, socket.connect(addr))
        .await
        .expect("connect in time")
        .unwrap()
}

/// An upgrade from `source` with `headers`; the stream stays open for the caller.
async fn upgrade_from(
    source: [u8; 4],
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (u16, TcpStream) {
    let mut stream = connect_from(source, addr).await;
    let head = upgrade_over(&mut stream, "/ws", headers).await;
    (head.status, stream)
}

/// Joins `room` over an upgraded raw stream and waits for `joined`: after it the relay has
/// registered the connection.
async fn join(stream: &mut TcpStream, room: &str) {
    let join = format!(r#"{{"type":"join","room":"{room}","username":"u"}}"#);
    let frame = support::raw::frame(true, support::raw::TEXT, join.as_bytes());
    stream.write_all(&frame).await.unwrap();
    let mut seen = Vec::new();
    while !seen.windows(8).any(|w| w == b"\"joined\"") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("joined in time")
            .unwrap();
        assert!(n > 0, "closed before joined");
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// The addresses the relay registered its open connections under.
fn registered(relay: &TestRelay) -> Vec<SocketAddr> {
    let mut peers = Vec::new();
    relay
        .relay
        .hub()
        .for_each_connection(|c| peers.push(c.peer));
    peers.sort();
    peers
}

fn rejected(scrape: &support::http::Scrape, reason: &str) -> f64 {
    scrape.get(&format!(
        "relay_connections_rejected_total{{reason=\"{reason}\"}}"
    ))
}

#[tokio::test]
async fn forwarding_headers_are_ignored_unless_the_peer_is_a_trusted_proxy() {
    // No --trusted-proxy, then one that is not this peer: the same either way.
    for trusted in [vec![], vec!["127.0.0.9".parse().unwrap()]] {
        let relay = TestRelay::with(|c| {
            c.max_connections_per_ip = 1;
            c.trusted_proxies = trusted;
        })
        .await;
        let spoof = [("X-Forwarded-For", "127.0.0.50")];
        let (status, mut first) = upgrade_from([127, 0, 0, 2], relay.addr, &spoof).await;
        assert_eq!(status, 101);
        join(&mut first, "r").await;
        let peers = registered(&relay);
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[0].ip(),
            IpAddr::from([127, 0, 0, 2]),
            "not the header's"
        );
        let other_client = [
            ("X-Forwarded-For", "127.0.0.51"),
            ("Forwarded", "for=127.0.0.52"),
        ];
        let (status, _) = upgrade_from([127, 0, 0, 2], relay.addr, &other_client).await;
        assert_eq!(status, 429, "one address, whatever its headers say");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_registered_and_counted() {
    let relay = TestRelay::with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.2".parse().unwrap()];
    })
    .await;
    let proxy = [127, 0, 0, 2];
    // The client wrote 127.0.0.66 itself; the proxy appended the address it saw.
    let alice = [("X-Forwarded-For", "127.0.0.66, 127.0.0.50")];
    let (status, mut a) = upgrade_from(proxy, relay.addr, &alice).await;
    assert_eq!(status, 101);
    join(&mut a, "r").await;
    assert_eq!(registered(&relay), ["127.0.0.50:0".parse().unwrap()]);

    // Many connections from the proxy's one address: each counted as its own client.
    let (status, mut b) = upgrade_from(
        proxy,
        relay.addr,
        &[("Forwarded", "for=\"127.0.0.51:4711\"")],
    )
    .await;
    assert_eq!(status, 101);
    join(&mut b, "r").await;
    let (status, mut own) = upgrade_from(proxy, relay.addr, &[]).await;
    assert_eq!(
        status, 101,
        "no header: the proxy's own address, counted once"
    );
    join(&mut own, "r").await;
    let (status, _) = upgrade_from(
        proxy,
        relay.addr,
        &[("X-Forwarded-For", "127.0.0.52, junk")],
    )
    .await;
    assert_eq!(
        status, 429,
        "a header it cannot read counts as the proxy itself"
    );
    let peers = registered(&relay);
    let ips: Vec<IpAddr> = peers.iter().map(SocketAddr::ip).collect();
    let expected: [IpAddr; 3] = [proxy.into(), [127, 0, 0, 50].into(), [127, 0, 0, 51].into()];
    assert_eq!(ips, expected);
    assert!(
        peers.contains(&"127.0.0.51:4711".parse().unwrap()),
        "{peers:?}"
    );

    // Alice again, through the proxy: her one connection is open.
    let (status, _) = upgrade_from(proxy, relay.addr, &[("X-Forwarded-For", "127.0.0.50")]).await;
    assert_eq!(status, 429);
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(rejected(&scrape, "per_ip_limit"), 2.0);
}

#[tokio::test]
async fn one_address_flooding_new_connections_leaves_the_node_rate_to_others() {
    let relay = TestRelay::with(|c| {
        c.connection_rate = 12.0; // a burst of 12 for the whole node
        c.connection_rate_per_ip = 0.001; // nothing refills during the test
        c.connection_burst_per_ip = 5;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let mut stream = connect_from([127, 0, 0, 2], relay.addr).await;
        let head = upgrade_over(&mut stream, "/ws", &[]).await;
        if head.status == 429 {
            assert_eq!(head.header("retry-after"), Some("1"));
        }
        statuses.push(head.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 101).count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 45);
    // The flood spent 5 of the node's 12 tokens, not all of them (one is for the scrape).
    for i in 0..5 {
        let (status, _) = upgrade_from([127, 0, 0, 3], relay.addr, &[]).await;
        assert_eq!(status, 101, "the other address's connection {i}");
    }
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(rejected(&scrape, "per_ip_rate"), 45.0);
    assert_eq!(rejected(&scrape, "connection_rate"), 0.0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_new_connection_rate_is_per_client() {
    let relay = TestRelay::with(|c| {
        c.connection_rate_per_ip = 0.001;
        c.connection_burst_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()];
    })
    .await;
    let proxy = [127, 0, 0, 2];
    let flooder = [("X-Forwarded-For", "127.0.0.50")];
    let mut open = Vec::new();
    for _ in 0..2 {
        let (status, stream) = upgrade_from(proxy, relay.addr, &flooder).await;
        assert_eq!(status, 101);
        open.push(stream);
    }
    let (status, _) = upgrade_from(proxy, relay.addr, &flooder).await;
    assert_eq!(status, 429);
    for client in ["127.0.0.51", "127.0.0.52"] {
        let (status, stream) =
            upgrade_from(proxy, relay.addr, &[("X-Forwarded-For", client)]).await;
        assert_eq!(
            status, 101,
            "{client}: the proxy's address is not what is counted"
        );
        open.push(stream);
    }
}

/// Writes `count` pipelined `GET path` requests on one connection (without waiting for any
/// answer) and reads until the relay closes it; returns the answers' heads.
async fn pipeline(addr: SocketAddr, path: &str, count: usize) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let all = request.repeat(count);
    // Written concurrently with reading: once the relay stops reading, a large pipeline
    // would otherwise fill both socket buffers and block the write forever.
    let (mut reader, mut writer) = stream.split();
    let write = async {
        // The relay may close before reading it all: a reset is what the test expects then.
        let _ = writer.write_all(all.as_bytes()).await;
    };
    let read = async {
        let mut raw = Vec::new();
        tokio::time::timeout(EVENT_TIMEOUT, reader.read_to_end(&mut raw))
            .await
            .expect("the relay ends the connection in time")
            .ok();
        raw
    };
    let ((), raw) = tokio::join!(write, read);
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    text.split("http/1.1 ")
        .skip(1)
        .map(|answer| answer.split("\r\n\r\n").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn one_connection_gets_at_most_its_request_budget_then_eof() {
    let relay = TestRelay::with(|c| c.http_requests_per_connection = 100).await;
    let answers = pipeline(relay.addr, "/healthz", 1000).await;
    assert_eq!(answers.len(), 100, "then EOF");
    assert!(answers.iter().all(|a| a.starts_with("200 ok")));
    assert!(
        answers[99].contains("connection: close"),
        "the last says so: {}",
        answers[99]
    );
    assert!(!answers[98].contains("connection: close"));
    // Not a limit on the address: a new connection gets a new budget.
    assert_eq!(support::http::get(relay.addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn requests_past_the_rate_wait_and_the_handshake_timeout_ends_them() {
    let relay = TestRelay::with(|c| {
        c.http_request_rate = 0.01; // a burst of 1, then one per 100 s
        c.handshake_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let answers = pipeline(relay.addr, "/metrics", 50).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let scrape = support::http::scrape(relay.addr).await;
    assert_eq!(rejected(&scrape, "handshake_timeout"), 1.0);
}

#[tokio::test]
async fn a_request_head_past_the_buffer_gets_431() {
    let relay = TestRelay::start().await;
    let big = "x".repeat(relay::edge::http::MAX_REQUEST_BUFFER);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nCookie: {big}\r\n\r\n");
    assert_eq!(raw_request(relay.addr, &request).await, 431);
    let fits = "x".repeat(relay::edge::http::MAX_REQUEST_BUFFER / 2);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nCookie: {fits}\r\n\r\n");
    assert_eq!(raw_request(relay.addr, &request).await, 200);
}
