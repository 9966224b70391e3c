//! What enters a room's order besides its seq: a message's sender and fields, or an edit or
//! delete of one, with the checks the room's log must pass first (a `replyTo` names one of
//! its messages; only the author changes a message).

use std::sync::Arc;

use super::log::Log;
use crate::chat::client::Conn;
use crate::protocol::event::{Stored, SERVER_USER_ID};

/// A chat message on its way into a room: who sends it and what the event carries.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The connection that sent it (`None`: the admin API's server messages).
    pub sender: Option<&'a Arc<Conn>>,
    pub user_id: &'a str,
    pub username: &'a str,
    pub text: &'a str,
    /// `replyTo`: a seq of this room (checked against the room's latest).
    pub reply_to: Option<u64>,
    /// The sender's `ref` and who it is as a person ([`Conn::person`]): the message is
    /// acknowledged, and a resend of the same `ref` within the dedupe window is not
    /// delivered again.
    pub reference: Option<(&'a str, &'a str)>,
    /// Not a new message but an edit (`text` is the new text) or a delete of one: the event
    /// is then `message_edited` / `message_deleted`, after the checks of [`Edit`].
    pub change: Option<Edit<'a>>,
}

/// An edit or delete of the room's message `target`.
#[derive(Debug, Clone, Copy)]
pub struct Edit<'a> {
    pub target: u64,
    pub delete: bool,
    /// Who asks; `None`: the admin API, which may delete any message (moderation).
    pub by: Option<Author<'a>>,
    /// The target's event as the backend read it, when the room no longer keeps it in
    /// memory (history on disk).
    pub stored: Option<&'a [u8]>,
}

/// Who may change a message: its author. With authentication on that is the token's `sub`
/// (the event's `userId`); without, the username (unverified, like presence).
#[derive(Debug, Clone, Copy)]
pub struct Author<'a> {
    pub authenticated: bool,
    pub user_id: &'a str,
    pub username: &'a str,
}

impl Author<'_> {
    fn wrote(&self, message: &Stored) -> bool {
        message.user_id != SERVER_USER_ID
            && if self.authenticated {
                message.user_id == self.user_id
            } else {
                message.username == self.username
            }
    }
}

impl Edit<'_> {
    /// Whether the change may go ahead, given the room's log (the target's event, kept in
    /// memory or read by the backend).
    pub(crate) fn check(&self, log: &Log) -> Result<(), SendRefusal> {
        let json = log.kept(self.target).or(self.stored);
        let message = json.and_then(Stored::parse).filter(|m| !m.deleted);
        let Some(message) = message else {
            return Err(SendRefusal::NoSuchMessage);
        };
        match self.by {
            Some(by) if !by.wrote(&message) => Err(SendRefusal::NotAuthor),
            _ => Ok(()),
        }
    }
}

impl<'a> Outgoing<'a> {
    /// A plain message from `sender`, as before `ref` and `replyTo` existed.
    pub fn plain(sender: &'a Arc<Conn>, username: &'a str, text: &'a str) -> Self {
        Self {
            sender: Some(sender),
            user_id: &sender.user_id,
            username,
            text,
            reply_to: None,
            reference: None,
            change: None,
        }
    }

    /// A server message (the admin API's): no sender, no `ref`.
    pub fn server(user_id: &'a str, username: &'a str, text: &'a str) -> Self {
        Self {
            sender: None,
            user_id,
            username,
            text,
            reply_to: None,
            reference: None,
            change: None,
        }
    }

    /// Checks what the room's log must say first: `replyTo` names one of its messages, an
    /// edit's target is a message its sender wrote.
    pub(crate) fn check(&self, log: &Log) -> Result<(), SendRefusal> {
        if self.reply_to.is_some_and(|r| r == 0 || r > log.seq()) {
            return Err(SendRefusal::NoSuchMessage);
        }
        self.change.as_ref().map_or(Ok(()), |c| c.check(log))
    }
}

/// Why a room did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefusal {
    /// `replyTo`, or an edit's or delete's target, names no message of the room (or a
    /// deleted one).
    NoSuchMessage,
    /// An edit or delete of someone else's message.
    NotAuthor,
    /// The backend cannot take it now (its queue is full, or the room was retired).
    Busy,
}
