//! The writer's inbox: what the event loop hands the writer during one scheduler round goes
//! over in one piece at the round's end, the way the flushers write sockets once per round.
//!
//! Handing each message over on its own woke the writer thread per message. On one core the
//! woken writer preempts the event loop, commits that one message and delivers it alone, so
//! the flushers write one message per member per round: at 2,000 msg/s into rooms of 100, 10 s
//! gave 31,000 writer wake-ups and 1.8 s of writer CPU (docs/PERFORMANCE.md). Handed over per
//! round, a round's messages share one transaction and one delivery, unless a join, a leave or
//! a barrier falls between them (the writer commits what precedes each of those first).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use tokio::sync::Notify;

use super::Op;
use crate::chat::hub::Hub;

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
    /// Set (under the `ops` lock) when a hand-over found the writer gone: nothing more is
    /// taken, so callers refuse or settle at once instead of queueing into nowhere.
    gone: AtomicBool,
    /// The store's count of messages queued and not yet appended (`--store-queue`).
    queued: Arc<AtomicUsize>,
    /// Runs the leaves and joins a gone writer can no longer run (set when the store starts).
    hub: OnceLock<Weak<Hub>>,
}

impl Inbox {
    pub(super) fn new(queue: Sender<Op>, queued: Arc<AtomicUsize>) -> Self {
        Self {
            ops: Mutex::default(),
            queue,
            pump: Notify::new(),
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            queued,
            hub: OnceLock::new(),
        }
    }

    pub(super) fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Op>> {
        // A push or a take: a poisoned lock is still consistent.
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `op` for the writer; it goes over at the end of this scheduler round. `Err`
    /// gives it back when the writer is gone.
    pub(super) fn push(&self, op: Op) -> Result<(), Op> {
        let mut ops = self.lock();
        if self.gone.load(Ordering::Acquire) {
            return Err(op);
        }
        let first = ops.is_empty();
        ops.push(op);
        drop(ops);
        if first {
            self.pump.notify_one();
        }
        Ok(())
    }

    /// Hands over what waits, then `last` (a barrier, a stop), at once and in that order.
    /// `false`: the writer is gone; what could not go is settled (see [`Inbox::settle`]).
    pub(super) fn hand_over(&self, last: Option<Op>) -> bool {
        let mut ops = self.lock();
        let waiting = std::mem::take(&mut *ops);
        let mut lost = Vec::new();
        if self.gone.load(Ordering::Acquire) {
            lost = waiting;
            lost.extend(last);
        } else {
            if !waiting.is_empty() {
                if let Err(err) = self.queue.send(Op::Batch(waiting)) {
                    lost.push(err.0);
                }
            }
            // Stop and Barrier go on their own, so the writer answers them between batches.
            if let Some(last) = last {
                if !lost.is_empty() {
                    lost.push(last);
                } else if let Err(err) = self.queue.send(last) {
                    lost.push(err.0);
                }
            }
            if !lost.is_empty() {
                self.gone.store(true, Ordering::Release);
            }
        }
        let alive = !self.gone.load(Ordering::Acquire);
        drop(ops);
        self.settle(lost);
        alive
    }

    /// What a gone writer left: its messages leave the queue count (they were never
    /// delivered, so no client saw them), its leaves and joins run now (a leaver must
    /// not stay a ghost in the room, a joiner must get its answer), read positions and
    /// cursors are dropped (the next start goes on from the ones stored), and a barrier's
    /// waiter is released by dropping its sender. Outside the lock: a leave may queue more.
    fn settle(&self, lost: Vec<Op>) {
        let hub = self.hub.get().and_then(Weak::upgrade);
        for op in lost {
            match op {
                Op::Keep(_) => {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                }
                Op::Then(then) => {
                    if let Some(hub) = &hub {
                        then(hub);
                    }
                }
                Op::Batch(ops) => self.settle(ops),
                Op::Read(_) | Op::Cursor(_) | Op::Barrier(_) | Op::Stop => {}
            }
        }
    }

    /// Ends the pump (the writer has stopped, or the store is dropped).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pump.notify_one();
    }

    /// Hands over at the end of every round in which something was queued, until the
    /// store closes. Without a runtime (the store benchmark) nothing pumps, and what is
    /// queued waits for [`Inbox::hand_over`] (`Store::barrier`, `Store::stop`).
    pub(super) async fn pump(self: Arc<Self>) {
        loop {
            self.pump.notified().await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            // Run after every reader this worker's I/O driver reported ready this round
            // (tokio runs a yielded task after its next I/O poll), so the round's messages go
            // together. With several workers, each worker's round is its own.
            tokio::task::yield_now().await;
            self.hand_over(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;

    use super::*;
    use crate::config::Config;

    /// Counts the `Then`s run, as a gone writer's leaves must still be.
    fn then(ran: &Arc<AtomicU32>) -> Op {
        let ran = ran.clone();
        Op::Then(Box::new(move |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        }))
    }

    #[test]
    fn a_round_goes_over_as_one_batch_in_order() {
        let (tx, rx) = mpsc::channel();
        let inbox = Inbox::new(tx, Arc::default());
        let ran = Arc::new(AtomicU32::new(0));
        for _ in 0..3 {
            assert!(inbox.push(then(&ran)).is_ok());
        }
        let (done, _wait) = mpsc::sync_channel(1);
        assert!(inbox.hand_over(Some(Op::Barrier(done))));
        match rx.try_recv() {
            Ok(Op::Batch(ops)) => assert_eq!(ops.len(), 3),
            other => panic!("one batch first, got {other:?}"),
        }
        assert!(
            matches!(rx.try_recv(), Ok(Op::Barrier(_))),
            "then the barrier"
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_gone_writer_refuses_new_work_and_runs_what_it_left() {
        let (tx, rx) = mpsc::channel();
        drop(rx);
        let hub = Arc::new(Hub::new(&Config::default()));
        let inbox = Inbox::new(tx, Arc::default());
        inbox.set_hub(&hub);
        let ran = Arc::new(AtomicU32::new(0));
        assert!(inbox.push(then(&ran)).is_ok(), "not known gone yet");
        assert!(!inbox.hand_over(None));
        assert_eq!(ran.load(Ordering::Relaxed), 1, "the leave it held ran");
        assert!(
            matches!(inbox.push(then(&ran)), Err(Op::Then(_))),
            "given back, for the caller to run at once"
        );
        let (done, wait) = mpsc::sync_channel(1);
        assert!(!inbox.hand_over(Some(Op::Barrier(done))));
        assert!(wait.recv().is_err(), "a barrier's waiter is released");
    }
}
