//! The seam between the chat core and the app backend's decisions: may this message be
//! published (the publish hook), may this person join this room (the join hook).
//!
//! Defined here, implemented by `crate::hooks` (HTTP), wired by `server.rs`, like
//! [`crate::chat::backend::Journal`]. A [`Gate`] call never waits: it starts the question
//! and returns a [`Ticket`] that the connection's driver polls, so no driver ever awaits a
//! hook and a slow backend delays only the connections that wait for it
//! (`crate::chat::session`'s pending checks keep each connection's commands in order).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// What the publish hook is asked about: a message, or an edit (`edit`: its target seq).
#[derive(Debug, Clone, Copy)]
pub struct PublishAsk<'a> {
    pub room: &'a str,
    pub user_id: &'a str,
    pub username: &'a str,
    pub text: &'a str,
    pub reference: Option<&'a str>,
    pub reply_to: Option<u64>,
    pub edit: Option<u64>,
}

/// What the join hook is asked about. `claims`: the token's claims as JSON (authentication
/// on), else `None`.
#[derive(Debug, Clone, Copy)]
pub struct JoinAsk<'a> {
    pub room: &'a str,
    pub user_id: &'a str,
    pub username: &'a str,
    /// Who this is as a person ([`crate::chat::client::Conn::person`]: the token's `sub`,
    /// else the username): what a cached answer is kept under.
    pub person: &'a str,
    pub claims: Option<&'a str>,
}

/// The publish hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVerdict {
    Allow,
    /// Allowed with this text instead (filtered).
    Replace(Box<str>),
    /// Refused, with the backend's reason (`rejected`).
    Refuse(Box<str>),
    /// No decision (timeout, unreachable, nonsense) and `--hook-failure closed`.
    Unavailable,
}

/// The join hook's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinVerdict {
    Allow,
    /// Allowed, shown in this room under this name (already a valid, normalized name).
    Rename(Box<str>),
    /// Denied, with the backend's reason (`forbidden_room`).
    Deny(Box<str>),
    /// No decision and `--hook-failure closed`.
    Unavailable,
}

/// Too many checks are under way on the node: the command is refused (`server_busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateBusy;

/// A decision now (a cached join answer; no hook configured) or later.
#[derive(Debug)]
pub enum Ticket<V> {
    Now(V),
    Later(oneshot::Receiver<V>),
}

/// What decides. Implementations answer each ticket exactly once; a ticket whose sender is
/// dropped unanswered reads as unavailable.
pub trait Gate: fmt::Debug + Send + Sync {
    /// Whether messages and edits are checked at all.
    fn checks_publish(&self) -> bool;
    /// Whether joins are checked at all.
    fn checks_join(&self) -> bool;
    /// Starts the publish check of `ask`.
    fn publish(&self, ask: &PublishAsk<'_>) -> Result<Ticket<PublishVerdict>, GateBusy>;
    /// Starts the join check of `ask`.
    fn join(&self, ask: &JoinAsk<'_>) -> Result<Ticket<JoinVerdict>, GateBusy>;
}

/// A verdict type's reading of a check that ended without one.
pub trait Undecided {
    fn undecided() -> Self;
}

impl Undecided for PublishVerdict {
    fn undecided() -> Self {
        PublishVerdict::Unavailable
    }
}

impl Undecided for JoinVerdict {
    fn undecided() -> Self {
        JoinVerdict::Unavailable
    }
}

impl<V: Undecided + Unpin> Ticket<V> {
    /// The decision once there is one (registers `cx` until then).
    pub fn poll_verdict(&mut self, cx: &mut Context<'_>) -> Poll<V> {
        match self {
            Ticket::Now(_) => {
                let Ticket::Now(verdict) = std::mem::replace(self, Ticket::Now(V::undecided()))
                else {
                    return Poll::Ready(V::undecided());
                };
                Poll::Ready(verdict)
            }
            Ticket::Later(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(verdict)) => Poll::Ready(verdict),
                Poll::Ready(Err(_)) => Poll::Ready(V::undecided()),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
