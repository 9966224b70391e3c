//! Read state on the wire: the `read` event, and who (which person) an event the relay
//! encoded is about, read back from its JSON without a full parse.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use super::{begin, end, UserRef};
use crate::protocol::json::{put_key, put_str, put_u64, str_len};
use crate::ws::Frame;

/// `{"type":"read","room":..,"userId":..,"username":..,"seq":N}`: `user` read the room up
/// to `seq`.
pub fn read(room: &str, user: UserRef<'_>, seq: u64) -> Frame {
    let mut frame = begin(
        "read",
        64 + str_len(room) + str_len(user.id) + str_len(user.username),
    );
    let buf = frame.payload();
    put_read_head(buf, room, user);
    put_u64(buf, seq);
    end(frame)
}

/// The `read` event up to its seq value: the cluster sends it through Redis, whose script
/// puts the seq (the one it kept) after it and the closing `}`.
pub fn read_head(room: &str, user: UserRef<'_>) -> Vec<u8> {
    let mut buf =
        BytesMut::with_capacity(56 + str_len(room) + str_len(user.id) + str_len(user.username));
    buf.put_slice(b"{\"type\":\"read\"");
    put_read_head(&mut buf, room, user);
    buf.to_vec()
}

fn put_read_head(buf: &mut BytesMut, room: &str, user: UserRef<'_>) {
    put_key(buf, "room");
    put_str(buf, room);
    put_key(buf, "userId");
    put_str(buf, user.id);
    put_key(buf, "username");
    put_str(buf, user.username);
    put_key(buf, "seq");
}

/// The person a `message` (or `read`) event the relay encoded is from: its `userId` when
/// persons are token subjects (`by_sub`, authentication on), else its `username`; the same
/// rule as `chat::client::Conn::person`. `None` for anything else, and for a message marked
/// `"deleted":true`: what an unread count must not count.
///
/// No full parse: in the relay's events a key such as `,"userId":"` cannot occur inside a
/// string value (every `"` in one is escaped), and the text comes after both keys, so this
/// reads a few dozen bytes of a message however long its text.
pub fn person_of<'a>(json: &'a [u8], kind: &str, by_sub: bool) -> Option<Cow<'a, str>> {
    let rest = json.strip_prefix(b"{\"type\":\"")?;
    let rest = rest.strip_prefix(kind.as_bytes())?;
    if !rest.starts_with(b"\",") {
        return None;
    }
    if kind == "message" && find(json, b",\"deleted\":true").is_some() {
        return None;
    }
    let key: &[u8] = if by_sub {
        b",\"userId\":\""
    } else {
        b",\"username\":\""
    };
    let start = find(json, key)? + key.len();
    let value = &json[start..];
    // The closing quote: the first `"` not escaped.
    let mut at = 0;
    let mut escaped = false;
    while at < value.len() {
        match value[at] {
            b'\\' => {
                // The escaped byte is part of the string, whatever it is.
                escaped = true;
                at += 1;
            }
            b'"' => break,
            _ => {}
        }
        at += 1;
    }
    let raw = value.get(..at)?;
    if !escaped {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    // Escapes (rare in names): let serde_json undo them, quotes included.
    let quoted = json.get(start - 1..start + at + 1)?;
    serde_json::from_slice::<String>(quoted)
        .ok()
        .map(Cow::Owned)
}

/// memchr's SIMD substring search: this runs once per message kept in history, over the
/// whole event (the text included), and a byte-window scan cost ~2,800 instructions there.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::super::{message, MessageEvent};
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn read_event_and_its_cluster_head_spell_the_same_json() {
        let user = UserRef {
            id: "ab-1",
            username: "al\"ice",
        };
        let frame = read("gen", user, 43);
        let value: Value = serde_json::from_slice(frame.payload()).expect("JSON");
        assert_eq!(
            value,
            json!({"type":"read","room":"gen","userId":"ab-1","username":"al\"ice","seq":43})
        );
        let mut joined = read_head("gen", user);
        joined.extend_from_slice(b"43}");
        assert_eq!(joined, frame.payload());
    }

    #[test]
    fn the_person_of_an_event_is_read_without_parsing_its_text() {
        let m = |user_id: &str, username: &str, text: &str| {
            message(&MessageEvent {
                node_tag: "n",
                number: 1,
                seq: 1,
                room: "r,\"userId\":\"x",
                user_id,
                username,
                text,
                timestamp_ms: 5,
                reply_to: None,
                reference: None,
            })
        };
        let frame = m("sub-1", "bob", ",\"username\":\"mallory\"");
        let json = frame.payload();
        assert_eq!(person_of(json, "message", false).as_deref(), Some("bob"));
        assert_eq!(person_of(json, "message", true).as_deref(), Some("sub-1"));
        assert_eq!(person_of(json, "read", true), None, "another event type");
        let escaped = m("s", "b\"o\\b", "t");
        assert_eq!(
            person_of(escaped.payload(), "message", false).as_deref(),
            Some("b\"o\\b")
        );
        let mut deleted = m("s", "bob", "t").payload().to_vec();
        deleted.pop();
        deleted.extend_from_slice(b",\"deleted\":true}");
        assert_eq!(person_of(&deleted, "message", false), None);
        assert_eq!(
            person_of(
                b"{\"type\":\"message_edited\",\"username\":\"b\"}",
                "message",
                false
            ),
            None
        );
        let r = read(
            "r",
            UserRef {
                id: "i",
                username: "u",
            },
            3,
        );
        assert_eq!(person_of(r.payload(), "read", false).as_deref(), Some("u"));
    }
}
