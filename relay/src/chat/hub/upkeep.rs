//! The hub's housekeeping task: heartbeats, expired tokens, idle queue rings, and retiring
//! rooms that stayed empty past `--room-linger`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info};

use super::Hub;
use crate::protocol::CloseCode;
use crate::transport::outbox::{CloseRequest, Priority};

/// How the heartbeat is spread over the ticks of the housekeeping task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Beat {
    tick: Duration,
    /// Each tick pings the connections whose id falls in its slot, so each is pinged once
    /// per `--ping-interval` and no tick pings them all: one ping round for every
    /// connection at once is a burst of writes the size of the relay (10,000 pings at about
    /// 10 µs of kernel send path each hold the core for 100 ms, a stall every interval).
    slots: u32,
}

impl Beat {
    /// About a tick a second, a whole number of them per interval, and at least two, so
    /// that a connection's ring is trimmed on the ticks that do not ping it (a ping touches
    /// it). Intervals under 1.5 s get two ticks per interval.
    fn of(ping_interval: Duration) -> Self {
        // `as` saturates (only past 136 years would the tick outgrow a second).
        let slots = (ping_interval.as_secs_f64().round() as u32).max(2);
        let tick = (ping_interval / slots).max(Duration::from_millis(10));
        Self { tick, slots }
    }
}

impl Hub {
    /// Sends heartbeats, closes connections that missed one, and retires rooms that have been
    /// empty for `room_linger`. Runs until `stop` turns true.
    pub async fn housekeeping(
        self: Arc<Self>,
        token_leeway: Option<u64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let Beat { tick, slots } = Beat::of(self.limits.ping_interval);
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slot = 0;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => return,
            }
            let now = Instant::now();
            self.heartbeat_slice(slot, u64::from(slots));
            slot = (slot + 1) % u64::from(slots);
            if let Some(leeway) = token_leeway {
                self.close_expired(leeway);
            }
            let before = self.rooms.len();
            let linger = self.limits.room_linger;
            self.rooms
                .retain(|_, room| !room.retire_if_idle(now, linger));
            self.prune_lingering();
            self.sources.sweep();
            let retired = before.saturating_sub(self.rooms.len());
            if retired > 0 {
                debug!(retired, rooms = self.rooms.len(), "retired empty rooms");
            }
        }
    }

    /// One tick's pass over the connections: those in heartbeat `slot` (of `slots`) get their
    /// ping, or are closed for not answering the last one; the others have their queue ring
    /// freed if they received nothing for a whole tick.
    fn heartbeat_slice(&self, slot: u64, slots: u64) {
        let mut timed_out = 0u64;
        for conn in self.conns.iter() {
            if conn.id % slots != slot {
                conn.outbox.trim();
                continue;
            }
            if conn.reads_held() {
                // Its driver is not reading while its commands wait for the hooks, so its
                // pong may be there unread; the clock starts again when reads resume.
                continue;
            }
            if conn.awaiting_pong.swap(true, Ordering::Relaxed) {
                let first = conn.outbox.close(CloseRequest {
                    code: CloseCode::HeartbeatTimeout.code(),
                    reason: "heartbeat timeout",
                    discard: true,
                });
                if first {
                    timed_out += 1;
                    debug!(peer = %conn.peer, client = %conn.client_id, "heartbeat timeout");
                }
            } else {
                self.push_to(&conn, self.ping.bytes(), Priority::Normal);
            }
        }
        if timed_out > 0 {
            self.stats
                .heartbeat_closes
                .fetch_add(timed_out, Ordering::Relaxed);
            info!(timed_out, "closed connections that missed a heartbeat");
        }
    }

    /// Closes every connection whose token has expired (past the leeway) with 4401.
    fn close_expired(&self, leeway: u64) {
        let now = crate::clock::now_secs();
        let mut expired = 0u64;
        for conn in self.conns.iter() {
            let Some(identity) = &conn.identity else {
                continue;
            };
            if identity.expires_at.saturating_add(leeway) <= now
                && conn.outbox.close(CloseRequest {
                    code: CloseCode::TokenExpired.code(),
                    reason: "token expired",
                    discard: false,
                })
            {
                expired += 1;
                debug!(peer = %conn.peer, user = %conn.user_id, "token expired");
            }
        }
        if expired > 0 {
            info!(expired, "closed connections whose token expired");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::chat::client::Conn;
    use crate::config::Config;

    #[test]
    fn a_beat_is_about_a_second_and_divides_the_interval() {
        let beat = |ms| Beat::of(Duration::from_millis(ms));
        let want = |tick_ms, slots| Beat {
            tick: Duration::from_millis(tick_ms),
            slots,
        };
        assert_eq!(beat(30_000), want(1_000, 30));
        assert_eq!(beat(1_500), want(750, 2));
        assert_eq!(beat(1_200), want(600, 2));
        // A day: still a tick a second, so tokens and empty rooms are not left for longer.
        assert_eq!(beat(86_400_000), want(1_000, 86_400));
        // Short intervals (tests, impatient operators): two ticks per interval.
        assert_eq!(beat(100), want(50, 2));
    }

    #[test]
    fn a_tick_pings_its_slice_and_the_next_round_of_it_closes_the_silent() {
        let hub = Hub::new(&Config::default());
        let conns: Vec<_> = (0..9)
            .map(|_| hub.register(SocketAddr::from((Ipv4Addr::LOCALHOST, 9))))
            .collect();
        let pinged = |conn: &Conn| !conn.outbox.take_all().is_empty();
        hub.heartbeat_slice(1, 3);
        for conn in &conns {
            assert_eq!(pinged(conn), conn.id % 3 == 1, "conn {}", conn.id);
        }
        assert_eq!(hub.stats.heartbeat_closes.load(Ordering::Relaxed), 0);
        // The others' turns: nobody in slot 1 is touched, so its silence is not judged yet.
        hub.heartbeat_slice(2, 3);
        hub.heartbeat_slice(0, 3);
        assert_eq!(hub.stats.heartbeat_closes.load(Ordering::Relaxed), 0);
        // One in slot 1 answered meanwhile; the rest of slot 1 did not.
        let answered = conns
            .iter()
            .find(|c| c.id % 3 == 1)
            .expect("a conn in slot 1");
        answered.awaiting_pong.store(false, Ordering::Relaxed);
        hub.heartbeat_slice(1, 3);
        let silent = conns.iter().filter(|c| c.id % 3 == 1).count() as u64 - 1;
        assert_eq!(hub.stats.heartbeat_closes.load(Ordering::Relaxed), silent);
    }
}
