//! The coordinator: splits the clients over workers, paces the ramp, starts the send phase for
//! everyone at one instant, samples the server, and merges everything into the [`Report`].

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::clock::{now_ns, Go};
use crate::config::{Config, Scenario};
use crate::plan::Plan;
use crate::process::{ChildWorker, WorkerSpec};
use crate::report::*;
use crate::stats::WorkerReport;
use crate::sysinfo::{self, ProcSample};
use crate::worker::{LocalWorker, Snapshot};
use crate::Error;

/// File descriptors kept free per process (stdio, epoll, pipes, the runtime's own).
const FD_RESERVE: u64 = 100;
/// Saturation threshold: a thread or the usable cores busy more than this fraction.
const SATURATED: f64 = 0.90;
/// Generator lag (slot -> queued) p99 above this means the generator fell behind.
const LAG_LIMIT_MS: f64 = 10.0;
const TICK: Duration = Duration::from_millis(50);

enum Worker {
    Local(LocalWorker),
    Child(ChildWorker),
}

impl Worker {
    fn snapshot(&self) -> Snapshot {
        match self {
            Worker::Local(w) => w.snapshot(),
            Worker::Child(w) => w.snapshot(),
        }
    }
    fn go(&mut self, go: Go) {
        match self {
            Worker::Local(w) => w.go(go),
            Worker::Child(w) => w.go(go),
        }
    }
    fn abort(&mut self) {
        match self {
            Worker::Local(w) => w.abort(),
            Worker::Child(w) => w.abort(),
        }
    }
    fn finish(self, limit: Duration) -> Result<WorkerReport, Error> {
        match self {
            Worker::Local(w) => w.finish(),
            Worker::Child(w) => w.finish(limit),
        }
    }
}

fn total(workers: &[Worker]) -> Snapshot {
    let mut s = Snapshot::default();
    for w in workers {
        s.add(&w.snapshot());
    }
    s
}

fn sleep_until_ns(t: u64) {
    let now = now_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

/// Runs one complete load test and returns its report (also writing the requested files).
pub fn run(config: Config) -> Result<Report, Error> {
    crate::plan::validate(&config)?;
    let nofile =
        sysinfo::raise_nofile_limit().map_err(|e| Error::io("raising RLIMIT_NOFILE", e))?;
    let cores = sysinfo::usable_cores();
    let threads_total = config.threads.unwrap_or(cores).max(1);
    let per_process = nofile.saturating_sub(FD_RESERVE).max(1);
    let nworkers = config
        .workers
        .unwrap_or_else(|| config.clients.div_ceil(per_process) as usize)
        .clamp(1, config.clients as usize);
    let threads_per_worker = if nworkers == 1 {
        threads_total
    } else {
        (threads_total / nworkers).max(1)
    };
    let slice = config.clients.div_ceil(nworkers as u64);
    if nworkers == 1 && config.clients > per_process {
        return Err(Error::Config(format!(
            "{} clients need more than the {per_process} sockets one process may open; drop --workers",
            config.clients
        )));
    }
    if slice > per_process {
        return Err(Error::Config(format!(
            "{slice} clients per worker exceed the {per_process} sockets one process may open; use more --workers"
        )));
    }

    // Child processes take a moment to exec: start the paced ramp a little later for them.
    let ramp_t0 = now_ns()
        + if nworkers > 1 {
            300_000_000
        } else {
            10_000_000
        };
    let ramp_len = config
        .ramp_deadline
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_else(|| {
            (config.clients as f64 / config.connect_rate * 1e9) as u64
                + config.connect_timeout.as_nanos() as u64
        });
    let ramp_deadline = ramp_t0 + ramp_len;
    let plan = Arc::new(Plan::new(&config, ramp_t0, ramp_deadline)?);

    let mut workers = Vec::with_capacity(nworkers);
    for i in 0..nworkers {
        let lo = i as u64 * slice;
        let hi = ((i as u64 + 1) * slice).min(config.clients);
        if lo >= hi {
            break;
        }
        let w = if nworkers == 1 {
            Worker::Local(LocalWorker::start(
                Arc::clone(&plan),
                lo,
                hi,
                threads_per_worker,
            )?)
        } else {
            let spec = WorkerSpec {
                config: config.clone(),
                lo,
                hi,
                threads: threads_per_worker,
                ramp_t0_ns: ramp_t0,
                ramp_deadline_ns: ramp_deadline,
            };
            match ChildWorker::spawn(i, &spec) {
                Ok(c) => Worker::Child(c),
                Err(e) => {
                    for w in &mut workers {
                        Worker::abort(w);
                    }
                    return Err(e);
                }
            }
        };
        workers.push(w);
    }

    let bar = progress_bar(&config);
    bar.set_length(config.clients);
    bar.set_message("ramp-up");

    // Ramp-up: wait until every client joined or failed, or the deadline (plus grace) passed.
    let pids = &config.server_pids;
    let idle = config.scenario == Scenario::Idle;
    let mut half: Option<(u64, ProcSample)> = None;
    let mut ramp_done_at = now_ns();
    let snap = loop {
        let s = total(&workers);
        bar.set_position(s.joined + s.failed);
        bar.set_message(format!("ramp-up: {} joined, {} failed", s.joined, s.failed));
        if idle && !pids.is_empty() && half.is_none() && s.joined * 2 >= config.clients {
            half = sysinfo::sample_pids(pids).map(|p| (total(&workers).joined, p));
        }
        let now = now_ns();
        if s.joined + s.failed >= config.clients || now > ramp_deadline + 1_000_000_000 {
            ramp_done_at = ramp_done_at.max(now);
            break s;
        }
        std::thread::sleep(TICK);
    };
    let full = if idle && !pids.is_empty() {
        sysinfo::sample_pids(pids).map(|p| (snap.joined, p))
    } else {
        None
    };

    // Send phase: everyone starts at the same wall-clock instant.
    let t0 = now_ns()
        + if nworkers > 1 {
            200_000_000
        } else {
            50_000_000
        };
    let go = Go {
        t0_ns: t0,
        joined_total: snap.joined,
    };
    for w in &mut workers {
        w.go(go);
    }
    let send_end = t0 + plan.duration_ns;
    let drain_end = send_end + plan.drain_ns;
    bar.set_length(plan.duration_ns / 1_000_000 + plan.drain_ns / 1_000_000);
    bar.set_position(0);
    sleep_until_ns(t0);
    let server_start = sysinfo::sample_pids(pids);
    let mut server_end = None;
    let mut last = (now_ns(), 0u64);
    loop {
        let now = now_ns();
        if server_end.is_none() && now >= send_end {
            server_end = sysinfo::sample_pids(pids);
        }
        if now >= drain_end {
            break;
        }
        let s = total(&workers);
        let rate =
            (s.delivered - last.1.min(s.delivered)) as f64 / ((now - last.0).max(1) as f64 / 1e9);
        last = (now, s.delivered);
        bar.set_position((now - t0) / 1_000_000);
        bar.set_message(format!(
            "{}: sent {}, delivered {} ({:.0}/s)",
            if now < send_end {
                "sending"
            } else {
                "draining"
            },
            s.sent,
            s.delivered,
            rate
        ));
        let wake = if now < send_end {
            send_end.min(now + TICK.as_nanos() as u64)
        } else {
            now + TICK.as_nanos() as u64
        };
        sleep_until_ns(wake.min(drain_end));
    }
    bar.finish_and_clear();

    let mut merged = WorkerReport::new(plan.room_slots as usize);
    let nproc = workers.len();
    let mut first_err = None;
    for w in workers {
        match w.finish(Duration::from_secs(30)) {
            Ok(r) => merged.merge(&r)?,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    merged.ramp_s = (ramp_done_at.saturating_sub(ramp_t0)) as f64 / 1e9;

    let server = server_report(pids, &merged, server_start, server_end, half, full);
    let report = build(
        &config,
        &plan,
        nproc,
        threads_per_worker,
        cores,
        merged,
        server,
    );
    crate::output::write_outputs(&config, &report)?;
    Ok(report)
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

fn server_report(
    pids: &[u32],
    merged: &WorkerReport,
    start: Option<ProcSample>,
    end: Option<ProcSample>,
    half: Option<(u64, ProcSample)>,
    full: Option<(u64, ProcSample)>,
) -> Option<ServerReport> {
    if pids.is_empty() {
        return None;
    }
    let end = end.or_else(|| sysinfo::sample_pids(pids))?;
    let cpu_percent = match (start, merged.run_wall_s) {
        (Some(s), wall) if wall > 0.0 => {
            (end.cpu.saturating_sub(s.cpu)).as_secs_f64() / wall * 100.0
        }
        _ => 0.0,
    };
    let joined = merged.counters.joined.max(1);
    let slope = match (half, full) {
        (Some((jh, h)), Some((jf, f))) if jf > jh => Some(IdleSlope {
            joined_half: jh,
            rss_half_bytes: h.rss_bytes,
            joined_full: jf,
            rss_full_bytes: f.rss_bytes,
            bytes_per_connection: (f.rss_bytes as f64 - h.rss_bytes as f64) / (jf - jh) as f64,
        }),
        _ => None,
    };
    Some(ServerReport {
        pids: pids.to_vec(),
        rss_bytes: end.rss_bytes,
        rss_peak_bytes: end.rss_peak_bytes,
        cpu_percent,
        rss_per_client_bytes: end.rss_bytes as f64 / joined as f64,
        memory_per_connection: slope,
    })
}

fn build(
    config: &Config,
    plan: &Plan,
    processes: usize,
    threads_per_worker: usize,
    cores: usize,
    m: WorkerReport,
    server: Option<ServerReport>,
) -> Report {
    let c = &m.counters;
    let expected: u64 = m
        .sent_per_room
        .iter()
        .zip(&m.joined_per_room)
        .map(|(s, j)| s * j)
        .sum();
    let exact = config.scenario != Scenario::Churn && c.closed_by_server == 0;
    let missing = if exact {
        expected.saturating_sub(c.delivered)
    } else {
        c.seq_gaps
    };
    let run_s = config.duration.as_secs_f64();
    let threads = m.threads.len();
    let max_thread = m
        .threads
        .iter()
        .filter(|t| t.wall_s > 0.0)
        .map(|t| t.cpu_s / t.wall_s)
        .fold(0.0, f64::max);
    let wall = m.run_wall_s;
    let run_cpu = if wall > 0.0 { m.run_cpu_s / wall } else { 0.0 };
    // Several processes on the usable cores share them: judge the total too.
    let usable = cores.min(threads.max(1) * processes.max(1)).max(1) as f64;
    let lag_p99_ms = m.send_lag_us.value_at_quantile(0.99) as f64 / 1000.0;
    let saturation = if max_thread > SATURATED {
        Some(format!(
            "a runtime thread used {:.0}% of a core during the send phase (limit {:.0}%)",
            max_thread * 100.0,
            SATURATED * 100.0
        ))
    } else if run_cpu > SATURATED * usable {
        Some(format!(
            "the generator used {:.0}% of its {} usable core(s)",
            run_cpu * 100.0,
            usable
        ))
    } else if lag_p99_ms > LAG_LIMIT_MS {
        // Below the CPU thresholds the event loop can still fall behind its timers (bursts of
        // reads delay them): then the latency includes generator delay, so say so.
        Some(format!("the generator queued messages late (generator lag p99 {lag_p99_ms:.1} ms > {LAG_LIMIT_MS} ms)"))
    } else {
        None
    };
    Report {
        schema: SCHEMA.to_string(),
        config: ReportConfig {
            urls: config.urls.clone(),
            scenario: format!("{:?}", config.scenario).to_lowercase(),
            clients: config.clients,
            rooms: plan.rooms,
            rate: if plan.sends() { config.rate } else { 0.0 },
            duration_s: run_s,
            drain_s: config.drain.as_secs_f64(),
            payload: config.payload,
            connect_rate: config.connect_rate,
            churn_rate: (config.scenario == Scenario::Churn).then_some(config.churn_rate),
            source_ips: plan.source_ips,
            workers: processes,
            threads: threads_per_worker * processes,
        },
        connect: ConnectReport {
            attempted: c.attempted,
            joined: c.joined,
            failed: FailedReport {
                total: c.failed(),
                refused: c.failed_refused,
                timeout: c.failed_timeout,
                handshake: c.failed_handshake,
                reset: c.failed_reset,
                other: c.failed_other,
            },
            failure_samples: m.fail_samples.clone(),
            time_ms: Percentiles::from_us(&m.connect_us),
            per_second: if m.ramp_s > 0.0 {
                c.joined as f64 / m.ramp_s
            } else {
                0.0
            },
            ramp_s: m.ramp_s,
        },
        messages: MessageReport {
            due: c.due,
            sent: c.sent,
            unsent: c.due.saturating_sub(c.sent),
            expected,
            expected_exact: exact,
            delivered: c.delivered,
            missing,
            duplicated: c.duplicated,
            out_of_order: c.out_of_order,
            seq_gaps: c.seq_gaps,
            foreign: c.foreign,
            delivered_per_second: if run_s > 0.0 {
                c.delivered as f64 / run_s
            } else {
                0.0
            },
            delivered_ratio: if expected > 0 {
                c.delivered as f64 / expected as f64
            } else {
                0.0
            },
        },
        latency_ms: Percentiles::from_us(&m.latency_us),
        send_lag_ms: Percentiles::from_us(&m.send_lag_us),
        server_events: ServerEvents {
            errors: m.error_codes.clone(),
            closed_by_server: c.closed_by_server,
            close_codes: m
                .close_codes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            other_events: c.other_events,
        },
        churn: (config.scenario == Scenario::Churn).then_some(ChurnReport {
            leaves: c.churn_leaves,
            rejoins: c.churn_rejoins,
        }),
        loadgen: LoadgenCpu {
            processes,
            threads,
            usable_cores: cores,
            run_cpu_percent: run_cpu * 100.0,
            ramp_cpu_percent: if m.ramp_s > 0.0 {
                m.ramp_cpu_s / m.ramp_s * 100.0
            } else {
                0.0
            },
            max_thread_cpu_percent: max_thread * 100.0,
            saturated: saturation.is_some(),
            saturation,
        },
        server,
        latency_histogram: Some(m.latency_us),
    }
}
