//! The webhook task: gathers a batch (up to `--webhook-batch` events, waiting at most
//! `--webhook-linger` for more), posts it, and retries the same batch with exponential
//! backoff until the backend answers 2xx. One request at a time, so the backend sees each
//! room's events in seq order, and a batch is never split or reordered by a retry.
//!
//! It runs beside the chat, never in its path: rooms only queue (or note) events through
//! the tap, so a slow or dead backend costs the relay the bounded buffer, nothing else.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::metrics::Dropped;
use super::queue::{Event, Id, Json};
use super::{body, Shared};
use crate::chat::backend::Unavailable;
use crate::chat::tap::{FeedPage, LogFeed};

/// The first retry's wait; each further one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Rooms read from the durable store per batch at most (each one indexed read).
const ROOMS_PER_READ: usize = 256;
/// How long a room's delivered position stays in memory after its last batch: by then the
/// writer has stored its cursor, which later reads start from.
const CURSOR_IDLE: Duration = Duration::from_secs(300);
/// The last request's time limit when the relay stops.
const LAST_TRY: Duration = Duration::from_secs(3);

/// With a durable store: each room's last delivered seq, until its stored cursor has surely
/// caught up (the writer stores cursors behind the messages).
#[derive(Debug)]
struct Durable {
    feed: Arc<dyn LogFeed>,
    delivered: HashMap<Arc<str>, (u64, Instant)>,
    last_prune: Instant,
}

impl Durable {
    fn new(feed: Arc<dyn LogFeed>) -> Self {
        Self {
            feed,
            delivered: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    /// The batch reached the backend: its rooms' positions move on, and their cursors are
    /// stored.
    fn committed(&mut self, batch: &[Event]) {
        let now = Instant::now();
        let mut top: HashMap<&Arc<str>, u64> = HashMap::new();
        for event in batch {
            if let (Id::Log { seq, .. }, Json::Stored(_)) = (&event.id, &event.json) {
                let at = top.entry(&event.room).or_insert(0);
                *at = (*at).max(*seq);
            }
        }
        for (room, seq) in top {
            self.feed.keep_cursor(room, seq);
            self.delivered.insert(room.clone(), (seq, now));
        }
        if now.duration_since(self.last_prune) > CURSOR_IDLE {
            self.delivered
                .retain(|_, (_, at)| now.duration_since(*at) < CURSOR_IDLE);
            self.last_prune = now;
        }
    }
}

/// Runs until `stop` turns true.
pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut durable = shared.feed.clone().map(Durable::new);
    if let Some(durable) = &durable {
        load_backlog(&shared, durable).await;
    }
    let max = shared.settings.batch;
    let mut batch: Vec<Event> = Vec::with_capacity(max.min(4096));
    let mut dropped_logged = 0;
    let mut last_full = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let notified = shared.wake.notified();
        if !shared.lock().has_work() {
            tokio::select! {
                () = notified => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        // Linger for a fuller batch unless one is waiting already (in memory, or on disk:
        // the last batch was full, so delivery is behind).
        if !last_full && shared.lock().events.len() < max && !shared.settings.linger.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(shared.settings.linger) => {}
                _ = stop.changed() => break,
            }
        }
        fill(&shared, durable.as_mut(), &mut batch).await;
        last_full = batch.len() >= max;
        let dropped = shared.metrics.dropped_total();
        if dropped != dropped_logged {
            warn!(
                dropped = dropped - dropped_logged,
                total = dropped,
                "webhook events dropped (see relay_webhook_dropped_total)"
            );
            dropped_logged = dropped;
        }
        if batch.is_empty() {
            continue;
        }
        let body = body::encode(&batch, &shared.node_tag);
        if !deliver(&shared, body, &mut stop).await {
            break;
        }
        let oldest = batch.iter().map(|e| e.at).min().map(|at| at.elapsed());
        shared
            .metrics
            .delivered(batch.len(), oldest.unwrap_or_default());
        if let Some(durable) = durable.as_mut() {
            durable.committed(&batch);
        }
        batch.clear();
        shared.update_backlog(0);
    }
    // Stopping: one last try for what waits (what the drain published), then what is left
    // in memory is lost (a durable store's log keeps its part for the next start).
    if batch.is_empty() {
        // (A batch cut short by the stop is tried as it is: reading more now would read
        // its stored events again.)
        fill(&shared, durable.as_mut(), &mut batch).await;
    }
    if !batch.is_empty() {
        let body = body::encode(&batch, &shared.node_tag);
        // Bounded: the relay is stopping, and the backend may be away.
        let last_try = shared.settings.timeout.min(LAST_TRY);
        let result = shared.hook.post_json(body, last_try).await;
        if result.is_ok() {
            shared.metrics.delivered(batch.len(), Duration::ZERO);
            if let Some(durable) = durable.as_mut() {
                durable.committed(&batch);
            }
            batch.clear();
        }
    }
    let lost = batch
        .iter()
        .filter(|e| matches!(e.json, Json::Frame(_)))
        .count()
        + shared.lock().events.len();
    if lost > 0 {
        shared.metrics.dropped(Dropped::Shutdown, lost as u64);
        warn!(
            events = lost,
            "the relay stopped with webhook events undelivered"
        );
    }
}

/// At start-up with a durable store: the rooms a restart left behind.
async fn load_backlog(shared: &Arc<Shared>, durable: &Durable) {
    let feed = durable.feed.clone();
    match tokio::task::spawn_blocking(move || feed.behind()).await {
        Ok(Ok(rooms)) => {
            if !rooms.is_empty() {
                info!(
                    rooms = rooms.len(),
                    "delivering the webhook backlog the store kept"
                );
            }
            let now = Instant::now();
            let mut queue = shared.lock();
            for room in &rooms {
                queue.note_behind(room, now);
            }
        }
        Ok(Err(Unavailable(err))) => {
            warn!(error = %err, "could not read the webhook backlog from the store; it is delivered when its rooms get new messages")
        }
        Err(err) => warn!(error = %err, "the webhook backlog read failed"),
    }
}

/// Takes up to `--webhook-batch` events: what waits in memory first, then stored events
/// of the rooms behind.
async fn fill(shared: &Arc<Shared>, durable: Option<&mut Durable>, batch: &mut Vec<Event>) {
    let max = shared.settings.batch;
    let rooms: Vec<(Arc<str>, Instant)> = {
        let mut queue = shared.lock();
        // With rooms behind on disk, presence takes at most half a batch, so a churn of
        // joins and leaves cannot starve the stored log.
        let room = if durable.is_some() && !queue.behind.is_empty() {
            max.div_ceil(2)
        } else {
            max
        };
        let take = room.saturating_sub(batch.len()).min(queue.events.len());
        batch.extend(queue.events.drain(..take));
        match &durable {
            Some(_) if batch.len() < max => {
                let names: Vec<Arc<str>> =
                    queue.behind.keys().take(ROOMS_PER_READ).cloned().collect();
                names
                    .into_iter()
                    .filter_map(|name| queue.behind.remove_entry(&name))
                    .collect()
            }
            _ => Vec::new(),
        }
    };
    let Some(durable) = durable else {
        shared.update_backlog(batch.len());
        return;
    };
    if rooms.is_empty() {
        shared.update_backlog(batch.len());
        return;
    }
    let room_after: Vec<(Arc<str>, Option<u64>)> = rooms
        .iter()
        .map(|(room, _)| (room.clone(), durable.delivered.get(room).map(|(s, _)| *s)))
        .collect();
    let feed = durable.feed.clone();
    let room_count = room_after.len();
    let mut room_budget = max - batch.len();
    let read = tokio::task::spawn_blocking(move || {
        let mut pages: Vec<(Arc<str>, usize, Result<FeedPage, Unavailable>)> = Vec::new();
        for (room, after) in room_after {
            if room_budget == 0 {
                break;
            }
            let page = feed.read_after(&room, after, room_budget);
            let asked = room_budget;
            if let Ok(page) = &page {
                room_budget -= page.events.len().min(room_budget);
            }
            pages.push((room, asked, page));
        }
        pages
    })
    .await
    .unwrap_or_default();
    let mut again: Vec<Arc<str>> = Vec::new();
    let mut failed = false;
    let since: HashMap<Arc<str>, Instant> = rooms.into_iter().collect();
    for (room, asked, page) in &read {
        match page {
            Ok(page) => {
                // A full page: the room may hold more.
                let full = page.events.len() >= *asked;
                take_page(shared, room, page, since.get(room), batch);
                if full {
                    again.push(room.clone());
                }
            }
            Err(Unavailable(err)) => {
                if !failed {
                    warn!(room = %room, error = %err, "could not read webhook events from the store; retrying");
                }
                failed = true;
                again.push(room.clone());
            }
        }
    }
    // Rooms not read this time (the batch filled up) wait for the next.
    if read.len() < room_count {
        let read_rooms: std::collections::HashSet<&Arc<str>> =
            read.iter().map(|(r, _, _)| r).collect();
        again.extend(since.keys().filter(|r| !read_rooms.contains(r)).cloned());
    }
    {
        let mut queue = shared.lock();
        for room in &again {
            let at = since.get(room).copied().unwrap_or_else(Instant::now);
            queue.note_behind(room, at);
        }
    }
    shared.update_backlog(batch.len());
    if failed && batch.is_empty() {
        // The disk is failing: do not spin on it.
        tokio::time::sleep(FIRST_BACKOFF).await;
    }
}

/// Adds a room's stored page to the batch; a hole before it (trimmed by retention, or a
/// message delivered but never stored) is logged and counted.
fn take_page(
    shared: &Shared,
    room: &Arc<str>,
    page: &FeedPage,
    since: Option<&Instant>,
    batch: &mut Vec<Event>,
) {
    let Some(epoch) = &page.epoch else {
        return;
    };
    if let Some((first, _)) = page.events.first() {
        let missing = first.saturating_sub(page.after + 1);
        if missing > 0 {
            shared.metrics.dropped(Dropped::Missing, missing);
            warn!(room = %room, after = page.after, next = first, "webhook events no longer stored were skipped");
        }
    }
    let at = since.copied().unwrap_or_else(Instant::now);
    for (seq, json) in &page.events {
        batch.push(Event {
            room: room.clone(),
            id: Id::Log {
                epoch: epoch.clone(),
                seq: *seq,
            },
            json: Json::Stored(json.clone()),
            at,
        });
    }
}

/// Posts `body` until the backend takes it (true) or the relay stops (false).
async fn deliver(shared: &Shared, body: bytes::Bytes, stop: &mut watch::Receiver<bool>) -> bool {
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u64 = 0;
    loop {
        let result = tokio::select! {
            result = shared.hook.post_json(body.clone(), shared.settings.timeout) => result,
            // Stopping: the batch gets its last, shorter try in `run`.
            _ = stop.changed() => return false,
        };
        match result {
            Ok(_) => {
                if failures > 0 {
                    info!(failures, "the webhook backend took the batch again");
                }
                return true;
            }
            Err(err) => {
                failures += 1;
                // The first failure of an outage and then one in ten, not one per retry.
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(
                        kind = err.kind().as_str(),
                        error = %err,
                        failures,
                        retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "webhook request failed; retrying the same batch"
                    );
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return false,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
