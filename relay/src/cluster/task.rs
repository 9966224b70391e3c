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
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::reply::{candidate_epoch, evalsha, lost, stream_entries};
use super::wire::{self, Kind};
use super::{now_us, scripts, Backplane, Command};
use crate::chat::hub::Hub;
use crate::chat::room::Room;
use crate::chat::tap::{Origin, Tapped};
use crate::transport::outbox::Priority;
use crate::ws::{Frame, OpCode};

/// Commands taken from the queue per round (one pipeline).
pub(super) const BATCH: usize = 512;
/// Pushed events handled per wake-up.
const PUSH_BATCH: usize = 4096;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a Redis command may take before the connection counts as lost. A closed
/// connection is noticed at once; this only bounds a Redis that stopped answering. Short
/// values turn a CPU-starved machine's slow replies into needless failovers.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Metric handles, created once (per-call `counter!` with labels would allocate).
pub(super) struct Metrics {
    pub(super) publish_errors: metrics::Counter,
    pub(super) subscribe_errors: metrics::Counter,
    pub(super) connected: metrics::Gauge,
    pub(super) lag: metrics::Histogram,
}

impl Metrics {
    pub(super) fn new() -> Self {
        Self {
            publish_errors: metrics::counter!("relay_redis_publish_errors_total"),
            subscribe_errors: metrics::counter!("relay_redis_subscribe_errors_total"),
            connected: metrics::gauge!("relay_redis_connected"),
            lag: metrics::histogram!("relay_redis_lag_seconds"),
        }
    }
}

pub(super) struct Scripts {
    pub(super) publish: redis::Script,
    pub(super) join: redis::Script,
    pub(super) leave: redis::Script,
    pub(super) prune: redis::Script,
    pub(super) resync: redis::Script,
    pub(super) page: redis::Script,
    pub(super) read: redis::Script,
}

pub(super) struct Task {
    pub(super) bp: Arc<Backplane>,
    pub(super) hub: Arc<Hub>,
    /// Rooms this node is subscribed to (or will be on reconnecting): those with members here.
    pub(super) rooms: HashMap<Arc<str>, Arc<Room>>,
    /// Members that disconnected and stay in Redis for `--presence-grace`.
    pub(super) departing: super::departing::Departing,
    pub(super) scripts: Scripts,
    pub(super) metrics: Metrics,
    pub(super) probe_channel: String,
    pub(super) node_key: String,
    pub(super) key_ttl_ms: u64,
    pub(super) tick: Duration,
}

/// Why the connected loop ended.
pub(super) enum Exit {
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
            page: redis::Script::new(scripts::PAGE),
            read: redis::Script::new(scripts::read()),
        },
        metrics: Metrics::new(),
        rooms: HashMap::new(),
        departing: Default::default(),
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
    pub(super) async fn connect(
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
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for script in [
            &self.scripts.publish,
            &self.scripts.join,
            &self.scripts.leave,
            &self.scripts.prune,
            &self.scripts.resync,
            &self.scripts.page,
            &self.scripts.read,
        ] {
            script.load_async(&mut conn).await?;
        }
        Ok((conn, rx))
    }

    /// Serves while Redis answers. `first`: nothing to restore yet.
    pub(super) async fn connected(
        &mut self,
        mut conn: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        stop: &mut watch::Receiver<bool>,
        first: bool,
    ) -> Exit {
        if let Err(err) = self.restore(&mut conn, first).await {
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
            // Not biased: under a flood of pushes, commands and the liveness refresh must
            // still get their turn (a starved refresh would get this node's members pruned).
            let result = tokio::select! {
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
                    self.housekeeping(&mut conn, ticks.is_multiple_of(prune_every)).await
                }
            };
            if let Err(err) = result {
                return Exit::Lost(err.to_string());
            }
        }
    }

    /// After (re)connecting, or when this node's liveness key had expired: subscribe, make
    /// Redis list exactly the local members (announcing differences), replay what was missed.
    /// `first`: no `restored` notices (nothing was degraded).
    pub(super) async fn restore(
        &mut self,
        conn: &mut MultiplexedConnection,
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
            let (known, have) = room.position();
            let mut cmd = evalsha(
                &self.scripts.resync,
                &[
                    &keys.epoch,
                    &keys.seq,
                    &keys.stream,
                    &keys.members,
                    &keys.people,
                ],
            );
            cmd.arg(candidate_epoch())
                .arg(self.key_ttl_ms)
                .arg(format!("{}|", self.bp.node()))
                .arg(&keys.channel)
                .arg(wire::head(Kind::Presence, self.bp.node(), now_us()))
                .arg(self.bp.settings.presence_list_max)
                .arg(&*room.name)
                .arg(known.as_deref().unwrap_or(""));
            // Members in their grace are still members in Redis.
            let members = room.member_conns();
            let departing = self
                .departing
                .of_room(&room.name)
                .map(|gone| (&gone.conn, &gone.username));
            for (conn, username) in members.iter().map(|(c, u)| (c, u)).chain(departing) {
                cmd.arg(format!("{}|{}", self.bp.node(), conn.client_id))
                    .arg(scripts::member_value(
                        conn.person(username),
                        &conn.user_id,
                        username,
                    ));
            }
            let (epoch, seq): (String, u64) = cmd.query_async(conn).await?;
            let recovered = if known.as_deref() == Some(&*epoch) && seq >= have {
                self.catch_up(conn, &room, &epoch, have + 1, seq).await?
            } else {
                // A new life of the room (Redis lost its keys) or a room first joined while
                // Redis was away: start from 0 and replay the new life's messages live.
                room.reset_log(epoch.clone().into(), 0, &[]);
                self.catch_up(conn, &room, &epoch, 1, seq).await?;
                false
            };
            if !first {
                let (_, now) = room.position();
                let notice = wire::restored(&room.name, &epoch, now, recovered);
                room.cluster_fan_out(&self.hub, &notice, Priority::Normal, "");
                info!(room = %room.name, epoch = %epoch, seq = now, recovered, "room resynchronised after reconnect");
            }
        }
        // Pushes that arrived meanwhile wait in their channel: the loop delivers the newer
        // ones and drops what was just replayed as duplicates.
        Ok(())
    }

    /// Delivers seqs `from..=to` of the room's current life from its stream. Returns whether
    /// all of them were still kept.
    pub(super) async fn catch_up(
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
        let mine = format!("\"id\":\"{}-m", self.bp.node());
        for (seq, json) in &entries {
            let frame = Frame::new(OpCode::Text, json);
            let origin = origin_of_stored(&mine, json);
            room.cluster_deliver(&self.hub, epoch, *seq, &frame, true, origin);
        }
        if !complete {
            warn!(room = %room.name, from, to, replayed = entries.len(), "messages missed and no longer in history: members see a seq gap");
        }
        Ok(complete)
    }

    /// Redis is gone: tell local members, mark unready.
    pub(super) fn degrade(&mut self, reason: &str) {
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
    pub(super) async fn on_pushes(
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

    pub(super) async fn on_push(
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
            Kind::Message => {
                let origin = self.origin(p.origin);
                self.deliver(conn, &room, p.epoch, p.seq, &frame, origin)
                    .await?
            }
            Kind::Presence => {
                // Redis announced a transition one node's join or leave made: that node
                // hands it to the tap, once for the cluster.
                if let (Some(tap), Origin::Here) = (&self.hub.tap, self.origin(p.origin)) {
                    tap.tap(Tapped::Presence {
                        room: &room.name,
                        frame: &frame,
                    });
                }
                room.cluster_fan_out(&self.hub, &frame, Priority::Normal, p.subject)
            }
            Kind::Typing => room.cluster_fan_out(&self.hub, &frame, Priority::Droppable, p.subject),
            Kind::Read => room.cluster_read(&self.hub, &frame, p.seq, p.subject),
            Kind::Probe => {}
        }
        Ok(())
    }

    /// Whether a payload's origin node is this one.
    fn origin(&self, node: &str) -> Origin {
        if node == &**self.bp.node() {
            Origin::Here
        } else {
            Origin::Elsewhere
        }
    }

    pub(super) async fn deliver(
        &mut self,
        conn: &mut MultiplexedConnection,
        room: &Arc<Room>,
        epoch: &str,
        seq: u64,
        frame: &Frame,
        origin: Origin,
    ) -> RedisResult<()> {
        use super::room_ops::Delivery;
        match room.cluster_deliver(&self.hub, epoch, seq, frame, false, origin) {
            Delivery::Delivered | Delivery::Duplicate => {}
            Delivery::Gap { have } => {
                // Pub/sub dropped something (or this node subscribed late): the stream has it.
                self.catch_up(conn, room, epoch, have + 1, seq - 1).await?;
                room.cluster_deliver(&self.hub, epoch, seq, frame, true, origin);
            }
            Delivery::OtherEpoch => {
                room.reset_log(epoch.into(), 0, &[]);
                let notice = wire::restored(&room.name, epoch, 0, false);
                room.cluster_fan_out(&self.hub, &notice, Priority::Normal, "");
                self.catch_up(conn, room, epoch, 1, seq - 1).await?;
                room.cluster_deliver(&self.hub, epoch, seq, frame, true, origin);
            }
        }
        Ok(())
    }
}

/// The origin of a message read back from the room's stream (a catch-up): this node's when
/// its id is one of this node's (`mine`: `"id":"<node tag>-m`). An edit or delete read back
/// carries no id and counts as another node's.
fn origin_of_stored(mine: &str, json: &[u8]) -> Origin {
    if memchr::memmem::find(json, mine.as_bytes()).is_some() {
        Origin::Here
    } else {
        Origin::Elsewhere
    }
}
