//! Events that carry stored history entries (`joined`, `history`): the entries are the
//! room's kept `,{message}` fragments, copied into one frame when small and otherwise sent as
//! they are between a head and a tail frame, so many readers share one copy of a room's
//! history.

use bytes::{BufMut, Bytes, BytesMut};

use super::{begin, end, put_users, UserRef};
use crate::protocol::json::{put_key, put_str, put_u64, str_len};
use crate::ws::{Frame, FrameBuilder, OpCode};

/// The reply to a `join`.
#[derive(Debug)]
pub struct Joined<'a, U, H> {
    pub client_id: &'a str,
    pub room: &'a str,
    pub epoch: &'a str,
    pub seq: u64,
    /// The joiner's read position in the room (`lastRead`, 0: none).
    pub last_read: u64,
    /// Messages by others after it, of those the room keeps in memory (`unread`).
    pub unread: u64,
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

/// A `joined` or `history` event on the wire: one frame, or a fragmented message whose middle
/// fragments are the room's stored history entries themselves, shared by every reader.
#[derive(Debug)]
pub enum SplicedFrames<H> {
    Whole(Frame),
    Spliced {
        head: Frame,
        history: H,
        tail: Frame,
    },
}

impl<'a, H: Iterator<Item = &'a Frame> + Clone> SplicedFrames<H> {
    /// The frames to queue, in order; they must be queued together (one message).
    pub fn parts<'s>(&'s self) -> impl Iterator<Item = &'s Bytes> + Clone + use<'s, 'a, H>
    where
        'a: 's,
    {
        let (head, history, tail) = match self {
            SplicedFrames::Whole(frame) => (frame, None, None),
            SplicedFrames::Spliced {
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

pub fn joined<'a, 'u, 'h, U, H>(j: Joined<'a, U, H>) -> SplicedFrames<H>
where
    U: Iterator<Item = UserRef<'u>>,
    H: Iterator<Item = &'h Frame> + Clone,
{
    let (inline, head_history) = inline_bytes(j.history.clone());
    let users_bytes = if j.users.is_some() { j.count * 48 } else { 0 };
    let mut frame = begin("joined", 200 + j.room.len() + head_history + users_bytes);
    let buf = frame.payload();
    put_key(buf, "clientId");
    put_str(buf, j.client_id);
    put_key(buf, "room");
    put_str(buf, j.room);
    put_key(buf, "epoch");
    put_str(buf, j.epoch);
    put_key(buf, "seq");
    put_u64(buf, j.seq);
    // Always present (a client that does not know them ignores them).
    put_key(buf, "lastRead");
    put_u64(buf, j.last_read);
    put_key(buf, "unread");
    put_u64(buf, j.unread);
    put_key(buf, "count");
    put_u64(buf, j.count as u64);
    if let Some(users) = j.users {
        put_users(&mut frame, users);
    }
    put_key(frame.payload(), "history");
    splice(frame, j.history, inline, |buf| {
        put_joined_tail(buf, j.recovered, j.truncated)
    })
}

/// The answer to a `history` command: `messages` are stored entries (oldest first), spliced
/// in as [`joined`] splices its history.
pub fn history<'h, H>(room: &str, messages: H, has_more: bool) -> SplicedFrames<H>
where
    H: Iterator<Item = &'h Frame> + Clone,
{
    let (inline, head_bytes) = inline_bytes(messages.clone());
    let mut frame = begin("history", 64 + str_len(room) + head_bytes);
    let buf = frame.payload();
    put_key(buf, "room");
    put_str(buf, room);
    put_key(buf, "messages");
    splice(frame, messages, inline, |buf| {
        buf.put_u8(b']');
        put_key(buf, "hasMore");
        buf.put_slice(if has_more { b"true" } else { b"false" });
    })
}

/// Whether entries go inline (copied into the first frame), and the bytes of them the first
/// frame holds.
fn inline_bytes<'h>(mut entries: impl Iterator<Item = &'h Frame> + Clone) -> (bool, usize) {
    let all: usize = entries.clone().map(|f| f.payload().len()).sum();
    if all <= INLINE_HISTORY_BYTES {
        (true, all)
    } else {
        (false, entries.next().map_or(0, |f| f.payload().len()))
    }
}

/// Ends an event whose last array holds stored entries: opens the array, then either copies
/// the entries in (`inline`) or ends the head frame after the first one and sends the others
/// as the stored fragments themselves. `put_tail` writes what follows the entries (the `]`
/// included), without the closing `}`.
fn splice<'h, H>(
    mut frame: FrameBuilder,
    mut entries: H,
    inline: bool,
    put_tail: impl FnOnce(&mut BytesMut),
) -> SplicedFrames<H>
where
    H: Iterator<Item = &'h Frame> + Clone,
{
    let buf = frame.payload();
    buf.put_u8(b'[');
    // Entries are `,{message}`: the first goes in without its comma.
    if let Some(first) = entries.next() {
        buf.put_slice(entry_json(first));
    }
    if inline {
        for entry in entries {
            frame.payload().put_slice(entry.payload());
        }
        put_tail(frame.payload());
        return SplicedFrames::Whole(end(frame));
    }
    let head = frame.finish_fragment(OpCode::Text, false);
    let mut tail = FrameBuilder::with_capacity(48);
    put_tail(tail.payload());
    tail.payload().put_u8(b'}');
    SplicedFrames::Spliced {
        head,
        history: entries,
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
    use super::super::{message, MessageEvent};
    use super::*;
    use serde_json::{json, Value};

    fn parse(frame: &Frame) -> Value {
        serde_json::from_slice(frame.payload()).expect("events are valid JSON")
    }

    /// The message a `joined` puts on the wire, its fragments reassembled, and how many
    /// frames it took.
    fn reassemble<'a, H: Iterator<Item = &'a Frame> + Clone>(
        joined: &SplicedFrames<H>,
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
                reply_to: None,
                reference: None,
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
                last_read: 0,
                unread: 0,
                count: 1,
                users: Some(users.iter().copied()),
                history: history.iter(),
                recovered: Some(true),
                truncated: spliced,
            });
            assert_eq!(matches!(joined, SplicedFrames::Spliced { .. }), spliced);
            let (v, parts) = reassemble(&joined);
            assert_eq!(parts, if spliced { texts.len() + 1 } else { 1 });
            let sent: Vec<Value> = frames.iter().map(parse).collect();
            assert_eq!(v["history"], Value::Array(sent));
            assert_eq!(v["users"], json!([{"id":"u","username":"bob"}]));
            assert_eq!(v["recovered"], json!(true));
            assert_eq!((&v["lastRead"], &v["unread"]), (&json!(0), &json!(0)));
            assert_eq!(v.get("historyTruncated").is_some(), spliced);
            if let SplicedFrames::Spliced {
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

    #[test]
    fn history_answers_splice_entries_the_same_way() {
        for (texts, spliced) in [
            (vec![], false),
            (vec!["x".to_owned(), "y".to_owned()], false),
            (vec!["z".repeat(3000); 5], true),
        ] {
            let (entries, frames) = history_of(&texts);
            let answer = history("r", entries.iter(), !spliced);
            assert_eq!(matches!(answer, SplicedFrames::Spliced { .. }), spliced);
            let (v, parts) = reassemble(&answer);
            assert_eq!(parts, if spliced { texts.len() + 1 } else { 1 });
            let sent: Vec<Value> = frames.iter().map(parse).collect();
            assert_eq!(
                v,
                json!({"type":"history","room":"r","messages":sent,"hasMore":!spliced})
            );
        }
    }
}
