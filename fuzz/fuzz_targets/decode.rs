//! Any bytes, as the text of a client frame, through the command decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = relay::protocol::decode(text);
    }
});
