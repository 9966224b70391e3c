//! The shared handle of one client connection: what rooms and the hub hold of it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::outbox::Outbox;

/// A connected client as seen from outside its own task. Kept small: one of these lives for
/// every open connection.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    /// The `clientId` / `userId` other members see.
    pub client_id: Arc<str>,
    pub peer: SocketAddr,
    pub outbox: Outbox,
    /// Set when a ping goes out, cleared by any frame from the client; still set at the next
    /// ping means the client is gone.
    pub(crate) awaiting_pong: AtomicBool,
}

impl Conn {
    pub fn new(id: u64, client_id: Arc<str>, peer: SocketAddr) -> Self {
        Self {
            id,
            client_id,
            peer,
            outbox: Outbox::default(),
            awaiting_pong: AtomicBool::new(false),
        }
    }
}
