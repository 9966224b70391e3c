//! The durable history of a single node (`--data-dir`): every room's messages in an embedded
//! SQLite database, so a restart (a deploy, a crash, `kill -9`) keeps each room's epoch, seq
//! and history. The chat core sees it as a [`Journal`]; cluster mode keeps using Redis.
//!
//! - [`schema`]: the file, its lock, its schema and the checks at start-up.
//! - `writer`: the one thread that writes: it takes the messages rooms reserved, stores a
//!   round's worth in one transaction, and only then appends them to their rooms, which
//!   delivers them. That order is the promise: a message anyone has seen is stored.
//! - `retention`: trims rooms past `--retain-messages` or `--retain-age`, a chunk at a time
//!   between the writer's transactions.
//!
//! - `reader`: opening a room (its life and newest messages, once per room opened, on the
//!   joining connection's thread) and scroll-back past the in-memory tail (on the blocking
//!   pool), each through a read-only connection of its own.

mod reader;
mod retention;
pub mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::chat::backend::{Busy, Journal, Page, StoredLife, Unavailable};
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::room::{Reserved, Room};
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
}

/// One message on its way to the disk.
#[derive(Debug)]
struct Pending {
    room: Arc<Room>,
    message: Reserved,
    from_client: bool,
}

#[derive(Debug)]
enum Op {
    Keep(Pending),
    /// Answered once everything queued before it is stored and delivered.
    Barrier(mpsc::SyncSender<()>),
    Stop,
}

/// The writer before [`Store::start`], and its thread after.
#[derive(Debug)]
enum WriterState {
    Ready(Connection, Receiver<Op>),
    Running(JoinHandle<()>),
    Stopped,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    queue: Sender<Op>,
    /// Messages queued and not yet appended; at `capacity` new ones are refused (`Busy`).
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Room opens, on the joining connection's thread: one indexed read per room opened.
    opener: Mutex<Connection>,
    pager: reader::Pager,
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
        let opener = schema::open_reader(&dir)?;
        let pager = reader::Pager::new(schema::open_reader(&dir)?);
        let (queue, rx) = mpsc::channel();
        let settings = Settings {
            fsync: config.fsync,
            fsync_interval: config.fsync_interval,
            wal: PathBuf::from(format!("{}-wal", schema::db_path(&dir).display())),
            retain_messages: config.retain_messages,
            retain_age: config.retain_age,
            retain_interval: config.retain_interval,
        };
        Ok(Self {
            dir,
            queue,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: config.store_queue.max(1),
            opener: Mutex::new(opener),
            pager,
            writer: Mutex::new(WriterState::Ready(db, rx)),
            settings,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Where the data lives (for the start-up line).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the writer thread, which appends stored messages to `hub`'s rooms.
    pub fn start(&self, hub: Arc<Hub>) -> std::io::Result<()> {
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let WriterState::Ready(..) = &*state else {
            return Ok(());
        };
        let WriterState::Ready(db, rx) = std::mem::replace(&mut *state, WriterState::Stopped)
        else {
            return Ok(());
        };
        self.pager.set_hub(&hub);
        let queued = self.queued.clone();
        let settings = self.settings.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(db, rx, hub, queued, settings))?;
        *state = WriterState::Running(handle);
        Ok(())
    }

    /// Stores and delivers everything queued, then stops the writer (blocking: call off the
    /// event loop).
    pub fn stop(&self) {
        let mut state = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let WriterState::Running(handle) = std::mem::replace(&mut *state, WriterState::Stopped) {
            let _ = self.queue.send(Op::Stop);
            if handle.join().is_err() {
                tracing::error!("the history store's writer thread panicked");
            }
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

    /// Waits until every message queued before the call is stored and delivered (blocking).
    pub fn barrier(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.queue.send(Op::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

impl Journal for Store {
    fn open(&self, name: &str, newest: usize) -> Result<Option<StoredLife>, Unavailable> {
        let db = self.opener.lock().unwrap_or_else(PoisonError::into_inner);
        reader::life(&db, name, newest).map_err(|e| Unavailable(e.to_string()))
    }

    fn keep(&self, room: &Arc<Room>, message: Reserved, from_client: bool) -> Result<(), Busy> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let pending = Pending {
            room: room.clone(),
            message,
            from_client,
        };
        if self.queue.send(Op::Keep(pending)).is_err() {
            // The writer has stopped (shutdown): nothing more is stored.
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        Ok(())
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn page(&self, conn: &Arc<Conn>, room: &str, page: Page) -> Result<(), Busy> {
        self.pager.page(conn, room, page)
    }
}
