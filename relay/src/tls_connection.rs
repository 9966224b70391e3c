//! The connection task over TLS: the same framing, session and close handshake as
//! [`crate::connection`], with reads and writes through tokio-rustls.
//!
//! The plain-TCP task reads with `try_read` into a per-thread scratch buffer and writes with
//! `try_write_vectored`, which a TLS stream cannot offer (its bytes pass through rustls). This
//! task awaits `read` into a buffer of its own (one TLS record, 16 KiB) and `write_vectored`
//! instead; it is separate so the plain path stays exactly as it was.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::auth::Identity;
use crate::connection::{on_input, start_close, wait_deadline, Link};
use crate::hub::Hub;

/// Plaintext bytes per read: one maximal TLS record.
const READ_BYTES: usize = 16 * 1024;

/// Serves one TLS connection until it closes (see [`crate::connection::drive`]).
pub async fn drive(
    hub: Arc<Hub>,
    stream: TlsStream<TcpStream>,
    leftover: Bytes,
    peer: SocketAddr,
    identity: Option<Identity>,
) {
    let Link {
        conn,
        mut session,
        mut reader,
        mut writer,
        mut closing,
    } = Link::open(&hub, peer, identity, leftover, "TLS connection");
    let max_message = hub.limits.max_message_bytes;
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    let mut buf = vec![0u8; READ_BYTES];

    // Written into rustls but maybe not yet flushed to the socket.
    let mut unflushed = false;

    let end: &str = loop {
        if closing.sent && !writer.has_pending() && !unflushed && !closing.finished_writing {
            closing.finished_writing = true;
            // close_notify, then FIN. A client that does not read could stall this: the
            // close deadline bounds it.
            tokio::select! {
                _ = write_half.shutdown() => {}
                () = wait_deadline(&mut closing.deadline) => break "close handshake timed out",
            }
        }
        if closing.finished_writing && closing.received {
            break "closed";
        }
        tokio::select! {
            biased;
            () = conn.outbox.notified() => {
                if let Some(request) = conn.outbox.take(writer.batch()) {
                    start_close(&mut writer, &mut closing, &conn, &hub, request);
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
            read = read_half.read(&mut buf), if !closing.received => match read {
                Ok(0) => break "client went away",
                Ok(n) => {
                    hub.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    if !closing.ignore_input {
                        on_input(&mut buf[..n], &mut reader, &mut session, &conn, &hub, &mut closing, max_message);
                    }
                }
                Err(err) => {
                    debug!(peer = %peer, error = %err, "read failed");
                    break "read error";
                }
            },
            () = wait_deadline(&mut closing.deadline) => break "close handshake timed out",
        }
    };

    let link = Link {
        conn,
        session,
        reader,
        writer,
        closing,
    };
    link.finish(&hub, peer, end, "TLS connection");
}
