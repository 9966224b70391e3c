//! Read positions on disk (the `reads` table): written by the writer thread behind the
//! rooms, which hold the positions that count while they live; read when a person joins a
//! room that does not hold its position.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::rising::Rising;

/// A read position on its way to the disk.
#[derive(Debug)]
pub(super) struct Read {
    pub(super) room: Arc<str>,
    pub(super) person: Box<str>,
    pub(super) seq: u64,
}

/// The positions the writer takes between message batches: one per (room, person), the
/// highest. A room never stored (no message kept yet) has no row, and no position above 0
/// to keep.
pub(super) fn batch() -> Rising<(Arc<str>, Box<str>)> {
    Rising::new(
        "read positions",
        "INSERT INTO reads (room_id, person, seq) \
         SELECT id, ?2, ?3 FROM rooms WHERE name = ?1 \
         ON CONFLICT (room_id, person) DO UPDATE SET seq = max(seq, excluded.seq)",
    )
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
