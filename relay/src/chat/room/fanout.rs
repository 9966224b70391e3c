//! A room's fan-out: events wait for the end of the scheduler round, then go to every member
//! they are for as shared frames (one queue push per member per round).

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Member, Room, State};
use crate::chat::hub::Hub;
use crate::transport::outbox::{Priority, Push};

/// One event waiting for the end of the round.
#[derive(Debug)]
pub(super) struct Pending {
    frame: Bytes,
    priority: Priority,
    /// The member it is not for (the typist, the joiner).
    skip: Option<u64>,
    /// Members when it was published: it goes to `members[..upto]`. Members are only ever
    /// appended while events are pending (a removal delivers them first), so those are
    /// exactly the members it was published to.
    upto: usize,
    /// A person's key ([`crate::chat::history::person_key`]) for an event that a later one of
    /// the same person replaces within the round (a read position); 0: never replaced.
    coalesce: u64,
}

impl Room {
    /// Sends `frame` to every member (but `skip`) at the end of this scheduler round; returns
    /// how many members it is for.
    ///
    /// The first event of a round puts the room on a flush list; the flusher then pushes the
    /// round's events to each member as one shared buffer ([`Room::deliver`]). In a room of
    /// 10,000 with a burst of events (a wave of joins, each announced to everyone) that is one
    /// queue push per member per round instead of one per member per event: what uWebSockets'
    /// topics do, and what kept the relay from keeping up with Bun in big rooms.
    pub(crate) fn fan_out(
        &self,
        state: &mut State,
        hub: &Hub,
        frame: &Bytes,
        priority: Priority,
        skip: Option<u64>,
    ) -> u64 {
        self.fan_out_coalesced(state, hub, frame, priority, skip, 0)
    }

    /// [`Room::fan_out`] of an event that replaces the one still pending this round with the
    /// same `coalesce` key (not 0): at most one per key per round reaches members, the
    /// latest, in its own place in the room's order.
    pub(crate) fn fan_out_coalesced(
        &self,
        state: &mut State,
        hub: &Hub,
        frame: &Bytes,
        priority: Priority,
        skip: Option<u64>,
        coalesce: u64,
    ) -> u64 {
        let members = state.members.len();
        if members == 0 {
            return 0;
        }
        let Some(this) = self.this.upgrade() else {
            return fan_out(hub, &state.members, frame, priority, skip);
        };
        let first = state.pending.is_empty();
        if coalesce != 0 {
            // Removing keeps the others' order and their `upto`s rising.
            if let Some(at) = state.pending.iter().position(|p| p.coalesce == coalesce) {
                state.pending.remove(at);
            }
        }
        state.pending.push(Pending {
            frame: frame.clone(),
            priority,
            skip,
            upto: members,
            coalesce,
        });
        if first {
            hub.enlist_room(&this);
        }
        (members - usize::from(skip.is_some())) as u64
    }

    /// Pushes the events of this round to the members (the flusher calls this).
    pub fn deliver(&self, hub: &Hub) {
        deliver_pending(&mut self.lock(), hub);
    }
}

/// The round's events joined into one buffer: the bytes, and the frames they came from, kept
/// until the buffer's last clone is written (a sampled message's probe fires then, as it
/// would for its own frame).
struct Joined {
    bytes: Vec<u8>,
    _frames: Vec<Pending>,
}

impl AsRef<[u8]> for Joined {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Pushes the pending events to the members they are for.
///
/// One event: pushed as is. Several: copied once into one buffer (one copy per room per
/// round, never per member), and each member gets one slice of it: the events from the first
/// one published after it joined, with any event that skips it cut out.
pub(super) fn deliver_pending(state: &mut State, hub: &Hub) {
    match state.pending.len() {
        0 => {}
        1 => {
            if let Some(one) = state.pending.pop() {
                let members = &state.members[..one.upto.min(state.members.len())];
                fan_out(hub, members, &one.frame, one.priority, one.skip);
            }
        }
        _ => {
            let pending = std::mem::take(&mut state.pending);
            let mut offsets = Vec::with_capacity(pending.len() + 1);
            let total: usize = pending.iter().map(|p| p.frame.len()).sum();
            let mut bytes = Vec::with_capacity(total);
            for p in &pending {
                offsets.push(bytes.len());
                bytes.extend_from_slice(&p.frame);
            }
            offsets.push(bytes.len());
            let priority = if pending.iter().any(|p| p.priority == Priority::Normal) {
                Priority::Normal
            } else {
                Priority::Droppable
            };
            let skip_of: Vec<Option<u64>> = pending.iter().map(|p| p.skip).collect();
            let skips: Vec<u64> = skip_of.iter().flatten().copied().collect();
            let uptos: Vec<usize> = pending.iter().map(|p| p.upto).collect();
            let all = Bytes::from_owner(Joined {
                bytes,
                _frames: pending,
            });
            let mut first = 0;
            let mut dropped = 0u64;
            let mut push = |member: &Member, part: Bytes| {
                if hub.push_to(&member.conn, &part, priority) == Push::Dropped {
                    dropped += 1;
                }
            };
            for (i, member) in state.members.iter().enumerate() {
                while first < uptos.len() && uptos[first] <= i {
                    first += 1;
                }
                if first == uptos.len() {
                    break;
                }
                let id = member.conn.id;
                if !skips.contains(&id) {
                    push(member, all.slice(offsets[first]..));
                    continue;
                }
                // Cut out the events that skip this member: a slice per run of the rest.
                let mut run = None;
                for (at, skip) in skip_of.iter().enumerate().skip(first) {
                    match (*skip == Some(id), run) {
                        (true, Some(start)) => {
                            push(member, all.slice(offsets[start]..offsets[at]));
                            run = None;
                        }
                        (false, None) => run = Some(at),
                        _ => {}
                    }
                }
                if let Some(start) = run {
                    push(member, all.slice(offsets[start]..));
                }
            }
            count_dropped(hub, dropped);
        }
    }
}

/// Adds typing indicators a fan-out dropped (queues past half their cap) to the counter.
fn count_dropped(hub: &Hub, dropped: u64) {
    if dropped > 0 {
        hub.stats
            .typing_dropped
            .fetch_add(dropped, Ordering::Relaxed);
    }
}

/// Pushes one shared frame to every member (but `skip`). Returns how many queued it.
///
/// This is the per-recipient loop: a reference-count bump and a queue push per member, no
/// encoding, no allocation (beyond a queue growing), no per-member metrics.
fn fan_out(
    hub: &Hub,
    members: &[Member],
    frame: &Bytes,
    priority: Priority,
    skip: Option<u64>,
) -> u64 {
    let mut queued = 0u64;
    let mut dropped = 0u64;
    for member in members {
        if Some(member.conn.id) == skip {
            continue;
        }
        match hub.push_to(&member.conn, frame, priority) {
            Push::Queued | Push::Enlist => queued += 1,
            Push::Dropped => dropped += 1,
            Push::Overflow | Push::Closed => {}
        }
    }
    count_dropped(hub, dropped);
    queued
}
