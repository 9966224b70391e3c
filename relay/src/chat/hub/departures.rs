//! People whose last connection to a room dropped, waiting out `--presence-grace` before the
//! room announces their `user_left` (see `chat::room::people`).
//!
//! One queue and one task for the node, not a timer per departure: the grace is the same for
//! everyone, so departures fall due in the order they were queued and the task sleeps until
//! the oldest one's. The queue is a channel because departures are queued under a room's
//! lock and, with history on disk, from the store's writer thread (outside the runtime).

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use tokio::sync::mpsc;

use super::Hub;
use crate::chat::room::Room;

/// A person's departure from a room, due at `due`.
#[derive(Debug)]
pub(crate) struct Departure {
    /// Weak: a retired room is not kept for it (nobody is left there to tell).
    room: Weak<Room>,
    person: Box<str>,
    generation: u64,
    due: Instant,
}

#[derive(Debug)]
pub(crate) struct Departures {
    tx: mpsc::UnboundedSender<Departure>,
    /// Taken by the task ([`Hub::run_departures`]) when the relay serves.
    rx: Mutex<Option<mpsc::UnboundedReceiver<Departure>>>,
}

impl Default for Departures {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Hub {
    /// Queues departure `generation` of `person` from `room`: it falls due after the grace.
    pub(crate) fn schedule_departure(&self, room: Weak<Room>, person: Box<str>, generation: u64) {
        let due = Instant::now() + self.limits.presence_grace;
        // Fails only once the task has ended (shutdown): nobody is left to tell.
        let _ = self.departures.tx.send(Departure {
            room,
            person,
            generation,
            due,
        });
    }

    /// Announces departures as they fall due. Runs while the relay serves (aborted with the
    /// other tasks at shutdown); a second call returns at once.
    pub async fn run_departures(self: Arc<Self>) {
        let rx = self
            .departures
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut rx) = rx else {
            return;
        };
        while let Some(departure) = rx.recv().await {
            tokio::time::sleep_until(departure.due.into()).await;
            if let Some(room) = departure.room.upgrade() {
                room.departure_due(&self, &departure.person, departure.generation);
            }
        }
    }
}
