//! Reads from the database, each on a read-only connection of its own (WAL readers see every
//! commit and never wait for the writer): a room's stored life when the node opens it, and
//! scroll-back pages older than the room's in-memory tail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use rusqlite::{params, Connection, OptionalExtension};
use tracing::warn;

use crate::chat::backend::{send_page, Busy, Page, StoredLife};
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::room::HistoryPage;
use crate::ws::{Frame, OpCode};

/// Scroll-back reads under way at most; more get `server_busy` (each holds a blocking-pool
/// thread, and a client paging fast must not take them all).
const MAX_PAGE_READS: usize = 8;

/// A room's epoch, latest seq and `newest` messages, oldest first; `None` if never stored.
pub(super) fn life(
    db: &Connection,
    name: &str,
    newest: usize,
) -> rusqlite::Result<Option<StoredLife>> {
    let Some((id, epoch, seq)) = db
        .prepare_cached("SELECT id, epoch, last_seq FROM rooms WHERE name = ?1")?
        .query_row(params![name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let mut frames: Vec<Frame> = db
        .prepare_cached("SELECT event FROM messages WHERE room_id = ?1 ORDER BY seq DESC LIMIT ?2")?
        .query_map(params![id, newest as i64], |r| r.get::<_, String>(0))?
        .map(|event| event.map(|e| Frame::new(OpCode::Text, e.as_bytes())))
        .collect::<rusqlite::Result<_>>()?;
    frames.reverse();
    Ok(Some(StoredLife {
        epoch: epoch.into(),
        seq: u64::try_from(seq).unwrap_or(0),
        newest: frames,
    }))
}

/// Scroll-back from disk.
#[derive(Debug)]
pub(super) struct Pager {
    db: Arc<Mutex<Connection>>,
    in_flight: Arc<AtomicUsize>,
    /// The hub answers go through; set when the store starts. Weak: the hub owns the store.
    hub: OnceLock<Weak<Hub>>,
}

impl Pager {
    pub(super) fn new(db: Connection) -> Self {
        Self {
            db: Arc::new(Mutex::new(db)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            hub: OnceLock::new(),
        }
    }

    pub(super) fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    /// Reads `page` of `room` on the blocking pool and pushes the answer to `conn`.
    pub(super) fn page(&self, conn: &Arc<Conn>, room: &str, page: Page) -> Result<(), Busy> {
        let Some(hub) = self.hub.get().and_then(Weak::upgrade) else {
            return Err(Busy);
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Busy);
        };
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_PAGE_READS {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let (db, in_flight, conn, room) = (
            self.db.clone(),
            self.in_flight.clone(),
            conn.clone(),
            room.to_owned(),
        );
        runtime.spawn_blocking(move || {
            let max_bytes = hub.history_budget().limits.joined_bytes;
            let read = {
                let db = db.lock().unwrap_or_else(PoisonError::into_inner);
                read_page(&db, &room, page)
            };
            let answer = match read {
                Ok(rows) => HistoryPage::from_stored(
                    rows.iter().map(|json| json.as_bytes()),
                    page.limit,
                    max_bytes,
                ),
                Err(err) => {
                    // The disk failed: what memory holds is still an answer.
                    warn!(room = %room, error = %err, "scroll-back read from the history store failed; answering from memory");
                    match hub.room(&room) {
                        Some(live) => live.history_page(page),
                        None => HistoryPage::from_stored(std::iter::empty(), 0, 0),
                    }
                }
            };
            send_page(&hub, &conn, &room, &answer);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }
}

/// Up to `limit + 1` messages below `before`, newest first.
fn read_page(db: &Connection, room: &str, page: Page) -> rusqlite::Result<Vec<String>> {
    let before = page
        .before
        .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    db.prepare_cached(
        "SELECT m.event FROM messages m JOIN rooms r ON r.id = m.room_id \
         WHERE r.name = ?1 AND m.seq < ?2 ORDER BY m.seq DESC LIMIT ?3",
    )?
    .query_map(params![room, before, page.limit as i64 + 1], |r| r.get(0))?
    .collect()
}
