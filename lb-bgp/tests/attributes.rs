//! Typed path attributes: every attribute lb reads writes and reads back
//! (proptest); malformed values get RFC 7606's verdicts; AS4_PATH merges as
//! RFC 6793 says; and whole sessions captured from BIRD, GoBGP and FRR
//! (`tests/sessions/*.hex`, one message per line, `>` from the speaker,
//! `<` from the peer) decode message by message, every attribute typed.

use std::net::Ipv4Addr;

use lb_bgp::attributes::{
    AS4_PATH, AsPath, Attribute, AttributeValue, CLUSTER_LIST, EXTENDED_COMMUNITIES, ORIGINATOR_ID, SegmentKind,
    merge_as4_path,
};
use lb_bgp::update::{AGGREGATOR, AS_PATH, NEXT_HOP};
use lb_bgp::{MAX_LEN, Message, Origin, Update, UpdateError, frame};
use proptest::prelude::*;

/// An UPDATE body holding `attrs` and no routes.
fn body(attrs: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    b.extend_from_slice(attrs);
    b
}

fn segments() -> impl Strategy<Value = Vec<(SegmentKind, Vec<u32>)>> {
    let kind = prop_oneof![
        Just(SegmentKind::Set),
        Just(SegmentKind::Sequence),
        Just(SegmentKind::ConfedSequence),
        Just(SegmentKind::ConfedSet),
    ];
    proptest::collection::vec((kind, proptest::collection::vec(any::<u32>(), 1..40)), 0..5)
}

fn address() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn value() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)].prop_map(AttributeValue::Origin),
        segments().prop_map(AttributeValue::AsPath),
        address().prop_map(AttributeValue::NextHop),
        any::<u32>().prop_map(AttributeValue::Med),
        any::<u32>().prop_map(AttributeValue::LocalPref),
        Just(AttributeValue::AtomicAggregate),
        (any::<u32>(), address()).prop_map(|(a, ip)| AttributeValue::Aggregator(a, ip)),
        proptest::collection::vec(any::<u32>(), 0..100).prop_map(AttributeValue::Communities),
        address().prop_map(AttributeValue::OriginatorId),
        proptest::collection::vec(address(), 0..20).prop_map(AttributeValue::ClusterList),
        proptest::collection::vec(any::<u8>(), 0..60).prop_map(AttributeValue::MpReach),
        proptest::collection::vec(any::<u8>(), 0..60).prop_map(AttributeValue::MpUnreach),
        proptest::collection::vec(any::<[u8; 8]>(), 0..40).prop_map(AttributeValue::ExtendedCommunities),
        segments()
            .prop_map(|s| s
                .into_iter()
                .filter(|(k, _)| matches!(k, SegmentKind::Set | SegmentKind::Sequence))
                .collect())
            .prop_map(AttributeValue::As4Path),
        (any::<u32>(), address()).prop_map(|(a, ip)| AttributeValue::As4Aggregator(a, ip)),
        proptest::collection::vec(any::<[u32; 3]>(), 0..40).prop_map(AttributeValue::LargeCommunities),
        (any::<u8>(), 19u8..=255, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_filter("a code lb types", |(_, c, _)| !matches!(c, 32 | 128))
            .prop_map(|(flags, code, value)| AttributeValue::Other {
                flags: flags & !0x10,
                code,
                value
            }),
    ]
}

proptest! {
    /// Whatever lb writes, it reads back as written.
    #[test]
    fn every_attribute_reads_back(values in proptest::collection::vec(value(), 1..6)) {
        let mut attrs = Vec::new();
        for v in &values {
            v.write(&mut attrs);
        }
        let b = body(&attrs);
        let u = Update::decode(&b).unwrap();
        let got: Vec<AttributeValue> = u
            .attributes()
            .map(|raw| Attribute::decode(raw, true).unwrap().to_value())
            .map(|v| match v {
                // The extended-length bit is the writer's choice.
                AttributeValue::Other { flags, code, value } => AttributeValue::Other { flags: flags & !0x10, code, value },
                v => v,
            })
            .collect();
        prop_assert_eq!(got, values);
    }

    /// Any bytes as an attribute's value: a value or a verdict, never a
    /// panic; and a verdict never resets the session (RFC 7606).
    #[test]
    fn any_value_decodes_or_gets_a_verdict(code in any::<u8>(), value in proptest::collection::vec(any::<u8>(), 0..40), four in any::<bool>()) {
        let mut attrs = vec![0xc0, code, u8::try_from(value.len()).unwrap()];
        attrs.extend_from_slice(&value);
        let b = body(&attrs);
        let u = Update::decode(&b).unwrap();
        for raw in u.attributes() {
            if let Err(e) = Attribute::decode(raw, four) {
                let reset = matches!(e, UpdateError::Reset { .. });
                prop_assert!(!reset, "{:?}", e);
            }
        }
    }
}

/// The first attribute of `attrs`, decoded.
fn first(attrs: &[u8], four: bool) -> Result<AttributeValue, UpdateError> {
    let b = body(attrs);
    let u = Update::decode(&b).unwrap();
    let raw = u.attributes().next().unwrap();
    Attribute::decode(raw, four).map(|a| a.to_value())
}

#[test]
fn malformed_values_get_rfc_7606_verdicts() {
    let withdraw = |code| Err(UpdateError::TreatAsWithdraw { attribute: code });
    let discard = |code| Err(UpdateError::Discard { attribute: code });
    assert_eq!(first(&[0x40, NEXT_HOP, 3, 1, 2, 3], true), withdraw(NEXT_HOP));
    assert_eq!(first(&[0x80, ORIGINATOR_ID, 3, 1, 2, 3], true), withdraw(ORIGINATOR_ID));
    assert_eq!(
        first(&[0x80, CLUSTER_LIST, 5, 1, 2, 3, 4, 5], true),
        withdraw(CLUSTER_LIST)
    );
    assert_eq!(
        first(&[0xc0, EXTENDED_COMMUNITIES, 7, 0, 0, 0, 0, 0, 0, 0], true),
        withdraw(EXTENDED_COMMUNITIES)
    );
    // A segment of an unknown kind, or empty.
    assert_eq!(first(&[0x40, AS_PATH, 6, 9, 1, 0, 0, 0, 1], true), withdraw(AS_PATH));
    assert_eq!(first(&[0x40, AS_PATH, 2, 2, 0], true), withdraw(AS_PATH));
    // A 2-octet AS_PATH read as 4-octet does not fit.
    assert_eq!(first(&[0x40, AS_PATH, 4, 2, 1, 0xfd, 0xe9], true), withdraw(AS_PATH));
    assert_eq!(
        first(&[0x40, AS_PATH, 4, 2, 1, 0xfd, 0xe9], false),
        Ok(AttributeValue::AsPath(vec![(SegmentKind::Sequence, vec![65001])]))
    );
    // AGGREGATOR's width follows the session; AS4_PATH's faults are
    // discarded (RFC 6793 §6).
    assert_eq!(
        first(&[0xc0, AGGREGATOR, 6, 0xfd, 0xe9, 10, 0, 0, 1], false),
        Ok(AttributeValue::Aggregator(65001, Ipv4Addr::new(10, 0, 0, 1)))
    );
    assert_eq!(
        first(&[0xc0, AGGREGATOR, 6, 0xfd, 0xe9, 10, 0, 0, 1], true),
        discard(AGGREGATOR)
    );
    assert_eq!(first(&[0xc0, AS4_PATH, 3, 2, 1, 0], true), discard(AS4_PATH));
}

/// RFC 6793 §4.2.3: a path through a 2-octet speaker, AS_TRANS standing in
/// for 4-octet numbers, merged back with AS4_PATH.
#[test]
fn as4_path_merges_back_into_the_path() {
    let two = [2u8, 3, 0xfd, 0xe9, 0x5b, 0xa0, 0x5b, 0xa0]; // 65001 23456 23456
    let four = [2u8, 2, 0xfa, 0x56, 0xea, 0x01, 0xfa, 0x56, 0xea, 0x02]; // 4200000001 4200000002
    let (p2, p4) = (
        first(&[&[0x40, AS_PATH, 8][..], &two].concat(), false),
        first(&[&[0xc0, AS4_PATH, 10][..], &four].concat(), false),
    );
    let (Ok(AttributeValue::AsPath(p2)), Ok(AttributeValue::As4Path(p4))) = (p2, p4) else {
        panic!()
    };
    assert_eq!(p2, [(SegmentKind::Sequence, vec![65001, 23456, 23456])]);
    assert_eq!(p4, [(SegmentKind::Sequence, vec![4_200_000_001, 4_200_000_002])]);
    let b2 = body(&[&[0x40, AS_PATH, 8][..], &two, &[0xc0, AS4_PATH, 10], &four].concat());
    let u = Update::decode(&b2).unwrap();
    let mut paths = u.attributes().map(|raw| Attribute::decode(raw, false).unwrap());
    let (Some(Attribute::AsPath(a)), Some(Attribute::As4Path(b))) = (paths.next(), paths.next()) else {
        panic!()
    };
    assert_eq!(
        merge_as4_path(&a, &b),
        [
            (SegmentKind::Sequence, vec![65001]),
            (SegmentKind::Sequence, vec![4_200_000_001, 4_200_000_002])
        ]
    );
    // An AS4_PATH longer than the AS_PATH is ignored.
    assert_eq!(merge_as4_path(&b, &a).len(), 1);
    assert_eq!((a.len(), b.len()), (3, 2));
    let _: &AsPath<'_> = &a;
}

/// Whole sessions as BIRD, GoBGP and FRR spoke them (and the speakers
/// they spoke with): every message frames and decodes, every attribute is
/// typed without a verdict.
#[test]
fn captured_sessions_decode_message_by_message() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sessions");
    let mut files = 0;
    let mut attributes = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        files += 1;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let hex = line.trim_start_matches(['<', '>', ' ']);
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let (kind, m) = frame(&bytes, MAX_LEN)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .unwrap();
            assert_eq!(m.len(), bytes.len(), "{}: one message per line", path.display());
            match Message::decode(kind, m).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
                Message::Update(u) => {
                    assert_eq!(u.check(true), Ok(()), "{}", path.display());
                    for raw in u.attributes() {
                        Attribute::decode(raw, true).unwrap();
                        attributes += 1;
                    }
                }
                Message::Open(o) => assert!(o.capabilities().count() > 0),
                _ => {}
            }
        }
    }
    assert_eq!(files, 6);
    assert!(attributes > 20, "{attributes}");
}
