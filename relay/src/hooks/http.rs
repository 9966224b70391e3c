//! The one HTTP client of the app backend's hooks: pooled keep-alive connections (hyper-util's
//! client, HTTP/1.1; rustls with the webpki roots for `https://` URLs), a bounded number of
//! requests in flight per hook, a deadline per request, and the HMAC signature every hook
//! request carries when `--webhook-secret` is set.
//!
//! A [`Hook`] is one configured URL (the publish hook, the join hook, the webhook): its own
//! limit of requests in flight and its own [`HookStats`], over the node's shared [`Pool`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ring::hmac;
use tokio::sync::Semaphore;

pub use crate::telemetry::metrics::hooks::{FailureKind, HookKind, HookStats};

/// The header with the request's Unix time in seconds (signed with the body).
pub const TIMESTAMP_HEADER: &str = "x-chatrelay-timestamp";
/// The header with `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-chatrelay-signature";

/// The largest answer body read from a hook: the documented answers are a few hundred bytes;
/// a backend that streams more is cut off (`body`) rather than grow the relay's memory.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Idle keep-alive connections kept per backend host: enough for a busy hook's parallel
/// requests to reuse connections instead of paying a TCP (and TLS) handshake each.
const IDLE_PER_HOST: usize = 256;
/// How long an idle pooled connection is kept: below the usual 60 s of backend servers and
/// proxies, so the relay rarely sends on a connection the other end is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connect that takes longer fails (`connect`) even under a longer request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a hook request did not produce a 2xx answer (or an answer the hook could use).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the backend: {0}")]
    Connect(String),
    #[error("the backend answered HTTP {0}")]
    Status(StatusCode),
    #[error("cannot read the answer: {0}")]
    Body(String),
    #[error("unexpected answer: {0}")]
    Invalid(String),
}

impl HookError {
    /// The `kind` label this failure is counted under.
    pub fn kind(&self) -> FailureKind {
        match self {
            HookError::Timeout(_) => FailureKind::Timeout,
            HookError::Connect(_) => FailureKind::Connect,
            HookError::Status(_) => FailureKind::Status,
            HookError::Body(_) => FailureKind::Body,
            HookError::Invalid(_) => FailureKind::Invalid,
        }
    }
}

/// A hook URL that cannot be used (a start-up error naming the flag).
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {why}")]
pub struct BadUrl {
    pub flag: &'static str,
    pub why: String,
}

impl From<BadUrl> for crate::error::Error {
    fn from(bad: BadUrl) -> Self {
        crate::error::Error::Config(bad.to_string())
    }
}

/// The node's pool of keep-alive connections, shared by every hook (cheap to clone).
#[derive(Clone)]
pub struct Pool {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    signer: Option<Arc<Signer>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool whose requests are signed with `secret` when given (`--webhook-secret`).
    /// Fails only if rustls cannot be set up with ring's defaults.
    pub fn new(secret: Option<&str>) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        // `https://` is handled by the TLS layer around it.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_PER_HOST)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Ok(Self {
            client,
            signer: secret.map(|s| Arc::new(Signer::new(s))),
        })
    }

    /// The node's pool for `config` (signed with `--webhook-secret` when set). Build it once
    /// (`server.rs` does) and hand clones to every hook, so they share the connections.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::error::Error> {
        Self::new(config.webhook_secret.as_ref().map(|s| s.0.as_str()))
            .map_err(|err| crate::error::Error::Config(format!("hooks: TLS setup: {err}")))
    }

    /// A hook posting to `url` (named `flag` in errors), at most `concurrency` requests in
    /// flight at once, recording into `stats`.
    pub fn hook(
        &self,
        flag: &'static str,
        url: &str,
        concurrency: usize,
        stats: Arc<HookStats>,
    ) -> Result<Hook, BadUrl> {
        let uri: Uri = url.parse().map_err(|err| BadUrl {
            flag,
            why: format!("{url:?} is not a URL: {err}"),
        })?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(BadUrl {
                    flag,
                    why: format!("{url:?} must be an absolute http:// or https:// URL"),
                })
            }
        }
        Ok(Hook {
            pool: self.clone(),
            uri,
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            stats,
        })
    }
}

/// One hook URL with its own limit of requests in flight. Cheap to clone (clones share the
/// limit and the stats).
#[derive(Debug, Clone)]
pub struct Hook {
    pool: Pool,
    uri: Uri,
    slots: Arc<Semaphore>,
    stats: Arc<HookStats>,
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Hook {
    pub fn stats(&self) -> &Arc<HookStats> {
        &self.stats
    }

    pub fn url(&self) -> &Uri {
        &self.uri
    }

    /// POSTs `body` (JSON) and reads the answer, all within `timeout` (waiting for a free
    /// request slot included, so a backend that stalls makes requests fail on time instead
    /// of queueing without end). Counts the request, its latency and any failure; a non-2xx
    /// answer is [`HookError::Status`]. Callers that reject a 2xx answer's content count
    /// that with [`Hook::invalid`].
    pub async fn post_json(&self, body: Bytes, timeout: Duration) -> Result<Answer, HookError> {
        let started = Instant::now();
        self.stats.request();
        let outcome = match tokio::time::timeout(timeout, self.exchange(body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(HookError::Timeout(timeout)),
        };
        self.stats
            .took(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if let Err(err) = &outcome {
            self.stats.failed(err.kind());
        }
        outcome
    }

    /// Counts a 2xx answer the caller could not use, and returns it as an error.
    pub fn invalid(&self, why: impl Into<String>) -> HookError {
        self.stats.failed(FailureKind::Invalid);
        HookError::Invalid(why.into())
    }

    async fn exchange(&self, body: Bytes) -> Result<Answer, HookError> {
        // Closed only if the semaphore is closed, which nothing does.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| HookError::Connect("hook stopped".into()))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("chatrelay/", env!("CARGO_PKG_VERSION")));
        if let Some(signer) = &self.pool.signer {
            let (timestamp, signature) = signer.sign(unix_now(), &body);
            request = request
                .header(TIMESTAMP_HEADER, timestamp)
                .header(SIGNATURE_HEADER, signature);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|err| HookError::Connect(format!("bad request: {err}")))?;
        let response = self.pool.client.request(request).await.map_err(|err| {
            // The source chain says what went wrong (refused, reset, TLS); the top is vague.
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                why = format!("{why}: {inner}");
                source = inner.source();
            }
            HookError::Connect(why)
        })?;
        let status = response.status();
        // Read (and so free the connection for reuse) before judging the status.
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| HookError::Body(err.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(HookError::Status(status));
        }
        Ok(Answer { status, body })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs hook requests: HMAC-SHA256 over `"<timestamp>.<body>"` (the timestamp in the
/// message, so a captured request cannot be replayed later under a new time).
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        }
    }

    /// The two header values for a request with `body` sent at `unix_secs`:
    /// `X-Chatrelay-Timestamp` and `X-Chatrelay-Signature` (`sha256=<hex>`).
    pub fn sign(&self, unix_secs: u64, body: &[u8]) -> (HeaderValue, HeaderValue) {
        let timestamp = unix_secs.to_string();
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let tag = ctx.sign();
        let mut signature = String::with_capacity(7 + 64);
        signature.push_str("sha256=");
        for byte in tag.as_ref() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            signature.push(char::from(HEX[usize::from(byte >> 4)]));
            signature.push(char::from(HEX[usize::from(byte & 15)]));
        }
        // Digits and hex only: always valid header values.
        (
            HeaderValue::from_str(&timestamp).unwrap_or(HeaderValue::from_static("0")),
            HeaderValue::from_str(&signature).unwrap_or(HeaderValue::from_static("sha256=")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ring's HMAC against RFC 4231 test case 2, then the relay's message layout with it.
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let signer = Signer::new("Jefe");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let (ts, sig) = signer.sign(1_700_000_000, b"{\"a\":1}");
        assert_eq!(ts, "1700000000");
        let expected = hmac::sign(&key, b"1700000000.{\"a\":1}");
        let hex: String = expected
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig.to_str().ok(), Some(format!("sha256={hex}").as_str()));
    }

    #[test]
    fn only_absolute_http_urls_are_hooks() {
        let pool = Pool::new(None).expect("tls");
        let stats = Arc::new(HookStats::default());
        assert!(pool
            .hook("--publish-hook", "http://127.0.0.1:9/x", 4, stats.clone())
            .is_ok());
        assert!(pool
            .hook(
                "--publish-hook",
                "https://example.com/hook",
                4,
                stats.clone()
            )
            .is_ok());
        for bad in ["", "/relative", "ftp://example.com/", "not a url"] {
            let err = pool
                .hook("--publish-hook", bad, 4, stats.clone())
                .expect_err(bad);
            assert!(err.to_string().starts_with("--publish-hook"), "{err}");
        }
    }
}
