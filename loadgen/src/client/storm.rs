//! The client's side of `--scenario reconnect-storm` (see [`crate::storm`]): the drop, the
//! reconnect, the rejoin with `since` and `epoch`, and the `joined` events it needs to read
//! (once per client at the ramp-up and once per rejoin: a JSON parse is fine there, never on
//! the per-message path).

use std::sync::Arc;

use serde_json::Value;
use tokio::time::{sleep_until, timeout_at};

use super::{open, Conn, End};
use crate::clock::{instant_at, now_ns};
use crate::scan::{self, push_u64};
use crate::stats::{SeqOutcome, WorkerReport};
use crate::storm::stats::StormStats;

/// How long a dropped client waits for the relay to close its side before reconnecting
/// anyway (on loopback it takes well under a millisecond).
const CLOSE_WAIT_NS: u64 = 2_000_000_000;

/// Where a client is in the storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Connected as it was at the ramp-up.
    Live,
    /// Dropped: reading what the relay had sent until it closes, throwing it away.
    Discarding,
    /// Reconnected, the rejoin sent with `since`: waiting for its `joined`.
    Rejoining { since: u64 },
    /// Resumed.
    Back,
}

/// A storm run's per-connection state.
#[derive(Debug)]
pub(super) struct StormConn {
    /// One of the clients that drop.
    pub dropped: bool,
    /// The storm instant (wall-clock ns; set when the send phase starts).
    pub at_ns: u64,
    /// The room's `epoch` from the first `joined`, sent back with the rejoin.
    epoch: Option<String>,
    pub stage: Stage,
}

impl StormConn {
    pub fn new(dropped: bool) -> StormConn {
        StormConn {
            dropped,
            at_ns: u64::MAX,
            epoch: None,
            stage: Stage::Live,
        }
    }
}

fn stats(r: &mut WorkerReport) -> Option<&mut StormStats> {
    r.storm.as_mut()
}

impl Conn {
    /// Counts this client in its group once it has joined at the ramp-up.
    pub(super) fn storm_joined_at_ramp(&self, r: &mut WorkerReport) {
        if let (Some(s), Some(st)) = (&self.storm, r.storm.as_mut()) {
            st.group(s.dropped).joined_per_room[self.slot] += 1;
        }
    }

    /// A message frame: `true` when it was thrown away (the client is dropping).
    pub(super) fn storm_discards(&self, r: &mut WorkerReport) -> bool {
        match &self.storm {
            Some(s) if s.stage == Stage::Discarding => {
                if let Some(st) = stats(r) {
                    st.discarded_at_drop += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// One live delivery's seq outcome and latency, for the client's group.
    pub(super) fn storm_delivery(
        &self,
        r: &mut WorkerReport,
        outcome: Option<SeqOutcome>,
        arrival: u64,
        us: u64,
    ) {
        let (Some(s), Some(st)) = (&self.storm, r.storm.as_mut()) else {
            return;
        };
        let group = st.group(s.dropped);
        if let Some(o) = outcome {
            group.tally(o);
        }
        if outcome != Some(SeqOutcome::Duplicate) {
            group.delivered += 1;
            if !s.dropped {
                st.stayed_latency(s.at_ns, arrival, us);
            }
        }
    }

    /// A `joined`: at the ramp-up, the room's epoch and seq (the seq tracker starts after it);
    /// after a reconnect, the resume: `recovered`, and the gap's messages from `history`.
    pub(super) fn storm_on_joined(&mut self, p: &[u8], arrival: u64, r: &mut WorkerReport) {
        let Some(stage) = self.storm.as_ref().map(|s| s.stage) else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<Value>(p) else {
            self.note(r, "a joined event that is not JSON");
            return;
        };
        let room_seq = v.get("seq").and_then(Value::as_u64);
        match stage {
            Stage::Live => {
                if let Some(s) = self.storm.as_mut() {
                    s.epoch = v.get("epoch").and_then(Value::as_str).map(str::to_owned);
                }
                if let Some(seq) = room_seq {
                    self.tracker.prime(seq);
                }
            }
            Stage::Rejoining { since } => self.storm_resumed(&v, since, room_seq, arrival, r),
            Stage::Discarding | Stage::Back => {}
        }
    }

    fn storm_resumed(
        &mut self,
        v: &Value,
        since: u64,
        room_seq: Option<u64>,
        arrival: u64,
        r: &mut WorkerReport,
    ) {
        let plan = Arc::clone(&self.ctx.plan);
        let Some(s) = self.storm.as_mut() else {
            return;
        };
        s.stage = Stage::Back;
        let at_ns = s.at_ns;
        let room_seq = room_seq.unwrap_or(since);
        let history = v.get("history").and_then(Value::as_array);
        let mut gap_in_history = 0;
        let mut frames = 0;
        let mut counted = 0;
        let mut outcomes = Vec::new();
        for m in history.into_iter().flatten() {
            let Some(seq) = m.get("seq").and_then(Value::as_u64) else {
                continue;
            };
            frames += 1;
            if seq > since && seq <= room_seq {
                gap_in_history += 1;
            }
            let text = m.get("text").and_then(Value::as_str).unwrap_or("");
            let ours = scan::parse_stamp(text.as_bytes())
                .is_some_and(|st| st.t_ns >= plan.ramp_t0_ns && st.sender < plan.clients);
            if !ours {
                r.counters.foreign += 1;
                continue;
            }
            let outcome = self.tracker.observe(seq);
            outcomes.push(outcome);
            match outcome {
                SeqOutcome::Duplicate => r.counters.duplicated += 1,
                o => {
                    match o {
                        SeqOutcome::Gap(n) => r.counters.seq_gaps += n,
                        SeqOutcome::OutOfOrder => r.counters.out_of_order += 1,
                        _ => {}
                    }
                    r.counters.delivered += 1;
                    counted += 1;
                }
            }
        }
        let recovered = v.get("recovered").and_then(Value::as_bool);
        let truncated = v.get("historyTruncated").and_then(Value::as_bool) == Some(true);
        let Some(st) = stats(r) else {
            return;
        };
        for o in outcomes {
            st.dropped_group.tally(o);
        }
        st.dropped_group.delivered += counted;
        st.via_history += counted;
        st.history_frames += frames;
        st.gap_messages += room_seq.saturating_sub(since);
        st.gap_in_history += gap_in_history;
        st.resumed += 1;
        match recovered {
            Some(true) => st.recovered_true += 1,
            Some(false) => st.recovered_false += 1,
            None => st.recovered_absent += 1,
        }
        st.history_truncated += u64::from(truncated);
        st.resume_us
            .saturating_record(arrival.saturating_sub(at_ns) / 1000);
        st.last_resumed_ns = st.last_resumed_ns.max(arrival);
    }

    fn note(&self, r: &mut WorkerReport, what: &str) {
        r.note_failure(format!("reconnect storm: {what}"));
    }

    /// The storm hits this client: drop the connection, wait out the jitter, reconnect and
    /// rejoin with `since` and `epoch`. `Err(End::Gone)` when it could not get back (counted).
    pub(super) async fn storm_drop(&mut self) -> Result<(), End> {
        let plan = Arc::clone(&self.ctx.plan);
        let Some(storm_plan) = plan.storm else {
            return Ok(());
        };
        let Some(at_ns) = self.storm.as_ref().map(|s| s.at_ns) else {
            return Ok(());
        };
        // What is written is sent (the relay reads it before our FIN); what is not is lost
        // with the connection, as for any client that vanishes (due, never sent).
        let _ = self.flush();
        if self.out_pos > 0 {
            self.credit_written();
        }
        self.out.clear();
        self.out_pos = 0;
        self.out_msgs = 0;
        let since = self.tracker.max();
        if let Some(s) = self.storm.as_mut() {
            s.stage = Stage::Discarding;
        }
        if let Some(st) = self.ctx.report.borrow_mut().storm.as_mut() {
            st.dropped += 1;
            st.storm_ns = st.storm_ns.max(at_ns);
        }
        self.half_close().await;
        self.discard_until_closed(now_ns() + CLOSE_WAIT_NS).await;

        sleep_until(instant_at(at_ns + storm_plan.jitter_ns(self.id))).await;
        let deadline = instant_at(now_ns() + plan.connect_timeout_ns);
        let fresh = match timeout_at(deadline, open(&self.ctx, self.id)).await {
            Ok(Ok(c)) => c,
            Ok(Err((_, detail))) => return Err(self.lost(detail.as_deref().unwrap_or("refused"))),
            Err(_) => return Err(self.lost("connect timed out")),
        };
        // The new socket replaces the old one (dropped here); the seq tracker stays, since
        // the gap is measured against what this client saw before the drop.
        let mut fresh = fresh;
        std::mem::swap(&mut self.stream, &mut fresh.stream);
        std::mem::swap(&mut self.wire, &mut fresh.wire);
        self.pending = std::mem::take(&mut fresh.pending);
        self.frag.clear();
        self.frag_active = false;
        self.closed = None;
        self.joined = false;
        self.join_error = None;
        if let Some(s) = self.storm.as_mut() {
            s.stage = Stage::Rejoining { since };
        }
        self.queue_rejoin(since);
        match self.until_joined(deadline).await {
            Ok(()) => Ok(()),
            Err((_, detail)) => Err(self.lost(detail.as_deref().unwrap_or("no joined in time"))),
        }
    }

    /// Counts a dropped client that did not get back.
    fn lost(&self, why: &str) -> End {
        let mut r = self.ctx.report.borrow_mut();
        if let Some(st) = r.storm.as_mut() {
            st.failed += 1;
        }
        r.note_failure(format!("reconnect storm: {why}"));
        End::Gone
    }

    /// Sends our FIN: the relay sees the client vanish (no WebSocket close) after reading
    /// everything we wrote. (tokio's shutdown of a TCP stream is `shutdown(SHUT_WR)`, done at
    /// once.)
    async fn half_close(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
    }

    /// Reads (and, in [`Stage::Discarding`], throws away) until the relay closes or
    /// `deadline_ns`.
    async fn discard_until_closed(&mut self, deadline_ns: u64) {
        let deadline = instant_at(deadline_ns);
        while self.closed.is_none() {
            tokio::select! {
                r = self.stream.readable() => {
                    if r.is_err() || self.read_available().is_err() {
                        return;
                    }
                    // Pongs and the close answer cannot go out on a half-closed socket.
                    self.out.clear();
                    self.out_pos = 0;
                }
                _ = sleep_until(deadline) => return,
            }
        }
    }

    /// `{"type":"join","room":"room-N","username":"uI","since":S,"epoch":"E"}`.
    fn queue_rejoin(&mut self, since: u64) {
        let mut p = Vec::with_capacity(96);
        p.extend_from_slice(b"{\"type\":\"join\",\"room\":\"room-");
        push_u64(&mut p, self.room as u64);
        p.extend_from_slice(b"\",\"username\":\"u");
        push_u64(&mut p, self.id);
        p.extend_from_slice(b"\",\"since\":");
        push_u64(&mut p, since);
        if let Some(epoch) = self.storm.as_ref().and_then(|s| s.epoch.as_deref()) {
            // An epoch is the relay's hex id; JSON-encode it anyway, it came from the wire.
            p.extend_from_slice(b",\"epoch\":");
            p.extend_from_slice(Value::from(epoch).to_string().as_bytes());
        }
        p.push(b'}');
        self.queue_frame(&p);
    }
}
