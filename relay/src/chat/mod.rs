//! The chat core: rooms, their members and logs, and what one client may do. It knows
//! nothing of sockets beyond a connection's [`crate::transport::outbox`], nothing of HTTP, and
//! nothing of Redis: where a room's log lives is the [`backend`] seam.
//!
//! - [`session`]: a connection's rooms and username; turns each command into one call on the
//!   [`backend`].
//! - [`backend`]: the seam for where rooms' logs live (memory, or a [`backend::RemoteLog`]
//!   such as the Redis backplane): who orders a room's messages and who knows its members.
//! - [`hub`]: the node's rooms (a sharded map) and connections; heartbeats, room expiry.
//! - [`room`]: one room's members, log (`room::log`: epoch, seq, history; the one ordering
//!   and replay path) and fan-out, the same for every backend.
//! - [`history`]: a room's kept messages, bounded by count and bytes, and the node's budget.
//! - [`flusher`]: the flush lists and their tasks, which deliver each enlisted room's pending
//!   events and write every connection that got frames this scheduler round.
//! - [`client`]: what the core knows of one connection (its outbox, identity, source).
//! - [`per_ip`]: what one source address may do across its connections; [`ratelimit`]: the
//!   token buckets every rate limit uses.
//! - [`tap`]: the seam through which rooms' events reach an observer outside the core (the
//!   webhooks), and a durable store's log as a feed with a cursor.

pub mod backend;
pub mod client;
pub mod flusher;
pub mod gate;
pub mod history;
pub mod hub;
pub mod per_ip;
pub mod ratelimit;
pub mod room;
pub mod session;
pub mod tap;
