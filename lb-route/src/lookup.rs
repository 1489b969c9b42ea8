//! One request in, one decision out.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::annotations::{Canary, Cors, RouteOptions};
use crate::host::canonical_host;
use crate::table::{BackendPort, IngressRef, PathKind, Route, RouteTable};
use crate::target::{Target, TargetError};

/// What the table needs to know about a request.
#[derive(Debug, Clone, Copy)]
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
        Self {
            method: &http::Method::GET,
            https: false,
            host: Some(host),
            target,
            client: None,
            headers: None,
            sample: None,
        }
    }
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
    /// Headers the proxy adds to the backend's response (CORS).
    pub response_headers: Vec<(&'static str, String)>,
    /// Whether the backend is the canary alternative of the matched route.
    pub canary: bool,
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
        status: u16,
        /// The `Location`.
        location: String,
    },
    /// Answer with an error status and nothing routed (e.g. 503 when the
    /// backend's port name is unknown).
    Deny {
        /// The status.
        status: u16,
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
    pub fn status(&self) -> u16 {
        match self {
            Decision::Forward(_) => 200,
            Decision::Preflight { .. } => 204,
            Decision::Redirect { status, .. } | Decision::Deny { status, .. } => *status,
            Decision::BadRequest(TargetError::TooLong(_)) => 414,
            Decision::BadRequest(_) => 400,
            Decision::NotFound => 404,
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
    /// assert_eq!(build.table.lookup(&Request::get("shop.example.com", "/cartography")).status(), 404);
    /// ```
    pub fn lookup<'a>(&'a self, req: &Request<'a>) -> Decision<'a> {
        let target = match Target::parse(req.target, &self.policy) {
            Ok(t) => t,
            Err(e) => return Decision::BadRequest(e),
        };
        // An absolute-form target's authority overrides Host (RFC 9112 §3.2.2).
        let authority = target.authority.or(req.host).unwrap_or("");
        let host = canonical_host(authority);
        let https = req.https || target.https == Some(true);
        if !self.www.is_empty()
            && let Some((to, code)) = self.www.get(host.as_ref())
        {
            let scheme = if https { "https" } else { "http" };
            return Decision::Redirect {
                status: *code,
                location: format!("{scheme}://{to}{}", target.path_and_query()),
            };
        }
        let Some(main) = self.route_for(&host, &target.path) else {
            return Decision::NotFound;
        };
        let options = &self.options[main.ingress as usize];
        if !main.plain {
            if let Some(d) = self.before_forward(main, req, &target, (authority, &host), https) {
                return d;
            }
        } else if !https && self.has_certificate(&host) && options.ssl_redirect {
            return https_redirect(&host, &target, options);
        }
        // The canary alternative, if its rules pick it; the main route's
        // options still apply (as in ingress-nginx).
        let route = match main.canary.map(|c| &self.routes[c as usize]) {
            Some(c)
                if self.options[c.ingress as usize]
                    .canary
                    .as_ref()
                    .is_some_and(|k| picks_canary(k, req)) =>
            {
                c
            }
            _ => main,
        };
        let ingress = self.ingress(route);
        let port = match &route.backend.port {
            BackendPort::Number(n) => *n,
            BackendPort::Unresolved(name) => {
                return Decision::Deny {
                    status: 503,
                    reason: format!("service {} has no port named {name:?}", route.backend.service),
                    ingress: Some(ingress),
                };
            }
        };
        // A plain route has no rewrite and no upstream-vhost: its options
        // are not even read.
        let rewrite = if main.plain {
            None
        } else {
            options.rewrite_target.as_ref()
        };
        let (upstream_path, x_forwarded_prefix) = match rewrite {
            Some(t) if !main.path.is_empty() => {
                let caps = main.regex.as_ref().and_then(|re| re.captures(&target.path));
                let mut out = String::with_capacity(t.len() + 16);
                let mut chars = t.chars().peekable();
                while let Some(c) = chars.next() {
                    match (c, chars.peek().and_then(|d| d.to_digit(10))) {
                        ('$', Some(n)) if n > 0 => {
                            chars.next();
                            if let Some(m) = caps.as_ref().and_then(|c| c.get(n as usize)) {
                                out.push_str(m.as_str());
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
        Decision::Forward(Forward {
            ingress,
            service: &route.backend.service,
            canary: !std::ptr::eq(route, main),
            port,
            upstream_path,
            upstream_host: if main.plain {
                None
            } else {
                options.upstream_vhost.as_deref()
            }
            .or(req.host)
            .unwrap_or(authority),
            matched: (!main.path.is_empty()).then_some((&*main.path, main.kind)),
            x_forwarded_prefix,
            response_headers: match (main.plain, &options.cors) {
                (false, Some(cors)) => {
                    let origin = req
                        .headers
                        .and_then(|h| h.get(http::header::ORIGIN))
                        .and_then(|v| v.to_str().ok());
                    cors_headers(cors, origin, false)
                }
                _ => Vec::new(),
            },
            options,
        })
    }
}

impl RouteTable {
    /// Redirects and access checks, in the order of ingress-nginx's
    /// phases: server redirects (app-root), location redirects, the https
    /// redirect, then source ranges.
    fn before_forward<'a>(
        &'a self,
        route: &Route,
        req: &Request<'a>,
        target: &Target<'_>,
        (authority, host): (&str, &str),
        https: bool,
    ) -> Option<Decision<'a>> {
        let options = &self.options[route.ingress as usize];
        let scheme = if https { "https" } else { "http" };
        if let Some(root) = &options.app_root
            && target.path == "/"
        {
            return Some(Decision::Redirect {
                status: 302,
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
        if !https && (options.force_ssl_redirect || (options.ssl_redirect && self.has_certificate(host))) {
            return Some(https_redirect(host, target, options));
        }
        if !options.allow.is_empty() || !options.deny.is_empty() {
            let allowed = req.client.is_some_and(|ip| {
                !options.deny.iter().any(|n| n.contains(&ip))
                    && (options.allow.is_empty() || options.allow.iter().any(|n| n.contains(&ip)))
            });
            if !allowed {
                return Some(Decision::Deny {
                    status: 403,
                    ingress: Some(self.ingress(route)),
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
        status: 308,
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
/// or `always`/`never`), then the cookie (`always`/`never`), then the weight.
fn picks_canary(c: &Canary, req: &Request<'_>) -> bool {
    if let (Some(name), Some(headers)) = (&c.by_header, req.headers)
        && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
    {
        match &c.by_header_value {
            Some(want) if v == want => return true,
            Some(_) => {}
            None if v == "always" => return true,
            None if v == "never" => return false,
            None => {}
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
