//! Raw HTTP/1.1 exchanges: upgrade attempts whose refusal (401, 403, 429, 503) a WebSocket
//! library would only report as an error.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EVENT_TIMEOUT;

/// A response's status and its head (status line and headers), lowercased for matching.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub head: String,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(str::trim)
    }
}

/// Sends a WebSocket upgrade request for `target` (path and query) with `headers` added,
/// and reads the response head.
pub async fn upgrade(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Head {
    let stream = tokio::time::timeout(EVENT_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    upgrade_over(stream, target, headers).await
}

/// [`upgrade`] over an already connected stream (TLS, for instance).
pub async fn upgrade_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    target: &str,
    headers: &[(&str, &str)],
) -> Head {
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request_over(stream, &request).await
}

/// Writes `request` as it is and reads the response head.
pub async fn request_over<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> Head {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a status code");
            return Head { status, head };
        }
    }
}
