//! Presence grace in cluster mode: a member that disconnected leaves the room on this node
//! at once (nothing more is delivered to it) but stays in Redis for `--presence-grace`, so
//! a reload or a short network drop shows the others no leave and join.
//!
//! When the grace has passed its field is removed through the leave script, which announces
//! `user_left` only if no field of the person remains anywhere. A rejoin of the person on
//! another node needs nothing (its join finds the person present and announces nothing, and
//! so does the delayed leave); on this node the task settles the person's pending departures
//! right after such a join (silently: the person is present), and right before an explicit
//! `leave` of the person (so the one announced at once is the last one).

use std::collections::HashMap;
use std::sync::Arc;

use super::task::Task;
use super::Command;
use crate::chat::client::Conn;
use crate::chat::room::Room;

/// A disconnected member still in Redis.
#[derive(Debug)]
pub(super) struct Gone {
    pub(super) conn: Arc<Conn>,
    pub(super) room: Arc<Room>,
    pub(super) username: Arc<str>,
}

impl Gone {
    fn into_depart(self) -> Command {
        Command::Depart {
            conn: self.conn,
            room: self.room,
            username: self.username,
        }
    }
}

/// Pending departures by room name and person.
#[derive(Debug, Default)]
pub(super) struct Departing(HashMap<Arc<str>, HashMap<Box<str>, Vec<Gone>>>);

impl Departing {
    fn add(&mut self, gone: Gone) {
        let person: Box<str> = gone.conn.person(&gone.username).into();
        self.0
            .entry(gone.room.name.clone())
            .or_default()
            .entry(person)
            .or_default()
            .push(gone);
    }

    /// Takes every pending departure of `person` from `room`.
    fn take_person(&mut self, room: &str, person: &str) -> Vec<Gone> {
        let Some(people) = self.0.get_mut(room) else {
            return Vec::new();
        };
        let taken = people.remove(person).unwrap_or_default();
        if people.is_empty() {
            self.0.remove(room);
        }
        taken
    }

    /// Takes the departure of `conn` (as `person`) from `room`, if still pending.
    fn take_one(&mut self, room: &str, person: &str, conn: u64) -> Option<Gone> {
        let people = self.0.get_mut(room)?;
        let gone = people.get_mut(person)?;
        let at = gone.iter().position(|g| g.conn.id == conn)?;
        let taken = gone.swap_remove(at);
        if gone.is_empty() {
            people.remove(person);
            if people.is_empty() {
                self.0.remove(room);
            }
        }
        Some(taken)
    }

    /// The pending departures from `room` (still members in Redis).
    pub(super) fn of_room(&self, room: &str) -> impl Iterator<Item = &Gone> {
        self.0
            .get(room)
            .into_iter()
            .flat_map(|p| p.values().flatten())
    }

    /// Takes them all (shutdown).
    pub(super) fn take_all(&mut self) -> Vec<Gone> {
        std::mem::take(&mut self.0)
            .into_values()
            .flat_map(HashMap::into_values)
            .flatten()
            .collect()
    }
}

impl Task {
    /// Whether a disconnect's removal from Redis waits the grace.
    pub(super) fn leave_waits(&self, command: &Command) -> bool {
        matches!(command, Command::Leave { grace: true, .. })
            && !self.bp.settings.presence_grace.is_zero()
    }

    /// Records a disconnected member (already removed here) and has its removal from Redis
    /// queued once the grace has passed.
    pub(super) fn depart_later(&mut self, conn: Arc<Conn>, room: Arc<Room>, username: Arc<str>) {
        let grace = self.bp.settings.presence_grace;
        let bp = self.bp.clone();
        let due = Command::Depart {
            conn: conn.clone(),
            room: room.clone(),
            username: username.clone(),
        };
        self.departing.add(Gone {
            conn,
            room,
            username,
        });
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Never refused (like a leave); fails only once the task has stopped.
            let _ = bp.send(due, false);
        });
    }

    /// Forgets the pending departure of `conn` (`username` in `room`), if any: its grace
    /// passed while Redis was unreachable.
    pub(super) fn departure_ended(&mut self, room: &Room, conn: &Conn, username: &str) {
        let _ = self
            .departing
            .take_one(&room.name, conn.person(username), conn.id);
    }

    /// Settles pending departures against the batch: a `Depart` whose departure was settled
    /// already is dropped; a join of the person is followed, and an explicit leave preceded,
    /// by the removal of the person's pending departures from the room (an explicit leave
    /// also takes the grace from the person's disconnects earlier in the same batch, which
    /// are not pending yet).
    pub(super) fn settle_departures(&mut self, commands: Vec<Command>) -> Vec<Command> {
        let mut settled = Vec::with_capacity(commands.len());
        for command in commands {
            match &command {
                Command::Depart {
                    conn,
                    room,
                    username,
                } => {
                    let person = conn.person(username);
                    if let Some(gone) = self.departing.take_one(&room.name, person, conn.id) {
                        settled.push(gone.into_depart());
                    }
                }
                Command::Join {
                    conn,
                    room,
                    username,
                    ..
                } => {
                    let gone = self
                        .departing
                        .take_person(&room.name, conn.person(username));
                    settled.push(command);
                    settled.extend(gone.into_iter().map(Gone::into_depart));
                }
                Command::Leave {
                    conn,
                    room,
                    username,
                    ack: true,
                    ..
                } => {
                    let person = conn.person(username);
                    for earlier in &mut settled {
                        if let Command::Leave {
                            conn: c,
                            room: r,
                            username: u,
                            grace,
                            ..
                        } = earlier
                        {
                            if *grace && r.name == room.name && c.person(u) == person {
                                *grace = false;
                            }
                        }
                    }
                    let gone = self.departing.take_person(&room.name, person);
                    settled.extend(gone.into_iter().map(Gone::into_depart));
                    settled.push(command);
                }
                _ => settled.push(command),
            }
        }
        settled
    }
}
