//! Persisted messages per second on one core: the durable store's writer taking what rooms
//! reserve, storing it in SQLite transactions and appending it to the rooms (no members, so
//! the time is the store's). One iteration is a burst of `N` messages into 10 rooms and the
//! wait until the last is stored, so a transaction carries up to a burst's worth, as under
//! load.
//!
//! Run: `cargo bench -p benches --bench store` (each `--fsync` mode), on a quiet machine;
//! `taskset -c 0` for one core.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmarks fail loudly on set-up errors"
)]

use std::sync::Arc;
use std::time::Duration;

use benches::TEXT_64;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::chat::backend::{Backend, Journal};
use relay::chat::hub::Hub;
use relay::chat::room::{Outgoing, Room, SendRefusal};
use relay::config::{Config, Fsync};
use relay::store::Store;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROOMS: usize = 10;

fn persisted(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.measurement_time(Duration::from_secs(5));
    for (fsync, label) in [
        (Fsync::Interval, "fsync_interval"),
        (Fsync::Always, "fsync_always"),
    ] {
        for burst in [1u64, 100, 1000] {
            let dir = std::env::temp_dir().join(format!(
                "chatrelay-bench-store-{}-{label}-{burst}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let mut config = Config::without_limits();
            config.data_dir = dir.clone();
            config.fsync = fsync;
            let store = Arc::new(Store::open(&config).unwrap());
            let mut hub = Hub::new(&config);
            hub.backend = Backend::Durable(store.clone());
            let hub = Arc::new(hub);
            store.start(&hub).unwrap();
            let rooms: Vec<Arc<Room>> = (0..ROOMS)
                .map(|n| {
                    let room = Room::new_shared(
                        format!("room-{n}").into(),
                        "bench".into(),
                        hub.history_budget().clone(),
                        None,
                    );
                    room.reset_log("bench".into(), 0, &[]);
                    room
                })
                .collect();
            group.throughput(Throughput::Elements(burst));
            group.bench_with_input(BenchmarkId::new(label, burst), &burst, |b, &burst| {
                b.iter(|| {
                    for n in 0..burst as usize {
                        let room = &rooms[n % ROOMS];
                        let out = Outgoing::server("u-1", "alice", TEXT_64);
                        room.reserve(&hub, &out, |m| {
                            store.keep(room, m, false).map_err(|_| SendRefusal::Busy)
                        })
                        .unwrap();
                    }
                    store.barrier();
                })
            });
            store.stop();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    group.finish();
}

criterion_group!(benches, persisted);
criterion_main!(benches);
