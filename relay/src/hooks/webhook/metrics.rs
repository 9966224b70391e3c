//! The webhooks' series on `/metrics` (docs/METRICS.md): atomics and fixed-bucket histograms,
//! so the tap adds one relaxed increment at most and a scrape reads no queue.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::telemetry::metrics::histogram::Histogram;

/// Request and lag bounds, in microseconds: 0.5 ms to 5 minutes.
const MICROS: &[u64] = &[
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within `--webhook-timeout`.
    Timeout,
    /// The backend could not be reached (refused, reset, DNS, TLS).
    Connect,
    /// It answered with a status other than 2xx.
    Status,
    /// Anything else (a broken response).
    Other,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Timeout,
        Failure::Connect,
        Failure::Status,
        Failure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Connect => "connect",
            Failure::Status => "status",
            Failure::Other => "other",
        }
    }
}

/// Why events were dropped (never silently: each is counted here and logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `--webhook-buffer` events waited already.
    BufferFull,
    /// The relay stopped with them undelivered (memory mode).
    Shutdown,
    /// The durable store no longer held them (trimmed by retention, or never stored).
    Missing,
}

impl Dropped {
    const ALL: [Dropped; 3] = [Dropped::BufferFull, Dropped::Shutdown, Dropped::Missing];

    fn label(self) -> &'static str {
        match self {
            Dropped::BufferFull => "buffer_full",
            Dropped::Shutdown => "shutdown",
            Dropped::Missing => "missing",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
pub struct WebhookMetrics {
    requests: AtomicU64,
    failures: [AtomicU64; 4],
    request_time: Histogram,
    /// Age of each batch's oldest event when the backend took it.
    lag: Histogram,
    delivered: AtomicU64,
    dropped: [AtomicU64; 3],
    /// Events in memory waiting (and the batch being sent).
    backlog: AtomicU64,
    /// Durable store: rooms whose stored log is ahead of what was delivered.
    rooms_behind: AtomicU64,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            failures: Default::default(),
            request_time: Histogram::new(MICROS, 1e6),
            lag: Histogram::new(MICROS, 1e6),
            delivered: AtomicU64::new(0),
            dropped: Default::default(),
            backlog: AtomicU64::new(0),
            rooms_behind: AtomicU64::new(0),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl WebhookMetrics {
    pub fn request(&self, took: Duration, failure: Option<Failure>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.request_time.record(micros(took));
        if let Some(failure) = failure {
            if let Some(count) = Failure::ALL
                .iter()
                .position(|f| *f == failure)
                .and_then(|i| self.failures.get(i))
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn delivered(&self, events: usize, oldest: Duration) {
        self.delivered.fetch_add(events as u64, Ordering::Relaxed);
        self.lag.record(micros(oldest));
    }

    pub fn dropped(&self, why: Dropped, events: u64) {
        if let Some(count) = self.dropped.get(why.index()) {
            count.fetch_add(events, Ordering::Relaxed);
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn set_backlog(&self, events: usize, rooms_behind: usize) {
        self.backlog.store(events as u64, Ordering::Relaxed);
        self.rooms_behind
            .store(rooms_behind as u64, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut single = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        single(
            "relay_webhook_requests_total",
            "counter",
            "Webhook requests sent (retries included).",
            load(&self.requests),
        );
        single(
            "relay_webhook_events_total",
            "counter",
            "Webhook events the backend took (a 2xx answer).",
            load(&self.delivered),
        );
        single(
            "relay_webhook_backlog",
            "gauge",
            "Webhook events waiting in memory, the batch being sent included.",
            load(&self.backlog),
        );
        single(
            "relay_webhook_rooms_behind",
            "gauge",
            "Rooms whose stored log is ahead of what the webhooks delivered (durable store).",
            load(&self.rooms_behind),
        );
        let name = "relay_webhook_failures_total";
        let _ = writeln!(
            out,
            "# HELP {name} Webhook requests that failed, by kind.\n# TYPE {name} counter"
        );
        for (failure, count) in Failure::ALL.iter().zip(&self.failures) {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                failure.label(),
                load(count)
            );
        }
        let name = "relay_webhook_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Webhook events given up, by reason (each also logged).\n# TYPE {name} counter"
        );
        for (why, count) in Dropped::ALL.iter().zip(&self.dropped) {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", why.label(), load(count));
        }
        for (name, help, histogram) in [
            (
                "relay_webhook_request_seconds",
                "Time of one webhook request, until its answer or failure.",
                &self.request_time,
            ),
            (
                "relay_webhook_lag_seconds",
                "Age of each delivered batch's oldest event when the backend took it.",
                &self.lag,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            histogram.render(name, out);
        }
    }
}
