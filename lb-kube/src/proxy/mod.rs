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

use lb_route::{Decision, PathKind, Request, RouteTable};
use serde::Serialize;

use crate::objects::{Object, ObjectRef};
use crate::source::file::FileSource;
use crate::source::{Origin, Problem, Severity, Snapshot};

/// Service port names to numbers, read from the Services of a snapshot.
#[derive(Debug, Default)]
pub struct ServicePorts(HashMap<(String, String, String), u16>);

impl ServicePorts {
    /// Collects every named port of every Service.
    pub fn from_snapshot(snap: &Snapshot) -> Self {
        let mut map = HashMap::new();
        for (_, o) in &snap.objects {
            let Object::Service(s) = o else { continue };
            let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = s.metadata.name.clone().unwrap_or_default();
            for p in s.spec.iter().flat_map(|spec| spec.ports.iter().flatten()) {
                if let (Some(pn), Ok(n)) = (&p.name, u16::try_from(p.port)) {
                    map.insert((ns.clone(), name.clone(), pn.clone()), n);
                }
            }
        }
        Self(map)
    }
}

impl lb_route::PortResolver for ServicePorts {
    fn resolve(&self, namespace: &str, service: &str, port: &str) -> Option<u16> {
        self.0
            .get(&(namespace.to_owned(), service.to_owned(), port.to_owned()))
            .copied()
    }
}

/// Compiles the Ingresses of a snapshot. Route-table problems are returned
/// with the file and document of the Ingress they are about.
pub fn routes(snap: &Snapshot, config: &lb_route::Config) -> (RouteTable, Vec<Problem>) {
    routes_cached(snap, config, &mut lb_route::RegexCache::default())
}

/// What one table build leaves for the next: the compiled regexes, and the
/// last version of each Ingress that was served.
#[derive(Debug, Default)]
pub struct Rebuild {
    /// Regexes the last table took.
    pub regexes: lb_route::RegexCache,
    /// The last version of each Ingress that was served, by namespace and
    /// name: an edit that breaks an Ingress (a bad path type, port or
    /// annotation) leaves this one serving, and says so.
    last_good: HashMap<(String, String), lb_route::Ingress>,
}

/// [`routes`] for a serving proxy: regexes the last build compiled are
/// reused, and an Ingress that no longer builds keeps its last good
/// version serving (reported with the error), as the source does for an
/// object it cannot read.
pub fn routes_kept(snap: &Snapshot, config: &lb_route::Config, rebuild: &mut Rebuild) -> (RouteTable, Vec<Problem>) {
    type Key = (String, String);
    let key = |i: &lb_route::Ingress| (i.metadata.namespace().to_owned(), i.metadata.name.clone());
    let served = |t: &RouteTable| -> std::collections::HashSet<Key> {
        t.ingresses().map(|r| (r.namespace.clone(), r.name.clone())).collect()
    };
    let (mut table, mut problems, mut ingresses) = routes_of(snap, config, &mut rebuild.regexes, |_| {});
    let first = served(&table);
    // Left out for an error of its own (not for another class, not
    // deleted and made again), and not for an error in what guards it: an
    // edit that asks for authentication or an allowlist and does not
    // build must not leave the open version serving.
    let of = |p: &Problem| -> Option<Key> {
        let o = p
            .object
            .as_ref()
            .filter(|o| o.kind == "Ingress" && p.severity == Severity::Error)?;
        Some((o.namespace.clone(), o.name.clone()))
    };
    let broken: std::collections::HashSet<Key> = problems.iter().filter_map(of).collect();
    let guarding = |p: &Problem| {
        p.field.as_deref().is_some_and(|f| {
            let f = f.to_ascii_lowercase();
            f.contains("annotations")
                && ["auth", "source-range", "allowlist", "denylist"]
                    .iter()
                    .any(|g| f.contains(g))
        })
    };
    let guarded: std::collections::HashSet<Key> = problems.iter().filter(|p| guarding(p)).filter_map(of).collect();
    let kept: Vec<Key> = ingresses
        .iter()
        .filter(|i| {
            let k = key(i);
            !first.contains(&k)
                && broken.contains(&k)
                && !guarded.contains(&k)
                && rebuild
                    .last_good
                    .get(&k)
                    .is_some_and(|g| g != *i && g.metadata.creation_timestamp == i.metadata.creation_timestamp)
        })
        .map(key)
        .collect();
    if !kept.is_empty() {
        // Built again with the last good versions in their place; the
        // errors of the versions in force in the files are what is said.
        let last_good = &rebuild.last_good;
        let (again, _, adjusted) = routes_of(snap, config, &mut rebuild.regexes, |list| {
            for ing in list.iter_mut() {
                if let Some(good) = last_good.get(&key(ing)).filter(|_| kept.contains(&key(ing))) {
                    *ing = good.clone();
                }
            }
        });
        let now = served(&again);
        for p in &mut problems {
            if let Some(o) = &p.object
                && o.kind == "Ingress"
                && p.severity == Severity::Error
                && kept.contains(&(o.namespace.clone(), o.name.clone()))
                && now.contains(&(o.namespace.clone(), o.name.clone()))
            {
                p.message.push_str("; its last good version keeps serving");
            }
        }
        table = again;
        ingresses = adjusted;
    }
    let now = served(&table);
    rebuild.last_good = ingresses
        .into_iter()
        .filter(|i| now.contains(&key(i)))
        .map(|i| (key(&i), i))
        .collect();
    (table, problems)
}

/// [`routes`], reusing the regexes `cache` kept from the last build.
pub fn routes_cached(
    snap: &Snapshot,
    config: &lb_route::Config,
    cache: &mut lb_route::RegexCache,
) -> (RouteTable, Vec<Problem>) {
    let (table, problems, _) = routes_of(snap, config, cache, |_| {});
    (table, problems)
}

/// Builds the table of `snap`'s Ingresses, after `adjust` has seen them.
fn routes_of(
    snap: &Snapshot,
    config: &lb_route::Config,
    cache: &mut lb_route::RegexCache,
    adjust: impl FnOnce(&mut Vec<lb_route::Ingress>),
) -> (RouteTable, Vec<Problem>, Vec<lb_route::Ingress>) {
    let mut ingresses = Vec::new();
    let mut classes = Vec::new();
    let mut origins: HashMap<String, Option<Origin>> = HashMap::new();
    for (origin, o) in &snap.objects {
        match o {
            Object::Ingress(i) => {
                let ing = lb_route::Ingress::from(&**i);
                origins.insert(
                    format!("Ingress {}/{}", ing.metadata.namespace(), ing.metadata.name),
                    origin.clone(),
                );
                ingresses.push(ing);
            }
            Object::IngressClass(c) => {
                let class = lb_route::IngressClass::from((**c).clone());
                origins.insert(format!("IngressClass {}", class.metadata.name), origin.clone());
                classes.push(class);
            }
            _ => {}
        }
    }
    adjust(&mut ingresses);
    let ports = ServicePorts::from_snapshot(snap);
    let build = RouteTable::build_cached(&ingresses, &classes, &ports, config, cache);
    let problems = build
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
    if !quirks.is_empty() {
        explained.why = format!("{} [{quirks}]", explained.why);
    }
    Ok(explained)
}

/// Reads `dir` and decides where `url` goes. Returns the answer and every
/// problem met in the manifests (an invalid Ingress does not route).
pub fn explain(dir: &Path, ask: &Ask<'_>, config: &lb_route::Config) -> Result<(Explain, Vec<Problem>), ExplainError> {
    let snap = FileSource::new(dir).read().map_err(|source| ExplainError::Read {
        dir: dir.display().to_string(),
        source,
    })?;
    let (table, mut problems) = routes(&snap, config);
    let answer = explain_with(&table, ask)?;
    let mut all = snap.problems;
    all.append(&mut problems);
    Ok((answer, all))
}
