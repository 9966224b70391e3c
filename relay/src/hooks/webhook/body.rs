//! A webhook request's body: `{"events":[...]}`, each event the JSON the room's members got
//! with its `eventId` first. The events are spliced in as they are (no parse, no re-encode).

use bytes::{BufMut, Bytes, BytesMut};

use super::queue::{Event, Id};
use crate::protocol::json::put_str;

/// The body of a request carrying `events`, for the node tagged `node`.
pub(super) fn encode(events: &[Event], node: &str) -> Bytes {
    let size: usize = events
        .iter()
        .map(|e| e.json.bytes().len() + e.room.len() + 64)
        .sum();
    let mut buf = BytesMut::with_capacity(size + 16);
    buf.put_slice(b"{\"events\":[");
    let mut first = true;
    for event in events {
        let json = event.json.bytes();
        // Every event the relay makes is an object; anything else (never expected) is left
        // out rather than sent malformed.
        let Some(rest) = json.strip_prefix(b"{") else {
            tracing::warn!(room = %event.room, "a webhook event that is not a JSON object was left out");
            continue;
        };
        if !first {
            buf.put_u8(b',');
        }
        first = false;
        buf.put_slice(b"{\"eventId\":");
        put_str(&mut buf, &event_id(event, node));
        if rest.first() != Some(&b'}') {
            buf.put_u8(b',');
        }
        buf.put_slice(rest);
    }
    buf.put_slice(b"]}");
    buf.freeze()
}

/// The event's stable id: `<room>:<epoch>:<seq>` for a log event, `<room>:p:<node>:<n>` for
/// a presence event.
pub(super) fn event_id(event: &Event, node: &str) -> String {
    match &event.id {
        Id::Log { epoch, seq } => format!("{}:{epoch}:{seq}", event.room),
        Id::Presence(n) => format!("{}:p:{node}:{n}", event.room),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::hooks::webhook::queue::Json;

    #[test]
    fn events_keep_their_json_and_gain_an_id() {
        let events = [
            Event {
                room: "a\"b".into(),
                id: Id::Log {
                    epoch: "e1".into(),
                    seq: 7,
                },
                json: Json::Stored(r#"{"type":"message","seq":7}"#.into()),
                at: Instant::now(),
            },
            Event {
                room: "r".into(),
                id: Id::Presence(3),
                json: Json::Stored("{}".into()),
                at: Instant::now(),
            },
            Event {
                room: "r".into(),
                id: Id::Presence(4),
                json: Json::Stored("[]".into()),
                at: Instant::now(),
            },
        ];
        let body = encode(&events, "ab12");
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"events":[
                {"eventId":"a\"b:e1:7","type":"message","seq":7},
                {"eventId":"r:p:ab12:3"},
            ]})
        );
    }
}
