//! The answers to `/healthz`, `/readyz` and `/metrics`, the same on the main listener and the
//! admin listener.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};

use crate::chat::hub::Hub;
use crate::edge::http::{text, Body};

/// `/healthz`: the process is up and serving HTTP.
pub fn healthz() -> Response<Body> {
    text(StatusCode::OK, "ok\n")
}

pub fn readyz(hub: &Hub) -> Response<Body> {
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
pub fn metrics(hub: &Hub) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(super::exposition::render(hub))));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
