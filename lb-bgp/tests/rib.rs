//! The Adj-RIB-Out against a model of the peer: whatever sequence of
//! desired tables, applying the UPDATE stream to what the peer holds gives
//! exactly the desired table; unchanged routes cost nothing; equal
//! attributes share UPDATEs; a refresh resends everything and ends with
//! End-of-RIB per family; IPv6 routes travel in MP_REACH/MP_UNREACH.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lb_bgp::update::{mp_reach_v6, mp_unreach_v6};
use lb_bgp::{AdjRibOut, Announce, IPV4_UNICAST, IPV6_UNICAST, MAX_LEN, Message, Origin, frame};
use proptest::prelude::*;

fn attrs(community: u32) -> Announce {
    Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        local_pref: None,
        communities: vec![community],
        large_communities: vec![],
    }
}

/// The peer: applies a stream of UPDATEs to what it holds (prefix →
/// community, the attribute that tells the test's attribute sets apart);
/// returns how many UPDATEs and End-of-RIBs it read.
fn apply(peer: &mut BTreeMap<IpNet, u32>, stream: &[u8]) -> (usize, usize) {
    let (mut updates, mut eors) = (0, 0);
    let mut rest = stream;
    while let Some((k, m)) = frame(rest, MAX_LEN).unwrap() {
        let Message::Update(u) = Message::decode(k, m).unwrap() else {
            panic!()
        };
        assert_eq!(u.check(true), Ok(()));
        if u.end_of_rib().is_some() {
            eors += 1;
        }
        for p in u.withdrawn() {
            peer.remove(&p.into());
        }
        let community = u
            .attributes()
            .find(|a| a.code == lb_bgp::update::COMMUNITIES)
            .map(|a| u32::from_be_bytes([a.value[0], a.value[1], a.value[2], a.value[3]]));
        for p in u.nlri() {
            peer.insert(p.into(), community.unwrap());
        }
        for a in u.attributes() {
            if a.code == lb_bgp::update::MP_REACH {
                let mp = mp_reach_v6(a.value).unwrap().unwrap();
                assert_eq!(mp.next_hop, "::ffff:192.0.2.10".parse::<Ipv6Addr>().unwrap());
                for p in mp.prefixes() {
                    peer.insert(p.into(), community.unwrap());
                }
            }
            if a.code == lb_bgp::update::MP_UNREACH {
                for p in mp_unreach_v6(a.value).unwrap().unwrap() {
                    peer.remove(&p.into());
                }
            }
        }
        updates += 1;
        rest = &rest[m.len()..];
    }
    assert!(rest.is_empty());
    (updates, eors)
}

/// Even numbers are IPv4 /32s, odd ones IPv6 /128s.
fn net(i: u32) -> IpNet {
    match i % 2 {
        0 => Ipv4Net::new(Ipv4Addr::from(0xc633_6400 + i), 32).unwrap().into(),
        _ => Ipv6Net::new(Ipv6Addr::from(0x2001_0db8_0100_u128 << 80 | u128::from(i)), 128)
            .unwrap()
            .into(),
    }
}

#[test]
fn changes_cost_only_what_changed() {
    let mut rib = AdjRibOut::with_families(&[IPV4_UNICAST, IPV6_UNICAST]);
    let mut peer = BTreeMap::new();
    let mut out = Vec::new();
    let desired: BTreeMap<IpNet, Announce> = (0..500).map(|i| (net(i), attrs(100 + i % 4 / 2))).collect();
    rib.full(&desired, MAX_LEN, &mut out);
    let (n, eor) = apply(&mut peer, &out);
    // Two attribute sets, 125 prefixes of each family each: four UPDATEs,
    // then End-of-RIB for each family.
    assert_eq!((n, eor), (6, 2));
    assert_eq!(peer.len(), 500);
    // Nothing changed: nothing sent.
    out.clear();
    assert_eq!(rib.update(&desired, MAX_LEN, &mut out), 0);
    assert!(out.is_empty());
    // Ten go, one changes its community: one withdrawal UPDATE, one UPDATE.
    let mut next = desired.clone();
    for i in 0..10 {
        next.remove(&net(i));
    }
    next.insert(net(499), attrs(7));
    out.clear();
    // Withdrawals of each family, one UPDATE for the changed route.
    assert_eq!(rib.update(&next, MAX_LEN, &mut out), 3);
    apply(&mut peer, &out);
    let want: BTreeMap<IpNet, u32> = next.iter().map(|(p, a)| (*p, a.communities[0])).collect();
    assert_eq!(peer, want);
}

proptest! {
    /// Any sequence of tables: the peer ends up holding exactly the last.
    #[test]
    fn the_peer_always_holds_the_desired_table(
        tables in proptest::collection::vec(proptest::collection::btree_map(0u32..64, 0u32..3, 0..40), 1..6),
        refresh_at in 0usize..6,
    ) {
        let mut rib = AdjRibOut::with_families(&[IPV4_UNICAST, IPV6_UNICAST]);
        let mut peer = BTreeMap::new();
        for (step, t) in tables.iter().enumerate() {
            let desired: BTreeMap<IpNet, Announce> = t.iter().map(|(i, c)| (net(*i), attrs(*c))).collect();
            let mut out = Vec::new();
            if step == refresh_at {
                // A refresh: the peer starts from nothing (a new session).
                peer.clear();
                rib.full(&desired, MAX_LEN, &mut out);
            } else {
                rib.update(&desired, MAX_LEN, &mut out);
            }
            apply(&mut peer, &out);
            let want: BTreeMap<IpNet, u32> = desired.iter().map(|(p, a)| (*p, a.communities[0])).collect();
            prop_assert_eq!(&peer, &want);
        }
    }
}

/// A peer that negotiated IPv4 only is never sent IPv6 routes, and an
/// IPv6 next hop never carries IPv4 routes.
#[test]
fn only_what_the_session_can_carry_is_sent() {
    let mut rib = AdjRibOut::new();
    let mut peer = BTreeMap::new();
    let mut out = Vec::new();
    let desired: BTreeMap<IpNet, Announce> = (0..10).map(|i| (net(i), attrs(1))).collect();
    rib.full(&desired, MAX_LEN, &mut out);
    let (_, eor) = apply(&mut peer, &out);
    assert_eq!(eor, 1);
    assert!(peer.keys().all(|p| matches!(p, IpNet::V4(_))));
    assert_eq!(peer.len(), 5);
    assert_eq!(rib.sent().len(), 5);

    let mut v6 = attrs(1);
    v6.next_hop = "2001:db8::2".parse().unwrap();
    let mut rib = AdjRibOut::with_families(&[IPV4_UNICAST]);
    out.clear();
    rib.full(&desired.keys().map(|p| (*p, v6.clone())).collect(), MAX_LEN, &mut out);
    // Only End-of-RIB.
    assert_eq!(out.len(), 23);
}
