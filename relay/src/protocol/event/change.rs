//! Edits and deletes: the `message_edited` and `message_deleted` events, and a stored message
//! as it is after them.
//!
//! Both events take a `seq` of their own in the room's order, so a client resuming with
//! `since` gets those it missed. What a room keeps (in memory, on disk, in a cluster node's
//! tail) shows each message as it is now: whoever keeps an entry applies the change to it when
//! the change event is kept ([`change_of`] reads it back from the event itself, so the one
//! event is all any backend needs), with [`revise`].

use bytes::BufMut;
use serde::Deserialize;

use super::end;
use crate::protocol::json::{put_key, put_str, put_u64, str_len, u64_len};
use crate::ws::{Frame, FrameBuilder};

/// The `userId` of the admin API's server messages, which no client may change.
pub const SERVER_USER_ID: &str = "server";

/// What a change event does to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Edit { text: String, edited_at: u64 },
    Delete,
}

/// The fields of a change event besides its seq.
#[derive(Debug, Clone, Copy)]
pub struct ChangeEvent<'a> {
    pub room: &'a str,
    pub target: u64,
    /// `Some(text, editedAt)` for an edit, `None` for a delete.
    pub edit: Option<(&'a str, u64)>,
}

/// The change event up to its seq value: `{"type":"message_edited","room":..,"seq":`. With
/// [`put_change_tail`] the one place its layout is written (the cluster sends the halves
/// through Redis, which puts the seq between them).
pub fn put_change_head(buf: &mut bytes::BytesMut, c: &ChangeEvent<'_>) {
    buf.put_slice(if c.edit.is_some() {
        b"{\"type\":\"message_edited\""
    } else {
        b"{\"type\":\"message_deleted\""
    });
    put_key(buf, "room");
    put_str(buf, c.room);
    put_key(buf, "seq");
}

/// After the seq, without the closing `}`: `,"target":N` and for an edit
/// `,"text":..,"editedAt":N`.
pub fn put_change_tail(buf: &mut bytes::BytesMut, c: &ChangeEvent<'_>) {
    put_key(buf, "target");
    put_u64(buf, c.target);
    if let Some((text, edited_at)) = c.edit {
        put_key(buf, "text");
        put_str(buf, text);
        put_key(buf, "editedAt");
        put_u64(buf, edited_at);
    }
}

pub fn change(c: &ChangeEvent<'_>, seq: u64) -> Frame {
    let capacity = 64
        + str_len(c.room)
        + u64_len(seq)
        + u64_len(c.target)
        + c.edit.map_or(0, |(t, _)| str_len(t) + 40);
    let mut frame = FrameBuilder::with_capacity(capacity);
    let buf = frame.payload();
    put_change_head(buf, c);
    put_u64(buf, seq);
    put_change_tail(buf, c);
    end(frame)
}

#[derive(Deserialize)]
struct ChangeJson {
    #[serde(rename = "type")]
    kind: String,
    target: u64,
    text: Option<String>,
    #[serde(rename = "editedAt")]
    edited_at: Option<u64>,
}

/// The target and change of a stored event, if it is a change event. Anything else costs a
/// prefix comparison: every kept message goes through here.
pub fn change_of(json: &[u8]) -> Option<(u64, Change)> {
    if !json.starts_with(b"{\"type\":\"message_") {
        return None;
    }
    let parsed: ChangeJson = serde_json::from_slice(json).ok()?;
    let change = match (&*parsed.kind, parsed.text) {
        ("message_edited", Some(text)) => Change::Edit {
            text,
            edited_at: parsed.edited_at.unwrap_or(0),
        },
        ("message_deleted", _) => Change::Delete,
        _ => return None,
    };
    Some((parsed.target, change))
}

/// A stored message event's fields, as [`revise`] and the author check read them.
#[derive(Debug, Deserialize)]
pub struct Stored {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub seq: u64,
    pub room: String,
    #[serde(rename = "userId")]
    pub user_id: String,
    pub username: String,
    pub text: Option<String>,
    pub timestamp: u64,
    #[serde(rename = "replyTo")]
    pub reply_to: Option<u64>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

impl Stored {
    /// A stored chat message (not another event kept in the log), or `None`.
    pub fn parse(json: &[u8]) -> Option<Self> {
        let stored: Self = serde_json::from_slice(json).ok()?;
        (stored.kind == "message").then_some(stored)
    }
}

/// The message `original` (its event JSON) as it is after `change`: an edit replaces the
/// text and adds `"edited":true` and `"editedAt"`; a delete drops the text and adds
/// `"deleted":true`. `None` when there is nothing to change: not a message, or deleted
/// already (a delete is final).
pub fn revise(original: &[u8], change: &Change) -> Option<Frame> {
    let m = Stored::parse(original)?;
    if m.deleted {
        return None;
    }
    let mut frame = FrameBuilder::with_capacity(original.len() + 48);
    let buf = frame.payload();
    buf.put_slice(b"{\"type\":\"message\"");
    put_key(buf, "id");
    put_str(buf, &m.id);
    put_key(buf, "seq");
    put_u64(buf, m.seq);
    put_key(buf, "room");
    put_str(buf, &m.room);
    put_key(buf, "userId");
    put_str(buf, &m.user_id);
    put_key(buf, "username");
    put_str(buf, &m.username);
    if let Change::Edit { text, .. } = change {
        put_key(buf, "text");
        put_str(buf, text);
    }
    put_key(buf, "timestamp");
    put_u64(buf, m.timestamp);
    if let Some(reply_to) = m.reply_to {
        put_key(buf, "replyTo");
        put_u64(buf, reply_to);
    }
    if let Some(reference) = &m.reference {
        put_key(buf, "ref");
        put_str(buf, reference);
    }
    match change {
        Change::Edit { edited_at, .. } => {
            buf.put_slice(b",\"edited\":true");
            put_key(buf, "editedAt");
            put_u64(buf, *edited_at);
        }
        Change::Delete => buf.put_slice(b",\"deleted\":true"),
    }
    Some(end(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(frame: &Frame) -> Value {
        serde_json::from_slice(frame.payload()).expect("JSON")
    }

    const ORIGINAL: &str = r#"{"type":"message","id":"ab-m1","seq":43,"room":"general","userId":"ab-1","username":"alice","text":"tpyo","timestamp":5,"replyTo":40}"#;

    #[test]
    fn change_events_encode_as_documented_and_read_back() {
        let edit = change(
            &ChangeEvent {
                room: "general",
                target: 43,
                edit: Some(("fixed", 99)),
            },
            44,
        );
        assert_eq!(
            parse(&edit),
            json!({"type":"message_edited","room":"general","seq":44,"target":43,"text":"fixed","editedAt":99})
        );
        assert_eq!(
            change_of(edit.payload()),
            Some((
                43,
                Change::Edit {
                    text: "fixed".into(),
                    edited_at: 99
                }
            ))
        );
        let delete = change(
            &ChangeEvent {
                room: "general",
                target: 43,
                edit: None,
            },
            45,
        );
        assert_eq!(
            parse(&delete),
            json!({"type":"message_deleted","room":"general","seq":45,"target":43})
        );
        assert_eq!(change_of(delete.payload()), Some((43, Change::Delete)));
        assert_eq!(change_of(ORIGINAL.as_bytes()), None);
    }

    #[test]
    fn a_revised_message_shows_its_edit_or_its_deletion_and_a_delete_is_final() {
        let edited = revise(
            ORIGINAL.as_bytes(),
            &Change::Edit {
                text: "typo".into(),
                edited_at: 7,
            },
        )
        .expect("a message");
        assert_eq!(
            parse(&edited),
            json!({"type":"message","id":"ab-m1","seq":43,"room":"general","userId":"ab-1",
                   "username":"alice","text":"typo","timestamp":5,"replyTo":40,
                   "edited":true,"editedAt":7})
        );
        let deleted = revise(edited.payload(), &Change::Delete).expect("a message");
        assert_eq!(
            parse(&deleted),
            json!({"type":"message","id":"ab-m1","seq":43,"room":"general","userId":"ab-1",
                   "username":"alice","timestamp":5,"replyTo":40,"deleted":true})
        );
        assert!(revise(deleted.payload(), &Change::Delete).is_none());
        assert!(revise(
            br#"{"type":"message_deleted","room":"r","seq":2,"target":1}"#,
            &Change::Delete
        )
        .is_none());
    }
}
