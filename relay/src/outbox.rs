//! A connection's outbound queue: shared frames waiting for its writer.
//!
//! Publishers push reference-counted frames and wake the writer only when the queue goes
//! from empty to non-empty; the writer takes everything at once and sends it with one
//! vectored write. The byte count covers frames still in the writer's hands too, so the
//! slow-consumer cap bounds all memory a client can pin.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::protocol::CloseCode;

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
    /// A droppable frame skipped because the queue is under pressure.
    Dropped,
    /// The queue went over its cap: the client is now being closed as a slow consumer.
    Overflow,
    /// The connection is already closing.
    Closed,
}

/// A request for the writer to close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// The close status sent to the client (one of [`CloseCode`], or a client's code echoed).
    pub code: u16,
    pub reason: &'static str,
    /// Drop queued frames instead of sending them first (slow consumers, violations).
    pub discard: bool,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    closing: bool,
    request: Option<CloseRequest>,
}

#[derive(Debug, Default)]
pub struct Outbox {
    // A std Mutex, not tokio's: it is held for a push or a swap, never across an await, and
    // uncontended std locks cost a single atomic.
    queue: Mutex<Queue>,
    queued: AtomicUsize,
    notify: Notify,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half-updated (every update is
        // a single push or swap), so a poisoned lock is still safe to use.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame for this connection unless that would pass `cap` bytes.
    pub fn push(&self, frame: &Bytes, priority: Priority, cap: usize) -> Push {
        let len = frame.len();
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
        queue.frames.push_back(frame.clone());
        self.queued.fetch_add(len, Ordering::Relaxed);
        drop(queue);
        if was_empty {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Asks the writer to close; the first request wins. Returns whether this one was first.
    pub fn close(&self, request: CloseRequest) -> bool {
        let mut queue = self.lock();
        if queue.closing {
            return false;
        }
        queue.closing = true;
        queue.request = Some(request);
        drop(queue);
        self.notify.notify_one();
        true
    }

    pub fn is_closing(&self) -> bool {
        self.lock().closing
    }

    /// Resolves when frames or a close request are waiting. Cancel-safe: a wake-up that
    /// arrives while nobody waits is kept for the next call.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Moves every queued frame into the writer's `batch`; returns a close request once.
    pub fn take(&self, batch: &mut VecDeque<Bytes>) -> Option<CloseRequest> {
        let mut queue = self.lock();
        if batch.is_empty() {
            std::mem::swap(&mut queue.frames, batch);
        } else {
            batch.extend(queue.frames.drain(..));
        }
        // What stays behind is empty: keep a small ring (pushing into it must not allocate),
        // drop a large one (it would sit idle in every quiet connection).
        if queue.frames.capacity() > crate::writer::KEEP_SLOTS {
            queue.frames = VecDeque::new();
        }
        queue.request.take()
    }

    /// Counts a frame the writer adds by itself (the close frame).
    pub fn adopt(&self, len: usize) {
        self.queued.fetch_add(len, Ordering::Relaxed);
    }

    /// The writer sent or discarded `len` bytes.
    pub fn release(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes queued or in the writer's hands, not yet written.
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
        let mut batch = VecDeque::new();
        let request = outbox.take(&mut batch).expect("close requested");
        assert_eq!(request.code, 4008);
        assert_eq!(batch.len(), 2);
        assert_eq!(
            outbox.take(&mut batch),
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
}
