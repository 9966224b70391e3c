//! The relay's clocks: a coarse monotonic one in milliseconds, cheap enough for every rate
//! check and sampled log line (a `u32` keeps token buckets small), and the wall clock in
//! milliseconds (message timestamps, retention) and seconds (token expiry).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the first call, wrapping after 49 days (buckets and log samplers only
/// look at short differences, computed with wrapping arithmetic).
pub fn clock_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u32
}

/// Milliseconds since the Unix epoch: message timestamps, retention by age.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
