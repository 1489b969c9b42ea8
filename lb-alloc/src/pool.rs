//! Address pools: their addresses, policy, and the validated, ordered set the
//! allocator works from.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::addr::{AddrRange, Family, to_num};
use crate::selector::{LabelSelector, Labels};

/// One address pool (MetalLB's IPAddressPool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    name: String,
    addresses: Vec<AddrRange>,
    auto_assign: bool,
    avoid_buggy_ips: bool,
    allocation: Option<ServiceAllocation>,
}

impl Pool {
    /// A pool with `autoAssign: true`, `avoidBuggyIPs: false` and no
    /// `serviceAllocation`. Addresses are walked in the order given.
    pub fn new(name: impl Into<String>, addresses: Vec<AddrRange>) -> Self {
        Self {
            name: name.into(),
            addresses,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }

    /// Sets `autoAssign`: when false, only Services that name the pool or
    /// request one of its addresses get addresses from it.
    pub fn with_auto_assign(mut self, on: bool) -> Self {
        self.auto_assign = on;
        self
    }

    /// Sets `avoidBuggyIPs`: IPv4 `.0` and `.255` addresses count as outside
    /// the pool.
    pub fn with_avoid_buggy_ips(mut self, on: bool) -> Self {
        self.avoid_buggy_ips = on;
        self
    }

    /// Sets `serviceAllocation`.
    pub fn with_allocation(mut self, allocation: ServiceAllocation) -> Self {
        self.allocation = Some(allocation);
        self
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address entries, in configuration order.
    pub fn addresses(&self) -> &[AddrRange] {
        &self.addresses
    }

    /// `autoAssign`.
    pub fn auto_assign(&self) -> bool {
        self.auto_assign
    }

    /// `avoidBuggyIPs`.
    pub fn avoid_buggy_ips(&self) -> bool {
        self.avoid_buggy_ips
    }

    /// `serviceAllocation`, if set.
    pub fn allocation(&self) -> Option<&ServiceAllocation> {
        self.allocation.as_ref()
    }

    /// Whether `ip` belongs to the pool, honouring `avoidBuggyIPs`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        !(self.avoid_buggy_ips && crate::addr::is_buggy(ip)) && self.addresses.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool may serve a Service in `namespace` (with those
    /// namespace labels) carrying `labels`.
    pub fn admits(&self, namespace: &str, namespace_labels: &Labels, labels: &Labels) -> bool {
        self.allocation
            .as_ref()
            .is_none_or(|a| a.admits(namespace, namespace_labels, labels))
    }

    /// Usable addresses of a family.
    pub fn capacity(&self, family: Family) -> u128 {
        self.addresses
            .iter()
            .filter(|r| r.family() == family)
            .fold(0u128, |n, r| n.saturating_add(r.usable(self.avoid_buggy_ips)))
    }
}

/// `serviceAllocation`: which Services a pool serves, and its priority.
///
/// A pool with a `serviceAllocation` is only used automatically for the
/// Services it admits, before the general pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower runs first; `None` (MetalLB's 0 or unset) runs after every set
    /// priority.
    pub priority: Option<i32>,
    /// Namespaces served by name.
    pub namespaces: BTreeSet<String>,
    /// Namespaces served by their labels.
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services served by their labels (any selector may match).
    pub service_selectors: Vec<LabelSelector>,
}

impl ServiceAllocation {
    /// Whether the Service passes both the namespace and the label test.
    ///
    /// A namespace constraint (names or selectors) that is given must match.
    /// MetalLB treats selectors that match no namespace as "no constraint";
    /// we do not, so a typo in a selector cannot open a pool to everyone.
    pub fn admits(&self, namespace: &str, namespace_labels: &Labels, labels: &Labels) -> bool {
        let ns_ok = (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.contains(namespace)
            || self.namespace_selectors.iter().any(|s| s.matches(namespace_labels));
        let svc_ok = self.service_selectors.is_empty() || self.service_selectors.iter().any(|s| s.matches(labels));
        ns_ok && svc_ok
    }
}

/// A pool that was left out of a [`PoolSet`], and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool has no name.
    #[error("pool has an empty name")]
    EmptyName,
    /// Another pool earlier in the input has the same name.
    #[error("pool {0:?} is defined more than once")]
    DuplicateName(String),
    /// `spec.addresses` is empty.
    #[error("pool {0:?} has no addresses")]
    NoAddresses(String),
    /// Two entries overlap.
    #[error("pool {pool:?}: addresses {range} overlap {other} of pool {other_pool:?}")]
    Overlap {
        /// The pool left out.
        pool: String,
        /// Its entry.
        range: AddrRange,
        /// The pool that keeps the addresses.
        other_pool: String,
        /// That pool's entry.
        other: AddrRange,
    },
}

impl PoolError {
    /// The pool the error is about.
    pub fn pool(&self) -> &str {
        match self {
            PoolError::EmptyName => "",
            PoolError::DuplicateName(p) | PoolError::NoAddresses(p) => p,
            PoolError::Overlap { pool, .. } => pool,
        }
    }
}

/// A validated set of pools: unique names, no overlapping addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSet {
    pools: Vec<Pool>,
    /// Address index: (family, first, last, pool, entry), sorted; ranges are disjoint.
    index: Vec<(Family, u128, u128, u32, u32)>,
    /// Pools with `serviceAllocation`, by priority then name.
    pinned: Vec<u32>,
    /// Pools without `serviceAllocation`, by name.
    general: Vec<u32>,
}

impl PoolSet {
    /// Validates `pools`. A pool that conflicts with one earlier in the input
    /// is left out and reported; the rest form the set. Callers that want the
    /// pools already in force to win a conflict put them first.
    pub fn build(pools: impl IntoIterator<Item = Pool>) -> (PoolSet, Vec<PoolError>) {
        let mut set = PoolSet::default();
        let mut errors = Vec::new();
        let mut names = BTreeSet::new();
        'pools: for pool in pools {
            if pool.name.is_empty() {
                errors.push(PoolError::EmptyName);
                continue;
            }
            if pool.addresses.is_empty() {
                errors.push(PoolError::NoAddresses(pool.name.clone()));
                continue;
            }
            if names.contains(&pool.name) {
                errors.push(PoolError::DuplicateName(pool.name.clone()));
                continue;
            }
            // Overlaps within the pool, then against the accepted pools.
            for (i, a) in pool.addresses.iter().enumerate() {
                if let Some(b) = pool.addresses[..i].iter().find(|b| b.overlaps(a)) {
                    errors.push(PoolError::Overlap {
                        pool: pool.name.clone(),
                        range: *a,
                        other_pool: pool.name.clone(),
                        other: *b,
                    });
                    continue 'pools;
                }
                if let Some(&(_, _, _, p, e)) = set.overlapping(a) {
                    let other = &set.pools[p as usize];
                    errors.push(PoolError::Overlap {
                        pool: pool.name.clone(),
                        range: *a,
                        other_pool: other.name.clone(),
                        other: other.addresses[e as usize],
                    });
                    continue 'pools;
                }
            }
            let p = set.pools.len() as u32;
            for (e, r) in pool.addresses.iter().enumerate() {
                let key = (r.family(), r.first_num(), r.last_num(), p, e as u32);
                let at = set.index.partition_point(|x| *x < key);
                set.index.insert(at, key);
            }
            names.insert(pool.name.clone());
            set.pools.push(pool);
        }
        let mut order: Vec<u32> = (0..set.pools.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&set.pools[a as usize], &set.pools[b as usize]);
            let prio = |p: &Pool| {
                p.allocation
                    .as_ref()
                    .and_then(|a| a.priority)
                    .map_or((1, 0), |n| (0, n))
            };
            prio(a).cmp(&prio(b)).then_with(|| a.name.cmp(&b.name))
        });
        for i in order {
            if set.pools[i as usize].allocation.is_some() {
                set.pinned.push(i);
            } else {
                set.general.push(i);
            }
        }
        (set, errors)
    }

    fn overlapping(&self, r: &AddrRange) -> Option<&(Family, u128, u128, u32, u32)> {
        // Index entries are disjoint and sorted, so only the last one starting
        // at or before r's end can overlap it.
        let at = self
            .index
            .partition_point(|&(f, first, ..)| (f, first) <= (r.family(), r.last_num()));
        at.checked_sub(1)
            .map(|i| &self.index[i])
            .filter(|&&(f, _, last, ..)| f == r.family() && last >= r.first_num())
    }

    /// The pools, in input order.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Whether the set has no pools.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// A pool by name.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.position(name).map(|i| &self.pools[i])
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// The pool and entry that hold `ip` (ignoring `avoidBuggyIPs`).
    pub(crate) fn locate(&self, ip: IpAddr) -> Option<(usize, usize)> {
        let (f, n) = (Family::of(ip), to_num(ip));
        let at = self.index.partition_point(|&(g, first, ..)| (g, first) <= (f, n));
        let &(g, _, last, p, e) = self.index.get(at.checked_sub(1)?)?;
        (g == f && n <= last).then_some((p as usize, e as usize))
    }

    /// The pool that holds `ip`, if any (honouring `avoidBuggyIPs`).
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        let (p, _) = self.locate(ip)?;
        let pool = &self.pools[p];
        pool.contains(ip).then_some(pool)
    }

    /// Pools tried for automatic allocation, in order: pools with a
    /// `serviceAllocation` that admits the Service (priority, then name),
    /// then the general pools (by name). Only pools with `autoAssign`.
    pub(crate) fn auto_order<'a>(
        &'a self,
        namespace: &'a str,
        namespace_labels: &'a Labels,
        labels: &'a Labels,
    ) -> impl Iterator<Item = usize> + 'a {
        self.pinned
            .iter()
            .chain(&self.general)
            .map(|&i| i as usize)
            .filter(move |&i| {
                let p = &self.pools[i];
                p.auto_assign && p.admits(namespace, namespace_labels, labels)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, addrs: &[&str]) -> Pool {
        Pool::new(name, addrs.iter().map(|a| a.parse().unwrap()).collect())
    }

    #[test]
    fn overlap_within_pool_rejected() {
        let (set, errs) = PoolSet::build([pool("a", &["10.0.0.0/24", "10.0.0.128-10.0.1.5"])]);
        assert!(set.is_empty());
        assert!(matches!(&errs[..], [PoolError::Overlap { pool, other_pool, .. }] if pool == "a" && other_pool == "a"));
    }

    #[test]
    fn overlap_across_pools_rejects_the_later_one() {
        let (set, errs) = PoolSet::build([
            pool("first", &["10.0.0.0/24"]),
            pool("second", &["fc00::/64", "10.0.0.255-10.0.1.10"]),
            pool("third", &["10.0.1.0/24"]),
        ]);
        assert_eq!(
            set.pools().iter().map(Pool::name).collect::<Vec<_>>(),
            ["first", "third"]
        );
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.contains("second") && msg.contains("first") && msg.contains("10.0.0.0-10.0.0.255"),
            "{msg}"
        );
    }

    #[test]
    fn adjacent_ranges_do_not_overlap() {
        let (set, errs) = PoolSet::build([pool("a", &["10.0.0.0/25"]), pool("b", &["10.0.0.128/25"])]);
        assert!(errs.is_empty());
        assert_eq!(set.pool_of("10.0.0.127".parse().unwrap()).unwrap().name(), "a");
        assert_eq!(set.pool_of("10.0.0.128".parse().unwrap()).unwrap().name(), "b");
        assert!(set.pool_of("10.0.1.0".parse().unwrap()).is_none());
    }

    #[test]
    fn names_and_emptiness() {
        let (set, errs) = PoolSet::build([
            pool("a", &["10.0.0.0/30"]),
            pool("a", &["10.0.1.0/30"]),
            pool("", &["10.0.2.0/30"]),
            pool("e", &[]),
        ]);
        assert_eq!(set.pools().len(), 1);
        assert_eq!(
            errs,
            vec![
                PoolError::DuplicateName("a".into()),
                PoolError::EmptyName,
                PoolError::NoAddresses("e".into())
            ]
        );
    }

    #[test]
    fn buggy_ips_are_outside_the_pool() {
        let p = pool("a", &["10.0.0.0/24"]).with_avoid_buggy_ips(true);
        assert!(!p.contains("10.0.0.0".parse().unwrap()));
        assert!(!p.contains("10.0.0.255".parse().unwrap()));
        assert!(p.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(p.capacity(Family::V4), 254);
    }

    #[test]
    fn auto_order_is_priority_then_name_then_general() {
        let alloc = |prio| ServiceAllocation {
            priority: prio,
            ..Default::default()
        };
        let (set, _) = PoolSet::build([
            pool("zeta", &["10.0.5.0/30"]),
            pool("unset", &["10.0.0.0/30"]).with_allocation(alloc(None)),
            pool("p20", &["10.0.1.0/30"]).with_allocation(alloc(Some(20))),
            pool("p10b", &["10.0.2.0/30"]).with_allocation(alloc(Some(10))),
            pool("p10a", &["10.0.3.0/30"]).with_allocation(alloc(Some(10))),
            pool("alpha", &["10.0.4.0/30"]),
            pool("manual", &["10.0.6.0/30"]).with_auto_assign(false),
        ]);
        let l = Labels::new();
        let names: Vec<_> = set
            .auto_order("default", &l, &l)
            .map(|i| set.pools()[i].name())
            .collect();
        assert_eq!(names, ["p10a", "p10b", "p20", "unset", "alpha", "zeta"]);
    }

    #[test]
    fn admission_namespaces_and_selectors_are_anded() {
        let a = ServiceAllocation {
            priority: None,
            namespaces: ["prod".to_string()].into(),
            namespace_selectors: vec![LabelSelector::from_labels([("tier", "gold")])],
            service_selectors: vec![LabelSelector::from_labels([("app", "web")])],
        };
        let none = Labels::new();
        let gold: Labels = [("tier".to_string(), "gold".to_string())].into();
        let web: Labels = [("app".to_string(), "web".to_string())].into();
        assert!(a.admits("prod", &none, &web));
        assert!(a.admits("other", &gold, &web));
        assert!(!a.admits("other", &none, &web));
        assert!(!a.admits("prod", &none, &none));
        // Empty lists admit everyone; only the priority matters.
        assert!(ServiceAllocation::default().admits("x", &none, &none));
    }
}
