//! The generator against a relay configured like a deployment, all in-process on loopback:
//! wss:// with a test CA (`--ca-file`, no CA, `--insecure`).
//! Nothing here uses `--allow-remote`: every target is 127.0.0.1 or localhost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly"
)]

mod support;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use loadgen::Config;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

static SERIAL: Mutex<()> = Mutex::new(());

/// A relay on its own runtime thread; shut down when dropped.
struct Relay {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(config: relay::Config) -> Relay {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = rt.block_on(relay::run(listener, config, shutdown)) {
                eprintln!("relay stopped: {e}");
            }
        });
        Relay {
            port,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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
    let mut c = small_run(format!("wss://localhost:{}/ws", relay.port));
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
    let c = small_run(format!("wss://localhost:{}/ws", relay.port));
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
    let mut c = small_run(format!("wss://localhost:{}/ws", relay.port));
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
