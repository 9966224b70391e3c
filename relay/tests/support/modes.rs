//! The three places a room's log can live, for tests that run one scenario in each: in
//! memory, on disk (`--data-dir`), and in a cluster of two nodes on one private Redis.
//! `near` serves one side of a scenario and `far` the other: the same relay, or in cluster
//! mode the other node, so that everything between them crossed Redis.

use super::durable::TempDir;
use super::redis::{wait_ready, Redis};
use super::TestRelay;

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Memory,
    Durable,
    /// Two nodes of one cluster.
    Cluster,
}

/// The relays of one test (and what they need kept alive: the data dir, the Redis).
pub struct Setup {
    pub relays: Vec<TestRelay>,
    _dir: Option<TempDir>,
    _redis: Option<Redis>,
}

impl Setup {
    /// Relays for `mode`, each configured with `adjust`; `name` names the data dir and the
    /// cluster.
    pub async fn new(mode: Mode, name: &str, adjust: impl Fn(&mut relay::Config) + Clone) -> Self {
        match mode {
            Mode::Memory => Self {
                relays: vec![TestRelay::with(adjust).await],
                _dir: None,
                _redis: None,
            },
            Mode::Durable => {
                let dir = TempDir::new(name);
                let relay = TestRelay::durable(dir.path(), adjust).await;
                Self {
                    relays: vec![relay],
                    _dir: Some(dir),
                    _redis: None,
                }
            }
            Mode::Cluster => {
                let redis = Redis::start().await;
                let mut relays = Vec::new();
                for _ in 0..2 {
                    let (url, cluster, adjust) = (redis.url(), name.to_owned(), adjust.clone());
                    relays.push(
                        TestRelay::with(move |c| {
                            c.redis_url = Some(url);
                            c.cluster_name = cluster;
                            adjust(c);
                        })
                        .await,
                    );
                }
                for relay in &relays {
                    wait_ready(&relay.addr.to_string(), true).await;
                }
                Self {
                    relays,
                    _dir: None,
                    _redis: Some(redis),
                }
            }
        }
    }

    pub fn near(&self) -> &TestRelay {
        &self.relays[0]
    }

    pub fn far(&self) -> &TestRelay {
        self.relays.last().expect("at least one relay")
    }
}
