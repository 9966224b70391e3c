//! Durable relays for tests: a fresh data directory per test, the relay in this process on
//! it ([`TestRelay::durable`]), or the `relay` binary on it ([`RelayProcess`]) for restarts
//! and `kill -9`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{TestRelay, EVENT_TIMEOUT};

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("chatrelay-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The store's database file in this directory (as `--data-dir`).
    pub fn db(&self) -> PathBuf {
        self.0.join("chatrelay.sqlite3")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestRelay {
    /// A relay keeping its history in `dir` (every abuse limit off), then `adjust`ed.
    pub async fn durable(dir: &Path, adjust: impl FnOnce(&mut relay::Config)) -> Self {
        let dir = dir.to_owned();
        Self::with(move |c| {
            c.memory = false;
            c.data_dir = dir;
            adjust(c);
        })
        .await
    }

    /// Waits until everything the relay accepted so far is stored and delivered.
    pub async fn stored(&self) {
        let relay = self.relay.clone();
        tokio::task::spawn_blocking(move || relay.store_barrier())
            .await
            .unwrap();
    }
}

/// The `relay` binary on a port of its own choosing, its limits off, its logs read for the
/// address it listens on.
pub struct RelayProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

/// The relay binary, built by `cargo test` for this package.
pub const RELAY_BIN: &str = env!("CARGO_BIN_EXE_relay");

/// Every abuse limit off (tests send bursts from one address).
pub const NO_LIMITS: &[&str] = &[
    "--message-rate",
    "0",
    "--command-rate",
    "0",
    "--ip-message-rate",
    "0",
    "--ip-command-rate",
    "0",
    "--frame-rate",
    "0",
    "--ip-rooms",
    "0",
    "--max-connections-per-ip",
    "0",
    "--connection-rate",
    "0",
    "--connection-rate-per-ip",
    "0",
    "--http-request-rate",
    "0",
];

impl RelayProcess {
    /// Starts the binary with `args` (plus `--listen 127.0.0.1:0`, JSON logs and no limits)
    /// and waits for its "relay listening" line.
    pub async fn start(args: &[&str]) -> Self {
        let mut child = Command::new(RELAY_BIN)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(NO_LIMITS)
            // `user_left` at once after a disconnect, as `TestRelay` has it.
            .args(["--presence-grace", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the relay");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line())
                .await
                .expect("the relay logs in time")
                .unwrap()
                .unwrap_or_else(|| panic!("the relay exited before listening: {args:?}"));
            let Ok(log) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let message = log["message"].as_str().unwrap_or_default();
            if message.starts_with("relay listening") {
                break log["listen"].as_str().unwrap().parse().unwrap();
            }
        };
        // Keep reading so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL: no shutdown sequence, no flush.
    pub async fn kill9(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Runs the binary with `args`, which must be refused before it listens: returns its exit
/// status and output. A relay that started instead fails the test (it never exits by itself).
pub async fn refused(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(RELAY_BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        // Never the default ./chatrelay-data of the working directory: a case that names no
        // --data-dir is refused before a store opens, or opens this one.
        .env(
            "RELAY_DATA_DIR",
            std::env::temp_dir().join(format!("relay-refused-data-{}", std::process::id())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the relay");
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("relay {args:?} did not exit: it started"))
        .expect("wait for the relay");
    let mut all = String::from_utf8_lossy(&out.stderr).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), all)
}
