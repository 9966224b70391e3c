//! A real HTTP backend for the hook tests: an HTTP/1.1 server (hyper) on a loopback port in
//! the test process. It records every request (method, path, headers, body), answers as the
//! test programs it (status, JSON body, delay), and can go down and come back on the same
//! port, its open keep-alive connections cut, as a backend that restarts would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::EVENT_TIMEOUT;

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When it arrived (before any programmed delay).
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "request body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Checks the request's signature as a backend would (docs/HOOKS.md): the timestamp is
    /// at most `max_age` old and `X-Chatrelay-Signature` is `sha256=` and the hex of
    /// HMAC-SHA256(secret, "<timestamp>.<body>"). Err says what is wrong.
    pub fn verify(&self, secret: &str, max_age: Duration) -> Result<(), String> {
        let timestamp = self
            .header("x-chatrelay-timestamp")
            .ok_or("no X-Chatrelay-Timestamp")?;
        let signature = self
            .header("x-chatrelay-signature")
            .ok_or("no X-Chatrelay-Signature")?;
        let sent: u64 = timestamp
            .parse()
            .map_err(|_| format!("timestamp {timestamp:?} is not a number"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now.abs_diff(sent) > max_age.as_secs() {
            return Err(format!(
                "timestamp {sent} is {}s from now",
                now.abs_diff(sent)
            ));
        }
        let hex = signature
            .strip_prefix("sha256=")
            .ok_or_else(|| format!("signature {signature:?} lacks sha256="))?;
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("signature {hex:?} is not hex"))?;
        let mut message = timestamp.as_bytes().to_vec();
        message.push(b'.');
        message.extend_from_slice(&self.body);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&key, &message, &tag).map_err(|_| "signature does not match".into())
    }
}

/// What the backend answers one request with.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// Waited before answering (the request is recorded at once).
    pub delay: Duration,
}

impl Reply {
    /// 200 with `value` as the JSON body.
    pub fn json(value: Value) -> Self {
        Self {
            status: 200,
            body: value.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with an empty JSON object.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: "{}".into(),
            delay: Duration::ZERO,
        }
    }

    /// 200 with a body that is not JSON at all.
    pub fn raw(body: &str) -> Self {
        Self {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
    responder: Mutex<Responder>,
}

/// The backend; stops serving when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept task, which owns every connection's task: aborting it cuts them all.
    server: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend on a free loopback port answering `200 {"allow":true}` to everything.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            responder: Mutex::new(Arc::new(|_: &Recorded| {
                Reply::json(serde_json::json!({"allow": true}))
            })),
        });
        let server = Some(tokio::spawn(serve(listener, shared.clone())));
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// From now on every request is answered with what `respond` returns for it.
    pub fn answer(&self, respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.shared.responder.lock().unwrap() = Arc::new(respond);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests to `path` so far.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits (up to [`EVENT_TIMEOUT`]) until at least `n` requests to `path` arrived; returns
    /// them all. Panics naming what did arrive if they do not.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the check, so a request between the two is not missed.
            arrived.as_mut().enable();
            let got = self.requests_to(path);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "expected {n} requests to {path}, got {}: {:?}",
                    got.len(),
                    self.requests()
                        .iter()
                        .map(|r| (
                            r.path.clone(),
                            String::from_utf8_lossy(&r.body).into_owned()
                        ))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Goes down: the port stops accepting and every open connection is cut (a keep-alive
    /// client sees its pooled connections fail).
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Comes back on the same port (retrying the bind for a moment while the old socket
    /// goes), with the same recorded requests and answers.
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("cannot bind {} again: {err}", self.addr),
            }
        };
        self.server = Some(tokio::spawn(serve(listener, self.shared.clone())));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Dropped with this task (abort): every connection task goes with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| handle(shared.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = request.into_body().collect().await?.to_bytes();
    let recorded = Recorded {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    };
    let respond = shared.responder.lock().unwrap().clone();
    let reply = respond(&recorded);
    shared.requests.lock().unwrap().push(recorded);
    shared.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let response = Response::builder()
        .status(reply.status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap();
    Ok(response)
}
