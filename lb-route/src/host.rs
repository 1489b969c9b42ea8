//! Hosts: the `host` of a rule, and the host a request names.

use std::borrow::Cow;

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleHost {
    /// No host: every request.
    Any,
    /// One DNS name.
    Exact(String),
    /// `*.suffix`: exactly one more label before `suffix`.
    Wildcard(String),
}

/// Why a rule's host is invalid (the API server's rules, which file mode
/// must apply itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Not a lower-case RFC 1123 subdomain (or `*.` + one).
    #[error(
        "{0:?} is not a valid host: a lower-case DNS name (letters, digits, '-', '.'; labels of 1 to 63 \
         characters), optionally starting with '*.'"
    )]
    Invalid(String),
    /// An IP address.
    #[error("{0:?}: an IP address is not allowed as a host")]
    IpAddress(String),
}

impl RuleHost {
    /// Parses and validates a rule's `host`.
    pub fn parse(host: Option<&str>) -> Result<Self, HostError> {
        let Some(h) = host.filter(|h| !h.is_empty()) else {
            return Ok(Self::Any);
        };
        if h.parse::<std::net::IpAddr>().is_ok() {
            return Err(HostError::IpAddress(h.to_owned()));
        }
        let (wild, name) = match h.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, h),
        };
        if !is_dns_subdomain(name) {
            return Err(HostError::Invalid(h.to_owned()));
        }
        Ok(if wild {
            Self::Wildcard(name.to_owned())
        } else {
            Self::Exact(name.to_owned())
        })
    }

    /// Whether a canonical request host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => h == host,
            Self::Wildcard(s) => wildcard_suffix(host) == Some(s.as_str()),
        }
    }
}

impl std::fmt::Display for RuleHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// What a `*.suffix` rule compares: the host without its first label, when
/// that label is not empty.
pub(crate) fn wildcard_suffix(host: &str) -> Option<&str> {
    let (label, rest) = host.split_once('.')?;
    (!label.is_empty() && !rest.is_empty()).then_some(rest)
}

/// The host a request names, as rules compare it: the port and one
/// trailing dot removed, lower-cased. Borrowed when already canonical.
pub fn canonical_host(authority: &str) -> Cow<'_, str> {
    let b = authority.as_bytes();
    let end = if b.first() == Some(&b'[') {
        // An IPv6 literal: keep the brackets, drop the port.
        b.iter().position(|&c| c == b']').map_or(b.len(), |i| i + 1)
    } else {
        // A port follows the last ':' if only digits do.
        let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
        match b.len().checked_sub(digits + 1) {
            Some(i) if b[i] == b':' => i,
            _ => b.len(),
        }
    };
    let host = &authority[..end];
    let host = host.strip_suffix('.').unwrap_or(host);
    // Without early exit, so it runs a vector at a time.
    if host.bytes().fold(false, |upper, c| upper | c.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Whether the port of `authority` (after its last `:`, if any) is at most
/// five digits and at most 65535. For an authority whose host is known to
/// be a valid name.
pub(crate) fn valid_port(authority: &str) -> bool {
    authority
        .rsplit_once(':')
        .is_none_or(|(_, port)| port_ok(port.as_bytes()))
}

/// A port: at most five digits (possibly none), at most 65535.
fn port_ok(port: &[u8]) -> bool {
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// Bytes a registered name may hold: unreserved, `%` (escapes) and
/// sub-delimiters (RFC 3986 §3.2.2).
const HOST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b"-._~%!$&'()*+,;=";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `authority` is a valid `Host` (RFC 9110 §7.2: `uri-host
/// [":" port]`): a registered name of unreserved, percent-encoded and
/// sub-delimiter characters without `..`, an IPv4 address or a bracketed
/// IPv6 literal, then an optional port of at most five digits (at most
/// 65535). No userinfo, no spaces, no control or non-ASCII characters.
/// The empty string is valid (HTTP/1.0 without a Host header).
pub fn valid_authority(authority: &str) -> bool {
    let b = authority.as_bytes();
    let (host_end, rest) = if b.first() == Some(&b'[') {
        let Some(close) = b.iter().position(|&c| c == b']') else {
            return false;
        };
        let inner = &b[1..close];
        if inner.is_empty() || !inner.iter().all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
            return false;
        }
        (close + 1, &b[close + 1..])
    } else {
        let end = b.iter().rposition(|&c| c == b':').unwrap_or(b.len());
        let host = &b[..end];
        // One table look-up per byte and no early exit: a host is short,
        // and the loop has no branch to mispredict.
        let (bad, _) = host.iter().fold((false, false), |(bad, dot), &c| {
            let is_dot = c == b'.';
            (bad | !HOST_BYTE[c as usize] | (dot & is_dot), is_dot)
        });
        if bad {
            return false;
        }
        (end, &b[end..])
    };
    let _ = host_end;
    match rest {
        [] => true,
        [b':', port @ ..] => port_ok(port),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "",
            "h.example.com",
            "H.EXAMPLE.COM:8080",
            "10.0.0.1:80",
            "[::1]",
            "[fc00::1]:443",
            "a_b",
            "h:",
        ] {
            assert!(valid_authority(ok), "{ok:?}");
        }
        for bad in [
            "user@h",
            "h:abc",
            "h:123456",
            "h:65536",
            "h x",
            "h\tx",
            "a/b",
            "a\\b",
            "a..b",
            "[::1",
            "[zz]",
            "[::1]x",
            "é.example",
            "h:80:80",
        ] {
            assert!(!valid_authority(bad), "{bad:?}");
        }
    }

    #[test]
    fn rule_hosts() {
        assert_eq!(RuleHost::parse(None), Ok(RuleHost::Any));
        assert_eq!(RuleHost::parse(Some("")), Ok(RuleHost::Any));
        assert_eq!(
            RuleHost::parse(Some("foo.bar.com")),
            Ok(RuleHost::Exact("foo.bar.com".into()))
        );
        assert_eq!(
            RuleHost::parse(Some("*.foo.com")),
            Ok(RuleHost::Wildcard("foo.com".into()))
        );
        for bad in [
            "*",
            "Foo.com",
            "foo..com",
            "-a.com",
            "a_b.com",
            "*.*.foo.com",
            "foo.*.com",
            "a.com:80",
        ] {
            assert!(
                matches!(RuleHost::parse(Some(bad)), Err(HostError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            RuleHost::parse(Some("10.0.0.1")),
            Err(HostError::IpAddress(_))
        ));
    }

    #[test]
    fn wildcard_is_one_label() {
        let w = RuleHost::parse(Some("*.foo.com")).unwrap();
        assert!(w.matches("bar.foo.com"));
        assert!(!w.matches("baz.bar.foo.com"));
        assert!(!w.matches("foo.com"));
        assert!(!w.matches(".foo.com"));
    }

    #[test]
    fn request_hosts() {
        assert_eq!(canonical_host("Foo.Bar.COM"), "foo.bar.com");
        assert_eq!(canonical_host("foo.bar.com:8080"), "foo.bar.com");
        assert_eq!(canonical_host("foo.bar.com."), "foo.bar.com");
        assert_eq!(canonical_host("foo.bar.com.:80"), "foo.bar.com");
        assert_eq!(canonical_host("[::1]:8080"), "[::1]");
        assert!(matches!(canonical_host("foo.bar.com"), Cow::Borrowed(_)));
        assert_eq!(canonical_host("foo.bar.com:"), "foo.bar.com");
        assert_eq!(canonical_host("a:b:80"), "a:b");
        assert_eq!(canonical_host("[::1"), "[::1");
    }

    /// The rules as written: an IPv6 literal up to its `]`; else the port
    /// after the last `:` when only digits follow; one trailing dot; lower
    /// case.
    fn reference(a: &str) -> String {
        let host = if a.starts_with('[') {
            a.find(']').map_or(a, |end| &a[..=end])
        } else {
            match a.rfind(':') {
                Some(i) if a[i + 1..].bytes().all(|c| c.is_ascii_digit()) => &a[..i],
                _ => a,
            }
        };
        host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
    }

    proptest::proptest! {
        #[test]
        fn canonical_host_follows_the_rules(a in "[aZ.:09\\[\\]é]{0,12}") {
            proptest::prop_assert_eq!(canonical_host(&a), reference(&a));
        }
    }
}
