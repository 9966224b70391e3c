//! `--html FILE`: the report as one self-contained page for people: inline CSS and SVG, no
//! scripts, nothing fetched from anywhere, so it opens the same from a mail attachment, a CI
//! artifact or a file share.
//!
//! Built from the [`Report`] alone (the same numbers as `--json` and the table): the answer
//! (the capacity sentence in capacity mode), the settings, the capacity steps with a chart,
//! latency percentiles with the percentile plot, throughput and loss, the server's CPU and RSS
//! (`--server-pid`, `--metrics-url`, with the relay's delivery rate and open connections over
//! time from the per-second scrapes) and the generator's own CPU.

use std::fmt::Write as _;

use crate::capacity::{commas, deliveries, ms, Outcome};
use crate::plot::{nice_ceiling, percentile_svg};
use crate::report::{Percentiles, Report};
use crate::scrape::{Phase, RelayMetrics};

const CSS: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1000px;padding:24px;color:#1d2330;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.meta{color:#5b6475;margin:0 0 16px}
.answer{font-size:19px;background:#eef5ff;border-left:5px solid #1f6feb;padding:12px 16px;margin:16px 0}
.answer.bad{background:#fff1f0;border-color:#d1242f}.answer.warn{background:#fff8e6;border-color:#bf8700}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e6e9ef;text-align:right;vertical-align:top;white-space:nowrap}
td.l,td:last-child{white-space:normal}
th:first-child,td:first-child{text-align:left}th{background:#f5f7fa;font-weight:600}
td.l{text-align:left}.held{color:#1a7f37}.broke{color:#d1242f}.gen{color:#bf8700}
.flag{color:#d1242f;font-weight:600}.ok{color:#1a7f37}
svg{max-width:100%;height:auto;display:block;margin:8px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:0 24px}
@media print{body{max-width:none}}
";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let c = &r.config;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>chatrelay loadgen: {}</title><style>{CSS}</style></head><body>\n",
        esc(&c.scenario)
    );
    let _ = writeln!(
        h,
        "<h1>chatrelay load test</h1><p class=\"meta\">{} scenario against {}</p>",
        esc(&c.scenario),
        esc(&c.urls.join(", "))
    );
    answer(&mut h, r);
    settings(&mut h, r);
    if r.observe.capacity.is_some() {
        capacity(&mut h, r);
    }
    if let Some(storm) = &r.observe.storm {
        crate::storm::html::section(&mut h, storm);
    }
    latency(&mut h, r);
    intervals(&mut h, r);
    throughput(&mut h, r);
    server(&mut h, r);
    generator(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn answer(h: &mut String, r: &Report) {
    let (text, class) = match (&r.observe.capacity, &r.observe.storm) {
        (Some(cap), _) => {
            let class = match cap.answer.limit {
                crate::capacity::Limit::Relay => "",
                crate::capacity::Limit::Generator => " warn",
                crate::capacity::Limit::NotReached => " warn",
            };
            let class = if cap.answer.clients.is_none() {
                " bad"
            } else {
                class
            };
            (cap.answer.sentence.clone(), class)
        }
        (None, Some(storm)) => crate::storm::html::answer(storm, r.loadgen.saturation.as_deref()),
        (None, None) => {
            let m = &r.messages;
            let k = &r.connect;
            let mut s = format!(
                "{} of {} clients joined; {} msg/s offered, {} deliveries/s, p99 {}; {} missing, {} failed to join.",
                commas(k.joined),
                commas(r.config.clients),
                commas(r.config.rate.round() as u64),
                deliveries(m.delivered_per_second),
                ms(r.latency_ms.p99),
                commas(m.missing),
                commas(k.failed.total)
            );
            let bad = m.missing > 0 || k.failed.total > 0 || r.server_events.closed_by_server > 0;
            if let Some(why) = &r.loadgen.saturation {
                let _ = write!(
                    s,
                    " The generator saturated ({why}): these numbers are a limit of the generator, not the relay."
                );
            }
            let class = if bad {
                " bad"
            } else if r.loadgen.saturated {
                " warn"
            } else {
                ""
            };
            (s, class)
        }
    };
    let _ = writeln!(
        h,
        "<p id=\"answer\" class=\"answer{class}\">{}</p>",
        esc(&text)
    );
}

pub(crate) fn row(h: &mut String, cells: &[String]) {
    h.push_str("<tr>");
    for c in cells {
        let _ = write!(h, "<td>{c}</td>");
    }
    h.push_str("</tr>\n");
}

pub(crate) fn head(h: &mut String, cells: &[&str]) {
    h.push_str("<tr>");
    for c in cells {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>\n");
}

pub(crate) fn kv(h: &mut String, k: &str, v: &str) {
    let _ = writeln!(h, "<tr><td>{}</td><td class=\"l\">{}</td></tr>", esc(k), v);
}

fn settings(h: &mut String, r: &Report) {
    let c = &r.config;
    h.push_str("<h2>Settings</h2><table>\n");
    kv(h, "targets", &esc(&c.urls.join(", ")));
    kv(h, "scenario", &esc(&c.scenario));
    kv(h, "clients", &commas(c.clients));
    kv(h, "rooms", &commas(c.rooms));
    kv(
        h,
        "rate",
        &format!("{} msg/s", commas(c.rate.round() as u64)),
    );
    kv(
        h,
        "send phase",
        &format!("{:.1} s (+{:.1} s drain)", c.duration_s, c.drain_s),
    );
    kv(h, "payload", &format!("{} B", c.payload));
    kv(
        h,
        "connect rate",
        &format!("{}/s", commas(c.connect_rate.round() as u64)),
    );
    if let Some(ch) = c.churn_rate {
        kv(h, "churn rate", &format!("{ch}/s"));
    }
    kv(
        h,
        "generator",
        &format!(
            "{} process(es), {} thread(s), {} source IP(s)",
            c.workers, c.threads, c.source_ips
        ),
    );
    if let Some(cap) = &r.observe.capacity {
        let slo = if cap.slo.is_empty() {
            "none".to_string()
        } else {
            cap.slo.join(", ")
        };
        kv(
            h,
            "capacity steps",
            &esc(&format!(
                "+{} clients, +{} msg/s per step, {:.1} s each, at most {} steps",
                commas(cap.step_clients),
                cap.step_rate,
                cap.step_duration_s,
                cap.max_steps
            )),
        );
        kv(
            h,
            "objectives",
            &esc(&format!(
                "{slo}; always: no loss, no failed joins, no relay closes"
            )),
        );
    }
    if let Some(m) = &r.observe.relay_metrics {
        kv(h, "metrics scraped from", &esc(&m.urls.join(", ")));
    }
    if let Some(s) = &r.server {
        kv(h, "server pids", &esc(&format!("{:?}", s.pids)));
    }
    h.push_str("</table>\n");
}

fn capacity(h: &mut String, r: &Report) {
    let Some(cap) = &r.observe.capacity else {
        return;
    };
    h.push_str("<h2>Capacity steps</h2><table>\n");
    head(
        h,
        &[
            "step",
            "clients",
            "msg/s",
            "deliveries/s",
            "p50",
            "p99",
            "p99.9",
            "failed",
            "missing",
            "4008",
            "4029",
            "gen CPU",
            "server CPU",
            "outcome",
        ],
    );
    for s in &cap.steps {
        let code = |k: &str| s.closes.get(k).copied().unwrap_or(0).to_string();
        let (class, word) = match s.outcome {
            Outcome::Held => ("held", "held"),
            Outcome::Broke => ("broke", "broke"),
            Outcome::GeneratorLimit => ("gen", "generator limit"),
        };
        let outcome = if s.reasons.is_empty() {
            format!("<span class=\"{class}\">{word}</span>")
        } else {
            format!(
                "<span class=\"{class}\">{word}</span>: {}",
                esc(&s.reasons.join("; "))
            )
        };
        row(
            h,
            &[
                s.step.to_string(),
                commas(s.clients),
                commas(s.rate.round() as u64),
                deliveries(s.delivered_per_second),
                ms(s.latency_ms.p50),
                ms(s.latency_ms.p99),
                ms(s.latency_ms.p999),
                commas(s.failed),
                commas(s.missing),
                code("4008"),
                code("4029"),
                format!("{:.0}%", s.generator_cpu_percent),
                s.server_cpu_percent
                    .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}%")),
                format!("<span style=\"text-align:left\">{outcome}</span>"),
            ],
        );
    }
    h.push_str("</table>\n");
    let by_clients = cap.step_clients > 0;
    let x = |s: &crate::capacity::StepReport| {
        if by_clients {
            s.clients as f64
        } else {
            s.rate
        }
    };
    let x_label = if by_clients { "clients" } else { "msg/s" };
    let p99: Vec<(f64, f64)> = cap.steps.iter().map(|s| (x(s), s.latency_ms.p99)).collect();
    let p50: Vec<(f64, f64)> = cap.steps.iter().map(|s| (x(s), s.latency_ms.p50)).collect();
    let limit = cap
        .slo
        .iter()
        .filter_map(|s| s.parse::<crate::capacity::Slo>().ok())
        .find(|s| s.metric == crate::capacity::SloMetric::P99)
        .map(|s| (s.limit_ms, format!("objective {}", s.as_str())));
    h.push_str("<div class=\"grid\">");
    h.push_str(&line_chart(
        "Latency per step",
        x_label,
        "ms",
        &[("p99", "#d1242f", p99), ("p50", "#1f6feb", p50)],
        limit,
    ));
    let thr: Vec<(f64, f64)> = cap
        .steps
        .iter()
        .map(|s| (x(s), s.delivered_per_second))
        .collect();
    h.push_str(&line_chart(
        "Deliveries per second per step",
        x_label,
        "deliveries/s",
        &[("delivered/s", "#1a7f37", thr)],
        None,
    ));
    h.push_str("</div>\n");
}

fn pct_row(h: &mut String, name: &str, p: &Percentiles) {
    row(
        h,
        &[
            esc(name),
            format!("{:.3}", p.p50),
            format!("{:.3}", p.p90),
            format!("{:.3}", p.p99),
            format!("{:.3}", p.p999),
            format!("{:.3}", p.p9999),
            format!("{:.3}", p.max),
            commas(p.count),
        ],
    );
}

fn latency(h: &mut String, r: &Report) {
    let title = if r.observe.capacity.is_some() {
        "Latency (last step that held, or the base step)"
    } else {
        "Latency"
    };
    let _ = writeln!(
        h,
        "<h2>{title}</h2><p>From each message's scheduled send time to its arrival, per receiver (no coordinated omission), in ms.</p><table>"
    );
    head(
        h,
        &["", "p50", "p90", "p99", "p99.9", "p99.99", "max", "count"],
    );
    pct_row(h, "end-to-end", &r.latency_ms);
    pct_row(h, "generator lag", &r.send_lag_ms);
    pct_row(h, "connect + join", &r.connect.time_ms);
    h.push_str("</table>\n");
    if let Some(hist) = &r.latency_histogram {
        h.push_str(&percentile_svg(hist, "end-to-end latency by percentile"));
    }
}

fn intervals(h: &mut String, r: &Report) {
    let Some(iv) = &r.observe.intervals else {
        return;
    };
    let _ = writeln!(
        h,
        "<h2>Over time ({} intervals)</h2>",
        crate::interval::span(iv.interval_s)
    );
    if let Some(why) = &iv.rss_leak {
        let _ = writeln!(h, "<p class=\"flag\">{}</p>", esc(why));
    }
    let pts = |f: fn(&crate::interval::IntervalRow) -> Option<f64>| -> Vec<(f64, f64)> {
        iv.rows
            .iter()
            .filter_map(|r| Some((r.end_s, f(r)?)))
            .collect()
    };
    h.push_str("<div class=\"grid\">");
    h.push_str(&line_chart(
        "Latency over time",
        "s",
        "ms",
        &[
            ("p99", "#d1242f", pts(|r| r.p99_ms)),
            ("p50", "#1f6feb", pts(|r| r.p50_ms)),
        ],
        None,
    ));
    h.push_str(&line_chart(
        "Rates over time",
        "s",
        "per second",
        &[
            (
                "delivered/s",
                "#1a7f37",
                pts(|r| Some(r.delivered_per_second)),
            ),
            ("sent/s", "#8250df", pts(|r| Some(r.sent_per_second))),
        ],
        None,
    ));
    let rss = pts(|r| r.server_rss_bytes.map(|b| b as f64 / 1048576.0));
    if rss.len() >= 2 {
        h.push_str(&line_chart(
            "Server RSS",
            "s",
            "MiB",
            &[("rss", "#8250df", rss)],
            None,
        ));
    }
    h.push_str("</div><table>\n");
    head(
        h,
        &[
            "seconds",
            "sent/s",
            "delivered/s",
            "p50",
            "p99",
            "server RSS",
        ],
    );
    for row_ in &iv.rows {
        let o = |v: Option<f64>| v.map_or_else(|| "-".to_string(), ms);
        row(
            h,
            &[
                format!("{:.1}-{:.1}", row_.start_s, row_.end_s),
                commas(row_.sent_per_second.round() as u64),
                deliveries(row_.delivered_per_second),
                o(row_.p50_ms),
                o(row_.p99_ms),
                row_.server_rss_bytes.map_or_else(|| "-".to_string(), mib),
            ],
        );
    }
    h.push_str("</table>\n");
}

fn throughput(h: &mut String, r: &Report) {
    let m = &r.messages;
    let k = &r.connect;
    let flag = |v: u64| {
        if v > 0 {
            format!("<span class=\"flag\">{}</span>", commas(v))
        } else {
            commas(v)
        }
    };
    h.push_str("<h2>Throughput and loss</h2><div class=\"grid\"><table>\n");
    kv(h, "messages due", &commas(m.due));
    kv(h, "messages sent", &commas(m.sent));
    kv(h, "unsent", &flag(m.unsent));
    kv(
        h,
        "deliveries expected",
        &format!(
            "{}{}",
            commas(m.expected),
            if m.expected_exact { "" } else { " (approx.)" }
        ),
    );
    kv(h, "delivered", &commas(m.delivered));
    kv(h, "deliveries/s", &deliveries(m.delivered_per_second));
    kv(h, "missing", &flag(m.missing));
    kv(h, "duplicated", &flag(m.duplicated));
    kv(h, "out of order", &flag(m.out_of_order));
    h.push_str("</table><table>\n");
    kv(h, "clients joined", &commas(k.joined));
    kv(h, "failed to join", &flag(k.failed.total));
    kv(
        h,
        "failures by kind",
        &esc(&format!(
            "refused {}, timeout {}, handshake {}, reset {}, other {}",
            k.failed.refused, k.failed.timeout, k.failed.handshake, k.failed.reset, k.failed.other
        )),
    );
    kv(
        h,
        "ramp",
        &format!("{:.2} s, {:.0} connections/s", k.ramp_s, k.per_second),
    );
    let e = &r.server_events;
    kv(h, "closed by the relay", &flag(e.closed_by_server));
    if !e.close_codes.is_empty() {
        kv(h, "close codes", &esc(&format!("{:?}", e.close_codes)));
    }
    if !e.errors.is_empty() {
        kv(h, "error events", &esc(&format!("{:?}", e.errors)));
    }
    h.push_str("</table></div>\n");
}

fn mib(v: u64) -> String {
    format!("{:.1} MiB", v as f64 / 1048576.0)
}

fn server(h: &mut String, r: &Report) {
    h.push_str("<h2>Server</h2>\n");
    if r.server.is_none() && r.observe.relay_metrics.is_none() {
        h.push_str("<p>Not measured: give <code>--server-pid</code> (local relay) or <code>--metrics-url</code>.</p>\n");
        return;
    }
    h.push_str("<table>\n");
    if let Some(s) = &r.server {
        kv(
            h,
            "CPU (--server-pid, send phase)",
            &format!("{:.0}% of one core", s.cpu_percent),
        );
        kv(h, "RSS at the end", &mib(s.rss_bytes));
        kv(h, "RSS peak", &mib(s.rss_peak_bytes));
        kv(
            h,
            "RSS per client",
            &format!("{:.0} B", s.rss_per_client_bytes),
        );
        if let Some(i) = &s.memory_per_connection {
            kv(
                h,
                "memory per connection",
                &format!("{:.0} B", i.bytes_per_connection),
            );
        }
    }
    if let Some(m) = &r.observe.relay_metrics {
        relay_rows(h, m);
    }
    h.push_str("</table>\n");
    if let Some(m) = &r.observe.relay_metrics {
        relay_charts(h, m);
    }
}

fn relay_rows(h: &mut String, m: &RelayMetrics) {
    kv(
        h,
        "scrapes",
        &format!("{} ok, {} failed", m.scrapes, m.failed_scrapes),
    );
    if let Some(e) = &m.error {
        kv(
            h,
            "scrape error",
            &format!("<span class=\"flag\">{}</span>", esc(e)),
        );
    }
    let check = match &m.delivered {
        Some(d) if d.matches => format!(
            "<span class=\"ok\">relay {} = clients {}</span> (tolerance {})",
            commas(d.relay),
            commas(d.loadgen),
            d.tolerance
        ),
        Some(d) => format!(
            "<span class=\"flag\">mismatch: relay counted {}, the clients received {} (difference {}, tolerance {})</span>",
            commas(d.relay),
            commas(d.loadgen),
            d.difference,
            d.tolerance
        ),
        None => "n/a".to_string(),
    };
    kv(h, "deliveries (relay vs clients)", &check);
    let cpu = match (m.cpu_seconds, m.cpu_percent) {
        (Some(s), Some(p)) => format!("{s:.2} s, {p:.0}% of one core"),
        (Some(s), None) => format!("{s:.2} s"),
        _ => "n/a (not exported)".to_string(),
    };
    kv(h, "CPU (/metrics)", &cpu);
    kv(
        h,
        "RSS (/metrics)",
        &m.rss_bytes
            .map_or_else(|| "n/a (not exported)".to_string(), mib),
    );
    let o = |v: Option<u64>| v.map_or_else(|| "n/a".to_string(), commas);
    kv(
        h,
        "connections open",
        &format!(
            "before {}, max {}, after {}",
            o(m.connections_open_before),
            o(m.connections_open_max),
            o(m.connections_open_after)
        ),
    );
    if !m.rejected_by_reason.is_empty() {
        kv(
            h,
            "connections refused, by reason",
            &esc(&format!("{:?}", m.rejected_by_reason)),
        );
    }
    if !m.closed_by_code.is_empty() {
        kv(
            h,
            "closed during the run, by code",
            &esc(&format!("{:?}", m.closed_by_code)),
        );
    }
}

fn relay_charts(h: &mut String, m: &RelayMetrics) {
    // Delivery rate between consecutive scrapes, at the later one's time.
    let mut rate = Vec::new();
    for w in m.samples.windows(2) {
        if let (Some(a), Some(b)) = (w[0].delivered, w[1].delivered) {
            let dt = w[1].t_s - w[0].t_s;
            if dt > 0.0 && w[1].phase != Phase::Before {
                rate.push((w[1].t_s, (b - a).max(0.0) / dt));
            }
        }
    }
    let open: Vec<(f64, f64)> = m
        .samples
        .iter()
        .filter_map(|s| Some((s.t_s, s.connections_open?)))
        .collect();
    let rss: Vec<(f64, f64)> = m
        .samples
        .iter()
        .filter_map(|s| Some((s.t_s, s.rss_bytes? / 1048576.0)))
        .collect();
    h.push_str("<div class=\"grid\">");
    if rate.len() >= 2 {
        h.push_str(&line_chart(
            "Relay deliveries/s (from /metrics)",
            "s",
            "deliveries/s",
            &[("relay", "#1a7f37", rate)],
            None,
        ));
    }
    if open.len() >= 2 {
        h.push_str(&line_chart(
            "Relay connections open",
            "s",
            "connections",
            &[("open", "#1f6feb", open)],
            None,
        ));
    }
    if rss.len() >= 2 {
        h.push_str(&line_chart(
            "Relay RSS",
            "s",
            "MiB",
            &[("rss", "#8250df", rss)],
            None,
        ));
    }
    h.push_str("</div>\n");
}

fn generator(h: &mut String, r: &Report) {
    let l = &r.loadgen;
    h.push_str("<h2>Generator</h2><table>\n");
    kv(
        h,
        "CPU (send phase)",
        &format!(
            "{:.0}% of one core over {} process(es) and {} thread(s); {} usable core(s)",
            l.run_cpu_percent, l.processes, l.threads, l.usable_cores
        ),
    );
    kv(
        h,
        "busiest thread",
        &format!("{:.0}%", l.max_thread_cpu_percent),
    );
    kv(h, "CPU (ramp-up)", &format!("{:.0}%", l.ramp_cpu_percent));
    let sat = match &l.saturation {
        Some(why) => format!(
            "<span class=\"flag\">saturated: {}. The numbers are a limit of the generator, not the relay.</span>",
            esc(why)
        ),
        None => "<span class=\"ok\">not saturated</span>".to_string(),
    };
    kv(h, "saturation", &sat);
    h.push_str("</table>\n");
}

/// One line of a chart: its legend name, its colour and its points.
pub type Line<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A small line chart: every series on one y axis from 0, optional horizontal limit line.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Line<'_>],
    limit: Option<(f64, String)>,
) -> String {
    const W: f64 = 480.0;
    const H: f64 = 300.0;
    const L: f64 = 64.0;
    const R: f64 = 16.0;
    const T: f64 = 36.0;
    const B: f64 = 48.0;
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    // A limit far above the data would flatten it: then the limit is left out of the chart.
    let limit = limit.filter(|(l, _)| *l <= 3.0 * y1.max(1e-3));
    if let Some((l, _)) = &limit {
        y1 = y1.max(*l);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let ymax = nice_ceiling(y1.max(1e-3));
    let pw = W - L - R;
    let ph = H - T - B;
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| T + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect width="{W}" height="{H}" fill="white"/><text x="{:.1}" y="20" text-anchor="middle" font-size="14">{}</text>"##,
        W / 2.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let y = sy(v);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e6eb"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            L + pw,
            L - 5.0,
            y + 4.0,
            axis_num(v)
        );
        let xv = x0 + (x1 - x0) * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            sx(xv),
            T + ph + 16.0,
            axis_num(xv)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{L}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"##,
        T + ph,
        L + pw,
        T + ph,
        L + pw / 2.0,
        H - 10.0,
        esc(x_label),
        T + ph / 2.0,
        T + ph / 2.0,
        esc(y_label)
    );
    if let Some((l, label)) = &limit {
        let y = sy(*l);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d1242f" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d1242f">{}</text>"##,
            L + pw,
            L + pw,
            y - 4.0,
            esc(label)
        );
    }
    for (i, (name, color, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                sx(*x),
                sy(*y)
            );
        }
        let ly = T + 4.0 + 14.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            L + 8.0,
            ly,
            L + 22.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn axis_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Writes `--html`.
pub fn write(path: &std::path::Path, r: &Report) -> Result<(), crate::Error> {
    std::fs::write(path, render(r)).map_err(|source| crate::Error::Output {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_and_escaping() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let svg = line_chart(
            "t <1>",
            "clients",
            "ms",
            &[("p99", "#000", vec![(100.0, 3.0), (200.0, 9.0)])],
            Some((5.0, "objective p99<5ms".into())),
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("objective p99&lt;5ms"));
        // No points at all still draws axes, without NaN coordinates.
        let empty = line_chart("e", "x", "y", &[("a", "#000", vec![])], None);
        assert!(!empty.contains("NaN"));
        assert_eq!(axis_num(2_500_000.0), "2.5M");
        assert_eq!(axis_num(25_000.0), "25k");
    }
}
