//! Bad input: every error code keeps the connection open; every close code is what
//! `docs/PROTOCOL.md` says.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use serde_json::json;
use support::raw::{self, RawClient};
use support::tls::Transport;
use support::TestRelay;
use tokio_tungstenite::tungstenite::Message;

crate::over_both_transports! {
    a_message_over_the_payload_limit_closes_with_1009,
    a_fragmented_message_over_the_limit_closes_with_1009,
    a_fragmented_message_under_the_limit_is_reassembled,
    invalid_utf8_closes_with_1007,
    unmasked_frames_close_with_1002,
    a_client_close_is_answered_with_the_same_code,
}

#[tokio::test]
async fn every_error_code_and_the_connection_stays_open() {
    let relay = TestRelay::with(|c| c.max_rooms_per_connection = 2).await;
    let mut c = relay.client().await;

    c.send_text("this is not json").await;
    c.expect_error("invalid_json").await;
    c.send_text("[1,2,3]").await;
    c.expect_error("invalid_json").await;
    c.send(json!({"room":"x"})).await;
    c.expect_error("missing_field").await;
    c.send(json!({"type":"shout"})).await;
    c.expect_error("unknown_type").await;
    c.send(json!({"type":"message","text":"before join"})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"type":"typing"})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"type":"leave"})).await;
    c.expect_error("not_joined").await;
    c.send(json!({"type":"join"})).await;
    c.expect_error("missing_field").await;
    for bad_room in [String::new(), "x".repeat(65), "line\nbreak".into()] {
        c.send(json!({"type":"join","room":bad_room,"username":"alice"}))
            .await;
        c.expect_error("invalid_room").await;
    }
    for bad_name in [String::new(), "é".repeat(65), "bell\u{7}".into()] {
        c.send(json!({"type":"join","room":"ok","username":bad_name}))
            .await;
        c.expect_error("invalid_username").await;
    }
    c.send(json!({"type":"join","room":"one","username":"alice"}))
        .await;
    c.recv_type("joined").await;
    c.send(json!({"type":"join","room":"two"})).await;
    c.recv_type("joined").await;
    c.send(json!({"type":"join","room":"three"})).await;
    c.expect_error("too_many_rooms").await;
    c.send(json!({"type":"message"})).await;
    c.expect_error("missing_field").await;
    c.send(json!({"type":"message","text":""})).await;
    c.expect_error("empty_text").await;
    c.send(json!({"type":"message","text":"a".repeat(2001)}))
        .await;
    c.expect_error("text_too_long").await;
    // The limit counts characters, not bytes: 2,000 four-byte characters are fine.
    c.send(json!({"type":"message","text":"🎉".repeat(2000)}))
        .await;
    assert_eq!(
        c.recv_type("message").await["text"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        2000
    );
    c.send_message(Message::binary(vec![1u8, 2, 3])).await;
    c.expect_error("binary_not_supported").await;
    assert!(relay.relay.stats().errors_sent >= 17);
}

/// What every name error says (docs/PROTOCOL.md, error codes).
const ROOM_RULE: &str = "room must be 1-64 characters without control or format characters";
const USERNAME_RULE: &str = "username must be 1-64 characters without control or format characters";

#[tokio::test]
async fn names_with_bidi_overrides_or_zero_width_characters_are_refused() {
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    for bad in [
        // "admin" + RIGHT-TO-LEFT OVERRIDE: the rest of a line renders reversed.
        "admin\u{202E}gnp.exe",
        "zero\u{200B}width",
        "join\u{200D}er",
        "\u{FEFF}bom",
        "soft\u{AD}hyphen",
        "iso\u{2066}late\u{2069}",
        "mark\u{200F}",
    ] {
        c.send(json!({"type":"join","room":bad,"username":"alice"}))
            .await;
        let error = c.expect_error("invalid_room").await;
        assert_eq!(error["message"], ROOM_RULE, "{bad:?}");
        c.send(json!({"type":"join","room":"ok","username":bad}))
            .await;
        let error = c.expect_error("invalid_username").await;
        assert_eq!(error["message"], USERNAME_RULE, "{bad:?}");
    }
    // Nothing was created or joined on the way.
    c.send(json!({"type":"message","text":"hi"})).await;
    c.expect_error("not_joined").await;
    assert!(relay.relay.hub().rooms().is_empty());
}

#[tokio::test]
async fn nfc_and_nfd_names_are_one_room_and_one_name() {
    let relay = TestRelay::start().await;
    // "café" and "Renée" precomposed (NFC) for one client, decomposed (NFD) for the other.
    let (mut composed, joined) = relay.joined("caf\u{e9}", "Ren\u{e9}e").await;
    assert_eq!(joined["room"], "caf\u{e9}");
    let first = joined["clientId"].clone();
    let (mut decomposed, joined) = relay.joined("cafe\u{301}", "Rene\u{301}e").await;
    assert_eq!(joined["room"], "caf\u{e9}", "joined shows the NFC name");
    // The same room, and the same name: one person (without authentication the name is the
    // person, docs/PROTOCOL.md "Presence"), listed as the first connection.
    assert_eq!(joined["count"], 1, "the same room and person: {joined}");
    assert_eq!(joined["users"][0]["id"], first, "{joined}");
    assert_eq!(joined["users"][0]["username"], "Ren\u{e9}e");

    // The room may be named in either form in later commands.
    decomposed
        .send(json!({"type":"message","room":"cafe\u{301}","text":"bonjour"}))
        .await;
    for client in [&mut composed, &mut decomposed] {
        let message = client.recv_type("message").await;
        assert_eq!(message["text"], "bonjour");
        assert_eq!(message["room"], "caf\u{e9}");
        assert_eq!(message["username"], "Ren\u{e9}e");
    }
    composed
        .send(json!({"type":"message","room":"caf\u{e9}","text":"salut"}))
        .await;
    assert_eq!(decomposed.recv_type("message").await["text"], "salut");
    assert_eq!(
        relay.relay.hub().rooms().len(),
        1,
        "one room, not one per form"
    );
}

#[tokio::test]
async fn name_length_is_counted_after_normalization() {
    let relay = TestRelay::start().await;
    let mut c = relay.client().await;
    // 64 "é" decomposed: 128 code points, 64 characters once composed.
    let room = "e\u{301}".repeat(64);
    c.send(json!({"type":"join","room":room,"username":"e\u{301}".repeat(64)}))
        .await;
    let joined = c.recv_type("joined").await;
    assert_eq!(joined["room"], "\u{e9}".repeat(64));
    c.send(json!({"type":"join","room":"e\u{301}".repeat(65),"username":"alice"}))
        .await;
    c.expect_error("invalid_room").await;
}

async fn a_message_over_the_payload_limit_closes_with_1009(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut client = RawClient::over(&relay, None).await;
    client
        .send_frame(true, raw::TEXT, &vec![b'a'; 70 * 1024])
        .await;
    assert_eq!(client.read_until_close().await, (Some(1009), 0));
}

async fn a_fragmented_message_over_the_limit_closes_with_1009(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut client = RawClient::over(&relay, None).await;
    // 20 fragments of 4 KiB: each passes a per-frame check, together they are 80 KiB.
    client.send_frame(false, raw::TEXT, &[b'a'; 4096]).await;
    for _ in 0..18 {
        client
            .send_frame(false, raw::CONTINUATION, &[b'a'; 4096])
            .await;
    }
    client
        .send_frame(true, raw::CONTINUATION, &[b'a'; 4096])
        .await;
    assert_eq!(client.read_until_close().await, (Some(1009), 0));
}

async fn a_fragmented_message_under_the_limit_is_reassembled(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut client = RawClient::over(&relay, None).await;
    let join = br#"{"type":"join","room":"frag","username":"alice"}"#;
    for (i, piece) in join.chunks(7).enumerate() {
        let opcode = if i == 0 { raw::TEXT } else { raw::CONTINUATION };
        let last = (i + 1) * 7 >= join.len();
        client.send_frame(last, opcode, piece).await;
        if !last {
            // A ping between fragments is allowed and answered.
            client.send_frame(true, raw::PING, b"hi").await;
        }
    }
    let mut saw_pong = false;
    loop {
        let frame = client.read_frame().await.unwrap();
        if frame.opcode == 0xA {
            saw_pong = true;
            assert_eq!(frame.payload, b"hi");
            continue;
        }
        let event: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        assert_eq!(event["type"], "joined");
        break;
    }
    assert!(saw_pong);
}

async fn invalid_utf8_closes_with_1007(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut client = RawClient::over(&relay, None).await;
    client
        .send_frame(true, raw::TEXT, &[b'{', 0xC3, 0x28, b'}'])
        .await;
    assert_eq!(client.read_until_close().await, (Some(1007), 0));
}

async fn unmasked_frames_close_with_1002(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut client = RawClient::over(&relay, None).await;
    client.send_raw(&[0x81, 0x02, b'{', b'}']).await;
    assert_eq!(client.read_until_close().await, (Some(1002), 0));
}

#[tokio::test]
async fn bad_input_on_one_connection_costs_the_others_nothing() {
    let relay = TestRelay::start().await;
    let (mut alice, _) = relay.joined("calm", "alice").await;
    let mut hostile = RawClient::connect(relay.addr, None).await;
    hostile
        .send_frame(true, raw::TEXT, &vec![b'a'; 70 * 1024])
        .await;
    assert_eq!(hostile.read_until_close().await.0, Some(1009));
    alice
        .send(json!({"type":"message","text":"still fine"}))
        .await;
    assert_eq!(alice.recv_type("message").await["text"], "still fine");
    assert_eq!(relay.relay.stats().protocol_closes, 1);
}

async fn a_client_close_is_answered_with_the_same_code(transport: Transport) {
    let relay = TestRelay::over(transport, |_| {}).await;
    let mut client = RawClient::over(&relay, None).await;
    client
        .send_frame(true, raw::CLOSE, &[0x0F, 0xA0, b'b', b'y', b'e'])
        .await; // 4000
    assert_eq!(client.read_until_close().await, (Some(4000), 0));
    assert!(
        client.read_frame().await.is_none(),
        "then the server closes the TCP connection"
    );
}

/// RFC 6455 section 7.4: a close carrying a code a peer may not send fails the connection
/// with 1002; it is not echoed, nor answered 1000. Autobahn's case 7.9 sends these codes.
#[tokio::test]
async fn a_close_with_an_invalid_code_is_failed_with_1002() {
    let relay = TestRelay::start().await;
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ] {
        let mut client = RawClient::connect(relay.addr, None).await;
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        client.send_frame(true, raw::CLOSE, &payload).await;
        assert_eq!(
            client.read_until_close().await,
            (Some(1002), 0),
            "close code {code}"
        );
        assert!(
            client.read_frame().await.is_none(),
            "then the server closes the TCP connection (code {code})"
        );
    }
    assert_eq!(relay.relay.stats().protocol_closes, 11);
}

#[tokio::test]
async fn valid_close_codes_are_echoed() {
    let relay = TestRelay::start().await;
    for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
        let mut client = RawClient::connect(relay.addr, None).await;
        client
            .send_frame(true, raw::CLOSE, &code.to_be_bytes())
            .await;
        assert_eq!(
            client.read_until_close().await,
            (Some(code), 0),
            "close code {code}"
        );
    }
    let mut client = RawClient::connect(relay.addr, None).await;
    client.send_frame(true, raw::CLOSE, b"").await;
    assert_eq!(client.read_until_close().await, (Some(1000), 0));
}

#[tokio::test]
async fn a_close_payload_of_one_byte_closes_with_1002() {
    let relay = TestRelay::start().await;
    let mut client = RawClient::connect(relay.addr, None).await;
    client.send_frame(true, raw::CLOSE, &[0x03]).await;
    assert_eq!(client.read_until_close().await, (Some(1002), 0));
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_closes_with_1007() {
    let relay = TestRelay::start().await;
    let mut client = RawClient::connect(relay.addr, None).await;
    // 1000, then "κό" followed by a byte that is never UTF-8 (Autobahn case 7.5.1).
    client
        .send_frame(
            true,
            raw::CLOSE,
            &[0x03, 0xE8, 0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xFF],
        )
        .await;
    assert_eq!(client.read_until_close().await, (Some(1007), 0));
}

/// A fragmented text message is failed at the first fragment that makes it invalid UTF-8,
/// without waiting for a last fragment that may never come (Autobahn case 6.4.1).
#[tokio::test]
async fn a_fragment_that_makes_the_text_invalid_closes_with_1007_at_once() {
    let relay = TestRelay::start().await;
    let mut client = RawClient::connect(relay.addr, None).await;
    client
        .send_frame(false, raw::TEXT, "κόσμε".as_bytes())
        .await;
    client
        .send_frame(false, raw::CONTINUATION, &[0xF4, 0x90, 0x80, 0x80])
        .await;
    assert_eq!(client.read_until_close().await, (Some(1007), 0));
}

/// A 64-bit length whose most significant bit is set is malformed (RFC 6455 section 5.2):
/// 1002, not the 1009 that a merely large length gets.
#[tokio::test]
async fn a_64_bit_length_with_the_top_bit_set_closes_with_1002() {
    let relay = TestRelay::start().await;
    let mut client = RawClient::connect(relay.addr, None).await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    client.send_raw(&header).await;
    assert_eq!(client.read_until_close().await, (Some(1002), 0));
}

#[tokio::test]
async fn http_routes() {
    let relay = TestRelay::start().await;
    let get = |path: &str| {
        let addr = relay.addr;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    let page = get("/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html"),
        "{page}"
    );
    // The page's script and every ES module beside it in relay/static/js/ (each needs its
    // line in routes.rs, or the page breaks in a browser only).
    let static_js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static/js");
    // And the client library the page imports (clients/js/index.js).
    let mut scripts = vec!["/app.js".to_string(), "/js/chatrelay-client.js".to_string()];
    for entry in std::fs::read_dir(static_js).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".js") {
            scripts.push(format!("/js/{name}"));
        }
    }
    assert!(scripts.len() > 1, "{scripts:?}");
    for script in scripts {
        let served = get(&script).await;
        assert!(
            served.starts_with("HTTP/1.1 200") && served.contains("text/javascript"),
            "{script}: {served}"
        );
    }
    assert!(get("/js/nope.js").await.starts_with("HTTP/1.1 404"));
    // An upgrade without a key is refused with 400, not served as a socket.
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
}
