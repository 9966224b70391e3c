//! The flags and report sections of the "against real deployments" work: the relay's
//! `/metrics` ([`crate::scrape`]).
//!
//! Kept together so that [`Config`](crate::Config) carries them as one flattened struct
//! ([`ObserveFlags`]) and [`Report`](crate::Report) as one flattened field ([`Observed`]):
//! the shared files change by one line each.

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::scrape::RelayMetrics;

/// Flags of `--metrics-url`.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
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
}

/// The report's sections from this module's features (flattened into the JSON's top level).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Observed {
    /// `--metrics-url`: the relay's own numbers over the run.
    pub relay_metrics: Option<RelayMetrics>,
}

/// This module's sections of the table (after the existing ones).
pub fn render_table(out: &mut String, o: &Observed) {
    if let Some(m) = &o.relay_metrics {
        crate::scrape::render_table(out, m);
    }
}
