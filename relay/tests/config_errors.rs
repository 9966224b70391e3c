//! The `relay` binary refuses a bad configuration before it listens: status 2 and one line
//! that names the flag, never a panic or a backtrace after "relay listening".

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use support::durable::refused as refuse;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

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
        (&["--store-queue", "0"], "--store-queue"),
        (&["--fsync-interval", "0s"], "--fsync-interval"),
        (&["--retain-interval", "0s"], "--retain-interval"),
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
        (&["--memory", "--data-dir", "/tmp/x"], "--memory"),
        (&["--fsync", "sometimes"], "--fsync"),
        (&["--retain-age", "30 weeks"], "--retain-age"),
    ];
    for (args, flag) in cases {
        let (code, output) = refuse(args).await;
        assert_eq!(code, Some(2), "relay {args:?}: {output}");
        assert!(output.contains(flag), "relay {args:?}: {output}");
        assert!(!output.contains("panicked"), "relay {args:?}: {output}");
    }
}
