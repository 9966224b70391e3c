//! Blast mode: join, wait for the client's first chat message, then write pre-built message
//! frames (re-stamped in place: seq, send time, counter) straight to the socket.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatrelay_wsclient as ws;
use loadgen::clock::now_ns;
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::take_frames;

/// Frames per pre-built blast chunk (about 64 KiB of relay-shaped message events).
const BLAST_FRAMES: usize = 384;

/// Serves one upgraded connection in blast mode for `d`, counting frames into `counter`.
pub(super) async fn serve(
    stream: TcpStream,
    buf: Vec<u8>,
    d: Duration,
    counter: Arc<AtomicU64>,
) -> io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    if !wait_for_first_message(&mut rd, &mut wr, buf).await? {
        return Ok(());
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
    blast(&mut wr, d, &counter).await;
    let _ = drain.await;
    Ok(())
}

/// Answers the join and waits for the first chat message: `false` if the client closed or
/// hung up before sending one.
async fn wait_for_first_message(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    mut buf: Vec<u8>,
) -> io::Result<bool> {
    let mut joined = false;
    loop {
        let mut started = false;
        for (opcode, payload) in take_frames(&mut buf) {
            if opcode == ws::OP_CLOSE {
                return Ok(false);
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
            return Ok(true);
        }
        let mut chunk = [0u8; 4096];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes re-stamped chunks until `d` is over or the client is gone.
async fn blast(wr: &mut OwnedWriteHalf, d: Duration, counter: &AtomicU64) {
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
