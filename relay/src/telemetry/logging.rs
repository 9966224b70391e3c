//! Logging set-up: `tracing` to stderr, text or JSON, level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is "text" or "json".
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// One log line per second at most for an event that a client can repeat at will (slow
/// consumers, rate-limit closes): the first is logged at once, later ones within the same
/// second only counted, and the next line says how many were left out. Without it one
/// client closed as a slow consumer in a loop wrote 8.5 MB of log a minute.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Milliseconds of [`crate::clock::clock_ms`] at the last line, plus one (0: never).
    last_ms: std::sync::atomic::AtomicU32,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Sampled {
    /// `Some(n)` when a line is due, `n` being the occurrences left out since the last
    /// line; `None` when this one is only counted.
    pub fn due(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = crate::clock::clock_ms().wrapping_add(1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.wrapping_sub(last) >= 1000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Sampled;

    #[test]
    fn one_line_then_a_count() {
        let sampled = Sampled::default();
        assert_eq!(sampled.due(), Some(0), "the first is logged");
        assert_eq!(sampled.due(), None);
        assert_eq!(sampled.due(), None);
        // Pretend the last line was a second ago.
        let second_ago = crate::clock::clock_ms().wrapping_add(1).wrapping_sub(1000);
        sampled
            .last_ms
            .store(second_ago, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            sampled.due(),
            Some(2),
            "the next line counts the two left out"
        );
    }
}
