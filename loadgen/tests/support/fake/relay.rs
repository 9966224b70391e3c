//! The relaying side of the fake: rooms with a `seq`, chat fan-out, and the stall knob.

use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use chatrelay_wsclient as ws;
use loadgen::clock::now_ns;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{take_frames, Frame, Room, State};

/// Serves one upgraded connection; `buf` holds what arrived after the upgrade head.
pub(super) async fn serve(stream: TcpStream, buf: Vec<u8>, state: Rc<State>) -> io::Result<()> {
    let id = state.next_id.get();
    state.next_id.set(id + 1);
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::task::spawn_local(write_loop(wr, rx, Rc::clone(&state)));
    let mut client = Client {
        id,
        tx,
        room: None,
        username: format!("anon-{id}"),
    };
    let res = read_loop(rd, buf, &mut client, &state).await;
    for room in state.rooms.borrow_mut().values_mut() {
        room.members.remove(&id);
    }
    writer.abort();
    res
}

/// One connected client: its outgoing queue and where it is.
struct Client {
    id: u64,
    tx: mpsc::UnboundedSender<Frame>,
    room: Option<String>,
    username: String,
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
    client: &mut Client,
    state: &State,
) -> io::Result<()> {
    loop {
        for (opcode, payload) in take_frames(&mut buf) {
            match opcode {
                ws::OP_CLOSE => {
                    send(&client.tx, ws::OP_CLOSE, payload.get(..2).unwrap_or(&[]));
                    return Ok(());
                }
                ws::OP_PING => send(&client.tx, ws::OP_PONG, &payload),
                ws::OP_TEXT => on_text(&payload, client, state),
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

fn on_text(payload: &[u8], client: &mut Client, state: &State) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        send_json(
            &client.tx,
            &json!({"type":"error","code":"invalid_json","message":"bad json"}),
        );
        return;
    };
    match v.get("type").and_then(|t| t.as_str()).unwrap_or("") {
        "join" => join(&v, client, state),
        "leave" => leave(client, state),
        "message" | "chat" => chat(&v, client, state),
        "ping" => send_json(&client.tx, &json!({"type":"pong"})),
        _ => {}
    }
}

fn join(v: &Value, client: &mut Client, state: &State) {
    let room = v
        .get("room")
        .and_then(|r| r.as_str())
        .unwrap_or("")
        .to_string();
    if let Some(u) = v.get("username").and_then(|u| u.as_str()) {
        client.username = u.to_string();
    }
    let mut rooms = state.rooms.borrow_mut();
    let r = rooms.entry(room.clone()).or_insert_with(|| Room {
        seq: 0,
        members: HashMap::new(),
    });
    r.members.insert(client.id, client.tx.clone());
    send_json(
        &client.tx,
        &json!({"type":"joined","clientId":format!("f-{}", client.id),
        "room":room,"epoch":"fake","seq":r.seq,"count":r.members.len()}),
    );
    client.room = Some(room);
}

fn leave(client: &mut Client, state: &State) {
    if let Some(room) = client.room.take() {
        if let Some(r) = state.rooms.borrow_mut().get_mut(&room) {
            r.members.remove(&client.id);
        }
        send_json(&client.tx, &json!({"type":"left","room":room}));
    }
}

/// Stamps the next room `seq` on a chat message and queues it to every member, the sender
/// included.
fn chat(v: &Value, client: &Client, state: &State) {
    let text = v.get("text").and_then(|t| t.as_str()).unwrap_or("");
    let Some(room) = client.room.clone() else {
        send_json(
            &client.tx,
            &json!({"type":"error","code":"not_joined","message":"join a room first"}),
        );
        return;
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
        return;
    };
    r.seq += 1;
    let body = json!({"type":"message","id":format!("f-m{n}"),"seq":r.seq,
        "room":room,"userId":format!("f-{}", client.id),"username":client.username,"text":text,
        "timestamp":now_ns() / 1_000_000});
    let mut f = Vec::new();
    ws::put_server_frame(&mut f, ws::OP_TEXT, body.to_string().as_bytes());
    let f = Rc::new(f);
    for m in r.members.values() {
        let _ = m.send(Rc::clone(&f));
    }
}

fn send(tx: &mpsc::UnboundedSender<Frame>, opcode: u8, payload: &[u8]) {
    let mut f = Vec::new();
    ws::put_server_frame(&mut f, opcode, payload);
    let _ = tx.send(Rc::new(f));
}

fn send_json(tx: &mpsc::UnboundedSender<Frame>, v: &Value) {
    send(tx, ws::OP_TEXT, v.to_string().as_bytes());
}
