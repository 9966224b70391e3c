//! One chat room: members, its log (seq, history, epoch), and fan-out.
//!
//! Everything that must happen in one order for all members (ordering a message into the log,
//! storing history, queueing the frame for each member) happens under the room's lock, so
//! every member's queue receives the room's events in the same order. The lock is never held
//! across an await and never taken while another room's lock is held.
//!
//! The room does the same whatever backend keeps its log ([`crate::chat::backend`]): a message is
//! ordered through [`Room::append`] (the room assigns the seq, or takes the backend's), a join
//! is [`Room::join`] (presence from the room's own members or the backend's), and a `joined`
//! replays from [`log::Log::replay`]. Submodules: [`log`] (ordering and replay), `fanout`
//! (the per-round delivery to members), `lifecycle` (lingering and retirement),
//! `outgoing` (what a message, edit or delete carries, and its checks), `publish` (a
//! message into the log: in memory at once, or reserved for a backend that
//! keeps it first), [`dedupe`] (the sends remembered by `ref`), `scrollback` (the pages of
//! a `history` command), `reads` (read positions and their coalesced `read` events),
//! `people` (presence per person and the grace of a disconnected one, for
//! [`Presence::Room`]).

pub mod dedupe;
mod fanout;
mod lifecycle;
pub mod log;
mod outgoing;
mod people;
mod publish;
mod reads;
mod scrollback;

pub use outgoing::{Author, Edit, Outgoing, SendRefusal};
pub use publish::{Ack, Appended, Reservation, Reserved};
pub use scrollback::HistoryPage;

use std::borrow::Borrow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use crate::chat::client::Conn;
use crate::chat::history::HistoryBudget;
use crate::chat::hub::Hub;
use crate::chat::per_ip::RoomCharge;
use crate::protocol::event::{self, UserRef};
use crate::transport::outbox::Priority;
use crate::ws::Frame;

use fanout::Pending;
use log::Log;
use people::{Arrival, Departure, People};

/// `joined` history may fill a connection's outbox up to 1/this of `--max-outbound-bytes`:
/// the other half is left for live traffic while the joins are written out.
const JOINED_HEADROOM_DIVISOR: usize = 2;

#[derive(Debug, Clone)]
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
    members: Vec<Member>,
    /// The members as people, with their pending departures (only with
    /// [`Presence::Room`]: in cluster mode Redis keeps presence).
    people: People,
    log: Log,
    /// Set once the room is removed from the hub; a join that raced the removal retries.
    dead: bool,
    empty_since: Option<Instant>,
    /// On the hub's queue of lingering rooms (see [`Hub::note_lingering`]).
    lingering_queued: bool,
    /// Joins on their way through the backend ([`Room::hold_for_join`]): the room is not
    /// retired meanwhile.
    joining: u32,
    /// Events fanned out this scheduler round, not yet pushed to members' queues (see
    /// [`Room::fan_out`]).
    pending: Vec<Pending>,
    /// Sends remembered by `ref`; boxed and made on the first one, as most rooms see none.
    dedupe: Option<Box<dedupe::Dedupe>>,
    /// How far each person has read the room (`reads`).
    reads: reads::Reads,
}

impl State {
    /// Removes the member at `at`, after delivering what was published while it was one.
    fn remove_member(&mut self, hub: &Hub, at: usize) -> Member {
        fanout::deliver_pending(self, hub);
        hub.metrics.member_removed();
        self.members.swap_remove(at)
    }

    /// Adds `conn` as a member unless it already is one; returns whether it already was.
    fn admit(&mut self, hub: &Hub, conn: &Arc<Conn>, username: &Arc<str>) -> bool {
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

/// Who knows a room's members, and so tells them of a join.
#[derive(Debug, Clone, Copy)]
pub enum Presence<'a> {
    /// This room: `joined` lists its members, and they get `user_joined` from here.
    Room,
    /// The backend, across nodes: `joined` shows its `count` (at least the members here) and
    /// `users` (`None` above the presence-list cut-off); it tells the others itself.
    Backend {
        count: usize,
        users: Option<&'a [(String, String)]>,
    },
}

/// Who tells the remaining members of a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// This room, with `user_left` once the person's last connection has left (an explicit
    /// `leave`, or `--presence-grace` 0).
    Room,
    /// This room, for a disconnect: the person's `user_left` waits `--presence-grace` and
    /// is not sent if it rejoins meanwhile.
    RoomAfterGrace,
    /// The backend (it knows whether the user is still in the room on another node).
    Backend,
}

/// The member an unsequenced event is not for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Skip<'a> {
    Nobody,
    /// This node's connection id (the typist).
    Conn(u64),
    /// A client id from another node's event (looked up among the members here).
    Client(&'a str),
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

    /// A room whose log starts a new life called `epoch`: it changes whenever a room of this
    /// name is created anew, so `since` from an older life is recognised (`docs/PROTOCOL.md`).
    pub fn new(name: Arc<str>, epoch: Arc<str>, budget: Arc<HistoryBudget>) -> Self {
        Self {
            this: Weak::new(),
            _charge: None,
            name,
            state: Mutex::new(State {
                members: Vec::new(),
                people: People::default(),
                log: Log::new(epoch, budget),
                dead: false,
                empty_since: None,
                lingering_queued: false,
                joining: 0,
                pending: Vec::new(),
                dedupe: None,
                reads: reads::Reads::default(),
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

    /// The room's current life, as `joined` shows it.
    pub fn epoch(&self) -> Arc<str> {
        self.lock().log.epoch().clone()
    }

    /// The backend's epoch for the room (`None` while the room's own holds) and the seq of
    /// the last message here.
    pub fn position(&self) -> (Option<Arc<str>>, u64) {
        self.lock().log.position()
    }

    /// Starts (or restarts) the room's life as the backend has it: `history` oldest first,
    /// its last entry at most `seq`.
    pub fn reset_log(&self, epoch: Arc<str>, seq: u64, history: &[Frame]) {
        self.lock().log.reset(epoch, seq, history);
    }

    /// Carries on a retired room's life (its successor after a join raced the retirement):
    /// `entries` are the predecessor's [`Room::history_entries`].
    pub fn carry_on_log(&self, epoch: Arc<str>, seq: u64, entries: Vec<Frame>) {
        self.lock().log.carry_on(epoch, seq, entries);
    }

    /// The history entries kept here, oldest first.
    pub fn history_entries(&self) -> Vec<Frame> {
        self.lock()
            .log
            .history()
            .entries()
            .iter()
            .cloned()
            .collect()
    }

    /// Adds `conn` and sends it `joined`; with [`Presence::Room`] tells the others.
    pub fn join(
        &self,
        hub: &Hub,
        conn: &Arc<Conn>,
        request: JoinRequest<'_>,
        presence: Presence<'_>,
    ) -> JoinOutcome {
        let mut state = self.lock();
        if state.dead {
            return JoinOutcome::Retired;
        }
        let already = state.admit(hub, conn, request.username);
        if already {
            // Its `joined` lists history up to now: what is still pending must reach it first.
            fanout::deliver_pending(&mut state, hub);
        }
        let resume = (request.since, request.epoch);
        let read = reads::joined_position(&state, conn.person(request.username));
        match presence {
            Presence::Room => {
                let st = &mut *state;
                let arrival = match already {
                    // `admit` appended it.
                    false => st.people.arrive(&st.members),
                    true => Arrival::Present,
                };
                let count = state.people.len();
                let users = (count <= hub.limits.presence_list_max)
                    .then(|| state.people.users(&state.members));
                self.send_joined(&state, hub, conn, (count, users), resume, read);
                if arrival == Arrival::New {
                    let user = UserRef {
                        id: &conn.user_id,
                        username: request.username,
                    };
                    self.announce_person(&mut state, hub, "user_joined", user, Some(conn.id));
                }
            }
            Presence::Backend { count, users } => {
                // Redis counts people (a person's connections here count once).
                let users = users.map(|u| u.iter().map(|(id, username)| UserRef { id, username }));
                self.send_joined(&state, hub, conn, (count.max(1), users), resume, read);
            }
        }
        if already {
            return JoinOutcome::AlreadyMember;
        }
        JoinOutcome::Joined
    }

    /// Sends `conn` its `joined`: `presence` is the count and (under the presence-list
    /// cut-off) the users, `resume` the join's `since` and `epoch`, `read` its `lastRead`
    /// and `unread`. Nothing is built for a connection already being closed (a slow
    /// consumer rejoining in a loop).
    fn send_joined<'u>(
        &self,
        state: &State,
        hub: &Hub,
        conn: &Arc<Conn>,
        presence: (usize, Option<impl Iterator<Item = UserRef<'u>>>),
        resume: (Option<u64>, Option<&str>),
        read: (u64, u64),
    ) {
        if conn.outbox.is_closing() {
            return;
        }
        // Several joins read in one go (a client restoring its rooms) queue their `joined`
        // before the flusher writes any: each takes history only while the outbox stays under
        // half its cap, so together they cannot close the client as a slow consumer (4008).
        let headroom = (hub.limits.max_outbound_bytes / JOINED_HEADROOM_DIVISOR)
            .saturating_sub(conn.outbox.queued_bytes());
        let log = &state.log;
        let replay = log.replay(resume.0, resume.1, headroom);
        let joined = event::joined(event::Joined {
            client_id: &conn.client_id,
            room: &self.name,
            epoch: log.epoch(),
            seq: log.seq(),
            last_read: read.0,
            unread: read.1,
            count: presence.0,
            users: presence.1,
            history: log.history().entries().range(replay.first..),
            recovered: replay.recovered,
            truncated: replay.truncated,
        });
        hub.push_parts_to(conn, joined.parts(), Priority::Normal);
    }

    /// Removes `conn` at once (nothing more is delivered to it); with [`Announce::Room`] or
    /// [`Announce::RoomAfterGrace`] tells the others once its person has gone. Returns its
    /// name in the room if it was a member.
    pub fn leave(&self, hub: &Hub, conn: &Conn, announce: Announce) -> Option<Arc<str>> {
        let mut state = self.lock();
        let at = state.members.iter().position(|m| m.conn.id == conn.id)?;
        let gone = state.remove_member(hub, at);
        if announce != Announce::Backend {
            let grace =
                announce == Announce::RoomAfterGrace && !hub.limits.presence_grace.is_zero();
            let st = &mut *state;
            match st.people.depart(&gone, &st.members, grace) {
                Departure::Stays => {}
                Departure::Gone => {
                    self.announce_person(&mut state, hub, "user_left", gone.user(), None);
                }
                Departure::Pending(generation) => {
                    self.schedule_departure(
                        &mut state,
                        hub,
                        &gone.conn,
                        &gone.username,
                        generation,
                    );
                }
            }
        }
        if state.members.is_empty() {
            self.became_empty(&mut state, hub);
        }
        Some(gone.username)
    }

    /// Sends a typing indicator to every member but the typist.
    pub fn typing(&self, hub: &Hub, typist: &Conn, username: &str, is_typing: bool) {
        let user = UserRef {
            id: &typist.user_id,
            username,
        };
        let frame = event::typing(&self.name, user, is_typing);
        self.broadcast(hub, Priority::Droppable, Skip::Conn(typist.id), |_| frame);
    }

    /// Sends an event that takes no seq of its own (typing, presence and notices from the
    /// backend) to every member but `skip`; `encode` gets the room's latest seq. Returns how
    /// many members it is for.
    pub(crate) fn broadcast<F: Borrow<Frame>>(
        &self,
        hub: &Hub,
        priority: Priority,
        skip: Skip<'_>,
        encode: impl FnOnce(u64) -> F,
    ) -> u64 {
        let mut state = self.lock();
        let skip = match skip {
            Skip::Nobody => None,
            Skip::Conn(id) => Some(id),
            Skip::Client(client) => state
                .members
                .iter()
                .find(|m| *m.conn.client_id == *client)
                .map(|m| m.conn.id),
        };
        let frame = encode(state.log.seq());
        self.fan_out(&mut state, hub, frame.borrow().bytes(), priority, skip)
    }
}

/// What the chat core's unit tests share: connections joined to a room, and what they read
/// back from a connection's queue.
#[cfg(test)]
pub(super) mod test_support {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use super::{JoinRequest, Room};
    use crate::chat::client::Conn;
    use crate::chat::hub::Hub;

    /// A new connection (from 127.0.0.1:9) that has joined room "r" as `name`, and the room.
    pub(in crate::chat) fn joined(hub: &Hub, name: &str) -> (Arc<Conn>, Arc<Room>) {
        let conn = hub.register(SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
        let username: Arc<str> = Arc::from(name);
        let request = JoinRequest {
            username: &username,
            since: None,
            epoch: None,
        };
        let (room, _) = hub.join(&conn, "r", request).expect("within the budgets");
        (conn, room)
    }

    /// Every event queued for `conn`, in order, as JSON (and the queue emptied).
    pub(in crate::chat::room) fn queued_events(conn: &Conn) -> Vec<serde_json::Value> {
        let mut bytes = Vec::new();
        for frame in conn.outbox.take_all() {
            bytes.extend_from_slice(&frame);
        }
        let mut events = Vec::new();
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
            events.push(serde_json::from_slice(payload).expect("JSON"));
            at += head + len;
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{joined, queued_events};
    use super::*;
    use crate::config::Config;

    /// The JSON `type` of every frame queued for `conn`, in order.
    fn queued_types(conn: &Conn) -> Vec<String> {
        queued_events(conn)
            .into_iter()
            .map(|value| {
                let kind = value["type"].as_str().unwrap_or("?").to_owned();
                match value["text"].as_str() {
                    Some(text) => format!("{kind}:{text}"),
                    None => kind,
                }
            })
            .collect()
    }

    #[test]
    fn a_rounds_events_reach_exactly_the_members_they_were_published_to() {
        let hub = Hub::new(&Config::default());
        let (a, room) = joined(&hub, "a");
        let (b, _) = joined(&hub, "b");
        room.deliver(&hub);
        let _ = (queued_types(&a), queued_types(&b));

        // One round: a message, a join, a typing indicator from `a`, another message.
        room.publish(&hub, &a, "a", "one");
        let (c, _) = joined(&hub, "c");
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
