//! Runs one hot path a given number of times, for counting instructions under callgrind.
//!
//! `instr-driver <path> <iterations>`; `benches/instr_guard.py` runs it with 0 and N
//! iterations and divides the difference by N, so start-up and set-up cancel out.

use std::fmt::Write;
use std::hint::black_box;

use benches::{commands, FanOut, TEXT_64};
use relay::protocol::event::{self, MessageEvent};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Members of the fan-out room: large enough that the per-member loop dominates.
const FANOUT_MEMBERS: usize = 1_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(iterations)) =
        (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: instr-driver <fanout|fanout-ref|encode|decode> <iterations>");
        std::process::exit(2);
    };
    match path.as_str() {
        // Publish to a room of 1,000 and run the flusher round that writes it to every
        // member's socket; the clients read every 16 rounds (their reads count too, but are
        // a small share).
        "fanout" => {
            let mut room = FanOut::new(FANOUT_MEMBERS);
            for i in 0..iterations {
                black_box(room.publish(TEXT_64));
                black_box(room.round());
                if i % 16 == 15 {
                    room.drain();
                }
            }
            room.drain();
        }
        // The same with a unique `ref` on every message: de-duplication, the remembered send
        // and the sender's `ack` (the ref is formatted into a reused buffer).
        "fanout-ref" => {
            let mut room = FanOut::new(FANOUT_MEMBERS);
            let mut reference = String::with_capacity(24);
            for i in 0..iterations {
                reference.clear();
                let _ = write!(reference, "c-{i}");
                black_box(room.publish_with_ref(TEXT_64, &reference));
                black_box(room.round());
                if i % 16 == 15 {
                    room.drain();
                }
            }
            room.drain();
        }
        "encode" => {
            for n in 0..iterations {
                black_box(event::message(&MessageEvent {
                    node_tag: "3fa9c1",
                    number: n,
                    seq: n,
                    room: "general",
                    user_id: "3fa9c1-17",
                    username: "alice",
                    text: TEXT_64,
                    timestamp_ms: 1_763_800_000_123,
                    reply_to: None,
                    reference: None,
                }));
            }
        }
        "decode" => {
            for _ in 0..iterations {
                for (_, command) in commands::ALL {
                    black_box(relay::protocol::decode(black_box(command)).is_ok());
                }
            }
        }
        other => {
            eprintln!("unknown path {other:?}");
            std::process::exit(2);
        }
    }
}
