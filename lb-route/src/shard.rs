//! A table in shards, so that a change is built again where it lands.
//!
//! A large table's hosts are split by a hash of their name into shards
//! (a power of two of them). Each shard is a whole table for the requests
//! whose host it holds: it is built from every Ingress naming one of its
//! hosts (or TLS hosts, or the `www.` twin of one), and from every Ingress
//! with host-less rules or no rules at all, which every shard holds. So
//! conflicts, which are per host, are settled in one shard, oldest Ingress
//! first, exactly as in a table of one shard.
//!
//! A cached build ([`RouteTable::build_cached`]) builds again only the
//! shards whose Ingresses changed, or that asked about a Service that
//! changed: a change to one of 10,000 Ingresses builds one shard of about
//! 40. What is not per host is kept so: the
//! table's regex budget (filled oldest Ingress first across all hosts)
//! bounds the regexes of all shards while they are built, and a table that
//! reaches it is built as one shard, which fills it oldest first exactly
//! (and stays one until its regexes take less than half of it).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::{FixedState, RandomState};

use crate::class::Mode;
use crate::host::{RuleHost, wildcard_suffix};
use crate::ingress::{Ingress, IngressClass};
use crate::pathregex::RegexCache;
use crate::problem::{Problem, Subject};
use crate::table::{
    Asked, Build, Config, IngressRef, PortResolver, Shard, TABLE_REGEX_BUDGET, USE_REGEX, class_problems, ours,
    path_count, www_twin,
};
use crate::target::PathPolicy;
use crate::tls::SecretRef;

/// Ingresses compiled for lookup. Build with [`RouteTable::build`].
#[derive(Debug)]
pub struct RouteTable {
    /// A power of two of them; [`Split`] says which holds a host.
    shards: Box<[Arc<Shard>]>,
    split: Split,
    pub(crate) policy: PathPolicy,
    /// Ingresses served, each counted once.
    ingress_count: usize,
    /// Some shard has a TLS host (else no host has a certificate).
    any_tls: bool,
    /// [`Config::default_certificate`].
    default_certificate: Option<SecretRef>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::of(vec![Arc::new(Shard::default())], Split::one(), &Config::default())
    }
}

/// A host as shards are chosen by: an exact name, or a wildcard's suffix.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HostKey<'a> {
    Exact(&'a str),
    Wildcard(&'a str),
}

/// How hosts are split into shards.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    hasher: FixedState,
    /// A power of two.
    count: usize,
}

impl Split {
    fn one() -> Self {
        Self {
            hasher: FixedState::with_seed(0),
            count: 1,
        }
    }

    /// The shard holding `key`.
    #[inline]
    fn of(&self, key: HostKey<'_>) -> usize {
        if self.count == 1 {
            return 0;
        }
        let hash = match key {
            HostKey::Exact(name) => self.hasher.hash_one((0u8, name)),
            HostKey::Wildcard(suffix) => self.hasher.hash_one((1u8, suffix)),
        };
        hash as usize & (self.count - 1)
    }
}

/// The shard a builder builds: which hosts are its.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    split: Split,
    me: usize,
}

impl Owner {
    /// The one shard of a table of one.
    pub(crate) fn whole() -> Self {
        Self {
            split: Split::one(),
            me: 0,
        }
    }

    /// Whether the shard holds a rule's (or TLS) host; every shard holds
    /// the host-less rules.
    pub(crate) fn owns(&self, host: &RuleHost) -> bool {
        match host {
            RuleHost::Any => true,
            RuleHost::Exact(name) => self.owns_exact(name),
            RuleHost::Wildcard(suffix) => self.split.of(HostKey::Wildcard(suffix)) == self.me,
        }
    }

    /// Whether the shard holds this exact host.
    pub(crate) fn owns_exact(&self, name: &str) -> bool {
        self.split.of(HostKey::Exact(name)) == self.me
    }
}

/// What [`RouteTable::build_cached`] keeps from one build for the next:
/// each shard with the Ingresses it was built from, its problems and its
/// regexes. Pass the same cache to every build.
#[derive(Default)]
pub struct BuildCache {
    /// The seed of the hash that splits hosts: random, unless asked for.
    seed: Option<u64>,
    /// A shard count asked for (tests), instead of one by size.
    forced: Option<usize>,
    /// The last build was kept to one shard for the table's regex budget.
    budget_bound: bool,
    /// The identity of the last build's resolver ([`PortResolver::identity`]).
    ports: Option<u64>,
    parts: Vec<Part>,
    /// How many shards the last build built.
    built: usize,
}

/// How many shards and regexes it keeps.
impl std::fmt::Debug for BuildCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildCache")
            .field("shards", &self.parts.len())
            .field("built", &self.built)
            .field("regexes", &self.parts.iter().map(|p| p.regexes.len()).sum::<usize>())
            .finish()
    }
}

/// One shard as the last build left it.
struct Part {
    /// Its Ingresses (held, so the same address is the same object), each
    /// with its mode and whether the shard counts it.
    inputs: Vec<(Arc<Ingress>, Mode, bool)>,
    shard: Arc<Shard>,
    problems: Vec<Problem>,
    regexes: RegexCache,
    /// The Services its build asked about (namespace, name).
    services: Vec<(Box<str>, Box<str>)>,
}

/// `nginx.ingress.kubernetes.io/rewrite-target`.
const REWRITE_TARGET: &str = "nginx.ingress.kubernetes.io/rewrite-target";

/// `nginx.ingress.kubernetes.io/from-to-www-redirect`.
const FROM_TO_WWW: &str = "nginx.ingress.kubernetes.io/from-to-www-redirect";

/// Ingresses per shard a table is split for.
const PER_SHARD: usize = 64;
/// Below this many Ingresses a table is one shard.
const SPLIT_FROM: usize = 1024;
/// At most this many shards.
const MAX_SHARDS: usize = 256;

impl BuildCache {
    /// A cache whose tables have `count` shards (rounded up to a power of
    /// two) whatever their size (unless the regex budget makes them one),
    /// with hosts split by a hash seeded with
    /// `seed`: for tests that compare tables in shards with tables of one
    /// (the same seed, the same split).
    pub fn with_shards(count: usize, seed: u64) -> Self {
        Self {
            forced: Some(count.clamp(1, MAX_SHARDS).next_power_of_two()),
            seed: Some(seed),
            ..Self::default()
        }
    }

    /// How many Ingresses each shard of the last table was built from (an
    /// Ingress in several shards counts in each).
    pub fn shard_sizes(&self) -> impl Iterator<Item = usize> {
        self.parts.iter().map(|p| p.inputs.len())
    }

    /// How many of the last table's shards its build built (the others
    /// were kept from the build before), and how many it has.
    pub fn shards_built(&self) -> (usize, usize) {
        (self.built, self.parts.len())
    }

    /// How many shards a table of these Ingresses gets: about one per
    /// [`PER_SHARD`] Ingresses; fewer when the Ingresses every shard holds
    /// (host-less rules, no rules) are many (their copies in all shards
    /// may add up to a quarter of the table, counted in paths), and one
    /// when one of them asks for regex paths (`use-regex`,
    /// `rewrite-target`). The count a cache has is kept while this one is
    /// within a factor of two of it: a count that changes builds every
    /// shard again.
    fn count_for<I: std::borrow::Borrow<Ingress>>(&self, ours: &[(&I, Mode)]) -> usize {
        let n = ours.len();
        let count = match self.forced {
            _ if self.budget_bound => return 1,
            Some(count) => return count,
            None if n < SPLIT_FROM => return 1,
            None => (n / PER_SHARD).next_power_of_two().min(MAX_SHARDS),
        };
        let weight = |i: &Ingress| 1 + path_count(i);
        let (mut all, mut everywhere) = (0, 0);
        for (i, _) in ours {
            let i = (*i).borrow();
            all += weight(i);
            if in_every_shard(i) {
                // Each shard would compile the set of their regex paths
                // (each up to the host's budget).
                let asks = |key: &str| i.metadata.annotations.get(key);
                let regex = asks(USE_REGEX).is_some_and(|v| crate::annotations::boolean(v) == Ok(true));
                if regex || asks(REWRITE_TARGET).is_some() {
                    return 1;
                }
                everywhere += weight(i);
            }
        }
        let ideal = match all.checked_div(4 * everywhere) {
            // The largest power of two within that bound.
            Some(bound) => count.min(1 << bound.max(1).ilog2()),
            None => count,
        };
        let now = self.parts.len();
        match now > 1 && ideal > 1 && ideal <= 2 * now && now <= 2 * ideal {
            true => now,
            false => ideal,
        }
    }
}

impl RouteTable {
    fn of(shards: Vec<Arc<Shard>>, split: Split, config: &Config) -> Self {
        Self {
            ingress_count: shards.iter().map(|s| s.homed.len()).sum(),
            any_tls: shards.iter().any(|s| !s.tls.is_empty()),
            shards: shards.into(),
            split,
            policy: config.path_policy,
            default_certificate: config.default_certificate.clone(),
        }
    }

    /// The shard holding `key`.
    #[inline]
    pub(crate) fn shard(&self, key: HostKey<'_>) -> &Shard {
        &self.shards[self.split.of(key)]
    }

    /// Builds the table from every Ingress of ours among `ingresses`
    /// (chosen by `config.classes` with `classes`). An Ingress with an
    /// error is left out whole and reported; conflicts between Ingresses go
    /// to the oldest (creation time, then namespace/name) and the others
    /// are reported.
    pub fn build(ingresses: &[Ingress], classes: &[IngressClass], ports: &dyn PortResolver, config: &Config) -> Build {
        let ours: Vec<(&Ingress, Mode, bool)> = ours(ingresses, classes, config)
            .into_iter()
            .map(|(i, mode)| (i, mode, true))
            .collect();
        let (shard, problems) = RegexCache::during(&mut RegexCache::default(), || {
            Shard::build(&ours, ports, Owner::whole(), 0, None)
        });
        let mut all = class_problems(classes, config);
        merge_problems(std::iter::once(&problems[..]), &mut all);
        Build {
            table: Self::of(vec![Arc::new(shard)], Split::one(), config),
            problems: all,
        }
    }

    /// [`RouteTable::build`], keeping what `cache` has from the last build
    /// that still holds: a large table is built in shards, and a shard
    /// whose Ingresses (the same objects, by address) did not change, and
    /// whose build asked only about Services that did not either (by
    /// [`PortResolver::identity`] and [`PortResolver::unchanged_since`]),
    /// is taken as it was; a
    /// shard built again compiles only regexes the last build did not
    /// have. The table answers every request as the one
    /// [`RouteTable::build`] makes, with the same problems; in a table of
    /// several shards they come by object, and
    /// [`RouteTable::ingresses`] by shard.
    pub fn build_cached(
        ingresses: &[Arc<Ingress>],
        classes: &[IngressClass],
        ports: &dyn PortResolver,
        config: &Config,
        cache: &mut BuildCache,
    ) -> Build {
        let ours = ours(ingresses, classes, config);
        let seed = *cache.seed.get_or_insert_with(|| RandomState::default().hash_one(0u8));
        let split = Split {
            hasher: FixedState::with_seed(seed),
            count: cache.count_for(&ours),
        };
        // Shards may be kept if built with this split and a resolver that
        // can tell what changed.
        let identity = ports.identity();
        let reusable = identity.is_some() && cache.ports.is_some() && cache.parts.len() == split.count;
        let last = std::mem::replace(&mut cache.ports, identity);
        // Which shards each Ingress goes to.
        let mut feeds: Vec<Vec<(usize, bool)>> = vec![Vec::new(); split.count];
        let mut to = Vec::new();
        for (i, (ing, _)) in ours.iter().enumerate() {
            let home = shards_of(ing, &split, &mut to);
            for &s in &to {
                feeds[s].push((i, s == home));
            }
        }
        // The same Ingresses (the same objects: they are held), and no
        // Service it asked about changed.
        let unchanged =
            |part: &Part, feed: &[(usize, bool)]| {
                part.inputs.len() == feed.len()
                    && part.inputs.iter().zip(feed).all(|((ing, mode, home), &(i, h))| {
                        Arc::ptr_eq(ing, ours[i].0) && *mode == ours[i].1 && *home == h
                    })
                    && (identity == last
                        || last.is_some_and(|since| {
                            part.services
                                .iter()
                                .all(|(ns, name)| ports.unchanged_since(since, ns, name))
                        }))
            };
        let stale: Vec<usize> = (0..split.count)
            .filter(|&s| !reusable || !unchanged(&cache.parts[s], &feeds[s]))
            .collect();
        // The regexes of what is built again, for any shard to take.
        let mut pool = if reusable {
            RegexCache::pooled(stale.iter().map(|&s| std::mem::take(&mut cache.parts[s].regexes)))
        } else {
            RegexCache::pooled(cache.parts.drain(..).map(|p| p.regexes))
        };
        // The regexes of the shards kept, and then of those built before
        // (each Ingress's counted once): the table's budget bounds them all
        // while they are built.
        let mut regex_base: usize = (0..split.count)
            .filter(|s| stale.binary_search(s).is_err())
            .map(|s| cache.parts[s].shard.regex_used)
            .sum();
        for &s in &stale {
            let list: Vec<(&Ingress, Mode, bool)> = feeds[s]
                .iter()
                .map(|&(i, home)| (&**ours[i].0, ours[i].1, home))
                .collect();
            let owner = Owner {
                split: split.clone(),
                me: s,
            };
            let mut asked = Asked::default();
            let ((shard, problems), regexes) = RegexCache::during_part(&mut pool, || {
                Shard::build(&list, ports, owner, regex_base, Some(&mut asked))
            });
            regex_base += shard.regex_used;
            let part = Part {
                inputs: feeds[s]
                    .iter()
                    .map(|&(i, home)| (ours[i].0.clone(), ours[i].1, home))
                    .collect(),
                shard: Arc::new(shard),
                problems,
                regexes,
                services: asked.into_names(),
            };
            match cache.parts.get_mut(s) {
                Some(p) => *p = part,
                None => cache.parts.push(part),
            }
        }
        drop(pool);
        cache.built = stale.len();
        let regex_used: usize = cache.parts.iter().map(|p| p.shard.regex_used).sum();
        if split.count > 1 && (regex_used > TABLE_REGEX_BUDGET || cache.parts.iter().any(|p| p.shard.budget_hit)) {
            // The budget is filled oldest first across the whole table:
            // only a table of one shard keeps it.
            cache.budget_bound = true;
            return Self::build_cached(ingresses, classes, ports, config, cache);
        }
        if split.count == 1 && regex_used <= TABLE_REGEX_BUDGET / 2 {
            cache.budget_bound = false;
        }
        let mut problems = class_problems(classes, config);
        merge_problems(cache.parts.iter().map(|p| &p.problems[..]), &mut problems);
        Build {
            table: Self::of(cache.parts.iter().map(|p| p.shard.clone()).collect(), split, config),
            problems,
        }
    }

    /// The certificate Secret for a TLS handshake: the one an Ingress names
    /// for the SNI name exactly, else for a `*.` wildcard covering it
    /// (oldest Ingress first), else [`Config::default_certificate`].
    ///
    /// ```
    /// use lb_route::{Config, Ingress, RouteTable};
    ///
    /// let ing: Ingress = serde_json::from_str(r#"{"metadata": {"name": "web", "namespace": "shop"},
    ///   "spec": {"ingressClassName": "lb", "tls": [{"hosts": ["*.example.com"], "secretName": "wild"}],
    ///            "rules": [{"host": "www.example.com"}]}}"#).unwrap();
    /// let table = RouteTable::build(&[ing], &[], &(), &Config::default()).table;
    /// assert_eq!(table.certificate(Some("WWW.example.com")).unwrap().name, "wild");
    /// assert_eq!(table.certificate(Some("a.b.example.com")), None);
    /// ```
    pub fn certificate(&self, sni: Option<&str>) -> Option<&SecretRef> {
        let default = self.default_certificate.as_ref();
        let Some(name) = sni else { return default };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.claimed_certificate(&name).or(default)
    }

    /// The Secret an Ingress names for this canonical host, exactly or by
    /// a wildcard.
    fn claimed_certificate(&self, host: &str) -> Option<&SecretRef> {
        if !self.any_tls {
            return None;
        }
        self.shard(HostKey::Exact(host)).tls.exact(host).or_else(|| {
            let suffix = wildcard_suffix(host)?;
            self.shard(HostKey::Wildcard(suffix)).tls.wildcard(suffix)
        })
    }

    /// Whether some Ingress has a certificate for this canonical host.
    pub fn has_certificate(&self, host: &str) -> bool {
        self.claimed_certificate(host).is_some()
    }

    /// How request targets are made canonical for this table (the form
    /// [`Target::parse`](crate::Target::parse) gives, which lookups match).
    pub fn path_policy(&self) -> &PathPolicy {
        &self.policy
    }

    /// Number of Ingresses served.
    pub fn ingress_count(&self) -> usize {
        self.ingress_count
    }

    /// The Ingresses served (those left out for an error are not), each
    /// once.
    pub fn ingresses(&self) -> impl Iterator<Item = &IngressRef> {
        self.shards
            .iter()
            .flat_map(|s| s.homed.iter().map(|&i| &s.ingresses[i as usize]))
    }
}

/// Whether every shard holds an Ingress: one with host-less rules, or no
/// rules (a catch-all default backend).
fn in_every_shard(ing: &Ingress) -> bool {
    ing.spec.rules.is_empty()
        || ing
            .spec
            .rules
            .iter()
            .any(|r| r.host.as_deref().is_none_or(str::is_empty))
}

/// The shards an Ingress goes to, into `to` (sorted); returns the one it is
/// counted in. Read from the rules as written: a host that does not parse
/// makes the Ingress an error in any shard.
fn shards_of(ing: &Ingress, split: &Split, to: &mut Vec<usize>) -> usize {
    to.clear();
    if split.count == 1 {
        to.push(0);
        return 0;
    }
    fn key(host: &str) -> HostKey<'_> {
        match host.strip_prefix("*.") {
            Some(suffix) => HostKey::Wildcard(suffix),
            None => HostKey::Exact(host),
        }
    }
    if in_every_shard(ing) {
        to.extend(0..split.count);
        return 0;
    }
    let www = ing.metadata.annotations.contains_key(FROM_TO_WWW);
    for host in ing.spec.rules.iter().filter_map(|r| r.host.as_deref()) {
        let k = key(host);
        to.push(split.of(k));
        if www && let HostKey::Exact(name) = k {
            to.push(split.of(HostKey::Exact(&www_twin(name))));
        }
    }
    for host in ing.spec.tls.iter().flat_map(|t| &t.hosts) {
        to.push(split.of(key(host)));
    }
    to.sort_unstable();
    to.dedup();
    to[0]
}

/// The problems of the shards, each once (an Ingress in several shards is
/// reported by each, and a table may find one thing twice): in the order
/// found in a table of one shard, else by object, then in the order found.
fn merge_problems<'a>(parts: impl ExactSizeIterator<Item = &'a [Problem]>, into: &mut Vec<Problem>) {
    fn object(p: &Problem) -> (u8, &str, &str) {
        match &p.object {
            Subject::Ingress(i) => (0, i.namespace.as_str(), i.name.as_str()),
            Subject::IngressClass(c) => (1, "", c.as_str()),
        }
    }
    let sort = parts.len() > 1;
    let mut all: Vec<&Problem> = parts.flatten().collect();
    if sort {
        all.sort_by(|a, b| object(a).cmp(&object(b)));
    }
    let mut seen = HashSet::with_capacity(all.len());
    into.extend(all.into_iter().filter(|p| seen.insert(*p)).cloned());
}
