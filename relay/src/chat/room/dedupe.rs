//! The sends a room remembers by `ref`, so that a resend is acknowledged again instead of
//! delivered twice (docs/PROTOCOL.md "Acknowledged sends").
//!
//! Bounded two ways: an entry lives `--dedupe-window` (10 minutes by default), and a person
//! keeps at most [`MAX_PER_PERSON`] per room, oldest dropped first. A client resends only
//! what was not acknowledged, which is what it sent in the last seconds before a drop, so
//! 256 is far more than a resend needs and bounds what one user can make the room hold:
//! an entry is about 120 bytes with a 16-character ref (the ref and the message id, a seq,
//! a time, and its place in the expiry queue), so at most about 30 KB per user per room.
//! Lookups are a hash of the person and then a scan of that person's refs, which compares a
//! 32-bit hash of each ref before its text: a new ref (the common case) is checked against
//! up to 256 others on every message, and comparing strings made that a tenth of a message's
//! fan-out to 100 members (benches/instr_guard.py, `fanout-ref`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Refs one person keeps per room at most.
pub const MAX_PER_PERSON: usize = 256;

/// A send the room remembers: what its `ack` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    /// The message's `id`.
    pub id: Box<str>,
}

/// A send a backend kept beside its log, to be remembered again (a room opened from disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSend {
    pub person: Box<str>,
    pub reference: Box<str>,
    pub sent: Sent,
    /// When it was sent, in ms since the Unix epoch.
    pub at_ms: u64,
}

#[derive(Debug)]
struct Entry {
    /// [`ref_hash`] of `reference`.
    hash: u32,
    reference: Box<str>,
    sent: Sent,
    at_ms: u64,
}

#[derive(Debug, Default)]
pub struct Dedupe {
    /// Each person's refs, oldest first.
    people: HashMap<Arc<str>, VecDeque<Entry>>,
    /// Every entry's time and person, oldest first: expiry walks it from the front.
    order: VecDeque<(u64, Arc<str>)>,
}

impl Dedupe {
    /// What `person` was told for `reference`, if the room still remembers it.
    pub fn find(
        &mut self,
        person: &str,
        reference: &str,
        now_ms: u64,
        window_ms: u64,
    ) -> Option<&Sent> {
        self.expire(now_ms, window_ms);
        let hash = ref_hash(reference);
        self.people
            .get(person)?
            .iter()
            .find(|e| e.hash == hash && *e.reference == *reference)
            .map(|e| &e.sent)
    }

    /// Remembers that `person`'s send `reference` became `sent`.
    pub fn remember(
        &mut self,
        person: &str,
        reference: &str,
        sent: Sent,
        now_ms: u64,
        window_ms: u64,
    ) {
        self.expire(now_ms, window_ms);
        let key: Arc<str> = match self.people.get_key_value(person) {
            Some((key, _)) => key.clone(),
            None => person.into(),
        };
        let refs = self.people.entry(key.clone()).or_default();
        if refs.len() >= MAX_PER_PERSON {
            // Its place in `order` stays and is skipped when it comes up (see `expire`).
            refs.pop_front();
        }
        refs.push_back(Entry {
            hash: ref_hash(reference),
            reference: reference.into(),
            sent,
            at_ms: now_ms,
        });
        self.order.push_back((now_ms, key));
    }

    /// Forgets `person`'s newest ref if it is `reference` (its send was refused after all).
    pub fn forget(&mut self, person: &str, reference: &str) {
        if let Some(refs) = self.people.get_mut(person) {
            if refs.back().is_some_and(|e| *e.reference == *reference) {
                refs.pop_back();
            }
        }
    }

    /// Refs remembered now (all people).
    pub fn len(&self) -> usize {
        self.people.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    fn expire(&mut self, now_ms: u64, window_ms: u64) {
        let cutoff = now_ms.saturating_sub(window_ms);
        while let Some((at, _)) = self.order.front() {
            if *at > cutoff {
                break;
            }
            let Some((at, person)) = self.order.pop_front() else {
                break;
            };
            let Some(refs) = self.people.get_mut(&person) else {
                continue;
            };
            // A person's entries are in time order like `order`; one the per-person cap
            // dropped already leaves a newer entry in front, which stays.
            if refs.front().is_some_and(|e| e.at_ms <= at) {
                refs.pop_front();
            }
            if refs.is_empty() {
                self.people.remove(&person);
            }
        }
    }
}

/// FNV-1a: a ref is a few bytes, and a collision only costs a string comparison.
fn ref_hash(reference: &str) -> u32 {
    reference.bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64) -> Sent {
        Sent {
            seq,
            id: format!("n-m{seq}").into(),
        }
    }

    #[test]
    fn a_ref_is_remembered_per_person_for_the_window() {
        let mut d = Dedupe::default();
        d.remember("alice", "c-1", sent(1), 1_000, 600);
        d.remember("bob", "c-1", sent(2), 1_100, 600);
        assert_eq!(d.find("alice", "c-1", 1_200, 600), Some(&sent(1)));
        assert_eq!(d.find("bob", "c-1", 1_200, 600), Some(&sent(2)));
        assert_eq!(d.find("alice", "c-2", 1_200, 600), None);
        assert_eq!(d.find("carol", "c-1", 1_200, 600), None);
        assert_eq!(d.find("alice", "c-1", 1_650, 600), None, "past the window");
        assert_eq!(d.find("bob", "c-1", 1_650, 600), Some(&sent(2)));
        assert_eq!(d.find("bob", "c-1", 1_700, 600), None);
        assert!(d.is_empty(), "expired people are forgotten");
    }

    #[test]
    fn a_person_keeps_at_most_the_cap_and_expiry_stays_exact() {
        let mut d = Dedupe::default();
        for n in 0..(MAX_PER_PERSON as u64 + 10) {
            d.remember("alice", &format!("c-{n}"), sent(n), n, 1_000_000);
        }
        assert_eq!(d.len(), MAX_PER_PERSON);
        assert_eq!(
            d.find("alice", "c-0", 300, 1_000_000),
            None,
            "the oldest went"
        );
        assert!(d.find("alice", "c-10", 300, 1_000_000).is_some());
        // Everything older than the window goes, including the cap's leftovers in `order`.
        assert!(d.find("alice", "c-265", 1_000_265, 1_000_000).is_none());
        assert!(d.is_empty());
        assert!(d.order.is_empty());
    }
}
