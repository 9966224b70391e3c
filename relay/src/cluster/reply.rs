//! Reading what Redis answers (script replies, stream entries) and building script calls.

use redis::{RedisError, Value};

use super::now_us;
use crate::ws::{Frame, OpCode};

/// `EVALSHA` of a script with its keys; the caller adds the arguments. Scripts are loaded
/// on every connect, so a missing one means Redis restarted under us: an error that ends
/// the connection and brings a reconnect (which loads them again).
pub(super) fn evalsha(script: &redis::Script, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len());
    for key in keys {
        cmd.arg(*key);
    }
    cmd
}

pub(super) fn lost(reason: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "Redis connection lost",
        reason.to_owned(),
    ))
}

/// An epoch for a room's new life, used only if Redis has none for the room yet.
pub(super) fn candidate_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_us());
    format!("{:016x}", hasher.finish())
}

/// `(seq, json)` of each stream entry (IDs are `<seq>-1`).
pub(super) fn stream_entries(value: &Value) -> Vec<(u64, Vec<u8>)> {
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

pub(super) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(super) fn text(value: &Value) -> Option<&str> {
    std::str::from_utf8(bytes(value)?).ok()
}

pub(super) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The join script's reply.
pub(super) struct JoinReply {
    pub(super) epoch: String,
    pub(super) seq: u64,
    pub(super) count: usize,
    pub(super) users: Option<Vec<(String, String)>>,
    /// Oldest first.
    pub(super) history: Vec<Frame>,
    /// The script was asked for history (this join loads the room on this node).
    pub(super) loaded: bool,
    /// The joiner's read position (0: none).
    pub(super) last_read: u64,
}

impl JoinReply {
    pub(super) fn parse(value: &Value) -> Option<Self> {
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
            last_read: parts.get(6).and_then(int).unwrap_or(0),
        })
    }
}
