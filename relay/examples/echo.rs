//! An echo server on the relay's own framing code, for the Autobahn conformance cases
//! (`scripts/autobahn.sh`, PyPI `kosoku`): what the relay reads goes through
//! [`relay::ws::reader::FrameReader`] and what it writes is built by [`relay::ws::Frame`],
//! exactly as in the chat connection, so the cases test that code and not a library's.
//!
//! ```text
//! cargo run -p relay --example echo [ADDR]    # ADDR defaults to 127.0.0.1:0 (a free port)
//! ```
//! Prints `listening on ADDR` once bound. Upgrades `GET` on any path (the relay's handshake
//! does the same through fastwebsockets), then echoes every text and binary message
//! (fragments reassembled, text checked as UTF-8), answers pings, and answers a close frame
//! with the client's code before closing the socket.
//!
//! # Limits
//! - A message (all fragments together) may be up to [`MAX_MESSAGE`], 16 MiB: the largest
//!   message Autobahn's section 9 sends, so every 9.x case runs. The relay itself allows
//!   64 KiB (`--max-message-bytes`); the reader enforces whichever limit it is given the same
//!   way (1009 close from the frame header, or as soon as the fragments pass it).
//! - No extensions (no permessage-deflate: Autobahn sections 12 and 13 do not apply).

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use relay::ws::reader::{FrameReader, Message};
use relay::ws::{Frame, OpCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest message accepted, all fragments counted together (see the module docs).
const MAX_MESSAGE: usize = 16 << 20;

/// How long the socket is drained after our close frame before it is dropped: closing with
/// unread input would send a reset, which can destroy the close frame in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(addr) => addr.parse()?,
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, hyper::Error>(upgrade(req)) });
            let served = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(err) = served {
                eprintln!("http: {err}");
            }
        });
    }
}

/// Answers the upgrade request with a 101 and hands the socket to [`echo`].
fn upgrade(mut req: Request<Incoming>) -> Response<Empty<Bytes>> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return status(StatusCode::UPGRADE_REQUIRED);
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(parts) => parts,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(err) => return eprintln!("upgrade: {err}"),
        };
        // The raw socket back from hyper, with whatever it read past the request: the
        // relay's own reader and writer frame on it, as in the chat connection.
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                if let Err(err) = echo(parts.io.into_inner(), parts.read_buf).await {
                    eprintln!("connection: {err}");
                }
            }
            Err(_) => eprintln!("upgraded connection is not a TcpStream"),
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Empty::new())
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}

/// Echoes messages until a close (ours or the client's) has been sent.
async fn echo(mut stream: TcpStream, already_read: Bytes) -> std::io::Result<()> {
    let mut reader = FrameReader::default();
    let mut input = already_read.to_vec();
    let mut buf = vec![0u8; 64 << 10];
    let mut out: Vec<Frame> = Vec::new();
    loop {
        let mut closed = false;
        let result = reader.feed(&mut input, MAX_MESSAGE, |message| {
            match message {
                Message::Text(text) => out.push(Frame::new(OpCode::Text, text.as_bytes())),
                Message::Binary(data) => out.push(Frame::new(OpCode::Binary, data)),
                Message::Ping(payload) => out.push(Frame::new(OpCode::Pong, payload)),
                Message::Pong => {}
                Message::Close(code) => {
                    // Echo the client's code (RFC 6455 5.5.1); a close without one is
                    // answered 1000. Invalid codes never get here: the reader fails them.
                    out.push(Frame::close(code.unwrap_or(1000), ""));
                    closed = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Err(violation) = result {
            // Whatever was complete before the bad frame is still answered, in order.
            out.push(Frame::close(violation.close_code(), violation.reason()));
            closed = true;
        }
        for frame in out.drain(..) {
            stream.write_all(frame.bytes()).await?;
        }
        if closed {
            return linger_close(stream).await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        input.clear();
        input.extend_from_slice(&buf[..n]);
    }
}

/// Closes our side first (the server closes the TCP connection, RFC 6455 section 7.1.1),
/// then reads and discards until the client closes too or [`CLOSE_LINGER`] passes.
async fn linger_close(mut stream: TcpStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let drain = async {
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(CLOSE_LINGER, drain).await {
        Ok(result) => result,
        Err(_elapsed) => Ok(()),
    }
}
