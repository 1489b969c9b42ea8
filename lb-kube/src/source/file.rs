//! File mode: a directory of Kubernetes YAML (or JSON) manifests is the
//! cluster.
//!
//! Files ending in `.yaml`, `.yml` or `.json` are read, in name order, from
//! the directory itself (not its subdirectories, as `kubectl apply -f DIR`);
//! names starting with `.` are skipped (the state file lives in `.lb/`). A file holds one or more
//! documents separated by `---` lines.
//!
//! One bad document disables only itself. When an object that was good
//! before goes bad, its last good version stays in force (and the problem
//! says so), so a typo never takes an address away.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::{Origin, Problem, Snapshot};
use crate::objects::{self, Object, ObjectRef};

/// Largest manifest file read (bytes); larger files are reported and skipped.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Most manifest bytes read from one directory: files past it (in name
/// order) are reported and not read, and nothing is released meanwhile.
/// The controller holds about 42 times its manifests' size (5.4 KB per
/// Service; `benches/footprint.sh`), so this bounds it near 2.7 GB.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// Splits a YAML stream into documents: (first line number, text).
pub fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let is_sep = bare == "---" || bare.starts_with("--- #") || bare.starts_with("---\t");
        if is_sep {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Parses one YAML document into JSON. Errors are one line, with line
/// numbers counted from 1 at the document's first line.
pub fn parse_document(text: &str) -> Result<Value, String> {
    parse_at(text, 1, false)
}

/// Parses one document that starts on line `first_line` of its file (JSON
/// when `json`), naming lines of the file in errors.
fn parse_at(text: &str, first_line: usize, json: bool) -> Result<Value, String> {
    if json {
        return serde_json::from_str::<Value>(text).map_err(|e| {
            let line = e.line() + first_line - 1;
            let what = e.to_string();
            let what = what.split(" at line ").next().unwrap_or_default();
            format!("invalid JSON at line {line} column {}: {what}", e.column())
        });
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| yaml_error(&e.to_string(), first_line))
}

/// The YAML parser's message, as one line a user can act on: the file's line
/// number, no source snippet, no parser option names.
fn yaml_error(raw: &str, first_line: usize) -> String {
    let first = raw.lines().next().unwrap_or_default();
    let first = first.split("  -->").next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = first.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if first.contains("budget") {
        return "invalid YAML: the document is too large or too deeply nested (aliases included)".into();
    }
    // "line N column M: what" with N counted within the document.
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((n, rest)) = rest.split_once(' ')
        && let Ok(n) = n.parse::<usize>()
    {
        return format!("invalid YAML at line {} {rest}", n + first_line - 1);
    }
    format!("invalid YAML: {first}")
}

/// One directory entry that looks like a manifest (its name ends in
/// `.yaml`, `.yml` or `.json` and does not start with `.`).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path.
    pub path: PathBuf,
    /// Size and modification time of a regular file, or why it cannot be
    /// read (a dangling symlink, a symlink loop, a fifo, a directory …).
    pub state: Result<(u64, Option<SystemTime>), String>,
    /// Inode and status-change time: a file replaced by one of the same
    /// size with its old modification time kept (`cp -p`, `touch -r`)
    /// still differs here.
    pub changed: Option<(u64, i64, i64)>,
}

// By the path's bytes: `Path`'s own equality and hash go component by
// component, and comparing 10,000 entries that way was a tenth of reading
// the view after one edit. (Entries are made the same way from one
// directory listing, so the bytes tell.)
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.path.as_os_str() == other.path.as_os_str() && self.state == other.state && self.changed == other.changed
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.path.as_os_str().hash(h);
        self.state.hash(h);
        self.changed.hash(h);
    }
}

/// The manifest entries of `dir`, sorted by name. Fails only when the
/// directory itself cannot be listed.
pub fn manifest_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    scan(dir).map(|(entries, _)| entries)
}

/// Whether changes to a directory entry can go without a notice to its
/// directory: a symlink (its target changes elsewhere), a file with other
/// hard links (written through another name), a file on another device
/// than the directory's (a bind mount).
pub(crate) fn unnoticed(symlink: bool, meta: Option<&std::fs::Metadata>, device: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    symlink || meta.is_some_and(|m| m.is_file() && (m.nlink() > 1 || m.dev() != device))
}

/// Whether a file name is a manifest's: it ends in `.yaml`, `.yml` or
/// `.json` and does not start with `.`.
pub fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    let path = Path::new(name);
    !name.as_encoded_bytes().starts_with(b".")
        && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// [`manifest_entries`], and the paths of those whose changes the
/// directory's change notices may miss (see [`unnoticed`]).
pub(crate) fn scan(dir: &Path) -> io::Result<(Vec<Entry>, std::collections::BTreeSet<PathBuf>)> {
    use std::os::unix::fs::MetadataExt as _;
    let device = std::fs::metadata(dir)?.dev();
    let mut out = Vec::new();
    let mut unseen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !is_manifest_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let (found, meta) = Entry::stat_with_metadata(path);
        if unnoticed(link, meta.as_ref(), device) {
            unseen.insert(found.path.clone());
        }
        out.push(found);
    }
    // One directory: the names' bytes order them (as paths would, without
    // taking each path apart).
    out.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    Ok((out, unseen))
}

impl Entry {
    /// The entry for `path` as it is now.
    pub fn stat(path: PathBuf) -> Self {
        Self::stat_with_metadata(path).0
    }

    /// [`Entry::stat`], and the metadata it read (of the file a symlink
    /// names).
    pub(crate) fn stat_with_metadata(path: PathBuf) -> (Self, Option<std::fs::Metadata>) {
        // metadata() follows symlinks: a dangling one or a loop fails here.
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&path);
        let kept = meta.as_ref().ok().cloned();
        let changed = meta.as_ref().ok().map(|m| (m.ino(), m.ctime(), m.ctime_nsec()));
        let state = match meta {
            Ok(m) if m.is_file() => Ok((m.len(), m.modified().ok())),
            Ok(m) if m.is_dir() => Err("is a directory".to_owned()),
            Ok(_) => Err("is not a regular file (a fifo, socket or device)".to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err("is a dangling symlink".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        (Entry { path, state, changed }, kept)
    }
}

/// The readable manifest files in `dir`, sorted.
pub fn manifest_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(manifest_entries(dir)?
        .into_iter()
        .filter(|e| e.state.is_ok())
        .map(|e| e.path)
        .collect())
}

/// Reads kind, namespace and name from a document that is not valid YAML,
/// by its top-level `kind:` and the `name:` and `namespace:` directly under
/// `metadata:`, in block style or as a one-line flow mapping
/// (`metadata: {name: x, namespace: y}`). `None` when any of kind or name
/// cannot be found this way.
pub fn sniff_identity(doc: &str) -> Option<ObjectRef> {
    fn scalar(v: &str) -> String {
        let v = v.split(" #").next().unwrap_or_default().trim();
        v.trim_matches(|c| c == '"' || c == '\'').to_owned()
    }
    // A document that is one flow mapping (JSON, or YAML on one line).
    if let Some(flow) = doc.trim_start().strip_prefix('{') {
        let top = flow_entries(flow);
        let get = |key: &str| top.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let kind = get("kind").map(scalar).filter(|k| !k.is_empty())?;
        let meta = flow_entries(get("metadata")?.strip_prefix('{')?);
        let field = |key: &str| meta.iter().find(|(k, _)| *k == key).map(|(_, v)| scalar(v));
        let name = field("name").filter(|n| !n.is_empty())?;
        let namespace = field("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        return Some(ObjectRef { kind, namespace, name });
    }
    let (mut kind, mut name, mut namespace) = (None, None, None);
    let mut in_meta = false;
    let mut meta_indent = None;
    for line in doc.lines() {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if indent == 0 {
            in_meta = body.trim_end() == "metadata:";
            meta_indent = None;
            if let Some(flow) = body
                .strip_prefix("metadata:")
                .map(str::trim)
                .and_then(|v| v.strip_prefix('{'))
            {
                for (key, value) in flow_entries(flow) {
                    match key {
                        "name" => name = name.or_else(|| Some(scalar(value))),
                        "namespace" => namespace = namespace.or_else(|| Some(scalar(value))),
                        _ => {}
                    }
                }
            }
            if let Some(v) = body.strip_prefix("kind:") {
                kind.get_or_insert_with(|| scalar(v));
            }
            continue;
        }
        if !in_meta {
            continue;
        }
        let level = *meta_indent.get_or_insert(indent);
        if indent != level {
            continue;
        }
        if let Some(v) = body.strip_prefix("name:") {
            name.get_or_insert_with(|| scalar(v));
        } else if let Some(v) = body.strip_prefix("namespace:") {
            namespace.get_or_insert_with(|| scalar(v));
        }
    }
    let (kind, name) = (kind.filter(|k| !k.is_empty())?, name.filter(|n| !n.is_empty())?);
    let namespace = namespace.filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    Some(ObjectRef { kind, namespace, name })
}

/// The top-level `key: value` entries of a one-line flow mapping whose
/// opening brace is already consumed (nested mappings and lists skipped
/// whole; stops at the closing brace or the end of the line).
fn flow_entries(text: &str) -> Vec<(&str, &str)> {
    fn entry(part: &str) -> Option<(&str, &str)> {
        let (k, v) = part.split_once(':')?;
        Some((k.trim().trim_matches(|c| c == '"' || c == '\''), v.trim()))
    }
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, '}') if depth == 0 => {
                out.extend(entry(&text[start..i]));
                return out;
            }
            (None, '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.extend(entry(&text[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.extend(entry(&text[start..]));
    out
}

/// A manifests directory, read into snapshots, remembering the last good
/// version of every object by its identity (kind, namespace, name).
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    /// What each object yielded when it last read well: the object, and for
    /// the legacy ConfigMap its converted objects too.
    last_good: Map<ObjectRef, Vec<Object>>,
    /// The identities each file held at the last read (while a file has
    /// errors, also those it held before them).
    file_ids: Map<PathBuf, Vec<ObjectRef>>,
    /// Whether the directory was read before (the first read is a change).
    read_once: bool,
    total_limit: u64,
    /// The state file whose directory holds the controllers' status.
    status_file: Option<PathBuf>,
    objects_version: u64,
    endpoints_version: u64,
    /// What each file that read cleanly yielded, kept while its entry
    /// (size, times, inode) stays as it was: an unchanged file is not read
    /// or decoded again (a change to one file of 10,000 reads one).
    memo: Map<PathBuf, (Entry, Vec<Recorded>)>,
    /// The entries the last [`Source::version`] looked at, for the read
    /// that follows it: a change to one file of 10,000 costs one look at
    /// each, not two. (Consistent: what they say is what that version
    /// stands for, and a file changed since gives the next version.)
    looked: std::sync::Mutex<Option<Arc<Vec<Entry>>>>,
    /// The directory's change notices, when they can be had (else every
    /// version check looks at every file).
    watch: std::sync::Mutex<Watch>,
    /// The last view, when it was clean (every file read without a
    /// problem): a read that finds only files changed in place (the same
    /// objects, new content) patches it instead of reading the directory
    /// again.
    clean: Option<Snapshot>,
}

/// How a source follows its directory.
#[derive(Debug, Default)]
struct Watch {
    /// The directory's change notices, when they can be had (else every
    /// version check looks at every file).
    notices: Option<super::notices::Notices>,
    /// Notices started so far: the version moves when they start anew.
    starts: u64,
    /// Whether the lack of inotify was logged.
    warned: bool,
}

/// Most changed files a read patches into the last clean view; more are
/// read whole.
const PATCH_MAX: usize = 64;

/// The maps a read keeps per file and per object (10,000 files: a fast
/// hash; the keys are the operator's file and object names).
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One object a file yielded, as it was recorded.
type Recorded = (ObjectRef, Origin, Vec<Object>);

/// What one read found of one identity.
enum Found {
    /// Read well: the objects it yields.
    Good(Vec<Object>),
    /// Exists, but did not read: its last good version stays in force, and
    /// without one it is unreadable (what it holds is kept).
    Broken,
}

/// One read in progress: what was found, in order, and what went wrong.
struct Reading<'a> {
    snap: &'a mut Snapshot,
    found: Vec<(ObjectRef, Origin, Found)>,
    /// Where each identity was first found.
    first: Map<ObjectRef, Origin>,
    /// Identities found more than once.
    conflicted: Vec<ObjectRef>,
    /// Files with an error in this read.
    broken_files: std::collections::HashSet<PathBuf>,
    /// The identities found in each file.
    file_ids: Map<PathBuf, Vec<ObjectRef>>,
    /// While a file is read: what it yielded that read well, in order.
    log: Option<Vec<Recorded>>,
}

impl<'a> Reading<'a> {
    fn new(snap: &'a mut Snapshot) -> Self {
        Self {
            snap,
            found: Vec::new(),
            first: Map::default(),
            conflicted: Vec::new(),
            broken_files: std::collections::HashSet::new(),
            file_ids: Map::default(),
            log: None,
        }
    }

    fn broken(&mut self, origin: &Origin) {
        self.broken_files.insert(origin.file.clone());
    }

    /// Records what was found of `r`. The same identity twice is an error
    /// naming both places; neither copy is taken as it is (see `finish`).
    fn record(&mut self, r: ObjectRef, origin: &Origin, found: Found) {
        if let (Some(log), Found::Good(objs)) = (&mut self.log, &found) {
            log.push((r.clone(), origin.clone(), objs.clone()));
        }
        match self.file_ids.get_mut(&origin.file) {
            Some(ids) => ids.push(r.clone()),
            None => {
                self.file_ids.insert(origin.file.clone(), vec![r.clone()]);
            }
        }
        if let Some(first) = self.first.get(&r) {
            self.snap.problems.push(Problem {
                origin: Some(origin.clone()),
                ..Problem::error(
                    Some(r.clone()),
                    None,
                    format!(
                        "defined twice (also at {first}); until one is removed, the version in force stays \
                         (when none is, as at start-up, neither copy is used: a Service keeps what it holds, \
                         an Ingress is not served)"
                    ),
                )
            });
            if !self.conflicted.contains(&r) {
                self.conflicted.push(r);
            }
            return;
        }
        self.first.insert(r.clone(), origin.clone());
        self.found.push((r, origin.clone(), found));
    }
}

impl FileSource {
    /// A source over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            last_good: Map::default(),
            file_ids: Map::default(),
            read_once: false,
            total_limit: MAX_TOTAL_BYTES,
            status_file: None,
            objects_version: 0,
            endpoints_version: 0,
            memo: Map::default(),
            looked: std::sync::Mutex::new(None),
            watch: std::sync::Mutex::default(),
            clean: None,
        }
    }

    /// The same source, also reading Service status from the state file
    /// `path` and the other controllers' state files beside it
    /// (`state*.json`), as Service status would be read from the API
    /// server.
    pub fn with_status_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.status_file = Some(path.into());
        self
    }

    /// The same source with another limit on the bytes read from the
    /// directory (default [`MAX_TOTAL_BYTES`]).
    pub fn with_total_limit(mut self, bytes: u64) -> Self {
        self.total_limit = bytes;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory's manifest entries as they are now (names, sizes,
    /// modification times), to tell when it has settled.
    pub fn fingerprint_now(&self) -> Option<Vec<Entry>> {
        manifest_entries(&self.dir).ok()
    }

    /// The manifest entries as they are now (`None`: the directory cannot be
    /// listed), from the change notices when they can be had, and their
    /// fingerprint (it moves whenever they, or a file behind them, may have
    /// changed).
    fn look(&self) -> (Option<Arc<Vec<Entry>>>, u64) {
        use super::notices::{Notices, Unavailable};
        use std::hash::{Hash, Hasher};
        // The last look's entries are let go first, so that the notices
        // update theirs in place instead of copying them.
        self.looked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let mut watch = self.watch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if watch.notices.is_none() {
            match Notices::start(&self.dir) {
                Ok(n) => {
                    watch.notices = Some(n);
                    watch.starts += 1;
                }
                Err(Unavailable::Inotify(e)) if !watch.warned => {
                    watch.warned = true;
                    tracing::warn!(
                        dir = %self.dir.display(),
                        error = %e,
                        "no change notices (inotify) for the manifests directory: every check looks at every file"
                    );
                }
                Err(_) => {}
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        if let Some(n) = watch.notices.as_mut() {
            match n.look() {
                Some(look) => {
                    (look.fingerprint, watch.starts).hash(&mut h);
                    return (Some(look.entries), h.finish());
                }
                // The directory went away or was replaced: looked at again
                // below, and followed anew at the next check.
                None => watch.notices = None,
            }
        }
        let entries = manifest_entries(&self.dir).ok();
        entries.hash(&mut h);
        (entries.map(Arc::new), h.finish())
    }

    /// Reads every manifest into a snapshot. Fails only when the directory
    /// itself cannot be listed.
    pub fn read(&mut self) -> io::Result<Snapshot> {
        let looked = self
            .looked
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let entries = match looked {
            Some(entries) => entries,
            None => Arc::new(manifest_entries(&self.dir)?),
        };
        if let Some(snap) = self.patch(&entries) {
            return Ok(snap);
        }
        let mut snap = Snapshot::empty();
        let mut reading = Reading::new(&mut snap);
        let mut total = 0u64;
        let mut memo = Map::with_capacity_and_hasher(entries.len(), Default::default());
        for entry in entries.iter() {
            // Unchanged since it last read cleanly: what it yielded, again
            // (recorded anew, so duplicates across files are still found).
            if let (Some((path, (was, yielded))), Ok((len, _))) = (self.memo.remove_entry(&entry.path), &entry.state)
                && was == *entry
                && total + len <= self.total_limit
            {
                total += len;
                reading.file_ids.entry(path.clone()).or_default();
                for (r, origin, objs) in &yielded {
                    reading.record(r.clone(), origin, Found::Good(objs.clone()));
                }
                memo.insert(path, (was, yielded));
                continue;
            }
            let text = match &entry.state {
                Ok((len, _)) if total + len > self.total_limit => Err(format!(
                    "the directory's manifests pass the total limit of {} bytes with this file",
                    self.total_limit
                )),
                Ok((len, _)) => {
                    total += len;
                    read_as_looked(entry)
                }
                Err(why) => Err(why.clone()),
            };
            match text {
                Ok(text) => {
                    reading.log = Some(Vec::new());
                    self.read_file(&mut reading, &entry.path, &text);
                    let yielded = reading.log.take().unwrap_or_default();
                    // Only a file without errors is kept (an error's note
                    // depends on what other files hold), and not one changed
                    // in the last two seconds: a rewrite within the clock's
                    // granularity would show the same size and times (git's
                    // "racy clean").
                    if settled(entry) && !reading.broken_files.contains(&entry.path) {
                        memo.insert(entry.path.clone(), (entry.clone(), yielded));
                    }
                }
                Err(e) => {
                    // What the file held is unknown: nothing may be taken
                    // as deleted.
                    reading.snap.problems.push(Problem {
                        origin: Some(Origin {
                            file: entry.path.clone(),
                            document: 0,
                            line: 0,
                        }),
                        ..Problem::error(
                            None,
                            None,
                            format!(
                                "cannot read file: {e}; until it can be read, nothing it may hold is taken as deleted"
                            ),
                        )
                    });
                    reading.snap.complete = false;
                    // What it held stays in force, as for a file that
                    // reads with errors: the last good versions serve.
                    let held = self.file_ids.get(&entry.path).cloned().unwrap_or_default();
                    if !held.is_empty() {
                        let origin = Origin {
                            file: entry.path.clone(),
                            document: 0,
                            line: 0,
                        };
                        reading.broken(&origin);
                        for r in held {
                            reading.record(r, &origin, Found::Broken);
                        }
                    }
                }
            }
        }
        self.memo = memo;
        let first_read = !self.read_once;
        let (objects_changed, endpoints_changed) = self.finish(reading);
        self.objects_version += u64::from(objects_changed || first_read);
        self.endpoints_version += u64::from(endpoints_changed || first_read);
        snap.objects_version = self.objects_version;
        snap.endpoints_version = self.endpoints_version;
        let clean = snap.problems.is_empty() && snap.complete && snap.releasable && snap.unreadable.is_empty();
        self.clean = clean.then(|| snap.clone());
        if let Some(own) = &self.status_file {
            read_status(&mut snap, own);
        }
        self.read_once = true;
        Ok(snap)
    }

    /// The view `entries` give, patched into the last clean view when every
    /// file of that view is still there, no other file is, and each file
    /// that changed since reads without a problem and holds the same
    /// objects (kind, namespace, name, in order) as before: the edit of
    /// one file of 10,000 reads that file alone. `None`: read whole.
    fn patch(&mut self, entries: &[Entry]) -> Option<Snapshot> {
        // Taken: a read that does not patch it makes the next one.
        let mut snap = self.clean.take()?;
        if entries.len() != self.file_ids.len() {
            return None;
        }
        let mut total = 0u64;
        let mut changed = Vec::new();
        for entry in entries {
            let (Ok((len, _)), true) = (&entry.state, self.file_ids.contains_key(&entry.path)) else {
                return None;
            };
            total += len;
            if !self.memo.get(&entry.path).is_some_and(|(was, _)| was == entry) {
                changed.push(entry);
                if changed.len() > PATCH_MAX {
                    return None;
                }
            }
        }
        if total > self.total_limit {
            return None;
        }
        // Each changed file, read alone.
        let mut read = Vec::with_capacity(changed.len());
        for entry in changed {
            let text = read_as_looked(entry).ok()?;
            let mut alone = Snapshot::empty();
            let mut reading = Reading::new(&mut alone);
            reading.log = Some(Vec::new());
            self.read_file(&mut reading, &entry.path, &text);
            let whole = reading.broken_files.is_empty() && reading.conflicted.is_empty();
            let yielded = reading.log.take().unwrap_or_default();
            drop(reading);
            let held = self.file_ids.get(&entry.path)?;
            if !whole
                || !alone.problems.is_empty()
                || !alone.complete
                || yielded.len() != held.len()
                || yielded.iter().zip(held).any(|((r, _, _), h)| r != h)
            {
                return None;
            }
            read.push((entry, yielded));
        }
        let mut endpoints = None;
        let mut changed = (false, false);
        for (entry, yielded) in &read {
            let at: Vec<usize> = (snap.objects.iter().enumerate())
                .filter(|(_, (o, _))| o.as_ref().is_some_and(|o| o.file.as_os_str() == entry.path.as_os_str()))
                .map(|(i, _)| i)
                .collect();
            let now: Vec<(&Origin, &Object)> = yielded
                .iter()
                .flat_map(|(_, origin, objs)| objs.iter().map(move |o| (origin, o)))
                .filter(|(_, o)| !matches!(o, Object::EndpointSlice(_)))
                .collect();
            if at.len() != now.len() {
                return None;
            }
            for (i, (origin, o)) in at.into_iter().zip(now) {
                snap.objects[i] = (Some(origin.clone()), o.clone());
            }
            for (r, _, objs) in yielded {
                if self.last_good.get(r) != Some(objs) {
                    mark(&mut changed, &r.kind);
                }
                for o in objs.iter().filter(|o| matches!(o, Object::EndpointSlice(_))) {
                    endpoints
                        .get_or_insert_with(|| (*snap.endpoints).clone())
                        .insert(objects::object_ref(o), o.clone());
                }
            }
        }
        if let Some(endpoints) = endpoints {
            snap.endpoints = Arc::new(endpoints);
        }
        // Taken: remembered as a whole read would have.
        for (entry, yielded) in read {
            for (r, _, objs) in &yielded {
                self.last_good.insert(r.clone(), objs.clone());
            }
            self.memo.remove(&entry.path);
            if settled(entry) {
                self.memo.insert(entry.path.clone(), (entry.clone(), yielded));
            }
        }
        self.objects_version += u64::from(changed.0);
        self.endpoints_version += u64::from(changed.1);
        snap.objects_version = self.objects_version;
        snap.endpoints_version = self.endpoints_version;
        self.clean = Some(snap.clone());
        if let Some(own) = &self.status_file {
            read_status(&mut snap, own);
        }
        Some(snap)
    }

    /// Reads the documents of one file's text into `snap` (duplicates are
    /// found within this text only).
    pub fn read_text(&mut self, snap: &mut Snapshot, file: &Path, text: &str) {
        let mut reading = Reading::new(snap);
        self.read_file(&mut reading, file, text);
        self.finish(reading);
    }

    /// Puts what a read found into its snapshot and remembers it. Returns
    /// whether objects other than EndpointSlices, and EndpointSlices,
    /// changed since the last read.
    fn finish(&mut self, reading: Reading<'_>) -> (bool, bool) {
        let Reading {
            snap,
            found,
            first,
            conflicted,
            broken_files,
            mut file_ids,
            log: _,
        } = reading;
        let mut good: Map<ObjectRef, Vec<Object>> = Map::with_capacity_and_hasher(found.len(), Default::default());
        let mut endpoints = BTreeMap::new();
        let mut put = |origin: &Origin, objs: &[Object], snap: &mut Snapshot| {
            for o in objs {
                if let Object::EndpointSlice(_) = o {
                    endpoints.insert(objects::object_ref(o), o.clone());
                } else {
                    snap.objects.push((Some(origin.clone()), o.clone()));
                }
            }
        };
        for (r, origin, found) in found {
            let conflict = conflicted.contains(&r);
            match found {
                Found::Good(objs) if !conflict => {
                    put(&origin, &objs, snap);
                    good.insert(r, objs);
                }
                // Broken, or defined twice: the version in force stays.
                _ => match self.last_good.get(&r) {
                    Some(objs) => {
                        put(&origin, objs, snap);
                        good.insert(r, objs.clone());
                    }
                    None => snap.unreadable.push(r),
                },
            }
        }
        // A file with an error releases nothing it held: objects it held
        // before that are not found now (a break too early in a document
        // to tell what it is) keep their last good version, in the view
        // too (a proxy keeps serving them), until the file reads well.
        // (In name order: the view is the same whatever order the files
        // with errors were met in.)
        let mut broken: Vec<&PathBuf> = broken_files.iter().collect();
        broken.sort();
        for file in broken {
            let Some(before) = self.file_ids.get(file).cloned() else {
                // What it held before is unknown.
                snap.releasable = false;
                continue;
            };
            let now = file_ids.entry(file.clone()).or_default();
            let whole_file = Origin {
                file: file.clone(),
                document: 0,
                line: 0,
            };
            for r in before {
                if !first.contains_key(&r) && !now.contains(&r) {
                    match self.last_good.get(&r) {
                        Some(objs) => {
                            put(&whole_file, objs, snap);
                            good.insert(r.clone(), objs.clone());
                        }
                        None => snap.unreadable.push(r.clone()),
                    }
                    now.push(r);
                }
            }
        }
        let mut changed = (false, false);
        for (r, objs) in &good {
            if self.last_good.get(r) != Some(objs) {
                mark(&mut changed, &r.kind);
            }
        }
        for r in self.last_good.keys().filter(|r| !good.contains_key(*r)) {
            mark(&mut changed, &r.kind);
        }
        snap.endpoints = std::sync::Arc::new(endpoints);
        // A set, in one order whatever order the files with errors were
        // visited in.
        snap.unreadable.sort();
        snap.unreadable.dedup();
        self.last_good = good;
        self.file_ids = file_ids;
        changed
    }

    fn read_file(&mut self, reading: &mut Reading<'_>, file: &Path, text: &str) {
        reading.file_ids.entry(file.to_path_buf()).or_default();
        for (n, (line, doc)) in split_documents(text).into_iter().enumerate() {
            let origin = Origin {
                file: file.to_path_buf(),
                document: n + 1,
                line,
            };
            self.read_document(reading, origin, doc);
        }
    }

    fn read_document(&mut self, reading: &mut Reading<'_>, origin: Origin, doc: &str) {
        let json = origin.file.extension().is_some_and(|e| e == "json");
        let value = match parse_at(doc, origin.line, json) {
            Ok(v) => v,
            Err(e) => {
                reading.broken(&origin);
                let identity = sniff_identity(doc);
                let kept = identity.as_ref().is_some_and(|r| self.in_force(reading, r));
                let note = super::kept_note(kept);
                reading.snap.problems.push(Problem {
                    origin: Some(origin.clone()),
                    ..Problem::error(identity.clone(), None, format!("{e}{note}"))
                });
                match identity {
                    Some(r) => reading.record(r, &origin, Found::Broken),
                    None => reading.snap.complete = false,
                }
                return;
            }
        };
        // A `kind: List` (kubectl get -o yaml) holds its objects in `items`.
        let (items, listed) = match value {
            Value::Object(mut m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = match m.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                (items, true)
            }
            v => (vec![v], false),
        };
        for (i, item) in items.into_iter().enumerate() {
            let before = reading.snap.problems.len();
            self.read_item(reading, &origin, item);
            if listed {
                // Name the item: `items[3].spec.ports[0].port`.
                for p in &mut reading.snap.problems[before..] {
                    p.field = Some(match p.field.take() {
                        Some(f) => format!("items[{i}].{f}"),
                        None => format!("items[{i}]"),
                    });
                }
            }
        }
    }

    fn read_item(&mut self, reading: &mut Reading<'_>, origin: &Origin, item: Value) {
        let r = ObjectRef::of(&item);
        let decoded = objects::decode(item).map_err(|e| (e.field().map(str::to_owned), message_without_field(&e)));
        match decoded {
            Ok(None) => {}
            Ok(Some(obj)) => {
                let mut objs = vec![obj];
                let mut conversion = Vec::new();
                if let Object::ConfigMap(cm) = &objs[0] {
                    objs.extend(objects::legacy::convert(cm, &r, &mut conversion, Some(origin)));
                }
                if conversion.is_empty() {
                    reading.record(r, origin, Found::Good(objs));
                    return;
                }
                // The legacy configuration does not convert: the ConfigMap
                // as a whole keeps its last good version.
                reading.broken(origin);
                if self.in_force(reading, &r)
                    && let Some(last) = conversion.last_mut()
                {
                    last.message.push_str(super::kept_note(true));
                }
                reading.snap.problems.extend(conversion);
                reading.record(r, origin, Found::Broken);
            }
            Err((field, message)) => {
                reading.broken(origin);
                let known = !r.kind.is_empty() && !r.name.is_empty();
                let note = super::kept_note(known && self.in_force(reading, &r));
                reading.snap.problems.push(Problem {
                    origin: Some(origin.clone()),
                    ..Problem::error(
                        (!r.kind.is_empty()).then(|| r.clone()),
                        field,
                        format!("{message}{note}"),
                    )
                });
                if r.kind.is_empty() {
                    // Not even the kind is known: it may have held anything.
                    reading.snap.complete = false;
                } else {
                    reading.record(r, origin, Found::Broken);
                }
            }
        }
    }

    /// Whether `r` has a last good version that stays in force in this read.
    fn in_force(&self, reading: &Reading<'_>, r: &ObjectRef) -> bool {
        !reading.first.contains_key(r) && self.last_good.contains_key(r)
    }
}

/// Reads the controllers' status (the state file `own` and the state
/// files beside it) into the view.
fn read_status(snap: &mut Snapshot, own: &Path) {
    let own_state = match crate::status::read(own) {
        Ok(s) => s.map(|s| (own.to_path_buf(), Ok(s))),
        Err(e) => Some((own.to_path_buf(), Err(e))),
    };
    for (path, state) in own_state.into_iter().chain(crate::status::siblings(own)) {
        let is_own = path == own;
        match state {
            Ok(state) => {
                for (key, held) in state.services {
                    snap.status.entry(key).or_default().push(super::HeldStatus {
                        class: state.load_balancer_class.clone(),
                        state: held,
                    });
                }
            }
            Err(e) => {
                snap.problems.push(Problem {
                    origin: Some(Origin {
                        file: path,
                        document: 0,
                        line: 0,
                    }),
                    ..Problem::error(None, None, format!("{e}; what it holds is unknown"))
                });
                snap.status_unreadable = true;
                // The controller's own file is its own to rewrite; the
                // others' addresses are unknown.
                if !is_own {
                    snap.status_complete = false;
                }
            }
        }
    }
}

impl super::Source for FileSource {
    fn view(&mut self) -> Result<Snapshot, super::SourceError> {
        self.read().map_err(|source| super::SourceError::Directory {
            path: self.dir.clone(),
            source,
        })
    }

    fn version(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let (now, fingerprint) = self.look();
        fingerprint.hash(&mut h);
        *self.looked.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
        if let Some(own) = &self.status_file {
            for p in std::iter::once(own.clone()).chain(crate::status::sibling_paths(own)) {
                Entry::stat(p).hash(&mut h);
            }
        }
        h.finish()
    }
}

/// Parses the text of one manifest file into a snapshot (no directory, no
/// last good versions): what `validate` does for one file.
pub fn parse_manifests(file: &Path, text: &str) -> Snapshot {
    let mut snap = Snapshot::empty();
    FileSource::new(".").read_text(&mut snap, file, text);
    snap
}

fn message_without_field(e: &objects::DecodeError) -> String {
    e.message()
}

/// Reads a regular file of at most `limit` bytes as UTF-8, without blocking
/// on anything that is not a regular file.
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::other("is not a regular file"));
    }
    if meta.len() > limit {
        return Err(io::Error::other(format!(
            "file is {} bytes; the limit is {limit}",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::other(format!("file grew past the limit of {limit} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| io::Error::other("file is not UTF-8"))
}

/// Reads the file of `entry` as its look found it. Another length means it
/// was rewritten since (truncated, say, for a rewrite in place): not taken,
/// read again at the next change.
fn read_as_looked(entry: &Entry) -> Result<String, String> {
    let len = match &entry.state {
        Ok((len, _)) => *len,
        Err(why) => return Err(why.clone()),
    };
    let text = read_limited(&entry.path).map_err(|e| e.to_string())?;
    if text.len() as u64 != len {
        return Err("it changed while being read (it is read again when it holds still)".to_owned());
    }
    Ok(text)
}

/// Whether a file last changed long enough ago that its entry (size,
/// times) tells its content: not within the last two seconds, where a
/// rewrite within the clock's granularity would show the same entry (git's
/// "racy clean").
fn settled(entry: &Entry) -> bool {
    matches!(&entry.state, Ok((_, Some(m))) if m.elapsed().is_ok_and(|age| age >= std::time::Duration::from_secs(2)))
}

/// Notes a change to an object of `kind` in (objects, endpoints).
fn mark(changed: &mut (bool, bool), kind: &str) {
    if kind == "EndpointSlice" {
        changed.1 = true;
    } else {
        changed.0 = true;
    }
}

fn read_limited(path: &Path) -> io::Result<String> {
    read_capped(path, MAX_FILE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_stops_reading_keeps_what_it_held_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n").unwrap();
        let mut source = FileSource::new(dir.path());
        assert_eq!(source.read().unwrap().objects.len(), 1);
        // Not UTF-8 any more (an editor's encoding): it cannot be read.
        std::fs::write(
            &file,
            b"apiVersion: v1\nkind: Service\nmetadata: {name: web}\n# caf\xe9\n",
        )
        .unwrap();
        let snap = source.read().unwrap();
        assert_eq!(snap.objects.len(), 1, "the last good version still serves");
        assert!(!snap.complete);
        assert!(snap.problems[0].message.contains("cannot read file"));
        // Read again as it was before: nothing changed in between.
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n").unwrap();
        let snap = source.read().unwrap();
        assert_eq!(snap.objects.len(), 1);
        assert!(snap.complete && snap.problems.is_empty());
    }

    /// A break so early in a document that what it is cannot be told
    /// (`kind: [EndpointSlice`) leaves what the file held before in the
    /// view: a proxy keeps its endpoints; an Ingress-kind object, its
    /// routes.
    #[test]
    fn a_document_broken_before_its_identity_keeps_its_last_good_version_in_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.yaml");
        let good = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                    metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
                    addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.0.0.1]}]\n\
                    ---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
                    spec: {ports: [{name: http, port: 80}]}\n";
        std::fs::write(&file, good).unwrap();
        let mut source = FileSource::new(dir.path());
        let snap = source.read().unwrap();
        assert_eq!((snap.endpoints.len(), snap.objects.len()), (1, 1));
        for broken in [
            good.replace("kind: EndpointSlice", "kind: [EndpointSlice"),
            good.replace("kind: Service", "kind: [Service"),
        ] {
            std::fs::write(&file, &broken).unwrap();
            let snap = source.read().unwrap();
            assert!(!snap.problems.is_empty());
            assert_eq!(
                (snap.endpoints.len(), snap.objects.len()),
                (1, 1),
                "{:?}",
                snap.problems
            );
        }
    }

    #[test]
    fn a_file_name_cannot_forge_a_log_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x\nerror: forged.yaml"), "kind: [").unwrap();
        let snap = FileSource::new(dir.path()).read().unwrap();
        let line = snap.problems[0].to_string();
        assert!(
            !line.contains('\n') && line.contains("x\\nerror: forged.yaml"),
            "{line}"
        );
    }

    #[test]
    fn files_past_the_total_limit_are_reported_and_make_the_view_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n";
        std::fs::write(dir.path().join("a.yaml"), svc).unwrap();
        std::fs::write(dir.path().join("b.yaml"), svc.replace("name: a", "name: b")).unwrap();
        let mut src = FileSource::new(dir.path()).with_total_limit(svc.len() as u64 + 10);
        let snap = src.read().unwrap();
        assert_eq!(snap.objects.len(), 1);
        assert!(!snap.complete, "b.yaml's objects may be missing");
        let p = &snap.problems[0];
        assert!(
            p.to_string().contains("b.yaml") && p.message.contains("total limit"),
            "{p}"
        );
    }

    #[test]
    fn identities_are_sniffed_from_broken_documents_in_both_styles() {
        let want = Some(ObjectRef {
            kind: "BGPPeer".into(),
            namespace: "metallb-system".into(),
            name: "bird4".into(),
        });
        let block = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: bird4\n  namespace: metallb-system\nspec: {myASN: 1, peerASN: {\n";
        assert_eq!(sniff_identity(block), want);
        let flow = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: bird4, labels: {a: \"x,y\"}, namespace: 'metallb-system'}\nspec: {myASN: 1, peerASN: {\n";
        assert_eq!(sniff_identity(flow), want);
        let unclosed = "kind: BGPPeer\nmetadata: {namespace: metallb-system, name: bird4\n";
        assert_eq!(sniff_identity(unclosed), want);
        let json = "{\n  \"apiVersion\": \"metallb.io/v1beta2\",\n  \"kind\": \"BGPPeer\",\n  \"metadata\": {\"name\": \"bird4\", \"namespace\": \"metallb-system\"},\n  \"spec\": {\"myASN\": 65001, \"peerAddress\": \"192.0";
        assert_eq!(sniff_identity(json), want);
        let one_line = "{apiVersion: metallb.io/v1beta2, kind: BGPPeer, metadata: {name: bird4, namespace: metallb-system}, spec: {myASN: 1, peerASN: {";
        assert_eq!(sniff_identity(one_line), want);
        assert_eq!(sniff_identity("kind: BGPPeer\nmetadata: {labels: {name: x}}\n"), None);
    }

    #[test]
    fn splits_documents_with_line_numbers() {
        let text = "# leading comment\n---\na: 1\n---\n\n--- # note\nb: 2\n---\n";
        let docs = split_documents(text);
        assert_eq!(docs, vec![(3, "a: 1\n"), (7, "b: 2\n")]);
        assert_eq!(split_documents("a: 1"), vec![(1, "a: 1")]);
        // `---` inside a block scalar is indented, so not a separator.
        assert_eq!(split_documents("a: |\n  ---\n").len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Reading with the memo of unchanged files gives what reading
        /// every file again gives, through edits, same-size rewrites,
        /// duplicates across files, broken files and deletions.
        #[test]
        fn the_memo_of_unchanged_files_changes_nothing_read(
            steps in proptest::collection::vec((0usize..4, 0usize..9), 1..12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut memo = FileSource::new(dir.path());
            let mut fresh = FileSource::new(dir.path());
            let content = |k: usize| match k {
                // Same size, different objects: a rewrite the size alone misses.
                0 => "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n".to_owned(),
                1 => "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\n".to_owned(),
                2 => "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec: {ports: [{port: 80}]}\n".to_owned(),
                3 => "kind: [broken\n".to_owned(),
                4 => String::new(),
                // An endpoints-only change, and two documents.
                5 | 6 => format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: c}}\n---\napiVersion: discovery.k8s.io/v1\n\
                     kind: EndpointSlice\nmetadata: {{name: c-1, labels: {{kubernetes.io/service-name: c}}}}\n\
                     addressType: IPv4\nendpoints: [{{addresses: [10.0.0.{k}]}}]\n"
                ),
                7 => "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec: {ports: [{port: 81}]}\n".to_owned(),
                _ => "DELETE".to_owned(),
            };
            for (file, k) in steps {
                let path = dir.path().join(format!("f{file}.yaml"));
                match content(k).as_str() {
                    "DELETE" => {
                        let _ = std::fs::remove_file(&path);
                    }
                    text => {
                        std::fs::write(&path, text).unwrap();
                        // Older than the memo's two seconds, so that it is
                        // used (the times still differ from the last write's).
                        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
                        std::fs::File::options().write(true).open(&path).unwrap().set_modified(past).unwrap();
                    }
                }
                // Read whole every time: no memo, no patch.
                fresh.memo.clear();
                fresh.clean = None;
                let (a, b) = (memo.read().unwrap(), fresh.read().unwrap());
                let show = |s: &Snapshot| {
                    let objects: Vec<String> = s.objects.iter().map(|(r, o)| format!("{r:?} {o:?}")).collect();
                    let problems: Vec<String> = s.problems.iter().map(ToString::to_string).collect();
                    let endpoints: Vec<String> = s.endpoints.values().map(|o| format!("{o:?}")).collect();
                    (objects, problems, endpoints, s.complete, s.releasable, s.unreadable.clone(),
                     s.objects_version, s.endpoints_version)
                };
                proptest::prop_assert_eq!(show(&a), show(&b));
            }
        }
    }
}
