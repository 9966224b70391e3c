//! Flush lists: the write side of every connection (plain TCP and TLS), one flusher task per
//! list.
//!
//! A publisher that pushes into an idle queue enlists the connection here instead of waking its
//! task. The flusher wakes once for the whole list, yields so that every reader the I/O driver
//! reported ready fans out first, then writes each enlisted connection's queue with one
//! vectored write. That is uWebSockets' corking done per scheduler round: many frames per
//! `writev`, one task poll per round instead of two per recipient, and no run-queue churn of
//! thousands of writer tasks (which is what made tail latency grow under load). A batch the
//! durable store's writer committed is already a whole round: it is written at once
//! ([`deliver_at_once`]).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::room::Room;
use crate::telemetry::metrics::Round;

/// Connections written between yields. A round for a 10,000-member room is thousands of
/// `writev`s; yielding between chunks lets readers and timers run meanwhile.
const CHUNK: usize = 512;

#[derive(Debug, Default)]
struct Pending {
    /// Rooms with events fanned out this round ([`Room::fan_out`]): delivered to their
    /// members' queues first, which enlists those connections for this same round.
    rooms: Vec<Arc<Room>>,
    conns: Vec<Arc<Conn>>,
    flusher: Option<Waker>,
    /// When the list last stopped being empty: the round's delay is measured from here.
    since: Option<Instant>,
    /// Something was enlisted from outside the runtime ([`deliver_at_once`]): the flusher
    /// writes without waiting for the end of its next round.
    now: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.conns.is_empty()
    }
}

thread_local! {
    /// Set while a thread outside the runtime delivers a batch ([`deliver_at_once`]).
    static AT_ONCE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `deliver` (a batch of deliveries from a thread outside the runtime: the durable
/// store's writer) and then has the flushers write what it queued at once.
///
/// A flusher woken by a reader yields until the end of the scheduler round so that every
/// reader of the round is written together. A batch from the writer is already a whole round
/// (the round's messages, committed together), and it arrives while the event loop is busy
/// with the next one: waiting for that round's end too cost a second round per message, which
/// is what kept history on disk behind memory at fan-out under load (docs/PERFORMANCE.md).
/// Enlists inside `deliver` wake no flusher until it returns, so that a flusher on another core
/// does not start on half the batch and write its members twice; the flusher that delivers the
/// batch's rooms passes the ask on to the lists of their members. A flusher asked twice in a
/// row yields the second time ([`run`]).
pub fn deliver_at_once<R>(hub: &Hub, deliver: impl FnOnce() -> R) -> R {
    holding_wakes(&hub.flush_lists, deliver)
}

/// Runs `deliver` with the enlists of this thread asking for a write at once, and wakes the
/// lists' flushers afterwards (also if `deliver` panics, so that no list is left enlisted
/// with its flusher asleep).
fn holding_wakes<R>(lists: &[FlushList], deliver: impl FnOnce() -> R) -> R {
    struct Hold<'a> {
        lists: &'a [FlushList],
        outer: bool,
    }
    impl Drop for Hold<'_> {
        fn drop(&mut self) {
            AT_ONCE.set(self.outer);
            if !self.outer {
                for list in self.lists {
                    list.wake_now();
                }
            }
        }
    }
    let _hold = Hold {
        lists,
        outer: AT_ONCE.replace(true),
    };
    deliver()
}

/// Whether a flusher round yields to the end of the scheduler round first: unless it was
/// asked to write at once, and then not twice in a row, so that a writer committing batches
/// faster than rounds end cannot keep the worker's readers, timers and the store's own
/// hand-over from running. `skipped`: whether the last round skipped it.
fn yields(asked: bool, skipped: &mut bool) -> bool {
    let at_once = asked && !*skipped;
    *skipped = at_once;
    !at_once
}

/// Wakes the flusher waiting on `pending`'s list, if one waits, after letting the lock go.
fn wake_flusher(mut pending: MutexGuard<'_, Pending>) {
    if let Some(flusher) = pending.flusher.take() {
        drop(pending);
        flusher.wake();
    }
}

/// Connections with frames queued and nobody writing them yet.
#[derive(Debug, Default)]
pub struct FlushList {
    // A std Mutex: held for a push or a swap, never across an await.
    pending: Mutex<Pending>,
}

impl FlushList {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every update is a single push or swap: a poisoned lock is still consistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection whose outbox answered [`crate::transport::outbox::Push::Enlist`].
    pub fn enlist(&self, conn: &Arc<Conn>) {
        self.add(|pending| pending.conns.push(conn.clone()));
    }

    /// Adds a room whose first event of the round is pending.
    pub fn enlist_room(&self, room: Arc<Room>) {
        self.add(|pending| pending.rooms.push(room));
    }

    /// Applies `push` and wakes the flusher if the list was empty.
    fn add(&self, push: impl FnOnce(&mut Pending)) {
        let mut pending = self.lock();
        let wake = pending.is_empty();
        push(&mut pending);
        if wake {
            // One clock read per round, not per enlist.
            pending.since = Some(Instant::now());
        }
        if AT_ONCE.get() {
            // Woken by `deliver_at_once` once the whole batch is queued.
            pending.now = true;
        } else if wake {
            wake_flusher(pending);
        }
    }

    /// Wakes the flusher if it waits and the list is not empty (after `deliver_at_once`).
    fn wake_now(&self) {
        let pending = self.lock();
        if !pending.is_empty() {
            wake_flusher(pending);
        }
    }

    /// Resolves once the list is not empty; `true` when it is to be written at once (see
    /// [`deliver_at_once`]), not at the end of the round.
    async fn ready(&self) -> bool {
        std::future::poll_fn(|cx| {
            let mut pending = self.lock();
            if pending.is_empty() {
                pending.flusher = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut pending.now))
            }
        })
        .await
    }

    /// Takes the whole list into `batch` (empty), leaving `batch`'s old allocation behind.
    fn take(&self, batch: &mut Vec<Arc<Conn>>) {
        let mut pending = self.lock();
        std::mem::swap(&mut pending.conns, batch);
        if pending.rooms.is_empty() {
            // What asked for it is being written now.
            pending.now = false;
        }
    }

    /// Takes the list's rooms into `rooms` (empty); when the list stopped being empty.
    fn take_rooms(&self, rooms: &mut Vec<Arc<Room>>) -> Option<Instant> {
        let mut pending = self.lock();
        std::mem::swap(&mut pending.rooms, rooms);
        // What asked for it is being written now; a later enlist asks again.
        pending.now = false;
        pending.since.take()
    }

    /// Delivers the pending events of the rooms on this list into their members' queues,
    /// which enlists those connections (on their own lists) for this round. Returns how
    /// many rooms, and when the list stopped being empty.
    fn deliver_rooms(&self, hub: &Hub, rooms: &mut Vec<Arc<Room>>) -> (usize, Option<Instant>) {
        let since = self.take_rooms(rooms);
        let count = rooms.len();
        for room in rooms.drain(..) {
            room.deliver(hub);
        }
        (count, since)
    }
}

/// One round of every flusher at once, without yielding: what [`run`] does between its
/// awaits, for code that drives a hub without serving it (the benchmarks, so they time what
/// production runs). Returns the bytes written.
pub fn round(hub: &Hub) -> u64 {
    let mut rooms = Vec::new();
    for list in hub.flush_lists.iter() {
        list.deliver_rooms(hub, &mut rooms);
    }
    let mut batch = Vec::new();
    let mut written = 0;
    for list in hub.flush_lists.iter() {
        list.take(&mut batch);
        written += batch.drain(..).map(|conn| conn.outbox.flush()).sum::<u64>();
    }
    hub.stats.bytes_out.fetch_add(written, Ordering::Relaxed);
    written
}

/// Writes `list`'s connections, round after round, until the task is aborted (after
/// shutdown has drained every connection).
pub async fn run(hub: Arc<Hub>, slot: usize) {
    let Some(list) = hub.flush_lists.get(slot) else {
        return;
    };
    let mut batch = Vec::new();
    let mut rooms = Vec::new();
    let mut skipped = false;
    loop {
        let asked = list.ready().await;
        let at_once = !yields(asked, &mut skipped);
        if !at_once {
            // Write at the end of the scheduler's round, not at once: tokio runs a yielded
            // task only after the I/O driver has been polled, so every reader that is ready
            // now fans out into this round first.
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let (room_count, since) = if at_once {
            // The rooms' members on other lists (other workers) are written at once too.
            holding_wakes(&hub.flush_lists, || list.deliver_rooms(&hub, &mut rooms))
        } else {
            list.deliver_rooms(&hub, &mut rooms)
        };
        list.take(&mut batch);
        let connections = batch.len();
        let mut written = 0u64;
        let mut done = 0;
        for conn in batch.drain(..) {
            written += conn.outbox.flush();
            done += 1;
            if done % CHUNK == 0 {
                tokio::task::yield_now().await;
            }
        }
        if written > 0 {
            hub.stats.bytes_out.fetch_add(written, Ordering::Relaxed);
        }
        hub.metrics.rounds.record(Round {
            delay: since.map_or(Duration::ZERO, |since| {
                started.saturating_duration_since(since)
            }),
            duration: started.elapsed(),
            rooms: room_count,
            connections,
            bytes: written,
        });
        // A list that grew huge once (a burst to a big room) should not stay that size.
        if batch.capacity() > 4 * CHUNK {
            batch = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};

    use super::*;
    use crate::config::Config;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Polls `list.ready()` once: `Some(at_once)` when ready.
    fn poll_ready(list: &FlushList, count: &Arc<Count>) -> Option<bool> {
        let waker = Waker::from(count.clone());
        match pin!(list.ready()).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(now) => Some(now),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_round_skips_its_yield_only_when_asked_and_never_twice_in_a_row() {
        let mut skipped = false;
        let asked = [true, true, true, false, true, false, false];
        let yielded: Vec<bool> = asked.iter().map(|&a| yields(a, &mut skipped)).collect();
        assert_eq!(yielded, [false, true, false, true, false, true, true]);
    }

    #[test]
    fn a_batch_from_outside_the_runtime_wakes_its_flusher_once_it_is_all_queued() {
        let hub = Hub::new(&Config::default());
        let lists = [FlushList::default()];
        let list = &lists[0];
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let (a, b) = (hub.register(peer), hub.register(peer));
        let count = Arc::new(Count::default());
        assert_eq!(poll_ready(list, &count), None, "an empty list waits");

        holding_wakes(&lists, || {
            list.enlist(&a);
            list.enlist(&b);
            assert_eq!(
                count.0.load(Ordering::Relaxed),
                0,
                "no wake inside the batch"
            );
        });
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "one wake after it");
        assert_eq!(poll_ready(list, &count), Some(true), "written at once");

        // A reader's enlist (inside the runtime) waits for the end of the round, also after
        // a batch's that the round took without waiting (`now` is not left over).
        holding_wakes(&lists, || list.enlist(&a));
        list.take_rooms(&mut Vec::new());
        list.take(&mut Vec::new());
        assert_eq!(poll_ready(list, &count), None);
        list.enlist(&a);
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert_eq!(poll_ready(list, &count), Some(false), "at the round's end");
    }
}
