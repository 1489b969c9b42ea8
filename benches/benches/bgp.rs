//! lb-bgp decode and encode (reference/bgp.md §5.3): 1,000 single-/32
//! UPDATEs of MetalLB's shape (w1) framed and decoded, every prefix read
//! (and, apart, classified as RFC 7606 asks); one UPDATE of 800 /32
//! (w800); w1 written one UPDATE at a time, and 10,000 /32 packed, into a
//! reused buffer. Neither path allocates (counted).
//!
//! `cargo bench -p lb-benches --bench bgp`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipnet::Ipv4Net;
use lb_benches::{Counting, allocations};
use lb_bgp::{Announce, MAX_LEN, Message, Origin, frame};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn announce() -> Announce {
    Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(192, 0, 2, 10).into(),
        local_pref: None,
        communities: vec![0xfde9_0064],
        large_communities: vec![],
    }
}

fn prefixes(n: u32) -> Vec<Ipv4Net> {
    (0..n)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0xc633_0000 + i), 32).unwrap_or_default())
        .collect()
}

/// Frames and decodes every message of `stream` as the session does
/// (marker, length, type, the UPDATE's lengths, every attribute's framing
/// and every prefix checked), reads every prefix, and with `check` also
/// classifies the attributes as RFC 7606 asks (what a speaker that used
/// received routes would do; lb's ignores them); returns the prefixes.
fn decode_all(stream: &[u8], check: bool) -> usize {
    let mut rest = stream;
    let mut n = 0;
    while let Ok(Some((kind, m))) = frame(rest, MAX_LEN) {
        if let Ok(Message::Update(u)) = Message::decode(kind, m) {
            n += u.nlri().count();
            if check {
                n += usize::from(u.check(true).is_err());
            }
        }
        rest = &rest[m.len()..];
    }
    n
}

/// zettabgp 0.3 (crates.io) on the same stream: head, then UPDATE body;
/// returns the prefixes.
fn zettabgp_all(stream: &[u8]) -> usize {
    use zettabgp::prelude::*;
    let params = BgpSessionParams::new(
        65000,
        90,
        BgpTransportMode::IPv4,
        std::net::Ipv4Addr::new(192, 0, 2, 1),
        vec![BgpCapability::CapASN32(65000)],
    );
    let mut rest = stream;
    let mut n = 0;
    while let Ok((kind, len)) = params.decode_message_head(rest) {
        let Some(body) = rest.get(19..19 + len) else { break };
        if kind == BgpMessageType::Update {
            let mut u = BgpUpdateMessage::new();
            if u.decode_from(&params, body).is_ok() {
                n += u.updates.len();
            }
        }
        rest = &rest[19 + len..];
    }
    n
}

/// bgpkit-parser 0.12 (crates.io) on the same stream; returns the
/// prefixes.
fn bgpkit_all(stream: &bytes::Bytes) -> usize {
    use bgpkit_parser::models::{AsnLength, BgpMessage};
    let mut rest = stream.clone();
    let mut n = 0;
    while !rest.is_empty() {
        match bgpkit_parser::parser::bgp::parse_bgp_message(&mut rest, false, &AsnLength::Bits32) {
            Ok(BgpMessage::Update(u)) => n += u.announced_prefixes.len(),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    n
}

fn codec(c: &mut Criterion) {
    let a = announce();
    // w1: one /32 per UPDATE.
    let mut w1 = Vec::new();
    for p in prefixes(1000) {
        a.write(&[p], MAX_LEN, &mut w1);
    }
    // w800: 800 /32 in one UPDATE.
    let mut w800 = Vec::new();
    a.write(&prefixes(800), MAX_LEN, &mut w800);
    let before = allocations();
    for check in [false, true] {
        assert_eq!(decode_all(&w1, check), 1000);
        assert_eq!(decode_all(&w800, check), 800);
    }
    assert_eq!(allocations(), before, "decoding allocated");

    let mut g = c.benchmark_group("bgp");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode w1: 1,000 single-/32 UPDATEs", |b| {
        b.iter(|| decode_all(black_box(&w1), false))
    });
    g.bench_function("decode and RFC 7606 check w1", |b| {
        b.iter(|| decode_all(black_box(&w1), true))
    });
    // The same bytes through two codecs from crates.io, in the same run.
    assert_eq!(zettabgp_all(&w1), 1000);
    assert_eq!(zettabgp_all(&w800), 800);
    let (w1_bytes, w800_bytes) = (bytes::Bytes::from(w1.clone()), bytes::Bytes::from(w800.clone()));
    assert_eq!(bgpkit_all(&w1_bytes), 1000);
    assert_eq!(bgpkit_all(&w800_bytes), 800);
    g.bench_function("zettabgp 0.3, decode w1", |b| b.iter(|| zettabgp_all(black_box(&w1))));
    g.bench_function("bgpkit-parser 0.12, decode w1", |b| {
        b.iter(|| bgpkit_all(black_box(&w1_bytes)))
    });
    g.throughput(Throughput::Elements(800));
    g.bench_function("decode w800: one UPDATE of 800 /32", |b| {
        b.iter(|| decode_all(black_box(&w800), false))
    });
    g.bench_function("zettabgp 0.3, decode w800", |b| {
        b.iter(|| zettabgp_all(black_box(&w800)))
    });
    g.bench_function("bgpkit-parser 0.12, decode w800", |b| {
        b.iter(|| bgpkit_all(black_box(&w800_bytes)))
    });
    // w1 encode: one /32 per UPDATE into a reused buffer, the attributes
    // encoded once, nothing allocated per message.
    let singles = prefixes(1000);
    let mut out = Vec::with_capacity(64 * 1024);
    let encoded = a.encode();
    let before = allocations();
    for p in &singles {
        encoded.write(std::slice::from_ref(p), MAX_LEN, &mut out);
    }
    assert_eq!(allocations(), before, "encoding allocated");
    assert_eq!(out, w1);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encode w1: 1,000 single-/32 UPDATEs", |b| {
        b.iter(|| {
            out.clear();
            for p in black_box(&singles) {
                encoded.write(std::slice::from_ref(p), MAX_LEN, &mut out);
            }
        })
    });
    let many = prefixes(10_000);
    let mut out = Vec::with_capacity(64 * 1024);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("encode: 10,000 /32 packed into UPDATEs", |b| {
        b.iter(|| {
            out.clear();
            a.write(black_box(&many), MAX_LEN, &mut out)
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
