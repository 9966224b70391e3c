//! The network edge: everything between a TCP socket and the chat core. A connection is
//! admitted ([`admission`], with the client's address from [`forwarded`]), its HTTP requests
//! are served under the limits in [`http`], its upgrade passes [`security`] (Origin, and the
//! token through [`auth`]), and then one [`driver`] task per WebSocket reads, dispatches to a
//! [`crate::chat::session::Session`] and writes, over plain TCP or [`tls`] alike.
//!
//! - [`fd_limit`]: the open-files limit and the connection capacity it gives.
//! - [`shutdown`]: waits for SIGINT or SIGTERM.
//! - [`linger`]: a closing HTTP socket's last bytes are given time to leave.

pub mod admission;
pub mod auth;
pub mod driver;
pub mod fd_limit;
pub mod forwarded;
pub mod http;
pub mod linger;
pub mod security;
pub mod shutdown;
pub mod tls;
pub mod upgrade;
