//! The attacks below the chat protocol: C (control and empty-frame floods), D (pipelined
//! `/metrics`) and G (connection rate from one address).

use std::sync::Arc;

use chatrelay_wsclient as ws;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::attack::{drain, frame, Ctx};
use super::conn::{read_status, tcp_from};

/// Which frames a C connection floods with.
#[derive(Debug, Clone, Copy)]
pub enum FloodKind {
    Pong,
    Ping,
    /// Even connections: one unfinished text frame, then empty continuations forever; odd
    /// connections: empty binary frames.
    Frames,
}

/// Bytes of frames per write: big enough that the socket, not the loop, sets the pace.
const BATCH_BYTES: usize = 64 * 1024;

fn repeated(one: &[u8]) -> Vec<u8> {
    let n = (BATCH_BYTES / one.len().max(1)).max(1);
    let mut out = Vec::with_capacity(n * one.len());
    for _ in 0..n {
        out.extend_from_slice(one);
    }
    out
}

/// C, C-ping, C-frames: 10 connections writing frames as fast as the socket accepts them
/// (reconnecting when closed), replies read and discarded.
pub async fn frame_flood(ctx: Ctx, kind: FloodKind) {
    for k in 0..10usize {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (prefix, unit, counter) = match (kind, k % 2) {
                (FloodKind::Pong, _) => (Vec::new(), frame(true, ws::OP_PONG, b""), "pongs_sent"),
                (FloodKind::Ping, _) => (Vec::new(), frame(true, ws::OP_PING, b""), "pings_sent"),
                (FloodKind::Frames, 0) => (
                    frame(false, ws::OP_TEXT, b""),
                    frame(false, ws::OP_CONT, b""),
                    "continuations_sent",
                ),
                (FloodKind::Frames, _) => {
                    (Vec::new(), frame(true, ws::OP_BINARY, b""), "binaries_sent")
                }
            };
            let batch = repeated(&unit);
            let per_batch = (batch.len() / unit.len()) as u64;
            while ctx.live() {
                let Some(conn) = ctx.open(ctx.ip(k), 90_000 + k as u64).await else {
                    continue;
                };
                let (read, mut write, leftover) = conn.into_split();
                let reader = tokio::spawn(drain(read, leftover, ctx.counts.clone()));
                if write.write_all(&prefix).await.is_err() {
                    continue;
                }
                while ctx.live() {
                    if write.write_all(&batch).await.is_err() {
                        ctx.counts.bump("write_error");
                        break;
                    }
                    ctx.counts.add(counter, per_batch);
                }
                reader.abort();
            }
        });
    }
}

/// D: 20 keep-alive connections pipelining `GET /metrics` as fast as the socket takes them;
/// answers are counted by status; a connection the relay ends is replaced at once.
pub async fn metrics_pipeline(ctx: Ctx) {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", ctx.relay);
    let batch = Arc::new(repeated(request.as_bytes()));
    let per_batch = (batch.len() / request.len()) as u64;
    for k in 0..20usize {
        let (ctx, batch) = (ctx.clone(), batch.clone());
        tokio::spawn(async move {
            while ctx.live() {
                let Ok(stream) = tcp_from(ctx.ip(k), ctx.relay).await else {
                    ctx.counts.bump("connect_io_error");
                    tokio::task::yield_now().await;
                    continue;
                };
                ctx.counts.bump("connections");
                let (mut read, mut write) = stream.into_split();
                let (counts, batch) = (ctx.counts.clone(), batch.clone());
                let writer = tokio::spawn(async move {
                    while write.write_all(&batch).await.is_ok() {
                        counts.add("requests_sent", per_batch);
                    }
                });
                count_statuses(&mut read, &ctx).await;
                writer.abort();
            }
        });
    }
}

/// Counts `HTTP/1.1 NNN` status lines in a response stream until it ends.
async fn count_statuses(read: &mut tokio::net::tcp::OwnedReadHalf, ctx: &Ctx) {
    const NEEDLE: &[u8] = b"HTTP/1.1 ";
    let mut buf = Vec::with_capacity(128 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        for at in memchr::memmem::find_iter(&buf, NEEDLE) {
            let code = buf.get(at + NEEDLE.len()..at + NEEDLE.len() + 3);
            match code.and_then(|c| std::str::from_utf8(c).ok()) {
                Some(code) => {
                    ctx.counts.bump(&format!("http_{code}"));
                    consumed = at + NEEDLE.len() + 3;
                }
                None => break,
            }
        }
        // Keeps a tail that may hold the start of a status line cut by the read.
        let keep_from = consumed.max(buf.len().saturating_sub(NEEDLE.len() + 3));
        buf.drain(..keep_from);
    }
}

/// G: 64 concurrent connectors from one address, each looping connect + upgrade request +
/// read the status + drop, as fast as it can.
pub async fn connect_rate(ctx: Ctx) {
    let source = ctx.attacker_ips[0];
    for k in 0..64u64 {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let key = ws::client_key(k);
            let request = ws::upgrade_request(&ctx.relay.to_string(), "/ws", &key);
            while ctx.live() {
                ctx.counts.bump("attempts");
                let mut stream = match tcp_from(source, ctx.relay).await {
                    Ok(s) => s,
                    Err(_) => {
                        ctx.counts.bump("connect_io_error");
                        tokio::task::yield_now().await;
                        continue;
                    }
                };
                if stream.write_all(&request).await.is_err() {
                    ctx.counts.bump("write_error");
                    continue;
                }
                match read_status(&mut stream).await {
                    Ok((status, _)) => ctx.counts.bump(&format!("http_{status}")),
                    Err(e) => ctx.count_connect_error(&e),
                }
            }
        });
    }
}
