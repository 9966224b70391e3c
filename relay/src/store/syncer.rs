//! The disk's side of durability, off the writer thread: with `--fsync interval` the
//! write-ahead log is synced every `--fsync-interval`, and in every mode the log is
//! checkpointed into the database file about once a second.
//!
//! Both wait for the disk (an fsync, a checkpoint's copy and syncs take milliseconds, more on
//! a busy disk); on the writer they would hold up every message queued behind them, which is
//! exactly the tail latency a chat notices. SQLite lets a checkpoint run beside the writer
//! (`PASSIVE` never blocks it), and an fsync of the log's file through a descriptor of its own
//! flushes whatever the writer has appended to it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::warn;

use crate::config::Fsync;

/// How often the log is copied into the database file: keeps the log (and a restart's
/// replay of it) to about a second of messages.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Syncer {
    /// A read-write connection of its own: a checkpoint needs one.
    pub(super) db: Connection,
    pub(super) wal: PathBuf,
    pub(super) fsync: Fsync,
    pub(super) interval: Duration,
}

impl Syncer {
    pub(super) fn run(self, stop: Receiver<()>) {
        let tick = match self.fsync {
            Fsync::Interval => self.interval.min(CHECKPOINT_EVERY),
            Fsync::Always | Fsync::Off => CHECKPOINT_EVERY,
        };
        let mut wal: Option<File> = None;
        let mut last_checkpoint = Instant::now();
        // Until told to stop (or the store is gone).
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(tick) {
            if self.fsync == Fsync::Interval {
                let synced = match &wal {
                    Some(file) => file.sync_data(),
                    None => File::open(&self.wal).and_then(|file| {
                        let synced = file.sync_data();
                        wal = Some(file);
                        synced
                    }),
                };
                if let Err(err) = synced {
                    wal = None;
                    if err.kind() != std::io::ErrorKind::NotFound {
                        warn!(error = %err, "could not sync the history store's log");
                    }
                }
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = Instant::now();
                if let Err(err) =
                    self.db
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                {
                    warn!(error = %err, "could not checkpoint the history store's log");
                }
            }
        }
    }
}
