//! Reads from the database, on read-only connections of their own (WAL readers see every
//! commit and never wait for the writer): a room's stored life when the node opens it, and
//! scroll-back pages older than the room's in-memory tail.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use rusqlite::{params, Connection, OptionalExtension};
use tracing::warn;

use super::{schema, sql_int, StoreError};
use crate::chat::backend::{send_page, Busy, KeptSend, Page, Sent, StoredLife};
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::room::HistoryPage;
use crate::ws::{Frame, OpCode};

/// Scroll-back reads under way at most; more get `server_busy` (each holds a blocking-pool
/// thread, and a client paging fast must not take them all).
const MAX_PAGE_READS: usize = 8;
/// Connections those reads share: reads of one page are short, so a few serve eight.
const PAGER_CONNECTIONS: usize = 4;

/// A room's epoch, latest seq and `newest` messages, oldest first; `None` if never stored.
/// `unsaved`: the room's highest seq that was delivered but not stored (a failed
/// transaction of this run), which the room carries on above. The messages handed back are
/// only the contiguous run that ends at the latest seq: the room's log holds no gaps.
pub(super) fn life(
    db: &Connection,
    name: &str,
    newest: usize,
    unsaved: Option<(Arc<str>, u64)>,
    dedupe_window: std::time::Duration,
) -> rusqlite::Result<Option<StoredLife>> {
    let stored = db
        .prepare_cached("SELECT id, epoch, last_seq FROM rooms WHERE name = ?1")?
        .query_row(params![name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    let Some((id, epoch, last)) = stored else {
        return Ok(unsaved.map(|(epoch, seq)| StoredLife {
            epoch,
            seq,
            newest: Vec::new(),
            sends: Vec::new(),
        }));
    };
    let mut seq = u64::try_from(last).unwrap_or(0);
    let mut epoch: Arc<str> = epoch.into();
    if let Some((unsaved_epoch, unsaved_seq)) = unsaved {
        if unsaved_seq > seq {
            (epoch, seq) = (unsaved_epoch, unsaved_seq);
        }
    }
    let rows: Vec<(i64, String)> = db
        .prepare_cached(
            "SELECT seq, event FROM messages WHERE room_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?
        .query_map(params![id, newest as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut frames = Vec::with_capacity(rows.len());
    let mut want = sql_int(seq);
    for (row_seq, event) in rows {
        if row_seq != want {
            break;
        }
        frames.push(Frame::new(OpCode::Text, event.as_bytes()));
        want -= 1;
    }
    frames.reverse();
    let sends = sends(db, id, seq, dedupe_window)?;
    Ok(Some(StoredLife {
        epoch,
        seq,
        newest: frames,
        sends,
    }))
}

/// The stored event of message `seq` of the room called `name`.
pub(super) fn event(db: &Connection, name: &str, seq: u64) -> rusqlite::Result<Option<String>> {
    db.prepare_cached(
        "SELECT m.event FROM messages m JOIN rooms r ON r.id = m.room_id \
         WHERE r.name = ?1 AND m.seq = ?2",
    )?
    .query_row(params![name, sql_int(seq)], |r| r.get(0))
    .optional()
}

/// Sends with `ref` a room stored within the dedupe window, oldest first. Only the room's
/// latest rows are looked at (as many as every person's cap allows in a busy room is more
/// than a resend needs: `SENDS_SCANNED`), so a room open stays one short indexed read.
fn sends(
    db: &Connection,
    room_id: i64,
    seq: u64,
    window: std::time::Duration,
) -> rusqlite::Result<Vec<KeptSend>> {
    /// Rows scanned back from the latest for remembered sends.
    const SENDS_SCANNED: u64 = 10_000;
    let since_ms = crate::clock::now_ms()
        .saturating_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
    let mut rows = db.prepare_cached(
        "SELECT person, ref, seq, ts, event FROM messages WHERE room_id = ?1 AND seq > ?2 \
         AND ref IS NOT NULL AND ts >= ?3 ORDER BY seq",
    )?;
    let found = rows.query_map(
        params![
            room_id,
            sql_int(seq.saturating_sub(SENDS_SCANNED)),
            sql_int(since_ms)
        ],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        },
    )?;
    let mut sends = Vec::new();
    for row in found {
        let (person, reference, seq, ts, event) = row?;
        // The id is the event's own (this node's tag of the run that took it).
        let Some(id) = event_id(&event) else {
            continue;
        };
        let sent = Sent {
            seq: u64::try_from(seq).unwrap_or(0),
            id: id.into(),
        };
        sends.push(KeptSend {
            person: person.into(),
            reference: reference.into(),
            sent,
            at_ms: u64::try_from(ts).unwrap_or(0),
        });
    }
    Ok(sends)
}

/// The `id` of a stored message event.
fn event_id(event: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_str::<Id>(event).ok().map(|e| e.id)
}

/// A free connection of `conns` if there is one, else waits for the one at `fallback` (modulo
/// their number): reads are short, so a few connections serve more readers. `conns` is never
/// empty.
pub(super) fn free_connection(
    conns: &[Mutex<Connection>],
    fallback: usize,
) -> MutexGuard<'_, Connection> {
    conns
        .iter()
        .find_map(|c| c.try_lock().ok())
        .unwrap_or_else(|| {
            conns[fallback % conns.len()]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        })
}

/// Scroll-back from disk.
#[derive(Debug)]
pub(super) struct Pager {
    conns: Arc<[Mutex<Connection>]>,
    in_flight: Arc<AtomicUsize>,
    /// The hub answers go through; set when the store starts. Weak: the hub owns the store.
    hub: OnceLock<Weak<Hub>>,
}

/// Gives a read's place back however the read ends (a panic included).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pager {
    pub(super) fn new(dir: &Path) -> Result<Self, StoreError> {
        let conns = (0..PAGER_CONNECTIONS)
            .map(|_| schema::open_reader(dir).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            conns: conns.into(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            hub: OnceLock::new(),
        })
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
        let taken = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.in_flight.clone());
        if taken >= MAX_PAGE_READS {
            return Err(Busy);
        }
        let (conns, conn, room) = (self.conns.clone(), conn.clone(), room.to_owned());
        runtime.spawn_blocking(move || {
            let _slot = slot;
            let max_bytes = hub.history_budget().limits.joined_bytes;
            let read = {
                let db = free_connection(&conns, taken);
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
        });
        Ok(())
    }
}

/// Up to `limit + 1` messages below `before`, newest first.
fn read_page(db: &Connection, room: &str, page: Page) -> rusqlite::Result<Vec<String>> {
    let before = page.before.map_or(i64::MAX, sql_int);
    db.prepare_cached(
        "SELECT m.event FROM messages m JOIN rooms r ON r.id = m.room_id \
         WHERE r.name = ?1 AND m.seq < ?2 ORDER BY m.seq DESC LIMIT ?3",
    )?
    .query_map(params![room, before, page.limit as i64 + 1], |r| r.get(0))?
    .collect()
}
