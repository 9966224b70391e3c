//! A raw WebSocket client, over a plain `TcpStream` or either transport ([`Stream`]): it
//! sends frames exactly as told (unmasked, fragmented, invalid UTF-8) and never answers pings
//! on its own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::tls::Stream;
use super::{TestRelay, EVENT_TIMEOUT};

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

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
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
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
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
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
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "RFC 6455 accept key: {head}"
        );
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
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
        let (len, at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (usize::from(n), 2),
        };
        if b.len() < at + len {
            return None;
        }
        let frame = RawFrame {
            fin: b[0] & 0x80 != 0,
            opcode: b[0] & 0x0F,
            payload: b[at..at + len].to_vec(),
        };
        self.buf.drain(..at + len);
        Some(frame)
    }
}
