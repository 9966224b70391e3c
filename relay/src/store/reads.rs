//! Read positions on disk (the `reads` table): written by the writer thread behind the
//! rooms, which hold the positions that count while they live; read when a person joins a
//! room that does not hold its position.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::sql_int;

/// A read position on its way to the disk.
#[derive(Debug)]
pub(super) struct Read {
    pub(super) room: Arc<str>,
    pub(super) person: Box<str>,
    pub(super) seq: u64,
}

/// The positions the writer took since it last wrote them: one per (room, person), the
/// highest, so a client marking every message read costs one row write per batch.
#[derive(Debug, Default)]
pub(super) struct Batch {
    latest: HashMap<(Arc<str>, Box<str>), u64>,
    /// The last write failed (logged once until one succeeds; the positions are retried).
    failing: bool,
}

impl Batch {
    /// Positions waiting to be written.
    pub(super) fn len(&self) -> usize {
        self.latest.len()
    }

    pub(super) fn add(&mut self, read: Read) {
        let seq = self.latest.entry((read.room, read.person)).or_insert(0);
        *seq = (*seq).max(read.seq);
    }

    /// Writes every position taken (in one transaction) and forgets them; on failure (a
    /// full disk) they stay for the next batch, while the rooms go on with theirs.
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
                    tracing::warn!(error = %err, positions = self.latest.len(), "could not store read positions; retrying with the next batch");
                }
                self.failing = true;
            }
        }
    }

    /// A row only ever rises; a room never stored (no message kept yet) has no row, and no
    /// position above 0 to keep.
    fn write(&self, db: &mut Connection) -> rusqlite::Result<()> {
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO reads (room_id, person, seq) \
                 SELECT id, ?2, ?3 FROM rooms WHERE name = ?1 \
                 ON CONFLICT (room_id, person) DO UPDATE SET seq = max(seq, excluded.seq)",
            )?;
            for ((room, person), seq) in &self.latest {
                upsert.execute(params![&**room, &**person, sql_int(*seq)])?;
            }
        }
        tx.commit()
    }
}

/// `person`'s stored position in the room called `room`; 0 when there is none.
pub(super) fn position(db: &Connection, room: &str, person: &str) -> rusqlite::Result<u64> {
    let seq: Option<i64> = db
        .prepare_cached(
            "SELECT reads.seq FROM reads JOIN rooms ON rooms.id = reads.room_id \
             WHERE rooms.name = ?1 AND reads.person = ?2",
        )?
        .query_row(params![room, person], |r| r.get(0))
        .optional()?;
    Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
}
