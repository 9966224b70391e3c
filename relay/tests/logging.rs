//! The `relay` binary's logs: with `--log-format json` every line is one JSON object with
//! the structured fields flattened in; connections are logged at debug with the peer, the
//! close code and reason; nothing is logged per message.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::process::Stdio;

use serde_json::{json, Map, Value};
use support::Client;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

struct Logs {
    lines: Lines<BufReader<ChildStderr>>,
    seen: Vec<Map<String, Value>>,
}

impl Logs {
    /// The next log line, which must be a JSON object.
    async fn next(&mut self) -> Option<Map<String, Value>> {
        let line = tokio::time::timeout(support::EVENT_TIMEOUT, self.lines.next_line())
            .await
            .expect("a log line in time")
            .unwrap()?;
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not one JSON object per line ({err}): {line:?}"));
        let object = value.as_object().cloned().expect("a JSON object");
        for key in ["timestamp", "level", "message", "target"] {
            assert!(object.contains_key(key), "{key} missing in {line}");
        }
        self.seen.push(object.clone());
        Some(object)
    }

    /// Reads until a line whose message is `message`.
    async fn until(&mut self, message: &str) -> Map<String, Value> {
        loop {
            let line = self.next().await.expect("the log goes on");
            if line["message"] == message {
                return line;
            }
        }
    }
}

fn start() -> (Child, Logs) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        // Messages in a burst: the rate limit is not under test here.
        .args(["--message-rate", "0", "--memory"])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = Logs {
        lines: BufReader::new(stderr).lines(),
        seen: Vec::new(),
    };
    (child, logs)
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_connection_fields() {
    let (child, mut logs) = start();
    let listening = logs.until("relay listening (single node, in memory)").await;
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["admin"], "off");
    let addr = listening["listen"].as_str().unwrap().to_owned();

    let mut client = Client::connect(&format!("ws://{addr}/ws")).await;
    let open = logs.until("connection open").await;
    assert_eq!(open["level"], "DEBUG");
    let peer = open["peer"].as_str().unwrap().to_owned();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    let client_id = open["client"].as_str().unwrap().to_owned();

    const MESSAGES: usize = 25;
    client
        .send(json!({"type":"join","room":"logs","username":"alice"}))
        .await;
    client.recv_type("joined").await;
    for n in 0..MESSAGES {
        client
            .send(json!({"type":"message","text":format!("m{n}")}))
            .await;
    }
    for _ in 0..MESSAGES {
        client.recv_type("message").await;
    }
    client
        .send_message(tokio_tungstenite::tungstenite::Message::Close(None))
        .await;
    assert_eq!(client.expect_close().await, 1000);
    let closed = logs.until("connection closed").await;
    assert_eq!(closed["level"], "DEBUG");
    assert_eq!(closed["peer"], peer.as_str());
    assert_eq!(closed["client"], client_id.as_str());
    assert_eq!(closed["code"], 1000, "{closed:?}");
    assert_eq!(closed["client_closed_first"], true);
    assert!(closed.contains_key("reason") && closed.contains_key("outcome"));

    // SIGTERM (through kill(1): the tests use no unsafe code), then read to the end.
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    while logs.next().await.is_some() {}

    // Nothing per message at any level: the whole run logged a handful of lines.
    let messages: Vec<&str> = logs
        .seen
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(messages.len() < MESSAGES, "{messages:#?}");
    let info: Vec<&str> = logs
        .seen
        .iter()
        .filter(|l| l["level"] != "DEBUG" && l["level"] != "TRACE")
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        info,
        [
            "relay listening (single node, in memory)",
            "SIGTERM received",
            "shutting down: closing every connection with 1001",
            "all connections closed",
            "relay stopped"
        ]
    );
}
