//! The client side of RFC 6455, as pure functions over byte slices: the upgrade handshake,
//! masked client frames and a header reader for server frames. The load generator and the
//! relay's raw test client share it, so neither carries its own copy of the framing rules.
//!
//! It does no I/O: callers own their sockets (tokio, std or TLS) and feed bytes in.
//!
//! - [`handshake`]: client key, upgrade request, upgrade response check, accept key.
//! - [`frame`]: opcodes, masked client frames, unmasked server frames (for fake servers),
//!   masking, the frame [`Header`] reader.
//! - [`base64`]: standard padded base64 (the handshake's, also handy for binary over text).

pub mod base64;
pub mod frame;
pub mod handshake;

pub use base64::{base64_decode, base64_encode};
pub use frame::{
    apply_mask, parse_header, put_client_frame, put_masked_frame, put_server_frame, Header,
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
};
pub use handshake::{
    accept_key, check_upgrade_response, client_key, upgrade_request, upgrade_request_with,
};
