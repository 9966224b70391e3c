//! What both sides count during one attack: the attacker's outcomes by name, and the
//! victim's latencies (one HDR histogram, plus one per kind) and refusals. Shared between
//! the attacker's and the victim's runtime threads, so behind mutexes; nothing here is hot
//! enough for that to matter next to a socket write.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats::new_histogram;

/// Named event counts (`"sent"`, `"close_4029"`, `"http_429"`, ...).
#[derive(Debug, Default)]
pub struct Counts(Mutex<BTreeMap<String, u64>>);

impl Counts {
    pub fn add(&self, key: &str, n: u64) {
        if let Ok(mut m) = self.0.lock() {
            match m.get_mut(key) {
                Some(v) => *v += n,
                None => {
                    m.insert(key.to_string(), n);
                }
            }
        }
    }

    /// Keeps the largest value seen under `key`.
    pub fn max(&self, key: &str, v: u64) {
        if let Ok(mut m) = self.0.lock() {
            let e = m.entry(key.to_string()).or_insert(0);
            *e = (*e).max(v);
        }
    }

    pub fn bump(&self, key: &str) {
        self.add(key, 1);
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Which of the victim's measurements a latency belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// Chat message sent -> its own echo.
    Echo,
    /// WebSocket ping -> pong.
    Ping,
    /// TCP connect + upgrade + join -> `joined`.
    Connect,
    /// Attack F's normal joiners: join sent -> `joined` of the filled room.
    PoisonJoin,
}

/// The victim's measurements.
#[derive(Debug)]
pub struct VictimStats {
    all: Mutex<Histogram<u64>>,
    by_probe: Mutex<[Histogram<u64>; 4]>,
    pub refusals: Counts,
    /// Attack F: normal joiners closed as slow consumers.
    pub poison_4008: std::sync::atomic::AtomicU64,
    /// Latencies that end before this are the lead-in, not the attack: not recorded.
    from: std::time::Instant,
}

impl Default for VictimStats {
    fn default() -> Self {
        Self::measuring_from(std::time::Instant::now())
    }
}

impl VictimStats {
    pub fn measuring_from(from: std::time::Instant) -> Self {
        VictimStats {
            from,
            all: Mutex::new(new_histogram()),
            by_probe: Mutex::new([
                new_histogram(),
                new_histogram(),
                new_histogram(),
                new_histogram(),
            ]),
            refusals: Counts::default(),
            poison_4008: Default::default(),
        }
    }

    pub fn record(&self, probe: Probe, latency: Duration) {
        if std::time::Instant::now() < self.from {
            return;
        }
        let us = (latency.as_micros() as u64).clamp(1, crate::stats::HIST_MAX_US);
        if let Ok(mut h) = self.all.lock() {
            let _ = h.record(us);
        }
        if let Ok(mut h) = self.by_probe.lock() {
            let _ = h[probe as usize].record(us);
        }
    }

    /// A refusal a well-behaved client must never see, by kind (`"http_503"`,
    /// `"error_rate_limited"`, `"close_4008"`, `"timeout_echo"`, ...).
    pub fn refuse(&self, kind: &str) {
        self.refusals.bump(kind);
    }

    pub fn summary(&self) -> LatencySummary {
        self.all
            .lock()
            .map(|h| LatencySummary::of(&h))
            .unwrap_or_default()
    }

    pub fn probe_summaries(&self) -> BTreeMap<String, LatencySummary> {
        let names = ["echo", "ping", "connect", "poison_join"];
        let mut out = BTreeMap::new();
        if let Ok(hs) = self.by_probe.lock() {
            for (name, h) in names.iter().zip(hs.iter()) {
                if !h.is_empty() {
                    out.insert((*name).to_string(), LatencySummary::of(h));
                }
            }
        }
        out
    }
}

/// Count and percentiles in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Least-squares slope (bytes per second) of the last half of an RSS series: near zero when
/// memory has plateaued, positive while it still grows. `None` with fewer than 4 points.
pub fn slope_last_half(series: &[(f64, u64)]) -> Option<f64> {
    let half = &series[series.len() / 2..];
    if half.len() < 2 || series.len() < 4 {
        return None;
    }
    let n = half.len() as f64;
    let mean_t = half.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = half.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for &(t, y) in half {
        cov += (t - mean_t) * (y as f64 - mean_y);
        var += (t - mean_t) * (t - mean_t);
    }
    if var == 0.0 {
        return None;
    }
    Some(cov / var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_plateau_is_zero() {
        let series: Vec<(f64, u64)> = (0..20u32)
            .map(|i| {
                (
                    f64::from(i) * 0.1,
                    if i < 10 { u64::from(i) * 1000 } else { 10_000 },
                )
            })
            .collect();
        let s = slope_last_half(&series).expect("enough points");
        assert!(s.abs() < 1e-9, "{s}");
    }

    #[test]
    fn slope_of_a_line_is_its_rate() {
        // 1 MiB per second, sampled every 100 ms; the first half is noise that must not count.
        let series: Vec<(f64, u64)> = (0..40u64)
            .map(|i| {
                let t = i as f64 * 0.1;
                let y = if i < 20 { 7 } else { (t * 1_048_576.0) as u64 };
                (t, y)
            })
            .collect();
        let s = slope_last_half(&series).expect("enough points");
        assert!((s - 1_048_576.0).abs() < 1_000.0, "{s}");
    }

    #[test]
    fn slope_needs_points() {
        assert_eq!(slope_last_half(&[]), None);
        assert_eq!(slope_last_half(&[(0.0, 1), (1.0, 2), (2.0, 3)]), None);
        assert_eq!(slope_last_half(&[(1.0, 1); 6]), None);
    }

    #[test]
    fn percentiles_in_ms() {
        let v = VictimStats::default();
        for ms in 1..=100u64 {
            v.record(Probe::Echo, Duration::from_millis(ms));
        }
        let s = v.summary();
        assert_eq!(s.samples, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(v.probe_summaries().len(), 1);
    }
}
