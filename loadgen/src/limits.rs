//! A deployment's abuse limits: the relay's defaults, a warning before the run when the plan
//! would exceed them, and the report's count of what the relay refused (`rate_limited` error
//! events, 4029 closes).
//!
//! The warnings are not errors: a run may want to measure the limits themselves, and a relay
//! configured otherwise (`--message-rate 0` for benchmarks) has other limits than these.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Scenario};
use crate::plan::Plan;

/// The relay's default limits (`relay --help`; `relay/src/config/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayLimits {
    /// `--message-rate` and `--message-burst`: chat messages per connection.
    pub message_rate: f64,
    pub message_burst: u32,
    /// `--command-rate` and `--command-burst`: every other command per connection.
    pub command_rate: f64,
    pub command_burst: u32,
    /// `--ip-message-rate`: chat messages per client address, all its connections together.
    pub ip_message_rate: f64,
    /// `--connection-rate-per-ip` and `--connection-burst-per-ip`: new connections per address.
    pub connection_rate_per_ip: f64,
    pub connection_burst_per_ip: u32,
    /// `--max-connections-per-ip`.
    pub max_connections_per_ip: u64,
    /// `--rate-limit-strikes`: refusals within about 10 s before the 4029 close.
    pub strikes: u32,
}

pub const RELAY_DEFAULTS: RelayLimits = RelayLimits {
    message_rate: 2.0,
    message_burst: 10,
    command_rate: 10.0,
    command_burst: 30,
    ip_message_rate: 20.0,
    connection_rate_per_ip: 20.0,
    connection_burst_per_ip: 40,
    max_connections_per_ip: 500,
    strikes: 20,
};

/// The close code of a connection the rate limits gave up on.
pub const CLOSE_RATE_LIMITED: u16 = 4029;
/// The `error` code of one refused command.
pub const ERROR_RATE_LIMITED: &str = "rate_limited";

/// What the plan would send against a relay with [`RELAY_DEFAULTS`]; one line per limit
/// exceeded. Assumes every client joins, and distinct relays behind distinct `--url`s.
pub fn warnings(cfg: &Config, plan: &Plan) -> Vec<String> {
    let l = RELAY_DEFAULTS;
    let mut out = Vec::new();
    let clients = plan.clients.max(1) as f64;
    let sends = plan.sends();
    let per_client = if sends { plan.rate / clients } else { 0.0 };
    if per_client > l.message_rate {
        out.push(format!(
            "each client sends {per_client:.2} messages/s, above the relay's default --message-rate {} \
             (burst {}): a relay with default limits refuses the excess with rate_limited errors and \
             closes a connection with 4029 after {} refusals",
            l.message_rate, l.message_burst, l.strikes
        ));
    }
    if cfg.scenario == Scenario::Churn {
        // Each churn cycle is a leave and a join: two commands.
        let per_client = 2.0 * plan.churn_rate / clients;
        if per_client > l.command_rate {
            out.push(format!(
                "each client sends {per_client:.2} leave/join commands/s, above the relay's default \
                 --command-rate {} (burst {})",
                l.command_rate, l.command_burst
            ));
        }
    }
    // Per client address and relay: loopback runs spread over --source-ips, a remote target
    // sees this machine's one address.
    let relays = plan.targets.len().max(1) as f64;
    let addresses = if plan.targets.iter().any(|t| t.remote) {
        1.0
    } else {
        f64::from(plan.source_ips.max(1))
    };
    let per_address = clients / relays / addresses;
    if sends && plan.rate / relays / addresses > l.ip_message_rate {
        out.push(format!(
            "{:.1} messages/s arrive from each client address at each relay, above the relay's default \
             --ip-message-rate {}",
            plan.rate / relays / addresses,
            l.ip_message_rate
        ));
    }
    if per_address > l.max_connections_per_ip as f64 {
        out.push(format!(
            "{per_address:.0} connections from one address to one relay, above the relay's default \
             --max-connections-per-ip {} (the rest get HTTP 429)",
            l.max_connections_per_ip
        ));
    }
    let connect_per_address = plan.connect_rate / relays / addresses;
    if connect_per_address > l.connection_rate_per_ip
        && per_address > f64::from(l.connection_burst_per_ip)
    {
        out.push(format!(
            "{connect_per_address:.0} new connections/s from one address to one relay, above the \
             relay's default --connection-rate-per-ip {} (burst {}; the rest get HTTP 429): lower \
             --connect-rate",
            l.connection_rate_per_ip, l.connection_burst_per_ip
        ));
    }
    out.extend(crate::storm::warnings(cfg, plan));
    out
}

/// The report's `limits` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LimitsReport {
    /// `error` events with code `rate_limited`: commands (mostly messages) the relay refused.
    pub rate_limited: u64,
    /// Connections the relay closed with 4029 (too many refusals).
    pub closed_4029: u64,
    /// What the plan exceeds of the relay's default limits (printed before the run too).
    pub warnings: Vec<String>,
}

impl LimitsReport {
    pub fn new(
        cfg: &Config,
        plan: &Plan,
        error_codes: &BTreeMap<String, u64>,
        close_codes: &BTreeMap<u16, u64>,
    ) -> LimitsReport {
        LimitsReport {
            rate_limited: error_codes.get(ERROR_RATE_LIMITED).copied().unwrap_or(0),
            closed_4029: close_codes.get(&CLOSE_RATE_LIMITED).copied().unwrap_or(0),
            warnings: warnings(cfg, plan),
        }
    }

    /// The table's RELAY LIMITS section.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "\nRELAY LIMITS");
        let _ = writeln!(out, "  rate_limited errors {:>10}", self.rate_limited);
        let _ = writeln!(out, "  closed with 4029    {:>10}", self.closed_4029);
        for w in &self.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str]) -> (Config, Plan) {
        let mut argv = vec!["loadgen", "--url", "ws://127.0.0.1:1/ws"];
        argv.extend_from_slice(args);
        let cfg = Config::try_parse_from(argv).expect("flags");
        let plan = Plan::new(&cfg, 0, 1_000_000_000).expect("plan");
        (cfg, plan)
    }

    #[test]
    fn warns_above_the_default_rates_only() {
        let (c, p) = plan(&["--clients", "100", "--rate", "10", "--connect-rate", "20"]);
        assert!(warnings(&c, &p).is_empty(), "{:?}", warnings(&c, &p));
        let (c, p) = plan(&["--clients", "10", "--rate", "50", "--connect-rate", "20"]);
        let w = warnings(&c, &p);
        assert!(w.iter().any(|w| w.contains("--message-rate 2")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("--ip-message-rate")), "{w:?}");
        let (c, p) = plan(&["--clients", "1000", "--rate", "10", "--source-ips", "1"]);
        let w = warnings(&c, &p);
        assert!(
            w.iter().any(|w| w.contains("--max-connections-per-ip")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|w| w.contains("--connection-rate-per-ip")),
            "{w:?}"
        );
        let (c, p) = plan(&[
            "--clients",
            "10",
            "--rate",
            "1",
            "--scenario",
            "churn",
            "--churn-rate",
            "100",
            "--connect-rate",
            "20",
        ]);
        assert!(warnings(&c, &p)
            .iter()
            .any(|w| w.contains("--command-rate")));
        let (c, p) = plan(&[
            "--clients",
            "10",
            "--rate",
            "50",
            "--scenario",
            "idle",
            "--connect-rate",
            "20",
        ]);
        assert!(warnings(&c, &p).is_empty(), "idle sends nothing");
    }

    #[test]
    fn counts_refusals_and_4029() {
        let (c, p) = plan(&[]);
        let errors = BTreeMap::from([("rate_limited".to_string(), 7), ("x".to_string(), 1)]);
        let closes = BTreeMap::from([(4029u16, 2), (1000, 5)]);
        let r = LimitsReport::new(&c, &p, &errors, &closes);
        assert_eq!((r.rate_limited, r.closed_4029), (7, 2));
        let mut t = String::new();
        r.render(&mut t);
        assert!(t.contains("rate_limited errors          7"), "{t}");
        assert!(t.contains("closed with 4029             2"), "{t}");
    }
}
