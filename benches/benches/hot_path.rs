//! Criterion benchmarks of the relay's hot path. Each sets `Throughput`, so reports read as
//! commands, events or deliveries per second.
//!
//! Run: `cargo bench -p benches` (full), or `cargo bench -p benches -- --quick` (as CI does).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmarks fail loudly on set-up errors"
)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{bench_config, commands, decode_simd, FanOut, TEXT_64};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::chat::hub::Hub;
use relay::protocol::event::{self, MessageEvent, UserRef};
use relay::transport::outbox::{Outbox, Priority};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    let mut simd = decode_simd::Decoder::default();
    for (name, command) in commands::ALL {
        group.bench_with_input(BenchmarkId::new("serde_json", name), command, |b, cmd| {
            b.iter(|| relay::protocol::decode(black_box(cmd)).is_ok())
        });
        group.bench_with_input(BenchmarkId::new("simd_json", name), command, |b, cmd| {
            b.iter(|| simd.kind_len(black_box(cmd)))
        });
    }
    group.finish();
}

fn message_event(number: u64) -> MessageEvent<'static> {
    MessageEvent {
        node_tag: "3fa9c1",
        number,
        seq: number,
        room: "general",
        user_id: "3fa9c1-17",
        username: "alice",
        text: TEXT_64,
        timestamp_ms: 1_763_800_000_123,
        reply_to: None,
        reference: None,
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("message_frame_64B", |b| {
        let mut n = 0;
        b.iter(|| {
            n += 1;
            event::message(black_box(&message_event(n)))
        })
    });
    group.bench_function("typing_frame", |b| {
        b.iter(|| {
            event::typing(
                black_box("general"),
                UserRef {
                    id: "3fa9c1-17",
                    username: "alice",
                },
                true,
            )
        })
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    for members in [10usize, 1_000, 10_000] {
        let mut room = FanOut::new(members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::new("publish_and_flush_round", members), |b| {
            // The production path: publish, then the flusher's round (deliver to every
            // member's queue, one `writev` per member). The clients' reads happen between
            // chunks, outside the timing.
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(32);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        black_box(room.publish(TEXT_64));
                        black_box(room.round());
                    }
                    elapsed += start.elapsed();
                    room.drain();
                    left -= chunk;
                }
                elapsed
            })
        });
    }
    group.finish();

    // Several rooms in one map, one publisher thread per room: joins and fan-out in one room
    // must not serialize the others.
    let mut group = c.benchmark_group("fan_out_shared_map");
    const ROOMS: usize = 2;
    const MEMBERS: usize = 1_000;
    group.throughput(Throughput::Elements((ROOMS * MEMBERS) as u64));
    group.bench_function("2_rooms_x_1000_concurrent", |b| {
        let hub = Arc::new(Hub::new(&bench_config()));
        let mut rooms: Vec<FanOut> = (0..ROOMS)
            .map(|i| FanOut::in_hub(hub.clone(), &format!("room-{i}"), MEMBERS))
            .collect();
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for room in rooms.iter_mut() {
                    scope.spawn(move || {
                        let mut left = iters;
                        while left > 0 {
                            let chunk = left.min(32);
                            for _ in 0..chunk {
                                black_box(room.publish(TEXT_64));
                                black_box(room.round());
                            }
                            room.drain();
                            left -= chunk;
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

fn joined(c: &mut Criterion) {
    let mut group = c.benchmark_group("joined");
    group.throughput(Throughput::Elements(1));
    // Stored as a room stores them: the fragments `joined` splices in.
    let mut history = relay::chat::history::History::new(relay::chat::history::HistoryBudget::new(
        relay::chat::history::HistoryLimits {
            count: 100,
            room_bytes: 1 << 20,
            total_bytes: 1 << 20,
            joined_bytes: 1 << 20,
        },
    ));
    for n in 1..=100 {
        history.push(&event::message(&message_event(n)), usize::MAX);
    }
    let ids: Vec<String> = (0..100).map(|i| format!("3fa9c1-{i}")).collect();
    let users: Vec<UserRef<'_>> = ids
        .iter()
        .map(|id| UserRef {
            id,
            username: "member",
        })
        .collect();
    group.bench_function("100_history_100_users", |b| {
        b.iter(|| {
            event::joined(event::Joined {
                client_id: "3fa9c1-7",
                room: "general",
                epoch: "6f1c2a9e03b4d771",
                seq: 100,
                last_read: 90,
                unread: 10,
                count: users.len(),
                users: Some(users.iter().copied()),
                history: history.entries().iter(),
                recovered: Some(true),
                truncated: false,
            })
        })
    });
    group.finish();
}

/// A loopback TCP pair whose far end a thread drains as fast as it can.
fn loopback(rt: &tokio::runtime::Runtime) -> tokio::net::TcpStream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let (mut server_side, _) = listener.accept().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 20];
        while matches!(server_side.read(&mut sink), Ok(n) if n > 0) {}
    });
    client.set_nonblocking(true).unwrap();
    client.set_nodelay(true).unwrap();
    let _guard = rt.enter();
    tokio::net::TcpStream::from_std(client).unwrap()
}

fn writer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = loopback(&rt);
    let _guard = rt.enter();
    let frame = event::message(&message_event(1)).bytes().clone();
    let stream = Arc::new(stream);
    let outbox = Outbox::default();
    outbox.attach(stream.clone());
    let mut group = c.benchmark_group("writer");
    for frames in [16usize, 64] {
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_function(BenchmarkId::new("outbox_flush", frames), |b| {
            b.iter(|| {
                for _ in 0..frames {
                    outbox.push(&frame, Priority::Normal, usize::MAX / 2);
                }
                // The flusher's write; a full socket buffer hands over to the task's, which
                // waits for the reactor to see it drain (tokio's `try_write*` answer from
                // cached readiness until then).
                outbox.flush();
                while !outbox.is_drained() {
                    rt.block_on(stream.writable()).unwrap();
                    outbox.write_now();
                }
            })
        });
        group.bench_function(BenchmarkId::new("write_per_frame", frames), |b| {
            let queue: VecDeque<Bytes> = (0..frames).map(|_| frame.clone()).collect();
            b.iter(|| {
                for f in &queue {
                    let mut at = 0;
                    while at < f.len() {
                        match stream.try_write(&f[at..]) {
                            Ok(n) => at += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                rt.block_on(stream.writable()).unwrap()
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = decode, encode, fan_out, joined, writer
}
criterion_main!(hot_path);
