//! chatrelay's relay: a WebSocket chat server with rooms, presence, typing and history.
//!
//! # Layout
//! Folders are layers, lowest first; a module uses only the layers below its own (the test
//! `relay/tests/layers.rs` checks it; `docs/ARCHITECTURE.md` draws it).
//! - Base: [`config`] (the clap configuration; `relay --help` is the reference),
//!   [`error`] (the crate's error type), [`clock`] (the coarse millisecond clock of rate
//!   limits and sampled logs, and wall-clock seconds for token expiry).
//! - [`ws`]: RFC 6455 framing: client frames in (`ws::reader`), shared server frames out.
//! - [`protocol`]: the JSON protocol: command decoding, event encoding, error/close codes.
//! - [`telemetry`]: counters, latency histograms, logging, readiness.
//! - [`transport`]: a connection's outbound queue with the slow-consumer cap
//!   ([`transport::outbox`]) and where plain TCP and TLS differ, once ([`transport::wire`]):
//!   one `writev` of queued frames, or frames fed to rustls and its records written.
//! - [`chat`]: the chat core: sessions, the [`chat::backend`] seam for where rooms' logs
//!   live, the [`chat::gate`] seam for the app backend's say on messages and joins, the hub of rooms and connections, rooms (log, fan-out, lifecycle), history, the
//!   flushers that deliver each scheduler round, per-address budgets and rate limits.
//! - [`edge`]: the network edge: admission at accept, HTTP under limits, Origin and token
//!   at the upgrade, TLS, and the one connection [`edge::driver`] per WebSocket.
//! - [`cluster`]: cluster mode (`--redis-url`): the Redis backplane that makes many nodes one
//!   chat (cluster-wide seq, history and presence), a [`chat::backend::RemoteLog`]; absent
//!   on a single node.
//! - [`store`]: the durable history of a single node (`--data-dir`, SQLite), a
//!   [`chat::backend::Journal`]: every message is stored before it is delivered.
//! - [`hooks`]: the app backend's HTTP hooks (`docs/HOOKS.md`): one pooled keep-alive
//!   client ([`hooks::http`]) with request signing, the publish and join hooks
//!   ([`hooks::gate`], a [`chat::gate::Gate`]) and the webhooks ([`hooks::webhook`], the
//!   hub's [`chat::tap::Tap`], following a durable store's log through a stored cursor,
//!   [`chat::tap::LogFeed`]); beside `edge`, `cluster` and `store`.
//! - [`ops`]: the admin API (`docs/ADMIN.md`), the `/metrics` page (`docs/METRICS.md`) and
//!   the probes.
//! - On top: [`server`] (accepts TCP, serves HTTP until the upgrade, runs the shutdown
//!   sequence; [`run`] is the entry point tests use on port 0) and [`routes`] (which path
//!   goes where).
//!
//! # One chat message, from socket to sockets
//! 1. The sender's [`edge::driver::Driver`] wakes on readable and reads into its worker
//!    thread's scratch buffer (no per-connection buffer while idle); over TLS,
//!    [`transport::wire`] decrypts the ciphertext into it.
//! 2. [`ws::reader::FrameReader::feed`] unmasks the frame in place, reassembles fragments
//!    under the size cap and checks UTF-8.
//! 3. [`protocol::decode`] parses `{"type":"message",...}` into borrowed strings.
//! 4. [`chat::session::Session::on_text`] checks the text and picks the room;
//!    [`chat::backend::Backend::publish`] hands it to [`chat::room::Room::publish`] (single
//!    node in memory; with history on disk [`chat::room::Room::reserve`] gives it to the
//!    [`store`] and the store's writer thread appends it through the same
//!    [`chat::room::Room::append`] once its transaction committed, then has the flushers
//!    write the batch at once ([`chat::flusher::deliver_at_once`]); in cluster mode Redis
//!    assigns the seq and the backplane task appends it), which takes the room lock, assigns
//!    the next `seq`,
//!    encodes the event once and frames it once into a [`ws::Frame`] (a `bytes::Bytes`) and
//!    keeps it in history. It does not touch the members' outboxes: the frame joins the
//!    room's pending events for this scheduler round, and a room with none before enlists
//!    itself on one of the hub's [`chat::flusher`] lists (chosen by the room's address, so
//!    rooms spread over the lists).
//! 5. After the I/O driver's next poll (at once for a batch the store's writer committed),
//!    that list's flusher ([`chat::flusher::run`]) calls
//!    [`chat::room::Room::deliver`]: one pending event is pushed as is into every member's
//!    [`transport::outbox::Outbox`] (a reference-count bump each); several are copied once
//!    into one buffer (one copy per room per round, never per member) and each member gets a
//!    slice of it. An outbox that was idle enlists its connection on a list too (chosen by
//!    connection id), and that list's flusher writes each enlisted queue with one `writev`
//!    ([`transport::outbox::Outbox::flush`]; TLS: through rustls); only a socket that would
//!    block wakes its driver, which then waits for writability and writes the rest.

pub mod chat;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod edge;
pub mod error;
pub mod hooks;
pub mod ops;
pub mod protocol;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod ws;

pub use config::Config;
pub use error::Error;
pub use server::{run, Relay};
pub use telemetry::stats::StatsSnapshot;
