//! Command-line and environment configuration (`relay --help` is the reference).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A WebSocket chat relay: rooms, presence, typing, history, one shared frame per event.
#[derive(Parser, Debug, Clone)]
#[command(name = "relay", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Messages each room keeps and sends to joiners in `joined.history`.
    #[arg(long, env = "RELAY_HISTORY", default_value_t = 100)]
    pub history: usize,

    /// Most rooms one connection may be in at once.
    #[arg(long, env = "RELAY_MAX_ROOMS_PER_CONNECTION", default_value_t = 16)]
    pub max_rooms_per_connection: usize,

    /// Presence events and `joined` carry the full `users` list only while a room has at most
    /// this many members; above it they carry `count` alone.
    #[arg(long, env = "RELAY_PRESENCE_LIST_MAX", default_value_t = 100)]
    pub presence_list_max: usize,

    /// Longest chat `text`, in Unicode characters.
    #[arg(long, env = "RELAY_MAX_TEXT_CHARS", default_value_t = 2000)]
    pub max_text_chars: usize,

    /// Largest client message in bytes, all fragments counted together; larger closes with 1009.
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Bytes queued for one client before it is closed as a slow consumer (code 4008).
    #[arg(long, env = "RELAY_MAX_OUTBOUND_BYTES", default_value_t = 1024 * 1024)]
    pub max_outbound_bytes: usize,

    /// Interval between server pings; a client that has not answered by the next ping is
    /// closed with 4001 (e.g. "30s", "500ms").
    #[arg(long, env = "RELAY_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Time a TCP connection gets to complete its HTTP request or WebSocket upgrade.
    #[arg(long, env = "RELAY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// How long an empty room keeps its history (and epoch) before it is dropped, so a lone
    /// user who reconnects can still resume with `since`.
    #[arg(long, env = "RELAY_ROOM_LINGER", default_value = "60s", value_parser = parse_duration)]
    pub room_linger: Duration,

    /// On SIGINT/SIGTERM: time allowed for clients to receive their 1001 close before exit.
    #[arg(long, env = "RELAY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format: "text" for people, "json" for log pipelines. Level comes from RUST_LOG.
    #[arg(long, env = "RELAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Redis to join a cluster through (e.g. "redis://127.0.0.1:6379"): every relay using the
    /// same Redis and `--cluster-name` serves one chat. Unset: a single in-memory node.
    #[arg(long, env = "RELAY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel this cluster uses, so several apps can share
    /// one Redis.
    #[arg(long, env = "RELAY_CLUSTER_NAME", default_value = "chatrelay")]
    pub cluster_name: String,

    /// Presence entries of a node that stopped refreshing its liveness key (crashed, cut
    /// off) are pruned after this long (cluster mode).
    #[arg(long, env = "RELAY_PRESENCE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Commands (messages, joins) waiting for Redis before new ones are refused with
    /// `server_busy` (cluster mode); 0 means no limit, for benchmarks.
    #[arg(long, env = "RELAY_CLUSTER_QUEUE", default_value_t = 16384)]
    pub cluster_queue: usize,
}

impl Default for Config {
    /// The defaults exactly as `relay` with no flags (environment variables ignored).
    fn default() -> Self {
        // `try_parse_from` with only the program name cannot fail on a derive whose every field
        // has a default; tests rely on this being the same as the binary's defaults.
        match Config::try_parse_from(["relay"]) {
            Ok(config) => config,
            Err(err) => panic!("built-in defaults must parse: {err}"),
        }
    }
}

/// Parses "30s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 500ms, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, m or h"
            ))
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.history, 100);
        assert_eq!(config.max_outbound_bytes, 1 << 20);
        assert_eq!(config.ping_interval, Duration::from_secs(30));
    }
}
