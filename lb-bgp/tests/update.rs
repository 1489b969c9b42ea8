//! UPDATE against real peers' bytes and the lab's malformed ones, RFC
//! 7606's verdicts, and what lb sends read back.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use lb_bgp::update::{self, mp_reach_v6};
use lb_bgp::{Announce, DecodeError, MAX_LEN, Message, NotificationCode, Origin, Update, UpdateError, frame};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn update(bytes: &[u8]) -> Result<Update<'_>, DecodeError> {
    let (k, m) = frame(bytes, MAX_LEN)?.expect("whole");
    match Message::decode(k, m)? {
        Message::Update(u) => Ok(u),
        other => panic!("{other:?}"),
    }
}

#[test]
fn real_updates_decode() {
    // The lab's MetalLB-shaped UPDATE: ORIGIN IGP, AS_PATH [65001],
    // NEXT_HOP 192.0.2.10, one /32.
    let b = hex("ffffffffffffffffffffffffffffffff003002000000144001010040020602010000fde9400304c000020a20c633640a");
    let u = update(&b).unwrap();
    assert_eq!(
        u.nlri().collect::<Vec<_>>(),
        vec!["198.51.100.10/32".parse::<Ipv4Net>().unwrap()]
    );
    assert_eq!(u.withdrawn().count(), 0);
    assert_eq!(u.attributes().map(|a| a.code).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(u.check(true), Ok(()));
    // Read with 2-octet AS numbers the same path is malformed.
    assert_eq!(u.check(false), Err(UpdateError::TreatAsWithdraw { attribute: 2 }));

    // FRR's IPv6 route in MP_REACH (16-byte next hop).
    let b = hex(
        "ffffffffffffffffffffffffffffffff0053020000003c900e00260002011000000000000000000000ffff7f000005008020010db8010000000000000000000040400101005002000a02020000fde80000fde9",
    );
    let u = update(&b).unwrap();
    assert_eq!(u.check(true), Ok(()));
    let mp = u.attributes().find(|a| a.code == update::MP_REACH).unwrap();
    let mp = mp_reach_v6(mp.value).unwrap().unwrap();
    assert_eq!(mp.next_hop, "::ffff:127.0.0.5".parse::<Ipv6Addr>().unwrap());
    assert_eq!(mp.link_local, None);
    assert_eq!(
        mp.prefixes().collect::<Vec<_>>(),
        vec!["2001:db8:100::40/128".parse().unwrap()]
    );

    // An IPv6 withdrawal in MP_UNREACH, as a speaker sends it.
    let unreach = hex("0002018020010db8010000000000000000000040");
    let gone: Vec<_> = update::mp_unreach_v6(&unreach).unwrap().unwrap().collect();
    assert_eq!(gone, vec!["2001:db8:100::40/128".parse().unwrap()]);
    assert!(update::mp_unreach_v6(&hex("000101")).unwrap().is_none());
    assert!(update::mp_unreach_v6(&hex("00020181")).is_err());

    // End-of-RIB from BIRD, IPv4 and IPv6.
    let eor4 = hex("ffffffffffffffffffffffffffffffff00170200000000");
    assert_eq!(update(&eor4).unwrap().end_of_rib(), Some((1, 1)));
    let eor6 = hex("ffffffffffffffffffffffffffffffff001d0200000006800f03000201");
    assert_eq!(update(&eor6).unwrap().end_of_rib(), Some((2, 1)));
}

#[test]
fn malformed_updates_get_rfc_7606_verdicts() {
    // An attribute length past the attributes: the session is reset.
    let overrun =
        hex("ffffffffffffffffffffffffffffffff0030020000001e4001010040020602010000fde9400304c000020a20c633640a");
    let e = update(&overrun).unwrap_err();
    assert_eq!(e.notification(), NotificationCode::new(3, 1));
    // A /33: Invalid Network Field.
    let plen =
        hex("ffffffffffffffffffffffffffffffff003102000000144001010040020602010000fde9400304c000020a21c633640a00");
    assert_eq!(update(&plen).unwrap_err().notification(), NotificationCode::new(3, 10));
    // ORIGIN of length 2: the routes count as withdrawn, the session stays.
    let origin =
        hex("ffffffffffffffffffffffffffffffff00310200000015400102000040020602010000fde9400304c000020a20c633640a");
    let u = update(&origin).unwrap();
    assert_eq!(u.check(true), Err(UpdateError::TreatAsWithdraw { attribute: 1 }));
    assert_eq!(u.nlri().count(), 1, "the NLRI stays readable, to be withdrawn");
}

fn read_back(out: &[u8]) -> Vec<Ipv4Net> {
    let mut rest = out;
    let mut got = Vec::new();
    while let Some((k, m)) = frame(rest, MAX_LEN).unwrap() {
        let Message::Update(u) = Message::decode(k, m).unwrap() else {
            panic!()
        };
        assert_eq!(u.check(true), Ok(()));
        assert!(m.len() <= MAX_LEN);
        got.extend(u.nlri());
        rest = &rest[m.len()..];
    }
    assert!(rest.is_empty());
    got
}

#[test]
fn announcements_pack_many_prefixes_per_update() {
    let prefixes: Vec<Ipv4Net> = (0..10_000u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())
        .collect();
    let a = Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(192, 0, 2, 10).into(),
        local_pref: None,
        communities: vec![0xfde9_0064],
        large_communities: vec![[65001, 1, 2]],
    };
    let mut out = Vec::new();
    let n = a.write(&prefixes, MAX_LEN, &mut out);
    assert_eq!(read_back(&out), prefixes);
    // 5 bytes per /32: about 800 per 4096-byte UPDATE, not one each.
    assert!(n <= 13, "{n} UPDATEs");
}

proptest! {
    /// Any attributes (long AS paths, many communities: extended lengths)
    /// and prefixes, of either family, read back exactly, every message
    /// within `max`.
    #[test]
    fn any_announcement_reads_back(
        prefixes in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..300),
        path in proptest::collection::vec(any::<u32>(), 0..300),
        lp in proptest::option::of(any::<u32>()),
        communities in proptest::collection::vec(any::<u32>(), 0..100),
        large in proptest::collection::vec(proptest::array::uniform3(any::<u32>()), 0..30),
        v6 in any::<bool>(),
        max in 64usize..=4096,
    ) {
        let a = Announce { origin: Origin::Incomplete, as_path: path.clone(), next_hop: Ipv4Addr::new(10, 0, 0, 1).into(), local_pref: lp, communities: communities.clone(), large_communities: large.clone() };
        let mut out = Vec::new();
        let (v4s, v6s): (Vec<Ipv4Net>, Vec<Ipv6Net>) = match v6 {
            false => (prefixes.iter().map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(*a as u32), l % 33).unwrap().trunc()).collect(), vec![]),
            true => (vec![], prefixes.iter().map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(*a), *l).unwrap().trunc()).collect()),
        };
        let n = a.write(&v4s, max, &mut out) + a.write_v6(&v6s, max, &mut out);
        let mut rest = &out[..];
        let (mut got4, mut got6, mut messages) = (Vec::new(), Vec::new(), 0);
        while let Some((k, m)) = frame(rest, 65535).unwrap() {
            let Message::Update(u) = Message::decode(k, m).unwrap() else { panic!() };
            prop_assert_eq!(u.check(true), Ok(()));
            // Over `max` only when the attributes alone do not fit.
            let attrs: usize = u.attributes().map(|a| a.value.len() + 4).sum();
            prop_assert!(m.len() <= max || attrs + 60 > max, "{} > {}", m.len(), max);
            got4.extend(u.nlri());
            for at in u.attributes() {
                match at.code {
                    update::MP_REACH => {
                        let mp = mp_reach_v6(at.value).unwrap().unwrap();
                        prop_assert_eq!(mp.next_hop, "::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap());
                        got6.extend(mp.prefixes());
                    }
                    update::COMMUNITIES => {
                        let got: Vec<u32> = at.value.chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
                        prop_assert_eq!(&got, &communities);
                    }
                    update::LARGE_COMMUNITIES => prop_assert_eq!(at.value.len(), 12 * large.len()),
                    update::AS_PATH => {
                        let asns: Vec<u32> = at.value.chunks(2 + 4 * 255).flat_map(|seg| seg[2..].chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect();
                        prop_assert_eq!(&asns, &path);
                    }
                    _ => {}
                }
            }
            rest = &rest[m.len()..];
            messages += 1;
        }
        prop_assert_eq!(messages, n);
        prop_assert_eq!(got4, v4s);
        prop_assert_eq!(got6, v6s);
    }

    /// Arbitrary UPDATE bodies: decode fails cleanly or gives iterators
    /// and a check that never panic.
    #[test]
    fn any_update_body_is_safe(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(u) = Update::decode(&body) {
            let _ = (u.withdrawn().count(), u.nlri().count(), u.attributes().count(), u.end_of_rib());
            let _ = u.check(true);
            for a in u.attributes().filter(|a| a.code == update::MP_REACH) {
                if let Ok(Some(mp)) = mp_reach_v6(a.value) {
                    let _ = mp.prefixes().count();
                }
            }
        }
    }
}
