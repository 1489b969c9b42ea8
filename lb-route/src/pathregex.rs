//! Regex paths as ingress-nginx matches them (`location ~* "^<path>"`:
//! anchored at the start only, case-insensitive), in linear time.
//!
//! The `regex` crate has no look-around. One PCRE idiom is common enough in
//! real Ingresses to translate (reference/ingress.md §5.3 G5): a single
//! negative lookahead right after a literal prefix, as in
//! `/api/((?!internal).*)`. `^L(?!X)B` matches exactly when `^L B` does and
//! `^L X` does not, so it compiles to that pair; the lookahead's own groups
//! become empty groups, so `$1`…`$9` keep their numbers for
//! `rewrite-target`. Every other look-around is refused with an error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use regex_automata::meta::{self, Regex};
use regex_automata::util::{captures::Captures, syntax};

/// Largest compiled size of one regex path (bytes of the compiled program):
/// ample for any real path, and small enough that refusing one is quick.
pub(crate) const SIZE_LIMIT: usize = 256 << 10;

/// The lazy DFA cache of one regex (per thread that searches it, allocated
/// as used). Beyond it the engine falls back to its NFA simulation: still
/// linear, only slower.
const DFA_CACHE: usize = 256 << 10;

/// A compiled regex and the pattern it was compiled from.
#[derive(Clone)]
pub(crate) struct Compiled {
    /// The pattern as compiled (see [`build`] for when it differs from the
    /// one given).
    pub(crate) pattern: Box<str>,
    pub(crate) regex: Regex,
}

/// A linear-time regex over bytes, as nginx's PCRE runs one (no UTF mode):
/// `.` and `[^…]` match one byte, `\w`, `\d`, `\s` and case folding are
/// ASCII. That is also what keeps it small: a Unicode case-insensitive `\w`
/// alone compiles to 56 KiB, its ASCII form to under 3 KiB. A pattern that
/// needs Unicode to compile at all (a non-ASCII character in a class, a
/// `\p{…}` class) is compiled in Unicode mode instead (`(?u:…)`): paths
/// and header values are ASCII by the time they are matched, so the two
/// modes agree on them. Built on the `regex` crate's own engine, used
/// directly so its heap size can be accounted, with a size limit on what it
/// compiles to. Errors say what is wrong ("invalid: …", "too large …").
pub(crate) fn build(pattern: &str, case_insensitive: bool) -> Result<Compiled, String> {
    compile_uncached(pattern, case_insensitive)
}

/// Compiled regex paths kept from one table build to the next, so that a
/// rebuild compiles only the paths the last build did not have (a change
/// to one of 10,000 Ingresses compiles that one's). Only what a table
/// took (within its regex budget) is kept, and what a build did not use
/// is dropped after it: the cache holds no regex the table does not. A
/// table in shards keeps one per shard ([`crate::BuildCache`]).
#[derive(Default)]
pub(crate) struct RegexCache {
    /// What the last build took, by how it was compiled and pattern.
    last: Regexes,
    /// What the build before the last had and the last did not take (kept
    /// by [`RegexCache::during_part`] only).
    spare: Regexes,
    /// What this build has taken so far.
    this: Regexes,
    /// What the Ingress being added took: kept if it is added, dropped if
    /// an error leaves it out.
    pending: Vec<(&'static str, Box<str>, PathRegex)>,
}

/// Compiled regexes by how they were compiled, then by pattern (looked up
/// by the borrowed pattern, without making a key).
type Regexes = HashMap<&'static str, HashMap<Box<str>, PathRegex>>;

fn count(r: &Regexes) -> usize {
    r.values().map(HashMap::len).sum()
}

impl std::fmt::Debug for RegexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegexCache")
            .field("regexes", &(count(&self.last) + count(&self.this)))
            .finish()
    }
}

thread_local! {
    /// The cache of the build running on this thread, if it has one.
    static ACTIVE: RefCell<Option<RegexCache>> = const { RefCell::new(None) };
}

impl RegexCache {
    /// Runs `build` with `cache` in use on this thread; afterwards the
    /// cache holds what that build used.
    pub(crate) fn during<T>(cache: &mut RegexCache, build: impl FnOnce() -> T) -> T {
        let out = Self::run(cache, build);
        cache.spare = Regexes::default();
        out
    }

    /// How many regexes it keeps.
    pub(crate) fn len(&self) -> usize {
        count(&self.last) + count(&self.this)
    }

    /// The regexes of several caches as one, for the shards of a table
    /// built together: one compiles what another had.
    pub(crate) fn pooled(caches: impl IntoIterator<Item = RegexCache>) -> RegexCache {
        let mut pool = RegexCache::default();
        for cache in caches {
            for (how, by_pattern) in cache.last {
                pool.last.entry(how).or_default().extend(by_pattern);
            }
        }
        pool
    }

    /// Runs the build of one shard with the regexes of `pool`: returns
    /// what it took as the shard's own cache, and leaves the pool what it
    /// had (for the next shard built with it; dropped with it).
    pub(crate) fn during_part<T>(pool: &mut RegexCache, build: impl FnOnce() -> T) -> (T, RegexCache) {
        let mut part = RegexCache {
            last: std::mem::take(&mut pool.last),
            ..RegexCache::default()
        };
        let out = Self::run(&mut part, build);
        pool.last = std::mem::take(&mut part.spare);
        for (how, by_pattern) in &part.last {
            let to = pool.last.entry(how).or_default();
            for (pattern, re) in by_pattern {
                to.insert(pattern.clone(), re.clone());
            }
        }
        (out, part)
    }

    /// Runs `build` with `cache` in use on this thread; afterwards `last`
    /// holds what it took and `spare` what it did not.
    fn run<T>(cache: &mut RegexCache, build: impl FnOnce() -> T) -> T {
        /// Takes the cache off the thread however the build ends (a panic
        /// included), and puts back what was there.
        struct Installed<'a> {
            cache: &'a mut RegexCache,
            before: Option<RegexCache>,
        }
        impl Drop for Installed<'_> {
            fn drop(&mut self) {
                let before = self.before.take();
                let mut back = ACTIVE
                    .with(|a| std::mem::replace(&mut *a.borrow_mut(), before))
                    .unwrap_or_default();
                back.spare = std::mem::replace(&mut back.last, std::mem::take(&mut back.this));
                back.pending.clear();
                *self.cache = back;
            }
        }
        let taken = std::mem::take(cache);
        let before = ACTIVE.with(|a| a.borrow_mut().replace(taken));
        let _installed = Installed { cache, before };
        build()
    }

    /// The regex for `path` compiled the `how` way, if a build took it.
    pub(crate) fn take(path: &str, how: &'static str) -> Option<PathRegex> {
        ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            let cache = a.as_mut()?;
            if let Some(hit) = cache.this.get(how).and_then(|m| m.get(path)) {
                return Some(hit.clone());
            }
            cache.last.get_mut(how)?.remove(path)
        })
    }

    /// Notes what the Ingress being added took (see [`RegexCache::settle`]).
    pub(crate) fn took(path: &str, how: &'static str, re: &PathRegex) {
        ACTIVE.with(|a| {
            // A pattern this build already keeps (Ingresses that share a
            // regex) is not kept twice.
            if let Some(cache) = a.borrow_mut().as_mut()
                && !cache.this.get(how).is_some_and(|m| m.contains_key(path))
            {
                cache.pending.push((how, path.into(), re.clone()));
            }
        });
    }

    /// The Ingress being added was taken (`true`: its regexes are kept) or
    /// left out (dropped).
    pub(crate) fn settle(taken: bool) {
        ACTIVE.with(|a| {
            if let Some(cache) = a.borrow_mut().as_mut() {
                let pending = std::mem::take(&mut cache.pending);
                if taken {
                    for (how, path, re) in pending {
                        cache.this.entry(how).or_default().insert(path, re);
                    }
                }
            }
        });
    }
}

/// [`build`] without the cache.
fn compile_uncached(pattern: &str, case_insensitive: bool) -> Result<Compiled, String> {
    let compile = |p: &str| {
        Regex::builder()
            .syntax(bytes_syntax().case_insensitive(case_insensitive))
            .configure(
                meta::Config::new()
                    .utf8_empty(false)
                    .nfa_size_limit(Some(SIZE_LIMIT))
                    .onepass_size_limit(Some(SIZE_LIMIT))
                    .hybrid_cache_capacity(DFA_CACHE),
            )
            .build(p)
            .map_err(Box::new)
    };
    let mut failed = match compile(pattern) {
        Ok(regex) => {
            return Ok(Compiled {
                pattern: pattern.into(),
                regex,
            });
        }
        Err(e) => e,
    };
    if failed.syntax_error().is_some() {
        let unicode = format!("(?u:{pattern})");
        match compile(&unicode) {
            Ok(regex) => {
                return Ok(Compiled {
                    pattern: unicode.into(),
                    regex,
                });
            }
            // What the Unicode form needs (a smaller size, a known
            // property) is what to fix.
            Err(e) => failed = e,
        }
    }
    let first = failed;
    Err(match (first.size_limit(), first.syntax_error()) {
        (Some(n), _) => format!("too large (limit {n} bytes compiled)"),
        (None, Some(e)) => format!("invalid: {}", last_line(&e.to_string())),
        (None, None) => {
            let mut message = format!("invalid: {first}");
            if let Some(cause) = std::error::Error::source(&first) {
                message = format!("{message}: {cause}");
            }
            message
        }
    })
}

/// The syntax of [`build`]: bytes, ASCII classes.
pub(crate) fn bytes_syntax() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

/// The last line of a multi-line parser message (the earlier ones repeat
/// the pattern and point into it).
fn last_line(message: &str) -> &str {
    message.lines().last().unwrap_or_default()
}

/// A compiled regex path, shared: the tables and the cache that hold the
/// same path hold one program (10,000 Ingresses with one pattern compile it
/// once, and a rebuild copies a pointer per path).
#[derive(Clone)]
pub(crate) struct PathRegex(Arc<Program>);

/// What a [`PathRegex`] holds.
pub(crate) struct Program {
    /// The path (with any lookahead removed), anchored, as compiled: the
    /// text for the host's set.
    pattern: Box<str>,
    /// The same, compiled.
    keep: Regex,
    /// What the translated negative lookahead refuses, anchored.
    exclude: Option<Regex>,
}

/// The pattern, not the compiled program.
impl std::fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PathRegex").field(&self.pattern).finish()
    }
}

/// The pattern a regex path compiles to: anchored at the start only.
fn anchored(path: &str) -> String {
    format!("^(?:{path})")
}

/// A regex path's pattern, compiled case-insensitively; errors name the
/// path.
fn build_path(pattern: &str, path: &str) -> Result<Compiled, String> {
    build(pattern, true).map_err(|e| format!("regex {path:?} is {e}"))
}

impl std::ops::Deref for PathRegex {
    type Target = Program;
    fn deref(&self) -> &Program {
        &self.0
    }
}

impl PathRegex {
    /// Compiles a regex path (a single negative lookahead after a literal
    /// prefix is translated; other look-around is an error).
    pub(crate) fn compile(path: &str) -> Result<Self, String> {
        let lookaround = |p: &str| p.contains("(?=") || p.contains("(?<=") || p.contains("(?<!");
        let tokens = tokenize(path).map_err(|e| unsupported(path, e))?;
        let Some(at) = path.find("(?!") else {
            if lookaround(path) {
                return Err(unsupported(
                    path,
                    "look-around is not supported (linear-time regex only)",
                ));
            }
            return Self::new(path, None, path);
        };
        let close = matching(&tokens, at).ok_or_else(|| format!("regex {path:?} is invalid: unclosed group"))?;
        let inner = &path[at + 3..close];
        let rest = &path[close + 1..];
        if lookaround(inner) || inner.contains("(?!") || rest.contains("(?!") || lookaround(rest) {
            return Err(unsupported(
                path,
                "only one negative lookahead, and no other look-around, is supported",
            ));
        }
        if alternation_around(&tokens, at, close) || matches!(rest.bytes().next(), Some(b'*' | b'+' | b'?' | b'{')) {
            return Err(unsupported(
                path,
                "a negative lookahead is supported only when it applies to the whole path: not repeated, \
                 and not inside one branch of an alternation",
            ));
        }
        let literal = literal_prefix(path, &tokens, at).ok_or_else(|| {
            unsupported(
                path,
                "a negative lookahead is supported only right after a literal prefix, as in /api/((?!internal).*)",
            )
        })?;
        let groups = tokens
            .iter()
            .filter(|t| t.at > at && t.at < close && t.kind == Kind::Capture)
            .count();
        let keep = format!("{}{}{rest}", &path[..at], "()".repeat(groups));
        Self::new(&keep, Some(&format!("{literal}(?:{inner})")), path)
    }

    /// A path matched as the literal text it is (for a plain path whose
    /// text is not a valid regex). Fails only when the path is too long to
    /// compile within [`SIZE_LIMIT`].
    pub(crate) fn literal(path: &str) -> Result<Self, String> {
        Self::new(&regex::escape(path), None, path)
    }

    /// Compiles `keep` (and `exclude`), each anchored at the start. Each
    /// must be a regex on its own first: `/x)|(.*` must not close the
    /// anchoring group and match anywhere.
    fn new(keep: &str, exclude: Option<&str>, path: &str) -> Result<Self, String> {
        for p in std::iter::once(keep).chain(exclude) {
            let parses = |config: syntax::Config| {
                syntax::parse_with(p, &config.case_insensitive(true))
                    .map(|_| ())
                    .map_err(|e| last_line(&e.to_string()).to_owned())
            };
            // The Unicode form's error is the one to fix (the bytes form
            // says only "Unicode not allowed" for `\p{Nope}`).
            if parses(bytes_syntax()).is_err() {
                parses(syntax::Config::new().utf8(false)).map_err(|e| format!("regex {path:?} is invalid: {e}"))?;
            }
        }
        let exclude = exclude.map(|x| build_path(&anchored(x), path)).transpose()?;
        let keep = build_path(&anchored(keep), path)?;
        Ok(Self(Arc::new(Program {
            pattern: keep.pattern,
            keep: keep.regex,
            exclude: exclude.map(|x| x.regex),
        })))
    }

    /// The anchored pattern, for a `RegexSet` (which is then checked with
    /// [`PathRegex::excludes`]).
    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The heap bytes this regex holds (its search caches apart).
    pub(crate) fn memory_usage(&self) -> usize {
        self.pattern.len() + self.keep.memory_usage() + self.exclude.as_ref().map_or(0, Regex::memory_usage)
    }

    /// Whether the translated lookahead refuses `path`.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        self.exclude.as_ref().is_some_and(|x| x.is_match(path))
    }

    /// Whether `path` matches.
    pub(crate) fn is_match(&self, path: &str) -> bool {
        self.keep.is_match(path) && !self.excludes(path)
    }

    /// The groups of a match (`$1`…`$9`).
    pub(crate) fn captures<'p>(&self, path: &'p str) -> Option<Groups<'p>> {
        if self.excludes(path) {
            return None;
        }
        let mut caps = self.keep.create_captures();
        self.keep.captures(path, &mut caps);
        caps.is_match().then_some(Groups { path, caps })
    }
}

/// The groups of a regex path's match.
#[derive(Debug)]
pub(crate) struct Groups<'p> {
    path: &'p str,
    caps: Captures,
}

impl<'p> Groups<'p> {
    /// Group `n` (0 is the whole match), if it took part in the match. A
    /// group that ends inside a multi-byte character (`.` matches one byte)
    /// has that character's bytes as U+FFFD.
    pub(crate) fn get(&self, n: usize) -> Option<std::borrow::Cow<'p, str>> {
        let span = self.caps.get_group(n)?;
        Some(String::from_utf8_lossy(&self.path.as_bytes()[span.range()]))
    }
}

fn unsupported(path: &str, why: &str) -> String {
    format!("regex {path:?}: {why}")
}

/// What a parenthesis (or other structural character) of a pattern is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `(` or `(?P<name>` / `(?<name>`.
    Capture,
    /// `(?:`, `(?i)`, look-around …
    OpenOther,
    Close,
    /// `|`.
    Bar,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    at: usize,
    kind: Kind,
}

/// The parentheses and `|` of a pattern, escapes and classes skipped.
/// PCRE syntax that the linear-time engine would read with another meaning
/// (possessive quantifiers) or not at all (atomic groups) is an error.
fn tokenize(p: &str) -> Result<Vec<Token>, &'static str> {
    let b = p.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'[' => {
                // A class: `]` right after `[` or `[^` is a member.
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unclosed character class");
                }
            }
            b'*' | b'+' | b'?' | b'}'
                if b.get(i + 1) == Some(&b'+') && !(b[i] == b'?' && i > 0 && b[i - 1] == b'(') =>
            {
                return Err("possessive quantifiers (a++, a*+, a?+, a{n}+) are not supported");
            }
            b'(' if p[i + 1..].starts_with("?>") => return Err("atomic groups (?>…) are not supported"),
            b'|' => out.push(Token { at: i, kind: Kind::Bar }),
            b'(' => {
                let rest = &p[i + 1..];
                let capture = !rest.starts_with('?')
                    || rest.starts_with("?P<")
                    || (rest.starts_with("?<") && !rest.starts_with("?<=") && !rest.starts_with("?<!"));
                out.push(Token {
                    at: i,
                    kind: if capture { Kind::Capture } else { Kind::OpenOther },
                });
            }
            b')' => out.push(Token {
                at: i,
                kind: Kind::Close,
            }),
            _ => {}
        }
        i += 1;
    }
    Ok(out)
}

/// The `)` closing the group opened at byte `open`.
fn matching(tokens: &[Token], open: usize) -> Option<usize> {
    let start = tokens.iter().position(|t| t.at == open)?;
    let mut depth = 0usize;
    for t in &tokens[start..] {
        match t.kind {
            Kind::Close => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(t.at);
                }
            }
            Kind::Capture | Kind::OpenOther => depth += 1,
            Kind::Bar => {}
        }
    }
    None
}

/// Whether an alternation (`|`) outside the group `open..=close` has that
/// group in one of its branches (at the top level, or in a group that
/// encloses it): then what the group refuses is not refused for the whole
/// path.
fn alternation_around(tokens: &[Token], open: usize, close: usize) -> bool {
    let mut stack: Vec<usize> = Vec::new();
    for t in tokens {
        match t.kind {
            Kind::Capture | Kind::OpenOther => stack.push(t.at),
            Kind::Close => {
                stack.pop();
            }
            Kind::Bar if t.at > open && t.at < close => {}
            Kind::Bar => match stack.last() {
                None => return true,
                Some(&o) => {
                    if o < open && matching(tokens, o).is_none_or(|c| c > close) {
                        return true;
                    }
                }
            },
        }
    }
    false
}

/// `path[..at]` as a regex without its group openers, if it is a literal
/// (plain characters and escaped punctuation) interleaved with the
/// openers of groups that are still open at `at` and are not repeated.
fn literal_prefix(path: &str, tokens: &[Token], at: usize) -> Option<String> {
    let b = path.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < at {
        match b[i] {
            b'\\' => {
                // Escaped punctuation is literal; `\d`, `\w` … are not.
                let c = path[i + 1..].chars().next()?;
                if !c.is_ascii_punctuation() {
                    return None;
                }
                out.push('\\');
                out.push(c);
                i += 2;
                continue;
            }
            b'(' => {
                let rest = &path[i + 1..];
                let opener = if rest.starts_with("?:") {
                    3
                } else if rest.starts_with('?') {
                    return None;
                } else {
                    1
                };
                // The group must close after the lookahead, and not be
                // repeated.
                let close = matching(tokens, i)?;
                if close < at || matches!(b.get(close + 1), Some(b'*' | b'+' | b'?' | b'{')) {
                    return None;
                }
                i += opener;
                continue;
            }
            b'.' | b'^' | b'$' | b'*' | b'+' | b'?' | b'{' | b'}' | b'[' | b']' | b'|' | b')' => return None,
            _ => {
                let c = path[i..].chars().next()?;
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(re: &PathRegex, path: &str) -> Option<Vec<String>> {
        re.captures(path).map(|c| {
            (1..re.keep.captures_len())
                .map(|n| c.get(n).unwrap_or_default().into_owned())
                .collect()
        })
    }

    #[test]
    fn plain_regexes_are_anchored_at_the_start_and_case_insensitive() {
        let re = PathRegex::compile("/id/[0-9]+").unwrap();
        assert!(re.is_match("/id/123a"));
        assert!(re.is_match("/ID/5"));
        assert!(!re.is_match("/x/id/5"));
        assert!(!re.is_match("/id/aaa"));
    }

    #[test]
    fn a_negative_lookahead_after_a_literal_prefix_is_translated() {
        let re = PathRegex::compile("/api/x/((?!_internal).*)").unwrap();
        assert_eq!(caps(&re, "/api/x/foo/bar"), Some(vec!["foo/bar".into()]));
        assert_eq!(caps(&re, "/api/x/_internal/a"), None);
        assert!(
            !re.is_match("/API/X/_INTERNAL"),
            "the lookahead is case-insensitive too"
        );
        assert!(re.is_match("/api/x/_interna"));
        assert!(re.is_match("/api/x/"));
        // Alternatives in the lookahead, groups after it keep their numbers.
        let re = PathRegex::compile("/(?!(api|static)/)([^/]+)/(.*)").unwrap();
        assert_eq!(
            caps(&re, "/app/a/b"),
            Some(vec![String::new(), "app".into(), "a/b".into()])
        );
        assert_eq!(caps(&re, "/static/a"), None);
        assert!(re.is_match("/apix/a"));
        // Escapes and non-capturing groups in the prefix.
        let re = PathRegex::compile(r"/v1\.0/(?:(?!health).*)").unwrap();
        assert!(re.is_match("/v1.0/users"));
        assert!(!re.is_match("/v1.0/healthz"));
        assert!(!re.is_match("/v1x0/users"));
    }

    #[test]
    fn other_look_around_is_refused_with_a_reason() {
        for (path, why) in [
            ("/a/(?=b)", "look-around"),
            ("/a(?<=a)", "look-around"),
            ("/a/(?!b)(?!c)", "only one negative lookahead"),
            ("/a/.*(?!b)", "literal prefix"),
            ("/a/((?!b).)*", "literal prefix"),
            ("/a/(x|(?!b))", "alternation"),
            ("/(?i)a/(?!b)", "literal prefix"),
            ("/a/(?!b", "unclosed"),
        ] {
            let e = PathRegex::compile(path).unwrap_err();
            assert!(e.contains(why), "{path}: {e}");
            assert!(e.contains(path), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_pattern_compiles_or_is_refused_without_panicking(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec!["(", ")", "(?!", "(?:", "(?=", "\\", "\\.", "é", "a", "/", ".", "*", "[", "]", "|", "?", "{2}"]),
                0..12,
            ),
            probe in "[a/é.]{0,8}",
        ) {
            let path: String = pieces.concat();
            if let Ok(re) = PathRegex::compile(&path) {
                let _ = re.is_match(&probe);
                let _ = re.captures(&probe);
                if !path.contains("(?!") {
                    // Without a lookahead it is the plain anchored regex
                    // (in Unicode mode if it needs it, as the host's set).
                    let unicode = format!("(?u:{})", anchored(&path));
                    proptest::prop_assert!(re.pattern() == anchored(&path) || re.pattern() == unicode);
                    let plain = regex::bytes::RegexBuilder::new(re.pattern())
                        .unicode(false)
                        .case_insensitive(true)
                        .build()
                        .unwrap();
                    proptest::prop_assert_eq!(re.is_match(&probe), plain.is_match(probe.as_bytes()));
                }
            }
        }
    }

    proptest::proptest! {
        /// The lookahead translation against a backtracking engine that has
        /// look-around (fancy-regex, as PCRE would run it): `^L(?!X)B`
        /// matches the same paths, with the same whole match.
        #[test]
        fn lookahead_translation_agrees_with_a_backtracking_engine(
            prefix in proptest::sample::select(vec!["/", "/a/", "/api/", r"/v1\.0/", "/A-"]),
            inner in proptest::sample::select(vec!["a", "ab", "a|b", "(a|bc)/", "b.", "[ab]+", "a$", "(?:x)"]),
            rest in proptest::sample::select(vec!["", ".*", "(.*)", "[a-c]+", "(b|c)/(.*)", "a?b", "$"]),
            wrap in proptest::bool::ANY,
            probe in "[aAbBc/.x1]{0,10}",
        ) {
            let path = if wrap {
                format!("{prefix}((?!{inner}){rest})")
            } else {
                format!("{prefix}(?!{inner}){rest}")
            };
            let ours = PathRegex::compile(&path).unwrap();
            let reference = fancy_regex::RegexBuilder::new(&format!("(?i)^(?:{path})")).build().unwrap();
            let want = reference.find(&probe).unwrap().map(|m| m.range());
            let got = ours.captures(&probe).map(|c| c.caps.get_group(0).unwrap().range());
            proptest::prop_assert_eq!(got, want, "{} on {:?}", path, probe);
        }
    }

    /// Invalid paths say what is wrong, as the parser words it.
    #[test]
    fn errors_name_their_cause() {
        for (path, cause) in [
            ("/a(", "unclosed group"),
            ("/a[", "unclosed character class"),
            ("/a{2,1}", "repetition"),
            ("/a{99999}", "too large"),
            ("/\\q", "unrecognized escape"),
        ] {
            let e = PathRegex::compile(path).unwrap_err();
            assert!(e.contains(cause), "{path}: {e}");
        }
        let e = super::build("(?<=a)b", false).err().unwrap();
        assert!(e.contains("look-around"), "{e}");
    }

    /// A path is a regex on its own: it cannot close the group that
    /// anchors it and match anywhere (`/x)|(.*`), and PCRE syntax the
    /// engine would read otherwise is refused, as are lookaheads whose
    /// translation would not hold.
    #[test]
    fn paths_cannot_escape_their_anchor_or_change_meaning() {
        for (path, why) in [
            ("/x)|(?:/admin", "unopened group"),
            ("/x)|(.*", "unopened group"),
            ("/x/(?!a))|(.*", "alternation"),
            ("/x/(?!a)b)|(.*", "alternation"),
            ("/a++a", "possessive"),
            ("/a*+a", "possessive"),
            ("/a{2}+", "possessive"),
            ("/(?>a+)a", "atomic"),
            ("/x/((?!a).*)|/x/(a.*)", "alternation"),
            ("/(?:a/(?!x)|a/x)(.*)", "alternation"),
            ("/api/(?!x)*(.*)", "repeated"),
            ("/\\p{Nope}", "Unicode property not found"),
        ] {
            let e = PathRegex::compile(path).unwrap_err();
            assert!(e.contains(why), "{path}: {e}");
        }
        // Lazy quantifiers and alternations beside the lookahead are fine.
        assert!(PathRegex::compile("/a+?b").is_ok());
        assert!(PathRegex::compile("/a/(?!x)(b|c)").is_ok());
        assert!(PathRegex::compile("/(?!(api|static)/)([^/]+)/(.*)").is_ok());
    }

    /// Patterns that only compile in Unicode mode (a non-ASCII character in
    /// a class, `\p{…}`) are compiled in it: on ASCII paths both modes
    /// agree.
    #[test]
    fn unicode_only_patterns_still_compile() {
        let re = PathRegex::compile("/[é-ü]?x/\\pL+").unwrap();
        assert!(re.is_match("/x/abc"));
        assert!(re.is_match("/X/Q"));
        assert!(!re.is_match("/x/1"));
        assert!(re.pattern().starts_with("(?u:"));
        // The host's set compiles what the regex compiled.
        let set = regex::bytes::RegexSetBuilder::new([re.pattern()])
            .unicode(false)
            .case_insensitive(true)
            .build()
            .unwrap();
        assert!(set.is_match(b"/x/abc"));
    }

    #[test]
    fn literal_paths_match_their_text() {
        let re = PathRegex::literal("/a[b").unwrap();
        assert!(re.is_match("/A[b/c"));
        assert!(!re.is_match("/ab"));
    }
}
