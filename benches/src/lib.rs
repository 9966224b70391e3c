//! Workloads shared by the criterion benchmarks (`benches/hot_path.rs`) and the
//! instruction-count driver (`src/bin/instr_driver.rs`), so both measure the same code.
//!
//! # Layout
//! - [`commands`]: realistic client commands, as browsers and the loadgen send them.
//! - [`decode_simd`]: the alternative decoder (simd-json with reused buffers) the relay's
//!   serde_json decoder is compared against.
//! - [`FanOut`]: a room of N members whose outboxes write to real loopback sockets: publish,
//!   then run the flusher round production runs ([`relay::chat::flusher::round`]: the room's
//!   `deliver`, then each member's outbox flush, one `writev` each).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use relay::chat::client::Conn;
use relay::chat::hub::Hub;
use relay::chat::room::{JoinRequest, Room};
use tokio::net::TcpStream;

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

/// Most loopback socket pairs one fan-out opens: members beyond it share sockets (the bytes
/// are only drained), which keeps a 10,000-member room under the open-files limit.
const MAX_SOCKETS: usize = 1024;

/// One room with `members` connections, each writing to a loopback socket.
pub struct FanOut {
    pub hub: Arc<Hub>,
    pub room: Arc<Room>,
    pub members: Vec<Arc<Conn>>,
    sinks: Sinks,
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
            // Each join tells every member so far. No socket is attached yet, so a round
            // leaves these in the queues; drop them now and then, or set-up alone would queue
            // n²/2 presence frames (50 million for 10,000 members).
            if i % 256 == 255 {
                discard_round(&hub, &conns);
            }
        }
        discard_round(&hub, &conns);
        let sinks = Sinks::new(members.min(MAX_SOCKETS));
        for (i, conn) in conns.iter().enumerate() {
            conn.outbox.attach(sinks.near[i % sinks.near.len()].clone());
        }
        Self {
            room: room.expect("members > 0"),
            hub,
            members: conns,
            sinks,
        }
    }

    /// Publishes one message from the first member; returns its seq.
    pub fn publish(&self, text: &str) -> u64 {
        self.room
            .publish(&self.hub, &self.members[0], "member", text)
    }

    /// [`FanOut::publish`] with a `ref`: the room de-duplicates and remembers it, and the
    /// sender gets an `ack` besides the message (what `loadgen --with-ref` does).
    pub fn publish_with_ref(&self, text: &str, reference: &str) -> u64 {
        let sender = &self.members[0];
        let out = relay::chat::room::Outgoing {
            reference: Some(("member", reference)),
            ..relay::chat::room::Outgoing::plain(sender, "member", text)
        };
        self.room.send(&self.hub, &out).unwrap_or(0)
    }

    /// The flusher round: delivers the room's pending events and writes every member's queue
    /// to its socket. Returns the bytes written.
    pub fn round(&self) -> u64 {
        relay::chat::flusher::round(&self.hub)
    }

    /// Reads everything the sockets hold, as the clients would, and finishes any queue whose
    /// socket would block, as its connection task would. Returns the bytes read.
    pub fn drain(&mut self) -> usize {
        let read = self.sinks.drain();
        for (i, member) in self.members.iter().enumerate() {
            while !member.outbox.is_drained() {
                let socket = &self.sinks.near[i % self.sinks.near.len()];
                self.sinks
                    .rt
                    .block_on(socket.writable())
                    .expect("loopback socket");
                let _ = member.outbox.write_now();
                self.sinks.drain();
            }
        }
        read
    }
}

/// Delivers the pending events and drops what they queued (set-up, before sockets).
fn discard_round(hub: &Hub, members: &[Arc<Conn>]) {
    relay::chat::flusher::round(hub);
    for member in members {
        member.outbox.discard();
    }
}

/// Loopback socket pairs: the relay's ends (registered with a runtime, written by outboxes)
/// and the far ends this process drains.
struct Sinks {
    rt: tokio::runtime::Runtime,
    near: Vec<Arc<TcpStream>>,
    far: Vec<std::net::TcpStream>,
    buf: Vec<u8>,
}

impl Sinks {
    fn new(count: usize) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback");
        let addr = listener.local_addr().expect("bound");
        let mut near = Vec::with_capacity(count);
        let mut far = Vec::with_capacity(count);
        let _guard = rt.enter();
        for _ in 0..count {
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (server_side, _) = listener.accept().expect("accept");
            server_side.set_nonblocking(true).expect("non-blocking");
            server_side.set_nodelay(true).expect("nodelay");
            client.set_nonblocking(true).expect("non-blocking");
            near.push(Arc::new(
                TcpStream::from_std(server_side).expect("registered"),
            ));
            far.push(client);
        }
        // tokio answers `try_write` from cached readiness: let the reactor see each socket
        // writable once, as a served connection's would be.
        rt.block_on(async {
            for socket in &near {
                socket.writable().await.expect("loopback socket");
            }
        });
        Self {
            rt,
            near,
            far,
            buf: vec![0; 1 << 16],
        }
    }

    fn drain(&mut self) -> usize {
        let mut total = 0;
        for socket in &mut self.far {
            while let Ok(n) = socket.read(&mut self.buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
        }
        total
    }
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
