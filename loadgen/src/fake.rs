//! A small relay speaking enough of docs/PROTOCOL.md for tests (join, message with room `seq`,
//! leave, ping), with two test knobs: a stall (all deliveries pause for a while after the N-th
//! message) and a blast mode that floods each joined client with pre-built message frames,
//! used to measure how fast the generator absorbs deliveries.
//!
//! It runs on its own thread with a current-thread runtime and real loopback sockets.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatrelay_wsclient as ws;
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::LocalSet;
use tokio::time::Instant;

use crate::clock::now_ns;

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
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
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
    if let Some(d) = state.opts.blast_for {
        return serve_blast(stream, buf, d, Arc::clone(&state.blasted)).await;
    }

    let id = state.next_id.get();
    state.next_id.set(id + 1);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::task::spawn_local(write_loop(wr, rx, Rc::clone(&state)));
    let res = read_loop(rd, buf, id, tx, &state).await;
    for room in state.rooms.borrow_mut().values_mut() {
        room.members.remove(&id);
    }
    writer.abort();
    res
}

/// Writes queued frames, many per syscall; holds everything while the relay is stalled.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Frame>,
    state: Rc<State>,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 * 1024);
    while let Some(f) = rx.recv().await {
        if let Some(until) = state.stall_until.get() {
            tokio::time::sleep_until(until).await;
        }
        out.clear();
        out.extend_from_slice(&f);
        while out.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(f) => out.extend_from_slice(&f),
                Err(_) => break,
            }
        }
        wr.write_all(&out).await?;
    }
    Ok(())
}

async fn read_loop(
    mut rd: OwnedReadHalf,
    mut buf: Vec<u8>,
    id: u64,
    tx: mpsc::UnboundedSender<Frame>,
    state: &Rc<State>,
) -> io::Result<()> {
    let mut current: Option<String> = None;
    let mut username = format!("anon-{id}");
    loop {
        while let Ok(Some(h)) = ws::parse_header(&buf) {
            if buf.len() < h.frame_len() {
                break;
            }
            let mut payload = buf[h.header_len..h.frame_len()].to_vec();
            buf.drain(..h.frame_len());
            if let Some(mask) = h.mask {
                ws::apply_mask(&mut payload, mask);
            }
            match h.opcode {
                ws::OP_CLOSE => {
                    let mut f = Vec::new();
                    ws::put_server_frame(&mut f, ws::OP_CLOSE, payload.get(..2).unwrap_or(&[]));
                    let _ = tx.send(Rc::new(f));
                    return Ok(());
                }
                ws::OP_PING => {
                    let mut f = Vec::new();
                    ws::put_server_frame(&mut f, ws::OP_PONG, &payload);
                    let _ = tx.send(Rc::new(f));
                }
                ws::OP_TEXT => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) else {
                        send_json(
                            &tx,
                            &serde_json::json!({"type":"error","code":"invalid_json","message":"bad json"}),
                        );
                        continue;
                    };
                    let ty = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
                    match ty {
                        "join" => {
                            let room = v
                                .get("room")
                                .and_then(|r| r.as_str())
                                .unwrap_or("")
                                .to_string();
                            if let Some(u) = v.get("username").and_then(|u| u.as_str()) {
                                username = u.to_string();
                            }
                            let mut rooms = state.rooms.borrow_mut();
                            let r = rooms.entry(room.clone()).or_insert_with(|| Room {
                                seq: 0,
                                members: HashMap::new(),
                            });
                            r.members.insert(id, tx.clone());
                            send_json(
                                &tx,
                                &serde_json::json!({"type":"joined","clientId":format!("f-{id}"),
                                "room":room,"epoch":"fake","seq":r.seq,"count":r.members.len()}),
                            );
                            current = Some(room);
                        }
                        "leave" => {
                            if let Some(room) = current.take() {
                                if let Some(r) = state.rooms.borrow_mut().get_mut(&room) {
                                    r.members.remove(&id);
                                }
                                send_json(&tx, &serde_json::json!({"type":"left","room":room}));
                            }
                        }
                        "message" | "chat" => {
                            let text = v.get("text").and_then(|t| t.as_str()).unwrap_or("");
                            let Some(room) = current.clone() else {
                                send_json(
                                    &tx,
                                    &serde_json::json!({"type":"error","code":"not_joined","message":"join a room first"}),
                                );
                                continue;
                            };
                            let n = state.messages.get() + 1;
                            state.messages.set(n);
                            if state.opts.stall_after == Some(n) {
                                state
                                    .stall_until
                                    .set(Some(Instant::now() + state.opts.stall_for));
                            }
                            let mut rooms = state.rooms.borrow_mut();
                            let Some(r) = rooms.get_mut(&room) else {
                                continue;
                            };
                            r.seq += 1;
                            let body = serde_json::json!({"type":"message","id":format!("f-m{n}"),"seq":r.seq,
                                "room":room,"userId":format!("f-{id}"),"username":username,"text":text,
                                "timestamp":now_ns() / 1_000_000});
                            let mut f = Vec::new();
                            ws::put_server_frame(&mut f, ws::OP_TEXT, body.to_string().as_bytes());
                            let f = Rc::new(f);
                            for m in r.members.values() {
                                let _ = m.send(Rc::clone(&f));
                            }
                        }
                        "ping" => send_json(&tx, &serde_json::json!({"type":"pong"})),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 8192];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn send_json(tx: &mpsc::UnboundedSender<Frame>, v: &serde_json::Value) {
    let mut f = Vec::new();
    ws::put_server_frame(&mut f, ws::OP_TEXT, v.to_string().as_bytes());
    let _ = tx.send(Rc::new(f));
}

/// Frames per pre-built blast chunk (about 64 KiB of relay-shaped message events).
const BLAST_FRAMES: usize = 384;

/// Blast mode: join, wait for the client's first chat message, then write pre-built message
/// frames (re-stamped in place: seq, send time, counter) straight to the socket for `d`.
async fn serve_blast(
    stream: TcpStream,
    mut buf: Vec<u8>,
    d: Duration,
    counter: Arc<AtomicU64>,
) -> io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut joined = false;
    loop {
        let mut started = false;
        while let Ok(Some(h)) = ws::parse_header(&buf) {
            if buf.len() < h.frame_len() {
                break;
            }
            let mut payload = buf[h.header_len..h.frame_len()].to_vec();
            buf.drain(..h.frame_len());
            if let Some(mask) = h.mask {
                ws::apply_mask(&mut payload, mask);
            }
            if h.opcode == ws::OP_CLOSE {
                return Ok(());
            }
            if !joined && memmem::find(&payload, b"\"join\"").is_some() {
                let mut f = Vec::new();
                ws::put_server_frame(&mut f, ws::OP_TEXT, br#"{"type":"joined","clientId":"b","room":"room-0","epoch":"fake","seq":0,"count":1}"#);
                wr.write_all(&f).await?;
                joined = true;
            } else if joined && memmem::find(&payload, b"\"message\"").is_some() {
                started = true;
            }
        }
        if started {
            break;
        }
        let mut chunk = [0u8; 4096];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // Discard whatever the client sends from now on, so it never blocks on us.
    let drain = tokio::task::spawn_local(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let (mut chunk, fields) = blast_chunk();
    let end = Instant::now() + d;
    let mut seq: u64 = 1_000_000_000;
    while Instant::now() < end {
        let mut t_digits = [b'0'; 19];
        put_fixed(&mut t_digits, now_ns());
        for &(s_at, t_at, n_at) in &fields {
            seq += 1;
            let mut d10 = [b'0'; 10];
            put_fixed(&mut d10, seq);
            chunk[s_at..s_at + 10].copy_from_slice(&d10);
            chunk[t_at..t_at + 19].copy_from_slice(&t_digits);
            chunk[n_at..n_at + 10].copy_from_slice(&d10);
        }
        if wr.write_all(&chunk).await.is_err() {
            break;
        }
        counter.fetch_add(BLAST_FRAMES as u64, Ordering::Relaxed);
    }
    let _ = drain.await;
    Ok(())
}

/// A chunk of message frames shaped like the relay's, and where each frame's seq, send time
/// and counter digits sit (fixed width, so they can be rewritten in place).
fn blast_chunk() -> (Vec<u8>, Vec<(usize, usize, usize)>) {
    let mut chunk = Vec::with_capacity(BLAST_FRAMES * 200);
    let mut fields = Vec::with_capacity(BLAST_FRAMES);
    for _ in 0..BLAST_FRAMES {
        let mut body = Vec::new();
        body.extend_from_slice(br#"{"type":"message","id":"blast","seq":"#);
        let seq_at = body.len();
        body.extend_from_slice(b"1000000000");
        body.extend_from_slice(
            br#","room":"room-0","userId":"blaster","username":"blaster","text":""#,
        );
        let t_at = body.len();
        body.extend_from_slice(b"0000000000000000000:0:");
        let n_at = body.len();
        body.extend_from_slice(b"1000000000:xxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        body.extend_from_slice(br#"","timestamp":1763800001234}"#);
        let frame_at = chunk.len();
        ws::put_server_frame(&mut chunk, ws::OP_TEXT, &body);
        let hdr = chunk.len() - frame_at - body.len();
        let base = frame_at + hdr;
        fields.push((base + seq_at, base + t_at, base + n_at));
    }
    (chunk, fields)
}

fn put_fixed(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}
