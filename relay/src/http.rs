//! The HTTP side: health, metrics, the embedded chat page, the WebSocket upgrade, and (when
//! enabled on this listener) the admin API.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error};

use crate::admin;
use crate::admission::{Held, Refusal};
use crate::connection;
use crate::hub::Hub;
use crate::metrics::Rejection;
use crate::security::Refused;
use crate::server::{Linger, Node};

pub type Body = Full<Bytes>;

/// The browser client, embedded so the one binary is all there is to deploy.
const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Largest request head (and read-ahead) one HTTP connection buffers. hyper's default is
/// about 400 KiB, which 500 idle connections from one address would turn into 200 MB; a head
/// with a token and a browser's cookies fits in a fraction of this.
pub const MAX_REQUEST_BUFFER: usize = 32 * 1024;

/// An HTTP/1.1 connection builder with the relay's limits (both listeners).
pub fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The buffer bound alone is soft (one read may carry it past); the head bound is exact.
    builder
        .max_buf_size(MAX_REQUEST_BUFFER)
        .max_header_size(MAX_REQUEST_BUFFER);
    builder
}

/// One HTTP connection's request budget (`--http-requests-per-connection`,
/// `--http-request-rate`). Without it one keep-alive connection could pipeline requests
/// (`GET /metrics` by the thousand) for as long as its handshake timeout lasts, and a few
/// such connections keep a core busy that WebSocket clients need.
///
/// Over the rate a request is not refused but waits its turn (a browser's page load never
/// does: it makes a handful of requests); the connection's handshake timeout still ends it.
#[derive(Debug)]
pub struct RequestBudget {
    max: u32,
    /// The time one request takes at the rate, and the head start a full burst has; `None`:
    /// no rate.
    pace: Option<(std::time::Duration, std::time::Duration)>,
    /// Requests so far, and when the next would be due at the rate (the "theoretical
    /// arrival time" of the GCRA); locked once per request, by this connection only.
    state: std::sync::Mutex<(u32, tokio::time::Instant)>,
}

impl RequestBudget {
    /// `max` requests (0: no limit) at `rate` per second with one second's worth as burst
    /// (0: no rate).
    pub fn new(max: u32, rate: f64) -> Self {
        let pace = (rate.is_finite() && rate > 0.0)
            .then(|| std::time::Duration::try_from_secs_f64(1.0 / rate).ok())
            .flatten()
            .map(|interval| {
                let burst = rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
                (interval, interval.saturating_mul(burst - 1))
            });
        Self {
            max,
            pace,
            state: std::sync::Mutex::new((0, tokio::time::Instant::now())),
        }
    }

    /// Counts a request arriving at `now`: when it may be served (`None`: at once), and
    /// whether it is the connection's last.
    pub fn charge(&self, now: tokio::time::Instant) -> (Option<tokio::time::Instant>, bool) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 = state.0.saturating_add(1);
        let last = self.max > 0 && state.0 >= self.max;
        let Some((interval, burst)) = self.pace else {
            return (None, last);
        };
        let due = state.1.max(now);
        let wait = due.saturating_duration_since(now).saturating_sub(burst);
        state.1 = due + interval;
        ((!wait.is_zero()).then(|| now + wait), last)
    }
}

/// Ends the connection after `response` (its request was the budget's last), unless it is the
/// 101 that hands the connection to the WebSocket.
pub fn close_after(response: &mut Response<Body>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
}

/// The answer to every request on a connection that a limit refused (429/503).
pub fn refused(refusal: Refusal) -> Response<Body> {
    let mut response = text(refusal.status(), refusal.body());
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static(refusal.retry_after()),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// Routes one request. `held` is kept by the connection task after an upgrade so shutdown
/// can wait for it and the connection keeps its place under the limits.
pub(crate) async fn route(
    mut req: Request<Incoming>,
    node: Arc<Node>,
    peer: SocketAddr,
    held: Arc<Held>,
) -> Result<Response<Body>, Infallible> {
    if admin::is_admin_path(req.uri().path()) {
        // Off, or served on the admin listener only: as if there were no such path.
        if node.admin.on_main_listener() {
            return Ok(admin::handle(req, &node.hub, &node.admin).await);
        }
        return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
    }
    if let Some(response) = require_host(&req) {
        if fastwebsockets::upgrade::is_upgrade_request(&req) {
            node.hub.metrics.rejected(Rejection::BadUpgrade);
        }
        return Ok(response);
    }
    let path = req.uri().path();
    if req.method() != Method::GET {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
    }
    let response = match path {
        "/" | "/ws" if fastwebsockets::upgrade::is_upgrade_request(&req) => {
            upgrade(&mut req, &node, peer, held)
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(&node.hub),
        "/metrics" => metrics(&node.hub),
        "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
        "/ws" => text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint takes WebSocket upgrades\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// RFC 9112 section 3.2: an HTTP/1.1 request without exactly one `Host` is answered 400.
/// hyper does not check it; a request that names no host (or two) is not from a browser or a
/// proxy that follows the standard, and whatever looked at "the" Host would be guessing.
/// `None` when the request may go on, else the 400 to answer.
pub(crate) fn require_host<B>(req: &Request<B>) -> Option<Response<Body>> {
    if req.version() != hyper::Version::HTTP_11 {
        return None;
    }
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), None) => None,
        _ => Some(text(
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header\n",
        )),
    }
}

/// Whether the request has exactly one `Sec-WebSocket-Key` that is the base64 of 16 bytes
/// (RFC 6455 section 4.2.1): 22 characters of the standard alphabet, the last of which
/// carries only 2 bits of data, then `==`.
fn valid_websocket_key(headers: &hyper::HeaderMap) -> bool {
    let mut keys = headers.get_all(hyper::header::SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return false;
    };
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    match key.as_bytes() {
        [data @ .., last, b'=', b'='] if data.len() == 21 => {
            data.iter().all(|&c| value(c).is_some()) && value(*last).is_some_and(|v| v & 0x0F == 0)
        }
        _ => false,
    }
}

pub(crate) fn readyz(hub: &Hub) -> Response<Body> {
    match hub.readiness.check() {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(reasons) => {
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "");
            *response.body_mut() = Full::new(Bytes::from(reasons));
            response
        }
    }
}

/// The Prometheus text exposition (format 0.0.4).
pub(crate) fn metrics(hub: &Hub) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(crate::exposition::render(hub))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn upgrade(
    req: &mut Request<Incoming>,
    node: &Node,
    peer: SocketAddr,
    held: Arc<Held>,
) -> Response<Body> {
    let hub = node.hub.clone();
    let admitted = match node.security.check(req.headers(), req.uri().query(), peer) {
        Ok(admitted) => admitted,
        Err(refused) => {
            hub.metrics.rejected(match refused {
                Refused::Origin => Rejection::Origin,
                Refused::Unauthorized => Rejection::Unauthorized,
            });
            let mut response = text(refused.status(), refused.body());
            if refused == Refused::Unauthorized {
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
            }
            return response;
        }
    };
    if !valid_websocket_key(req.headers()) {
        hub.metrics.rejected(Rejection::BadUpgrade);
        debug!(peer = %peer, "bad upgrade request: Sec-WebSocket-Key");
        return text(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n");
    }
    let (mut response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut *req) {
        Ok(parts) => parts,
        Err(err) => {
            hub.metrics.rejected(Rejection::BadUpgrade);
            debug!(peer = %peer, error = %err, "bad upgrade request");
            return text(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n");
        }
    };
    if let Some(protocol) = &admitted.subprotocol {
        // Browsers fail a handshake whose 101 does not select one of the offered values.
        match hyper::header::HeaderValue::from_str(protocol) {
            Ok(value) => {
                response
                    .headers_mut()
                    .insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, value);
            }
            Err(_) => return text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Protocol\n"),
        }
    }
    let identity = admitted.identity;
    // A task of its own: the HTTP task's future (hyper's connection state) is large, and
    // would otherwise stay allocated for the life of every WebSocket.
    tokio::spawn(async move {
        let websocket = match upgrade.await {
            Ok(ws) => ws,
            Err(err) => {
                debug!(peer = %peer, error = %err, "upgrade failed");
                return;
            }
        };
        // Take the raw socket back from hyper (and any bytes it read past the request):
        // the relay frames by hand on it (see `ws`).
        match websocket
            .into_inner()
            .into_inner()
            .downcast::<TokioIo<Linger<TcpStream>>>()
        {
            Ok(parts) => {
                let Some(stream) = parts.io.into_inner().into_inner() else {
                    return;
                };
                // Yet another task, sized exactly for the connection (see `Driver`): this
                // one's future also holds the upgrade's and the TLS path's state.
                tokio::spawn(connection::Driver::new(
                    &hub,
                    stream,
                    None,
                    parts.read_buf,
                    peer,
                    identity,
                    held,
                ));
            }
            Err(upgraded) => match upgraded.downcast::<TokioIo<Linger<TlsStream<TcpStream>>>>() {
                Ok(parts) => {
                    let Some(stream) = parts.io.into_inner().into_inner() else {
                        return;
                    };
                    // The same driver, over the raw socket with the TLS session beside it.
                    let (stream, mut tls) = stream.into_inner();
                    let mut leftover = parts.read_buf.to_vec();
                    crate::wire::take_plaintext(&mut tls, &mut leftover);
                    tokio::spawn(connection::Driver::new(
                        &hub,
                        stream,
                        Some(tls),
                        Bytes::from(leftover),
                        peer,
                        identity,
                        held,
                    ));
                }
                Err(_) => error!(peer = %peer, "upgraded connection is neither TCP nor TLS"),
            },
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_ok(keys: &[&'static str]) -> bool {
        let mut headers = hyper::HeaderMap::new();
        for key in keys {
            headers.append(
                hyper::header::SEC_WEBSOCKET_KEY,
                hyper::header::HeaderValue::from_static(key),
            );
        }
        valid_websocket_key(&headers)
    }

    #[test]
    fn a_request_budget_paces_after_its_burst_and_ends_at_its_count() {
        use std::time::Duration;
        let budget = RequestBudget::new(6, 2.0); // a burst of 2, then one per 500 ms
        let t0 = tokio::time::Instant::now();
        assert_eq!(budget.charge(t0), (None, false));
        assert_eq!(budget.charge(t0), (None, false));
        assert_eq!(
            budget.charge(t0),
            (Some(t0 + Duration::from_millis(500)), false)
        );
        assert_eq!(
            budget.charge(t0),
            (Some(t0 + Duration::from_millis(1000)), false)
        );
        // After a quiet spell the burst is back, but never more than one second's worth.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(budget.charge(later), (None, false));
        assert_eq!(budget.charge(later), (None, true), "the 6th of 6");
        let unpaced = RequestBudget::new(0, 0.0);
        assert!((0..10_000).all(|_| unpaced.charge(t0) == (None, false)));
    }

    #[test]
    fn websocket_keys_are_16_bytes_of_base64() {
        assert!(key_ok(&["dGhlIHNhbXBsZSBub25jZQ=="]), "RFC 6455's example");
        assert!(key_ok(&["AAAAAAAAAAAAAAAAAAAAAA=="]));
        assert!(key_ok(&["/+/+/+/+/+/+/+/+/+/+/w=="]));
        assert!(!key_ok(&[]));
        assert!(!key_ok(&[
            "dGhlIHNhbXBsZSBub25jZQ==",
            "dGhlIHNhbXBsZSBub25jZQ=="
        ]));
        assert!(!key_ok(&["x"]));
        assert!(!key_ok(&["dGhlIHNhbXBsZSBub25jZQ"]), "no padding");
        assert!(
            !key_ok(&["dGhlIHNhbXBsZSBub25jZR=="]),
            "bits past the 16 bytes"
        );
        assert!(!key_ok(&["dGhlIHNhbXBsZSBub25jZ-=="]), "base64url");
        assert!(!key_ok(&["dGhlIHNhbXBsZSBub25jZQ=a"]));
        assert!(!key_ok(&["dGhlIHNhbXBsZSBub25jZXh4eA=="]), "17 bytes");
        assert!(!key_ok(&["dGhlIHNhbXBsZSBub25j"]), "15 bytes");
    }
}
