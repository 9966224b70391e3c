//! Merging the workers' reports and the server samples into the [`Report`].

use crate::config::{Config, Scenario};
use crate::plan::Plan;
use crate::report::*;
use crate::stats::WorkerReport;
use crate::sysinfo::{self, ProcSample};
use crate::Error;

use super::workers::Split;

/// Saturation threshold: a thread or the usable cores busy more than this fraction.
const SATURATED: f64 = 0.90;
/// Generator lag (slot -> queued) p99 above this means the generator fell behind.
const LAG_LIMIT_MS: f64 = 10.0;

/// What was sampled of the server processes (`--server-pid`) during the run.
pub(super) struct ServerSamples {
    /// At the start and the end of the send phase.
    pub start: Option<ProcSample>,
    pub end: Option<ProcSample>,
    /// Idle scenario: joined count and memory when half, then all, of the clients had joined.
    pub half: Option<(u64, ProcSample)>,
    pub full: Option<(u64, ProcSample)>,
}

/// Merges the workers' reports in turn; the first worker error wins over any report.
pub(super) fn merge(
    reports: impl Iterator<Item = Result<WorkerReport, Error>>,
    room_slots: usize,
) -> Result<WorkerReport, Error> {
    let mut merged = WorkerReport::new(room_slots);
    let mut first_err = None;
    for r in reports {
        match r {
            Ok(r) => merged.merge(&r)?,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(merged),
    }
}

/// The report of a finished run.
pub(super) fn summarise(
    config: &Config,
    plan: &Plan,
    split: &Split,
    processes: usize,
    merged: WorkerReport,
    samples: ServerSamples,
) -> Report {
    let server = server_report(&config.server_pids, &merged, samples);
    build(config, plan, split, processes, merged, server)
}

fn server_report(
    pids: &[u32],
    merged: &WorkerReport,
    samples: ServerSamples,
) -> Option<ServerReport> {
    if pids.is_empty() {
        return None;
    }
    let end = samples.end.or_else(|| sysinfo::sample_pids(pids))?;
    let cpu_percent = match (samples.start, merged.run_wall_s) {
        (Some(s), wall) if wall > 0.0 => {
            (end.cpu.saturating_sub(s.cpu)).as_secs_f64() / wall * 100.0
        }
        _ => 0.0,
    };
    let joined = merged.counters.joined.max(1);
    let slope = match (samples.half, samples.full) {
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
    split: &Split,
    processes: usize,
    m: WorkerReport,
    server: Option<ServerReport>,
) -> Report {
    let c = &m.counters;
    let cpu = generator_cpu(&m, split.cores, processes);
    Report {
        schema: SCHEMA.to_string(),
        config: ReportConfig {
            urls: config.urls.clone(),
            scenario: config.scenario.name().to_string(),
            clients: config.clients,
            rooms: plan.rooms,
            rate: if plan.sends() { config.rate } else { 0.0 },
            duration_s: config.duration.as_secs_f64(),
            drain_s: config.drain.as_secs_f64(),
            payload: config.payload,
            connect_rate: config.connect_rate,
            churn_rate: (config.scenario == Scenario::Churn).then_some(config.churn_rate),
            source_ips: plan.source_ips,
            workers: processes,
            threads: split.threads_per_worker * processes,
        },
        connect: connect_report(&m),
        messages: message_report(config, &m),
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
        target: crate::target::TargetReport::new(&config.target, &plan.targets),
        limits: crate::limits::LimitsReport::new(config, plan, &m.error_codes, &m.close_codes),
        churn: (config.scenario == Scenario::Churn).then_some(ChurnReport {
            leaves: c.churn_leaves,
            rejoins: c.churn_rejoins,
        }),
        loadgen: cpu,
        server,
        latency_histogram: Some(m.latency_us),
        observe: Default::default(),
    }
}

fn connect_report(m: &WorkerReport) -> ConnectReport {
    let c = &m.counters;
    ConnectReport {
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
    }
}

/// Delivery counts: exact (sent times joined, per room) unless churn or server closes make
/// the membership uncertain, in which case seq gaps are the measure of loss.
fn message_report(config: &Config, m: &WorkerReport) -> MessageReport {
    let c = &m.counters;
    let expected: u64 = m
        .sent_per_room
        .iter()
        .zip(&m.joined_per_room)
        .map(|(s, j)| s * j)
        .sum();
    // A storm's dropped clients that all got back keep the membership exact (the gap comes
    // in their rejoin's history); one that did not makes it uncertain.
    let storm_lost = m.storm.as_ref().is_some_and(|s| s.failed > 0);
    let exact = config.scenario != Scenario::Churn && c.closed_by_server == 0 && !storm_lost;
    let missing = if exact {
        expected.saturating_sub(c.delivered)
    } else {
        c.seq_gaps
    };
    let run_s = config.duration.as_secs_f64();
    MessageReport {
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
    }
}

/// The generator's own CPU use, and whether it (rather than the server) was the limit.
fn generator_cpu(m: &WorkerReport, cores: usize, processes: usize) -> LoadgenCpu {
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
    LoadgenCpu {
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
    }
}
