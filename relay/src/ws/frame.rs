//! Server frames: built once into a shared `Bytes` that is valid for every recipient.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Frame opcodes the relay understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    pub fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Longest header of an unmasked server frame: 2 bytes + 8-byte extended length.
pub const MAX_HEADER: usize = 10;

/// One complete, unmasked server frame (header + payload) in a reference-counted buffer.
///
/// Cloning is a reference-count bump: fan-out hands the same bytes to every member, and room
/// history keeps them too, so `joined` can splice past messages in without re-encoding.
#[derive(Clone, Debug)]
pub struct Frame {
    bytes: Bytes,
    header_len: u8,
}

impl Frame {
    /// The whole frame as it goes on the wire.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The payload (for text frames, the JSON of the event).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[usize::from(self.header_len)..]
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A complete frame around a payload that is copied once (control frames, small replies).
    pub fn new(opcode: OpCode, payload: &[u8]) -> Self {
        let mut builder = FrameBuilder::with_capacity(payload.len());
        builder.payload().put_slice(payload);
        builder.finish(opcode)
    }

    /// A close frame with a status code and a short reason (truncated to fit 125 bytes).
    pub fn close(code: u16, reason: &str) -> Self {
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        Self::new(OpCode::Close, &payload[..2 + end])
    }
}

/// Builds a frame in place: the payload is written after `MAX_HEADER` reserved bytes, then the
/// real header is written right-aligned into the reserve and the unused front is skipped, so
/// the payload is never copied.
#[derive(Debug)]
pub struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    pub fn with_capacity(payload_capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(MAX_HEADER + payload_capacity);
        buf.put_bytes(0, MAX_HEADER);
        Self { buf }
    }

    /// The buffer to append payload bytes to (everything past the reserved header).
    pub fn payload(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn payload_len(&self) -> usize {
        self.buf.len() - MAX_HEADER
    }

    pub fn finish(self, opcode: OpCode) -> Frame {
        self.finish_fragment(opcode, true)
    }

    /// Finishes one fragment of a message: `opcode` is the message's for the first fragment
    /// and [`OpCode::Continuation`] after it; `fin` marks the last.
    pub fn finish_fragment(mut self, opcode: OpCode, fin: bool) -> Frame {
        let len = self.payload_len();
        let mut header = [0u8; MAX_HEADER];
        let header_len = write_header(&mut header, opcode, len);
        if !fin {
            header[0] &= 0x7F;
        }
        let start = MAX_HEADER - header_len;
        self.buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        self.buf.advance(start);
        Frame {
            bytes: self.buf.freeze(),
            // header_len is at most MAX_HEADER (10), so it fits a u8.
            header_len: header_len as u8,
        }
    }
}

/// Writes an unmasked FIN frame header for `len` payload bytes; returns its length.
pub fn write_header(out: &mut [u8; MAX_HEADER], opcode: OpCode, len: usize) -> usize {
    out[0] = 0x80 | opcode as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len16) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_follow_rfc6455() {
        for (len, header_len, second) in [
            (0, 2, 0u8),
            (125, 2, 125),
            (126, 4, 126),
            (65535, 4, 126),
            (65536, 10, 127),
        ] {
            let payload = vec![b'x'; len];
            let frame = Frame::new(OpCode::Text, &payload);
            assert_eq!(frame.len(), len + header_len);
            assert_eq!(frame.bytes()[0], 0x81);
            assert_eq!(frame.bytes()[1], second);
            assert_eq!(frame.payload(), &payload[..]);
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let frame = Frame::close(4008, &reason);
        assert!(frame.payload().len() <= 125);
        assert_eq!(&frame.payload()[..2], &4008u16.to_be_bytes());
        assert!(std::str::from_utf8(&frame.payload()[2..]).is_ok());
    }
}
