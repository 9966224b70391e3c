//! The backplane task's session commands: one pipeline per batch while connected, local
//! service while Redis is unreachable.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use tracing::warn;

use super::reply::{candidate_epoch, evalsha, JoinReply};
use super::task::Task;
use super::wire::{self, Kind};
use super::{now_us, scripts, Command};
use crate::chat::client::Conn;
use crate::chat::room::{Announce, JoinOutcome, JoinRequest, Presence, Room};
use crate::protocol::event::{self, UserRef};
use crate::transport::outbox::Priority;
use crate::ws::{Frame, OpCode};

impl Task {
    /// Runs a batch of session commands as one pipeline (one round trip), in the order they
    /// were queued: rooms new to this node are subscribed first, then every message, typing
    /// event, join and leave goes out, then the join replies are applied in order.
    pub(super) async fn commands(
        &mut self,
        conn: &mut MultiplexedConnection,
        batch: &mut Vec<Command>,
    ) -> RedisResult<()> {
        let commands = self.settle_departures(std::mem::take(batch));
        // Subscribe before the join scripts run, so nothing published after them is missed.
        let mut loading: Vec<Arc<Room>> = Vec::new();
        for command in &commands {
            if let Command::Join { room, .. } = command {
                let known = self
                    .rooms
                    .get(&room.name)
                    .is_some_and(|r| Arc::ptr_eq(r, room));
                if !known && !loading.iter().any(|r| Arc::ptr_eq(r, room)) {
                    loading.push(room.clone());
                }
            }
        }
        if !loading.is_empty() {
            let channels: Vec<String> = loading
                .iter()
                .map(|room| self.bp.settings.keys.room(&room.name).channel)
                .collect();
            if let Err(err) = conn.subscribe(&channels).await {
                self.metrics.subscribe_errors.increment(1);
                for command in commands {
                    self.offline(command);
                }
                return Err(err);
            }
            for room in &loading {
                self.rooms.insert(room.name.clone(), room.clone());
            }
        }
        let mut pipe = redis::pipe();
        // Each with whether it has a reply (a disconnect waiting the grace has none yet).
        let mut sent: Vec<(Command, bool)> = Vec::with_capacity(commands.len());
        for command in commands {
            let load = match &command {
                Command::Join { room, .. } => {
                    let at = loading.iter().position(|r| Arc::ptr_eq(r, room));
                    // Only the room's first join in the batch loads its history.
                    at.map(|i| loading.swap_remove(i)).is_some()
                }
                _ => false,
            };
            let replies = self.add_to_pipe(&mut pipe, &command, load);
            sent.push((command, replies));
        }
        if sent.is_empty() {
            return Ok(());
        }
        let replies: Vec<Value> = if !sent.iter().any(|(_, replies)| *replies) {
            // Only disconnects waiting their grace: nothing for Redis yet.
            Vec::new()
        } else {
            match pipe.query_async(conn).await {
                Ok(replies) => replies,
                Err(err) => {
                    let messages = sent
                        .iter()
                        .filter(|(c, _)| matches!(c, Command::Message { .. }))
                        .count();
                    self.metrics.publish_errors.increment(messages as u64);
                    warn!(error = %err, messages, "Redis failed mid-batch; serving the batch locally");
                    for (command, _) in sent {
                        self.offline(command);
                    }
                    return Err(err);
                }
            }
        };
        // Every reply is applied even if Redis fails meanwhile (a join's catch-up needs it):
        // the members are then local, and the reconnect restores them in Redis.
        let mut failure = None;
        let mut replies = replies.iter();
        for (command, replied) in sent {
            if !replied {
                // A disconnect: gone here now, from Redis after the grace.
                if let Command::Leave {
                    conn: client,
                    room,
                    username,
                    ..
                } = command
                {
                    room.leave(&self.hub, &client, Announce::Backend);
                    self.depart_later(client, room, username);
                }
                continue;
            }
            let reply = replies.next().unwrap_or(&Value::Nil);
            match command {
                Command::Join { .. } => {
                    if let Err(err) = self.joined(conn, command, reply).await {
                        failure.get_or_insert(err);
                    }
                }
                Command::Leave {
                    conn: client,
                    room,
                    ack,
                    ..
                } => {
                    room.leave(&self.hub, &client, Announce::Backend);
                    if ack {
                        self.hub.push_to(
                            &client,
                            event::left(&room.name).bytes(),
                            Priority::Normal,
                        );
                    }
                }
                Command::History {
                    conn: client,
                    room,
                    page,
                } => self.history_answer(&client, &room, page, reply),
                Command::Message {
                    sender: Some(sender),
                    room,
                    ack: Some(ack),
                    ..
                } => self.acknowledge(&sender, &room, &ack, reply),
                _ => {}
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Adds one command to the pipeline; whether it has a reply (one).
    pub(super) fn add_to_pipe(
        &self,
        pipe: &mut redis::Pipeline,
        command: &Command,
        load: bool,
    ) -> bool {
        if self.leave_waits(command) {
            return false;
        }
        let settings = &self.bp.settings;
        let node = self.bp.node();
        match command {
            Command::Message {
                room,
                sender,
                prefix,
                suffix,
                sent_us,
                ack,
                revised,
            } => {
                let keys = settings.keys.room(&room.name);
                let mut cmd = evalsha(
                    &self.scripts.publish,
                    &[
                        &keys.epoch,
                        &keys.seq,
                        &keys.stream,
                        &keys.refs,
                        &keys.refs_by_time,
                        &keys.revised,
                    ],
                );
                cmd.arg(candidate_epoch())
                    .arg(settings.history)
                    .arg(self.key_ttl_ms)
                    .arg(&keys.channel)
                    .arg(wire::head(Kind::Message, node, *sent_us))
                    .arg(sender.as_ref().map_or("", |s| &*s.client_id))
                    .arg(prefix.as_slice())
                    .arg(&suffix[..])
                    .arg(ack.as_ref().map_or("", |a| a.field.as_str()))
                    .arg(ack.as_ref().map_or("", |a| a.id.as_str()))
                    .arg(crate::clock::now_ms())
                    .arg(settings.dedupe_window.as_millis() as u64)
                    .arg(revised.as_ref().map_or(String::new(), |r| r.0.to_string()))
                    .arg(revised.as_ref().map_or(&[][..], |r| r.1.payload()));
                pipe.add_command(cmd);
            }
            Command::Typing { room, payload } => {
                let keys = settings.keys.room(&room.name);
                pipe.cmd("PUBLISH")
                    .arg(&keys.channel)
                    .arg(payload.as_slice());
            }
            Command::Read {
                room,
                sender,
                person,
                seq,
                head,
                sent_us,
                ..
            } => {
                let keys = settings.keys.room(&room.name);
                let mut cmd = evalsha(&self.scripts.read, &[&keys.reads, &keys.seq]);
                cmd.arg(&**person)
                    .arg(*seq)
                    .arg(self.key_ttl_ms)
                    .arg(&keys.channel)
                    .arg(wire::head(Kind::Read, node, *sent_us))
                    .arg(&*sender.client_id)
                    .arg(head.as_slice());
                pipe.add_command(cmd);
            }
            Command::Join {
                conn: client,
                room,
                username,
                ..
            } => {
                let keys = settings.keys.room(&room.name);
                let mut cmd = evalsha(
                    &self.scripts.join,
                    &[
                        &keys.epoch,
                        &keys.seq,
                        &keys.stream,
                        &keys.members,
                        &keys.people,
                        &keys.reads,
                    ],
                );
                cmd.arg(candidate_epoch())
                    .arg(self.key_ttl_ms)
                    .arg(&keys.channel)
                    .arg(wire::head(Kind::Presence, node, now_us()))
                    .arg(format!("{node}|{}", client.client_id))
                    .arg(&*client.client_id)
                    .arg(&**username)
                    .arg(settings.presence_list_max)
                    .arg(&*room.name)
                    .arg(match (load, settings.history) {
                        (false, _) => 0,
                        (true, 0) => -1,
                        (true, n) => n as i64,
                    })
                    .arg(scripts::member_value(
                        client.person(username),
                        &client.user_id,
                        username,
                    ))
                    .arg(&*client.user_id)
                    .arg(client.person(username));
                pipe.add_command(cmd);
            }
            // The local removal waits for the reply, in order with the batch's joins (a join
            // and the disconnect right after it often share a batch).
            Command::Leave {
                conn: client, room, ..
            }
            | Command::Depart {
                conn: client, room, ..
            } => {
                pipe.add_command(self.leave_script(&room.name, client));
            }
            Command::History { room, page, .. } => {
                pipe.add_command(self.history_read(room, *page));
            }
        }
        true
    }

    /// The leave script for `client`'s field in the room called `room`.
    pub(super) fn leave_script(&self, room: &str, client: &Conn) -> redis::Cmd {
        let settings = &self.bp.settings;
        let keys = settings.keys.room(room);
        let mut cmd = evalsha(&self.scripts.leave, &[&keys.members, &keys.people]);
        cmd.arg(&keys.channel)
            .arg(wire::head(Kind::Presence, self.bp.node(), now_us()))
            .arg(format!("{}|{}", self.bp.node(), client.client_id))
            .arg(&*client.client_id)
            .arg(settings.presence_list_max)
            .arg(room);
        cmd
    }

    /// Applies a join script's reply: loads the room if this join did, then adds the member
    /// and sends `joined`.
    pub(super) async fn joined(
        &mut self,
        conn: &mut MultiplexedConnection,
        command: Command,
        reply: &Value,
    ) -> RedisResult<()> {
        let Command::Join {
            conn: client,
            mut room,
            username,
            since,
            epoch,
        } = command
        else {
            return Ok(());
        };
        let Some(reply) = JoinReply::parse(reply) else {
            warn!(room = %room.name, "unexpected reply from the join script");
            return Ok(());
        };
        let (known, _) = room.position();
        let mut outcome = Ok(());
        if reply.loaded {
            room.reset_log(reply.epoch.clone().into(), reply.seq, &reply.history);
        } else if known.as_deref() != Some(&*reply.epoch) {
            // The room's keys vanished (expiry, Redis restart) without this node noticing
            // yet: adopt the new life now.
            room.reset_log(reply.epoch.clone().into(), 0, &[]);
            outcome = self
                .catch_up(conn, &room, &reply.epoch, 1, reply.seq)
                .await
                .map(drop);
        }
        // Redis's position, unless the room here knows a later one (a read event of it
        // arrived first).
        room.learn_read(client.person(&username), reply.last_read);
        for _ in 0..3 {
            let request = JoinRequest {
                username: &username,
                since,
                epoch: epoch.as_deref(),
            };
            let presence = Presence::Backend {
                count: reply.count,
                users: reply.users.as_deref(),
            };
            let outcome = room.join(&self.hub, &client, request, presence);
            if outcome != JoinOutcome::Retired {
                break;
            }
            // The room emptied and was retired meanwhile; its successor carries on.
            let Ok(fresh) = self.hub.room_or_create(&client, &room.name) else {
                // The node is out of rooms meanwhile: the join is dropped, as a retired
                // room's would be.
                break;
            };
            let (_, seq) = room.position();
            let history = room.history_entries();
            fresh.carry_on_log(reply.epoch.clone().into(), seq, history);
            self.rooms.insert(room.name.clone(), fresh.clone());
            room = fresh;
        }
        outcome
    }
    /// Sends the `ack` of a message sent with `ref`, from the publish script's reply (the
    /// first send's seq and id for a resend).
    fn acknowledge(
        &self,
        sender: &Arc<crate::chat::client::Conn>,
        room: &Room,
        ack: &super::PendingAck,
        reply: &Value,
    ) {
        let sent = match reply {
            Value::Array(parts) => parts.get(1).and_then(super::reply::bytes),
            _ => None,
        };
        let Some((seq, id)) = sent
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.split_once('|'))
            .and_then(|(seq, id)| Some((seq.parse::<u64>().ok()?, id)))
        else {
            warn!(room = %room.name, "unexpected reply from the publish script");
            return;
        };
        let frame = event::ack(&ack.reference, &room.name, seq, id);
        self.hub.push_to(sender, frame.bytes(), Priority::Normal);
    }

    /// A command while Redis is unreachable: served for local members only.
    pub(super) fn offline(&mut self, command: Command) {
        match command {
            Command::Join {
                conn,
                room,
                username,
                since,
                epoch,
            } => {
                self.rooms.insert(room.name.clone(), room.clone());
                let person = conn.person(&username);
                let mut members = room.member_conns();
                let present = members.iter().any(|(c, u)| c.person(u) == person);
                if !members.iter().any(|(c, _)| c.id == conn.id) {
                    members.push((conn.clone(), username.clone()));
                }
                let users = local_people(&members);
                let request = JoinRequest {
                    username: &username,
                    since,
                    epoch: epoch.as_deref(),
                };
                let presence = Presence::Backend {
                    count: users.len(),
                    users: Some(&users),
                };
                let outcome = room.join(&self.hub, &conn, request, presence);
                if outcome == JoinOutcome::Joined && !present {
                    self.local_presence(&room, "user_joined", &conn, &username);
                }
            }
            Command::Leave {
                conn, room, ack, ..
            } => {
                if let Some(username) = room.leave(&self.hub, &conn, Announce::Backend) {
                    if ack {
                        self.hub
                            .push_to(&conn, event::left(&room.name).bytes(), Priority::Normal);
                    }
                    // No grace while Redis is away: the others here are told when the
                    // person's last connection here has gone.
                    let person = conn.person(&username);
                    let stays = room
                        .member_conns()
                        .iter()
                        .any(|(c, u)| c.person(u) == person);
                    if !stays {
                        self.local_presence(&room, "user_left", &conn, &username);
                    }
                }
            }
            // Gone here already; no longer wanted, so the resync after Redis is back drops
            // its field (announced if it was the person's last).
            Command::Depart {
                conn,
                room,
                username,
            } => self.departure_ended(&room, &conn, &username),
            Command::Message {
                sender: Some(sender),
                ack: Some(ack),
                ..
            } => {
                // Not ordered by the cluster, so not delivered: the sender resends it (with
                // its `ref`) once Redis is back, and nobody sees it twice.
                self.hub
                    .stats
                    .errors_sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let refusal = event::error_for(
                    crate::protocol::ErrorCode::ServerBusy,
                    "the relay cannot reach Redis to order this message; send it again shortly",
                    Some(&ack.reference),
                );
                self.hub.push_to(&sender, refusal.bytes(), Priority::Normal);
            }
            Command::Message {
                sender,
                revised: Some(_),
                ..
            } => {
                // An edit or delete exists only in the room's one order: not applied here
                // alone. The client may send it again once Redis is back.
                if let Some(sender) = sender {
                    self.hub
                        .stats
                        .errors_sent
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let refusal = event::error(
                        crate::protocol::ErrorCode::ServerBusy,
                        "the relay cannot reach Redis to order this change; send it again shortly",
                    );
                    self.hub.push_to(&sender, refusal.bytes(), Priority::Normal);
                }
            }
            Command::Message {
                room,
                prefix,
                suffix,
                ..
            } => {
                let (_, seq) = room.position();
                let mut json = prefix;
                json.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                json.extend_from_slice(&suffix);
                json.extend_from_slice(b",\"local\":true}");
                room.cluster_fan_out(
                    &self.hub,
                    &Frame::new(OpCode::Text, &json),
                    Priority::Normal,
                    "",
                );
            }
            Command::Typing { .. } => {}
            Command::Read {
                room,
                sender,
                username,
                seq,
                ..
            } => {
                // This node's members only; Redis keeps the last position it had.
                room.read(&self.hub, &sender, &username, seq);
            }
            Command::History { conn, room, page } => self.history_local(&conn, &room, page),
        }
    }

    /// A presence event about `conn` (`username` in the room) for this node's members only
    /// (Redis is unreachable), per person like the cluster's.
    pub(super) fn local_presence(&self, room: &Room, kind: &str, conn: &Conn, username: &str) {
        let people = local_people(&room.member_conns());
        let frame = event::presence(
            kind,
            &room.name,
            UserRef {
                id: &conn.user_id,
                username,
            },
            people.len(),
            (people.len() <= self.bp.settings.presence_list_max)
                .then(|| people.iter().map(|(id, username)| UserRef { id, username })),
        );
        room.cluster_fan_out(&self.hub, &frame, Priority::Normal, &conn.client_id);
    }
}

/// `members` as people: each person's first connection's `userId` and name (the `users` of
/// a presence event served locally).
fn local_people(members: &[(Arc<Conn>, Arc<str>)]) -> Vec<(String, String)> {
    let mut seen: Vec<&str> = Vec::with_capacity(members.len());
    let mut people = Vec::with_capacity(members.len());
    for (conn, username) in members {
        let person = conn.person(username);
        if !seen.contains(&person) {
            seen.push(person);
            people.push((conn.user_id.to_string(), username.to_string()));
        }
    }
    people
}
