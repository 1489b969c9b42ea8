//! Shared helpers for the lb benchmarks.

use lb_alloc::{Family, Pool, PoolSet, Request};

/// One pool over `cidr`.
pub fn pool(cidr: &str) -> PoolSet {
    let (set, errors) = PoolSet::build([Pool::new("bench", vec![cidr.parse().expect("valid CIDR")])]);
    assert!(errors.is_empty());
    set
}

/// `n` single-stack Services of `family`.
pub fn requests(n: usize, family: Family) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let mut r = Request::new(format!("ns{}", i % 100), format!("svc-{i:06}"));
            r.cluster_families = vec![family];
            r
        })
        .collect()
}
