//! Arbitrary address entries and flags as pools, then allocation for a few
//! Services: construction never panics, and every address handed out lies
//! in its pool.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lb_alloc::{Allocator, Family, FamilyPolicy, Outcome, Pool, PoolSet, Request};

#[derive(Arbitrary, Debug)]
struct Input {
    pools: Vec<(Vec<String>, bool, bool)>,
    services: Vec<(u8, Option<String>, Option<String>)>,
}

fuzz_target!(|input: Input| {
    let pools = input.pools.iter().take(8).enumerate().map(|(i, (entries, auto, buggy))| {
        let ranges = entries.iter().take(8).filter_map(|e| e.parse().ok()).collect();
        Pool::new(format!("p{i}"), ranges).with_auto_assign(*auto).with_avoid_buggy_ips(*buggy)
    });
    let (set, _) = PoolSet::build(pools);
    let reqs: Vec<Request> = input
        .services
        .iter()
        .take(32)
        .enumerate()
        .map(|(i, (fam, ip, pool))| {
            let mut r = Request::new("ns", format!("s{i}"));
            (r.cluster_families, r.policy) = match fam % 4 {
                0 => (vec![Family::V4], FamilyPolicy::SingleStack),
                1 => (vec![Family::V6], FamilyPolicy::SingleStack),
                2 => (vec![Family::V4, Family::V6], FamilyPolicy::PreferDualStack),
                _ => (vec![Family::V6, Family::V4], FamilyPolicy::RequireDualStack),
            };
            r.requested_ips = ip.iter().filter_map(|s| s.parse().ok()).collect();
            r.requested_pool = pool.clone();
            r
        })
        .collect();
    let report = Allocator::new().sync(&set, &reqs);
    for res in &report.results {
        if let Outcome::Assigned(a) = &res.outcome {
            let pool = set.get(&a.pool).expect("known pool");
            assert!(a.ips.iter().all(|&ip| pool.contains(ip)));
        }
    }
});
