//! The binary's command line: refusals and help.

use std::process::Command;

/// The guard refuses a remote target without `--allow-remote`, from the URL alone: these
/// never resolve a name or open a socket (192.0.2.0/24 is TEST-NET-1, `.invalid` never
/// resolves; the refusal comes before either would be tried). No test passes --allow-remote
/// with a non-loopback target.
#[test]
fn refuses_non_loopback_targets_without_allow_remote() {
    for url in [
        "ws://192.0.2.1/ws",
        "wss://192.0.2.1:8443/ws",
        "wss://no-such-host.invalid/ws",
    ] {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--url", url, "--clients", "1", "--no-progress"])
            .env_remove("LOADGEN_ALLOW_REMOTE")
            .output()
            .expect("spawn");
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a loopback address"), "{url}: {err}");
        assert!(err.contains("--allow-remote"), "{url}: {err}");
        assert!(
            !err.contains("resolving"),
            "{url}: no lookup happened: {err}"
        );
        // Refused at once: no connect (or its timeout) was attempted.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{url}"
        );
    }
}

#[test]
fn secrets_stay_out_of_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .env("LOADGEN_JWT_SECRET", "very-secret-value-0123456789abcdef")
        .env("LOADGEN_TOKEN", "token-value-xyz")
        .output()
        .expect("spawn");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("LOADGEN_JWT_SECRET"), "{help}");
    assert!(!help.contains("very-secret-value"), "{help}");
    assert!(!help.contains("token-value-xyz"), "{help}");
}

#[test]
fn help_names_every_env_var() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("--help")
        .output()
        .expect("spawn");
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "LOADGEN_URL",
        "LOADGEN_CLIENTS",
        "LOADGEN_RATE",
        "LOADGEN_SCENARIO",
        "LOADGEN_SERVER_PID",
        "LOADGEN_SOURCE_IPS",
        "LOADGEN_ALLOW_REMOTE",
        "LOADGEN_CA_FILE",
        "LOADGEN_INSECURE",
        "LOADGEN_TOKEN",
        "LOADGEN_TOKEN_FILE",
        "LOADGEN_JWT_SECRET",
        "LOADGEN_JWT_PRIVATE_KEY",
        "LOADGEN_JWT_ALG",
        "LOADGEN_JWT_CLAIMS",
        "LOADGEN_TOKEN_IN",
        "LOADGEN_ORIGIN",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
    assert!(
        !help.contains("--worker "),
        "the internal flag stays hidden"
    );
}

#[test]
fn connection_refused_is_reported_not_fatal() {
    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let json = std::env::temp_dir().join(format!("loadgen-refused-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--url",
            &format!("ws://127.0.0.1:{port}/ws"),
            "--clients",
            "20",
            "--duration",
            "100ms",
        ])
        .args(["--drain", "0s", "--no-progress", "--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parse");
    assert_eq!(v["connect"]["failed"]["refused"], 20, "{v}");
    assert_eq!(v["connect"]["joined"], 0);
    let _ = std::fs::remove_file(json);
}
