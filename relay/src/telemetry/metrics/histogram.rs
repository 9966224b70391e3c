//! A fixed-bucket histogram of atomics: recording is three relaxed adds, no lock, no
//! allocation, no memory that grows between scrapes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Observations are integers in a unit of the histogram's choosing (nanoseconds, bytes);
/// `scale` converts them to the exported unit (seconds, bytes).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive, as Prometheus's `le`), ascending, in observation units.
    bounds: &'static [u64],
    scale: f64,
    /// One count per bound, then the `+Inf` overflow.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64], scale: f64) -> Self {
        Self {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        let at = self.bounds.partition_point(|&bound| bound < value);
        // `at` is at most `bounds.len()`, the overflow bucket.
        if let Some(bucket) = self.buckets.get(at) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` samples (cumulative buckets).
    pub fn render(&self, name: &str, out: &mut String) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(&bound) => {
                    let le = bound as f64 / self.scale;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The buckets were read first and only grow, so `count` >= the `+Inf` bucket, as
        // Prometheus expects of a scrape that races recordings.
        let _ = writeln!(
            out,
            "{name}_count {}",
            self.count.load(Ordering::Relaxed).max(cumulative)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let histogram = Histogram::new(&[10, 100], 10.0);
        for value in [0, 10, 11, 100, 5000] {
            histogram.record(value);
        }
        let mut out = String::new();
        histogram.render("h", &mut out);
        assert_eq!(
            out,
            "h_bucket{le=\"1\"} 2\nh_bucket{le=\"10\"} 4\nh_bucket{le=\"+Inf\"} 5\nh_sum 512.1\nh_count 5\n"
        );
    }
}
