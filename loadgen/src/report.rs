//! The final report: what `--json` writes (schema in loadgen/report.schema.json) and the
//! table printed on stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "chatrelay-loadgen-report/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub config: ReportConfig,
    pub connect: ConnectReport,
    pub messages: MessageReport,
    /// End-to-end latency from each message's schedule slot to its arrival, per receiver.
    pub latency_ms: Percentiles,
    /// How late the generator queued messages relative to their slots (its own lag).
    pub send_lag_ms: Percentiles,
    pub server_events: ServerEvents,
    /// How the relays were reached: TLS, verification, authentication.
    pub target: crate::target::TargetReport,
    /// What the relays' rate limits refused, and the plan's warnings about them.
    pub limits: crate::limits::LimitsReport,
    pub churn: Option<ChurnReport>,
    pub loadgen: LoadgenCpu,
    pub server: Option<ServerReport>,
    /// The merged latency histogram (microseconds), for `--hdr` and `--plot`.
    #[serde(skip)]
    pub latency_histogram: Option<Histogram<u64>>,
    /// `relay_metrics` and `capacity` (loadgen/src/observe.rs), at the JSON's top level.
    #[serde(flatten)]
    pub observe: crate::observe::Observed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportConfig {
    pub urls: Vec<String>,
    pub scenario: String,
    pub clients: u64,
    pub rooms: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub drain_s: f64,
    pub payload: usize,
    pub connect_rate: f64,
    pub churn_rate: Option<f64>,
    pub source_ips: u8,
    pub workers: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectReport {
    pub attempted: u64,
    pub joined: u64,
    pub failed: FailedReport,
    /// A few distinct error messages behind `failed.other` and lost connections.
    pub failure_samples: Vec<String>,
    /// TCP connect + upgrade + `joined` acknowledgement.
    pub time_ms: Percentiles,
    pub per_second: f64,
    pub ramp_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailedReport {
    pub total: u64,
    pub refused: u64,
    pub timeout: u64,
    pub handshake: u64,
    pub reset: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageReport {
    pub due: u64,
    pub sent: u64,
    /// Due but never completely written (the server stopped reading, or the run ended).
    pub unsent: u64,
    /// Sum over rooms of messages sent x members joined.
    pub expected: u64,
    /// False when room sizes changed during the run (churn, connections lost).
    pub expected_exact: bool,
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub seq_gaps: u64,
    /// Messages without this run's stamp (other clients, older runs).
    pub foreign: u64,
    pub delivered_per_second: f64,
    pub delivered_ratio: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a microsecond histogram, in milliseconds.
    pub fn from_us(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            p9999: ms(0.9999),
            max: h.max() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerEvents {
    pub errors: BTreeMap<String, u64>,
    pub closed_by_server: u64,
    pub close_codes: BTreeMap<String, u64>,
    pub other_events: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnReport {
    pub leaves: u64,
    pub rejoins: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadgenCpu {
    pub processes: usize,
    pub threads: usize,
    pub usable_cores: usize,
    /// CPU over all generator processes during the send phase, in % of one core.
    pub run_cpu_percent: f64,
    pub ramp_cpu_percent: f64,
    pub max_thread_cpu_percent: f64,
    pub saturated: bool,
    /// Why `saturated` is true; results are then a limit of the generator, not the server.
    pub saturation: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerReport {
    pub pids: Vec<u32>,
    pub rss_bytes: u64,
    pub rss_peak_bytes: u64,
    /// Server CPU during the send phase, % of one core (all pids together).
    pub cpu_percent: f64,
    /// RSS at the end divided by joined clients (includes start-up memory).
    pub rss_per_client_bytes: f64,
    /// Idle scenario: slope of RSS between half and all clients joined.
    pub memory_per_connection: Option<IdleSlope>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleSlope {
    pub joined_half: u64,
    pub rss_half_bytes: u64,
    pub joined_full: u64,
    pub rss_full_bytes: u64,
    pub bytes_per_connection: f64,
}

fn num(v: u64) -> String {
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

fn pct_row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<18} p50 {:>9.3}  p90 {:>9.3}  p99 {:>9.3}  p99.9 {:>9.3}  p99.99 {:>9.3}  max {:>9.3} ms  (n={})",
        p.p50, p.p90, p.p99, p.p999, p.p9999, p.max, num(p.count)
    );
}

/// The human-readable report (stdout).
pub fn render_table(r: &Report) -> String {
    let mut o = String::new();
    let c = &r.config;
    let _ = writeln!(o, "chatrelay loadgen: {} scenario, {} clients, {} rooms, {}/s for {:.1}s (+{:.1}s drain), payload {} B",
        c.scenario, num(c.clients), num(c.rooms), c.rate, c.duration_s, c.drain_s, c.payload);
    let _ = writeln!(
        o,
        "  targets: {}  (source IPs: {}, workers: {}, threads: {})",
        c.urls.join(", "),
        c.source_ips,
        c.workers,
        c.threads
    );
    r.target.render(&mut o);
    let k = &r.connect;
    let _ = writeln!(o, "\nCONNECT");
    let _ = writeln!(o, "  attempted {:>12}   joined {:>12}   failed {:>10}  (refused {}, timeout {}, handshake {}, reset {}, other {})",
        num(k.attempted), num(k.joined), num(k.failed.total), k.failed.refused, k.failed.timeout, k.failed.handshake, k.failed.reset, k.failed.other);
    let _ = writeln!(
        o,
        "  ramp {:.2}s, {:.0} connections/s",
        k.ramp_s, k.per_second
    );
    pct_row(&mut o, "connect time", &k.time_ms);
    for s in &k.failure_samples {
        let _ = writeln!(o, "  failure sample: {s}");
    }
    let m = &r.messages;
    let _ = writeln!(o, "\nMESSAGES");
    let _ = writeln!(
        o,
        "  due {:>14}   sent {:>14}   unsent {:>10}",
        num(m.due),
        num(m.sent),
        num(m.unsent)
    );
    let _ = writeln!(
        o,
        "  expected {:>9}{}  delivered {:>12}   ratio {:.6}",
        num(m.expected),
        if m.expected_exact { " " } else { "~" },
        num(m.delivered),
        m.delivered_ratio
    );
    let _ = writeln!(
        o,
        "  missing {:>10}   duplicated {:>8}   out of order {:>8}   seq gaps {:>8}   foreign {}",
        num(m.missing),
        num(m.duplicated),
        num(m.out_of_order),
        num(m.seq_gaps),
        num(m.foreign)
    );
    let _ = writeln!(o, "  delivered/s {:>14.0}", m.delivered_per_second);
    let _ = writeln!(
        o,
        "\nLATENCY (schedule slot -> arrival, no coordinated omission)"
    );
    pct_row(&mut o, "end-to-end", &r.latency_ms);
    pct_row(&mut o, "generator lag", &r.send_lag_ms);
    let e = &r.server_events;
    if !e.errors.is_empty() || e.closed_by_server > 0 {
        let _ = writeln!(o, "\nSERVER EVENTS");
        for (code, n) in &e.errors {
            let _ = writeln!(o, "  error {code}: {}", num(*n));
        }
        let _ = writeln!(
            o,
            "  connections closed by server: {}  codes: {:?}",
            num(e.closed_by_server),
            e.close_codes
        );
    }
    r.limits.render(&mut o);
    if let Some(ch) = &r.churn {
        let _ = writeln!(
            o,
            "\nCHURN  leaves {}  rejoins {}",
            num(ch.leaves),
            num(ch.rejoins)
        );
    }
    let l = &r.loadgen;
    let _ = writeln!(o, "\nLOADGEN CPU");
    let _ = writeln!(o, "  send phase {:.0}% of one core over {} process(es), {} thread(s), {} usable core(s); busiest thread {:.0}%; ramp {:.0}%",
        l.run_cpu_percent, l.processes, l.threads, l.usable_cores, l.max_thread_cpu_percent, l.ramp_cpu_percent);
    match &l.saturation {
        Some(why) => {
            let _ = writeln!(o, "  ** LOADGEN SATURATED: {why}. Numbers are a limit of the generator, not the server. **");
        }
        None => {
            let _ = writeln!(o, "  not saturated");
        }
    }
    if let Some(s) = &r.server {
        let _ = writeln!(o, "\nSERVER (pids {:?})", s.pids);
        let _ = writeln!(
            o,
            "  cpu {:.0}% of one core   rss {:.1} MiB   peak {:.1} MiB   rss/client {:.0} B",
            s.cpu_percent,
            s.rss_bytes as f64 / 1048576.0,
            s.rss_peak_bytes as f64 / 1048576.0,
            s.rss_per_client_bytes
        );
        if let Some(i) = &s.memory_per_connection {
            let _ = writeln!(o, "  memory per connection {:.0} B  (RSS {:.1} MiB at {} joined -> {:.1} MiB at {} joined)",
                i.bytes_per_connection, i.rss_half_bytes as f64 / 1048576.0, num(i.joined_half), i.rss_full_bytes as f64 / 1048576.0, num(i.joined_full));
        }
    }
    crate::observe::render_table(&mut o, &r.observe);
    o
}
