//! Wall-clock nanoseconds shared by all worker processes, and the phase signal.
//!
//! Schedule slots are Unix-epoch nanoseconds (not `Instant`s) because a message sent by one
//! worker process is received by another: both must read the same clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The tokio `Instant` at which the wall clock reads `ns` (for timers).
pub fn instant_at(ns: u64) -> Instant {
    let (i, n) = (Instant::now(), now_ns());
    if ns >= n {
        i + Duration::from_nanos(ns - n)
    } else {
        i.checked_sub(Duration::from_nanos(n - ns)).unwrap_or(i)
    }
}

/// Start of the send phase, decided by the coordinator once ramp-up is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Go {
    /// First schedule slot, Unix nanoseconds.
    pub t0_ns: u64,
    /// Clients joined over all workers: the open-loop rate is split among them.
    pub joined_total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Ramp,
    Go(Go),
    /// Stop now (the coordinator gave up); clients close and report what they have.
    Abort,
}
