//! The free-address index of one pool entry: the lowest free address in
//! O(log n), with no scan over used addresses.
//!
//! Used addresses are kept as disjoint, non-adjacent intervals in a
//! `BTreeMap<first, last>`. Sequential allocation therefore costs one
//! interval, however many addresses it holds. With `avoidBuggyIPs`, an
//! interval also swallows the `.255`/`.0` addresses next to its members, so a
//! run of used addresses does not break at every /24 and the lookup never
//! walks block by block. Invariant: every address in an interval is used or
//! is a buggy address of an `avoidBuggyIPs` entry.

use std::collections::BTreeMap;

use crate::addr::{AddrRange, Family, is_buggy_num};

#[derive(Debug, Clone)]
pub(crate) struct Space {
    family: Family,
    first: u128,
    last: u128,
    avoid_buggy: bool,
    blocked: BTreeMap<u128, u128>,
    used: u128,
}

impl Space {
    pub(crate) fn new(range: &AddrRange, avoid_buggy: bool) -> Self {
        Self {
            family: range.family(),
            first: range.first_num(),
            last: range.last_num(),
            avoid_buggy: avoid_buggy && range.family() == Family::V4,
            blocked: BTreeMap::new(),
            used: 0,
        }
    }

    pub(crate) fn used(&self) -> u128 {
        self.used
    }

    fn skipped(&self, n: u128) -> bool {
        self.avoid_buggy && is_buggy_num(self.family, n)
    }

    /// The blocked interval that contains `n`.
    fn interval_of(&self, n: u128) -> Option<(u128, u128)> {
        let (&s, &e) = self.blocked.range(..=n).next_back()?;
        (e >= n).then_some((s, e))
    }

    /// Whether `n` may be handed out: inside the entry, not a skipped buggy
    /// address, not used.
    pub(crate) fn is_free(&self, n: u128) -> bool {
        (self.first..=self.last).contains(&n) && !self.skipped(n) && self.interval_of(n).is_none()
    }

    /// The lowest address that [`Space::is_free`] accepts.
    pub(crate) fn lowest_free(&self) -> Option<u128> {
        let mut c = self.first;
        loop {
            if c > self.last {
                return None;
            }
            if self.skipped(c) {
                c += 1;
            } else if let Some((_, e)) = self.interval_of(c) {
                c = e.checked_add(1)?;
            } else {
                return Some(c);
            }
        }
    }

    /// Marks a free address used. The caller checked [`Space::is_free`].
    pub(crate) fn take(&mut self, n: u128) {
        debug_assert!(self.is_free(n));
        let (mut lo, mut hi) = (n, n);
        if self.avoid_buggy {
            while lo > self.first && self.skipped(lo - 1) {
                lo -= 1;
            }
            while hi < self.last && self.skipped(hi + 1) {
                hi += 1;
            }
        }
        self.used += 1;
        // The common case, sequential allocation: the interval just below
        // grows in place, when no interval starts inside or right after.
        if self.blocked.range(lo..=hi.saturating_add(1)).next().is_none()
            && let Some((_, e)) = self.blocked.range_mut(..lo).next_back()
            && e.saturating_add(1) >= lo
        {
            *e = (*e).max(hi);
            return;
        }
        // Absorb every interval that overlaps or touches [lo, hi].
        while let Some((&s, &e)) = self.blocked.range(..=hi.saturating_add(1)).next_back() {
            if e.saturating_add(1) < lo {
                break;
            }
            self.blocked.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.blocked.insert(lo, hi);
    }

    /// Marks a used address free again.
    pub(crate) fn put_back(&mut self, n: u128) {
        let Some((s, e)) = self.interval_of(n) else {
            debug_assert!(false, "put_back of an address that is not used");
            return;
        };
        self.blocked.remove(&s);
        if s < n {
            self.blocked.insert(s, n - 1);
        }
        if n < e {
            self.blocked.insert(n + 1, e);
        }
        self.used -= 1;
    }

    /// Number of intervals kept (memory reporting).
    pub(crate) fn intervals(&self) -> usize {
        self.blocked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn space(r: &str, avoid: bool) -> Space {
        Space::new(&r.parse().unwrap(), avoid)
    }

    #[test]
    fn sequential_allocation_is_one_interval() {
        let mut s = space("10.0.0.0/16", true);
        let mut last = 0;
        for _ in 0..1000 {
            let n = s.lowest_free().unwrap();
            assert!(!is_buggy_num(Family::V4, n));
            assert!(n > last);
            last = n;
            s.take(n);
        }
        assert_eq!(s.intervals(), 1);
        assert_eq!(s.used(), 1000);
    }

    #[test]
    fn put_back_makes_lowest_free_again() {
        let mut s = space("10.0.0.0/24", false);
        for _ in 0..10 {
            let n = s.lowest_free().unwrap();
            s.take(n);
        }
        let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) as u128;
        s.put_back(base + 3);
        assert_eq!(s.lowest_free(), Some(base + 3));
        assert!(!s.is_free(base + 4));
        s.take(base + 3);
        assert_eq!(s.lowest_free(), Some(base + 10));
    }

    #[test]
    fn full_space() {
        let mut s = space("10.0.0.0/31", true);
        assert_eq!(
            s.lowest_free(),
            Some(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1)) as u128)
        );
        s.take(s.lowest_free().unwrap());
        assert_eq!(s.lowest_free(), None);
        let mut top = space("255.255.255.254/31", false);
        top.take(top.lowest_free().unwrap());
        top.take(top.lowest_free().unwrap());
        assert_eq!(top.lowest_free(), None);
        let mut v6 = space("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127", false);
        v6.take(v6.lowest_free().unwrap());
        v6.take(v6.lowest_free().unwrap());
        assert_eq!(v6.lowest_free(), None);
    }

    proptest! {
        /// Against a plain set of used addresses: same lowest free address,
        /// same freeness, after any sequence of takes and put-backs.
        #[test]
        fn matches_a_plain_set(avoid in any::<bool>(), ops in proptest::collection::vec((any::<bool>(), 0u128..600), 0..300)) {
            let range: AddrRange = "10.0.0.250-10.0.2.100".parse().unwrap();
            let mut s = Space::new(&range, avoid);
            let mut used = std::collections::BTreeSet::new();
            let (first, last) = (range.first_num(), range.last_num());
            let ok = |n: u128| !(avoid && is_buggy_num(Family::V4, n));
            for (take, off) in ops {
                let n = first + off;
                if take {
                    if n <= last && ok(n) && !used.contains(&n) {
                        prop_assert!(s.is_free(n));
                        s.take(n);
                        used.insert(n);
                    } else {
                        prop_assert!(!s.is_free(n));
                    }
                } else if used.remove(&n) {
                    s.put_back(n);
                }
                let want = (first..=last).find(|&n| ok(n) && !used.contains(&n));
                prop_assert_eq!(s.lowest_free(), want);
                prop_assert_eq!(s.used(), used.len() as u128);
            }
        }
    }
}
