//! Arbitrary frames through the Layer 2 responder: never panics; whatever
//! it answers is a well-formed frame from the interface's MAC; parsing is
//! total (an error, never a panic).
#![no_main]

use std::net::IpAddr;

use lb_arp::wire::{self, Frame, Mac};
use lb_arp::{Owned, Response, respond};
use libfuzzer_sys::fuzz_target;

const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);

fuzz_target!(|data: &[u8]| {
    let owned = Owned::new(["10.200.0.100".parse::<IpAddr>().unwrap(), "fd00::100".parse().unwrap()]);
    let _ = wire::parse(data);
    let mut out = [0u8; wire::ADVERT_FRAME];
    if let Response::Reply { len: n, .. } = respond(OURS, &owned, data, &mut out) {
        let src = match wire::parse(&out[..n]) {
            Ok(Frame::Arp(a)) => a.eth_src,
            Ok(Frame::Neighbor(nb)) => nb.eth_src,
            Err(e) => panic!("an answer that does not parse: {e}"),
        };
        assert_eq!(src, OURS);
    }
});
