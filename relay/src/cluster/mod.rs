//! Cluster mode: many relay nodes behind a load balancer act as one chat through Redis.
//!
//! - [`Backplane`] is what sessions talk to. Session commands stay synchronous: they queue a
//!   [`Command`] (bounded by `--cluster-queue`; `server_busy` when full) and return.
//! - [`task`] is the node's one backplane task: it owns the Redis connection (RESP3, pushes for
//!   pub/sub), runs the Lua [`scripts`], subscribes to exactly the rooms with local members,
//!   and fans what comes back out locally through the rooms ([`room_ops`]), one shared frame
//!   per event per node. Losing Redis degrades the node to local delivery (see
//!   docs/CLUSTER.md) until it reconnects.
//!   Its session commands are in `batch` (scroll-back reads in `history`), its periodic work
//!   in `upkeep`, reply parsing in `reply`.
//! - [`wire`]: the pub/sub payloads; [`keys`]: key and channel names.
//!
//! Without `--redis-url` none of this exists and the single-node path runs unchanged.

mod batch;
mod departing;
mod history;
pub mod keys;
mod reply;
pub mod room_ops;
pub mod scripts;
pub mod task;
mod upkeep;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::chat::backend::Page;
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::room::{Outgoing, Room, SendRefusal};
use crate::clock::now_ms;
use crate::config::Config;
use crate::protocol::event;
use crate::ws::Frame;

/// What sessions ask of the backplane task, in the order they asked.
#[derive(Debug)]
pub enum Command {
    Join {
        conn: Arc<Conn>,
        room: Arc<Room>,
        username: Arc<str>,
        since: Option<u64>,
        epoch: Option<Box<str>>,
    },
    Leave {
        conn: Arc<Conn>,
        room: Arc<Room>,
        /// The name the member had in the room (for `user_left`).
        username: Arc<str>,
        /// Send the client `left` once done (an explicit `leave`, not a disconnect).
        ack: bool,
        /// A disconnect: its field stays in Redis for `--presence-grace` (see `departing`).
        grace: bool,
    },
    /// A disconnected member's `--presence-grace` has passed (it left the room here at
    /// once): its field is removed from Redis unless the departure was settled meanwhile.
    Depart {
        conn: Arc<Conn>,
        room: Arc<Room>,
        username: Arc<str>,
    },
    Message {
        room: Arc<Room>,
        /// `None`: the admin API's (a moderator's delete).
        sender: Option<Arc<Conn>>,
        /// The event's JSON before and after its seq (encoded once, on the sender's node).
        prefix: Vec<u8>,
        suffix: BytesMut,
        sent_us: u64,
        /// A send with `ref`: acknowledged once Redis ordered it, and de-duplicated there.
        ack: Option<Box<PendingAck>>,
        /// An edit or delete: its target's seq and event as it is after it, kept in Redis
        /// for scroll-back pages (the stream keeps the message as first sent).
        revised: Option<(u64, Frame)>,
    },
    Typing {
        room: Arc<Room>,
        payload: Vec<u8>,
    },
    /// A read position: Redis raises it and publishes the `read` event if it moved.
    Read {
        room: Arc<Room>,
        sender: Arc<Conn>,
        /// The sender's name in the room (served locally while Redis is away).
        username: Box<str>,
        person: Box<str>,
        seq: u64,
        /// The event's JSON before its seq (the script appends the seq it kept).
        head: Vec<u8>,
        sent_us: u64,
    },
    /// Scroll-back: a page of the room's stream, answered to `conn` only.
    History {
        conn: Arc<Conn>,
        room: Arc<Room>,
        page: Page,
    },
}

/// What a message sent with `ref` needs for its `ack` and its de-duplication in Redis.
#[derive(Debug)]
pub struct PendingAck {
    /// The refs hash field: `person\nref` (a person's name cannot hold a newline).
    pub field: String,
    pub reference: Box<str>,
    /// The message's id, as its event has it.
    pub id: String,
}

/// Settings the backplane task needs, copied out of `Config`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub keys: keys::Keys,
    pub presence_ttl: Duration,
    pub history: usize,
    pub presence_list_max: usize,
    pub room_linger: Duration,
    pub dedupe_window: Duration,
    /// How long a disconnected member stays in Redis (`--presence-grace`).
    pub presence_grace: Duration,
}

pub use crate::chat::backend::Busy;

#[derive(Debug)]
pub struct Backplane {
    pub settings: Settings,
    node: Arc<str>,
    tx: mpsc::UnboundedSender<Command>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    /// Commands queued and not yet taken by the task. The channel itself is unbounded so
    /// that leaves (which must never be lost) always go in; this count bounds the rest.
    queued: AtomicUsize,
    cap: usize,
    /// Whether the task has a working Redis connection; while not, messages are delivered
    /// locally by the session itself.
    connected: AtomicBool,
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Backplane {
    /// The backplane for `config`, if it names a Redis.
    pub fn from_config(config: &Config, node: &Arc<str>) -> Option<Self> {
        let url = config.redis_url.clone()?;
        let (tx, rx) = mpsc::unbounded_channel();
        Some(Self {
            settings: Settings {
                url,
                keys: keys::Keys::new(&config.cluster_name),
                presence_ttl: config.presence_ttl,
                history: config.history,
                presence_list_max: config.presence_list_max,
                room_linger: config.room_linger,
                dedupe_window: config.dedupe_window,
                presence_grace: config.presence_grace,
            },
            node: node.clone(),
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
            cap: if config.cluster_queue == 0 {
                usize::MAX
            } else {
                config.cluster_queue
            },
            connected: AtomicBool::new(false),
        })
    }

    /// Starts the backplane task (once; later calls return `None`). It ends after `stop`
    /// turns true and it has removed this node's members from Redis.
    pub fn start(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        // Unready from the start, not from whenever the task first runs.
        hub.readiness.set_unready("redis", "connecting to Redis");
        Some(tokio::spawn(task::run(self.clone(), hub, rx, stop)))
    }

    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    fn send(&self, command: Command, bounded: bool) -> Result<(), Busy> {
        if bounded && self.queued.load(Ordering::Relaxed) >= self.cap {
            return Err(Busy);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(command).is_err() {
            // The task has stopped (shutdown): nothing more reaches Redis.
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Busy);
        }
        Ok(())
    }

    fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// The chat core's seam ([`crate::chat::backend::RemoteLog`]): every call queues a command for the
/// backplane task.
impl crate::chat::backend::RemoteLog for Backplane {
    fn join(
        &self,
        conn: &Arc<Conn>,
        room: Arc<Room>,
        username: Arc<str>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<(), Busy> {
        let command = Command::Join {
            conn: conn.clone(),
            room,
            username,
            since,
            epoch: epoch.map(Into::into),
        };
        self.send(command, true)
    }

    /// Never refused: a lost leave would leave a ghost in the room's presence.
    fn leave(&self, conn: &Arc<Conn>, room: Arc<Room>, username: Arc<str>, ack: bool) {
        let _ = self.send(
            Command::Leave {
                conn: conn.clone(),
                room,
                username,
                ack,
                grace: !ack,
            },
            false,
        );
    }

    /// A chat message: through Redis while connected, else straight to local members. A
    /// send with `ref` needs Redis (only there is it ordered and de-duplicated for the whole
    /// cluster): while Redis is away it is refused as busy, and the client resends it later.
    fn publish(&self, hub: &Hub, room: &Arc<Room>, out: &Outgoing<'_>) -> Result<(), SendRefusal> {
        // This node's view of the room: a reply can only name a message it has seen, and an
        // edit only one it keeps (docs/CLUSTER.md).
        room.check_change(out)?;
        let number = hub.next_message_number();
        let parts = event::MessageEvent {
            node_tag: &hub.node_tag,
            number,
            // Assigned by Redis; the halves leave it out.
            seq: 0,
            room: &room.name,
            user_id: out.user_id,
            username: out.username,
            text: out.text,
            timestamp_ms: now_ms(),
            reply_to: out.reply_to,
            reference: out.reference.map(|(_, r)| r),
        };
        if !self.is_connected() {
            // Only Redis orders (and de-duplicates) for the whole cluster: a send with `ref`
            // is resent by its client later, and an edit or delete must be in the room's
            // one order to be seen by every node.
            if out.reference.is_some() || out.change.is_some() {
                return Err(SendRefusal::Busy);
            }
            room.cluster_local_message(hub, &parts);
            return Ok(());
        }
        let ack = out.sender.and(out.reference).map(|(person, reference)| {
            Box::new(PendingAck {
                field: format!("{person}\n{reference}"),
                reference: reference.into(),
                id: format!("{}-m{number}", hub.node_tag),
            })
        });
        let (prefix, suffix) = match &out.change {
            None => wire::message_halves(&parts),
            Some(change) => wire::change_halves(&event::ChangeEvent {
                room: &room.name,
                target: change.target,
                edit: (!change.delete).then_some((out.text, parts.timestamp_ms)),
            }),
        };
        // Revised here as every node revises its own copy when the change arrives (the
        // same function on the same event), for pages read from Redis later.
        let revised = out.change.as_ref().and_then(|change| {
            let how = if change.delete {
                event::Change::Delete
            } else {
                event::Change::Edit {
                    text: out.text.to_owned(),
                    edited_at: parts.timestamp_ms,
                }
            };
            let frame = room.kept_json(change.target, |json| event::revise(json, &how))??;
            Some((change.target, frame))
        });
        self.send(
            Command::Message {
                room: room.clone(),
                sender: out.sender.cloned(),
                prefix,
                suffix,
                sent_us: now_us(),
                ack,
                revised,
            },
            true,
        )
        .map_err(|Busy| SendRefusal::Busy)
    }

    /// A page of the room's stream; `server_busy` when the queue is full, as for messages.
    fn history(&self, conn: &Arc<Conn>, room: &Arc<Room>, page: Page) -> Result<(), Busy> {
        let command = Command::History {
            conn: conn.clone(),
            room: room.clone(),
            page,
        };
        self.send(command, true)
    }

    /// A read position: through Redis while connected (every node's members get the event
    /// from the room's channel, the sender's own connection skipped), else this node's room
    /// only. Dropped when the queue is full, like typing: the next read carries it.
    fn read(&self, hub: &Hub, reader: &Arc<Conn>, room: &Arc<Room>, username: &str, seq: u64) {
        if !self.is_connected() {
            room.read(hub, reader, username, seq);
            return;
        }
        let user = crate::protocol::event::UserRef {
            id: &reader.user_id,
            username,
        };
        let command = Command::Read {
            room: room.clone(),
            sender: reader.clone(),
            username: username.into(),
            person: reader.person(username).into(),
            seq,
            head: crate::protocol::event::read_head(&room.name, user),
            sent_us: now_us(),
        };
        let _ = self.send(command, true);
    }

    /// A typing indicator; dropped when the queue is full (typing is ephemeral), local only
    /// while Redis is unreachable.
    fn typing(&self, hub: &Hub, room: &Arc<Room>, typist: &Conn, username: &str, is_typing: bool) {
        if !self.is_connected() {
            room.typing(hub, typist, username, is_typing);
            return;
        }
        let frame = crate::protocol::event::typing(
            &room.name,
            crate::protocol::event::UserRef {
                id: &typist.user_id,
                username,
            },
            is_typing,
        );
        let payload = wire::unsequenced(
            wire::Kind::Typing,
            &self.node,
            now_us(),
            &typist.client_id,
            frame.payload(),
        );
        let _ = self.send(
            Command::Typing {
                room: room.clone(),
                payload,
            },
            true,
        );
    }
}
