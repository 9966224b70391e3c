//! The well-behaved victim: chat clients in one room measuring send -> own echo, one of them
//! also pinging every 50 ms, and a fresh connect + upgrade + join every 0.5 s. Every latency
//! goes into [`VictimStats`]; every refusal (non-101, `error` event, close from the server,
//! reset, a wait over [`REFUSAL_TIMEOUT`]) is counted there. It stays inside every documented
//! per-connection and per-address budget, so any refusal is the relay's fault.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chatrelay_wsclient as ws;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};

use super::conn::{close_payload, ConnectError, Incoming, WsConn};
use super::tally::{Probe, VictimStats};

/// A well-behaved client waiting longer than this for an answer counts it as refused.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The room the victim chats in.
pub const VICTIM_ROOM: &str = "victim-room";

/// What the victim does; see the `--victim-*` flags.
#[derive(Debug, Clone)]
pub struct VictimPlan {
    pub relay: SocketAddr,
    pub source: IpAddr,
    pub clients: usize,
    /// Chat messages per second per client.
    pub rate: f64,
    pub ping_every: Duration,
    pub connect_every: Duration,
}

/// Runs until `until`. `ready` fires once every chat client has joined, so the attack starts
/// against a victim that is already measuring.
pub async fn run(
    plan: VictimPlan,
    stats: Arc<VictimStats>,
    until: Instant,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut joined = Vec::new();
    for i in 0..plan.clients {
        let (tx, rx) = tokio::sync::oneshot::channel();
        joined.push(rx);
        let pinger = i == 0;
        tokio::spawn(chat_client(
            plan.clone(),
            stats.clone(),
            i as u64,
            pinger,
            until,
            tx,
        ));
    }
    for rx in joined {
        // A client that failed to join drops its sender: counted as a refusal already.
        let _ = rx.await;
    }
    let _ = ready.send(());
    let mut tick = interval(plan.connect_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    let mut probes = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            _ = tick.tick() => {
                n += 1;
                probes.push(tokio::spawn(connect_probe(plan.clone(), stats.clone(), n)));
            }
        }
    }
    for p in probes {
        let _ = p.await;
    }
}

/// Opens a connection and joins `room`; records the latency (TCP connect to `joined`) under
/// `probe`, or counts the refusal. Returns the open connection on success.
pub async fn open_and_join(
    relay: SocketAddr,
    source: IpAddr,
    id: u64,
    room: &str,
    username: &str,
    stats: &VictimStats,
    probe: Probe,
) -> Option<WsConn> {
    let started = Instant::now();
    let attempt = async {
        let mut conn = match WsConn::open(source, relay, id).await {
            Ok(c) => c,
            Err(ConnectError::Status(s)) => return Err(format!("http_{s}")),
            Err(ConnectError::Io(_)) => return Err("connect_io".to_string()),
            Err(ConnectError::Garbled) => return Err("http_garbled".to_string()),
        };
        let join = serde_json::json!({"type":"join","room":room,"username":username});
        if conn.send_text(&join.to_string()).await.is_err() {
            return Err("reset".to_string());
        }
        await_joined(&mut conn, room).await.map(|()| conn)
    };
    match timeout(REFUSAL_TIMEOUT, attempt).await {
        Ok(Ok(conn)) => {
            stats.record(probe, started.elapsed());
            Some(conn)
        }
        Ok(Err(kind)) => {
            stats.refuse(&kind);
            None
        }
        Err(_) => {
            stats.refuse("timeout_join");
            None
        }
    }
}

/// Reads until the `joined` for `room`, answering pings; any `error` or close is the refusal.
pub async fn await_joined(conn: &mut WsConn, room: &str) -> Result<(), String> {
    loop {
        match conn.recv().await {
            Ok(Some(Incoming::Text(t))) => match event(&t) {
                Event::Joined(r) if r == room => return Ok(()),
                Event::Error(code) => return Err(format!("error_{code}")),
                _ => {}
            },
            Ok(Some(Incoming::Ping(p))) => {
                if conn.send(ws::OP_PONG, &p).await.is_err() {
                    return Err("reset".to_string());
                }
            }
            Ok(Some(Incoming::Close(code))) => return Err(close_kind(code)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err("reset".to_string()),
        }
    }
}

pub fn close_kind(code: Option<u16>) -> String {
    match code {
        Some(c) => format!("close_{c}"),
        None => "close_nocode".to_string(),
    }
}

/// Sends our close and waits (briefly) for the relay's answer, so ending is clean.
pub async fn close_politely(conn: &mut WsConn) {
    if conn.send(ws::OP_CLOSE, &close_payload()).await.is_err() {
        return;
    }
    let _ = timeout(Duration::from_secs(1), async {
        while let Ok(Some(msg)) = conn.recv().await {
            if matches!(msg, Incoming::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The few event shapes the victim cares about.
pub enum Event {
    Joined(String),
    Message { text: String },
    Error(String),
    Other,
}

pub fn event(text: &[u8]) -> Event {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(text) else {
        return Event::Other;
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    match v.get("type").and_then(|t| t.as_str()) {
        Some("joined") => Event::Joined(field("room")),
        Some("message") => Event::Message {
            text: field("text"),
        },
        Some("error") => Event::Error(field("code")),
        _ => Event::Other,
    }
}

async fn connect_probe(plan: VictimPlan, stats: Arc<VictimStats>, n: u64) {
    let id = 1_000_000 + n;
    let name = format!("probe{n}");
    if let Some(mut conn) = open_and_join(
        plan.relay,
        plan.source,
        id,
        VICTIM_ROOM,
        &name,
        &stats,
        Probe::Connect,
    )
    .await
    {
        close_politely(&mut conn).await;
    }
}

async fn chat_client(
    plan: VictimPlan,
    stats: Arc<VictimStats>,
    i: u64,
    pinger: bool,
    until: Instant,
    joined: tokio::sync::oneshot::Sender<()>,
) {
    let name = format!("victim{i}");
    let Some(mut conn) = open_and_join(
        plan.relay,
        plan.source,
        i,
        VICTIM_ROOM,
        &name,
        &stats,
        Probe::Connect,
    )
    .await
    else {
        return;
    };
    let _ = joined.send(());
    let period = Duration::from_secs_f64(1.0 / plan.rate.max(0.01));
    // Offsets the clients within one period so their sends do not all land together.
    let first = Instant::now() + period.mul_f64(i as f64 / plan.clients.max(1) as f64);
    let mut send_tick = tokio::time::interval_at(first, period);
    send_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ping_tick = interval(plan.ping_every);
    ping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut pings: HashMap<u64, Instant> = HashMap::new();
    let mut next_ping = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            msg = conn.recv() => match msg {
                Ok(Some(Incoming::Text(t))) => match event(&t) {
                    Event::Message { text } => {
                        if let Some(at) = pending.remove(&text) {
                            stats.record(Probe::Echo, at.elapsed());
                        }
                    }
                    Event::Error(code) => stats.refuse(&format!("error_{code}")),
                    _ => {}
                },
                Ok(Some(Incoming::Pong(p))) => {
                    if let Ok(b) = <[u8; 8]>::try_from(p.as_slice()) {
                        if let Some(at) = pings.remove(&u64::from_be_bytes(b)) {
                            stats.record(Probe::Ping, at.elapsed());
                        }
                    }
                }
                Ok(Some(Incoming::Ping(p))) => {
                    if conn.send(ws::OP_PONG, &p).await.is_err() {
                        stats.refuse("reset");
                        return;
                    }
                }
                Ok(Some(Incoming::Close(code))) => {
                    stats.refuse(&close_kind(code));
                    return;
                }
                Ok(Some(Incoming::Binary(_))) => {}
                Ok(None) | Err(_) => {
                    stats.refuse("reset");
                    return;
                }
            },
            _ = send_tick.tick() => {
                sent += 1;
                let text = format!("v{i}-{sent}");
                let frame = serde_json::json!({"type":"message","text":text}).to_string();
                pending.insert(text, Instant::now());
                if conn.send_text(&frame).await.is_err() {
                    stats.refuse("reset");
                    return;
                }
                expire(&mut pending, &stats, "timeout_echo");
                expire(&mut pings, &stats, "timeout_ping");
            }
            _ = ping_tick.tick(), if pinger => {
                next_ping += 1;
                pings.insert(next_ping, Instant::now());
                if conn.send(ws::OP_PING, &next_ping.to_be_bytes()).await.is_err() {
                    stats.refuse("reset");
                    return;
                }
            }
        }
    }
    // Answers still missing at the end only count once they are overdue.
    expire(&mut pending, &stats, "timeout_echo");
    expire(&mut pings, &stats, "timeout_ping");
    close_politely(&mut conn).await;
}

fn expire<K>(pending: &mut HashMap<K, Instant>, stats: &VictimStats, kind: &str) {
    let before = pending.len();
    pending.retain(|_, at| at.elapsed() <= REFUSAL_TIMEOUT);
    for _ in pending.len()..before {
        stats.refuse(kind);
    }
}
