//! The seam between the chat core and where a room's log lives.
//!
//! A [`crate::chat::session::Session`] turns every command into one call here (join, publish,
//! typing, leave, history) and knows nothing of backends; the [`crate::chat::room::Room`] does
//! the same whatever the backend. What differs is who orders a room's events and who knows its
//! members:
//!
//! - [`Backend::Memory`]: the room's log is the room's own ([`crate::chat::room::log`]). Every
//!   call completes here, synchronously, under the room's lock: the room assigns the seq
//!   ([`crate::chat::room::log::Order::Next`]), keeps the message and fans it out, without an
//!   allocation per member.
//! - [`Backend::Durable`]: one node whose logs are also kept on disk (`--data-dir`, the
//!   [`Journal`] implemented by `crate::store`). The room orders in memory as above, but a
//!   message is handed to the journal under the room's lock ([`Room::reserve`]) and
//!   appended and delivered only once it is stored, through [`Room::append`] with
//!   [`crate::chat::room::log::Order::Assigned`]: what anyone has seen survives a restart.
//!   A room this node opens starts from the journal's stored life (epoch, seq, newest
//!   messages). Joins and leaves are the memory ones, run by the journal after the
//!   messages taken before them ([`Journal::after_queued`]), so they keep the room's order;
//!   typing is the memory one.
//! - [`Backend::Remote`]: Redis keeps the log and the cluster-wide presence
//!   ([`crate::cluster`]). Calls queue a command for the node's backplane task and return;
//!   the task has Redis assign the seq and then delivers through the same room code
//!   ([`crate::chat::room::Room::append`] with [`crate::chat::room::log::Order::Assigned`], and
//!   [`crate::chat::room::Room::join`] with [`crate::chat::room::Presence::Backend`]).
//!
//! # What a backend provides
//! Per room:
//! - **assign seq**: the next seq of the room's current life, in one order for all its
//!   members (in the room, as memory does, or handed to [`crate::chat::room::Room::append`] as
//!   [`crate::chat::room::log::Order::Assigned`], which refuses duplicates and gaps);
//! - **append**: keep the message before its event is delivered when that is its promise
//!   (a durable store commits first), within the history bounds;
//! - **replay**: the messages of a range, or after a `since`, for `joined` (today from the
//!   room's in-memory tail, [`crate::chat::room::log::Log::replay`]) and for scroll-back
//!   ([`Backend::history`]: memory answers from [`crate::chat::room::Room::history_page`],
//!   whose `complete` tells a backend that keeps more when it must read further itself: the
//!   disk then reads the page; Redis reads the room's stream);
//! - **epoch**: the room's life, stable for as long as its seq continues (across restarts
//!   for a durable store, across nodes for Redis), handed to the room with
//!   [`crate::chat::room::Room::reset_log`] when it is not the one the node made up;
//! - **read positions**: a person's position only rises; the room holds the ones it knows
//!   ([`Room::read`]). Memory keeps nothing beyond the room; a journal stores them behind it
//!   ([`Journal::keep_read`]) and hands a joiner's back ([`Journal::read_position`]); Redis
//!   raises them itself and publishes the event ([`RemoteLog::read`]).
//! - **presence**: whether the room's own members are the whole presence
//!   ([`crate::chat::room::Presence::Room`]) or the backend knows more.
//!
//! Dispatch is a `match` on this enum: no boxed futures, and the memory arm is exactly the
//! single-node path.

use std::sync::Arc;

use std::fmt;

use crate::chat::client::Conn;
use crate::chat::hub::{Hub, RoomRefusal};
use crate::chat::room::{
    Announce, HistoryPage, JoinOutcome, JoinRequest, Outgoing, Presence, Reservation, Reserved,
    Room, SendRefusal,
};
use crate::protocol::event;
use crate::transport::outbox::Priority;
use crate::ws::Frame;

pub use crate::chat::room::dedupe::{KeptSend, Sent};
pub use crate::chat::room::log::Page;

#[derive(Debug)]
pub enum Backend {
    /// Every room's log in this node's memory.
    Memory,
    /// One node, every room's log also on disk (`--data-dir`): each message is stored
    /// before it is delivered ([`Journal`]).
    Durable(Arc<dyn Journal>),
    /// Cluster mode (`--redis-url`): the logs and presence in Redis, through the backplane
    /// ([`crate::cluster::Backplane`]).
    Remote(Arc<dyn RemoteLog>),
}

/// The backend's queue for its own task is full: the command is refused (`server_busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A backend that orders rooms' events away from this node's memory (Redis). Defined here
/// and implemented by the backend, so the chat core does not depend on it. Each call queues
/// work for the backend's own task and returns at once: one dynamic call per command, never
/// one per member, and no future.
pub trait RemoteLog: fmt::Debug + Send + Sync {
    /// Starts `conn`'s join of `room` as `username`; the backend sends `joined` once it has
    /// the room's presence and log.
    fn join(
        &self,
        conn: &Arc<Conn>,
        room: Arc<Room>,
        username: Arc<str>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(), Busy>;

    /// Orders and delivers a chat message from `sender`; with a `ref`, de-duplicates it
    /// across the cluster and sends the sender its `ack` once ordered.
    fn publish(&self, hub: &Hub, room: &Arc<Room>, out: &Outgoing<'_>) -> Result<(), SendRefusal>;

    /// Sends a typing indicator to the room's other members, wherever they are.
    fn typing(&self, hub: &Hub, room: &Arc<Room>, typist: &Conn, username: &str, is_typing: bool);

    /// Takes `conn` out of `room`; `asked`: it gets `left` afterwards. Never refused.
    fn leave(&self, conn: &Arc<Conn>, room: Arc<Room>, username: Arc<str>, asked: bool);

    /// Starts reading a page of `room`'s log for `conn`; the backend sends it the `history`
    /// answer ([`send_page`]) once it has it.
    fn history(&self, conn: &Arc<Conn>, room: &Arc<Room>, page: Page) -> Result<(), Busy>;

    /// Raises `reader`'s read position in `room` (it is `username` there) to `seq` where the
    /// backend keeps positions; the backend tells the room's members on every node but
    /// `reader` itself ([`Room::apply_read`]) when it moved.
    fn read(&self, hub: &Hub, reader: &Arc<Conn>, room: &Arc<Room>, username: &str, seq: u64);
}

/// Sends `conn` the `history` answer for `room`: the page's stored entries spliced in as
/// they are. A direct reply, like `joined`.
pub fn send_page(hub: &Hub, conn: &Arc<Conn>, room: &str, page: &HistoryPage) {
    if conn.outbox.is_closing() {
        return;
    }
    let answer = event::history(room, page.entries.iter(), page.has_more);
    hub.push_parts_to(conn, answer.parts(), Priority::Normal);
}

/// A room's life as a journal stored it: carried on by the room this node opens.
#[derive(Debug, Clone)]
pub struct StoredLife {
    pub epoch: Arc<str>,
    /// The seq of its latest message (0: none yet).
    pub seq: u64,
    /// Its newest messages (message event frames), oldest first, at most the number asked.
    pub newest: Vec<Frame>,
    /// Sends with `ref` within the dedupe window, oldest first, so that a resend after a
    /// restart is still recognised.
    pub sends: Vec<KeptSend>,
}

/// The journal cannot read what it keeps now (its disk failed): the room is not opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// Where a single node keeps its rooms' logs beyond memory (`crate::store`). Defined here,
/// implemented by the store, so the chat core does not depend on it. Calls never wait for
/// the disk except [`Journal::open`], which reads once per room opened.
pub trait Journal: fmt::Debug + Send + Sync {
    /// The stored life of the room called `name` with its `newest` latest messages, or
    /// `None` if it never stored a message.
    fn open(&self, name: &str, newest: usize) -> Result<Option<StoredLife>, Unavailable>;

    /// Takes a message `room` just reserved (called under the room's lock, so in seq
    /// order): the journal stores it, then appends it to `room`. [`Busy`] when its queue is
    /// full.
    fn keep(&self, room: &Arc<Room>, message: Reserved, from_client: bool) -> Result<(), Busy>;

    /// Messages taken and not yet stored and appended (`relay_store_queue`).
    fn queued(&self) -> usize;

    /// Runs `then` once every message taken before it is stored and appended (at once if
    /// the journal has stopped): a leave goes this way, so that the leaver still gets what
    /// it sent before it left and the others see its messages before its `user_left`.
    fn after_queued(&self, hub: &Hub, then: Box<dyn FnOnce(&Hub) + Send>);

    /// The stored event JSON of message `seq` of the room called `room` (one indexed read,
    /// on the caller's thread: an edit or delete of a message memory no longer keeps).
    fn lookup(&self, room: &str, seq: u64) -> Result<Option<String>, Unavailable>;

    /// Answers `conn`'s scroll-back `page` of the room called `room` from disk, off the
    /// event loop (the answer is pushed when read). [`Busy`] when too many reads are
    /// under way.
    fn page(&self, conn: &Arc<Conn>, room: &str, page: Page) -> Result<(), Busy>;

    /// Keeps `person`'s read position in the room called `room` (raised to `seq`, never
    /// lowered), off the event loop; a restart keeps it. Never refused: the room's own
    /// position is the one that counts while it lives.
    fn keep_read(&self, room: &Arc<str>, person: &str, seq: u64);

    /// `person`'s stored read position in the room called `room` (0: none), read when a
    /// person joins a room that does not hold its position; one indexed read.
    fn read_position(&self, room: &str, person: &str) -> Result<u64, Unavailable>;
}

/// Why a join was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The room may not be created (`room_limit`).
    Room(RoomRefusal),
    /// The backend's queue is full (`server_busy`).
    Busy,
}

/// Why a leave happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// The client asked: it gets `left` once the room no longer delivers to it.
    Asked,
    /// The connection ended.
    Disconnected,
}

impl Backend {
    /// Joins `conn` to the room called `name` (`current`: the room, when `conn` is already
    /// a member). Returns the room; its `joined` is sent now (memory), once the messages
    /// being stored are appended (durable: in the room's order, like a leave), or once the
    /// backend has the room's presence and log (cluster).
    pub fn join(
        &self,
        hub: &Hub,
        conn: &Arc<Conn>,
        name: &str,
        current: Option<&Arc<Room>>,
        request: JoinRequest<'_>,
    ) -> Result<Arc<Room>, JoinRefusal> {
        match self {
            Backend::Memory => {
                let (room, outcome) = hub.join(conn, name, request).map_err(JoinRefusal::Room)?;
                debug_assert!(current.is_some() || outcome == JoinOutcome::Joined);
                Ok(room)
            }
            Backend::Durable(journal) => {
                // Held for the join, so the room cannot be retired before it runs.
                let room = loop {
                    let room = match current {
                        Some(room) => room.clone(),
                        None => hub.room_or_create(conn, name).map_err(JoinRefusal::Room)?,
                    };
                    if room.hold_for_join() {
                        break room;
                    }
                };
                let (joiner, joined) = (conn.clone(), room.clone());
                let (username, since) = (request.username.clone(), request.since);
                let epoch: Option<Box<str>> = request.epoch.map(Into::into);
                let disk = journal.clone();
                journal.after_queued(
                    hub,
                    Box::new(move |hub: &Hub| {
                        load_read_position(&*disk, &joined, joiner.person(&username));
                        let request = JoinRequest {
                            username: &username,
                            since,
                            epoch: epoch.as_deref(),
                        };
                        joined.join(hub, &joiner, request, Presence::Room);
                        joined.release_join();
                    }),
                );
                Ok(room)
            }
            Backend::Remote(backplane) => {
                let room = match current {
                    Some(room) => room.clone(),
                    None => hub.room_or_create(conn, name).map_err(JoinRefusal::Room)?,
                };
                backplane
                    .join(
                        conn,
                        room.clone(),
                        request.username.clone(),
                        request.since,
                        request.epoch,
                    )
                    .map_err(|Busy| JoinRefusal::Busy)?;
                Ok(room)
            }
        }
    }

    /// Publishes a chat message, an edit or a delete (`out`: what, from whom). With a `ref`
    /// the sender gets its `ack` once the message is ordered (and stored, on disk), and a
    /// resend gets the same `ack` again without a second message.
    pub fn publish(
        &self,
        hub: &Hub,
        room: &Arc<Room>,
        out: &Outgoing<'_>,
    ) -> Result<(), SendRefusal> {
        match self {
            Backend::Memory => room.send(hub, out).map(drop),
            Backend::Durable(journal) => {
                let stored;
                let mut out = *out;
                if let Some(change) = out.change.as_mut() {
                    if !room.keeps(change.target) {
                        stored = journal
                            .lookup(&room.name, change.target)
                            .map_err(|_| SendRefusal::Busy)?;
                        change.stored = stored.as_deref().map(str::as_bytes);
                    }
                }
                let out = &out;
                let reserved = room.reserve(hub, out, |message| {
                    journal
                        .keep(room, message, true)
                        .map_err(|Busy| SendRefusal::Busy)
                })?;
                if let (Reservation::Resent(ack), Some(sender)) = (reserved, out.sender) {
                    // Behind everything queued: the first send may not be stored yet, and
                    // an ack promises that it is.
                    let to = sender.clone();
                    journal.after_queued(
                        hub,
                        Box::new(move |hub: &Hub| {
                            hub.push_to(&to, ack.bytes(), Priority::Normal);
                        }),
                    );
                }
                Ok(())
            }
            Backend::Remote(backplane) => backplane.publish(hub, room, out),
        }
    }

    /// Publishes a server message (the admin API's) as `user_id`, not counted as a client's.
    /// Returns its seq and the members it is for: queued already (memory, cluster: this
    /// node's members), or once stored (durable). [`Busy`] when the journal's queue is full.
    pub fn publish_as(
        &self,
        hub: &Hub,
        room: &Arc<Room>,
        user_id: &str,
        username: &str,
        text: &str,
    ) -> Result<(u64, u64), Busy> {
        match self {
            Backend::Memory | Backend::Remote(_) => {
                Ok(room.publish_as(hub, user_id, username, text))
            }
            Backend::Durable(journal) => {
                let out = Outgoing::server(user_id, username, text);
                let keep = |message| journal.keep(room, message, false);
                match room.reserve(hub, &out, |m| keep(m).map_err(|Busy| SendRefusal::Busy)) {
                    Ok(Reservation::Reserved { seq, members }) => Ok((seq, members as u64)),
                    // A server message has no `ref` to resend.
                    Ok(Reservation::Resent(_)) | Err(_) => Err(Busy),
                }
            }
        }
    }

    /// The life a room the node creates starts with: `made_up` (the epoch the hub just made
    /// up) when the backend keeps no life here (memory; cluster, where the backplane hands
    /// Redis's over later), else the stored one, or `made_up` from seq 0 for a room the
    /// journal never stored.
    pub fn life_of(
        &self,
        name: &str,
        made_up: &Arc<str>,
        newest: usize,
    ) -> Result<Option<StoredLife>, Unavailable> {
        match self {
            Backend::Memory | Backend::Remote(_) => Ok(None),
            Backend::Durable(journal) => {
                Ok(Some(journal.open(name, newest)?.unwrap_or_else(|| {
                    StoredLife {
                        epoch: made_up.clone(),
                        seq: 0,
                        newest: Vec::new(),
                        sends: Vec::new(),
                    }
                })))
            }
        }
    }

    /// Sends a typing indicator to the room's other members.
    pub fn typing(
        &self,
        hub: &Hub,
        room: &Arc<Room>,
        typist: &Conn,
        username: &str,
        is_typing: bool,
    ) {
        match self {
            Backend::Memory | Backend::Durable(_) => room.typing(hub, typist, username, is_typing),
            Backend::Remote(backplane) => backplane.typing(hub, room, typist, username, is_typing),
        }
    }

    /// `reader`, named `username` in `room`, read it up to `seq`: the position moves forward
    /// (never back, at most to the room's latest) and the room's other members and the
    /// person's other connections get a `read` event (not `reader`).
    pub fn read(&self, hub: &Hub, reader: &Arc<Conn>, room: &Arc<Room>, username: &str, seq: u64) {
        match self {
            Backend::Memory => {
                room.read(hub, reader, username, seq);
            }
            Backend::Durable(journal) => {
                if let Some(seq) = room.read(hub, reader, username, seq) {
                    journal.keep_read(&room.name, reader.person(username), seq);
                }
            }
            Backend::Remote(backplane) => backplane.read(hub, reader, room, username, seq),
        }
    }

    /// Answers `conn`'s scroll-back in `room` (a member) with up to `page.limit` messages
    /// before `page.before`: at once from memory, or once the backend has read them.
    pub fn history(
        &self,
        hub: &Hub,
        conn: &Arc<Conn>,
        room: &Arc<Room>,
        page: Page,
    ) -> Result<(), Busy> {
        match self {
            Backend::Memory => {
                // Memory is all a single node keeps, so `complete` does not matter here.
                send_page(hub, conn, &room.name, &room.history_page(page));
                Ok(())
            }
            Backend::Durable(journal) => {
                // Never past what the room has delivered: the disk may already hold a
                // committed message the writer has not appended yet, which would then come
                // twice (in the page and live).
                let top = room.position().1.saturating_add(1);
                let before = page.before.map_or(top, |b| b.min(top));
                let page = Page {
                    before: Some(before),
                    ..page
                };
                let mut in_memory = room.history_page(page);
                if in_memory.complete {
                    // Every message asked for is in memory (the entries end just below
                    // `before`); older ones are on disk unless memory holds the room from its
                    // first message or the page reaches seq 1.
                    let first = before.saturating_sub(in_memory.entries.len() as u64);
                    in_memory.has_more |= !in_memory.whole && first > 1;
                    send_page(hub, conn, &room.name, &in_memory);
                    Ok(())
                } else {
                    journal.page(conn, &room.name, page)
                }
            }
            Backend::Remote(backplane) => backplane.history(conn, room, page),
        }
    }

    /// Takes `conn` out of `room`, where it was `username`. Never refused: a lost leave
    /// would leave a ghost in the room's presence.
    pub fn leave(
        &self,
        hub: &Hub,
        conn: &Arc<Conn>,
        room: Arc<Room>,
        username: Arc<str>,
        why: Leave,
    ) {
        match self {
            Backend::Memory => leave_here(hub, conn, &room, why),
            Backend::Durable(journal) => {
                let conn = conn.clone();
                journal.after_queued(
                    hub,
                    Box::new(move |hub: &Hub| leave_here(hub, &conn, &room, why)),
                );
            }
            Backend::Remote(backplane) => {
                backplane.leave(conn, room, username, why == Leave::Asked);
            }
        }
    }
}

/// Before `person` joins `room` (durable): its stored read position, unless the room
/// holds one (the room's is the later: the disk is written behind it). A disk that cannot
/// be read leaves the position at what the room knows; the join goes on.
fn load_read_position(journal: &dyn Journal, room: &Room, person: &str) {
    if room.knows_read(person) {
        return;
    }
    match journal.read_position(&room.name, person) {
        Ok(seq) => room.learn_read(person, seq),
        Err(Unavailable(err)) => {
            tracing::warn!(room = %room.name, error = %err, "could not read a stored read position")
        }
    }
}

/// A leave of a room whose members this node knows: `user_left` to the others, `left` to the
/// leaver when it asked.
fn leave_here(hub: &Hub, conn: &Arc<Conn>, room: &Room, why: Leave) {
    // An explicit leave is announced at once; a disconnect may be a reload or a network drop
    // (the person's `user_left` waits `--presence-grace`).
    let announce = match why {
        Leave::Asked => Announce::Room,
        Leave::Disconnected => Announce::RoomAfterGrace,
    };
    room.leave(hub, conn, announce);
    if why == Leave::Asked {
        hub.push_to(conn, event::left(&room.name).bytes(), Priority::Normal);
    }
}
