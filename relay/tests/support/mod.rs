//! Shared helpers for the relay's integration tests: a relay on port 0, a well-behaved
//! WebSocket client (tokio-tungstenite, an independent implementation of RFC 6455), and a raw
//! client that can send what no library would.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

pub mod backend;
pub mod durable;
pub mod http;
pub mod modes;
pub mod raw;
pub mod redis;
pub mod tls;
pub mod upgrade;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use tls::{Pki, Stream, Transport};

/// How long any single expected event may take before the test fails. Generous: CI
/// machines are shared; tests never wait this long when things work.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A relay serving on an ephemeral loopback port, shut down when dropped.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub relay: relay::Relay,
    /// Set when the relay serves TLS (`--tls-cert`): its clients then trust this CA.
    pub pki: Option<Pki>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), relay::Error>>>,
}

impl TestRelay {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// Like [`TestRelay::with`], serving `transport` (TLS with a fresh test PKI); its
    /// [`TestRelay::client`]s and [`raw::RawClient::over`] use the same transport.
    pub async fn over(transport: Transport, adjust: impl FnOnce(&mut relay::Config)) -> Self {
        match transport {
            Transport::Plain => Self::with(adjust).await,
            Transport::Tls => {
                let pki = tls::make_pki("relay");
                let (cert, key) = (pki.cert(), pki.key());
                let mut relay = Self::with(|c| {
                    c.tls_cert = Some(cert);
                    c.tls_key = Some(key);
                    adjust(c);
                })
                .await;
                relay.pki = Some(pki);
                relay
            }
        }
    }

    /// A connected stream of this relay's transport, before any HTTP.
    pub async fn stream(&self, tcp: TcpStream) -> Stream {
        match &self.pki {
            None => Stream::Plain(tcp),
            Some(pki) => Stream::Tls(Box::new(tls::tls_over(tcp, pki).await)),
        }
    }

    /// A relay with every abuse limit off (rates, connection caps: tests that are not about
    /// them send bursts), then `adjust`ed.
    pub async fn with(adjust: impl FnOnce(&mut relay::Config)) -> Self {
        Self::with_config(relay::Config::without_limits(), adjust).await
    }

    /// A relay with the binary's defaults, limits included, then `adjust`ed.
    pub async fn with_limits(adjust: impl FnOnce(&mut relay::Config)) -> Self {
        Self::with_config(relay::Config::default(), adjust).await
    }

    pub async fn with_config(
        mut config: relay::Config,
        adjust: impl FnOnce(&mut relay::Config),
    ) -> Self {
        // In memory unless a test asks for a data directory ([`TestRelay::durable`]): tests
        // run in parallel and must not share one.
        config.memory = true;
        // `user_left` at once after a disconnect, as before `--presence-grace` existed: the
        // tests that await it stay about what they test. relay/tests/presence.rs sets a grace
        // (this covers the cluster and durable helpers too, which start here).
        config.presence_grace = std::time::Duration::ZERO;
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = relay::Relay::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let server = relay.clone();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
        });
        Self {
            addr,
            relay,
            pki: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn client(&self) -> Client {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let stream = self.stream(tcp).await;
        let scheme = if self.pki.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://localhost:{}/ws", self.addr.port());
        Client::over(url.into_client_request().unwrap(), stream)
            .await
            .0
    }

    /// A client that has joined `room` as `username`; returns it with its `joined` event.
    pub async fn joined(&self, room: &str, username: &str) -> (Client, Value) {
        let mut client = self.client().await;
        client
            .send(json!({"type":"join","room":room,"username":username}))
            .await;
        let joined = client.recv_type("joined").await;
        (client, joined)
    }

    /// Starts shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> Result<(), relay::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub struct Client {
    ws: WebSocketStream<Stream>,
}

type Request = tokio_tungstenite::tungstenite::handshake::client::Request;
type Response = tokio_tungstenite::tungstenite::handshake::client::Response;

impl Client {
    /// Connects to a `ws://` URL over plain TCP.
    pub async fn connect(url: &str) -> Self {
        Self::connect_request(url.into_client_request().unwrap())
            .await
            .0
    }

    /// Connects with a request of the test's own (headers, subprotocols); returns the 101 too.
    pub async fn connect_request(request: Request) -> (Self, Response) {
        let authority = request.uri().authority().unwrap().as_str().to_owned();
        let tcp = tokio::time::timeout(EVENT_TIMEOUT, TcpStream::connect(authority))
            .await
            .expect("connect in time")
            .unwrap();
        Self::over(request, Stream::Plain(tcp)).await
    }

    /// Upgrades `stream` (either transport) with `request`.
    pub async fn over(request: Request, stream: Stream) -> (Self, Response) {
        let (ws, response) = tokio::time::timeout(
            EVENT_TIMEOUT,
            tokio_tungstenite::client_async(request, stream),
        )
        .await
        .expect("connect in time")
        .expect("handshake succeeds");
        assert_eq!(response.status(), 101);
        (Self { ws }, response)
    }

    pub async fn send(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    /// The next JSON event (pings are answered by tungstenite and skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("an event arrives in time")
                .expect("stream open")
                .expect("no protocol error");
            match next {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("events are JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text event, got {other:?}"),
            }
        }
    }

    /// The next event, which must be of `kind`.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let event = self.recv().await;
        assert_eq!(event["type"], kind, "unexpected event {event}");
        event
    }

    /// Skips events until one of `kind` arrives.
    pub async fn recv_until(&mut self, kind: &str) -> Value {
        loop {
            let event = self.recv().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Sends an application ping and returns every event that arrived before its pong:
    /// proof of what was (not) sent, without sleeping.
    pub async fn drain(&mut self) -> Vec<Value> {
        self.send(json!({"type":"ping"})).await;
        let mut seen = Vec::new();
        loop {
            let event = self.recv().await;
            if event["type"] == "pong" {
                return seen;
            }
            seen.push(event);
        }
    }

    /// Expects an `error` event with `code`, then checks the connection is still usable.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let event = self.recv_type("error").await;
        assert_eq!(event["code"], code, "{event}");
        assert!(event["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(
            self.drain().await.is_empty(),
            "connection stays open after an error"
        );
        event
    }

    /// Sends a close frame (code 1000) and drops the connection without waiting for the
    /// relay's answer: a client that leaves right after its last command.
    pub async fn close_now(mut self) {
        self.ws.close(None).await.expect("close frame sent");
    }

    /// Reads until the server closes; returns the close code. Keeps polling after the close
    /// frame so tungstenite sends its reply and the handshake completes, as a browser's would.
    pub async fn expect_close(&mut self) -> u16 {
        let code = loop {
            let next = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("close arrives in time");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
                Some(Ok(Message::Close(None))) => break u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        while let Ok(Some(Ok(_))) = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await {}
        code
    }
}
