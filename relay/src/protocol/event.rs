//! Encoding server events, each straight into its one shared frame.

use bytes::{BufMut, Bytes, BytesMut};

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

/// The reply to a `join`.
#[derive(Debug)]
pub struct Joined<'a, U, H> {
    pub client_id: &'a str,
    pub room: &'a str,
    pub epoch: &'a str,
    pub seq: u64,
    pub count: usize,
    /// `None` above the presence-list cut-off.
    pub users: Option<U>,
    /// Stored history entries to send, oldest first: the `,{message}` fragments of
    /// [`crate::chat::history`].
    pub history: H,
    pub recovered: Option<bool>,
    /// `--joined-history-bytes` left older messages out (`historyTruncated`).
    pub truncated: bool,
}

/// History up to this size is copied into one `joined` frame; past it the stored fragments
/// are sent as they are. A copy of a few KiB costs less than a queue entry and a frame per
/// message, and most joins (small or empty history) stay one plain frame.
pub const INLINE_HISTORY_BYTES: usize = 8 * 1024;

/// A `joined` event on the wire: one frame, or a fragmented message whose middle fragments are
/// the room's stored history entries themselves, shared by every joiner.
#[derive(Debug)]
pub enum JoinedFrames<H> {
    Whole(Frame),
    Spliced {
        head: Frame,
        history: H,
        tail: Frame,
    },
}

impl<'a, H: Iterator<Item = &'a Frame> + Clone> JoinedFrames<H> {
    /// The frames to queue, in order; they must be queued together (one message).
    pub fn parts<'s>(&'s self) -> impl Iterator<Item = &'s Bytes> + Clone + use<'s, 'a, H>
    where
        'a: 's,
    {
        let (head, history, tail) = match self {
            JoinedFrames::Whole(frame) => (frame, None, None),
            JoinedFrames::Spliced {
                head,
                history,
                tail,
            } => (head, Some(history.clone()), Some(tail)),
        };
        std::iter::once(head.bytes())
            .chain(
                history
                    .into_iter()
                    .flatten()
                    .map(|f: &'a Frame| -> &'s Bytes { f.bytes() }),
            )
            .chain(tail.map(Frame::bytes))
    }
}

pub fn joined<'a, 'u, 'h, U, H>(j: Joined<'a, U, H>) -> JoinedFrames<H>
where
    U: Iterator<Item = UserRef<'u>>,
    H: Iterator<Item = &'h Frame> + Clone,
{
    let history_bytes: usize = j.history.clone().map(|f| f.payload().len()).sum();
    let inline = history_bytes <= INLINE_HISTORY_BYTES;
    let users_bytes = if j.users.is_some() { j.count * 48 } else { 0 };
    let head_history = if inline {
        history_bytes
    } else {
        j.history.clone().next().map_or(0, |f| f.payload().len())
    };
    let mut frame = begin("joined", 160 + j.room.len() + head_history + users_bytes);
    let buf = frame.payload();
    put_key(buf, "clientId");
    put_str(buf, j.client_id);
    put_key(buf, "room");
    put_str(buf, j.room);
    put_key(buf, "epoch");
    put_str(buf, j.epoch);
    put_key(buf, "seq");
    put_u64(buf, j.seq);
    put_key(buf, "count");
    put_u64(buf, j.count as u64);
    if let Some(users) = j.users {
        put_users(&mut frame, users);
    }
    let buf = frame.payload();
    put_key(buf, "history");
    buf.put_u8(b'[');
    let mut history = j.history;
    // Entries are `,{message}`: the first goes in without its comma.
    if let Some(first) = history.next() {
        buf.put_slice(entry_json(first));
    }
    if inline {
        for entry in history {
            buf.put_slice(entry.payload());
        }
        let buf = frame.payload();
        put_joined_tail(buf, j.recovered, j.truncated);
        return JoinedFrames::Whole(end(frame));
    }
    let head = frame.finish_fragment(OpCode::Text, false);
    let mut tail = FrameBuilder::with_capacity(48);
    put_joined_tail(tail.payload(), j.recovered, j.truncated);
    tail.payload().put_u8(b'}');
    JoinedFrames::Spliced {
        head,
        history,
        tail: tail.finish_fragment(OpCode::Continuation, true),
    }
}

/// `joined` after its history entries, without the closing `}`.
fn put_joined_tail(buf: &mut BytesMut, recovered: Option<bool>, truncated: bool) {
    buf.put_u8(b']');
    if let Some(recovered) = recovered {
        put_key(buf, "recovered");
        buf.put_slice(if recovered { b"true" } else { b"false" });
    }
    if truncated {
        put_key(buf, "historyTruncated");
        buf.put_slice(b"true");
    }
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

/// A message event's payload as the non-final continuation fragment that `joined` splices
/// in and history keeps: a comma, then the event's JSON. Sized exactly.
pub fn history_entry(payload: &[u8]) -> Frame {
    let mut builder = FrameBuilder::with_capacity(payload.len() + 1);
    let buf = builder.payload();
    buf.put_u8(b',');
    buf.put_slice(payload);
    builder.finish_fragment(OpCode::Continuation, false)
}

/// The event JSON of a stored entry (its payload after the comma).
pub fn entry_json(entry: &Frame) -> &[u8] {
    entry.payload().get(1..).unwrap_or_default()
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

    /// The message a `joined` puts on the wire, its fragments reassembled, and how many
    /// frames it took.
    fn reassemble<'a, H: Iterator<Item = &'a Frame> + Clone>(
        joined: &JoinedFrames<H>,
    ) -> (Value, usize) {
        let parts: Vec<&Bytes> = joined.parts().collect();
        let mut payload = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            // Server frames: unmasked; FIN on the last fragment only; text, then
            // continuations.
            let last = i + 1 == parts.len();
            assert_eq!(part[0] & 0x80 != 0, last, "FIN on fragment {i}");
            assert_eq!(
                part[0] & 0x0F,
                if i == 0 { 1 } else { 0 },
                "opcode of fragment {i}"
            );
            let (len, head) = match part[1] {
                126 => (usize::from(u16::from_be_bytes([part[2], part[3]])), 4),
                n => (usize::from(n), 2),
            };
            assert_eq!(part.len(), head + len);
            payload.extend_from_slice(&part[head..]);
        }
        (
            serde_json::from_slice(&payload).expect("valid JSON"),
            parts.len(),
        )
    }

    /// Message frames and their history entries, as a room keeps them.
    fn history_of(texts: &[String]) -> (Vec<Frame>, Vec<Frame>) {
        let mut entries = Vec::new();
        let mut frames = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let frame = message(&MessageEvent {
                node_tag: "n",
                number: i as u64,
                seq: i as u64 + 1,
                room: "r",
                user_id: "u",
                username: "bob",
                text,
                timestamp_ms: 5,
            });
            entries.push(history_entry(frame.payload()));
            frames.push(frame);
        }
        (entries, frames)
    }

    #[test]
    fn joined_carries_small_history_in_one_frame_and_large_history_by_reference() {
        let users = [UserRef {
            id: "u",
            username: "bob",
        }];
        for (texts, spliced) in [
            (vec![], false),
            (vec!["x".to_owned(), "y".to_owned()], false),
            (vec!["z".repeat(3000); 5], true),
        ] {
            let (history, frames) = history_of(&texts);
            let joined = joined(Joined {
                client_id: "c",
                room: "r",
                epoch: "e",
                seq: 1,
                count: 1,
                users: Some(users.iter().copied()),
                history: history.iter(),
                recovered: Some(true),
                truncated: spliced,
            });
            assert_eq!(matches!(joined, JoinedFrames::Spliced { .. }), spliced);
            let (v, parts) = reassemble(&joined);
            assert_eq!(parts, if spliced { texts.len() + 1 } else { 1 });
            let sent: Vec<Value> = frames.iter().map(parse).collect();
            assert_eq!(v["history"], Value::Array(sent));
            assert_eq!(v["users"], json!([{"id":"u","username":"bob"}]));
            assert_eq!(v["recovered"], json!(true));
            assert_eq!(v.get("historyTruncated").is_some(), spliced);
            if let JoinedFrames::Spliced {
                history: shared, ..
            } = &joined
            {
                let first_shared = shared.clone().next().expect("entries");
                assert!(
                    std::ptr::eq(first_shared, &history[1]),
                    "the stored entries themselves are queued"
                );
            }
        }
    }
}
