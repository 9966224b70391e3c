//! The seam through which the chat core hands its rooms' events to an observer outside it
//! (the app backend's webhooks, `crate::hooks::webhook`), defined here so that the core does
//! not depend on it, like [`crate::chat::backend::Journal`].
//!
//! There is one call site per kind of event, where the room keeps its order, so all three
//! backends feed it through the same code:
//! - Log events (`message`, `message_edited`, `message_deleted`): in
//!   [`crate::chat::room::Room::append`], under the room's lock, right after the log took the
//!   event. Memory publishes, the durable store's writer (after its commit) and the cluster's
//!   backplane task all append through it, so the tap sees a room's events in seq order.
//! - Presence (`user_joined`, `user_left`): where a room announces a person
//!   (memory and durable), or where the backplane gets the announcement Redis made for a
//!   transition this node caused (cluster).
//!
//! In cluster mode every node appends every message of a room it serves; only the node that
//! published it (`origin` [`Origin::Here`]) hands it on, so the tap sees each event once
//! across the cluster. The call is one per event, never per member, and must not block: an
//! implementation queues (or notes) and returns.
//!
//! [`LogFeed`] is the other half for a durable store: an observer that must not lose events
//! across restarts reads the stored log after a cursor the store keeps, instead of relying on
//! what the tap queued in memory.

use std::fmt;
use std::sync::Arc;

use crate::chat::backend::Unavailable;
use crate::ws::Frame;

/// Where an event was caused, as far as the tap is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Published (or caused) on this node: the tap hands it on.
    Here,
    /// Another node's event that this node only delivers to its own members (cluster).
    Elsewhere,
}

/// One event of a room, as the tap sees it.
#[derive(Debug, Clone, Copy)]
pub enum Tapped<'a> {
    /// An event of the room's log (`message`, `message_edited`, `message_deleted`): its seq
    /// in the life `epoch`, and its frame exactly as the members get it.
    Log {
        room: &'a Arc<str>,
        epoch: &'a Arc<str>,
        seq: u64,
        frame: &'a Frame,
    },
    /// A `user_joined` or `user_left` event (its frame as the members get it).
    Presence {
        room: &'a Arc<str>,
        frame: &'a Frame,
    },
}

/// An observer of every room's events. Called under the room's lock (log events), so in a
/// room's order; it must only queue or note the event and return.
pub trait Tap: fmt::Debug + Send + Sync {
    fn tap(&self, event: Tapped<'_>);

    /// Whether presence events are wanted: when not, a room with no member left to tell
    /// does not encode a `user_left` only for the tap.
    fn wants_presence(&self) -> bool {
        true
    }

    /// Appends the observer's own series to the `/metrics` page (Prometheus text format).
    fn render_metrics(&self, _out: &mut String) {}
}

/// A page of a room's stored log after a cursor ([`LogFeed::read_after`]).
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    /// The room's life (its epoch), as stored.
    pub epoch: Option<Arc<str>>,
    /// The position the page starts after (the stored cursor when none was given).
    pub after: u64,
    /// `(seq, event JSON)`, ascending, each above `after`.
    pub events: Vec<(u64, String)>,
}

/// A durable store's log as a feed with a stored cursor per room (implemented by
/// `crate::store`). The reads block on the disk: call them off the event loop.
pub trait LogFeed: fmt::Debug + Send + Sync {
    /// The rooms whose stored messages go past their stored cursor (at start-up: the
    /// backlog a restart left).
    fn behind(&self) -> Result<Vec<Arc<str>>, Unavailable>;

    /// Up to `limit` stored events of the room called `room` after `after` (after its stored
    /// cursor when `None`), oldest first.
    fn read_after(
        &self,
        room: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<FeedPage, Unavailable>;

    /// Keeps the room's cursor at `seq` (everything up to it was delivered); written behind
    /// the messages, never lowered. Never blocks.
    fn keep_cursor(&self, room: &Arc<str>, seq: u64);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::chat::hub::Hub;
    use crate::chat::room::test_support::joined;
    use crate::chat::room::Announce;
    use crate::config::Config;

    /// Records what it is told, as `kind seq text-or-username`.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Tap for Recorder {
        fn tap(&self, event: Tapped<'_>) {
            let (seq, frame) = match event {
                Tapped::Log { seq, frame, .. } => (seq, frame),
                Tapped::Presence { frame, .. } => (0, frame),
            };
            let value: serde_json::Value = serde_json::from_slice(frame.payload()).expect("JSON");
            let what = value["text"].as_str().or(value["username"].as_str());
            let line = format!(
                "{} {seq} {}",
                value["type"].as_str().unwrap_or("?"),
                what.unwrap_or("-")
            );
            self.0.lock().expect("not poisoned").push(line);
        }
    }

    #[test]
    fn the_tap_hears_each_event_once_in_the_rooms_order_and_the_last_leave() {
        let recorder = Arc::new(Recorder::default());
        let mut hub = Hub::new(&Config::default());
        hub.tap = Some(recorder.clone());
        let (a, room) = joined(&hub, "a");
        let (b, _) = joined(&hub, "b");
        room.publish(&hub, &a, "a", "one");
        room.publish(&hub, &b, "b", "two");
        room.typing(&hub, &a, "a", true);
        room.leave(&hub, &b, Announce::Room);
        room.leave(&hub, &a, Announce::Room);
        let heard = recorder.0.lock().expect("not poisoned").clone();
        assert_eq!(
            heard,
            [
                "user_joined 0 a",
                "user_joined 0 b",
                "message 1 one",
                "message 2 two",
                "user_left 0 b",
                "user_left 0 a",
            ],
            "no typing, one call per event whatever the members, and the leave of the last one"
        );
    }
}
