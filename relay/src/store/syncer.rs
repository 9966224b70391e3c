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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
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
    /// Set after a checkpoint that found frames: the writer copies what is left (see
    /// [`catch_up`]).
    pub(super) behind: Arc<AtomicBool>,
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
                pass(&self.db, &self.behind);
            }
        }
    }
}

/// A `PASSIVE` checkpoint on `db`: how many frames the log had when it began.
fn checkpoint(db: &rusqlite::Connection) -> rusqlite::Result<i64> {
    db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

/// The syncer's checkpoint. Whole or not, the writer may have committed meanwhile (the frame
/// counts are those of the log when the pass began), so a log with frames asks the writer to
/// catch up; after the log started over and before the next commit, that costs the writer a
/// checkpoint with nothing to copy.
fn pass(db: &rusqlite::Connection, behind: &AtomicBool) {
    match checkpoint(db) {
        Ok(frames) => {
            if frames > 0 {
                behind.store(true, Ordering::Release);
            }
        }
        Err(err) => warn!(error = %err, "could not checkpoint the history store's log"),
    }
}

/// The writer's part of a checkpoint, between two of its transactions, after each pass of the
/// syncer's over a log with frames.
///
/// SQLite starts the log over (writes it from its beginning again) only at a write
/// transaction that finds every frame copied into the database. Under steady load the writer
/// commits while the syncer's checkpoint copies, so that never held: the log grew without
/// bound (166 MB in 8 s at 10,000 msg/s), and every commit paid for new file pages. The
/// writer copies what the syncer's pass left (what was committed during it: its copy and its
/// two syncs), and nothing can commit meanwhile, so its next transaction starts the log over.
/// The cost is the writer's: that copy and, with `synchronous = NORMAL` (every `--fsync` mode
/// but `always`, which syncs every commit anyway), two syncs, of the log before it copies and of
/// the database file after, so that the frames the new log overwrites are on disk. Once a
/// second at most. If a reader (a room open, scroll-back) or the syncer held on, the syncer's
/// next pass asks again.
pub(super) fn catch_up(db: &rusqlite::Connection, behind: &AtomicBool) {
    if !behind.swap(false, Ordering::AcqRel) {
        return;
    }
    if let Err(err) = checkpoint(db) {
        warn!(error = %err, "could not checkpoint the history store's log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    /// How often the log has started over: the checkpoint sequence in its header.
    fn restarts(dir: &std::path::Path) -> u32 {
        let wal = std::fs::read(dir.join("chatrelay.sqlite3-wal")).expect("the log");
        u32::from_be_bytes([wal[12], wal[13], wal[14], wal[15]])
    }

    fn commit(db: &rusqlite::Connection, name: &str) {
        db.execute(
            "INSERT INTO rooms (name, epoch, last_seq) VALUES (?1, 'e', 0)",
            [name],
        )
        .expect("a commit");
    }

    #[test]
    fn a_commit_during_a_checkpoint_keeps_the_log_growing_until_the_writer_catches_up() {
        let dir = std::env::temp_dir().join(format!("chatrelay-syncer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let writer = schema::open_writer(&dir, Fsync::Interval, 0).expect("the writer");
        let syncer = schema::open_syncer(&dir).expect("the syncer");
        let reader = schema::open_reader(&dir).expect("a reader");
        let behind = AtomicBool::new(false);

        commit(&writer, "a");
        // A reader's snapshot stands for the writer committing while the pass copies: the
        // pass cannot copy past it, so the log keeps a frame the pass did not copy.
        reader.execute_batch("BEGIN").expect("a read");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM rooms", [], |r| r.get(0))
            .expect("a read");
        commit(&writer, "b");
        pass(&syncer, &behind);
        assert!(behind.load(Ordering::Acquire), "the pass asks the writer");
        reader.execute_batch("COMMIT").expect("the read ends");
        let before = restarts(&dir);
        commit(&writer, "c");
        assert_eq!(restarts(&dir), before, "the log goes on growing");

        catch_up(&writer, &behind);
        assert!(!behind.load(Ordering::Acquire));
        commit(&writer, "d");
        assert_eq!(restarts(&dir), before + 1, "the log starts over");

        // Not asked: nothing done, and the log grows until the next pass.
        commit(&writer, "e");
        catch_up(&writer, &behind);
        commit(&writer, "f");
        assert_eq!(restarts(&dir), before + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
