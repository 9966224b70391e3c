//! Removing what `--retain-messages` and `--retain-age` no longer keep.
//!
//! A pass walks the rooms by id; each step deletes at most [`CHUNK`] rows of one room in its
//! own transaction and the writer takes new messages between steps, so a room with a
//! million expired rows never holds up delivery for more than one chunk.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tracing::{debug, warn};

use super::{sql_int, Settings};
use crate::chat::hub::Hub;

/// Rows deleted per transaction.
const CHUNK: i64 = 1000;

/// `interval` from now; a flag too large for the clock means never.
fn later(interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(interval)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

#[derive(Debug)]
pub(super) struct Retention {
    retain_messages: u64,
    retain_age: Duration,
    interval: Duration,
    next_pass: Instant,
    /// The room the running pass is at (`None`: no pass running).
    cursor: Option<i64>,
}

impl Retention {
    pub(super) fn new(settings: &Settings) -> Self {
        Self {
            retain_messages: settings.retain_messages,
            retain_age: settings.retain_age,
            interval: settings.retain_interval,
            next_pass: later(settings.retain_interval),
            cursor: None,
        }
    }

    fn off(&self) -> bool {
        self.retain_messages == 0 && self.retain_age.is_zero()
    }

    /// How long the writer may wait for messages before the next step is due.
    pub(super) fn due_in(&self) -> Duration {
        if self.off() {
            Duration::from_secs(3600)
        } else if self.cursor.is_some() {
            Duration::ZERO
        } else {
            self.next_pass.saturating_duration_since(Instant::now())
        }
    }

    /// One step of the pass, if one is due.
    pub(super) fn step(&mut self, db: &Connection, hub: &Hub) {
        if self.off() {
            return;
        }
        if self.cursor.is_none() {
            if Instant::now() < self.next_pass {
                return;
            }
            self.cursor = Some(0);
        }
        match self.trim_next(db) {
            Ok(deleted) => {
                hub.stats
                    .store_trimmed
                    .fetch_add(deleted, Ordering::Relaxed);
            }
            Err(err) => {
                warn!(error = %err, "history retention pass failed; retrying at the next one");
                self.end_pass();
            }
        }
    }

    fn end_pass(&mut self) {
        self.cursor = None;
        self.next_pass = later(self.interval);
    }

    /// Trims the room after the cursor (or the cursor's again while it had more than a
    /// chunk to go); returns the rows deleted.
    fn trim_next(&mut self, db: &Connection) -> rusqlite::Result<u64> {
        let after = self.cursor.unwrap_or(0);
        let room: Option<(i64, i64)> = db
            .prepare_cached("SELECT id, last_seq FROM rooms WHERE id >= ?1 ORDER BY id LIMIT 1")?
            .query_row(params![after], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((id, last_seq)) = room else {
            self.end_pass();
            return Ok(0);
        };
        // Keep at most `retain_messages`: everything at or below this seq goes.
        let below_seq = if self.retain_messages == 0 {
            0
        } else {
            last_seq.saturating_sub(sql_int(self.retain_messages))
        };
        // Older than `retain_age` goes too.
        let before_ms = if self.retain_age.is_zero() {
            i64::MIN
        } else {
            sql_int(crate::clock::now_ms()).saturating_sub(sql_int(self.retain_age.as_millis()))
        };
        // The room's oldest rows, in seq order (and so in time order): the leading run that
        // either bound removes. Reads at most a chunk, whatever the room's size.
        let mut cut = None;
        {
            let mut oldest = db.prepare_cached(
                "SELECT seq, ts FROM messages WHERE room_id = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = oldest.query(params![id, CHUNK])?;
            while let Some(row) = rows.next()? {
                let (seq, ts): (i64, i64) = (row.get(0)?, row.get(1)?);
                if seq > below_seq && ts >= before_ms {
                    break;
                }
                cut = Some(seq);
            }
        }
        let deleted = match cut {
            Some(seq) => db
                .prepare_cached("DELETE FROM messages WHERE room_id = ?1 AND seq <= ?2")?
                .execute(params![id, seq])?,
            None => 0,
        };
        if deleted > 0 {
            debug!(room_id = id, deleted, "history retention trimmed a room");
        }
        // A full chunk: this room may have more; else on to the next room.
        self.cursor = Some(if deleted as i64 >= CHUNK { id } else { id + 1 });
        Ok(deleted as u64)
    }
}
