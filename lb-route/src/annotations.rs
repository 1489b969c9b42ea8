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

/// A configured redirect (`permanent-redirect`, `temporal-redirect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The status.
    pub code: u16,
    /// The `Location`, verbatim.
    pub url: String,
}

/// What the annotations of one Ingress ask for.
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
    /// `whitelist-source-range` / `allowlist-source-range`: only these
    /// clients (403 otherwise). Empty: everyone.
    pub allow: Vec<IpNet>,
    /// `denylist-source-range`: these clients get 403.
    pub deny: Vec<IpNet>,
    /// `upstream-vhost`: the `Host` sent upstream.
    pub upstream_vhost: Option<String>,
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

/// Annotations we read; the others with our prefix are ignored with a
/// warning.
const KNOWN: &[&str] = &[
    "use-regex",
    "rewrite-target",
    "x-forwarded-prefix",
    "app-root",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "ssl-redirect",
    "force-ssl-redirect",
    "preserve-trailing-slash",
    "proxy-body-size",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "backend-protocol",
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "upstream-vhost",
];

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("is not a boolean (\"true\" or \"false\")".into()),
    }
}

/// Seconds, unitless, as ingress-nginx takes them.
fn seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<u32>() {
        Ok(s) if s <= 86_400 => Ok(Duration::from_secs(s.into())),
        _ => Err("is not a number of seconds (0 to 86400)".into()),
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
    if v.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/:$".contains(c)) {
        Ok(v.to_owned())
    } else {
        Err("may hold only letters, digits, '-', '.', '_', '~', '/', ':' and '$1'…'$9'".into())
    }
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

fn redirect_code(v: &str, lo: u16, hi: u16) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(c) if (lo..=hi).contains(&c) => Ok(c),
        _ => Err(format!("is not a redirect status ({lo} to {hi})")),
    }
}

/// Reads the annotations of one Ingress.
pub fn parse(annotations: &BTreeMap<String, String>) -> Parsed {
    let mut p = Parsed {
        options: RouteOptions {
            ssl_redirect: true,
            ..RouteOptions::default()
        },
        ..Parsed::default()
    };
    let get = |k: &str| annotations.get(&format!("{PREFIX}{k}")).map(String::as_str);
    for key in annotations.keys() {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        if name.ends_with("-snippet") {
            p.warnings.push((
                key.clone(),
                "snippets are refused: lb never executes configuration text (use the typed annotations)".into(),
            ));
        } else if !KNOWN.contains(&name) {
            p.warnings.push((key.clone(), "not supported by lb; ignored".into()));
        }
    }
    let mut check = |name: &str, f: &mut dyn FnMut(&str) -> Result<(), String>| {
        if let Some(v) = get(name)
            && let Err(e) = f(v)
        {
            p.errors.push((format!("{PREFIX}{name}"), format!("{v:?} {e}")));
        }
    };
    let o = &mut RouteOptions {
        ssl_redirect: true,
        ..RouteOptions::default()
    };
    check("use-regex", &mut |v| boolean(v).map(|b| o.use_regex = b));
    check("rewrite-target", &mut |v| {
        rewrite(v).map(|t| o.rewrite_target = Some(t))
    });
    check("x-forwarded-prefix", &mut |v| {
        absolute_path(v).map(|t| o.x_forwarded_prefix = Some(t))
    });
    check("app-root", &mut |v| absolute_path(v).map(|t| o.app_root = Some(t)));
    let mut permanent = None;
    check("permanent-redirect", &mut |v| url(v).map(|u| permanent = Some(u)));
    let mut permanent_code = 301;
    check("permanent-redirect-code", &mut |v| {
        redirect_code(v, 300, 308).map(|c| permanent_code = c)
    });
    let mut temporal = None;
    check("temporal-redirect", &mut |v| url(v).map(|u| temporal = Some(u)));
    let mut temporal_code = 302;
    check("temporal-redirect-code", &mut |v| {
        redirect_code(v, 300, 307).map(|c| temporal_code = c)
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
    check("ssl-redirect", &mut |v| boolean(v).map(|b| o.ssl_redirect = b));
    check("force-ssl-redirect", &mut |v| {
        boolean(v).map(|b| o.force_ssl_redirect = b)
    });
    check("preserve-trailing-slash", &mut |v| {
        boolean(v).map(|b| o.preserve_trailing_slash = b)
    });
    check("proxy-body-size", &mut |v| size(v).map(|n| o.proxy_body_size = Some(n)));
    check("proxy-connect-timeout", &mut |v| {
        seconds(v).map(|d| o.connect_timeout = Some(d))
    });
    check("proxy-read-timeout", &mut |v| {
        seconds(v).map(|d| o.read_timeout = Some(d))
    });
    check("proxy-send-timeout", &mut |v| {
        seconds(v).map(|d| o.send_timeout = Some(d))
    });
    check("backend-protocol", &mut |v| {
        o.backend_protocol = match v.to_ascii_uppercase().as_str() {
            "HTTP" => BackendProtocol::Http,
            "HTTPS" => BackendProtocol::Https,
            "GRPC" => BackendProtocol::Grpc,
            "GRPCS" => BackendProtocol::Grpcs,
            _ => return Err("is not one of HTTP, HTTPS, GRPC, GRPCS".into()),
        };
        Ok(())
    });
    // The newer name wins when both are given.
    check("whitelist-source-range", &mut |v| ranges(v).map(|r| o.allow = r));
    check("allowlist-source-range", &mut |v| ranges(v).map(|r| o.allow = r));
    check("denylist-source-range", &mut |v| ranges(v).map(|r| o.deny = r));
    check("upstream-vhost", &mut |v| {
        let v = clean(v)?;
        if v.contains(['/', '?', '#', '@']) {
            return Err("must be a host name, optionally with :port".into());
        }
        o.upstream_vhost = Some(v.to_owned());
        Ok(())
    });
    p.options = o.clone();
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
        assert_eq!(o.allow.len(), 2);
        assert_eq!(
            o.redirect,
            Some(Redirect {
                code: 308,
                url: "https://example.com/new".into()
            })
        );
        assert_eq!(o.upstream_vhost.as_deref(), Some("internal.example:8080"));
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
                code: 302,
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
