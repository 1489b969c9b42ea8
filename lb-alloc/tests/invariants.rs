//! Property tests: random sequences of pool reloads and Service add, update
//! and delete, checked after every step against rules written out plainly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_alloc::*;
use proptest::prelude::*;

const RANGES: &[&str] = &[
    "10.0.0.0/30",
    "10.0.0.254-10.0.1.1",
    "10.0.2.0/31",
    "10.0.3.7/32",
    "fc00::/127",
    "fc00::10-fc00::12",
    "10.0.4.0/30",
];
const POOLS: &[&str] = &["alpha", "beta", "gamma"];
const FIXED_IPS: &[&str] = &["10.0.0.1", "10.0.1.0", "10.0.3.7", "fc00::11", "10.9.9.9"];

fn arb_pool(name: &'static str) -> impl Strategy<Value = Option<Pool>> {
    (
        proptest::sample::subsequence(RANGES, 0..3),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(None)), Just(Some(Some(5))), Just(Some(Some(1)))],
        any::<bool>(),
    )
        .prop_map(move |(ranges, auto, buggy, alloc, ns_only)| {
            if ranges.is_empty() {
                return None;
            }
            let mut p = Pool::new(name, ranges.iter().map(|r| r.parse().unwrap()).collect())
                .with_auto_assign(auto)
                .with_avoid_buggy_ips(buggy);
            if let Some(priority) = alloc {
                let mut a = ServiceAllocation {
                    priority,
                    ..Default::default()
                };
                if ns_only {
                    a.namespaces.insert("ns-a".into());
                }
                p = p.with_allocation(a);
            }
            Some(p)
        })
}

fn arb_pools() -> impl Strategy<Value = PoolSet> {
    (arb_pool(POOLS[0]), arb_pool(POOLS[1]), arb_pool(POOLS[2]))
        .prop_map(|(a, b, c)| PoolSet::build([a, b, c].into_iter().flatten()).0)
}

fn arb_request(idx: usize) -> impl Strategy<Value = Request> {
    (
        any::<bool>(),
        prop_oneof![Just(None), Just(Some("k1")), Just(Some("k2"))],
        proptest::sample::subsequence(&[80u16, 443, 53][..], 0..3),
        any::<bool>(),
        0..4usize,
        proptest::option::weighted(0.2, proptest::sample::select(FIXED_IPS)),
        proptest::option::weighted(0.2, proptest::sample::select(POOLS)),
        0..4i64,
    )
        .prop_map(move |(ns_a, key, ports, local, fam, req_ip, req_pool, created)| {
            let mut r = Request::new(if ns_a { "ns-a" } else { "ns-b" }, format!("svc{idx}"));
            r.sharing_key = key.map(str::to_owned);
            r.ports = ports
                .into_iter()
                .map(|port| Port {
                    protocol: Protocol::Tcp,
                    port,
                })
                .collect();
            r.backend_key = if local { "app=x".into() } else { String::new() };
            (r.cluster_families, r.policy) = match fam {
                0 | 1 => (vec![Family::V4], FamilyPolicy::SingleStack),
                2 => (vec![Family::V4, Family::V6], FamilyPolicy::PreferDualStack),
                _ => (vec![Family::V6, Family::V4], FamilyPolicy::RequireDualStack),
            };
            if let Some(ip) = req_ip {
                let ip: IpAddr = ip.parse().unwrap();
                if r.cluster_families.len() == 1 || r.policy == FamilyPolicy::PreferDualStack {
                    r.requested_ips = vec![ip];
                }
            }
            r.requested_pool = req_pool.map(str::to_owned);
            r.created = Some(created);
            r
        })
}

#[derive(Debug, Clone)]
enum Op {
    Reload(PoolSet),
    Upsert(Box<Request>),
    Delete(usize),
    Reserve(Vec<&'static str>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => arb_pools().prop_map(Op::Reload),
        4 => (0..10usize).prop_flat_map(arb_request).prop_map(|r| Op::Upsert(Box::new(r))),
        1 => (0..10usize).prop_map(Op::Delete),
        1 => proptest::sample::subsequence(FIXED_IPS, 0..3).prop_map(Op::Reserve),
    ]
}

/// Whether `ips` are still a valid holding for `req` under `pools`, written
/// straight from the rules.
fn still_valid(ips: &[IpAddr], req: &Request, pools: &PoolSet) -> bool {
    let Some(pool) = pools.pool_of(ips[0]) else {
        return false;
    };
    ips.iter()
        .all(|&ip| pools.pool_of(ip).is_some_and(|p| p.name() == pool.name()))
        && pool.admits(&req.namespace, &req.namespace_labels, &req.labels)
        && req.requested_pool.as_ref().is_none_or(|n| n == pool.name())
        && (req.requested_ips.is_empty() || ips.iter().collect::<BTreeSet<_>>() == req.requested_ips.iter().collect())
        && (req.policy != FamilyPolicy::SingleStack || ips.iter().all(|&ip| Family::of(ip) == req.cluster_families[0]))
}

/// The addresses of `pool` that no one holds and that may be given out.
fn free_addresses(pool: &Pool, used: &BTreeSet<IpAddr>) -> Vec<IpAddr> {
    let num = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let mut out = Vec::new();
    for r in pool.addresses() {
        for n in num(r.first())..=num(r.last()) {
            let ip = match r.family() {
                Family::V4 => IpAddr::from(std::net::Ipv4Addr::from(n as u32)),
                Family::V6 => IpAddr::from(std::net::Ipv6Addr::from(n)),
            };
            let excluded = pool.avoid_buggy_ips() && is_buggy(ip);
            if !used.contains(&ip) && !excluded {
                out.push(ip);
            }
        }
    }
    out
}

/// A pending Service that asks for no particular address must not wait
/// while a pool it may use has a free address of every family it needs.
fn none_pending_beside_free(
    pools: &PoolSet,
    reqs: &[Request],
    report: &SyncReport,
    reserved: &BTreeSet<IpAddr>,
) -> Result<(), TestCaseError> {
    let mut used: BTreeSet<IpAddr> = report.results.iter().flat_map(|r| r.ips().iter().copied()).collect();
    used.extend(reserved);
    for (req, res) in reqs.iter().zip(&report.results) {
        let Outcome::Pending(why) = &res.outcome else { continue };
        if !req.requested_ips.is_empty() {
            continue;
        }
        let eligible = pools.pools().iter().filter(|p| {
            p.admits(&req.namespace, &req.namespace_labels, &req.labels)
                && match &req.requested_pool {
                    Some(name) => p.name() == name,
                    None => p.auto_assign(),
                }
        });
        for pool in eligible {
            let free = free_addresses(pool, &used);
            let has = |f: Family| free.iter().any(|&ip| Family::of(ip) == f);
            let fits = match req.policy {
                FamilyPolicy::SingleStack => has(req.cluster_families[0]),
                FamilyPolicy::RequireDualStack => has(Family::V4) && has(Family::V6),
                _ => has(Family::V4) || has(Family::V6),
            };
            prop_assert!(
                !fits,
                "{} pending ({}) beside free addresses in {}",
                req.key(),
                why,
                pool.name()
            );
        }
    }
    Ok(())
}

fn check(pools: &PoolSet, reqs: &[Request], report: &SyncReport) -> Result<(), TestCaseError> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&Request>> = BTreeMap::new();
    for (req, res) in reqs.iter().zip(&report.results) {
        if let Outcome::Assigned(a) = &res.outcome {
            let pool = pools.get(&a.pool).expect("assigned from a known pool");
            prop_assert!(!a.ips.is_empty() && a.ips.len() <= 2);
            let fams: BTreeSet<Family> = a.ips.iter().map(|&i| Family::of(i)).collect();
            prop_assert_eq!(fams.len(), a.ips.len(), "one address per family");
            for &ip in &a.ips {
                prop_assert!(pool.contains(ip), "{} outside pool {}", ip, a.pool);
                by_ip.entry(ip).or_default().push(req);
            }
            prop_assert!(pool.admits(&req.namespace, &req.namespace_labels, &req.labels));
        }
    }
    for (ip, holders) in by_ip {
        for (i, a) in holders.iter().enumerate() {
            for b in &holders[i + 1..] {
                prop_assert!(
                    a.sharing_key.is_some() && a.sharing_key == b.sharing_key,
                    "{} shared without keys",
                    ip
                );
                prop_assert_eq!(&a.backend_key, &b.backend_key);
                prop_assert!(
                    a.ports.iter().all(|p| !b.ports.contains(p)),
                    "{} shared with colliding ports",
                    ip
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_the_rules(initial in arb_pools(), ops in proptest::collection::vec(arb_op(), 1..40)) {
        let mut alloc = Allocator::new();
        let mut pools = initial;
        let mut reqs: BTreeMap<ServiceKey, Request> = BTreeMap::new();
        let mut held: BTreeMap<ServiceKey, Vec<IpAddr>> = BTreeMap::new();
        let mut reserved: BTreeSet<IpAddr> = BTreeSet::new();
        for op in ops {
            let mut touched = None;
            match op {
                Op::Reload(p) => pools = p,
                Op::Upsert(r) => {
                    touched = Some(r.key());
                    reqs.insert(r.key(), *r);
                }
                Op::Delete(i) => {
                    reqs.remove(&ServiceKey::new("ns-a", format!("svc{i}")));
                    reqs.remove(&ServiceKey::new("ns-b", format!("svc{i}")));
                }
                Op::Reserve(ips) => {
                    reserved = ips.iter().map(|i| i.parse().unwrap()).collect();
                    alloc.set_reserved(reserved.iter().map(|&ip| (ip, ServiceKey::new("other", "elsewhere"))));
                }
            }
            let list: Vec<Request> = reqs.values().cloned().collect();
            let report = alloc.sync(&pools, &list);
            check(&pools, &list, &report)?;
            none_pending_beside_free(&pools, &list, &report, &reserved)?;
            for res in &report.results {
                prop_assert!(res.ips().iter().all(|ip| !reserved.contains(ip)), "{} holds a reserved address", res.service);
            }
            // Every address lost is reported: by the Service that lost it,
            // or as released when the Service is gone.
            for (key, old) in &held {
                match list.iter().position(|q| q.key() == *key) {
                    None => prop_assert!(
                        report.released.iter().any(|(k, ips)| k == key && ips == old),
                        "{} deleted holding {:?}: not in released {:?}", key, old, report.released
                    ),
                    Some(i) => {
                        let res = &report.results[i];
                        let now: BTreeSet<&IpAddr> = res.ips().iter().collect();
                        if now != old.iter().collect() {
                            prop_assert!(res.changed, "{} moved from {:?} to {:?} unreported", key, old, res.outcome);
                        }
                        if old.iter().any(|ip| !now.contains(ip)) {
                            prop_assert!(res.evicted.is_some() || touched.as_ref() == Some(key),
                                "{} lost part of {:?} without a reason: {:?}", key, old, res.outcome);
                        }
                    }
                }
            }
            for (req, res) in list.iter().zip(&report.results) {
                let key = req.key();
                if let Some(old) = held.get(&key)
                    && touched.as_ref() != Some(&key)
                    && still_valid(old, req, &pools)
                    && old.iter().all(|ip| !reserved.contains(ip))
                {
                    for ip in old {
                        prop_assert!(res.ips().contains(ip), "valid holder {} moved from {:?} to {:?}", key, old, res.outcome);
                    }
                }
            }
            held = list.iter().zip(&report.results).filter(|(_, r)| !r.ips().is_empty()).map(|(q, r)| (q.key(), r.ips().to_vec())).collect();

            // A restart from status, requests in reverse order, changes nothing.
            let mut restarted: Vec<Request> = list.iter().zip(&report.results).map(|(q, r)| q.clone().with_current_ips(r.ips().to_vec())).collect();
            restarted.reverse();
            let mut fresh = Allocator::new();
            fresh.set_reserved(reserved.iter().map(|&ip| (ip, ServiceKey::new("other", "elsewhere"))));
            let again = fresh.sync(&pools, &restarted);
            for (q, r) in restarted.iter().zip(&again.results) {
                prop_assert_eq!(r.ips(), q.current_ips.as_slice(), "restart moved {}", q.key());
            }
        }
    }
}
