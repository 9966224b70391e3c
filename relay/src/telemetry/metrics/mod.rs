//! Prometheus metrics (`GET /metrics`): what the node did and how fast, for operators.
//!
//! Each relay renders its own numbers (tests run many relays in one process, and each must
//! report only its own): the counters the hot path already keeps in
//! [`Stats`](crate::telemetry::stats::Stats) are read when `/metrics` is scraped, so the hot path pays
//! nothing extra for them; the measurements that need a clock (fan-out time, delivery
//! latency) go into this relay's own fixed-bucket [`Histogram`]s, once per message or per
//! sampled message, never per recipient; the queue-depth histogram is sampled by a timer.
//!
//! A scrape costs the same with 10 rooms or 300,000: `/metrics` needs no token, so whatever
//! it walks an anonymous client could make the relay walk at will. [`Metrics::render`]
//! therefore reads only atomics and O(shard) lengths: room memberships are counted as they
//! change ([`Metrics::member_added`]), and the total of queued bytes is summed by the upkeep
//! timer in the same once-a-second walk that samples the queue-depth histogram.
//!
//! The names reserved for the Redis backplane ([`names::REDIS_PUBLISH_ERRORS`] and the
//! others) are recorded with the `metrics` crate's macros, which go to a process-wide
//! `metrics-exporter-prometheus` recorder: [`install_process_recorder`] (called by
//! [`Relay::new`](crate::Relay::new)) installs it, and every relay renders it after its own
//! metrics. Per-relay numbers do not use that recorder: creating one calibrates a clock
//! (`quanta`, up to 200 ms) and its histograms buffer every observation until upkeep.
//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`)
//! are read from `/proc/self` at scrape time ([`process`]).
//! See `docs/METRICS.md` for every metric.

pub mod histogram;
pub mod hooks;
pub mod process;

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use metrics::{KeyName, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use histogram::Histogram;

use crate::protocol::CloseCode;
use crate::telemetry::stats::StatsSnapshot;

pub mod names;
mod rounds;

pub use rounds::{Round, Rounds};

/// One message in this many has its delivery latency measured (see [`Metrics::probe`]).
pub const LATENCY_SAMPLE_EVERY: u64 = 16;

const NANOS: f64 = 1e9;
/// 1 us to 100 ms, in nanoseconds.
const FANOUT_NANOS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
];
/// 10 us to 5 s, in nanoseconds.
const LATENCY_NANOS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];
const QUEUE_BYTES: &[u64] = &[
    0, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304,
];
/// The Redis lag histogram's buckets in the process-wide recorder: 10 us to 5 s.
const REDIS_LAG_SECONDS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Why a TCP connection did not become a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A request on `/ws` (or `/`) whose upgrade headers were invalid (answered 400).
    BadUpgrade,
    /// No complete request or upgrade within `--handshake-timeout`.
    HandshakeTimeout,
    /// `accept` failed (out of file descriptors, usually).
    AcceptError,
    /// An upgrade from an Origin outside `--allowed-origin` (403).
    Origin,
    /// An upgrade without a valid token, authentication on (401).
    Unauthorized,
    /// Past `--max-connections-per-ip` (429).
    PerIpLimit,
    /// Past `--connection-rate-per-ip` (429).
    PerIpRate,
    /// Past `--max-connections` (503).
    ConnectionLimit,
    /// Past `--connection-rate` (503).
    ConnectionRate,
}

impl Rejection {
    const ALL: [Rejection; 9] = [
        Rejection::BadUpgrade,
        Rejection::HandshakeTimeout,
        Rejection::AcceptError,
        Rejection::Origin,
        Rejection::Unauthorized,
        Rejection::PerIpLimit,
        Rejection::PerIpRate,
        Rejection::ConnectionLimit,
        Rejection::ConnectionRate,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Rejection::BadUpgrade => "bad_upgrade",
            Rejection::HandshakeTimeout => "handshake_timeout",
            Rejection::AcceptError => "accept_error",
            Rejection::Origin => "origin",
            Rejection::Unauthorized => "unauthorized",
            Rejection::PerIpLimit => "per_ip_limit",
            Rejection::PerIpRate => "per_ip_rate",
            Rejection::ConnectionLimit => "connection_limit",
            Rejection::ConnectionRate => "connection_rate",
        }
    }
}

/// How a connection ended, as counted by `relay_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The relay closed it with this code.
    Relay(u16),
    /// The client sent its close frame first (the relay answered it).
    ClientClosed,
    /// The socket ended with no close frame from the relay (the client vanished, an I/O error).
    NoHandshake,
}

/// The `code` and `reason` labels of `relay_connections_closed_total`, in counter order:
/// every [`CloseCode`], then the endings that are not a relay-sent code.
fn close_labels() -> impl Iterator<Item = (String, &'static str)> {
    CloseCode::ALL
        .iter()
        .map(|c| (c.code().to_string(), c.name()))
        .chain([
            ("client".to_owned(), "client_closed"),
            ("none".to_owned(), "no_close_handshake"),
            ("other".to_owned(), "other"),
        ])
}

/// The process-wide recorder behind the `metrics` macros (the Redis names), installed once;
/// `None` when the program embedding the relay installed a recorder of its own first.
pub fn install_process_recorder() -> Option<&'static PrometheusHandle> {
    static PROCESS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::REDIS_LAG_SECONDS.to_owned()),
                    REDIS_LAG_SECONDS,
                )
                // Fails only for an empty list; the list is a constant.
                .expect("bucket list is not empty")
                .build_recorder();
            for &(name, help) in names::REDIS {
                // The kind only picks where the text is kept; `# TYPE` comes from the data.
                recorder.describe_counter(KeyName::from_const_str(name), None, help.into());
            }
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

/// What a scrape reads of the node besides [`Metrics`]: counters and O(1) sizes only, so a
/// scrape costs the same with 10 rooms or 300,000 (gathered by `ops::exposition`).
#[derive(Debug, Clone, Default)]
pub struct NodeNumbers {
    pub stats: StatsSnapshot,
    pub ready: bool,
    pub connections: u64,
    pub rooms: u64,
    pub history_bytes: u64,
    pub history_evicted: u64,
    pub rooms_refused: u64,
    pub rooms_evicted: u64,
    /// Messages waiting for the history store (0 without one).
    pub store_queue: u64,
}

/// A relay's own metrics beyond [`Stats`](crate::telemetry::stats::Stats): latency and queue-depth
/// histograms, and counts of rare events by label.
#[derive(Debug)]
pub struct Metrics {
    fanout: Histogram,
    /// Shared with in-flight probes.
    delivery: Arc<Histogram>,
    queue: Histogram,
    rejected: [AtomicU64; Rejection::ALL.len()],
    /// One per [`close_labels`] entry.
    closed: Box<[AtomicU64]>,
    /// Room memberships now, kept by the rooms as members come and go. Signed: an add and a
    /// remove on different threads may land in either order.
    members: AtomicI64,
    /// Bytes queued for all connections at the last upkeep sample.
    queued: AtomicU64,
    /// What each flusher round did.
    pub rounds: Rounds,
    /// The app backend's hooks (`crate::hooks`): requests, failures, latency.
    pub hooks: hooks::HookMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            fanout: Histogram::new(FANOUT_NANOS, NANOS),
            delivery: Arc::new(Histogram::new(LATENCY_NANOS, NANOS)),
            queue: Histogram::new(QUEUE_BYTES, 1.0),
            rejected: Default::default(),
            closed: close_labels().map(|_| AtomicU64::new(0)).collect(),
            members: AtomicI64::new(0),
            queued: AtomicU64::new(0),
            rounds: Rounds::default(),
            hooks: hooks::HookMetrics::default(),
        }
    }

    /// A room gained a member (called under the room's lock, once per membership).
    pub fn member_added(&self) {
        self.members.fetch_add(1, Ordering::Relaxed);
    }

    /// A room lost a member.
    pub fn member_removed(&self) {
        self.members.fetch_sub(1, Ordering::Relaxed);
    }

    /// Room memberships now (`relay_room_members`).
    pub fn room_members(&self) -> u64 {
        u64::try_from(self.members.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Bytes queued for all connections at the last sample (`relay_outbound_queued_bytes`).
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection that ended (once per connection).
    pub fn connection_ended(&self, ending: Ending) {
        let known = CloseCode::ALL.len();
        let at = match ending {
            Ending::Relay(code) => CloseCode::ALL
                .iter()
                .position(|c| c.code() == code)
                .unwrap_or(known + 2),
            Ending::ClientClosed => known,
            Ending::NoHandshake => known + 1,
        };
        if let Some(counter) = self.closed.get(at) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one message's fan-out, which began at `started`.
    pub fn fanout_done(&self, started: Instant) {
        self.fanout.record(nanos_since(started));
    }

    /// For every [`LATENCY_SAMPLE_EVERY`]th message (by `number`), a copy of `frame` that
    /// records the time since `started` when its last clone is dropped: the writers drop their
    /// clone right after writing it, so that is the time to the last member's write. Costs one
    /// allocation per sampled message and nothing per recipient or in the writer. A frame that
    /// is discarded (its connection closed) counts as written when it is dropped.
    pub fn probe(&self, number: u64, frame: &Bytes, started: Instant) -> Option<Bytes> {
        if number % LATENCY_SAMPLE_EVERY != 1 {
            return None;
        }
        Some(Bytes::from_owner(Probe {
            frame: frame.clone(),
            started,
            histogram: self.delivery.clone(),
        }))
    }

    /// The Prometheus text exposition (format 0.0.4) of this relay's `node` numbers and its
    /// own histograms, then the process-wide metrics.
    pub fn render(&self, node: &NodeNumbers) -> String {
        let stats = &node.stats;
        let ready = u64::from(node.ready);

        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        single(o, names::CONNECTIONS_OPEN, "gauge", node.connections);
        single(
            o,
            names::CONNECTIONS_ACCEPTED,
            "counter",
            stats.connections_opened,
        );
        header(o, names::CONNECTIONS_REJECTED, "counter");
        for (why, count) in Rejection::ALL.iter().zip(&self.rejected) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "{}{{reason=\"{}\"}} {count}",
                names::CONNECTIONS_REJECTED,
                why.as_str()
            );
        }
        header(o, names::CONNECTIONS_CLOSED, "counter");
        for ((code, reason), count) in close_labels().zip(self.closed.iter()) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "{}{{code=\"{code}\",reason=\"{reason}\"}} {count}",
                names::CONNECTIONS_CLOSED
            );
        }
        single(o, names::ROOMS, "gauge", node.rooms);
        single(o, names::ROOM_MEMBERS, "gauge", self.room_members());
        single(o, names::FRAMES_RECEIVED, "counter", stats.frames_in);
        single(
            o,
            names::MESSAGES_RECEIVED,
            "counter",
            stats.messages_published,
        );
        single(o, names::MESSAGES_ADMIN, "counter", stats.admin_messages);
        single(o, names::MESSAGES_DELIVERED, "counter", stats.deliveries);
        single(o, names::BYTES_RECEIVED, "counter", stats.bytes_in);
        single(o, names::BYTES_SENT, "counter", stats.bytes_out);
        header(o, names::EVENTS_DROPPED, "counter");
        for (kind, count) in [
            ("typing", stats.typing_dropped),
            ("discarded_on_close", stats.frames_discarded),
        ] {
            let _ = writeln!(o, "{}{{kind=\"{kind}\"}} {count}", names::EVENTS_DROPPED);
        }
        single(o, names::ERROR_EVENTS, "counter", stats.errors_sent);
        single(
            o,
            names::OUTBOUND_QUEUED_BYTES,
            "gauge",
            self.queued_bytes(),
        );
        header(o, names::OUTBOUND_QUEUE_BYTES, "histogram");
        self.queue.render(names::OUTBOUND_QUEUE_BYTES, o);
        header(o, names::FANOUT_SECONDS, "histogram");
        self.fanout.render(names::FANOUT_SECONDS, o);
        header(o, names::DELIVERY_LATENCY_SECONDS, "histogram");
        self.delivery.render(names::DELIVERY_LATENCY_SECONDS, o);
        self.rounds.render(o);
        single(o, names::READY, "gauge", ready);
        single(o, names::HISTORY_BYTES, "gauge", node.history_bytes);
        single(o, names::HISTORY_EVICTED, "counter", node.history_evicted);
        single(o, names::ROOMS_REFUSED, "counter", node.rooms_refused);
        single(o, names::ROOMS_EVICTED, "counter", node.rooms_evicted);
        single(o, names::FRAME_PAUSES, "counter", stats.frame_pauses);
        single(o, names::STORE_WRITTEN, "counter", stats.store_written);
        single(
            o,
            names::STORE_TRANSACTIONS,
            "counter",
            stats.store_transactions,
        );
        single(
            o,
            names::STORE_WRITE_ERRORS,
            "counter",
            stats.store_write_errors,
        );
        single(o, names::STORE_UNSAVED, "counter", stats.store_unsaved);
        single(o, names::STORE_TRIMMED, "counter", stats.store_trimmed);
        single(o, names::STORE_QUEUE, "gauge", node.store_queue);
        self.hooks.render(o);
        // The process's CPU and memory: two small /proc reads, at scrape time only.
        process::render(o);
        if let Some(process) = install_process_recorder() {
            out.push_str(&process.render());
        }
        out
    }

    /// Records every connection's queue depth, and their total for the gauge: the one walk
    /// over the connections, once per upkeep interval, whatever the scrape rate.
    pub fn sample_queues(&self, queued: impl IntoIterator<Item = u64>) {
        let mut total = 0u64;
        for bytes in queued {
            total += bytes;
            self.queue.record(bytes);
        }
        self.queued.store(total, Ordering::Relaxed);
    }
}

fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `# HELP` (from [`names::PER_RELAY`]) and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str) {
    let help = names::PER_RELAY
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, help)| help);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, value: u64) {
    header(out, name, kind);
    let _ = writeln!(out, "{name} {value}");
}

/// The owner of a sampled message's bytes: records the delivery latency when dropped.
struct Probe {
    frame: Bytes,
    started: Instant,
    histogram: Arc<Histogram>,
}

impl AsRef<[u8]> for Probe {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.histogram.record(nanos_since(self.started));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_records_when_its_last_clone_goes() {
        let metrics = Metrics::new();
        let frame = Bytes::from_static(b"frame");
        assert!(metrics.probe(2, &frame, Instant::now()).is_none());
        let probe = metrics
            .probe(1 + LATENCY_SAMPLE_EVERY, &frame, Instant::now())
            .expect("sampled");
        assert_eq!(&probe[..], b"frame");
        let clone = probe.clone();
        drop(probe);
        let count = |h: &Histogram| {
            let mut out = String::new();
            h.render("h", &mut out);
            out.lines().last().map(str::to_owned)
        };
        assert_eq!(count(&metrics.delivery).as_deref(), Some("h_count 0"));
        drop(clone);
        assert_eq!(count(&metrics.delivery).as_deref(), Some("h_count 1"));
    }
}
