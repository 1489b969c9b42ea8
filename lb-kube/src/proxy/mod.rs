//! The proxy side of lb-kube: Ingresses from a snapshot compiled into an
//! `lb-route` table, `explain` (where would this URL go, and why), and the
//! serving proxy ([`serve`]) that executes those decisions.

pub mod basic;
pub mod endpoints;
mod forward;
pub mod framing;
mod guard;
mod http1;
pub mod metrics;
pub mod publish;
pub mod serve;
pub mod tls;
mod upstream;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use lb_route::{Decision, PathKind, Request, RouteTable};
use serde::Serialize;

use crate::objects::{Object, ObjectRef};
use crate::source::file::FileSource;
use crate::source::{Origin, Problem, Severity, Snapshot};

/// The ports of the Services of a snapshot, by namespace and name: named
/// ports resolved to numbers, and backends that cannot be served told.
#[derive(Debug, Default)]
pub struct ServicePorts {
    by_namespace: HashMap<String, ByName, RandomState>,
    /// Which Services these are (see [`lb_route::PortResolver::identity`]).
    identity: Option<u64>,
    /// The identity before, and the Services changed since.
    since: Option<(u64, Arc<Changed>)>,
}

/// Services changed (made, edited or deleted): names by namespace.
type Changed = HashMap<String, std::collections::HashSet<String, RandomState>, RandomState>;

type RandomState = foldhash::fast::RandomState;

/// The Services of one namespace: each port's name (if any) and number.
type ByName = HashMap<String, Vec<(Option<String>, u16)>, RandomState>;

impl ServicePorts {
    /// Collects every port of every Service.
    pub fn from_snapshot(snap: &Snapshot) -> Self {
        let mut map: HashMap<String, ByName, RandomState> = HashMap::default();
        for (_, o) in &snap.objects {
            let Object::Service(s) = o else { continue };
            let (ns, name) = service_key(s);
            let ports = service_ports(s)
                .filter_map(|(name, port)| Some((name.map(str::to_owned), u16::try_from(port).ok()?)))
                .collect();
            map.entry(ns.to_owned()).or_default().insert(name.to_owned(), ports);
        }
        Self {
            by_namespace: map,
            identity: None,
            since: None,
        }
    }

    fn ports(&self, namespace: &str, service: &str) -> Option<&[(Option<String>, u16)]> {
        self.by_namespace.get(namespace)?.get(service).map(Vec::as_slice)
    }
}

/// The Services the last table was built with (held, so the same address
/// is the same object), a number that changes when they do, and which
/// changed the last time it did (in what a table reads of them).
#[derive(Debug, Default)]
struct ServicesSeen {
    held: Vec<Arc<Service>>,
    version: u64,
    changed: Arc<Changed>,
}

type Service = k8s_openapi::api::core::v1::Service;

/// A Service's namespace and name.
fn service_key(s: &Service) -> (&str, &str) {
    let ns = s.metadata.namespace.as_deref().unwrap_or("default");
    (ns, s.metadata.name.as_deref().unwrap_or_default())
}

/// What a route table reads of a Service besides its name: its ports'
/// names and numbers (not its status, labels or annotations).
fn service_ports(s: &Service) -> impl Iterator<Item = (Option<&str>, i32)> {
    s.spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .map(|p| (p.name.as_deref(), p.port))
}

impl ServicesSeen {
    /// Gives `ports` (of the Services of `snap`) its identity: the last
    /// version if they are the same objects, else a new one, which knows
    /// what changed since the last.
    fn identify(&mut self, snap: &Snapshot, ports: &mut ServicePorts) {
        let services = || {
            snap.objects.iter().filter_map(|(_, o)| match o {
                Object::Service(s) => Some(s),
                _ => None,
            })
        };
        if !services().map(Arc::as_ptr).eq(self.held.iter().map(Arc::as_ptr)) {
            let before: HashMap<(&str, &str), &Arc<Service>> = self.held.iter().map(|s| (service_key(s), s)).collect();
            let now: HashMap<(&str, &str), &Arc<Service>> = services().map(|s| (service_key(s), s)).collect();
            let mut changed = Changed::default();
            let differs = |a: Option<&&Arc<Service>>, b: Option<&&Arc<Service>>| match (a, b) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && !service_ports(a).eq(service_ports(b)),
                _ => true,
            };
            for k in before.keys().chain(now.keys()) {
                if differs(before.get(k), now.get(k)) {
                    changed.entry(k.0.to_owned()).or_default().insert(k.1.to_owned());
                }
            }
            self.held = services().cloned().collect();
            self.version += 1;
            self.changed = Arc::new(changed);
        }
        ports.identity = Some(self.version);
        ports.since = self.version.checked_sub(1).map(|before| (before, self.changed.clone()));
    }
}

impl lb_route::PortResolver for ServicePorts {
    fn resolve(&self, namespace: &str, service: &str, port: &str) -> Option<u16> {
        let ports = self.ports(namespace, service)?;
        ports.iter().find(|(n, _)| n.as_deref() == Some(port)).map(|(_, p)| *p)
    }

    fn missing(&self, namespace: &str, service: &str, port: &lb_route::BackendPort) -> Option<String> {
        let Some(ports) = self.ports(namespace, service) else {
            return Some(format!("Service {namespace}/{service} does not exist"));
        };
        match port {
            lb_route::BackendPort::Number(n) if !ports.iter().any(|(_, p)| p == n) => {
                Some(format!("Service {namespace}/{service} has no port {n}"))
            }
            lb_route::BackendPort::Unresolved(name) => {
                Some(format!("Service {namespace}/{service} has no port named {name:?}"))
            }
            _ => None,
        }
    }

    fn identity(&self) -> Option<u64> {
        self.identity
    }

    fn unchanged_since(&self, since: u64, namespace: &str, service: &str) -> bool {
        match &self.since {
            Some((before, changed)) if *before == since => {
                !changed.get(namespace).is_some_and(|names| names.contains(service))
            }
            _ => self.identity == Some(since),
        }
    }
}

/// Compiles the Ingresses of a snapshot. Route-table problems are returned
/// with the file and document of the Ingress they are about.
pub fn routes(snap: &Snapshot, config: &lb_route::Config) -> (RouteTable, Vec<Problem>) {
    let fresh = &mut lb_route::BuildCache::default();
    let (table, problems, _) = routes_of(
        snap,
        config,
        fresh,
        &mut Converted::default(),
        &mut ServicesSeen::default(),
        |_| {},
    );
    (table, problems)
}

/// What one table build leaves for the next: the table's shards and
/// regexes, the conversions of the Ingresses it read, and the last version
/// of each Ingress that was served.
#[derive(Debug, Default)]
pub struct Rebuild {
    /// The shards of the last table and the regexes they took: a change
    /// builds again only the shards it lands in.
    built: lb_route::BuildCache,
    /// The Ingresses of the last view, converted for lb-route.
    converted: Converted,
    /// Its Services.
    services: ServicesSeen,
    /// The last version of each Ingress that was served: an edit that
    /// breaks an Ingress (a bad path type, port or annotation) leaves this
    /// one serving, and says so.
    last_good: Vec<Arc<lb_route::Ingress>>,
}

/// Ingresses converted for lb-route, by the address of the object each was
/// converted from. The object is held here, so its address names it alone:
/// an Ingress a view shares with the last one is not converted again (a
/// change to one of 10,000 converts one).
type Converted = HashMap<
    usize,
    (Arc<k8s_openapi::api::networking::v1::Ingress>, Arc<lb_route::Ingress>),
    foldhash::fast::RandomState,
>;

/// An Ingress's namespace and name, borrowed.
type Key<'a> = (&'a str, &'a str);

fn key_of(i: &lb_route::Ingress) -> Key<'_> {
    (i.metadata.namespace(), &i.metadata.name)
}

impl Rebuild {
    /// How many shards of the last table its build built (the others were
    /// kept), and how many it has.
    pub fn shards_built(&self) -> (usize, usize) {
        self.built.shards_built()
    }
}

/// The Ingresses a table serves.
fn served_by(t: &RouteTable) -> std::collections::HashSet<Key<'_>, foldhash::fast::RandomState> {
    t.ingresses().map(|r| (r.namespace.as_str(), r.name.as_str())).collect()
}

/// Whether an annotation (or a field naming one) is about what guards an
/// Ingress: authentication, allow and deny lists.
fn guards(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["auth", "source-range", "allowlist", "denylist"]
        .iter()
        .any(|g| name.contains(g))
}

/// The annotations of `i` that guard it, in order.
fn guarding_of(i: &lb_route::Ingress) -> impl Iterator<Item = (&String, &String)> {
    i.metadata.annotations.iter().filter(|(k, _)| guards(k))
}

/// [`routes`] for a serving proxy: regexes the last build compiled are
/// reused, an Ingress the last build converted is not converted again, and
/// an Ingress that no longer builds keeps its last good version serving
/// (reported with the error), as the source does for an object it cannot
/// read.
pub fn routes_kept(snap: &Snapshot, config: &lb_route::Config, rebuild: &mut Rebuild) -> (RouteTable, Vec<Problem>) {
    let (mut table, mut problems, mut ingresses) = routes_of(
        snap,
        config,
        &mut rebuild.built,
        &mut rebuild.converted,
        &mut rebuild.services,
        |_| {},
    );
    // Left out for an error of its own (not for another class, not
    // deleted and made again), and not for an edit of what guards it (or
    // an error there): an edit that asks for authentication or an
    // allowlist and does not build, wherever its error is, must not leave
    // the open version serving.
    let kept: Vec<(String, String)> = {
        fn of(p: &Problem) -> Option<Key<'_>> {
            let o = p
                .object
                .as_ref()
                .filter(|o| o.kind == "Ingress" && p.severity == Severity::Error)?;
            Some((o.namespace.as_str(), o.name.as_str()))
        }
        let broken: std::collections::HashSet<Key<'_>> = problems.iter().filter_map(of).collect();
        if broken.is_empty() {
            Vec::new()
        } else {
            let guarding = |p: &Problem| {
                p.field
                    .as_deref()
                    .is_some_and(|f| f.to_ascii_lowercase().contains("annotations") && guards(f))
            };
            let same_guards = |a: &lb_route::Ingress, b: &lb_route::Ingress| guarding_of(a).eq(guarding_of(b));
            let guarded: std::collections::HashSet<Key<'_>> =
                problems.iter().filter(|p| guarding(p)).filter_map(of).collect();
            let first = served_by(&table);
            let last: HashMap<Key<'_>, &lb_route::Ingress> =
                rebuild.last_good.iter().map(|g| (key_of(g), &**g)).collect();
            ingresses
                .iter()
                .map(|i| (key_of(i), i))
                .filter(|(k, i)| {
                    !first.contains(k)
                        && broken.contains(k)
                        && !guarded.contains(k)
                        && last.get(k).is_some_and(|g| {
                            *g != &***i
                                && g.metadata.creation_timestamp == i.metadata.creation_timestamp
                                && same_guards(g, i)
                        })
                })
                .map(|((ns, name), _)| (ns.to_owned(), name.to_owned()))
                .collect()
        }
    };
    let is_kept = |ns: &str, name: &str| kept.iter().any(|(n, m)| n == ns && m == name);
    if !kept.is_empty() {
        // Built again with the last good versions in their place; the
        // errors of the versions in force in the files are what is said.
        let last_good = &rebuild.last_good;
        let seen = &mut rebuild.services;
        let (again, _, adjusted) = routes_of(snap, config, &mut rebuild.built, &mut rebuild.converted, seen, |list| {
            for ing in list.iter_mut() {
                let (ns, name) = key_of(ing);
                // The last of a name, as the map that chose it.
                if is_kept(ns, name)
                    && let Some(good) = last_good.iter().rev().find(|g| key_of(g) == (ns, name))
                {
                    *ing = good.clone();
                }
            }
        });
        let now = served_by(&again);
        for p in &mut problems {
            if let Some(o) = &p.object
                && o.kind == "Ingress"
                && p.severity == Severity::Error
                && is_kept(&o.namespace, &o.name)
                && now.contains(&(o.namespace.as_str(), o.name.as_str()))
            {
                p.message.push_str("; its last good version keeps serving");
            }
        }
        drop(now); // (it borrows the table replaced next)
        table = again;
        ingresses = adjusted;
    }
    // The table's Ingresses come from this list: as many means all of
    // them (the set of 10,000 keys is not made on every rebuild).
    if table.ingress_count() != ingresses.len() {
        let now = served_by(&table);
        ingresses.retain(|i| now.contains(&key_of(i)));
    }
    rebuild.last_good = ingresses;
    (table, problems)
}

/// Builds the table of `snap`'s Ingresses, after `adjust` has seen them.
fn routes_of(
    snap: &Snapshot,
    config: &lb_route::Config,
    cache: &mut lb_route::BuildCache,
    converted: &mut Converted,
    services: &mut ServicesSeen,
    adjust: impl FnOnce(&mut Vec<Arc<lb_route::Ingress>>),
) -> (RouteTable, Vec<Problem>, Vec<Arc<lb_route::Ingress>>) {
    let mut ingresses = Vec::new();
    let mut classes = Vec::new();
    let mut next = Converted::with_capacity_and_hasher(converted.len(), Default::default());
    // Objects new since the last view (by address), at their place.
    let mut new = Vec::new();
    for (_, o) in &snap.objects {
        match o {
            Object::Ingress(i) => {
                let at = Arc::as_ptr(i) as usize;
                let ing = match converted.remove(&at) {
                    Some((_, ing)) => ing,
                    None => {
                        new.push((ingresses.len(), at));
                        Arc::new(lb_route::Ingress::from(&**i))
                    }
                };
                next.insert(at, (i.clone(), ing.clone()));
                ingresses.push(ing);
            }
            Object::IngressClass(c) => classes.push(lb_route::IngressClass::from((**c).clone())),
            _ => {}
        }
    }
    // A file read again (a rewrite, or one changed too recently to trust
    // its time) gives new objects: one that routes as the Ingress it
    // replaces is that Ingress, so the table's shards holding it are kept.
    if !new.is_empty() && !converted.is_empty() {
        let gone: HashMap<Key<'_>, &Arc<lb_route::Ingress>> = converted.values().map(|(_, g)| (key_of(g), g)).collect();
        for (place, at) in new {
            if let Some(&old) = gone.get(&key_of(&ingresses[place]))
                && **old == *ingresses[place]
            {
                if let Some(entry) = next.get_mut(&at) {
                    entry.1 = old.clone();
                }
                ingresses[place] = old.clone();
            }
        }
    }
    *converted = next;
    adjust(&mut ingresses);
    let mut ports = ServicePorts::from_snapshot(snap);
    services.identify(snap, &mut ports);
    let build = RouteTable::build_cached(&ingresses, &classes, &ports, config, cache);
    // Where each object a problem is about was read (looked up only when
    // there are problems).
    // The converted Ingresses and classes are in the view's order, so each
    // is named as lb-route names it.
    let mut origins: HashMap<String, Option<Origin>> = HashMap::new();
    if !build.problems.is_empty() {
        let about: std::collections::HashSet<String> = build.problems.iter().map(|p| p.object.to_string()).collect();
        let of_kind = |kind: &'static str| {
            snap.objects
                .iter()
                .filter(move |(_, o)| o.kind() == kind)
                .map(|(origin, _)| origin)
        };
        let names = (of_kind("Ingress").zip(&ingresses))
            .map(|(origin, i)| {
                (
                    origin,
                    format!("Ingress {}/{}", i.metadata.namespace(), i.metadata.name),
                )
            })
            .chain(
                of_kind("IngressClass")
                    .zip(&classes)
                    .map(|(origin, c)| (origin, format!("IngressClass {}", c.metadata.name))),
            );
        for (origin, name) in names {
            if about.contains(&name) {
                origins.insert(name, origin.clone());
            }
        }
    }
    let problems: Vec<Problem> = build
        .problems
        .into_iter()
        .map(|p| {
            let object = match &p.object {
                lb_route::Subject::Ingress(i) => ObjectRef {
                    kind: "Ingress".into(),
                    namespace: i.namespace.clone(),
                    name: i.name.clone(),
                },
                lb_route::Subject::IngressClass(name) => ObjectRef {
                    kind: "IngressClass".into(),
                    namespace: String::new(),
                    name: name.clone(),
                },
                other => ObjectRef {
                    kind: other.to_string(),
                    ..ObjectRef::default()
                },
            };
            Problem {
                severity: match p.severity {
                    lb_route::Severity::Error => Severity::Error,
                    lb_route::Severity::Warning => Severity::Warning,
                },
                origin: origins.get(&p.object.to_string()).cloned().flatten(),
                object: Some(object),
                field: p.field,
                message: p.message,
            }
        })
        .collect();
    (build.table, problems, ingresses)
}

/// The answer of `lb-proxy explain` (the JSON contract of DESIGN.md §4,
/// plus `why`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explain {
    /// The status the proxy would answer with (200 when forwarded).
    pub status: u16,
    /// `namespace/name` of the deciding Ingress.
    pub ingress: Option<String>,
    /// The backend Service.
    pub service: Option<String>,
    /// The backend Service port.
    pub port: Option<u16>,
    /// Path and query sent upstream.
    pub upstream_path: Option<String>,
    /// `Location` of a redirect.
    pub location: Option<String>,
    /// How the decision was reached, in words.
    pub why: String,
}

impl Explain {
    /// An answer of the proxy's own: `status`, no backend.
    fn without_backend(status: u16, why: String) -> Self {
        Self {
            status,
            ingress: None,
            service: None,
            port: None,
            upstream_path: None,
            location: None,
            why,
        }
    }
}

/// Why `explain` could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// The URL is not `http://host[:port]/path` or `https://…`.
    #[error("--url {0:?} is not an http:// or https:// URL with a host")]
    Url(String),
    /// A `--header` is not `Name:value`.
    #[error("--header {0:?} is not NAME:VALUE with a valid header name and value")]
    Header(String),
    /// The manifests directory cannot be read.
    #[error("cannot read {dir}: {source}")]
    Read {
        /// The directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A URL split for the table: https, authority, origin-form target. The
/// scheme is case-insensitive (RFC 3986 §3.1).
fn split_url(url: &str) -> Option<(bool, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let https = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return None;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some((https, authority, if target.is_empty() { "/" } else { target }))
}

/// The request's `Host` header as the proxy takes it: `Err` when it is sent
/// more than once or is not text (the proxy answers 400).
pub fn host_header(headers: &http::HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut all = headers.get_all(http::header::HOST).iter();
    let Some(first) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err("more than one Host header");
    }
    first.to_str().map(Some).map_err(|_| "a Host header that is not text")
}

/// What `explain` is asked: a request as a client would send it.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// `http://host[:port]/path?query` or `https://…`.
    pub url: &'a str,
    /// Request headers, `Name: value`; a Host header overrides the URL's host.
    pub headers: &'a [String],
    /// The method (GET by default).
    pub method: http::Method,
    /// The client address, for allow and deny lists.
    pub client: Option<std::net::IpAddr>,
}

impl<'a> Ask<'a> {
    /// A GET of `url` with `headers`, from no known client.
    pub fn get(url: &'a str, headers: &'a [String]) -> Self {
        Self {
            url,
            headers,
            method: http::Method::GET,
            client: None,
        }
    }
}

/// Decides where `ask` goes with the table, as the proxy would.
pub fn explain_with(table: &RouteTable, ask: &Ask<'_>) -> Result<Explain, ExplainError> {
    explain_in(table, None, ask)
}

/// [`explain_with`], and with the view the table came from, what the
/// serving proxy checks beyond the table too, said in `why`: basic-auth
/// credentials, and that the Service exists with the port (endpoints are
/// not looked at).
fn explain_in(table: &RouteTable, view: Option<&Snapshot>, ask: &Ask<'_>) -> Result<Explain, ExplainError> {
    // As the serving proxy refuses them, before any routing.
    if ask.method == http::Method::CONNECT || ask.method == http::Method::TRACE {
        return Ok(Explain::without_backend(405, "the method is not proxied".into()));
    }
    if !ask.method.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Ok(Explain::without_backend(
            400,
            "bad request: not a method (methods are case-sensitive)".into(),
        ));
    }
    // A client never sends the fragment.
    let url = ask.url.split('#').next().unwrap_or_default();
    let (https, authority, target) = split_url(url).ok_or_else(|| ExplainError::Url(url.into()))?;
    let bad = |why: String| Explain::without_backend(400, why);
    if !lb_route::valid_authority(authority) {
        return Ok(bad(format!(
            "bad request: invalid host {authority:?} in the URL (userinfo, a bad port or a character a Host may not hold)"
        )));
    }
    let mut map = http::HeaderMap::new();
    for h in ask.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| ExplainError::Header(h.clone()))?;
        let name = http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| ExplainError::Header(h.clone()))?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|_| ExplainError::Header(h.clone()))?;
        map.append(name, value);
    }
    let host = match host_header(&map) {
        Ok(h) => h.unwrap_or(authority),
        Err(why) => return Ok(bad(format!("bad request: {why}"))),
    };
    let mut req = Request::new(&ask.method, Some(host), target)
        .with_https(https)
        .with_headers(&map);
    if let Some(client) = ask.client {
        req = req.with_client(client);
    }
    let (decision, quirks) = table.lookup_traced(&req);
    // Every answer but a forward names no backend.
    let answer = |why: String| Explain::without_backend(decision.status().as_u16(), why);
    let mut explained = match &decision {
        Decision::Forward(f) => Explain {
            why: match &f.matched {
                Some((path, kind)) => {
                    let kind = match kind {
                        PathKind::Exact => "Exact",
                        PathKind::Prefix => "Prefix",
                        PathKind::Regex => "regex",
                    };
                    format!(
                        "host \"{host}\" matched {kind} path \"{path}\" of Ingress {}",
                        f.ingress
                    )
                }
                None => format!("no path matched; default backend of Ingress {}", f.ingress),
            },
            ingress: Some(f.ingress.to_string()),
            service: Some(f.service.to_owned()),
            port: Some(f.port),
            upstream_path: Some(f.upstream_path.to_string()),
            ..answer(String::new())
        },
        Decision::Redirect { location, .. } => Explain {
            location: Some(location.clone()),
            ..answer(format!("redirect to {location}"))
        },
        Decision::Deny { ingress, reason, .. } => Explain {
            ingress: ingress.map(|i| i.to_string()),
            ..answer(reason.clone())
        },
        Decision::Preflight { headers } => {
            let headers: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            answer(format!("CORS preflight answered by the proxy ({})", headers.join("; ")))
        }
        Decision::BadRequest(e) => answer(format!("bad request: {e}")),
        _ => answer(format!(
            "no rule and no default backend for host {host:?} and this path"
        )),
    };
    // The routing decision stands (the JSON contract); what the serving
    // proxy would answer instead is said.
    if let (Decision::Forward(f), Some(view)) = (&decision, view)
        && let Some((status, why)) = refused_beyond_table(view, f, &map)
    {
        explained.why = format!("{}; but the serving proxy answers {status}: {why}", explained.why);
    }
    if !quirks.is_empty() {
        explained.why = format!("{} [{quirks}]", explained.why);
    }
    Ok(explained)
}

/// What the serving proxy answers for a forward before any endpoint is
/// tried, when that is not the backend's answer: basic auth without valid
/// credentials (401, 503 without a usable Secret), a Service that does not
/// exist or has no such port (503).
fn refused_beyond_table(
    view: &Snapshot,
    f: &lb_route::Forward<'_>,
    headers: &http::HeaderMap,
) -> Option<(u16, String)> {
    let ns = f.ingress.namespace.as_str();
    if let Some(basic) = &f.options.basic_auth {
        let (auth, _) = basic::Htpasswds::build(view, None);
        let secret = format!("{ns}/{}", basic.secret);
        let Some(file) = auth.get(ns, &basic.secret, basic.map).filter(|f| !f.is_empty()) else {
            return Some((
                503,
                format!("basic auth: Secret {secret} is missing or has no usable user"),
            ));
        };
        let given = headers.get(http::header::AUTHORIZATION);
        if !given.is_some_and(|v| file.verify(v.as_bytes())) {
            return Some((
                401,
                format!("basic auth (Secret {secret}): no valid credentials in an Authorization header"),
            ));
        }
    }
    use lb_route::PortResolver as _;
    ServicePorts::from_snapshot(view)
        .missing(ns, f.service, &lb_route::BackendPort::Number(f.port))
        .map(|why| (503, format!("{why}: no endpoint to send it to")))
}

/// Reads `dir` and decides where `url` goes. Returns the answer and every
/// problem met in the manifests (an invalid Ingress does not route).
pub fn explain(dir: &Path, ask: &Ask<'_>, config: &lb_route::Config) -> Result<(Explain, Vec<Problem>), ExplainError> {
    let snap = FileSource::new(dir).read().map_err(|source| ExplainError::Read {
        dir: dir.display().to_string(),
        source,
    })?;
    let (table, mut problems) = routes(&snap, config);
    problems.extend(serve::missing_secrets(
        &snap,
        &table,
        config.default_certificate.is_some(),
    ));
    let answer = explain_in(&table, Some(&snap), ask)?;
    let mut all = snap.problems;
    all.append(&mut problems);
    Ok((answer, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_problems_name_the_file_and_document_of_their_object() {
        let ingress = |name: &str, path_type: &str| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: shop}}\n\
                 spec:\n  ingressClassName: lb\n  rules:\n  - host: {name}.example\n    http:\n      paths:\n\
                 \x20     - {{path: /, pathType: {path_type}, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
            )
        };
        let text = format!("{}---\n{}", ingress("good", "Prefix"), ingress("bad", "Sideways"));
        let file = Path::new("/manifests/shop.yaml");
        let snap = crate::source::file::parse_manifests(file, &text);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let (table, problems) = routes(&snap, &lb_route::Config::default());
        assert_eq!(table.ingresses().count(), 1);
        let p = problems
            .iter()
            .find(|p| p.object.as_ref().is_some_and(|o| o.name == "bad"))
            .unwrap_or_else(|| panic!("{problems:?}"));
        let origin = p.origin.as_ref().unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!((origin.file.as_path(), origin.document), (file, 2));
    }

    /// A table of 2,000 Ingresses is in shards: a change to one Service
    /// builds again only the shard whose Ingress names it, and the table
    /// routes by the Service as it is now.
    #[test]
    fn a_changed_service_builds_again_only_the_shards_that_name_it() {
        let service = |i: usize, port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: shop}}\n\
                 spec: {{ports: [{{name: http, port: {port}}}]}}\n"
            )
        };
        let text: Vec<String> = (0..2000)
            .map(|i| {
                format!(
                    "{}---\n{}",
                    ingress(
                        &format!("h{i}"),
                        "lb",
                        &[&format!("{{name: svc{i}, port: {{name: http}}}}")]
                    ),
                    service(i, 80)
                )
            })
            .collect();
        let file = Path::new("/manifests/all.yaml");
        let snap = crate::source::file::parse_manifests(file, &text.join("---\n"));
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let config = lb_route::Config::default();
        let mut rebuild = Rebuild::default();
        let (_, problems) = routes_kept(&snap, &config, &mut rebuild);
        assert!(problems.is_empty(), "{problems:?}");
        let (_, shards) = rebuild.shards_built();
        assert!(shards > 1, "{shards}");
        let port = |t: &RouteTable, host: &str| match t.lookup(&Request::get(host, "/p0")) {
            Decision::Forward(f) => f.port,
            d => panic!("{d:?}"),
        };
        // svc7 now serves on 8080 (the other objects are the same).
        let mut next = snap.clone();
        let changed = crate::source::file::parse_manifests(file, &service(7, 8080));
        let at = next
            .objects
            .iter()
            .position(|(_, o)| matches!(o, Object::Service(s) if s.metadata.name.as_deref() == Some("svc7")))
            .unwrap();
        next.objects[at] = changed.objects[0].clone();
        let (table, problems) = routes_kept(&next, &config, &mut rebuild);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(rebuild.shards_built(), (1, shards));
        assert_eq!((port(&table, "h7.example"), port(&table, "h8.example")), (8080, 80));
        // A label on svc8: not what a table reads of it, no shard built.
        let labelled = crate::source::file::parse_manifests(
            file,
            &service(8, 80).replace("namespace: shop}", "namespace: shop, labels: {tier: web}}"),
        );
        let at8 = next
            .objects
            .iter()
            .position(|(_, o)| matches!(o, Object::Service(s) if s.metadata.name.as_deref() == Some("svc8")))
            .unwrap();
        assert!(matches!(&labelled.objects[0].1, Object::Service(s) if s.metadata.labels.is_some()));
        next.objects[at8] = labelled.objects[0].clone();
        routes_kept(&next, &config, &mut rebuild);
        assert_eq!(rebuild.shards_built(), (0, shards));
        // Gone: its Ingress's shard only, which says so.
        next.objects.remove(at);
        let (table, problems) = routes_kept(&next, &config, &mut rebuild);
        assert_eq!(rebuild.shards_built(), (1, shards));
        assert!(
            matches!(table.lookup(&Request::get("h7.example", "/p0")), Decision::Deny { .. }),
            "{:?}",
            table.lookup(&Request::get("h7.example", "/p0"))
        );
        let said: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("svc7"), "{said:?}");
        // A file read again gives new objects: one that routes the same is
        // the same Ingress, and no shard is built.
        let at = next
            .objects
            .iter()
            .position(|(_, o)| matches!(o, Object::Ingress(i) if i.metadata.name.as_deref() == Some("h9")))
            .unwrap();
        let again =
            crate::source::file::parse_manifests(file, &ingress("h9", "lb", &["{name: svc9, port: {name: http}}"]));
        assert!(
            !matches!((&next.objects[at].1, &again.objects[0].1), (Object::Ingress(a), Object::Ingress(b)) if Arc::ptr_eq(a, b))
        );
        next.objects[at] = again.objects[0].clone();
        routes_kept(&next, &config, &mut rebuild);
        assert_eq!(rebuild.shards_built(), (0, shards));
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
                           spec: {ports: [{name: http, port: 80}]}\n";

    fn ingress(name: &str, class: &str, backends: &[&str]) -> String {
        let paths: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("      - {{path: /p{i}, pathType: Prefix, backend: {{service: {b}}}}}\n"))
            .collect();
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  ingressClassName: {class}\n  rules:\n  - host: {name}.example\n    http:\n      paths:\n{paths}"
        )
    }

    #[test]
    fn backends_the_view_cannot_serve_are_warned_about_on_their_field() {
        let text = [
            SERVICE.to_owned(),
            ingress(
                "ours",
                "lb",
                &[
                    "{name: web, port: {number: 80}}",
                    "{name: web, port: {name: http}}",
                    "{name: ghost, port: {number: 80}}",
                    "{name: web, port: {name: https}}",
                    "{name: web, port: {number: 81}}",
                ],
            ),
            ingress("theirs", "other", &["{name: ghost, port: {number: 80}}"]),
        ]
        .join("---\n");
        let file = Path::new("/manifests/shop.yaml");
        let snap = crate::source::file::parse_manifests(file, &text);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let (_, problems) = routes(&snap, &lb_route::Config::default());
        let said: Vec<(String, String)> = problems
            .iter()
            .map(|p| (p.field.clone().unwrap_or_default(), p.message.clone()))
            .collect();
        let expected = [
            (
                "spec.rules[0].http.paths[2].backend.service",
                "Service shop/ghost does not exist",
            ),
            (
                "spec.rules[0].http.paths[3].backend.service",
                "Service shop/web has no port named \"https\"",
            ),
            (
                "spec.rules[0].http.paths[4].backend.service",
                "Service shop/web has no port 81",
            ),
        ];
        assert_eq!(said.len(), expected.len(), "{said:?}");
        for ((field, message), (want_field, want)) in said.iter().zip(expected) {
            assert_eq!(field, want_field);
            assert!(message.starts_with(want) && message.contains("503"), "{message}");
        }
        assert!(problems.iter().all(|p| p.severity == Severity::Warning
            && p.object.as_ref().is_some_and(|o| o.name == "ours")
            && p.origin.as_ref().is_some_and(|o| o.file == file)));
    }

    #[test]
    fn explain_refuses_methods_as_the_proxy_does_and_says_what_it_checks_beyond_the_table() {
        let text = [
            SERVICE.to_owned(),
            ingress(
                "ours",
                "lb",
                &["{name: web, port: {number: 80}}", "{name: ghost, port: {number: 80}}"],
            ),
        ]
        .join("---\n");
        let snap = crate::source::file::parse_manifests(Path::new("/m/all.yaml"), &text);
        let (table, _) = routes(&snap, &lb_route::Config::default());
        let ask = |url: &'static str, method: http::Method| {
            let mut a = Ask::get(url, &[]);
            a.method = method;
            explain_in(&table, Some(&snap), &a).unwrap()
        };
        assert_eq!(ask("http://ours.example/p0", http::Method::GET).status, 200);
        assert_eq!(ask("http://ours.example/p0", http::Method::TRACE).status, 405);
        let lower = http::Method::from_bytes(b"get").unwrap();
        assert_eq!(ask("http://ours.example/p0", lower).status, 400);
        // The routing decision stands; the 503 the proxy gives is said.
        let ghost = ask("http://ours.example/p1", http::Method::GET);
        assert_eq!(ghost.status, 200);
        assert!(
            ghost.why.contains("answers 503: Service shop/ghost does not exist"),
            "{}",
            ghost.why
        );
        assert!(!ask("http://ours.example/p0", http::Method::GET).why.contains("answers"));
        // Basic auth: without the password, the proxy answers 401.
        let guarded = ingress("guarded", "lb", &["{name: web, port: {number: 80}}"]).replace(
            "namespace: shop}",
            "namespace: shop, annotations: {nginx.ingress.kubernetes.io/auth-type: basic, \
             nginx.ingress.kubernetes.io/auth-secret: users}}",
        );
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: shop}\n\
                      data: {auth: YW5uOntTSEF9R3BIV0wzeW1jNWxpV2tOb3BxdGRTanVxWUhNPQ==}\n";
        let text = [SERVICE, &guarded, secret].join("---\n");
        let snap = crate::source::file::parse_manifests(Path::new("/m/all.yaml"), &text);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let (table, _) = routes(&snap, &lb_route::Config::default());
        let ask = |headers: &[String]| {
            explain_in(&table, Some(&snap), &Ask::get("http://guarded.example/p0", headers)).unwrap()
        };
        let bare = ask(&[]);
        assert_eq!(bare.status, 200);
        assert!(bare.why.contains("answers 401"), "{}", bare.why);
        let with = ask(&["Authorization: Basic YW5uOnB3".to_owned()]);
        assert!(!with.why.contains("answers"), "{}", with.why);
    }
}
