//! Any bytes, as a client's byte stream, through the frame reader: whole, then split in two
//! at a point taken from the input; both must give the same messages and verdict.
#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use relay::ws::reader::FrameReader;

fn run(pieces: &[&[u8]]) -> (Vec<String>, Option<String>) {
    let mut reader = FrameReader::default();
    let mut seen = Vec::new();
    for piece in pieces {
        let mut chunk = piece.to_vec();
        match reader.feed(&mut chunk, 4096, |m| {
            seen.push(format!("{m:?}"));
            ControlFlow::Continue(())
        }) {
            Ok(_) => {}
            Err(violation) => return (seen, Some(format!("{violation:?}"))),
        }
    }
    (seen, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut) * stream.len() / 256;
    let (a, b) = stream.split_at(at);
    assert_eq!(run(&[stream]), run(&[a, b]));
});
