//! What carries a connection's bytes: its [`outbox`] (the outbound queue with the
//! slow-consumer cap) and the [`wire`] under it (plain TCP, or rustls over the same socket).

pub mod outbox;
pub mod wire;
