//! The webhooks' own series on `/metrics` (docs/METRICS.md): what was delivered, dropped,
//! waits, and how far behind; the requests, failures and their latency are every hook's
//! (`relay_hook_*`, recorded by the client, `crate::hooks::http`). Atomics and a
//! fixed-bucket histogram, so the tap adds one relaxed increment at most.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::telemetry::metrics::histogram::Histogram;
use crate::telemetry::metrics::names;

/// Lag bounds, in microseconds: 0.5 ms to 5 minutes.
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

    /// Appends the webhooks' series (help texts from `names::PER_RELAY`, as every series').
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, value) in [
            (names::WEBHOOK_EVENTS, "counter", load(&self.delivered)),
            (names::WEBHOOK_BACKLOG, "gauge", load(&self.backlog)),
            (
                names::WEBHOOK_ROOMS_BEHIND,
                "gauge",
                load(&self.rooms_behind),
            ),
        ] {
            header(out, name, kind);
            let _ = writeln!(out, "{name} {value}");
        }
        header(out, names::WEBHOOK_DROPPED, "counter");
        for (why, count) in Dropped::ALL.iter().zip(&self.dropped) {
            let _ = writeln!(
                out,
                "{}{{reason=\"{}\"}} {}",
                names::WEBHOOK_DROPPED,
                why.label(),
                load(count)
            );
        }
        header(out, names::WEBHOOK_LAG, "histogram");
        self.lag.render(names::WEBHOOK_LAG, out);
    }
}

fn header(out: &mut String, name: &str, kind: &str) {
    let help = names::PER_RELAY
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, help)| help);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
