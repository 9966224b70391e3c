//! The report's `storm` section (JSON, schema in loadgen/report.schema.json) and its table.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::stats::{Group, StormStats, BUCKET_NS};
use super::StormPlan;
use crate::report::Percentiles;
use crate::stats::new_histogram;

/// `storm` in the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormReport {
    /// Seconds into the send phase when the clients dropped.
    pub at_s: f64,
    pub fraction: f64,
    pub spread_s: f64,
    /// Clients that dropped (connected and joined at the storm).
    pub dropped: u64,
    /// Dropped clients whose rejoin was answered with `joined`.
    pub resumed: u64,
    /// `joined.recovered` of the rejoins: true, false, absent (a relay without resume).
    pub recovered: u64,
    pub not_recovered: u64,
    pub recovered_absent: u64,
    pub history_truncated: u64,
    /// Dropped clients that did not get back (connect, upgrade or rejoin failed).
    pub failed: u64,
    /// From the drop to the rejoin's `joined`, per dropped client.
    pub time_to_resumed_ms: Percentiles,
    /// From the drop until the last dropped client had resumed; null if some never did.
    pub all_back_s: Option<f64>,
    /// Messages across the gap: what it held, what came in the rejoins' histories.
    pub gap: GapReport,
    /// Exact delivery counts of the clients that dropped and of those that stayed.
    pub dropped_clients: GroupReport,
    pub others: GroupReport,
    /// Latency of the clients that stayed: before the drop, during the storm window (from
    /// the drop until the last dropped client resumed, at least 100 ms) and after it.
    pub others_latency: WindowLatency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GapReport {
    /// Seqs between each dropped client's `since` and its rejoin's `joined.seq`, summed.
    pub messages: u64,
    /// Of those, the seqs the rejoins' histories held; `missing` = messages - in_history.
    pub in_history: u64,
    pub missing: u64,
    /// Deliveries that came in the rejoins' histories (counted as delivered, without a
    /// latency: they waited for the client, not for the relay).
    pub via_history: u64,
    /// Message frames the relay had already sent a client when it dropped, thrown away
    /// (they come again in the history).
    pub discarded_at_drop: u64,
    /// Send slots of dropped clients that fell while they were away (not sent, not due).
    pub sends_skipped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupReport {
    pub clients: u64,
    /// Messages sent to their rooms x the group's members there.
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub seq_gaps: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowLatency {
    pub window_s: f64,
    pub before: Percentiles,
    pub during: Percentiles,
    pub after: Percentiles,
    /// p99 of each 100 ms from the drop on: `[seconds after the drop, p99 ms]`.
    pub p99_timeline: Vec<[f64; 2]>,
}

fn group(g: &Group, sent_per_room: &[u64]) -> GroupReport {
    let expected: u64 = sent_per_room
        .iter()
        .zip(&g.joined_per_room)
        .map(|(s, j)| s * j)
        .sum();
    GroupReport {
        clients: g.joined_per_room.iter().sum(),
        expected,
        delivered: g.delivered,
        missing: expected.saturating_sub(g.delivered),
        duplicated: g.duplicated,
        out_of_order: g.out_of_order,
        seq_gaps: g.seq_gaps,
    }
}

/// The section from the merged counts and the run's messages sent per room.
pub fn build(plan: &StormPlan, st: &StormStats, sent_per_room: &[u64]) -> StormReport {
    let all_back = st.dropped > 0 && st.resumed == st.dropped && st.last_resumed_ns > 0;
    let back_ns = st.last_resumed_ns.saturating_sub(st.storm_ns);
    // The storm window in whole buckets: from the drop until the last one was back (or,
    // if some never came back, the whole rest of the run).
    let window_buckets = if all_back {
        back_ns.div_ceil(BUCKET_NS).max(1)
    } else {
        u64::MAX
    };
    let mut during = new_histogram();
    let mut after = new_histogram();
    let mut timeline = Vec::new();
    for (&bucket, h) in &st.stayed_after_us {
        let into = if bucket < window_buckets {
            &mut during
        } else {
            &mut after
        };
        add(into, h);
        if !h.is_empty() {
            timeline.push([
                bucket as f64 * BUCKET_NS as f64 / 1e9,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            ]);
        }
    }
    StormReport {
        at_s: plan.at_ns as f64 / 1e9,
        fraction: plan.fraction,
        spread_s: plan.spread_ns as f64 / 1e9,
        dropped: st.dropped,
        resumed: st.resumed,
        recovered: st.recovered_true,
        not_recovered: st.recovered_false,
        recovered_absent: st.recovered_absent,
        history_truncated: st.history_truncated,
        failed: st.failed,
        time_to_resumed_ms: Percentiles::from_us(&st.resume_us),
        all_back_s: all_back.then(|| back_ns as f64 / 1e9),
        gap: GapReport {
            messages: st.gap_messages,
            in_history: st.gap_in_history,
            missing: st.gap_messages.saturating_sub(st.gap_in_history),
            via_history: st.via_history,
            discarded_at_drop: st.discarded_at_drop,
            sends_skipped: st.sends_skipped,
        },
        dropped_clients: group(&st.dropped_group, sent_per_room),
        others: group(&st.stayed_group, sent_per_room),
        others_latency: WindowLatency {
            window_s: if all_back {
                (window_buckets * BUCKET_NS) as f64 / 1e9
            } else {
                timeline
                    .last()
                    .map_or(0.0, |p| p[0] + BUCKET_NS as f64 / 1e9)
            },
            before: Percentiles::from_us(&st.stayed_before_us),
            during: Percentiles::from_us(&during),
            after: Percentiles::from_us(&after),
            p99_timeline: timeline,
        },
    }
}

/// Adds a 2-digit bucket histogram into a 3-digit one (value by value: the precisions differ).
fn add(into: &mut Histogram<u64>, h: &Histogram<u64>) {
    for v in h.iter_recorded() {
        into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
    }
}

/// What the relay's delivery counter should show of the clients' deliveries: live frames
/// (the histories' are not deliveries to the relay) and the frames thrown away at the drop
/// (the relay had queued them).
pub fn relay_side_frames(seen: u64, st: &StormStats) -> u64 {
    (seen + st.discarded_at_drop).saturating_sub(st.history_frames)
}

fn ms(v: f64) -> String {
    crate::capacity::ms(v)
}

/// The RECONNECT STORM section of the table.
pub fn render_table(out: &mut String, s: &StormReport) {
    let _ = writeln!(
        out,
        "\nRECONNECT STORM  {:.0}% of the clients dropped at {:.1}s, reconnecting within {:.1}s",
        s.fraction * 100.0,
        s.at_s,
        s.spread_s
    );
    let _ = writeln!(out, "  {}", sentence(s));
    let back = match s.all_back_s {
        Some(b) => format!("all back and resumed after {}", ms(b * 1e3)),
        None => format!("** NOT ALL BACK: {} of {} resumed **", s.resumed, s.dropped),
    };
    let _ = writeln!(
        out,
        "  dropped {}   resumed {}   failed {}   {back}",
        s.dropped, s.resumed, s.failed
    );
    let t = &s.time_to_resumed_ms;
    let _ = writeln!(
        out,
        "  time to resumed   p50 {}  p99 {}  max {}  (n={})",
        ms(t.p50),
        ms(t.p99),
        ms(t.max),
        t.count
    );
    let _ = writeln!(
        out,
        "  recovered: true {}  false {}  absent {}  history truncated {}",
        s.recovered, s.not_recovered, s.recovered_absent, s.history_truncated
    );
    let g = &s.gap;
    let _ = writeln!(
        out,
        "  gap: {} messages, {} in the rejoins' history, {} missing; {} delivered from history; {} discarded at the drop; {} sends skipped while away",
        g.messages, g.in_history, g.missing, g.via_history, g.discarded_at_drop, g.sends_skipped
    );
    for (name, r) in [
        ("dropped clients", &s.dropped_clients),
        ("others", &s.others),
    ] {
        let flag = if r.missing + r.duplicated + r.out_of_order + r.seq_gaps > 0 {
            "  **"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {name:<16} {} clients: expected {} delivered {} missing {} duplicated {} out of order {} seq gaps {}{flag}",
            r.clients, r.expected, r.delivered, r.missing, r.duplicated, r.out_of_order, r.seq_gaps
        );
    }
    let l = &s.others_latency;
    let _ = writeln!(
        out,
        "  others' latency   before p50 {} p99 {}   during the storm ({}) p50 {} p99 {}   after p50 {} p99 {}",
        ms(l.before.p50),
        ms(l.before.p99),
        ms(l.window_s * 1e3),
        ms(l.during.p50),
        ms(l.during.p99),
        ms(l.after.p50),
        ms(l.after.p99)
    );
}

/// The storm in one sentence (the table's first line and the HTML report's answer).
pub fn sentence(s: &StormReport) -> String {
    let clients = s.dropped_clients.clients + s.others.clients;
    let t = &s.time_to_resumed_ms;
    let back = match s.all_back_s {
        Some(b) => format!(
            "all were back and resumed after {} (p50 {}, p99 {})",
            ms(b * 1e3),
            ms(t.p50),
            ms(t.p99)
        ),
        None => format!("only {} resumed ({} failed)", s.resumed, s.failed),
    };
    let l = &s.others_latency;
    let d = &s.dropped_clients;
    let loss = if d.missing + d.duplicated + d.out_of_order == 0 {
        "lost, repeated and reordered nothing across the gap".to_string()
    } else {
        format!(
            "missed {}, got {} twice and {} out of order across the gap",
            d.missing, d.duplicated, d.out_of_order
        )
    };
    format!(
        "{} of {clients} clients dropped at {:.1}s; {back}, {} with recovered:true; they {loss}; the others' p99 was {} during the storm vs {} before ({} missing).",
        s.dropped,
        s.at_s,
        s.recovered,
        ms(l.during.p99),
        ms(l.before.p99),
        s.others.missing
    )
}
