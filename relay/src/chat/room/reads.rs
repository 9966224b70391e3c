//! Read state: how far each person has read a room, and the `read` events that tell the
//! room's other members (and the person's other connections) when it moves.
//!
//! A position only moves forward. The room keeps one entry per person whose position it
//! knows (who read here, or whose stored position a join loaded), dropped with the room:
//! about 50 bytes plus the person's name each (a map slot of a shared name and a seq, and
//! the name's allocation). In memory that is the whole read state; a durable store and
//! Redis keep it beyond the room's life and hand it back when a person joins
//! ([`Room::knows_read`], [`Room::learn_read`]).
//!
//! Read events coalesce: at most one per person per scheduler round reaches members (a
//! later one replaces the pending one, `fanout`), so a client that marks every message
//! read as it scrolls costs the room one event per round.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Room, Skip, State};
use crate::chat::client::Conn;
use crate::chat::history::person_key;
use crate::chat::hub::Hub;
use crate::protocol::event::{self, UserRef};
use crate::transport::outbox::Priority;
use crate::ws::Frame;

/// Read positions by person (`chat::client::Conn::person`).
#[derive(Debug, Default)]
pub(crate) struct Reads {
    positions: HashMap<Arc<str>, u64>,
}

impl Reads {
    fn get(&self, person: &str) -> u64 {
        self.positions.get(person).copied().unwrap_or(0)
    }

    /// Raises `person`'s position to `seq`; whether it moved.
    fn raise(&mut self, person: &str, seq: u64) -> bool {
        match self.positions.get_mut(person) {
            Some(at) if *at >= seq => false,
            Some(at) => {
                *at = seq;
                true
            }
            None if seq == 0 => false,
            None => {
                self.positions.insert(person.into(), seq);
                true
            }
        }
    }
}

/// A joiner's `lastRead` and `unread`: messages by others after its position, of those the
/// room keeps (a scan of the kept entries' author keys, no JSON).
pub(super) fn joined_position(state: &State, person: &str) -> (u64, u64) {
    let last_read = state.reads.get(person);
    let history = state.log.history();
    let kept = history.len() as u64;
    let oldest_kept = (state.log.seq() + 1).saturating_sub(kept);
    let skip = (last_read + 1).saturating_sub(oldest_kept).min(kept) as usize;
    (last_read, history.unread_from(skip, person_key(person)))
}

impl Room {
    /// `conn`, named `username` here, read the room up to `seq` (at most the room's latest):
    /// moves its person's position forward and tells the other members and the person's
    /// other connections, not `conn`. Returns the new position, `None` when it did not move.
    pub fn read(&self, hub: &Hub, conn: &Conn, username: &str, seq: u64) -> Option<u64> {
        let person = conn.person(username);
        let mut state = self.lock();
        let seq = seq.min(state.log.seq());
        if !state.reads.raise(person, seq) {
            return None;
        }
        let user = UserRef {
            id: &conn.user_id,
            username,
        };
        let frame = event::read(&self.name, user, seq);
        self.fan_out_read(&mut state, hub, &frame, person, Some(conn.id));
        Some(seq)
    }

    /// A read position the backend decided on (cluster: Redis raised it): kept, and its
    /// event `frame` sent to every member but `skip` (the sender, on its node) if it moves
    /// the position here. Returns whether it did.
    pub(crate) fn apply_read(
        &self,
        hub: &Hub,
        person: &str,
        seq: u64,
        frame: &Frame,
        skip: Skip<'_>,
    ) -> bool {
        let mut state = self.lock();
        if !state.reads.raise(person, seq) {
            return false;
        }
        let skip = match skip {
            Skip::Nobody => None,
            Skip::Conn(id) => Some(id),
            Skip::Client(client) => state
                .members
                .iter()
                .find(|m| *m.conn.client_id == *client)
                .map(|m| m.conn.id),
        };
        self.fan_out_read(&mut state, hub, frame, person, skip);
        true
    }

    fn fan_out_read(
        &self,
        state: &mut State,
        hub: &Hub,
        frame: &Frame,
        person: &str,
        skip: Option<u64>,
    ) {
        // Normal, not droppable: a dropped position would stay stale until the next read.
        let key = person_key(person);
        self.fan_out_coalesced(state, hub, frame.bytes(), Priority::Normal, skip, key);
    }

    /// Whether the room holds `person`'s position (else a backend that keeps positions
    /// reads it before the person's join).
    pub fn knows_read(&self, person: &str) -> bool {
        self.lock().reads.positions.contains_key(person)
    }

    /// A position the backend keeps for `person` (read from disk or Redis at a join): the
    /// room takes it unless it knows a later one. Sends nothing.
    pub fn learn_read(&self, person: &str, seq: u64) {
        self.lock().reads.raise(person, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{joined, queued_events};
    use super::*;
    use crate::config::Config;

    /// `(type, username, seq)` of every event queued for `conn`, in order.
    fn queued(conn: &Conn) -> Vec<(String, String, u64)> {
        queued_events(conn)
            .into_iter()
            .map(|value| {
                let field = |k: &str| value[k].as_str().unwrap_or_default().to_owned();
                (
                    field("type"),
                    field("username"),
                    value["seq"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    #[test]
    fn a_persons_reads_coalesce_to_one_event_per_round() {
        let hub = Hub::new(&Config::default());
        let (a, room) = joined(&hub, "a");
        let (b, _) = joined(&hub, "b");
        let (c, _) = joined(&hub, "c");
        room.publish(&hub, &b, "b", "one");
        room.publish(&hub, &b, "b", "two");
        room.deliver(&hub);
        for conn in [&a, &b, &c] {
            drop(conn.outbox.take_all());
        }

        assert_eq!(room.read(&hub, &a, "a", 1), Some(1));
        assert_eq!(room.read(&hub, &c, "c", 1), Some(1));
        room.publish(&hub, &b, "b", "three");
        assert_eq!(room.read(&hub, &a, "a", 3), Some(3));
        assert_eq!(room.read(&hub, &a, "a", 2), None, "never back");
        room.deliver(&hub);
        let read = |who: &str, seq| ("read".to_owned(), who.to_owned(), seq);
        let message = ("message".to_owned(), "b".to_owned(), 3);
        assert_eq!(
            queued(&b),
            [read("c", 1), message.clone(), read("a", 3)],
            "a's second read replaced its first, after the message it covers"
        );
        assert_eq!(queued(&a), [read("c", 1), message.clone()]);
        assert_eq!(queued(&c), [message, read("a", 3)]);
        let joined = joined_position(&room.lock(), "c");
        assert_eq!(joined, (1, 2), "two of b's messages after c's position");
    }

    #[test]
    fn positions_only_move_forward() {
        let mut reads = Reads::default();
        assert!(!reads.raise("a", 0), "0 is no position");
        assert!(reads.raise("a", 3));
        assert!(!reads.raise("a", 3));
        assert!(!reads.raise("a", 2));
        assert!(reads.raise("a", 5));
        assert_eq!((reads.get("a"), reads.get("b")), (5, 0));
    }
}
