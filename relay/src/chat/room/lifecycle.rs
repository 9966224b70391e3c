//! A room's life on the node: lingering once empty (keeping its log for `--room-linger`),
//! giving way when the node runs short of rooms or history, and retirement.

use std::time::{Duration, Instant};

use super::{Room, State};
use crate::chat::hub::Hub;

impl Room {
    /// The last member left: the room lingers (keeping its history for `--room-linger`) and
    /// joins the hub's queue of lingering rooms, whose oldest give way first when the node's
    /// room or history budget runs out.
    pub(super) fn became_empty(&self, state: &mut State, hub: &Hub) {
        state.empty_since = Some(Instant::now());
        if !state.lingering_queued {
            if let Some(this) = self.this.upgrade() {
                state.lingering_queued = true;
                hub.note_lingering(&this);
            }
        }
    }

    /// Drops a lingering room's history for the node's history budget; returns the bytes
    /// freed (0 when the room has members again).
    pub(crate) fn reclaim_if_empty(&self) -> usize {
        let mut state = self.lock();
        if state.members.is_empty() {
            state.log.forget_history()
        } else {
            0
        }
    }

    /// Retires the room now if it is empty (the node needs its place); whether it did.
    pub(crate) fn retire_if_empty(&self) -> bool {
        let mut state = self.lock();
        // Not while messages are on their way to the backend's log: a successor would read
        // that log without them (see `Log::in_flight`).
        if state.members.is_empty() && !state.dead && !state.log.in_flight() {
            state.dead = true;
            return true;
        }
        false
    }

    /// Whether the room still lingers, for the queue's pruning; a room that does not is
    /// taken off its books (it is queued again when it next empties).
    pub(crate) fn still_lingering(&self) -> bool {
        let mut state = self.lock();
        let lingers = state.members.is_empty() && !state.dead;
        if !lingers {
            state.lingering_queued = false;
        }
        lingers
    }

    /// Takes the room off the lingering queue's books (the hub popped its entry); whether it
    /// still lingers.
    pub(crate) fn unqueue_lingering(&self) -> bool {
        let mut state = self.lock();
        state.lingering_queued = false;
        state.members.is_empty() && !state.dead
    }

    /// Marks the room dead if it has been empty for `linger`; the hub then drops it.
    pub fn retire_if_idle(&self, now: Instant, linger: Duration) -> bool {
        let mut state = self.lock();
        let idle = state
            .empty_since
            .is_some_and(|since| now.saturating_duration_since(since) >= linger);
        if idle && state.members.is_empty() && !state.log.in_flight() {
            state.dead = true;
        }
        state.dead
    }

    pub fn is_retired(&self) -> bool {
        self.lock().dead
    }
}
