//! The per-connection frame budget and the per-address and per-node room and message budgets,
//! through real sockets (docs/SECURITY.md, "Chat").

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::raw::{self, RawClient};
use support::TestRelay;

#[tokio::test]
async fn a_frame_flood_is_paused_until_its_budget_refills() {
    // 100 frames a second, 10 of burst: 210 pings in one write leave a debt of 200 frames,
    // two seconds of not being read.
    let relay = TestRelay::with(|c| {
        c.frame_rate = 100.0;
        c.frame_burst = 10;
    })
    .await;
    let mut client = RawClient::connect(relay.addr, None).await;
    let mut flood = Vec::new();
    for _ in 0..210 {
        flood.extend_from_slice(&raw::frame(true, 0x9, b""));
    }
    client.send_raw(&flood).await;
    let sent = Instant::now();
    client
        .send_raw(&raw::frame(
            true,
            0x1,
            json!({"type":"ping"}).to_string().as_bytes(),
        ))
        .await;
    loop {
        let frame = client.read_frame().await.expect("open");
        if frame.opcode == 0x1 {
            let event: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
            assert_eq!(event["type"], "pong");
            break;
        }
    }
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "the command after the flood is read only once the debt is paid ({:?})",
        sent.elapsed()
    );
    assert!(
        relay.relay.stats().frame_pauses >= 1,
        "the pause is counted"
    );
}

#[tokio::test]
async fn one_address_gets_room_limit_past_its_rooms_and_reconnecting_does_not_refill_messages() {
    let relay = TestRelay::with(|c| {
        c.ip_rooms = 2;
        c.ip_message_rate = 0.5;
        c.ip_message_burst = 3;
    })
    .await;
    let mut client = relay.client().await;
    for room in ["a", "b"] {
        client.send(json!({"type":"join","room":room})).await;
        client.recv_type("joined").await;
    }
    client.send(json!({"type":"join","room":"c"})).await;
    client.expect_error("room_limit").await;

    // Three messages of burst for the address, whichever connection sends them.
    for i in 0..3 {
        client
            .send(json!({"type":"message","room":"a","text":format!("m{i}")}))
            .await;
        client.recv_type("message").await;
    }
    drop(client);
    let mut again = relay.client().await;
    again.send(json!({"type":"join","room":"a"})).await;
    again.recv_type("joined").await;
    again
        .send(json!({"type":"message","text":"one more"}))
        .await;
    again.expect_error("rate_limited").await;
}

#[tokio::test]
async fn joined_history_is_bounded_in_bytes_and_says_so() {
    let relay = TestRelay::with(|c| {
        c.joined_history_bytes = 20 * 1024;
        c.message_rate = 0.0;
        c.ip_message_rate = 0.0;
    })
    .await;
    let (mut writer, _) = relay.joined("big", "w").await;
    let text = "\u{1}".repeat(2000); // 12 KB escaped
    for _ in 0..5 {
        writer.send(json!({"type":"message","text":text})).await;
        writer.recv_type("message").await;
    }
    let (_, joined) = relay.joined("big", "reader").await;
    let history = joined["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "one 12 KB message fits in 20 KiB");
    assert_eq!(history[0]["seq"], 5, "the newest is kept");
    assert_eq!(joined["historyTruncated"], true);

    // Small history stays one frame and says nothing.
    let (_, small) = relay.joined("small", "x").await;
    assert!(small.get("historyTruncated").is_none());
}

#[tokio::test]
async fn joining_many_full_rooms_in_one_write_truncates_history_instead_of_closing() {
    // A 256 KiB outbound cap makes each `joined` carry up to 64 KiB of history; eight of them
    // queued by one read would be 512 KiB, twice the cap, before the flusher writes any.
    let relay = TestRelay::with(|c| {
        c.max_outbound_bytes = 256 * 1024;
        c.message_rate = 0.0;
        c.ip_message_rate = 0.0;
    })
    .await;
    const ROOMS: usize = 8;
    let text = "\u{1}".repeat(2000); // 12 KB escaped: six of them are over 64 KiB
    for r in 0..ROOMS {
        let (mut writer, _) = relay.joined(&format!("full-{r}"), "w").await;
        for _ in 0..6 {
            writer.send(json!({"type":"message","text":text})).await;
            writer.recv_type("message").await;
        }
    }

    let mut client = RawClient::connect(relay.addr, None).await;
    let mut joins = Vec::new();
    for r in 0..ROOMS {
        let join = json!({"type":"join","room":format!("full-{r}"),"username":"back"});
        joins.extend_from_slice(&raw::frame(true, raw::TEXT, join.to_string().as_bytes()));
    }
    client.send_raw(&joins).await;

    let mut message = Vec::new();
    let mut joined = Vec::new();
    while joined.len() < ROOMS {
        let frame = client.read_frame().await.expect("not closed");
        assert_ne!(
            frame.opcode,
            raw::CLOSE,
            "closed with {:?}",
            frame.close_code()
        );
        message.extend_from_slice(&frame.payload);
        if frame.fin {
            let event: serde_json::Value = serde_json::from_slice(&message).expect("JSON");
            message.clear();
            if event["type"] == "joined" {
                joined.push(event);
            }
        }
    }
    let history = |e: &serde_json::Value| e["history"].as_array().map_or(0, Vec::len);
    assert!(history(&joined[0]) >= 4, "the first join gets its history");
    let last = &joined[ROOMS - 1];
    assert_eq!(
        last["historyTruncated"],
        true,
        "a later one is cut: {}",
        history(last)
    );
    assert!(history(last) < history(&joined[0]));
}

#[tokio::test]
async fn a_binary_flood_earns_rate_limited_then_4029_not_a_reply_per_frame() {
    // Default per-connection limits: 30 commands of burst, 20 strikes before 4029.
    let relay = TestRelay::with_limits(|c| c.frame_rate = 0.0).await;
    let mut client = RawClient::connect(relay.addr, None).await;
    let mut flood = Vec::new();
    for _ in 0..5_000 {
        flood.extend_from_slice(&raw::frame(true, raw::BINARY, b"x"));
    }
    client.send_raw(&flood).await;
    let mut errors = Vec::new();
    let code = loop {
        let frame = client
            .read_frame()
            .await
            .expect("closed with a close frame");
        match frame.opcode {
            raw::CLOSE => break frame.close_code(),
            raw::TEXT => {
                let event: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                errors.push(event["code"].as_str().unwrap_or("?").to_owned());
            }
            _ => {}
        }
    };
    assert_eq!(code, Some(4029), "a flood that keeps going is closed");
    let refused = errors
        .iter()
        .filter(|c| *c == "binary_not_supported")
        .count();
    assert_eq!(refused, 30, "the command burst is answered: {errors:?}");
    assert!(
        errors.len() < 60,
        "then a few `rate_limited`, not one reply per frame: {}",
        errors.len()
    );
}
