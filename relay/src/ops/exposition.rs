//! The `/metrics` page: this relay's [`Metrics`](crate::telemetry::metrics::Metrics) with the node's
//! counters and sizes, and the once-a-second upkeep that samples queue depths.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::chat::backend::Backend;
use crate::chat::hub::Hub;
use crate::telemetry::metrics::{install_process_recorder, NodeNumbers};

/// How often queue depths are sampled (and the process-wide histograms folded into buckets).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The Prometheus text exposition (format 0.0.4) of `hub` (this relay), then the
/// process-wide metrics.
pub fn render(hub: &Hub) -> String {
    let mut page = hub.metrics.render(&numbers(hub));
    if let Some(tap) = &hub.tap {
        tap.render_metrics(&mut page);
    }
    page
}

/// What a scrape reads of the node: atomics and O(shard) lengths, never a walk over rooms or
/// connections (`/metrics` needs no token).
fn numbers(hub: &Hub) -> NodeNumbers {
    let history = hub.history_budget();
    NodeNumbers {
        stats: hub.stats.snapshot(),
        ready: hub.readiness.check().is_ok(),
        connections: hub.connection_count() as u64,
        rooms: hub.room_count() as u64,
        history_bytes: history.used() as u64,
        history_evicted: history.evicted(),
        rooms_refused: hub.rooms_refused.load(Ordering::Relaxed),
        rooms_evicted: hub.rooms_evicted.load(Ordering::Relaxed),
        store_queue: match &hub.backend {
            Backend::Durable(journal) => journal.queued() as u64,
            Backend::Memory | Backend::Remote(_) => 0,
        },
    }
}

/// Samples every connection's queue depth (the one walk over the connections).
pub fn sample_queues(hub: &Hub) {
    let mut queued = Vec::with_capacity(hub.connection_count());
    hub.for_each_connection(|conn| queued.push(conn.outbox.queued_bytes() as u64));
    hub.metrics.sample_queues(queued);
}

/// Samples queue depths and folds the process-wide histograms into buckets every second
/// until `stop` turns true.
pub async fn upkeep(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                sample_queues(&hub);
                // The exporter keeps raw observations until upkeep: without it they pile up.
                if let Some(process) = install_process_recorder() {
                    process.run_upkeep();
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::chat::room::JoinRequest;
    use crate::telemetry::metrics::names;
    use crate::transport::outbox::Priority;

    /// The value of an unlabelled series in a rendered exposition.
    fn sample(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_scrape_reads_counters_and_samples_not_rooms_or_queues() {
        let hub = Arc::new(Hub::new(&crate::config::Config::without_limits()));
        let username: Arc<str> = "u".into();
        let peer: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let request = JoinRequest {
            username: &username,
            since: None,
            epoch: None,
        };
        let a = hub.register(peer);
        let b = hub.register(peer);
        let (room, _) = hub
            .join(&a, "one", request)
            .expect("within the room budgets");
        hub.join(&b, "one", request)
            .expect("within the room budgets");
        hub.join(&b, "two", request)
            .expect("within the room budgets");
        let text = render(&hub);
        assert_eq!(sample(&text, names::ROOMS), Some(2));
        assert_eq!(sample(&text, names::ROOM_MEMBERS), Some(3));
        assert!(room
            .leave(&hub, &b, crate::chat::room::Announce::Room)
            .is_some());
        assert_eq!(hub.metrics.room_members(), 2, "counted as members go");

        // With a room's lock held elsewhere, a scrape that walked the rooms would block.
        let state = room.lock();
        let scraper = {
            let hub = hub.clone();
            std::thread::spawn(move || render(&hub))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !scraper.is_finished() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            scraper.is_finished(),
            "render waited for a room's lock: it walks the rooms"
        );
        drop(state);
        let text = scraper.join().expect("render does not panic");
        assert_eq!(sample(&text, names::ROOM_MEMBERS), Some(2));

        // Queued bytes are the upkeep's sample: a scrape between samples repeats it. No
        // flusher runs here, so what is queued (the `joined` events too) stays queued.
        let queued = || (a.outbox.queued_bytes() + b.outbox.queued_bytes()) as u64;
        assert!(queued() > 0);
        assert_eq!(
            sample(&render(&hub), names::OUTBOUND_QUEUED_BYTES),
            Some(0),
            "not sampled yet"
        );
        sample_queues(&hub);
        let sampled = queued();
        let frame = Bytes::from_static(&[0x81, 3, b'a', b'b', b'c']);
        hub.push_to(&b, &frame, Priority::Normal);
        assert_eq!(queued(), sampled + frame.len() as u64);
        let first = sample(&render(&hub), names::OUTBOUND_QUEUED_BYTES);
        let second = sample(&render(&hub), names::OUTBOUND_QUEUED_BYTES);
        assert_eq!(first, Some(sampled));
        assert_eq!(second, first, "two scrapes between samples agree");
        sample_queues(&hub);
        assert_eq!(
            sample(&render(&hub), names::OUTBOUND_QUEUED_BYTES),
            Some(queued())
        );
    }
}
