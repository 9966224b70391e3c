//! A private `redis-server` for cluster tests, and small helpers around it and `/readyz`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EVENT_TIMEOUT;

/// A private `redis-server` on a free port, killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.spawn().await;
        redis
    }

    /// Starts (or restarts) the server on the same port and waits until it answers PING.
    pub async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/install-deps.sh)");
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
            Ok(Ok(_))
        ) && &reply == b"+PONG\r\n"
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /readyz` status.
pub async fn readyz(addr: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1)?.parse().ok()
}

/// Polls `/readyz` until it is (un)ready: readiness has no event to await. Bounded.
pub async fn wait_ready(addr: &str, ready: bool) {
    let want = if ready { 200 } else { 503 };
    for _ in 0..300 {
        if readyz(addr).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{addr} never became {}",
        if ready { "ready" } else { "unready" }
    );
}

/// Sends one command to Redis in RESP and returns the raw reply.
pub async fn redis_command(redis: &Redis, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).await.unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

/// Two relays of the cluster called `cluster` on `redis`, both ready (connected to Redis).
pub async fn two_nodes(redis: &Redis, cluster: &str) -> (super::TestRelay, super::TestRelay) {
    let node = || {
        let (url, cluster) = (redis.url(), cluster.to_owned());
        move |c: &mut relay::Config| {
            c.redis_url = Some(url);
            c.cluster_name = cluster;
        }
    };
    let a = super::TestRelay::with(node()).await;
    let b = super::TestRelay::with(node()).await;
    for relay in [&a, &b] {
        wait_ready(&relay.addr.to_string(), true).await;
    }
    (a, b)
}
