//! The commands that act in a room the connection has joined: messages (with their `ref`
//! and `replyTo`), edits and deletes, typing, read positions and scroll-back. Each checks
//! membership first, then its own fields, then hands the room to the backend.

use crate::chat::backend::Page;
use crate::chat::room::{Author, Edit, Outgoing, SendRefusal};
use crate::protocol::ErrorCode;

use super::{Session, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};

impl Session {
    /// An edit (`text`: the new text) or delete of the sender's own message `target`.
    /// Edits go through the publish hook like messages (an edit can carry spam too);
    /// deletes do not.
    pub(super) fn change(
        &mut self,
        reference: Option<&str>,
        room: Option<&str>,
        target: u64,
        text: Option<&str>,
    ) {
        let Some(at) = self.resolve(room) else {
            return self.not_joined(reference, room);
        };
        if let Some(text) = text {
            if let Err((code, message)) = self.text_fits(text) {
                return self.error_for(reference, code, &message);
            }
            if self.publish_checked() {
                return self.ask_publish(at, reference, text, None, Some(target));
            }
        }
        self.change_now(at, reference, target, text);
    }

    /// Publishes the edit or delete (checked, allowed) into joined room `at`.
    pub(super) fn change_now(
        &self,
        at: usize,
        reference: Option<&str>,
        target: u64,
        text: Option<&str>,
    ) {
        let membership = &self.rooms[at];
        let out = Outgoing {
            sender: Some(&self.conn),
            user_id: &self.conn.user_id,
            username: &membership.username,
            text: text.unwrap_or_default(),
            reply_to: None,
            reference: None,
            change: Some(Edit {
                target,
                delete: text.is_none(),
                by: Some(Author {
                    authenticated: self.conn.identity.is_some(),
                    user_id: &self.conn.user_id,
                    username: &membership.username,
                }),
                stored: None,
            }),
        };
        if let Err(refusal) = self.hub.backend.publish(&self.hub, &membership.room, &out) {
            self.send_refused(reference, refusal);
        }
    }

    /// A message's (or an edit's) text is 1 to `--max-text-chars` characters.
    pub(super) fn text_fits(&self, text: &str) -> Result<(), (ErrorCode, String)> {
        if text.is_empty() {
            return Err((ErrorCode::EmptyText, "text is empty".into()));
        }
        let max = self.hub.limits.max_text_chars;
        // Bytes bound characters from above, so most texts skip the count.
        if text.len() > max && text.chars().count() > max {
            return Err((
                ErrorCode::TextTooLong,
                format!("text longer than {max} characters"),
            ));
        }
        Ok(())
    }

    pub(super) fn message(
        &mut self,
        reference: Option<&str>,
        room: Option<&str>,
        text: &str,
        reply_to: Option<u64>,
    ) {
        let Some(at) = self.resolve(room) else {
            return self.not_joined(reference, room);
        };
        if let Err((code, message)) = self.text_fits(text) {
            return self.error_for(reference, code, &message);
        }
        if reference.is_some_and(|r| r.is_empty() || (r.len() > 64 && r.chars().count() > 64)) {
            return self.error_for(None, ErrorCode::InvalidRef, "ref must be 1-64 characters");
        }
        if self.publish_checked() {
            let membership = &self.rooms[at];
            let person = self.conn.person(&membership.username);
            // A resend of a ref the room still remembers only gets its `ack` again: it
            // needs no second decision (cluster mode remembers refs in Redis, so there a
            // resend is asked again). Behind messages still at the hook it waits its turn
            // like any other, so the acks keep the order of the sends.
            let resent = self.checks.is_none()
                && reference.is_some_and(|r| membership.room.remembers(&self.hub, person, r));
            if !resent {
                return self.ask_publish(at, reference, text, reply_to, None);
            }
        }
        self.message_now(at, reference, text, reply_to);
    }

    /// Publishes the message (checked, allowed) into joined room `at`.
    pub(super) fn message_now(
        &self,
        at: usize,
        reference: Option<&str>,
        text: &str,
        reply_to: Option<u64>,
    ) {
        let membership = &self.rooms[at];
        let out = Outgoing {
            sender: Some(&self.conn),
            user_id: &self.conn.user_id,
            username: &membership.username,
            text,
            reply_to,
            reference: reference.map(|r| (self.conn.person(&membership.username), r)),
            change: None,
        };
        match self.hub.backend.publish(&self.hub, &membership.room, &out) {
            Ok(()) => {}
            Err(SendRefusal::Busy) => self.busy(reference),
            Err(refusal) => self.send_refused(reference, refusal),
        }
    }

    pub(super) fn send_refused(&self, reference: Option<&str>, refusal: SendRefusal) {
        match refusal {
            SendRefusal::Busy => self.busy(reference),
            SendRefusal::NoSuchMessage => self.error_for(
                reference,
                ErrorCode::NoSuchMessage,
                "no such message in this room (or it was deleted)",
            ),
            SendRefusal::NotAuthor => self.error_for(
                reference,
                ErrorCode::NotAuthor,
                "only the author can change a message",
            ),
        }
    }

    pub(super) fn typing(&self, reference: Option<&str>, room: Option<&str>, is_typing: bool) {
        let Some(at) = self.resolve(room) else {
            return self.not_joined(reference, room);
        };
        let membership = &self.rooms[at];
        self.hub.backend.typing(
            &self.hub,
            &membership.room,
            &self.conn,
            &membership.username,
            is_typing,
        );
    }

    /// Scroll-back: membership first, then the page's bounds (`docs/PROTOCOL.md`).
    pub(super) fn history(
        &self,
        reference: Option<&str>,
        room: Option<&str>,
        before: Option<u64>,
        limit: Option<u64>,
    ) {
        let Some(at) = self.resolve(room) else {
            return self.not_joined(reference, room);
        };
        let limit = limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
        if !(1..=HISTORY_MAX_LIMIT).contains(&limit) || before == Some(0) {
            return self.error_for(
                reference,
                ErrorCode::InvalidHistory,
                "history wants a limit of 1-100 and a before of at least 1",
            );
        }
        let page = Page {
            before,
            // At most 100: fits any usize.
            limit: limit as usize,
        };
        let membership = &self.rooms[at];
        if self
            .hub
            .backend
            .history(&self.hub, &self.conn, &membership.room, page)
            .is_err()
        {
            self.busy(reference);
        }
    }

    /// Read state: membership first, then the seq (`docs/PROTOCOL.md`).
    pub(super) fn read(&self, reference: Option<&str>, room: Option<&str>, seq: Option<u64>) {
        let Some(at) = self.resolve(room) else {
            return self.not_joined(reference, room);
        };
        let Some(seq) = seq.filter(|&s| s > 0) else {
            return self.error_for(
                reference,
                ErrorCode::InvalidRead,
                "read wants a seq of at least 1",
            );
        };
        let membership = &self.rooms[at];
        self.hub.backend.read(
            &self.hub,
            &self.conn,
            &membership.room,
            &membership.username,
            seq,
        );
    }
}
