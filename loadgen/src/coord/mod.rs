//! The coordinator: splits the clients over workers, paces the ramp, starts the send phase for
//! everyone at one instant, samples the server, and merges everything into the [`Report`].
//!
//! [`run`] goes through the phases in order, one function each: split and spawn the workers
//! ([`workers`]), ramp up, send, drain, and summarise ([`summary`]). With `--metrics-url` a
//! [`Watch`](crate::scrape::Watch) scrapes the relay from the end of the ramp to the end of the
//! drain. `--scenario capacity` is handed to [`crate::capacity`], which calls back here once
//! per step.

mod summary;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::clock::{now_ns, Go};
use crate::config::{Config, Scenario};
use crate::plan::Plan;
use crate::report::Report;
use crate::sysinfo::{self, ProcSample};
use crate::worker::Snapshot;
use crate::Error;

use summary::ServerSamples;
use workers::{Split, Workers};

const TICK: Duration = Duration::from_millis(50);

/// Runs one complete load test and returns its report (also writing the requested files).
pub fn run(config: Config) -> Result<Report, Error> {
    if config.scenario == Scenario::Capacity {
        // A search over ordinary runs: each step comes back here as a fanout run.
        return crate::capacity::run(config);
    }
    crate::plan::validate(&config)?;
    let o = &config.observe;
    let mut watch = crate::scrape::Watch::new(&o.metrics_urls, o.admin_token.as_deref())?;
    let split = Split::plan(&config)?;
    let ramp = Ramp::schedule(&config, &split);
    let plan = Arc::new(Plan::new(&config, ramp.t0, ramp.deadline)?);
    // Before any client: a certificate that does not verify is one clear error, and the
    // relay's default limits a plan would exceed are said up front (warnings, not errors).
    if let Some(tls) = &plan.access.tls {
        crate::tls::preflight(&plan.targets, tls, config.connect_timeout)?;
    }
    for w in crate::limits::warnings(&config, &plan) {
        eprintln!("loadgen: warning: {w}");
    }
    // Before the first connection: the relay's refusals happen during the ramp-up.
    watch.before_ramp();
    let mut workers = Workers::spawn(&config, &split, &plan, &ramp)?;

    let bar = progress_bar(&config);
    let ramped = ramp_up(&config, &workers, &bar, &ramp);
    // The relay's baseline: after the joins, before the first message.
    watch.begin();
    let sent = send(
        &mut workers,
        &plan,
        &split,
        &config.server_pids,
        &bar,
        &ramped,
    );
    let ticker = drain(&workers, &bar, sent.ticker, sent.drain_end);
    watch.end();
    let at_end = (now_ns(), workers.total());
    bar.finish_and_clear();

    let processes = workers.len();
    let mut merged = summary::merge(workers.finish(), plan.room_slots as usize)?;
    let by_interval = std::mem::take(&mut merged.latency_by_interval);
    let storm = merged.storm.clone().zip(plan.storm);
    let sent_per_room = merged.sent_per_room.clone();
    merged.ramp_s = (ramped.done_at.saturating_sub(ramp.t0)) as f64 / 1e9;
    let samples = ServerSamples {
        start: sent.server_start,
        end: sent.server_end,
        half: ramped.half,
        full: ramped.full,
    };
    let mut report = summary::summarise(&config, &plan, &split, processes, merged, samples);
    let m = &report.messages;
    let mut seen = m.delivered + m.duplicated + m.foreign;
    let mut allowance = 0;
    if let Some((stats, storm_plan)) = &storm {
        // The relay counts what it queued live: not the histories, but the frames a dropped
        // client threw away; and it may have queued a gap's messages to a dropped connection
        // before it noticed the connection was gone, never written.
        seen = crate::storm::report::relay_side_frames(seen, stats);
        allowance = stats.gap_messages;
        report.observe.storm = Some(crate::storm::report::build(
            storm_plan,
            stats,
            &sent_per_room,
        ));
    }
    report.observe.relay_metrics = watch.finish(seen, allowance);
    report.observe.intervals = ticker
        .intervals
        .map(|iv| iv.finish(at_end.0, &at_end.1, &by_interval));
    crate::output::write_outputs(&config, &report)?;
    Ok(report)
}

/// When the paced ramp-up starts and by when every client must have connected.
pub(super) struct Ramp {
    pub t0: u64,
    pub deadline: u64,
}

impl Ramp {
    fn schedule(config: &Config, split: &Split) -> Ramp {
        // Child processes take a moment to exec: start the paced ramp a little later for them.
        let t0 = now_ns()
            + if split.children() {
                300_000_000
            } else {
                10_000_000
            };
        let len = config
            .ramp_deadline
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_else(|| {
                (config.clients as f64 / config.connect_rate * 1e9) as u64
                    + config.connect_timeout.as_nanos() as u64
            });
        Ramp {
            t0,
            deadline: t0 + len,
        }
    }
}

/// Where the ramp-up ended.
struct Ramped {
    snap: Snapshot,
    done_at: u64,
    /// Idle scenario: the server sampled at half and at all of the clients joined.
    half: Option<(u64, ProcSample)>,
    full: Option<(u64, ProcSample)>,
}

/// Waits until every client joined or failed, or the deadline (plus grace) passed.
fn ramp_up(config: &Config, workers: &Workers, bar: &ProgressBar, ramp: &Ramp) -> Ramped {
    bar.set_length(config.clients);
    bar.set_message("ramp-up");
    let pids = &config.server_pids;
    let idle = config.scenario == Scenario::Idle;
    let mut half: Option<(u64, ProcSample)> = None;
    let mut done_at = now_ns();
    let snap = loop {
        let s = workers.total();
        bar.set_position(s.joined + s.failed);
        bar.set_message(format!("ramp-up: {} joined, {} failed", s.joined, s.failed));
        if idle && !pids.is_empty() && half.is_none() && s.joined * 2 >= config.clients {
            half = sysinfo::sample_pids(pids).map(|p| (workers.total().joined, p));
        }
        let now = now_ns();
        if s.joined + s.failed >= config.clients || now > ramp.deadline + 1_000_000_000 {
            done_at = done_at.max(now);
            break s;
        }
        std::thread::sleep(TICK);
    };
    let full = if idle && !pids.is_empty() {
        sysinfo::sample_pids(pids).map(|p| (snap.joined, p))
    } else {
        None
    };
    Ramped {
        snap,
        done_at,
        half,
        full,
    }
}

/// The send phase as it ended.
struct Sent {
    ticker: Ticker,
    drain_end: u64,
    server_start: Option<ProcSample>,
    server_end: Option<ProcSample>,
}

/// Starts everyone at the same wall-clock instant, shows progress until the send phase is
/// over, and samples the server at both ends of it.
fn send(
    workers: &mut Workers,
    plan: &Plan,
    split: &Split,
    pids: &[u32],
    bar: &ProgressBar,
    ramped: &Ramped,
) -> Sent {
    let t0 = now_ns()
        + if split.children() {
            200_000_000
        } else {
            50_000_000
        };
    workers.go(Go {
        t0_ns: t0,
        joined_total: ramped.snap.joined,
    });
    let send_end = t0 + plan.duration_ns;
    let drain_end = send_end + plan.drain_ns;
    bar.set_length(plan.duration_ns / 1_000_000 + plan.drain_ns / 1_000_000);
    bar.set_position(0);
    sleep_until_ns(t0);
    let server_start = sysinfo::sample_pids(pids);
    let mut ticker = Ticker {
        t0,
        last: (now_ns(), 0),
        intervals: crate::interval::Recorder::new(plan.report_interval_ns, t0, pids),
    };
    loop {
        let now = now_ns();
        if now >= send_end {
            break;
        }
        ticker.show(bar, workers, now, "sending");
        sleep_until_ns(send_end.min(now + TICK.as_nanos() as u64).min(drain_end));
    }
    Sent {
        ticker,
        drain_end,
        server_start,
        server_end: sysinfo::sample_pids(pids),
    }
}

/// Keeps showing progress while the last deliveries arrive; hands the ticker back for its
/// `--report-interval` rows.
fn drain(workers: &Workers, bar: &ProgressBar, mut ticker: Ticker, drain_end: u64) -> Ticker {
    loop {
        let now = now_ns();
        if now >= drain_end {
            break;
        }
        ticker.show(bar, workers, now, "draining");
        sleep_until_ns((now + TICK.as_nanos() as u64).min(drain_end));
    }
    ticker
}

/// The progress line of the send and drain phases: totals and the delivery rate since the
/// previous tick.
struct Ticker {
    t0: u64,
    last: (u64, u64),
    /// `--report-interval`.
    intervals: Option<crate::interval::Recorder>,
}

impl Ticker {
    fn show(&mut self, bar: &ProgressBar, workers: &Workers, now: u64, phase: &str) {
        let s = workers.total();
        let rate = (s.delivered - self.last.1.min(s.delivered)) as f64
            / ((now - self.last.0).max(1) as f64 / 1e9);
        self.last = (now, s.delivered);
        if let Some(line) = self.intervals.as_mut().and_then(|iv| iv.tick(now, &s)) {
            // Above the progress bar, and also when it is hidden.
            bar.suspend(|| eprintln!("{line}"));
        }
        bar.set_position((now - self.t0) / 1_000_000);
        bar.set_message(format!(
            "{phase}: sent {}, delivered {} ({rate:.0}/s)",
            s.sent, s.delivered
        ));
    }
}

fn sleep_until_ns(t: u64) {
    let now = now_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

fn progress_bar(config: &Config) -> ProgressBar {
    if config.no_progress {
        return ProgressBar::hidden();
    }
    // indicatif draws only when stderr is a terminal, so logs and CI stay clean.
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
