//! Client frames: parsing, unmasking and reassembly with a cap on the whole message.
//!
//! The reader owns no buffer while a connection is idle: bytes arrive in a caller-provided
//! (per-thread scratch) slice, complete frames are handled in place, and only the tail of a
//! frame that has not fully arrived is kept (`stash`), as is a fragmented message until its
//! last fragment.

use std::ops::ControlFlow;

use super::frame::OpCode;

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    /// The reassembled payload (the relay refuses binary; the echo example echoes it).
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The close status the client sent, if any.
    Close(Option<u16>),
}

/// Why the connection must be closed; maps onto a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// 1002: a frame that breaks RFC 6455.
    Protocol(&'static str),
    /// 1009: a message over the size limit, all fragments counted together.
    TooBig,
    /// 1007: a text message that is not UTF-8.
    InvalidUtf8,
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Protocol(_) => 1002,
            Violation::TooBig => 1009,
            Violation::InvalidUtf8 => 1007,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::Protocol(reason) => reason,
            Violation::TooBig => "message too big",
            Violation::InvalidUtf8 => "text is not valid UTF-8",
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 section 7.4).
///
/// 1000-1003 and 1007-1011 are defined by the RFC, 1012-1014 are registered with IANA,
/// 3000-4999 are for libraries and applications. The rest is refused: 0-999 and 5000+ are
/// not used, 1004 is reserved, 1005, 1006 and 1015 must never be sent in a frame (they only
/// report "no code", "abnormal close" and "TLS failure" locally), 1016-2999 are reserved for
/// future versions of the protocol. A close carrying one of those fails the connection with
/// 1002 instead of being echoed.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub header_len: usize,
    pub payload_len: usize,
}

/// Parses the header at the start of `buf`; `Ok(None)` means more bytes are needed.
///
/// A data frame whose declared length is over `max_payload` is rejected from its header
/// alone, before its payload is read, so an attacker cannot make the relay buffer it.
pub fn parse_head(buf: &[u8], max_payload: usize) -> Result<Option<FrameHead>, Violation> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(Violation::Protocol("reserved bits set"));
    }
    let fin = first & 0x80 != 0;
    let opcode = OpCode::from_u8(first & 0x0F).ok_or(Violation::Protocol("unknown opcode"))?;
    if second & 0x80 == 0 {
        return Err(Violation::Protocol("client frames must be masked"));
    }
    let (payload_len, len_bytes) = match second & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                let len = u64::from_be_bytes(raw);
                // RFC 6455 5.2: "the most significant bit MUST be 0". Such a length is a
                // malformed frame (1002), not merely a large one (1009).
                if len >> 63 != 0 {
                    return Err(Violation::Protocol("64-bit length with the top bit set"));
                }
                // Anything that does not fit usize is certainly over the limit.
                (usize::try_from(len).unwrap_or(usize::MAX), 8)
            }
            None => return Ok(None),
        },
        short => (usize::from(short), 0),
    };
    if opcode.is_control() {
        if !fin {
            return Err(Violation::Protocol("fragmented control frame"));
        }
        if payload_len > 125 {
            return Err(Violation::Protocol("control frame over 125 bytes"));
        }
    } else if payload_len > max_payload {
        return Err(Violation::TooBig);
    }
    let mask_at = 2 + len_bytes;
    let Some(mask) = buf.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        header_len: mask_at + 4,
        payload_len,
    }))
}

/// XORs the masking key over the payload, eight bytes at a time.
pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Chunks are a multiple of 4 bytes long, so the remainder starts at key offset 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// The first fragments of a message whose last fragment has not arrived.
#[derive(Debug)]
struct Partial {
    opcode: OpCode,
    data: Vec<u8>,
    /// Text: how much of `data` is known to be valid UTF-8 (see [`Partial::check_utf8`]).
    checked: usize,
}

impl Partial {
    /// Fails a fragmented text message as soon as its bytes so far cannot be the start of
    /// valid UTF-8, instead of once its last fragment arrives (RFC 6455 section 8.1 and
    /// Autobahn 6.4: fail fast), so a client cannot stream a bad message up to the size cap.
    /// Only the bytes added since the last check are scanned; a character cut by the end of
    /// a fragment is left for the next one.
    fn check_utf8(&mut self) -> Result<(), Violation> {
        let unchecked = self.data.get(self.checked..).unwrap_or_default();
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.checked = self.data.len(),
            Err(err) if err.error_len().is_none() => self.checked += err.valid_up_to(),
            Err(_) => return Err(Violation::InvalidUtf8),
        }
        Ok(())
    }
}

/// Turns the byte stream of one connection into messages.
#[derive(Debug, Default)]
pub struct FrameReader {
    stash: Vec<u8>,
    /// Frames parsed since the last [`FrameReader::take_frames`], of every opcode: the
    /// connection's frame budget is charged with them.
    frames: u32,
    /// Boxed: rare, and every connection's task holds a reader.
    partial: Option<Box<Partial>>,
}

impl FrameReader {
    /// Frames parsed since the last call.
    pub fn take_frames(&mut self) -> u32 {
        std::mem::take(&mut self.frames)
    }

    /// Bytes held for this connection between reads (zero when idle).
    pub fn buffered(&self) -> usize {
        self.stash.capacity() + self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    /// Feeds bytes just read. `on` is called for each message in order and may stop the
    /// processing (for example after a close); the bytes after that point are discarded.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        max_message: usize,
        mut on: impl FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Violation> {
        if self.stash.is_empty() {
            let (used, flow) = self.process(input, max_message, &mut on)?;
            if flow.is_continue() && used < input.len() {
                self.stash.extend_from_slice(&input[used..]);
            }
            return Ok(flow);
        }
        let mut stash = std::mem::take(&mut self.stash);
        stash.extend_from_slice(input);
        let (used, flow) = self.process(&mut stash, max_message, &mut on)?;
        if flow.is_continue() && used < stash.len() {
            stash.drain(..used);
            self.stash = stash;
        }
        // Otherwise the stash allocation is dropped: an idle connection holds no buffer.
        Ok(flow)
    }

    fn process(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        on: &mut impl FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<(usize, ControlFlow<()>), Violation> {
        let mut pos = 0;
        while let Some(head) = parse_head(&buf[pos..], max_message)? {
            let end = pos + head.header_len + head.payload_len;
            if end > buf.len() {
                break;
            }
            let payload = &mut buf[pos + head.header_len..end];
            unmask(payload, head.mask);
            pos = end;
            self.frames = self.frames.saturating_add(1);
            let flow = self.on_frame(head, payload, max_message, on)?;
            if flow.is_break() {
                return Ok((pos, flow));
            }
        }
        Ok((pos, ControlFlow::Continue(())))
    }

    fn on_frame(
        &mut self,
        head: FrameHead,
        payload: &mut [u8],
        max_message: usize,
        on: &mut impl FnMut(Message<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, Violation> {
        match head.opcode {
            OpCode::Ping => Ok(on(Message::Ping(payload))),
            OpCode::Pong => Ok(on(Message::Pong)),
            OpCode::Close => {
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(Violation::Protocol("close payload of one byte")),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !valid_close_code(code) {
                            return Err(Violation::Protocol("invalid close code"));
                        }
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(Violation::InvalidUtf8);
                        }
                        Some(code)
                    }
                };
                Ok(on(Message::Close(code)))
            }
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(Violation::Protocol("new message inside a fragmented one"));
                }
                if head.fin {
                    deliver(head.opcode, payload, on)
                } else {
                    let mut partial = Box::new(Partial {
                        opcode: head.opcode,
                        data: payload.to_vec(),
                        checked: 0,
                    });
                    if head.opcode == OpCode::Text {
                        partial.check_utf8()?;
                    }
                    self.partial = Some(partial);
                    Ok(ControlFlow::Continue(()))
                }
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(Violation::Protocol("continuation without a first fragment"));
                };
                if partial.data.len() + payload.len() > max_message {
                    return Err(Violation::TooBig);
                }
                partial.data.extend_from_slice(payload);
                if partial.opcode == OpCode::Text && !head.fin {
                    // The last fragment is checked whole by `deliver`.
                    partial.check_utf8()?;
                }
                match self.partial.take() {
                    Some(mut whole) if head.fin => deliver(whole.opcode, &mut whole.data, on),
                    still_open => {
                        self.partial = still_open;
                        Ok(ControlFlow::Continue(()))
                    }
                }
            }
        }
    }
}

fn deliver(
    opcode: OpCode,
    payload: &mut [u8],
    on: &mut impl FnMut(Message<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, Violation> {
    if opcode == OpCode::Binary {
        return Ok(on(Message::Binary(payload)));
    }
    let text = std::str::from_utf8(payload).map_err(|_| Violation::InvalidUtf8)?;
    Ok(on(Message::Text(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn collect(
        reader: &mut FrameReader,
        bytes: &[u8],
        max: usize,
    ) -> Result<Vec<String>, Violation> {
        let mut seen = Vec::new();
        let mut input = bytes.to_vec();
        let flow = reader.feed(&mut input, max, |m| {
            seen.push(format!("{m:?}"));
            ControlFlow::Continue(())
        })?;
        assert!(flow.is_continue());
        Ok(seen)
    }

    #[test]
    fn unmask_matches_the_bytewise_definition() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..37).collect();
        let mut fast = data.clone();
        unmask(&mut fast, key);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(fast, slow);
    }

    #[test]
    fn frames_split_at_every_byte_reassemble() {
        let mut wire = client_frame(true, 1, br#"{"type":"ping"}"#);
        wire.extend(client_frame(false, 1, b"hel"));
        wire.extend(client_frame(true, 9, b"p"));
        wire.extend(client_frame(true, 0, b"lo"));
        for cut in 0..wire.len() {
            let mut reader = FrameReader::default();
            let mut seen = collect(&mut reader, &wire[..cut], 1024).expect("valid");
            seen.extend(collect(&mut reader, &wire[cut..], 1024).expect("valid"));
            assert_eq!(
                seen,
                vec![
                    r#"Text("{\"type\":\"ping\"}")"#,
                    "Ping([112])",
                    r#"Text("hello")"#
                ],
                "cut at {cut}"
            );
            assert_eq!(reader.buffered(), 0, "nothing kept once everything arrived");
        }
    }

    #[test]
    fn fragmented_message_over_the_limit_is_too_big() {
        let mut reader = FrameReader::default();
        let mut wire = client_frame(false, 1, &[b'a'; 600]);
        wire.extend(client_frame(false, 0, &[b'a'; 600]));
        assert_eq!(collect(&mut reader, &wire, 1000), Err(Violation::TooBig));
    }

    #[test]
    fn single_frame_over_the_limit_is_refused_from_its_header() {
        let mut reader = FrameReader::default();
        let wire = client_frame(true, 1, &[b'a'; 2000]);
        assert_eq!(
            collect(&mut reader, &wire[..14], 1000),
            Err(Violation::TooBig)
        );
    }

    #[test]
    fn protocol_violations() {
        let unmasked = [0x81u8, 0x01, b'a'];
        assert!(matches!(
            collect(&mut FrameReader::default(), &unmasked, 100),
            Err(Violation::Protocol(_))
        ));
        let reserved = client_frame(true, 1 | 0x40, b"a");
        assert!(matches!(
            collect(&mut FrameReader::default(), &reserved, 100),
            Err(Violation::Protocol(_))
        ));
        let lone_continuation = client_frame(true, 0, b"a");
        assert!(matches!(
            collect(&mut FrameReader::default(), &lone_continuation, 100),
            Err(Violation::Protocol(_))
        ));
        let bad_utf8 = client_frame(true, 1, &[0xff, 0xfe]);
        assert_eq!(
            collect(&mut FrameReader::default(), &bad_utf8, 100),
            Err(Violation::InvalidUtf8)
        );
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        client_frame(true, 8, &payload)
    }

    #[test]
    fn close_codes_a_peer_may_send_are_delivered() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1010, 1011, 1012, 1014, 3000, 4999,
        ] {
            let wire = close_payload(code, b"bye");
            assert_eq!(
                collect(&mut FrameReader::default(), &wire, 100),
                Ok(vec![format!("Close(Some({code}))")]),
                "code {code}"
            );
        }
        let empty = client_frame(true, 8, b"");
        assert_eq!(
            collect(&mut FrameReader::default(), &empty, 100),
            Ok(vec!["Close(None)".to_owned()])
        );
    }

    #[test]
    fn invalid_close_codes_are_protocol_errors() {
        // The codes Autobahn's case 7.9 sends, and the edges of the valid ranges.
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let wire = close_payload(code, b"");
            assert_eq!(
                collect(&mut FrameReader::default(), &wire, 100),
                Err(Violation::Protocol("invalid close code")),
                "code {code}"
            );
            assert!(!valid_close_code(code));
        }
    }

    #[test]
    fn a_close_payload_of_one_byte_is_a_protocol_error() {
        let wire = client_frame(true, 8, &[0x03]);
        assert_eq!(
            collect(&mut FrameReader::default(), &wire, 100),
            Err(Violation::Protocol("close payload of one byte"))
        );
    }

    #[test]
    fn a_close_reason_that_is_not_utf8_is_1007() {
        let wire = close_payload(1000, &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xFF]);
        let verdict = collect(&mut FrameReader::default(), &wire, 100);
        assert_eq!(verdict, Err(Violation::InvalidUtf8));
        assert_eq!(Violation::InvalidUtf8.close_code(), 1007);
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() {
        let key = [1, 2, 3, 4];
        for (opcode, len) in [(0x82u8, 1u64 << 63), (0x81, u64::MAX), (0x89, 1 << 63)] {
            let mut wire = vec![opcode, 0x80 | 127];
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend_from_slice(&key);
            let verdict = collect(&mut FrameReader::default(), &wire, usize::MAX);
            assert_eq!(
                verdict,
                Err(Violation::Protocol("64-bit length with the top bit set")),
                "opcode {opcode:#x} length {len:#x}"
            );
            assert_eq!(Violation::Protocol("").close_code(), 1002);
        }
        // Just under: merely too big for the limit.
        let mut wire = vec![0x82, 0x80 | 127];
        wire.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        wire.extend_from_slice(&key);
        assert_eq!(
            collect(&mut FrameReader::default(), &wire, 1 << 20),
            Err(Violation::TooBig)
        );
    }

    #[test]
    fn a_fragmented_text_message_fails_at_its_first_bad_fragment() {
        // Autobahn 6.4.1: a valid first fragment, then one that makes the text invalid; the
        // last fragment has not been sent.
        let mut wire = client_frame(false, 1, "κόσμε".as_bytes());
        wire.extend(client_frame(false, 0, &[0xF4, 0x90, 0x80, 0x80]));
        assert_eq!(
            collect(&mut FrameReader::default(), &wire, 1024),
            Err(Violation::InvalidUtf8)
        );
        // Bad from the first fragment on.
        let first = client_frame(false, 1, &[b'a', 0xFF]);
        assert_eq!(
            collect(&mut FrameReader::default(), &first, 1024),
            Err(Violation::InvalidUtf8)
        );
    }

    #[test]
    fn characters_cut_by_fragment_boundaries_are_valid() {
        // "é" and "🎉" split across fragments, one byte at a time at the end.
        let text = "é🎉".as_bytes();
        let mut wire = client_frame(false, 1, &text[..1]);
        for byte in &text[1..text.len() - 1] {
            wire.extend(client_frame(false, 0, std::slice::from_ref(byte)));
        }
        wire.extend(client_frame(true, 0, &text[text.len() - 1..]));
        assert_eq!(
            collect(&mut FrameReader::default(), &wire, 1024),
            Ok(vec![r#"Text("é🎉")"#.to_owned()])
        );
        // A cut character that the last fragment does not complete is still invalid.
        let mut wire = client_frame(false, 1, &text[..3]);
        wire.extend(client_frame(true, 0, b""));
        assert_eq!(
            collect(&mut FrameReader::default(), &wire, 1024),
            Err(Violation::InvalidUtf8)
        );
    }

    #[test]
    fn binary_messages_carry_their_reassembled_payload() {
        let mut wire = client_frame(false, 2, &[0, 1]);
        wire.extend(client_frame(true, 0, &[2, 0xFF]));
        let mut seen = Vec::new();
        let mut input = wire.clone();
        let flow = FrameReader::default()
            .feed(&mut input, 100, |m| {
                if let Message::Binary(data) = m {
                    seen.push(data.to_vec());
                }
                ControlFlow::Continue(())
            })
            .expect("valid");
        assert!(flow.is_continue());
        assert_eq!(seen, vec![vec![0, 1, 2, 0xFF]]);
    }
}
