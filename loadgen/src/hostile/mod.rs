//! The hostile-load suite (issue 19, item 8): each attack against a fresh relay process with
//! its default flags, a well-behaved victim measuring alongside, and a PASS/FAIL verdict on
//! the relay's peak RSS, the victim's p99 and the victim's refusals.
//!
//! - [`config`]: the `hostile` binary's flags.
//! - [`relay_proc`]: the relay child process (killed on drop) and the RSS sampler.
//! - [`conn`]: a hand-framed WebSocket client from a chosen source address.
//! - [`victim`]: the well-behaved clients and what counts as a refusal.
//! - [`attack`]: the catalogue and attacker helpers; [`chat`] (A, B, E, F) and [`flood`]
//!   (C, D, G) the attacks themselves.
//! - [`tally`]: shared counters, histograms and the RSS slope; [`report`]: verdict, table.

pub mod attack;
pub mod chat;
pub mod config;
pub mod conn;
pub mod flood;
pub mod relay_proc;
pub mod report;
pub mod tally;
pub mod victim;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use attack::Attack;
pub use config::HostileConfig;
pub use report::{AttackReport, SuiteReport};

use crate::Error;
use relay_proc::{RelayProc, RssSampler};
use tally::{Counts, VictimStats};

/// The victim measures for this long before the attack starts (its joins, a baseline);
/// those samples are not in the verdict.
const LEAD_IN: Duration = Duration::from_secs(1);
/// After the attack ends, the victim has this long to finish its last probes and close.
const WIND_DOWN: Duration = Duration::from_secs(8);

/// Runs every selected attack in turn; the caller decides the exit status from
/// [`SuiteReport::pass`].
pub fn run(cfg: &HostileConfig) -> Result<SuiteReport, Error> {
    for ip in cfg.attacker_ip.iter().chain([&cfg.victim_ip]) {
        if !ip.is_loopback() {
            return Err(Error::NotLoopback(ip.to_string()));
        }
    }
    if cfg.attacker_ip.contains(&cfg.victim_ip) {
        return Err(Error::Config(
            "--victim-ip must differ from every --attacker-ip".into(),
        ));
    }
    if cfg.victim_clients == 0 || cfg.victim_rate <= 0.0 {
        return Err(Error::Config(
            "the victim needs at least one client and a positive rate".into(),
        ));
    }
    start_watchdog(cfg.overall_timeout());
    let _ = crate::sysinfo::raise_nofile_limit();
    let mut attacks = Vec::new();
    for attack in cfg.attacks() {
        if !cfg.quiet {
            eprintln!(
                "hostile: {} ({}) for {:?} ...",
                attack.name(),
                attack.label(),
                cfg.duration
            );
        }
        let report = run_one(cfg, attack)?;
        if !cfg.quiet {
            eprintln!("hostile: {} {}", attack.name(), report.verdict);
        }
        attacks.push(report);
    }
    Ok(SuiteReport::new(cfg, attacks))
}

/// Past the overall timeout: kill the relay (exit skips destructors) and stop.
fn start_watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let pid = relay_proc::CURRENT_PID.load(Ordering::SeqCst);
        if pid != 0 {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on a pid we spawned; no memory is shared with the call.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        eprintln!("hostile: overall timeout of {limit:?} passed; relay killed");
        std::process::exit(2);
    });
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting a runtime", e))
}

/// One attack against a fresh relay. The victim and the attacker each get their own thread
/// and current-thread runtime, so the attacker's busy loops cannot delay the victim's
/// measurements inside the generator itself.
fn run_one(cfg: &HostileConfig, attack: Attack) -> Result<AttackReport, Error> {
    let mut relay = RelayProc::start(&cfg.relay_bin)?;
    // The relay address goes through the generator's own loopback rule.
    let target = crate::target::parse(&format!("ws://{}/ws", relay.addr), false)?;
    let sampler = RssSampler::start(relay.pid(), Duration::from_millis(100));
    let attack_start = Instant::now() + LEAD_IN;
    let until = attack_start + cfg.duration;
    let stats = Arc::new(VictimStats::measuring_from(attack_start));
    let counts = Arc::new(Counts::default());

    let plan = victim::VictimPlan {
        relay: target.addr,
        source: cfg.victim_ip,
        clients: cfg.victim_clients,
        rate: cfg.victim_rate,
        ping_every: cfg.victim_ping_every,
        connect_every: cfg.victim_connect_every,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let victim_rt = runtime()?;
    let victim_stats = stats.clone();
    let victim = std::thread::spawn(move || {
        let t_until = tokio::time::Instant::from_std(until);
        victim_rt.block_on(async move {
            let run = victim::run(plan, victim_stats, t_until, ready_tx);
            let _ = tokio::time::timeout_at(t_until + WIND_DOWN, run).await;
        });
    });

    let ctx = attack::Ctx {
        relay: target.addr,
        attacker_ips: cfg.attacker_ip.clone(),
        victim_ip: cfg.victim_ip,
        until: tokio::time::Instant::from_std(until),
        counts: counts.clone(),
        victim: stats.clone(),
    };
    let attacker_rt = runtime()?;
    let attacker = std::thread::spawn(move || {
        attacker_rt.block_on(async move {
            let start = tokio::time::Instant::from_std(attack_start);
            // Starts when the victim is measuring (or at the planned start if it is late).
            let _ = tokio::time::timeout_at(start, ready_rx).await;
            tokio::time::sleep_until(start).await;
            let until = ctx.until;
            tokio::spawn(launch(attack, ctx));
            tokio::time::sleep_until(until).await;
        });
        // Dropping the runtime cancels every attack task and closes its sockets.
        drop(attacker_rt);
    });
    let attacker_ok = attacker.join().is_ok();
    let victim_ok = victim.join().is_ok();
    let series = sampler.finish();
    let exited = relay.exited();
    let warnings = relay
        .log_tail
        .lock()
        .map(|t| t.iter().take(5).cloned().collect())
        .unwrap_or_default();
    drop(relay);
    if !attacker_ok || !victim_ok {
        return Err(Error::Config(format!(
            "{}: the attacker or victim thread panicked",
            attack.name()
        )));
    }
    Ok(AttackReport::new(
        cfg,
        attack,
        &series,
        &stats,
        counts.snapshot(),
        exited,
        warnings,
    ))
}

async fn launch(attack: Attack, ctx: attack::Ctx) {
    use flood::FloodKind;
    match attack {
        Attack::ReconnectRooms => chat::reconnect_rooms(ctx, false).await,
        Attack::ReconnectRoomsCtl => chat::reconnect_rooms(ctx, true).await,
        Attack::HistoryGrowth => chat::history_growth(ctx).await,
        Attack::PongFlood => flood::frame_flood(ctx, FloodKind::Pong).await,
        Attack::PingFlood => flood::frame_flood(ctx, FloodKind::Ping).await,
        Attack::FrameFlood => flood::frame_flood(ctx, FloodKind::Frames).await,
        Attack::MetricsPipeline => flood::metrics_pipeline(ctx).await,
        Attack::JoinedAmplify => chat::joined_amplify(ctx).await,
        Attack::HistoryPoison => chat::history_poison(ctx).await,
        Attack::HistoryPoisonRestore => chat::history_poison_restore(ctx).await,
        Attack::ConnectRate => flood::connect_rate(ctx).await,
        Attack::All => {}
    }
}
