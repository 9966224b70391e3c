//! One hand-framed WebSocket client connection for the hostile suite: bind a chosen loopback
//! source address, upgrade, then whole messages in (continuations reassembled) and masked
//! frames out, over `chatrelay_wsclient`'s codec.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use chatrelay_wsclient as ws;

/// The relay's request-head limit is 32 KiB; an answer head longer than this is not HTTP.
const MAX_HEAD: usize = 16 * 1024;

/// Why a connection attempt did not end in an open WebSocket.
#[derive(Debug)]
pub enum ConnectError {
    /// The relay answered with this HTTP status instead of 101.
    Status(u16),
    /// TCP connect, the upgrade exchange, or a read failed.
    Io(std::io::Error),
    /// The answer was not an HTTP response head we understand.
    Garbled,
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::Io(e)
    }
}

/// TCP connect from `source` (port chosen by the kernel) to `relay`, with Nagle off so small
/// frames are measured, not batched.
pub async fn tcp_from(source: IpAddr, relay: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Without this every bound-but-unconnected socket would pin an ephemeral port for every
    // destination, and attack loops from one address would run out of ports sooner.
    {
        use std::os::fd::AsRawFd;
        crate::sysinfo::set_bind_address_no_port(socket.as_raw_fd())?;
    }
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(relay).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads an HTTP response head; returns its status and any bytes read past it.
pub async fn read_status(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), ConnectError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let status = parse_status(&buf[..end]).ok_or(ConnectError::Garbled)?;
            return Ok((status, buf.split_off(end + 4)));
        }
        if buf.len() > MAX_HEAD {
            return Err(ConnectError::Garbled);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 503 Service Unavailable` -> 503.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A frame or a whole (reassembled) data message from the relay.
#[derive(Debug)]
pub enum Incoming {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close code, if the frame carried one.
    Close(Option<u16>),
}

/// An open WebSocket: the stream, bytes read but not yet parsed, and a partial message.
pub struct WsConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    partial: Option<(u8, Vec<u8>)>,
    mask_seed: u32,
}

impl WsConn {
    /// TCP connect from `source`, then the upgrade; anything but 101 is an error.
    pub async fn open(source: IpAddr, relay: SocketAddr, id: u64) -> Result<WsConn, ConnectError> {
        let mut stream = tcp_from(source, relay).await?;
        let key = ws::client_key(id);
        let host = relay.to_string();
        stream
            .write_all(&ws::upgrade_request(&host, "/ws", &key))
            .await?;
        let (status, rest) = read_status(&mut stream).await?;
        if status != 101 {
            return Err(ConnectError::Status(status));
        }
        Ok(WsConn {
            stream,
            buf: rest,
            partial: None,
            // Masks only need to differ between frames in spirit; loopback makes this moot.
            mask_seed: (id as u32) | 1,
        })
    }

    /// The two halves and any bytes already read past the upgrade (for attackers that write
    /// pre-built frames on one task and drain replies on another).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf, Vec<u8>) {
        let (r, w) = self.stream.into_split();
        (r, w, self.buf)
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32: cheap, never zero.
        let mut x = self.mask_seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_seed = x;
        x.to_le_bytes()
    }

    /// Appends one masked frame to `out` (to batch several into one write).
    pub fn frame_into(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let mask = self.next_mask();
        ws::put_client_frame(out, opcode, mask, payload);
    }

    /// Writes one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        self.frame_into(&mut out, opcode, payload);
        self.stream.write_all(&out).await
    }

    /// Writes one text frame.
    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send(ws::OP_TEXT, text.as_bytes()).await
    }

    /// The next frame or whole message, `Ok(None)` at EOF. Cancel-safe: a read that is
    /// dropped mid-way only leaves bytes in `buf` for the next call.
    pub async fn recv(&mut self) -> std::io::Result<Option<Incoming>> {
        loop {
            if let Some(msg) = self.parse_one()? {
                return Ok(Some(msg));
            }
            self.buf.reserve(16 * 1024);
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    fn parse_one(&mut self) -> std::io::Result<Option<Incoming>> {
        loop {
            let header = match ws::parse_header(&self.buf) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            };
            if self.buf.len() < header.frame_len() {
                return Ok(None);
            }
            let payload = self.buf[header.header_len..header.frame_len()].to_vec();
            self.buf.drain(..header.frame_len());
            let msg = match header.opcode {
                ws::OP_PING => Incoming::Ping(payload),
                ws::OP_PONG => Incoming::Pong(payload),
                ws::OP_CLOSE => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    Incoming::Close(code)
                }
                ws::OP_TEXT | ws::OP_BINARY if header.fin => data(header.opcode, payload),
                ws::OP_TEXT | ws::OP_BINARY => {
                    self.partial = Some((header.opcode, payload));
                    continue;
                }
                ws::OP_CONT => {
                    let Some((op, mut acc)) = self.partial.take() else {
                        return Err(bad("continuation without a message"));
                    };
                    acc.extend_from_slice(&payload);
                    if !header.fin {
                        self.partial = Some((op, acc));
                        continue;
                    }
                    data(op, acc)
                }
                _ => return Err(bad("unknown opcode")),
            };
            return Ok(Some(msg));
        }
    }
}

fn data(opcode: u8, payload: Vec<u8>) -> Incoming {
    if opcode == ws::OP_TEXT {
        Incoming::Text(payload)
    } else {
        Incoming::Binary(payload)
    }
}

fn bad(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The close frame a client sends when it is done (1000).
pub fn close_payload() -> [u8; 2] {
    1000u16.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 101 Switching Protocols"), Some(101));
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\nx: y"),
            Some(503)
        );
        assert_eq!(parse_status(b"garbage"), None);
    }
}
