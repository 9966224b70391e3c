//! Which path goes where: the admin API (when served on this listener), the probes, the
//! embedded chat page, and the WebSocket upgrade on `/ws`; and the `Node` they route to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::chat::hub::Hub;
use crate::cluster::Backplane;
use crate::edge::admission::{Admission, Held};
use crate::edge::http::{require_host, text, Body};
use crate::edge::security::Security;
use crate::edge::upgrade::upgrade;
use crate::hooks::webhook::Webhook;
use crate::ops::admin::AdminSettings;
use crate::ops::{admin, probes};
use crate::store::Store;
use crate::telemetry::metrics::Rejection;

/// What a node's HTTP side reaches: the chat core, the edge's limits and checks, and where
/// the admin API is served. The chat core ([`Hub`]) knows none of the others.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) hub: Arc<Hub>,
    /// Cluster mode (`--redis-url`): the Redis backplane behind the hub's backend, whose
    /// task the node starts and stops.
    pub(crate) backplane: Option<Arc<Backplane>>,
    /// A single node's durable history (`--data-dir`) behind the hub's backend, whose
    /// writer the node starts and stops.
    pub(crate) store: Option<Arc<Store>>,
    /// The webhooks (`--webhook-url`), the hub's tap, whose task the node starts and stops.
    pub(crate) webhook: Option<Arc<Webhook>>,
    /// Connection limits at accept.
    pub(crate) admission: Arc<Admission>,
    /// Origin and token checks at the upgrade, and the trusted proxies.
    pub(crate) security: Security,
    /// Whether and where the admin API is served.
    pub(crate) admin: AdminSettings,
}

/// The browser client, embedded so the one binary is all there is to deploy.
const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");
/// The modules `/app.js` imports (ES modules, so the page needs no build step).
const MODULES: &[(&str, &str)] = &[
    ("/js/core.js", include_str!("../static/js/core.js")),
    (
        "/js/connection.js",
        include_str!("../static/js/connection.js"),
    ),
    ("/js/messages.js", include_str!("../static/js/messages.js")),
    ("/js/send.js", include_str!("../static/js/send.js")),
    ("/js/edit.js", include_str!("../static/js/edit.js")),
    ("/js/replies.js", include_str!("../static/js/replies.js")),
    ("/js/reads.js", include_str!("../static/js/reads.js")),
    ("/js/rooms.js", include_str!("../static/js/rooms.js")),
    // The client library the page is built on (clients/js, published as chatrelay-client):
    // the same file, so the page and other apps run the one implementation.
    (
        "/js/chatrelay-client.js",
        include_str!("../../clients/js/index.js"),
    ),
];

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
            upgrade(&mut req, &node.hub, &node.security, peer, held)
        }
        "/healthz" => probes::healthz(),
        "/readyz" => probes::readyz(&node.hub),
        "/metrics" => probes::metrics(&node.hub),
        "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => asset("text/css; charset=utf-8", STYLE_CSS),
        _ if path.starts_with("/js/") => match MODULES.iter().find(|(route, _)| *route == path) {
            Some((_, body)) => asset("text/javascript; charset=utf-8", body),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
        "/ws" => text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint takes WebSocket upgrades\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}
