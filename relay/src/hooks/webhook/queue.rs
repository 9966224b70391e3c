//! What waits for the webhook backend: events in memory (every event without a durable
//! store; presence events in every mode), bounded by `--webhook-buffer`, and with a durable
//! store the rooms whose stored log is ahead of what was delivered (read back from disk, so
//! nothing waits in memory but the room's name).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::ws::Frame;

/// Which event it is, for its `eventId`.
#[derive(Debug, Clone)]
pub(super) enum Id {
    /// A log event: stable across retries, restarts and nodes (`<room>:<epoch>:<seq>`).
    Log { epoch: Arc<str>, seq: u64 },
    /// A presence event: this node's tag and the event's number on it
    /// (`<room>:p:<node>:<n>`), the same for every retry of it.
    Presence(u64),
}

/// An event's JSON as the members got it.
#[derive(Debug, Clone)]
pub(super) enum Json {
    /// Its frame, shared with the room (a reference count, no copy).
    Frame(Frame),
    /// Read back from the durable store.
    Stored(String),
}

impl Json {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Json::Frame(frame) => frame.payload(),
            Json::Stored(text) => text.as_bytes(),
        }
    }
}

/// One event on its way to the backend.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) room: Arc<str>,
    pub(super) id: Id,
    pub(super) json: Json,
    /// When the relay took it (for `relay_webhook_lag_seconds`).
    pub(super) at: Instant,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) events: VecDeque<Event>,
    capacity: usize,
    /// Durable store: the rooms with stored events not yet delivered, and since when.
    pub(super) behind: HashMap<Arc<str>, Instant>,
    next_presence: u64,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity,
            behind: HashMap::new(),
            next_presence: 1,
        }
    }

    /// Takes `event` unless `--webhook-buffer` events wait already; false: dropped.
    pub(super) fn push(&mut self, event: Event) -> bool {
        if self.events.len() >= self.capacity {
            return false;
        }
        self.events.push_back(event);
        true
    }

    /// The number the next presence event of this node gets.
    pub(super) fn presence_number(&mut self) -> u64 {
        let n = self.next_presence;
        self.next_presence += 1;
        n
    }

    /// Notes that `room` has stored events past what was delivered (keeps the earliest time).
    pub(super) fn note_behind(&mut self, room: &Arc<str>, at: Instant) {
        if !self.behind.contains_key(room) {
            self.behind.insert(room.clone(), at);
        }
    }

    pub(super) fn has_work(&self) -> bool {
        !self.events.is_empty() || !self.behind.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::OpCode;

    fn event(seq: u64) -> Event {
        Event {
            room: "r".into(),
            id: Id::Log {
                epoch: "e".into(),
                seq,
            },
            json: Json::Frame(Frame::new(OpCode::Text, b"{}")),
            at: Instant::now(),
        }
    }

    #[test]
    fn the_buffer_is_bounded_and_keeps_the_oldest() {
        let mut queue = Queue::new(2);
        assert!(queue.push(event(1)));
        assert!(queue.push(event(2)));
        assert!(!queue.push(event(3)), "the third is dropped");
        let seqs: Vec<u64> = queue
            .events
            .iter()
            .map(|e| match e.id {
                Id::Log { seq, .. } => seq,
                Id::Presence(_) => 0,
            })
            .collect();
        assert_eq!(seqs, [1, 2]);
    }

    #[test]
    fn a_room_behind_keeps_its_first_mark() {
        let mut queue = Queue::new(1);
        let room: Arc<str> = "r".into();
        let first = Instant::now();
        queue.note_behind(&room, first);
        queue.note_behind(&room, first + std::time::Duration::from_secs(1));
        assert_eq!(queue.behind.get(&room), Some(&first));
        assert!(queue.has_work());
    }
}
