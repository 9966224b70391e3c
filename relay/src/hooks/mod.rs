//! The app backend's HTTP hooks: the backend hears what happens in the chat and decides
//! what may happen (docs/HOOKS.md).
//!
//! - [`http`]: the one pooled keep-alive client every hook uses, with its limits, its
//!   failure kinds (the metrics' `kind` label) and the HMAC signature (`--webhook-secret`).
//! - [`webhook`]: `--webhook-url`: every room's events, batched, signed and delivered at
//!   least once in seq order per room; the hub's [`crate::chat::tap::Tap`], and with a
//!   durable store a reader of its log through a stored cursor.
//! - [`gate`]: the publish hook and the join hook, the chat core's
//!   [`crate::chat::gate::Gate`] over HTTP.
//!
//! The chat core does not depend on this layer: it defines the seams, this implements
//! them, and `server.rs` wires them up.

pub mod gate;
pub mod http;
pub mod webhook;
