//! One upgraded WebSocket connection's task: reads, dispatches, writes, closes.
//!
//! One task per connection, no second writer task: it waits on the socket being readable,
//! its outbox being non-empty, and (only while blocked) the socket being writable. Reads go
//! into a per-thread scratch buffer, so an idle connection holds no read buffer at all.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

use crate::auth::Identity;
use crate::conn::Conn;
use crate::hub::Hub;
use crate::metrics::Ending;
use crate::outbox::{CloseRequest, Priority};
use crate::protocol::ErrorCode;
use crate::session::Session;
use crate::writer::Writer;
use crate::ws::reader::{FrameReader, Message};
use crate::ws::{Frame, OpCode};

/// Bytes read per `read` call. Large enough to take a burst of small frames (or one maximal
/// 64 KiB message) in one syscall; it exists once per worker thread, not per connection.
const SCRATCH_BYTES: usize = 64 * 1024 + 16;

/// How long a closing connection waits for the client's close frame (or to flush its own)
/// before the socket is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Where the close handshake stands.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    /// Our close frame is queued or sent.
    pub(crate) sent: bool,
    /// The client's close frame arrived (or it stopped sending).
    pub(crate) received: bool,
    /// The client broke the protocol: what it still sends is read and thrown away, so the
    /// socket is not dropped with unread input (the kernel would answer with a reset that
    /// can destroy our close frame before the client reads it).
    pub(crate) ignore_input: bool,
    /// Our close frame has been written and the write side shut down.
    pub(crate) finished_writing: bool,
    /// Set once either side started closing.
    pub(crate) deadline: Option<Pin<Box<Sleep>>>,
    /// The code and reason of the close frame we sent (for the close log line and metrics).
    pub(crate) code: Option<u16>,
    pub(crate) reason: &'static str,
    /// The client's close frame came before ours: ours only answered it.
    pub(crate) client_first: bool,
}

enum ReadOutcome {
    Open,
    Eof,
}

/// What both connection drivers (plain TCP here, TLS in `tls_connection`) keep besides the
/// stream: set up by [`Link::open`], ended by [`Link::finish`].
pub(crate) struct Link {
    pub(crate) conn: Arc<Conn>,
    pub(crate) session: Session,
    pub(crate) reader: FrameReader,
    pub(crate) writer: Writer,
    pub(crate) closing: Closing,
}

impl Link {
    /// Registers the connection and handles what the HTTP layer read past the upgrade.
    /// `label` names the transport in the log ("connection", "TLS connection").
    pub(crate) fn open(
        hub: &Arc<Hub>,
        peer: SocketAddr,
        identity: Option<Identity>,
        leftover: Bytes,
        label: &str,
    ) -> Self {
        let conn = hub.register_as(peer, identity);
        debug!(peer = %peer, client = %conn.client_id, "{label} open");
        let mut link = Link {
            session: Session::new(hub.clone(), conn.clone()),
            conn,
            reader: FrameReader::default(),
            writer: Writer::default(),
            closing: Closing::default(),
        };
        if !leftover.is_empty() {
            hub.stats
                .bytes_in
                .fetch_add(leftover.len() as u64, Ordering::Relaxed);
            let mut early = leftover.to_vec();
            on_input(
                &mut early,
                &mut link.reader,
                &mut link.session,
                &link.conn,
                hub,
                &mut link.closing,
                hub.limits.max_message_bytes,
            );
        }
        // `leftover` is a slice of hyper's whole read buffer (8 KiB or more): it is dropped
        // here, not held for the life of the connection, which would pin that buffer per
        // idle client.
        link
    }

    /// Counts and logs how the connection ended, then takes it out of its rooms and the hub.
    pub(crate) fn finish(mut self, hub: &Hub, peer: SocketAddr, end: &str, label: &str) {
        let closing = &self.closing;
        let ending = match closing.code {
            _ if closing.client_first => Ending::ClientClosed,
            Some(code) => Ending::Relay(code),
            None => Ending::NoHandshake,
        };
        hub.metrics.connection_ended(ending);
        debug!(
            peer = %peer,
            client = %self.conn.client_id,
            code = closing.code,
            reason = closing.reason,
            client_closed_first = closing.client_first,
            outcome = end,
            "{label} closed"
        );
        // After the count: a member who sees this connection's `user_left` can rely on it
        // (the metrics tests do).
        self.session.leave_all();
        hub.unregister(&self.conn);
    }
}

/// Serves one connection until it closes. `leftover` holds bytes the HTTP layer read past
/// the upgrade request.
pub async fn drive(
    hub: Arc<Hub>,
    stream: TcpStream,
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
    } = Link::open(&hub, peer, identity, leftover, "connection");
    let max_message = hub.limits.max_message_bytes;

    let end: &str = loop {
        if closing.sent && !writer.has_pending() && !closing.finished_writing {
            closing.finished_writing = true;
            // FIN after the close frame: the client sees the close, then end of stream.
            let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
        }
        if closing.finished_writing && closing.received {
            break "closed";
        }
        tokio::select! {
            biased;
            () = conn.outbox.notified() => {
                // Write at the end of the scheduler's round, not at once: tokio runs a
                // yielded task only after the I/O driver has been polled, so every reader
                // that is ready now fans out into this batch first. One writev then carries
                // many frames instead of one (uWebSockets' corking, done by the scheduler).
                tokio::task::yield_now().await;
                if let Some(request) = conn.outbox.take(writer.batch()) {
                    start_close(&mut writer, &mut closing, &conn, &hub, request);
                }
                if let Err(err) = flush(&mut writer, &stream, &conn, &hub) {
                    debug!(peer = %peer, error = %err, "write failed");
                    break "write error";
                }
            }
            ready = stream.writable(), if writer.has_pending() => {
                if ready.is_err() {
                    break "write error";
                }
                if let Err(err) = flush(&mut writer, &stream, &conn, &hub) {
                    debug!(peer = %peer, error = %err, "write failed");
                    break "write error";
                }
            }
            ready = stream.readable(), if !closing.received => {
                if ready.is_err() {
                    break "read error";
                }
                let outcome = SCRATCH.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    match stream.try_read(&mut scratch[..]) {
                        Ok(0) => Ok(ReadOutcome::Eof),
                        Ok(n) => {
                            // Per read call (a burst of frames), not per frame.
                            hub.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                            if !closing.ignore_input {
                                on_input(&mut scratch[..n], &mut reader, &mut session, &conn, &hub, &mut closing, max_message);
                            }
                            Ok(ReadOutcome::Open)
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(ReadOutcome::Open),
                        Err(err) => Err(err),
                    }
                });
                match outcome {
                    Ok(ReadOutcome::Open) => {}
                    Ok(ReadOutcome::Eof) => break "client went away",
                    Err(err) => {
                        debug!(peer = %peer, error = %err, "read failed");
                        break "read error";
                    }
                }
            }
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
    link.finish(&hub, peer, end, "connection");
}

/// Writes what the writer holds and counts the bytes once for the whole wake-up.
fn flush(writer: &mut Writer, stream: &TcpStream, conn: &Conn, hub: &Hub) -> io::Result<bool> {
    let result = writer.flush(stream, &conn.outbox);
    let written = writer.take_written();
    if written > 0 {
        hub.stats.bytes_out.fetch_add(written, Ordering::Relaxed);
    }
    result
}

pub(crate) async fn wait_deadline(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

pub(crate) fn start_close(
    writer: &mut Writer,
    closing: &mut Closing,
    conn: &Conn,
    hub: &Hub,
    request: CloseRequest,
) {
    if request.discard {
        let dropped = writer.discard(&conn.outbox);
        hub.stats
            .frames_discarded
            .fetch_add(dropped as u64, Ordering::Relaxed);
    }
    closing.code = Some(request.code);
    closing.reason = request.reason;
    writer.push(
        Frame::close(request.code, request.reason).bytes().clone(),
        &conn.outbox,
    );
    closing.sent = true;
    closing
        .deadline
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
}

pub(crate) fn on_input(
    data: &mut [u8],
    reader: &mut FrameReader,
    session: &mut Session,
    conn: &Conn,
    hub: &Hub,
    closing: &mut Closing,
    max_message: usize,
) {
    // Any traffic proves the client is alive, not only a pong.
    conn.awaiting_pong.store(false, Ordering::Relaxed);
    let mut peer_close = None;
    let result = reader.feed(data, max_message, |message| {
        if closing.sent {
            // After our close frame, only the client's close matters.
            if let Message::Close(code) = message {
                peer_close = Some(code);
                return ControlFlow::Break(());
            }
            return ControlFlow::Continue(());
        }
        match message {
            Message::Text(text) => session.on_text(text),
            Message::Binary => session.error(
                ErrorCode::BinaryNotSupported,
                "binary messages are not supported; send JSON text",
            ),
            Message::Ping(payload) => hub.push_to(
                conn,
                Frame::new(OpCode::Pong, payload).bytes(),
                Priority::Normal,
            ),
            Message::Pong => {}
            Message::Close(code) => {
                peer_close = Some(code);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match result {
        Ok(_) => {}
        Err(violation) => {
            hub.stats.protocol_closes.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %conn.peer, code = violation.close_code(), reason = violation.reason(), "protocol violation");
            conn.outbox.close(CloseRequest {
                code: violation.close_code(),
                reason: violation.reason(),
                discard: true,
            });
            closing.ignore_input = true;
        }
    }
    if let Some(code) = peer_close {
        closing.received = true;
        closing.client_first = !closing.sent;
        // Echo the client's code as RFC 6455 asks; codes it may not send become 1000.
        let echo = code
            .filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))
            .unwrap_or(1000);
        conn.outbox.close(CloseRequest {
            code: echo,
            reason: "",
            discard: false,
        });
    }
}
