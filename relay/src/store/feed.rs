//! The stored log as a feed for the webhooks (`chat::tap::LogFeed`): each room's events after
//! the cursor in `webhook_cursors`, read on a read-only connection of its own (opened at
//! the first read, so a relay without webhooks holds none), and the cursors written by the
//! writer thread behind the messages, like read positions, so the feed never competes with
//! the writer for SQLite's write lock.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::sql_int;
use crate::chat::tap::FeedPage;

/// A cursor on its way to the disk.
#[derive(Debug)]
pub(super) struct Cursor {
    pub(super) room: Arc<str>,
    pub(super) seq: u64,
}

/// The cursors the writer took since it last wrote them: the highest per room.
#[derive(Debug, Default)]
pub(super) struct Batch {
    latest: HashMap<Arc<str>, u64>,
    /// The last write failed (logged once until one succeeds; the cursors are retried).
    failing: bool,
}

impl Batch {
    pub(super) fn len(&self) -> usize {
        self.latest.len()
    }

    pub(super) fn add(&mut self, cursor: Cursor) {
        let seq = self.latest.entry(cursor.room).or_insert(0);
        *seq = (*seq).max(cursor.seq);
    }

    /// Writes every cursor taken (one transaction); on failure they stay for the next batch
    /// (the webhooks then redeliver at most what a restart finds past the stored cursor).
    pub(super) fn store(&mut self, db: &mut Connection) {
        if self.latest.is_empty() {
            return;
        }
        match self.write(db) {
            Ok(()) => {
                self.latest.clear();
                self.failing = false;
            }
            Err(err) => {
                if !self.failing {
                    tracing::warn!(error = %err, rooms = self.latest.len(), "could not store webhook cursors; retrying with the next batch");
                }
                self.failing = true;
            }
        }
    }

    fn write(&self, db: &mut Connection) -> rusqlite::Result<()> {
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO webhook_cursors (room_id, seq) \
                 SELECT id, ?2 FROM rooms WHERE name = ?1 \
                 ON CONFLICT (room_id) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?;
            for (room, seq) in &self.latest {
                upsert.execute(params![&**room, sql_int(*seq)])?;
            }
        }
        tx.commit()
    }
}

/// The rooms whose stored log goes past their cursor.
pub(super) fn behind(db: &Connection) -> rusqlite::Result<Vec<Arc<str>>> {
    let mut rows = db.prepare_cached(
        "SELECT r.name FROM rooms r LEFT JOIN webhook_cursors c ON c.room_id = r.id \
         WHERE r.last_seq > coalesce(c.seq, 0)",
    )?;
    let names = rows.query_map([], |r| r.get::<_, String>(0))?;
    names.map(|n| n.map(Arc::from)).collect()
}

/// Up to `limit` events of the room called `name` after `after` (its cursor when `None`).
pub(super) fn read_after(
    db: &Connection,
    name: &str,
    after: Option<u64>,
    limit: usize,
) -> rusqlite::Result<FeedPage> {
    let room = db
        .prepare_cached(
            "SELECT r.id, r.epoch, coalesce(c.seq, 0) FROM rooms r \
             LEFT JOIN webhook_cursors c ON c.room_id = r.id WHERE r.name = ?1",
        )?
        .query_row(params![name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    let Some((id, epoch, cursor)) = room else {
        return Ok(FeedPage {
            after: after.unwrap_or(0),
            ..FeedPage::default()
        });
    };
    let after = after.unwrap_or(u64::try_from(cursor).unwrap_or(0));
    let events = db
        .prepare_cached(
            "SELECT seq, event FROM messages WHERE room_id = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3",
        )?
        .query_map(params![id, sql_int(after), sql_int(limit)], |r| {
            Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(FeedPage {
        epoch: Some(epoch.into()),
        after,
        events,
    })
}
