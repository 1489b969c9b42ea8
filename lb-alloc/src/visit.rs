//! The order Services are visited in during a sync: most addresses held
//! first, then older first (unknown age last), then by namespace and name.
//!
//! Sorting 100k Services by that key is a large share of a first sync, and
//! most of it is string comparison. So the sort runs on an integer key that
//! agrees with the full key wherever the two differ (names compared by their
//! first 16 bytes), and only runs of equal integer keys, rare, are then
//! ordered by the full key.

use std::cmp::Reverse;

use crate::request::Request;

/// The full visiting key of a request holding `held` addresses.
fn full_key(req: &Request, held: usize) -> (Reverse<usize>, bool, Option<i64>, &str, &str) {
    (
        Reverse(held),
        req.created.is_none(),
        req.created,
        &req.namespace,
        &req.name,
    )
}

/// An integer key with: `compact(a) < compact(b)` implies
/// `full(a) < full(b)`. Equal compact keys say nothing.
fn compact_key(req: &Request, held: usize) -> (u128, u128, u8, u128) {
    // Reverse(held), then created with None after every time (bit 64).
    let created = req.created.map_or(1 << 64, |c| u128::from((c as u64) ^ (1 << 63)));
    debug_assert!(held <= 2, "one address per family");
    let first = (u128::from(2u8.saturating_sub(held.min(2) as u8)) << 65) | created;
    // A namespace longer than 16 bytes leaves the rest of the key neutral,
    // so its ties fall to the full key; its clamped length keeps a 16-byte
    // namespace before a longer one that starts with it.
    let long_ns = req.namespace.len() > 16;
    let name = if long_ns { 0 } else { prefix16(&req.name) };
    (first, prefix16(&req.namespace), req.namespace.len().min(17) as u8, name)
}

/// The first 16 bytes of `s`, zero-padded, big-endian: where two prefixes
/// differ they order like the strings (Kubernetes names hold no NUL).
fn prefix16(s: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// Sorts request indexes into visiting order; `held(i)` is the number of
/// addresses request `i`'s Service holds.
pub(crate) fn sort_visits(items: &mut Vec<usize>, requests: &[Request], held: impl Fn(usize) -> usize) {
    let mut keyed: Vec<((u128, u128, u8, u128), usize)> =
        items.iter().map(|&i| (compact_key(&requests[i], held(i)), i)).collect();
    keyed.sort_unstable();
    for run in keyed.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_by(|a, b| full_key(&requests[a.1], held(a.1)).cmp(&full_key(&requests[b.1], held(b.1))));
        }
    }
    items.clear();
    items.extend(keyed.iter().map(|k| k.1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req((ns, name, created): (String, String, Option<i64>)) -> Request {
        let mut r = Request::new(ns, name);
        r.created = created;
        r
    }

    proptest! {
        #[test]
        fn same_order_as_the_full_key(
            items in proptest::collection::vec(
                (
                    // Short alphabets and lengths around 16 make shared prefixes likely.
                    "[ab]{0,3}(aaaaaaaaaaaaaa)?[ab]{0,4}",
                    "[ab]{0,3}(bbbbbbbbbbbbbb)?[ab]{0,4}",
                    prop_oneof![Just(None), Just(Some(i64::MAX)), Just(Some(i64::MIN)), (-3i64..3).prop_map(Some)],
                    0usize..3,
                ),
                0..60,
            )
        ) {
            let requests: Vec<Request> = items.iter().map(|(a, b, c, _)| req((a.clone(), b.clone(), *c))).collect();
            let held = |i: usize| items[i].3;
            let mut fast: Vec<usize> = (0..requests.len()).collect();
            sort_visits(&mut fast, &requests, held);
            let mut slow: Vec<usize> = (0..requests.len()).collect();
            slow.sort_by(|&a, &b| full_key(&requests[a], held(a)).cmp(&full_key(&requests[b], held(b))).then(a.cmp(&b)));
            let keys = |v: &[usize]| v.iter().map(|&i| full_key(&requests[i], held(i))).collect::<Vec<_>>();
            prop_assert_eq!(keys(&fast), keys(&slow));
        }
    }
}
