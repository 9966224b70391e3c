//! The shared handle of one client connection: what rooms and the hub hold of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::chat::per_ip::Source;
use crate::transport::outbox::Outbox;

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
    /// Set while its driver does not read it because its commands wait for the hooks
    /// ([`Conn::hold_reads`]). Next to `awaiting_pong`, in what was padding: `Conn` does not
    /// grow.
    reads_held: AtomicBool,
    /// The `userId` in events and `id` in `users` lists: the token's `sub` when
    /// authentication is on, else the same string as `client_id`.
    pub user_id: Arc<str>,
    /// Who the token says this is (authentication on); boxed: most relays run without.
    pub identity: Option<Box<Identity>>,
    /// The budgets of the address it comes from, shared with its other connections.
    pub source: Arc<Source>,
}

impl Conn {
    pub fn new(id: u64, client_id: Arc<str>, peer: SocketAddr, source: Arc<Source>) -> Self {
        Self {
            source,
            id,
            user_id: client_id.clone(),
            client_id,
            peer,
            outbox: Outbox::default(),
            awaiting_pong: AtomicBool::new(false),
            reads_held: AtomicBool::new(false),
            identity: None,
        }
    }

    /// A connection authenticated as `identity`.
    pub fn with_identity(
        id: u64,
        client_id: Arc<str>,
        peer: SocketAddr,
        identity: Option<Identity>,
        source: Arc<Source>,
    ) -> Self {
        let mut conn = Self::new(id, client_id, peer, source);
        if let Some(identity) = identity {
            conn.user_id = identity.user_id.clone();
            conn.identity = Some(Box::new(identity));
        }
        conn
    }

    /// Whether the driver holds the connection's reads for the hooks now (`held`), so the
    /// heartbeat can tell a client that does not answer from one whose pongs the relay left
    /// unread: joins are checked one at a time, so a client that sends several while the
    /// join hook is slow waits up to `--hook-timeout` for each, longer than a ping interval.
    /// The hold is bounded (the commands waiting times `--hook-timeout`), so a dead client is
    /// still closed, later.
    pub(crate) fn hold_reads(&self, held: bool) {
        // Written only on a change: the driver says so on every wake-up, and other threads
        // (the hub, the flushers) read this line.
        if self.reads_held.load(Ordering::Relaxed) == held {
            return;
        }
        if !held {
            // The relay was the holdup: the client's pong may still be unread, so it gets a
            // whole interval from now. Cleared before the hold ends (Release below, Acquire in
            // `reads_held`), so a heartbeat that sees the hold over sees this too.
            self.awaiting_pong.store(false, Ordering::Relaxed);
        }
        self.reads_held.store(held, Ordering::Release);
    }

    /// The driver holds the connection's reads for the hooks: see [`Conn::hold_reads`].
    pub(crate) fn reads_held(&self) -> bool {
        self.reads_held.load(Ordering::Acquire)
    }

    /// Who this connection is as a person, when it is `username` in a room: what presence,
    /// read positions, `ref` de-duplication and message authorship key on. The token's `sub`
    /// with authentication on; without it the username given at join, which is unverified
    /// (anyone may join under any free-form name: docs/PROTOCOL.md says so).
    pub fn person<'a>(&'a self, username: &'a str) -> &'a str {
        match &self.identity {
            Some(identity) => &identity.user_id,
            None => username,
        }
    }
}

/// Who a connection is, from its token. Lives behind `Conn::identity` for the connection's
/// life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: the `userId` other members see.
    pub user_id: Arc<str>,
    /// The `name` claim, or `sub` without one; a `join`'s `username` cannot change it.
    pub username: Arc<str>,
    /// The `rooms` claim: the only rooms this connection may join (`None`: any room).
    pub rooms: Option<Box<[Box<str>]>>,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's claims as JSON, kept only when a join hook wants them (`--join-hook`).
    pub claims: Option<Box<str>>,
}

impl Identity {
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|r| &**r == room))
    }
}
