//! The route table: built once from Ingresses, looked up per request.
//!
//! Hosts: an exact-name map, a wildcard map keyed by the suffix after the
//! first label, and the bucket of host-less rules; a request picks one
//! bucket (exact, else wildcard, else host-less) and never falls back to a
//! less specific one when no path matches (reference/ingress.md §1.2).
//! Paths in a bucket: Exact paths by name; Prefix paths by their path with
//! the trailing `/` removed, looked up at each element boundary of the
//! request path, longest first; regex paths in a list ordered longest
//! first. The winner is the longest rule path, Exact before Prefix before
//! regex at equal length, then the oldest Ingress (§1.4).

use crate::pathregex::RegexCache;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Bound;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use regex::bytes::{RegexSet, RegexSetBuilder};

use crate::annotations::{self, RouteOptions};
use crate::bucket::{Hit, HostRoutes, HostTable, Key};
use crate::class::{ClassConfig, Mode};
use crate::host::RuleHost;
use crate::ingress::{Ingress, IngressBackend, IngressClass};
use crate::lookup::{Quirks, Routed};
use crate::pathregex::PathRegex;
use crate::problem::{Problem, Severity, Subject};
use crate::shard::{Owner, RouteTable};
use crate::target::PathPolicy;
use crate::tls::{SecretRef, TlsIndex};

/// `nginx.ingress.kubernetes.io/use-regex`.
pub const USE_REGEX: &str = "nginx.ingress.kubernetes.io/use-regex";

/// The regex budget of one host: the largest compiled size of the set of
/// its regex paths, filled oldest Ingress first. It bounds what one request
/// may cost on the host: 2,000 adversarial regex paths and 8 KiB paths cost
/// tens of microseconds per lookup within it (bench `regex_worst_case` in
/// `benches/benches/route.rs`), where unbounded they cost up to seconds.
/// The Ingress whose regex paths would pass it, and every newer one, is
/// reported, and its paths on that host are not served.
pub const HOST_REGEX_BUDGET: usize = 2 << 20;

/// The lazy DFA cache of one host's regex set (per thread that searches
/// it, allocated as used): large enough that sets within the budget are
/// matched by the DFA rather than by the slower NFA simulation.
const REGEX_SET_DFA_CACHE: usize = 4 << 20;

/// Heap bytes all the regexes of a table may hold once compiled (regex
/// paths, Exact and Prefix paths on ingress-nginx regex hosts, canary header
/// patterns), filled oldest Ingress first (Exact and Prefix paths that a
/// regex host turns into regexes come after all regex paths): it bounds what a table costs to
/// build and hold, however many regex Ingresses and hosts there are. An
/// Ingress whose regexes would pass it is reported and not used (its Exact
/// and Prefix paths on a regex host: those paths are not served there). A
/// typical regex path takes a few KiB; 2,000 paths that each compile to the
/// per-regex limit (256 KiB) would take 500 MiB without it.
pub const TABLE_REGEX_BUDGET: usize = 64 << 20;

/// Resolves a named Service port to its number (the caller knows the
/// Services; the table does not). Its answers about a Service must depend
/// on that Service alone (its namespace and name, there or not): a cached
/// build keeps the shards that asked only about Services that did not
/// change ([`PortResolver::unchanged_since`]).
pub trait PortResolver {
    /// The port number of `service`'s port named `port` in `namespace`.
    fn resolve(&self, namespace: &str, service: &str, port: &str) -> Option<u16>;

    /// Why a backend cannot be served, when the resolver knows the
    /// Services: `service` does not exist in `namespace`, or has no such
    /// port (e.g. `Service shop/web has no port 81`). Reported as a
    /// warning on the Ingress's field (a proxy answers 503 there). `None`:
    /// it can, or the resolver does not know (the default).
    fn missing(&self, _namespace: &str, _service: &str, _port: &BackendPort) -> Option<String> {
        None
    }

    /// What this resolver answers, as a number: two resolvers with the
    /// same `Some` identity answer every question alike, so a cached build
    /// ([`RouteTable::build_cached`]) may keep what it built with the last
    /// one. Identities must not repeat for different answers over the life
    /// of a [`crate::BuildCache`] (pass one cache one kind of resolver).
    /// `None` (the default): unknown, so everything is built again.
    fn identity(&self) -> Option<u64> {
        None
    }

    /// Whether `service` in `namespace` (there or not) answers as it did
    /// for the resolver whose identity was `since`: a cached build keeps
    /// the shards that asked only about such Services. `false` (the
    /// default): unknown.
    fn unchanged_since(&self, _since: u64, _namespace: &str, _service: &str) -> bool {
        false
    }
}

/// The Services a build asked a [`PortResolver`] about, by namespace and
/// name, each once.
#[derive(Default)]
pub(crate) struct Asked {
    hasher: RandomState,
    names: HashTable<(Box<str>, Box<str>)>,
}

impl Asked {
    /// Notes a question about `service` in `namespace`.
    fn note(&mut self, namespace: &str, service: &str) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one((namespace, service));
        if self
            .names
            .find(hash, |(n, s)| **n == *namespace && **s == *service)
            .is_none()
        {
            self.names
                .insert_unique(hash, (namespace.into(), service.into()), |(n, s)| {
                    hasher.hash_one((&**n, &**s))
                });
        }
    }

    /// The Services asked about.
    pub(crate) fn into_names(self) -> Vec<(Box<str>, Box<str>)> {
        self.names.into_iter().collect()
    }
}

/// No Services known: every named port stays unresolved.
impl PortResolver for () {
    fn resolve(&self, _: &str, _: &str, _: &str) -> Option<u16> {
        None
    }

    fn identity(&self) -> Option<u64> {
        Some(0)
    }
}

/// A resolver from a closure.
impl<F: Fn(&str, &str, &str) -> Option<u16>> PortResolver for F {
    fn resolve(&self, namespace: &str, service: &str, port: &str) -> Option<u16> {
        self(namespace, service, port)
    }
}

/// How a table is built and requests are read: `Config::default()`, then
/// the `with_*` methods.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Which Ingresses are ours.
    pub classes: ClassConfig,
    /// How request paths are made canonical.
    pub path_policy: PathPolicy,
    /// The certificate for handshakes without SNI or with a name no
    /// Ingress has one for.
    pub default_certificate: Option<SecretRef>,
}

impl Config {
    /// With these class rules.
    pub fn with_classes(mut self, classes: ClassConfig) -> Self {
        self.classes = classes;
        self
    }

    /// With this path policy.
    pub fn with_path_policy(mut self, policy: PathPolicy) -> Self {
        self.path_policy = policy;
        self
    }

    /// With this default certificate.
    pub fn with_default_certificate(mut self, secret: SecretRef) -> Self {
        self.default_certificate = Some(secret);
        self
    }
}

/// How a rule path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// A regular expression (`use-regex`), anchored at the start,
    /// case-insensitive, as ingress-nginx evaluates it.
    Regex,
    /// Element-wise prefix.
    Prefix,
    /// Byte-equal.
    Exact,
}

/// The Ingress a decision came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IngressRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for IngressRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port as the backend names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendPort {
    /// A number, or a name resolved to one.
    Number(u16),
    /// A name the [`PortResolver`] did not know (requests get 503).
    Unresolved(String),
}

/// A Service backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The Service, in the Ingress's namespace.
    pub service: String,
    /// Its port.
    pub port: BackendPort,
}

/// One routed path (or default backend) of one Ingress.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) ingress: u32,
    /// The rule path as written; empty for a default backend.
    pub(crate) path: Box<str>,
    pub(crate) kind: PathKind,
    pub(crate) backend: Backend,
    /// Compiled for regex paths (and, in an ingress-nginx regex host, for
    /// every path).
    pub(crate) regex: Option<Box<PathRegex>>,
    /// The Ingress's options ask for nothing but the https redirect (so a
    /// lookup need not read them).
    pub(crate) plain: bool,
    /// The Ingress's `ssl-redirect`.
    pub(crate) ssl_redirect: bool,
    /// The canary alternative of this route (a route of a canary Ingress
    /// for the same host and path), if any.
    pub(crate) canary: Option<u32>,
    /// Its Ingress's option set.
    pub(crate) options: u32,
}

/// What a host has beside its Exact and Prefix routes.
#[derive(Debug, Default)]
pub(crate) struct HostExtra {
    /// Regex routes, if any.
    pub(crate) regex: Option<RegexRoutes>,
    /// Set when the host is matched the ingress-nginx way.
    pub(crate) compat: Option<CompatHost>,
}

/// How a host in [`Mode::IngressNginx`] departs from the spec.
#[derive(Debug)]
pub(crate) struct CompatHost {
    /// When some Ingress asks for regex paths or a rewrite on the host:
    /// every path of the host as a case-insensitive prefix regex, longest
    /// first (then reverse-lexicographic, then oldest); the first match
    /// wins.
    pub(crate) first_match: Option<RegexRoutes>,
    /// Request paths answered with a 301 adding a trailing `/` (a path
    /// `x/` exists, `x` does not), sorted.
    pub(crate) slash: Box<[Box<str>]>,
    /// The Ingress whose annotations apply to requests no path matches
    /// (the first Ingress that named the host), when they differ from
    /// those of the default backend that serves them.
    pub(crate) root: Option<u32>,
}

/// The regex routes of a host.
#[derive(Debug)]
pub(crate) struct RegexRoutes {
    /// Longest path first, then oldest.
    routes: Vec<u32>,
    /// The same regexes as one set, matched in one pass over the path.
    set: Option<RegexSet>,
}

impl RegexRoutes {
    /// Orders `routes` as given and compiles their set within
    /// [`HOST_REGEX_BUDGET`], filled oldest Ingress first. Returns the
    /// Ingresses left out (when the set does not fit, the first Ingress
    /// with whose paths it stops fitting, and every newer one) and their
    /// routes.
    fn new(mut routes: Vec<u32>, table: &[Route]) -> (Self, (Vec<u32>, Vec<u32>)) {
        let regex = |r: &u32| table[*r as usize].regex.as_deref();
        let ingress = |r: &u32| table[*r as usize].ingress;
        // The set's indices are the routes': every route needs a regex.
        routes.retain(|r| regex(r).is_some());
        // The set of the routes of Ingresses up to `upto`, if it fits.
        let build = |routes: &[u32], upto: u32| {
            let patterns = routes.iter().filter(|r| ingress(r) <= upto).filter_map(regex);
            RegexSetBuilder::new(patterns.map(PathRegex::pattern))
                .unicode(false)
                .case_insensitive(true)
                .size_limit(HOST_REGEX_BUDGET)
                .dfa_size_limit(REGEX_SET_DFA_CACHE)
                .build()
                .ok()
        };
        if routes.len() <= 1 {
            return (Self { routes, set: None }, Default::default());
        }
        if let Some(set) = build(&routes, u32::MAX) {
            return (Self { routes, set: Some(set) }, Default::default());
        }
        let mut ids: Vec<u32> = routes.iter().map(ingress).collect();
        ids.sort_unstable();
        ids.dedup();
        // The smallest k such that the routes of ids[..=k] do not fit.
        let (mut lo, mut hi) = (0, ids.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if build(&routes, ids[mid]).is_some() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let left_out = ids.split_off(lo);
        let (kept, dropped): (Vec<u32>, Vec<u32>) = routes.into_iter().partition(|r| ingress(r) < left_out[0]);
        let set = if kept.len() > 1 { build(&kept, u32::MAX) } else { None };
        (Self { routes: kept, set }, (left_out, dropped))
    }

    /// The first route whose regex matches `path`, trying them in order
    /// until `stop` says a route cannot win anyway.
    pub(crate) fn first(&self, table: &[Route], path: &str, stop: impl Fn(u32) -> bool) -> Option<u32> {
        let regex = |r: u32| table[r as usize].regex.as_deref();
        match &self.set {
            Some(set) => set
                .matches(path.as_bytes())
                .iter()
                .map(|i| self.routes[i])
                .find(|&r| regex(r).is_some_and(|x| !x.excludes(path))),
            None => self
                .routes
                .iter()
                .copied()
                .find(|&r| stop(r) || regex(r).is_some_and(|x| x.is_match(path))),
        }
    }
}

/// A host bucket while the table is built.
#[derive(Debug)]
struct Staging {
    /// Exact routes.
    exact: Vec<u32>,
    /// Prefix routes, before the best per key is chosen.
    prefix: Vec<u32>,
    regex: Vec<u32>,
    default: Option<u32>,
    /// The host, for reports.
    host: RuleHost,
    /// The mode of the first Ingress naming the host (which the host
    /// follows), and that Ingress.
    mode: Mode,
    first: Option<u32>,
    /// In [`Mode::IngressNginx`]: the first Ingress asking for regex paths
    /// or a rewrite on the host.
    regex_by: Option<u32>,
}

impl Staging {
    fn new(host: RuleHost) -> Self {
        Self {
            exact: Vec::new(),
            prefix: Vec::new(),
            regex: Vec::new(),
            default: None,
            host,
            mode: Mode::Strict,
            first: None,
            regex_by: None,
        }
    }
}

/// The routes of the hosts one part of a table holds (see
/// [`crate::shard`]): everything a request for those hosts needs, laid out
/// for lookup.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub(crate) ingresses: Vec<IngressRef>,
    /// The Ingresses counted as this shard's (an Ingress is in every shard
    /// that holds one of its hosts; it is counted in the first).
    pub(crate) homed: Vec<u32>,
    /// The distinct option sets (parsed annotations): Ingresses with the
    /// same annotations share one, so a lookup mostly finds its options in
    /// cache.
    pub(crate) option_sets: Vec<RouteOptions>,
    /// The option set of each Ingress, by the same index.
    pub(crate) options_of: Vec<u32>,
    pub(crate) routes: Vec<Route>,
    /// Host buckets by exact name, by wildcard suffix, and the host-less one;
    /// each holds its routes inline (one less pointer to follow per lookup).
    pub(crate) exact_hosts: HostTable,
    pub(crate) wildcard_hosts: HostTable,
    pub(crate) any_host: Option<HostRoutes>,
    /// The hosts' regex and ingress-nginx data, by [`HostRoutes::extra`].
    pub(crate) extras: Vec<HostExtra>,
    /// The `defaultBackend` of the oldest Ingress without rules.
    pub(crate) catch_all: Option<u32>,
    pub(crate) tls: TlsIndex,
    /// `from-to-www-redirect`: a host no rule names → (the host to
    /// redirect to, status).
    pub(crate) www: HashMap<Box<str>, (Box<str>, http::StatusCode), RandomState>,
    /// Heap bytes of the regexes kept, on this shard's account: of the
    /// Ingresses it counts and of its hosts' paths (see
    /// [`TABLE_REGEX_BUDGET`]).
    pub(crate) regex_used: usize,
    /// Some regex was left out for the table's regex budget: the budget,
    /// filled oldest Ingress first across the whole table, is only kept
    /// by a table of one shard.
    pub(crate) budget_hit: bool,
}

/// The result of [`RouteTable::build`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Build {
    /// The table of every valid Ingress of ours.
    pub table: RouteTable,
    /// What was wrong, per Ingress and field; an Ingress with an error is
    /// left out whole, the others serve.
    pub problems: Vec<Problem>,
}

/// The order path keys are sorted and searched in: by length first, which
/// settles most comparisons without reading the strings.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Creation time, then namespace/name: the order conflicts are settled in.
fn age_key(i: &Ingress) -> (bool, Option<&str>, &str, &str) {
    let ts = i.metadata.creation_timestamp.as_deref();
    (ts.is_none(), ts, i.metadata.namespace(), &i.metadata.name)
}

/// The API server's checks on Exact and Prefix paths.
fn check_spec_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path (start with '/')"));
    }
    // Most paths are plain: ASCII letters, digits and punctuation, no '%',
    // and no '/' followed by '/' or '.'. One pass tells.
    let b = path.as_bytes();
    let odd = |c: u8| !(b'!'..=b'~').contains(&c) || matches!(c, b'%' | b'?' | b'#');
    if !b.iter().any(|&c| odd(c)) && !b.windows(2).any(|w| w[0] == b'/' && matches!(w[1], b'/' | b'.')) {
        return Ok(());
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Err(format!("{path:?} must not contain {bad:?}"));
        }
    }
    if path.ends_with("/..") || path.ends_with("/.") {
        return Err(format!("{path:?} must not end with '/..' or '/.'"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_control() || *c == ' ' || *c == '?' || *c == '#')
    {
        return Err(format!("{path:?} must not contain {c:?}"));
    }
    Ok(())
}

struct Builder<'a> {
    table: Shard,
    /// Which hosts this shard holds.
    owner: Owner,
    problems: Vec<Problem>,
    ports: &'a dyn PortResolver,
    /// The Services asked about, when the caller keeps them.
    asked: Option<std::cell::RefCell<Asked>>,
    /// Option sets by a hash of the annotations they come from.
    sets_by_annotations: HashMap<u64, Vec<u32>>,
    /// (bucket, route) of every Exact, Prefix and regex route, by bucket,
    /// kind and path: conflicts are found without a scan.
    claimed: HashTable<(u32, u32)>,
    hasher: RandomState,
    /// The host buckets while building, numbered by the maps below.
    staging: Vec<Staging>,
    exact_ids: HashMap<Box<str>, u32, RandomState>,
    wildcard_ids: HashMap<Box<str>, u32, RandomState>,
    any_id: Option<u32>,
    /// Heap bytes of the regexes compiled so far (see
    /// [`TABLE_REGEX_BUDGET`]).
    regex_memory: usize,
    /// Heap bytes of the regexes of the table's other shards (built
    /// before this one).
    regex_base: usize,
    /// Heap bytes of each used Ingress's own regexes, by Ingress index.
    regex_spent: Vec<usize>,
}

/// What one valid path of an Ingress compiles to, before insertion.
struct PathSpec<'i> {
    /// Index into the Ingress's rule hosts.
    host: usize,
    path: &'i str,
    kind: PathKind,
    backend: Backend,
    regex: Option<PathRegex>,
    /// `spec.rules[rule].http.paths[index]`, formatted only when reported.
    rule: usize,
    index: usize,
}

/// What a valid Ingress compiles to.
struct Compiled<'i> {
    options: RouteOptions,
    /// Heap bytes of its regexes.
    regex_memory: usize,
    /// `use-regex`, or a rewrite to somewhere else than a path: what turns
    /// a whole host into regex paths in ingress-nginx.
    regexy: bool,
    /// Its rule hosts, each once.
    hosts: Vec<RuleHost>,
    paths: Vec<PathSpec<'i>>,
    default: Option<Backend>,
    /// TLS hosts and the Secret named for them.
    tls: Vec<(RuleHost, &'i str)>,
}

impl Builder<'_> {
    /// [`PortResolver::resolve`], noted in [`Builder::asked`].
    fn resolve(&self, namespace: &str, service: &str, port: &str) -> Option<u16> {
        if let Some(asked) = &self.asked {
            asked.borrow_mut().note(namespace, service);
        }
        self.ports.resolve(namespace, service, port)
    }

    /// [`PortResolver::missing`], noted in [`Builder::asked`].
    fn missing(&self, namespace: &str, service: &str, port: &BackendPort) -> Option<String> {
        if let Some(asked) = &self.asked {
            asked.borrow_mut().note(namespace, service);
        }
        self.ports.missing(namespace, service, port)
    }

    fn host_bucket(&mut self, host: &RuleHost) -> u32 {
        let next = self.staging.len() as u32;
        let id = |ids: &mut HashMap<Box<str>, u32, RandomState>, name: &str| match ids.get(name) {
            Some(&id) => id,
            None => *ids.entry(name.into()).or_insert(next),
        };
        let id = match host {
            RuleHost::Any => *self.any_id.get_or_insert(next),
            RuleHost::Exact(h) => id(&mut self.exact_ids, h),
            RuleHost::Wildcard(s) => id(&mut self.wildcard_ids, s),
        };
        if id == next {
            self.staging.push(Staging::new(host.clone()));
        }
        id
    }

    /// The Service backend of `b`; `field` names it in errors.
    fn backend(
        &self,
        ns: &str,
        b: &IngressBackend,
        field: impl Fn() -> String,
    ) -> Result<Option<Backend>, (String, String)> {
        let field = &field;
        match (&b.service, &b.resource) {
            (Some(_), Some(_)) => Err((field(), "cannot set both resource and service backends".into())),
            (None, None) => Err((field(), "a backend needs a service (name and port)".into())),
            (None, Some(_)) => Ok(None),
            (Some(s), None) => {
                if s.name.is_empty() {
                    return Err((format!("{}.service.name", field()), "must not be empty".into()));
                }
                let port = match (&s.port.name, s.port.number) {
                    (Some(_), Some(_)) => {
                        return Err((
                            format!("{}.service.port", field()),
                            "set either name or number, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err((
                            format!("{}.service.port", field()),
                            "port name or number is required".into(),
                        ));
                    }
                    (None, Some(n)) => match u16::try_from(n) {
                        Ok(n) if n > 0 => BackendPort::Number(n),
                        _ => {
                            return Err((
                                format!("{}.service.port.number", field()),
                                format!("{n} is not a port (1-65535)"),
                            ));
                        }
                    },
                    (Some(name), None) => match self.resolve(ns, &s.name, name) {
                        Some(n) => BackendPort::Number(n),
                        None => BackendPort::Unresolved(name.clone()),
                    },
                };
                Ok(Some(Backend {
                    service: s.name.clone(),
                    port,
                }))
            }
        }
    }

    /// Checks a whole Ingress; returns its paths, its default backend, or
    /// the errors that disable it.
    fn compile<'i>(&mut self, ing: &'i Ingress) -> Result<Compiled<'i>, Vec<(String, String)>> {
        let ns = ing.metadata.namespace();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let parsed = annotations::parse(&ing.metadata.annotations);
        let field = |key: &str| format!("metadata.annotations[{key:?}]");
        errors.extend(parsed.errors.iter().map(|(k, m)| (field(k), m.clone())));
        warnings.extend(parsed.warnings.iter().map(|(k, m)| (field(k), m.clone())));
        let options = parsed.options;
        // Heap bytes of this Ingress's regexes, charged to the table's
        // budget if the Ingress is used.
        let mut spent = 0;
        // Once past the budget, the Ingress is not used: reported once.
        let mut over_budget = false;
        if let Some(p) = options.canary.as_ref().and_then(|c| c.by_header_pattern.as_ref()) {
            spent = p.memory_usage();
            if self.regex_taken() + spent > TABLE_REGEX_BUDGET {
                over_budget = true;
                errors.push((
                    field(&format!("{}canary-by-header-pattern", annotations::PREFIX)),
                    over_table_budget(spent, self.regex_taken(), "this Ingress is not used"),
                ));
            }
        }
        // rewrite-target implies regex paths, as in ingress-nginx (for this
        // Ingress's ImplementationSpecific paths only, in strict mode).
        let use_regex = options.use_regex || options.rewrite_target.is_some();
        if ing.spec.rules.is_empty() && ing.spec.default_backend.is_none() {
            errors.push((
                "spec".into(),
                "either spec.rules or spec.defaultBackend must be set".into(),
            ));
        }
        // A backend the resolver knows cannot be served: said, served
        // anyway (the Service may come).
        // (The field is formatted only when said.)
        let missing = |field: &dyn Fn() -> String, b: &Backend, warnings: &mut Vec<(String, String)>| {
            if let Some(why) = self.missing(ns, &b.service, &b.port) {
                warnings.push((
                    format!("{}.service", field()),
                    format!("{why}: requests routed there get 503 until it does"),
                ));
            }
        };
        let default = match &ing.spec.default_backend {
            Some(b) => match self.backend(ns, b, || "spec.defaultBackend".into()) {
                Ok(Some(b)) => {
                    missing(&|| "spec.defaultBackend".into(), &b, &mut warnings);
                    Some(b)
                }
                Ok(None) => {
                    warnings.push((
                        "spec.defaultBackend.resource".into(),
                        "resource backends are not routable by a proxy; ignored".into(),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        let mut specs = Vec::new();
        let mut hosts: Vec<RuleHost> = Vec::new();
        for (r, rule) in ing.spec.rules.iter().enumerate() {
            let host = match RuleHost::parse(rule.host.as_deref()) {
                Ok(h) => match hosts.iter().position(|x| *x == h) {
                    Some(i) => i,
                    None => {
                        hosts.push(h);
                        hosts.len() - 1
                    }
                },
                Err(e) => {
                    errors.push((format!("spec.rules[{r}].host"), e.to_string()));
                    continue;
                }
            };
            let Some(http) = &rule.http else { continue };
            for (p, path) in http.paths.iter().enumerate() {
                let field = || format!("spec.rules[{r}].http.paths[{p}]");
                let kind = match path.path_type.as_deref() {
                    Some("Exact") => PathKind::Exact,
                    Some("Prefix") => PathKind::Prefix,
                    Some("ImplementationSpecific") if use_regex => PathKind::Regex,
                    Some("ImplementationSpecific") => PathKind::Prefix,
                    Some(other) => {
                        errors.push((
                            format!("{}.pathType", field()),
                            format!("{other:?} is not one of \"Exact\", \"Prefix\", \"ImplementationSpecific\""),
                        ));
                        continue;
                    }
                    None => {
                        errors.push((
                            format!("{}.pathType", field()),
                            "required: \"Exact\", \"Prefix\" or \"ImplementationSpecific\"".into(),
                        ));
                        continue;
                    }
                };
                let implementation_specific = path.path_type.as_deref() == Some("ImplementationSpecific");
                let text = match path.path.as_deref() {
                    Some("") | None if implementation_specific => "/",
                    None => {
                        errors.push((
                            format!("{}.path", field()),
                            "required for Exact and Prefix paths".into(),
                        ));
                        continue;
                    }
                    Some(t) => t,
                };
                if !text.is_ascii() {
                    // Requests are matched in their canonical, percent-
                    // encoded form (non-ASCII bytes as %XX).
                    let encoded: String = text
                        .chars()
                        .map(|c| match c.is_ascii() {
                            true => c.to_string(),
                            false => c.to_string().bytes().map(|b| format!("%{b:02X}")).collect(),
                        })
                        .collect();
                    warnings.push((
                        format!("{}.path", field()),
                        format!(
                            "holds non-ASCII characters, which a request path never does (requests are matched \
                             percent-encoded): write {encoded:?}"
                        ),
                    ));
                }
                let mut regex = None;
                let checked = match kind {
                    PathKind::Regex if !text.starts_with('/') => Err(format!("{text:?} must start with '/'")),
                    // Already reported: the Ingress is not used.
                    PathKind::Regex if over_budget => continue,
                    PathKind::Regex => match self.compile_regex(text, ("regex", PathRegex::compile), &mut spent) {
                        Ok(re) => {
                            regex = Some(re);
                            Ok(())
                        }
                        Err(Refused::Invalid(e)) => Err(e),
                        Err(Refused::OverBudget(need)) => {
                            over_budget = true;
                            Err(over_table_budget(need, self.regex_taken(), "this Ingress is not used"))
                        }
                    },
                    _ if implementation_specific => {
                        // Taken as Prefix: it must be a plain path then.
                        check_spec_path(text)
                            .map_err(|e| format!("{e} (ImplementationSpecific is matched as Prefix without use-regex)"))
                    }
                    _ => check_spec_path(text),
                };
                if let Err(e) = checked {
                    errors.push((format!("{}.path", field()), e));
                    continue;
                }
                match self.backend(ns, &path.backend, || format!("{}.backend", field())) {
                    Ok(Some(backend)) => {
                        missing(&|| format!("{}.backend", field()), &backend, &mut warnings);
                        specs.push(PathSpec {
                            host,
                            path: text,
                            kind,
                            backend,
                            regex,
                            rule: r,
                            index: p,
                        });
                    }
                    Ok(None) => warnings.push((
                        format!("{}.backend.resource", field()),
                        "resource backends are not routable by a proxy; path ignored".into(),
                    )),
                    Err(e) => errors.push(e),
                }
            }
        }
        for (field, message) in warnings {
            self.problems.push(Problem {
                severity: Severity::Warning,
                object: Subject::Ingress(IngressRef {
                    namespace: ns.to_owned(),
                    name: ing.metadata.name.clone(),
                }),
                field: crate::problem::field(field),
                message,
            });
        }
        let mut tls = Vec::new();
        for (t, entry) in ing.spec.tls.iter().enumerate() {
            let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                // SNI routing only: the default certificate serves.
                continue;
            };
            if entry.hosts.is_empty() {
                // No hosts: the Ingress's own rule hosts.
                tls.extend(
                    hosts
                        .iter()
                        .filter(|h| **h != RuleHost::Any)
                        .map(|h| (h.clone(), secret)),
                );
            }
            for (j, h) in entry.hosts.iter().enumerate() {
                match RuleHost::parse(Some(h)) {
                    Ok(RuleHost::Any) => {
                        errors.push((format!("spec.tls[{t}].hosts[{j}]"), "must not be empty".into()));
                    }
                    Ok(rh) => tls.push((rh, secret)),
                    Err(e) => errors.push((format!("spec.tls[{t}].hosts[{j}]"), e.to_string())),
                }
            }
        }
        if over_budget {
            self.table.budget_hit = true;
        }
        if errors.is_empty() {
            self.regex_memory += spent;
            Ok(Compiled {
                regex_memory: spent,
                regexy: use_regex
                    && (options.use_regex || specs.iter().any(|s| Some(s.path) != options.rewrite_target.as_deref())),
                options,
                hosts,
                paths: specs,
                default,
                tls,
            })
        } else {
            Err(errors)
        }
    }

    /// Compiles a regex if the table's budget (of which `used` is taken)
    /// has room for it, adding its heap bytes to `spent`.
    fn compile_regex(
        &self,
        path: &str,
        compile: (&'static str, impl Fn(&str) -> Result<PathRegex, String>),
        spent: &mut usize,
    ) -> Result<PathRegex, Refused> {
        within_budget(self.regex_taken(), path, compile, spent)
    }

    /// Heap bytes of the regexes the table holds so far: the other
    /// shards', and this one's Ingresses'.
    fn regex_taken(&self) -> usize {
        self.regex_base + self.regex_memory
    }

    /// Adds an Ingress: its hosts this shard holds, and its options;
    /// `home`: it is counted as this shard's.
    fn add(&mut self, ing: &Ingress, mode: Mode, home: bool) {
        let ns = ing.metadata.namespace();
        let object = || {
            Subject::Ingress(IngressRef {
                namespace: ns.to_owned(),
                name: ing.metadata.name.clone(),
            })
        };
        let Compiled {
            regex_memory,
            regexy,
            options,
            hosts,
            paths: specs,
            default,
            tls,
        } = match self.compile(ing) {
            Ok(c) => {
                RegexCache::settle(true);
                c
            }
            Err(errors) => {
                RegexCache::settle(false);
                for (field, message) in errors {
                    self.problems.push(Problem {
                        severity: Severity::Error,
                        object: object(),
                        field: crate::problem::field(field),
                        message,
                    });
                }
                return;
            }
        };
        let index = self.table.ingresses.len() as u32;
        self.table.ingresses.push(IngressRef {
            namespace: ns.to_owned(),
            name: ing.metadata.name.clone(),
        });
        if home {
            self.table.homed.push(index);
        }
        self.regex_spent.push(regex_memory);
        let set = self.option_set(&ing.metadata.annotations, options);
        self.table.options_of.push(set);
        for (host, secret) in tls {
            if !self.owner.owns(&host) {
                continue;
            }
            let secret = SecretRef {
                namespace: ns.to_owned(),
                name: secret.to_owned(),
            };
            if let Some(by) = self.table.tls.claim(&host, &secret, index) {
                let by = self.table.ingresses[by as usize].clone();
                self.problems.push(Problem {
                    severity: Severity::Warning,
                    object: object(),
                    field: crate::problem::field("spec.tls"),
                    message: format!(
                        "host {host} already has a certificate from the older Ingress {by}; secret {secret} is not used for it"
                    ),
                });
            }
        }
        // Every host a rule names gets its bucket, paths or not: the host
        // is claimed (ingress-nginx renders a server for it).
        let canary = self.table.options(index).canary.is_some();
        if canary {
            // A canary claims nothing: its paths attach to other Ingresses'
            // routes; its other settings are not used (as in ingress-nginx).
            self.add_canary(index, &hosts, specs, object);
            return;
        }
        // The hosts of other shards get no bucket here.
        let buckets: Vec<Option<usize>> = hosts
            .iter()
            .map(|h| self.owner.owns(h).then(|| self.host_bucket(h) as usize))
            .collect();
        for (h, bucket) in buckets.iter().enumerate() {
            let Some(bucket) = *bucket else { continue };
            let st = &mut self.staging[bucket];
            let first = *st.first.get_or_insert(index);
            if first == index {
                st.mode = mode;
            } else if st.mode != mode {
                let (host, theirs) = (st.host.to_string(), st.mode);
                let by = &self.table.ingresses[first as usize];
                self.problems.push(Problem {
                    severity: Severity::Warning,
                    object: object(),
                    field: crate::problem::field("spec.ingressClassName"),
                    message: format!(
                        "host {host} is matched in {} mode, as the class of the older Ingress {by} asks; not in {} mode",
                        theirs.as_str(),
                        mode.as_str()
                    ),
                });
            }
            let st = &mut self.staging[bucket];
            // ingress-nginx turns a server to regex when one of its
            // locations asks for it.
            if st.mode == Mode::IngressNginx && regexy && specs.iter().any(|s| s.host == h) {
                st.regex_by.get_or_insert(index);
            }
        }
        if self.table.options(index).from_to_www {
            let code = self.table.options(index).www_redirect_code;
            for h in &hosts {
                if let RuleHost::Exact(name) = h {
                    let other = www_twin(name);
                    if !self.owner.owns_exact(&other) {
                        continue;
                    }
                    self.table
                        .www
                        .entry(other.into())
                        .or_insert((name.as_str().into(), code));
                }
            }
        }
        if let Some(backend) = default {
            let route = self.push_route(index, "", PathKind::Prefix, backend, None);
            if ing.spec.rules.is_empty() {
                match self.table.catch_all {
                    None => self.table.catch_all = Some(route),
                    Some(first) => {
                        self.conflict(object(), "spec.defaultBackend", "the catch-all default backend", first)
                    }
                }
            } else {
                for (h, bucket) in hosts.iter().zip(&buckets) {
                    let Some(bucket) = *bucket else { continue };
                    match self.staging[bucket].default {
                        None => self.staging[bucket].default = Some(route),
                        Some(first) => self.conflict(
                            object(),
                            "spec.defaultBackend",
                            &format!("the default backend of host {h}"),
                            first,
                        ),
                    }
                }
            }
        }
        for spec in specs {
            let Some(bucket) = buckets[spec.host] else { continue };
            let taken = self.existing(bucket, &spec);
            let field = || format!("spec.rules[{}].http.paths[{}]", spec.rule, spec.index);
            if let Some(first) = taken {
                let what = format!("host {} path {:?} ({:?})", hosts[spec.host], spec.path, spec.kind);
                self.conflict(object(), &field(), &what, first);
                continue;
            }
            let route = self.push_route(index, spec.path, spec.kind, spec.backend, spec.regex);
            self.claim(bucket, route);
            let st = &mut self.staging[bucket];
            match spec.kind {
                PathKind::Exact => st.exact.push(route),
                PathKind::Prefix => st.prefix.push(route),
                PathKind::Regex => st.regex.push(route),
            }
        }
    }

    /// The route an earlier Ingress has for this spec's path and kind.
    fn existing(&self, bucket: usize, spec: &PathSpec<'_>) -> Option<u32> {
        let routes = &self.table.routes;
        let hash = claim_hash(&self.hasher, bucket as u32, spec.kind, spec.path);
        let found = self.claimed.find(hash, |&(b, r)| {
            let route = &routes[r as usize];
            b as usize == bucket && route.kind == spec.kind && *route.path == *spec.path
        });
        found.map(|&(_, r)| r)
    }

    /// Records that `route` serves its path and kind in `bucket`.
    fn claim(&mut self, bucket: usize, route: u32) {
        let (routes, hasher) = (&self.table.routes, &self.hasher);
        let key = |&(b, r): &(u32, u32)| claim_hash(hasher, b, routes[r as usize].kind, &routes[r as usize].path);
        let entry = (bucket as u32, route);
        self.claimed.insert_unique(key(&entry), entry, key);
    }

    /// Attaches a canary Ingress's paths to the routes serving the same
    /// host, path and type.
    fn add_canary(&mut self, index: u32, hosts: &[RuleHost], specs: Vec<PathSpec<'_>>, object: impl Fn() -> Subject) {
        for spec in specs {
            let host = &hosts[spec.host];
            if !self.owner.owns(host) {
                continue;
            }
            let bucket = match host {
                RuleHost::Any => self.any_id,
                RuleHost::Exact(h) => self.exact_ids.get(h.as_str()).copied(),
                RuleHost::Wildcard(w) => self.wildcard_ids.get(w.as_str()).copied(),
            };
            let what = format!("host {host} path {:?} ({:?})", spec.path, spec.kind);
            let field = format!("spec.rules[{}].http.paths[{}]", spec.rule, spec.index);
            match bucket.and_then(|b| self.existing(b as usize, &spec)) {
                Some(main) if self.table.routes[main as usize].canary.is_none() => {
                    let route = self.push_route(index, spec.path, spec.kind, spec.backend, spec.regex);
                    let main = &mut self.table.routes[main as usize];
                    main.canary = Some(route);
                    main.plain = false;
                }
                // (Left to the canary that has it.)
                Some(main) => {
                    let taken = self.table.routes[main as usize].canary.unwrap_or(main);
                    self.conflict(object(), &field, &format!("the canary of {what}"), taken)
                }
                None => self.problems.push(Problem {
                    severity: Severity::Warning,
                    object: object(),
                    field: crate::problem::field(field),
                    message: format!("canary for {what}, but no other Ingress serves it; not used"),
                }),
            }
        }
    }

    /// The option set of an Ingress with these annotations and options:
    /// an equal one parsed before, else a new one.
    fn option_set(&mut self, annotations: &BTreeMap<String, String>, options: RouteOptions) -> u32 {
        let ours = annotations
            .range::<str, _>((Bound::Included(annotations::PREFIX), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(annotations::PREFIX));
        let mut key = self.hasher.build_hasher();
        for pair in ours {
            pair.hash(&mut key);
        }
        let key = key.finish();
        let sets = &mut self.table.option_sets;
        let ids = self.sets_by_annotations.entry(key).or_default();
        if let Some(&id) = ids.iter().find(|&&id| sets[id as usize] == options) {
            return id;
        }
        sets.push(options);
        ids.push(sets.len() as u32 - 1);
        sets.len() as u32 - 1
    }

    fn push_route(
        &mut self,
        ingress: u32,
        path: &str,
        kind: PathKind,
        backend: Backend,
        regex: Option<PathRegex>,
    ) -> u32 {
        self.table.routes.push(Route {
            ingress,
            path: path.into(),
            kind,
            backend,
            regex: regex.map(Box::new),
            options: self.table.options_of[ingress as usize],
            plain: plain(self.table.options(ingress)),
            ssl_redirect: self.table.options(ingress).ssl_redirect,
            canary: None,
        });
        self.table.routes.len() as u32 - 1
    }

    /// Reports that `what`, named at `field` of the Ingress being added
    /// (`object`), is left to route `winner`.
    fn conflict(&mut self, object: Subject, field: &str, what: &str, winner: u32) {
        let by = self.table.routes[winner as usize].ingress as usize;
        let message = if by + 1 == self.table.ingresses.len() {
            format!("{what} is named twice in this Ingress; the first is used")
        } else {
            let by = &self.table.ingresses[by];
            format!("{what} is already routed by the older Ingress {by}; this one is not used for it")
        };
        self.problems.push(Problem {
            severity: Severity::Warning,
            object,
            field: crate::problem::field(field.to_owned()),
            message,
        });
    }

    /// The Exact and Prefix routes an ingress-nginx regex host turns into
    /// regexes; tells the Ingresses whose paths it changes.
    fn regex_host(&mut self, id: usize) -> Vec<u32> {
        let st = &self.staging[id];
        let Some(by) = st.regex_by else { return Vec::new() };
        let routes: Vec<u32> = st.exact.iter().chain(&st.prefix).copied().collect();
        let mut changed: Vec<u32> = routes.iter().map(|&r| self.table.routes[r as usize].ingress).collect();
        changed.sort_unstable();
        changed.dedup();
        let host = st.host.to_string();
        let by = self.table.ingresses[by as usize].clone();
        for i in changed {
            let ing = &self.table.ingresses[i as usize];
            self.problems.push(Problem {
                severity: Severity::Warning,
                object: Subject::Ingress(ing.clone()),
                field: crate::problem::field("spec.rules"),
                message: format!(
                    "host {host} is in ingress-nginx regex mode (Ingress {by} uses use-regex or rewrite-target): \
                     the Exact and Prefix paths of this Ingress there match as case-insensitive prefix regexes, \
                     the longest path first"
                ),
            });
        }
        routes
    }

    /// Compiles the regexes regex hosts need (`conversions`) within the
    /// table's regex budget, filled oldest Ingress first together with the
    /// regex paths compiled with their Ingresses: an Ingress's regex paths,
    /// then its converted paths. What does not fit is reported (once per
    /// Ingress) and not served.
    fn charge_regexes(&mut self, conversions: Vec<u32>) {
        self.charge_regexes_within(conversions);
        // What fitted the budget is served.
        RegexCache::settle(true);
    }

    fn charge_regexes_within(&mut self, mut conversions: Vec<u32>) {
        let routes = &self.table.routes;
        conversions.sort_unstable_by_key(|&r| (routes[r as usize].ingress, r));
        // A plain path that is no valid regex is matched as its text
        // (ingress-nginx would fail to load).
        let compile = |p: &str| PathRegex::compile(p).or_else(|_| PathRegex::literal(p));
        let mut used = self.regex_base;
        let mut next = 0;
        let mut drop_paths = vec![false; self.table.ingresses.len()];
        let mut reports: Vec<(u32, String)> = Vec::new();
        // What the whole table spends on this shard's account: the
        // Ingresses it counts, and its hosts' conversions.
        let mut homed = vec![false; self.table.ingresses.len()];
        for &i in &self.table.homed {
            homed[i as usize] = true;
        }
        let mut counted = 0;
        for (i, drop) in drop_paths.iter_mut().enumerate() {
            let own = self.regex_spent.get(i).copied().unwrap_or(0);
            if used + own > TABLE_REGEX_BUDGET {
                *drop = true;
                self.table.budget_hit = true;
                reports.push((i as u32, over_table_budget(own, used, "its regex paths are not served")));
            } else {
                used += own;
                counted += if homed[i] { own } else { 0 };
            }
            let mut spent = 0;
            let mut full = false;
            while let Some(&r) = conversions.get(next) {
                let route = &self.table.routes[r as usize];
                if route.ingress as usize != i {
                    break;
                }
                next += 1;
                if full {
                    continue;
                }
                match within_budget(used, &route.path, ("regex-or-text", compile), &mut spent) {
                    Ok(re) => self.table.routes[r as usize].regex = Some(Box::new(re)),
                    Err(Refused::Invalid(e)) => reports.push((
                        i as u32,
                        format!("its path {:?} on a regex host {e}; it is not served there", route.path),
                    )),
                    Err(Refused::OverBudget(need)) => {
                        full = true;
                        self.table.budget_hit = true;
                        reports.push((
                            i as u32,
                            over_table_budget(need, used, "some of its paths on regex hosts are not served"),
                        ));
                    }
                }
            }
            used += spent;
            counted += spent;
        }
        self.table.regex_used = counted;
        for route in &mut self.table.routes {
            if route.kind == PathKind::Regex && drop_paths[route.ingress as usize] {
                route.regex = None;
            }
        }
        for (i, message) in reports {
            self.problems.push(Problem {
                severity: Severity::Error,
                object: Subject::Ingress(self.table.ingresses[i as usize].clone()),
                field: crate::problem::field("spec.rules"),
                message,
            });
        }
    }

    fn finish(mut self) -> (Shard, Vec<Problem>) {
        // A www redirect never shadows a host some rule names.
        let named = &self.exact_ids;
        self.table.www.retain(|alt, _| !named.contains_key(alt));
        let mut conversions = Vec::new();
        for id in 0..self.staging.len() {
            conversions.extend(self.regex_host(id));
        }
        self.charge_regexes(conversions);
        let table = &self.table;
        let mut staged = self.staging;
        // Sized once (as `compact` pushes them): 10,000 regex hosts grew
        // it by copying a tenth of a rebuild.
        let mut extras = Vec::with_capacity(
            staged
                .iter()
                .filter(|st| !st.regex.is_empty() || st.mode == Mode::IngressNginx)
                .count(),
        );
        let mut over_budget = (Vec::new(), Vec::new());
        let mut take = |name: &str, id: u32| {
            let st = std::mem::replace(&mut staged[id as usize], Staging::new(RuleHost::Any));
            compact(name, st, table, &mut extras, &mut over_budget)
        };
        let exact_hosts = HostTable::new(self.exact_ids.into_iter().map(|(h, id)| take(&h, id)).collect());
        let wildcard_hosts = HostTable::new(self.wildcard_ids.into_iter().map(|(h, id)| take(&h, id)).collect());
        let any_host = self.any_id.map(|id| take("", id));
        self.table.exact_hosts = exact_hosts;
        self.table.wildcard_hosts = wildcard_hosts;
        self.table.any_host = any_host;
        self.table.extras = extras;
        let (over_budget, dropped) = over_budget;
        // Routes left out of a host's regex set are never matched: free
        // their compiled regexes, so what is kept stays within the budgets.
        for r in dropped {
            self.table.routes[r as usize].regex = None;
        }
        for (i, host) in over_budget {
            let ing = &self.table.ingresses[i as usize];
            self.problems.push(Problem {
                severity: Severity::Error,
                object: Subject::Ingress(ing.clone()),
                field: crate::problem::field("spec.rules"),
                message: format!(
                    "with this Ingress's paths, the regex paths of host {host} pass the host's regex budget \
                     ({} MiB compiled); its paths on {host} are not served (fewer or simpler regex paths fit)",
                    HOST_REGEX_BUDGET >> 20
                ),
            });
        }
        (self.table, self.problems)
    }
}

/// The host `from-to-www-redirect` sends `name` from: `www.` added or
/// removed.
pub(crate) fn www_twin(name: &str) -> String {
    match name.strip_prefix("www.") {
        Some(apex) => apex.to_owned(),
        None => format!("www.{name}"),
    }
}

/// Why a regex was not compiled.
enum Refused {
    /// It is not a valid (or small enough) regex: the message says why.
    Invalid(String),
    /// The table's regex budget has no room for it: the Ingress's regexes
    /// need this many bytes with it (or more: it was not compiled).
    OverBudget(usize),
}

/// Compiles a regex if the table's budget (of which `used` is taken by
/// others) has room for it, adding its heap bytes to `spent`.
fn within_budget(
    used: usize,
    path: &str,
    (how, compile): (&'static str, impl Fn(&str) -> Result<PathRegex, String>),
    spent: &mut usize,
) -> Result<PathRegex, Refused> {
    if used + *spent > TABLE_REGEX_BUDGET {
        return Err(Refused::OverBudget(*spent));
    }
    // Compiled by the last build, the same way: taken as it was.
    let re = match RegexCache::take(path, how) {
        Some(re) => re,
        None => compile(path).map_err(Refused::Invalid)?,
    };
    if used + *spent + re.memory_usage() > TABLE_REGEX_BUDGET {
        return Err(Refused::OverBudget(*spent + re.memory_usage()));
    }
    *spent += re.memory_usage();
    RegexCache::took(path, how, &re);
    Ok(re)
}

/// Why an Ingress's regexes (`need` bytes, so far) do not fit beside the
/// `used` bytes of older Ingresses, and what follows.
fn over_table_budget(need: usize, used: usize, outcome: &str) -> String {
    format!(
        "its regexes need {} KiB compiled, and {} KiB of the route table's regex budget \
         ({} MiB, filled oldest Ingress first) is left: {outcome} (fewer or simpler regex paths fit)",
        need.div_ceil(1024),
        TABLE_REGEX_BUDGET.saturating_sub(used) / 1024,
        TABLE_REGEX_BUDGET >> 20
    )
}

/// The hash [`Builder::existing`] finds a claimed (bucket, kind, path) by.
fn claim_hash(hasher: &RandomState, bucket: u32, kind: PathKind, path: &str) -> u64 {
    hasher.hash_one((bucket, kind, path))
}

/// Whether these options ask for nothing but the https redirect (so a
/// lookup need not read them).
pub(crate) fn plain(o: &RouteOptions) -> bool {
    o.app_root.is_none()
        && o.redirect.is_none()
        && !o.force_ssl_redirect
        && o.allow.is_empty()
        && o.deny.is_empty()
        && o.rewrite_target.is_none()
        && o.upstream_vhost.is_none()
        && o.cors.is_none()
}

/// What an ingress-nginx host needs beside its spec layout.
fn compat(st: &Staging, table: &Shard, left_out: &mut (Vec<u32>, Vec<u32>)) -> Option<CompatHost> {
    if st.mode != Mode::IngressNginx {
        return None;
    }
    let routes = &table.routes;
    let path = |r: u32| &*routes[r as usize].path;
    let first_match = st.regex_by.map(|_| {
        // ingress-nginx sorts a server's locations by length, longest
        // first, then by path, descending; equal paths keep their order
        // (oldest Ingress first).
        let mut all: Vec<u32> = st.exact.iter().chain(&st.prefix).chain(&st.regex).copied().collect();
        all.sort_by(|&a, &b| (path(b).len(), path(b)).cmp(&(path(a).len(), path(a))).then(a.cmp(&b)));
        let (re, (ingresses, dropped)) = RegexRoutes::new(all, routes);
        left_out.0.extend(ingresses);
        left_out.1.extend(dropped);
        re
    });
    // nginx answers `x` with a 301 to `x/` when a location `x/` exists and
    // none is `x` exactly (a Prefix `x` also makes an exact location `x`).
    let mut slash: Vec<Box<str>> = Vec::new();
    if first_match.is_none() {
        let paths = || st.exact.iter().chain(&st.prefix).map(|&r| path(r));
        let named: HashSet<&str, RandomState> = paths().collect();
        for p in paths() {
            if let Some(without) = p.strip_suffix('/')
                && !without.is_empty()
                && !named.contains(without)
            {
                slash.push(without.into());
            }
        }
        slash.sort_unstable();
        slash.dedup();
    }
    // Requests no path matches take the first Ingress's annotations
    // (ingress-nginx gives them to the host's root location).
    let served_by = st
        .default
        .or(table.catch_all)
        .map(|d| table.options(routes[d as usize].ingress));
    let root = st.first.filter(|&f| {
        let theirs = table.options(f);
        match served_by {
            Some(o) => o != theirs,
            // Without a default backend, the answer is a 404 unless the
            // options redirect or deny first.
            None => true,
        }
    });
    Some(CompatHost {
        first_match,
        slash: slash.into(),
        root,
    })
}

/// Lays a staged host out for lookup; its regex and ingress-nginx data, if
/// any, go to `extras`.
fn compact(
    name: &str,
    mut st: Staging,
    table: &Shard,
    extras: &mut Vec<HostExtra>,
    over_budget: &mut (Vec<(u32, String)>, Vec<u32>),
) -> HostRoutes {
    let mut left_out = (Vec::new(), Vec::new());
    let compat = compat(&st, table, &mut left_out);
    let routes = &table.routes;
    let key = |r: u32, kind| {
        let path = &*routes[r as usize].path;
        let key = match kind {
            PathKind::Prefix => path.strip_suffix('/').unwrap_or(path),
            _ => path,
        };
        Key { key, path, route: r }
    };
    let exact_count = st.exact.len();
    let mut keys: Vec<Key<'_>> = Vec::with_capacity(exact_count + st.prefix.len());
    keys.extend(st.exact.iter().map(|&r| key(r, PathKind::Exact)));
    keys.extend(st.prefix.iter().map(|&r| key(r, PathKind::Prefix)));
    let (exact, prefix) = keys.split_at_mut(exact_count);
    exact.sort_unstable_by(|a, b| key_order(a.key, b.key));
    // Per key, the longest path (`/foo/` over `/foo`), then the oldest
    // Ingress (routes are numbered oldest first); the first of each key
    // stays.
    prefix.sort_unstable_by(|a, b| {
        key_order(a.key, b.key)
            .then(b.path.len().cmp(&a.path.len()))
            .then(a.route.cmp(&b.route))
    });
    let mut kept = exact_count;
    for i in exact_count..keys.len() {
        if kept == exact_count || keys[kept - 1].key != keys[i].key {
            keys.swap(kept, i);
            kept += 1;
        }
    }
    keys.truncate(kept);
    st.regex
        .sort_by_key(|&r| (std::cmp::Reverse(routes[r as usize].path.len()), r));
    let regex = (!st.regex.is_empty()).then(|| {
        let (re, (ingresses, dropped)) = RegexRoutes::new(st.regex, routes);
        left_out.0.extend(ingresses);
        left_out.1.extend(dropped);
        re
    });
    // A route still in one of the host's sets keeps its regex.
    let kept = |r: &u32| {
        let in_set = |re: Option<&RegexRoutes>| re.is_some_and(|re| re.routes.contains(r));
        in_set(regex.as_ref()) || in_set(compat.as_ref().and_then(|c| c.first_match.as_ref()))
    };
    left_out.1.retain(|r| !kept(r));
    left_out.0.sort_unstable();
    left_out.0.dedup();
    over_budget
        .0
        .extend(left_out.0.into_iter().map(|i| (i, st.host.to_string())));
    over_budget.1.extend(left_out.1);
    let extra = (regex.is_some() || compat.is_some()).then(|| {
        extras.push(HostExtra { regex, compat });
        extras.len() as u32 - 1
    });
    HostRoutes::new(name, exact_count, &keys, routes, st.default, extra)
}

/// The Ingresses of ours among `ingresses` (chosen by `config.classes`
/// with `classes`), oldest first (creation time, then namespace/name: the
/// order conflicts are settled in), each with the mode its class asks for.
pub(crate) fn ours<'a, I: std::borrow::Borrow<Ingress> + 'a>(
    ingresses: &'a [I],
    classes: &[IngressClass],
    config: &Config,
) -> Vec<(&'a I, Mode)> {
    let mut ours: Vec<(&I, Mode)> = ingresses
        .iter()
        .filter_map(|i| Some((i, config.classes.select(i.borrow(), classes)?)))
        .collect();
    // Namespace/name is unique: the order is total, an unstable sort
    // gives the same one.
    ours.sort_unstable_by(|a, b| age_key(a.0.borrow()).cmp(&age_key(b.0.borrow())));
    ours
}

/// What is wrong with the IngressClasses of ours.
pub(crate) fn class_problems(classes: &[IngressClass], config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for c in classes {
        if config.classes.selects_class(c)
            && let Err(message) = config.classes.mode_of(c)
        {
            problems.push(Problem {
                severity: Severity::Error,
                object: Subject::IngressClass(c.metadata.name.clone()),
                field: crate::problem::field(format!("metadata.annotations[{:?}]", crate::class::MODE_ANNOTATION)),
                message: format!(
                    "{message}; its Ingresses are matched in {} mode",
                    config.classes.mode.as_str()
                ),
            });
        }
    }
    problems
}

/// How many paths an Ingress's rules have.
pub(crate) fn path_count(i: &Ingress) -> usize {
    i.spec
        .rules
        .iter()
        .map(|r| r.http.as_ref().map_or(0, |h| h.paths.len()))
        .sum()
}

/// Whether an Ingress is a canary (`canary: "true"`).
pub(crate) fn is_canary(i: &Ingress) -> bool {
    i.metadata
        .annotations
        .get(CANARY)
        .is_some_and(|v| annotations::boolean(v) == Ok(true))
}

/// `nginx.ingress.kubernetes.io/canary`.
const CANARY: &str = "nginx.ingress.kubernetes.io/canary";

impl Shard {
    /// Builds the shard `owner` names from `ours` (oldest first, each with
    /// its mode and whether the shard counts it): the hosts it holds, and
    /// what is wrong with them and with the Ingresses; `regex_base`: heap
    /// bytes of the regexes the table's other shards hold, which count
    /// against the table's regex budget; `asked`, if given, gets the
    /// Services asked about. An Ingress with an
    /// error is left out whole and reported; conflicts between Ingresses go
    /// to the oldest and the others are reported.
    pub(crate) fn build(
        ours: &[(&Ingress, Mode, bool)],
        ports: &dyn PortResolver,
        owner: Owner,
        regex_base: usize,
        asked: Option<&mut Asked>,
    ) -> (Shard, Vec<Problem>) {
        let paths = ours.iter().map(|(i, _, _)| path_count(i)).sum();
        // Sized once: growing tables of 10,000 Ingresses by doubling is
        // copying them and touching fresh memory again and again.
        let n = ours.len();
        let mut b = Builder {
            table: Shard {
                ingresses: Vec::with_capacity(n),
                options_of: Vec::with_capacity(n),
                routes: Vec::with_capacity(paths + n),
                ..Shard::default()
            },
            owner,
            problems: Vec::new(),
            ports,
            asked: asked.is_some().then(Default::default),
            staging: Vec::with_capacity(n),
            sets_by_annotations: HashMap::default(),
            hasher: RandomState::default(),
            claimed: HashTable::with_capacity(paths),
            exact_ids: HashMap::with_capacity_and_hasher(n, RandomState::default()),
            wildcard_ids: HashMap::default(),
            any_id: None,
            regex_memory: 0,
            regex_base,
            regex_spent: Vec::with_capacity(n),
        };
        // Canary Ingresses attach to the routes of the others, so those come first.
        for &(ing, mode, home) in ours.iter().filter(|i| !is_canary(i.0)) {
            b.add(ing, mode, home);
        }
        for &(ing, mode, home) in ours.iter().filter(|i| is_canary(i.0)) {
            b.add(ing, mode, home);
        }
        if let Some(out) = asked {
            *out = b.asked.take().unwrap_or_default().into_inner();
        }
        b.finish()
    }

    /// The options of an Ingress.
    pub(crate) fn options(&self, ingress: u32) -> &RouteOptions {
        &self.option_sets[self.options_of[ingress as usize] as usize]
    }

    /// What a bucket has beside its Exact and Prefix routes.
    pub(crate) fn extra(&self, hr: &HostRoutes) -> Option<&HostExtra> {
        hr.extra().map(|i| &self.extras[i as usize])
    }

    /// The best route for a canonical path in a bucket.
    #[inline]
    pub(crate) fn best<'t>(&'t self, hr: &'t HostRoutes, path: &str) -> Option<Hit<'t>> {
        let found = hr.matching(path);
        let Some(re) = self.extra(hr).and_then(|x| x.regex.as_ref()) else {
            return found.map(|(i, kind)| hr.hit(i, kind));
        };
        // Regex routes are sorted longest first: the first that matches is
        // the only candidate, and it must be longer than the best so far
        // (at equal length, Exact and Prefix win).
        let best_len = found.map(|(i, _)| hr.rule_len(i));
        let beats = |r: u32| best_len.is_none_or(|len| self.routes[r as usize].path.len() > len);
        match re.first(&self.routes, path, |r| !beats(r)).filter(|&r| beats(r)) {
            Some(r) => Some(Hit::of(r, &self.routes[r as usize])),
            None => found.map(|(i, kind)| hr.hit(i, kind)),
        }
    }

    /// Routes a canonical path in a host bucket (`None`: no bucket):
    /// the route (or the default backend that catches it), the Ingress
    /// whose options apply, and the compat quirks that decided it.
    #[inline]
    pub(crate) fn route_for<'t>(&'t self, hr: Option<&'t HostRoutes>, path: &str) -> Routed<'t> {
        let mut quirks = Quirks::NONE;
        let compat = hr.and_then(|h| self.extra(h)).and_then(|x| x.compat.as_ref());
        let found = hr.and_then(|hr| match compat.and_then(|c| c.first_match.as_ref()) {
            Some(fm) => {
                let first = fm.first(&self.routes, path, |_| false);
                if first != self.best(hr, path).map(|h| h.route) {
                    quirks = quirks | Quirks::REGEX_HOST;
                }
                first.map(|r| Hit::of(r, &self.routes[r as usize]))
            }
            None => self.best(hr, path),
        });
        let (route, options) = match found {
            Some(h) => (Some(h), h.ingress),
            None => {
                let default = hr.and_then(|h| h.default()).or(self.catch_all);
                let default = default.map(|d| Hit::of(d, &self.routes[d as usize]));
                match (compat.and_then(|c| c.root), default) {
                    (Some(root), _) => {
                        quirks = quirks | Quirks::ROOT_OPTIONS;
                        (default, root)
                    }
                    (None, Some(d)) => (Some(d), d.ingress),
                    (None, None) => (None, 0),
                }
            }
        };
        Routed { route, options, quirks }
    }
}
