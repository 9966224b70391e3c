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
//! `scrollback` (the pages of a `history` command).

mod fanout;
mod lifecycle;
pub mod log;
mod scrollback;

pub use scrollback::HistoryPage;

use std::borrow::Borrow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use crate::chat::client::Conn;
use crate::chat::history::HistoryBudget;
use crate::chat::hub::Hub;
use crate::chat::per_ip::RoomCharge;
use crate::protocol::event::{self, MessageEvent, UserRef};
use crate::transport::outbox::Priority;
use crate::ws::Frame;

use fanout::Pending;
use log::{Log, Order, Refused};

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
    members: Vec<Member>,
    log: Log,
    /// Set once the room is removed from the hub; a join that raced the removal retries.
    dead: bool,
    empty_since: Option<Instant>,
    /// On the hub's queue of lingering rooms (see [`Hub::note_lingering`]).
    lingering_queued: bool,
    /// Events fanned out this scheduler round, not yet pushed to members' queues (see
    /// [`Room::fan_out`]).
    pending: Vec<Pending>,
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
    /// This room, with `user_left`.
    Room,
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

/// A message the log took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// How many members it was queued for.
    pub delivered: u64,
}

/// A message [`Room::reserve`] ordered and encoded, on its way through the backend that keeps
/// it before it is appended.
#[derive(Debug)]
pub struct Reserved {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub timestamp_ms: u64,
    /// The message event, framed once; appended as it is.
    pub frame: Frame,
    /// The message number and when it was accepted, for the fan-out and delivery latencies
    /// (which so include the time it took to be kept).
    pub probe: (u64, Instant),
    /// Members when it was ordered.
    pub members: usize,
}

/// The one encoder of a chat message event: stamped with the time it is accepted, framed
/// once for every member; returns the timestamp beside the frame.
fn message_encoder<'a>(
    hub: &'a Hub,
    room: &'a str,
    number: u64,
    user_id: &'a str,
    username: &'a str,
    text: &'a str,
) -> impl Fn(u64) -> (u64, Frame) + 'a {
    let timestamp_ms = crate::chat::hub::now_ms();
    move |seq| {
        let frame = event::message(&MessageEvent {
            node_tag: &hub.node_tag,
            number,
            seq,
            room,
            user_id,
            username,
            text,
            timestamp_ms,
        });
        (timestamp_ms, frame)
    }
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
                log: Log::new(epoch, budget),
                dead: false,
                empty_since: None,
                lingering_queued: false,
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
        let here = state.members.len();
        let list_here = here <= hub.limits.presence_list_max;
        let resume = (request.since, request.epoch);
        match presence {
            Presence::Room => {
                let users = list_here.then(|| state.members.iter().map(Member::user));
                self.send_joined(&state, hub, conn, (here, users), resume);
            }
            Presence::Backend { count, users } => {
                let users = users.map(|u| u.iter().map(|(id, username)| UserRef { id, username }));
                self.send_joined(&state, hub, conn, (count.max(here), users), resume);
            }
        }
        if already {
            return JoinOutcome::AlreadyMember;
        }
        if let Presence::Room = presence {
            let user = UserRef {
                id: &conn.user_id,
                username: request.username,
            };
            let users = list_here.then(|| state.members.iter().map(Member::user));
            let frame = event::presence("user_joined", &self.name, user, here, users);
            self.fan_out(
                &mut state,
                hub,
                frame.bytes(),
                Priority::Normal,
                Some(conn.id),
            );
        }
        JoinOutcome::Joined
    }

    /// Sends `conn` its `joined`: `presence` is the count and (under the presence-list
    /// cut-off) the users, `resume` the join's `since` and `epoch`. Nothing is built for a
    /// connection already being closed (a slow consumer rejoining in a loop).
    fn send_joined<'u>(
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
            count: presence.0,
            users: presence.1,
            history: log.history().entries().range(replay.first..),
            recovered: replay.recovered,
            truncated: replay.truncated,
        });
        hub.push_parts_to(conn, joined.parts(), Priority::Normal);
    }

    /// Removes `conn`; with [`Announce::Room`] tells the others. Returns its name in the room
    /// if it was a member.
    pub fn leave(&self, hub: &Hub, conn: &Conn, announce: Announce) -> Option<Arc<str>> {
        let mut state = self.lock();
        let at = state.members.iter().position(|m| m.conn.id == conn.id)?;
        let gone = state.remove_member(hub, at);
        let count = state.members.len();
        if count == 0 {
            self.became_empty(&mut state, hub);
        } else if announce == Announce::Room {
            let users = (count <= hub.limits.presence_list_max)
                .then(|| state.members.iter().map(Member::user));
            let frame = event::presence("user_left", &self.name, gone.user(), count, users);
            self.fan_out(&mut state, hub, frame.bytes(), Priority::Normal, None);
        }
        Some(gone.username)
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
        let encode = message_encoder(hub, &self.name, number, user_id, username, text);
        // The room assigns the seq itself, so the log takes every message.
        self.append(hub, Order::Next, Some((number, started)), |seq| {
            encode(seq).1
        })
        .map_or((0, 0), |a| (a.seq, a.delivered))
    }

    /// Orders a message without delivering it, for a backend that keeps every message before
    /// anyone sees it (the durable store): under the room's lock the next seq of the
    /// backend's life is reserved, the event encoded once, and `keep` given it, so a room's
    /// messages reach `keep` in seq order. The backend hands it back through
    /// [`Room::append`] with [`Order::Assigned`]. If `keep` refuses, the seq is given back.
    /// Returns the seq and the members it is for now; `None` if the log holds no backend
    /// life (the message was then delivered as in memory).
    pub fn reserve<E>(
        &self,
        hub: &Hub,
        user_id: &str,
        username: &str,
        text: &str,
        keep: impl FnOnce(Reserved) -> Result<(), E>,
    ) -> Result<(u64, usize), E> {
        let started = Instant::now();
        let number = hub.next_message_number();
        let encode = message_encoder(hub, &self.name, number, user_id, username, text);
        let mut state = self.lock();
        let Some(seq) = state.log.reserve() else {
            drop(state);
            debug_assert!(false, "a journalled room always holds its stored life");
            let (seq, delivered) = self.publish_as(hub, user_id, username, text);
            return Ok((seq, delivered as usize));
        };
        let (timestamp_ms, frame) = encode(seq);
        let members = state.members.len();
        let reserved = Reserved {
            epoch: state.log.epoch().clone(),
            seq,
            timestamp_ms,
            frame,
            probe: (number, started),
            members,
        };
        match keep(reserved) {
            Ok(()) => Ok((seq, members)),
            Err(refused) => {
                state.log.unreserve(seq);
                Err(refused)
            }
        }
    }

    /// Whether messages [`Room::reserve`]d here have not been appended yet.
    pub fn has_in_flight(&self) -> bool {
        self.lock().log.in_flight()
    }

    /// The one way a message enters the room: ordered into the log (`order`: the next seq,
    /// or the one the backend assigned), kept in history and sent to every member.
    /// `encode` gets the seq and returns the event frame. `probe`: the message number and
    /// start of a message published on this node, for the fan-out and delivery latencies.
    pub fn append<F: Borrow<Frame>>(
        &self,
        hub: &Hub,
        order: Order<'_>,
        probe: Option<(u64, Instant)>,
        encode: impl FnOnce(u64) -> F,
    ) -> Result<Appended, Refused> {
        let mut state = self.lock();
        let (seq, frame) = state
            .log
            .append(order, || hub.history_fair_share(), encode)?;
        let frame = frame.borrow();
        // A sampled message goes out as a probe: the same bytes, timed until the last
        // member's writer drops them. History keeps the plain frame, or the probe would
        // only fire when the message left history.
        let sampled = match probe {
            Some((number, started)) if !state.members.is_empty() => {
                hub.metrics.probe(number, frame.bytes(), started)
            }
            _ => None,
        };
        let bytes = sampled.as_ref().unwrap_or(frame.bytes());
        let delivered = self.fan_out(&mut state, hub, bytes, Priority::Normal, None);
        drop(state);
        drop(sampled);
        if let Some((_, started)) = probe {
            hub.metrics.fanout_done(started);
        }
        hub.reclaim_history_if_over();
        Ok(Appended { seq, delivered })
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
