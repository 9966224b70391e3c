//! Prometheus metrics (`GET /metrics`): what the node did and how fast, for operators.
//!
//! Each relay has its own recorder, not the process-global one: tests run many relays in one
//! process, and each must report only its own numbers. The counters the hot path already
//! keeps in [`Stats`](crate::stats::Stats) are copied into the recorder when `/metrics` is
//! scraped, so the hot path pays nothing extra for them. The measurements that need a clock
//! (fan-out time, delivery latency) are taken once per message or per sampled message, never
//! per recipient; the queue-depth histogram is sampled by a timer.
//!
//! The names reserved for the Redis backplane ([`names::REDIS_PUBLISH_ERRORS`] and the
//! others) are recorded with the `metrics` macros, which go to a process-wide recorder; it is
//! installed by the first relay of the process and rendered after each relay's own metrics.
//! See `docs/METRICS.md` for every metric.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::hub::Hub;
use crate::protocol::CloseCode;

/// Metric names; `docs/METRICS.md` documents each (a test checks that it does).
pub mod names {
    pub const CONNECTIONS_OPEN: &str = "relay_connections_open";
    pub const CONNECTIONS_ACCEPTED: &str = "relay_connections_accepted_total";
    pub const CONNECTIONS_REJECTED: &str = "relay_connections_rejected_total";
    pub const CONNECTIONS_CLOSED: &str = "relay_connections_closed_total";
    pub const ROOMS: &str = "relay_rooms";
    pub const ROOM_MEMBERS: &str = "relay_room_members";
    pub const FRAMES_RECEIVED: &str = "relay_frames_received_total";
    pub const MESSAGES_RECEIVED: &str = "relay_messages_received_total";
    pub const MESSAGES_ADMIN: &str = "relay_messages_admin_total";
    pub const MESSAGES_DELIVERED: &str = "relay_messages_delivered_total";
    pub const BYTES_RECEIVED: &str = "relay_bytes_received_total";
    pub const BYTES_SENT: &str = "relay_bytes_sent_total";
    pub const EVENTS_DROPPED: &str = "relay_events_dropped_total";
    pub const ERROR_EVENTS: &str = "relay_error_events_total";
    pub const OUTBOUND_QUEUED_BYTES: &str = "relay_outbound_queued_bytes";
    pub const OUTBOUND_QUEUE_BYTES: &str = "relay_outbound_queue_bytes";
    pub const FANOUT_SECONDS: &str = "relay_fanout_seconds";
    pub const DELIVERY_LATENCY_SECONDS: &str = "relay_delivery_latency_seconds";
    pub const READY: &str = "relay_ready";
    /// Reserved for the Redis backplane (recorded with the `metrics` macros).
    pub const REDIS_PUBLISH_ERRORS: &str = "relay_redis_publish_errors_total";
    pub const REDIS_SUBSCRIBE_ERRORS: &str = "relay_redis_subscribe_errors_total";
    pub const REDIS_CONNECTED: &str = "relay_redis_connected";
    pub const REDIS_LAG_SECONDS: &str = "relay_redis_lag_seconds";

    /// The metrics every relay exports, each with its `# HELP` text.
    pub const PER_RELAY: &[(&str, &str)] = &[
        (CONNECTIONS_OPEN, "WebSocket connections open now."),
        (CONNECTIONS_ACCEPTED, "WebSocket connections accepted (upgrade completed)."),
        (CONNECTIONS_REJECTED, "TCP connections dropped before a WebSocket was established, by reason."),
        (CONNECTIONS_CLOSED, "WebSocket connections ended, by the close code the relay sent."),
        (ROOMS, "Rooms in memory, including empty rooms kept for --room-linger."),
        (ROOM_MEMBERS, "Room memberships (a connection in 3 rooms counts 3)."),
        (FRAMES_RECEIVED, "Text frames (commands of every type) received from clients."),
        (MESSAGES_RECEIVED, "Chat messages accepted from clients and fanned out."),
        (MESSAGES_ADMIN, "Server messages published through the admin API."),
        (MESSAGES_DELIVERED, "Chat message frames queued to room members (one per member per message)."),
        (BYTES_RECEIVED, "Bytes read from WebSocket clients."),
        (BYTES_SENT, "Bytes written to WebSocket clients."),
        (EVENTS_DROPPED, "Outbound events not delivered, by kind."),
        (ERROR_EVENTS, "error events sent to clients."),
        (OUTBOUND_QUEUED_BYTES, "Bytes queued for all clients and not yet written, now."),
        (OUTBOUND_QUEUE_BYTES, "Each connection's queued bytes, sampled every second."),
        (FANOUT_SECONDS, "Time to publish one chat message to every member's queue."),
        (DELIVERY_LATENCY_SECONDS, "Time from accepting a chat message to its write to the last member's socket (1 message in 16)."),
        (READY, "1 while /readyz answers 200, else 0."),
    ];

    /// The names reserved for the Redis backplane, each with its `# HELP` text.
    pub const REDIS: &[(&str, &str)] = &[
        (REDIS_PUBLISH_ERRORS, "Failed publishes to Redis."),
        (
            REDIS_SUBSCRIBE_ERRORS,
            "Failed or lost Redis subscriptions.",
        ),
        (REDIS_CONNECTED, "1 while connected to Redis, else 0."),
        (
            REDIS_LAG_SECONDS,
            "Time from a message's publish on one node to its receipt from Redis on this one.",
        ),
    ];
}

/// One message in this many has its delivery latency measured (see [`Metrics::probe`]).
pub const LATENCY_SAMPLE_EVERY: u64 = 16;

/// How often histograms are folded into buckets and queue depths are sampled.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

const SECONDS_FAST: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.1,
];
const SECONDS_SLOW: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];
const QUEUE_BYTES: &[f64] = &[
    0.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
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
}

impl Rejection {
    const ALL: [Rejection; 3] = [
        Rejection::BadUpgrade,
        Rejection::HandshakeTimeout,
        Rejection::AcceptError,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Rejection::BadUpgrade => "bad_upgrade",
            Rejection::HandshakeTimeout => "handshake_timeout",
            Rejection::AcceptError => "accept_error",
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

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// Gauges and counters set from [`Stats`](crate::stats::Stats) and the hub at scrape time.
#[derive(Debug)]
struct Exported {
    open: Gauge,
    accepted: Counter,
    rooms: Gauge,
    members: Gauge,
    frames_in: Counter,
    messages_in: Counter,
    messages_admin: Counter,
    delivered: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    typing_dropped: Counter,
    discarded: Counter,
    errors: Counter,
    queued: Gauge,
    ready: Gauge,
}

/// A relay's metrics: its own Prometheus recorder and the handles the relay records through.
#[derive(Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
    exported: Exported,
    fanout: Histogram,
    delivery: Histogram,
    queue: Histogram,
    rejected: [Counter; Rejection::ALL.len()],
    /// One per [`CloseCode::ALL`], then "client", "none" and "other".
    closed: Vec<Counter>,
}

fn builder() -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (names::FANOUT_SECONDS, SECONDS_FAST),
        (names::DELIVERY_LATENCY_SECONDS, SECONDS_SLOW),
        (names::OUTBOUND_QUEUE_BYTES, QUEUE_BYTES),
        (names::REDIS_LAG_SECONDS, SECONDS_SLOW),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            // Fails only for an empty list; the lists above are constants.
            .expect("bucket lists are not empty");
    }
    builder
}

/// The process-wide recorder behind the `metrics` macros, installed once; `None` when the
/// program embedding the relay installed a recorder of its own first.
fn process_handle() -> Option<&'static PrometheusHandle> {
    static PROCESS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            for &(name, help) in names::REDIS {
                let name = KeyName::from_const_str(name);
                // The kind only picks the `# TYPE`, which the first recording sets anyway.
                recorder.describe_counter(name, None, help.into());
            }
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // Installing it here means the Redis names work in any program that runs a relay.
        let _ = process_handle();
        let recorder = builder().build_recorder();
        for &(name, help) in names::PER_RELAY {
            recorder.describe_counter(KeyName::from_const_str(name), None, help.into());
        }
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let gauge =
            |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &METADATA);
        let histogram = |name: &'static str| {
            recorder.register_histogram(&Key::from_static_name(name), &METADATA)
        };
        let labelled = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let dropped =
            |kind: &'static str| labelled(names::EVENTS_DROPPED, vec![Label::new("kind", kind)]);
        let closed_by = |code: String, reason: &'static str| {
            labelled(
                names::CONNECTIONS_CLOSED,
                vec![Label::new("code", code), Label::new("reason", reason)],
            )
        };
        let mut closed: Vec<Counter> = CloseCode::ALL
            .iter()
            .map(|c| closed_by(c.code().to_string(), c.name()))
            .collect();
        closed.push(closed_by("client".into(), "client_closed"));
        closed.push(closed_by("none".into(), "no_close_handshake"));
        closed.push(closed_by("other".into(), "other"));
        Self {
            exported: Exported {
                open: gauge(names::CONNECTIONS_OPEN),
                accepted: counter(names::CONNECTIONS_ACCEPTED),
                rooms: gauge(names::ROOMS),
                members: gauge(names::ROOM_MEMBERS),
                frames_in: counter(names::FRAMES_RECEIVED),
                messages_in: counter(names::MESSAGES_RECEIVED),
                messages_admin: counter(names::MESSAGES_ADMIN),
                delivered: counter(names::MESSAGES_DELIVERED),
                bytes_in: counter(names::BYTES_RECEIVED),
                bytes_out: counter(names::BYTES_SENT),
                typing_dropped: dropped("typing"),
                discarded: dropped("discarded_on_close"),
                errors: counter(names::ERROR_EVENTS),
                queued: gauge(names::OUTBOUND_QUEUED_BYTES),
                ready: gauge(names::READY),
            },
            fanout: histogram(names::FANOUT_SECONDS),
            delivery: histogram(names::DELIVERY_LATENCY_SECONDS),
            queue: histogram(names::OUTBOUND_QUEUE_BYTES),
            rejected: Rejection::ALL.map(|r| {
                labelled(
                    names::CONNECTIONS_REJECTED,
                    vec![Label::new("reason", r.as_str())],
                )
            }),
            closed,
            handle: recorder.handle(),
        }
    }

    pub fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].increment(1);
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
            counter.increment(1);
        }
    }

    /// Records one message's fan-out, which began at `started`.
    pub fn fanout_done(&self, started: Instant) {
        self.fanout.record(started.elapsed().as_secs_f64());
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

    /// The Prometheus text exposition of `hub` (this relay) and the process-wide metrics.
    pub fn render(&self, hub: &Hub) -> String {
        let stats = hub.stats.snapshot();
        let e = &self.exported;
        e.open.set(hub.connection_count() as f64);
        e.accepted.absolute(stats.connections_opened);
        let rooms = hub.rooms();
        e.rooms.set(rooms.len() as f64);
        e.members
            .set(rooms.iter().map(|(_, members)| *members).sum::<usize>() as f64);
        e.frames_in.absolute(stats.frames_in);
        e.messages_in.absolute(stats.messages_published);
        e.messages_admin.absolute(stats.admin_messages);
        e.delivered.absolute(stats.deliveries);
        e.bytes_in.absolute(stats.bytes_in);
        e.bytes_out.absolute(stats.bytes_out);
        e.typing_dropped.absolute(stats.typing_dropped);
        e.discarded.absolute(stats.frames_discarded);
        e.errors.absolute(stats.errors_sent);
        let mut queued = 0usize;
        hub.for_each_connection(|conn| queued += conn.outbox.queued_bytes());
        e.queued.set(queued as f64);
        e.ready.set(if hub.readiness.check().is_ok() {
            1.0
        } else {
            0.0
        });
        let mut text = self.handle.render();
        if let Some(process) = process_handle() {
            text.push_str(&process.render());
        }
        text
    }

    /// Folds recorded histogram values into buckets (they are kept raw until then) and
    /// samples every connection's queue depth.
    fn upkeep(&self, hub: &Hub) {
        hub.for_each_connection(|conn| self.queue.record(conn.outbox.queued_bytes() as f64));
        self.handle.run_upkeep();
        if let Some(process) = process_handle() {
            process.run_upkeep();
        }
    }
}

/// Runs [`Metrics::upkeep`] every second until `stop` turns true.
pub async fn upkeep(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => hub.metrics.upkeep(&hub),
            _ = stop.changed() => return,
        }
    }
}

/// The owner of a sampled message's bytes: records the delivery latency when dropped.
struct Probe {
    frame: Bytes,
    started: Instant,
    histogram: Histogram,
}

impl AsRef<[u8]> for Probe {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.histogram.record(self.started.elapsed().as_secs_f64());
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
        let count = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("relay_delivery_latency_seconds_count "))
                .map(str::to_owned)
        };
        metrics.handle.run_upkeep();
        assert_ne!(
            count(&metrics.handle.render()).as_deref(),
            Some("1"),
            "not recorded while a clone is alive"
        );
        drop(clone);
        assert_eq!(count(&metrics.handle.render()).as_deref(), Some("1"));
    }
}
