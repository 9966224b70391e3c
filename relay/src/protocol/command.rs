//! Decoding client commands.
//!
//! serde_json into one flat struct of borrowed strings: about 130 ns for a typical command,
//! no allocation unless a string has escapes (measured against simd-json in `benches/`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::codes::ErrorCode;

/// One command from a client, borrowing from the frame it came in.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Join {
        room: Cow<'a, str>,
        username: Option<Cow<'a, str>>,
        since: Option<u64>,
        epoch: Option<Cow<'a, str>>,
    },
    Message {
        room: Option<Cow<'a, str>>,
        text: Cow<'a, str>,
        /// The seq of the message this one answers (`replyTo`), in the same room.
        reply_to: Option<u64>,
    },
    Typing {
        room: Option<Cow<'a, str>>,
        is_typing: bool,
    },
    Leave {
        room: Option<Cow<'a, str>>,
    },
    /// Scroll-back: up to `limit` messages older than `before` (both checked by the session).
    History {
        room: Option<Cow<'a, str>>,
        before: Option<u64>,
        limit: Option<u64>,
    },
    /// Changes the text of the sender's own message `seq`.
    Edit {
        room: Option<Cow<'a, str>>,
        seq: u64,
        text: Cow<'a, str>,
    },
    /// Deletes the sender's own message `seq`.
    Delete {
        room: Option<Cow<'a, str>>,
        seq: u64,
    },
    /// Moves the sender's read position in the room forward (`seq` checked by the session).
    Read {
        room: Option<Cow<'a, str>>,
        seq: Option<u64>,
    },
    Ping,
}

/// Why a frame is not a valid command: becomes an `error` event.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A string that borrows from the input when it has no escapes.
///
/// serde's `#[serde(borrow)]` does not reach through `Option<Cow<str>>`, so this wrapper
/// takes the borrowed path itself.
#[derive(Debug)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    room: Option<Str<'a>>,
    #[serde(borrow)]
    username: Option<Str<'a>>,
    #[serde(borrow)]
    text: Option<Str<'a>>,
    since: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Str<'a>>,
    #[serde(rename = "isTyping")]
    is_typing: Option<bool>,
    before: Option<u64>,
    limit: Option<u64>,
    #[serde(rename = "ref", borrow)]
    reference: Option<Str<'a>>,
    #[serde(rename = "replyTo")]
    reply_to: Option<u64>,
    seq: Option<u64>,
}

/// A decoded frame: the command, and the `ref` it carried whatever its type, so that an
/// `error` it causes can carry the `ref` too (docs/PROTOCOL.md "Acknowledged sends").
#[derive(Debug)]
pub struct Decoded<'a> {
    pub command: Result<Command<'a>, CommandError>,
    /// The `ref` of a frame that parsed as a JSON object with a string `ref`.
    pub reference: Option<Cow<'a, str>>,
}

/// Decodes one text frame into a command (fields are checked by the session, not here).
pub fn decode(text: &str) -> Result<Command<'_>, CommandError> {
    decode_frame(text).command
}

/// [`decode`], keeping the frame's `ref` beside the command.
pub fn decode_frame(text: &str) -> Decoded<'_> {
    match parse(text) {
        Ok(raw) => {
            let reference = raw.reference.as_ref().map(|r| r.0.clone());
            Decoded {
                command: command(raw),
                reference,
            }
        }
        Err(err) => Decoded {
            command: Err(err),
            reference: None,
        },
    }
}

fn parse(text: &str) -> Result<Raw<'_>, CommandError> {
    // serde would word this as "expected struct Raw"; say what a client needs to hear.
    if !text.trim_start().starts_with('{') {
        return Err(CommandError::new(
            ErrorCode::InvalidJson,
            r#"invalid JSON: expected an object such as {"type":"join","room":"general"}"#,
        ));
    }
    serde_json::from_str(text)
        .map_err(|err| CommandError::new(ErrorCode::InvalidJson, format!("invalid JSON: {err}")))
}

fn command(raw: Raw<'_>) -> Result<Command<'_>, CommandError> {
    let kind = raw
        .kind
        .ok_or_else(|| CommandError::new(ErrorCode::MissingField, "missing field: type"))?;
    let room = raw.room.map(|s| s.0);
    Ok(match &*kind.0 {
        "join" => Command::Join {
            room: room
                .ok_or_else(|| CommandError::new(ErrorCode::MissingField, "missing field: room"))?,
            username: raw.username.map(|s| s.0),
            since: raw.since,
            epoch: raw.epoch.map(|s| s.0),
        },
        "message" | "chat" => Command::Message {
            room,
            text: raw
                .text
                .map(|s| s.0)
                .ok_or_else(|| CommandError::new(ErrorCode::MissingField, "missing field: text"))?,
            reply_to: raw.reply_to,
        },
        "typing" => Command::Typing {
            room,
            is_typing: raw.is_typing.unwrap_or(true),
        },
        "leave" => Command::Leave { room },
        "history" => Command::History {
            room,
            before: raw.before,
            limit: raw.limit,
        },
        "edit" => Command::Edit {
            room,
            seq: raw
                .seq
                .ok_or_else(|| CommandError::new(ErrorCode::MissingField, "missing field: seq"))?,
            text: raw
                .text
                .map(|s| s.0)
                .ok_or_else(|| CommandError::new(ErrorCode::MissingField, "missing field: text"))?,
        },
        "delete" => Command::Delete {
            room,
            seq: raw
                .seq
                .ok_or_else(|| CommandError::new(ErrorCode::MissingField, "missing field: seq"))?,
        },
        "read" => Command::Read { room, seq: raw.seq },
        "ping" => Command::Ping,
        other => {
            let mut shown: String = other.chars().take(32).collect();
            if shown.len() < other.len() {
                shown.push('…');
            }
            return Err(CommandError::new(
                ErrorCode::UnknownType,
                format!("unknown type: {shown:?}"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tutorial_commands_decode_without_copies() {
        let cmd = decode(r#"{"type":"join","room":"general","username":"alice"}"#).expect("join");
        match cmd {
            Command::Join {
                room,
                username,
                since: None,
                epoch: None,
            } => {
                assert!(matches!(room, Cow::Borrowed("general")));
                assert!(matches!(username, Some(Cow::Borrowed("alice"))));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            decode(r#"{"type":"chat","text":"a\"b"}"#),
            Ok(Command::Message {
                room: None,
                text: Cow::Owned("a\"b".into()),
                reply_to: None,
            })
        );
        assert_eq!(
            decode(r#"{"type":"typing","isTyping":false,"room":"x"}"#),
            Ok(Command::Typing {
                room: Some("x".into()),
                is_typing: false
            })
        );
        assert_eq!(
            decode(r#"{"type":"leave"}"#),
            Ok(Command::Leave { room: None })
        );
        assert_eq!(
            decode(r#"{"type":"history","room":"general","before":43,"limit":50}"#),
            Ok(Command::History {
                room: Some("general".into()),
                before: Some(43),
                limit: Some(50)
            })
        );
        assert_eq!(
            decode(r#"{"type":"read","room":"general","seq":43}"#),
            Ok(Command::Read {
                room: Some("general".into()),
                seq: Some(43)
            })
        );
        assert_eq!(
            decode(r#"{"type":"read"}"#),
            Ok(Command::Read {
                room: None,
                seq: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"history"}"#),
            Ok(Command::History {
                room: None,
                before: None,
                limit: None
            })
        );
    }

    #[test]
    fn a_ref_is_kept_for_any_command_and_reply_to_for_messages() {
        let decoded = decode_frame(r#"{"type":"message","text":"hi","ref":"c-17","replyTo":4}"#);
        assert_eq!(decoded.reference.as_deref(), Some("c-17"));
        assert_eq!(
            decoded.command,
            Ok(Command::Message {
                room: None,
                text: "hi".into(),
                reply_to: Some(4)
            })
        );
        let decoded = decode_frame(r#"{"type":"shout","ref":"c-18"}"#);
        assert_eq!(decoded.reference.as_deref(), Some("c-18"));
        assert_eq!(
            decoded.command.map_err(|e| e.code),
            Err(ErrorCode::UnknownType)
        );
        assert!(decode_frame("nope").reference.is_none());
        assert_eq!(
            decode(r#"{"type":"edit","room":"r","seq":43,"text":"fixed"}"#),
            Ok(Command::Edit {
                room: Some("r".into()),
                seq: 43,
                text: "fixed".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"delete","seq":43}"#),
            Ok(Command::Delete {
                room: None,
                seq: 43
            })
        );
        let code = |s: &str| decode(s).map(|_| ()).map_err(|e| e.code);
        assert_eq!(
            code(r#"{"type":"edit","seq":1}"#),
            Err(ErrorCode::MissingField)
        );
        assert_eq!(code(r#"{"type":"delete"}"#), Err(ErrorCode::MissingField));
        assert_eq!(
            decode_frame(r#"{"type":"ping","ref":7}"#)
                .command
                .map_err(|e| e.code),
            Err(ErrorCode::InvalidJson),
            "a ref is a string"
        );
    }

    #[test]
    fn bad_commands_get_stable_codes() {
        let code = |s: &str| decode(s).map(|_| ()).map_err(|e| e.code);
        assert_eq!(code("not json"), Err(ErrorCode::InvalidJson));
        assert_eq!(code("[1,2]"), Err(ErrorCode::InvalidJson));
        assert_eq!(code(" null"), Err(ErrorCode::InvalidJson));
        assert_eq!(
            code(r#"{"type":"ping","room":5}"#),
            Err(ErrorCode::InvalidJson)
        );
        assert!(decode("42").is_err_and(|e| !e.message.contains("Raw")));
        assert_eq!(code(r#"{"room":"x"}"#), Err(ErrorCode::MissingField));
        assert_eq!(code(r#"{"type":"join"}"#), Err(ErrorCode::MissingField));
        assert_eq!(code(r#"{"type":"message"}"#), Err(ErrorCode::MissingField));
        assert_eq!(code(r#"{"type":"shout"}"#), Err(ErrorCode::UnknownType));
        assert_eq!(
            code(r#"{"type":"join","room":"x","since":-1}"#),
            Err(ErrorCode::InvalidJson)
        );
        for bad in [
            r#"{"type":"history","limit":"10"}"#,
            r#"{"type":"history","limit":-1}"#,
            r#"{"type":"history","limit":2.5}"#,
            r#"{"type":"history","before":null,"limit":true}"#,
            r#"{"type":"history","before":"43"}"#,
        ] {
            assert_eq!(code(bad), Err(ErrorCode::InvalidJson), "{bad}");
        }
    }
}
