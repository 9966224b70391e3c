//! A set of runtime threads inside one process, each a current-thread tokio runtime driving an
//! interleaved slice of the clients. The coordinator talks to it through `LocalWorker`.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::sleep_until;

use crate::client::{client, Ctx};
use crate::clock::{instant_at, now_ns, Go, Phase};
use crate::plan::Plan;
use crate::stats::{ThreadCpu, WorkerReport};
use crate::sysinfo;
use crate::Error;

/// Live counters one thread publishes every 100 ms (plain stores: no shared RMW on the hot path).
#[derive(Debug, Default)]
pub struct Progress {
    attempted: AtomicU64,
    joined: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    delivered: AtomicU64,
}

/// A summable copy of [`Progress`]; also the `P` line of the worker pipe.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub attempted: u64,
    pub joined: u64,
    pub failed: u64,
    pub sent: u64,
    pub delivered: u64,
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        self.attempted += o.attempted;
        self.joined += o.joined;
        self.failed += o.failed;
        self.sent += o.sent;
        self.delivered += o.delivered;
    }
}

impl Progress {
    pub fn store(&self, s: &Snapshot) {
        self.attempted.store(s.attempted, Relaxed);
        self.joined.store(s.joined, Relaxed);
        self.failed.store(s.failed, Relaxed);
        self.sent.store(s.sent, Relaxed);
        self.delivered.store(s.delivered, Relaxed);
    }

    pub fn load(&self) -> Snapshot {
        Snapshot {
            attempted: self.attempted.load(Relaxed),
            joined: self.joined.load(Relaxed),
            failed: self.failed.load(Relaxed),
            sent: self.sent.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
        }
    }
}

pub struct LocalWorker {
    progress: Vec<Arc<Progress>>,
    phase: watch::Sender<Phase>,
    handles: Vec<std::thread::JoinHandle<Result<WorkerReport, Error>>>,
    cpu_start: Duration,
    ramp_cpu: Option<Duration>,
    rooms: usize,
}

impl LocalWorker {
    /// Starts `threads` runtime threads for clients `lo..hi`; they connect at their paced slots.
    pub fn start(plan: Arc<Plan>, lo: u64, hi: u64, threads: usize) -> Result<LocalWorker, Error> {
        let threads = threads.clamp(1, (hi - lo).max(1) as usize);
        let (tx, rx) = watch::channel(Phase::Ramp);
        let mut progress = Vec::new();
        let mut handles = Vec::new();
        let cpu_start = sysinfo::process_cpu();
        for t in 0..threads {
            let p = Arc::new(Progress::default());
            progress.push(Arc::clone(&p));
            let plan = Arc::clone(&plan);
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || {
                    let ids = (lo + t as u64..hi).step_by(threads);
                    thread_main(plan, ids, rx, p)
                })
                .map_err(|e| Error::io("spawning a runtime thread", e))?;
            handles.push(h);
        }
        Ok(LocalWorker {
            progress,
            phase: tx,
            handles,
            cpu_start,
            ramp_cpu: None,
            rooms: plan.room_slots as usize,
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for p in &self.progress {
            s.add(&p.load());
        }
        s
    }

    pub fn go(&mut self, go: Go) {
        self.ramp_cpu = Some(sysinfo::process_cpu().saturating_sub(self.cpu_start));
        self.phase.send_replace(Phase::Go(go));
    }

    pub fn abort(&self) {
        self.phase.send_replace(Phase::Abort);
    }

    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Waits for every thread and merges their reports.
    pub fn finish(self) -> Result<WorkerReport, Error> {
        let mut total = WorkerReport::new(self.rooms);
        for h in self.handles {
            let r = h.join().map_err(|_| Error::Worker {
                index: 0,
                reason: "a runtime thread panicked".into(),
            })??;
            total.merge(&r)?;
        }
        total.ramp_cpu_s = self
            .ramp_cpu
            .unwrap_or_else(|| sysinfo::process_cpu().saturating_sub(self.cpu_start))
            .as_secs_f64();
        total.run_cpu_s = total.threads.iter().map(|t| t.cpu_s).sum();
        total.run_wall_s = total.threads.iter().map(|t| t.wall_s).fold(0.0, f64::max);
        Ok(total)
    }
}

fn thread_main(
    plan: Arc<Plan>,
    ids: impl Iterator<Item = u64>,
    phase: watch::Receiver<Phase>,
    progress: Arc<Progress>,
) -> Result<WorkerReport, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting a tokio runtime", e))?;
    let local = LocalSet::new();
    let ctx = Rc::new(Ctx::new(Arc::clone(&plan), phase.clone()));
    let done = Rc::new(Cell::new(false));
    local.block_on(&rt, async {
        let ticker = tokio::task::spawn_local(ticker(Rc::clone(&ctx), progress, Rc::clone(&done)));
        let mut set = JoinSet::new();
        let mut ids = ids.peekable();
        while let Some(&id) = ids.peek() {
            let at = plan.connect_at_ns(id);
            if at >= plan.ramp_deadline_ns || matches!(*phase.borrow(), Phase::Abort) {
                break;
            }
            sleep_until(instant_at(at)).await;
            set.spawn_local(client(Rc::clone(&ctx), id));
            ids.next();
        }
        // Clients whose connect slot lies past the ramp deadline never start: timeouts.
        let missed = ids.count() as u64;
        {
            let mut r = ctx.report.borrow_mut();
            r.counters.attempted += missed;
            r.counters.failed_timeout += missed;
        }
        while set.join_next().await.is_some() {}
        done.set(true);
        let _ = ticker.await;
    });
    let rooms = plan.room_slots as usize;
    Ok(ctx.report.replace(WorkerReport::new(rooms)))
}

/// Publishes progress and measures this thread's CPU over exactly the send phase.
async fn ticker(ctx: Rc<Ctx>, progress: Arc<Progress>, done: Rc<Cell<bool>>) {
    let publish = || {
        let r = ctx.report.borrow();
        let c = &r.counters;
        progress.store(&Snapshot {
            attempted: c.attempted,
            joined: c.joined,
            failed: c.failed(),
            sent: c.sent,
            delivered: c.delivered,
        });
    };
    let mut phase = ctx.phase.clone();
    let mut phase_open = true;
    let mut go: Option<Go> = None;
    let mut start: Option<(Duration, u64)> = None;
    let mut measured = false;
    loop {
        publish();
        if done.get() {
            break;
        }
        if go.is_none() {
            if let Phase::Go(g) = *ctx.phase.borrow() {
                go = Some(g);
            }
        }
        let now = now_ns();
        let mut wake = now + 100_000_000;
        if let Some(g) = go {
            let send_end = g.t0_ns + ctx.plan.duration_ns;
            if start.is_none() && now >= g.t0_ns {
                start = Some((sysinfo::thread_cpu(), now));
            }
            if !measured && now >= send_end {
                if let Some((c0, w0)) = start {
                    ctx.report.borrow_mut().threads.push(ThreadCpu {
                        cpu_s: sysinfo::thread_cpu().saturating_sub(c0).as_secs_f64(),
                        wall_s: (now - w0) as f64 / 1e9,
                    });
                }
                measured = true;
            }
            for edge in [g.t0_ns, send_end] {
                if edge > now {
                    wake = wake.min(edge);
                }
            }
        }
        // Wake on the phase change too, so the CPU sample starts right at t0.
        tokio::select! {
            _ = sleep_until(instant_at(wake)) => {}
            r = phase.changed(), if phase_open && go.is_none() => phase_open = r.is_ok(),
        }
    }
    if !measured {
        ctx.report.borrow_mut().threads.push(ThreadCpu::default());
    }
}
