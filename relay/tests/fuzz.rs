//! Property tests (a fuzzer that runs in `cargo test`) over the two decoders a client feeds
//! directly: `relay::protocol::decode` (client commands) and `FrameReader::feed` (RFC 6455
//! frames).
//!
//! Inputs are random bytes, mutations of the seed corpus in `fuzz/corpus/` (shared with the
//! cargo-fuzz targets in `fuzz/`), and well-formed streams built from a model. Properties:
//! nothing panics; feeding a stream in any split gives the same messages and the same verdict
//! as feeding it whole; well-formed streams come back exactly; the reader never buffers more
//! than one message's worth. The case count comes from `PROPTEST_CASES` (default 256 per
//! property; `scripts/test.sh` runs a longer pass). A failing case is shrunk and saved under
//! `relay/proptest-regressions/`, to be committed with the fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on anything unexpected"
)]

mod support;

use std::ops::ControlFlow;
use std::path::Path;

use proptest::prelude::*;
use relay::protocol::{decode, Command};
use relay::ws::reader::{FrameReader, Message, Violation};

const MAX_MESSAGE: usize = 4096;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 10,
        "the corpus in {} is there",
        dir.display()
    );
    seeds
}

/// One edit of a seed: flip, insert, delete or duplicate bytes.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Repeat(usize, usize),
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = data.len();
        match edit {
            Edit::Flip(at, mask) if len > 0 => data[at % len] ^= mask,
            Edit::Insert(at, bytes) => {
                let at = at % (len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(at, n) if len > 0 => {
                let at = at % len;
                data.drain(at..(at + n).min(len));
            }
            Edit::Repeat(at, n) if len > 0 => {
                let at = at % len;
                let piece = data[at..(at + n).min(len)].to_vec();
                data.splice(at..at, piece);
            }
            _ => {}
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(a, m)| Edit::Flip(a, m)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    Just(b'"'),
                    Just(b'\\'),
                    Just(b'{'),
                    Just(b'}'),
                    Just(0x80)
                ],
                1..8
            )
        )
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1..16usize).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 1..64usize).prop_map(|(a, n)| Edit::Repeat(a, n)),
    ];
    prop::collection::vec(edit, 0..6)
}

fn mutated(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(corpus(name)), edits()).prop_map(|(seed, e)| apply(seed, &e))
}

/// What a reader made of a stream: messages in order, then its verdict.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    messages: Vec<String>,
    violation: Option<Violation>,
}

/// Feeds `stream` cut at `cuts` (positions, any order, any count), as reads would deliver it.
fn feed_in_pieces(stream: &[u8], cuts: &[usize]) -> Outcome {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    let mut reader = FrameReader::default();
    let mut messages = Vec::new();
    for piece in points.windows(2) {
        let mut chunk = stream[piece[0]..piece[1]].to_vec();
        let result = reader.feed(&mut chunk, MAX_MESSAGE, |m| {
            let closed = matches!(m, Message::Close(_));
            messages.push(format!("{m:?}"));
            if closed {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match result {
            Err(violation) => {
                return Outcome {
                    messages,
                    violation: Some(violation),
                }
            }
            Ok(ControlFlow::Break(())) => break,
            Ok(ControlFlow::Continue(())) => {}
        }
        // One partial message and one incomplete frame at most, each under the cap; Vec
        // growth can double what it holds, and the stash may keep the last read's capacity.
        assert!(
            reader.buffered() <= 4 * (MAX_MESSAGE + 14) + 2 * chunk.len(),
            "reader holds {} bytes",
            reader.buffered()
        );
    }
    Outcome {
        messages,
        violation: None,
    }
}

/// A message of the model: a text sent in fragments, or a ping between them.
#[derive(Debug, Clone)]
enum Item {
    Text(String, Vec<usize>),
    Ping(Vec<u8>),
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    let item = prop_oneof![
        ("\\PC{0,200}", prop::collection::vec(any::<usize>(), 0..5))
            .prop_map(|(t, cuts)| Item::Text(t, cuts)),
        prop::collection::vec(any::<u8>(), 0..=125).prop_map(Item::Ping),
    ];
    prop::collection::vec(item, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Enough to matter locally, quick in CI; PROPTEST_CASES raises it.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn decode_never_panics_on_any_text(text in "\\PC{0,300}") {
        let _ = decode(&text);
    }

    #[test]
    fn decode_never_panics_on_mutated_commands(bytes in mutated("decode")) {
        let text = String::from_utf8_lossy(&bytes);
        // What decodes as a join names a room taken from the input (or from an escape in it).
        if let Ok(Command::Join { room, .. }) = decode(&text) {
            prop_assert!(text.contains(&*room) || text.contains('\\'));
        }
    }

    #[test]
    fn decode_reads_generated_commands(
        kind in prop::sample::select(vec!["join", "message", "chat", "typing", "leave", "history", "edit", "delete", "ping"]),
        room in "\\PC{1,20}",
        text in "\\PC{0,50}",
        since in any::<u64>(),
        before in any::<u64>(),
        limit in any::<u64>(),
    ) {
        let json = serde_json::json!({"type": kind, "room": room, "text": text, "since": since,
                                      "isTyping": false, "username": "u", "before": before,
                                      "limit": limit, "seq": since}).to_string();
        let command = decode(&json).expect("a well-formed command decodes");
        match command {
            Command::Join { room: r, since: s, .. } => { prop_assert_eq!(&*r, &*room); prop_assert_eq!(s, Some(since)); }
            Command::Message { room: r, text: t, .. } => { prop_assert_eq!(r.as_deref(), Some(&*room)); prop_assert_eq!(&*t, &*text); }
            Command::Typing { is_typing, .. } => prop_assert!(!is_typing),
            Command::Leave { room: r } => prop_assert_eq!(r.as_deref(), Some(&*room)),
            Command::History { room: r, before: b, limit: l } => {
                prop_assert_eq!(r.as_deref(), Some(&*room));
                prop_assert_eq!((b, l), (Some(before), Some(limit)));
            }
            Command::Edit { room: r, seq, text: t } => {
                prop_assert_eq!(r.as_deref(), Some(&*room));
                prop_assert_eq!((seq, &*t), (since, &*text));
            }
            Command::Delete { room: r, seq } => {
                prop_assert_eq!(r.as_deref(), Some(&*room));
                prop_assert_eq!(seq, since);
            }
            Command::Read { .. } => prop_assert!(false, "no read was generated"),
            Command::Ping => prop_assert_eq!(kind, "ping"),
        }
    }

    #[test]
    fn frames_any_bytes_any_split_same_verdict(
        stream in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..600),
            mutated("frames"),
        ],
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = feed_in_pieces(&stream, &[]);
        let split = feed_in_pieces(&stream, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn well_formed_streams_come_back_exactly(
        items in items(),
        key in any::<[u8; 4]>(),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for item in &items {
            match item {
                Item::Text(text, fragment_cuts) => {
                    let bytes = text.as_bytes();
                    let mut points: Vec<usize> = fragment_cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                    points.push(0);
                    points.push(bytes.len());
                    points.sort_unstable();
                    points.dedup();
                    if points.len() == 1 {
                        points.push(0); // an empty text is one empty frame
                    }
                    let last = points.len() - 2;
                    for (i, piece) in points.windows(2).enumerate() {
                        let opcode = if i == 0 { 1 } else { 0 };
                        stream.extend(support::raw::frame_with_key(i == last, opcode, &bytes[piece[0]..piece[1]], key));
                    }
                    expected.push(format!("{:?}", Message::Text(text)));
                }
                Item::Ping(payload) => {
                    stream.extend(support::raw::frame_with_key(true, 9, payload, key));
                    expected.push(format!("{:?}", Message::Ping(payload)));
                }
            }
        }
        let outcome = feed_in_pieces(&stream, &cuts);
        prop_assert_eq!(outcome, Outcome { messages: expected, violation: None });
    }
}

#[test]
fn every_seed_is_handled_whole_and_byte_by_byte() {
    for seed in corpus("frames") {
        let every_byte: Vec<usize> = (0..seed.len()).collect();
        assert_eq!(
            feed_in_pieces(&seed, &[]),
            feed_in_pieces(&seed, &every_byte)
        );
    }
    for seed in corpus("decode") {
        let _ = decode(&String::from_utf8_lossy(&seed));
    }
}
