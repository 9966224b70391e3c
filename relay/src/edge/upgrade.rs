//! The WebSocket upgrade: the Origin and token checks, a valid `Sec-WebSocket-Key`, the 101,
//! and the hand-over of the raw socket (plain or TLS) to its [`Driver`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error};

use super::admission::Held;
use super::driver::Driver;
use super::http::{text, Body};
use super::linger::Linger;
use super::security::{Refused, Security};
use crate::chat::hub::Hub;
use crate::telemetry::metrics::Rejection;
use crate::transport::wire::take_plaintext;

pub fn upgrade(
    req: &mut Request<Incoming>,
    hub: &Arc<Hub>,
    security: &Security,
    peer: SocketAddr,
    held: Arc<Held>,
) -> Response<Body> {
    let hub = hub.clone();
    let admitted = match security.check(req.headers(), req.uri().query(), peer) {
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
                tokio::spawn(Driver::new(
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
                    take_plaintext(&mut tls, &mut leftover);
                    tokio::spawn(Driver::new(
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
