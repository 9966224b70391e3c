//! A connection's outbound queue and the write side of its socket.
//!
//! Publishers push reference-counted frames. With a socket attached, the first push into an
//! idle queue returns [`Push::Enlist`]: the caller puts the connection on a flush list
//! ([`crate::chat::flusher`]), whose flusher writes everything queued at the end of the scheduler
//! round ([`crate::transport::wire`]: one `writev` on plain TCP, records out of rustls on TLS). The
//! connection's task is not woken for that. It is woken only when it has to act: a close
//! request, a write that would block (the task then owns writing until the queue drains,
//! waiting for the socket to become writable), a failed write.
//!
//! The byte count covers every frame not yet written, including plaintext rustls holds until
//! its records are out, so the slow-consumer cap bounds all memory a client can pin.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use rustls::ServerConnection;
use tokio::net::TcpStream;

use crate::protocol::CloseCode;
pub use crate::transport::wire::Wrote;
use crate::transport::wire::{Input, Wire};

/// How much a frame matters when the queue is under pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Chat messages, presence, replies: never dropped; past the cap the client is closed.
    Normal,
    /// Typing indicators: dropped once the queue is past half its cap.
    Droppable,
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued into an idle queue with a socket attached: the caller must put the connection on
    /// its flush list ([`crate::chat::hub::Hub::enlist`]).
    Enlist,
    /// A droppable frame skipped because the queue is under pressure.
    Dropped,
    /// The queue went over its cap: the client is now being closed as a slow consumer.
    Overflow,
    /// The connection is already closing.
    Closed,
}

impl Push {
    /// The frame was queued (whoever writes it).
    pub fn queued(self) -> bool {
        matches!(self, Push::Queued | Push::Enlist)
    }
}

/// A request for the connection's task to close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close status sent to the client (one of [`CloseCode`], or a client's code echoed).
    pub code: u16,
    pub reason: &'static str,
    /// Drop queued frames instead of sending them first (slow consumers, violations).
    pub discard: bool,
}

/// What the connection's task must do, from [`Outbox::poll_task`].
#[derive(Debug, Default)]
pub struct TaskWork {
    /// A close was requested (handed over once).
    pub close: Option<CloseRequest>,
    /// Frames are queued that no flusher will write: the task writes them.
    pub write: bool,
    /// A write failed: the connection is broken.
    pub failed: bool,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already written.
    offset: usize,
    /// The socket a flusher writes to; `None` before the upgrade and after the task ends.
    socket: Option<Arc<TcpStream>>,
    /// Plain or TLS: here, under the lock, because flushers write through it too.
    wire: Wire,
    /// The connection's task, woken when it must act.
    task: Option<Waker>,
    /// On a flush list: later pushes need not enlist the connection again.
    enlisted: bool,
    /// The socket would block: the task waits for writability and writes until the queue
    /// drains; flushers leave the connection alone meanwhile.
    task_writes: bool,
    failed: bool,
    /// Frames were pushed since the last [`Outbox::trim`].
    touched: bool,
    closing: bool,
    request: Option<CloseRequest>,
}

impl Queue {
    fn signal(&self) {
        if let Some(task) = &self.task {
            task.wake_by_ref();
        }
    }

    /// Frames, or TLS records, not yet written.
    fn has_output(&self) -> bool {
        !self.frames.is_empty() || self.wire.has_output()
    }

    /// Writes queued frames until the queue drains or the socket would block. Returns the
    /// outcome and the bytes written.
    ///
    /// The ring stays when drained, however large the burst made it: the next round's pushes
    /// reuse it instead of growing a new one by doubling (in a 10,000-member room that
    /// regrowth, and the kernel zeroing fresh pages for it, cost a third of the CPU).
    /// Housekeeping frees it once the connection has been quiet for a tick ([`Outbox::trim`]).
    fn write(&mut self, queued: &AtomicUsize) -> (Wrote, u64) {
        let Queue {
            frames,
            offset,
            socket,
            wire,
            ..
        } = self;
        match socket {
            Some(socket) => wire.write(socket, frames, offset, queued),
            None => (Wrote::Failed, 0),
        }
    }
}

#[derive(Debug, Default)]
pub struct Outbox {
    // A std Mutex, not tokio's: it is held for a push, a swap or one non-blocking `writev`,
    // never across an await, and uncontended std locks cost a single atomic. Holding it during
    // the write is what lets a flusher and the connection's task both write without a
    // hand-over: whoever holds it writes from the front of the one queue.
    queue: Mutex<Queue>,
    queued: AtomicUsize,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // breaks the stream (a write advances `offset` and pops frames only after the kernel
        // took the bytes), so a poisoned lock is still safe to use.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame for this connection unless that would pass `cap` bytes.
    pub fn push(&self, frame: &Bytes, priority: Priority, cap: usize) -> Push {
        self.push_parts(std::iter::once(frame), priority, cap)
    }

    /// Queues `parts` back to back, all or none, unless that would pass `cap` bytes: the
    /// fragments of one message (a spliced `joined`), which nothing may come between.
    pub fn push_parts<'b>(
        &self,
        parts: impl Iterator<Item = &'b Bytes> + Clone,
        priority: Priority,
        cap: usize,
    ) -> Push {
        let len: usize = parts.clone().map(Bytes::len).sum();
        let queued = self.queued.load(Ordering::Relaxed);
        if priority == Priority::Droppable && queued > cap / 2 {
            return Push::Dropped;
        }
        // One frame always fits an empty queue, so a large `joined` never trips the cap alone.
        if queued > 0 && queued + len > cap {
            let first = self.close(CloseRequest {
                code: CloseCode::SlowConsumer.code(),
                reason: "slow consumer",
                discard: true,
            });
            return if first { Push::Overflow } else { Push::Closed };
        }
        let mut queue = self.lock();
        if queue.closing {
            return Push::Closed;
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.extend(parts.cloned());
        queue.touched = true;
        self.queued.fetch_add(len, Ordering::Relaxed);
        if queue.socket.is_some() {
            if !queue.enlisted && !queue.task_writes {
                queue.enlisted = true;
                return Push::Enlist;
            }
        } else if was_empty {
            // Not attached yet: the task writes it once it is.
            queue.signal();
        }
        Push::Queued
    }

    /// Asks the connection's task to close; the first request wins. Returns whether this one
    /// was first.
    pub fn close(&self, request: CloseRequest) -> bool {
        let mut queue = self.lock();
        if queue.closing {
            return false;
        }
        queue.closing = true;
        queue.request = Some(request);
        queue.signal();
        true
    }

    pub fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// Hands a plain-TCP socket to the outbox: from now on flushers write it.
    pub fn attach(&self, socket: Arc<TcpStream>) {
        self.lock().socket = Some(socket);
    }

    /// Hands a socket and the TLS session over it to the outbox.
    pub(crate) fn attach_tls(&self, socket: Arc<TcpStream>, tls: ServerConnection) {
        let mut queue = self.lock();
        queue.socket = Some(socket);
        queue.wire = Wire::tls(tls);
    }

    /// Takes the socket (and the TLS session) back before the connection's task drops it, so
    /// no flusher writes to a closed descriptor (a flusher writes only while holding the lock).
    pub fn detach(&self) {
        let mut queue = self.lock();
        let socket = queue.socket.take();
        let wire = std::mem::take(&mut queue.wire);
        drop(queue);
        drop((socket, wire));
    }

    /// Whether the connection is TLS (for its log lines).
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.lock().wire, Wire::Tls(_))
    }

    /// Reads what `socket` has into `out`, through the TLS session if there is one.
    ///
    /// The lock is held only for the read: the caller processes `out` after this returns,
    /// and what that processing pushes takes the lock again.
    pub(crate) fn read(&self, socket: &TcpStream, out: &mut [u8]) -> io::Result<Input> {
        self.lock().wire.read(socket, out)
    }

    /// For the connection's task: registers its waker and returns what it must do.
    pub fn poll_task(&self, waker: &Waker) -> TaskWork {
        let mut queue = self.lock();
        match &queue.task {
            Some(task) if task.will_wake(waker) => {}
            _ => queue.task = Some(waker.clone()),
        }
        TaskWork {
            close: queue.request.take(),
            // Besides what no flusher was told about: TLS records a read produced (alerts,
            // key updates).
            write: queue.task_writes || (!queue.enlisted && queue.has_output()),
            failed: queue.failed,
        }
    }

    /// A flusher's write: everything queued, unless the task owns writing. Returns the bytes
    /// written.
    pub fn flush(&self) -> u64 {
        let mut queue = self.lock();
        queue.enlisted = false;
        if queue.task_writes || queue.failed || !queue.has_output() {
            return 0;
        }
        let (wrote, bytes) = queue.write(&self.queued);
        match wrote {
            Wrote::Drained => {}
            Wrote::Blocked => {
                queue.task_writes = true;
                queue.signal();
            }
            Wrote::Failed => {
                queue.failed = true;
                queue.signal();
            }
        }
        bytes
    }

    /// The task's write: everything queued, as far as the socket takes it without blocking.
    pub fn write_now(&self) -> (Wrote, u64) {
        let mut queue = self.lock();
        let (wrote, bytes) = queue.write(&self.queued);
        match wrote {
            Wrote::Drained => queue.task_writes = false,
            Wrote::Blocked => queue.task_writes = true,
            Wrote::Failed => queue.failed = true,
        }
        (wrote, bytes)
    }

    /// Nothing left to write (the close frame included).
    pub fn is_drained(&self) -> bool {
        !self.lock().has_output()
    }

    /// Queues what the transport sends before the FIN (TLS: close_notify); whether it queued
    /// anything, which must be written first.
    pub(crate) fn finish_wire(&self) -> bool {
        self.lock().wire.finish()
    }

    /// Drops unsent frames, except one already partly written: cutting a frame in half would
    /// corrupt the stream for the close frame that follows. (Dropping the rest of a fragmented
    /// message is fine: a close frame may come between fragments.) Returns how many it dropped.
    pub fn discard(&self) -> usize {
        let mut queue = self.lock();
        let keep = usize::from(queue.offset > 0);
        let frames = queue.frames.len().saturating_sub(keep);
        let dropped: usize = queue.frames.iter().skip(keep).map(Bytes::len).sum();
        queue.frames.truncate(keep);
        self.queued.fetch_sub(dropped, Ordering::Relaxed);
        frames
    }

    /// Queues a frame the task sends by itself (the close frame), past the closing check.
    pub fn push_own(&self, frame: Bytes) {
        let mut queue = self.lock();
        self.queued.fetch_add(frame.len(), Ordering::Relaxed);
        queue.frames.push_back(frame);
    }

    /// Frees the ring of a queue that stayed empty since the last call: run once a second by
    /// housekeeping, so an idle connection holds no queue memory while an active one keeps
    /// its small ring between bursts.
    pub fn trim(&self) {
        let mut queue = self.lock();
        if !std::mem::take(&mut queue.touched)
            && queue.frames.is_empty()
            && queue.frames.capacity() > 0
        {
            queue.frames = VecDeque::new();
        }
    }

    /// Takes every queued frame (unit tests, which attach no socket).
    #[cfg(test)]
    pub(crate) fn take_all(&self) -> VecDeque<Bytes> {
        let mut queue = self.lock();
        let frames = std::mem::take(&mut queue.frames);
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        frames
    }

    /// Bytes queued or in rustls' hands, not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_closes_as_slow_consumer_and_typing_drops_first() {
        let outbox = Outbox::default();
        let frame = Bytes::from(vec![0u8; 400]);
        assert_eq!(outbox.push(&frame, Priority::Normal, 1000), Push::Queued);
        assert_eq!(outbox.push(&frame, Priority::Droppable, 1000), Push::Queued);
        assert_eq!(
            outbox.push(&frame, Priority::Droppable, 1000),
            Push::Dropped
        );
        assert_eq!(outbox.push(&frame, Priority::Normal, 1000), Push::Overflow);
        assert_eq!(outbox.push(&frame, Priority::Normal, 1000), Push::Closed);
        let request = outbox
            .poll_task(Waker::noop())
            .close
            .expect("close requested");
        assert_eq!(request.code, 4008);
        assert_eq!(outbox.take_all().len(), 2);
        assert_eq!(
            outbox.poll_task(Waker::noop()).close,
            None,
            "a request is handed over once"
        );
    }

    #[test]
    fn one_large_frame_fits_an_empty_queue() {
        let outbox = Outbox::default();
        assert_eq!(
            outbox.push(&Bytes::from(vec![0u8; 5000]), Priority::Normal, 1000),
            Push::Queued
        );
    }

    #[test]
    fn trim_frees_only_a_ring_that_stayed_idle() {
        let outbox = Outbox::default();
        outbox.push(&Bytes::from_static(b"x"), Priority::Normal, 1000);
        assert_eq!(outbox.discard(), 1);
        outbox.trim();
        assert!(
            outbox.lock().frames.capacity() > 0,
            "touched since the last trim"
        );
        outbox.trim();
        assert_eq!(outbox.lock().frames.capacity(), 0, "idle for a whole tick");
    }
}
