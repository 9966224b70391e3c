//! Per-attack results, the verdict against the bounds, and the stdout table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::attack::Attack;
use super::config::HostileConfig;
use super::tally::{slope_last_half, LatencySummary, VictimStats};

const MIB: f64 = 1024.0 * 1024.0;

/// The relay's memory during one attack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RssReport {
    pub start_mib: f64,
    pub peak_mib: f64,
    pub final_mib: f64,
    /// Least-squares slope of the last half of the samples: ~0 once memory plateaus.
    pub slope_last_half_mib_per_s: Option<f64>,
    pub samples: usize,
    /// RSS over time, one point a second: (seconds since the relay started, MiB).
    pub series_mib: Vec<(f64, f64)>,
}

/// The victim's side of one attack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VictimReport {
    /// All probes together: what the verdict's p99 is about.
    pub latency: LatencySummary,
    /// Each probe on its own (echo, ping, connect, poison_join).
    pub by_probe: BTreeMap<String, LatencySummary>,
    pub refusals_total: u64,
    pub refusals: BTreeMap<String, u64>,
    /// Attack F's normal joiners closed with 4008.
    pub poison_4008: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AttackReport {
    pub attack: String,
    pub label: &'static str,
    pub rss: RssReport,
    pub victim: VictimReport,
    /// The attacker's outcomes: what it sent, HTTP statuses (`http_429`), `error` events
    /// by code, closes by code.
    pub attacker: BTreeMap<String, u64>,
    /// Share of the attacker's HTTP answers that were refusals, not 101 or 200 (percent).
    pub attacker_refused_pct: Option<f64>,
    /// Set when the relay died during the attack (it must not).
    pub relay_exited: Option<String>,
    /// The relay's first WARN/ERROR log lines.
    pub relay_warnings: Vec<String>,
    pub verdict: &'static str,
    pub reasons: Vec<String>,
}

impl AttackReport {
    pub fn new(
        cfg: &HostileConfig,
        attack: Attack,
        series: &[(f64, u64)],
        stats: &VictimStats,
        attacker: BTreeMap<String, u64>,
        relay_exited: Option<String>,
        relay_warnings: Vec<String>,
    ) -> AttackReport {
        let mib = |b: u64| b as f64 / MIB;
        let rss = RssReport {
            start_mib: series.first().map_or(0.0, |s| mib(s.1)),
            peak_mib: series.iter().map(|s| mib(s.1)).fold(0.0, f64::max),
            final_mib: series.last().map_or(0.0, |s| mib(s.1)),
            slope_last_half_mib_per_s: slope_last_half(series).map(|s| s / MIB),
            samples: series.len(),
            series_mib: per_second(series)
                .map(|(t, b)| ((t * 10.0).round() / 10.0, (mib(b) * 10.0).round() / 10.0))
                .collect(),
        };
        let refusals = stats.refusals.snapshot();
        let victim = VictimReport {
            latency: stats.summary(),
            by_probe: stats.probe_summaries(),
            refusals_total: refusals.values().sum(),
            refusals,
            poison_4008: stats.poison_4008.load(Ordering::Relaxed),
        };
        let answered: u64 = attacker
            .iter()
            .filter(|(k, _)| k.starts_with("http_"))
            .map(|(_, v)| *v)
            .sum();
        // Upgrades (101) and plain answers (200, attack D) are what the attacker asked for.
        let ok = ["http_101", "http_200"]
            .iter()
            .filter_map(|k| attacker.get(*k))
            .sum::<u64>();
        let attacker_refused_pct =
            (answered > 0).then(|| 100.0 * (answered - ok) as f64 / answered as f64);
        let mut reasons = Vec::new();
        if rss.peak_mib >= cfg.max_rss_mib {
            reasons.push(format!(
                "peak RSS {:.1} MiB >= {} MiB",
                rss.peak_mib, cfg.max_rss_mib
            ));
        }
        if victim.latency.samples == 0 {
            reasons.push("the victim measured nothing".to_string());
        } else if victim.latency.p99_ms >= cfg.max_p99_ms {
            reasons.push(format!(
                "victim p99 {:.1} ms >= {} ms",
                victim.latency.p99_ms, cfg.max_p99_ms
            ));
        }
        if victim.refusals_total > 0 {
            reasons.push(format!(
                "{} victim refusal(s): {}",
                victim.refusals_total,
                compact(&victim.refusals)
            ));
        }
        if let Some(status) = &relay_exited {
            reasons.push(format!("relay exited: {status}"));
        }
        AttackReport {
            attack: attack.name(),
            label: attack.label(),
            rss,
            victim,
            attacker,
            attacker_refused_pct,
            relay_exited,
            relay_warnings,
            verdict: if reasons.is_empty() { "PASS" } else { "FAIL" },
            reasons,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SuiteReport {
    pub config: HostileConfig,
    pub attacks: Vec<AttackReport>,
    pub pass: bool,
}

impl SuiteReport {
    pub fn new(cfg: &HostileConfig, attacks: Vec<AttackReport>) -> SuiteReport {
        let pass = attacks.iter().all(|a| a.verdict == "PASS");
        SuiteReport {
            config: cfg.clone(),
            attacks,
            pass,
        }
    }

    /// A Markdown table (it reads fine on a terminal too) and, below it, each attack's
    /// attacker-side counts and failure reasons.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| attack | peak RSS MiB | final RSS MiB | slope MiB/s | victim p50 ms | p99 ms | \
             max ms | samples | refusals | attacker refused % | verdict |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for a in &self.attacks {
            let _ = writeln!(
                out,
                "| {} {} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
                a.label,
                a.attack,
                a.rss.peak_mib,
                a.rss.final_mib,
                a.rss
                    .slope_last_half_mib_per_s
                    .map_or("-".to_string(), |s| format!("{s:.2}")),
                a.victim.latency.p50_ms,
                a.victim.latency.p99_ms,
                a.victim.latency.max_ms,
                a.victim.latency.samples,
                a.victim.refusals_total,
                a.attacker_refused_pct
                    .map_or("-".to_string(), |p| format!("{p:.1}")),
                a.verdict
            );
        }
        out.push('\n');
        for a in &self.attacks {
            let _ = writeln!(
                out,
                "- {} {}: attacker {}",
                a.label,
                a.attack,
                compact(&a.attacker)
            );
            let probes: Vec<String> = a
                .victim
                .by_probe
                .iter()
                .map(|(k, s)| format!("{k} p99 {:.2} ms (n={})", s.p99_ms, s.samples))
                .collect();
            let _ = writeln!(out, "  victim: {}", probes.join(", "));
            if a.attack.starts_with("history-poison") {
                let _ = writeln!(
                    out,
                    "  normal joiners closed with 4008: {}",
                    a.victim.poison_4008
                );
            }
            for r in &a.reasons {
                let _ = writeln!(out, "  FAIL: {r}");
            }
        }
        let _ = writeln!(
            out,
            "\n{}",
            if self.pass { "ALL PASS" } else { "SOME FAIL" }
        );
        out
    }
}

/// The first sample of each second (the 100 ms series is for peak and slope; a second's
/// resolution is enough to read the shape from the JSON).
fn per_second(series: &[(f64, u64)]) -> impl Iterator<Item = (f64, u64)> + '_ {
    let mut next = 0.0;
    series.iter().copied().filter(move |&(t, _)| {
        if t >= next {
            next = t.floor() + 1.0;
            true
        } else {
            false
        }
    })
}

/// `a=1 b=2`, skipping the byte and EOF tallies nobody reads.
fn compact(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "bytes_in" | "eof" | "read_error"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_a_second() {
        let series: Vec<(f64, u64)> = (0..35u32)
            .map(|i| (f64::from(i) * 0.1, u64::from(i)))
            .collect();
        let kept: Vec<u64> = per_second(&series).map(|p| p.1).collect();
        assert_eq!(kept, vec![0, 10, 20, 30]);
    }
}
