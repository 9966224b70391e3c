//! Presence per person, for a room whose own members are its presence (memory and durable
//! backends, [`super::Presence::Room`]): a person with several connections in the room (tabs,
//! phone and laptop) is one entry in `users` and counts once, is announced when the first of
//! them joins, and leaves only when the last one has gone and `--presence-grace` passed
//! without a rejoin, so a reload or a short network drop shows no leave and join.
//!
//! Who a connection is as a person is [`Conn::person`]. The members list stays per
//! connection (messages stop going to a closed connection at once); only the announcement
//! of a disconnected person waits, here, as a departure with a generation that a rejoin
//! makes stale. The hub's departure queue (`chat::hub::departures`) calls back when the grace
//! has passed. A pending departure does not hold the room: an empty room may linger and be
//! retired as before, and a departure of a retired room is dropped (nobody is left to tell).

use std::sync::Arc;

use super::{Member, Room, State};
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::tap::Tapped;
use crate::protocol::event::{self, UserRef};
use crate::transport::outbox::Priority;

/// The people present in a room, in the order they arrived (with the members' swap-remove,
/// so with one connection each they are listed exactly as the members were).
#[derive(Debug, Default)]
pub(super) struct People {
    people: Vec<Person>,
    /// The generation the next departure gets.
    next_departure: u64,
}

#[derive(Debug)]
struct Person {
    /// [`Conn::person`] of its connections.
    key: Box<str>,
    /// Its connections that are members here; 0 while a departure is pending.
    here: u32,
    /// What `users` and `user_left` show: one of its connections' `userId` (with
    /// authentication the token's `sub`, the same for all of them) and name in the room.
    user_id: Arc<str>,
    username: Arc<str>,
    /// The last connection disconnected: `user_left` is due after the grace unless a
    /// connection of the person joins first (which clears this).
    departing: Option<u64>,
}

impl Person {
    fn user(&self) -> UserRef<'_> {
        UserRef {
            id: &self.user_id,
            username: &self.username,
        }
    }
}

/// What a new member's arrival meant for the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// First connection: the others get `user_joined`.
    New,
    /// Another connection of a person present (or back within the grace): nothing to say.
    Present,
}

/// What a member's removal meant for the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Departure {
    /// Other connections of the person remain: nothing to say.
    Stays,
    /// The last one left: the person is gone now (`user_left` at once).
    Gone,
    /// The last one disconnected: the person is gone after the grace unless it rejoins;
    /// the departure's generation.
    Pending(u64),
}

impl People {
    pub(super) fn len(&self) -> usize {
        self.people.len()
    }

    /// Everyone present, as `users` lists them (a person in its grace included: the others
    /// have not been told it left).
    pub(super) fn users(&self) -> impl Iterator<Item = UserRef<'_>> {
        self.people.iter().map(Person::user)
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.people.iter().position(|p| &*p.key == key)
    }

    /// `member` became a member.
    pub(super) fn arrive(&mut self, member: &Member) -> Arrival {
        let key = member.conn.person(&member.username);
        if let Some(at) = self.find(key) {
            let person = &mut self.people[at];
            if person.departing.take().is_some() {
                // Back within the grace: it shows as the connection it is now.
                person.user_id = member.conn.user_id.clone();
                person.username = member.username.clone();
            }
            person.here += 1;
            return Arrival::Present;
        }
        self.people.push(Person {
            key: key.into(),
            here: 1,
            user_id: member.conn.user_id.clone(),
            username: member.username.clone(),
            departing: None,
        });
        Arrival::New
    }

    /// `gone` is no longer a member (`members` are those left); `grace`: it disconnected and
    /// its person's announcement may wait.
    pub(super) fn depart(&mut self, gone: &Member, members: &[Member], grace: bool) -> Departure {
        let key = gone.conn.person(&gone.username);
        let Some(at) = self.find(key) else {
            return Departure::Gone;
        };
        let person = &mut self.people[at];
        person.here = person.here.saturating_sub(1);
        if person.here > 0 {
            if person.user_id == gone.conn.user_id {
                // `users` shows a connection that is still here (without authentication each
                // has its own `userId`).
                if let Some(other) = members.iter().find(|m| m.conn.person(&m.username) == key) {
                    person.user_id = other.conn.user_id.clone();
                    person.username = other.username.clone();
                }
            }
            return Departure::Stays;
        }
        // Announced as the connection that went last.
        person.user_id = gone.conn.user_id.clone();
        person.username = gone.username.clone();
        if grace {
            let generation = self.next_departure;
            self.next_departure += 1;
            person.departing = Some(generation);
            return Departure::Pending(generation);
        }
        self.people.swap_remove(at);
        Departure::Gone
    }

    /// Ends departure `generation` of `key` if it is still pending; the person, to announce.
    fn expire(&mut self, key: &str, generation: u64) -> Option<Person> {
        let at = self.find(key)?;
        (self.people[at].departing == Some(generation)).then(|| self.people.swap_remove(at))
    }
}

impl Room {
    /// The members' connections and names in the room (cluster mode works out their people
    /// itself: Redis keeps its presence).
    pub fn member_conns(&self) -> Vec<(Arc<Conn>, Arc<str>)> {
        let state = self.lock();
        state
            .members
            .iter()
            .map(|m| (m.conn.clone(), m.username.clone()))
            .collect()
    }

    /// Tells the members (but `skip`) that `user` arrived or left, with the room's people.
    pub(super) fn announce_person(
        &self,
        state: &mut State,
        hub: &Hub,
        kind: &str,
        user: UserRef<'_>,
        skip: Option<u64>,
    ) {
        let tap = hub.tap.as_ref().filter(|tap| tap.wants_presence());
        if state.members.is_empty() && tap.is_none() {
            // Nobody to tell.
            return;
        }
        let count = state.people.len();
        let users = (count <= hub.limits.presence_list_max).then(|| state.people.users());
        let frame = event::presence(kind, &self.name, user, count, users);
        if let Some(tap) = tap {
            tap.tap(Tapped::Presence {
                room: &self.name,
                frame: &frame,
            });
        }
        if state.members.is_empty() {
            return;
        }
        self.fan_out(state, hub, frame.bytes(), Priority::Normal, skip);
    }

    /// A departure's grace has passed: announces `user_left` for the person `key` unless it
    /// rejoined meanwhile (or left and came back, which made `generation` stale) or the room
    /// was retired (then nobody is left to tell).
    pub(crate) fn departure_due(&self, hub: &Hub, key: &str, generation: u64) {
        let mut state = self.lock();
        if state.dead {
            return;
        }
        let Some(person) = state.people.expire(key, generation) else {
            return;
        };
        self.announce_person(&mut state, hub, "user_left", person.user(), None);
    }

    /// Schedules the `user_left` of departure `generation` of the person of `conn` (named
    /// `username` here) after the grace; a room the hub does not hold (unit tests) announces
    /// it at once.
    pub(super) fn schedule_departure(
        &self,
        state: &mut State,
        hub: &Hub,
        conn: &Conn,
        username: &str,
        generation: u64,
    ) {
        let key = conn.person(username);
        if self.this.strong_count() == 0 {
            if let Some(person) = state.people.expire(key, generation) {
                self.announce_person(state, hub, "user_left", person.user(), None);
            }
            return;
        }
        hub.schedule_departure(self.this.clone(), key.into(), generation);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::config::Config;

    fn member(hub: &Hub, username: &str) -> Member {
        Member {
            conn: hub.register(SocketAddr::from((Ipv4Addr::LOCALHOST, 9))),
            username: username.into(),
        }
    }

    #[test]
    fn a_person_goes_with_its_last_connection_and_a_rejoin_makes_its_departure_stale() {
        let hub = Hub::new(&Config::default());
        let mut people = People::default();
        let (tab1, tab2) = (member(&hub, "alice"), member(&hub, "alice"));
        assert_eq!(people.arrive(&tab1), Arrival::New);
        assert_eq!(people.arrive(&tab2), Arrival::Present);
        assert_eq!(people.len(), 1);
        assert_eq!(
            people.depart(&tab1, std::slice::from_ref(&tab2), true),
            Departure::Stays
        );
        assert_eq!(
            people.users().map(|u| u.id.to_owned()).collect::<Vec<_>>(),
            [tab2.conn.user_id.to_string()],
            "listed as a connection still here"
        );

        let Departure::Pending(first) = people.depart(&tab2, &[], true) else {
            panic!("a disconnect of the last connection waits the grace");
        };
        assert_eq!(people.len(), 1, "still present during the grace");
        let back = member(&hub, "alice");
        assert_eq!(
            people.arrive(&back),
            Arrival::Present,
            "no second user_joined"
        );
        let Departure::Pending(second) = people.depart(&back, &[], true) else {
            panic!("the grace again");
        };
        assert!(
            people.expire("alice", first).is_none(),
            "the rejoin made the first departure stale"
        );
        assert!(people.expire("alice", second).is_some());
        assert_eq!(people.len(), 0);

        let bob = member(&hub, "bob");
        people.arrive(&bob);
        assert_eq!(
            people.depart(&bob, &[], false),
            Departure::Gone,
            "an explicit leave does not wait"
        );
        assert_eq!(people.len(), 0);
    }
}
