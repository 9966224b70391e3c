//! What is cluster-specific in a [`Room`]. Only the backplane task calls these, so one task
//! orders every change of a room's cluster state on this node.
//!
//! In cluster mode Redis assigns a message's seq and keeps the room's log (a stream); the
//! room's own log holds the life and tail Redis has, and a message arrives from the room's
//! channel to be ordered into it through the same [`Room::append`] a single node publishes
//! with, then fans out with the same shared-frame path.

use std::sync::atomic::Ordering;

use crate::chat::hub::Hub;
use crate::chat::room::log::{Order, Refused};
use crate::chat::room::{Room, Skip};
use crate::chat::tap::Origin;
use crate::protocol::event::MessageEvent;
use crate::transport::outbox::Priority;
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

impl From<Refused> for Delivery {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Duplicate => Delivery::Duplicate,
            Refused::Gap { have } => Delivery::Gap { have },
            Refused::OtherEpoch => Delivery::OtherEpoch,
        }
    }
}

impl Room {
    /// Delivers message `seq` to every local member if it is the next one; `force` delivers
    /// it after a gap that cannot be filled (members see the seq jump).
    pub fn cluster_deliver(
        &self,
        hub: &Hub,
        epoch: &str,
        seq: u64,
        frame: &Frame,
        force: bool,
        origin: Origin,
    ) -> Delivery {
        let order = Order::Assigned { epoch, seq, force };
        match self.append_from(hub, order, origin, |_| frame) {
            Ok(appended) => {
                hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
                hub.stats
                    .deliveries
                    .fetch_add(appended.delivered, Ordering::Relaxed);
                Delivery::Delivered
            }
            Err(refused) => refused.into(),
        }
    }

    /// Fans an event from Redis out to local members but the one it is about (`skip`, a
    /// client id; empty for none).
    pub fn cluster_fan_out(&self, hub: &Hub, frame: &Frame, priority: Priority, skip: &str) {
        self.broadcast(hub, priority, Skip::Client(skip), |_| frame);
    }

    /// A read position Redis raised (from any node): kept here and sent to local members
    /// but the sender's connection (`skip`, a client id), coalesced per person per round.
    /// The person is read back from the event by the rule that made it.
    pub fn cluster_read(&self, hub: &Hub, frame: &Frame, seq: u64, skip: &str) {
        let person = crate::protocol::event::person_of(frame.payload(), "read", hub.limits.by_sub);
        if let Some(person) = person {
            self.apply_read(hub, &person, seq, frame, Skip::Client(skip));
        }
    }

    /// While Redis is unreachable: delivers a message to this node's members only, marked
    /// `"local":true`, with the room's last cluster seq (see docs/CLUSTER.md).
    pub fn cluster_local_message(&self, hub: &Hub, parts: &MessageEvent<'_>) {
        let delivered = self.broadcast(hub, Priority::Normal, Skip::Nobody, |seq| {
            wire::local_message(parts, seq)
        });
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
            room.cluster_deliver(&hub, "e1", 1, &frame, false, Origin::Here),
            Delivery::OtherEpoch,
            "nothing is delivered before the room is loaded"
        );
        room.reset_log("e1".into(), 5, std::slice::from_ref(&frame));
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 5, &frame, false, Origin::Here),
            Delivery::Duplicate
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 7, &frame, false, Origin::Here),
            Delivery::Gap { have: 5 }
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 6, &frame, false, Origin::Here),
            Delivery::Delivered
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e2", 8, &frame, false, Origin::Here),
            Delivery::OtherEpoch
        );
        assert_eq!(
            room.cluster_deliver(&hub, "e1", 9, &frame, true, Origin::Here),
            Delivery::Delivered
        );
        assert_eq!(room.position(), (Some("e1".into()), 9));
        assert_eq!(room.history_entries().len(), 3);
    }
}
