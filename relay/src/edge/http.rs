//! HTTP under the relay's limits, for both listeners: the connection builder with its buffer
//! bounds, one connection's request budget, the answers to refused and malformed requests,
//! and the plain-text response every route builds on.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};

use super::admission::Refusal;

pub type Body = Full<Bytes>;

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
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

/// RFC 9112 section 3.2: an HTTP/1.1 request without exactly one `Host` is answered 400.
/// hyper does not check it; a request that names no host (or two) is not from a browser or a
/// proxy that follows the standard, and whatever looked at "the" Host would be guessing.
/// `None` when the request may go on, else the 400 to answer.
pub fn require_host<B>(req: &Request<B>) -> Option<Response<Body>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
