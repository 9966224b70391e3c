//! The chat protocol: client commands in, events out (see `docs/PROTOCOL.md`).

pub mod codes;
pub mod command;
pub mod event;
pub mod json;
pub mod name;

pub use codes::{CloseCode, ErrorCode};
pub use command::{decode, decode_frame, Command, CommandError, Decoded};
pub use name::{normalize_name, valid_name};
