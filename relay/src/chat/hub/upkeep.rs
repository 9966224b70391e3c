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

impl Hub {
    /// Sends heartbeats, closes connections that missed one, and retires rooms that have been
    /// empty for `room_linger`. Runs until `stop` turns true.
    pub async fn housekeeping(
        self: Arc<Self>,
        token_leeway: Option<u64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let tick = self
            .limits
            .ping_interval
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping = Instant::now();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => return,
            }
            let now = Instant::now();
            if now.duration_since(last_ping) >= self.limits.ping_interval {
                last_ping = now;
                self.heartbeat();
            } else {
                self.trim_idle_queues();
            }
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

    /// Frees the queue rings of connections that received nothing for a whole tick.
    fn trim_idle_queues(&self) {
        for conn in self.conns.iter() {
            conn.outbox.trim();
        }
    }

    fn heartbeat(&self) {
        let mut timed_out = 0u64;
        for conn in self.conns.iter() {
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
