//! Room names and usernames: what is accepted, and the one form a name is kept in.
//!
//! A name is compared byte for byte everywhere (room map, cluster keys, JWT `rooms` claims,
//! member lists), so two spellings of the same text must become one string first: names are
//! normalized to NFC, and "é" (U+00E9) and "e" + U+0301 are the same room and the same user.
//! Characters that render as nothing or reorder the text around them (general category Cf:
//! bidi overrides, zero-width characters, the soft hyphen, ...) are refused, with control
//! characters (Cc), so a name cannot look like another one or spoof the text next to it.

use std::borrow::Cow;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest name, in characters of its NFC form.
pub const MAX_NAME_CHARS: usize = 64;

/// No character's canonical decomposition is longer than 4 code points (U+1FAF and others),
/// so an NFC name of `MAX_NAME_CHARS` characters comes from at most 256 code points, 1 KiB of
/// UTF-8. A longer input is refused before it is normalized: the limit costs nothing to check
/// and bounds the normalization work a client can ask for.
const MAX_INPUT_BYTES: usize = MAX_NAME_CHARS * 4 * 4;

/// The form `name` is kept in, or `None` when it is not a valid name: empty, over 64
/// characters once normalized, or holding a control (Cc) or format (Cf) character.
///
/// Borrows when the name already is NFC (every ASCII name), so the common case does not
/// allocate.
pub fn normalize_name(name: &str) -> Option<Cow<'_, str>> {
    if name.is_empty() || name.len() > MAX_INPUT_BYTES {
        return None;
    }
    let name = match is_nfc_quick(name.chars()) {
        IsNormalized::Yes => Cow::Borrowed(name),
        // `Maybe` needs the full algorithm to decide; composing is as cheap as checking.
        IsNormalized::No | IsNormalized::Maybe => {
            let nfc: String = name.nfc().collect();
            if nfc == name {
                Cow::Borrowed(name)
            } else {
                Cow::Owned(nfc)
            }
        }
    };
    let mut chars = 0;
    for c in name.chars() {
        chars += 1;
        if chars > MAX_NAME_CHARS || is_refused(c) {
            return None;
        }
    }
    Some(name)
}

/// Control characters and format characters (Cf: U+00AD soft hyphen, U+200B-U+200F
/// zero-width and direction marks, U+202A-U+202E and U+2066-U+2069 bidi embeddings,
/// overrides and isolates, U+2060 word joiner, U+FEFF, the tag characters, ...).
fn is_refused(c: char) -> bool {
    c.is_control() || c.general_category() == GeneralCategory::Format
}

/// Whether `name` is a valid name (see [`normalize_name`]).
pub fn valid_name(name: &str) -> bool {
    normalize_name(name).is_some()
}

/// The NFC form of `name` without checking it: for names that are only compared against
/// validated ones (a JWT's `rooms` claim), where an invalid name simply never matches.
pub fn nfc(name: &str) -> Cow<'_, str> {
    match is_nfc_quick(name.chars()) {
        IsNormalized::Yes => Cow::Borrowed(name),
        IsNormalized::No | IsNormalized::Maybe => Cow::Owned(name.nfc().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(valid_name("general"));
        assert!(valid_name(&"é".repeat(64)));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name("tab\there"));
        assert!(!valid_name("nul\0"));
    }

    #[test]
    fn format_characters_are_refused() {
        let refused = concat!(
            "\u{00AD}\u{061C}\u{200B}\u{200C}\u{200D}\u{200E}\u{200F}",
            "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}",
            "\u{2060}\u{2066}\u{2067}\u{2068}\u{2069}\u{FEFF}\u{E0001}",
        );
        for c in refused.chars() {
            assert!(!valid_name(&format!("ad{c}min")), "U+{:04X}", u32::from(c));
        }
        // Neighbours that are ordinary text stay allowed.
        for ok in ["a-b", "a b", "a\u{2010}b", "日本語", "emoji 🎉"] {
            assert!(valid_name(ok), "{ok:?}");
        }
    }

    #[test]
    fn nfd_and_nfc_are_one_name() {
        let nfc_form = normalize_name("caf\u{e9}").expect("valid");
        let nfd_form = normalize_name("cafe\u{301}").expect("valid");
        assert_eq!(nfc_form, nfd_form);
        assert_eq!(&*nfd_form, "caf\u{e9}");
        assert!(
            matches!(nfc_form, Cow::Borrowed(_)),
            "NFC input is not copied"
        );
        assert!(matches!(
            normalize_name("general").expect("valid"),
            Cow::Borrowed("general")
        ));
        assert_eq!(nfc("cafe\u{301}"), "caf\u{e9}");
    }

    #[test]
    fn length_is_measured_after_normalization() {
        // 64 "é" written decomposed: 128 code points in, 64 characters kept.
        let decomposed = "e\u{301}".repeat(64);
        assert_eq!(decomposed.chars().count(), 128);
        let kept = normalize_name(&decomposed).expect("64 characters once composed");
        assert_eq!(kept.chars().count(), 64);
        assert!(!valid_name(&"e\u{301}".repeat(65)));
        // Four code points that compose into one (U+1FAF), 64 times: at the input limit.
        let greek = "\u{3a9}\u{314}\u{342}\u{345}".repeat(64);
        assert!(greek.len() <= MAX_INPUT_BYTES);
        assert_eq!(normalize_name(&greek).map(|n| n.chars().count()), Some(64));
    }
}
