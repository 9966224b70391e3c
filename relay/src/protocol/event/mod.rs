//! Encoding server events, each straight into its one shared frame. Those that carry stored
//! history entries (`joined`, `history`) are in `spliced`.

mod change;

pub use change::{
    change, change_of, put_change_head, put_change_tail, revise, Change, ChangeEvent, Stored,
    SERVER_USER_ID,
};
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
    /// The seq of the message this one answers (`replyTo`), when it answers one.
    pub reply_to: Option<u64>,
    /// The sender's `ref`, so its other connections can match the message to their send.
    pub reference: Option<&'a str>,
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
        + m.reply_to.map_or(0, |r| key_len("replyTo") + u64_len(r))
        + m.reference.map_or(0, |r| key_len("ref") + str_len(r))
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
/// `,"room":..,"userId":..,"username":..,"text":..,"timestamp":N` and, when present,
/// `,"replyTo":N,"ref":".."`.
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
    if let Some(reply_to) = m.reply_to {
        put_key(buf, "replyTo");
        put_u64(buf, reply_to);
    }
    if let Some(reference) = m.reference {
        put_key(buf, "ref");
        put_str(buf, reference);
    }
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
    error_for(code, message, None)
}

/// An `error` caused by a command that carried `reference` (its `ref`), which it echoes.
pub fn error_for(code: ErrorCode, message: &str, reference: Option<&str>) -> Frame {
    let extra = reference.map_or(0, |r| key_len("ref") + str_len(r));
    let mut frame = begin("error", 48 + message.len() + extra);
    let buf = frame.payload();
    put_key(buf, "code");
    put_str(buf, code.as_str());
    put_key(buf, "message");
    put_str(buf, message);
    if let Some(reference) = reference {
        put_key(buf, "ref");
        put_str(buf, reference);
    }
    end(frame)
}

/// What a sender is told once its message with `ref` is ordered (and stored, where the
/// relay keeps history on disk): the message's `seq` and `id`. The same for a resend.
pub fn ack(reference: &str, room: &str, seq: u64, id: &str) -> Frame {
    let mut frame = begin(
        "ack",
        16 + key_len("ref")
            + str_len(reference)
            + key_len("room")
            + str_len(room)
            + key_len("seq")
            + u64_len(seq)
            + key_len("id")
            + str_len(id),
    );
    let buf = frame.payload();
    put_key(buf, "ref");
    put_str(buf, reference);
    put_key(buf, "room");
    put_str(buf, room);
    put_key(buf, "seq");
    put_u64(buf, seq);
    put_key(buf, "id");
    put_str(buf, id);
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
            reply_to: None,
            reference: None,
        });
        assert_eq!(
            parse(&frame),
            json!({"type":"message","id":"ab12-m7","seq":3,"room":"general","userId":"ab12-1",
                   "username":"al\"ice","text":"<b>hi</b>\n","timestamp":1_763_800_000_000u64})
        );
    }

    #[test]
    fn replies_refs_and_acks_encode_as_documented() {
        let frame = message(&MessageEvent {
            node_tag: "ab12",
            number: 8,
            seq: 4,
            room: "general",
            user_id: "ab12-1",
            username: "alice",
            text: "yes",
            timestamp_ms: 5,
            reply_to: Some(3),
            reference: Some("c-\"17"),
        });
        assert_eq!(
            parse(&frame),
            json!({"type":"message","id":"ab12-m8","seq":4,"room":"general","userId":"ab12-1",
                   "username":"alice","text":"yes","timestamp":5,"replyTo":3,"ref":"c-\"17"})
        );
        assert_eq!(
            parse(&ack("c-17", "general", 43, "ab12-m8")),
            json!({"type":"ack","ref":"c-17","room":"general","seq":43,"id":"ab12-m8"})
        );
        assert_eq!(
            parse(&error_for(ErrorCode::TextTooLong, "too long", Some("c-1"))),
            json!({"type":"error","code":"text_too_long","message":"too long","ref":"c-1"})
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
                reply_to: None,
                reference: None,
            };
            let frame = message(&m);
            assert_eq!(frame.payload().len(), message_capacity(&m), "{text:?}");
            let m = MessageEvent {
                reply_to: Some(12_345),
                reference: Some(text),
                ..m
            };
            let frame = message(&m);
            assert_eq!(frame.payload().len(), message_capacity(&m), "{text:?}");
        }
    }
}
