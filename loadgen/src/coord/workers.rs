//! How the clients are split over workers, and talking to them: one in-process worker for a
//! single process, re-executed child processes for several.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Go;
use crate::config::Config;
use crate::plan::Plan;
use crate::process::{ChildWorker, WorkerSpec};
use crate::stats::WorkerReport;
use crate::sysinfo;
use crate::worker::{LocalWorker, Snapshot};
use crate::Error;

use super::Ramp;

/// File descriptors kept free per process (stdio, epoll, pipes, the runtime's own).
const FD_RESERVE: u64 = 100;
/// How long a worker may take to hand in its report after the drain.
const FINISH_LIMIT: Duration = Duration::from_secs(30);

/// How many worker processes and threads a run uses, and how many clients each worker gets.
pub(super) struct Split {
    pub cores: usize,
    /// Planned worker processes; more than one means child processes.
    pub processes: usize,
    pub threads_per_worker: usize,
    /// Clients per worker (the last one may get fewer).
    pub slice: u64,
}

impl Split {
    /// Raises the open-files limit and splits the clients so that no process needs more
    /// sockets than it may open.
    pub fn plan(config: &Config) -> Result<Split, Error> {
        let nofile =
            sysinfo::raise_nofile_limit().map_err(|e| Error::io("raising RLIMIT_NOFILE", e))?;
        let cores = sysinfo::usable_cores();
        let threads_total = config.threads.unwrap_or(cores).max(1);
        let per_process = nofile.saturating_sub(FD_RESERVE).max(1);
        let processes = config
            .workers
            .unwrap_or_else(|| config.clients.div_ceil(per_process) as usize)
            .clamp(1, config.clients as usize);
        let threads_per_worker = if processes == 1 {
            threads_total
        } else {
            (threads_total / processes).max(1)
        };
        let slice = config.clients.div_ceil(processes as u64);
        if processes == 1 && config.clients > per_process {
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
        Ok(Split {
            cores,
            processes,
            threads_per_worker,
            slice,
        })
    }

    pub fn children(&self) -> bool {
        self.processes > 1
    }
}

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

/// The running workers, each with its slice of the clients.
pub(super) struct Workers(Vec<Worker>);

impl Workers {
    /// Starts one worker per slice; if a child fails to start, aborts the ones already
    /// running so none is left behind.
    pub fn spawn(
        config: &Config,
        split: &Split,
        plan: &Arc<Plan>,
        ramp: &Ramp,
    ) -> Result<Workers, Error> {
        let mut workers = Vec::with_capacity(split.processes);
        for i in 0..split.processes {
            let lo = i as u64 * split.slice;
            let hi = ((i as u64 + 1) * split.slice).min(config.clients);
            if lo >= hi {
                break;
            }
            let w = if !split.children() {
                Worker::Local(LocalWorker::start(
                    Arc::clone(plan),
                    lo,
                    hi,
                    split.threads_per_worker,
                )?)
            } else {
                let spec = WorkerSpec {
                    config: config.clone(),
                    lo,
                    hi,
                    threads: split.threads_per_worker,
                    ramp_t0_ns: ramp.t0,
                    ramp_deadline_ns: ramp.deadline,
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
        Ok(Workers(workers))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Progress summed over all workers.
    pub fn total(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for w in &self.0 {
            s.add(&w.snapshot());
        }
        s
    }

    /// Starts the send phase everywhere.
    pub fn go(&mut self, go: Go) {
        for w in &mut self.0 {
            w.go(go);
        }
    }

    /// Waits for each worker's report in turn (lazily, so the caller can stop at the first
    /// report that does not merge).
    pub fn finish(self) -> impl Iterator<Item = Result<WorkerReport, Error>> {
        self.0.into_iter().map(|w| w.finish(FINISH_LIMIT))
    }
}
