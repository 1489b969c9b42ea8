//! One request in, one decision out.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::annotations::{Canary, Cors, RouteOptions};
use crate::bucket::{Hit, HostRoutes};
use crate::host::{canonical_host, wildcard_suffix};
use crate::shard::{HostKey, RouteTable};
use crate::table::{self, BackendPort, IngressRef, PathKind, Shard};
use crate::target::{Target, TargetError};
use http::StatusCode;

/// What the table needs to know about a request: [`Request::get`] or
/// [`Request::new`], then the `with_*` methods.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Request<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// Whether it came over TLS.
    pub https: bool,
    /// The `Host` header (or `:authority`); `None` when absent.
    pub host: Option<&'a str>,
    /// The request target as received (origin-form, absolute-form or `*`).
    pub target: &'a str,
    /// The client address, for allowlists.
    pub client: Option<IpAddr>,
    /// The request headers, for canary and affinity.
    pub headers: Option<&'a http::HeaderMap>,
    /// A uniformly random number, for `canary-weight` (the table draws no
    /// randomness itself). `None`: the weight rule does not apply.
    pub sample: Option<u32>,
}

impl<'a> Request<'a> {
    /// A plain-http GET of `target` with `Host: host`.
    pub fn get(host: &'a str, target: &'a str) -> Self {
        Self::new(&http::Method::GET, Some(host), target)
    }

    /// A plain-http request of `target` with `method` and the `Host`
    /// header `host` (`None` when absent).
    pub fn new(method: &'a http::Method, host: Option<&'a str>, target: &'a str) -> Self {
        Self {
            method,
            https: false,
            host,
            target,
            client: None,
            headers: None,
            sample: None,
        }
    }

    /// Over TLS (or not).
    pub fn with_https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    /// From this client address (for allow and deny lists).
    pub fn with_client(mut self, client: IpAddr) -> Self {
        self.client = Some(client);
        self
    }

    /// With these headers (for CORS, canary and affinity).
    pub fn with_headers(mut self, headers: &'a http::HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// With a uniformly random sample for `canary-weight`.
    pub fn with_sample(mut self, sample: u32) -> Self {
        self.sample = Some(sample);
        self
    }
}

/// The ingress-nginx behaviours of [`Mode::IngressNginx`](crate::Mode)
/// that decided a request where the spec would have decided otherwise
/// (always empty in strict mode). The proxy logs them; `lb-proxy explain`
/// shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Quirks(u8);

impl Quirks {
    /// None.
    pub const NONE: Quirks = Quirks(0);
    /// A regex path or rewrite on the host made every path of it a
    /// case-insensitive prefix regex, the first match by length winning,
    /// and that picked another route than the spec's matching would.
    pub const REGEX_HOST: Quirks = Quirks(1);
    /// A 301 added a trailing slash (a path `x/` exists, `x` does not).
    pub const TRAILING_SLASH_REDIRECT: Quirks = Quirks(2);
    /// No path matched, and the annotations of the host's first Ingress
    /// applied (to its default backend, or to the 404).
    pub const ROOT_OPTIONS: Quirks = Quirks(4);

    const ALL: [(Quirks, &'static str); 3] = [
        (
            Quirks::REGEX_HOST,
            "ingress-nginx regex host: paths matched as case-insensitive prefix regexes, longest first",
        ),
        (Quirks::TRAILING_SLASH_REDIRECT, "ingress-nginx trailing-slash redirect"),
        (
            Quirks::ROOT_OPTIONS,
            "ingress-nginx root location: the host's first Ingress's annotations apply",
        ),
    ];

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether all of `other` are in `self`.
    pub fn contains(self, other: Quirks) -> bool {
        self.0 & other.0 == other.0
    }

    /// What each one is, in words.
    pub fn descriptions(self) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(move |(q, _)| self.contains(*q))
            .map(|(_, d)| d)
    }
}

impl std::ops::BitOr for Quirks {
    type Output = Quirks;

    fn bitor(self, rhs: Quirks) -> Quirks {
        Quirks(self.0 | rhs.0)
    }
}

impl std::fmt::Display for Quirks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, d) in self.descriptions().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(d)?;
        }
        Ok(())
    }
}

/// What the table found for a host and path.
pub(crate) struct Routed<'t> {
    /// The route, or the default backend that catches the request.
    pub(crate) route: Option<Hit<'t>>,
    /// The Ingress whose options apply.
    pub(crate) options: u32,
    pub(crate) quirks: Quirks,
}

/// Where a request goes. Borrows from the table and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'a> {
    /// The Ingress whose rule (or default backend) matched.
    pub ingress: &'a IngressRef,
    /// The Service, in that Ingress's namespace.
    pub service: &'a str,
    /// The Service port.
    pub port: u16,
    /// The path and query to send upstream.
    pub upstream_path: Cow<'a, str>,
    /// The `Host` to send upstream.
    pub upstream_host: &'a str,
    /// The rule path that matched (`None` for a default backend).
    pub matched: Option<(&'a str, PathKind)>,
    /// `X-Forwarded-Prefix` to send (set when a rewrite happened).
    pub x_forwarded_prefix: Option<&'a str>,
    /// The Ingress's options the proxy executes (body size, timeouts,
    /// backend protocol …).
    pub options: &'a RouteOptions,
    /// Whether the backend is the canary alternative of the matched route.
    pub canary: bool,
}

impl Forward<'_> {
    /// The headers the proxy adds to the backend's response: CORS, for a
    /// request with this `Origin` (none when CORS is off or the origin is
    /// not allowed).
    pub fn response_headers(&self, origin: Option<&str>) -> Vec<(&'static str, String)> {
        match &self.options.cors {
            Some(cors) => cors_headers(cors, origin, false),
            None => Vec::new(),
        }
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision<'a> {
    /// Proxy it.
    Forward(Forward<'a>),
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 307, 308 …
        status: StatusCode,
        /// The `Location`.
        location: String,
    },
    /// Answer with an error status and nothing routed (e.g. 503 when the
    /// backend's port name is unknown).
    Deny {
        /// The status.
        status: StatusCode,
        /// The Ingress that decided, if any.
        ingress: Option<&'a IngressRef>,
        /// Why.
        reason: String,
    },
    /// A CORS preflight answered by the proxy: 204 with these headers.
    Preflight {
        /// The `Access-Control-*` headers.
        headers: Vec<(&'static str, String)>,
    },
    /// The request target is malformed: 400 (414 when too long).
    BadRequest(TargetError),
    /// No rule and no default backend: 404.
    NotFound,
}

impl Decision<'_> {
    /// The HTTP status the proxy answers with (200 for a forward: the
    /// backend's own status is what the client gets).
    pub fn status(&self) -> StatusCode {
        match self {
            Decision::Forward(_) => StatusCode::OK,
            Decision::Preflight { .. } => StatusCode::NO_CONTENT,
            Decision::Redirect { status, .. } | Decision::Deny { status, .. } => *status,
            Decision::BadRequest(TargetError::TooLong(_)) => StatusCode::URI_TOO_LONG,
            Decision::BadRequest(_) => StatusCode::BAD_REQUEST,
            Decision::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

impl RouteTable {
    /// Decides where a request goes.
    ///
    /// ```
    /// use lb_route::{Config, Decision, Ingress, Request, RouteTable};
    ///
    /// let ing: Ingress = serde_json::from_str(r#"{
    ///   "metadata": {"name": "web", "namespace": "shop"},
    ///   "spec": {"ingressClassName": "lb", "rules": [{"host": "shop.example.com", "http": {"paths": [
    ///     {"path": "/cart", "pathType": "Prefix", "backend": {"service": {"name": "cart", "port": {"number": 8080}}}}
    ///   ]}}]}
    /// }"#).unwrap();
    /// let build = RouteTable::build(&[ing], &[], &(), &Config::default());
    /// assert!(build.problems.is_empty());
    /// match build.table.lookup(&Request::get("Shop.Example.com:80", "/cart/items?id=7")) {
    ///     Decision::Forward(f) => {
    ///         assert_eq!((f.service, f.port), ("cart", 8080));
    ///         assert_eq!(f.upstream_path, "/cart/items?id=7");
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// assert_eq!(build.table.lookup(&Request::get("shop.example.com", "/cartography")).status(), 404u16);
    /// ```
    pub fn lookup<'a>(&'a self, req: &Request<'a>) -> Decision<'a> {
        let mut quirks = Quirks::NONE;
        self.decide(req, &mut quirks)
    }

    /// Like [`RouteTable::lookup`], also telling which ingress-nginx
    /// behaviours decided the answer (hosts in
    /// [`Mode::IngressNginx`](crate::Mode) only).
    ///
    /// ```
    /// use lb_route::{ClassConfig, Config, Decision, Ingress, Mode, Quirks, Request, RouteTable};
    ///
    /// // The Kubernetes docs' classic: `rewrite-target: /` on Prefix /testpath.
    /// let ing: Ingress = serde_json::from_str(r#"{
    ///   "metadata": {"name": "legacy", "annotations": {"nginx.ingress.kubernetes.io/rewrite-target": "/"}},
    ///   "spec": {"ingressClassName": "lb", "rules": [{"host": "old.example.com", "http": {"paths": [
    ///     {"path": "/testpath", "pathType": "Prefix", "backend": {"service": {"name": "old", "port": {"number": 80}}}}
    ///   ]}}]}
    /// }"#).unwrap();
    /// let config = |mode| Config::default().with_classes(ClassConfig::default().with_mode(mode));
    /// let req = Request::get("old.example.com", "/testpathology");
    /// // The spec: Prefix is element-wise, so no match.
    /// let strict = RouteTable::build(&[ing.clone()], &[], &(), &config(Mode::Strict)).table;
    /// assert_eq!(strict.lookup_traced(&req), (Decision::NotFound, Quirks::NONE));
    /// // ingress-nginx: the rewrite makes the path a prefix regex, and says so.
    /// let compat = RouteTable::build(&[ing], &[], &(), &config(Mode::IngressNginx)).table;
    /// match compat.lookup_traced(&req) {
    ///     (Decision::Forward(f), quirks) => {
    ///         assert_eq!((f.service, &*f.upstream_path), ("old", "/"));
    ///         assert_eq!(quirks, Quirks::REGEX_HOST);
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn lookup_traced<'a>(&'a self, req: &Request<'a>) -> (Decision<'a>, Quirks) {
        let mut quirks = Quirks::NONE;
        let d = self.decide(req, &mut quirks);
        (d, quirks)
    }

    /// The decision; the quirks that made it are added to `quirks`.
    fn decide<'a>(&'a self, req: &Request<'a>, quirks: &mut Quirks) -> Decision<'a> {
        // Matched in place (moving the parsed target costs a copy).
        let parsed = Target::parse(req.target, &self.policy);
        let target = match &parsed {
            Ok(t) => t,
            Err(e) => return Decision::BadRequest(e.clone()),
        };
        // An absolute-form target's authority overrides Host (RFC 9112 §3.2.2).
        let authority = target.authority.or(req.host).unwrap_or("");
        let host = canonical_host(authority);
        // The shard of the exact host holds its bucket and its www twin.
        let home = self.shard(HostKey::Exact(&host));
        // A malformed Host is a 400 (also when the target names the host,
        // RFC 9112 §3.2). A host that is a rule's exact host (or its www
        // twin) is a valid name by construction: only its port is checked,
        // which keeps the common request off the full scan.
        let exact = home.exact_hosts.get(&host);
        let named = exact.is_some() || (!home.www.is_empty() && home.www.contains_key(host.as_ref()));
        let valid = if named {
            crate::host::valid_port(authority)
        } else {
            crate::host::valid_authority(authority)
        };
        let host_header_bad = target.authority.is_some() && req.host.is_some_and(|h| !crate::host::valid_authority(h));
        if !valid || host_header_bad {
            return Decision::BadRequest(TargetError::Host);
        }
        let https = req.https || target.https == Some(true);
        let scheme = if https { "https" } else { "http" };
        if !home.www.is_empty()
            && let Some((to, code)) = home.www.get(host.as_ref())
        {
            let location = format!("{scheme}://{to}{}", target.path_and_query());
            return Decision::Redirect {
                status: *code,
                location,
            };
        }
        let (shard, hr) = match exact {
            Some(hr) => (home, Some(hr)),
            None => self.bucket_beyond_exact(home, &host),
        };
        shard.decide(self, req, target, (authority, &host), https, hr, quirks)
    }

    /// The wildcard bucket covering `host`, else the host-less one (which
    /// every shard holds), and the shard it is in.
    fn bucket_beyond_exact<'t>(&'t self, home: &'t Shard, host: &str) -> (&'t Shard, Option<&'t HostRoutes>) {
        if let Some(suffix) = wildcard_suffix(host) {
            let shard = self.shard(HostKey::Wildcard(suffix));
            if let Some(hr) = shard.wildcard_hosts.get(suffix) {
                return (shard, Some(hr));
            }
        }
        (home, home.any_host.as_ref())
    }
}

impl Shard {
    /// The decision for a request to host bucket `hr` of this shard (the
    /// rest of [`RouteTable::lookup`]); the quirks that made it are added
    /// to `quirks`.
    #[allow(clippy::too_many_arguments)]
    fn decide<'a>(
        &'a self,
        table: &RouteTable,
        req: &Request<'a>,
        target: &Target<'a>,
        (authority, host): (&'a str, &str),
        https: bool,
        hr: Option<&'a HostRoutes>,
        quirks: &mut Quirks,
    ) -> Decision<'a> {
        let scheme = if https { "https" } else { "http" };
        let compat = hr.and_then(|h| self.extra(h)).and_then(|x| x.compat.as_ref());
        if let Some(c) = compat
            && c.slash.binary_search_by(|p| (**p).cmp(&*target.path)).is_ok()
        {
            let query = target.query.map(|q| format!("?{q}")).unwrap_or_default();
            let location = format!("{scheme}://{host}{}/{query}", target.path);
            *quirks = *quirks | Quirks::TRAILING_SLASH_REDIRECT;
            return Decision::Redirect {
                status: StatusCode::MOVED_PERMANENTLY,
                location,
            };
        }
        let routed = self.route_for(hr, &target.path);
        if routed.route.is_none() && !routed.quirks.contains(Quirks::ROOT_OPTIONS) {
            return Decision::NotFound;
        }
        let mut noted = routed.quirks;
        // The route knows what a plain forward needs of its options.
        let (options, plain, ssl_redirect) = match routed.route {
            Some(r) if r.ingress == routed.options => (&self.option_sets[r.options as usize], r.plain, r.ssl_redirect),
            _ => {
                let options = self.options(routed.options);
                (options, table::plain(options), options.ssl_redirect)
            }
        };
        if !plain {
            if let Some(d) = self.before_forward(table, routed.options, options, req, target, (authority, host), https)
            {
                *quirks = *quirks | noted;
                return d;
            }
        } else if ssl_redirect && !https && table.has_certificate(host) {
            *quirks = *quirks | noted;
            return https_redirect(host, target, options);
        }
        let Some(main) = routed.route else {
            // The first Ingress's options changed nothing: a plain 404.
            return Decision::NotFound;
        };
        // The canary alternative, if its rules pick it; the main route's
        // options still apply (as in ingress-nginx).
        let canary = main
            .canary
            .then(|| self.routes[main.route as usize].canary)
            .flatten()
            .map(|c| Hit::of(c, &self.routes[c as usize]))
            .filter(|c| {
                self.options(c.ingress)
                    .canary
                    .as_ref()
                    .is_some_and(|k| picks_canary(k, req))
            });
        let route = canary.unwrap_or(main);
        let ingress = &self.ingresses[route.ingress as usize];
        let Some(port) = route.port else {
            let name = match &self.routes[route.route as usize].backend.port {
                BackendPort::Unresolved(name) => name.as_str(),
                BackendPort::Number(_) => "",
            };
            // (The Service may not exist at all: the table was told of
            // none with this port.)
            let reason = format!("no Service {} with a port named {name:?}", route.service);
            *quirks = *quirks | noted;
            return Decision::Deny {
                status: StatusCode::SERVICE_UNAVAILABLE,
                reason,
                ingress: Some(ingress),
            };
        };
        // Plain options have no rewrite and no upstream-vhost: they are
        // not even read.
        let rewrite = if plain { None } else { options.rewrite_target.as_ref() };
        let (upstream_path, x_forwarded_prefix) = match rewrite {
            // A default backend is rewritten only the ingress-nginx way
            // (its root location has the rewrite).
            Some(t) if !main.path.is_empty() || compat.is_some() => {
                if main.path.is_empty() {
                    noted = noted | Quirks::ROOT_OPTIONS;
                }
                let regex = self.routes[main.route as usize].regex.as_ref();
                let caps = regex.and_then(|re| re.captures(&target.path));
                let mut out = String::with_capacity(t.len() + 16);
                let mut chars = t.chars().peekable();
                while let Some(c) = chars.next() {
                    match (c, chars.peek().and_then(|d| d.to_digit(10))) {
                        ('$', Some(n)) if n > 0 => {
                            chars.next();
                            if let Some(m) = caps.as_ref().and_then(|c| c.get(n as usize)) {
                                out.push_str(&m);
                            }
                        }
                        _ => out.push(c),
                    }
                }
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                if let Some(q) = target.query {
                    out.push('?');
                    out.push_str(q);
                }
                (Cow::Owned(out), options.x_forwarded_prefix.as_deref())
            }
            _ => (target.path_and_query(), None),
        };
        *quirks = *quirks | noted;
        Decision::Forward(Forward {
            ingress,
            service: route.service,
            canary: canary.is_some(),
            port,
            upstream_path,
            upstream_host: if plain { None } else { options.upstream_vhost.as_deref() }
                .or(req.host)
                .unwrap_or(authority),
            matched: (!main.path.is_empty()).then_some((main.path, main.kind)),
            x_forwarded_prefix,
            options,
        })
    }
}

impl Shard {
    /// Redirects and access checks, in the order of ingress-nginx's
    /// phases: server redirects (app-root), location redirects, the https
    /// redirect, then source ranges; `options` are those of Ingress
    /// `ingress`.
    #[allow(clippy::too_many_arguments)]
    fn before_forward<'a>(
        &'a self,
        table: &RouteTable,
        ingress: u32,
        options: &RouteOptions,
        req: &Request<'a>,
        target: &Target<'_>,
        (authority, host): (&str, &str),
        https: bool,
    ) -> Option<Decision<'a>> {
        let scheme = if https { "https" } else { "http" };
        if let Some(root) = &options.app_root
            && target.path == "/"
        {
            return Some(Decision::Redirect {
                status: StatusCode::FOUND,
                location: format!("{scheme}://{authority}{root}"),
            });
        }
        if let Some(r) = &options.redirect {
            return Some(Decision::Redirect {
                status: r.code,
                location: r.url.clone(),
            });
        }
        if let Some(cors) = &options.cors
            && req.method == http::Method::OPTIONS
            && let Some(origin) = req.headers.and_then(|h| h.get(http::header::ORIGIN))
        {
            return Some(Decision::Preflight {
                headers: cors_headers(cors, origin.to_str().ok(), true),
            });
        }
        if !https && (options.force_ssl_redirect || (options.ssl_redirect && table.has_certificate(host))) {
            return Some(https_redirect(host, target, options));
        }
        if !options.allow.is_empty() || !options.deny.is_empty() {
            let allowed = req.client.is_some_and(|ip| {
                !options.deny.iter().any(|n| n.contains(&ip))
                    && (options.allow.is_empty() || options.allow.iter().any(|n| n.contains(&ip)))
            });
            if !allowed {
                return Some(Decision::Deny {
                    status: StatusCode::FORBIDDEN,
                    ingress: Some(&self.ingresses[ingress as usize]),
                    reason: "client address not allowed by the Ingress's source ranges".into(),
                });
            }
        }
        None
    }
}

/// 308 to https on the bare host, one trailing `/` stripped unless
/// `preserve-trailing-slash` (ingress-nginx's Lua redirect).
fn https_redirect<'a>(host: &str, target: &Target<'_>, options: &RouteOptions) -> Decision<'a> {
    let uri = target.path_and_query();
    let uri = match uri.strip_suffix('/') {
        Some(stripped) if !options.preserve_trailing_slash => stripped,
        _ => &uri,
    };
    Decision::Redirect {
        status: StatusCode::PERMANENT_REDIRECT,
        location: format!("https://{host}{uri}"),
    }
}

/// The `Access-Control-*` headers for a request with `origin` (none when
/// the origin is not allowed); a preflight also gets the max age.
fn cors_headers(cors: &Cors, origin: Option<&str>, preflight: bool) -> Vec<(&'static str, String)> {
    let Some(allow) = cors.origin_for(origin) else {
        return Vec::new();
    };
    let mut h = vec![
        ("access-control-allow-origin", allow),
        ("access-control-allow-methods", cors.allow_methods.clone()),
        ("access-control-allow-headers", cors.allow_headers.clone()),
    ];
    if cors.allow_credentials {
        h.push(("access-control-allow-credentials", "true".into()));
    }
    if !cors.expose_headers.is_empty() {
        h.push(("access-control-expose-headers", cors.expose_headers.clone()));
    }
    if preflight {
        h.push(("access-control-max-age", cors.max_age.to_string()));
    }
    h
}

/// ingress-nginx's canary order: the header (equal to the configured value,
/// else matching the configured pattern, else `always`/`never`), then the cookie (`always`/`never`), then the weight.
fn picks_canary(c: &Canary, req: &Request<'_>) -> bool {
    if let (Some(name), Some(headers)) = (&c.by_header, req.headers)
        && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
    {
        match (&c.by_header_value, &c.by_header_pattern) {
            (Some(want), _) if v == want => return true,
            (Some(_), _) => {}
            (None, Some(p)) if p.is_match(v) => return true,
            (None, Some(_)) => {}
            (None, None) if v == "always" => return true,
            (None, None) if v == "never" => return false,
            (None, None) => {}
        }
    }
    if let (Some(name), Some(headers)) = (&c.by_cookie, req.headers) {
        let cookie = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v);
        match cookie {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    req.sample.is_some_and(|r| r % c.weight_total < c.weight)
}
