//! A raw WebSocket client, over a plain `TcpStream` or either transport ([`Stream`]): it
//! sends frames exactly as told (unmasked, fragmented, invalid UTF-8) and never answers pings
//! on its own. The framing itself is `chatrelay_wsclient`'s, shared with the load generator,
//! so the tests and the relay's own `ws/` are two independent implementations.

use std::net::SocketAddr;
use std::time::Duration;

use chatrelay_wsclient as ws;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::tls::Stream;
use super::{TestRelay, EVENT_TIMEOUT};

pub const TEXT: u8 = ws::OP_TEXT;
pub const BINARY: u8 = ws::OP_BINARY;
pub const CONTINUATION: u8 = ws::OP_CONT;
pub const CLOSE: u8 = ws::OP_CLOSE;
pub const PING: u8 = ws::OP_PING;

/// The RFC 6455 sample key, so a wrong accept is easy to spot by eye.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub struct RawClient<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

/// One frame as the server sent it.
#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with_key(fin, opcode, payload, [0xA1, 0xB2, 0xC3, 0xD4])
}

/// A client frame masked with `key`.
pub fn frame_with_key(fin: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    ws::put_masked_frame(&mut out, fin, opcode, key, payload);
    out
}

/// A TCP connection to `addr`; `recv_buffer` shrinks its receive buffer (to make a slow
/// reader fill up quickly).
async fn tcp(addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

impl RawClient {
    /// Connects over plain TCP and completes the upgrade.
    pub async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> Self {
        RawClient::upgrade(tcp(addr, recv_buffer).await, addr).await
    }
}

impl RawClient<Stream> {
    /// Connects over `relay`'s transport and completes the upgrade.
    pub async fn over(relay: &TestRelay, recv_buffer: Option<u32>) -> Self {
        let stream = relay.stream(tcp(relay.addr, recv_buffer).await).await;
        RawClient::upgrade(stream, relay.addr).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    async fn upgrade(mut stream: S, addr: SocketAddr) -> Self {
        let request = ws::upgrade_request(&addr.to_string(), "/ws", KEY);
        stream.write_all(&request).await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "server closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        if let Err(e) = ws::check_upgrade_response(&buf[..end], KEY) {
            panic!("RFC 6455 accept key: {e}: {head}");
        }
        buf.drain(..end);
        Self { stream, buf }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        // TLS buffers what it encrypts.
        self.stream.flush().await.unwrap();
    }

    /// Like [`RawClient::send_raw`], but says whether the write succeeded instead of
    /// failing (hostile clients keep writing after the relay gave up on them).
    pub async fn send_raw_checked(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&frame(fin, opcode, payload)).await;
    }

    /// Sends a `join` (and does not wait for `joined`: the point is often not to read).
    pub async fn send_join(&mut self, room: &str, username: &str) {
        let join = format!(r#"{{"type":"join","room":"{room}","username":"{username}"}}"#);
        self.send_frame(true, TEXT, join.as_bytes()).await;
    }

    /// The next frame, or `None` at end of stream.
    pub async fn read_frame_within(&mut self, limit: Duration) -> Option<RawFrame> {
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = match tokio::time::timeout(limit, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!("no frame within {limit:?}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn read_frame(&mut self) -> Option<RawFrame> {
        self.read_frame_within(EVENT_TIMEOUT).await
    }

    /// Reads frames until a close frame; returns its code and how many text frames came first.
    pub async fn read_until_close(&mut self) -> (Option<u16>, usize) {
        let mut texts = 0;
        while let Some(frame) = self.read_frame().await {
            match frame.opcode {
                CLOSE => return (frame.close_code(), texts),
                TEXT => texts += 1,
                _ => {}
            }
        }
        (None, texts)
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let header = ws::parse_header(&self.buf)
            .unwrap_or_else(|e| panic!("server sent a bad frame header: {e}"))?;
        assert_eq!(header.mask, None, "server frames are never masked");
        if self.buf.len() < header.frame_len() {
            return None;
        }
        let frame = RawFrame {
            fin: header.fin,
            opcode: header.opcode,
            payload: self.buf[header.header_len..header.frame_len()].to_vec(),
        };
        self.buf.drain(..header.frame_len());
        Some(frame)
    }
}
