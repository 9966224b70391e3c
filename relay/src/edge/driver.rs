//! One upgraded WebSocket connection's task, plain TCP or TLS: reads, dispatches, closes, and
//! writes what no flusher writes.
//!
//! One task per connection, no second writer task: it waits on the socket being readable,
//! on its outbox asking it to act (a close, a write that would block), and (only while
//! blocked) on the socket being writable. Reads go into a per-thread scratch buffer, so an
//! idle connection holds no read buffer of its own. What differs between the transports is
//! in [`crate::transport::wire`], reached through the outbox.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rustls::ServerConnection;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::session::Session;
use crate::edge::admission::Held;
use crate::edge::auth::Identity;
use crate::telemetry::metrics::Ending;
use crate::transport::outbox::{CloseRequest, Wrote};
use crate::ws::reader::{FrameReader, Message};
use crate::ws::Frame;

/// Reads per poll before the task yields to others (each up to [`SCRATCH_BYTES`]): a client
/// that sends without pause must not hold its worker.
const READS_PER_POLL: usize = 4;

/// A connection stops reading while its own queue holds more than this share of the
/// slow-consumer cap (a quarter): what it reads would only grow the queue further.
const READ_PAUSE_DIVISOR: usize = 4;

/// Bytes read per `read` call. Large enough to take a burst of small frames (or one maximal
/// 64 KiB message) in one syscall; it exists once per worker thread, not per connection.
const SCRATCH_BYTES: usize = 64 * 1024 + 16;

/// How long a closing connection waits for the client's close frame (or to flush its own)
/// before the socket is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
}

/// Where the close handshake stands. Small on purpose (it lives in every connection's task):
/// what only matters once our close frame is out is boxed in [`SentClose`].
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
    /// The client's close frame came before ours: ours only answered it.
    pub(crate) client_first: bool,
    /// The connection is over but commands wait for the hooks: only their answers are
    /// awaited now, then it ends.
    pub(crate) ended: bool,
    /// Set once our close frame is queued.
    pub(crate) sent_frame: Option<Box<SentClose>>,
}

/// Our close frame: what it said (for the close log line and metrics) and how long the
/// client has to answer it.
#[derive(Debug)]
pub(crate) struct SentClose {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) deadline: Pin<Box<Sleep>>,
}

impl Closing {
    /// Our close frame is queued: remember what it said and start the grace timer.
    fn begin(&mut self, request: CloseRequest) {
        self.sent = true;
        self.sent_frame.get_or_insert_with(|| {
            Box::new(SentClose {
                code: request.code,
                reason: request.reason,
                deadline: Box::pin(tokio::time::sleep(CLOSE_GRACE)),
            })
        });
    }
}

enum ReadOutcome {
    Open,
    Eof,
}

/// What the driver keeps besides the stream: set up by [`Link::open`], ended by
/// [`Link::finish`].
pub(crate) struct Link {
    pub(crate) session: Session,
    pub(crate) reader: FrameReader,
    pub(crate) closing: Closing,
}

impl Link {
    /// Registers the connection and handles what the HTTP layer read past the upgrade.
    pub(crate) fn open(
        hub: &Arc<Hub>,
        peer: SocketAddr,
        identity: Option<Identity>,
        leftover: &[u8],
        label: &str,
    ) -> Self {
        let conn = hub.register_as(peer, identity);
        debug!(peer = %peer, client = %conn.client_id, "{label} open");
        let mut link = Link {
            session: Session::new(hub.clone(), conn),
            reader: FrameReader::default(),
            closing: Closing::default(),
        };
        if !leftover.is_empty() {
            hub.stats
                .bytes_in
                .fetch_add(leftover.len() as u64, Ordering::Relaxed);
            let mut early = leftover.to_vec();
            link.input(&mut early);
        }
        link
    }

    /// Handles bytes read from the client, and pauses reading if they went over the frame
    /// budget.
    pub(crate) fn input(&mut self, data: &mut [u8]) {
        if self.closing.ignore_input {
            return;
        }
        let max_message = self.hub().limits.max_message_bytes;
        on_input(
            data,
            &mut self.reader,
            &mut self.session,
            &mut self.closing,
            max_message,
        );
        self.session.charge_frames(self.reader.take_frames());
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        self.session.conn()
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        self.session.hub()
    }

    /// Counts and logs how the connection ended, then takes it out of its rooms and the hub.
    pub(crate) fn finish(mut self, peer: SocketAddr, end: &str, label: &str) {
        let hub = self.session.hub().clone();
        let closing = &self.closing;
        let code = closing.sent_frame.as_ref().map(|sent| sent.code);
        let ending = match code {
            _ if closing.client_first => Ending::ClientClosed,
            Some(code) => Ending::Relay(code),
            None => Ending::NoHandshake,
        };
        hub.metrics.connection_ended(ending);
        debug!(
            peer = %peer,
            client = %self.session.conn().client_id,
            code,
            reason = closing.sent_frame.as_ref().map_or("", |sent| sent.reason),
            client_closed_first = closing.client_first,
            outcome = end,
            "{label} closed"
        );
        // After the count: a member who sees this connection's `user_left` can rely on it
        // (the metrics tests do).
        self.session.leave_all();
        hub.unregister(self.session.conn());
    }
}

/// One connection (plain TCP, or TLS over the raw socket), as a hand-written future spawned
/// as its own task.
///
/// Hand-written rather than an `async fn` with `select!`: it polls readiness through
/// `poll_read_ready`/`poll_write_ready` and keeps no stored sub-futures, so an idle
/// connection's task is small (an `async` version with its select branches was 1.6 KB, the
/// largest part of a connection's memory). Keep it at most 152 bytes: tokio allocates a task
/// in 128-byte-aligned cells, and that size keeps this one at 256 bytes rather than 384
/// (`a_connection_task_fits_a_256_byte_cell` checks it).
///
/// Writes are normally a flusher's job ([`crate::chat::flusher`]); the task writes only what no
/// flusher will: the close frame (and TLS's close_notify), early replies, and the rest of a
/// queue after the socket would block.
pub struct Driver {
    stream: Arc<TcpStream>,
    link: Option<Link>,
    _held: Arc<Held>,
}

impl Driver {
    /// Registers the connection and handles what the HTTP layer (and rustls, for `tls`) read
    /// past the upgrade (`leftover`); spawn the result.
    ///
    /// `leftover` is a slice of hyper's whole read buffer (8 KiB or more): it is dropped here,
    /// not held for the life of the connection, which would pin that buffer per idle client.
    pub(crate) fn new(
        hub: &Arc<Hub>,
        stream: TcpStream,
        tls: Option<ServerConnection>,
        leftover: Bytes,
        peer: SocketAddr,
        identity: Option<Identity>,
        held: Arc<Held>,
    ) -> Self {
        let label = if tls.is_some() {
            "TLS connection"
        } else {
            "connection"
        };
        let stream = Arc::new(stream);
        let link = Link::open(hub, peer, identity, &leftover, label);
        match tls {
            Some(tls) => link.conn().outbox.attach_tls(stream.clone(), tls),
            None => link.conn().outbox.attach(stream.clone()),
        }
        Self {
            stream,
            link: Some(link),
            _held: held,
        }
    }

    /// Does everything that can be done now; `Some(outcome)` once the connection is over.
    fn step(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Option<&'static str> {
        let mut reads = 0;
        let read_pause = link.hub().limits.max_outbound_bytes / READ_PAUSE_DIVISOR;
        loop {
            let work = link.conn().outbox.poll_task(cx.waker());
            if work.failed {
                return Some("write error");
            }
            if let Some(request) = work.close {
                start_close(link, request);
            }
            // Our own queue backed up (a client that sends faster than it reads its
            // replies, a ping flood): write it ourselves and stop reading until it drains,
            // so the client feels TCP backpressure instead of growing our memory.
            let backed_up = link.conn().outbox.queued_bytes() > read_pause;
            let mut blocked = false;
            if work.write || link.closing.sent || backed_up {
                loop {
                    let (wrote, bytes) = link.conn().outbox.write_now();
                    if bytes > 0 {
                        link.hub()
                            .stats
                            .bytes_out
                            .fetch_add(bytes, Ordering::Relaxed);
                    }
                    match wrote {
                        Wrote::Drained => break,
                        Wrote::Failed => return Some("write error"),
                        Wrote::Blocked => match self.stream.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(_)) => return Some("write error"),
                            Poll::Pending => {
                                blocked = true;
                                break;
                            }
                        },
                    }
                }
            }
            if link.closing.sent
                && !link.closing.finished_writing
                && link.conn().outbox.is_drained()
            {
                if link.conn().outbox.finish_wire() {
                    // close_notify goes out before the FIN, like any queued bytes.
                    continue;
                }
                link.closing.finished_writing = true;
                // FIN after the close frame: the client sees the close, then end of stream.
                let _ = socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write);
            }
            let closing = &mut link.closing;
            if closing.finished_writing && closing.received {
                return Some("closed");
            }
            if let Some(sent) = &mut closing.sent_frame {
                if sent.deadline.as_mut().poll(cx).is_ready() {
                    return Some("close handshake timed out");
                }
            }
            if closing.received {
                return None;
            }
            // The hooks' answers that are in, applied in order (an answer's wake-up brought us
            // here). While commands wait for the hooks the socket is not read: what waits
            // stays bounded (`chat::session::checks`), and the answer wakes us.
            let hold = link.session.poll_checks(cx);
            // Pongs sent meanwhile stay unread too: the heartbeat must not close the client for
            // the relay's own wait.
            link.conn().hold_reads(hold);
            if link.conn().outbox.queued_bytes() > read_pause {
                if blocked {
                    // Writability wakes us; we read again once the queue is written.
                    return None;
                }
                continue;
            }
            if link.session.poll_paused(cx) {
                // Over the frame budget: the timer wakes us.
                return None;
            }
            if hold {
                return None;
            }
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return None,
                Poll::Ready(Err(_)) => return Some("read error"),
                Poll::Ready(Ok(())) => {}
            }
            if reads == READS_PER_POLL {
                // Still readable: come back after the I/O driver's next poll, not at once.
                // A plain wake-up would run this task again before any socket that became
                // readable meanwhile is even seen (the scheduler polls I/O only every
                // `--event-interval` tasks), so a few flooding clients could hold every
                // other client's reads back for seconds; tokio's `yield_now` defers the
                // wake-up past that poll.
                let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                return None;
            }
            reads += 1;
            match read(&self.stream, link) {
                Ok(ReadOutcome::Open) => {}
                Ok(ReadOutcome::Eof) => return Some("client went away"),
                Err(err) => {
                    debug!(peer = %link.conn().peer, error = %err, "read failed");
                    return Some("read error");
                }
            }
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(mut link) = this.link.take() else {
            return Poll::Ready(());
        };
        let end = if link.closing.ended {
            "ended, once its commands at the hooks were carried out"
        } else {
            match this.step(&mut link, cx) {
                None => {
                    this.link = Some(link);
                    return Poll::Pending;
                }
                Some(end) => end,
            }
        };
        // What still waits for the hooks is carried out before the connection ends, whatever
        // ended it (a close, a hang-up, a failed write to a peer that is gone); an answer
        // wakes us and `--hook-timeout` bounds the wait. A client that sends a message and
        // leaves at once does not lose it.
        if link.session.checks_pending() {
            link.session.poll_checks(cx);
            if link.session.checks_pending() {
                if !link.closing.ended {
                    debug!(peer = %link.conn().peer, end, "connection over; waiting for its commands at the hooks");
                    link.closing.ended = true;
                }
                this.link = Some(link);
                return Poll::Pending;
            }
        }
        let label = if link.conn().outbox.is_tls() {
            "TLS connection"
        } else {
            "connection"
        };
        // No flusher may write once the socket is gone.
        link.conn().outbox.detach();
        let peer = link.conn().peer;
        link.finish(peer, end, label);
        Poll::Ready(())
    }
}

/// Reads what the socket has into the thread's scratch buffer and processes it.
fn read(stream: &TcpStream, link: &mut Link) -> io::Result<ReadOutcome> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        // The outbox's lock is released before the input is processed: what the session
        // pushes in reply takes it again (a std Mutex is not reentrant).
        let input = link.conn().outbox.read(stream, &mut scratch[..])?;
        if input.got > 0 {
            // Per read call (a burst of frames), not per frame.
            link.hub()
                .stats
                .bytes_in
                .fetch_add(input.got as u64, Ordering::Relaxed);
            link.input(&mut scratch[..input.got]);
        }
        // A close frame right before the end of the stream is answered, not cut off.
        if input.eof && !link.closing.received {
            return Ok(ReadOutcome::Eof);
        }
        Ok(ReadOutcome::Open)
    })
}

/// Starts the close handshake: the close frame goes into the outbox behind what is queued
/// (or instead of it, for `discard`), and the task writes it.
fn start_close(link: &mut Link, request: CloseRequest) {
    let outbox = &link.conn().outbox;
    if request.discard {
        let dropped = outbox.discard();
        link.hub()
            .stats
            .frames_discarded
            .fetch_add(dropped as u64, Ordering::Relaxed);
    }
    outbox.push_own(Frame::close(request.code, request.reason).bytes().clone());
    link.closing.begin(request);
}

pub(crate) fn on_input(
    data: &mut [u8],
    reader: &mut FrameReader,
    session: &mut Session,
    closing: &mut Closing,
    max_message: usize,
) {
    // Any traffic proves the client is alive, not only a pong.
    session.conn().awaiting_pong.store(false, Ordering::Relaxed);
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
            Message::Binary(_) => session.on_binary(),
            Message::Ping(payload) => session.pong(payload),
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
            let conn = session.conn();
            session
                .hub()
                .stats
                .protocol_closes
                .fetch_add(1, Ordering::Relaxed);
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
        // Echo the client's code as RFC 6455 asks. A code it may not send never gets here:
        // the reader fails that close with 1002 (section 7.4), so it is not answered 1000.
        // A close without a code is answered 1000.
        let echo = code.unwrap_or(1000);
        session.conn().outbox.close(CloseRequest {
            code: echo,
            reason: "",
            discard: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Driver;

    /// tokio puts a task in a 128-byte-aligned cell: 32 bytes of header and 64 of scheduler
    /// fields and trailer around the future. At most 152 bytes of `Driver` keep the cell at
    /// 256 bytes; one byte more makes it 384 for every connection.
    #[test]
    fn a_connection_task_fits_a_256_byte_cell() {
        let size = std::mem::size_of::<Driver>();
        assert!(size <= 152, "Driver is {size} bytes");
    }
}
