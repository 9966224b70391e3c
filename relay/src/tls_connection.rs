//! The connection task over TLS: the same framing, session and close handshake as
//! [`crate::connection`], with reads and writes through tokio-rustls.
//!
//! The plain-TCP task reads with non-blocking reads into a per-thread scratch buffer and leaves
//! most writes to the flushers, which write straight to its socket; a TLS stream cannot offer
//! either (its bytes pass through rustls). This task awaits `read` into a buffer of its own
//! (one TLS record, 16 KiB), takes its queued frames when its outbox signals, and awaits
//! `write_vectored` instead.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::auth::Identity;
use crate::connection::{start_close, Link};
use crate::hub::Hub;
use crate::writer::Writer;

/// Plaintext bytes per read: one maximal TLS record.
const READ_BYTES: usize = 16 * 1024;

/// Serves one TLS connection until it closes (plain TCP's counterpart is the `Driver`
/// future in [`crate::connection`]).
pub async fn drive(
    hub: Arc<Hub>,
    stream: TlsStream<TcpStream>,
    leftover: Bytes,
    peer: SocketAddr,
    identity: Option<Identity>,
) {
    let mut link = Link::open(&hub, peer, identity, leftover, "TLS connection");
    let conn = link.conn().clone();
    let mut writer = Writer::default();
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let mut buf = vec![0u8; READ_BYTES];

    // Written into rustls but maybe not yet flushed to the socket.
    let mut unflushed = false;

    let end: &str = loop {
        if link.closing.sent
            && !writer.has_pending()
            && !unflushed
            && !link.closing.finished_writing
        {
            link.closing.finished_writing = true;
            // close_notify, then FIN. A client that does not read could stall this: the
            // close deadline bounds it.
            tokio::select! {
                _ = write_half.shutdown() => {}
                () = link.closing.deadline() => break "close handshake timed out",
            }
        }
        if link.closing.finished_writing && link.closing.received {
            break "closed";
        }
        tokio::select! {
            biased;
            () = conn.outbox.signalled() => {
                if let Some(request) = conn.outbox.take(writer.batch()) {
                    start_close(&mut writer, &mut link.closing, &conn, &hub, request);
                }
                unflushed |= writer.has_pending();
            }
            written = writer.write_to(&mut write_half, &conn.outbox), if writer.has_pending() || unflushed => {
                let bytes = writer.take_written();
                if bytes > 0 {
                    hub.stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
                }
                if let Err(err) = written {
                    debug!(peer = %peer, error = %err, "write failed");
                    break "write error";
                }
                unflushed = false;
            }
            read = read_half.read(&mut buf), if !link.closing.received && !link.session.is_paused() => match read {
                Ok(0) => break "client went away",
                Ok(n) => {
                    hub.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    link.input(&mut buf[..n]);
                }
                Err(err) => {
                    debug!(peer = %peer, error = %err, "read failed");
                    break "read error";
                }
            },
            () = link.session.pause_over() => {}
            () = link.closing.deadline() => break "close handshake timed out",
        }
    };

    drop(conn);
    link.finish(peer, end, "TLS connection");
}
