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
//! - [`Backend::Remote`]: Redis keeps the log and the cluster-wide presence
//!   ([`crate::cluster`]). Calls queue a command for the node's backplane task and return;
//!   the task has Redis assign the seq and then delivers through the same room code
//!   ([`crate::chat::room::Room::append`] with [`crate::chat::room::log::Order::Assigned`], and
//!   [`crate::chat::room::Room::join`] with [`crate::chat::room::Presence::Backend`]).
//!
//! # What a backend provides
//! One more variant (the durable store of the next issue) provides, per room:
//! - **assign seq**: the next seq of the room's current life, in one order for all its
//!   members (in the room, as memory does, or handed to [`crate::chat::room::Room::append`] as
//!   [`crate::chat::room::log::Order::Assigned`], which refuses duplicates and gaps);
//! - **append**: keep the message before its event is delivered when that is its promise
//!   (a durable store commits first), within the history bounds;
//! - **replay**: the messages of a range, or after a `since`, for `joined` (today from the
//!   room's in-memory tail, [`crate::chat::room::log::Log::replay`]) and for scroll-back
//!   ([`Backend::history`]: memory answers from [`crate::chat::room::Room::history_page`],
//!   whose `complete` tells a backend that keeps more when it must read further itself;
//!   Redis reads the room's stream);
//! - **epoch**: the room's life, stable for as long as its seq continues (across restarts
//!   for a durable store, across nodes for Redis), handed to the room with
//!   [`crate::chat::room::Room::reset_log`] when it is not the one the node made up;
//! - **presence**: whether the room's own members are the whole presence
//!   ([`crate::chat::room::Presence::Room`]) or the backend knows more.
//!
//! Dispatch is a `match` on this enum: no boxed futures, and the memory arm is exactly the
//! single-node path.

use std::sync::Arc;

use std::fmt;

use crate::chat::client::Conn;
use crate::chat::hub::{Hub, RoomRefusal};
use crate::chat::room::{Announce, HistoryPage, JoinOutcome, JoinRequest, Room};
use crate::protocol::event;
use crate::transport::outbox::Priority;

pub use crate::chat::room::log::Page;

#[derive(Debug)]
pub enum Backend {
    /// Every room's log in this node's memory.
    Memory,
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

    /// Orders and delivers a chat message from `sender`.
    fn publish(
        &self,
        hub: &Hub,
        sender: &Arc<Conn>,
        room: &Arc<Room>,
        username: &str,
        text: &str,
    ) -> Result<(), Busy>;

    /// Sends a typing indicator to the room's other members, wherever they are.
    fn typing(&self, hub: &Hub, room: &Arc<Room>, typist: &Conn, username: &str, is_typing: bool);

    /// Takes `conn` out of `room`; `asked`: it gets `left` afterwards. Never refused.
    fn leave(&self, conn: &Arc<Conn>, room: Arc<Room>, username: Arc<str>, asked: bool);

    /// Starts reading a page of `room`'s log for `conn`; the backend sends it the `history`
    /// answer ([`send_page`]) once it has it.
    fn history(&self, conn: &Arc<Conn>, room: &Arc<Room>, page: Page) -> Result<(), Busy>;
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
    /// a member). Returns the room; its `joined` is sent now (memory) or once the backend
    /// has the room's presence and log (cluster).
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

    /// Publishes a chat message from `sender` (named `username` in the room).
    pub fn publish(
        &self,
        hub: &Hub,
        sender: &Arc<Conn>,
        room: &Arc<Room>,
        username: &str,
        text: &str,
    ) -> Result<(), Busy> {
        match self {
            Backend::Memory => {
                room.publish(hub, sender, username, text);
                Ok(())
            }
            Backend::Remote(backplane) => backplane.publish(hub, sender, room, username, text),
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
            Backend::Memory => room.typing(hub, typist, username, is_typing),
            Backend::Remote(backplane) => backplane.typing(hub, room, typist, username, is_typing),
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
            Backend::Memory => {
                room.leave(hub, conn, Announce::Room);
                if why == Leave::Asked {
                    hub.push_to(conn, event::left(&room.name).bytes(), Priority::Normal);
                }
            }
            Backend::Remote(backplane) => {
                backplane.leave(conn, room, username, why == Leave::Asked);
            }
        }
    }
}
