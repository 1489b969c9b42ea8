//! Allocation benchmarks (issue targets in the README's performance section).
//!
//! `cargo bench -p lb-benches --bench alloc`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lb_alloc::{Allocator, Family, Request};
use lb_benches::{Counting, live_bytes, pool, requests};

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 100_000;

fn held(cidr: &str, family: Family, n: usize) -> (Allocator, lb_alloc::PoolSet, Vec<Request>) {
    let pools = pool(cidr);
    let reqs = requests(n, family);
    let mut a = Allocator::new();
    let report = a.sync(&pools, &reqs);
    assert!(report.results.iter().all(|r| r.ips().len() == 1));
    (a, pools, reqs)
}

fn memory_report() {
    for (cidr, family) in [("10.0.0.0/15", Family::V4), ("fc00::/64", Family::V6)] {
        let pools = pool(cidr);
        let reqs = requests(N, family);
        let before = live_bytes();
        let mut a = Allocator::new();
        drop(a.sync(&pools, &reqs));
        let after = live_bytes();
        println!(
            "memory: {cidr}: {} bytes per held allocation ({} services, {} index intervals)",
            (after - before) / N as isize,
            N,
            a.index_intervals()
        );
    }
}

fn benches(c: &mut Criterion) {
    memory_report();
    let mut g = c.benchmark_group("alloc");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (name, cidr, family) in [
        ("100k_from_v4_slash15", "10.0.0.0/15", Family::V4),
        ("100k_from_v6_slash64", "fc00::/64", Family::V6),
    ] {
        let pools = pool(cidr);
        let reqs = requests(N, family);
        g.bench_function(name, |b| {
            // The allocator is returned so its drop is not timed.
            b.iter_batched(
                Allocator::new,
                |mut a| {
                    let r = a.sync(&pools, &reqs);
                    (a, black_box(r))
                },
                BatchSize::PerIteration,
            )
        });
    }
    let (mut a, pools, reqs) = held("10.0.0.0/15", Family::V4, 10_000);
    g.bench_function("reload_10k_holders_same_pools", |b| {
        b.iter(|| black_box(a.sync(&pools, &reqs)))
    });
    // A naive baseline for the same job: MetalLB's linear scan from the
    // start of the pool, over a set of used addresses.
    g.bench_function("baseline_linear_scan_10k", |b| {
        b.iter(|| {
            let mut used = std::collections::HashSet::new();
            for _ in 0..10_000u32 {
                let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0));
                let ip = (base..).find(|ip| !used.contains(ip)).unwrap();
                used.insert(ip);
            }
            black_box(used.len())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("single");
    let (mut a, _, _) = held("10.0.0.0/15", Family::V4, N);
    let extra = requests(1, Family::V4).pop().map(|mut r| {
        r.name = "extra".into();
        r
    });
    let extra = extra.unwrap();
    g.bench_function("assign_and_release_at_100k_held", |b| {
        b.iter(|| {
            black_box(a.assign(&extra));
            black_box(a.release(&extra.namespace, &extra.name));
        })
    });
    g.finish();
}

criterion_group!(alloc, benches);
criterion_main!(alloc);
