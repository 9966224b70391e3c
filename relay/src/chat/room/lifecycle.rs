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
        // Not while messages or joins are on their way through the backend (see
        // `State::is_idle`).
        if state.members.is_empty() && state.is_idle() && !state.dead {
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

    /// Puts the room back on the lingering queue's books (the hub popped its entry but could
    /// not retire it).
    pub(crate) fn requeue_lingering(&self) {
        self.lock().lingering_queued = true;
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
        if idle && state.members.is_empty() && state.is_idle() {
            state.dead = true;
        }
        state.dead
    }

    pub fn is_retired(&self) -> bool {
        self.lock().dead
    }

    /// Holds the room for a join that the backend runs later; false if it was retired
    /// already (look it up again). Every hold is released by [`Room::release_join`].
    pub fn hold_for_join(&self) -> bool {
        let mut state = self.lock();
        if state.dead {
            return false;
        }
        state.joining += 1;
        true
    }

    /// The held join has run (the joiner is a member now, so the room stays).
    pub fn release_join(&self) {
        let mut state = self.lock();
        state.joining = state.joining.saturating_sub(1);
    }
}

impl State {
    /// Nothing on its way through the backend: no reserved message (a successor would read
    /// the backend's log without it, see `Log::in_flight`) and no held join.
    fn is_idle(&self) -> bool {
        !self.log.in_flight() && self.joining == 0
    }
}
