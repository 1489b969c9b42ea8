//! File-mode status: the addresses the controller gave, in a JSON state
//! file that a restarted controller (and the speaker and proxy) read back,
//! the way they would read Service status from the API server.
//!
//! Default location: `<manifests>/.lb/state.json` (`state.CLASS.json` for
//! `--lb-class CLASS`: controllers of different classes sharing a directory
//! each write their own file and read the others' as addresses in use).
//! Written durably (temporary file, fsync, rename, fsync of the directory),
//! so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use lb_alloc::ServiceKey;
use serde::{Deserialize, Serialize};

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The `--lb-class` of the controller that writes this file (none: the
    /// controller of Services without a loadBalancerClass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    /// Status per Service (keyed `namespace/name` in the file).
    pub services: BTreeMap<ServiceKey, ServiceState>,
}

impl State {
    /// An empty state of the current version for `class`.
    pub fn new(class: Option<String>) -> Self {
        Self {
            version: VERSION,
            load_balancer_class: class,
            services: BTreeMap::new(),
        }
    }
}

/// The state file format this build reads and writes.
pub const VERSION: u32 = 1;

/// Largest state file read (bytes), as for manifests.
pub const MAX_STATE_BYTES: u64 = crate::source::file::MAX_FILE_BYTES;

/// What one Service holds: its `status.loadBalancer.ingress` and
/// `metallb.io/ip-allocated-from-pool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceState {
    /// The addresses.
    pub ips: Vec<IpAddr>,
    /// The pool.
    pub pool: String,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not a state file. It is left as it is: starting from
    /// nothing would renumber every Service.
    #[error(
        "state file {path} is not valid ({message}); fix or remove it (removing it lets Services get new addresses)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file belongs to the controller of another loadBalancerClass.
    #[error(
        "state file {path} belongs to the controller of {}; give each --lb-class its own state file",
        class_name(found)
    )]
    OtherClass {
        /// The file.
        path: PathBuf,
        /// The class it was written for.
        found: Option<String>,
    },
    /// The lock file beside the state file cannot be opened or locked.
    #[error("lock file {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The sink was opened read-only (a dry run): it writes nothing.
    #[error("state file {path} was opened read-only (a dry run); nothing is written")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// A Service key that would not read back (not `namespace/name`).
    #[error("state file {path}: cannot hold {key:?} (not namespace/name)")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// Another controller writes this file (it holds the lock beside it).
    #[error(
        "state file {path} is in use by another lb-controller (it holds {}); run one controller per --lb-class and state file",
        lock.display()
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
}

fn class_name(class: &Option<String>) -> String {
    match class {
        Some(c) => format!("loadBalancerClass {c:?}"),
        None => "Services without a loadBalancerClass".to_owned(),
    }
}

/// The default state file for a manifests directory and `--lb-class`:
/// `DIR/.lb/state.json`, or `DIR/.lb/state.CLASS.json` with the class's
/// characters outside `[A-Za-z0-9._-]` percent-encoded.
pub fn default_path(manifests: &Path, class: Option<&str>) -> PathBuf {
    let name = match class {
        None => "state.json".to_owned(),
        Some(c) => {
            let mut name = String::from("state.");
            for b in c.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                    name.push(b as char);
                } else {
                    name.push_str(&format!("%{b:02X}"));
                }
            }
            name + ".json"
        }
    };
    manifests.join(".lb").join(name)
}

/// Reads the state file; a missing file is an empty state. A file of
/// another version, or of another class than `class`, is refused.
pub fn load(path: &Path, class: Option<&str>) -> Result<State, StateError> {
    let Some(state) = read(path)? else {
        return Ok(State::new(class.map(str::to_owned)));
    };
    if state.load_balancer_class.as_deref() != class {
        return Err(StateError::OtherClass {
            path: path.into(),
            found: state.load_balancer_class,
        });
    }
    Ok(state)
}

/// Reads a state file of any class; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<State>, StateError> {
    let text = match crate::source::file::read_capped(path, MAX_STATE_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let corrupt = |message: String| StateError::Corrupt {
        path: path.into(),
        message,
    };
    // The version first, so a newer format is named as such.
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| corrupt(e.to_string()))?
        .get("version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(corrupt(match version {
            Some(v) => format!("format version {v}; this build reads version {VERSION}"),
            None => "no format version".to_owned(),
        }));
    }
    let state: State = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    for (key, held) in &state.services {
        let v4 = held.ips.iter().filter(|ip| ip.is_ipv4()).count();
        if v4 > 1 || held.ips.len() - v4 > 1 {
            return Err(corrupt(format!(
                "{key} holds {} addresses of one family",
                held.ips.len()
            )));
        }
    }
    Ok(Some(state))
}

/// The other state files beside `own` (`state*.json` in its directory).
pub fn sibling_paths(own: &Path) -> Vec<PathBuf> {
    let dir = match own.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name() != own.file_name()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("state") && n.ends_with(".json"))
        })
        .collect();
    out.sort();
    out
}

/// The other controllers' state files beside `own`, with what each holds
/// or why it cannot be read.
pub fn siblings(own: &Path) -> Vec<(PathBuf, Result<State, StateError>)> {
    sibling_paths(own)
        .into_iter()
        .filter_map(|p| match read(&p) {
            Ok(Some(s)) => Some((p, Ok(s))),
            Ok(None) => None,
            Err(e) => Some((p, Err(e))),
        })
        .collect()
}

/// Writes the state file durably: a temporary file beside it is written and
/// flushed to disk, renamed over the file, and the directory flushed, so a
/// crash or power loss leaves the old or the new file, never half of one.
/// Does nothing when the content is unchanged.
pub fn store(path: &Path, state: &State) -> Result<(), StateError> {
    use std::io::Write;
    let io_err = |source| StateError::Io {
        path: path.into(),
        source,
    };
    let text = serde_json::to_string_pretty(state).map_err(|e| io_err(io::Error::other(e)))? + "\n";
    if crate::source::file::read_capped(path, MAX_STATE_BYTES).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dir_durably(&dir).map_err(io_err)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err)
}

/// Creates `dir` if missing, with its entry flushed to disk in its parent,
/// so a file written into it survives a power loss.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// The file backend of the status sink: the controller's state file,
/// written whole and durably on every change, by one controller at a time
/// (an advisory lock on `STATE.lock` beside it, held until the sink is
/// dropped or the process exits).
#[derive(Debug)]
pub struct FileStatus {
    path: PathBuf,
    state: State,
    /// The lock, held while the sink lives; none when opened read-only.
    lock: Option<std::fs::File>,
}

impl FileStatus {
    /// Opens the state file of the controller of `class` to write it:
    /// takes its lock (refused while another controller holds it), then
    /// checks it: a missing file is empty; one of another version or class
    /// is refused.
    pub fn open(path: impl Into<PathBuf>, class: Option<&str>) -> Result<Self, StateError> {
        let path = resolve(&path.into());
        let lock = lock(&path)?;
        let state = load(&path, class)?;
        Ok(Self {
            path,
            state,
            lock: Some(lock),
        })
    }

    /// Opens the state file without its lock, to read it (dry runs beside
    /// a running controller); writing to it is refused.
    pub fn open_read_only(path: impl Into<PathBuf>, class: Option<&str>) -> Result<Self, StateError> {
        let path = resolve(&path.into());
        let state = load(&path, class)?;
        Ok(Self {
            path,
            state,
            lock: None,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl crate::source::StatusSink for FileStatus {
    type Error = StateError;

    fn current(&self) -> &BTreeMap<ServiceKey, ServiceState> {
        &self.state.services
    }

    fn apply(&mut self, changes: &[(ServiceKey, Option<ServiceState>)]) -> Result<(), StateError> {
        let Some(held) = &self.lock else {
            return Err(StateError::ReadOnly {
                path: self.path.clone(),
            });
        };
        // A lock file removed (or replaced) while we run lets another
        // controller take a new one: stop writing rather than race it.
        let lock_path = lock_path(&self.path);
        if !same_file(held, &lock_path) {
            return Err(StateError::Lock {
                path: lock_path,
                source: io::Error::other("removed or replaced while this controller held it; restart it"),
            });
        }
        if let Some((key, _)) = changes
            .iter()
            .find(|(k, _)| ServiceKey::parse(&k.to_string()).as_ref() != Some(k))
        {
            return Err(StateError::BadKey {
                path: self.path.clone(),
                key: key.to_string(),
            });
        }
        // In memory only once it is on disk: `current` is what the file holds.
        let mut next = self.state.clone();
        crate::source::apply_changes(&mut next.services, changes);
        store(&self.path, &next)?;
        self.state = next;
        Ok(())
    }
}

/// Takes the advisory lock `STATE.lock` beside a state file (creating its
/// directory), for as long as the returned file is open. Advisory and
/// local: it keeps two controllers on one host from writing one file, it is
/// not leader election.
fn lock(state: &Path) -> Result<std::fs::File, StateError> {
    if state.file_name().is_none() {
        return Err(StateError::Io {
            path: state.into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        });
    }
    let path = lock_path(state);
    let lock_err = |source| StateError::Lock {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        create_dir_durably(dir).map_err(lock_err)?;
    }
    // Opening a fifo would block forever; a directory cannot be locked.
    if let Ok(meta) = std::fs::metadata(&path)
        && !meta.is_file()
    {
        return Err(lock_err(io::Error::other("not a regular file")));
    }
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .create(write)
            .truncate(false)
            .write(write)
            .read(!write)
            .open(&path)
    };
    // A lock file left by another user: a read handle can lock it too.
    let file = match open(true) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => open(false),
        other => other,
    }
    .map_err(lock_err)?;
    match file.try_lock() {
        // Locked, and still the file at that path (not one removed while
        // this was opening it).
        Ok(()) if same_file(&file, &path) => Ok(file),
        Ok(()) => Err(lock_err(io::Error::other("replaced while being locked; try again"))),
        Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked {
            path: state.into(),
            lock: path.clone(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
    }
}

/// The lock file of a state file: `STATE.lock` beside it.
fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    state.with_file_name(name)
}

/// Whether `path` is (still) the file `file` has open.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The state file a path names, symlinks followed (to the last link's
/// target, which need not exist yet): writing replaces that file, not the
/// link, and the lock sits beside it, so every path to one state file
/// shares one lock.
pub fn resolve(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Err(_) => break,
        }
    }
    // Its directory, resolved too (`..` and links in it), when it exists.
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => match std::fs::canonicalize(dir) {
            Ok(dir) => dir.join(name),
            Err(_) => path,
        },
        _ => path,
    }
}
