//! WebSocket framing (RFC 6455) for the relay's own read and write paths.
//!
//! fastwebsockets does the HTTP upgrade; after it the relay takes the raw `TcpStream` back and
//! frames by hand, because the connection must (a) read into a per-thread scratch buffer
//! instead of an 8 KiB buffer per connection, (b) cap the *reassembled* size of fragmented
//! messages, (c) answer oversize with a real 1009 close frame, and (d) write pre-built shared
//! frames with one vectored write: fastwebsockets 0.10 does none of these.
//!
//! Conformance: `relay/examples/echo.rs` is an echo server on exactly this reader and frame
//! builder, and `scripts/autobahn.sh` (part of `scripts/test.sh`) runs the Autobahn cases
//! against it; `results/autobahn-summary.md` has the last run.

pub mod frame;
pub mod reader;

pub use frame::{Frame, FrameBuilder, OpCode};
