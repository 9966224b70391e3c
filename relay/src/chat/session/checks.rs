//! A connection's commands that wait for the app backend's hooks (`crate::chat::gate`), and
//! the ones queued behind them.
//!
//! Order: one sender's commands take effect in the order sent. Messages and edits go to the
//! publish hook at once, several in flight, and their answers are applied in order (a later
//! message never overtakes an earlier one still at the hook). A join waits for the join hook
//! alone; every command behind it, or behind any other waiting command, is kept as sent
//! (its text) and carried out when its turn comes.
//!
//! Bounds: at most [`MAX_PUBLISHES`] messages and edits wait per connection (more get
//! `rate_limited`), and while a join or a kept command waits, or the publishes are at their
//! bound, the driver does not read the connection ([`Session::poll_checks`] says so), so what
//! is kept is at most what one read brought in. The hook's timeout bounds every wait.
//! Nothing is allocated for a connection until it first waits, and it is freed when the
//! queue empties.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::Session;
use crate::chat::gate::{GateBusy, JoinVerdict, PublishAsk, PublishVerdict, Ticket};
use crate::chat::room::Room;
use crate::protocol::name::normalize_name;
use crate::protocol::{decode_frame, ErrorCode};

/// Messages and edits of one connection waiting for the publish hook at most.
pub const MAX_PUBLISHES: usize = 32;

#[derive(Debug, Default)]
pub(super) struct Checks {
    queue: VecDeque<Waiting>,
    /// `Publish` entries in `queue`.
    publishes: usize,
}

#[derive(Debug)]
enum Waiting {
    Publish(Ticket<PublishVerdict>, Box<AskedPublish>),
    Join(Ticket<JoinVerdict>, Box<AskedJoin>),
    /// A command behind a waiting one, as the client sent it.
    Kept(Box<str>),
}

/// A message or edit at the publish hook.
#[derive(Debug)]
pub(super) struct AskedPublish {
    reference: Option<Box<str>>,
    /// The room it was sent to (it may have been left since).
    room: Arc<Room>,
    text: Box<str>,
    reply_to: Option<u64>,
    /// An edit of this seq.
    edit: Option<u64>,
}

/// A join at the join hook.
#[derive(Debug)]
pub(super) struct AskedJoin {
    pub(super) reference: Option<Box<str>>,
    /// The room's NFC name.
    pub(super) room: Box<str>,
    pub(super) username: Arc<str>,
    pub(super) since: Option<u64>,
    pub(super) epoch: Option<Box<str>>,
}

impl Checks {
    /// Only messages and edits wait: another may join them at the hook.
    pub(super) fn only_publishes(&self) -> bool {
        self.publishes == self.queue.len()
    }

    /// Keeps a command until the ones before it are done.
    pub(super) fn defer(&mut self, text: &str) {
        self.queue.push_back(Waiting::Kept(text.into()));
    }

    fn push(&mut self, waiting: Waiting) {
        if matches!(waiting, Waiting::Publish(..)) {
            self.publishes += 1;
        }
        self.queue.push_back(waiting);
    }

    fn pop(&mut self) -> Option<Waiting> {
        let front = self.queue.pop_front()?;
        if matches!(front, Waiting::Publish(..)) {
            self.publishes -= 1;
        }
        Some(front)
    }

    /// The connection must not be read for now (see the module's bounds).
    fn hold_reads(&self) -> bool {
        !self.only_publishes() || self.publishes >= MAX_PUBLISHES
    }
}

impl Session {
    /// Whether messages and edits go through the publish hook.
    pub(super) fn publish_checked(&self) -> bool {
        self.hub.gate.as_ref().is_some_and(|g| g.checks_publish())
    }

    /// Sends the message or edit of joined room `at` to the publish hook.
    pub(super) fn ask_publish(
        &mut self,
        at: usize,
        reference: Option<&str>,
        text: &str,
        reply_to: Option<u64>,
        edit: Option<u64>,
    ) {
        if self
            .checks
            .as_ref()
            .is_some_and(|c| c.publishes >= MAX_PUBLISHES)
        {
            return self.error_for(
                reference,
                ErrorCode::RateLimited,
                "too many messages waiting for the publish hook: wait for their acks",
            );
        }
        let Some(gate) = &self.hub.gate else {
            return self.publish_answered(
                reference,
                &self.rooms[at].room.clone(),
                text,
                reply_to,
                edit,
                PublishVerdict::Allow,
            );
        };
        let membership = &self.rooms[at];
        let ask = PublishAsk {
            room: &membership.room.name,
            user_id: &self.conn.user_id,
            username: &membership.username,
            text,
            reference,
            reply_to,
            edit,
        };
        let ticket = match gate.publish(&ask) {
            Ok(ticket) => ticket,
            Err(GateBusy) => return self.hooks_busy(reference),
        };
        let asked = AskedPublish {
            reference: reference.map(Into::into),
            room: membership.room.clone(),
            text: text.into(),
            reply_to,
            edit,
        };
        self.checks
            .get_or_insert_default()
            .push(Waiting::Publish(ticket, Box::new(asked)));
    }

    /// Queues the join (checked by the join hook, answered by `ticket`).
    pub(super) fn wait_for_join(&mut self, ticket: Ticket<JoinVerdict>, asked: AskedJoin) {
        self.checks
            .get_or_insert_default()
            .push(Waiting::Join(ticket, Box::new(asked)));
    }

    /// Whether commands wait for the hooks (or behind them).
    pub(crate) fn checks_pending(&self) -> bool {
        self.checks.is_some()
    }

    /// Applies the hooks' answers that are in, in order, and carries out the commands that
    /// were waiting behind them. True while the connection must not be read (the driver
    /// returns; an answer wakes it).
    pub(crate) fn poll_checks(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let Some(checks) = self.checks.as_mut() else {
                return false;
            };
            let ready = match checks.queue.front_mut() {
                None => {
                    // Nothing waits: the connection holds nothing for the hooks again.
                    self.checks = None;
                    return false;
                }
                Some(Waiting::Kept(_)) => true,
                Some(Waiting::Publish(ticket, _)) => match ticket.poll_verdict(cx) {
                    Poll::Ready(verdict) => {
                        // Put back as `Now` and applied below, once popped.
                        *ticket = Ticket::Now(verdict);
                        true
                    }
                    Poll::Pending => false,
                },
                Some(Waiting::Join(ticket, _)) => match ticket.poll_verdict(cx) {
                    Poll::Ready(verdict) => {
                        *ticket = Ticket::Now(verdict);
                        true
                    }
                    Poll::Pending => false,
                },
            };
            if !ready {
                return checks.hold_reads();
            }
            let Some(front) = checks.pop() else {
                continue;
            };
            // What comes after the front waits while it is carried out: a kept command runs
            // as if nothing waited before it, and whatever it starts waiting for goes ahead of
            // the rest.
            let rest = self.checks.take();
            match front {
                Waiting::Kept(text) => self.replay(&text),
                Waiting::Publish(Ticket::Now(verdict), asked) => {
                    let AskedPublish {
                        reference,
                        room,
                        text,
                        reply_to,
                        edit,
                    } = *asked;
                    self.publish_answered(
                        reference.as_deref(),
                        &room,
                        &text,
                        reply_to,
                        edit,
                        verdict,
                    );
                }
                Waiting::Join(Ticket::Now(verdict), asked) => self.join_answered(*asked, verdict),
                // Made `Now` above before `ready`.
                Waiting::Publish(Ticket::Later(_), asked) => self.publish_answered(
                    asked.reference.as_deref(),
                    &asked.room,
                    &asked.text,
                    asked.reply_to,
                    asked.edit,
                    PublishVerdict::Unavailable,
                ),
                Waiting::Join(Ticket::Later(_), asked) => {
                    self.join_answered(*asked, JoinVerdict::Unavailable)
                }
            }
            self.rejoin(rest);
        }
    }

    /// Puts `rest` (what waited behind the command just carried out) after whatever that
    /// command started waiting for.
    fn rejoin(&mut self, rest: Option<Box<Checks>>) {
        let Some(mut rest) = rest else {
            return;
        };
        match &mut self.checks {
            None => self.checks = Some(rest),
            Some(started) => {
                started.publishes += rest.publishes;
                started.queue.append(&mut rest.queue);
            }
        }
    }

    /// A command kept behind a waiting one, carried out now (its rate was charged when it
    /// arrived).
    fn replay(&mut self, text: &str) {
        let decoded = decode_frame(text);
        let reference = decoded.reference.as_deref();
        self.run(decoded.command, reference);
    }

    fn publish_answered(
        &mut self,
        reference: Option<&str>,
        room: &Arc<Room>,
        text: &str,
        reply_to: Option<u64>,
        edit: Option<u64>,
        verdict: PublishVerdict,
    ) {
        // Still a member? It may have left while the hook thought.
        let Some(at) = self.rooms.iter().position(|m| Arc::ptr_eq(&m.room, room)) else {
            return self.not_joined(reference, Some(&room.name));
        };
        let replaced;
        let text = match verdict {
            PublishVerdict::Allow => text,
            PublishVerdict::Replace(text) => {
                // The backend's text obeys the same bounds as the sender's.
                if let Err((code, message)) = self.text_fits(&text) {
                    return self.error_for(reference, code, &message);
                }
                replaced = text;
                &*replaced
            }
            PublishVerdict::Refuse(reason) => {
                return self.error_for(reference, ErrorCode::Rejected, &reason)
            }
            PublishVerdict::Unavailable => {
                return self.error_for(
                    reference,
                    ErrorCode::HookUnavailable,
                    "the publish hook did not answer; the message was not sent, retry later",
                )
            }
        };
        match edit {
            None => self.message_now(at, reference, text, reply_to),
            Some(target) => self.change_now(at, reference, target, Some(text)),
        }
    }

    fn join_answered(&mut self, asked: AskedJoin, verdict: JoinVerdict) {
        let reference = asked.reference.as_deref();
        let rename = match verdict {
            JoinVerdict::Allow => None,
            // The gate hands over a valid name; normalizing again costs little and keeps an
            // implementation's mistake from reaching the room.
            JoinVerdict::Rename(name) => normalize_name(&name).map(|name| Arc::from(&*name)),
            JoinVerdict::Deny(reason) => {
                return self.error_for(reference, ErrorCode::ForbiddenRoom, &reason)
            }
            JoinVerdict::Unavailable => {
                return self.error_for(
                    reference,
                    ErrorCode::HookUnavailable,
                    "the join hook did not answer; retry the join later",
                )
            }
        };
        self.join_now(
            reference,
            &asked.room,
            asked.username,
            rename,
            asked.since,
            asked.epoch.as_deref(),
        );
    }
}
