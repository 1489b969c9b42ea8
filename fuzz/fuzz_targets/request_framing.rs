//! Arbitrary client bytes through the strict HTTP/1 framer, whole and cut
//! into pieces at arbitrary points: never panics; what passes on is a
//! prefix of the input; the pieces give the same result as the whole.
#![no_main]

use lb_kube::proxy::framing::Framer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where to cut, the rest is the stream.
    let Some((&cut, input)) = data.split_first() else { return };
    let mut whole = Framer::new(4096);
    let mut out_whole = Vec::new();
    let res_whole = whole.feed(input, &mut out_whole);
    assert!(input.starts_with(&out_whole));

    let mut pieces = Framer::new(4096);
    let mut out_pieces = Vec::new();
    let step = usize::from(cut).max(1);
    let mut res_pieces = Ok(());
    for chunk in input.chunks(step) {
        res_pieces = pieces.feed(chunk, &mut out_pieces);
        if res_pieces.is_err() {
            break;
        }
    }
    assert_eq!(res_whole, res_pieces);
    assert_eq!(out_whole, out_pieces);
});
