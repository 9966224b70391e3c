//! Rooms that emptied but keep their history for `--room-linger`: the queue of them, oldest
//! first, which the room limit evicts from and the node's history budget reclaims from.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};

use super::Hub;
use crate::chat::room::Room;

impl Hub {
    /// Records that `room` became empty (see [`Hub::lingering`]).
    pub(crate) fn note_lingering(&self, room: &Arc<Room>) {
        self.lingering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Arc::downgrade(room));
    }

    /// Retires the oldest lingering room to make room for a new one; false if none lingers.
    /// A room whose last messages are still on their way to the backend's log cannot go yet
    /// (see `Room::retire_if_empty`): it keeps its place in the queue.
    pub(super) fn evict_lingering_room(&self) -> bool {
        let mut held = Vec::new();
        let evicted = loop {
            let next = self
                .lingering
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some(weak) = next else {
                break false;
            };
            let Some(room) = weak.upgrade() else {
                continue;
            };
            if !room.unqueue_lingering() {
                continue;
            }
            if room.retire_if_empty() {
                self.rooms
                    .remove_if(&room.name, |_, r| Arc::ptr_eq(r, &room));
                self.rooms_evicted.fetch_add(1, Ordering::Relaxed);
                break true;
            }
            held.push(room);
        };
        if !held.is_empty() {
            // Room locks first, the queue's after: rooms take the queue's lock under theirs.
            for room in &held {
                room.requeue_lingering();
            }
            let mut queue = self
                .lingering
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for room in held.iter().rev() {
                queue.push_front(Arc::downgrade(room));
            }
        }
        evicted
    }

    /// The history bytes a publishing room may keep: unbounded by the node while it is under
    /// its budget, else the budget shared among the rooms in use.
    pub(crate) fn history_fair_share(&self) -> usize {
        if !self.history.over() {
            return usize::MAX;
        }
        let lingering = self
            .lingering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let in_use = self.rooms.len().saturating_sub(lingering).max(1);
        self.history.limits.total_bytes / in_use
    }

    /// Past the node's history budget: drops lingering rooms' history, oldest first, until
    /// it is a tenth under. One thread at a time; the others go on (the fair share bounds
    /// them meanwhile). Call without any room locked.
    pub(crate) fn reclaim_history_if_over(&self) {
        if !self.history.over() {
            return;
        }
        let Ok(_one) = self.reclaiming.try_lock() else {
            return;
        };
        let target = self.history.reclaim_target();
        let mut at = 0;
        while self.history.used() > target {
            // A few at a time: the queue's lock must not be held while a room is locked
            // (rooms take it under their own lock).
            let chunk: Vec<Arc<Room>> = {
                let queue = self
                    .lingering
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                queue
                    .iter()
                    .skip(at)
                    .take(64)
                    .filter_map(Weak::upgrade)
                    .collect()
            };
            if chunk.is_empty() {
                return;
            }
            at += 64;
            for room in chunk {
                room.reclaim_if_empty();
                if self.history.used() <= target {
                    return;
                }
            }
        }
    }

    /// Drops stale entries (retired, refilled, gone) from the lingering queue, keeping order.
    pub(super) fn prune_lingering(&self) {
        let old = std::mem::take(
            &mut *self
                .lingering
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let kept: VecDeque<Weak<Room>> = old
            .into_iter()
            .filter(|weak| weak.upgrade().is_some_and(|room| room.still_lingering()))
            .collect();
        let mut queue = self
            .lingering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let added = std::mem::replace(&mut *queue, kept);
        queue.extend(added);
    }
}
