//! The backplane task's periodic work: liveness key, readiness probe, pruning members of dead
//! nodes, keeping room keys alive, unsubscribing retired rooms; and the goodbye at shutdown.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use tracing::{debug, info, warn};

use super::now_us;
use super::reply::evalsha;
use super::task::Task;
use super::wire::{self, Kind};

impl Task {
    /// Sets this node's liveness key; returns whether it was still there.
    pub(super) async fn refresh_liveness(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> RedisResult<bool> {
        let previous: Option<String> = redis::cmd("SET")
            .arg(&self.node_key)
            .arg(1)
            .arg("PX")
            .arg(self.bp.settings.presence_ttl.as_millis() as u64)
            .arg("GET")
            .query_async(conn)
            .await?;
        Ok(previous.is_some())
    }

    /// Every tick: liveness key, probe; every few: prune dead nodes' members, keep room keys
    /// alive, drop rooms retired here.
    pub(super) async fn housekeeping(
        &mut self,
        conn: &mut MultiplexedConnection,
        prune: bool,
    ) -> RedisResult<()> {
        if !self.refresh_liveness(conn).await? {
            // This node looked dead to the others for a moment (a stall longer than
            // --presence-ttl): they may have pruned its members. Put them back, announced.
            warn!("this node's liveness key had expired; re-registering its members");
            self.restore(conn, true).await?;
        }
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
            let mut cmd = evalsha(&self.scripts.prune, &[&keys.members, &keys.people]);
            cmd.arg(&keys.channel)
                .arg(wire::head(Kind::Presence, self.bp.node(), now_us()))
                .arg(self.bp.settings.keys.node_prefix())
                .arg(self.bp.settings.presence_list_max)
                .arg(&**name);
            pipe.add_command(cmd);
            for key in [
                &keys.epoch,
                &keys.seq,
                &keys.stream,
                &keys.members,
                &keys.reads,
                &keys.people,
            ] {
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
    pub(super) async fn goodbye(&mut self, conn: &mut MultiplexedConnection) {
        let mut pipe = redis::pipe();
        for room in self.rooms.values() {
            for (conn, _) in room.member_conns() {
                pipe.add_command(self.leave_script(&room.name, &conn));
            }
        }
        // Those in their grace go now too: the node will not be there to remove them.
        for gone in self.departing.take_all() {
            pipe.add_command(self.leave_script(&gone.room.name, &gone.conn));
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
