//! One host's Exact and Prefix routes, laid out for lookup, and the hash
//! table of hosts.
//!
//! A lookup of a host not in cache pays a memory fetch for each pointer it
//! follows, one after the other. So a host's bucket is two allocations,
//! both addressed from the hash table's slot and fetched side by side:
//! its text (the host name, the rule paths, the Service names) and its
//! words (the counts, a search array of keys, and per key what a
//! forwarding decision needs: the [`Hit`]). The [`Route`] itself, with
//! its regex and canary, is read only when the hit says it must be.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::table::{BackendPort, PathKind, Route};

/// Words of the header: name length, entry count, Exact entry count, the
/// two key-length masks, the default backend, the extra-data index.
const HEADER: usize = 7;
/// Words of one key in the search array: offset in the text, length.
const KEY: usize = 2;
/// Words of one hit: route, Ingress, option set, rule path length,
/// Service offset, Service length, port and flags.
const HIT: usize = 7;
/// "None" in a header word.
const NONE: u32 = u32::MAX;

/// Hit flags (above the port's 16 bits).
const PLAIN: u32 = 1 << 16;
const CANARY: u32 = 1 << 17;
const UNRESOLVED: u32 = 1 << 18;
const SSL_REDIRECT: u32 = 1 << 19;

/// A matched route as a lookup needs it, read from the bucket (or from the
/// [`Route`] for regex routes and default backends).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit<'t> {
    /// The route's index in the table.
    pub(crate) route: u32,
    /// Its Ingress.
    pub(crate) ingress: u32,
    /// Its Ingress's option set.
    pub(crate) options: u32,
    /// The rule path as written; empty for a default backend.
    pub(crate) path: &'t str,
    pub(crate) kind: PathKind,
    pub(crate) service: &'t str,
    /// `None`: a port name the resolver did not know.
    pub(crate) port: Option<u16>,
    /// Its Ingress's options ask for nothing but the https redirect.
    pub(crate) plain: bool,
    /// Its Ingress's `ssl-redirect`.
    pub(crate) ssl_redirect: bool,
    /// It has a canary alternative.
    pub(crate) canary: bool,
}

impl<'t> Hit<'t> {
    /// The hit of route `id`.
    pub(crate) fn of(id: u32, r: &'t Route) -> Self {
        Self {
            route: id,
            ingress: r.ingress,
            options: r.options,
            path: &r.path,
            kind: r.kind,
            service: &r.backend.service,
            port: match r.backend.port {
                BackendPort::Number(n) => Some(n),
                BackendPort::Unresolved(_) => None,
            },
            plain: r.plain,
            ssl_redirect: r.ssl_redirect,
            canary: r.canary.is_some(),
        }
    }
}

/// The Exact and Prefix routes of one host bucket. Exact keys are rule
/// paths; Prefix keys are rule paths without their trailing `/` (`""` for
/// `/`), each leading to the best route for that key. Exact keys come
/// first, then Prefix keys, each run sorted by length, then bytes.
#[derive(Debug)]
pub(crate) struct HostRoutes {
    /// The host name, then each entry's rule path (its key is a prefix of
    /// it), then each entry's Service name.
    text: Box<str>,
    /// [`HEADER`] words, then [`KEY`] words per entry, then [`HIT`] words
    /// per entry.
    words: Box<[u32]>,
}

/// What [`HostRoutes::new`] lays out per key.
pub(crate) struct Key<'a> {
    /// The key: an Exact path, or a Prefix path without its trailing `/`.
    pub(crate) key: &'a str,
    /// The rule path (the key, or the key and a `/`).
    pub(crate) path: &'a str,
    pub(crate) route: u32,
}

impl HostRoutes {
    /// Lays out a host: its name, its keys (Exact ones first, each run in
    /// [`key_order`](crate::table) order), its default backend and the
    /// index of its extra (regex, ingress-nginx) data.
    pub(crate) fn new(
        name: &str,
        exact: usize,
        keys: &[Key<'_>],
        routes: &[Route],
        default: Option<u32>,
        extra: Option<u32>,
    ) -> Self {
        let service = |k: &Key<'_>| &*routes[k.route as usize].backend.service;
        let mut text =
            String::with_capacity(name.len() + keys.iter().map(|k| k.path.len() + service(k).len()).sum::<usize>());
        text.push_str(name);
        let mut words = vec![0; HEADER + keys.len() * (KEY + HIT)];
        let lens = |run: &[Key<'_>]| run.iter().fold(0, |m, k| m | len_bit(k.key.len()));
        words[..HEADER].copy_from_slice(&[
            word(name.len()),
            word(keys.len()),
            word(exact),
            lens(&keys[..exact]),
            lens(&keys[exact..]),
            default.unwrap_or(NONE),
            extra.unwrap_or(NONE),
        ]);
        let hits_at = HEADER + keys.len() * KEY;
        for (i, k) in keys.iter().enumerate() {
            words[HEADER + i * KEY..][..KEY].copy_from_slice(&[word(text.len()), word(k.key.len())]);
            words[hits_at + i * HIT + 3] = word(k.path.len());
            text.push_str(k.path);
        }
        for (i, k) in keys.iter().enumerate() {
            let r = &routes[k.route as usize];
            let port = match r.backend.port {
                BackendPort::Number(n) => u32::from(n),
                BackendPort::Unresolved(_) => UNRESOLVED,
            };
            let flags = [
                (r.plain, PLAIN),
                (r.canary.is_some(), CANARY),
                (r.ssl_redirect, SSL_REDIRECT),
            ]
            .iter()
            .fold(0, |f, &(on, flag)| if on { f | flag } else { f });
            let hit = &mut words[hits_at + i * HIT..][..HIT];
            hit[0] = k.route;
            hit[1] = r.ingress;
            hit[2] = r.options;
            hit[4] = word(text.len());
            hit[5] = word(service(k).len());
            hit[6] = port | flags;
            text.push_str(service(k));
        }
        Self {
            text: text.into(),
            words: words.into(),
        }
    }

    /// The host name (empty for host-less rules).
    #[inline]
    pub(crate) fn name(&self) -> &str {
        &self.text[..self.words[0] as usize]
    }

    /// The default backend's route.
    pub(crate) fn default(&self) -> Option<u32> {
        Some(self.words[5]).filter(|&w| w != NONE)
    }

    /// The index of the host's extra data.
    pub(crate) fn extra(&self) -> Option<u32> {
        Some(self.words[6]).filter(|&w| w != NONE)
    }

    /// Whether the host is `name`. The text and the words are read side
    /// by side: neither waits for the other to arrive.
    #[inline]
    fn named(&self, name: &str) -> bool {
        let text = self.text.as_bytes().get(..name.len());
        text.is_some_and(|t| cmp_same_len(t, name.as_bytes()).is_eq()) && self.words[0] as usize == name.len()
    }

    fn count(&self) -> usize {
        self.words[1] as usize
    }

    fn exact_count(&self) -> usize {
        self.words[2] as usize
    }

    /// Entry `i`'s key.
    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        let k = &self.words[HEADER + i * KEY..][..KEY];
        &self.text.as_bytes()[k[0] as usize..][..k[1] as usize]
    }

    /// Entry `i` as a hit of kind `kind`.
    #[inline]
    pub(crate) fn hit(&self, i: usize, kind: PathKind) -> Hit<'_> {
        let path_at = self.words[HEADER + i * KEY] as usize;
        let h = &self.words[HEADER + self.count() * KEY + i * HIT..][..HIT];
        Hit {
            route: h[0],
            ingress: h[1],
            options: h[2],
            path: &self.text[path_at..][..h[3] as usize],
            kind,
            service: &self.text[h[4] as usize..][..h[5] as usize],
            port: (h[6] & UNRESOLVED == 0).then_some(h[6] as u16),
            plain: h[6] & PLAIN != 0,
            ssl_redirect: h[6] & SSL_REDIRECT != 0,
            canary: h[6] & CANARY != 0,
        }
    }

    /// The entry of `key` among the entries `lo..hi` (one sorted run).
    #[inline]
    fn find(&self, (mut lo, mut hi): (usize, usize), key: &str) -> Option<usize> {
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = self.key(mid);
            match k.len().cmp(&key.len()).then_with(|| cmp_same_len(k, key.as_bytes())) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The best Exact or Prefix entry for a canonical path: the longer
    /// rule path, then Exact before Prefix. Entries are handed around as
    /// indices; [`HostRoutes::hit`] reads the winner once.
    #[inline]
    pub(crate) fn matching(&self, path: &str) -> Option<(usize, PathKind)> {
        let exact = self.exact(path);
        match (exact, self.prefix(path)) {
            (Some(_), Some(p)) if self.rule_len(p) > path.len() => Some((p, PathKind::Prefix)),
            (Some(e), _) => Some((e, PathKind::Exact)),
            (None, p) => p.map(|p| (p, PathKind::Prefix)),
        }
    }

    /// The length of entry `i`'s rule path.
    #[inline]
    pub(crate) fn rule_len(&self, i: usize) -> usize {
        self.words[HEADER + self.count() * KEY + i * HIT + 3] as usize
    }

    /// The Exact entry for a canonical path.
    #[inline]
    fn exact(&self, path: &str) -> Option<usize> {
        if self.words[3] & len_bit(path.len()) == 0 {
            return None;
        }
        self.find((0, self.exact_count()), path)
    }

    /// The Prefix entry with the longest key matching a canonical path
    /// element-wise.
    #[inline]
    fn prefix(&self, path: &str) -> Option<usize> {
        let run = (self.exact_count(), self.count());
        if run.0 == run.1 {
            return None;
        }
        // Candidate keys, longest first: the whole path (unless it ends in
        // '/'), then the path cut at each '/' from the right.
        let mut end = path.strip_suffix('/').unwrap_or(path).len();
        loop {
            if self.words[4] & len_bit(end) != 0
                && let Some(i) = self.find(run, &path[..end])
            {
                return Some(i);
            }
            end = path.as_bytes()[..end].iter().rposition(|&c| c == b'/')?;
        }
    }
}

/// Byte strings of the same length in lexicographic order, eight bytes at
/// a time: names and keys are short, and a call to `memcmp` costs more
/// than comparing them here.
#[inline]
fn cmp_same_len(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let (mut a8, mut b8) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in a8.by_ref().zip(b8.by_ref()) {
        let word = |c: &[u8]| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in a8.remainder().iter().zip(b8.remainder()) {
        if x != y {
            return x.cmp(y);
        }
    }
    std::cmp::Ordering::Equal
}

/// The bit of a key length in the header's masks (31 for 31 and longer):
/// most candidate lengths are skipped without a search.
fn len_bit(len: usize) -> u32 {
    1 << len.min(31)
}

/// A length or offset as a word (a table past 4 GiB is not built).
fn word(n: usize) -> u32 {
    u32::try_from(n).expect("route table larger than 4 GiB")
}

/// Host buckets by name. The name is compared in the bucket itself, so a
/// lookup follows no pointer to a separate key.
#[derive(Debug, Default)]
pub(crate) struct HostTable {
    table: HashTable<HostRoutes>,
    hasher: RandomState,
}

impl HostTable {
    pub(crate) fn new(buckets: Vec<HostRoutes>) -> Self {
        let hasher = RandomState::default();
        let mut table = HashTable::with_capacity(buckets.len());
        for hr in buckets {
            let hash = hasher.hash_one(hr.name());
            table.insert_unique(hash, hr, |h| hasher.hash_one(h.name()));
        }
        Self { table, hasher }
    }

    /// The bucket named `name`.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&HostRoutes> {
        let hash = self.hasher.hash_one(name);
        self.table.find(hash, |hr| hr.named(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Backend;

    fn route(ingress: u32, path: &str, kind: PathKind, service: &str, port: BackendPort) -> Route {
        Route {
            ingress,
            path: path.into(),
            kind,
            backend: Backend {
                service: service.into(),
                port,
            },
            regex: None,
            plain: ingress == 0,
            ssl_redirect: ingress == 2,
            canary: (ingress == 1).then_some(0),
            options: ingress + 10,
        }
    }

    /// Exact `/healthz`, Prefix `/` and `/api/` (key `/api`), laid out and
    /// read back.
    #[test]
    fn layout_reads_back() {
        let routes = vec![
            route(0, "/healthz", PathKind::Exact, "health", BackendPort::Number(8080)),
            route(1, "/", PathKind::Prefix, "web", BackendPort::Number(80)),
            route(
                2,
                "/api/",
                PathKind::Prefix,
                "api",
                BackendPort::Unresolved("http".into()),
            ),
        ];
        let keys = [
            Key {
                key: "/healthz",
                path: "/healthz",
                route: 0,
            },
            Key {
                key: "",
                path: "/",
                route: 1,
            },
            Key {
                key: "/api",
                path: "/api/",
                route: 2,
            },
        ];
        let hr = HostRoutes::new("shop.example.com", 1, &keys, &routes, Some(7), None);
        assert_eq!(hr.name(), "shop.example.com");
        assert!(hr.named("shop.example.com"));
        assert!(!hr.named("shop.example.co") && !hr.named("shop.example.com2") && !hr.named(""));
        assert_eq!((hr.default(), hr.extra()), (Some(7), None));

        let at = |path: &str| hr.matching(path).map(|(i, kind)| hr.hit(i, kind));
        let h = at("/healthz").unwrap();
        assert_eq!((h.route, h.ingress, h.options, h.kind), (0, 0, 10, PathKind::Exact));
        assert_eq!(
            (h.path, h.service, h.port, h.plain, h.canary),
            ("/healthz", "health", Some(8080), true, false)
        );
        assert!(!h.ssl_redirect);
        let h = at("/healthz/x").unwrap();
        assert_eq!((h.route, h.path, h.kind, h.canary), (1, "/", PathKind::Prefix, true));
        // The rule path `/api/` is longer than the request `/api`: it wins
        // over nothing else here, and reports its own path.
        let h = at("/api").unwrap();
        assert_eq!((h.route, h.path, h.service, h.port), (2, "/api/", "api", None));
        assert!(h.ssl_redirect && !h.plain && !h.canary);
        assert_eq!(at("/api/v1").unwrap().route, 2);
        assert_eq!(at("/apis").unwrap().route, 1);
    }

    #[test]
    fn no_keys() {
        let hr = HostRoutes::new("", 0, &[], &[], None, Some(3));
        assert!(hr.named(""));
        assert_eq!((hr.default(), hr.extra()), (None, Some(3)));
        assert!(hr.matching("/").is_none());
    }

    /// Few distinct bytes, so that equal runs are common; both ends of the
    /// byte range, so that the order is tested where signedness would show.
    const BYTES: [u8; 7] = [0, b'/', b'a', b'b', 0x7f, 0x80, 0xff];

    proptest::proptest! {
        /// The word-at-a-time compare orders like the slices' own `cmp`.
        #[test]
        fn compare_matches_slices(
            pairs in proptest::collection::vec(
                (proptest::sample::select(BYTES.to_vec()), proptest::sample::select(BYTES.to_vec())),
                0..40,
            )
        ) {
            let (a, b): (Vec<u8>, Vec<u8>) = pairs.into_iter().unzip();
            proptest::prop_assert_eq!(cmp_same_len(&a, &b), a.cmp(&b));
            proptest::prop_assert_eq!(cmp_same_len(&a, &a), std::cmp::Ordering::Equal);
        }
    }
}
