//! Joining a room: the name and membership checks, the join hook's question
//! (`crate::chat::gate`) when one is set, then the backend's join.

use std::sync::Arc;

use super::{checks, Membership, Session};
use crate::chat::backend::JoinRefusal;
use crate::chat::gate::{GateBusy, JoinAsk};
use crate::chat::hub::RoomRefusal;
use crate::chat::room::{JoinRequest, Room};
use crate::protocol::name::normalize_name;
use crate::protocol::ErrorCode;

impl Session {
    pub(super) fn join(
        &mut self,
        reference: Option<&str>,
        name: &str,
        username: Option<&str>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) {
        // From here on the room is its NFC form: the one the room map, the cluster's keys,
        // a token's `rooms` claim and every event use.
        let Some(name) = normalize_name(name) else {
            return self.error_for(
                reference,
                ErrorCode::InvalidRoom,
                "room must be 1-64 characters without control or format characters",
            );
        };
        let name = &*name;
        if let Some(identity) = &self.conn.identity {
            if !identity.may_join(name) {
                return self.error_for(
                    reference,
                    ErrorCode::ForbiddenRoom,
                    "your token does not allow this room",
                );
            }
        }
        let username: Arc<str> = match (&self.conn.identity, username) {
            // With authentication the name comes from the token; a `username` in the join
            // is ignored, so nobody can speak as someone else.
            (Some(identity), _) => identity.username.clone(),
            (None, Some(u)) => match normalize_name(u) {
                Some(u) => u.into(),
                None => {
                    return self.error_for(
                        reference,
                        ErrorCode::InvalidUsername,
                        "username must be 1-64 characters without control or format characters",
                    )
                }
            },
            (None, None) => match &self.username {
                Some(u) => u.clone(),
                None => format!("anon-{}", self.conn.client_id).into(),
            },
        };
        let member = self.rooms.iter().any(|m| &*m.room.name == name);
        // A join that would fail on the room count anyway is not asked about.
        if !member && self.rooms.len() < self.hub.limits.max_rooms_per_connection {
            // A repeated join (a resync) of a room the hook already let it into is not asked
            // again.
            if let Some(gate) = self.hub.gate.as_ref().filter(|g| g.checks_join()) {
                let ask = JoinAsk {
                    room: name,
                    user_id: &self.conn.user_id,
                    username: &username,
                    person: self.conn.person(&username),
                    claims: self
                        .conn
                        .identity
                        .as_ref()
                        .and_then(|i| i.claims.as_deref()),
                };
                return match gate.join(&ask) {
                    Ok(ticket) => self.wait_for_join(
                        ticket,
                        checks::AskedJoin {
                            reference: reference.map(Into::into),
                            room: name.into(),
                            username,
                            since,
                            epoch: epoch.map(Into::into),
                        },
                    ),
                    Err(GateBusy) => self.hooks_busy(reference),
                };
            }
        }
        self.join_now(reference, name, username, None, since, epoch);
    }

    /// Joins the room called `name` (valid, allowed): `rename` is the join hook's name for
    /// the person in this room.
    pub(super) fn join_now(
        &mut self,
        reference: Option<&str>,
        name: &str,
        username: Arc<str>,
        rename: Option<Arc<str>>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) {
        let at = self.rooms.iter().position(|m| &*m.room.name == name);
        if at.is_none() && self.rooms.len() >= self.hub.limits.max_rooms_per_connection {
            let limit = self.hub.limits.max_rooms_per_connection;
            return self.error_for(
                reference,
                ErrorCode::TooManyRooms,
                &format!("at most {limit} rooms per connection"),
            );
        }
        // A repeated join keeps the name the others already know.
        let name_in_room = at.map_or_else(
            || rename.unwrap_or_else(|| username.clone()),
            |i| self.rooms[i].username.clone(),
        );
        let request = JoinRequest {
            username: &name_in_room,
            since,
            epoch,
        };
        let current = at.map(|i| &self.rooms[i].room);
        match self
            .hub
            .backend
            .join(&self.hub, &self.conn, name, current, request)
        {
            Ok(room) => self.joined(at, room, name_in_room, username),
            Err(JoinRefusal::Room(refusal)) => self.room_refused(reference, refusal),
            Err(JoinRefusal::Busy) => self.busy(reference),
        }
    }

    fn room_refused(&self, reference: Option<&str>, refusal: RoomRefusal) {
        self.error_for(
            reference,
            ErrorCode::RoomLimit,
            match refusal {
                RoomRefusal::NodeFull => {
                    "the relay holds too many rooms; join an existing room or retry later"
                }
                RoomRefusal::SourceFull => {
                    "too many rooms created from your address; retry once some have expired"
                }
                RoomRefusal::Unavailable => {
                    return self.error_for(
                        reference,
                        ErrorCode::ServerBusy,
                        "the relay cannot read this room's history right now; retry shortly",
                    )
                }
            },
        );
    }

    /// Records a join: the room becomes current.
    fn joined(
        &mut self,
        at: Option<usize>,
        room: Arc<Room>,
        name_in_room: Arc<str>,
        username: Arc<str>,
    ) {
        if let Some(i) = at {
            // Rejoining makes the room current again.
            let membership = self.rooms.remove(i);
            self.rooms.push(membership);
        } else {
            // Most clients sit in one room: room for exactly one (32 bytes, not the four
            // slots `Vec` would start with) in every connection.
            self.rooms.reserve_exact(1);
            self.rooms.push(Membership {
                room,
                username: name_in_room,
            });
        }
        self.username = Some(username);
    }
}
