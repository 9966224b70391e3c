//! A room's log as this node holds it: the life (epoch) it belongs to, the seq of its latest
//! message, and the messages it keeps. The one place a message is ordered into a room and
//! the one place a join's replay is cut from.
//!
//! Whichever backend keeps the room's log ([`crate::chat::backend`]), the room orders through
//! [`Log::append`]: in memory it assigns the next seq itself ([`Order::Next`]); in a cluster
//! Redis has assigned it and the log takes only the next one of the life it holds
//! ([`Order::Assigned`]), so duplicates and gaps are found by the same function that a local
//! publish goes through.

use std::borrow::Borrow;
use std::sync::Arc;

use crate::chat::history::{History, HistoryBudget};
use crate::ws::Frame;

/// Where a message's seq comes from.
#[derive(Debug, Clone, Copy)]
pub enum Order<'a> {
    /// The room assigns the next one (the room's log lives here).
    Next,
    /// The backend assigned `seq` in the life `epoch`. `force` takes it after a gap that
    /// cannot be filled (members then see the seq jump).
    Assigned {
        epoch: &'a str,
        seq: u64,
        force: bool,
    },
}

/// Why [`Log::append`] did not take a message the backend ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// At or below the log's seq: already delivered here.
    Duplicate,
    /// Messages between the log's seq (`have`) and this one are missing: fetch them first.
    Gap { have: u64 },
    /// The message belongs to a different life of the room than the one held.
    OtherEpoch,
}

/// A scroll-back request: up to `limit` messages older than `before` (the latest when
/// `None`), as the `history` command asks (`docs/PROTOCOL.md`). The session has checked it:
/// `limit` is 1-100 and `before` is not 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub before: Option<u64>,
    pub limit: usize,
}

/// Which kept messages answer a [`Page`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRange {
    /// Indices into the kept entries, oldest first.
    pub range: std::ops::Range<usize>,
    /// Kept messages older than the first one in `range` exist.
    pub has_more: bool,
    /// Every seq the page asked for is kept here, or what is kept reaches down to the room's
    /// first message: nothing older exists anywhere. A backend that keeps more than memory
    /// (a durable store) reads the rest elsewhere when this is false.
    pub complete: bool,
    /// What is kept here starts at the room's first message (seq 1).
    pub whole: bool,
}

/// What a `joined` replays of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// Index of the first kept message sent.
    pub first: usize,
    /// With `since`: whether nothing after it was missed.
    pub recovered: Option<bool>,
    /// Whether a byte bound left older messages out.
    pub truncated: bool,
}

#[derive(Debug)]
pub struct Log {
    /// The life `seq` and `history` belong to: one this node made up until a backend that
    /// orders elsewhere hands over its own ([`Log::reset`]).
    epoch: Arc<str>,
    /// Whether `epoch` came from the backend; until then no assigned message is taken.
    assigned: bool,
    /// Seq of the latest message (0 before the first).
    seq: u64,
    /// The latest seq handed out by [`Log::reserve`] to a message the backend stores before
    /// it is appended (at least `seq`; above it while such messages are on their way).
    reserved: u64,
    /// The last messages, contiguous in seq, oldest first.
    history: History,
}

impl Log {
    pub fn new(epoch: Arc<str>, budget: Arc<HistoryBudget>) -> Self {
        Self {
            epoch,
            assigned: false,
            seq: 0,
            reserved: 0,
            history: History::new(budget),
        }
    }

    /// The room's current life, as `joined` and resumption see it.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The backend's epoch (`None` while the log holds one this node made up) and the seq.
    pub fn position(&self) -> (Option<Arc<str>>, u64) {
        (self.assigned.then(|| self.epoch.clone()), self.seq)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Orders one message and keeps it: `encode` gets its seq and returns its event frame.
    /// `fair_share` is only asked for when the message is taken (see [`History::push`]).
    pub fn append<F: Borrow<Frame>>(
        &mut self,
        order: Order<'_>,
        fair_share: impl FnOnce() -> usize,
        encode: impl FnOnce(u64) -> F,
    ) -> Result<(u64, F), Refused> {
        let seq = self.next(order)?;
        let frame = encode(seq);
        self.seq = seq;
        self.history.push(frame.borrow(), fair_share());
        self.apply_change(frame.borrow());
        Ok((seq, frame))
    }

    /// If `frame` (just kept, or kept by a reset) edits or deletes a message, shows that
    /// message as it is now wherever it is kept here: what `joined` and `history` send is
    /// the message's current form (docs/PROTOCOL.md "Edits and deletes").
    fn apply_change(&mut self, frame: &Frame) {
        let Some((target, change)) = crate::protocol::event::change_of(frame.payload()) else {
            return;
        };
        if let Some(index) = self.index_of(target) {
            self.history.revise(index, &change);
        }
    }

    /// Where message `seq` is among the kept entries, if it is kept.
    fn index_of(&self, seq: u64) -> Option<usize> {
        let kept = self.history.len() as u64;
        let oldest_kept = self.seq + 1 - kept;
        (seq >= oldest_kept && seq <= self.seq && kept > 0).then(|| (seq - oldest_kept) as usize)
    }

    /// The kept event of `seq` (its JSON), if kept here.
    pub fn kept(&self, seq: u64) -> Option<&[u8]> {
        let index = self.index_of(seq)?;
        self.history
            .entries()
            .get(index)
            .map(crate::protocol::event::entry_json)
    }

    /// Hands out the next seq of the backend's life for a message the backend keeps before
    /// it is appended (a durable store commits first); the message comes back through
    /// [`Log::append`] as [`Order::Assigned`]. `None` while the log holds no backend life.
    pub fn reserve(&mut self) -> Option<u64> {
        if !self.assigned {
            return None;
        }
        self.reserved = self.reserved.max(self.seq) + 1;
        Some(self.reserved)
    }

    /// Gives back the seq [`Log::reserve`] just handed out (its message was refused).
    pub fn unreserve(&mut self, seq: u64) {
        if seq == self.reserved && seq > self.seq {
            self.reserved -= 1;
        }
    }

    /// Whether reserved messages have not come back yet: the room must not be retired
    /// meanwhile, or a successor would read the backend's log without them.
    pub fn in_flight(&self) -> bool {
        self.reserved > self.seq
    }

    fn next(&self, order: Order<'_>) -> Result<u64, Refused> {
        match order {
            Order::Next => Ok(self.seq + 1),
            Order::Assigned { epoch, seq, force } => {
                if !self.assigned || *self.epoch != *epoch {
                    Err(Refused::OtherEpoch)
                } else if seq <= self.seq {
                    Err(Refused::Duplicate)
                } else if seq != self.seq + 1 && !force {
                    Err(Refused::Gap { have: self.seq })
                } else {
                    Ok(seq)
                }
            }
        }
    }

    /// Starts (or restarts) a life as the backend has it: `history` oldest first (message
    /// event frames), its last entry at most `seq`.
    pub fn reset(&mut self, epoch: Arc<str>, seq: u64, history: &[Frame]) {
        self.adopt_life(epoch, seq);
        self.history.reset(history);
        // A cluster's stream holds each message as first sent, and its changes after it.
        for frame in history {
            self.apply_change(frame);
        }
    }

    /// Carries on a retired room's life in its successor: `entries` are the predecessor's
    /// stored entries as they are.
    pub fn carry_on(&mut self, epoch: Arc<str>, seq: u64, entries: Vec<Frame>) {
        self.adopt_life(epoch, seq);
        self.history.adopt(entries);
    }

    fn adopt_life(&mut self, epoch: Arc<str>, seq: u64) {
        self.epoch = epoch;
        self.assigned = true;
        self.seq = seq;
        self.reserved = seq;
    }

    /// Drops the kept messages (a lingering room's, for the node's budget); the bytes freed.
    pub fn forget_history(&mut self) -> usize {
        self.history.clear()
    }

    /// The kept messages that answer `page`, newest first within `max_bytes` (at least one
    /// message when any is due, so paging always moves on).
    pub fn page(&self, page: Page, max_bytes: usize) -> PageRange {
        let kept = self.history.len();
        // Kept messages are contiguous in seq and end at `self.seq`.
        let oldest_kept = self.seq + 1 - kept as u64;
        // Exclusive upper bound in seq: `before` beyond the room means "the latest".
        let top = page.before.map_or(self.seq + 1, |b| b.min(self.seq + 1));
        let wanted_from = top.saturating_sub(page.limit as u64).max(1);
        let from = wanted_from.max(oldest_kept);
        let (first, end) = if top > from {
            ((from - oldest_kept) as usize, (top - oldest_kept) as usize)
        } else {
            (0, 0)
        };
        let entries = self.history.entries();
        let mut start = end;
        let mut bytes = 0;
        while start > first {
            let len = entries[start - 1].len();
            if start < end && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            start -= 1;
        }
        PageRange {
            range: start..end,
            has_more: start > 0 && end > 0,
            complete: top <= wanted_from || wanted_from >= oldest_kept || oldest_kept <= 1,
            whole: oldest_kept <= 1,
        }
    }

    /// What a join with `since` and `epoch` gets, given `headroom` bytes of room in the
    /// joiner's outbox.
    pub fn replay(&self, since: Option<u64>, epoch: Option<&str>, headroom: usize) -> Replay {
        let (skip, recovered) = self.resume_point(since, epoch);
        let (first, truncated) = self.history.joined_range(skip, headroom);
        Replay {
            first,
            // Left out by the byte bound is missed too.
            recovered: recovered.map(|r| r && !truncated),
            truncated,
        }
    }

    /// Which kept messages a join with `since` gets, and whether nothing was missed.
    fn resume_point(&self, since: Option<u64>, epoch: Option<&str>) -> (usize, Option<bool>) {
        let Some(since) = since else {
            return (0, None);
        };
        let kept = self.history.len() as u64;
        let oldest_kept = self.seq + 1 - kept;
        let same_life = epoch.is_none_or(|e| e == &*self.epoch);
        if !same_life || since > self.seq || since.saturating_add(1) < oldest_kept {
            // A different life of the room, a seq from the future, or a gap older than the
            // history kept: send everything kept and say so.
            return (0, Some(false));
        }
        // Every message after `since` is kept: skip the ones at or before it.
        ((since + 1 - oldest_kept) as usize, Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::history::HistoryLimits;
    use crate::ws::OpCode;

    fn log() -> Log {
        let budget = HistoryBudget::new(HistoryLimits {
            count: 100,
            room_bytes: 1 << 20,
            total_bytes: 1 << 20,
            joined_bytes: 1 << 20,
        });
        Log::new("mine".into(), budget)
    }

    fn frame(seq: u64) -> Frame {
        Frame::new(OpCode::Text, format!("{{\"seq\":{seq}}}").as_bytes())
    }

    fn assigned(epoch: &str, seq: u64, force: bool) -> Order<'_> {
        Order::Assigned { epoch, seq, force }
    }

    #[test]
    fn local_and_assigned_messages_go_through_one_ordering() {
        let mut log = log();
        let taken = |log: &mut Log, order| log.append(order, || usize::MAX, frame).map(|(s, _)| s);
        assert_eq!(taken(&mut log, Order::Next), Ok(1));
        assert_eq!(taken(&mut log, Order::Next), Ok(2));
        assert_eq!(
            taken(&mut log, assigned("mine", 3, false)),
            Err(Refused::OtherEpoch),
            "a life this node made up takes nothing assigned, whatever its name"
        );
        assert_eq!(log.position(), (None, 2));

        log.reset("e1".into(), 5, &[frame(5)]);
        assert_eq!(log.position(), (Some("e1".into()), 5));
        assert_eq!(
            taken(&mut log, assigned("e1", 5, false)),
            Err(Refused::Duplicate)
        );
        assert_eq!(
            taken(&mut log, assigned("e1", 7, false)),
            Err(Refused::Gap { have: 5 })
        );
        assert_eq!(taken(&mut log, assigned("e1", 6, false)), Ok(6));
        assert_eq!(
            taken(&mut log, assigned("e2", 7, false)),
            Err(Refused::OtherEpoch)
        );
        assert_eq!(taken(&mut log, assigned("e1", 9, true)), Ok(9));
        assert_eq!(
            taken(&mut log, Order::Next),
            Ok(10),
            "the room's own seq carries on from the last one taken"
        );
        assert_eq!(log.history().len(), 4, "refused messages are not kept");
        assert_eq!(log.seq(), 10);
    }

    fn filled(n: u64, count: usize) -> Log {
        let budget = HistoryBudget::new(HistoryLimits {
            count,
            room_bytes: 1 << 20,
            total_bytes: 1 << 20,
            joined_bytes: 1 << 20,
        });
        let mut log = Log::new("mine".into(), budget);
        for _ in 0..n {
            let _ = log.append(Order::Next, || usize::MAX, frame);
        }
        log
    }

    /// The seqs a page holds, and its `has_more` and `complete`.
    fn page_of(log: &Log, before: Option<u64>, limit: usize) -> (Vec<u64>, bool, bool) {
        let range = log.page(Page { before, limit }, usize::MAX);
        let oldest = log.seq() + 1 - log.history().len() as u64;
        let seqs = range.range.clone().map(|i| oldest + i as u64).collect();
        (seqs, range.has_more, range.complete)
    }

    #[test]
    fn scroll_back_pages_through_what_is_kept() {
        let log = filled(25, 100);
        assert_eq!(page_of(&log, None, 10), ((16..=25).collect(), true, true));
        assert_eq!(
            page_of(&log, Some(16), 10),
            ((6..=15).collect(), true, true)
        );
        assert_eq!(page_of(&log, Some(6), 10), ((1..=5).collect(), false, true));
        assert_eq!(
            page_of(&log, Some(1), 10),
            (vec![], false, true),
            "nothing is older than seq 1"
        );
        assert_eq!(
            page_of(&log, Some(1000), 3),
            ((23..=25).collect(), true, true),
            "`before` beyond the room is the latest"
        );
        assert_eq!(
            page_of(&log, None, 100),
            ((1..=25).collect(), false, true),
            "a limit past what is kept gets everything"
        );
        assert_eq!(page_of(&filled(0, 100), None, 50), (vec![], false, true));
    }

    #[test]
    fn a_page_below_what_memory_keeps_is_incomplete() {
        // Seqs 21-30 kept of 30.
        let log = filled(30, 10);
        assert_eq!(page_of(&log, None, 5), ((26..=30).collect(), true, true));
        assert_eq!(
            page_of(&log, Some(25), 10),
            ((21..=24).collect(), false, false),
            "seqs 15-20 are not here"
        );
        assert_eq!(page_of(&log, Some(21), 10), (vec![], false, false));
        assert_eq!(
            page_of(&log, Some(31), 10),
            ((21..=30).collect(), false, true)
        );
    }

    #[test]
    fn a_page_stops_at_its_byte_bound_but_always_moves_on() {
        let log = filled(25, 100);
        // Entries are 11-12 bytes: `,{"seq":N}`.
        let range = log.page(
            Page {
                before: None,
                limit: 10,
            },
            30,
        );
        assert_eq!((range.range.len(), range.has_more), (2, true));
        let range = log.page(
            Page {
                before: None,
                limit: 10,
            },
            0,
        );
        assert_eq!(range.range.len(), 1, "one message however small the bound");
    }

    #[test]
    fn a_join_replays_what_it_missed_of_the_life_it_knew() {
        let mut log = log();
        for _ in 0..5 {
            let _ = log.append(Order::Next, || usize::MAX, frame);
        }
        let none = Replay {
            first: 0,
            recovered: None,
            truncated: false,
        };
        assert_eq!(log.replay(None, None, usize::MAX), none);
        assert_eq!(
            log.replay(Some(3), Some("mine"), usize::MAX),
            Replay {
                first: 3,
                recovered: Some(true),
                truncated: false
            }
        );
        let everything = Replay {
            recovered: Some(false),
            ..none
        };
        assert_eq!(log.replay(Some(3), Some("other"), usize::MAX), everything);
        assert_eq!(log.replay(Some(6), None, usize::MAX), everything);
        assert!(
            log.replay(Some(3), None, 0).truncated,
            "a full outbox cuts the replay"
        );
        assert_eq!(log.replay(Some(3), None, 0).recovered, Some(false));
    }

    #[test]
    fn reserved_seqs_come_back_in_order_and_hold_the_room() {
        let mut log = log();
        assert_eq!(log.reserve(), None, "no backend life yet");
        log.reset("stored".into(), 41, &[]);
        assert_eq!(log.reserve(), Some(42));
        assert_eq!(log.reserve(), Some(43));
        let refused = log.reserve();
        assert_eq!(refused, Some(44));
        log.unreserve(44);
        assert!(log.in_flight());
        for seq in [42, 43] {
            let order = Order::Assigned {
                epoch: "stored",
                seq,
                force: false,
            };
            assert!(log.append(order, || usize::MAX, |_| frame(seq)).is_ok());
        }
        assert!(!log.in_flight());
        assert_eq!(
            log.reserve(),
            Some(44),
            "the given-back seq is handed out again"
        );
    }
}
