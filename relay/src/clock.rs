//! A coarse monotonic clock in milliseconds, cheap enough for every rate check and sampled
//! log line (a `u32` keeps token buckets small).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the first call, wrapping after 49 days (buckets and log samplers only
/// look at short differences, computed with wrapping arithmetic).
pub fn clock_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u32
}
