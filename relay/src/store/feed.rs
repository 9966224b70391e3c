//! The stored log as a feed for the webhooks (`chat::tap::LogFeed`): each room's events after
//! the cursor in `webhook_cursors`, read on a read-only connection of its own (opened at
//! the first read, so a relay without webhooks holds none), and the cursors written by the
//! writer thread behind the messages, like read positions, so the feed never competes with
//! the writer for SQLite's write lock.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::rising::Rising;
use super::sql_int;
use crate::chat::tap::FeedPage;

/// A cursor on its way to the disk.
#[derive(Debug)]
pub(super) struct Cursor {
    pub(super) room: Arc<str>,
    pub(super) seq: u64,
}

/// The cursors the writer takes between message batches: the highest per room.
pub(super) fn batch() -> Rising<Arc<str>> {
    Rising::new(
        "webhook cursors",
        "INSERT INTO webhook_cursors (room_id, seq) \
         SELECT id, ?2 FROM rooms WHERE name = ?1 \
         ON CONFLICT (room_id) DO UPDATE SET seq = max(seq, excluded.seq)",
    )
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
