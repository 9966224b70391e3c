//! The writer's inbox: what the event loop hands the writer during one scheduler round goes
//! over in one piece at the round's end, the way the flushers write sockets once per round.
//!
//! Handing each message over on its own woke the writer thread per message. On one core the
//! woken writer preempts the event loop, commits that one message and delivers it alone, so
//! the flushers write one message per member per round: at 2,000 msg/s into rooms of 100, 5 s
//! gave 17,000 writer wake-ups, as many preemptions of the event loop, 86 µs of writer CPU per
//! message, and twice the CPU of the relay in memory. Handed over per round, a round's
//! messages are one transaction and one delivery.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::Op;

#[derive(Debug)]
pub(super) struct Inbox {
    // A std Mutex: held for a push, or for a take and the channel sends behind it (which
    // never block), never across an await. Sends happen under it so that two hand-overs
    // (the pump's and a barrier's) cannot pass each other.
    ops: Mutex<Vec<Op>>,
    queue: Sender<Op>,
    /// Wakes the pump when `ops` stops being empty (a permit is kept if it is not waiting).
    pump: Notify,
    /// Set by [`Inbox::close`]: the pump ends.
    closed: AtomicBool,
}

impl Inbox {
    pub(super) fn new(queue: Sender<Op>) -> Self {
        Self {
            ops: Mutex::default(),
            queue,
            pump: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        // A push or a take: a poisoned lock is still consistent.
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` for the writer; it goes over at the end of this scheduler round.
    pub(super) fn push(&self, op: Op) {
        let mut ops = self.lock();
        let first = ops.is_empty();
        ops.push(op);
        drop(ops);
        if first {
            self.pump.notify_one();
        }
    }

    /// Hands over what waits, then `last` (a barrier, a stop), at once and in that order.
    /// `Err` with what could not go: the writer has stopped.
    pub(super) fn hand_over(&self, last: Option<Op>) -> Result<(), Vec<Op>> {
        let mut ops = self.lock();
        let waiting = std::mem::take(&mut *ops);
        if !waiting.is_empty() {
            if let Err(lost) = self.queue.send(Op::Batch(waiting)) {
                let Op::Batch(mut lost) = lost.0 else {
                    return Err(Vec::new());
                };
                lost.extend(last);
                return Err(lost);
            }
        }
        match last.map(|op| self.queue.send(op)) {
            Some(Err(lost)) => Err(vec![lost.0]),
            _ => Ok(()),
        }
    }

    /// Ends the pump (the writer has stopped).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pump.notify_one();
    }

    /// Hands over at the end of every round in which something was queued, until the
    /// writer stops. Without a runtime (the store benchmark) nothing pumps, and what is
    /// queued waits for [`Inbox::hand_over`] (`Store::barrier`, `Store::stop`).
    pub(super) async fn pump(self: Arc<Self>, queued: Arc<AtomicUsize>) {
        loop {
            self.pump.notified().await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // Run after every reader the I/O driver reported ready this round (tokio runs a
            // yielded task after its next I/O poll), so the round's messages go together.
            tokio::task::yield_now().await;
            if let Err(lost) = self.hand_over(None) {
                // Only after `Store::stop`, which refuses new messages first: these were
                // queued in the moment between, and are not stored, as before the inbox.
                let kept = lost.iter().filter(|op| matches!(op, Op::Keep(_))).count();
                queued.fetch_sub(kept, Ordering::AcqRel);
                return;
            }
        }
    }
}
