//! What each runtime thread counts of a reconnect storm; merged across threads and worker
//! processes with the rest of the [`WorkerReport`](crate::stats::WorkerReport).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{hist_b64, hist_map_b64, new_histogram, SeqOutcome, HIST_MAX_US};
use crate::Error;

/// The clients that stayed: their latency from the drop on, in buckets of this length.
pub const BUCKET_NS: u64 = 100_000_000;
/// Buckets kept after the drop (later arrivals go to the last one): 60 s.
const MAX_BUCKETS: u64 = 600;

/// Two significant digits: a bucket's p99 to 1%, at an eighth of the memory of the run's
/// histograms (a storm run keeps up to [`MAX_BUCKETS`] of these).
fn bucket_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HIST_MAX_US, 2) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e:?}"),
    }
}

/// Deliveries and their seq outcomes for one group of clients (dropped, or stayed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Group {
    /// Clients of the group joined at the ramp-up, per room slot.
    pub joined_per_room: Vec<u64>,
    /// Deliveries of generator messages (live and, for the dropped, in the rejoin's history).
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub seq_gaps: u64,
}

impl Group {
    fn add(&mut self, o: &Group) {
        if self.joined_per_room.len() < o.joined_per_room.len() {
            self.joined_per_room.resize(o.joined_per_room.len(), 0);
        }
        for (a, b) in self.joined_per_room.iter_mut().zip(&o.joined_per_room) {
            *a += b;
        }
        self.delivered += o.delivered;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.seq_gaps += o.seq_gaps;
    }

    /// Counts one seq outcome (the delivery itself is counted by the caller unless a duplicate).
    pub fn tally(&mut self, outcome: SeqOutcome) {
        match outcome {
            SeqOutcome::InOrder => {}
            SeqOutcome::Gap(n) => self.seq_gaps += n,
            SeqOutcome::OutOfOrder => self.out_of_order += 1,
            SeqOutcome::Duplicate => self.duplicated += 1,
        }
    }
}

/// One thread's (or, merged, the run's) storm counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormStats {
    /// Clients that were connected and joined when the storm came, and dropped.
    pub dropped: u64,
    /// Rejoins answered with `joined`, and that `joined`'s `recovered`.
    pub resumed: u64,
    pub recovered_true: u64,
    pub recovered_false: u64,
    /// A rejoin's `joined` without `recovered` (a relay that ignores `since`).
    pub recovered_absent: u64,
    /// Rejoins whose `joined` had `historyTruncated`.
    pub history_truncated: u64,
    /// Dropped clients that did not get back (connect, upgrade or join failed or timed out).
    pub failed: u64,
    /// Message frames read and thrown away between the drop and the relay's close.
    pub discarded_at_drop: u64,
    /// Messages between `since` and the rejoin's `seq` (what the gap held), and how many
    /// of those seqs the rejoin's history held.
    pub gap_messages: u64,
    pub gap_in_history: u64,
    /// Message entries in the rejoins' histories, and those of them counted as deliveries
    /// (this run's, not duplicates).
    pub history_frames: u64,
    pub via_history: u64,
    /// Send slots of dropped clients that fell while they were away (not sent, not due).
    pub sends_skipped: u64,
    pub dropped_group: Group,
    pub stayed_group: Group,
    /// Storm instant to the rejoin's `joined`, microseconds.
    #[serde(with = "hist_b64")]
    pub resume_us: Histogram<u64>,
    /// The storm instant and the latest rejoin (wall-clock ns; 0: none yet).
    pub storm_ns: u64,
    pub last_resumed_ns: u64,
    /// Latency of the clients that stayed before the storm, and from it on by
    /// [`BUCKET_NS`] bucket of arrival.
    #[serde(with = "hist_b64")]
    pub stayed_before_us: Histogram<u64>,
    #[serde(with = "hist_map_b64")]
    pub stayed_after_us: BTreeMap<u64, Histogram<u64>>,
}

impl StormStats {
    pub fn new(rooms: usize) -> StormStats {
        let group = Group {
            joined_per_room: vec![0; rooms],
            ..Group::default()
        };
        StormStats {
            dropped: 0,
            resumed: 0,
            recovered_true: 0,
            recovered_false: 0,
            recovered_absent: 0,
            history_truncated: 0,
            failed: 0,
            discarded_at_drop: 0,
            gap_messages: 0,
            gap_in_history: 0,
            history_frames: 0,
            via_history: 0,
            sends_skipped: 0,
            dropped_group: group.clone(),
            stayed_group: group,
            resume_us: new_histogram(),
            storm_ns: 0,
            last_resumed_ns: 0,
            stayed_before_us: new_histogram(),
            stayed_after_us: BTreeMap::new(),
        }
    }

    pub fn group(&mut self, dropped: bool) -> &mut Group {
        if dropped {
            &mut self.dropped_group
        } else {
            &mut self.stayed_group
        }
    }

    /// A delivery to a client that stayed: its latency, before or after the storm instant.
    pub fn stayed_latency(&mut self, storm_ns: u64, arrival_ns: u64, us: u64) {
        if arrival_ns < storm_ns {
            self.stayed_before_us.saturating_record(us);
        } else {
            let bucket = ((arrival_ns - storm_ns) / BUCKET_NS).min(MAX_BUCKETS);
            self.stayed_after_us
                .entry(bucket)
                .or_insert_with(bucket_histogram)
                .saturating_record(us);
        }
    }

    pub fn merge(&mut self, o: &StormStats) -> Result<(), Error> {
        macro_rules! add { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        add!(
            dropped,
            resumed,
            recovered_true,
            recovered_false,
            recovered_absent,
            history_truncated,
            failed,
            discarded_at_drop,
            gap_messages,
            gap_in_history,
            history_frames,
            via_history,
            sends_skipped
        );
        self.dropped_group.add(&o.dropped_group);
        self.stayed_group.add(&o.stayed_group);
        let err = |e| Error::Histogram(format!("{e:?}"));
        self.resume_us.add(&o.resume_us).map_err(err)?;
        self.stayed_before_us
            .add(&o.stayed_before_us)
            .map_err(err)?;
        for (k, h) in &o.stayed_after_us {
            self.stayed_after_us
                .entry(*k)
                .or_insert_with(bucket_histogram)
                .add(h)
                .map_err(err)?;
        }
        self.storm_ns = self.storm_ns.max(o.storm_ns);
        self.last_resumed_ns = self.last_resumed_ns.max(o.last_resumed_ns);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_round_trips() {
        let mut a = StormStats::new(2);
        a.dropped = 3;
        a.dropped_group.joined_per_room[1] = 3;
        a.dropped_group.tally(SeqOutcome::Gap(2));
        a.resume_us.saturating_record(1500);
        a.storm_ns = 10;
        a.stayed_latency(10, 5, 100);
        a.stayed_latency(10, 10 + BUCKET_NS + 1, 200);
        let json = serde_json::to_string(&a).expect("serialize");
        let back: StormStats = serde_json::from_str(&json).expect("deserialize");
        let mut m = StormStats::new(2);
        m.merge(&back).expect("merge");
        m.merge(&a).expect("merge");
        assert_eq!(m.dropped, 6);
        assert_eq!(m.dropped_group.joined_per_room, vec![0, 6]);
        assert_eq!(m.dropped_group.seq_gaps, 4);
        assert_eq!(m.resume_us.len(), 2);
        assert_eq!(m.stayed_before_us.len(), 2);
        assert_eq!(m.stayed_after_us.get(&1).map(Histogram::len), Some(2));
        assert_eq!(m.storm_ns, 10);
    }
}
