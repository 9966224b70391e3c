//! The writer thread: whatever is waiting, in one transaction, then its delivery.
//!
//! A thread of its own, not a task: a commit (and with `--fsync always`, its fsync) blocks,
//! and must not hold up a runtime worker that serves sockets. Messages arrive in the order
//! rooms reserved them; each transaction takes everything waiting (up to [`MAX_BATCH`]), so
//! under load a commit carries many messages and costs one log append, and when idle a
//! message waits only for its own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tracing::{error, info, warn};

use super::retention::Retention;
use super::{feed, reads, syncer};
use super::{sql_int, Life, Op, Pending, Settings, Unsaved};
use crate::chat::hub::Hub;
use crate::chat::room::log::Order;
use crate::protocol::event;

/// Messages in one transaction at most: bounds the delay of the first one in a burst.
const MAX_BATCH: usize = 4096;
/// Room ids the writer remembers at most (then it forgets them all and learns them again):
/// about 100 bytes each.
const MAX_ROOM_IDS: usize = 100_000;

pub(super) struct Writer {
    db: Connection,
    /// Weak: the hub owns the store (see `Store::start`).
    hub: Weak<Hub>,
    queued: Arc<AtomicUsize>,
    unsaved: Unsaved,
    settings: Settings,
    /// Whether the last commit failed (`/readyz` says so until one succeeds).
    failing: bool,
    /// Set by the syncer after a checkpoint that found frames ([`syncer::catch_up`]).
    behind: Arc<AtomicBool>,
    /// Rooms' row ids, as committed: rooms are never deleted and only this thread adds them,
    /// so a known id stays right for the run.
    room_ids: HashMap<Arc<str>, i64>,
}

impl Writer {
    pub(super) fn new(
        db: Connection,
        hub: Weak<Hub>,
        queued: Arc<AtomicUsize>,
        unsaved: Unsaved,
        settings: Settings,
        behind: Arc<AtomicBool>,
    ) -> Self {
        Self {
            db,
            hub,
            queued,
            unsaved,
            settings,
            failing: false,
            behind,
            room_ids: HashMap::new(),
        }
    }

    pub(super) fn run(mut self, rx: Receiver<Op>) {
        let mut retention = Retention::new(&self.settings);
        let mut batch: Vec<Pending> = Vec::with_capacity(64);
        let mut after: Vec<Op> = Vec::new();
        let mut read_batch = reads::batch();
        let mut cursor_batch = feed::batch();
        // The rest of a round's batch (`Op::Batch`) when a transaction filled up before it.
        let mut inbox: VecDeque<Op> = VecDeque::new();
        let mut stop = false;
        while !stop {
            let wait = retention.due_in().max(Duration::from_millis(1));
            let mut next = match inbox.pop_front() {
                Some(op) => Some(op),
                None => match rx.recv_timeout(wait) {
                    Ok(op) => Some(op),
                    Err(RecvTimeoutError::Timeout) => None,
                    // The store is gone (its relay dropped without stopping it).
                    Err(RecvTimeoutError::Disconnected) => Some(Op::Stop),
                },
            };
            while let Some(op) = next.take() {
                match op {
                    Op::Batch(ops) => inbox.extend(ops),
                    Op::Keep(pending) if after.is_empty() => batch.push(pending),
                    // Positions keep no order with messages: the room's is the one that counts.
                    Op::Read(read) => read_batch.add((read.room, read.person), read.seq),
                    Op::Cursor(cursor) => cursor_batch.add(cursor.room, cursor.seq),
                    Op::Stop => {
                        stop = true;
                        break;
                    }
                    // Anything behind a leave or a barrier waits for it: order is kept.
                    op => after.push(op),
                }
                if batch.len() + after.len() + read_batch.len() + cursor_batch.len() >= MAX_BATCH {
                    break;
                }
                next = inbox.pop_front().or_else(|| rx.try_recv().ok());
            }
            let Some(hub) = self.hub.upgrade() else {
                break;
            };
            self.store_and_deliver(&hub, &mut batch);
            for op in after.drain(..) {
                match op {
                    Op::Keep(pending) => batch.push(pending),
                    Op::Read(read) => read_batch.add((read.room, read.person), read.seq),
                    Op::Cursor(cursor) => cursor_batch.add(cursor.room, cursor.seq),
                    Op::Then(then) => {
                        self.store_and_deliver(&hub, &mut batch);
                        // A join may read positions back: what it sent before is on disk.
                        read_batch.store(&mut self.db);
                        then(&hub);
                    }
                    Op::Barrier(done) => {
                        self.store_and_deliver(&hub, &mut batch);
                        read_batch.store(&mut self.db);
                        let _ = done.send(());
                    }
                    Op::Stop => stop = true,
                    // Never behind a leave: a batch is taken apart as it arrives.
                    Op::Batch(ops) => inbox.extend(ops),
                }
            }
            self.store_and_deliver(&hub, &mut batch);
            read_batch.store(&mut self.db);
            cursor_batch.store(&mut self.db);
            syncer::catch_up(&self.db, &self.behind);
            // Retention only while no message waits, a chunk at a time, so it never holds
            // up delivery for long.
            if !stop && self.queued.load(Ordering::Acquire) == 0 {
                retention.step(&self.db, &hub);
            }
        }
        // Everything into the database file itself (synced: checkpoints sync in every mode), so the file alone is the whole history
        // (a copy, a backup) and the next start has no log to replay.
        if let Err(err) = self
            .db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            warn!(error = %err, "could not checkpoint the history store at shutdown");
        }
        info!("history store writer stopped");
    }

    fn store_and_deliver(&mut self, hub: &Hub, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        match self.store(hub, batch) {
            Ok(unsaved) => {
                hub.stats
                    .store_written
                    .fetch_add((batch.len() - unsaved) as u64, Ordering::Relaxed);
                hub.stats.store_transactions.fetch_add(1, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    hub.readiness.set_ready("store");
                    info!("the history store is writable again");
                }
            }
            Err(err) => self.failed(hub, batch, &err),
        }
        crate::chat::flusher::deliver_at_once(hub, || {
            for pending in batch.drain(..) {
                self.deliver(hub, pending);
            }
        });
    }

    /// One transaction for the batch; returns how many rows it could not insert (a
    /// constraint, which only a damaged file or a bug causes: the rest is still stored).
    fn store(&mut self, hub: &Hub, batch: &[Pending]) -> rusqlite::Result<usize> {
        // Rooms a failed transaction left behind get their latest seq written now too.
        let behind: Vec<(Arc<str>, Life)> = self
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, life)| (name.clone(), life.clone()))
            .collect();
        // Ids learned in this transaction: kept only once it committed (a rolled-back
        // room's id would be handed to the next new room).
        let mut learned: Vec<(Arc<str>, i64)> = Vec::new();
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut unsaved = 0;
        {
            // One row write per room per batch: its latest seq and epoch, so a restart
            // carries the room's life on. A room whose id this run knows gets a plain update
            // by id; the others an upsert that hands the id back.
            let mut last: HashMap<&Arc<str>, (&str, u64)> = HashMap::new();
            for (name, (epoch, seq)) in &behind {
                last.insert(name, (epoch, *seq));
            }
            for p in batch {
                let entry = last.entry(&p.room.name).or_insert((&p.message.epoch, 0));
                entry.1 = entry.1.max(p.message.seq);
            }
            let mut update = tx.prepare_cached(
                "UPDATE rooms SET epoch = ?2, last_seq = max(last_seq, ?3) WHERE id = ?1",
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO rooms (name, epoch, last_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, \
                 last_seq = max(last_seq, excluded.last_seq) RETURNING id",
            )?;
            let mut ids: HashMap<&str, i64> = HashMap::with_capacity(last.len());
            for (&name, &(epoch, seq)) in &last {
                let seq = sql_int(seq);
                let id = match self.room_ids.get(&**name) {
                    Some(&id) if update.execute(params![id, epoch, seq])? == 1 => id,
                    _ => {
                        let id: i64 =
                            upsert.query_row(params![&**name, epoch, seq], |r| r.get(0))?;
                        learned.push((name.clone(), id));
                        id
                    }
                };
                ids.insert(&**name, id);
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (room_id, seq, ts, event, ref, person) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for p in batch {
                let Some(&id) = ids.get(&*p.room.name) else {
                    continue;
                };
                // The relay's own encoder wrote it: always UTF-8 (borrowed, no copy).
                let event = String::from_utf8_lossy(p.message.frame.payload());
                let (seq, ts) = (sql_int(p.message.seq), sql_int(p.message.timestamp_ms));
                let ack = p.message.ack.as_deref();
                let (reference, person) = (ack.map(|a| &*a.reference), ack.map(|a| &*a.person));
                match insert.execute(params![id, seq, ts, event, reference, person]) {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == ErrorCode::ConstraintViolation =>
                    {
                        unsaved += 1;
                        warn!(room = %p.room.name, seq = p.message.seq, "a message with this seq is already stored; the new one is delivered but not stored");
                    }
                    Err(err) => return Err(err),
                }
                if let Some((target, change)) = event::change_of(p.message.frame.payload()) {
                    revise(&tx, id, target, &change)?;
                }
            }
        }
        tx.commit()?;
        if self.room_ids.len() + learned.len() > MAX_ROOM_IDS {
            self.room_ids.clear();
        }
        self.room_ids.extend(learned);
        let mut left = self.unsaved.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, (_, seq)) in &behind {
            // Caught up, unless a later failure raised it meanwhile (it cannot: this thread
            // is the only writer; kept exact anyway).
            if left.get(name).is_some_and(|(_, now)| now == seq) {
                left.remove(name);
            }
        }
        drop(left);
        if unsaved > 0 {
            hub.stats
                .store_unsaved
                .fetch_add(unsaved as u64, Ordering::Relaxed);
        }
        Ok(unsaved)
    }

    /// The batch could not be stored (disk full, I/O error): its messages are still
    /// delivered (live traffic goes on), each room's lost seqs are reported, and the rooms
    /// are remembered so that none of their seqs is handed out twice.
    fn failed(&mut self, hub: &Hub, batch: &[Pending], err: &rusqlite::Error) {
        hub.stats.store_write_errors.fetch_add(1, Ordering::Relaxed);
        hub.stats
            .store_unsaved
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut rooms: Vec<(&str, u64, u64)> = Vec::new();
        {
            let mut unsaved = self.unsaved.lock().unwrap_or_else(PoisonError::into_inner);
            for p in batch {
                match rooms.iter_mut().find(|(name, ..)| *name == &*p.room.name) {
                    Some(range) => range.2 = p.message.seq,
                    None => rooms.push((&p.room.name, p.message.seq, p.message.seq)),
                }
                let life = unsaved
                    .entry(p.room.name.clone())
                    .or_insert_with(|| (p.message.epoch.clone(), 0));
                *life = (p.message.epoch.clone(), life.1.max(p.message.seq));
            }
        }
        let lost: Vec<String> = rooms
            .iter()
            .map(|(name, from, to)| format!("{name:?} seq {from}-{to}"))
            .collect();
        error!(error = %err, messages = batch.len(), lost = %lost.join(", "), "could not store messages: they are delivered, but a restart will not have them");
        if !self.failing {
            self.failing = true;
            hub.readiness
                .set_unready("store", format!("the history store cannot write: {err}"));
        }
    }

    fn deliver(&self, hub: &Hub, pending: Pending) {
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
        match room.append(hub, order, Some(message.probe), |_| &message.frame) {
            Ok(appended) if from_client => {
                hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
                hub.stats
                    .deliveries
                    .fetch_add(appended.delivered, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(refused) => {
                warn!(room = %room.name, seq = message.seq, ?refused, "a stored message was not taken by its room")
            }
        }
        // After its event is queued for the members (the sender among them) and, unless the
        // transaction failed (then it is logged and counted as unsaved), stored.
        if let Some(ack) = message.ack {
            hub.push_to(
                &ack.to,
                ack.frame.bytes(),
                crate::transport::outbox::Priority::Normal,
            );
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stores message `target` of room `room_id` as it is after `change` (an edit or delete
/// committed in the same transaction), so that every later read sees its current form.
fn revise(
    tx: &rusqlite::Transaction<'_>,
    room_id: i64,
    target: u64,
    change: &event::Change,
) -> rusqlite::Result<()> {
    let target = sql_int(target);
    let original: Option<String> = tx
        .prepare_cached("SELECT event FROM messages WHERE room_id = ?1 AND seq = ?2")?
        .query_row(params![room_id, target], |r| r.get(0))
        .optional()?;
    let Some(revised) = original.and_then(|o| event::revise(o.as_bytes(), change)) else {
        // Gone already (retention), or deleted before: nothing to change.
        return Ok(());
    };
    // The relay's own encoder wrote it: always UTF-8.
    let revised = String::from_utf8_lossy(revised.payload());
    tx.prepare_cached("UPDATE messages SET event = ?3 WHERE room_id = ?1 AND seq = ?2")?
        .execute(params![room_id, target, revised])?;
    Ok(())
}
