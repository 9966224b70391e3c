//! The `hostile` binary's flags (clap derive); each also reads a `LOADGEN_HOSTILE_*` variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::attack::Attack;
use crate::config::parse_duration;

/// Hostile-load suite for chatrelay: starts a fresh relay (default flags) per attack, runs
/// the attack from loopback while a well-behaved victim measures its latency, and checks the
/// relay's peak RSS and the victim's p99 and refusals against the bounds.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "hostile", version)]
pub struct HostileConfig {
    /// The relay binary to start (one fresh process per attack, default flags plus --listen).
    #[arg(
        long,
        env = "LOADGEN_HOSTILE_RELAY_BIN",
        default_value = "target/release/relay"
    )]
    pub relay_bin: PathBuf,

    /// Attacks to run, comma-separated, or `all` (each in turn).
    #[arg(
        long,
        env = "LOADGEN_HOSTILE_ATTACK",
        value_enum,
        value_delimiter = ',',
        default_value = "all"
    )]
    pub attack: Vec<Attack>,

    /// How long each attack runs (e.g. 30s; the CI short form uses 5s).
    #[arg(long, env = "LOADGEN_HOSTILE_DURATION", default_value = "30s", value_parser = parse_duration)]
    #[serde(serialize_with = "crate::config::secs::serialize")]
    pub duration: Duration,

    /// Hard limit for the whole run; past it the relay is killed and the run exits with 2
    /// (default: attacks x (duration + 40 s)).
    #[arg(long, env = "LOADGEN_HOSTILE_TIMEOUT", value_parser = parse_duration)]
    #[serde(serialize_with = "crate::config::opt_secs::serialize")]
    pub timeout: Option<Duration>,

    /// PASS needs the relay's peak RSS during the attack under this many MiB.
    #[arg(long, env = "LOADGEN_HOSTILE_MAX_RSS_MIB", default_value_t = 512.0)]
    pub max_rss_mib: f64,

    /// PASS needs the victim's p99 latency (all probes together) under this many ms.
    #[arg(long, env = "LOADGEN_HOSTILE_MAX_P99_MS", default_value_t = 100.0)]
    pub max_p99_ms: f64,

    /// Writes the full report (per attack: RSS, victim latency and refusals, attacker
    /// counts, verdict) as JSON to this file.
    #[arg(long, env = "LOADGEN_HOSTILE_JSON")]
    pub json: Option<PathBuf>,

    /// Source address(es) of attack connections (loopback only; comma-separated to spread
    /// attacks that are not "one address" over several). B and G always use the first.
    #[arg(
        long,
        env = "LOADGEN_HOSTILE_ATTACKER_IP",
        value_delimiter = ',',
        default_value = "127.0.0.1"
    )]
    pub attacker_ip: Vec<IpAddr>,

    /// Source address of the victim (and of attack F's normal joiners): a different address
    /// than the attacker's, so per-address budgets keep them apart.
    #[arg(long, env = "LOADGEN_HOSTILE_VICTIM_IP", default_value = "127.0.0.2")]
    pub victim_ip: IpAddr,

    /// Victim chat clients in its room.
    #[arg(long, env = "LOADGEN_HOSTILE_VICTIM_CLIENTS", default_value_t = 5)]
    pub victim_clients: usize,

    /// Chat messages per second each victim client sends. The default stays under the
    /// relay's per-connection budget (--message-rate 2/s) and, over all clients, under the
    /// per-address one (--ip-message-rate 20/s): a well-behaved client is never refused.
    #[arg(long, env = "LOADGEN_HOSTILE_VICTIM_RATE", default_value_t = 1.5)]
    pub victim_rate: f64,

    /// Interval of the victim's WebSocket pings (one client sends them).
    #[arg(long, env = "LOADGEN_HOSTILE_VICTIM_PING_EVERY", default_value = "50ms", value_parser = parse_duration)]
    #[serde(serialize_with = "crate::config::secs::serialize")]
    pub victim_ping_every: Duration,

    /// Interval of the victim's fresh connect + upgrade + join probes.
    #[arg(long, env = "LOADGEN_HOSTILE_VICTIM_CONNECT_EVERY", default_value = "500ms", value_parser = parse_duration)]
    #[serde(serialize_with = "crate::config::secs::serialize")]
    pub victim_connect_every: Duration,

    /// No table on stdout (the JSON and the exit status still tell).
    #[arg(long, env = "LOADGEN_HOSTILE_QUIET")]
    pub quiet: bool,
}

impl HostileConfig {
    /// The attacks to run, `all` expanded, each once, in catalogue order.
    pub fn attacks(&self) -> Vec<Attack> {
        if self.attack.contains(&Attack::All) {
            return Attack::EACH.to_vec();
        }
        Attack::EACH
            .into_iter()
            .filter(|a| self.attack.contains(a))
            .collect()
    }

    pub fn overall_timeout(&self) -> Duration {
        self.timeout.unwrap_or_else(|| {
            (self.duration + Duration::from_secs(40)) * self.attacks().len().max(1) as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_in_order() {
        let c = HostileConfig::parse_from(["hostile", "--attack", "ping-flood,reconnect-rooms"]);
        assert_eq!(c.attacks(), vec![Attack::ReconnectRooms, Attack::PingFlood]);
        let c = HostileConfig::parse_from(["hostile", "--duration", "5s"]);
        assert_eq!(c.attacks().len(), 11);
        assert_eq!(c.duration, Duration::from_secs(5));
        assert_eq!(c.overall_timeout(), Duration::from_secs(495));
    }
}
