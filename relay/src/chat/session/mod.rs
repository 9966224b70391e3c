//! One connection's chat state and command handling: what it joined, under which name.
//! Leaving is here, joining in `join`, the commands in a joined room in `commands`, and the
//! commands that wait for the app's hooks in `checks`.
//!
//! Runs inside the connection's task, synchronously: every command completes without an
//! await, so it can borrow straight from the frame in the read buffer.

mod checks;
mod commands;
mod join;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;

use tokio::time::Sleep;

use crate::chat::backend::Leave;
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::ratelimit::{Kind, Throttle, Verdict};
use crate::chat::room::Room;
use crate::protocol::name::normalize_name;
use crate::protocol::{decode_frame, event, CloseCode, Command, CommandError, ErrorCode};
use crate::transport::outbox::Priority;

/// A `history` command's `limit` when it gives none, and the most it may ask for.
const HISTORY_DEFAULT_LIMIT: u64 = 50;
const HISTORY_MAX_LIMIT: u64 = 100;

#[derive(Debug)]
struct Membership {
    room: Arc<Room>,
    username: Arc<str>,
}

#[derive(Debug)]
pub struct Session {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
    /// Joined rooms, the current room last.
    rooms: Vec<Membership>,
    username: Option<Arc<str>>,
    /// The connection's own rate limits; `None` when every one is off (benchmarks).
    budget: Option<Box<Budget>>,
    /// Commands waiting for the publish or join hook, and those queued behind them, in
    /// arrival order (`checks`); `None` while nothing waits, so an idle connection holds
    /// nothing for the hooks.
    checks: Option<Box<checks::Checks>>,
}

/// A connection's rate-limit buckets and frame-budget pause. Boxed: inline they would grow
/// every connection's task past its 256-byte cell (see `edge::driver::Driver`).
#[derive(Debug)]
struct Budget {
    throttle: Throttle,
    /// Over its frame budget: the connection is not read until this fires.
    paused: Option<Pin<Box<Sleep>>>,
}

impl Session {
    pub fn new(hub: Arc<Hub>, conn: Arc<Conn>) -> Self {
        let limits = &hub.limits;
        let any_on = !(limits.message_rate.is_off()
            && limits.command_rate.is_off()
            && limits.frame_rate.is_off());
        let budget = any_on.then(|| {
            Box::new(Budget {
                throttle: Throttle::new(
                    &limits.message_rate,
                    &limits.command_rate,
                    limits.strike_rate.as_ref(),
                    &limits.frame_rate,
                ),
                paused: None,
            })
        });
        Self {
            hub,
            conn,
            rooms: Vec::new(),
            username: None,
            budget,
            checks: None,
        }
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Answers a WebSocket ping.
    pub(crate) fn pong(&self, payload: &[u8]) {
        self.hub.push_to(
            &self.conn,
            crate::ws::Frame::new(crate::ws::OpCode::Pong, payload).bytes(),
            Priority::Normal,
        );
    }

    /// Charges `frames` just read to the frame budget; past it the connection is paused
    /// (not read) until the debt is paid.
    pub(crate) fn charge_frames(&mut self, frames: u32) {
        let rate = &self.hub.limits.frame_rate;
        let Some(budget) = &mut self.budget else {
            return;
        };
        if rate.is_off() || frames == 0 {
            return;
        }
        let wait =
            budget
                .throttle
                .frames
                .take_many(rate, crate::chat::ratelimit::clock_ms(), frames);
        if !wait.is_zero() {
            self.hub.stats.frame_pauses.fetch_add(1, Ordering::Relaxed);
            budget.paused = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }

    /// Polls the frame-budget pause: true while the connection must not be read.
    pub(crate) fn poll_paused(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(pause) = self.budget.as_mut().and_then(|b| b.paused.as_mut()) else {
            return false;
        };
        if pause.as_mut().poll(cx).is_pending() {
            return true;
        }
        if let Some(budget) = &mut self.budget {
            budget.paused = None;
        }
        false
    }

    /// Charges one command to the rate limits; false when it must not be carried out (the
    /// client got a `rate_limited` error, or is being closed with 4029).
    fn within_rate(&mut self, kind: Kind, reference: Option<&str>) -> bool {
        let limits = &self.hub.limits;
        let verdict = self.budget.as_mut().map_or(Verdict::Allow, |b| {
            b.throttle.check(
                kind,
                &limits.message_rate,
                &limits.command_rate,
                limits.strike_rate.as_ref(),
            )
        });
        // The address's bucket after the connection's own: a refusal by either counts as a
        // strike the same way.
        let verdict = match verdict {
            Verdict::Allow if !self.conn.source.allow(kind, &self.hub.sources.limits) => {
                self.budget.as_mut().map_or(Verdict::Refuse, |b| {
                    b.throttle.strike(limits.strike_rate.as_ref())
                })
            }
            verdict => verdict,
        };
        match verdict {
            Verdict::Allow => true,
            Verdict::Refuse => {
                self.hub.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                self.error_for(
                    reference,
                    ErrorCode::RateLimited,
                    match kind {
                        Kind::Message => "too many messages: slow down",
                        Kind::Command => "too many commands: slow down",
                    },
                );
                false
            }
            Verdict::Close => {
                if self
                    .conn
                    .outbox
                    .close(crate::transport::outbox::CloseRequest {
                        code: CloseCode::RateLimited.code(),
                        reason: "rate limit exceeded",
                        discard: false,
                    })
                {
                    self.hub
                        .stats
                        .rate_limit_closes
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(unlogged) = self.hub.rate_limit_log.due() {
                        tracing::info!(peer = %self.conn.peer, client = %self.conn.client_id, unlogged, "closing connection that keeps exceeding the rate limit (at most one line a second; `unlogged` counts the others since the last line)");
                    }
                }
                false
            }
        }
    }

    pub fn error(&self, code: ErrorCode, message: &str) {
        self.error_for(None, code, message);
    }

    /// An `error` for a command that carried `reference` (its `ref`), which it echoes.
    fn error_for(&self, reference: Option<&str>, code: ErrorCode, message: &str) {
        self.hub.stats.errors_sent.fetch_add(1, Ordering::Relaxed);
        self.hub.push_to(
            &self.conn,
            event::error_for(code, message, reference).bytes(),
            Priority::Normal,
        );
    }

    /// A binary message: refused with an `error`, and counted as a command first so that a
    /// flood of them earns `rate_limited`, then 4029, not one reply per frame.
    pub fn on_binary(&mut self) {
        self.hub.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        if self.within_rate(Kind::Command, None) {
            self.error(
                ErrorCode::BinaryNotSupported,
                "binary messages are not supported; send JSON text",
            );
        }
    }

    /// Handles one text message from the client.
    pub fn on_text(&mut self, text: &str) {
        self.hub.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let decoded = decode_frame(text);
        let reference = decoded.reference.as_deref();
        let kind = match decoded.command {
            // Edits and deletes are sequenced and fanned out like messages, so they share
            // the message budget.
            Ok(Command::Message { .. } | Command::Edit { .. } | Command::Delete { .. }) => {
                Kind::Message
            }
            _ => Kind::Command,
        };
        if !self.within_rate(kind, reference) {
            return;
        }
        // Behind a command that waits for a hook, a command waits its turn: one sender's
        // commands take effect in the order sent. Only messages and edits behind other
        // messages and edits go to the hook at once (their answers are applied in order).
        if let Some(checks) = &mut self.checks {
            let pipelined = matches!(
                decoded.command,
                Ok(Command::Message { .. } | Command::Edit { .. })
            );
            if !(pipelined && checks.only_publishes()) {
                checks.defer(text);
                return;
            }
        }
        self.run(decoded.command, reference);
    }

    /// Carries out a decoded command (its rate already charged).
    fn run(&mut self, command: Result<Command<'_>, CommandError>, reference: Option<&str>) {
        match command {
            Err(err) => self.error_for(reference, err.code, &err.message),
            Ok(Command::Join {
                room,
                username,
                since,
                epoch,
            }) => self.join(
                reference,
                &room,
                username.as_deref(),
                since,
                epoch.as_deref(),
            ),
            Ok(Command::Message {
                room,
                text,
                reply_to,
            }) => self.message(reference, room.as_deref(), &text, reply_to),
            Ok(Command::Typing { room, is_typing }) => {
                self.typing(reference, room.as_deref(), is_typing);
            }
            Ok(Command::Leave { room }) => self.leave(reference, room.as_deref()),
            Ok(Command::History {
                room,
                before,
                limit,
            }) => self.history(reference, room.as_deref(), before, limit),
            Ok(Command::Edit { room, seq, text }) => {
                self.change(reference, room.as_deref(), seq, Some(&text));
            }
            Ok(Command::Delete { room, seq }) => self.change(reference, room.as_deref(), seq, None),
            Ok(Command::Read { room, seq }) => self.read(reference, room.as_deref(), seq),
            Ok(Command::Ping) => {
                self.hub
                    .push_to(&self.conn, event::pong().bytes(), Priority::Normal);
            }
        }
    }

    fn busy(&self, reference: Option<&str>) {
        self.error_for(
            reference,
            ErrorCode::ServerBusy,
            "the relay is busy (its queue for Redis or the disk is full); retry shortly",
        );
    }

    /// Too many questions are under way at the hooks on this node (`server_busy`).
    fn hooks_busy(&self, reference: Option<&str>) {
        self.error_for(
            reference,
            ErrorCode::ServerBusy,
            "the relay is busy (too many questions wait for the app's hooks); retry shortly",
        );
    }

    /// The named joined room, or the current one.
    fn resolve(&self, name: Option<&str>) -> Option<usize> {
        match name {
            Some(name) => {
                // Joined rooms are kept in NFC: a client may name one in another form. A name
                // that is not valid was never joined.
                let name = normalize_name(name)?;
                self.rooms.iter().position(|m| *m.room.name == *name)
            }
            None => self.rooms.len().checked_sub(1),
        }
    }

    fn not_joined(&self, reference: Option<&str>, name: Option<&str>) {
        match name {
            Some(_) => self.error_for(
                reference,
                ErrorCode::NotJoined,
                "not a member of that room; join it first",
            ),
            None => self.error_for(reference, ErrorCode::NotJoined, "join a room first"),
        }
    }

    fn leave(&mut self, reference: Option<&str>, room: Option<&str>) {
        let Some(at) = self.resolve(room) else {
            return self.not_joined(reference, room);
        };
        let membership = self.rooms.remove(at);
        self.hub.backend.leave(
            &self.hub,
            &self.conn,
            membership.room,
            membership.username,
            Leave::Asked,
        );
    }

    /// Leaves every room (the connection ended).
    pub fn leave_all(&mut self) {
        for membership in self.rooms.drain(..) {
            self.hub.backend.leave(
                &self.hub,
                &self.conn,
                membership.room,
                membership.username,
                Leave::Disconnected,
            );
        }
    }
}
