//! The attacks that go through chat commands: A and A-ctl (rooms from reconnect loops), B
//! (history growth), E (`joined` amplification) and F (history poisoning of normal joiners).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatrelay_wsclient as ws;
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep, timeout, Instant};

use super::attack::{drain, frame, join_frame, message_frame, Ctx};
use super::conn::Incoming;
use super::tally::Probe;
use super::victim::{await_joined, close_kind, close_politely, open_and_join, REFUSAL_TIMEOUT};

/// Longest chat text (`--max-text-chars`, 2,000 characters).
pub const MAX_TEXT_CHARS: usize = 2000;

/// 2,000 plain characters, or 2,000 control characters (each escaped to 6 bytes in JSON:
/// the largest a stored message can be).
pub fn max_text(control: bool) -> String {
    let c = if control { '\u{1}' } else { 'x' };
    std::iter::repeat_n(c, MAX_TEXT_CHARS).collect()
}

/// A / A-ctl: 20 loops of connect, join a fresh room, a 10-message burst, close; rooms then
/// linger 60 s with their history.
pub async fn reconnect_rooms(ctx: Ctx, control: bool) {
    let text = Arc::new(max_text(control));
    let next_room = Arc::new(AtomicU64::new(0));
    for k in 0..20usize {
        let (ctx, text, next_room) = (ctx.clone(), text.clone(), next_room.clone());
        tokio::spawn(async move {
            while ctx.live() {
                let n = next_room.fetch_add(1, Ordering::Relaxed);
                let Some(conn) = ctx.open(ctx.ip(k), n).await else {
                    continue;
                };
                let mut burst = join_frame(&format!("a-{n}"));
                for _ in 0..10 {
                    burst.extend(message_frame(&text, None));
                }
                burst.extend(frame(true, ws::OP_CLOSE, &1000u16.to_be_bytes()));
                let (read, mut write, leftover) = conn.into_split();
                if write.write_all(&burst).await.is_err() {
                    ctx.counts.bump("write_error");
                    continue;
                }
                ctx.counts.add("messages_sent", 10);
                // Waits for the relay's close answer so every message was taken or refused.
                let _ = timeout(
                    Duration::from_secs(5),
                    drain(read, leftover, ctx.counts.clone()),
                )
                .await;
            }
        });
    }
}

/// B: 500 connections from one address, each in 16 rooms of its own, each sending 2
/// maximal messages a second round-robin over its rooms; connections stay open.
pub async fn history_growth(ctx: Ctx) {
    let text = Arc::new(max_text(true));
    let open = Arc::new(AtomicU64::new(0));
    for c in 0..500u64 {
        let (ctx, text, open) = (ctx.clone(), text.clone(), open.clone());
        tokio::spawn(async move {
            let source = ctx.attacker_ips[0];
            // The per-address connection rate lets about 20 a second in: refused ones retry
            // after a short pause (this attack is about history, G about connect rate).
            let conn = loop {
                if !ctx.live() {
                    return;
                }
                if let Some(conn) = ctx.open(source, c).await {
                    break conn;
                }
                sleep(Duration::from_millis(100 + c % 100)).await;
            };
            let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
            ctx.counts.max("peak_open_connections", now_open);
            let (read, mut write, leftover) = conn.into_split();
            tokio::spawn(drain(read, leftover, ctx.counts.clone()));
            let rooms: Vec<String> = (0..16).map(|r| format!("b-{c}-{r}")).collect();
            let mut joins = Vec::new();
            for r in &rooms {
                joins.extend(join_frame(r));
            }
            if write.write_all(&joins).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut i = 0usize;
            while ctx.live() {
                tick.tick().await;
                let f = message_frame(&text, Some(&rooms[i % rooms.len()]));
                i += 1;
                if write.write_all(&f).await.is_err() {
                    ctx.counts.bump("write_error");
                    break;
                }
                ctx.counts.bump("messages_sent");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Writes `count` maximal messages into `room` from fresh connections (10 each: the
/// per-connection burst); returns once the relay has answered every one (echo or error)
/// as seen by a reader in the room, or after a few seconds.
async fn fill_room(ctx: &Ctx, room: &str, count: u64, keep_posting: bool) {
    let text = Arc::new(max_text(true));
    let mut done = Vec::new();
    for k in 0..count.div_ceil(10) {
        let share = (count - k * 10).min(10);
        let (ctx, text, room) = (ctx.clone(), text.clone(), room.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        done.push(rx);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while ctx.live() {
                let Some(mut conn) = ctx.open(ctx.ip(k as usize), 50_000 + k).await else {
                    continue;
                };
                if conn
                    .send(ws::OP_TEXT, &join_frame_payload(&room))
                    .await
                    .is_err()
                    || await_joined(&mut conn, &room).await.is_err()
                {
                    continue;
                }
                let mut burst = Vec::new();
                for _ in 0..share {
                    burst.extend(message_frame(&text, None));
                }
                let (read, mut write, leftover) = conn.into_split();
                let reader = tokio::spawn(drain(read, leftover, ctx.counts.clone()));
                if write.write_all(&burst).await.is_err() {
                    continue;
                }
                ctx.counts.add("messages_sent", share);
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
                if !keep_posting {
                    // Stays joined (and reading) so the room stays in use, not lingering.
                    let _ = reader.await;
                    return;
                }
                // Full speed after the fill: the rate limits decide what lands.
                while ctx.live() {
                    if write.write_all(&message_frame(&text, None)).await.is_err() {
                        break;
                    }
                    ctx.counts.bump("messages_sent");
                    tokio::task::yield_now().await;
                }
                reader.abort();
            }
        });
    }
    for rx in done {
        let _ = timeout(Duration::from_secs(5), rx).await;
    }
    // The relay handles each connection's burst in order; a short settle lets the last
    // writes land before the victims join (there is no event to await on the writer side).
    sleep(Duration::from_millis(200)).await;
}

fn join_frame_payload(room: &str) -> Vec<u8> {
    serde_json::json!({"type":"join","room":room,"username":"attacker"})
        .to_string()
        .into_bytes()
}

/// E: fill one room with as much history as the budgets allow, then many connections join
/// and leave it over and over, and some join without ever reading (slow consumers).
pub async fn joined_amplify(ctx: Ctx) {
    const ROOM: &str = "e-big";
    fill_room(&ctx, ROOM, 100, false).await;
    for k in 0..40u64 {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut pair = Vec::new();
            for _ in 0..20 {
                pair.extend(join_frame(ROOM));
                pair.extend(frame(true, ws::OP_TEXT, br#"{"type":"leave"}"#));
            }
            while ctx.live() {
                let Some(conn) = ctx.open(ctx.ip(k as usize), 60_000 + k).await else {
                    continue;
                };
                let (read, mut write, leftover) = conn.into_split();
                let reader = tokio::spawn(drain(read, leftover, ctx.counts.clone()));
                while ctx.live() {
                    if write.write_all(&pair).await.is_err() {
                        break;
                    }
                    ctx.counts.add("joins_sent", 20);
                }
                reader.abort();
            }
        });
    }
    for k in 0..10u64 {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let joins: Vec<u8> = (0..10).flat_map(|_| join_frame(ROOM)).collect();
            while ctx.live() {
                let Some(conn) = ctx.open(ctx.ip(k as usize), 70_000 + k).await else {
                    continue;
                };
                // Never reads: the read half is kept (not dropped) so the socket stays open.
                let (_read, mut write, _) = conn.into_split();
                while ctx.live() {
                    if write.write_all(&joins).await.is_err() {
                        ctx.counts.bump("nonreader_closed");
                        break;
                    }
                    ctx.counts.add("nonreader_joins_sent", 10);
                    sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
}

/// F: the attacker fills a room's history to the cap and keeps a second room busy; then 30
/// normal clients from the victim's address, already in the busy room, send a ping and
/// join the filled one. None of them may be closed (4008 above all).
pub async fn history_poison(ctx: Ctx) {
    const POISON: &str = "f-poison";
    const BUSY: &str = "f-busy";
    fill_room(&ctx, POISON, 100, false).await;
    let busy = {
        let ctx = ctx.clone();
        tokio::spawn(async move { fill_room(&ctx, BUSY, 50, true).await })
    };
    let _ = timeout(Duration::from_secs(5), busy).await;
    let mut joiners = Vec::new();
    for j in 0..30u64 {
        if !ctx.live() {
            ctx.victim.refuse("poison_joiner_not_run");
            continue;
        }
        let rooms = vec![POISON.to_string()];
        joiners.push(tokio::spawn(poison_joiner(ctx.clone(), j, rooms, BUSY)));
        // Spread over ~1.5 s: within the victim address's connection burst either way.
        sleep(Duration::from_millis(50)).await;
    }
    for j in joiners {
        let _ = j.await;
    }
}

/// F-restore: the attacker fills 12 rooms past the `joined` history cap (11 maximal messages
/// of 12 KB each); then 10 normal clients from the victim's address each join all 12 in one
/// write, as a client restoring its rooms after a reconnect does (12 joins: within
/// --max-rooms-per-connection and the command burst). Each `joined` is capped at 128 KiB,
/// but 12 of them queued by one read are ~1.4 MB, past the 1 MiB slow-consumer cap.
pub async fn history_poison_restore(ctx: Ctx) {
    const ROOMS: usize = 12;
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("f-restore-{r}")).collect();
    let mut fills = Vec::new();
    for r in &rooms {
        let (ctx, r) = (ctx.clone(), r.clone());
        fills.push(tokio::spawn(
            async move { fill_room(&ctx, &r, 11, false).await },
        ));
    }
    for f in fills {
        let _ = f.await;
    }
    let mut joiners = Vec::new();
    for j in 0..10u64 {
        if !ctx.live() {
            ctx.victim.refuse("poison_joiner_not_run");
            continue;
        }
        joiners.push(tokio::spawn(poison_joiner(
            ctx.clone(),
            100 + j,
            rooms.clone(),
            "f-lobby",
        )));
        sleep(Duration::from_millis(100)).await;
    }
    for j in joiners {
        let _ = j.await;
    }
}

/// A normal client: joins `first`, then writes a ping, an app-level ping and a join of each
/// of `rooms` in one write, waits for every `joined`, and stays a second reading.
async fn poison_joiner(ctx: Ctx, j: u64, rooms: Vec<String>, first: &str) {
    let victim = ctx.victim.clone();
    let name = format!("normal{j}");
    let Some(mut conn) = open_and_join(
        ctx.relay,
        ctx.victim_ip,
        80_000 + j,
        first,
        &name,
        &victim,
        Probe::Connect,
    )
    .await
    else {
        return;
    };
    // Something queued ahead of the big `joined`: a pong and an app-level pong.
    let mut batch = Vec::new();
    conn.frame_into(&mut batch, ws::OP_PING, b"f");
    conn.frame_into(&mut batch, ws::OP_TEXT, br#"{"type":"ping"}"#);
    for room in &rooms {
        let join = serde_json::json!({"type":"join","room":room}).to_string();
        conn.frame_into(&mut batch, ws::OP_TEXT, join.as_bytes());
    }
    let started = Instant::now();
    if conn.stream.write_all(&batch).await.is_err() {
        victim.refuse("reset");
        return;
    }
    let all_joined = async {
        for room in &rooms {
            await_joined(&mut conn, room).await?;
        }
        Ok::<(), String>(())
    };
    match timeout(REFUSAL_TIMEOUT, all_joined).await {
        Ok(Ok(())) => victim.record(Probe::PoisonJoin, started.elapsed()),
        Ok(Err(kind)) => {
            if kind == "close_4008" {
                victim.poison_4008.fetch_add(1, Ordering::Relaxed);
            }
            victim.refuse(&kind);
            return;
        }
        Err(_) => {
            victim.refuse("timeout_poison_join");
            return;
        }
    }
    // Stays a second as a member of both rooms, reading like any client would.
    let stay = Instant::now() + Duration::from_secs(1);
    loop {
        let next = tokio::select! {
            _ = tokio::time::sleep_until(stay) => break,
            m = conn.recv() => m,
        };
        match next {
            Ok(Some(Incoming::Close(code))) => {
                if code == Some(4008) {
                    victim.poison_4008.fetch_add(1, Ordering::Relaxed);
                }
                victim.refuse(&close_kind(code));
                return;
            }
            Ok(Some(Incoming::Ping(p))) => {
                let _ = conn.send(ws::OP_PONG, &p).await;
            }
            Ok(Some(Incoming::Text(t))) => {
                if let Some(code) = super::attack::error_code(&t) {
                    victim.refuse(&format!("error_{code}"));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                victim.refuse("reset");
                return;
            }
        }
    }
    close_politely(&mut conn).await;
}
