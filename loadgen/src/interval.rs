//! `--report-interval D`: the send phase and the drain cut into intervals of `D` (aligned to
//! multiples of `D` on the wall clock, so the workers' per-interval latency histograms line up
//! without being told when the send phase began).
//!
//! The coordinator's [`Recorder`] prints one line per interval on stderr as it ends (sent and
//! delivered per second, the server's RSS from `--server-pid`) and keeps it; after the run the
//! rows get their p50/p99 from the merged per-interval histograms (the workers only hand those
//! in at the end), and a leak is flagged when the RSS rose in every one of the last intervals.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::capacity::commas;
use crate::sysinfo;
use crate::worker::Snapshot;

/// A leak needs the RSS to rise in at least this many consecutive intervals...
const LEAK_INTERVALS: usize = 3;
/// ... by more than this in total (allocator noise and warm-up stay below) ...
const LEAK_MIN_BYTES: u64 = 1 << 20;
/// ... and by more than this fraction of where it started.
const LEAK_MIN_FRACTION: f64 = 0.05;

/// One interval (`intervals.rows[]` in the JSON report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntervalRow {
    /// Seconds from the start of the send phase.
    pub start_s: f64,
    pub end_s: f64,
    pub sent_per_second: f64,
    pub delivered_per_second: f64,
    /// End-to-end latency of the deliveries that arrived in the interval (null: none did).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// `--server-pid` RSS at the end of the interval (null without `--server-pid`).
    pub server_rss_bytes: Option<u64>,
}

/// `intervals` in the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntervalReport {
    pub interval_s: f64,
    pub rows: Vec<IntervalRow>,
    /// Why the RSS looks like a leak (null: it does not, or there is no RSS).
    pub rss_leak: Option<String>,
}

struct Open {
    row: IntervalRow,
    /// The wall-clock bucket (`ns / every`) whose histogram belongs to this row.
    bucket: u64,
}

/// Cuts the run into intervals as the coordinator's progress ticks go by.
pub struct Recorder {
    every: u64,
    t0: u64,
    next: u64,
    last_t: u64,
    last: Snapshot,
    pids: Vec<u32>,
    rows: Vec<Open>,
}

impl Recorder {
    /// `None` when `every_ns` is 0 (no `--report-interval`).
    pub fn new(every_ns: u64, t0: u64, pids: &[u32]) -> Option<Recorder> {
        (every_ns > 0).then(|| Recorder {
            every: every_ns,
            t0,
            next: (t0 / every_ns + 1) * every_ns,
            last_t: t0,
            last: Snapshot::default(),
            pids: pids.to_vec(),
            rows: Vec::new(),
        })
    }

    /// Closes the interval if `now` passed its end; returns the line to print.
    pub fn tick(&mut self, now: u64, s: &Snapshot) -> Option<String> {
        if now < self.next {
            return None;
        }
        let end = self.next;
        self.next = (now / self.every + 1) * self.every;
        Some(self.close(end, now, s))
    }

    fn close(&mut self, end: u64, now: u64, s: &Snapshot) -> String {
        let dt = (now.saturating_sub(self.last_t)).max(1) as f64 / 1e9;
        let row = IntervalRow {
            start_s: self.last_t.saturating_sub(self.t0) as f64 / 1e9,
            end_s: now.saturating_sub(self.t0) as f64 / 1e9,
            sent_per_second: s.sent.saturating_sub(self.last.sent) as f64 / dt,
            delivered_per_second: s.delivered.saturating_sub(self.last.delivered) as f64 / dt,
            p50_ms: None,
            p99_ms: None,
            server_rss_bytes: if self.pids.is_empty() {
                None
            } else {
                sysinfo::sample_pids(&self.pids).map(|p| p.rss_bytes)
            },
        };
        let line = line(&row);
        self.rows.push(Open {
            row,
            bucket: end.saturating_sub(1) / self.every,
        });
        self.last_t = now;
        self.last = *s;
        line
    }

    /// Closes the last (partial) interval at `now` and fills in the latency of every row.
    pub fn finish(
        mut self,
        now: u64,
        s: &Snapshot,
        by_bucket: &BTreeMap<u64, Histogram<u64>>,
    ) -> IntervalReport {
        if now > self.last_t + self.every / 10 {
            let _ = self.close(now, now, s);
        }
        let rows: Vec<IntervalRow> = self
            .rows
            .into_iter()
            .map(|mut o| {
                if let Some(h) = by_bucket.get(&o.bucket).filter(|h| !h.is_empty()) {
                    o.row.p50_ms = Some(h.value_at_quantile(0.5) as f64 / 1000.0);
                    o.row.p99_ms = Some(h.value_at_quantile(0.99) as f64 / 1000.0);
                }
                o.row
            })
            .collect();
        IntervalReport {
            interval_s: self.every as f64 / 1e9,
            rss_leak: rss_leak(&rows),
            rows,
        }
    }
}

fn line(r: &IntervalRow) -> String {
    let rss = r
        .server_rss_bytes
        .map(|b| format!("  server rss {:.1} MiB", b as f64 / 1048576.0))
        .unwrap_or_default();
    format!(
        "interval {:>7.1}-{:<7.1}s  sent {:>9}/s  delivered {:>11}/s{rss}",
        r.start_s,
        r.end_s,
        commas(r.sent_per_second.round() as u64),
        commas(r.delivered_per_second.round() as u64)
    )
}

/// A leak: the RSS rose in each of the last [`LEAK_INTERVALS`] or more intervals, by more
/// than [`LEAK_MIN_BYTES`] and [`LEAK_MIN_FRACTION`] in total.
pub fn rss_leak(rows: &[IntervalRow]) -> Option<String> {
    let rss: Vec<u64> = rows.iter().filter_map(|r| r.server_rss_bytes).collect();
    let mut rising = 0;
    for w in rss.windows(2).rev() {
        if w[1] > w[0] {
            rising += 1;
        } else {
            break;
        }
    }
    if rising < LEAK_INTERVALS {
        return None;
    }
    let from = rss[rss.len() - 1 - rising];
    let to = rss[rss.len() - 1];
    let grew = to - from;
    if grew <= LEAK_MIN_BYTES || (grew as f64) <= from as f64 * LEAK_MIN_FRACTION {
        return None;
    }
    Some(format!(
        "server RSS rose in each of the last {rising} intervals, from {:.1} to {:.1} MiB (+{:.0}%): a possible leak",
        from as f64 / 1048576.0,
        to as f64 / 1048576.0,
        grew as f64 / from.max(1) as f64 * 100.0
    ))
}

/// `250 ms`, `10 s`.
pub fn span(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s} s")
    }
}

/// The INTERVALS section of the table.
pub fn render_table(o: &mut String, r: &IntervalReport) {
    let _ = writeln!(o, "\nINTERVALS ({})", span(r.interval_s));
    let _ = writeln!(
        o,
        "  {:>15} {:>11} {:>13} {:>9} {:>9} {:>12}",
        "seconds", "sent/s", "delivered/s", "p50 ms", "p99 ms", "server rss"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for row in &r.rows {
        let _ = writeln!(
            o,
            "  {:>7.1}-{:<7.1} {:>11} {:>13} {:>9} {:>9} {:>12}",
            row.start_s,
            row.end_s,
            commas(row.sent_per_second.round() as u64),
            commas(row.delivered_per_second.round() as u64),
            ms(row.p50_ms),
            ms(row.p99_ms),
            row.server_rss_bytes.map_or_else(
                || "-".to_string(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0)
            )
        );
    }
    if let Some(why) = &r.rss_leak {
        let _ = writeln!(o, "  ** {why} **");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rss: Option<u64>) -> IntervalRow {
        IntervalRow {
            start_s: 0.0,
            end_s: 1.0,
            sent_per_second: 0.0,
            delivered_per_second: 0.0,
            p50_ms: None,
            p99_ms: None,
            server_rss_bytes: rss,
        }
    }

    #[test]
    fn leaks_are_steady_rises() {
        let mib = 1u64 << 20;
        let rows: Vec<IntervalRow> = [50, 60, 70, 80, 90]
            .iter()
            .map(|m| row(Some(m * mib)))
            .collect();
        let why = rss_leak(&rows).expect("a leak");
        assert!(why.contains("last 4 intervals"), "{why}");
        // A plateau at the end is no leak; nor is a rise too small to matter.
        let flat: Vec<IntervalRow> = [50, 60, 70, 80, 80]
            .iter()
            .map(|m| row(Some(m * mib)))
            .collect();
        assert_eq!(rss_leak(&flat), None);
        let tiny: Vec<IntervalRow> = (0..6).map(|i| row(Some(500 * mib + i * 1000))).collect();
        assert_eq!(rss_leak(&tiny), None);
        assert_eq!(rss_leak(&[row(None), row(None)]), None);
    }

    #[test]
    fn intervals_line_up_with_buckets() {
        let every = 1_000_000_000;
        let t0 = 10 * every + every / 2;
        let mut r = Recorder::new(every, t0, &[]).expect("enabled");
        assert!(r.tick(t0 + 100, &Snapshot::default()).is_none());
        let s = Snapshot {
            sent: 50,
            delivered: 500,
            ..Snapshot::default()
        };
        let line = r
            .tick(11 * every + 1_000_000, &s)
            .expect("the first interval closed");
        assert!(line.contains("delivered"), "{line}");
        let mut h = crate::stats::new_histogram();
        h.saturating_record(2000);
        let by_bucket = BTreeMap::from([(10u64, h)]);
        let rep = r.finish(11 * every + 600_000_000, &s, &by_bucket);
        assert_eq!(rep.rows.len(), 2);
        assert!(
            (rep.rows[0].sent_per_second - 100.0).abs() < 1.0,
            "{:?}",
            rep.rows[0]
        );
        assert_eq!(rep.rows[0].p50_ms, Some(2.0));
        assert_eq!(rep.rows[1].p50_ms, None);
    }
}
