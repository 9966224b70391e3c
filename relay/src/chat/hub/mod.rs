//! The node's shared state: rooms in a sharded map, open connections, counters and budgets.
//! `lingering` keeps the queue of rooms that emptied; `upkeep` is the housekeeping task
//! (heartbeats, expired tokens, retiring empty rooms).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tracing::warn;

use super::client::Identity;
use crate::chat::backend::Backend;
use crate::chat::client::Conn;
use crate::chat::flusher::FlushList;
use crate::chat::gate::Gate;
use crate::chat::history::{HistoryBudget, HistoryLimits};
use crate::chat::per_ip::{SourceLimits, Sources};
use crate::chat::ratelimit::{self, Rate};
use crate::chat::room::{JoinOutcome, JoinRequest, Presence, Room};
use crate::chat::tap::Tap;
use crate::config::Config;
use crate::protocol::CloseCode;
use crate::telemetry::logging::Sampled;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::readiness::Readiness;
use crate::telemetry::stats::Stats;
use crate::transport::outbox::{CloseRequest, Priority, Push};
use crate::ws::{Frame, OpCode};

mod departures;
mod lingering;
mod upkeep;

/// The limits the hot path consults, copied out of `Config` once.
#[derive(Debug, Clone)]
pub struct Limits {
    pub history: usize,
    pub max_rooms_per_connection: usize,
    pub presence_list_max: usize,
    pub max_text_chars: usize,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
    pub ping_interval: Duration,
    pub room_linger: Duration,
    /// How long a room remembers a send's `ref` (`--dedupe-window`).
    pub dedupe_window: Duration,
    /// How long a disconnected person still counts as present (`--presence-grace`).
    pub presence_grace: Duration,
    /// Chat messages per connection (`--message-rate`, `--message-burst`).
    pub message_rate: Rate,
    /// Every other command per connection (`--command-rate`, `--command-burst`).
    pub command_rate: Rate,
    /// Refusals before a 4029 close (`--rate-limit-strikes`); `None`: never closed.
    pub strike_rate: Option<Rate>,
    /// Frames of any opcode per connection (`--frame-rate`, `--frame-burst`).
    pub frame_rate: Rate,
    /// Rooms on the node, in use or lingering (`--max-rooms`).
    pub max_rooms: usize,
    /// Authentication is on: a person is a token's `sub`, not a username
    /// (`chat::client::Conn::person`); read back from events by the same rule.
    pub by_sub: bool,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Self {
            history: c.history,
            max_rooms_per_connection: c.max_rooms_per_connection,
            presence_list_max: c.presence_list_max,
            max_text_chars: c.max_text_chars,
            max_message_bytes: c.max_message_bytes,
            max_outbound_bytes: c.max_outbound_bytes,
            ping_interval: c.ping_interval,
            room_linger: c.room_linger,
            dedupe_window: c.dedupe_window,
            presence_grace: c.presence_grace,
            message_rate: Rate::new(c.message_rate, c.message_burst),
            command_rate: Rate::new(c.command_rate, c.command_burst),
            strike_rate: ratelimit::strike_rate(c.rate_limit_strikes),
            frame_rate: Rate::new(c.frame_rate, c.frame_burst),
            max_rooms: c.max_rooms,
            by_sub: c.auth_secret.is_some() || c.auth_public_key.is_some(),
        }
    }
}

#[derive(Debug)]
pub struct Hub {
    pub limits: Limits,
    pub stats: Stats,
    pub readiness: Readiness,
    /// Distinguishes this node's client and message ids from another node's or an earlier
    /// run's.
    pub node_tag: Arc<str>,
    rooms: DashMap<Arc<str>, Arc<Room>>,
    conns: DashMap<u64, Arc<Conn>>,
    next_conn: AtomicU64,
    next_message: AtomicU64,
    next_room: AtomicU64,
    shutting_down: AtomicBool,
    ping: Frame,
    /// This node's Prometheus metrics (`GET /metrics`).
    pub metrics: Metrics,
    /// Where the rooms' logs live and who orders them: this node's memory, or the Redis
    /// backplane in cluster mode (`--redis-url`).
    pub backend: Backend,
    /// Who hears every room's events besides its members (`--webhook-url`): called once per
    /// event where the room orders it (`crate::chat::tap`); `None`: nobody.
    pub tap: Option<Arc<dyn Tap>>,
    /// What decides whether messages are published and joins allowed (the publish and
    /// join hooks, `crate::hooks`); `None`: everything valid is.
    pub gate: Option<Arc<dyn Gate>>,
    /// One flush list per worker thread; connection `id` uses list `id % len`. Each has a
    /// flusher task ([`crate::chat::flusher::run`]) while the relay serves.
    pub(crate) flush_lists: Box<[FlushList]>,
    /// Every room's history counts against this (`--history-total-bytes`).
    history: Arc<HistoryBudget>,
    /// Per-address budgets (messages, commands, rooms created).
    pub sources: Sources,
    /// Rooms that became empty, oldest first: they give way first when the node runs out of
    /// rooms or history. Entries can be stale (the room filled again or was retired); they
    /// are checked when used and pruned by housekeeping.
    // A std Mutex: pushed to under a room's lock (never the reverse), held for a push or a
    // short scan.
    lingering: Mutex<VecDeque<Weak<Room>>>,
    /// People waiting out `--presence-grace` before their `user_left`.
    departures: departures::Departures,
    /// Held by the one thread reclaiming history; others skip it rather than wait.
    reclaiming: Mutex<()>,
    /// Joins refused with `room_limit`.
    pub(crate) rooms_refused: AtomicU64,
    /// Lingering rooms retired early to make room for new ones.
    pub(crate) rooms_evicted: AtomicU64,
    slow_consumer_log: Sampled,
    pub(crate) rate_limit_log: Sampled,
}

/// Why a join may not create its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRefusal {
    /// The node holds `--max-rooms` rooms and none lingers.
    NodeFull,
    /// The address created `--ip-rooms` rooms that still exist.
    SourceFull,
    /// The room's stored log cannot be read now (durable store): opening it would start a
    /// second life under the same name.
    Unavailable,
}

/// A value that differs between runs and nodes, without a random-number crate: std's
/// `RandomState` is seeded from the OS.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

impl Hub {
    pub fn new(config: &Config) -> Self {
        let node_tag: Arc<str> = format!("{:06x}", random_u64() & 0xFF_FFFF).into();
        Self {
            limits: Limits::from(config),
            stats: Stats::default(),
            readiness: Readiness::default(),
            backend: Backend::Memory,
            tap: None,
            gate: None,
            node_tag,
            rooms: DashMap::new(),
            conns: DashMap::new(),
            next_conn: AtomicU64::new(1),
            next_message: AtomicU64::new(1),
            next_room: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            ping: Frame::new(OpCode::Ping, b""),
            flush_lists: (0..flush_list_count(config))
                .map(|_| FlushList::default())
                .collect(),
            metrics: Metrics::new(),
            history: HistoryBudget::with_persons(
                HistoryLimits {
                    count: config.history,
                    room_bytes: config.history_room_bytes,
                    total_bytes: config.history_total_bytes,
                    // A quarter of the outbound cap at most: a `joined` must fit beside what a
                    // joiner already has queued (the read pause keeps that under a quarter too).
                    joined_bytes: config
                        .joined_history_bytes
                        .min(config.max_outbound_bytes / 4),
                },
                config.auth_secret.is_some() || config.auth_public_key.is_some(),
            ),
            sources: Sources::new(SourceLimits {
                message: Rate::new(config.ip_message_rate, config.ip_message_burst),
                command: Rate::new(config.ip_command_rate, config.ip_command_burst),
                rooms: config.ip_rooms,
            }),
            lingering: Mutex::new(VecDeque::new()),
            departures: departures::Departures::default(),
            reclaiming: Mutex::new(()),
            rooms_refused: AtomicU64::new(0),
            rooms_evicted: AtomicU64::new(0),
            slow_consumer_log: Sampled::default(),
            rate_limit_log: Sampled::default(),
        }
    }

    /// The node's history budget.
    pub fn history_budget(&self) -> &Arc<HistoryBudget> {
        &self.history
    }

    pub fn next_message_number(&self) -> u64 {
        self.next_message.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a new connection; it gets `1001` at once if shutdown has begun.
    pub fn register(&self, peer: std::net::SocketAddr) -> Arc<Conn> {
        self.register_as(peer, None)
    }

    /// Registers a new connection authenticated as `identity` (see [`Hub::register`]).
    pub fn register_as(&self, peer: std::net::SocketAddr, identity: Option<Identity>) -> Arc<Conn> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::with_identity(
            id,
            format!("{}-{id}", self.node_tag).into(),
            peer,
            identity,
            self.sources.get(peer.ip()),
        ));
        self.conns.insert(id, conn.clone());
        self.stats
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        if self.shutting_down.load(Ordering::Acquire) {
            conn.outbox.close(going_away());
        }
        conn
    }

    pub fn unregister(&self, conn: &Conn) {
        self.conns.remove(&conn.id);
        self.stats
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The open connection with this id (the number after the node tag in its `clientId`).
    pub fn connection(&self, id: u64) -> Option<Arc<Conn>> {
        self.conns.get(&id).map(|c| c.value().clone())
    }

    /// Calls `f` for every open connection (metrics sampling; keep `f` short: it runs under a
    /// shard's read lock).
    pub fn for_each_connection(&self, mut f: impl FnMut(&Conn)) {
        for conn in self.conns.iter() {
            f(conn.value());
        }
    }

    pub fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| r.value().clone())
    }

    /// Rooms in memory; O(shards), not O(rooms): `/metrics` reads it on every scrape.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Rooms with their member counts (for the admin view and tests).
    pub fn rooms(&self) -> Vec<(Arc<str>, usize)> {
        self.rooms
            .iter()
            .map(|r| (r.key().clone(), r.value().member_count()))
            .collect()
    }

    /// Joins `conn` to the room called `name`, creating the room if needed (within the
    /// node's and the address's room budgets), with the room's own presence: the memory
    /// backend's join.
    pub fn join(
        &self,
        conn: &Arc<Conn>,
        name: &str,
        request: JoinRequest<'_>,
    ) -> Result<(Arc<Room>, JoinOutcome), RoomRefusal> {
        loop {
            let room = self.room_or_create(conn, name)?;
            match room.join(self, conn, request, Presence::Room) {
                JoinOutcome::Retired => continue,
                outcome => return Ok((room, outcome)),
            }
        }
    }

    /// The live room called `name`, or a new one charged to `conn`'s address. Its epoch is
    /// made up here; a backend that keeps the log elsewhere replaces it with its own.
    pub(crate) fn room_or_create(&self, conn: &Conn, name: &str) -> Result<Arc<Room>, RoomRefusal> {
        // Clone the room out and let the shard lock go before taking the room's lock: the
        // shard lock is only ever held briefly and never while a room is locked, except by
        // `housekeeping`'s retain, which takes them in the same order.
        if let Some(room) = self.rooms.get(name).map(|r| r.value().clone()) {
            if !room.is_retired() {
                return Ok(room);
            }
            // Retired but not yet swept by housekeeping: sweep it now and make a new one.
            self.rooms.remove_if(name, |_, r| Arc::ptr_eq(r, &room));
        }
        // The budgets are checked before the map's entry is taken: making room locks other
        // rooms, which must not happen under a shard lock. Racing creators can pass the node's
        // limit by at most one room each.
        if self.rooms.len() >= self.limits.max_rooms && !self.evict_lingering_room() {
            self.rooms_refused.fetch_add(1, Ordering::Relaxed);
            return Err(RoomRefusal::NodeFull);
        }
        // A durable store's read happens here, outside every lock, once per room opened.
        let n = self.next_room.fetch_add(1, Ordering::Relaxed);
        let made_up: Arc<str> = format!("{:016x}", random_u64() ^ n.rotate_left(32)).into();
        let life = match self
            .backend
            .life_of(name, &made_up, self.history.limits.count)
        {
            Ok(life) => life,
            Err(unavailable) => {
                warn!(room = name, error = %unavailable.0, "cannot open the room's stored log");
                return Err(RoomRefusal::Unavailable);
            }
        };
        let Some(charge) = self.sources.charge_room(&conn.source) else {
            self.rooms_refused.fetch_add(1, Ordering::Relaxed);
            return Err(RoomRefusal::SourceFull);
        };
        let room = self
            .rooms
            .entry(Arc::from(name))
            .or_insert_with(|| {
                let room =
                    Room::new_shared(Arc::from(name), made_up, self.history.clone(), Some(charge));
                if let Some(life) = life {
                    // Not shared yet: its lock is free.
                    room.reset_log(life.epoch, life.seq, &life.newest);
                    room.remember_sends(self, life.sends);
                }
                room
            })
            .value()
            .clone();
        Ok(room)
    }

    /// Starts shutdown: every connection is asked to close with 1001 after what it has queued.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.readiness.set_unready("shutdown", "shutting down");
        for conn in self.conns.iter() {
            conn.outbox.close(going_away());
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Pushes a frame to one connection and does what the outcome asks: enlist it for the
    /// flusher, or count a slow consumer. Replies and errors, and every member of a fan-out.
    pub fn push_to(&self, conn: &Arc<Conn>, frame: &bytes::Bytes, priority: Priority) -> Push {
        let push = conn
            .outbox
            .push(frame, priority, self.limits.max_outbound_bytes);
        self.after_push(conn, push)
    }

    /// [`Hub::push_to`] for the fragments of one message, queued together.
    pub fn push_parts_to<'b>(
        &self,
        conn: &Arc<Conn>,
        parts: impl Iterator<Item = &'b bytes::Bytes> + Clone,
        priority: Priority,
    ) -> Push {
        let push = conn
            .outbox
            .push_parts(parts, priority, self.limits.max_outbound_bytes);
        self.after_push(conn, push)
    }

    fn after_push(&self, conn: &Arc<Conn>, push: Push) -> Push {
        match push {
            Push::Enlist => self.enlist(conn),
            Push::Overflow => self.note_slow_consumer(conn),
            Push::Queued | Push::Dropped | Push::Closed => {}
        }
        push
    }

    /// Puts a connection whose outbox answered [`Push::Enlist`] on its flush list.
    pub fn enlist(&self, conn: &Arc<Conn>) {
        let lists = self.flush_lists.len() as u64;
        if let Some(list) = self.flush_lists.get((conn.id % lists.max(1)) as usize) {
            list.enlist(conn);
        }
    }

    /// Puts a room with events pending for this round on a flush list.
    pub fn enlist_room(&self, room: &Arc<Room>) {
        let lists = self.flush_lists.len();
        let slot = (Arc::as_ptr(room) as usize >> 6) % lists.max(1);
        if let Some(list) = self.flush_lists.get(slot) {
            list.enlist_room(room.clone());
        }
    }

    /// How many flush lists (and flusher tasks) there are.
    pub fn flush_list_count(&self) -> usize {
        self.flush_lists.len()
    }

    pub fn note_slow_consumer(&self, conn: &Conn) {
        self.stats
            .slow_consumer_closes
            .fetch_add(1, Ordering::Relaxed);
        if let Some(unlogged) = self.slow_consumer_log.due() {
            warn!(peer = %conn.peer, client = %conn.client_id, code = CloseCode::SlowConsumer.code(), unlogged, "closing slow consumer (at most one line a second; `unlogged` counts the others since the last line)");
        }
    }
}

/// One flush list per worker thread: flushers then spread over the workers like the
/// connections they write.
fn flush_list_count(config: &Config) -> usize {
    crate::config::worker_count(config.worker_threads)
}

fn going_away() -> CloseRequest {
    CloseRequest {
        code: CloseCode::GoingAway.code(),
        reason: "server shutting down",
        discard: false,
    }
}
