//! The generator against a relay configured like a deployment, all in-process on loopback:
//! wss:// with a test CA (`--ca-file`, no CA, `--insecure`), JWTs minted per client against
//! `--auth-secret` with the relay's default rate limits on, RS256 JWTs from a private key
//! against `--auth-public-key`, and those limits' refusals counted.
//! Nothing here uses `--allow-remote`: every target is 127.0.0.1 or localhost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly"
)]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatrelay_wsclient as ws;
use loadgen::auth::Secret;
use loadgen::Config;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use support::inproc::Relay;

static SERIAL: Mutex<()> = Mutex::new(());

const AUTH_SECRET: &str = "loadgen-test-secret-of-32-bytes!";

/// A CA and a `localhost` leaf signed by it (rustls refuses a self-signed CA as the leaf), as
/// PEM files: the relay's `--tls-cert`/`--tls-key` and the generator's `--ca-file`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "loadgen test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), leaf_cert.pem() + &ca_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_relay(pki: &Pki) -> Relay {
    let mut c = relay::Config::without_limits();
    c.memory = true;
    c.tls_cert = Some(pki.file("cert.pem"));
    c.tls_key = Some(pki.file("key.pem"));
    Relay::start(c)
}

fn small_run(url: String) -> Config {
    Config {
        urls: vec![url],
        clients: 60,
        rooms: 6,
        rate: 300.0,
        duration: Duration::from_millis(1500),
        drain: Duration::from_secs(1),
        connect_rate: 500.0,
        threads: Some(1),
        no_progress: true,
        quiet: true,
        ..Config::default()
    }
}

fn assert_exact(r: &loadgen::Report, clients: u64) {
    let m = &r.messages;
    assert_eq!(
        (r.connect.joined, r.connect.failed.total),
        (clients, 0),
        "{:?}",
        r.connect
    );
    assert!(m.sent > 0 && m.sent == m.due, "{m:?}");
    assert_eq!(m.delivered, m.expected, "{m:?}");
    assert_eq!(
        (m.missing, m.duplicated, m.out_of_order),
        (0, 0, 0),
        "{m:?}"
    );
}

#[test]
fn wss_with_the_ca_file_delivers_everything() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pki = Pki::new("ca");
    let relay = tls_relay(&pki);
    let json = support::temp_path("wss-report.json");
    let mut c = small_run(format!("wss://localhost:{}/ws", relay.addr.port()));
    c.target.ca_file = Some(pki.file("ca.pem"));
    c.json = Some(json.clone());
    let r = loadgen::run(c).expect("run");
    assert_exact(&r, 60);
    assert!(r.target.tls && !r.target.insecure, "{:?}", r.target);
    assert!(r.target.ca_file.is_some());
    let v = support::check_report_file(&json);
    assert_eq!(v["target"]["tls"], true);
    assert_eq!(v["target"]["insecure"], false);
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("TLS verified against"), "{table}");
    assert!(!table.contains("--insecure"), "{table}");
    let _ = std::fs::remove_file(json);
}

#[test]
fn wss_without_the_ca_fails_verification_clearly() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pki = Pki::new("noca");
    let relay = tls_relay(&pki);
    // The system roots do not know the test CA: the preflight handshake stops the run.
    let c = small_run(format!("wss://localhost:{}/ws", relay.addr.port()));
    let err = loadgen::run(c).expect_err("the certificate must not verify");
    let msg = err.to_string();
    assert!(matches!(err, loadgen::Error::Tls(_)), "{err:?}");
    assert!(msg.contains("--ca-file"), "{msg}");
    assert!(
        msg.contains("certificate") || msg.contains("root certificates"),
        "{msg}"
    );
}

#[test]
fn wss_insecure_delivers_and_the_report_says_so() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pki = Pki::new("insecure");
    let relay = tls_relay(&pki);
    let json = support::temp_path("insecure-report.json");
    let mut c = small_run(format!("wss://localhost:{}/ws", relay.addr.port()));
    c.target.insecure = true;
    c.json = Some(json.clone());
    let r = loadgen::run(c).expect("run");
    assert_exact(&r, 60);
    assert!(r.target.insecure, "{:?}", r.target);
    let v = support::check_report_file(&json);
    assert_eq!(v["target"]["insecure"], true);
    let table = loadgen::report::render_table(&r);
    assert!(
        table.contains("WARNING: --insecure: the server's TLS certificate was not verified"),
        "{table}"
    );
    let _ = std::fs::remove_file(json);
}

/// A plain client of its own in `room`, with its own token: collects the `userId` and the
/// generator's sender id (the stamp's second field) of every message it sees until `stop`.
fn observe(
    port: u16,
    room: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, u64)>> {
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "observer", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(AUTH_SECRET.as_bytes()),
    )
    .unwrap();
    observe_with(port, room, stop, token)
}

/// [`observe`] with a token of the caller's.
fn observe_with(
    port: u16,
    room: &str,
    stop: Arc<AtomicBool>,
    token: String,
) -> std::thread::JoinHandle<Vec<(String, u64)>> {
    let join = format!(r#"{{"type":"join","room":"{room}"}}"#);
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let key = ws::client_key(7);
        let path = format!("/ws?token={token}");
        s.write_all(&ws::upgrade_request(
            &format!("127.0.0.1:{port}"),
            &path,
            &key,
        ))
        .unwrap();
        let mut frame = Vec::new();
        ws::put_client_frame(&mut frame, ws::OP_TEXT, [1, 2, 3, 4], join.as_bytes());
        let mut buf = Vec::new();
        let mut upgraded = false;
        let mut seen = Vec::new();
        let mut chunk = [0u8; 16384];
        while !stop.load(Ordering::Relaxed) {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => continue,
            }
            if !upgraded {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                ws::check_upgrade_response(&buf[..end + 4], &key).expect("observer upgraded");
                buf.drain(..end + 4);
                upgraded = true;
                s.write_all(&frame).unwrap();
            }
            while let Ok(Some(h)) = ws::parse_header(&buf) {
                if buf.len() < h.frame_len() {
                    break;
                }
                let v: serde_json::Value =
                    serde_json::from_slice(&buf[h.header_len..h.frame_len()]).unwrap_or_default();
                if v["type"] == "message" {
                    let sender = v["text"]
                        .as_str()
                        .and_then(|t| t.split(':').nth(1))
                        .and_then(|id| id.parse().ok())
                        .expect("a generator stamp");
                    seen.push((v["userId"].as_str().unwrap_or_default().to_string(), sender));
                }
                buf.drain(..h.frame_len());
            }
        }
        seen
    })
}

#[test]
fn jwt_per_client_against_auth_and_default_limits() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The relay's defaults, limits included, plus authentication.
    let relay = Relay::start(relay::Config {
        memory: true,
        auth_secret: Some(relay::config::Secret(AUTH_SECRET.into())),
        ..relay::Config::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let observer = observe(relay.addr.port(), "room-0", Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));

    // Within the defaults: 0.5 messages/s per client (limit 2), 12/s from the address (20),
    // 24 connections at 20/s (burst 40).
    let mut c = small_run(format!("ws://127.0.0.1:{}/ws", relay.addr.port()));
    c.clients = 24;
    c.rooms = 4;
    c.rate = 12.0;
    c.duration = Duration::from_secs(2);
    c.connect_rate = 20.0;
    c.target.jwt_secret = Some(Secret(AUTH_SECRET.into()));
    let r = loadgen::run(c).expect("run");
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().expect("observer");

    assert_exact(&r, 24);
    assert_eq!(r.target.auth, "jwt");
    assert_eq!(r.target.token_in.as_deref(), Some("subprotocol"));
    assert_eq!(
        (r.limits.rate_limited, r.limits.closed_4029),
        (0, 0),
        "{:?}",
        r.limits
    );
    assert!(r.limits.warnings.is_empty(), "{:?}", r.limits.warnings);
    // Every message in room-0 carried its sender's own identity: u{i} from client i's token.
    assert!(!seen.is_empty());
    for (user, sender) in &seen {
        assert_eq!(user, &format!("u{sender}"), "{seen:?}");
    }
    let users: BTreeSet<&str> = seen.iter().map(|(u, _)| u.as_str()).collect();
    let want: BTreeSet<String> = (0..24).step_by(4).map(|i| format!("u{i}")).collect();
    assert_eq!(users, want.iter().map(String::as_str).collect(), "{seen:?}");
}

/// A fixed 2048-bit RSA test key (made with `openssl genrsa 2048`; PKCS#8) and its public
/// half (SPKI): generating one in a debug build takes longer than the test.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn rs256_tokens_minted_per_client_verify_against_the_public_key() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rc = relay::Config::without_limits();
    rc.auth_public_key = Some(fixture("rs256-test-public.pem"));
    rc.auth_algorithm = Some("RS256".into());
    let relay = Relay::start(rc);
    let stop = Arc::new(AtomicBool::new(false));
    let pem = std::fs::read(fixture("rs256-test-key.pem")).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({"sub": "observer", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let observer = observe_with(relay.addr.port(), "room-0", Arc::clone(&stop), token);
    std::thread::sleep(Duration::from_millis(300));

    let mut c = small_run(format!("ws://127.0.0.1:{}/ws", relay.addr.port()));
    c.clients = 30;
    c.target.jwt_private_key = Some(fixture("rs256-test-key.pem"));
    c.target.jwt_alg = Some(loadgen::auth::JwtAlg::RS256);
    let r = loadgen::run(c).expect("run");
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().expect("observer");
    assert_exact(&r, 30);
    assert_eq!(r.target.auth, "jwt");
    assert_eq!(r.target.jwt_alg.as_deref(), Some("RS256"));
    // Each client is who its own token says: `sub` u{i} of client i.
    assert!(!seen.is_empty());
    for (user, sender) in &seen {
        assert_eq!(user, &format!("u{sender}"), "{seen:?}");
    }

    // The relay really verifies: an HS256 token (a secret, not the key) gets 401.
    let mut c = small_run(format!("ws://127.0.0.1:{}/ws", relay.addr.port()));
    c.clients = 3;
    c.duration = Duration::from_millis(200);
    c.drain = Duration::ZERO;
    c.target.jwt_secret = Some(Secret(AUTH_SECRET.into()));
    let r = loadgen::run(c).expect("run");
    assert_eq!(r.connect.failed.handshake, 3, "{:?}", r.connect);
    assert!(
        r.connect.failure_samples.iter().any(|s| s.contains("401")),
        "{:?}",
        r.connect.failure_samples
    );
}

#[test]
fn a_wrong_jwt_secret_is_refused_at_the_upgrade() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rc = relay::Config::without_limits();
    rc.memory = true;
    rc.auth_secret = Some(relay::config::Secret(AUTH_SECRET.into()));
    let relay = Relay::start(rc);
    let mut c = small_run(format!("ws://127.0.0.1:{}/ws", relay.addr.port()));
    c.clients = 5;
    c.duration = Duration::from_millis(200);
    c.drain = Duration::ZERO;
    c.target.jwt_secret = Some(Secret("another-secret-of-at-least-32-bytes".into()));
    c.target.token_in = loadgen::auth::TokenIn::Query;
    let r = loadgen::run(c).expect("run");
    assert_eq!(r.connect.failed.handshake, 5, "{:?}", r.connect);
    assert!(
        r.connect.failure_samples.iter().any(|s| s.contains("401")),
        "{:?}",
        r.connect.failure_samples
    );
}

#[test]
fn rate_limited_and_4029_are_counted() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start(relay::Config {
        memory: true,
        ..relay::Config::default()
    });
    let url = format!("ws://127.0.0.1:{}/ws", relay.addr.port());

    // 2 clients at 10 messages/s each for 2 s: the burst of 10 and 2/s let 14 through each.
    let mut c = small_run(url.clone());
    c.clients = 2;
    c.rooms = 1;
    c.rate = 20.0;
    c.duration = Duration::from_secs(2);
    c.connect_rate = 20.0;
    let json = support::temp_path("limits-report.json");
    c.json = Some(json.clone());
    let r = loadgen::run(c).expect("run");
    assert!(r.limits.rate_limited > 0, "{:?}", r.limits);
    assert_eq!(
        r.server_events.errors.get("rate_limited").copied(),
        Some(r.limits.rate_limited)
    );
    assert!(
        r.limits
            .warnings
            .iter()
            .any(|w| w.contains("--message-rate 2")),
        "{:?}",
        r.limits.warnings
    );
    let v = support::check_report_file(&json);
    assert_eq!(v["limits"]["rate_limited"], r.limits.rate_limited);
    let table = loadgen::report::render_table(&r);
    assert!(table.contains("rate_limited errors"), "{table}");
    assert!(table.contains("closed with 4029"), "{table}");
    let _ = std::fs::remove_file(json);

    // One client at 30/s: more than 20 refusals within 10 s end its connection with 4029.
    let mut c = small_run(url);
    c.clients = 1;
    c.rooms = 1;
    c.rate = 30.0;
    c.duration = Duration::from_secs(2);
    c.connect_rate = 20.0;
    let r = loadgen::run(c).expect("run");
    assert_eq!(
        r.limits.closed_4029, 1,
        "{:?} {:?}",
        r.limits, r.server_events
    );
}
