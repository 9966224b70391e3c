//! What travels through Redis: one pub/sub payload per event, a short header and then the
//! event's JSON exactly as clients receive it, so a node frames it without re-encoding.
//!
//! Payload: `kind|origin node|sent µs|seq|epoch|subject|json`. The first six fields never
//! contain `|` (node tags and epochs are hex, client ids are `<tag>-<n>`); the JSON may.

use bytes::BufMut;
use bytes::BytesMut;

use crate::protocol::event::{self, MessageEvent};
use crate::protocol::json::{put_key, put_str, put_u64};
use crate::ws::{Frame, FrameBuilder, OpCode};

/// The kinds of payload on a room's channel (and the node's probe channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chat message: `seq` and `epoch` are the cluster's.
    Message,
    /// `user_joined` / `user_left`: `subject` is the member's client id.
    Presence,
    /// A typing indicator: `subject` is the typist's client id.
    Typing,
    /// A read position that moved: `seq` is the position, `subject` the sender's client id
    /// (its own connection does not get it).
    Read,
    /// A readiness probe a node sends to itself.
    Probe,
}

impl Kind {
    pub fn tag(self) -> char {
        match self {
            Kind::Message => 'm',
            Kind::Presence => 'j',
            Kind::Typing => 't',
            Kind::Read => 'r',
            Kind::Probe => 'p',
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        Some(match tag {
            "m" => Kind::Message,
            "j" => Kind::Presence,
            "t" => Kind::Typing,
            "r" => Kind::Read,
            "p" => Kind::Probe,
            _ => return None,
        })
    }
}

/// One decoded payload, borrowing from the pushed bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    pub kind: Kind,
    pub origin: &'a str,
    pub sent_us: u64,
    pub seq: u64,
    pub epoch: &'a str,
    pub subject: &'a str,
    pub json: &'a [u8],
}

/// Splits a payload; `None` for anything malformed (another program on the channel).
pub fn decode(bytes: &[u8]) -> Option<Payload<'_>> {
    let mut fields = bytes.splitn(7, |&b| b == b'|');
    let mut text = || std::str::from_utf8(fields.next()?).ok();
    let kind = Kind::from_tag(text()?)?;
    let origin = text()?;
    let sent_us = text()?.parse().ok()?;
    let seq = text()?.parse().ok()?;
    let epoch = text()?;
    let subject = text()?;
    let json = fields.next()?;
    Some(Payload {
        kind,
        origin,
        sent_us,
        seq,
        epoch,
        subject,
        json,
    })
}

/// The header up to and including `sent µs|` (the publish script appends `seq|epoch|`).
pub fn head(kind: Kind, node: &str, sent_us: u64) -> String {
    format!("{}|{node}|{sent_us}|", kind.tag())
}

/// A whole payload for events without a seq (typing, probes).
pub fn unsequenced(kind: Kind, node: &str, sent_us: u64, subject: &str, json: &[u8]) -> Vec<u8> {
    let head = head(kind, node, sent_us);
    let mut out = Vec::with_capacity(head.len() + subject.len() + json.len() + 8);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b"0|-|");
    out.extend_from_slice(subject.as_bytes());
    out.push(b'|');
    out.extend_from_slice(json);
    out
}

/// The message event's JSON around its `seq`: `prefix + seq + suffix`, written by
/// `protocol::event`'s own halves, so a cluster message is byte for byte what a single node
/// sends. `m.seq` is not used (Redis assigns it). The suffix lacks its closing `}` so a
/// local-only message can add `"local":true` first.
pub fn message_halves(m: &MessageEvent<'_>) -> (Vec<u8>, BytesMut) {
    let mut prefix = BytesMut::with_capacity(48 + m.node_tag.len());
    event::put_message_head(&mut prefix, m);
    let mut suffix = BytesMut::with_capacity(event::message_capacity(m));
    event::put_message_tail(&mut suffix, m);
    (prefix.to_vec(), suffix)
}

/// A change event (`message_edited`, `message_deleted`) in the same two halves: it takes
/// a seq in the room's order like a message, through the same script.
pub fn change_halves(c: &event::ChangeEvent<'_>) -> (Vec<u8>, BytesMut) {
    let mut prefix = BytesMut::with_capacity(64 + c.room.len());
    event::put_change_head(&mut prefix, c);
    let mut suffix = BytesMut::with_capacity(64 + c.edit.map_or(0, |(t, _)| t.len() * 2));
    event::put_change_tail(&mut suffix, c);
    (prefix.to_vec(), suffix)
}

/// A message delivered only on this node while Redis is unreachable: it carries the room's
/// last cluster `seq` (it has none of its own) and `"local":true`.
pub fn local_message(m: &MessageEvent<'_>, seq: u64) -> Frame {
    let (prefix, suffix) = message_halves(m);
    let mut frame = FrameBuilder::with_capacity(prefix.len() + suffix.len() + 40);
    let buf = frame.payload();
    buf.put_slice(&prefix);
    put_u64(buf, seq);
    buf.put_slice(&suffix);
    buf.put_slice(b",\"local\":true}");
    frame.finish(OpCode::Text)
}

/// `{"type":"cluster","room":..,"state":"degraded"}`: this node lost Redis.
pub fn degraded(room: &str) -> Frame {
    let mut frame = FrameBuilder::with_capacity(64 + room.len());
    let buf = frame.payload();
    buf.put_slice(b"{\"type\":\"cluster\"");
    put_key(buf, "room");
    put_str(buf, room);
    buf.put_slice(b",\"state\":\"degraded\"}");
    frame.finish(OpCode::Text)
}

/// `{"type":"cluster","state":"restored",...}`: Redis is back; `recovered` says whether
/// every cluster message in between was delivered (replayed from the room's stream).
pub fn restored(room: &str, epoch: &str, seq: u64, recovered: bool) -> Frame {
    let mut frame = FrameBuilder::with_capacity(96 + room.len() + epoch.len());
    let buf = frame.payload();
    buf.put_slice(b"{\"type\":\"cluster\"");
    put_key(buf, "room");
    put_str(buf, room);
    buf.put_slice(b",\"state\":\"restored\"");
    put_key(buf, "epoch");
    put_str(buf, epoch);
    put_key(buf, "seq");
    put_u64(buf, seq);
    put_key(buf, "recovered");
    buf.put_slice(if recovered { b"true" } else { b"false" });
    buf.put_u8(b'}');
    frame.finish(OpCode::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::event;

    #[test]
    fn payload_round_trips_with_pipes_in_the_json() {
        let bytes = b"m|ab12cd|17|42|00ff|ab12cd-3|{\"text\":\"a|b\"}";
        let p = decode(bytes).expect("valid");
        assert_eq!(p.kind, Kind::Message);
        assert_eq!((p.origin, p.sent_us, p.seq), ("ab12cd", 17, 42));
        assert_eq!((p.epoch, p.subject), ("00ff", "ab12cd-3"));
        assert_eq!(p.json, b"{\"text\":\"a|b\"}");
        assert!(decode(b"x|1|2|3|4|5|{}").is_none());
        assert!(decode(b"m|n|notanumber|3|4|5|{}").is_none());
        assert!(decode(b"m|n|1").is_none());
    }

    #[test]
    fn halves_spell_the_same_event_as_the_single_node_encoder() {
        let parts = MessageEvent {
            node_tag: "ab12",
            number: 7,
            seq: 0,
            room: "general",
            user_id: "ab12-1",
            username: "al\"ice",
            text: "<b>hi</b>|\n",
            timestamp_ms: 1_763_800_000_000,
            reply_to: None,
            reference: None,
        };
        let (prefix, suffix) = message_halves(&parts);
        let mut joined = prefix;
        joined.extend_from_slice(b"3");
        joined.extend_from_slice(&suffix);
        joined.push(b'}');
        let single = event::message(&MessageEvent {
            node_tag: "ab12",
            number: 7,
            seq: 3,
            room: "general",
            user_id: "ab12-1",
            username: "al\"ice",
            text: "<b>hi</b>|\n",
            timestamp_ms: 1_763_800_000_000,
            reply_to: None,
            reference: None,
        });
        assert_eq!(joined, single.payload());
        let local: serde_json::Value =
            serde_json::from_slice(local_message(&parts, 9).payload()).expect("JSON");
        assert_eq!(local["seq"], 9);
        assert_eq!(local["local"], true);
    }
}
