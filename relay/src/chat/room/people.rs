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

/// The people present in a room. Most people have one connection in a room, and such a
/// person is just its member entry: nothing is kept here for it (idle memory per
/// connection is a target). Only a person with several connections here, or one in its
/// grace (no connection), has a [`Person`] entry.
#[derive(Debug)]
pub(super) struct People {
    /// People present: the distinct persons among the members, and those in their grace.
    count: usize,
    /// The people that are more than one member entry.
    extra: Vec<Person>,
    /// The generation the next departure gets (0 means none pending in [`Person`]).
    next_departure: u64,
}

impl Default for People {
    fn default() -> Self {
        Self {
            count: 0,
            extra: Vec::new(),
            next_departure: 1,
        }
    }
}

/// A person with several connections in the room, or in its grace. Its [`Conn::person`]
/// key is not stored but is the `userId` (authenticated) or the `username` (not), both
/// shared with a member's `Arc`s rather than copied.
#[derive(Debug)]
struct Person {
    /// What `users` and `user_left` show: one of its connections' `userId` (with
    /// authentication the token's `sub`, the same for all of them) and name in the room.
    user_id: Arc<str>,
    username: Arc<str>,
    /// The connection `users` lists for it (while it has any).
    shown: u64,
    /// The last connection disconnected: `user_left` is due after the grace unless a
    /// connection of the person joins first (which clears this); 0 when none is pending.
    departing: u64,
    /// Its connections that are members here; 0 while a departure is pending.
    here: u32,
    /// Whether its key is `user_id` (the token's `sub`) rather than `username`.
    authenticated: bool,
}

impl Person {
    fn new(member: &Member, here: u32) -> Self {
        Self {
            user_id: member.conn.user_id.clone(),
            username: member.username.clone(),
            shown: member.conn.id,
            departing: 0,
            here,
            authenticated: member.conn.identity.is_some(),
        }
    }

    /// [`Conn::person`] of its connections.
    fn key(&self) -> &str {
        if self.authenticated {
            &self.user_id
        } else {
            &self.username
        }
    }

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
        self.count
    }

    /// Everyone present, as `users` lists them: the `members` in their order, a person
    /// with several connections once, then the people in their grace (the others have not
    /// been told they left).
    pub(super) fn users<'a>(&'a self, members: &'a [Member]) -> impl Iterator<Item = UserRef<'a>> {
        let listed = members.iter().filter(move |m| {
            self.extra.is_empty()
                || self
                    .find(m.conn.person(&m.username))
                    .is_none_or(|at| self.extra[at].shown == m.conn.id)
        });
        let departing = self.extra.iter().filter(|p| p.here == 0);
        listed.map(Member::user).chain(departing.map(Person::user))
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.extra.iter().position(|p| p.key() == key)
    }

    /// The last of `members` just became a member.
    pub(super) fn arrive(&mut self, members: &[Member]) -> Arrival {
        let Some((member, others)) = members.split_last() else {
            return Arrival::Present;
        };
        let key = member.conn.person(&member.username);
        if let Some(at) = self.find(key) {
            let person = &mut self.extra[at];
            if person.here == 0 {
                // Back within the grace, as one connection: just its member entry again.
                self.extra.swap_remove(at);
            } else {
                person.here += 1;
            }
            return Arrival::Present;
        }
        match others.iter().find(|m| m.conn.person(&m.username) == key) {
            Some(first) => {
                // Its second connection: listed as the first one still.
                self.extra.push(Person::new(first, 2));
                Arrival::Present
            }
            None => {
                self.count += 1;
                Arrival::New
            }
        }
    }

    /// `gone` is no longer a member (`members` are those left); `grace`: it disconnected and
    /// its person's announcement may wait.
    pub(super) fn depart(&mut self, gone: &Member, members: &[Member], grace: bool) -> Departure {
        let key = gone.conn.person(&gone.username);
        if let Some(at) = self.find(key) {
            let person = &mut self.extra[at];
            person.here = person.here.saturating_sub(1);
            if person.here <= 1 {
                // One connection left: just its member entry.
                self.extra.swap_remove(at);
            } else if person.shown == gone.conn.id {
                // `users` shows a connection that is still here (without authentication each
                // has its own `userId`).
                if let Some(other) = members.iter().find(|m| m.conn.person(&m.username) == key) {
                    person.shown = other.conn.id;
                    person.user_id = other.conn.user_id.clone();
                    person.username = other.username.clone();
                }
            }
            return Departure::Stays;
        }
        if grace {
            // Announced, when the grace has passed, as the connection that went last.
            let generation = self.next_departure;
            self.next_departure += 1;
            let mut person = Person::new(gone, 0);
            person.departing = generation;
            self.extra.push(person);
            return Departure::Pending(generation);
        }
        self.count = self.count.saturating_sub(1);
        Departure::Gone
    }

    /// Ends departure `generation` of `key` if it is still pending; the person, to announce.
    fn expire(&mut self, key: &str, generation: u64) -> Option<Person> {
        let at = self.find(key)?;
        if self.extra[at].here != 0 || self.extra[at].departing != generation {
            return None;
        }
        self.count = self.count.saturating_sub(1);
        Some(self.extra.swap_remove(at))
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
        let users =
            (count <= hub.limits.presence_list_max).then(|| state.people.users(&state.members));
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
    fn people_with_one_connection_each_keep_nothing_beside_their_members() {
        // Idle memory per connection is a target (docs/PERFORMANCE.md): the common case
        // allocates nothing here.
        let hub = Hub::new(&Config::default());
        let mut people = People::default();
        let mut members = Vec::new();
        for name in ["alice", "bob", "carol"] {
            members.push(member(&hub, name));
            assert_eq!(people.arrive(&members), Arrival::New);
        }
        assert_eq!(people.len(), 3);
        assert_eq!(people.extra.capacity(), 0);
        let names: Vec<_> = people
            .users(&members)
            .map(|u| u.username.to_owned())
            .collect();
        assert_eq!(
            names,
            ["alice", "bob", "carol"],
            "listed as the members are"
        );
        let gone = members.remove(1);
        assert_eq!(people.depart(&gone, &members, false), Departure::Gone);
        assert_eq!(people.len(), 2);
        assert_eq!(people.extra.capacity(), 0);
    }

    #[test]
    fn a_person_goes_with_its_last_connection_and_a_rejoin_makes_its_departure_stale() {
        let hub = Hub::new(&Config::default());
        let mut people = People::default();
        let (tab1, tab2) = (member(&hub, "alice"), member(&hub, "alice"));
        let mut members = vec![tab1.clone()];
        assert_eq!(people.arrive(&members), Arrival::New);
        members.push(tab2.clone());
        assert_eq!(people.arrive(&members), Arrival::Present);
        assert_eq!(people.len(), 1);
        assert_eq!(
            people
                .users(&members)
                .map(|u| u.id.to_owned())
                .collect::<Vec<_>>(),
            [tab1.conn.user_id.to_string()],
            "two tabs are listed once"
        );
        members.remove(0);
        assert_eq!(people.depart(&tab1, &members, true), Departure::Stays);
        assert_eq!(
            people
                .users(&members)
                .map(|u| u.id.to_owned())
                .collect::<Vec<_>>(),
            [tab2.conn.user_id.to_string()],
            "listed as a connection still here"
        );

        members.clear();
        let Departure::Pending(first) = people.depart(&tab2, &members, true) else {
            panic!("a disconnect of the last connection waits the grace");
        };
        assert_eq!(people.len(), 1, "still present during the grace");
        assert_eq!(
            people
                .users(&members)
                .map(|u| u.id.to_owned())
                .collect::<Vec<_>>(),
            [tab2.conn.user_id.to_string()],
            "listed during the grace as the connection that went last"
        );
        let back = member(&hub, "alice");
        members.push(back.clone());
        assert_eq!(
            people.arrive(&members),
            Arrival::Present,
            "no second user_joined"
        );
        members.clear();
        let Departure::Pending(second) = people.depart(&back, &members, true) else {
            panic!("the grace again");
        };
        assert!(
            people.expire("alice", first).is_none(),
            "the rejoin made the first departure stale"
        );
        assert!(people.expire("alice", second).is_some());
        assert_eq!(people.len(), 0);

        let bob = member(&hub, "bob");
        members.push(bob.clone());
        people.arrive(&members);
        members.clear();
        assert_eq!(
            people.depart(&bob, &members, false),
            Departure::Gone,
            "an explicit leave does not wait"
        );
        assert_eq!(people.len(), 0);
    }
}
