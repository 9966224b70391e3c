//! Frames: masked ones as a client writes them, unmasked ones as a server writes them, and a
//! header reader for either.

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Longest payload [`parse_header`] accepts: nothing this crate's users expect comes close,
/// and a corrupt length must not turn into a huge allocation.
const MAX_PAYLOAD: usize = 1 << 30;

/// Appends one masked client frame with FIN set.
pub fn put_client_frame(out: &mut Vec<u8>, opcode: u8, mask: [u8; 4], payload: &[u8]) {
    put_masked_frame(out, true, opcode, mask, payload);
}

/// Appends one masked client frame; `fin: false` starts or continues a fragmented message.
/// `opcode` goes into the first byte as given, so tests can also set reserved bits.
pub fn put_masked_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, mask: [u8; 4], payload: &[u8]) {
    out.push((u8::from(fin) << 7) | opcode);
    put_length(out, 0x80, payload.len());
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends one unmasked server frame (FIN set): what a relay sends, for fake servers.
pub fn put_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    put_length(out, 0, payload.len());
    out.extend_from_slice(payload);
}

/// The second header byte (with `mask_bit`) and the extended length, in the shortest form.
fn put_length(out: &mut Vec<u8>, mask_bit: u8, len: usize) {
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// XORs `data` with the repeating 4-byte mask (its own inverse). Eight bytes at a time,
/// because the load generator masks every byte it sends.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ m8).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Bytes of header (including the mask key, if any).
    pub header_len: usize,
    pub payload_len: usize,
}

impl Header {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Reads a frame header from the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, &'static str> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err("reserved bits set");
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        match buf.get(at..at + 4) {
            Some(m) => {
                at += 4;
                Some([m[0], m[1], m[2], m[3]])
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    let payload_len = usize::try_from(len).map_err(|_| "frame too long")?;
    if payload_len > MAX_PAYLOAD {
        return Err("frame over 1 GiB");
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        header_len: at,
        payload_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths on both sides of each length-encoding boundary.
    const LENGTHS: [usize; 7] = [0, 5, 125, 126, 65_535, 65_536, 70_000];

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7) as u8).collect()
    }

    #[test]
    fn masked_frames_round_trip_through_parse_header() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in LENGTHS {
            let body = payload(len);
            let mut out = Vec::new();
            put_client_frame(&mut out, OP_TEXT, mask, &body);
            let h = parse_header(&out).expect("valid").expect("complete");
            let header_len = match len {
                0..=125 => 6,
                126..=65_535 => 8,
                _ => 14,
            };
            assert_eq!(
                h,
                Header {
                    fin: true,
                    opcode: OP_TEXT,
                    mask: Some(mask),
                    header_len,
                    payload_len: len,
                },
                "len {len}"
            );
            assert_eq!(h.frame_len(), out.len());
            let mut unmasked = out[h.header_len..].to_vec();
            apply_mask(&mut unmasked, mask);
            assert_eq!(unmasked, body, "len {len}");
        }
    }

    #[test]
    fn masking_matches_the_bytewise_definition() {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        for len in 0..40 {
            let body = payload(len);
            let mut fast = body.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = body
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn server_frames_are_unmasked() {
        for len in LENGTHS {
            let body = payload(len);
            let mut out = Vec::new();
            put_server_frame(&mut out, OP_BINARY, &body);
            let h = parse_header(&out).expect("valid").expect("complete");
            assert_eq!((h.fin, h.opcode, h.mask), (true, OP_BINARY, None));
            assert_eq!(h.frame_len(), out.len());
            assert_eq!(&out[h.header_len..], &body[..]);
        }
    }

    #[test]
    fn fragments_keep_fin_clear() {
        let mut out = Vec::new();
        put_masked_frame(&mut out, false, OP_CONT, [1, 2, 3, 4], b"x");
        let h = parse_header(&out).expect("valid").expect("complete");
        assert_eq!((h.fin, h.opcode), (false, OP_CONT));
        // The RFC 6455 section 5.7 sample: a masked "Hello".
        let mut hello = Vec::new();
        put_client_frame(&mut hello, OP_TEXT, [0x37, 0xFA, 0x21, 0x3D], b"Hello");
        assert_eq!(
            hello,
            [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        );
    }

    #[test]
    fn truncated_headers_ask_for_more() {
        for len in LENGTHS {
            let mut out = Vec::new();
            put_client_frame(&mut out, OP_TEXT, [9, 8, 7, 6], &payload(len));
            let h = parse_header(&out).expect("valid").expect("complete");
            for cut in 0..h.header_len {
                assert_eq!(parse_header(&out[..cut]), Ok(None), "len {len} cut {cut}");
            }
            // A complete header is enough: the payload may still be on its way.
            assert_eq!(parse_header(&out[..h.header_len]), Ok(Some(h)));
        }
    }

    #[test]
    fn rejects_reserved_bits_and_absurd_lengths() {
        assert_eq!(parse_header(&[0xC1, 0x00]), Err("reserved bits set"));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 31).to_be_bytes());
        assert_eq!(parse_header(&huge), Err("frame over 1 GiB"));
    }
}
