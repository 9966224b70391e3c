//! Encoding server events, each straight into its one shared frame. Those that carry stored
//! history entries (`joined`, `history`) are in `spliced`.

mod read;
mod spliced;

pub use read::{person_of, read, read_head};
pub use spliced::{
    entry_json, history, history_entry, joined, Joined, SplicedFrames, INLINE_HISTORY_BYTES,
};

use bytes::{BufMut, BytesMut};

use super::codes::ErrorCode;
use super::json::{put_key, put_str, put_u64, str_len, u64_len};
use crate::ws::{Frame, FrameBuilder, OpCode};

/// A member as listed in `users`.
#[derive(Debug, Clone, Copy)]
pub struct UserRef<'a> {
    pub id: &'a str,
    pub username: &'a str,
}

/// The fields of a chat message event.
#[derive(Debug, Clone, Copy)]
pub struct MessageEvent<'a> {
    /// Unique id: `<node tag>-m<number>`.
    pub node_tag: &'a str,
    pub number: u64,
    pub seq: u64,
    pub room: &'a str,
    pub user_id: &'a str,
    pub username: &'a str,
    pub text: &'a str,
    pub timestamp_ms: u64,
}

fn begin(kind: &str, capacity: usize) -> FrameBuilder {
    let mut frame = FrameBuilder::with_capacity(capacity);
    let buf = frame.payload();
    buf.put_slice(b"{\"type\":\"");
    buf.put_slice(kind.as_bytes());
    buf.put_u8(b'"');
    frame
}

fn end(mut frame: FrameBuilder) -> Frame {
    frame.payload().put_u8(b'}');
    frame.finish(OpCode::Text)
}

pub fn message(m: &MessageEvent<'_>) -> Frame {
    let mut frame = FrameBuilder::with_capacity(message_capacity(m));
    let buf = frame.payload();
    put_message_head(buf, m);
    put_u64(buf, m.seq);
    put_message_tail(buf, m);
    end(frame)
}

/// Bytes of a message event's JSON, exactly (escapes counted): the frame's buffer is
/// allocated once at its final size, so what history keeps is what the message takes.
pub fn message_capacity(m: &MessageEvent<'_>) -> usize {
    // `{"type":"message"` `,"id":"` tag `-m` number `"` `,"seq":` seq, then the tail, then `}`.
    17 + 7
        + m.node_tag.len()
        + 2
        + u64_len(m.number)
        + 1
        + 7
        + u64_len(m.seq)
        + key_len("room")
        + str_len(m.room)
        + key_len("userId")
        + str_len(m.user_id)
        + key_len("username")
        + str_len(m.username)
        + key_len("text")
        + str_len(m.text)
        + key_len("timestamp")
        + u64_len(m.timestamp_ms)
        + 1
}

/// Bytes `put_key` writes for `key`.
fn key_len(key: &str) -> usize {
    key.len() + 4
}

/// The message event up to its seq value: `{"type":"message","id":"..","seq":`. With
/// [`put_message_tail`] this is the one place the event's layout is written; the cluster
/// sends the two halves through Redis, which puts the seq between them.
pub fn put_message_head(buf: &mut BytesMut, m: &MessageEvent<'_>) {
    buf.put_slice(b"{\"type\":\"message\"");
    put_key(buf, "id");
    buf.put_u8(b'"');
    buf.put_slice(m.node_tag.as_bytes());
    buf.put_slice(b"-m");
    put_u64(buf, m.number);
    buf.put_u8(b'"');
    put_key(buf, "seq");
}

/// The message event after its seq value, without the closing `}`:
/// `,"room":..,"userId":..,"username":..,"text":..,"timestamp":N`.
pub fn put_message_tail(buf: &mut BytesMut, m: &MessageEvent<'_>) {
    put_key(buf, "room");
    put_str(buf, m.room);
    put_key(buf, "userId");
    put_str(buf, m.user_id);
    put_key(buf, "username");
    put_str(buf, m.username);
    put_key(buf, "text");
    put_str(buf, m.text);
    put_key(buf, "timestamp");
    put_u64(buf, m.timestamp_ms);
}

fn put_users<'a>(frame: &mut FrameBuilder, users: impl Iterator<Item = UserRef<'a>>) {
    let buf = frame.payload();
    put_key(buf, "users");
    buf.put_u8(b'[');
    for (i, user) in users.enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"id\":");
        put_str(buf, user.id);
        buf.put_slice(b",\"username\":");
        put_str(buf, user.username);
        buf.put_u8(b'}');
    }
    buf.put_u8(b']');
}

/// `user_joined` or `user_left`.
pub fn presence<'a>(
    kind: &str,
    room: &str,
    user: UserRef<'_>,
    count: usize,
    users: Option<impl Iterator<Item = UserRef<'a>>>,
) -> Frame {
    let users_bytes = if users.is_some() { count * 48 } else { 0 };
    let mut frame = begin(kind, 120 + room.len() + users_bytes);
    let buf = frame.payload();
    put_key(buf, "room");
    put_str(buf, room);
    put_key(buf, "userId");
    put_str(buf, user.id);
    put_key(buf, "username");
    put_str(buf, user.username);
    put_key(buf, "count");
    put_u64(buf, count as u64);
    if let Some(users) = users {
        put_users(&mut frame, users);
    }
    end(frame)
}

pub fn typing(room: &str, user: UserRef<'_>, is_typing: bool) -> Frame {
    let mut frame = begin(
        "typing",
        96 + room.len() + user.id.len() + user.username.len(),
    );
    let buf = frame.payload();
    put_key(buf, "room");
    put_str(buf, room);
    put_key(buf, "userId");
    put_str(buf, user.id);
    put_key(buf, "username");
    put_str(buf, user.username);
    put_key(buf, "isTyping");
    buf.put_slice(if is_typing { b"true" } else { b"false" });
    end(frame)
}

pub fn left(room: &str) -> Frame {
    let mut frame = begin("left", 32 + room.len());
    put_key(frame.payload(), "room");
    put_str(frame.payload(), room);
    end(frame)
}

pub fn pong() -> Frame {
    end(begin("pong", 16))
}

pub fn error(code: ErrorCode, message: &str) -> Frame {
    let mut frame = begin("error", 48 + message.len());
    let buf = frame.payload();
    put_key(buf, "code");
    put_str(buf, code.as_str());
    put_key(buf, "message");
    put_str(buf, message);
    end(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(frame: &Frame) -> Value {
        serde_json::from_slice(frame.payload()).expect("events are valid JSON")
    }

    #[test]
    fn message_event_has_every_field() {
        let frame = message(&MessageEvent {
            node_tag: "ab12",
            number: 7,
            seq: 3,
            room: "general",
            user_id: "ab12-1",
            username: "al\"ice",
            text: "<b>hi</b>\n",
            timestamp_ms: 1_763_800_000_000,
        });
        assert_eq!(
            parse(&frame),
            json!({"type":"message","id":"ab12-m7","seq":3,"room":"general","userId":"ab12-1",
                   "username":"al\"ice","text":"<b>hi</b>\n","timestamp":1_763_800_000_000u64})
        );
    }

    #[test]
    fn a_message_frame_is_allocated_at_its_exact_size() {
        for text in [
            "x",
            "plain text",
            "\u{1}\u{2}\u{1f}".repeat(700).as_str(),
            "é🎉\"\\",
        ] {
            let m = MessageEvent {
                node_tag: "ab12",
                number: 1234,
                seq: 99,
                room: "r\t1",
                user_id: "ab12-1",
                username: "bob",
                text,
                timestamp_ms: 1_763_800_000_000,
            };
            let frame = message(&m);
            assert_eq!(frame.payload().len(), message_capacity(&m), "{text:?}");
        }
    }
}
