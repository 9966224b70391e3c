//! The durable history of a single node (`--data-dir`): every room's messages in an embedded
//! SQLite database, so a restart (a deploy, a crash, `kill -9`) keeps each room's epoch, seq
//! and history. The chat core sees it as a [`Journal`]; cluster mode keeps using Redis.
//!
//! - [`schema`]: the file, its lock, its schema and the checks at start-up.
//! - `inbox`: what the event loop queues for the writer during a scheduler round, handed
//!   over in one piece at the round's end.
//! - `writer`: the one thread that writes: it takes the messages rooms reserved, stores a
//!   round's worth in one transaction, and only then appends them to their rooms, which
//!   delivers them. That order is the promise: a message anyone has seen is stored.
//! - `syncer`: fsyncs the log every `--fsync-interval` and checkpoints it into the database
//!   file, on a thread of its own so the writer never waits for the disk's syncs; the writer
//!   copies only what a checkpoint under load left behind, so that the log starts over.
//! - `retention`: trims rooms past `--retain-messages` or `--retain-age`, a chunk at a time
//!   between the writer's transactions.
//! - `rising`: numbers that only rise (read positions, webhook cursors), as the writer
//!   takes them between batches and writes them behind the messages.
//! - `reads`: read positions (the `reads` table), written by the writer behind the rooms and
//!   read back at a join when the room does not hold the person's position.
//! - `reader`: opening a room (its life and newest messages, once per room opened, on the
//!   joining connection's thread) and scroll-back past the in-memory tail (on the blocking
//!   pool), each through a read-only connection of its own.
//! - `feed`: the log as the webhooks' feed (a [`LogFeed`]): each room's events after the
//!   cursor the writer keeps in `webhook_cursors`.

mod feed;
mod inbox;
mod reader;
mod reads;
mod retention;
mod rising;
pub mod schema;
mod syncer;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::chat::backend::{Busy, Journal, Page, StoredLife, Unavailable};
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::room::{Reserved, Room};
use crate::chat::tap::{FeedPage, LogFeed};
use crate::config::{Config, Fsync};

/// Why the store could not start: each names the path and, through `--data-dir`, the flag.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--data-dir {path}: the directory {what}: {detail}")]
    Dir {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("--data-dir {0}: another relay is using it (one relay per data directory)")]
    InUse(PathBuf),
    #[error("--data-dir: {path} {what}: {detail}")]
    File {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "--data-dir: {path} is damaged ({detail}); the relay will not overwrite it: restore it \
         from a backup, or move it away to start with an empty history"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("--data-dir: {0} is not a chatrelay database; point --data-dir at another directory")]
    Foreign(PathBuf),
    #[error(
        "--data-dir: {path} was written by a newer chatrelay (schema {version}; this one knows \
         {known}): run that version, or point --data-dir at another directory"
    )]
    Newer {
        path: PathBuf,
        version: i64,
        known: i64,
    },
}

/// A count, seq or time as SQLite's signed 64-bit integer: values past `i64::MAX` (flags
/// meaning "unbounded", far-future times) saturate rather than wrap.
fn sql_int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

impl From<StoreError> for crate::error::Error {
    fn from(err: StoreError) -> Self {
        Self::Store(Box::new(err))
    }
}

impl StoreError {
    fn dir(path: &Path, what: &'static str, detail: &dyn std::fmt::Display) -> Self {
        Self::Dir {
            path: path.to_owned(),
            what,
            detail: detail.to_string(),
        }
    }

    fn file(path: &Path, what: &'static str, detail: &dyn std::fmt::Display) -> Self {
        Self::File {
            path: path.to_owned(),
            what,
            detail: detail.to_string(),
        }
    }
}

/// What the writer needs besides its connection.
#[derive(Debug, Clone)]
struct Settings {
    fsync: Fsync,
    fsync_interval: Duration,
    wal: PathBuf,
    retain_messages: u64,
    retain_age: Duration,
    retain_interval: Duration,
    dedupe_window: Duration,
}

/// One message on its way to the disk.
#[derive(Debug)]
struct Pending {
    room: Arc<Room>,
    message: Reserved,
    from_client: bool,
}

/// Work for the writer, done in the order it was queued.
enum Op {
    Keep(Pending),
    /// A read position, coalesced per (room, person) per batch and written behind the room.
    Read(reads::Read),
    /// A webhook cursor (`feed`), coalesced per room per batch; no order with messages.
    Cursor(feed::Cursor),
    /// Runs once everything queued before it is stored and appended (a leave, so that the
    /// leaver still gets the messages it sent before it left).
    Then(Box<dyn FnOnce(&Hub) + Send>),
    /// Answered once everything queued before it is stored and appended.
    Barrier(mpsc::SyncSender<()>),
    Stop,
    /// One scheduler round's ops, in order ([`inbox`]).
    Batch(Vec<Op>),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Keep(p) => f.debug_tuple("Keep").field(p).finish(),
            Op::Read(r) => f.debug_tuple("Read").field(r).finish(),
            Op::Cursor(c) => f.debug_tuple("Cursor").field(c).finish(),
            Op::Then(_) => f.write_str("Then(..)"),
            Op::Barrier(_) => f.write_str("Barrier"),
            Op::Stop => f.write_str("Stop"),
            Op::Batch(ops) => f.debug_tuple("Batch").field(&ops.len()).finish(),
        }
    }
}

/// Rooms whose latest delivered messages a failed transaction left off the disk: their
/// highest such seq and epoch. A room reopened from disk carries on above it (so no seq is
/// handed out twice), and the next commit writes it into `rooms.last_seq`.
type Unsaved = Arc<Mutex<HashMap<Arc<str>, Life>>>;

/// A room's epoch and a seq in it.
type Life = (Arc<str>, u64);

/// The writer (and the syncer's connection) before [`Store::start`], and their threads after.
#[derive(Debug)]
enum WriterState {
    Ready {
        db: Connection,
        rx: Receiver<Op>,
        syncer: Connection,
    },
    Running {
        writer: JoinHandle<()>,
        syncer: JoinHandle<()>,
        stop_syncer: mpsc::Sender<()>,
    },
    Stopped,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    inbox: Arc<inbox::Inbox>,
    /// Messages queued and not yet appended; at `capacity` new ones are refused (`Busy`).
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Set by [`Store::stop`]: nothing more is taken.
    stopping: AtomicBool,
    unsaved: Unsaved,
    /// Room opens, on the joining connection's thread: one indexed read per room opened.
    /// One connection per runtime worker, so opens on different workers never queue.
    openers: Vec<Mutex<Connection>>,
    pager: reader::Pager,
    /// The webhooks' reads (`feed`): opened at the first one.
    feed: Mutex<Option<Connection>>,
    writer: Mutex<WriterState>,
    settings: Settings,
    /// The data directory's lock, held until the writer stops (or the process ends).
    lock: Mutex<Option<File>>,
}

impl Store {
    /// Opens (or creates) the store under `--data-dir`; refuses a directory in use, a
    /// newer, foreign or damaged database, and one it cannot write.
    pub fn open(config: &Config) -> Result<Self, StoreError> {
        let dir = config.data_dir.clone();
        let lock = schema::lock_dir(&dir)?;
        let db = schema::open_writer(&dir, config.fsync, config.store_max_bytes)?;
        let syncer = schema::open_syncer(&dir)?;
        let openers = (0..crate::config::worker_count(config.worker_threads).clamp(1, 8))
            .map(|_| schema::open_reader(&dir).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let pager = reader::Pager::new(&dir)?;
        let (queue, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let settings = Settings {
            fsync: config.fsync,
            fsync_interval: config.fsync_interval,
            wal: PathBuf::from(format!("{}-wal", schema::db_path(&dir).display())),
            retain_messages: config.retain_messages,
            retain_age: config.retain_age,
            retain_interval: config.retain_interval,
            dedupe_window: config.dedupe_window,
        };
        Ok(Self {
            dir,
            inbox: Arc::new(inbox::Inbox::new(queue, queued.clone())),
            queued,
            capacity: config.store_queue.max(1),
            stopping: AtomicBool::new(false),
            unsaved: Arc::default(),
            openers,
            pager,
            feed: Mutex::new(None),
            writer: Mutex::new(WriterState::Ready { db, rx, syncer }),
            settings,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Where the data lives (for the start-up line).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the writer thread, which appends stored messages to `hub`'s rooms. It holds the
    /// hub weakly: the hub owns the store, and a relay dropped without [`Store::stop`] (its
    /// serve future dropped) must still let the writer end and the directory go.
    pub fn start(&self, hub: &Arc<Hub>) -> std::io::Result<()> {
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let WriterState::Ready { .. } = &*state else {
            return Ok(());
        };
        let WriterState::Ready { db, rx, syncer } =
            std::mem::replace(&mut *state, WriterState::Stopped)
        else {
            return Ok(());
        };
        self.pager.set_hub(hub);
        self.inbox.set_hub(hub);
        let behind = Arc::new(AtomicBool::new(false));
        let writer = writer::Writer::new(
            db,
            Arc::downgrade(hub),
            self.queued.clone(),
            self.unsaved.clone(),
            self.settings.clone(),
            behind.clone(),
        );
        let syncer = syncer::Syncer {
            db: syncer,
            wal: self.settings.wal.clone(),
            fsync: self.settings.fsync,
            interval: self.settings.fsync_interval,
            behind,
        };
        let (stop_syncer, syncer_stop) = mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("store-syncer".into())
            .spawn(move || syncer.run(syncer_stop))?;
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))?;
        // No runtime: the store benchmark, which hands over with `barrier`.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.inbox.clone().pump());
        }
        *state = WriterState::Running {
            writer,
            syncer,
            stop_syncer,
        };
        Ok(())
    }

    /// Stores and appends everything queued, then stops the writer and lets the directory go
    /// (blocking: call off the event loop). Messages offered after it are refused.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let WriterState::Running {
            writer,
            syncer,
            stop_syncer,
        } = std::mem::replace(&mut *state, WriterState::Stopped)
        {
            // The syncer first: the writer's last checkpoint syncs everything, and two
            // checkpoints cannot run at once.
            let _ = stop_syncer.send(());
            if syncer.join().is_err() {
                tracing::error!("the history store's syncer thread panicked");
            }
            self.inbox.hand_over(Some(Op::Stop));
            if writer.join().is_err() {
                tracing::error!("the history store's writer thread panicked");
            }
            self.inbox.close();
        }
        // Nothing writes any more: the next relay on this directory may start (in this
        // process too, while connections still hold this one's hub).
        drop(
            self.lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// Waits until every message queued before the call is stored and appended (blocking);
    /// at once when the writer is not running.
    pub fn barrier(&self) {
        let running = matches!(
            *self.writer.lock().unwrap_or_else(PoisonError::into_inner),
            WriterState::Running { .. }
        );
        let (tx, rx) = mpsc::sync_channel(1);
        if running && self.inbox.hand_over(Some(Op::Barrier(tx))) {
            let _ = rx.recv();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The pump holds the writer's channel open; ending it lets a writer whose relay was
        // dropped without `stop` see the channel close and end (see `Store::start`).
        self.inbox.close();
    }
}

impl Journal for Store {
    fn open(&self, name: &str, newest: usize) -> Result<Option<StoredLife>, Unavailable> {
        let unsaved = self
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        let db = reader::free_connection(&self.openers, 0);
        reader::life(&db, name, newest, unsaved, self.settings.dedupe_window)
            .map_err(|e| Unavailable(e.to_string()))
    }

    fn keep(&self, room: &Arc<Room>, message: Reserved, from_client: bool) -> Result<(), Busy> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Busy);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let pending = Pending {
            room: room.clone(),
            message,
            from_client,
        };
        if self.inbox.push(Op::Keep(pending)).is_err() {
            // The writer is gone: nothing more is stored.
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        Ok(())
    }

    fn after_queued(&self, hub: &Hub, then: Box<dyn FnOnce(&Hub) + Send>) {
        if self.stopping.load(Ordering::Acquire) {
            // Stopping: nothing queued is left to wait for.
            return then(hub);
        }
        if let Err(Op::Then(then)) = self.inbox.push(Op::Then(then)) {
            // The writer is gone: nothing queued is left to wait for.
            then(hub);
        }
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn lookup(&self, room: &str, seq: u64) -> Result<Option<String>, Unavailable> {
        let db = reader::free_connection(&self.openers, 0);
        reader::event(&db, room, seq).map_err(|e| Unavailable(e.to_string()))
    }

    fn page(&self, conn: &Arc<Conn>, room: &str, page: Page) -> Result<(), Busy> {
        self.pager.page(conn, room, page)
    }

    fn keep_read(&self, room: &Arc<str>, person: &str, seq: u64) {
        // Not counted in `queued`: never refused (a client's reads are bounded by its
        // command rate), and a stopped writer loses only what the room still holds.
        let _ = self.inbox.push(Op::Read(reads::Read {
            room: room.clone(),
            person: person.into(),
            seq,
        }));
    }

    fn read_position(&self, room: &str, person: &str) -> Result<u64, Unavailable> {
        let db = reader::free_connection(&self.openers, 0);
        reads::position(&db, room, person).map_err(|e| Unavailable(e.to_string()))
    }
}

impl Store {
    /// `read` with the feed's connection, opened on first use.
    fn with_feed<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Unavailable> {
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        let db = match &mut *feed {
            Some(db) => db,
            empty => empty
                .insert(schema::open_reader(&self.dir).map_err(|e| Unavailable(e.to_string()))?),
        };
        read(db).map_err(|e| Unavailable(e.to_string()))
    }
}

impl LogFeed for Store {
    fn behind(&self) -> Result<Vec<Arc<str>>, Unavailable> {
        self.with_feed(feed::behind)
    }

    fn read_after(
        &self,
        room: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<FeedPage, Unavailable> {
        self.with_feed(|db| feed::read_after(db, room, after, limit))
    }

    fn keep_cursor(&self, room: &Arc<str>, seq: u64) {
        // A stopped writer keeps none: the next start redelivers from the last one stored.
        let _ = self.inbox.push(Op::Cursor(feed::Cursor {
            room: room.clone(),
            seq,
        }));
    }
}
