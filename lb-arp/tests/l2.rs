//! The wire format against itself (round trips) and against arbitrary
//! bytes; the responder's decisions; the announcement schedule; the owner
//! election against SHA-256 values computed by `sha256sum`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use lb_arp::announce::{self, Schedule};
use lb_arp::election;
use lb_arp::wire::{self, Arp, Frame, Mac, Neighbor};
use lb_arp::{Ignored, Owned, Response, WireError, respond};
use proptest::prelude::*;

const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);
const THEIRS: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 100);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

fn vip6() -> Ipv6Addr {
    "fd00::100".parse().unwrap()
}
fn client6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}
fn owned() -> Owned {
    Owned::new([IpAddr::V4(VIP4), IpAddr::V6(vip6())])
}

fn request(target: Ipv4Addr, eth_dst: Mac) -> Vec<u8> {
    let mut buf = vec![0; 64];
    let n = wire::write_arp(
        &mut buf,
        &Arp {
            eth_dst,
            eth_src: THEIRS,
            reply: false,
            sender_mac: THEIRS,
            sender_ip: CLIENT4,
            target_mac: Mac::ZERO,
            target_ip: target,
        },
    )
    .unwrap();
    buf.truncate(n);
    buf
}

fn solicit(src: Ipv6Addr, dst: Ipv6Addr, lla: Option<Mac>, eth_dst: Mac) -> Vec<u8> {
    let mut buf = vec![0; 128];
    let n = wire::write_solicit(
        &mut buf,
        &Neighbor {
            eth_dst,
            eth_src: THEIRS,
            ip_src: src,
            ip_dst: dst,
            advert: false,
            flags: 0,
            target: vip6(),
            link_addr: lla,
        },
    )
    .unwrap();
    buf.truncate(n);
    buf
}

fn answer(frame: &[u8]) -> (Response, Option<Frame>) {
    let mut out = [0u8; wire::ADVERT_FRAME];
    let r = respond(OURS, &owned(), frame, &mut out);
    let parsed = match r {
        Response::Reply { len: n, .. } => Some(wire::parse(&out[..n]).unwrap()),
        _ => None,
    };
    (r, parsed)
}

#[test]
fn arp_requests_for_owned_addresses_are_answered_with_the_interface_mac() {
    let (r, reply) = answer(&request(VIP4, Mac::BROADCAST));
    assert_eq!(
        r,
        Response::Reply {
            len: wire::ARP_FRAME,
            ip: IpAddr::V4(VIP4)
        }
    );
    let Some(Frame::Arp(a)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!((a.eth_dst, a.eth_src, a.reply), (THEIRS, OURS, true));
    assert_eq!(
        (a.sender_mac, a.sender_ip, a.target_mac, a.target_ip),
        (OURS, VIP4, THEIRS, CLIENT4)
    );
    // Unicast to us (a cache refresh) too; to another host's MAC, not.
    assert!(matches!(answer(&request(VIP4, OURS)).0, Response::Reply { .. }));
    assert_eq!(
        answer(&request(VIP4, Mac([2, 9, 9, 9, 9, 9]))).0,
        Response::Ignore(Ignored::NotForUs)
    );
    assert_eq!(
        answer(&request(Ipv4Addr::new(10, 200, 0, 50), Mac::BROADCAST)).0,
        Response::Ignore(Ignored::NotOwned)
    );
}

#[test]
fn another_mac_announcing_an_owned_address_is_a_conflict() {
    let mut buf = vec![0; 64];
    let n = wire::write_arp(
        &mut buf,
        &Arp {
            eth_dst: Mac::BROADCAST,
            eth_src: THEIRS,
            reply: false,
            sender_mac: THEIRS,
            sender_ip: VIP4,
            target_mac: Mac::ZERO,
            target_ip: VIP4,
        },
    )
    .unwrap();
    assert_eq!(
        answer(&buf[..n]).0,
        Response::Conflict {
            ip: IpAddr::V4(VIP4),
            mac: THEIRS
        }
    );
    // So is a request that uses it as its sender (RFC 5227 §2.4), whatever
    // it asks about.
    let n = wire::write_arp(
        &mut buf,
        &Arp {
            eth_dst: Mac::BROADCAST,
            eth_src: THEIRS,
            reply: false,
            sender_mac: THEIRS,
            sender_ip: VIP4,
            target_mac: Mac::ZERO,
            target_ip: Ipv4Addr::new(10, 200, 0, 1),
        },
    )
    .unwrap();
    assert!(matches!(answer(&buf[..n]).0, Response::Conflict { .. }));
    // Our own announcements, looped back, are ours.
    let mut bufs = [[0u8; wire::ADVERT_FRAME]; 2];
    let lens = announce::announce(OURS, IpAddr::V4(VIP4), &mut bufs);
    assert_eq!(lens, [wire::ARP_FRAME, wire::ARP_FRAME]);
    for (b, n) in bufs.iter().zip(lens) {
        assert_eq!(answer(&b[..n]).0, Response::Ignore(Ignored::Own));
        let Frame::Arp(a) = wire::parse(&b[..n]).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.eth_dst, a.sender_ip, a.target_ip, a.sender_mac),
            (Mac::BROADCAST, VIP4, VIP4, OURS)
        );
    }
}

#[test]
fn solicitations_are_answered_including_probes_without_a_source_address_option() {
    let group = wire::solicited_node(vip6());
    assert_eq!(group, "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap());
    // With the source link-layer option: to that address, S and O set.
    let (r, reply) = answer(&solicit(client6(), group, Some(THEIRS), Mac::ipv6_multicast(group)));
    assert_eq!(
        r,
        Response::Reply {
            len: wire::ADVERT_FRAME,
            ip: IpAddr::V6(vip6())
        }
    );
    let Some(Frame::Neighbor(n)) = reply else {
        panic!("{reply:?}")
    };
    assert!(n.advert);
    assert_eq!(
        (n.eth_dst, n.eth_src, n.ip_src, n.ip_dst),
        (THEIRS, OURS, vip6(), client6())
    );
    assert_eq!(
        (n.flags, n.target, n.link_addr),
        (wire::SOLICITED | wire::OVERRIDE, vip6(), Some(OURS))
    );
    // A unicast reachability probe without the option (MetalLB ignores
    // these): answered to the frame's source.
    let (r, reply) = answer(&solicit(client6(), vip6(), None, OURS));
    assert!(matches!(r, Response::Reply { .. }), "{r:?}");
    let Some(Frame::Neighbor(n)) = reply else { panic!() };
    assert_eq!((n.eth_dst, n.ip_dst), (THEIRS, client6()));
    // Duplicate address detection for our address: defended to all nodes.
    let (_, reply) = answer(&solicit(Ipv6Addr::UNSPECIFIED, group, None, Mac::ipv6_multicast(group)));
    let Some(Frame::Neighbor(n)) = reply else { panic!() };
    assert_eq!(n.ip_dst, "ff02::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(n.flags, wire::OVERRIDE);
    // For someone else's address, to another group: nothing.
    let other: Ipv6Addr = "fd00::7".parse().unwrap();
    assert_eq!(
        answer(&solicit(client6(), wire::solicited_node(other), None, OURS)).0,
        Response::Ignore(Ignored::NotForUs)
    );
}

#[test]
fn invalid_neighbour_discovery_is_refused() {
    let group = wire::solicited_node(vip6());
    let good = solicit(client6(), group, Some(THEIRS), Mac::ipv6_multicast(group));
    // Hop limit 64: could have come from off-link.
    let mut hop = good.clone();
    hop[14 + 7] = 64;
    assert_eq!(wire::parse(&hop), Err(WireError::Invalid("hop limit is not 255")));
    // One bit flipped in the target: the checksum says so.
    let mut flipped = good.clone();
    flipped[14 + 40 + 10] ^= 1;
    assert_eq!(wire::parse(&flipped), Err(WireError::Checksum));
    // Cut short.
    assert!(wire::parse(&good[..good.len() - 9]).is_err());
    // DAD with a source link-layer option.
    let dad = solicit(Ipv6Addr::UNSPECIFIED, group, Some(THEIRS), Mac::ipv6_multicast(group));
    assert!(matches!(wire::parse(&dad), Err(WireError::Invalid(_))));
}

#[test]
fn announcements_repeat_for_five_seconds_after_a_takeover() {
    let t0 = Instant::now();
    let ip = IpAddr::V6(vip6());
    let mut s = Schedule::default();
    s.takeover(ip, t0);
    let mut sent = Vec::new();
    let mut now = t0;
    while let Some(wake) = s.next_wake() {
        now = now.max(wake);
        s.due(now, |a| sent.push((a, now - t0)));
    }
    let at: Vec<u128> = sent.iter().map(|(_, d)| d.as_millis()).collect();
    assert_eq!(at, vec![0, 1100, 2200, 3300, 4400]);
    // A takeover within the window extends it; a release stops it.
    s.takeover(ip, t0);
    s.takeover(ip, t0 + Duration::from_secs(3));
    s.release(ip);
    assert_eq!(s.next_wake(), None);
    let mut bufs = [[0u8; wire::ADVERT_FRAME]; 2];
    let lens = announce::announce(OURS, ip, &mut bufs);
    assert_eq!(lens, [wire::ADVERT_FRAME, 0]);
    let Frame::Neighbor(n) = wire::parse(&bufs[0][..lens[0]]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (n.ip_dst, n.flags, n.link_addr),
        ("ff02::1".parse().unwrap(), wire::OVERRIDE, Some(OURS))
    );
}

#[test]
fn the_owner_is_elected_as_metallb_does() {
    // `echo -n "node-c#192.0.2.1" | sha256sum` is the smallest of these.
    let nodes = ["node-a", "node-b", "node-c", "worker-1", "worker-2"];
    let v4: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        election::ranking(v4, nodes),
        vec!["node-c", "worker-1", "node-a", "worker-2", "node-b"]
    );
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(election::owner(v6, nodes), Some("node-b"));
    // Stateless: removing another node never moves it.
    assert_eq!(election::owner(v6, ["node-a", "node-b"]), Some("node-b"));
    assert_eq!(election::owner(v6, []), None);
}

fn mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>().prop_map(Mac)
}

proptest! {
    #[test]
    fn arp_round_trips(eth_dst in mac(), eth_src in mac(), reply in any::<bool>(), sm in mac(), si in any::<[u8; 4]>(), tm in mac(), ti in any::<[u8; 4]>()) {
        let msg = Arp { eth_dst, eth_src, reply, sender_mac: sm, sender_ip: si.into(), target_mac: tm, target_ip: ti.into() };
        let mut buf = [0u8; wire::ARP_FRAME];
        let n = wire::write_arp(&mut buf, &msg).unwrap();
        prop_assert_eq!(wire::parse(&buf[..n]), Ok(Frame::Arp(msg)));
    }

    #[test]
    fn advertisements_and_solicitations_round_trip(
        eth_dst in mac(), eth_src in mac(), src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        target in any::<[u8; 16]>(), flags in any::<u8>(), lla in mac(), with_lla in any::<bool>(),
    ) {
        let target = Ipv6Addr::from(target);
        prop_assume!(!target.is_multicast());
        let src = Ipv6Addr::from(src);
        let advert = Neighbor { eth_dst, eth_src, ip_src: src, ip_dst: dst.into(), advert: true, flags, target, link_addr: Some(lla) };
        let mut buf = [0u8; 128];
        let n = wire::write_advert(&mut buf, &advert).unwrap();
        prop_assert_eq!(wire::parse(&buf[..n]), Ok(Frame::Neighbor(advert)));
        prop_assume!(!(src.is_unspecified() && with_lla));
        let solicit = Neighbor { advert: false, flags: 0, link_addr: with_lla.then_some(lla), ..advert };
        let n = wire::write_solicit(&mut buf, &solicit).unwrap();
        prop_assert_eq!(wire::parse(&buf[..n]), Ok(Frame::Neighbor(solicit)));
    }

    /// Any bytes: no panic, and whatever is answered parses back as a
    /// frame from the interface's MAC.
    #[test]
    fn anything_is_answered_or_ignored_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), arp in any::<bool>()) {
        let mut frame = bytes;
        // Often make it look like ARP or IPv6, so the deeper paths run.
        if frame.len() >= 14 {
            frame[12..14].copy_from_slice(if arp { &[0x08, 0x06] } else { &[0x86, 0xdd] });
        }
        let mut out = [0u8; wire::ADVERT_FRAME];
        if let Response::Reply { len: n, .. } = respond(OURS, &owned(), &frame, &mut out) {
            let parsed = wire::parse(&out[..n]);
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
            let src = match parsed.unwrap() { Frame::Arp(a) => a.eth_src, Frame::Neighbor(n) => n.eth_src };
            prop_assert_eq!(src, OURS);
        }
    }
}

#[test]
fn only_eligible_nodes_are_candidates_as_metallb_has_them() {
    use election::{Node, Service, announcer};
    let node = |name| Node {
        name,
        alive: true,
        network_unavailable: false,
        excluded: false,
        advertised: true,
        preference: 0,
    };
    let ips: [IpAddr; 1] = ["192.0.2.1".parse().unwrap()];
    let everywhere = ["node-a", "node-b", "node-c"];
    let svc = Service {
        ips: &ips,
        local: false,
        serving: true,
        endpoint_nodes: &everywhere,
    };
    let all = [node("node-a"), node("node-b"), node("node-c")];
    // Ranked by sha256 (node-c first for this address, then node-a).
    assert_eq!(announcer(&svc, &all), Some("node-c"));
    for spoil in [
        |n: &mut Node<'_>| n.alive = false,
        |n: &mut Node<'_>| n.network_unavailable = true,
        |n: &mut Node<'_>| n.excluded = true,
        |n: &mut Node<'_>| n.advertised = false,
    ] {
        let mut nodes = all.clone();
        spoil(&mut nodes[2]);
        assert_eq!(announcer(&svc, &nodes), Some("node-a"));
    }
    // Preference comes before the hash.
    let mut preferred = all.clone();
    preferred[1].preference = 10;
    assert_eq!(announcer(&svc, &preferred), Some("node-b"));
    // externalTrafficPolicy Local: only where an endpoint serves.
    let on_b = ["node-b"];
    let local = Service {
        local: true,
        endpoint_nodes: &on_b,
        ..svc.clone()
    };
    assert_eq!(announcer(&local, &all), Some("node-b"));
    // No serving endpoint anywhere: nobody, even with Cluster policy.
    let none = Service {
        serving: false,
        endpoint_nodes: &[],
        ..svc.clone()
    };
    assert_eq!(announcer(&none, &all), None);
    assert_eq!(announcer(&Service { ips: &[], ..svc }, &all), None);
}
