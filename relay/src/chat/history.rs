//! A room's recent messages, bounded by count and by bytes, and the node's budget for all of
//! them.
//!
//! History is what a client can make the relay keep after it has gone, so it is bounded three
//! ways: messages per room (`--history`), bytes per room (`--history-room-bytes`) and bytes on
//! the node (`--history-total-bytes`). Past the node's budget, lingering (empty) rooms lose
//! their history first, oldest first (`Hub::reclaim_history_if_over`); a room that still
//! publishes then keeps at most its fair share (the budget over the rooms with members), so
//! the total stays below twice the budget whatever one client does (`docs/SECURITY.md`).
//!
//! Each entry is stored as the continuation fragment that `joined` sends it in (`,{message}`),
//! so a join splices stored frames in by reference instead of copying the history into a new
//! frame per joiner (see [`crate::protocol::event::joined`]). Beside each entry the room
//! keeps its author's key ([`person_key`], 8 bytes, counted in the byte bounds), read from the
//! event once when it is kept, so a join's `unread` is a scan of integers.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::protocol::event;
use crate::ws::Frame;

/// The bounds every room's history keeps to.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Messages per room (`--history`); 0 keeps none.
    pub count: usize,
    /// Bytes per room (`--history-room-bytes`).
    pub room_bytes: usize,
    /// Bytes on the node (`--history-total-bytes`).
    pub total_bytes: usize,
    /// Bytes of history one `joined` carries (`--joined-history-bytes`).
    pub joined_bytes: usize,
}

/// The node's history bytes, shared by every room.
#[derive(Debug)]
pub struct HistoryBudget {
    pub limits: HistoryLimits,
    used: AtomicUsize,
    /// Messages dropped from history before `--history` would have dropped them: by the room
    /// or node byte budget.
    evicted: AtomicU64,
    /// Persons are token subjects (authentication on): which field of a message names its
    /// author ([`crate::protocol::event::person_of`]).
    by_sub: bool,
}

impl HistoryBudget {
    pub fn new(limits: HistoryLimits) -> Arc<Self> {
        Self::with_persons(limits, false)
    }

    /// A budget whose rooms key message authors by token subject (`by_sub`, authentication
    /// on) or by username.
    pub fn with_persons(limits: HistoryLimits, by_sub: bool) -> Arc<Self> {
        Arc::new(Self {
            limits,
            used: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            by_sub,
        })
    }

    /// Bytes of history held on the node now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Messages the byte budgets dropped so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Whether the node holds more history than its budget.
    pub fn over(&self) -> bool {
        self.used() > self.limits.total_bytes
    }

    /// What reclaiming aims for: a tenth below the budget, so it runs once per tenth of the
    /// budget published rather than on every message.
    pub fn reclaim_target(&self) -> usize {
        self.limits.total_bytes / 10 * 9
    }
}

/// The key of a person as history keeps a message's author: a hash, so an unread count is
/// a scan of integers rather than of JSON. Keyed per process (only this process compares
/// them) and never 0, which marks an entry no unread count counts ([`NOT_COUNTED`]).
pub fn person_key(person: &str) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(person) | 1
}

/// The author key of an entry that is not a chat message by anyone (another event type, a
/// deleted message).
pub const NOT_COUNTED: u64 = 0;

/// Bytes an entry's author key adds to the room's history (counted in its byte bounds).
const KEY_BYTES: usize = std::mem::size_of::<u64>();

/// One room's kept messages, oldest first.
#[derive(Debug)]
pub struct History {
    /// `,{message}` continuation fragments.
    entries: VecDeque<Frame>,
    /// Each entry's author ([`person_key`]), or [`NOT_COUNTED`]: what `unread` counts.
    authors: VecDeque<u64>,
    bytes: usize,
    budget: Arc<HistoryBudget>,
}

impl History {
    pub fn new(budget: Arc<HistoryBudget>) -> Self {
        Self {
            entries: VecDeque::new(),
            authors: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes this room's history holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bounds this history keeps to (the node's).
    pub fn limits(&self) -> &HistoryLimits {
        &self.budget.limits
    }

    /// The stored fragments, oldest first.
    pub fn entries(&self) -> &VecDeque<Frame> {
        &self.entries
    }

    /// Keeps the message whose event frame is `frame`. `fair_share` is this room's share of
    /// the node's budget while the node is over it (see the module docs); `usize::MAX` when
    /// it is not.
    pub fn push(&mut self, frame: &Frame, fair_share: usize) {
        if self.budget.limits.count == 0 {
            return;
        }
        let entry = event::history_entry(frame.payload());
        self.keep(entry);
        self.trim(fair_share);
    }

    /// Keeps one entry with its author key, read from its JSON once, here.
    fn keep(&mut self, entry: Frame) {
        let author = event::person_of(event::entry_json(&entry), "message", self.budget.by_sub)
            .map_or(NOT_COUNTED, |person| person_key(&person));
        let len = entry.len() + KEY_BYTES;
        self.entries.push_back(entry);
        self.authors.push_back(author);
        self.bytes += len;
        self.budget.used.fetch_add(len, Ordering::Relaxed);
    }

    /// Chat messages from `skip` on (entries' indices) whose author is not `me`
    /// ([`person_key`]): a join's `unread`.
    pub fn unread_from(&self, skip: usize, me: u64) -> u64 {
        self.authors
            .iter()
            .skip(skip)
            .filter(|&&author| author != NOT_COUNTED && author != me)
            .count() as u64
    }

    /// Applies `change` to the entry at `index` (a message edited or deleted since it was
    /// kept), within the same byte accounting. Nothing for an entry it does not change.
    pub fn revise(&mut self, index: usize, change: &event::Change) {
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        let Some(revised) = event::revise(event::entry_json(entry), change) else {
            return;
        };
        let revised = event::history_entry(revised.payload());
        let (old, new) = (entry.len(), revised.len());
        // A deleted message no longer counts as unread.
        let author = event::person_of(event::entry_json(&revised), "message", self.budget.by_sub)
            .map_or(NOT_COUNTED, |person| person_key(&person));
        self.entries[index] = revised;
        if let Some(slot) = self.authors.get_mut(index) {
            *slot = author;
        }
        self.bytes = self.bytes + new - old;
        if new >= old {
            self.budget.used.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.budget.used.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    /// Replaces the whole history (cluster mode: the tail of the room's Redis stream, as
    /// message event frames, oldest first), within the same bounds as [`History::push`].
    pub fn reset(&mut self, frames: &[Frame]) {
        self.clear();
        for frame in frames {
            self.push(frame, usize::MAX);
        }
    }

    /// Takes over another life's stored entries as they are (cluster mode, a room's
    /// successor), within the count and room byte bounds.
    pub fn adopt(&mut self, entries: Vec<Frame>) {
        self.clear();
        for entry in entries {
            self.keep(entry);
        }
        self.trim(usize::MAX);
    }

    /// Drops the oldest entries until the count and byte bounds (with `fair_share`) hold.
    fn trim(&mut self, fair_share: usize) {
        let limits = &self.budget.limits;
        let room_max = limits.room_bytes.min(fair_share);
        let count = limits.count;
        let mut by_bytes = 0u64;
        // The newest message always stays: alone it is at most one maximal message.
        while self.entries.len() > count || (self.bytes > room_max && self.entries.len() > 1) {
            if self.entries.len() <= count {
                by_bytes += 1;
            }
            self.pop_front();
        }
        if by_bytes > 0 {
            self.budget.evicted.fetch_add(by_bytes, Ordering::Relaxed);
        }
    }

    /// Drops every message (a lingering room's history reclaimed, or a reset); returns the
    /// bytes freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.bytes;
        let dropped = self.entries.len() as u64;
        self.entries = VecDeque::new();
        self.authors = VecDeque::new();
        self.bytes = 0;
        self.budget.used.fetch_sub(freed, Ordering::Relaxed);
        if dropped > 0 && freed > 0 {
            self.budget.evicted.fetch_add(dropped, Ordering::Relaxed);
        }
        freed
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.authors.pop_front();
            let len = old.len() + KEY_BYTES;
            self.bytes -= len;
            self.budget.used.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The entries a `joined` sends from `skip` on, bounded by `--joined-history-bytes` and
    /// by `headroom` (what the joining connection's outbox can still take): the index of the
    /// first one sent, and whether a bound cut any (newest are kept).
    pub fn joined_range(&self, skip: usize, headroom: usize) -> (usize, bool) {
        let max = self.budget.limits.joined_bytes.min(headroom);
        let mut bytes = 0;
        let mut first = self.entries.len();
        for entry in self.entries.iter().skip(skip).rev() {
            if bytes + entry.len() > max {
                return (first, true);
            }
            bytes += entry.len();
            first -= 1;
        }
        (first, false)
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::event::entry_json;
    use crate::ws::OpCode;

    fn budget(count: usize, room_bytes: usize, joined_bytes: usize) -> Arc<HistoryBudget> {
        HistoryBudget::new(HistoryLimits {
            count,
            room_bytes,
            total_bytes: 1 << 20,
            joined_bytes,
        })
    }

    fn message(n: usize) -> Frame {
        Frame::new(OpCode::Text, format!("{{\"n\":{n:04}}}").as_bytes())
    }

    #[test]
    fn count_and_bytes_bound_a_room_and_the_node_counts_exactly() {
        let node = budget(3, 1 << 20, 1 << 20);
        let mut history = History::new(node.clone());
        for n in 0..5 {
            history.push(&message(n), usize::MAX);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(entry_json(&history.entries()[0]), b"{\"n\":0002}");
        assert_eq!(node.used(), history.bytes());
        assert_eq!(node.evicted(), 0, "dropped by count, not by bytes");

        // Each entry is 2 + 1 + 10 bytes and an 8-byte author key: a 45-byte room keeps two.
        let small = budget(100, 45, 1 << 20);
        let mut history = History::new(small.clone());
        for n in 0..5 {
            history.push(&message(n), usize::MAX);
        }
        assert_eq!(history.len(), 2);
        assert_eq!(small.evicted(), 3);
        history.push(&message(9), 21);
        assert_eq!(
            history.len(),
            1,
            "a fair share of one entry keeps the newest"
        );
        drop(history);
        assert_eq!(small.used(), 0, "a dropped room gives its bytes back");
    }

    #[test]
    fn joined_gets_the_newest_entries_that_fit() {
        let node = budget(100, 1 << 20, 30);
        let mut history = History::new(node);
        for n in 0..5 {
            history.push(&message(n), usize::MAX);
        }
        assert_eq!(
            history.joined_range(0, usize::MAX),
            (3, true),
            "two of 13 bytes fit in 30"
        );
        assert_eq!(
            history.joined_range(4, usize::MAX),
            (4, false),
            "one entry after `since`"
        );
        assert_eq!(
            history.joined_range(5, usize::MAX),
            (5, false),
            "nothing after `since`"
        );
        assert_eq!(
            history.joined_range(0, 14),
            (4, true),
            "a full outbox leaves room for fewer"
        );
        assert_eq!(history.joined_range(0, 0), (5, true), "or none");
    }
}
