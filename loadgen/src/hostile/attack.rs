//! The attack catalogue, what every attack gets to work with, and the attacker-side helpers
//! (opening connections while counting refusals, draining replies while counting closes).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use chatrelay_wsclient as ws;
use clap::ValueEnum;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

use super::conn::{ConnectError, WsConn};
use super::tally::{Counts, VictimStats};

/// One attack of issue 19's list (see loadgen/README.md, "Hostile-load suite").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// A: 20 loops of connect, join a fresh room, 10 x 2,000-character messages, close.
    ReconnectRooms,
    /// A-ctl: as A with texts of 2,000 control characters (6 bytes each once escaped).
    ReconnectRoomsCtl,
    /// B: 500 connections from one address, 16 rooms each, 2 maximal messages/s each.
    HistoryGrowth,
    /// C: 10 connections sending empty pong frames as fast as the socket takes them.
    PongFlood,
    /// C-ping: as C with pings (replies read and discarded).
    PingFlood,
    /// C-frames: empty continuation frames and empty binary frames.
    FrameFlood,
    /// D: keep-alive connections pipelining `GET /metrics` as fast as possible.
    MetricsPipeline,
    /// E: a room with maximal history, joined and left over and over (also by non-readers).
    JoinedAmplify,
    /// F: a room filled to its history cap, then 30 normal clients (victim side) join it.
    HistoryPoison,
    /// F-restore: 12 rooms filled past the `joined` cap, then 10 normal clients (victim
    /// side) join all 12 in one write, as after a reconnect (not in the issue's list).
    HistoryPoisonRestore,
    /// G: one address opening new connections as fast as it can.
    ConnectRate,
    /// Every attack above in turn, each against a fresh relay.
    All,
}

impl Attack {
    /// Every real attack, in the order `all` runs them.
    pub const EACH: [Attack; 11] = [
        Attack::ReconnectRooms,
        Attack::ReconnectRoomsCtl,
        Attack::HistoryGrowth,
        Attack::PongFlood,
        Attack::PingFlood,
        Attack::FrameFlood,
        Attack::MetricsPipeline,
        Attack::JoinedAmplify,
        Attack::HistoryPoison,
        Attack::HistoryPoisonRestore,
        Attack::ConnectRate,
    ];

    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// The issue's label for it.
    pub fn label(self) -> &'static str {
        match self {
            Attack::ReconnectRooms => "A",
            Attack::ReconnectRoomsCtl => "A-ctl",
            Attack::HistoryGrowth => "B",
            Attack::PongFlood => "C",
            Attack::PingFlood => "C-ping",
            Attack::FrameFlood => "C-frames",
            Attack::MetricsPipeline => "D",
            Attack::JoinedAmplify => "E",
            Attack::HistoryPoison => "F",
            Attack::HistoryPoisonRestore => "F-restore",
            Attack::ConnectRate => "G",
            Attack::All => "all",
        }
    }
}

/// What an attack runs against and reports into.
#[derive(Clone)]
pub struct Ctx {
    pub relay: SocketAddr,
    /// Source addresses attack connections use (round-robin), unless the attack is "one
    /// address" (B, G), which uses the first only.
    pub attacker_ips: Vec<IpAddr>,
    /// The victim's address, for attack F's normal joiners.
    pub victim_ip: IpAddr,
    pub until: Instant,
    pub counts: Arc<Counts>,
    pub victim: Arc<VictimStats>,
}

impl Ctx {
    pub fn ip(&self, k: usize) -> IpAddr {
        self.attacker_ips[k % self.attacker_ips.len()]
    }

    pub fn live(&self) -> bool {
        Instant::now() < self.until
    }

    /// Opens an attack connection, counting the HTTP status (or the failure) it got.
    pub async fn open(&self, source: IpAddr, id: u64) -> Option<WsConn> {
        match WsConn::open(source, self.relay, id).await {
            Ok(c) => {
                self.counts.bump("http_101");
                Some(c)
            }
            Err(e) => {
                self.count_connect_error(&e);
                // A refused attempt costs the attacker next to nothing; yielding here only
                // keeps its own other tasks (and its readers) running.
                tokio::task::yield_now().await;
                None
            }
        }
    }

    pub fn count_connect_error(&self, e: &ConnectError) {
        match e {
            ConnectError::Status(s) => self.counts.bump(&format!("http_{s}")),
            ConnectError::Io(_) => self.counts.bump("connect_io_error"),
            ConnectError::Garbled => self.counts.bump("http_garbled"),
        }
    }
}

/// Reads and discards everything the relay sends on an attack connection, counting its
/// `error` events by code, close frames by code, and data bytes; returns at EOF or error.
pub async fn drain(mut read: OwnedReadHalf, leftover: Vec<u8>, counts: Arc<Counts>) {
    let mut frames = FrameCounter::default();
    frames.feed(&leftover, &counts);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match read.read(&mut chunk).await {
            Ok(0) => {
                counts.bump("eof");
                break;
            }
            Ok(n) => {
                counts.add("bytes_in", n as u64);
                frames.feed(&chunk[..n], &counts);
            }
            Err(_) => {
                counts.bump("read_error");
                break;
            }
        }
    }
}

/// Frame-by-frame classification of a server byte stream, buffering only a frame's head
/// and, for text and close frames, the first bytes that name an error code.
#[derive(Default)]
pub struct FrameCounter {
    buf: Vec<u8>,
}

impl FrameCounter {
    pub fn feed(&mut self, bytes: &[u8], counts: &Counts) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while let Ok(Some(h)) = ws::parse_header(&self.buf[at..]) {
            if self.buf.len() - at < h.frame_len() {
                break;
            }
            let payload = &self.buf[at + h.header_len..at + h.frame_len()];
            match h.opcode {
                ws::OP_CLOSE => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    counts.bump(&super::victim::close_kind(code));
                }
                ws::OP_TEXT => {
                    if let Some(code) = error_code(payload) {
                        counts.bump(&format!("error_{code}"));
                    }
                }
                _ => {}
            }
            at += h.frame_len();
        }
        self.buf.drain(..at);
    }
}

/// The `code` of an `error` event, found by scanning (no JSON parse per frame).
pub fn error_code(text: &[u8]) -> Option<&str> {
    memchr::memmem::find(text, br#""type":"error""#)?;
    let key = br#""code":""#;
    let start = memchr::memmem::find(text, key)? + key.len();
    let len = memchr::memchr(b'"', &text[start..])?;
    std::str::from_utf8(&text[start..start + len]).ok()
}

/// A masked client frame with the given FIN bit.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    ws::put_masked_frame(&mut out, fin, opcode, [0x5a, 0x17, 0xc3, 0x88], payload);
    out
}

/// One chat message as a text frame.
pub fn message_frame(text: &str, room: Option<&str>) -> Vec<u8> {
    let v = match room {
        Some(r) => serde_json::json!({"type":"message","text":text,"room":r}),
        None => serde_json::json!({"type":"message","text":text}),
    };
    frame(true, ws::OP_TEXT, v.to_string().as_bytes())
}

pub fn join_frame(room: &str) -> Vec<u8> {
    let v = serde_json::json!({"type":"join","room":room,"username":"attacker"});
    frame(true, ws::OP_TEXT, v.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_error_codes() {
        let e = br#"{"type":"error","code":"rate_limited","message":"too many"}"#;
        assert_eq!(error_code(e), Some("rate_limited"));
        assert_eq!(error_code(br#"{"type":"message","code":"x"}"#), None);
    }

    #[test]
    fn counts_frames_split_anywhere() {
        let mut stream = Vec::new();
        ws::put_server_frame(
            &mut stream,
            ws::OP_TEXT,
            br#"{"type":"error","code":"not_joined"}"#,
        );
        ws::put_server_frame(&mut stream, ws::OP_TEXT, &[b'x'; 300]);
        ws::put_server_frame(&mut stream, ws::OP_CLOSE, &4029u16.to_be_bytes());
        for split in 0..stream.len() {
            let counts = Counts::default();
            let mut fc = FrameCounter::default();
            fc.feed(&stream[..split], &counts);
            fc.feed(&stream[split..], &counts);
            let snap = counts.snapshot();
            assert_eq!(snap.get("error_not_joined"), Some(&1), "split {split}");
            assert_eq!(snap.get("close_4029"), Some(&1), "split {split}");
        }
    }

    #[test]
    fn unfinished_frames_keep_fin_clear() {
        let f = frame(false, ws::OP_CONT, b"");
        let h = ws::parse_header(&f).expect("valid").expect("complete");
        assert!(!h.fin);
        assert_eq!(h.opcode, ws::OP_CONT);
        assert_eq!(Attack::EACH.len(), 11);
        assert_eq!(Attack::HistoryPoison.name(), "history-poison");
    }
}
