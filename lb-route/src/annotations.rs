//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/…`) as typed
//! route options (reference/ingress.md §3.5). Every value is parsed by a
//! closed grammar; nothing is ever turned into configuration text.
//! Unknown annotations are ignored with a warning, `*-snippet` ones are
//! refused with a warning, and an invalid value is an error that disables
//! the Ingress carrying it.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;

/// The annotation prefix.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The protocol spoken to the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1.
    #[default]
    Http,
    /// HTTP/1.1 over TLS (the backend's certificate is not verified, as in
    /// ingress-nginx without `proxy-ssl-verify`).
    Https,
    /// gRPC (HTTP/2 cleartext).
    Grpc,
    /// gRPC over TLS.
    Grpcs,
}

/// How a route's requests are spread over its Service's endpoints
/// (`load-balance`; cookie affinity, when set, comes first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadBalance {
    /// `round_robin`: each endpoint in turn.
    #[default]
    RoundRobin,
    /// `ewma`: of two endpoints drawn at random, the one with the lower
    /// peak-EWMA latency times its requests in flight plus one (Finagle's
    /// and linkerd's Peak EWMA; ingress-nginx's `ewma` weighs a plain EWMA
    /// of latency).
    Ewma,
}

/// A configured redirect (`permanent-redirect`, `temporal-redirect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The status.
    pub code: http::StatusCode,
    /// The `Location`, verbatim.
    pub url: String,
}

/// What the annotations of one Ingress ask for. The rarer, larger
/// settings are boxed: the common set stays small to move and compare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteOptions {
    /// `use-regex`: ImplementationSpecific paths are regexes.
    pub use_regex: bool,
    /// `rewrite-target`: the upstream URI, with `$1`…`$9` from the path
    /// regex; the query is appended.
    pub rewrite_target: Option<String>,
    /// `x-forwarded-prefix`: sent as `X-Forwarded-Prefix` when a rewrite
    /// happens.
    pub x_forwarded_prefix: Option<String>,
    /// `app-root`: `GET /` is redirected (302) there.
    pub app_root: Option<String>,
    /// `permanent-redirect(-code)` or `temporal-redirect(-code)` (the
    /// temporal one wins when both are set, as in ingress-nginx).
    pub redirect: Option<Redirect>,
    /// `ssl-redirect` (default true): plain-http requests to a host with a
    /// certificate are redirected to https.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: redirect to https even without a certificate.
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash`: keep the trailing `/` in https redirects.
    pub preserve_trailing_slash: bool,
    /// `proxy-body-size` in bytes (`None`: the proxy's default; `Some(0)`:
    /// unlimited).
    pub proxy_body_size: Option<u64>,
    /// `proxy-connect-timeout`.
    pub connect_timeout: Option<Duration>,
    /// `proxy-read-timeout` (idle time between two reads).
    pub read_timeout: Option<Duration>,
    /// `proxy-send-timeout` (idle time between two writes).
    pub send_timeout: Option<Duration>,
    /// `backend-protocol`.
    pub backend_protocol: BackendProtocol,
    /// `load-balance`.
    pub load_balance: LoadBalance,
    /// `whitelist-source-range` / `allowlist-source-range`: only these
    /// clients (403 otherwise). Empty: everyone.
    pub allow: Vec<IpNet>,
    /// `denylist-source-range`: these clients get 403.
    pub deny: Vec<IpNet>,
    /// `upstream-vhost`: the `Host` sent upstream.
    pub upstream_vhost: Option<String>,
    /// `enable-cors` and `cors-*`.
    pub cors: Option<Box<Cors>>,
    /// `affinity: cookie` and `session-cookie-*`: sticky upstream choice
    /// (the proxy's balancer executes it).
    pub affinity: Option<Box<Affinity>>,
    /// `auth-type: basic` with `auth-secret` and `auth-realm`.
    pub basic_auth: Option<BasicAuth>,
    /// `auth-url` with `auth-signin` and `auth-response-headers`.
    pub external_auth: Option<Box<ExternalAuth>>,
    /// `canary: "true"` and its rules: this Ingress's backends are the
    /// alternatives of the Ingress serving the same host and path.
    pub canary: Option<Box<Canary>>,
    /// `from-to-www-redirect`: `www.` + host ↔ host, the form without
    /// rules redirecting to the one with them.
    pub from_to_www: bool,
    /// `http-redirect-code` for that redirect (default 308).
    pub www_redirect_code: http::StatusCode,
}

/// When a request goes to the canary backend (ingress-nginx's order: the
/// header, then the cookie, then the weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// `canary-by-header`: `always` → canary, `never` → main, other values
    /// fall through (unless `by_header_value` is set).
    pub by_header: Option<http::HeaderName>,
    /// `canary-by-header-value`: the header equal to this → canary.
    pub by_header_value: Option<String>,
    /// `canary-by-header-pattern`: the header matching this regex (found
    /// anywhere in the value, case-sensitive) → canary. Not used when
    /// `by_header_value` is set.
    pub by_header_pattern: Option<HeaderPattern>,
    /// `canary-by-cookie`: `always` → canary, `never` → main.
    pub by_cookie: Option<String>,
    /// `canary-weight`, out of `weight_total`.
    pub weight: u32,
    /// `canary-weight-total` (default 100).
    pub weight_total: u32,
}

/// A regex over a header value (linear time, bounded size; over bytes,
/// ASCII classes, as ingress-nginx's Lua matches it).
#[derive(Clone)]
pub struct HeaderPattern {
    pattern: Box<str>,
    regex: regex_automata::meta::Regex,
}

/// The pattern, not the compiled program.
impl std::fmt::Debug for HeaderPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeaderPattern").field(&self.pattern).finish()
    }
}

impl HeaderPattern {
    /// Compiles `pattern`; look-around and oversized patterns are refused.
    pub fn new(pattern: &str) -> Result<Self, String> {
        crate::pathregex::build(pattern, false)
            .map(|c| HeaderPattern {
                pattern: pattern.into(),
                regex: c.regex,
            })
            .map_err(|e| format!("is not a supported regex (linear-time, no look-around): {e}"))
    }

    /// Whether the pattern occurs in `value`.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The heap bytes the compiled pattern holds.
    pub(crate) fn memory_usage(&self) -> usize {
        self.pattern.len() + self.regex.memory_usage()
    }
}

impl PartialEq for HeaderPattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HeaderPattern {}

/// Cookie affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub cookie_name: String,
    /// `session-cookie-path` (default: the matched location path).
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-max-age`, seconds.
    pub max_age: Option<u64>,
    /// `session-cookie-expires`, seconds.
    pub expires: Option<u64>,
    /// `session-cookie-secure` (default: when the request is https).
    pub secure: Option<bool>,
    /// `session-cookie-samesite`: `None`, `Lax` or `Strict`.
    pub samesite: Option<String>,
    /// `affinity-mode: persistent` (default `balanced`).
    pub persistent: bool,
    /// `session-cookie-change-on-failure`.
    pub change_on_failure: bool,
}

/// ingress-nginx's defaults: cookie `INGRESSCOOKIE`, balanced.
impl Default for Affinity {
    fn default() -> Self {
        Self {
            cookie_name: "INGRESSCOOKIE".into(),
            path: None,
            domain: None,
            max_age: None,
            expires: None,
            secure: None,
            samesite: None,
            persistent: false,
            change_on_failure: false,
        }
    }
}

/// HTTP basic authentication against an htpasswd Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The Secret, in the Ingress's namespace.
    pub secret: String,
    /// `auth-realm`.
    pub realm: String,
    /// `auth-secret-type: auth-map`: every key of the Secret is a user and
    /// its value the hash; otherwise (`auth-file`) the key `auth` holds
    /// htpasswd lines.
    pub map: bool,
}

/// Authorization by a subrequest (the oauth2-proxy pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAuth {
    /// `auth-url`: 2xx allows, 401/403 deny with that status.
    pub url: String,
    /// `auth-signin`: where a 401 redirects instead (`rd=` the original URL).
    pub signin: Option<String>,
    /// `auth-response-headers`: copied from the auth response upstream.
    pub response_headers: Vec<String>,
}

/// A cookie attribute value: no separators, no control characters.
fn cookie_value(v: &str) -> Result<String, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b)) {
        Ok(v.to_owned())
    } else {
        Err("must be a cookie token (visible ASCII, no ';', ',', '\"' or '\\')".into())
    }
}

/// CORS as ingress-nginx answers it: preflights (`OPTIONS` with `Origin`)
/// get 204 from the proxy; other responses get the headers added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins (`*` alone: any); `https://*.foo.com` covers one label.
    pub allow_origin: Vec<String>,
    /// `cors-allow-methods`.
    pub allow_methods: String,
    /// `cors-allow-headers`.
    pub allow_headers: String,
    /// `cors-expose-headers` (empty: not sent).
    pub expose_headers: String,
    /// `cors-allow-credentials`.
    pub allow_credentials: bool,
    /// `cors-max-age`, seconds.
    pub max_age: u32,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            allow_origin: vec!["*".into()],
            allow_methods: "GET, PUT, POST, DELETE, PATCH, OPTIONS".into(),
            allow_headers: "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization".into(),
            expose_headers: String::new(),
            allow_credentials: true,
            max_age: 1_728_000,
        }
    }
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`:
    /// `*`, the origin echoed when listed, or `None` (not allowed).
    pub fn origin_for(&self, origin: Option<&str>) -> Option<String> {
        if self.allow_origin.iter().any(|o| o == "*") {
            return Some("*".into());
        }
        let origin = origin?;
        let lower = origin.to_ascii_lowercase();
        self.allow_origin
            .iter()
            .any(|allowed| {
                let allowed = allowed.to_ascii_lowercase();
                match allowed.split_once("://*.") {
                    Some((scheme, suffix)) => lower
                        .strip_prefix(&format!("{scheme}://"))
                        .and_then(|rest| rest.split_once('.'))
                        .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                    None => allowed == lower,
                }
            })
            .then(|| origin.to_owned())
    }
}

/// A comma-separated list of tokens (methods, header names).
fn tokens(v: &str) -> Result<String, String> {
    let ok = v.split(',').map(str::trim).all(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    });
    if ok {
        Ok(v.to_owned())
    } else {
        Err("must be a comma-separated list of names (letters, digits, '-', …)".into())
    }
}

/// Origins: `*`, or `scheme://host[:port]` entries, optionally `*.` wildcard hosts.
fn origins(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|o| {
            let rest = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
            let valid = o == "*"
                || rest.is_some_and(|r| {
                    !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:*".contains(&b))
                });
            if valid {
                Ok(o.to_owned())
            } else {
                Err(format!("{o:?} is not an origin (scheme://host[:port], or *)"))
            }
        })
        .collect()
}

/// One finding about one annotation: (annotation, message).
pub type Finding = (String, String);

/// Parsed annotations, with what was wrong (errors disable the Ingress)
/// and what was ignored (warnings).
#[derive(Debug, Default)]
pub struct Parsed {
    /// The options.
    pub options: RouteOptions,
    /// Invalid values.
    pub errors: Vec<Finding>,
    /// Ignored or refused annotations.
    pub warnings: Vec<Finding>,
}

/// A boolean as ingress-nginx reads one (Go's `strconv.ParseBool`).
pub(crate) fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("is not a boolean (true, false, 1, 0, t, f, TRUE, FALSE, True or False)".into()),
    }
}

/// Seconds, unitless, as ingress-nginx takes them.
/// A timeout in whole seconds, 1 to 86400 (0 would end every wait at once:
/// refused rather than served as random 504s).
fn seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<u32>() {
        Ok(s) if (1..=86_400).contains(&s) => Ok(Duration::from_secs(s.into())),
        _ => Err("is not a number of seconds (1 to 86400)".into()),
    }
}

/// nginx sizes: a number with an optional `k`/`m`/`g` suffix.
fn size(v: &str) -> Result<u64, String> {
    let (num, mult) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| "is not a size (a number with an optional k, m or g suffix, e.g. 8m; 0 = unlimited)".into())
}

/// No control characters (CR/LF injection), no spaces.
fn clean(v: &str) -> Result<&str, String> {
    if v.is_empty() || v.chars().any(|c| c.is_control() || c == ' ') {
        return Err("must be non-empty, without spaces or control characters".into());
    }
    Ok(v)
}

/// An absolute http(s) URL for a redirect.
fn url(v: &str) -> Result<String, String> {
    let v = clean(v)?;
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or("must be an absolute http:// or https:// URL")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("must name a host".into());
    }
    Ok(v.to_owned())
}

/// A path for `rewrite-target`: ingress-nginx's validator
/// `^/?[-._~a-zA-Z0-9/:$]*$`.
fn rewrite(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("is empty; write / to rewrite to the root".into());
    }
    if !v.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/:$".contains(c)) {
        return Err("may hold only letters, digits, '-', '.', '_', '~', '/', ':' and '$1'…'$9'".into());
    }
    // `$` only as `$1`…`$9`: nginx variables ($host, $request_uri) and
    // `$0` are not what lb substitutes.
    let b = v.as_bytes();
    if b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'$' && !matches!(b.get(i + 1), Some(b'1'..=b'9')))
    {
        return Err("uses '$' other than as '$1'…'$9' (nginx variables are not supported)".into());
    }
    // nginx answers a rewrite to `http://…` with a redirect, not a proxied
    // path: that is permanent-redirect's job.
    if v.contains("://") {
        return Err("is a URL; a rewrite target is a path (for a redirect use permanent-redirect)".into());
    }
    Ok(v.to_owned())
}

fn absolute_path(v: &str) -> Result<String, String> {
    let v = clean(v)?;
    if !v.starts_with('/') || v.contains("//") || v.contains('?') || v.contains('#') {
        return Err("must be an absolute path such as /app1".into());
    }
    Ok(v.to_owned())
}

fn ranges(v: &str) -> Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"))
        })
        .collect()
}

fn redirect_code(v: &str, lo: u16, hi: u16) -> Result<http::StatusCode, String> {
    match v.parse::<u16>().map(http::StatusCode::from_u16) {
        Ok(Ok(c)) if (lo..=hi).contains(&c.as_u16()) => Ok(c),
        _ => Err(format!("is not a redirect status ({lo} to {hi})")),
    }
}

/// Reads the annotations of one Ingress (one pass over them).
pub fn parse(annotations: &BTreeMap<String, String>) -> Parsed {
    /// The setting, made with its defaults the first time it is named.
    fn made<T: Default>(setting: &mut Option<T>) -> &mut T {
        setting.get_or_insert_with(T::default)
    }

    let mut p = Parsed::default();
    let o = &mut p.options;
    o.ssl_redirect = true;
    o.www_redirect_code = http::StatusCode::PERMANENT_REDIRECT;
    let (mut permanent, mut permanent_code, mut temporal, mut temporal_code) =
        (None, http::StatusCode::MOVED_PERMANENTLY, None, http::StatusCode::FOUND);
    let (mut whitelist, mut allowlist) = (None, None);
    // Settings with defaults that allocate are made when first named: most
    // Ingresses name none.
    let (mut cors_on, mut cors) = (false, None::<Cors>);
    let (mut affinity_on, mut affinity) = (false, None::<Affinity>);
    let (mut auth_type, mut auth_secret, mut realm) = (None, None, None::<String>);
    let mut auth_map = false;
    let (mut auth_url, mut signin, mut auth_headers) = (None, None, Vec::new());
    let mut canary_on = false;
    let mut canary = Canary {
        by_header: None,
        by_header_value: None,
        by_header_pattern: None,
        by_cookie: None,
        weight: 0,
        weight_total: 100,
    };
    for (key, v) in annotations {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        let result: Result<(), String> = match name {
            "use-regex" => boolean(v).map(|b| o.use_regex = b),
            "rewrite-target" => rewrite(v).map(|t| o.rewrite_target = Some(t)),
            "x-forwarded-prefix" => absolute_path(v).map(|t| o.x_forwarded_prefix = Some(t)),
            "app-root" => absolute_path(v).map(|t| o.app_root = Some(t)),
            "permanent-redirect" => url(v).map(|u| permanent = Some(u)),
            "permanent-redirect-code" => redirect_code(v, 300, 308).map(|c| permanent_code = c),
            "temporal-redirect" => url(v).map(|u| temporal = Some(u)),
            "temporal-redirect-code" => redirect_code(v, 300, 307).map(|c| temporal_code = c),
            "ssl-redirect" => boolean(v).map(|b| o.ssl_redirect = b),
            "force-ssl-redirect" => boolean(v).map(|b| o.force_ssl_redirect = b),
            "preserve-trailing-slash" => boolean(v).map(|b| o.preserve_trailing_slash = b),
            "proxy-body-size" => size(v).map(|n| o.proxy_body_size = Some(n)),
            "proxy-connect-timeout" => seconds(v).map(|d| o.connect_timeout = Some(d)),
            "proxy-read-timeout" => seconds(v).map(|d| o.read_timeout = Some(d)),
            "proxy-send-timeout" => seconds(v).map(|d| o.send_timeout = Some(d)),
            "backend-protocol" => match v.to_ascii_uppercase().as_str() {
                "HTTP" => Ok(BackendProtocol::Http),
                "HTTPS" => Ok(BackendProtocol::Https),
                "GRPC" => Ok(BackendProtocol::Grpc),
                "GRPCS" => Ok(BackendProtocol::Grpcs),
                _ => Err("is not one of HTTP, HTTPS, GRPC, GRPCS".into()),
            }
            .map(|b| o.backend_protocol = b),
            "load-balance" => match v.as_str() {
                "round_robin" => Ok(LoadBalance::RoundRobin),
                "ewma" => Ok(LoadBalance::Ewma),
                _ => Err("is not round_robin or ewma".into()),
            }
            .map(|b| o.load_balance = b),
            "whitelist-source-range" => ranges(v).map(|r| whitelist = Some(r)),
            "allowlist-source-range" => ranges(v).map(|r| allowlist = Some(r)),
            "denylist-source-range" => ranges(v).map(|r| o.deny = r),
            "from-to-www-redirect" => boolean(v).map(|b| o.from_to_www = b),
            "http-redirect-code" => redirect_code(v, 300, 308).map(|c| o.www_redirect_code = c),
            "upstream-vhost" => clean(v).and_then(|v| {
                if v.contains(['/', '?', '#', '@']) {
                    return Err("must be a host name, optionally with :port".into());
                }
                o.upstream_vhost = Some(v.to_owned());
                Ok(())
            }),
            "affinity" => match v.as_str() {
                "cookie" => {
                    affinity_on = true;
                    Ok(())
                }
                _ => Err("is not a supported affinity (\"cookie\")".into()),
            },
            "affinity-mode" => match v.as_str() {
                "balanced" | "persistent" => {
                    made(&mut affinity).persistent = v == "persistent";
                    Ok(())
                }
                _ => Err("is not \"balanced\" or \"persistent\"".into()),
            },
            "session-cookie-name" => tokens(v)
                .and_then(|_| cookie_value(v))
                .map(|n| made(&mut affinity).cookie_name = n),
            "session-cookie-path" => absolute_path(v).map(|p| made(&mut affinity).path = Some(p)),
            "session-cookie-domain" => cookie_value(v).map(|d| made(&mut affinity).domain = Some(d)),
            "session-cookie-max-age" => v
                .parse::<u64>()
                .map(|n| made(&mut affinity).max_age = Some(n))
                .map_err(|_| "is not a number of seconds".into()),
            "session-cookie-expires" => v
                .parse::<u64>()
                .map(|n| made(&mut affinity).expires = Some(n))
                .map_err(|_| "is not a number of seconds".into()),
            "session-cookie-secure" => boolean(v).map(|b| made(&mut affinity).secure = Some(b)),
            "session-cookie-samesite" => match v.as_str() {
                "None" | "Lax" | "Strict" => {
                    made(&mut affinity).samesite = Some(v.clone());
                    Ok(())
                }
                _ => Err("is not None, Lax or Strict".into()),
            },
            "session-cookie-change-on-failure" => boolean(v).map(|b| made(&mut affinity).change_on_failure = b),
            "auth-type" => match v.as_str() {
                "basic" => {
                    auth_type = Some(());
                    Ok(())
                }
                _ => Err("is not a supported auth type (\"basic\")".into()),
            },
            "auth-secret" => {
                if v.contains('/') {
                    Err("names a Secret in another namespace; cross-namespace references are not allowed".into())
                } else {
                    cookie_value(v).map(|s| auth_secret = Some(s))
                }
            }
            "auth-secret-type" => match v.as_str() {
                "auth-file" => {
                    auth_map = false;
                    Ok(())
                }
                "auth-map" => {
                    auth_map = true;
                    Ok(())
                }
                _ => Err("is not auth-file or auth-map".into()),
            },
            "auth-realm" => {
                if v.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
                    Err("must not contain control characters, '\"' or '\\'".into())
                } else {
                    realm = Some(v.clone());
                    Ok(())
                }
            }
            "auth-url" => url(v).map(|u| auth_url = Some(u)),
            "auth-signin" => url(v).map(|u| signin = Some(u)),
            "auth-response-headers" => tokens(v).map(|t| {
                auth_headers = t.split(',').map(|h| h.trim().to_owned()).collect();
            }),
            "canary" => boolean(v).map(|b| canary_on = b),
            "canary-by-header" => http::HeaderName::from_bytes(v.as_bytes())
                .map(|h| canary.by_header = Some(h))
                .map_err(|_| "is not a header name".into()),
            "canary-by-header-value" => cookie_value(v).map(|x| canary.by_header_value = Some(x)),
            "canary-by-header-pattern" => HeaderPattern::new(v).map(|x| canary.by_header_pattern = Some(x)),
            "canary-by-cookie" => cookie_value(v).map(|x| canary.by_cookie = Some(x)),
            "canary-weight" => v
                .parse::<u32>()
                .map(|w| canary.weight = w)
                .map_err(|_| "is not a whole number".into()),
            "canary-weight-total" => match v.parse::<u32>() {
                Ok(t) if t > 0 => {
                    canary.weight_total = t;
                    Ok(())
                }
                _ => Err("is not a whole number above 0".into()),
            },
            "enable-cors" => boolean(v).map(|b| cors_on = b),
            "cors-allow-origin" => origins(v).map(|o| made(&mut cors).allow_origin = o),
            "cors-allow-methods" => tokens(v).map(|t| made(&mut cors).allow_methods = t),
            "cors-allow-headers" => tokens(v).map(|t| made(&mut cors).allow_headers = t),
            "cors-expose-headers" => tokens(v).map(|t| made(&mut cors).expose_headers = t),
            "cors-allow-credentials" => boolean(v).map(|b| made(&mut cors).allow_credentials = b),
            "cors-max-age" => match v.parse::<u32>() {
                Ok(n) => {
                    made(&mut cors).max_age = n;
                    Ok(())
                }
                Err(_) => Err("is not a number of seconds".into()),
            },
            n if n.ends_with("-snippet") => {
                p.warnings.push((
                    key.clone(),
                    "snippets are refused: lb never executes configuration text (use the typed annotations)".into(),
                ));
                Ok(())
            }
            _ => {
                p.warnings.push((key.clone(), "not supported by lb; ignored".into()));
                Ok(())
            }
        };
        if let Err(e) = result {
            p.errors.push((key.clone(), format!("{v:?} {e}")));
        }
    }
    // The newer name wins when both are given; the temporal redirect wins
    // over the permanent one (as in ingress-nginx).
    o.allow = allowlist.or(whitelist).unwrap_or_default();
    o.cors = cors_on.then(|| Box::new(cors.unwrap_or_default()));
    o.affinity = affinity_on.then(|| Box::new(affinity.unwrap_or_default()));
    if canary.weight > canary.weight_total {
        p.errors.push((
            format!("{PREFIX}canary-weight"),
            format!("{} is above canary-weight-total {}", canary.weight, canary.weight_total),
        ));
    }
    o.canary = canary_on.then(|| Box::new(canary));
    match (auth_type, auth_secret) {
        (Some(()), Some(secret)) => {
            let realm = realm.unwrap_or_else(|| "Authentication Required".into());
            o.basic_auth = Some(BasicAuth {
                secret,
                realm,
                map: auth_map,
            });
        }
        (Some(()), None) => p.errors.push((
            format!("{PREFIX}auth-type"),
            "\"basic\" needs nginx.ingress.kubernetes.io/auth-secret".into(),
        )),
        _ => {}
    }
    o.external_auth = auth_url.map(|url| {
        Box::new(ExternalAuth {
            url,
            signin,
            response_headers: auth_headers,
        })
    });
    o.redirect = match (temporal, permanent) {
        (Some(url), _) => Some(Redirect {
            code: temporal_code,
            url,
        }),
        (None, Some(url)) => Some(Redirect {
            code: permanent_code,
            url,
        }),
        (None, None) => None,
    };
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pairs(pairs: &[(&str, &str)]) -> Parsed {
        parse(
            &pairs
                .iter()
                .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
                .collect(),
        )
    }

    /// rewrite-target substitutes `$1`…`$9` only and is a path: other `$`
    /// forms and URLs are refused, not forwarded as text.
    #[test]
    fn rewrite_targets_are_paths_with_numbered_groups_only() {
        for bad in ["/y/$0", "/y/$host", "/y/$", "http://evil.com/$1"] {
            let p = parse_pairs(&[("rewrite-target", bad)]);
            assert_eq!(p.errors.len(), 1, "{bad}: {:?}", p.errors);
        }
        for good in ["/$1", "/y/$2/$9", "/"] {
            let p = parse_pairs(&[("rewrite-target", good)]);
            assert!(p.errors.is_empty(), "{good}: {:?}", p.errors);
        }
    }

    #[test]
    fn values_parse_into_typed_options() {
        let p = parse_pairs(&[
            ("rewrite-target", "/$2"),
            ("use-regex", "true"),
            ("proxy-body-size", "8m"),
            ("proxy-read-timeout", "120"),
            ("backend-protocol", "GRPC"),
            ("whitelist-source-range", "10.0.0.0/8, 192.168.1.7"),
            ("permanent-redirect", "https://example.com/new"),
            ("permanent-redirect-code", "308"),
            ("ssl-redirect", "false"),
            ("upstream-vhost", "internal.example:8080"),
            ("load-balance", "ewma"),
        ]);
        assert!(
            p.errors.is_empty() && p.warnings.is_empty(),
            "{:?} {:?}",
            p.errors,
            p.warnings
        );
        let o = p.options;
        assert_eq!(o.rewrite_target.as_deref(), Some("/$2"));
        assert!(o.use_regex && !o.ssl_redirect);
        assert_eq!(o.proxy_body_size, Some(8 << 20));
        assert_eq!(o.read_timeout, Some(Duration::from_secs(120)));
        assert_eq!(o.backend_protocol, BackendProtocol::Grpc);
        assert_eq!(o.load_balance, LoadBalance::Ewma);
        assert_eq!(o.allow.len(), 2);
        assert_eq!(
            o.redirect,
            Some(Redirect {
                code: http::StatusCode::PERMANENT_REDIRECT,
                url: "https://example.com/new".into()
            })
        );
        assert_eq!(o.upstream_vhost.as_deref(), Some("internal.example:8080"));
    }

    /// `load-balance` takes ingress-nginx's two names; anything else
    /// (`least_conn`, removed from ingress-nginx) is an error, not a
    /// silent round robin.
    #[test]
    fn load_balance_is_round_robin_unless_ewma_is_asked() {
        assert_eq!(parse_pairs(&[]).options.load_balance, LoadBalance::RoundRobin);
        let p = parse_pairs(&[("load-balance", "round_robin")]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.options.load_balance, LoadBalance::RoundRobin);
        for bad in ["least_conn", "EWMA", ""] {
            let p = parse_pairs(&[("load-balance", bad)]);
            assert_eq!(p.errors.len(), 1, "{bad}: {:?}", p.errors);
        }
    }

    #[test]
    fn temporal_redirect_wins_and_defaults_apply() {
        let p = parse_pairs(&[
            ("permanent-redirect", "http://a.example"),
            ("temporal-redirect", "http://b.example"),
        ]);
        assert_eq!(
            p.options.redirect,
            Some(Redirect {
                code: http::StatusCode::FOUND,
                url: "http://b.example".into()
            })
        );
        assert!(parse_pairs(&[]).options.ssl_redirect, "ssl-redirect defaults to true");
    }

    #[test]
    fn invalid_values_name_the_annotation_and_value() {
        for (k, v) in [
            ("use-regex", "yes"),
            ("rewrite-target", "/x?y=1"),
            ("rewrite-target", "/a b"),
            ("proxy-body-size", "8mb"),
            ("proxy-read-timeout", "60s"),
            ("proxy-read-timeout", "0"),
            ("proxy-send-timeout", "0"),
            ("proxy-connect-timeout", "86401"),
            ("backend-protocol", "FCGI"),
            ("whitelist-source-range", "10.0.0.0/33"),
            ("permanent-redirect", "/relative"),
            ("permanent-redirect", "http://x\r\nSet-Cookie: a"),
            ("permanent-redirect-code", "200"),
            ("app-root", "app1"),
            ("upstream-vhost", "a/b"),
        ] {
            let p = parse_pairs(&[(k, v)]);
            assert_eq!(p.errors.len(), 1, "{k}={v}");
            assert_eq!(p.errors[0].0, format!("{PREFIX}{k}"));
            assert!(p.errors[0].1.starts_with(&format!("{v:?}")), "{:?}", p.errors[0]);
        }
    }

    #[test]
    fn affinity_and_auth_options() {
        let p = parse_pairs(&[
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-max-age", "3600"),
            ("session-cookie-samesite", "Lax"),
            ("auth-type", "basic"),
            ("auth-secret", "htpasswd"),
            ("auth-realm", "Staff only"),
            ("auth-url", "http://oauth2-proxy.auth.svc/oauth2/auth"),
            ("auth-signin", "https://auth.example.com/oauth2/start"),
            ("auth-response-headers", "X-Auth-Request-User, X-Auth-Request-Email"),
        ]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let o = p.options;
        let a = o.affinity.unwrap();
        assert_eq!(
            (a.cookie_name.as_str(), a.max_age, a.samesite.as_deref()),
            ("route", Some(3600), Some("Lax"))
        );
        assert_eq!(
            o.basic_auth,
            Some(BasicAuth {
                secret: "htpasswd".into(),
                realm: "Staff only".into(),
                map: false,
            })
        );
        let map = parse_pairs(&[
            ("auth-type", "basic"),
            ("auth-secret", "users"),
            ("auth-secret-type", "auth-map"),
        ]);
        assert!(map.options.basic_auth.is_some_and(|b| b.map));
        assert_eq!(parse_pairs(&[("auth-secret-type", "ldap")]).errors.len(), 1);
        let e = o.external_auth.unwrap();
        assert_eq!(e.response_headers, ["X-Auth-Request-User", "X-Auth-Request-Email"]);
        assert_eq!(e.signin.as_deref(), Some("https://auth.example.com/oauth2/start"));
        // Defaults and refusals.
        assert_eq!(
            parse_pairs(&[("affinity", "cookie")])
                .options
                .affinity
                .unwrap()
                .cookie_name,
            "INGRESSCOOKIE"
        );
        for (k, v) in [
            ("affinity", "ip"),
            ("auth-secret", "other-ns/htpasswd"),
            ("auth-url", "http://x/\r\nInjected: 1"),
            ("session-cookie-name", "a;b"),
        ] {
            assert_eq!(parse_pairs(&[(k, v)]).errors.len(), 1, "{k}={v}");
        }
        let p = parse_pairs(&[("auth-type", "basic")]);
        assert!(p.errors[0].1.contains("auth-secret"), "{:?}", p.errors);
    }

    #[test]
    fn unknown_and_snippet_annotations_are_warnings() {
        let p = parse_pairs(&[("configuration-snippet", "more_set_headers x"), ("limit-rps", "5")]);
        assert!(p.errors.is_empty());
        assert_eq!(p.warnings.len(), 2);
        assert!(p.warnings.iter().any(|w| w.1.contains("snippets are refused")));
        assert!(p.warnings.iter().any(|w| w.1.contains("ignored")));
        // Other prefixes are not ours to judge.
        let mut m = BTreeMap::new();
        m.insert("example.com/anything".to_string(), "x".to_string());
        assert!(parse(&m).warnings.is_empty());
    }
}
