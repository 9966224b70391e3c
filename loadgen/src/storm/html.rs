//! The reconnect storm's part of the `--html` page: the answer, a table of the resume and
//! the two groups, and the others' p99 around the drop.

use std::fmt::Write as _;

use super::report::{sentence, GroupReport, StormReport};
use crate::capacity::{commas, ms};
use crate::html::{esc, head, kv, line_chart, row};

/// The page's answer line: the sentence, marked bad on any loss or a client not back, and
/// a warning when the generator saturated (then the latencies include its own delay).
pub fn answer(s: &StormReport, saturation: Option<&str>) -> (String, &'static str) {
    let d = &s.dropped_clients;
    let bad = s.all_back_s.is_none()
        || d.missing + d.duplicated + d.out_of_order + s.others.missing > 0
        || s.not_recovered > 0;
    let mut text = sentence(s);
    if let Some(why) = saturation {
        text.push_str(&format!(
            " The generator saturated ({why}): its latencies include its own delay."
        ));
    }
    let class = if bad {
        " bad"
    } else if saturation.is_some() {
        " warn"
    } else {
        ""
    };
    (text, class)
}

fn group_row(h: &mut String, name: &str, g: &GroupReport) {
    let flag = |v: u64| {
        if v > 0 {
            format!("<span class=\"flag\">{}</span>", commas(v))
        } else {
            commas(v)
        }
    };
    row(
        h,
        &[
            esc(name),
            commas(g.clients),
            commas(g.expected),
            commas(g.delivered),
            flag(g.missing),
            flag(g.duplicated),
            flag(g.out_of_order),
            flag(g.seq_gaps),
        ],
    );
}

/// The section (after the settings).
pub fn section(h: &mut String, s: &StormReport) {
    let _ = writeln!(
        h,
        "<h2 id=\"storm\">Reconnect storm</h2><p>{:.0}% of the clients dropped their connections at once {:.1} s into the send phase, reconnected within {:.1} s and rejoined with <code>since</code> and <code>epoch</code>.</p><table>",
        s.fraction * 100.0,
        s.at_s,
        s.spread_s
    );
    kv(h, "dropped", &commas(s.dropped));
    kv(
        h,
        "resumed",
        &format!(
            "{} ({} recovered:true, {} recovered:false, {} without recovered; {} failed)",
            commas(s.resumed),
            commas(s.recovered),
            commas(s.not_recovered),
            commas(s.recovered_absent),
            commas(s.failed)
        ),
    );
    let t = &s.time_to_resumed_ms;
    kv(
        h,
        "time to resumed",
        &format!("p50 {}, p99 {}, max {}", ms(t.p50), ms(t.p99), ms(t.max)),
    );
    kv(
        h,
        "all back after",
        &s.all_back_s.map_or_else(
            || "<span class=\"flag\">not all came back</span>".to_string(),
            |b| ms(b * 1e3),
        ),
    );
    let g = &s.gap;
    kv(
        h,
        "the gap",
        &format!(
            "{} messages, {} in the rejoins' history, {} missing; {} delivered from history; {} frames discarded at the drop; {} sends skipped while away",
            commas(g.messages),
            commas(g.in_history),
            commas(g.missing),
            commas(g.via_history),
            commas(g.discarded_at_drop),
            commas(g.sends_skipped)
        ),
    );
    h.push_str("</table><table>\n");
    head(
        h,
        &[
            "",
            "clients",
            "expected",
            "delivered",
            "missing",
            "duplicated",
            "out of order",
            "seq gaps",
        ],
    );
    group_row(h, "dropped clients", &s.dropped_clients);
    group_row(h, "others", &s.others);
    h.push_str("</table><table>\n");
    let l = &s.others_latency;
    head(h, &["others' latency", "p50", "p90", "p99", "max", "count"]);
    for (name, p) in [
        ("before the drop".to_string(), &l.before),
        (
            format!("during the storm ({})", ms(l.window_s * 1e3)),
            &l.during,
        ),
        ("after".to_string(), &l.after),
    ] {
        row(
            h,
            &[
                esc(&name),
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max),
                commas(p.count),
            ],
        );
    }
    h.push_str("</table>\n");
    let points: Vec<(f64, f64)> = l.p99_timeline.iter().map(|p| (p[0], p[1])).collect();
    if points.len() >= 2 {
        h.push_str(&line_chart(
            "Others' p99 from the drop on (100 ms buckets)",
            "s after the drop",
            "ms",
            &[("p99", "#d1242f", points)],
            Some((l.before.p99, format!("p99 before {}", ms(l.before.p99)))),
        ));
    }
}
