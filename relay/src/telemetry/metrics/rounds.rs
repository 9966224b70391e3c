//! What each flusher round did (issue "fan-out that wins in every repeat"): how long it
//! waited to start after its first enlist, how long it ran, and how many connections it
//! wrote. A slow repeat of a benchmark shows here as long rounds (the relay's own work)
//! or long waits (everything else the worker ran meanwhile: readers, timers, the I/O
//! driver), without a profiler attached.

use std::time::Duration;

use super::histogram::Histogram;
use super::names;
use crate::telemetry::logging::Sampled;

const ROUND_CONNECTIONS: &[u64] = &[1, 4, 16, 64, 256, 1024, 4096, 16_384, 65_536];

/// A round that held its worker this long (or waited this long to start) is logged, once
/// a second at most, with what it did: a p99 of 50 ms is ruined by a handful of these.
const SLOW: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub struct Rounds {
    delay: Histogram,
    duration: Histogram,
    connections: Histogram,
    slow: Sampled,
}

/// One flusher round, as [`Rounds::record`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// From the first enlist of the round to its start.
    pub delay: Duration,
    /// From its start to its last write (its yields between chunks included).
    pub duration: Duration,
    pub rooms: usize,
    pub connections: usize,
    pub bytes: u64,
}

impl Default for Rounds {
    fn default() -> Self {
        Self {
            delay: Histogram::new(super::LATENCY_NANOS, super::NANOS),
            duration: Histogram::new(super::LATENCY_NANOS, super::NANOS),
            connections: Histogram::new(ROUND_CONNECTIONS, 1.0),
            slow: Sampled::default(),
        }
    }
}

impl Rounds {
    /// Three histogram records per round (not per connection), and a log line for a slow one.
    pub fn record(&self, round: Round) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.delay.record(nanos(round.delay));
        self.duration.record(nanos(round.duration));
        self.connections.record(round.connections as u64);
        if round.duration >= SLOW || round.delay >= SLOW {
            if let Some(suppressed) = self.slow.due() {
                tracing::info!(
                    delay_us = round.delay.as_micros() as u64,
                    duration_us = round.duration.as_micros() as u64,
                    rooms = round.rooms,
                    connections = round.connections,
                    bytes = round.bytes,
                    suppressed,
                    "slow flusher round"
                );
            }
        }
    }

    pub fn render(&self, out: &mut String) {
        for (name, histogram) in [
            (names::ROUND_DELAY_SECONDS, &self.delay),
            (names::ROUND_SECONDS, &self.duration),
            (names::ROUND_CONNECTIONS, &self.connections),
        ] {
            super::header(out, name, "histogram");
            histogram.render(name, out);
        }
    }
}
