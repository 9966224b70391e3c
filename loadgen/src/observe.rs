//! The flags and report sections of the "against real deployments" work: the relay's
//! `/metrics` ([`crate::scrape`]), the capacity search ([`crate::capacity`]) and the HTML
//! report ([`crate::html`]).
//!
//! Kept together so that [`Config`](crate::Config) carries them as one flattened struct
//! ([`ObserveFlags`]) and [`Report`](crate::Report) as one flattened field ([`Observed`]):
//! the shared files change by one line each.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::capacity::{CapacityReport, Slo};
use crate::config::parse_duration;
use crate::scrape::RelayMetrics;

/// Flags of `--metrics-url`, `--scenario capacity` and `--html`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ObserveFlags {
    /// The relay's Prometheus page (http://host:port/metrics; plain http; repeatable, one per
    /// relay): scraped before the send phase, every second during it and after the drain, to
    /// cross-check deliveries and report the relay's CPU, RSS, connections and closes.
    #[arg(
        long = "metrics-url",
        env = "LOADGEN_METRICS_URL",
        value_delimiter = ','
    )]
    pub metrics_urls: Vec<String>,

    /// Bearer token sent with every --metrics-url scrape (the relay's admin token, when the
    /// page is scraped on its admin listener).
    #[arg(long, env = "LOADGEN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Capacity scenario: clients added per step.
    #[arg(long, env = "LOADGEN_STEP_CLIENTS", default_value_t = 0)]
    pub step_clients: u64,

    /// Capacity scenario: messages/s added per step.
    #[arg(long, env = "LOADGEN_STEP_RATE", default_value_t = 0.0)]
    pub step_rate: f64,

    /// Capacity scenario: send phase of each step [default: --duration].
    #[arg(long, env = "LOADGEN_STEP_DURATION", value_parser = parse_duration)]
    #[serde(with = "opt_secs")]
    pub step_duration: Option<Duration>,

    /// Capacity scenario: the most steps to run (the base load is step 1).
    #[arg(long, env = "LOADGEN_MAX_STEPS", default_value_t = 10)]
    pub max_steps: u32,

    /// Capacity scenario: latency objectives a step must meet, e.g. `p99<50ms` (p50, p90, p99,
    /// p99.9, p99.99, max; < or <=; us, ms, s); repeatable or comma-separated. Any loss, any
    /// client that fails to join and any 4008/4029 close always break a step.
    #[arg(long, env = "LOADGEN_SLO", value_delimiter = ',')]
    pub slo: Vec<Slo>,

    /// Print and record the rates, p50/p99 latency and server RSS (--server-pid) per interval
    /// of this length (e.g. 10s); a steady RSS rise over the last intervals is flagged.
    #[arg(long, env = "LOADGEN_REPORT_INTERVAL", value_parser = parse_duration)]
    #[serde(with = "opt_secs")]
    pub report_interval: Option<Duration>,

    /// Write a self-contained HTML report (inline SVG and CSS, no scripts, no network) here.
    #[arg(long, env = "LOADGEN_HTML")]
    pub html: Option<PathBuf>,
}

impl Default for ObserveFlags {
    fn default() -> Self {
        ObserveFlags {
            metrics_urls: Vec::new(),
            admin_token: None,
            step_clients: 0,
            step_rate: 0.0,
            step_duration: None,
            max_steps: 10,
            slo: Vec::new(),
            html: None,
            report_interval: None,
        }
    }
}

/// The report's sections from this module's features (flattened into the JSON's top level).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Observed {
    /// `--metrics-url`: the relay's own numbers over the run.
    pub relay_metrics: Option<RelayMetrics>,
    /// `--scenario capacity`: the steps and the answer.
    pub capacity: Option<CapacityReport>,
    /// `--report-interval`: one row per interval.
    pub intervals: Option<crate::interval::IntervalReport>,
    /// `--scenario reconnect-storm`: the drop, the resume, the gap, the others.
    pub storm: Option<crate::storm::report::StormReport>,
}

/// This module's sections of the table (after the existing ones).
pub fn render_table(out: &mut String, o: &Observed) {
    if let Some(m) = &o.relay_metrics {
        crate::scrape::render_table(out, m);
    }
    if let Some(i) = &o.intervals {
        crate::interval::render_table(out, i);
    }
    if let Some(c) = &o.capacity {
        crate::capacity::render_table(out, c);
    }
    if let Some(s) = &o.storm {
        crate::storm::report::render_table(out, s);
    }
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}
