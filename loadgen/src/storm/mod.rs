//! `--scenario reconnect-storm`: a fanout run in which, at `--storm-at`, a `--storm-fraction`
//! of the clients drop their connections at once (a load balancer restart, a network blip),
//! reconnect at once (jittered within `--storm-spread`) and rejoin their room with `since`
//! (the last seq they saw) and `epoch`: the relay's resume. The report says how long until
//! every dropped client was back and resumed, whether the relay recovered what they missed
//! (`joined.recovered`, the gap's messages in `joined.history`), the exact loss, duplicates
//! and reordering of the dropped clients across the gap, and what the clients that stayed
//! saw meanwhile.
//!
//! - [`StormFlags`]: the flags (flattened into [`Config`]); [`StormPlan`]: who drops, when.
//! - [`stats`]: what each runtime thread counts ([`stats::StormStats`], merged like the rest
//!   of the worker report).
//! - [`report`]: the report's `storm` section and its table; [`html`]: its HTML section.
//! - The client's side (the drop, the reconnect, the rejoin's `joined`) is
//!   `client/storm.rs`, beside the connection it works on.
//!
//! How a client drops: it stops reading, sends its TCP FIN (no WebSocket close: the relay
//! sees a vanished client), reads and throws away whatever the relay had already sent it
//! until the relay closes, then reconnects. Reading to the end (rather than closing with
//! data unread, which makes the kernel answer with a reset that can destroy our last
//! messages in the relay's receive buffer) keeps every count exact: each message the client
//! wrote reached the relay, and each message frame it threw away is counted
//! (`discarded_at_drop`), so the relay's delivery count still cross-checks.

pub mod html;
pub mod report;
pub mod stats;

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::config::{parse_duration, Config, Scenario};
use crate::Error;

/// Flags of `--scenario reconnect-storm`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StormFlags {
    /// Reconnect storm: the fraction of the clients (0-1] dropped at once at --storm-at.
    #[arg(long, env = "LOADGEN_STORM_FRACTION", default_value_t = 0.25)]
    pub storm_fraction: f64,

    /// Reconnect storm: when the clients drop, from the start of the send phase (e.g. 10s)
    /// [default: a third of --duration].
    #[arg(long, env = "LOADGEN_STORM_AT", value_parser = parse_duration)]
    #[serde(with = "crate::config::opt_secs")]
    pub storm_at: Option<Duration>,

    /// Reconnect storm: each dropped client reconnects at a random moment within this long
    /// after the drop (0: all at once).
    #[arg(long, env = "LOADGEN_STORM_SPREAD", default_value = "0s", value_parser = parse_duration)]
    #[serde(with = "crate::config::secs")]
    pub storm_spread: Duration,
}

impl Default for StormFlags {
    fn default() -> Self {
        StormFlags {
            storm_fraction: 0.25,
            storm_at: None,
            storm_spread: Duration::ZERO,
        }
    }
}

/// Who drops and when (part of the [`Plan`](crate::plan::Plan) of a storm run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StormPlan {
    /// Nanoseconds after the start of the send phase.
    pub at_ns: u64,
    pub fraction: f64,
    pub spread_ns: u64,
}

/// The golden ratio's fractional part: `frac(i * PHI)` spreads any run of ids evenly over
/// [0, 1), so the dropped clients are spread over rooms, threads and worker processes alike.
const PHI: f64 = 0.618_033_988_749_894_9;

impl StormPlan {
    /// The storm of `cfg`, `None` for the other scenarios (validated by [`validate`]).
    pub fn of(cfg: &Config) -> Option<StormPlan> {
        if cfg.scenario != Scenario::ReconnectStorm {
            return None;
        }
        let at = cfg.storm.storm_at.unwrap_or(cfg.duration / 3);
        Some(StormPlan {
            at_ns: at.as_nanos() as u64,
            fraction: cfg.storm.storm_fraction,
            spread_ns: cfg.storm.storm_spread.as_nanos() as u64,
        })
    }

    /// Whether client `id` is one of those dropped (about `fraction` of any range of ids).
    pub fn drops(&self, id: u64) -> bool {
        self.fraction >= 1.0 || ((id as f64 + 0.5) * PHI).fract() < self.fraction
    }

    /// How long after the drop client `id` reconnects: a fixed pseudo-random point of the
    /// spread (the same on every run, so runs compare).
    pub fn jitter_ns(&self, id: u64) -> u64 {
        if self.spread_ns == 0 {
            return 0;
        }
        // A second low-discrepancy sequence, independent of the one that picks the clients.
        let u = ((id as f64 + 0.5) * std::f64::consts::SQRT_2).fract();
        (u * self.spread_ns as f64) as u64
    }
}

/// Refuses a storm that cannot happen (checked with the other flags, before anything starts).
pub fn validate(cfg: &Config) -> Result<(), Error> {
    if cfg.scenario != Scenario::ReconnectStorm {
        return Ok(());
    }
    let bad = |m: String| Err(Error::Config(m));
    let f = cfg.storm.storm_fraction;
    if !(f.is_finite() && f > 0.0 && f <= 1.0) {
        return bad(format!("--storm-fraction must be in (0, 1], not {f}"));
    }
    let at = cfg.storm.storm_at.unwrap_or(cfg.duration / 3);
    if at.is_zero() || at >= cfg.duration {
        return bad(format!(
            "--storm-at ({:.3}s) must fall inside the send phase (--duration {:.3}s), after its start",
            at.as_secs_f64(),
            cfg.duration.as_secs_f64()
        ));
    }
    if cfg.rate <= 0.0 {
        return bad(
            "--scenario reconnect-storm measures messages across the gap: give --rate".into(),
        );
    }
    Ok(())
}

/// What the storm would exceed of the relay's default limits: all dropped clients
/// reconnect within `--storm-spread`, from as many addresses as the ramp-up used.
pub fn warnings(cfg: &Config, plan: &crate::plan::Plan) -> Vec<String> {
    let Some(storm) = plan.storm else {
        return Vec::new();
    };
    let l = crate::limits::RELAY_DEFAULTS;
    let relays = plan.targets.len().max(1) as f64;
    let addresses = if plan.targets.iter().any(|t| t.remote) {
        1.0
    } else {
        f64::from(plan.source_ips.max(1))
    };
    let per_address = plan.clients as f64 * storm.fraction / relays / addresses;
    let spread_s = storm.spread_ns as f64 / 1e9;
    let allowed = f64::from(l.connection_burst_per_ip) + l.connection_rate_per_ip * spread_s;
    if per_address > allowed && cfg.scenario == Scenario::ReconnectStorm {
        vec![format!(
            "the storm reconnects {per_address:.0} clients per address and relay within {spread_s:.1}s, \
             above the relay's default --connection-rate-per-ip {} (burst {}): a relay with default \
             limits answers the excess with HTTP 429 (that may be what you want to see)",
            l.connection_rate_per_ip, l.connection_burst_per_ip
        )]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fraction_of_any_range_drops_spread_evenly() {
        let plan = StormPlan {
            at_ns: 1,
            fraction: 0.25,
            spread_ns: 1_000_000_000,
        };
        let dropped: Vec<u64> = (0..200).filter(|&i| plan.drops(i)).collect();
        assert!((48..=52).contains(&dropped.len()), "{}", dropped.len());
        // Over 10 rooms and over 2 threads (odd and even ids) alike.
        for room in 0..10 {
            let n = dropped.iter().filter(|&&i| i % 10 == room).count();
            assert!((2..=8).contains(&n), "room {room}: {n}");
        }
        let odd = dropped.iter().filter(|&&i| i % 2 == 1).count();
        assert!((18..=32).contains(&odd), "{odd}");
        assert!((0..200).all(|i| plan.jitter_ns(i) < plan.spread_ns));
        let all = StormPlan {
            fraction: 1.0,
            spread_ns: 0,
            ..plan
        };
        assert!((0..100).all(|i| all.drops(i) && all.jitter_ns(i) == 0));
    }

    #[test]
    fn storms_outside_the_send_phase_are_refused() {
        let mut c = Config {
            scenario: Scenario::ReconnectStorm,
            duration: Duration::from_secs(3),
            ..Config::default()
        };
        assert!(validate(&c).is_ok());
        assert_eq!(StormPlan::of(&c).map(|p| p.at_ns), Some(1_000_000_000));
        c.storm.storm_at = Some(Duration::from_secs(3));
        assert!(validate(&c).is_err());
        c.storm.storm_at = Some(Duration::from_secs(1));
        c.storm.storm_fraction = 0.0;
        assert!(validate(&c).is_err());
        c.storm.storm_fraction = 1.5;
        assert!(validate(&c).is_err());
    }
}
