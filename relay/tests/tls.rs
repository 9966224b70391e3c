//! wss:// and https:// served by the relay itself, with the test PKI of `support::tls`. The
//! connection behaviours (fan-out, closes, backpressure) run over TLS in their own files, one
//! body for both transports.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::tls::{make_pki, tls_connect, Pki};
use support::upgrade::{request_over, upgrade_over};
use support::{TestRelay, EVENT_TIMEOUT};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

async fn tls_relay(pki: &Pki) -> TestRelay {
    let (cert, key) = (pki.cert(), pki.key());
    TestRelay::with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await
}

async fn next_event(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Value {
    loop {
        let message = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("no protocol error");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn wss_round_trip_with_a_test_ca() {
    let pki = make_pki("wss");
    let relay = tls_relay(&pki).await;
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let stream = tls_connect(relay.addr, &pki).await;
        let (mut ws, response) = tokio_tungstenite::client_async("wss://localhost/ws", stream)
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        ws.send(Message::text(
            json!({"type":"join","room":"secure","username":name}).to_string(),
        ))
        .await
        .unwrap();
        assert_eq!(next_event(&mut ws).await["type"], "joined");
        clients.push(ws);
    }
    assert_eq!(next_event(&mut clients[0]).await["type"], "user_joined");
    // Big enough to span TLS records on the way in and out.
    let text = "é".repeat(2000);
    clients[1]
        .send(Message::text(
            json!({"type":"message","text":text}).to_string(),
        ))
        .await
        .unwrap();
    for ws in &mut clients {
        let event = next_event(ws).await;
        assert_eq!(event["type"], "message");
        assert_eq!(event["text"], text);
        assert_eq!(event["username"], "bob");
    }
    // A close handshake over TLS: the relay answers with 1000.
    clients[0].close(None).await.unwrap();
    let reply = tokio::time::timeout(EVENT_TIMEOUT, clients[0].next())
        .await
        .expect("close reply in time");
    assert!(
        matches!(reply, Some(Ok(Message::Close(Some(ref f)))) if u16::from(f.code) == 1000),
        "{reply:?}"
    );
}

#[tokio::test]
async fn https_routes_and_no_plaintext_on_a_tls_port() {
    let pki = make_pki("https");
    let relay = tls_relay(&pki).await;
    let stream = tls_connect(relay.addr, &pki).await;
    let head = request_over(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);

    // A plain-HTTP upgrade on the TLS port never becomes a WebSocket.
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let outcome = tokio::time::timeout(EVENT_TIMEOUT, async move {
        let mut tcp = tcp;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        buf
    })
    .await
    .expect("the relay drops a non-TLS client");
    assert!(!outcome.starts_with(b"HTTP/1.1 101"));
    assert_eq!(relay.relay.stats().connections_opened, 0);

    // And a wss upgrade still works after that.
    let stream = tls_connect(relay.addr, &pki).await;
    assert_eq!(upgrade_over(stream, "/ws", &[]).await.status, 101);
}
