//! One chat room: members, the message sequence, history, and fan-out.
//!
//! Everything that must happen in one order for all members (assigning `seq`, storing
//! history, pushing the frame to each member's queue) happens under the room's lock, so every
//! member's queue receives the room's events in the same order. The lock is never held across
//! an await and never taken while another room's lock is held.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;

use crate::conn::Conn;
use crate::history::{History, HistoryBudget};
use crate::hub::Hub;
use crate::outbox::{Priority, Push};
use crate::per_ip::RoomCharge;
use crate::protocol::event::{self, MessageEvent, UserRef};

/// `joined` history may fill a connection's outbox up to 1/this of `--max-outbound-bytes`:
/// the other half is left for live traffic while the joins are written out.
const JOINED_HEADROOM_DIVISOR: usize = 2;

#[derive(Debug)]
pub struct Member {
    pub conn: Arc<Conn>,
    pub username: Arc<str>,
}

impl Member {
    fn user(&self) -> UserRef<'_> {
        UserRef {
            id: &self.conn.user_id,
            username: &self.username,
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) members: Vec<Member>,
    /// Seq of the latest message (0 before the first).
    pub(crate) seq: u64,
    /// The last messages, contiguous in seq, oldest first.
    pub(crate) history: History,
    /// Set once the room is removed from the hub; a join that raced the removal retries.
    pub(crate) dead: bool,
    pub(crate) empty_since: Option<Instant>,
    /// On the hub's queue of lingering rooms (see [`Hub::note_lingering`]).
    pub(crate) lingering_queued: bool,
    /// Cluster mode: the room's cluster-wide epoch, once loaded from Redis (`self.epoch` is
    /// then unused).
    pub(crate) cluster_epoch: Option<Arc<str>>,
    /// Events fanned out this scheduler round, not yet pushed to members' queues (see
    /// [`Room::fan_out`]).
    pending: Vec<Pending>,
}

/// One event waiting for the end of the round.
#[derive(Debug)]
struct Pending {
    frame: Bytes,
    priority: Priority,
    /// The member it is not for (the typist, the joiner).
    skip: Option<u64>,
    /// Members when it was published: it goes to `members[..upto]`. Members are only ever
    /// appended while events are pending (a removal delivers them first), so those are
    /// exactly the members it was published to.
    upto: usize,
}

impl State {
    /// Pushes this round's pending events to the members now (before a rejoin's `joined`,
    /// which lists history up to now).
    pub(crate) fn deliver_pending(&mut self, hub: &Hub) {
        deliver_pending(self, hub);
    }

    /// Removes the member at `at`, after delivering what was published while it was one.
    pub(crate) fn remove_member(&mut self, hub: &Hub, at: usize) -> Member {
        deliver_pending(self, hub);
        hub.metrics.member_removed();
        self.members.swap_remove(at)
    }

    /// Adds `conn` as a member unless it already is one; returns whether it already was.
    pub(crate) fn admit(&mut self, hub: &Hub, conn: &Arc<Conn>, username: &Arc<str>) -> bool {
        let already = self.members.iter().any(|m| m.conn.id == conn.id);
        if !already {
            hub.metrics.member_added();
            self.members.push(Member {
                conn: conn.clone(),
                username: username.clone(),
            });
            self.empty_since = None;
        }
        already
    }
}

#[derive(Debug)]
pub struct Room {
    /// This room itself, for putting it on a flush list; empty for a room not made by
    /// [`Room::new_shared`] (unit tests), which then fans out at once.
    this: Weak<Room>,
    /// Counts the room against the address that created it (`--ip-rooms`) while it exists.
    _charge: Option<RoomCharge>,
    pub name: Arc<str>,
    /// Changes whenever a room of this name is created anew, so `since` from an older life
    /// of the room is recognised (see `docs/PROTOCOL.md`).
    pub epoch: Arc<str>,
    state: Mutex<State>,
}

/// What a join did.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    AlreadyMember,
    /// The room was retired concurrently; look it up again.
    Retired,
}

/// Parameters of a join besides the connection.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    pub username: &'a Arc<str>,
    pub since: Option<u64>,
    pub epoch: Option<&'a str>,
}

impl Room {
    /// A room that batches its fan-out per scheduler round (what the hub creates).
    pub fn new_shared(
        name: Arc<str>,
        epoch: Arc<str>,
        budget: Arc<HistoryBudget>,
        charge: Option<RoomCharge>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| {
            let mut room = Self::new(name, epoch, budget);
            room.this = this.clone();
            room._charge = charge;
            room
        })
    }

    pub fn new(name: Arc<str>, epoch: Arc<str>, budget: Arc<HistoryBudget>) -> Self {
        Self {
            this: Weak::new(),
            _charge: None,
            name,
            epoch,
            state: Mutex::new(State {
                members: Vec::new(),
                seq: 0,
                history: History::new(budget),
                dead: false,
                empty_since: None,
                lingering_queued: false,
                cluster_epoch: None,
                pending: Vec::new(),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock leaves the state consistent between statements that
        // can panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn member_count(&self) -> usize {
        self.lock().members.len()
    }

    /// Members' client ids (per connection, what the admin API disconnects by) and usernames.
    pub fn members(&self) -> Vec<(Arc<str>, Arc<str>)> {
        let state = self.lock();
        state
            .members
            .iter()
            .map(|m| (m.conn.client_id.clone(), m.username.clone()))
            .collect()
    }

    /// Adds `conn`, sends it `joined` and tells the others.
    pub fn join(&self, hub: &Hub, conn: &Arc<Conn>, request: JoinRequest<'_>) -> JoinOutcome {
        let limits = &hub.limits;
        let mut state = self.lock();
        if state.dead {
            return JoinOutcome::Retired;
        }
        let already = state.admit(hub, conn, request.username);
        if already {
            // Its `joined` lists history up to now: what is still pending must reach it first.
            state.deliver_pending(hub);
        }
        let count = state.members.len();
        let list_users = count <= limits.presence_list_max;
        self.send_joined(
            &state,
            hub,
            conn,
            (
                count,
                list_users.then(|| state.members.iter().map(Member::user)),
            ),
            (request.since, request.epoch),
        );
        if already {
            return JoinOutcome::AlreadyMember;
        }
        let user = UserRef {
            id: &conn.user_id,
            username: request.username,
        };
        let frame = event::presence(
            "user_joined",
            &self.name,
            user,
            count,
            list_users.then(|| state.members.iter().map(Member::user)),
        );
        self.fan_out(
            &mut state,
            hub,
            frame.bytes(),
            Priority::Normal,
            Some(conn.id),
        );
        JoinOutcome::Joined
    }

    /// Sends `conn` its `joined`: `presence` is the count and (under the presence-list
    /// cut-off) the users, `resume` the join's `since` and `epoch`. Nothing is built for a
    /// connection already being closed (a slow consumer rejoining in a loop).
    pub(crate) fn send_joined<'u>(
        &self,
        state: &State,
        hub: &Hub,
        conn: &Arc<Conn>,
        presence: (usize, Option<impl Iterator<Item = UserRef<'u>>>),
        resume: (Option<u64>, Option<&str>),
    ) {
        if conn.outbox.is_closing() {
            return;
        }
        let (skip, recovered) = self.resume_point(state, resume.0, resume.1);
        // Several joins read in one go (a client restoring its rooms) queue their `joined`
        // before the flusher writes any: each takes history only while the outbox stays under
        // half its cap, so together they cannot close the client as a slow consumer (4008).
        let headroom = (hub.limits.max_outbound_bytes / JOINED_HEADROOM_DIVISOR)
            .saturating_sub(conn.outbox.queued_bytes());
        let (first, truncated) = state.history.joined_range(skip, headroom);
        let epoch = state.cluster_epoch.as_deref().unwrap_or(&self.epoch);
        let joined = event::joined(event::Joined {
            client_id: &conn.client_id,
            room: &self.name,
            epoch,
            seq: state.seq,
            count: presence.0,
            users: presence.1,
            history: state.history.entries().range(first..),
            // Left out by the byte bound is missed too.
            recovered: recovered.map(|r| r && !truncated),
            truncated,
        });
        hub.push_parts_to(conn, joined.parts(), Priority::Normal);
    }

    /// Which history entries a join with `since` gets, and whether nothing was missed.
    pub(crate) fn resume_point(
        &self,
        state: &State,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> (usize, Option<bool>) {
        let Some(since) = since else {
            return (0, None);
        };
        let kept = state.history.len() as u64;
        let oldest_kept = state.seq + 1 - kept;
        let current = state.cluster_epoch.as_deref().unwrap_or(&self.epoch);
        let same_life = epoch.is_none_or(|e| e == current);
        if !same_life || since > state.seq || since.saturating_add(1) < oldest_kept {
            // A different life of the room, a seq from the future, or a gap older than the
            // history kept: send everything kept and say so.
            return (0, Some(false));
        }
        // Every message after `since` is kept: skip the ones at or before it.
        ((since + 1 - oldest_kept) as usize, Some(true))
    }

    /// Removes `conn` and tells the others. Returns whether it was a member.
    pub fn leave(&self, hub: &Hub, conn: &Conn) -> bool {
        let mut state = self.lock();
        let Some(at) = state.members.iter().position(|m| m.conn.id == conn.id) else {
            return false;
        };
        let gone = state.remove_member(hub, at);
        let count = state.members.len();
        if count == 0 {
            self.became_empty(&mut state, hub);
            return true;
        }
        let frame = event::presence(
            "user_left",
            &self.name,
            gone.user(),
            count,
            (count <= hub.limits.presence_list_max).then(|| state.members.iter().map(Member::user)),
        );
        self.fan_out(&mut state, hub, frame.bytes(), Priority::Normal, None);
        true
    }

    /// Assigns the next seq, stores the message in history and sends it to every member,
    /// the sender included. Returns the seq.
    pub fn publish(&self, hub: &Hub, sender: &Conn, username: &str, text: &str) -> u64 {
        let (seq, delivered) = self.publish_as(hub, &sender.user_id, username, text);
        hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
        hub.stats.deliveries.fetch_add(delivered, Ordering::Relaxed);
        seq
    }

    /// [`Room::publish`] under any `userId` (the admin API's server messages), without
    /// counting it as a client's message. Returns the seq and how many members queued it.
    pub fn publish_as(&self, hub: &Hub, user_id: &str, username: &str, text: &str) -> (u64, u64) {
        // One clock read per message, none per member: the fan-out histogram and the
        // sampled delivery latency both start here.
        let started = Instant::now();
        let number = hub.next_message_number();
        let timestamp_ms = crate::hub::now_ms();
        let mut state = self.lock();
        state.seq += 1;
        let seq = state.seq;
        let frame = event::message(&MessageEvent {
            node_tag: &hub.node_tag,
            number,
            seq,
            room: &self.name,
            user_id,
            username,
            text,
            timestamp_ms,
        });
        state.history.push(&frame, hub.history_fair_share());
        // A sampled message goes out as a probe: the same bytes, timed until the last
        // member's writer drops them. History keeps the plain frame, or the probe would
        // only fire when the message left history.
        let probe = if state.members.is_empty() {
            None
        } else {
            hub.metrics.probe(number, frame.bytes(), started)
        };
        let bytes = probe.as_ref().unwrap_or(frame.bytes());
        let delivered = self.fan_out(&mut state, hub, bytes, Priority::Normal, None);
        drop(state);
        drop(probe);
        hub.metrics.fanout_done(started);
        hub.reclaim_history_if_over();
        (seq, delivered)
    }

    /// Sends a typing indicator to every member but the typist.
    pub fn typing(&self, hub: &Hub, typist: &Conn, username: &str, is_typing: bool) {
        let frame = event::typing(
            &self.name,
            UserRef {
                id: &typist.user_id,
                username,
            },
            is_typing,
        );
        let mut state = self.lock();
        self.fan_out(
            &mut state,
            hub,
            frame.bytes(),
            Priority::Droppable,
            Some(typist.id),
        );
    }

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
        let members = state.members.len();
        if members == 0 {
            return 0;
        }
        let Some(this) = self.this.upgrade() else {
            return fan_out(hub, &state.members, frame, priority, skip);
        };
        let first = state.pending.is_empty();
        state.pending.push(Pending {
            frame: frame.clone(),
            priority,
            skip,
            upto: members,
        });
        if first {
            hub.enlist_room(&this);
        }
        (members - usize::from(skip.is_some())) as u64
    }

    /// The last member left: the room lingers (keeping its history for `--room-linger`) and
    /// joins the hub's queue of lingering rooms, whose oldest give way first when the node's
    /// room or history budget runs out.
    pub(crate) fn became_empty(&self, state: &mut State, hub: &Hub) {
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
            state.history.clear()
        } else {
            0
        }
    }

    /// Retires the room now if it is empty (the node needs its place); whether it did.
    pub(crate) fn retire_if_empty(&self) -> bool {
        let mut state = self.lock();
        if state.members.is_empty() && !state.dead {
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

    /// Pushes the events of this round to the members (the flusher calls this).
    pub fn deliver(&self, hub: &Hub) {
        deliver_pending(&mut self.lock(), hub);
    }

    /// Marks the room dead if it has been empty for `linger`; the hub then drops it.
    pub fn retire_if_idle(&self, now: Instant, linger: std::time::Duration) -> bool {
        let mut state = self.lock();
        let idle = state
            .empty_since
            .is_some_and(|since| now.saturating_duration_since(since) >= linger);
        if idle && state.members.is_empty() {
            state.dead = true;
        }
        state.dead
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
fn deliver_pending(state: &mut State, hub: &Hub) {
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
pub(crate) fn fan_out(
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::config::Config;

    /// The JSON `type` of every frame queued for `conn`, in order.
    fn queued_types(conn: &Conn) -> Vec<String> {
        let mut bytes = Vec::new();
        for frame in conn.outbox.take_all() {
            bytes.extend_from_slice(&frame);
        }
        let mut types = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            // Server frames: unmasked, FIN text, 7-bit or 16-bit length in these tests.
            let (len, head) = match bytes[at + 1] {
                126 => (
                    usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                    4,
                ),
                n => (usize::from(n), 2),
            };
            let payload = &bytes[at + head..at + head + len];
            let value: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
            let kind = value["type"].as_str().unwrap_or("?").to_owned();
            types.push(match value["text"].as_str() {
                Some(text) => format!("{kind}:{text}"),
                None => kind,
            });
            at += head + len;
        }
        types
    }

    #[test]
    fn a_rounds_events_reach_exactly_the_members_they_were_published_to() {
        let hub = Hub::new(&Config::default());
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let join = |name: &str| {
            let conn = hub.register(peer);
            let username: Arc<str> = Arc::from(name);
            let request = JoinRequest {
                username: &username,
                since: None,
                epoch: None,
            };
            let (room, _) = hub
                .join(&conn, "r", request)
                .expect("within the room budgets");
            (conn, room)
        };
        let (a, room) = join("a");
        let (b, _) = join("b");
        room.deliver(&hub);
        let _ = (queued_types(&a), queued_types(&b));

        // One round: a message, a join, a typing indicator from `a`, another message.
        room.publish(&hub, &a, "a", "one");
        let (c, _) = join("c");
        room.typing(&hub, &a, "a", true);
        room.publish(&hub, &b, "b", "two");
        assert!(
            queued_types(&b).is_empty(),
            "nothing goes out before the round ends"
        );
        room.deliver(&hub);

        assert_eq!(
            queued_types(&a),
            ["message:one", "user_joined", "message:two"],
            "the typist does not get its own typing"
        );
        assert_eq!(
            queued_types(&b),
            ["message:one", "user_joined", "typing", "message:two"]
        );
        assert_eq!(
            queued_types(&c),
            ["joined", "typing", "message:two"],
            "the joiner gets its `joined` first, then only what was published after it"
        );
    }
}
