//! Flush lists: the write side of every connection (plain TCP and TLS), one flusher task per
//! list.
//!
//! A publisher that pushes into an idle queue enlists the connection here instead of waking its
//! task. The flusher wakes once for the whole list, yields so that every reader the I/O driver
//! reported ready fans out first, then writes each enlisted connection's queue with one
//! vectored write. That is uWebSockets' corking done per scheduler round: many frames per
//! `writev`, one task poll per round instead of two per recipient, and no run-queue churn of
//! thousands of writer tasks (which is what made tail latency grow under load).

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
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.conns.is_empty()
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
            if let Some(flusher) = pending.flusher.take() {
                drop(pending);
                flusher.wake();
            }
        }
    }

    /// Resolves once the list is not empty.
    async fn ready(&self) {
        std::future::poll_fn(|cx| {
            let mut pending = self.lock();
            if pending.is_empty() {
                pending.flusher = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    /// Takes the whole list into `batch` (empty), leaving `batch`'s old allocation behind.
    fn take(&self, batch: &mut Vec<Arc<Conn>>) {
        std::mem::swap(&mut self.lock().conns, batch);
    }

    /// Takes the list's rooms into `rooms` (empty); when the list stopped being empty.
    fn take_rooms(&self, rooms: &mut Vec<Arc<Room>>) -> Option<Instant> {
        let mut pending = self.lock();
        std::mem::swap(&mut pending.rooms, rooms);
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
    loop {
        list.ready().await;
        // Write at the end of the scheduler's round, not at once: tokio runs a yielded task
        // only after the I/O driver has been polled, so every reader that is ready now fans
        // out into this round first.
        tokio::task::yield_now().await;
        let started = Instant::now();
        let (room_count, since) = list.deliver_rooms(&hub, &mut rooms);
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
