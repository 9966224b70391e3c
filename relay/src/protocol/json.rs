//! A minimal JSON writer for the relay's own events.
//!
//! Events have a fixed shape, so writing them field by field into the frame buffer beats a
//! generic serializer and needs no intermediate value.

use bytes::{BufMut, BytesMut};

/// Appends `s` as a JSON string literal (quotes included).
pub fn put_str(buf: &mut BytesMut, s: &str) {
    buf.reserve(s.len() + 2);
    buf.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1F => {
                buf.put_slice(&bytes[run..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.put_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xF)],
                ]);
                run = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.put_slice(&bytes[run..i]);
        buf.put_slice(escape);
        run = i + 1;
    }
    buf.put_slice(&bytes[run..]);
    buf.put_u8(b'"');
}

/// Bytes `put_str` writes for `s`, exactly: frames are sized to their content, because room
/// history keeps them and a guessed capacity (doubled on overflow) once made a stored message
/// cost four times its size.
pub fn str_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1F => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Digits of `n` in decimal.
pub fn u64_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Appends an unsigned integer.
pub fn put_u64(buf: &mut BytesMut, n: u64) {
    let mut digits = itoa::Buffer::new();
    buf.put_slice(digits.format(n).as_bytes());
}

/// Appends `,"key":` (or `"key":` when `first`); keys are trusted literals.
pub fn put_key(buf: &mut BytesMut, key: &str) {
    buf.put_u8(b',');
    buf.put_u8(b'"');
    buf.put_slice(key.as_bytes());
    buf.put_slice(b"\":");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_lengths() {
        for n in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(u64_len(n), n.to_string().len());
        }
    }

    #[test]
    fn strings_round_trip_through_serde_json() {
        for s in [
            "plain",
            "quote\"back\\slash",
            "ctl\u{1}\u{1f}\n\t\r",
            "émoji 🎉",
            "<img src=x>",
        ] {
            let mut buf = BytesMut::new();
            put_str(&mut buf, s);
            let back: String = serde_json::from_slice(&buf).expect("valid JSON string");
            assert_eq!(back, s);
            assert_eq!(str_len(s), buf.len(), "exact length of {s:?}");
        }
    }
}
