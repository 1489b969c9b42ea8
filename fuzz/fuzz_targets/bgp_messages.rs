//! lb-bgp's framing and decoding on arbitrary byte streams: no panic, and
//! every framed message lies within the stream.
#![no_main]

use lb_bgp::{MAX_LEN, Message, frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((kind, message))) = frame(rest, MAX_LEN) {
        assert!(message.len() <= rest.len());
        match Message::decode(kind, message) {
            Ok(Message::Open(o)) => {
                let _ = o.capabilities().count();
                let _ = o.asn();
            }
            Ok(Message::Update(u)) => {
                let _ = (u.withdrawn().count(), u.nlri().count(), u.end_of_rib(), u.check(true));
                for a in u.attributes() {
                    if let Ok(Some(mp)) = lb_bgp::update::mp_reach_v6(a.value) {
                        let _ = mp.prefixes().count();
                    }
                }
            }
            Ok(Message::Notification(n)) => {
                let _ = n.shutdown_message();
            }
            Ok(_) => {}
            Err(e) => {
                let _ = (e.notification(), e.data());
            }
        }
        rest = &rest[message.len()..];
    }
});
