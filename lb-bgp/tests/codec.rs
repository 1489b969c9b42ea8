//! The codec against real peers' bytes (BIRD 2.0, FRR 8.4 and GoBGP 3.10
//! on this machine, captured in sessions with them), RFC 4271's header
//! errors, and round trips of what lb sends.

use std::net::Ipv4Addr;

use lb_bgp::{
    Capability, DecodeError, MAX_LEN, Message, MessageType, Notification, NotificationCode, OpenMessage, RouteRefresh,
    frame,
};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const BIRD_OPEN: &str = "ffffffffffffffffffffffffffffffff003b0104fde8005a7f0000021e021c01040001000101040002000102004002007841040000fde846004700";
const FRR_OPEN: &str = "ffffffffffffffffffffffffffffffff00760104fde800b47f0000055902060104000100010206010400020001020280000202020002024600020641040000fde802020600020a45080001010100020101020b4909076672722d6c61620002044002c0780210470e0001018000000000020180000000";
const GOBGP_OPEN: &str = "ffffffffffffffffffffffffffffffff00410104fde8005a7f0000042402220200490402766d0001040001000101040002000141040000fde80506000100010002";

fn open_of(bytes: &[u8]) -> lb_bgp::Open<'_> {
    let (kind, msg) = frame(bytes, MAX_LEN).unwrap().unwrap();
    assert_eq!(kind, MessageType::Open);
    assert_eq!(msg.len(), bytes.len());
    match Message::decode(kind, msg).unwrap() {
        Message::Open(o) => o,
        other => panic!("{other:?}"),
    }
}

#[test]
fn real_peers_opens_decode() {
    let bird = hex(BIRD_OPEN);
    let o = open_of(&bird);
    assert_eq!(
        (o.asn(), o.hold_time, o.bgp_id),
        (65000, 90, Ipv4Addr::new(127, 0, 0, 2))
    );
    let caps: Vec<Capability<'_>> = o.capabilities().collect();
    assert!(caps.contains(&Capability::Multiprotocol { afi: 1, safi: 1 }));
    assert!(caps.contains(&Capability::Multiprotocol { afi: 2, safi: 1 }));
    assert!(caps.contains(&Capability::RouteRefresh));
    assert!(caps.contains(&Capability::EnhancedRouteRefresh));
    assert!(caps.contains(&Capability::FourOctetAs(65000)));
    assert!(caps.contains(&Capability::GracefulRestart {
        flags: 0,
        time: 120,
        families: &[]
    }));
    // Long-lived graceful restart (71), not acted on: kept as is.
    assert!(caps.contains(&Capability::Other { code: 71, value: &[] }));

    // FRR sends one capability per parameter, and its host name (73).
    let frr = hex(FRR_OPEN);
    let o = open_of(&frr);
    assert_eq!(
        (o.asn(), o.hold_time, o.bgp_id),
        (65000, 180, Ipv4Addr::new(127, 0, 0, 5))
    );
    let caps: Vec<Capability<'_>> = o.capabilities().collect();
    assert!(caps.contains(&Capability::FourOctetAs(65000)));
    assert!(caps.contains(&Capability::Multiprotocol { afi: 2, safi: 1 }));
    assert!(caps.contains(&Capability::EnhancedRouteRefresh));
    assert!(caps.iter().any(|c| matches!(c, Capability::AddPath(_))));
    assert!(
        caps.iter()
            .any(|c| matches!(c, Capability::Other { code: 73, value } if value.ends_with(b"frr-lab\0")))
    );

    let gobgp = hex(GOBGP_OPEN);
    let o = open_of(&gobgp);
    assert_eq!(
        (o.asn(), o.hold_time, o.bgp_id),
        (65000, 90, Ipv4Addr::new(127, 0, 0, 4))
    );
    let caps: Vec<Capability<'_>> = o.capabilities().collect();
    assert_eq!(caps.len(), 6, "{caps:?}");
    // Extended next hop (5): skipped, kept.
    assert!(caps.iter().any(|c| matches!(c, Capability::Other { code: 5, .. })));
}

/// RFC 4271 §6.1 and §6.2, on the malformed messages the lab sent to the
/// real peers: each error names the NOTIFICATION those peers answered.
#[test]
fn header_and_open_errors_name_their_notification() {
    let err = |h: &str| match frame(&hex(h), MAX_LEN) {
        Err(e) => e,
        Ok(Some((k, m))) => Message::decode(k, m).unwrap_err(),
        Ok(None) => panic!("incomplete: {h}"),
    };
    let bad_marker = err("00000000000000000000000000000000001304");
    assert_eq!(bad_marker, DecodeError::NotSynchronized);
    assert_eq!(bad_marker.notification(), NotificationCode::new(1, 1));
    let short = err("ffffffffffffffffffffffffffffffff001204");
    assert_eq!(short, DecodeError::BadLength(18));
    assert_eq!(
        (short.notification(), short.data()),
        (NotificationCode::new(1, 2), vec![0, 18])
    );
    assert_eq!(
        err("ffffffffffffffffffffffffffffffff00140400"),
        DecodeError::BadLength(20)
    );
    let bad_type = err("ffffffffffffffffffffffffffffffff001309");
    assert_eq!(
        (bad_type.notification(), bad_type.data()),
        (NotificationCode::new(1, 3), vec![9])
    );
    assert_eq!(
        err(&"ffffffffffffffffffffffffffffffff1001 02".replace(' ', "")),
        DecodeError::BadLength(4097)
    );
    let mismatch = err("ffffffffffffffffffffffffffffffff00250104fde9005a7f000001140206010400010001");
    assert_eq!(mismatch, DecodeError::MalformedParameters);
    assert_eq!(mismatch.notification(), NotificationCode::new(2, 0));
    // Version 3, hold time 2, identifier 0.0.0.0.
    let open = |version: &str, hold: &str, id: &str| {
        err(&format!(
            "ffffffffffffffffffffffffffffffff001d01{version}fde9{hold}{id}00"
        ))
    };
    let v3 = open("03", "005a", "7f000001");
    assert_eq!(
        (v3.notification(), v3.data()),
        (NotificationCode::new(2, 1), vec![0, 4])
    );
    assert_eq!(
        open("04", "0002", "7f000001").notification(),
        NotificationCode::new(2, 6)
    );
    assert_eq!(
        open("04", "005a", "00000000").notification(),
        NotificationCode::new(2, 3)
    );
    // An optional parameter other than capabilities.
    assert_eq!(
        err("ffffffffffffffffffffffffffffffff00210104fde9005a7f00000104010200ff").notification(),
        NotificationCode::new(2, 4)
    );
}

#[test]
fn shutdown_communication_is_read_only_when_well_formed() {
    // lb's own test Cease from the lab session: "lb-bgp test done".
    let msg = hex("ffffffffffffffffffffffffffffffff0026030602106c622d626770207465737420646f6e65");
    let (k, m) = frame(&msg, MAX_LEN).unwrap().unwrap();
    let Message::Notification(n) = Message::decode(k, m).unwrap() else {
        panic!()
    };
    assert_eq!(n.shutdown_message(), Some("lb-bgp test done"));
    // A length byte past the end (50 for 5 bytes): just data.
    let msg = hex("ffffffffffffffffffffffffffffffff001b0306023273686f7274");
    let (k, m) = frame(&msg, MAX_LEN).unwrap().unwrap();
    let Message::Notification(n) = Message::decode(k, m).unwrap() else {
        panic!()
    };
    assert_eq!(n.code, NotificationCode::ADMINISTRATIVE_SHUTDOWN);
    assert_eq!(n.shutdown_message(), None);
}

#[test]
fn a_stream_is_framed_message_by_message() {
    let mut stream = hex(BIRD_OPEN);
    lb_bgp::write_keepalive(&mut stream);
    let first = frame(&stream, MAX_LEN).unwrap().unwrap();
    assert_eq!(first.0, MessageType::Open);
    let rest = &stream[first.1.len()..];
    assert_eq!(frame(rest, MAX_LEN).unwrap(), Some((MessageType::Keepalive, rest)));
    // Every prefix of a message is "more, please"; none is an error.
    for cut in 0..stream.len().min(59) {
        assert_eq!(frame(&stream[..cut], MAX_LEN).unwrap(), None, "cut at {cut}");
    }
}

fn decode_one(bytes: &[u8]) -> Message<'_> {
    let (k, m) = frame(bytes, MAX_LEN).unwrap().unwrap();
    assert_eq!(m.len(), bytes.len(), "one whole message");
    Message::decode(k, m).unwrap()
}

proptest! {
    /// What lb sends decodes to what it meant, AS_TRANS included.
    #[test]
    fn opens_round_trip(
        asn in any::<u32>(),
        hold in prop_oneof![Just(0u16), 3u16..],
        id in 1u32..,
        families in proptest::collection::vec((1u16..3, 1u8..3), 0..4),
        route_refresh: bool,
        gr in proptest::option::of((0u16..5000, any::<bool>())),
    ) {
        let sent = OpenMessage { asn, hold_time: hold, bgp_id: Ipv4Addr::from(id), families: families.clone(), route_refresh, graceful_restart: gr };
        let mut out = Vec::new();
        sent.write(&mut out);
        let Message::Open(o) = decode_one(&out) else { panic!() };
        prop_assert_eq!(o.asn(), asn);
        prop_assert_eq!(o.my_as, u16::try_from(asn).unwrap_or(lb_bgp::open::AS_TRANS));
        prop_assert_eq!((o.hold_time, o.bgp_id), (hold, Ipv4Addr::from(id)));
        let caps: Vec<Capability<'_>> = o.capabilities().collect();
        let mp: Vec<(u16, u8)> = caps.iter().filter_map(|c| match c { Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)), _ => None }).collect();
        prop_assert_eq!(mp, families);
        prop_assert_eq!(caps.contains(&Capability::RouteRefresh), route_refresh);
        let got_gr = caps.iter().find_map(|c| match c { Capability::GracefulRestart { flags, time, .. } => Some((*time, *flags & 0x8 != 0)), _ => None });
        prop_assert_eq!(got_gr, gr.map(|(t, r)| (t.min(0x0fff), r)));
    }

    /// A shutdown communication comes back as sent, cut to 255 bytes at a
    /// character boundary.
    #[test]
    fn shutdown_messages_round_trip(text in "\\PC{0,300}") {
        let mut out = Vec::new();
        Notification::write_shutdown(NotificationCode::ADMINISTRATIVE_SHUTDOWN, &text, &mut out);
        let Message::Notification(n) = decode_one(&out) else { panic!() };
        let got = n.shutdown_message().unwrap();
        prop_assert!(text.starts_with(got));
        if text.len() <= 255 {
            prop_assert_eq!(got, text.as_str());
        } else {
            // Cut inside at most one character (4 bytes in UTF-8).
            prop_assert!(got.len() <= 255 && got.len() > 255 - 4);
        }
    }

    #[test]
    fn route_refreshes_round_trip(afi: u16, safi: u8, subtype in 0u8..3) {
        let rr = RouteRefresh { afi, safi, subtype };
        let mut out = Vec::new();
        rr.write(&mut out);
        prop_assert_eq!(decode_one(&out), Message::RouteRefresh(rr));
    }

    /// No input makes the decoder panic, and whatever frames is at most as
    /// long as the input.
    #[test]
    fn anything_decodes_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300), ones in 0usize..20) {
        let mut input = vec![0xff; ones.min(16)];
        input.extend_from_slice(&bytes);
        if let Ok(Some((k, m))) = frame(&input, MAX_LEN) {
            prop_assert!(m.len() <= input.len());
            if let Ok(Message::Open(o)) = Message::decode(k, m) {
                let _ = o.capabilities().count();
                let _ = o.asn();
            }
        }
    }
}
