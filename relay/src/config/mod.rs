//! Command-line and environment configuration (`relay --help` is the reference).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

mod values;

pub use values::{AdminToken, Cidr};

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

    /// Bytes of history one room keeps at most (its oldest messages go first); a message is
    /// stored at its exact encoded size.
    #[arg(long, env = "RELAY_HISTORY_ROOM_BYTES", default_value_t = 256 * 1024)]
    pub history_room_bytes: usize,

    /// Bytes of history the whole node keeps at most. Past it, lingering (empty) rooms lose
    /// their history first, oldest first; rooms still in use then keep their fair share.
    #[arg(long, env = "RELAY_HISTORY_TOTAL_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub history_total_bytes: usize,

    /// Bytes of history one `joined` carries at most (newest kept; `historyTruncated` says
    /// when older ones were left out). A quarter of --max-outbound-bytes is used if that is
    /// less, so a join never trips the slow-consumer cap.
    #[arg(long, env = "RELAY_JOINED_HISTORY_BYTES", default_value_t = 128 * 1024)]
    pub joined_history_bytes: usize,

    /// Rooms the node holds at most, in use or lingering; at the limit the oldest lingering
    /// room is retired to make room, and with none a join of a new room gets `room_limit`.
    #[arg(long, env = "RELAY_MAX_ROOMS", default_value_t = 50_000)]
    pub max_rooms: usize,

    /// Rooms that connections from one address (IPv6: one /64) may have created and that
    /// still exist, lingering ones included; more get `room_limit` (0: no limit).
    #[arg(long, env = "RELAY_IP_ROOMS", default_value_t = 1_000)]
    pub ip_rooms: usize,

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

    /// How long a room remembers a sent message's `ref`: a resend with the same `ref` by the
    /// same user within it gets the first send's `ack` again and no second message (each
    /// user keeps at most 256 refs per room; docs/PROTOCOL.md "Acknowledged sends").
    #[arg(long, env = "RELAY_DEDUPE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub dedupe_window: Duration,
    /// How long a person whose last connection to a room dropped still counts as present
    /// before the others get `user_left` (a reload or a short network drop shows no leave and
    /// join); "0" announces at once. An explicit `leave` is always announced at once.
    #[arg(long, env = "RELAY_PRESENCE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub presence_grace: Duration,

    /// On SIGINT/SIGTERM: time allowed for clients to receive their 1001 close before exit.
    #[arg(long, env = "RELAY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Runtime worker threads (0 = tokio's `TOKIO_WORKER_THREADS` if set, else one per
    /// available core). With one, the relay runs a single-threaded runtime.
    #[arg(long, env = "RELAY_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Scheduler ticks between I/O polls (tokio's event interval; tokio's own default is 61).
    /// Flushers write once per poll round, so a longer round packs more frames into each
    /// write under load; at light load rounds end early anyway. See docs/PERFORMANCE.md.
    #[arg(long, env = "RELAY_EVENT_INTERVAL", default_value_t = 1024)]
    pub event_interval: u32,

    /// Log format: "text" for people, "json" for log pipelines. Level comes from RUST_LOG.
    #[arg(long, env = "RELAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Turns the admin HTTP API on (`docs/ADMIN.md`): requests must carry
    /// `Authorization: Bearer <token>`. At least 16 characters; prefer the environment
    /// variable, which other users cannot read in the process list.
    #[arg(long, env = "RELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// Serves the admin API (with /metrics, /healthz and /readyz) on this address only,
    /// instead of under /admin/ on the main listener. Needs --admin-token.
    #[arg(long, env = "RELAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    // --- Security and abuse resistance (see the README's "Security" section). ---
    /// HS256 secret that signs client tokens; setting it turns authentication on (a token is
    /// then required at the upgrade, in the `token` query parameter or a
    /// `Sec-WebSocket-Protocol` value).
    #[arg(
        long,
        env = "RELAY_AUTH_SECRET",
        hide_env_values = true,
        conflicts_with = "auth_public_key"
    )]
    pub auth_secret: Option<Secret>,

    /// PEM file with the public key that verifies client tokens (RS256 or ES256, as
    /// `--auth-algorithm` says); setting it turns authentication on.
    #[arg(long, env = "RELAY_AUTH_PUBLIC_KEY")]
    pub auth_public_key: Option<std::path::PathBuf>,

    /// The one JWT algorithm accepted: HS256 with `--auth-secret`, RS256 or ES256 with
    /// `--auth-public-key`. Never taken from the token.
    #[arg(long, env = "RELAY_AUTH_ALGORITHM", value_parser = ["HS256", "RS256", "ES256"])]
    pub auth_algorithm: Option<String>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "RELAY_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,

    /// Required `iss` claim, if set.
    #[arg(long, env = "RELAY_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// Clock skew allowed when checking a token's `exp` (and `nbf`).
    #[arg(long, env = "RELAY_AUTH_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub auth_leeway: Duration,

    /// Origin allowed to open a WebSocket (repeatable, or comma-separated in the environment):
    /// exact (`https://chat.example.com`) or a subdomain wildcard (`*.example.com`,
    /// `https://*.example.com`). When set, other Origins (or none) get HTTP 403.
    #[arg(
        long = "allowed-origin",
        env = "RELAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Chat messages per second one connection may send on average (0 turns the limit off).
    #[arg(long, env = "RELAY_MESSAGE_RATE", default_value_t = 2.0)]
    pub message_rate: f64,

    /// Chat messages one connection may send in a burst above `--message-rate`.
    #[arg(long, env = "RELAY_MESSAGE_BURST", default_value_t = 10)]
    pub message_burst: u32,

    /// Other commands per second (typing, join, leave, ping, malformed ones) one connection may
    /// send on average (0 turns the limit off).
    #[arg(long, env = "RELAY_COMMAND_RATE", default_value_t = 10.0)]
    pub command_rate: f64,

    /// Other commands one connection may send in a burst above `--command-rate`.
    #[arg(long, env = "RELAY_COMMAND_BURST", default_value_t = 30)]
    pub command_burst: u32,

    /// Chat messages per second all connections from one address (IPv6: one /64) may send
    /// together, so reconnecting does not refill a burst (0 turns the limit off).
    #[arg(long, env = "RELAY_IP_MESSAGE_RATE", default_value_t = 20.0)]
    pub ip_message_rate: f64,

    /// Chat messages one address may send in a burst above `--ip-message-rate`.
    #[arg(long, env = "RELAY_IP_MESSAGE_BURST", default_value_t = 100)]
    pub ip_message_burst: u32,

    /// Other commands per second all connections from one address may send together (0
    /// turns the limit off).
    #[arg(long, env = "RELAY_IP_COMMAND_RATE", default_value_t = 50.0)]
    pub ip_command_rate: f64,

    /// Other commands one address may send in a burst above `--ip-command-rate`.
    #[arg(long, env = "RELAY_IP_COMMAND_BURST", default_value_t = 200)]
    pub ip_command_burst: u32,

    /// WebSocket frames of any kind (text, binary, ping, pong, continuation, close) per
    /// second one connection may send on average; past its burst the relay stops reading the
    /// connection until the budget refills, so a flood slows its sender, not the relay
    /// (0 turns the limit off).
    #[arg(long, env = "RELAY_FRAME_RATE", default_value_t = 100.0)]
    pub frame_rate: f64,

    /// Frames one connection may send in a burst above `--frame-rate`.
    #[arg(long, env = "RELAY_FRAME_BURST", default_value_t = 200)]
    pub frame_burst: u32,

    /// A connection refused by the rate limits more than this many times within 10 seconds is
    /// closed with 4029 (0: never closed, only refused).
    #[arg(long, env = "RELAY_RATE_LIMIT_STRIKES", default_value_t = 20)]
    pub rate_limit_strikes: u32,

    /// Open connections (HTTP or WebSocket) from one source IP; more get HTTP 429 (0: no limit).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS_PER_IP", default_value_t = 500)]
    pub max_connections_per_ip: usize,

    /// Open connections in total; more get HTTP 503 (0: as many as the open-files limit allows).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// New connections accepted per second, all sources together, with one second's worth as
    /// burst; more get HTTP 503 (0: no limit).
    #[arg(long, env = "RELAY_CONNECTION_RATE", default_value_t = 1000.0)]
    pub connection_rate: f64,

    /// New connections per second from one address (an IPv6 address counts by its /64),
    /// checked before `--connection-rate` so one address cannot use up the node's; more get
    /// HTTP 429 (0 turns the limit off).
    #[arg(long, env = "RELAY_CONNECTION_RATE_PER_IP", default_value_t = 20.0)]
    pub connection_rate_per_ip: f64,

    /// New connections one address may open at once above `--connection-rate-per-ip`.
    #[arg(long, env = "RELAY_CONNECTION_BURST_PER_IP", default_value_t = 40)]
    pub connection_burst_per_ip: u32,

    /// Reverse proxy whose `X-Forwarded-For` (or `Forwarded`) header names the client, for
    /// the per-address limits and logs (repeatable, or comma-separated in the environment): a
    /// CIDR range (`10.0.0.0/8`, `fd00::/8`) or one address. Without it those headers are
    /// ignored.
    #[arg(
        long = "trusted-proxy",
        env = "RELAY_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<Cidr>,

    /// Requests one HTTP connection may make (keep-alive included): the answer to the last
    /// carries `Connection: close` and the connection ends (0: no limit).
    #[arg(
        long,
        env = "RELAY_HTTP_REQUESTS_PER_CONNECTION",
        default_value_t = 100
    )]
    pub http_requests_per_connection: u32,

    /// Requests per second one HTTP connection may make, with one second's worth as burst;
    /// later ones (pipelined, say) wait their turn (0 turns the limit off).
    #[arg(long, env = "RELAY_HTTP_REQUEST_RATE", default_value_t = 10.0)]
    pub http_request_rate: f64,

    /// PEM certificate chain: with `--tls-key`, serves wss:// and https:// directly.
    #[arg(long, env = "RELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "RELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    // --- Durable history on one node (README "History on disk"). ---
    /// Directory of the embedded database that keeps every room's history across restarts
    /// (created if missing; one relay at a time). Ignored in cluster mode, where Redis keeps it.
    #[arg(long, env = "RELAY_DATA_DIR", default_value = "./chatrelay-data")]
    pub data_dir: std::path::PathBuf,

    /// Keep history in memory only, as before: a restart forgets every room.
    #[arg(long, env = "RELAY_MEMORY", conflicts_with = "data_dir")]
    pub memory: bool,

    /// When stored messages reach the disk itself: `always` (every commit; nothing is lost
    /// on power loss), `interval` (at most --fsync-interval's worth is lost on power loss,
    /// nothing on a crash or kill), `off` (the OS decides; a crash or kill still loses
    /// nothing).
    #[arg(long, env = "RELAY_FSYNC", value_enum, default_value_t = Fsync::Interval)]
    pub fsync: Fsync,

    /// With `--fsync interval`: the longest time a stored message waits for the disk.
    #[arg(long, env = "RELAY_FSYNC_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub fsync_interval: Duration,

    /// Messages each room keeps on disk; older ones are removed in the background (0: no limit).
    #[arg(long, env = "RELAY_RETAIN_MESSAGES", default_value_t = 100_000)]
    pub retain_messages: u64,

    /// Age after which stored messages are removed in the background (e.g. "30d", "12h"; 0: no limit).
    #[arg(long, env = "RELAY_RETAIN_AGE", default_value = "30d", value_parser = parse_duration)]
    pub retain_age: Duration,

    /// How often the background retention pass runs.
    #[arg(long, env = "RELAY_RETAIN_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub retain_interval: Duration,

    /// Messages waiting to be stored before new ones are refused with `server_busy`.
    #[arg(long, env = "RELAY_STORE_QUEUE", default_value_t = 65_536)]
    pub store_queue: usize,

    /// Largest size of the database file in bytes; past it messages are delivered but not
    /// stored, as on a full disk (0: as large as the disk allows).
    #[arg(long, env = "RELAY_STORE_MAX_BYTES", default_value_t = 0)]
    pub store_max_bytes: u64,

    // --- Cluster mode (docs/CLUSTER.md). ---
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

    // --- The app backend's hooks (docs/HOOKS.md). ---
    /// Secret that signs every hook request (webhooks, publish and join hooks): each carries
    /// `X-Chatrelay-Timestamp` and `X-Chatrelay-Signature: sha256=<hex of
    /// HMAC-SHA256(secret, "<timestamp>.<body>")>`. Unset: requests are not signed. Prefer
    /// the environment variable, which other users cannot read in the process list.
    #[arg(long, env = "RELAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// POST every room's events (`message`, `message_edited`, `message_deleted`,
    /// `user_joined`, `user_left`) in JSON batches to this URL (http:// or https://), in seq
    /// order per room, retried with backoff while the backend is down or answers non-2xx: at
    /// least once with history on disk; in memory and in a cluster at most
    /// `--webhook-buffer` events wait (docs/HOOKS.md). Unset: no webhooks.
    #[arg(long, env = "RELAY_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Webhook events waiting for the backend at most, in memory (without `--data-dir`'s
    /// store, and presence events in every mode); beyond it new events are dropped, logged
    /// and counted (`relay_webhook_dropped_total`).
    #[arg(long, env = "RELAY_WEBHOOK_BUFFER", default_value_t = 100_000)]
    pub webhook_buffer: usize,

    /// Events in one webhook request at most.
    #[arg(long, env = "RELAY_WEBHOOK_BATCH", default_value_t = 500)]
    pub webhook_batch: usize,

    /// How long the first event of a webhook batch waits for more before the batch is sent.
    #[arg(long, env = "RELAY_WEBHOOK_LINGER", default_value = "10ms", value_parser = parse_duration)]
    pub webhook_linger: Duration,

    /// How long one webhook request may take before it counts as failed and is retried.
    #[arg(long, env = "RELAY_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// Publish hook (moderation): before a message or edit is ordered, the relay POSTs it
    /// here and the backend allows it, replaces its text or refuses it (`rejected`).
    /// Unset: messages are not checked.
    #[arg(long, env = "RELAY_PUBLISH_HOOK")]
    pub publish_hook: Option<String>,

    /// Join hook (private rooms): on `join` the relay POSTs the room, the person and the
    /// token's claims here and the backend allows (optionally renaming) or denies
    /// (`forbidden_room`). Unset: joins are not checked.
    #[arg(long, env = "RELAY_JOIN_HOOK")]
    pub join_hook: Option<String>,

    /// How long the publish and join hooks get to answer (waiting for a free request slot
    /// included); then `--hook-failure` decides.
    #[arg(long, env = "RELAY_HOOK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub hook_timeout: Duration,

    /// What a publish or join hook that is slow, down or answers nonsense means: `closed`
    /// refuses the message or join (`hook_unavailable`), `open` lets it through.
    #[arg(long, env = "RELAY_HOOK_FAILURE", value_enum, default_value_t = HookFailure::Closed)]
    pub hook_failure: HookFailure,

    /// How long the join hook's answer for a person and room is reused (0: ask every time).
    #[arg(long, env = "RELAY_JOIN_HOOK_CACHE", default_value = "0", value_parser = parse_duration)]
    pub join_hook_cache: Duration,

    /// Requests in flight at once to each of the publish and join hooks; more wait for a
    /// slot (within `--hook-timeout`).
    #[arg(long, env = "RELAY_HOOK_CONCURRENCY", default_value_t = 64)]
    pub hook_concurrency: usize,
}

/// `--hook-failure`: what a hook that cannot answer means.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFailure {
    /// Refuse what could not be checked (`hook_unavailable`).
    Closed,
    /// Let it through unchecked.
    Open,
}

/// `--fsync`: what a power loss may cost of the stored history.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every commit reaches the disk before its messages are delivered.
    Always,
    /// The disk is synced every `--fsync-interval`.
    Interval,
    /// Never synced by the relay.
    Off,
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

/// A secret from the configuration: never shown by `Debug` (the config is logged and printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl Config {
    /// These defaults with every abuse limit off (message, command, frame, connection and HTTP
    /// request rates, per-IP and total connection caps, rooms per address): what benchmarks
    /// and load tests run with. `--http-requests-per-connection` stays: it never slows a load
    /// test.
    pub fn without_limits() -> Self {
        Self::default().limits_off()
    }

    /// Turns every abuse limit off (see [`Config::without_limits`]).
    pub fn limits_off(mut self) -> Self {
        self.message_rate = 0.0;
        self.command_rate = 0.0;
        self.ip_message_rate = 0.0;
        self.ip_command_rate = 0.0;
        self.frame_rate = 0.0;
        self.ip_rooms = 0;
        self.rate_limit_strikes = 0;
        self.max_connections_per_ip = 0;
        self.connection_rate = 0.0;
        self.connection_rate_per_ip = 0.0;
        self.http_request_rate = 0.0;
        self
    }
}

impl Config {
    /// Checks the combinations clap cannot: the error names the flag and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_room_bytes > self.history_total_bytes {
            return Err(format!(
                "--history-room-bytes ({}) must not exceed --history-total-bytes ({})",
                self.history_room_bytes, self.history_total_bytes
            ));
        }
        if self.max_rooms == 0 {
            return Err("--max-rooms must be at least 1".into());
        }
        if !self.memory && self.redis_url.is_none() {
            if self.store_queue == 0 {
                return Err("--store-queue must be at least 1".into());
            }
            if self.fsync == Fsync::Interval && self.fsync_interval.is_zero() {
                return Err("--fsync-interval must be above 0 (or use --fsync always)".into());
            }
            if self.retain_interval.is_zero() {
                return Err("--retain-interval must be above 0".into());
            }
        }
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "--webhook-url {url:?} must start with http:// or https://"
                ));
            }
            if self.webhook_batch == 0 || self.webhook_buffer == 0 {
                return Err("--webhook-batch and --webhook-buffer must be at least 1".into());
            }
            if self.webhook_timeout.is_zero() {
                return Err("--webhook-timeout must be above 0".into());
            }
        }
        if (self.publish_hook.is_some() || self.join_hook.is_some())
            && (self.hook_timeout.is_zero() || self.hook_concurrency == 0)
        {
            return Err("--hook-timeout and --hook-concurrency must be above 0".into());
        }
        if self.admin_listen.is_some() && self.admin_token.is_none() {
            return Err(
                "--admin-listen needs --admin-token (the admin API has no other key)".into(),
            );
        }
        Ok(())
    }
}

/// Parses "30s", "500ms", "2m", "30d" or a bare number of seconds.
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
        "d" => value * 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Worker threads the runtime gets for `--worker-threads` (`configured`, 0 = automatic):
/// `TOKIO_WORKER_THREADS` if set (as tokio itself reads it), else the CPUs this process may
/// run on (`taskset` counts).
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
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
    fn a_webhook_url_must_be_http() {
        let mut config = Config {
            webhook_url: Some("ftp://backend/hook".into()),
            ..Config::default()
        };
        let err = config.validate().expect_err("refused");
        assert!(err.contains("--webhook-url"), "{err}");
        config.webhook_url = Some("https://backend/hook".into());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.history, 100);
        assert_eq!(config.max_outbound_bytes, 1 << 20);
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.dedupe_window, Duration::from_secs(600));
        assert_eq!(config.presence_grace, Duration::from_secs(5));
        assert_eq!(config.connection_rate_per_ip, 20.0);
        assert_eq!(config.connection_burst_per_ip, 40);
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.http_requests_per_connection, 100);
        assert_eq!(config.http_request_rate, 10.0);
    }

    #[test]
    fn trusted_proxies_from_flags_or_the_environment_and_bad_ones_are_errors() {
        let config = Config::try_parse_from([
            "relay",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxy",
            "::1,192.0.2.7",
        ])
        .expect("valid ranges");
        let shown: Vec<String> = config
            .trusted_proxies
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let err = Config::try_parse_from(["relay", "--trusted-proxy", "10.0.0.0/40"])
            .expect_err("prefix too long");
        let message = err.to_string();
        assert!(message.contains("--trusted-proxy"), "{message}");
        assert!(message.contains("prefix length"), "{message}");
        assert!(Config::try_parse_from(["relay", "--trusted-proxy", "nginx"]).is_err());
    }
}
