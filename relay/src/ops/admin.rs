//! The admin HTTP API (`docs/ADMIN.md`): list rooms and members, publish a server message,
//! disconnect a user or a connection. JSON in and out, bearer-token auth.
//!
//! Off unless `--admin-token` is set. With `--admin-listen` it is served only on that
//! address, next to `/metrics`, `/healthz` and `/readyz` ([`serve`]); otherwise under
//! `/admin/` on the main listener (`routes::route` hands those paths here).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::probes;
use crate::chat::hub::Hub;
use crate::chat::room::{Edit, Outgoing, SendRefusal};
use crate::config::{AdminToken, Config};
use crate::edge::http::{self, Body};
use crate::protocol::name::{nfc, normalize_name};
use crate::protocol::CloseCode;
use crate::transport::outbox::CloseRequest;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// How long one admin-listener connection may live: admin clients are scripts and scrapers,
/// and a bound keeps idle or stalled ones from piling up.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The `userId` of messages published through the admin API.
pub use crate::protocol::event::SERVER_USER_ID;

/// Whether and where the admin API is served.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    token: Option<AdminToken>,
    separate_listener: bool,
}

impl From<&Config> for AdminSettings {
    fn from(config: &Config) -> Self {
        Self {
            token: config.admin_token.clone(),
            separate_listener: config.admin_listen.is_some(),
        }
    }
}

impl AdminSettings {
    /// The main listener serves `/admin/` (a token is set and there is no admin listener).
    pub fn on_main_listener(&self) -> bool {
        self.token.is_some() && !self.separate_listener
    }
}

pub fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl fmt::Display) -> Response<Body> {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// Handles one request under `/admin`. Paths outside it are the caller's.
pub async fn handle(
    req: Request<Incoming>,
    hub: &Arc<Hub>,
    settings: &AdminSettings,
) -> Response<Body> {
    let Some(token) = &settings.token else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let mut authorization = req.headers().get_all(AUTHORIZATION).iter();
    let authorization = match (authorization.next(), authorization.next()) {
        (Some(value), None) => Some(value),
        // Two Authorization headers: neither is taken as the credential.
        _ => None,
    };
    if !token.accepts(authorization) {
        debug!(
            path = req.uri().path(),
            "admin request without a valid token"
        );
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"relay-admin\""),
        );
        return response;
    }
    // Split before decoding, so an encoded "/" stays inside its room name.
    let segments: Result<Vec<String>, _> = req
        .uri()
        .path()
        .split('/')
        .skip(2)
        .map(|s| percent_decode_str(s).decode_utf8().map(|s| s.into_owned()))
        .collect();
    let Ok(segments) = segments else {
        return error(StatusCode::BAD_REQUEST, "the path is not valid UTF-8");
    };
    // Rooms are kept under their NFC names (`protocol::name`): a path in another form names
    // the same room. The other segments are ASCII, which NFC leaves alone.
    let segments: Vec<Cow<'_, str>> = segments.iter().map(|s| nfc(s)).collect();
    let segments: Vec<&str> = segments.iter().map(|s| &**s).collect();
    let method = req.method().clone();
    match (segments.as_slice(), &method) {
        (["rooms"], &Method::GET) => list_rooms(hub),
        (["rooms"], _) => method_not_allowed("GET"),
        (["rooms", room], &Method::GET) => show_room(hub, room),
        (["rooms", _], _) => method_not_allowed("GET"),
        (["rooms", room, "messages"], &Method::POST) => match body::<Publish>(req).await {
            Ok(publish) => publish_message(hub, room, publish),
            Err(response) => response,
        },
        (["rooms", _, "messages"], _) => method_not_allowed("POST"),
        (["rooms", room, "messages", seq], &Method::DELETE) => delete_message(hub, room, seq),
        (["rooms", _, "messages", _], _) => method_not_allowed("DELETE"),
        (["disconnect"], &Method::POST) => match body::<Disconnect>(req).await {
            Ok(target) => disconnect(hub, target),
            Err(response) => response,
        },
        (["disconnect"], _) => method_not_allowed("POST"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// Reads and decodes a JSON body, or the error response to send instead.
async fn body<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes"),
            ))
        }
        Err(err) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("reading the body: {err}"),
            ))
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|err| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {err}")))
}

fn list_rooms(hub: &Hub) -> Response<Body> {
    let mut rooms = hub.rooms();
    rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|(name, members)| json!({ "room": &**name, "members": members }))
        .collect();
    json_response(StatusCode::OK, &json!({ "rooms": rooms }))
}

fn show_room(hub: &Hub, name: &str) -> Response<Body> {
    let Some(room) = hub.room(name) else {
        return error(StatusCode::NOT_FOUND, "no such room");
    };
    let members: Vec<Value> = room
        .members()
        .iter()
        .map(|(id, username)| json!({ "userId": &**id, "username": &**username }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "room": &*room.name, "epoch": &*room.epoch(), "count": members.len(), "members": members }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    text: String,
    username: Option<String>,
}

fn publish_message(hub: &Hub, name: &str, publish: Publish) -> Response<Body> {
    let Some(room) = hub.room(name).filter(|room| !room.is_retired()) else {
        return error(StatusCode::NOT_FOUND, "no such room");
    };
    let username = publish.username.as_deref().unwrap_or(SERVER_USER_ID);
    // Shown in events like a client's name, so kept in the same (NFC) form.
    let Some(username) = normalize_name(username) else {
        return error(
            StatusCode::BAD_REQUEST,
            "username must be 1-64 characters without control or format characters",
        );
    };
    let max = hub.limits.max_text_chars;
    if publish.text.is_empty() || publish.text.chars().count() > max {
        return error(
            StatusCode::BAD_REQUEST,
            format!("text must be 1-{max} characters"),
        );
    }
    let Ok((seq, delivered)) =
        hub.backend
            .publish_as(hub, &room, SERVER_USER_ID, &username, &publish.text)
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the history store's queue is full (or the room just closed); retry shortly",
        );
    };
    hub.stats.admin_messages.fetch_add(1, Ordering::Relaxed);
    hub.stats.deliveries.fetch_add(delivered, Ordering::Relaxed);
    info!(
        room = name,
        seq, delivered, "admin published a server message"
    );
    json_response(
        StatusCode::OK,
        &json!({ "room": name, "seq": seq, "delivered": delivered }),
    )
}

/// Moderation: deletes any message of the room, as its author could (members get
/// `message_deleted`; history shows it deleted from then on).
fn delete_message(hub: &Hub, name: &str, seq: &str) -> Response<Body> {
    let Some(room) = hub.room(name).filter(|room| !room.is_retired()) else {
        return error(StatusCode::NOT_FOUND, "no such room");
    };
    let Some(target) = seq.parse::<u64>().ok().filter(|&s| s > 0) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the seq must be a positive integer",
        );
    };
    let out = Outgoing {
        change: Some(Edit {
            target,
            delete: true,
            by: None,
            stored: None,
        }),
        ..Outgoing::server(SERVER_USER_ID, SERVER_USER_ID, "")
    };
    match hub.backend.publish(hub, &room, &out) {
        Ok(()) => {
            info!(room = name, target, "admin deleted a message");
            json_response(
                StatusCode::OK,
                &json!({ "room": name, "target": target, "deleted": true }),
            )
        }
        Err(SendRefusal::NoSuchMessage | SendRefusal::NotAuthor) => error(
            StatusCode::NOT_FOUND,
            "no such message in this room (or it was deleted already)",
        ),
        Err(SendRefusal::Busy) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the relay's queue for the disk or Redis is full; retry shortly",
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Disconnect {
    client_id: Option<String>,
    username: Option<String>,
}

fn disconnect(hub: &Hub, target: Disconnect) -> Response<Body> {
    let client_ids: BTreeSet<Arc<str>> = match (&target.client_id, &target.username) {
        (Some(client_id), None) => BTreeSet::from([Arc::from(client_id.as_str())]),
        // Usernames are per room membership, so a user is found through the rooms; they
        // are kept in NFC, so the one asked for is compared in NFC too.
        (None, Some(username)) => {
            let username = nfc(username);
            hub.rooms()
                .iter()
                .filter_map(|(name, _)| hub.room(name))
                .flat_map(|room| room.members())
                .filter(|(_, name)| **name == *username)
                .map(|(id, _)| id)
                .collect()
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of clientId and username",
            )
        }
    };
    let mut disconnected = Vec::new();
    for client_id in &client_ids {
        let conn = client_id
            .strip_prefix(&*hub.node_tag)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| hub.connection(id));
        let Some(conn) = conn else { continue };
        conn.outbox.close(CloseRequest {
            code: CloseCode::DisconnectedByAdmin.code(),
            reason: "disconnected by admin",
            // What is already queued is sent first: a kick is not a punishment of the pipe.
            discard: false,
        });
        info!(peer = %conn.peer, client = %conn.client_id, "admin disconnected a connection");
        disconnected.push(Value::from(&*conn.client_id));
    }
    if disconnected.is_empty() {
        return error(StatusCode::NOT_FOUND, "no matching connection");
    }
    json_response(StatusCode::OK, &json!({ "disconnected": disconnected }))
}

/// The admin listener's routes: the admin API and the operations endpoints.
async fn route_ops(
    req: Request<Incoming>,
    hub: Arc<Hub>,
    settings: Arc<AdminSettings>,
) -> Result<Response<Body>, Infallible> {
    if let Some(response) = http::require_host(&req) {
        return Ok(response);
    }
    let path = req.uri().path();
    if is_admin_path(path) {
        return Ok(handle(req, &hub, &settings).await);
    }
    if req.method() != Method::GET {
        return Ok(method_not_allowed("GET"));
    }
    Ok(match path {
        "/metrics" => probes::metrics(&hub),
        "/healthz" => probes::healthz(),
        "/readyz" => probes::readyz(&hub),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    })
}

/// Serves the admin listener until `shutdown` resolves. Plain HTTP/1.1, no upgrades.
pub async fn serve(
    hub: Arc<Hub>,
    settings: AdminSettings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let settings = Arc::new(settings);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, usually: retrying at once would spin.
                warn!(error = %err, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (hub, settings) = (hub.clone(), settings.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| route_ops(req, hub.clone(), settings.clone()));
            let connection = http::http1_builder().serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => debug!(peer = %peer, error = %err, "admin connection error"),
                Err(_) => debug!(peer = %peer, "admin connection closed after its lifetime"),
            }
        });
    }
}
