//! Webhooks (`--webhook-url`, docs/HOOKS.md "Webhooks"): the relay POSTs every room's events
//! to the app's backend in signed JSON batches, at least once and in seq order per room.
//!
//! Where the events come from is the chat core's one seam, [`crate::chat::tap`]: the
//! [`Webhook`] is the hub's [`Tap`], called once per event where the room orders it, for all
//! three backends. What it does with an event depends on where the log is kept:
//! - memory (`--memory`) and cluster (`--redis-url`, each event by the node that published
//!   it): the event (its shared frame, no copy) joins a queue bounded by `--webhook-buffer`;
//!   past it the event is dropped, logged and counted (`relay_webhook_dropped_total`);
//! - durable store (`--data-dir`): only the room's name is noted; the [`sender`] reads the
//!   room's events from SQLite after the cursor the store keeps per room
//!   ([`crate::chat::tap::LogFeed`]), off the event loop, and moves the cursor once the
//!   backend answered 2xx, so a restart (or a backend down for hours) loses nothing.
//!   Presence events, which are not in the log, go through the memory queue in every mode.
//!
//! Modules: `queue` (what waits), `body` (a request's JSON), `sender` (the task: batching,
//! retries with backoff, the durable cursor), `metrics` (the series on `/metrics`).

mod body;
pub mod metrics;
mod queue;
mod sender;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::chat::tap::{LogFeed, Tap, Tapped};
use crate::config::Config;
use crate::error::Error;
use crate::hooks::http::{Hook, Pool};
use crate::telemetry::metrics::hooks::HookStats;
use metrics::{Dropped, WebhookMetrics};
use queue::{Event, Id, Json, Queue};

/// The webhook flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub buffer: usize,
    pub batch: usize,
    pub linger: Duration,
    pub timeout: Duration,
}

/// What the tap and the task share.
#[derive(Debug)]
struct Shared {
    settings: Settings,
    queue: Mutex<Queue>,
    /// Wakes the task when the queue was empty.
    wake: Notify,
    /// The durable store's log, when there is one.
    feed: Option<Arc<dyn LogFeed>>,
    node_tag: Arc<str>,
    metrics: WebhookMetrics,
    /// The hooks' client (`crate::hooks::http`), signing with `--webhook-secret` and
    /// counting requests, failures and latency as `relay_hook_*{hook="webhook"}`.
    hook: Hook,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Samples the backlog gauges: `sending` events in the batch under way.
    fn update_backlog(&self, sending: usize) {
        let queue = self.lock();
        self.metrics
            .set_backlog(queue.events.len() + sending, queue.behind.len());
    }
}

/// The webhooks of one relay: the hub's tap and the task that posts.
#[derive(Debug)]
pub struct Webhook {
    shared: Arc<Shared>,
}

impl Webhook {
    /// The webhooks `config` asks for (`None` without `--webhook-url`), posting through
    /// `pool` and counting into `stats`. `feed`: the durable store's log, which delivery then
    /// follows; `node_tag`: this node's, for presence ids. An unusable URL is an error.
    pub fn from_config(
        config: &Config,
        pool: &Pool,
        stats: Arc<HookStats>,
        node_tag: &Arc<str>,
        feed: Option<Arc<dyn LogFeed>>,
    ) -> Result<Option<Arc<Self>>, Error> {
        let Some(url) = config.webhook_url.clone() else {
            return Ok(None);
        };
        // One request in flight: a room's events reach the backend in seq order.
        let hook = pool.hook("--webhook-url", &url, 1, stats)?;
        let settings = Settings {
            url,
            buffer: config.webhook_buffer.max(1),
            batch: config.webhook_batch.max(1),
            linger: config.webhook_linger,
            timeout: config.webhook_timeout,
        };
        Ok(Some(Arc::new(Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::new(settings.buffer)),
                wake: Notify::new(),
                feed,
                node_tag: node_tag.clone(),
                metrics: WebhookMetrics::default(),
                hook,
                settings,
            }),
        })))
    }

    /// Starts the task that posts, until `stop` turns true.
    pub fn start(&self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(sender::run(self.shared.clone(), stop))
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Queues the event `make` builds (given the next presence number).
    fn queue(&self, make: impl FnOnce(&mut Queue) -> Event) {
        let pushed = {
            let mut queue = self.shared.lock();
            let event = make(&mut queue);
            queue.push(event)
        };
        if pushed {
            self.shared.wake.notify_one();
        } else {
            // Logged by the task (one line per batch, not one per event).
            self.shared.metrics.dropped(Dropped::BufferFull, 1);
        }
    }
}

impl Tap for Webhook {
    fn tap(&self, event: Tapped<'_>) {
        let at = Instant::now();
        match event {
            Tapped::Log {
                room,
                epoch,
                seq,
                frame,
            } => {
                if self.shared.feed.is_some() {
                    // Stored already: the task reads it back from the log.
                    self.shared.lock().note_behind(room, at);
                    self.shared.wake.notify_one();
                } else {
                    self.queue(|_| Event {
                        room: room.clone(),
                        id: Id::Log {
                            epoch: epoch.clone(),
                            seq,
                        },
                        json: Json::Frame(frame.clone()),
                        at,
                    });
                }
            }
            Tapped::Presence { room, frame } => self.queue(|queue| Event {
                room: room.clone(),
                id: Id::Presence(queue.presence_number()),
                json: Json::Frame(frame.clone()),
                at,
            }),
        }
    }

    fn render_metrics(&self, out: &mut String) {
        self.shared.metrics.render(out);
    }
}
