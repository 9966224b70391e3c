//! Worker processes: when the clients need more sockets than one process may open, the
//! generator re-executes itself with `--worker` and drives each child over its stdin/stdout.
//!
//! Pipe protocol, one line each:
//! - parent -> child: the `WorkerSpec` as JSON; later `G <t0_ns> <joined_total>` or `A` (abort).
//! - child -> parent: `P <Snapshot JSON>` every 100 ms; finally `R <WorkerReport JSON>`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Go;
use crate::config::Config;
use crate::plan::Plan;
use crate::stats::WorkerReport;
use crate::sysinfo;
use crate::worker::{LocalWorker, Progress, Snapshot};
use crate::Error;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub config: Config,
    pub lo: u64,
    pub hi: u64,
    pub threads: usize,
    pub ramp_t0_ns: u64,
    pub ramp_deadline_ns: u64,
}

/// The parent's handle on one child worker.
pub struct ChildWorker {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    progress: Arc<Progress>,
    reports: mpsc::Receiver<Result<WorkerReport, String>>,
}

impl ChildWorker {
    pub fn spawn(index: usize, spec: &WorkerSpec) -> Result<ChildWorker, Error> {
        let exe = std::env::current_exe().map_err(|e| Error::io("locating own executable", e))?;
        let mut child = Command::new(exe)
            .arg("--worker")
            // The child reads its whole configuration from the pipe, not from the environment.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io("spawning a worker process", e))?;
        let broken = |reason: &str| Error::Worker {
            index,
            reason: reason.to_string(),
        };
        let mut stdin = child.stdin.take().ok_or_else(|| broken("no stdin pipe"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| broken("no stdout pipe"))?;
        let line = serde_json::to_string(spec).map_err(|e| broken(&e.to_string()))?;
        writeln!(stdin, "{line}").map_err(|e| broken(&format!("writing spec: {e}")))?;
        let progress = Arc::new(Progress::default());
        let (tx, rx) = mpsc::channel();
        let p = Arc::clone(&progress);
        std::thread::Builder::new()
            .name(format!("worker-{index}-pipe"))
            .spawn(move || read_child(BufReader::new(stdout), &p, &tx))
            .map_err(|e| Error::io("spawning a pipe reader", e))?;
        Ok(ChildWorker {
            index,
            child,
            stdin,
            progress,
            reports: rx,
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        self.progress.load()
    }

    pub fn go(&mut self, go: Go) {
        // A dead child shows up in `finish`; nothing to do about a failed write here.
        let _ = writeln!(self.stdin, "G {} {}", go.t0_ns, go.joined_total);
    }

    pub fn abort(&mut self) {
        let _ = writeln!(self.stdin, "A");
    }

    /// Waits up to `limit` for the child's final report.
    pub fn finish(mut self, limit: Duration) -> Result<WorkerReport, Error> {
        let res = self.reports.recv_timeout(limit);
        let err = |reason: String| Error::Worker {
            index: self.index,
            reason,
        };
        let out = match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(err(e)),
            Err(_) => {
                let _ = self.child.kill();
                Err(err("no report before the deadline (killed)".into()))
            }
        };
        let _ = self.child.wait();
        out
    }
}

fn read_child(
    out: impl BufRead,
    progress: &Progress,
    tx: &mpsc::Sender<Result<WorkerReport, String>>,
) {
    for line in out.lines() {
        let Ok(line) = line else { break };
        if let Some(p) = line.strip_prefix("P ") {
            if let Ok(s) = serde_json::from_str::<Snapshot>(p) {
                progress.store(&s);
            }
        } else if let Some(r) = line.strip_prefix("R ") {
            let _ = tx.send(serde_json::from_str(r).map_err(|e| format!("bad report: {e}")));
            return;
        }
    }
    let _ = tx.send(Err("exited without a report".into()));
}

/// Entry point of a `--worker` child: run a slice of clients as the parent directs.
pub fn worker_main() -> Result<(), Error> {
    let bad = |reason: String| Error::Worker { index: 0, reason };
    let mut first = String::new();
    match std::io::stdin().read_line(&mut first) {
        Ok(n) if n > 0 => {}
        _ => return Err(bad("no spec on stdin".into())),
    }
    let spec: WorkerSpec =
        serde_json::from_str(&first).map_err(|e| bad(format!("bad spec: {e}")))?;
    sysinfo::raise_nofile_limit().map_err(|e| Error::io("raising RLIMIT_NOFILE", e))?;
    let plan = Arc::new(Plan::new(
        &spec.config,
        spec.ramp_t0_ns,
        spec.ramp_deadline_ns,
    )?);
    let mut worker = LocalWorker::start(plan, spec.lo, spec.hi, spec.threads)?;

    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            // `Stdin` buffers internally, so nothing after the spec line was lost.
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                let cmd = match (parts.next(), parts.next(), parts.next()) {
                    (Some("G"), Some(t), Some(j)) => match (t.parse(), j.parse()) {
                        (Ok(t0_ns), Ok(joined_total)) => Some(Go {
                            t0_ns,
                            joined_total,
                        }),
                        _ => None,
                    },
                    _ => None,
                };
                if tx.send(cmd).is_err() {
                    return;
                }
            }
            // The parent went away: stop rather than run unsupervised.
            let _ = tx.send(None);
        })
        .map_err(|e| Error::io("spawning the control thread", e))?;

    let stdout = std::io::stdout();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(go)) => worker.go(go),
            Ok(None) => worker.abort(),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100))
            }
        }
        let snap = serde_json::to_string(&worker.snapshot()).unwrap_or_default();
        let mut out = stdout.lock();
        let _ = writeln!(out, "P {snap}");
        let _ = out.flush();
        if worker.is_finished() {
            break;
        }
    }
    let report = worker.finish()?;
    let json = serde_json::to_string(&report).map_err(|e| bad(e.to_string()))?;
    let mut out = stdout.lock();
    writeln!(out, "R {json}").map_err(|e| Error::io("writing the report", e))?;
    out.flush().map_err(|e| Error::io("writing the report", e))
}
