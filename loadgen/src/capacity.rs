//! `--scenario capacity`: the load is raised step by step from the base `--clients`/`--rate`
//! (`--step-clients`, `--step-rate`, each step `--step-duration` long, at most `--max-steps`)
//! until a step breaks an objective or the generator itself saturates. The answer is one
//! sentence ("The relay holds 18,000 clients at 36,000 msg/s (2.9M deliveries/s) with p99
//! 41 ms; at 20,000 clients, p99 was 73 ms (objective p99<50ms)") and the table of steps.
//!
//! A step is one ordinary run ([`crate::coord::run`] with the fanout workload): the same
//! ramp, send, drain and report, so the numbers of a step mean what they mean in any run.
//! A step breaks on any `--slo` it misses and, always, on any loss (missing deliveries,
//! unsent messages), any client that failed to join, any connection the relay closed
//! (4008 slow consumer and 4029 rate limited named), any `error` event, and a relay delivery
//! count (`--metrics-url`) that disagrees with the clients'. A step on which the generator
//! saturated ends the search with "the generator, not the relay, was the limit": its numbers
//! measure the generator.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Scenario};
use crate::report::{Percentiles, Report};
use crate::scrape::{self, MetricsUrl};
use crate::Error;

/// Pause between steps so the relay has closed the last step's connections.
const STEP_PAUSE: Duration = Duration::from_secs(1);
/// With `--metrics-url`: how long to wait at most for the open connections to fall back.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);

/// A latency objective: `p99<50ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slo {
    pub metric: SloMetric,
    pub limit_ms: f64,
    /// `<=` rather than `<`.
    pub inclusive: bool,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SloMetric {
    P50,
    P90,
    P99,
    P999,
    P9999,
    Max,
}

impl SloMetric {
    fn of(self, p: &Percentiles) -> f64 {
        match self {
            SloMetric::P50 => p.p50,
            SloMetric::P90 => p.p90,
            SloMetric::P99 => p.p99,
            SloMetric::P999 => p.p999,
            SloMetric::P9999 => p.p9999,
            SloMetric::Max => p.max,
        }
    }
}

impl Slo {
    /// Whether latency percentiles `p` meet the objective.
    pub fn holds(&self, p: &Percentiles) -> bool {
        let v = self.metric.of(p);
        if self.inclusive {
            v <= self.limit_ms
        } else {
            v < self.limit_ms
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Slo, String> {
        let text: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let bad = || {
            format!("{s:?} is not an objective like p99<50ms (p50, p90, p99, p99.9, p99.99, max; < or <=)")
        };
        let (name, inclusive, value) = if let Some((n, v)) = text.split_once("<=") {
            (n, true, v)
        } else if let Some((n, v)) = text.split_once('<') {
            (n, false, v)
        } else {
            return Err(bad());
        };
        let metric = match name.to_ascii_lowercase().as_str() {
            "p50" => SloMetric::P50,
            "p90" => SloMetric::P90,
            "p99" => SloMetric::P99,
            "p99.9" | "p999" => SloMetric::P999,
            "p99.99" | "p9999" => SloMetric::P9999,
            "max" => SloMetric::Max,
            _ => return Err(bad()),
        };
        let limit = crate::config::parse_duration(value).map_err(|_| bad())?;
        // A bare number is milliseconds here (latency objectives are written in ms).
        let limit_ms = if value.chars().any(|c| c.is_ascii_alphabetic()) {
            limit.as_secs_f64() * 1e3
        } else {
            limit.as_secs_f64()
        };
        if limit_ms <= 0.0 {
            return Err(bad());
        }
        Ok(Slo {
            metric,
            limit_ms,
            inclusive,
            text,
        })
    }
}

impl TryFrom<String> for Slo {
    type Error = String;
    fn try_from(s: String) -> Result<Slo, String> {
        s.parse()
    }
}

impl From<Slo> for String {
    fn from(s: Slo) -> String {
        s.text
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Held,
    Broke,
    GeneratorLimit,
}

/// One step of the search (`capacity.steps[]` in the JSON report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// 1 is the base load.
    pub step: u32,
    pub clients: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub joined: u64,
    pub failed: u64,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_per_second: f64,
    pub missing: u64,
    pub unsent: u64,
    pub latency_ms: Percentiles,
    /// Connections the relay closed during the step, by close code.
    pub closes: BTreeMap<String, u64>,
    pub error_events: u64,
    pub generator_cpu_percent: f64,
    pub generator_saturated: bool,
    /// From `--server-pid`, else `--metrics-url` (null when neither gives it).
    pub server_cpu_percent: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    /// `--metrics-url`: whether the relay's delivery count agreed with the clients'.
    pub relay_delivered_matches: Option<bool>,
    pub outcome: Outcome,
    /// Why the step did not hold (objectives missed, losses, the generator's saturation).
    pub reasons: Vec<String>,
}

/// What limited the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A step broke an objective: the relay's limit.
    Relay,
    /// The generator saturated first: the relay's limit is higher than measured.
    Generator,
    /// Every step held up to `--max-steps`.
    NotReached,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub sentence: String,
    pub limit: Limit,
    /// The last step that held (null when the base load did not).
    pub clients: Option<u64>,
    pub rate: Option<f64>,
    pub deliveries_per_second: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `capacity` in the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityReport {
    pub slo: Vec<String>,
    pub step_clients: u64,
    pub step_rate: f64,
    pub step_duration_s: f64,
    pub max_steps: u32,
    pub steps: Vec<StepReport>,
    pub answer: Answer,
}

fn validate(config: &Config) -> Result<(), Error> {
    let o = &config.observe;
    let bad = |m: &str| Err(Error::Config(m.to_string()));
    if o.step_clients == 0 && o.step_rate == 0.0 {
        return bad(
            "--scenario capacity needs --step-clients or --step-rate (what to raise per step)",
        );
    }
    if !(o.step_rate.is_finite() && o.step_rate >= 0.0) {
        return bad("--step-rate must be a non-negative number");
    }
    if o.max_steps == 0 {
        return bad("--max-steps must be at least 1");
    }
    if config.rate <= 0.0 && o.step_rate == 0.0 {
        return bad("--scenario capacity sends messages: give --rate or --step-rate");
    }
    Ok(())
}

/// The configuration of step `i` (0-based): an ordinary fanout run that writes no files.
fn step_config(config: &Config, i: u32, duration: Duration) -> Config {
    let mut c = config.clone();
    c.scenario = Scenario::Fanout;
    c.clients = config.clients + u64::from(i) * config.observe.step_clients;
    c.rate = config.rate + f64::from(i) * config.observe.step_rate;
    c.duration = duration;
    // The files are written once, for the whole search.
    c.json = None;
    c.hdr = None;
    c.plot = None;
    c.observe.html = None;
    c
}

/// Runs the search and returns the report of the last step that held (the first step when
/// none did), with `capacity` filled in; writes `--json`/`--hdr`/`--plot`/`--html`.
pub fn run(config: Config) -> Result<Report, Error> {
    validate(&config)?;
    let o = &config.observe;
    let duration = o.step_duration.unwrap_or(config.duration);
    let urls = o
        .metrics_urls
        .iter()
        .map(|u| MetricsUrl::parse(u).map_err(|e| Error::Config(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let token = o.admin_token.as_deref();
    let open_at_start = if urls.is_empty() {
        None
    } else {
        scrape::scrape_blocking(&urls, token)
            .ok()
            .and_then(|n| n.connections_open)
    };
    let mut steps: Vec<StepReport> = Vec::new();
    let mut held: Option<Report> = None;
    let mut first: Option<Report> = None;
    for i in 0..o.max_steps {
        if i > 0 {
            settle(&urls, token, open_at_start);
        }
        let c = step_config(&config, i, duration);
        if !config.no_progress {
            eprintln!(
                "capacity step {}: {} clients, {} msg/s",
                i + 1,
                commas(c.clients),
                commas(c.rate.round() as u64)
            );
        }
        let (clients, rate) = (c.clients, c.rate);
        let r = match crate::coord::run(c) {
            Ok(r) => r,
            // A later step the generator cannot even start (sockets, processes) is the
            // generator's limit; at the base load it is a plain error.
            Err(e) if i > 0 => {
                steps.push(failed_step(i, clients, rate, duration, &e));
                break;
            }
            Err(e) => return Err(e),
        };
        let step = judge(i, &r, &o.slo);
        let outcome = step.outcome;
        steps.push(step);
        if outcome == Outcome::Held {
            held = Some(r);
        } else {
            if held.is_none() {
                first = Some(r);
            }
            break;
        }
    }
    let answer = answer(&steps, o.step_clients > 0, o.step_rate > 0.0, o.max_steps);
    let mut report = held
        .or(first)
        .ok_or_else(|| Error::Config("the capacity search ran no step".into()))?;
    report.config.scenario = "capacity".to_string();
    report.observe.capacity = Some(CapacityReport {
        slo: o.slo.iter().map(|s| s.as_str().to_string()).collect(),
        step_clients: o.step_clients,
        step_rate: o.step_rate,
        step_duration_s: duration.as_secs_f64(),
        max_steps: o.max_steps,
        steps,
        answer,
    });
    crate::output::write_outputs(&config, &report)?;
    Ok(report)
}

/// Waits for the relay to let go of the last step's connections: with `--metrics-url` until
/// `relay_connections_open` is back to where it was before step 1 (bounded), then a fixed
/// pause, since the relay's connection cap counts a closing socket a little longer than its
/// open-connections gauge does.
fn settle(urls: &[MetricsUrl], token: Option<&str>, open_at_start: Option<f64>) {
    if let Some(base) = open_at_start {
        let deadline = Instant::now() + SETTLE_LIMIT;
        while Instant::now() < deadline {
            match scrape::scrape_blocking(urls, token) {
                Ok(n) if n.connections_open.is_some_and(|open| open > base) => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                _ => break,
            }
        }
    }
    std::thread::sleep(STEP_PAUSE);
}

fn failed_step(i: u32, clients: u64, rate: f64, duration: Duration, e: &Error) -> StepReport {
    StepReport {
        step: i + 1,
        clients,
        rate,
        duration_s: duration.as_secs_f64(),
        joined: 0,
        failed: 0,
        sent: 0,
        delivered: 0,
        delivered_per_second: 0.0,
        missing: 0,
        unsent: 0,
        latency_ms: Percentiles::default(),
        closes: BTreeMap::new(),
        error_events: 0,
        generator_cpu_percent: 0.0,
        generator_saturated: true,
        server_cpu_percent: None,
        server_rss_bytes: None,
        relay_delivered_matches: None,
        outcome: Outcome::GeneratorLimit,
        reasons: vec![format!("the generator could not run the step: {e}")],
    }
}

/// Judges one step's report against the objectives.
pub fn judge(i: u32, r: &Report, slos: &[Slo]) -> StepReport {
    let k = &r.connect;
    let m = &r.messages;
    let e = &r.server_events;
    let mut reasons = Vec::new();
    if let Some(why) = &r.loadgen.saturation {
        reasons.push(format!("the generator saturated ({why})"));
    }
    for slo in slos {
        if !slo.holds(&r.latency_ms) {
            reasons.push(format!(
                "{} was {} (objective {})",
                slo.as_str().split(['<', '=']).next().unwrap_or("latency"),
                ms(slo.metric.of(&r.latency_ms)),
                slo.as_str()
            ));
        }
    }
    if k.failed.total > 0 {
        let f = &k.failed;
        reasons.push(format!(
            "{} of {} clients failed to join (refused {}, timeout {}, handshake {}, reset {}, other {})",
            commas(f.total),
            commas(r.config.clients),
            f.refused,
            f.timeout,
            f.handshake,
            f.reset,
            f.other
        ));
        // The relay's own word for why, when it was scraped.
        let refused = r
            .observe
            .relay_metrics
            .as_ref()
            .map(|m| &m.rejected_by_reason)
            .filter(|m| !m.is_empty());
        if let (Some(refused), Some(last)) = (refused, reasons.last_mut()) {
            let _ = write!(last, "; the relay refused {refused:?}");
        }
    }
    if m.missing > 0 {
        reasons.push(format!("{} deliveries were missing", commas(m.missing)));
    }
    if m.unsent > 0 {
        reasons.push(format!(
            "{} messages could not be sent (the relay stopped reading)",
            commas(m.unsent)
        ));
    }
    if m.duplicated > 0 {
        reasons.push(format!(
            "{} deliveries were duplicated",
            commas(m.duplicated)
        ));
    }
    // Closes: the clients' view, or the relay's own count when it saw more.
    let mut closes: BTreeMap<String, u64> = e.close_codes.clone();
    if let Some(rm) = &r.observe.relay_metrics {
        for (code, n) in &rm.closed_by_code {
            // "client" closes are ours (the end of the run); only relay-sent codes count.
            if code.chars().all(|c| c.is_ascii_digit()) {
                let slot = closes.entry(code.clone()).or_default();
                *slot = (*slot).max(*n);
            }
        }
    }
    for (code, name) in [("4008", "slow consumer"), ("4029", "rate limited")] {
        if let Some(n) = closes.get(code).filter(|n| **n > 0) {
            reasons.push(format!(
                "{} connections were closed with {code} ({name})",
                commas(*n)
            ));
        }
    }
    let other_closes: u64 = closes
        .iter()
        .filter(|(c, _)| *c != "4008" && *c != "4029")
        .map(|(_, n)| n)
        .sum();
    if other_closes > 0 {
        reasons.push(format!(
            "the relay closed {} connections (codes {:?})",
            commas(other_closes),
            closes
        ));
    }
    let errors: u64 = e.errors.values().sum();
    if errors > 0 {
        reasons.push(format!(
            "the relay sent {} error events ({:?})",
            commas(errors),
            e.errors
        ));
    }
    let relay_check = r
        .observe
        .relay_metrics
        .as_ref()
        .and_then(|rm| rm.delivered.as_ref());
    if let Some(d) = relay_check.filter(|d| !d.matches) {
        reasons.push(format!(
            "the relay counted {} deliveries, the clients received {}",
            commas(d.relay),
            commas(d.loadgen)
        ));
    }
    if m.sent > 0 && m.delivered == 0 && reasons.is_empty() {
        reasons.push("nothing was delivered".to_string());
    }
    let outcome = if r.loadgen.saturated {
        Outcome::GeneratorLimit
    } else if reasons.is_empty() {
        Outcome::Held
    } else {
        Outcome::Broke
    };
    let rm = r.observe.relay_metrics.as_ref();
    StepReport {
        step: i + 1,
        clients: r.config.clients,
        rate: r.config.rate,
        duration_s: r.config.duration_s,
        joined: k.joined,
        failed: k.failed.total,
        sent: m.sent,
        delivered: m.delivered,
        delivered_per_second: m.delivered_per_second,
        missing: m.missing,
        unsent: m.unsent,
        latency_ms: r.latency_ms.clone(),
        closes,
        error_events: errors,
        generator_cpu_percent: r.loadgen.run_cpu_percent,
        generator_saturated: r.loadgen.saturated,
        server_cpu_percent: r
            .server
            .as_ref()
            .map(|s| s.cpu_percent)
            .or_else(|| rm.and_then(|m| m.cpu_percent)),
        server_rss_bytes: r
            .server
            .as_ref()
            .map(|s| s.rss_bytes)
            .or_else(|| rm.and_then(|m| m.rss_bytes)),
        relay_delivered_matches: relay_check.map(|d| d.matches),
        outcome,
        reasons,
    }
}

/// The one-sentence answer.
pub fn answer(steps: &[StepReport], by_clients: bool, by_rate: bool, max_steps: u32) -> Answer {
    let held = steps.iter().rfind(|s| s.outcome == Outcome::Held);
    let last = steps.last();
    let at = |s: &StepReport| match (by_clients, by_rate) {
        (true, true) => format!(
            "{} clients and {} msg/s",
            commas(s.clients),
            commas(s.rate.round() as u64)
        ),
        (false, true) => format!("{} msg/s", commas(s.rate.round() as u64)),
        _ => format!("{} clients", commas(s.clients)),
    };
    let why = |s: &StepReport| {
        let mut w = s.reasons.first().cloned().unwrap_or_default();
        if s.reasons.len() > 1 {
            let _ = write!(w, " (and {} more)", s.reasons.len() - 1);
        }
        w
    };
    let limit = match last.map(|s| s.outcome) {
        Some(Outcome::Broke) => Limit::Relay,
        Some(Outcome::GeneratorLimit) => Limit::Generator,
        _ => Limit::NotReached,
    };
    let mut sentence = match held {
        Some(h) => format!(
            "The relay holds {} clients at {} msg/s ({} deliveries/s) with p99 {}",
            commas(h.clients),
            commas(h.rate.round() as u64),
            deliveries(h.delivered_per_second),
            ms(h.latency_ms.p99)
        ),
        None => String::new(),
    };
    match (held.is_some(), last, limit) {
        (true, Some(l), Limit::Relay) => {
            let _ = write!(sentence, "; at {}, {}", at(l), why(l));
        }
        (true, Some(l), Limit::Generator) => {
            let _ = write!(
                sentence,
                "; at {}, {}: the generator, not the relay, was the limit (give the generator more cores or machines)",
                at(l),
                why(l)
            );
        }
        (true, _, _) => {
            let _ = write!(
                sentence,
                "; no objective broke in {max_steps} steps (raise --max-steps or the step sizes)"
            );
        }
        (false, Some(l), Limit::Generator) => {
            sentence = format!(
                "At the base load ({}), {}: the generator, not the relay, was the limit",
                at(l),
                why(l)
            );
        }
        (false, Some(l), _) => {
            sentence = format!(
                "The relay does not hold the base load: at {}, {}",
                at(l),
                why(l)
            );
        }
        (false, None, _) => sentence = "No step ran".to_string(),
    }
    sentence.push('.');
    Answer {
        sentence,
        limit,
        clients: held.map(|h| h.clients),
        rate: held.map(|h| h.rate),
        deliveries_per_second: held.map(|h| h.delivered_per_second),
        p99_ms: held.map(|h| h.latency_ms.p99),
    }
}

/// `12,345`.
pub fn commas(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2.9M` from a million on, else with commas.
pub fn deliveries(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else {
        commas(v.round() as u64)
    }
}

/// `41 ms`, `4.1 ms`, `0.41 ms`.
pub fn ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0} ms")
    } else if v >= 1.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}%"))
}

/// The CAPACITY section of the table.
pub fn render_table(o: &mut String, c: &CapacityReport) {
    let slo = if c.slo.is_empty() {
        "none".to_string()
    } else {
        c.slo.join(", ")
    };
    let _ = writeln!(
        o,
        "\nCAPACITY (steps of +{} clients, +{} msg/s, {:.1}s each, at most {}; objectives: {slo}; always: no loss, no failed joins, no relay closes)",
        commas(c.step_clients),
        c.step_rate,
        c.step_duration_s,
        c.max_steps
    );
    let _ = writeln!(
        o,
        "  {:>4} {:>9} {:>9} {:>13} {:>9} {:>9} {:>9} {:>7} {:>9} {:>6} {:>6} {:>8} {:>8}  outcome",
        "step",
        "clients",
        "msg/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "failed",
        "missing",
        "4008",
        "4029",
        "gen cpu",
        "srv cpu"
    );
    for s in &c.steps {
        let code = |k: &str| s.closes.get(k).copied().unwrap_or(0);
        let outcome = match s.outcome {
            Outcome::Held => "held".to_string(),
            Outcome::Broke => format!("BROKE: {}", s.reasons.join("; ")),
            Outcome::GeneratorLimit => format!("GENERATOR LIMIT: {}", s.reasons.join("; ")),
        };
        let _ = writeln!(
            o,
            "  {:>4} {:>9} {:>9} {:>13.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>9} {:>6} {:>6} {:>7.0}% {:>8}  {outcome}",
            s.step,
            commas(s.clients),
            commas(s.rate.round() as u64),
            s.delivered_per_second,
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.latency_ms.p999,
            commas(s.failed),
            commas(s.missing),
            code("4008"),
            code("4029"),
            s.generator_cpu_percent,
            opt_pct(s.server_cpu_percent)
        );
    }
    let _ = writeln!(o, "\n{}", c.answer.sentence);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: u32, clients: u64, p99: f64, outcome: Outcome, reasons: &[&str]) -> StepReport {
        let mut s = failed_step(
            i,
            clients,
            clients as f64 * 2.0,
            Duration::from_secs(1),
            &Error::Config(String::new()),
        );
        s.latency_ms.p99 = p99;
        s.delivered_per_second = clients as f64 * 161.0;
        s.outcome = outcome;
        s.generator_saturated = outcome == Outcome::GeneratorLimit;
        s.reasons = reasons.iter().map(|r| r.to_string()).collect();
        s
    }

    #[test]
    fn parses_objectives() {
        let s: Slo = "p99<50ms".parse().expect("slo");
        assert_eq!(
            (s.metric, s.limit_ms, s.inclusive),
            (SloMetric::P99, 50.0, false)
        );
        let s: Slo = " p99.9 <= 0.2s".parse().expect("slo");
        assert_eq!(
            (s.metric, s.limit_ms, s.inclusive),
            (SloMetric::P999, 200.0, true)
        );
        assert_eq!(s.as_str(), "p99.9<=0.2s");
        let s: Slo = "max<250".parse().expect("bare number is ms");
        assert_eq!(s.limit_ms, 250.0);
        let s: Slo = "p50<500us".parse().expect("slo");
        assert!((s.limit_ms - 0.5).abs() < 1e-9);
        for bad in ["p98<5ms", "p99>5ms", "p99<", "p99<0ms", "p99<5y", ""] {
            assert!(bad.parse::<Slo>().is_err(), "{bad}");
        }
        let p = Percentiles {
            p99: 50.0,
            ..Percentiles::default()
        };
        assert!(!"p99<50ms".parse::<Slo>().expect("slo").holds(&p));
        assert!("p99<=50ms".parse::<Slo>().expect("slo").holds(&p));
        let json = serde_json::to_string(&"p99<50ms".parse::<Slo>().expect("slo")).expect("json");
        assert_eq!(json, "\"p99<50ms\"");
        assert!(serde_json::from_str::<Slo>("\"nonsense\"").is_err());
    }

    #[test]
    fn sentences() {
        let steps = [
            step(0, 16_000, 20.0, Outcome::Held, &[]),
            step(1, 18_000, 41.2, Outcome::Held, &[]),
            step(
                2,
                20_000,
                73.0,
                Outcome::Broke,
                &["p99 was 73 ms (objective p99<50ms)"],
            ),
        ];
        let a = answer(&steps, true, false, 10);
        assert_eq!(
            a.sentence,
            "The relay holds 18,000 clients at 36,000 msg/s (2.9M deliveries/s) with p99 41 ms; at 20,000 clients, p99 was 73 ms (objective p99<50ms)."
        );
        assert_eq!((a.limit, a.clients), (Limit::Relay, Some(18_000)));

        let a = answer(&steps[..2], true, true, 2);
        assert!(
            a.sentence.contains("no objective broke in 2 steps"),
            "{}",
            a.sentence
        );
        assert_eq!(a.limit, Limit::NotReached);

        let g = [
            step(0, 100, 1.0, Outcome::Held, &[]),
            step(
                1,
                200,
                1.5,
                Outcome::GeneratorLimit,
                &["the generator saturated (x)"],
            ),
        ];
        let a = answer(&g, false, true, 5);
        assert!(a.sentence.contains("at 400 msg/s, the generator saturated (x): the generator, not the relay, was the limit"), "{}", a.sentence);
        assert_eq!(a.limit, Limit::Generator);

        let none = [step(0, 100, 9.0, Outcome::Broke, &["a", "b"])];
        let a = answer(&none, true, false, 5);
        assert_eq!(
            a.sentence,
            "The relay does not hold the base load: at 100 clients, a (and 1 more)."
        );
        assert_eq!(a.clients, None);
        assert_eq!(commas(1_234_567), "1,234,567");
        assert_eq!(deliveries(2_898_000.0), "2.9M");
        assert_eq!(ms(4.12), "4.1 ms");
    }
}
