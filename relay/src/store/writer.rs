//! The writer thread: a round's messages in one transaction, then their delivery.
//!
//! A thread of its own, not a task: a commit (and with `--fsync always`, its fsync) blocks,
//! and must not hold up a runtime worker that serves sockets. Messages arrive in the order
//! rooms reserved them; each transaction takes everything waiting (up to [`MAX_BATCH`]), so
//! under load a commit carries many messages and costs one log append, and when idle a
//! message waits only for its own.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode};
use tracing::{error, info, warn};

use super::retention::Retention;
use super::{Op, Pending, Settings};
use crate::chat::hub::Hub;
use crate::chat::room::log::Order;
use crate::config::Fsync;

/// Messages in one transaction at most: bounds the delay of the first one in a burst.
const MAX_BATCH: usize = 4096;

struct Writer {
    db: Connection,
    hub: Arc<Hub>,
    queued: Arc<AtomicUsize>,
    settings: Settings,
    /// Whether the last commit failed (`/readyz` says so until one succeeds).
    failing: bool,
    /// Committed since the last sync of the write-ahead log (`--fsync interval`).
    unsynced: bool,
    last_sync: Instant,
    wal: Option<File>,
}

pub(super) fn run(
    db: Connection,
    rx: Receiver<Op>,
    hub: Arc<Hub>,
    queued: Arc<AtomicUsize>,
    settings: Settings,
) {
    let mut retention = Retention::new(&settings);
    let mut writer = Writer {
        db,
        hub,
        queued,
        settings,
        failing: false,
        unsynced: false,
        last_sync: Instant::now(),
        wal: None,
    };
    let mut batch: Vec<Pending> = Vec::with_capacity(64);
    let mut barriers = Vec::new();
    let mut stop = false;
    while !stop {
        let wait = retention
            .due_in()
            .min(writer.sync_due_in())
            .max(Duration::from_millis(1));
        let first = match rx.recv_timeout(wait) {
            Ok(op) => Some(op),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Op::Stop),
        };
        let mut next = first;
        while let Some(op) = next.take() {
            match op {
                Op::Keep(pending) => batch.push(pending),
                Op::Barrier(done) => barriers.push(done),
                Op::Stop => {
                    stop = true;
                    break;
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            writer.store_and_deliver(&mut batch);
        }
        for done in barriers.drain(..) {
            let _ = done.send(());
        }
        writer.sync_if_due(false);
        // Retention only between batches, a chunk at a time, so it never holds up delivery
        // for long.
        if batch.is_empty() && !stop {
            retention.step(&writer.db, &writer.hub);
        }
    }
    writer.sync_if_due(true);
    // Everything into the database file itself, so the file alone is the whole history
    // (a copy, a backup) and the next start has no log to replay.
    if let Err(err) = writer
        .db
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    {
        warn!(error = %err, "could not checkpoint the history store at shutdown");
    }
    info!("history store writer stopped");
}

impl Writer {
    fn store_and_deliver(&mut self, batch: &mut Vec<Pending>) {
        match self.store(batch) {
            Ok(unsaved) => {
                let stats = &self.hub.stats;
                stats
                    .store_written
                    .fetch_add((batch.len() - unsaved) as u64, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    self.hub.readiness.set_ready("store");
                    info!("the history store is writable again");
                }
                self.unsynced = true;
            }
            Err(err) => self.failed(batch, &err),
        }
        for pending in batch.drain(..) {
            self.deliver(pending);
        }
    }

    /// One transaction for the batch; returns how many rows it could not insert (a
    /// constraint, which only a damaged file or a bug causes: the rest is still stored).
    fn store(&mut self, batch: &[Pending]) -> rusqlite::Result<usize> {
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut unsaved = 0;
        {
            // One upsert per room per batch: the room's id, and its latest seq and epoch so
            // a restart carries the room's life on.
            let mut last: HashMap<&str, (&str, u64)> = HashMap::new();
            for p in batch {
                let entry = last.entry(&p.room.name).or_insert((&p.message.epoch, 0));
                entry.1 = entry.1.max(p.message.seq);
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO rooms (name, epoch, last_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, \
                 last_seq = max(last_seq, excluded.last_seq) RETURNING id",
            )?;
            let mut ids: HashMap<&str, i64> = HashMap::with_capacity(last.len());
            for (name, (epoch, seq)) in &last {
                let id: i64 = upsert.query_row(params![name, epoch, *seq as i64], |r| r.get(0))?;
                ids.insert(name, id);
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (room_id, seq, ts, event) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for p in batch {
                let Some(&id) = ids.get(&*p.room.name) else {
                    continue;
                };
                let event = std::str::from_utf8(p.message.frame.payload()).unwrap_or_default();
                let row = params![
                    id,
                    p.message.seq as i64,
                    p.message.timestamp_ms as i64,
                    event
                ];
                match insert.execute(row) {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == ErrorCode::ConstraintViolation =>
                    {
                        unsaved += 1;
                        warn!(room = %p.room.name, seq = p.message.seq, "a message with this seq is already stored; the new one is delivered but not stored");
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        tx.commit()?;
        if unsaved > 0 {
            self.hub
                .stats
                .store_unsaved
                .fetch_add(unsaved as u64, Ordering::Relaxed);
        }
        Ok(unsaved)
    }

    /// The batch could not be stored (disk full, I/O error): its messages are still
    /// delivered (live traffic goes on) and each room's lost seqs are reported.
    fn failed(&mut self, batch: &[Pending], err: &rusqlite::Error) {
        let stats = &self.hub.stats;
        stats.store_write_errors.fetch_add(1, Ordering::Relaxed);
        stats
            .store_unsaved
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut rooms: Vec<(&str, u64, u64)> = Vec::new();
        for p in batch {
            match rooms.iter_mut().find(|(name, ..)| *name == &*p.room.name) {
                Some(range) => range.2 = p.message.seq,
                None => rooms.push((&p.room.name, p.message.seq, p.message.seq)),
            }
        }
        let lost: Vec<String> = rooms
            .iter()
            .map(|(name, from, to)| format!("{name:?} seq {from}-{to}"))
            .collect();
        error!(error = %err, messages = batch.len(), lost = %lost.join(", "), "could not store messages: they are delivered, but a restart will not have them");
        if !self.failing {
            self.failing = true;
            self.hub
                .readiness
                .set_unready("store", format!("the history store cannot write: {err}"));
        }
    }

    fn deliver(&self, pending: Pending) {
        let Pending {
            room,
            message,
            from_client,
        } = pending;
        let order = Order::Assigned {
            epoch: &message.epoch,
            seq: message.seq,
            force: false,
        };
        match room.append(&self.hub, order, Some(message.probe), |_| &message.frame) {
            Ok(appended) if from_client => {
                let stats = &self.hub.stats;
                stats.messages_published.fetch_add(1, Ordering::Relaxed);
                stats
                    .deliveries
                    .fetch_add(appended.delivered, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(refused) => {
                warn!(room = %room.name, seq = message.seq, ?refused, "a stored message was not taken by its room")
            }
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    fn sync_due_in(&self) -> Duration {
        if self.settings.fsync == Fsync::Interval && self.unsynced {
            self.settings
                .fsync_interval
                .saturating_sub(self.last_sync.elapsed())
        } else {
            Duration::from_secs(3600)
        }
    }

    /// `--fsync interval`: syncs the write-ahead log once the interval has passed since the
    /// last sync (`last`: at shutdown, whatever is left).
    fn sync_if_due(&mut self, last: bool) {
        if self.settings.fsync != Fsync::Interval || !self.unsynced {
            return;
        }
        if !last && self.last_sync.elapsed() < self.settings.fsync_interval {
            return;
        }
        self.last_sync = Instant::now();
        self.unsynced = false;
        // fsync on any descriptor of the file flushes all of its dirty pages.
        let synced = match &self.wal {
            Some(file) => file.sync_data(),
            None => File::open(&self.settings.wal).and_then(|file| {
                let synced = file.sync_data();
                self.wal = Some(file);
                synced
            }),
        };
        if let Err(err) = synced {
            // A checkpoint may have removed the log; open it afresh next time.
            self.wal = None;
            if err.kind() != std::io::ErrorKind::NotFound {
                warn!(error = %err, "could not sync the history store's log");
            }
        }
    }
}
