//! Counters and histograms each runtime thread fills, and how they merge across threads and
//! worker processes (they cross the worker pipe as JSON with base64 V2 histograms).

use std::collections::BTreeMap;
use std::time::Duration;

use chatrelay_wsclient::{base64_decode, base64_encode};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Latencies are recorded in microseconds, up to one hour, with 3 significant digits.
pub const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, HIST_MAX_US, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e:?}"),
    }
}

/// Plain event counts; all of them add up across threads and processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    pub attempted: u64,
    pub joined: u64,
    pub failed_refused: u64,
    pub failed_timeout: u64,
    pub failed_handshake: u64,
    pub failed_reset: u64,
    pub failed_other: u64,
    /// Messages whose schedule slot fell inside `--duration`.
    pub due: u64,
    /// Messages completely written to a socket.
    pub sent: u64,
    /// Deliveries of generator messages, each (receiver, seq) counted once.
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Seq numbers skipped within one receiver's stream while it was in the room.
    pub seq_gaps: u64,
    /// Messages without a generator stamp, or from before this run.
    pub foreign: u64,
    pub other_events: u64,
    pub server_errors: u64,
    /// Connections the server closed (close frame or EOF) before the run ended.
    pub closed_by_server: u64,
    pub churn_leaves: u64,
    pub churn_rejoins: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        macro_rules! add { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        add!(
            attempted,
            joined,
            failed_refused,
            failed_timeout,
            failed_handshake,
            failed_reset,
            failed_other,
            due,
            sent,
            delivered,
            duplicated,
            out_of_order,
            seq_gaps,
            foreign,
            other_events,
            server_errors,
            closed_by_server,
            churn_leaves,
            churn_rejoins,
            bytes_in,
            bytes_out
        );
    }

    pub fn failed(&self) -> u64 {
        self.failed_refused
            + self.failed_timeout
            + self.failed_handshake
            + self.failed_reset
            + self.failed_other
    }
}

/// Why a client did not get as far as its `joined`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    Refused,
    Timeout,
    Handshake,
    Reset,
    Other,
}

impl FailKind {
    pub fn from_io(e: &std::io::Error) -> FailKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => FailKind::Refused,
            K::TimedOut => FailKind::Timeout,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                FailKind::Reset
            }
            _ => FailKind::Other,
        }
    }

    pub fn count(self, c: &mut Counters) {
        match self {
            FailKind::Refused => c.failed_refused += 1,
            FailKind::Timeout => c.failed_timeout += 1,
            FailKind::Handshake => c.failed_handshake += 1,
            FailKind::Reset => c.failed_reset += 1,
            FailKind::Other => c.failed_other += 1,
        }
    }
}

/// What a delivered seq meant for one receiver's ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    InOrder,
    /// In order after skipping this many seqs (they may still arrive late).
    Gap(u64),
    Duplicate,
    OutOfOrder,
}

const WINDOW: u64 = 1024;

/// Per-receiver seq bookkeeping: highest seq seen plus a 1024-seq bitmap behind it, so late
/// and repeated deliveries are told apart in O(1) memory. A repeat older than the window is
/// counted as out of order.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    max: u64,
    bits: [u64; (WINDOW / 64) as usize],
    /// Started by [`SeqTracker::prime`] (then `max` 0 is a room's seq, not "nothing yet").
    primed: bool,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            max: 0,
            bits: [0; (WINDOW / 64) as usize],
            primed: false,
        }
    }
}

impl SeqTracker {
    fn bit(seq: u64) -> (usize, u64) {
        let s = seq % WINDOW;
        ((s / 64) as usize, 1u64 << (s % 64))
    }

    /// Forgets everything (after leaving a room).
    pub fn reset(&mut self) {
        *self = SeqTracker::default();
    }

    /// The highest seq seen (or primed), 0 for none.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Starts the stream after `seq` (a `joined`'s room seq): the next seq should be
    /// `seq + 1`, and a later first seq is a gap rather than the start.
    pub fn prime(&mut self, seq: u64) {
        *self = SeqTracker::default();
        self.max = seq;
        self.primed = true;
        let (w, b) = Self::bit(seq);
        self.bits[w] |= b;
    }

    pub fn observe(&mut self, seq: u64) -> SeqOutcome {
        if self.max == 0 && !self.primed {
            self.max = seq;
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            return SeqOutcome::InOrder;
        }
        if seq > self.max {
            let skipped = seq - self.max - 1;
            // Clear the slots the window slides over (they belong to seqs WINDOW older).
            if seq - self.max >= WINDOW {
                self.bits = [0; (WINDOW / 64) as usize];
            } else {
                for s in self.max + 1..=seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                }
            }
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            self.max = seq;
            return if skipped == 0 {
                SeqOutcome::InOrder
            } else {
                SeqOutcome::Gap(skipped)
            };
        }
        if self.max - seq >= WINDOW {
            return SeqOutcome::OutOfOrder;
        }
        let (w, b) = Self::bit(seq);
        if self.bits[w] & b != 0 {
            SeqOutcome::Duplicate
        } else {
            self.bits[w] |= b;
            SeqOutcome::OutOfOrder
        }
    }
}

/// CPU use of one runtime thread during the send phase.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ThreadCpu {
    pub cpu_s: f64,
    pub wall_s: f64,
}

/// Everything one worker process (or one thread, before merging) measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub counters: Counters,
    /// Joined clients per room (index = room number).
    pub joined_per_room: Vec<u64>,
    /// Messages sent per room.
    pub sent_per_room: Vec<u64>,
    #[serde(with = "hist_b64")]
    pub latency_us: Histogram<u64>,
    #[serde(with = "hist_b64")]
    pub connect_us: Histogram<u64>,
    #[serde(with = "hist_b64")]
    pub send_lag_us: Histogram<u64>,
    /// `--report-interval`: latency by wall-clock bucket of arrival (`ns / interval`).
    #[serde(with = "hist_map_b64", default)]
    pub latency_by_interval: BTreeMap<u64, Histogram<u64>>,
    pub error_codes: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<u16, u64>,
    /// A few distinct messages of `failed_other` errors, to say what went wrong.
    pub fail_samples: Vec<String>,
    pub threads: Vec<ThreadCpu>,
    /// Process CPU time during ramp-up and during the send phase.
    pub ramp_cpu_s: f64,
    pub run_cpu_s: f64,
    pub run_wall_s: f64,
    /// Seconds from ramp start until the last client of this worker joined or failed.
    pub ramp_s: f64,
    /// `--scenario reconnect-storm` only (null otherwise).
    #[serde(default)]
    pub storm: Option<crate::storm::stats::StormStats>,
}

impl WorkerReport {
    pub fn new(rooms: usize) -> Self {
        WorkerReport {
            counters: Counters::default(),
            joined_per_room: vec![0; rooms],
            sent_per_room: vec![0; rooms],
            latency_us: new_histogram(),
            connect_us: new_histogram(),
            send_lag_us: new_histogram(),
            latency_by_interval: BTreeMap::new(),
            error_codes: BTreeMap::new(),
            close_codes: BTreeMap::new(),
            fail_samples: Vec::new(),
            threads: Vec::new(),
            ramp_cpu_s: 0.0,
            run_cpu_s: 0.0,
            run_wall_s: 0.0,
            ramp_s: 0.0,
            storm: None,
        }
    }

    /// Adds another thread's or worker's measurements into this one.
    pub fn merge(&mut self, o: &WorkerReport) -> Result<(), Error> {
        self.counters.add(&o.counters);
        add_vec(&mut self.joined_per_room, &o.joined_per_room);
        add_vec(&mut self.sent_per_room, &o.sent_per_room);
        for (a, b) in [
            (&mut self.latency_us, &o.latency_us),
            (&mut self.connect_us, &o.connect_us),
            (&mut self.send_lag_us, &o.send_lag_us),
        ] {
            a.add(b).map_err(|e| Error::Histogram(format!("{e:?}")))?;
        }
        for (k, h) in &o.latency_by_interval {
            self.latency_by_interval
                .entry(*k)
                .or_insert_with(new_histogram)
                .add(h)
                .map_err(|e| Error::Histogram(format!("{e:?}")))?;
        }
        for (k, v) in &o.error_codes {
            *self.error_codes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.close_codes {
            *self.close_codes.entry(*k).or_default() += v;
        }
        for s in &o.fail_samples {
            if self.fail_samples.len() < 5 && !self.fail_samples.contains(s) {
                self.fail_samples.push(s.clone());
            }
        }
        self.threads.extend_from_slice(&o.threads);
        self.ramp_cpu_s += o.ramp_cpu_s;
        self.run_cpu_s += o.run_cpu_s;
        self.run_wall_s = self.run_wall_s.max(o.run_wall_s);
        self.ramp_s = self.ramp_s.max(o.ramp_s);
        if let Some(storm) = &o.storm {
            match &mut self.storm {
                Some(mine) => mine.merge(storm)?,
                None => self.storm = Some(storm.clone()),
            }
        }
        Ok(())
    }

    pub fn note_failure(&mut self, msg: String) {
        if self.fail_samples.len() < 5 && !self.fail_samples.contains(&msg) {
            self.fail_samples.push(msg);
        }
    }
}

fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Histograms cross the worker pipe as base64 of the V2 (uncompressed) encoding.
pub(crate) mod hist_b64 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut buf)
            .map_err(|e| serde::ser::Error::custom(format!("{e:?}")))?;
        s.serialize_str(&base64_encode(&buf))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = <String as Deserialize>::deserialize(d)?;
        let bytes = base64_decode(&text).ok_or_else(|| serde::de::Error::custom("bad base64"))?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| serde::de::Error::custom(format!("{e:?}")))
    }
}

/// Histograms keyed by a bucket (per interval, per storm window) cross the pipe as
/// `[[bucket, base64], ...]`.
pub(crate) mod hist_map_b64 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Entry(u64, #[serde(with = "hist_b64")] Histogram<u64>);

    pub fn serialize<S: serde::Serializer>(
        m: &BTreeMap<u64, Histogram<u64>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|(k, h)| Entry(*k, h.clone())))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u64, Histogram<u64>>, D::Error> {
        let v = <Vec<Entry> as Deserialize>::deserialize(d)?;
        Ok(v.into_iter().map(|Entry(k, h)| (k, h)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracker_classifies() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(10), SeqOutcome::InOrder);
        assert_eq!(t.observe(11), SeqOutcome::InOrder);
        assert_eq!(t.observe(11), SeqOutcome::Duplicate);
        assert_eq!(t.observe(14), SeqOutcome::Gap(2));
        assert_eq!(t.observe(12), SeqOutcome::OutOfOrder);
        assert_eq!(t.observe(12), SeqOutcome::Duplicate);
        assert_eq!(t.observe(5000), SeqOutcome::Gap(4985));
        assert_eq!(t.observe(14), SeqOutcome::OutOfOrder);
        assert_eq!(t.observe(4999), SeqOutcome::OutOfOrder);
        assert_eq!(t.observe(4999), SeqOutcome::Duplicate);
        // A slot reused by the sliding window must not look like a duplicate.
        assert_eq!(t.observe(5000 + 1024), SeqOutcome::Gap(1023));
        assert_eq!(t.observe(5001), SeqOutcome::OutOfOrder);
    }

    #[test]
    fn a_primed_tracker_sees_a_missing_first_seq() {
        let mut t = SeqTracker::default();
        t.prime(0);
        assert_eq!(t.observe(2), SeqOutcome::Gap(1));
        t.prime(41);
        assert_eq!(t.max(), 41);
        assert_eq!(t.observe(42), SeqOutcome::InOrder);
        assert_eq!(t.observe(41), SeqOutcome::Duplicate);
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut r = WorkerReport::new(3);
        r.latency_us.saturating_record(1234);
        r.counters.delivered = 9;
        r.joined_per_room[2] = 4;
        let mut h = new_histogram();
        h.saturating_record(77);
        r.latency_by_interval.insert(12, h);
        let json = serde_json::to_string(&r).expect("serialize");
        let back: WorkerReport = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.latency_us.len(), 1);
        assert_eq!(back.counters, r.counters);
        let mut m = WorkerReport::new(3);
        m.merge(&back).expect("merge");
        m.merge(&back).expect("merge");
        assert_eq!(m.counters.delivered, 18);
        assert_eq!(m.joined_per_room, vec![0, 0, 8]);
        assert_eq!(m.latency_us.len(), 2);
        assert_eq!(m.latency_by_interval.get(&12).map(|h| h.len()), Some(2));
    }
}
