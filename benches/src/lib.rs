//! Shared helpers for the lb benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

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

/// Counts live heap bytes, to report memory per held object. A bench
/// installs it with `#[global_allocator]`.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

/// Live heap bytes now (meaningful only with [`Counting`] installed).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Allocations made so far (meaningful only with [`Counting`] installed).
pub fn allocations() -> isize {
    ALLOCATIONS.load(Ordering::Relaxed)
}

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}
