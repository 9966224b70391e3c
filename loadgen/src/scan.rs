//! Receive-path classification of relay events by byte scanning: no JSON parse, no allocation.
//!
//! Only three facts are needed from a delivered `message`: its room `seq`, and the
//! `<t_ns>:<sender>:<n>:` prefix the generator put at the start of `text`.

use memchr::memmem::Finder;

/// The stamp the generator embeds at the start of every message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Intended send time (its schedule slot), nanoseconds since the Unix epoch.
    pub t_ns: u64,
    pub sender: u64,
    pub n: u64,
}

/// What one server text frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A chat message; `stamp` is `None` for text the generator did not write.
    Message {
        seq: Option<u64>,
        stamp: Option<Stamp>,
    },
    Joined,
    Left,
    /// An `error` event with its `code` (empty when absent).
    Error(&'a [u8]),
    /// Presence, typing, pong and anything newer.
    Other,
}

/// Precomputed substring searchers; one per runtime thread.
pub struct Scanner {
    type_key: Finder<'static>,
    seq_key: Finder<'static>,
    text_key: Finder<'static>,
    code_key: Finder<'static>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            type_key: Finder::new(b"\"type\":\""),
            seq_key: Finder::new(b"\"seq\":"),
            text_key: Finder::new(b"\"text\":\""),
            code_key: Finder::new(b"\"code\":\""),
        }
    }
}

const MESSAGE_PREFIX: &[u8] = b"{\"type\":\"message\"";

impl Scanner {
    /// Classifies one complete text payload.
    pub fn classify<'a>(&self, p: &'a [u8]) -> Event<'a> {
        // Both the relay and the JS peers write `type` first; take that fast path, and fall
        // back to the first `"type":"` for servers that order fields differently.
        let ty: &[u8] = if p.starts_with(MESSAGE_PREFIX) {
            b"message"
        } else {
            match self.type_key.find(p) {
                Some(i) => {
                    let v = &p[i + 8..];
                    match memchr::memchr(b'"', v) {
                        Some(e) => &v[..e],
                        None => return Event::Other,
                    }
                }
                None => return Event::Other,
            }
        };
        match ty {
            b"message" | b"chat" => Event::Message {
                seq: self.seq(p),
                stamp: self.stamp(p),
            },
            b"joined" => Event::Joined,
            b"left" => Event::Left,
            b"error" => Event::Error(self.code(p)),
            _ => Event::Other,
        }
    }

    fn seq(&self, p: &[u8]) -> Option<u64> {
        let i = self.seq_key.find(p)? + 6;
        let rest = p.get(i..)?;
        let skip = rest.iter().take_while(|b| **b == b' ').count();
        digits(&rest[skip..]).map(|(v, _)| v)
    }

    fn stamp(&self, p: &[u8]) -> Option<Stamp> {
        let i = self.text_key.find(p)? + 8;
        parse_stamp(p.get(i..)?)
    }

    fn code<'a>(&self, p: &'a [u8]) -> &'a [u8] {
        self.code_key
            .find(p)
            .and_then(|i| {
                let v = &p[i + 8..];
                memchr::memchr(b'"', v).map(|e| &v[..e])
            })
            .unwrap_or(b"")
    }
}

/// The `<t_ns>:<sender>:<n>:` stamp at the start of a message text (`None`: not ours).
pub fn parse_stamp(rest: &[u8]) -> Option<Stamp> {
    let (t_ns, a) = digits(rest)?;
    let rest = rest.get(a..)?.strip_prefix(b":")?;
    let (sender, b) = digits(rest)?;
    let rest = rest.get(b..)?.strip_prefix(b":")?;
    let (n, c) = digits(rest)?;
    rest.get(c..)?.strip_prefix(b":")?;
    Some(Stamp { t_ns, sender, n })
}

/// Parses leading ASCII digits: (value, digits consumed); `None` if there are none or overflow.
fn digits(s: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &b in s.iter().take(20) {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// Writes the message text: `<t_ns>:<sender>:<n>:` padded with `x` to `payload` bytes.
pub fn write_text(out: &mut Vec<u8>, t_ns: u64, sender: u64, n: u64, payload: usize) {
    let start = out.len();
    for v in [t_ns, sender, n] {
        push_u64(out, v);
        out.push(b':');
    }
    let written = out.len() - start;
    if written < payload {
        out.resize(start + payload, b'x');
    }
}

/// Decimal formatting without `fmt` machinery (this runs once per sent message).
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_message() {
        let s = Scanner::default();
        let mut text = Vec::new();
        write_text(&mut text, 1_763_800_001_234_000_000, 7, 42, 64);
        assert_eq!(text.len(), 64);
        let frame = format!(
            r#"{{"type":"message","id":"3fa9c1-m18","seq":43,"room":"room-1","userId":"3fa9c1-7","username":"u7","text":"{}","timestamp":1763800001234}}"#,
            std::str::from_utf8(&text).expect("ascii")
        );
        assert_eq!(
            s.classify(frame.as_bytes()),
            Event::Message {
                seq: Some(43),
                stamp: Some(Stamp {
                    t_ns: 1_763_800_001_234_000_000,
                    sender: 7,
                    n: 42
                })
            }
        );
    }

    #[test]
    fn other_orders_and_events() {
        let s = Scanner::default();
        assert_eq!(
            s.classify(br#"{"seq": 5,"text":"hello","type":"message"}"#),
            Event::Message {
                seq: Some(5),
                stamp: None
            }
        );
        assert_eq!(
            s.classify(br#"{"type":"joined","seq":3,"history":[{"type":"message","seq":3}]}"#),
            Event::Joined
        );
        assert_eq!(s.classify(br#"{"type":"left","room":"a"}"#), Event::Left);
        assert_eq!(
            s.classify(br#"{"type":"error","code":"rate_limited","message":"slow down"}"#),
            Event::Error(b"rate_limited")
        );
        assert_eq!(s.classify(br#"{"type":"user_joined"}"#), Event::Other);
        assert_eq!(s.classify(b"garbage"), Event::Other);
        assert_eq!(s.classify(br#"{"type":"message"#), Event::Other);
    }
}
