//! Command-line flags (clap derive). Every flag also reads a `LOADGEN_...` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// What the clients do once they have joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every client joins room `room-{i % rooms}` and sends its share of `--rate`.
    Fanout,
    /// Every client joins one room (`room-0`) and sends its share of `--rate`.
    Broadcast,
    /// Connect, join and hold: no messages; with `--server-pid`, server memory per connection.
    Idle,
    /// Like fanout, and clients also leave and rejoin their room at `--churn-rate` per second.
    Churn,
    /// Fanout runs of rising load (`--step-clients`, `--step-rate`) until an objective
    /// (`--slo`, no loss, no failed joins, no relay closes) breaks or the generator saturates.
    Capacity,
    /// Like fanout; at `--storm-at` a `--storm-fraction` of the clients drop their connections
    /// at once, reconnect and rejoin with `since` and `epoch` (the relay's resume).
    #[serde(rename = "reconnect-storm")]
    ReconnectStorm,
}

impl Scenario {
    /// The name on the command line and in the report (`reconnect-storm`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Broadcast => "broadcast",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
            Scenario::Capacity => "capacity",
            Scenario::ReconnectStorm => "reconnect-storm",
        }
    }
}

/// Load generator for chatrelay: opens many WebSocket clients against a relay (loopback unless
/// --allow-remote; ws:// or wss://), sends
/// chat messages on an open-loop schedule, and reports delivery counts and end-to-end latency.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(name = "loadgen", version)]
pub struct Config {
    /// Relay URL (ws:// or wss://host:port/path; loopback unless --allow-remote). Repeat to
    /// spread clients over relays.
    #[arg(
        long = "url",
        env = "LOADGEN_URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub urls: Vec<String>,

    /// With several --url: the relays form one cluster, so `room-N` is one room over all of
    /// them (otherwise each relay's `room-N` is a separate room when counting expected deliveries).
    #[arg(long, env = "LOADGEN_SHARED_ROOMS")]
    #[serde(default)]
    pub shared_rooms: bool,

    /// Number of WebSocket clients to open.
    #[arg(long, env = "LOADGEN_CLIENTS", default_value_t = 1000)]
    pub clients: u64,

    /// Number of rooms; client i joins `room-{i % rooms}` as `u{i}`.
    #[arg(long, env = "LOADGEN_ROOMS", default_value_t = 10)]
    pub rooms: u64,

    /// Total messages per second over all clients (open loop: sends follow a fixed schedule).
    #[arg(long, env = "LOADGEN_RATE", default_value_t = 1000.0)]
    pub rate: f64,

    /// How long messages are sent (e.g. 30s, 500ms, 2m).
    #[arg(long, env = "LOADGEN_DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "secs")]
    pub duration: Duration,

    /// Message text size in bytes (at least the ~30-byte `<t_ns>:<sender>:<n>:` stamp).
    #[arg(long, env = "LOADGEN_PAYLOAD", default_value_t = 64)]
    pub payload: usize,

    /// Send every chat message with a `ref` (unique per message): the relay then answers each
    /// with an `ack` and remembers it for de-duplication, so a run measures what
    /// acknowledged sends cost next to one without.
    #[arg(long, env = "LOADGEN_WITH_REF")]
    #[serde(default)]
    pub with_ref: bool,

    /// Workload shape.
    #[arg(long, env = "LOADGEN_SCENARIO", value_enum, default_value_t = Scenario::Fanout)]
    pub scenario: Scenario,

    /// Leave-and-rejoin cycles per second over all clients (churn scenario).
    #[arg(long, env = "LOADGEN_CHURN_RATE", default_value_t = 100.0)]
    pub churn_rate: f64,

    /// New connections per second during ramp-up, over all workers.
    #[arg(long, env = "LOADGEN_CONNECT_RATE", default_value_t = 5000.0)]
    pub connect_rate: f64,

    /// Per-client limit for TCP connect + upgrade + join acknowledgement.
    #[arg(long, env = "LOADGEN_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "secs")]
    pub connect_timeout: Duration,

    /// Overall ramp-up deadline; clients not joined by then count as timeouts
    /// [default: clients / connect-rate + connect-timeout].
    #[arg(long, env = "LOADGEN_RAMP_DEADLINE", value_parser = parse_duration)]
    #[serde(with = "opt_secs")]
    pub ramp_deadline: Option<Duration>,

    /// Time after the last send to collect in-flight deliveries before stopping.
    #[arg(long, env = "LOADGEN_DRAIN", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "secs")]
    pub drain: Duration,

    /// Source addresses 127.0.0.1 .. 127.0.0.N to spread client ports over
    /// [default: enough for 25,000 clients per address and target].
    #[arg(long, env = "LOADGEN_SOURCE_IPS")]
    pub source_ips: Option<u8>,

    /// Runtime threads in total (each a current-thread tokio runtime) [default: usable cores].
    #[arg(long, env = "LOADGEN_THREADS")]
    pub threads: Option<usize>,

    /// Worker processes [default: as many as the open-files limit requires].
    #[arg(long, env = "LOADGEN_WORKERS")]
    pub workers: Option<usize>,

    /// Write the report as JSON to this file (schema: loadgen/report.schema.json).
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// Write the latency histogram (microseconds) in HdrHistogram V2+deflate interchange format.
    #[arg(long, env = "LOADGEN_HDR")]
    pub hdr: Option<PathBuf>,

    /// Write the latency percentile distribution as an SVG plot.
    #[arg(long, env = "LOADGEN_PLOT")]
    pub plot: Option<PathBuf>,

    /// Relay process id(s) to sample CPU and RSS from /proc (repeatable).
    #[arg(long = "server-pid", env = "LOADGEN_SERVER_PID", value_delimiter = ',')]
    pub server_pids: Vec<u32>,

    /// Do not draw the progress bar on stderr.
    #[arg(long, env = "LOADGEN_NO_PROGRESS")]
    pub no_progress: bool,

    /// Do not print the table on stdout (the JSON file is still written).
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,

    /// Remote targets, TLS and authentication (`target::TargetFlags`).
    #[command(flatten)]
    #[serde(default)]
    pub target: crate::target::TargetFlags,
    // `--metrics-url`, `--scenario capacity` and `--html` (loadgen/src/observe.rs).
    #[command(flatten)]
    #[serde(default)]
    pub observe: crate::observe::ObserveFlags,
    // `--scenario reconnect-storm` (loadgen/src/storm/mod.rs).
    #[command(flatten)]
    #[serde(default)]
    pub storm: crate::storm::StormFlags,

    /// Internal: run as a worker process driven over stdin/stdout.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub worker: bool,
}

impl Default for Config {
    fn default() -> Self {
        // Parsing an empty command line gives exactly the documented defaults.
        match Config::try_parse_from(["loadgen"]) {
            Ok(c) => c,
            Err(e) => panic!("default flags must parse: {e}"),
        }
    }
}

/// Parses `250ms`, `30s`, `2m`, `1h` or a bare number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Durations in reports and across the worker pipe are seconds (f64), which is what the JSON
/// reports use: `#[serde(with = "crate::config::secs")]`.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// [`secs`] for an optional duration.
pub(crate) mod opt_secs {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn defaults_parse_and_round_trip() {
        let c = Config::default();
        assert_eq!(c.clients, 1000);
        let json = serde_json::to_string(&c).expect("serialize");
        let back: Config = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.duration, c.duration);
        let c = Config::try_parse_from([
            "loadgen",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--url",
            "ws://127.0.0.1:2/ws",
        ])
        .expect("parse");
        assert_eq!(c.urls.len(), 2);
    }
}
