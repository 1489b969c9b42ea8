//! Arbitrary backend bytes through the chunked-body decoder, whole and cut
//! into pieces at arbitrary points: never panics; the body is made of the
//! input's bytes, in order; the pieces give the same body, end or error,
//! and leave the same bytes after the end.
#![no_main]

use bytes::BytesMut;
use lb_kube::proxy::framing::{Dechunked, Dechunker};
use libfuzzer_sys::fuzz_target;

/// The body, whether it ended (`Some(true)`), failed (`None`) or wants
/// more (`Some(false)`), and the bytes left after it.
fn decode(input: &[u8], step: usize) -> (Vec<u8>, Option<bool>, Vec<u8>) {
    let mut d = Dechunker::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = input.chunks(step.max(1));
    loop {
        match d.decode(&mut buf) {
            Ok(Dechunked::Data(b)) => body.extend_from_slice(&b),
            Ok(Dechunked::End) => {
                let rest: Vec<u8> = buf.iter().copied().chain(pieces.flatten().copied()).collect();
                return (body, Some(true), rest);
            }
            Err(_) => return (body, None, Vec::new()),
            Ok(Dechunked::More) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return (body, Some(false), Vec::new()),
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else { return };
    let whole = decode(input, input.len());
    let pieces = decode(input, usize::from(cut));
    assert_eq!(whole, pieces);
    // The body's bytes appear in the input in order.
    let mut at = 0;
    for b in &whole.0 {
        match input[at..].iter().position(|x| x == b) {
            Some(i) => at += i + 1,
            None => panic!("a body byte not from the input"),
        }
    }
});
