//! The request target, parsed once into the canonical form used for
//! matching, access checks and forwarding alike (reference/ingress.md §5.3
//! G8): dot-segments resolved, escapes of unreserved characters decoded,
//! other escapes kept with upper-case hex, invalid escapes and NUL rejected,
//! an explicit policy for an encoded `/` or `\`.

use std::borrow::Cow;
use std::fmt;

/// What to do with `%2F` and `%5C` in a request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncodedSlash {
    /// Reject the request (400). The default: decoding would change the
    /// path's elements, and keeping it would let the backend decode it.
    #[default]
    Reject,
    /// Keep it encoded (`%2F`): not a separator for matching.
    Keep,
    /// Decode it into a real separator, as nginx (and so ingress-nginx) does.
    Decode,
}

/// How request paths are made canonical: `PathPolicy::default()`, then
/// the `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathPolicy {
    /// `%2F` / `%5C` handling.
    pub encoded_slash: EncodedSlash,
    /// Merge runs of `/` into one (nginx's `merge_slashes on`).
    pub merge_slashes: bool,
    /// Longest accepted request target, in bytes.
    pub max_len: usize,
}

impl PathPolicy {
    /// With this handling of `%2F` and `%5C`.
    pub fn with_encoded_slash(mut self, e: EncodedSlash) -> Self {
        self.encoded_slash = e;
        self
    }

    /// Merging runs of `/` (or not).
    pub fn with_merge_slashes(mut self, on: bool) -> Self {
        self.merge_slashes = on;
        self
    }

    /// With this longest accepted target, in bytes.
    pub fn with_max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }
}

impl Default for PathPolicy {
    fn default() -> Self {
        Self {
            encoded_slash: EncodedSlash::Reject,
            merge_slashes: true,
            max_len: 8192,
        }
    }
}

/// Why a request target was refused (the proxy answers 400, or 414 for
/// [`TargetError::TooLong`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Empty, or not origin-form (`/…`), absolute-form (`http://…`) or `*`.
    #[error("request target is not a path or an absolute http(s) URL")]
    Form,
    /// Longer than [`PathPolicy::max_len`].
    #[error("request target is longer than {0} bytes")]
    TooLong(usize),
    /// A `%` not followed by two hex digits.
    #[error("invalid percent escape at byte {0}")]
    BadEscape(usize),
    /// NUL (raw or `%00`), a control character, a space or `#`.
    #[error("forbidden byte {0:#04x} in the request target")]
    ForbiddenByte(u8),
    /// `%2F` or `%5C` (or a raw `\`) with [`EncodedSlash::Reject`].
    #[error("encoded slash or backslash in the path")]
    EncodedSlash,
    /// `..` climbing above the root.
    #[error("path climbs above the root with '..'")]
    AboveRoot,
    /// The authority of an absolute-form target is malformed.
    #[error("invalid host in the absolute-form target")]
    Authority,
    /// The `Host` header is malformed (see [`crate::valid_authority`]).
    #[error("invalid Host header")]
    Host,
}

/// A parsed request target, borrowing from the raw one wherever it was
/// canonical already (the common case costs no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The canonical path (starts with `/`).
    pub path: Cow<'a, str>,
    /// The query without `?`, as sent (validated, not rewritten).
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target (it overrides `Host`).
    pub authority: Option<&'a str>,
    /// `https` from an absolute-form target, if it said so.
    pub https: Option<bool>,
    /// The raw origin-form target when its path was canonical: it is then
    /// exactly `path?query`.
    as_sent: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Parses a request target. `*` (OPTIONS) is taken as `/`.
    #[inline]
    pub fn parse(raw: &'a str, policy: &PathPolicy) -> Result<Self, TargetError> {
        if raw.len() > policy.max_len {
            return Err(TargetError::TooLong(policy.max_len));
        }
        match Self::parse_plain(raw)? {
            Some(t) => Ok(t),
            None => Self::parse_general(raw, policy),
        }
    }

    /// Every form of target, with the full canonicalization.
    #[cold]
    #[inline(never)]
    fn parse_general(raw: &'a str, policy: &PathPolicy) -> Result<Self, TargetError> {
        if let Some(&b) = raw.as_bytes().iter().find(|&&b| b <= b' ' || b == 0x7f || b == b'#') {
            return Err(TargetError::ForbiddenByte(b));
        }
        let (authority, https, rest) = if raw == "*" {
            (None, None, "/")
        } else if raw.starts_with('/') {
            (None, None, raw)
        } else {
            let (https, after) = if let Some(a) = strip_prefix_ci(raw, "http://") {
                (false, a)
            } else if let Some(a) = strip_prefix_ci(raw, "https://") {
                (true, a)
            } else {
                return Err(TargetError::Form);
            };
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let authority = &after[..end];
            if authority.is_empty() || !crate::host::valid_authority(authority) {
                return Err(TargetError::Authority);
            }
            (Some(authority), Some(https), &after[end..])
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        // `http://h` and `http://h?q` have the empty path, i.e. `/`.
        let path = if path.is_empty() { "/" } else { path };
        if let Some(q) = query {
            check_escapes(q)?;
        }
        let path = if is_canonical(path, policy) {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(canonical_path(path, policy)?)
        };
        let as_sent = (authority.is_none() && raw != "*" && matches!(path, Cow::Borrowed(_))).then_some(raw);
        Ok(Self {
            path,
            query,
            authority,
            https,
            as_sent,
        })
    }

    /// The common case in one pass: an origin-form target whose path is
    /// plain ASCII without escapes, `//` or anything that may be a dot
    /// segment. `Ok(None)`: take the general road.
    #[inline]
    fn parse_plain(raw: &'a str) -> Result<Option<Self>, TargetError> {
        let b = raw.as_bytes();
        if b.first() != Some(&b'/') {
            return Ok(None);
        }
        // The path: stop at '?', at a forbidden byte, or at anything that
        // needs the general road; a '/' or '.' right after a '/' may begin
        // an empty or dot segment.
        let mut after_slash = true;
        let mut i = 1;
        let query_at = loop {
            let Some(&c) = b.get(i) else { break None };
            let stop = STOP | QUERY | ODD | if after_slash { DOTTY } else { 0 };
            let k = CLASS[c as usize] & stop;
            if k != 0 {
                if k & QUERY != 0 {
                    break Some(i);
                }
                if k & STOP != 0 {
                    return Err(TargetError::ForbiddenByte(c));
                }
                return Ok(None);
            }
            after_slash = c == b'/';
            i += 1;
        };
        let (path, query) = match query_at {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        if let Some(q) = query {
            let mut escapes = false;
            for &c in q.as_bytes() {
                if CLASS[c as usize] & STOP != 0 {
                    return Err(TargetError::ForbiddenByte(c));
                }
                escapes |= c == b'%';
            }
            if escapes {
                check_escapes(q)?;
            }
        }
        Ok(Some(Self {
            path: Cow::Borrowed(path),
            query,
            authority: None,
            https: None,
            as_sent: Some(raw),
        }))
    }

    /// The path and query as sent upstream when nothing rewrites them.
    #[inline]
    pub fn path_and_query(&self) -> Cow<'a, str> {
        match (self.as_sent, self.query) {
            (Some(raw), _) => Cow::Borrowed(raw),
            (None, None) => self.path.clone(),
            (None, Some(q)) => Cow::Owned(format!("{}?{q}", self.path)),
        }
    }
}

/// Byte classes of [`Target::parse_plain`]'s scan. Forbidden anywhere:
/// controls, space, DEL and `#`.
const STOP: u8 = 1;
/// `?`: the query begins.
const QUERY: u8 = 2;
/// `%`, `\` or non-ASCII: the path needs the general road.
const ODD: u8 = 4;
/// `/` or `.`: after a `/`, an empty or dot segment may begin.
const DOTTY: u8 = 8;

static CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match i as u8 {
            0..=0x20 | 0x7f | b'#' => STOP,
            b'?' => QUERY,
            b'%' | b'\\' | 0x80..=0xff => ODD,
            b'/' | b'.' => DOTTY,
            _ => 0,
        };
        i += 1;
    }
    t
};

/// Whether `path` is its own canonical form: ASCII, no escapes, no dot
/// segments, and (when merging) no empty segment but a final one.
fn is_canonical(path: &str, policy: &PathPolicy) -> bool {
    let b = path.as_bytes();
    if !b.is_ascii() || b.contains(&b'%') || b.contains(&b'\\') || b.first() != Some(&b'/') {
        return false;
    }
    let mut segs = path[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && policy.merge_slashes && !last) {
            return false;
        }
    }
    true
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The byte a `%XX` escape at `b[i]` encodes; `%00` is refused. Errors name
/// the escape's position.
fn escape_at(b: &[u8], i: usize) -> Result<u8, TargetError> {
    match (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
        (Some(0), Some(0)) => Err(TargetError::ForbiddenByte(0)),
        (Some(h), Some(l)) => Ok(h << 4 | l),
        _ => Err(TargetError::BadEscape(i)),
    }
}

fn check_escapes(s: &str) -> Result<(), TargetError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            escape_at(b, i)?;
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Decodes escapes of unreserved characters, upper-cases the hex of the
/// others, percent-encodes raw non-ASCII bytes (as browsers send them),
/// applies the encoded-slash policy, then resolves dot-segments (RFC 3986
/// §5.2.4) and merges slashes if asked.
fn canonical_path(path: &str, policy: &PathPolicy) -> Result<String, TargetError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // A raw backslash is what `%5C` would decode to (a separator to
        // backends on some systems): treated the same, and kept escaped.
        if c == b'\\' {
            match policy.encoded_slash {
                EncodedSlash::Reject => return Err(TargetError::EncodedSlash),
                _ => push_escape(&mut out, c),
            }
            i += 1;
            continue;
        }
        if c != b'%' {
            if c.is_ascii() {
                out.push(c as char);
            } else {
                push_escape(&mut out, c);
            }
            i += 1;
            continue;
        }
        match escape_at(b, i)? {
            v @ (b'/' | b'\\') => match policy.encoded_slash {
                EncodedSlash::Reject => return Err(TargetError::EncodedSlash),
                EncodedSlash::Decode if v == b'/' => out.push('/'),
                _ => push_escape(&mut out, v),
            },
            v if unreserved(v) => out.push(v as char),
            v => push_escape(&mut out, v),
        }
        i += 3;
    }
    remove_dots(&out, policy.merge_slashes)
}

fn push_escape(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[(v >> 4) as usize] as char);
    out.push(HEX[(v & 15) as usize] as char);
}

/// Resolves `.` and `..` segments (a `..` above the root is an error) and,
/// with `merge`, drops empty segments. A path whose last segment is empty,
/// `.` or `..` ends with `/`.
fn remove_dots(path: &str, merge: bool) -> Result<String, TargetError> {
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut segs: Vec<&str> = Vec::new();
    let mut parts = body.split('/').peekable();
    let mut trailing = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(TargetError::AboveRoot);
                }
            }
            "" if merge || last => {}
            s => segs.push(s),
        }
        trailing = last && matches!(seg, "" | "." | "..");
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segs.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(raw: &str) -> Result<String, TargetError> {
        Target::parse(raw, &PathPolicy::default()).map(|t| t.to_string())
    }

    #[test]
    fn canonical_forms() {
        for (raw, want) in [
            ("/", "/"),
            ("/foo", "/foo"),
            ("/foo/", "/foo/"),
            ("//aaa//ccc", "/aaa/ccc"),
            ("/./foo", "/foo"),
            ("/aaa/../foo/x", "/foo/x"),
            ("/aaa/%2e%2e/foo", "/foo"),
            ("/%66oo", "/foo"),
            ("/a%20b", "/a%20b"),
            ("/a%7e%41%2a", "/a~A%2A"),
            ("/foo;x", "/foo;x"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a?x=1&y=%20", "/a?x=1&y=%20"),
            ("*", "/"),
            ("http://foo.bar.com/x?y", "/x?y"),
            ("HTTP://foo.bar.com", "/"),
            ("/caf\u{e9}", "/caf%C3%A9"),
        ] {
            assert_eq!(canon(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refused_targets() {
        for (raw, err) in [
            ("/../foo", TargetError::AboveRoot),
            ("/a/../../b", TargetError::AboveRoot),
            ("/foo%00", TargetError::ForbiddenByte(0)),
            ("/foo\0", TargetError::ForbiddenByte(0)),
            ("/a b", TargetError::ForbiddenByte(b' ')),
            ("/a#b", TargetError::ForbiddenByte(b'#')),
            ("/a%zz", TargetError::BadEscape(2)),
            ("/a%2", TargetError::BadEscape(2)),
            ("/a?b=%g1", TargetError::BadEscape(2)),
            ("/a%2Fb", TargetError::EncodedSlash),
            ("/a%5cb", TargetError::EncodedSlash),
            ("/public\\..\\admin", TargetError::EncodedSlash),
            ("foo", TargetError::Form),
            ("", TargetError::Form),
            ("http://user@h/", TargetError::Authority),
        ] {
            assert_eq!(canon(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn encoded_slash_policies_and_no_merge() {
        let keep = PathPolicy {
            encoded_slash: EncodedSlash::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(Target::parse("/a%2fb", &keep).unwrap().path, "/a%2Fb");
        let decode = PathPolicy {
            encoded_slash: EncodedSlash::Decode,
            ..PathPolicy::default()
        };
        assert_eq!(Target::parse("/aaa%2Fccc", &decode).unwrap().path, "/aaa/ccc");
        assert_eq!(Target::parse("/a%5Cb", &decode).unwrap().path, "/a%5Cb");
        // A raw backslash is kept escaped, never passed raw.
        assert_eq!(Target::parse("/a\\..\\b", &keep).unwrap().path, "/a%5C..%5Cb");
        let no_merge = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(Target::parse("//a//b/", &no_merge).unwrap().path, "//a//b/");
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_road_agrees_with_the_general_one(raw in "/[a/.%2Fé?=#~ \\t\\x7f]{0,12}") {
            let policy = PathPolicy::default();
            if let Ok(Some(fast)) = Target::parse_plain(&raw) {
                proptest::prop_assert_eq!(Target::parse_general(&raw, &policy), Ok(fast));
            }
            if let Err(e) = Target::parse_plain(&raw) {
                proptest::prop_assert_eq!(Target::parse_general(&raw, &policy), Err(e));
            }
        }
    }

    #[test]
    fn absolute_form_gives_the_authority() {
        let t = Target::parse("https://Foo.Bar.com:8443/x", &PathPolicy::default()).unwrap();
        assert_eq!(t.authority, Some("Foo.Bar.com:8443"));
        assert_eq!(t.https, Some(true));
        assert_eq!(t.path, "/x");
    }
}
