//! Workloads shared by the criterion benchmarks (`benches/hot_path.rs`) and the
//! instruction-count driver (`src/bin/instr_driver.rs`), so both measure the same code.
//!
//! # Layout
//! - [`commands`]: realistic client commands, as browsers and the loadgen send them.
//! - [`decode_simd`]: the alternative decoder (simd-json with reused buffers) the relay's
//!   serde_json decoder is compared against.
//! - [`FanOut`]: a room of N in-process members (no sockets): publish, then drain the queues.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use relay::conn::Conn;
use relay::hub::Hub;
use relay::room::{JoinRequest, Room};

/// Realistic client commands, as browsers and the loadgen send them.
pub mod commands {
    pub const JOIN: &str = r#"{"type":"join","room":"general","username":"alice"}"#;
    pub const JOIN_SINCE: &str = r#"{"type":"join","room":"general","username":"alice","since":41,"epoch":"6f1c2a9e03b4d771"}"#;
    pub const MESSAGE: &str = r#"{"type":"message","text":"1763800000123456789:42:17:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    pub const MESSAGE_ESCAPED: &str =
        r#"{"type":"message","text":"she said \"hi\"\nand left","room":"general"}"#;
    pub const TYPING: &str = r#"{"type":"typing","isTyping":true}"#;

    pub const ALL: [(&str, &str); 5] = [
        ("join", JOIN),
        ("join_since", JOIN_SINCE),
        ("message", MESSAGE),
        ("message_escaped", MESSAGE_ESCAPED),
        ("typing", TYPING),
    ];
}

/// The alternative decoder: simd-json into an owned-where-needed struct, buffers reused.
pub mod decode_simd {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    pub struct Raw<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        pub room: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        pub username: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        pub text: Option<std::borrow::Cow<'a, str>>,
        pub since: Option<u64>,
        #[serde(borrow)]
        pub epoch: Option<std::borrow::Cow<'a, str>>,
        #[serde(rename = "isTyping")]
        pub is_typing: Option<bool>,
    }

    /// Decoder state kept across calls, as a connection would keep it.
    #[derive(Default)]
    pub struct Decoder {
        buffers: simd_json::Buffers,
        input: Vec<u8>,
    }

    impl Decoder {
        /// simd-json parses in place, so the frame is copied into a reusable buffer first
        /// (the relay's read buffer would be mutable, but the copy is ~90 bytes).
        pub fn kind_len(&mut self, text: &str) -> usize {
            self.input.clear();
            self.input.extend_from_slice(text.as_bytes());
            match simd_json::serde::from_slice_with_buffers::<Raw<'_>>(
                &mut self.input,
                &mut self.buffers,
            ) {
                Ok(raw) => raw.kind.map_or(0, |k| k.len()) + raw.text.map_or(0, |t| t.len()),
                Err(_) => 0,
            }
        }
    }
}

/// One room with `members` in-process connections: their outboxes are the only sink.
pub struct FanOut {
    pub hub: Arc<Hub>,
    pub room: Arc<Room>,
    pub members: Vec<Arc<Conn>>,
    batch: VecDeque<Bytes>,
}

impl FanOut {
    pub fn new(members: usize) -> Self {
        Self::in_hub(Arc::new(Hub::new(&bench_config())), "bench", members)
    }

    /// A room named `name` in an existing hub (several rooms sharing one map).
    pub fn in_hub(hub: Arc<Hub>, name: &str, members: usize) -> Self {
        assert!(members > 0, "a fan-out needs at least the sender");
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let username: Arc<str> = Arc::from("member");
        let mut conns = Vec::with_capacity(members);
        let mut room = None;
        let mut batch = VecDeque::new();
        for i in 0..members {
            let conn = hub.register(peer);
            let request = JoinRequest {
                username: &username,
                since: None,
                epoch: None,
            };
            let Ok((joined, _)) = hub.join(&conn, name, request) else {
                panic!("one room is within the room budgets");
            };
            room = Some(joined);
            conns.push(conn);
            // Each join tells every member so far: drain now and then, or set-up alone would
            // queue n²/2 presence frames (50 million for 10,000 members).
            if i % 256 == 255 {
                drain_all(&conns, &mut batch);
            }
        }
        let mut fan_out = Self {
            room: room.expect("members > 0"),
            hub,
            members: conns,
            batch: VecDeque::new(),
        };
        fan_out.drain();
        fan_out
    }

    /// Publishes one message from the first member; returns its seq.
    pub fn publish(&self, text: &str) -> u64 {
        self.room
            .publish(&self.hub, &self.members[0], "member", text)
    }

    /// Empties every member's queue, as their writers would. Returns frames taken.
    pub fn drain(&mut self) -> usize {
        drain_all(&self.members, &mut self.batch)
    }
}

fn drain_all(members: &[Arc<Conn>], batch: &mut VecDeque<Bytes>) -> usize {
    let mut taken = 0;
    for member in members {
        let _ = member.outbox.take(batch);
        taken += batch.len();
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        member.outbox.release(bytes);
        batch.clear();
    }
    taken
}

/// Relay defaults with the limits a benchmark must not trip: no slow-consumer cap in the
/// way of queues that are drained only between measurements.
pub fn bench_config() -> relay::Config {
    relay::Config {
        max_outbound_bytes: usize::MAX / 2,
        presence_list_max: 0,
        ..relay::Config::default()
    }
}

/// A 64-byte chat text like the loadgen's (timestamp prefix, padding).
pub const TEXT_64: &str = "1763800000123456789:42:17:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
