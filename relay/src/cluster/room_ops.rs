//! What a [`Room`] does in cluster mode. Only the backplane task calls these, so one task
//! orders every change of a room's cluster state on this node.
//!
//! In cluster mode the room's `seq` is the last *cluster* seq delivered on this node and its
//! history is the tail of the room's Redis stream; messages arrive from the room's channel in
//! seq order and fan out with the same shared-frame path as a single node.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::conn::Conn;
use crate::hub::Hub;
use crate::outbox::Priority;
use crate::protocol::event::UserRef;
use crate::room::{JoinOutcome, Room};
use crate::ws::Frame;

use super::wire;

/// What [`Room::cluster_deliver`] did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Already delivered (seq at or below the room's).
    Duplicate,
    /// Messages between the room's seq (`have`) and this one are missing: fetch them first.
    Gap {
        have: u64,
    },
    /// The message belongs to a different life of the room than the one loaded.
    OtherEpoch,
}

impl Room {
    /// The room's cluster epoch (once loaded) and the last seq delivered here.
    pub fn cluster_position(&self) -> (Option<Arc<str>>, u64) {
        let state = self.lock();
        (state.cluster_epoch.clone(), state.seq)
    }

    /// Starts (or restarts) a life of the room as Redis has it: `history` oldest first, its
    /// last entry at most `seq`.
    pub fn cluster_reset(&self, epoch: Arc<str>, seq: u64, history: Vec<Frame>) {
        let mut state = self.lock();
        state.cluster_epoch = Some(epoch);
        state.seq = seq;
        state.history.reset(&history);
    }

    /// Carries on a retired room's life (its successor after a join raced the retirement):
    /// `entries` are the predecessor's stored history ([`Room::cluster_history`]).
    pub fn cluster_succeed(&self, epoch: Arc<str>, seq: u64, entries: Vec<Frame>) {
        let mut state = self.lock();
        state.cluster_epoch = Some(epoch);
        state.seq = seq;
        state.history.adopt(entries);
    }

    /// Delivers message `seq` to every local member if it is the next one; `force` delivers
    /// it after a gap that cannot be filled (members see the seq jump).
    pub fn cluster_deliver(
        &self,
        hub: &Hub,
        epoch: &str,
        seq: u64,
        frame: &Frame,
        force: bool,
    ) -> Delivery {
        let mut state = self.lock();
        if state.cluster_epoch.as_deref() != Some(epoch) {
            return Delivery::OtherEpoch;
        }
        if seq <= state.seq {
            return Delivery::Duplicate;
        }
        if seq != state.seq + 1 && !force {
            return Delivery::Gap { have: state.seq };
        }
        state.seq = seq;
        state.history.push(frame, hub.history_fair_share());
        let delivered = self.fan_out(&mut state, hub, frame.bytes(), Priority::Normal, None);
        drop(state);
        hub.reclaim_history_if_over();
        hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
        hub.stats.deliveries.fetch_add(delivered, Ordering::Relaxed);
        Delivery::Delivered
    }

    /// Adds `conn` locally and sends it `joined`, with the cluster-wide `count` and `users`
    /// from Redis (`users` is `None` above the presence-list cut-off). Others hear of the join
    /// through Redis, so nothing is fanned out here.
    pub fn cluster_join(
        &self,
        hub: &Hub,
        conn: &Arc<Conn>,
        username: &Arc<str>,
        resume: (Option<u64>, Option<&str>),
        count: usize,
        users: Option<&[(String, String)]>,
    ) -> JoinOutcome {
        let mut state = self.lock();
        if state.dead {
            return JoinOutcome::Retired;
        }
        let already = state.admit(hub, conn, username);
        if already {
            state.deliver_pending(hub);
        }
        self.send_joined(
            &state,
            hub,
            conn,
            (
                count.max(state.members.len()),
                users.map(|u| u.iter().map(|(id, username)| UserRef { id, username })),
            ),
            resume,
        );
        if already {
            JoinOutcome::AlreadyMember
        } else {
            JoinOutcome::Joined
        }
    }

    /// Removes `conn` locally; returns its username if it was a member.
    pub fn cluster_remove(&self, hub: &Hub, conn: &Conn) -> Option<Arc<str>> {
        let mut state = self.lock();
        let at = state.members.iter().position(|m| m.conn.id == conn.id)?;
        let gone = state.remove_member(hub, at);
        if state.members.is_empty() {
            self.became_empty(&mut state, hub);
        }
        Some(gone.username)
    }

    /// Fans an event from Redis out to local members but the one it is about.
    pub fn cluster_fan_out(&self, hub: &Hub, frame: &Frame, priority: Priority, skip: &str) {
        let mut state = self.lock();
        let skip = state
            .members
            .iter()
            .find(|m| &*m.conn.client_id == skip)
            .map(|m| m.conn.id);
        self.fan_out(&mut state, hub, frame.bytes(), priority, skip);
    }

    /// The history entries kept here, oldest first (for [`Room::cluster_succeed`]).
    pub fn cluster_history(&self) -> Vec<Frame> {
        self.lock().history.entries().iter().cloned().collect()
    }

    /// Local members as `(client id, username)`.
    pub fn cluster_members(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.members()
    }

    pub fn is_retired(&self) -> bool {
        self.lock().dead
    }

    /// While Redis is unreachable: delivers a message to this node's members only, marked
    /// `"local":true`, with the room's last cluster seq (see docs/CLUSTER.md).
    pub fn cluster_local_message(
        &self,
        hub: &Hub,
        parts: &crate::protocol::event::MessageEvent<'_>,
    ) {
        let mut state = self.lock();
        let frame = wire::local_message(parts, state.seq);
        let delivered = self.fan_out(&mut state, hub, frame.bytes(), Priority::Normal, None);
        drop(state);
        hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
        hub.stats.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ws::OpCode;

    #[test]
    fn delivery_is_in_seq_order_within_one_life() {
        let hub = Hub::new(&Config::default());
        let room = Room::new("r".into(), "local".into(), hub.history_budget().clone());
        let frame = Frame::new(OpCode::Text, b"{}");
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 1, &frame, false),
            Delivery::OtherEpoch,
            "nothing is delivered before the room is loaded"
        );
        room.cluster_reset("e1".into(), 5, vec![frame.clone()]);
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 5, &frame, false),
            Delivery::Duplicate
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 7, &frame, false),
            Delivery::Gap { have: 5 }
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 6, &frame, false),
            Delivery::Delivered
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e2", 8, &frame, false),
            Delivery::OtherEpoch
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 9, &frame, true),
            Delivery::Delivered
        );
        assert_eq!(room.cluster_position(), (Some("e1".into()), 9));
        assert_eq!(room.cluster_history().len(), 3);
    }
}
