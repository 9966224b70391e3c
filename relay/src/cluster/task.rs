//! The node's backplane task: one Redis connection, every cluster operation, in one order.
//!
//! The task alternates between two states. *Connected*: it drains session commands into
//! pipelined script calls, delivers pushed events to local rooms, and on every tick refreshes
//! the node's liveness key, prunes members of dead nodes and sends itself a probe. *Degraded*
//! (Redis unreachable): it serves joins and leaves locally, tells members, and retries the
//! connection with backoff; on reconnecting it resubscribes, re-registers local members and
//! replays from each room's stream what this node missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, RedisError, RedisResult, Value};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::wire::{self, Kind};
use super::{now_us, scripts, Backplane, Command};
use crate::hub::Hub;
use crate::outbox::Priority;
use crate::protocol::event::{self, UserRef};
use crate::room::{JoinOutcome, Room};
use crate::ws::{Frame, OpCode};

/// Commands taken from the queue per round (one pipeline).
const BATCH: usize = 512;
/// Pushed events handled per wake-up.
const PUSH_BATCH: usize = 4096;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Metric handles, created once (per-call `counter!` with labels would allocate).
struct Metrics {
    publish_errors: metrics::Counter,
    subscribe_errors: metrics::Counter,
    connected: metrics::Gauge,
    lag: metrics::Histogram,
}

impl Metrics {
    fn new() -> Self {
        Self {
            publish_errors: metrics::counter!("relay_redis_publish_errors_total"),
            subscribe_errors: metrics::counter!("relay_redis_subscribe_errors_total"),
            connected: metrics::gauge!("relay_redis_connected"),
            lag: metrics::histogram!("relay_redis_lag_seconds"),
        }
    }
}

struct Scripts {
    publish: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    prune: redis::Script,
    resync: redis::Script,
}

struct Task {
    bp: Arc<Backplane>,
    hub: Arc<Hub>,
    /// Rooms this node is subscribed to (or will be on reconnecting): those with members here.
    rooms: HashMap<Arc<str>, Arc<Room>>,
    scripts: Scripts,
    metrics: Metrics,
    probe_channel: String,
    node_key: String,
    key_ttl_ms: u64,
    tick: Duration,
}

/// Why the connected loop ended.
enum Exit {
    Stop,
    Lost(String),
}

pub(crate) async fn run(
    bp: Arc<Backplane>,
    hub: Arc<Hub>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = bp.settings.clone();
    let tick = (settings.presence_ttl / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut task = Task {
        probe_channel: settings.keys.probe_channel(bp.node()),
        node_key: format!("{}{}", settings.keys.node_prefix(), bp.node()),
        key_ttl_ms: (settings.room_linger.max(settings.presence_ttl) * 2).as_millis() as u64,
        tick,
        scripts: Scripts {
            publish: redis::Script::new(&scripts::publish()),
            join: redis::Script::new(&scripts::join()),
            leave: redis::Script::new(&scripts::leave()),
            prune: redis::Script::new(&scripts::prune()),
            resync: redis::Script::new(&scripts::resync()),
        },
        metrics: Metrics::new(),
        rooms: HashMap::new(),
        bp,
        hub,
    };
    task.metrics.connected.set(0.0);
    task.hub
        .readiness
        .set_unready("redis", "connecting to Redis");
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match task.connect().await {
            Ok((conn, pushes)) => {
                backoff = Duration::from_millis(100);
                info!(node = %task.bp.node(), rooms = task.rooms.len(), "connected to Redis");
                let exit = task
                    .connected(conn, pushes, &mut commands, &mut stop, first)
                    .await;
                first = false;
                task.bp.set_connected(false);
                task.metrics.connected.set(0.0);
                match exit {
                    Exit::Stop => return,
                    Exit::Lost(reason) => task.degrade(&reason),
                }
            }
            Err(err) => {
                warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "Redis unreachable");
                task.hub
                    .readiness
                    .set_unready("redis", format!("Redis unreachable: {err}"));
            }
        }
        // Degraded: serve commands locally until the next attempt.
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                () = &mut retry => break,
                _ = stop.changed() => return,
                command = commands.recv() => match command {
                    Some(command) => {
                        task.bp.taken(1);
                        task.offline(command);
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Task {
    async fn connect(
        &mut self,
    ) -> RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)> {
        let url = &self.bp.settings.url;
        // Pub/sub pushes on a connection that also runs commands need RESP3.
        let url = if url.contains("protocol=") {
            url.clone()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let client = redis::Client::open(url)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = redis::AsyncConnectionConfig::new()
            .set_push_sender(tx)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(3)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for script in [
            &self.scripts.publish,
            &self.scripts.join,
            &self.scripts.leave,
            &self.scripts.prune,
            &self.scripts.resync,
        ] {
            script.load_async(&mut conn).await?;
        }
        Ok((conn, rx))
    }

    /// Serves while Redis answers. `first`: nothing to restore yet.
    async fn connected(
        &mut self,
        mut conn: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        stop: &mut watch::Receiver<bool>,
        first: bool,
    ) -> Exit {
        if let Err(err) = self.restore(&mut conn, &mut pushes, first).await {
            self.metrics.subscribe_errors.increment(1);
            return Exit::Lost(format!("restoring subscriptions: {err}"));
        }
        self.bp.set_connected(true);
        self.metrics.connected.set(1.0);
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let prune_every = ((self.bp.settings.presence_ttl / 2).as_millis()
            / self.tick.as_millis().max(1))
        .max(1) as u32;
        let mut ticks = 0u32;
        let mut last_probe = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.changed() => {
                    self.goodbye(&mut conn).await;
                    return Exit::Stop;
                }
                push = pushes.recv() => match push {
                    Some(push) => self.on_pushes(&mut conn, push, &mut pushes, &mut last_probe).await,
                    None => Err(lost("push channel closed")),
                },
                n = commands.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return Exit::Stop;
                    }
                    self.bp.taken(n);
                    self.commands(&mut conn, &mut batch).await
                }
                _ = interval.tick() => {
                    ticks = ticks.wrapping_add(1);
                    if last_probe.elapsed() > self.tick * 3 + Duration::from_secs(1) {
                        self.hub.readiness.set_unready("redis", "probe through Redis pub/sub did not come back");
                    }
                    self.housekeeping(&mut conn, ticks % prune_every == 0).await
                }
            };
            if let Err(err) = result {
                return Exit::Lost(err.to_string());
            }
        }
    }

    /// After (re)connecting: subscribe, re-register local members, replay what was missed.
    async fn restore(
        &mut self,
        conn: &mut MultiplexedConnection,
        pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
        first: bool,
    ) -> RedisResult<()> {
        self.rooms.retain(|_, room| !room.is_retired());
        let mut channels = vec![self.probe_channel.clone()];
        channels.extend(
            self.rooms
                .keys()
                .map(|name| self.bp.settings.keys.room(name).channel),
        );
        conn.subscribe(&channels).await?;
        self.refresh_liveness(conn).await?;
        let rooms: Vec<Arc<Room>> = self.rooms.values().cloned().collect();
        for room in rooms {
            let keys = self.bp.settings.keys.room(&room.name);
            let mut cmd = evalsha(
                &self.scripts.resync,
                &[&keys.epoch, &keys.seq, &keys.stream, &keys.members],
            );
            cmd.arg(candidate_epoch())
                .arg(self.key_ttl_ms)
                .arg(format!("{}|", self.bp.node()));
            for (id, username) in room.cluster_members() {
                cmd.arg(format!("{}|{id}", self.bp.node())).arg(&*username);
            }
            let (epoch, seq): (String, u64) = cmd.query_async(conn).await?;
            let (known, have) = room.cluster_position();
            let recovered = if known.as_deref() == Some(&*epoch) && seq >= have {
                self.catch_up(conn, &room, &epoch, have + 1, seq).await?
            } else {
                // A new life of the room (Redis lost its keys) or a room first joined while
                // Redis was away: start from 0 and replay the new life's messages live.
                room.cluster_reset(epoch.clone().into(), 0, Vec::new());
                self.catch_up(conn, &room, &epoch, 1, seq).await?;
                false
            };
            if !first {
                let (_, now) = room.cluster_position();
                let notice = wire::restored(&room.name, &epoch, now, recovered);
                room.cluster_fan_out(&self.hub, &notice, Priority::Normal, "");
                info!(room = %room.name, epoch = %epoch, seq = now, recovered, "room resynchronised after reconnect");
            }
        }
        // Pushes that arrived meanwhile are older than what was just replayed, or will be
        // recognised as duplicates; they are handled normally by the loop.
        let _ = pushes;
        Ok(())
    }

    /// Delivers seqs `from..=to` of the room's current life from its stream. Returns whether
    /// all of them were still kept.
    async fn catch_up(
        &mut self,
        conn: &mut MultiplexedConnection,
        room: &Room,
        epoch: &str,
        from: u64,
        to: u64,
    ) -> RedisResult<bool> {
        if from > to {
            return Ok(true);
        }
        let keys = self.bp.settings.keys.room(&room.name);
        let entries: Value = redis::cmd("XRANGE")
            .arg(&keys.stream)
            .arg(format!("{from}-1"))
            .arg(format!("{to}-1"))
            .query_async(conn)
            .await?;
        let entries = stream_entries(&entries);
        let complete = entries.first().is_some_and(|(seq, _)| *seq == from)
            && entries.len() as u64 == to - from + 1;
        for (seq, json) in &entries {
            let frame = Frame::new(OpCode::Text, json);
            room.cluster_deliver(&self.hub, epoch, *seq, &frame, true);
        }
        if !complete {
            warn!(room = %room.name, from, to, replayed = entries.len(), "messages missed and no longer in history: members see a seq gap");
        }
        Ok(complete)
    }

    /// Redis is gone: tell local members, mark unready.
    fn degrade(&mut self, reason: &str) {
        warn!(
            reason,
            rooms = self.rooms.len(),
            "lost Redis: delivering locally only until it is back"
        );
        self.hub
            .readiness
            .set_unready("redis", format!("Redis connection lost: {reason}"));
        for room in self.rooms.values() {
            room.cluster_fan_out(&self.hub, &wire::degraded(&room.name), Priority::Normal, "");
        }
    }

    /// Handles `first` and whatever else is already waiting (up to a bound): under load this
    /// task competes with thousands of connection tasks for the runtime, so each wake-up
    /// must do a lot of work rather than one event.
    async fn on_pushes(
        &mut self,
        conn: &mut MultiplexedConnection,
        first: PushInfo,
        pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
        last_probe: &mut Instant,
    ) -> RedisResult<()> {
        self.on_push(conn, first, last_probe).await?;
        for _ in 0..PUSH_BATCH {
            match pushes.try_recv() {
                Ok(push) => self.on_push(conn, push, last_probe).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn on_push(
        &mut self,
        conn: &mut MultiplexedConnection,
        push: PushInfo,
        last_probe: &mut Instant,
    ) -> RedisResult<()> {
        match push.kind {
            PushKind::Disconnection => return Err(lost("connection closed")),
            PushKind::Message | PushKind::SMessage => {}
            _ => return Ok(()),
        }
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (push.data.first(), push.data.get(1))
        else {
            return Ok(());
        };
        let Some(p) = wire::decode(payload) else {
            debug!("ignoring a malformed payload");
            return Ok(());
        };
        if p.kind == Kind::Probe {
            if p.origin == &**self.bp.node() {
                *last_probe = Instant::now();
                self.hub.readiness.set_ready("redis");
            }
            return Ok(());
        }
        let lag = now_us().saturating_sub(p.sent_us);
        self.metrics.lag.record(lag as f64 / 1e6);
        let Some(room) = std::str::from_utf8(channel)
            .ok()
            .and_then(|c| self.bp.settings.keys.room_of(c))
            .and_then(|name| self.rooms.get(name))
            .cloned()
        else {
            return Ok(());
        };
        let frame = Frame::new(OpCode::Text, p.json);
        match p.kind {
            Kind::Message => self.deliver(conn, &room, p.epoch, p.seq, &frame).await?,
            Kind::Presence => room.cluster_fan_out(&self.hub, &frame, Priority::Normal, p.subject),
            Kind::Typing => room.cluster_fan_out(&self.hub, &frame, Priority::Droppable, p.subject),
            Kind::Probe => {}
        }
        Ok(())
    }

    async fn deliver(
        &mut self,
        conn: &mut MultiplexedConnection,
        room: &Arc<Room>,
        epoch: &str,
        seq: u64,
        frame: &Frame,
    ) -> RedisResult<()> {
        use super::room_ops::Delivery;
        match room.cluster_deliver(&self.hub, epoch, seq, frame, false) {
            Delivery::Delivered | Delivery::Duplicate => {}
            Delivery::Gap { have } => {
                // Pub/sub dropped something (or this node subscribed late): the stream has it.
                self.catch_up(conn, room, epoch, have + 1, seq - 1).await?;
                room.cluster_deliver(&self.hub, epoch, seq, frame, true);
            }
            Delivery::OtherEpoch => {
                room.cluster_reset(epoch.into(), 0, Vec::new());
                let notice = wire::restored(&room.name, epoch, 0, false);
                room.cluster_fan_out(&self.hub, &notice, Priority::Normal, "");
                self.catch_up(conn, room, epoch, 1, seq - 1).await?;
                room.cluster_deliver(&self.hub, epoch, seq, frame, true);
            }
        }
        Ok(())
    }

    /// Runs a batch of session commands as one pipeline (one round trip), in the order they
    /// were queued: rooms new to this node are subscribed first, then every message, typing
    /// event, join and leave goes out, then the join replies are applied in order.
    async fn commands(
        &mut self,
        conn: &mut MultiplexedConnection,
        batch: &mut Vec<Command>,
    ) -> RedisResult<()> {
        let commands = std::mem::take(batch);
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
        let mut sent: Vec<Command> = Vec::with_capacity(commands.len());
        for command in commands {
            let load = match &command {
                Command::Join { room, .. } => {
                    let at = loading.iter().position(|r| Arc::ptr_eq(r, room));
                    // Only the room's first join in the batch loads its history.
                    at.map(|i| loading.swap_remove(i)).is_some()
                }
                _ => false,
            };
            if self.add_to_pipe(&mut pipe, &command, load) {
                sent.push(command);
            }
        }
        if sent.is_empty() {
            return Ok(());
        }
        let replies: Vec<Value> = match pipe.query_async(conn).await {
            Ok(replies) => replies,
            Err(err) => {
                let messages = sent
                    .iter()
                    .filter(|c| matches!(c, Command::Message { .. }))
                    .count();
                self.metrics.publish_errors.increment(messages as u64);
                warn!(error = %err, messages, "Redis failed mid-batch; serving the batch locally");
                for command in sent {
                    self.offline(command);
                }
                return Err(err);
            }
        };
        for (command, reply) in sent.into_iter().zip(replies.iter()) {
            if let Command::Join { .. } = command {
                self.joined(conn, command, reply).await?;
            }
        }
        Ok(())
    }

    /// Adds one command to the pipeline; returns whether it expects a reply there.
    fn add_to_pipe(&self, pipe: &mut redis::Pipeline, command: &Command, load: bool) -> bool {
        let settings = &self.bp.settings;
        let node = self.bp.node();
        match command {
            Command::Message {
                room,
                sender,
                prefix,
                suffix,
                sent_us,
            } => {
                let keys = settings.keys.room(&room.name);
                let mut cmd = evalsha(
                    &self.scripts.publish,
                    &[&keys.epoch, &keys.seq, &keys.stream],
                );
                cmd.arg(candidate_epoch())
                    .arg(settings.history)
                    .arg(self.key_ttl_ms)
                    .arg(&keys.channel)
                    .arg(wire::head(Kind::Message, node, *sent_us))
                    .arg(&*sender.client_id)
                    .arg(prefix.as_slice())
                    .arg(&suffix[..]);
                pipe.add_command(cmd);
            }
            Command::Typing { room, payload } => {
                let keys = settings.keys.room(&room.name);
                pipe.cmd("PUBLISH")
                    .arg(&keys.channel)
                    .arg(payload.as_slice());
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
                    &[&keys.epoch, &keys.seq, &keys.stream, &keys.members],
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
                    });
                pipe.add_command(cmd);
            }
            Command::Leave {
                conn: client,
                room,
                ack,
            } => {
                // Local first: from here on the room no longer delivers to this client.
                let Some(username) = room.cluster_remove(client) else {
                    return false;
                };
                if *ack {
                    self.hub
                        .push_to(client, event::left(&room.name).bytes(), Priority::Normal);
                }
                let keys = settings.keys.room(&room.name);
                let mut cmd = evalsha(&self.scripts.leave, &[&keys.members]);
                cmd.arg(&keys.channel)
                    .arg(wire::head(Kind::Presence, node, now_us()))
                    .arg(format!("{node}|{}", client.client_id))
                    .arg(&*client.client_id)
                    .arg(&*username)
                    .arg(settings.presence_list_max)
                    .arg(&*room.name);
                pipe.add_command(cmd);
            }
        }
        true
    }

    /// Applies a join script's reply: loads the room if this join did, then adds the member
    /// and sends `joined`.
    async fn joined(
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
        let (known, _) = room.cluster_position();
        if reply.loaded {
            room.cluster_reset(reply.epoch.clone().into(), reply.seq, reply.history);
        } else if known.as_deref() != Some(&*reply.epoch) {
            // The room's keys vanished (expiry, Redis restart) without this node noticing
            // yet: adopt the new life now.
            room.cluster_reset(reply.epoch.clone().into(), 0, Vec::new());
            self.catch_up(conn, &room, &reply.epoch, 1, reply.seq)
                .await?;
        }
        for _ in 0..3 {
            let outcome = room.cluster_join(
                &self.hub,
                &client,
                &username,
                (since, epoch.as_deref()),
                reply.count,
                reply.users.as_deref(),
            );
            if outcome != JoinOutcome::Retired {
                break;
            }
            // The room emptied and was retired meanwhile; its successor carries on.
            let fresh = self.hub.cluster_room(&room.name);
            let (_, seq) = room.cluster_position();
            let history = room.cluster_history();
            fresh.cluster_reset(reply.epoch.clone().into(), seq, history);
            self.rooms.insert(room.name.clone(), fresh.clone());
            room = fresh;
        }
        Ok(())
    }
    /// A command while Redis is unreachable: served for local members only.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Join {
                conn,
                room,
                username,
                since,
                epoch,
            } => {
                self.rooms.insert(room.name.clone(), room.clone());
                let members = room.cluster_members();
                let users: Vec<(String, String)> = members
                    .iter()
                    .map(|(id, name)| (id.to_string(), name.to_string()))
                    .chain(std::iter::once((
                        conn.client_id.to_string(),
                        username.to_string(),
                    )))
                    .collect();
                let outcome = room.cluster_join(
                    &self.hub,
                    &conn,
                    &username,
                    (since, epoch.as_deref()),
                    users.len(),
                    Some(&users),
                );
                if outcome == JoinOutcome::Joined {
                    self.local_presence(&room, "user_joined", &conn.client_id, &username);
                }
            }
            Command::Leave { conn, room, ack } => {
                if let Some(username) = room.cluster_remove(&conn) {
                    if ack {
                        self.hub
                            .push_to(&conn, event::left(&room.name).bytes(), Priority::Normal);
                    }
                    self.local_presence(&room, "user_left", &conn.client_id, &username);
                }
            }
            Command::Message {
                room,
                prefix,
                suffix,
                ..
            } => {
                let (_, seq) = room.cluster_position();
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
        }
    }

    /// A presence event for this node's members only (Redis is unreachable).
    fn local_presence(&self, room: &Room, kind: &str, id: &str, username: &str) {
        let members = room.cluster_members();
        let frame = event::presence(
            kind,
            &room.name,
            UserRef { id, username },
            members.len(),
            (members.len() <= self.bp.settings.presence_list_max).then(|| {
                members
                    .iter()
                    .map(|(id, username)| UserRef { id, username })
            }),
        );
        room.cluster_fan_out(&self.hub, &frame, Priority::Normal, id);
    }

    async fn refresh_liveness(&self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(&self.node_key)
            .arg(1)
            .arg("PX")
            .arg(self.bp.settings.presence_ttl.as_millis() as u64)
            .query_async::<()>(conn)
            .await
    }

    /// Every tick: liveness key, probe; every few: prune dead nodes' members, keep room keys
    /// alive, drop rooms retired here.
    async fn housekeeping(
        &mut self,
        conn: &mut MultiplexedConnection,
        prune: bool,
    ) -> RedisResult<()> {
        self.refresh_liveness(conn).await?;
        let probe = wire::unsequenced(Kind::Probe, self.bp.node(), now_us(), "", b"{}");
        redis::cmd("PUBLISH")
            .arg(&self.probe_channel)
            .arg(probe)
            .query_async::<()>(conn)
            .await?;
        if !prune {
            return Ok(());
        }
        let retired: Vec<Arc<str>> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.is_retired())
            .map(|(name, _)| name.clone())
            .collect();
        for name in retired {
            self.rooms.remove(&name);
            let channel = self.bp.settings.keys.room(&name).channel;
            conn.unsubscribe(&channel).await?;
            debug!(room = %name, "unsubscribed from a retired room");
        }
        if self.rooms.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for name in self.rooms.keys() {
            let keys = self.bp.settings.keys.room(name);
            let mut cmd = evalsha(&self.scripts.prune, &[&keys.members]);
            cmd.arg(&keys.channel)
                .arg(wire::head(Kind::Presence, self.bp.node(), now_us()))
                .arg(self.bp.settings.keys.node_prefix())
                .arg(self.bp.settings.presence_list_max)
                .arg(&**name);
            pipe.add_command(cmd);
            for key in [&keys.epoch, &keys.seq, &keys.stream, &keys.members] {
                pipe.cmd("PEXPIRE").arg(key).arg(self.key_ttl_ms).ignore();
            }
        }
        let removed: Vec<i64> = pipe.query_async(conn).await?;
        let removed: i64 = removed.iter().sum();
        if removed > 0 {
            info!(
                removed,
                "pruned members of nodes whose liveness key expired"
            );
        }
        Ok(())
    }

    /// Shutdown: remove this node's members and liveness key so others see them leave now,
    /// not after `--presence-ttl`.
    async fn goodbye(&mut self, conn: &mut MultiplexedConnection) {
        let mut pipe = redis::pipe();
        for room in self.rooms.values() {
            let keys = self.bp.settings.keys.room(&room.name);
            for (id, username) in room.cluster_members() {
                let mut cmd = evalsha(&self.scripts.leave, &[&keys.members]);
                cmd.arg(&keys.channel)
                    .arg(wire::head(Kind::Presence, self.bp.node(), now_us()))
                    .arg(format!("{}|{id}", self.bp.node()))
                    .arg(&*id)
                    .arg(&*username)
                    .arg(self.bp.settings.presence_list_max)
                    .arg(&*room.name);
                pipe.add_command(cmd);
            }
        }
        pipe.cmd("DEL").arg(&self.node_key);
        let sent =
            tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<Value>(conn)).await;
        if !matches!(sent, Ok(Ok(_))) {
            warn!(
                "could not remove this node's members from Redis; they expire after --presence-ttl"
            );
        }
    }
}

/// `EVALSHA` of a script with its keys; the caller adds the arguments. Scripts are loaded
/// on every connect, so a missing one means Redis restarted under us: an error that ends
/// the connection and brings a reconnect (which loads them again).
fn evalsha(script: &redis::Script, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

fn lost(reason: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "Redis connection lost",
        reason.to_owned(),
    ))
}

/// An epoch for a room's new life, used only if Redis has none for the room yet.
fn candidate_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_us());
    format!("{:016x}", hasher.finish())
}

/// `(seq, json)` of each stream entry (IDs are `<seq>-1`).
fn stream_entries(value: &Value) -> Vec<(u64, Vec<u8>)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let id = text(parts.first()?)?;
            let seq = id.split('-').next()?.parse().ok()?;
            let json = match parts.get(1)? {
                Value::Array(fields) => bytes(fields.get(1)?)?,
                Value::Map(fields) => bytes(&fields.first()?.1)?,
                _ => return None,
            };
            Some((seq, json.to_vec()))
        })
        .collect()
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<&str> {
    std::str::from_utf8(bytes(value)?).ok()
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The join script's reply.
struct JoinReply {
    epoch: String,
    seq: u64,
    count: usize,
    users: Option<Vec<(String, String)>>,
    /// Oldest first.
    history: Vec<Frame>,
    /// The script was asked for history (this join loads the room on this node).
    loaded: bool,
}

impl JoinReply {
    fn parse(value: &Value) -> Option<Self> {
        let Value::Array(parts) = value else {
            return None;
        };
        let users_json = text(parts.get(3)?)?;
        let users = if users_json.is_empty() {
            None
        } else {
            #[derive(serde::Deserialize)]
            struct User {
                id: String,
                username: String,
            }
            let list: Vec<User> = serde_json::from_str(users_json).ok()?;
            Some(list.into_iter().map(|u| (u.id, u.username)).collect())
        };
        let loaded = matches!(parts.get(5), Some(Value::Int(1)));
        let mut history: Vec<Frame> = stream_entries(parts.get(4)?)
            .iter()
            .map(|(_, json)| Frame::new(OpCode::Text, json))
            .collect();
        history.reverse();
        Some(Self {
            epoch: text(parts.first()?)?.to_owned(),
            seq: int(parts.get(1)?)?,
            count: int(parts.get(2)?)? as usize,
            users,
            history,
            loaded,
        })
    }
}
