//! The app's backend in the loop: HTTP hooks the relay calls (docs/HOOKS.md).
//!
//! - [`webhook`]: `--webhook-url`: every room's events, batched, signed and delivered at
//!   least once in seq order per room; a [`crate::chat::tap::Tap`] on the chat core, and with
//!   a durable store a reader of its log through a stored cursor.

pub mod webhook;
