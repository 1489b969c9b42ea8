//! Layer 2 responder benchmarks (issue target: an ARP request → reply
//! decision in ≤ 100 ns, with one owned address and with 10,000 on one
//! interface), the same for a neighbour solicitation, and no allocation
//! on that path (counted).
//!
//! `cargo bench -p lb-benches --bench arp`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use lb_arp::wire::{self, Arp, Mac, Neighbor};
use lb_arp::{Owned, Response, respond};
use lb_benches::{Counting, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 1]);
const THEIRS: Mac = Mac([0x02, 0, 0, 0, 0, 2]);

/// `n` owned addresses, IPv4 in 10.0.0.0/8 and IPv6 in fd00::/64; the
/// one asked about is in the middle.
fn owned(n: u32) -> (Owned, Ipv4Addr, Ipv6Addr) {
    let v4 = |i: u32| Ipv4Addr::from(0x0a00_0000 + i);
    let v6 = |i: u32| Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i));
    let ips = (0..n).flat_map(|i| [IpAddr::V4(v4(i)), IpAddr::V6(v6(i))]);
    (Owned::new(ips), v4(n / 2), v6(n / 2))
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0; wire::ARP_FRAME];
    let msg = Arp {
        eth_dst: Mac::BROADCAST,
        eth_src: THEIRS,
        reply: false,
        sender_mac: THEIRS,
        sender_ip: Ipv4Addr::new(192, 168, 0, 1),
        target_mac: Mac::ZERO,
        target_ip: target,
    };
    let n = wire::write_arp(&mut f, &msg).unwrap();
    f.truncate(n);
    f
}

fn solicitation(target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0; 128];
    let group = wire::solicited_node(target);
    let msg = Neighbor {
        eth_dst: Mac::ipv6_multicast(group),
        eth_src: THEIRS,
        ip_src: "fd00::ffff".parse().unwrap(),
        ip_dst: group,
        advert: false,
        flags: 0,
        target,
        link_addr: Some(THEIRS),
    };
    let n = wire::write_solicit(&mut f, &msg).unwrap();
    f.truncate(n);
    f
}

fn decisions(c: &mut Criterion) {
    let mut out = [0u8; wire::ADVERT_FRAME];
    for n in [1u32, 10_000] {
        let (owned, v4, v6) = owned(n);
        let arp = arp_request(v4);
        let ns = solicitation(v6);
        // The path allocates nothing.
        let before = allocations();
        assert!(matches!(respond(OURS, &owned, &arp, &mut out), Response::Reply { .. }));
        assert!(matches!(respond(OURS, &owned, &ns, &mut out), Response::Reply { .. }));
        assert_eq!(allocations(), before, "the responder allocated");
        c.bench_function(&format!("arp request -> reply, {n} owned"), |b| {
            b.iter(|| black_box(respond(OURS, black_box(&owned), black_box(&arp), &mut out)))
        });
        c.bench_function(&format!("neighbour solicitation -> advertisement, {n} owned"), |b| {
            b.iter(|| black_box(respond(OURS, black_box(&owned), black_box(&ns), &mut out)))
        });
        let stranger = arp_request(Ipv4Addr::new(172, 16, 0, 1));
        c.bench_function(&format!("arp request for another host, {n} owned"), |b| {
            b.iter(|| black_box(respond(OURS, black_box(&owned), black_box(&stranger), &mut out)))
        });
    }
}

criterion_group!(benches, decisions);
criterion_main!(benches);
