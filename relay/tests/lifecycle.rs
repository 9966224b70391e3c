//! Connection lifecycle through real sockets: heartbeats, the handshake deadline, slow
//! consumers, graceful shutdown.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::raw::{self, RawClient};
use support::tls::Transport;
use support::TestRelay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

crate::over_both_transports! {
    a_client_that_never_answers_pings_is_closed_with_4001,
    a_client_that_pauses_reading_gets_everything_in_order_when_it_resumes,
    a_client_that_stops_reading_is_closed_with_4008_and_nobody_else_waits,
    shutdown_sends_1001_to_everyone_and_returns,
}

async fn a_client_that_never_answers_pings_is_closed_with_4001(transport: Transport) {
    let relay = TestRelay::over(transport, |c| c.ping_interval = Duration::from_millis(100)).await;
    let mut silent = RawClient::over(&relay, None).await;
    // A tungstenite client answers pings whenever it reads, so it keeps reading meanwhile
    // and must survive the same intervals.
    let (mut alive, _) = relay.joined("hb", "alive").await;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let silent_side = async {
        let mut pings = 0;
        let code = loop {
            let frame = silent
                .read_frame()
                .await
                .expect("a close frame before the end of stream");
            match frame.opcode {
                raw::PING => pings += 1,
                raw::CLOSE => break frame.close_code(),
                other => panic!("unexpected opcode {other}"),
            }
        };
        let _ = done_tx.send(());
        (code, pings)
    };
    let alive_side = async {
        tokio::select! {
            _ = &mut done_rx => {}
            event = alive.recv() => panic!("nothing expected, got {event}"),
        }
    };
    let ((code, pings), ()) = tokio::join!(silent_side, alive_side);
    assert_eq!(code, Some(4001));
    assert_eq!(
        pings, 1,
        "closed at the first ping after the unanswered one"
    );
    assert_eq!(
        relay.relay.stats().heartbeat_closes,
        1,
        "only the silent client"
    );
    // Several intervals have passed; the answering client is still served.
    alive
        .send(json!({"type":"message","text":"still here"}))
        .await;
    assert_eq!(alive.recv_type("message").await["text"], "still here");
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_upgrade_is_dropped() {
    let relay = TestRelay::with(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut slowloris = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let started = Instant::now();
    slowloris
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), slowloris.read(&mut buf))
        .await
        .expect("the relay drops the connection by itself")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

async fn a_client_that_pauses_reading_gets_everything_in_order_when_it_resumes(
    transport: Transport,
) {
    // 6 MB: more than the kernel's socket buffers hold on loopback (they grow to 4 MB), less
    // than this test's slow-consumer cap. The relay's writes to `paused` must block, so its
    // connection task takes over from the flusher and finishes the queue once it drains.
    const MESSAGES: u64 = 4000;
    let relay = TestRelay::over(transport, |c| c.max_outbound_bytes = 64 << 20).await;
    let (mut sender, _) = relay.joined("pause", "sender").await;
    let mut paused = RawClient::over(&relay, Some(4096)).await;
    paused.send_join("pause", "paused").await;
    sender.recv_until("user_joined").await;
    let text = "y".repeat(1500);
    for _ in 0..MESSAGES {
        sender.send(json!({"type":"message","text":text})).await;
    }
    // Our own echoes: every message has been fanned out (and queued for `paused`).
    for _ in 0..MESSAGES {
        sender.recv_until("message").await;
    }
    let written_before = relay.relay.stats().bytes_out;

    let mut next_seq = 1;
    while next_seq <= MESSAGES {
        let frame = paused.read_frame().await.expect("the stream ended early");
        let event: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        if event["type"] == "message" {
            assert_eq!(event["seq"], next_seq, "messages arrive once, in order");
            next_seq += 1;
        }
    }
    let written_after = relay.relay.stats().bytes_out;
    assert!(
        written_after - written_before > 100_000,
        "most of the burst was written after the client resumed reading \
         ({written_before} bytes before, {written_after} after)"
    );
    assert_eq!(relay.relay.stats().slow_consumer_closes, 0);
}

#[tokio::test]
async fn a_client_that_sends_without_reading_meets_backpressure_not_a_close() {
    // Pings without reading the pongs: the relay must stop reading once its queue for this
    // client is a quarter full, so the client's own writes stall, instead of reading on and
    // closing it as a slow consumer when the pongs pass the cap.
    const CAP: usize = 256 * 1024;
    let relay = TestRelay::with(|c| c.max_outbound_bytes = CAP).await;
    let client = RawClient::connect(relay.addr, Some(4096)).await;
    let (mut read, mut write) = client.stream.into_split();
    let ping = raw::frame(true, raw::PING, &[7; 125]);
    let batch: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 64).collect();

    // Write until the socket would block: the relay stopped reading.
    let mut sent = 0usize;
    let mut unsent: &[u8] = &[];
    loop {
        write.writable().await.unwrap();
        match write.try_write(&batch) {
            Ok(n) => {
                sent += n;
                if n < batch.len() {
                    unsent = &batch[n..];
                    break;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(err) => panic!("write failed: {err}"),
        }
        assert!(sent < 64 << 20, "the relay never pushed back");
    }
    let tail = unsent.to_vec();
    let pings = (sent + tail.len()) / ping.len();
    let writer = tokio::spawn(async move {
        write.write_all(&tail).await.unwrap();
        write
    });

    // Now read: every ping gets its pong (127 bytes each), and the connection stays open.
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while received < pings * 127 {
        let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf))
            .await
            .expect("pongs keep coming")
            .unwrap();
        assert!(n > 0, "the relay closed the connection");
        received += n;
    }
    assert_eq!(received, pings * 127, "one pong per ping, nothing else");
    writer.await.unwrap();
    assert_eq!(relay.relay.stats().slow_consumer_closes, 0);
}

async fn a_client_that_stops_reading_is_closed_with_4008_and_nobody_else_waits(
    transport: Transport,
) {
    const CAP: usize = 64 * 1024;
    let relay = TestRelay::over(transport, |c| c.max_outbound_bytes = CAP).await;
    let (mut sender, _) = relay.joined("busy", "sender").await;
    let (mut watcher, _) = relay.joined("busy", "watcher").await;
    // Joins and then never reads again; a small receive buffer fills up quickly.
    let mut slow = RawClient::over(&relay, Some(4096)).await;
    slow.send_join("busy", "slow").await;
    sender.recv_until("user_joined").await;
    sender.recv_until("user_joined").await;
    watcher.recv_until("user_joined").await;

    let text = "x".repeat(1500);
    let mut sent = 0;
    while relay.relay.stats().slow_consumer_closes == 0 {
        assert!(sent < 20_000, "the slow client was never cut off");
        for _ in 0..20 {
            sender.send(json!({"type":"message","text":text})).await;
        }
        // Wait for our own echoes: the relay has fanned each one out before we check.
        for _ in 0..20 {
            sender.recv_until("message").await;
        }
        sent += 20;
    }
    // The well-behaved members got every message, in order.
    for seq in 1..=sent {
        let m = watcher.recv_until("message").await;
        assert_eq!(m["seq"], seq);
    }
    // The slow client, once it reads again, finds what fit in its buffers, then the close.
    let (code, received) = slow.read_until_close().await;
    assert_eq!(code, Some(4008));
    assert!(
        received < sent as usize + 2,
        "it did not get everything: {received} of {sent}"
    );
    assert_eq!(relay.relay.stats().slow_consumer_closes, 1);
    // Memory stayed bounded: the relay never queued more than the cap for it.
    sender.send(json!({"type":"message","text":"after"})).await;
    assert_eq!(watcher.recv_until("message").await["text"], "after");
}

async fn shutdown_sends_1001_to_everyone_and_returns(transport: Transport) {
    let relay = TestRelay::over(transport, |c| c.shutdown_timeout = Duration::from_secs(5)).await;
    let (mut a, _) = relay.joined("bye", "a").await;
    let (mut b, _) = relay.joined("bye", "b").await;
    let (mut c, _) = relay.joined("elsewhere", "c").await;
    a.recv_type("user_joined").await;
    let addr = relay.addr;
    let started = Instant::now();
    let (result, codes) = tokio::join!(relay.shutdown(), async {
        (
            a.expect_close().await,
            b.expect_close().await,
            c.expect_close().await,
        )
    });
    result.expect("serve returns Ok");
    assert_eq!(codes, (1001, 1001, 1001));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drained before the timeout"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
