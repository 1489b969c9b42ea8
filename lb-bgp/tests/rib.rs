//! The Adj-RIB-Out against a model of the peer: whatever sequence of
//! desired tables, applying the UPDATE stream to what the peer holds gives
//! exactly the desired table; unchanged routes cost nothing; equal
//! attributes share UPDATEs; a refresh resends everything and ends with
//! End-of-RIB.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use lb_bgp::{AdjRibOut, Announce, MAX_LEN, Message, Origin, frame};
use proptest::prelude::*;

fn attrs(community: u32) -> Announce {
    Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(192, 0, 2, 10),
        local_pref: None,
        communities: vec![community],
        large_communities: vec![],
    }
}

/// The peer: applies a stream of UPDATEs to what it holds (prefix →
/// community, the attribute that tells the test's attribute sets apart);
/// returns how many UPDATEs and End-of-RIBs it read.
fn apply(peer: &mut BTreeMap<Ipv4Net, u32>, stream: &[u8]) -> (usize, usize) {
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
            peer.remove(&p);
        }
        let community = u
            .attributes()
            .find(|a| a.code == lb_bgp::update::COMMUNITIES)
            .map(|a| u32::from_be_bytes([a.value[0], a.value[1], a.value[2], a.value[3]]));
        for p in u.nlri() {
            peer.insert(p, community.unwrap());
        }
        updates += 1;
        rest = &rest[m.len()..];
    }
    assert!(rest.is_empty());
    (updates, eors)
}

fn net(i: u32) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(0xc633_6400 + i), 32).unwrap()
}

#[test]
fn changes_cost_only_what_changed() {
    let mut rib = AdjRibOut::new();
    let mut peer = BTreeMap::new();
    let mut out = Vec::new();
    let desired: BTreeMap<Ipv4Net, Announce> = (0..500).map(|i| (net(i), attrs(100 + i % 2))).collect();
    rib.full(&desired, MAX_LEN, &mut out);
    let (n, eor) = apply(&mut peer, &out);
    // Two attribute sets, 250 prefixes each: two UPDATEs, then End-of-RIB.
    assert_eq!((n, eor), (3, 1));
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
    assert_eq!(rib.update(&next, MAX_LEN, &mut out), 2);
    apply(&mut peer, &out);
    let want: BTreeMap<Ipv4Net, u32> = next.iter().map(|(p, a)| (*p, a.communities[0])).collect();
    assert_eq!(peer, want);
}

proptest! {
    /// Any sequence of tables: the peer ends up holding exactly the last.
    #[test]
    fn the_peer_always_holds_the_desired_table(
        tables in proptest::collection::vec(proptest::collection::btree_map(0u32..64, 0u32..3, 0..40), 1..6),
        refresh_at in 0usize..6,
    ) {
        let mut rib = AdjRibOut::new();
        let mut peer = BTreeMap::new();
        for (step, t) in tables.iter().enumerate() {
            let desired: BTreeMap<Ipv4Net, Announce> = t.iter().map(|(i, c)| (net(*i), attrs(*c))).collect();
            let mut out = Vec::new();
            if step == refresh_at {
                // A refresh: the peer starts from nothing (a new session).
                peer.clear();
                rib.full(&desired, MAX_LEN, &mut out);
            } else {
                rib.update(&desired, MAX_LEN, &mut out);
            }
            apply(&mut peer, &out);
            let want: BTreeMap<Ipv4Net, u32> = desired.iter().map(|(p, a)| (*p, a.communities[0])).collect();
            prop_assert_eq!(&peer, &want);
        }
    }
}
