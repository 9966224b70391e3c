//! Token buckets: per-connection command limits (kept in the connection's own task, so no
//! atomics) and the node's new-connection rate.
//!
//! A bucket is 8 bytes (tokens as `f32`, the last refill in milliseconds of a process-wide
//! clock as `u32`): one exists per limit per connection, so it is kept small.

pub use crate::clock::clock_ms;

/// How fast a bucket refills and how much it holds. `per_second == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: if per_second.is_finite() && per_second > 0.0 {
                per_second
            } else {
                0.0
            },
            burst: burst.max(1),
        }
    }

    pub fn is_off(&self) -> bool {
        self.per_second == 0.0
    }
}

/// A token bucket; starts full. [`TokenBucket::take_many`] lets it go into debt, which
/// is then paid back at the rate before anything more is taken.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    last_ms: u32,
}

impl TokenBucket {
    pub fn full(rate: &Rate) -> Self {
        Self {
            tokens: rate.burst as f32,
            last_ms: clock_ms(),
        }
    }

    /// Takes `n` tokens, into debt if need be; returns how long until the debt is paid (zero
    /// when there was enough). Always zero when `rate` is off.
    pub fn take_many(&mut self, rate: &Rate, now_ms: u32, n: u32) -> std::time::Duration {
        if rate.is_off() || n == 0 {
            return std::time::Duration::ZERO;
        }
        self.refill(rate, now_ms);
        self.tokens -= n as f32;
        if self.tokens >= 0.0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs_f64(f64::from(-self.tokens) / rate.per_second)
    }

    fn refill(&mut self, rate: &Rate, now_ms: u32) {
        let elapsed = now_ms.wrapping_sub(self.last_ms);
        // A "negative" difference (a bucket stamped later than `now` on another thread's
        // clock read) shows up as a huge wrap: treat it as no time passed.
        if elapsed < u32::MAX / 2 {
            let refill = (f64::from(elapsed) / 1000.0 * rate.per_second) as f32;
            self.tokens = (self.tokens + refill).min(rate.burst as f32);
            self.last_ms = now_ms;
        }
    }

    /// Takes one token if there is one. Always succeeds when `rate` is off.
    pub fn try_take(&mut self, rate: &Rate, now_ms: u32) -> bool {
        if rate.is_off() {
            return true;
        }
        self.refill(rate, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The strike window of [`crate::config::Config::rate_limit_strikes`]: refusals within it
/// count towards closing the connection.
pub const STRIKE_WINDOW_SECS: f64 = 10.0;

/// The rate of the strike bucket: `strikes` refusals per 10 seconds; `None` when connections
/// are never closed for refusals.
pub fn strike_rate(strikes: u32) -> Option<Rate> {
    (strikes > 0).then(|| Rate::new(f64::from(strikes) / STRIKE_WINDOW_SECS, strikes))
}

/// Which bucket a command draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chat message.
    Message,
    /// Anything else a client sends as text: typing, join, leave, ping, malformed commands.
    Command,
}

/// What the limits say about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse it with a `rate_limited` error.
    Refuse,
    /// Refused too often: close the connection with 4029.
    Close,
}

/// One connection's buckets (32 bytes), kept in its session.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    message: TokenBucket,
    command: TokenBucket,
    strikes: TokenBucket,
    /// Frames of any opcode (`--frame-rate`).
    pub frames: TokenBucket,
}

impl Throttle {
    pub fn new(message: &Rate, command: &Rate, strikes: Option<&Rate>, frames: &Rate) -> Self {
        Self {
            frames: TokenBucket::full(frames),
            message: TokenBucket::full(message),
            command: TokenBucket::full(command),
            strikes: strikes.map_or(
                TokenBucket {
                    tokens: 0.0,
                    last_ms: 0,
                },
                TokenBucket::full,
            ),
        }
    }

    /// Charges one command of `kind` against its bucket.
    pub fn check(
        &mut self,
        kind: Kind,
        message: &Rate,
        command: &Rate,
        strikes: Option<&Rate>,
    ) -> Verdict {
        let (bucket, rate) = match kind {
            Kind::Message => (&mut self.message, message),
            Kind::Command => (&mut self.command, command),
        };
        // The common case (limits off, as in benchmarks) reads no clock.
        if rate.is_off() {
            return Verdict::Allow;
        }
        let now = clock_ms();
        if bucket.try_take(rate, now) {
            return Verdict::Allow;
        }
        self.strike(strikes)
    }

    /// Counts a refusal (by this bucket or another, such as the address's): `Close` once
    /// they come too often.
    pub fn strike(&mut self, strikes: Option<&Rate>) -> Verdict {
        match strikes {
            Some(strike_rate) if !self.strikes.try_take(strike_rate, clock_ms()) => Verdict::Close,
            _ => Verdict::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let rate = Rate::new(2.0, 3);
        let mut bucket = TokenBucket {
            tokens: 3.0,
            last_ms: 1000,
        };
        assert!(bucket.try_take(&rate, 1000));
        assert!(bucket.try_take(&rate, 1000));
        assert!(bucket.try_take(&rate, 1000));
        assert!(!bucket.try_take(&rate, 1000), "burst spent");
        assert!(!bucket.try_take(&rate, 1400), "0.8 tokens after 400 ms");
        assert!(bucket.try_take(&rate, 1500), "one token after 500 ms");
        assert!(bucket.try_take(&rate, 60_000), "refilled");
        assert!(bucket.try_take(&rate, 60_000));
        assert!(bucket.try_take(&rate, 60_000));
        assert!(!bucket.try_take(&rate, 60_000), "never more than the burst");
    }

    #[test]
    fn a_batch_of_frames_goes_into_debt_and_says_how_long_it_lasts() {
        let rate = Rate::new(100.0, 200);
        let mut bucket = TokenBucket {
            tokens: 200.0,
            last_ms: 0,
        };
        assert_eq!(bucket.take_many(&rate, 0, 150), std::time::Duration::ZERO);
        let wait = bucket.take_many(&rate, 0, 250);
        assert_eq!(wait.as_millis(), 2000, "200 frames of debt at 100/s");
        assert_eq!(bucket.take_many(&rate, 2000, 0), std::time::Duration::ZERO);
        assert!(
            bucket.take_many(&rate, 2000, 1) > std::time::Duration::ZERO,
            "debt paid, none left"
        );
    }

    #[test]
    fn off_always_allows_and_clock_wraps() {
        let off = Rate::new(0.0, 10);
        let mut bucket = TokenBucket::full(&off);
        assert!((0..1000).all(|_| bucket.try_take(&off, 0)));
        let rate = Rate::new(1.0, 1);
        let mut bucket = TokenBucket {
            tokens: 0.0,
            last_ms: u32::MAX - 500,
        };
        assert!(bucket.try_take(&rate, 600), "1.1 s across the wrap");
        assert!(strike_rate(0).is_none());
        let _ = Throttle::new(&off, &off, None, &off);
        assert_eq!(strike_rate(20), Some(Rate::new(2.0, 20)));
    }
}
