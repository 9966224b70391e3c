//! The relay under attack: a child process started with its default flags (only `--listen`
//! and, for its history on disk, a fresh `--data-dir` are chosen), killed when its guard
//! drops, and its RSS sampled from /proc every 100 ms.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Error;

/// How long a relay may take from spawn to its "relay listening" line (a debug build on a
/// busy machine is the slow case).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The pid of the relay now running, for the overall-timeout watchdog (0: none). The
/// watchdog exits the process, which skips destructors, so it kills this pid itself.
pub static CURRENT_PID: AtomicU32 = AtomicU32::new(0);

/// A running relay; dropping it kills and reaps the process.
pub struct RelayProc {
    child: Child,
    pub addr: SocketAddr,
    /// The relay's `--data-dir`, removed with it: every run starts with empty history.
    data_dir: PathBuf,
    /// Lines the relay logged at WARN or ERROR, kept for the report.
    pub log_tail: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelayProc {
    /// Starts `bin --listen 127.0.0.1:PORT --data-dir TMP` with no other flag and no `RELAY_*` variable
    /// from our environment (so the relay really runs its defaults), and waits for its
    /// "relay listening" log line.
    pub fn start(bin: &Path) -> Result<RelayProc, Error> {
        // A free port: bind port 0, read it, release it. Another process could take it in
        // between; the relay would then fail to bind and we report that.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("picking a free port", e))?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let data_dir =
            std::env::temp_dir().join(format!("chatrelay-hostile-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut cmd = Command::new(bin);
        cmd.arg("--listen").arg(addr.to_string());
        cmd.arg("--data-dir").arg(&data_dir);
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("RELAY_") || name == "TOKIO_WORKER_THREADS" || name == "RUST_LOG" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        set_parent_death_signal(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
        CURRENT_PID.store(child.id(), Ordering::SeqCst);
        let stderr = child.stderr.take();
        let log_tail = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        if let Some(stderr) = stderr {
            let tail = log_tail.clone();
            // Drains the log for the relay's whole life: a full pipe would block its logger.
            std::thread::spawn(move || {
                let mut ready = Some(ready_tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("relay listening") {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    if line.contains("WARN") || line.contains("ERROR") {
                        if let Ok(mut t) = tail.lock() {
                            if t.len() < 50 {
                                t.push(line);
                            }
                        }
                    }
                }
            });
        }
        let mut relay = RelayProc {
            child,
            addr,
            data_dir,
            log_tail,
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(()) => Ok(relay),
            Err(_) => {
                let status = relay.child.try_wait().ok().flatten();
                Err(Error::Config(format!(
                    "relay {} did not report listening on {addr} within {START_TIMEOUT:?} \
                     (exit status: {status:?})",
                    bin.display()
                )))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the relay has exited (it never should during an attack).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        CURRENT_PID.store(0, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The relay gets SIGKILL if this process dies first (the release profile aborts on panic,
/// which runs no destructor), so no run leaves an orphan relay holding a port.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe system call (prctl), touching no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// RSS samples: (seconds since start, bytes).
pub type RssSeries = Vec<(f64, u64)>;

/// Samples a pid's VmRSS every `every` until stopped; `finish` returns the series.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RssSeries>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut series = Vec::new();
            let mut next = t0;
            while !flag.load(Ordering::Relaxed) {
                match crate::sysinfo::sample_pid(pid) {
                    Ok(s) => series.push((t0.elapsed().as_secs_f64(), s.rss_bytes)),
                    Err(_) => break,
                }
                // Fixed-rate ticks: a slow read does not stretch the series.
                next += every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            series
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> RssSeries {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
