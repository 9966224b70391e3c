//! A small relay speaking enough of docs/PROTOCOL.md for tests (join, message with room `seq`,
//! leave, ping), with two test knobs: a stall (all deliveries pause for a while after the N-th
//! message) and a blast mode that floods each joined client with pre-built message frames,
//! used to measure how fast the generator absorbs deliveries.
//!
//! It runs on its own thread with a current-thread runtime and real loopback sockets.
//! [`relay`] relays chat between clients; [`blaster`] is the blast mode.

mod blaster;
mod relay;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chatrelay_wsclient as ws;
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::LocalSet;
use tokio::time::Instant;

/// How the fake relay misbehaves.
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// After this many chat messages, hold every delivery for `stall_for`.
    pub stall_after: Option<u64>,
    pub stall_for: Duration,
    /// Instead of relaying, answer each client's first chat message by writing pre-built
    /// message frames to it as fast as the socket takes them, for `blast_for`.
    pub blast_for: Option<Duration>,
}

/// A running fake relay; stops when dropped.
pub struct FakeRelay {
    pub addr: SocketAddr,
    /// Message frames written by blast mode.
    pub blasted: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRelay {
    pub fn start(opts: FakeOptions) -> io::Result<FakeRelay> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let blasted = Arc::new(AtomicU64::new(0));
        let b = Arc::clone(&blasted);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("fake-relay".into())
            .spawn(move || {
                let local = LocalSet::new();
                local.block_on(&rt, async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let state = Rc::new(State {
                        opts,
                        rooms: RefCell::new(HashMap::new()),
                        messages: Cell::new(0),
                        stall_until: Cell::new(None),
                        next_id: Cell::new(1),
                        blasted: b,
                    });
                    tokio::select! {
                        _ = accept_loop(listener, state) => {}
                        _ = rx => {}
                    }
                });
            })?;
        Ok(FakeRelay {
            addr,
            blasted,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Frame = Rc<Vec<u8>>;

struct Room {
    seq: u64,
    members: HashMap<u64, mpsc::UnboundedSender<Frame>>,
}

struct State {
    opts: FakeOptions,
    rooms: RefCell<HashMap<String, Room>>,
    messages: Cell<u64>,
    stall_until: Cell<Option<Instant>>,
    next_id: Cell<u64>,
    blasted: Arc<AtomicU64>,
}

async fn accept_loop(listener: TcpListener, state: Rc<State>) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let state = Rc::clone(&state);
        tokio::task::spawn_local(async move {
            let _ = serve(stream, state).await;
        });
    }
}

async fn serve(mut stream: TcpStream, state: Rc<State>) -> io::Result<()> {
    let Some(buf) = upgrade(&mut stream).await? else {
        return Ok(());
    };
    if let Some(d) = state.opts.blast_for {
        return blaster::serve(stream, buf, d, Arc::clone(&state.blasted)).await;
    }
    relay::serve(stream, buf, state).await
}

/// Answers the upgrade request; returns the bytes that followed its head, or `None` when the
/// client hung up first.
async fn upgrade(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = memmem::find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(&key)
    );
    stream.write_all(resp.as_bytes()).await?;
    buf.drain(..end);
    Ok(Some(buf))
}

/// Takes every complete frame off the front of `buf`, unmasked: (opcode, payload).
fn take_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Ok(Some(h)) = ws::parse_header(buf) {
        if buf.len() < h.frame_len() {
            break;
        }
        let mut payload = buf[h.header_len..h.frame_len()].to_vec();
        buf.drain(..h.frame_len());
        if let Some(mask) = h.mask {
            ws::apply_mask(&mut payload, mask);
        }
        frames.push((h.opcode, payload));
    }
    frames
}
