//! chatrelay's relay: a WebSocket chat server with rooms, presence, typing and history.
//!
//! # Layout
//! - [`config`]: the clap configuration; `relay --help` is the reference.
//! - [`server`]: accepts TCP, serves HTTP until the upgrade, runs the shutdown sequence;
//!   [`run`] is the entry point tests use on port 0.
//! - [`http`]: routes (`/healthz`, `/readyz`, `/metrics`, the embedded page, the upgrade on
//!   `/ws`); [`admin`]: the admin API (`docs/ADMIN.md`).
//! - [`connection`]: one task per WebSocket, plain TCP or TLS alike: reads, dispatches,
//!   writes, closes.
//! - [`ws`]: RFC 6455 framing: client frames in (`ws::reader`), shared server frames out.
//! - [`protocol`]: the JSON protocol: command decoding, event encoding, error/close codes.
//! - [`session`]: a connection's rooms and username; turns each command into one call on
//!   the [`backend`].
//! - [`backend`]: the seam for where rooms' logs live (memory, or Redis in cluster mode):
//!   who orders a room's messages and who knows its members.
//! - [`hub`]: the node's rooms (a sharded map) and connections; heartbeats, room expiry.
//! - [`room`]: one room's members, log (`room::log`: epoch, seq, history; the one ordering
//!   and replay path) and fan-out, the same for every backend.
//! - [`history`]: a room's kept messages, bounded by count and bytes, and the node's history
//!   budget; [`per_ip`]: what one source address may do across its connections (messages,
//!   commands, rooms created). Every budget is listed in `docs/SECURITY.md`.
//! - [`outbox`]: a connection's outbound queue with the slow-consumer cap, and the socket and
//!   transport its writes go through.
//! - [`wire`]: where plain TCP and TLS differ, once: one `writev` of queued frames, or frames
//!   fed to rustls and its records written; reads straight into the scratch buffer, or
//!   through rustls.
//! - [`flush`]: flush lists (one per worker thread; a room goes by its address and a
//!   connection by its id, not by the worker that enlisted it) and their flusher tasks, which deliver each enlisted
//!   room's pending events and write every connection that got frames this scheduler round.
//! - [`readiness`]: why the node is not ready, if it is not (`/readyz`).
//! - [`cluster`]: cluster mode (`--redis-url`): the Redis backplane that makes many nodes one
//!   chat (cluster-wide seq, history and presence), behind [`backend::RemoteLog`]; absent on a
//!   single node.
//! - [`stats`]: counters; [`metrics`]: recording latencies and rendering the numbers it is
//!   given; [`exposition`]: the `/metrics` page, which gathers the node's numbers
//!   (`docs/METRICS.md`); [`clock`]: the coarse millisecond clock of rate limits and sampled
//!   logs; [`limits`]: the open-files limit; [`shutdown`]: SIGINT/SIGTERM;
//!   [`telemetry`]: logging; [`error`]: the crate's error type.
//! - Security: [`admission`] (connection limits at accept, or at the first request behind a
//!   trusted proxy), [`forwarded`] (client addresses behind `--trusted-proxy`), [`security`]
//!   (Origin and token at the upgrade, with [`auth`]), [`ratelimit`] (token buckets), [`tls`]
//!   (rustls: the acceptor; the session after the upgrade is a [`wire`]). docs/SECURITY.md
//!   has every budget.
//!
//! # One chat message, from socket to sockets
//! 1. The sender's [`connection`] task wakes on readable and reads into its worker thread's
//!    scratch buffer (no per-connection buffer while idle); over TLS, [`wire`] decrypts the
//!    ciphertext into it.
//! 2. [`ws::reader`] unmasks the frame in place, reassembles fragments under the size cap and
//!    checks UTF-8.
//! 3. [`protocol::decode`] parses `{"type":"message",...}` into borrowed strings.
//! 4. [`session`] checks the text and picks the room; [`backend::Backend::publish`] hands it
//!    to [`room::Room::publish`] (single node; in cluster mode Redis assigns the seq and the
//!    backplane task delivers through the same [`room::Room::append`]), which takes the room
//!    lock, assigns the next `seq`, encodes the event once and frames it once into a
//!    [`ws::Frame`] (a `bytes::Bytes`) and keeps it in history. It does not touch the
//!    members' outboxes: the frame joins the room's pending events for this scheduler round,
//!    and a room with none before enlists itself on one of the hub's [`flush`] lists (chosen
//!    by the room's address, so rooms spread over the lists).
//! 5. After the I/O driver's next poll, that list's flusher ([`flush::run`]) calls
//!    [`room::Room::deliver`]: one pending event is pushed as is into every member's
//!    [`outbox`] (a reference-count bump each); several are copied once into one buffer (one
//!    copy per room per round, never per member) and each member gets a slice of it. An
//!    outbox that was idle enlists its connection on a list too (chosen by connection id),
//!    and that list's flusher writes each enlisted queue with one `writev` (TLS: through
//!    rustls, `wire::Wire`); only a socket
//!    that would block wakes its connection task, which then waits for writability and
//!    writes the rest.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod backend;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod connection;
pub mod error;
pub mod exposition;
pub mod flush;
pub mod forwarded;
pub mod history;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod per_ip;
pub mod protocol;
pub mod ratelimit;
pub mod readiness;
pub mod room;
pub mod security;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod tls;
pub mod wire;
pub mod ws;

pub use config::Config;
pub use error::Error;
pub use server::{run, Relay};
pub use stats::StatsSnapshot;
