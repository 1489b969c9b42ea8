//! HTTP basic authentication (`auth-type: basic`) against htpasswd
//! Secrets, as ingress-nginx runs it: the Secret's `auth` key holds
//! `user:hash` lines; a request without valid credentials gets 401 with
//! `WWW-Authenticate: Basic realm="…"`. Hashes: bcrypt (`$2a$`, `$2b$`,
//! `$2y$`), Apache MD5 (`$apr1$`), MD5-crypt (`$1$`), `{SHA}` and
//! `{PLAIN}`. An Ingress whose Secret is missing or holds no usable line is
//! answered 503: it fails closed, never open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use md5::Digest as _;

use crate::objects::{Object, ObjectRef};
use crate::source::{Problem, Snapshot};

/// The htpasswd Secrets of a view, by namespace and name.
#[derive(Debug, Default)]
pub struct Htpasswds {
    /// `auth-file`: the htpasswd lines of the key `auth`.
    files: HashMap<(String, String), Arc<Htpasswd>>,
    /// `auth-map`: every key a user, its value the hash.
    maps: HashMap<(String, String), Arc<Htpasswd>>,
}

/// The users of one htpasswd Secret.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
    /// Credentials that verified (a SHA-256 of the user and password), so
    /// that a slow hash (bcrypt) is computed once per client, not per
    /// request; the oldest are forgotten first.
    verified: Mutex<Verified>,
    /// A SHA-256 of the text it was read from: a rebuild with the same
    /// text keeps this file, and what verified.
    text: [u8; 32],
}

#[derive(Debug, Default)]
struct Verified {
    set: std::collections::HashSet<[u8; 32]>,
    order: std::collections::VecDeque<[u8; 32]>,
}

/// The highest bcrypt cost accepted (`htpasswd -B` uses 5; 12 takes about
/// a quarter of a second here).
pub const MAX_BCRYPT_COST: u32 = 12;

/// Credentials remembered per Secret.
const VERIFIED_KEPT: usize = 1024;

/// A password hash of a supported kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Bcrypt(String),
    /// `$apr1$` (Apache) or `$1$`: the magic, the salt, the whole line's hash.
    Md5Crypt {
        magic: &'static str,
        salt: String,
        whole: String,
    },
    Sha1([u8; 20]),
    Plain(String),
}

impl Htpasswds {
    /// Reads every Secret with an `auth` key (data or stringData) in
    /// `snap`; a line that does not parse is reported and skipped.
    pub fn build(snap: &Snapshot, previous: Option<&Htpasswds>) -> (Self, Vec<Problem>) {
        // The Secrets an Ingress reads as a map (auth-secret-type:
        // auth-map): only those are read so (any Opaque Secret has keys).
        let mut as_map = std::collections::HashSet::new();
        for (_, o) in &snap.objects {
            let Object::Ingress(i) = o else { continue };
            let Some(a) = i.metadata.annotations.as_ref() else {
                continue;
            };
            if a.get("nginx.ingress.kubernetes.io/auth-secret-type")
                .map(String::as_str)
                == Some("auth-map")
                && let Some(secret) = a.get("nginx.ingress.kubernetes.io/auth-secret")
            {
                let ns = i.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                as_map.insert((ns, secret.clone()));
            }
        }
        let mut out = Self::default();
        let mut problems = Vec::new();
        for (origin, o) in &snap.objects {
            let Object::Secret(s) = o else { continue };
            let namespace = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let name = s.metadata.name.clone().unwrap_or_default();
            let key = (namespace.clone(), name.clone());
            let mut entries: Vec<(String, String)> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .chain(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone())))
                .collect();
            entries.sort();
            entries.dedup_by(|a, b| a.0 == b.0);
            let mut read = |text: String,
                            field: &dyn Fn(usize) -> String,
                            into: &mut HashMap<(String, String), Arc<Htpasswd>>,
                            before: Option<&HashMap<(String, String), Arc<Htpasswd>>>| {
                if let Some(f) = before
                    .and_then(|b| b.get(&key))
                    .filter(|f| f.text == digest(text.as_bytes()))
                {
                    into.insert(key.clone(), f.clone());
                    return;
                }
                let (file, bad) = Htpasswd::parse(&text);
                for (line, why) in bad {
                    problems.push(Problem {
                        origin: origin.clone(),
                        ..Problem::warning(
                            Some(ObjectRef {
                                kind: "Secret".into(),
                                namespace: namespace.clone(),
                                name: name.clone(),
                            }),
                            Some(field(line)),
                            format!("{why}; that user is ignored"),
                        )
                    });
                }
                into.insert(key.clone(), Arc::new(file));
            };
            if let Some((_, text)) = entries.iter().find(|(k, _)| k == "auth") {
                read(
                    text.clone(),
                    &|line| format!("data.auth (line {line})"),
                    &mut out.files,
                    previous.map(|p| &p.files),
                );
            }
            if as_map.contains(&key) {
                // One `user:hash` line per key, in key order.
                let users: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
                let text: String = entries.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
                read(
                    text,
                    &|line| format!("data.{}", users.get(line - 1).map_or("?", |u| u.as_str())),
                    &mut out.maps,
                    previous.map(|p| &p.maps),
                );
            }
        }
        (out, problems)
    }

    /// The users of Secret `name` in `namespace`: its `auth` key's
    /// htpasswd lines, or with `map` its keys and values.
    pub fn get(&self, namespace: &str, name: &str, map: bool) -> Option<&Arc<Htpasswd>> {
        let key = (namespace.to_owned(), name.to_owned());
        match map {
            true => self.maps.get(&key),
            false => self.files.get(&key),
        }
    }
}

impl Htpasswd {
    /// Parses htpasswd text: the users, and the lines that did not parse
    /// (line number, why). Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> (Self, Vec<(usize, String)>) {
        let mut users = HashMap::new();
        let mut bad = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bad.push((n + 1, "not user:hash".to_owned()));
                continue;
            };
            match parse_hash(hash) {
                Ok(h) => {
                    users.insert(user.to_owned(), h);
                }
                Err(why) => bad.push((n + 1, why)),
            }
        }
        (
            Self {
                users,
                verified: Mutex::default(),
                text: digest(text.as_bytes()),
            },
            bad,
        )
    }

    /// Whether the file has no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `authorization` (the header's value) names a user of this
    /// file with the right password. Slow for bcrypt: call off the serving
    /// threads unless [`Htpasswd::known`] says it verified before.
    pub fn verify(&self, authorization: &[u8]) -> bool {
        let Some((user, password)) = credentials(authorization) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let ok = match hash {
            Hash::Bcrypt(h) => bcrypt::verify(password.as_bytes(), h).unwrap_or(false),
            Hash::Md5Crypt { magic, salt, whole } => same(
                md5_crypt(password.as_bytes(), magic, salt.as_bytes()).as_bytes(),
                whole.as_bytes(),
            ),
            Hash::Sha1(digest) => same(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes()).as_ref(),
                digest,
            ),
            Hash::Plain(p) => same(p.as_bytes(), password.as_bytes()),
        };
        if ok {
            let key = fingerprint(&user, &password);
            let mut v = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if v.set.insert(key) {
                v.order.push_back(key);
            }
            while v.order.len() > VERIFIED_KEPT {
                if let Some(old) = v.order.pop_front() {
                    v.set.remove(&old);
                }
            }
        }
        ok
    }

    /// Whether these credentials verified before (cheap).
    pub fn known(&self, authorization: &[u8]) -> bool {
        let Some((user, password)) = credentials(authorization) else {
            return false;
        };
        let key = fingerprint(&user, &password);
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set
            .contains(&key)
    }

    /// Whether checking `authorization` is slow (a bcrypt hash).
    pub fn slow(&self, authorization: &[u8]) -> bool {
        credentials(authorization)
            .and_then(|(u, _)| self.users.get(&u))
            .is_some_and(|h| matches!(h, Hash::Bcrypt(_)))
    }
}

/// `Basic base64(user:password)` taken apart.
fn credentials(authorization: &[u8]) -> Option<(String, String)> {
    let s = std::str::from_utf8(authorization).ok()?.trim();
    let (scheme, token) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The key verified credentials are remembered by (however the header
/// spelled them).
fn fingerprint(user: &str, password: &str) -> [u8; 32] {
    digest(format!("{}\0{user}{password}", user.len()).as_bytes())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal bytes, compared in time that depends on the length alone.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_hash(hash: &str) -> Result<Hash, String> {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        let cost: u32 = hash
            .get(4..6)
            .and_then(|c| c.parse().ok())
            .ok_or("a bcrypt hash without its cost")?;
        // Checked per client: a high cost is a way to stall the proxy.
        if cost > MAX_BCRYPT_COST {
            return Err(format!(
                "a bcrypt cost of {cost} (at most {MAX_BCRYPT_COST} is checked)"
            ));
        }
        return Ok(Hash::Bcrypt(hash.to_owned()));
    }
    for magic in ["$apr1$", "$1$"] {
        if let Some(rest) = hash.strip_prefix(magic) {
            let Some((salt, _)) = rest.split_once('$') else {
                return Err(format!("a {magic} hash without its salt"));
            };
            if salt.len() > 8 || salt.is_empty() {
                return Err(format!("a {magic} salt of {} characters (1 to 8)", salt.len()));
            }
            return Ok(Hash::Md5Crypt {
                magic,
                salt: salt.to_owned(),
                whole: hash.to_owned(),
            });
        }
    }
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "a {SHA} hash that is not base64".to_owned())?;
        let digest: [u8; 20] = raw
            .try_into()
            .map_err(|_| "a {SHA} hash that is not 20 bytes".to_owned())?;
        return Ok(Hash::Sha1(digest));
    }
    if let Some(p) = hash.strip_prefix("{PLAIN}") {
        return Ok(Hash::Plain(p.to_owned()));
    }
    Err("an unsupported hash (bcrypt $2y$, $apr1$, $1$, {SHA} or {PLAIN} are)".to_owned())
}

/// MD5-crypt (Poul-Henning Kamp's, and Apache's `$apr1$` variant, which
/// differs only in its magic): the whole `magic salt $ hash` string.
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let mut alt = md5::Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();
    let mut ctx = md5::Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..password.len().min(1)]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = md5::Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = format!("{magic}{}$", String::from_utf8_lossy(salt));
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    to64(f(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}").into_bytes()
    }

    #[test]
    fn every_supported_hash_verifies_its_password_only() {
        // Made with `openssl passwd -apr1 -salt abcdefgh password`,
        // `openssl passwd -1 -salt saltsalt secret`, and
        // `echo -n secret | openssl sha1 -binary | base64`; the bcrypt line
        // with the bcrypt crate (cost 4).
        let bcrypt_line = format!("dora:{}", bcrypt::hash("explorer", 4).unwrap());
        let text = format!(
            "# users\nann:$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1\nbob:$1$saltsalt$9xy1btjgzLYfb7hivXtC//\n\
             cat:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n{bcrypt_line}\neve:{{PLAIN}}open sesame\n\
             bad line\nmal:$5$rounds=5000$x$y\nslow:$2y$31$abcdefghijklmnopqrstuuAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
        );
        let (file, bad) = Htpasswd::parse(&text);
        assert_eq!(
            bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![7, 8, 9],
            "{bad:?}"
        );
        for (user, good) in [
            ("ann", "password"),
            ("bob", "secret"),
            ("cat", "secret"),
            ("dora", "explorer"),
            ("eve", "open sesame"),
        ] {
            assert!(file.verify(&basic(user, good)), "{user}");
            assert!(!file.verify(&basic(user, "wrong")), "{user}");
            assert!(!file.verify(&basic(user, &format!("{good}x"))), "{user}");
        }
        assert!(!file.verify(&basic("nobody", "password")));
        assert!(!file.verify(b"Bearer abc"));
        assert!(!file.verify(b"Basic !!!"));
        assert!(file.known(&basic("dora", "explorer")) && !file.known(&basic("dora", "wrong")));
        // However the header spells the scheme.
        let token = base64::engine::general_purpose::STANDARD.encode("dora:explorer");
        assert!(file.known(format!("bAsIc   {token}").as_bytes()));
        assert!(file.slow(&basic("dora", "x")) && !file.slow(&basic("ann", "x")));
    }
}
