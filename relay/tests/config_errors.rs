//! The `relay` binary refuses a bad configuration before it listens: status 2 and one line
//! that names the flag, never a panic or a backtrace after "relay listening".

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Far more than a refusal takes; a relay that started instead would never exit by itself.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Runs the relay with `args`; returns its exit status and its stderr.
async fn refuse(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        // Never the default ./chatrelay-data of the working directory: every case here is
        // refused before a store opens, and the store's own cases name their directory.
        .env(
            "RELAY_DATA_DIR",
            std::env::temp_dir().join(format!("relay-config-errors-data-{}", std::process::id())),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the relay");
    let out = tokio::time::timeout(EXIT_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("relay {args:?} did not exit: it started"))
        .expect("wait for the relay");
    let mut all = String::from_utf8_lossy(&out.stderr).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), all)
}

#[tokio::test]
async fn every_bad_configuration_exits_2_with_one_line_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("relay-config-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let missing = "/nonexistent/chatrelay/file.pem";

    let cases: &[(&[&str], &str)] = &[
        (&["--auth-secret", "short"], "--auth-secret"),
        (&["--auth-algorithm", "RS256"], "--auth-algorithm"),
        (
            &["--auth-secret", SECRET, "--auth-algorithm", "RS256"],
            "--auth-secret",
        ),
        (
            &["--auth-public-key", missing, "--auth-algorithm", "RS256"],
            "--auth-public-key",
        ),
        (
            &["--auth-public-key", garbage, "--auth-algorithm", "ES256"],
            "--auth-public-key",
        ),
        (&["--tls-cert", missing, "--tls-key", missing], "--tls-cert"),
        (&["--tls-cert", garbage, "--tls-key", garbage], "--tls-cert"),
        (&["--allowed-origin", "not a url"], "--allowed-origin"),
        (&["--max-rooms", "0"], "--max-rooms"),
        (
            &[
                "--history-room-bytes",
                "2000",
                "--history-total-bytes",
                "1000",
            ],
            "--history-room-bytes",
        ),
        (&["--admin-listen", "127.0.0.1:0"], "--admin-listen"),
    ];
    for (args, flag) in cases {
        let (code, output) = refuse(args).await;
        assert_eq!(code, Some(2), "relay {args:?}: {output}");
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "relay {args:?}: one line, got {output:?}");
        assert!(
            lines[0].starts_with("error: "),
            "relay {args:?}: {output:?}"
        );
        assert!(
            lines[0].contains(flag),
            "relay {args:?} names {flag}: {output:?}"
        );
        assert!(!output.contains("panicked"), "relay {args:?}: {output:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn what_clap_refuses_is_status_2_naming_the_flag_too() {
    let cases: &[(&[&str], &str)] = &[
        (&["--trusted-proxy", "10.0.0.0/40"], "--trusted-proxy"),
        (
            &["--auth-secret", SECRET, "--auth-public-key", "key.pem"],
            "--auth-public-key",
        ),
        (&["--history", "many"], "--history"),
        (&["--tls-cert", "cert.pem"], "--tls-key"),
    ];
    for (args, flag) in cases {
        let (code, output) = refuse(args).await;
        assert_eq!(code, Some(2), "relay {args:?}: {output}");
        assert!(output.contains(flag), "relay {args:?}: {output}");
        assert!(!output.contains("panicked"), "relay {args:?}: {output}");
    }
}
