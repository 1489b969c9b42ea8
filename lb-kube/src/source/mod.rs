//! Where objects come from: the seam every component is written against.
//!
//! A [`Source`] yields [`Snapshot`]s: consistent views of the cluster (the
//! objects by kind and identity, the problems found reading them, whether
//! the view is complete and synced, the status the controller has written,
//! and the EndpointSlices apart, with versions that tell a consumer what
//! changed). A [`StatusSink`] takes the controller's per-Service status
//! changes. The file backend ([`file::FileSource`], [`crate::status::FileStatus`])
//! is the first; an in-memory one ([`memory::MemorySource`]) drives tests;
//! the kube-rs backend plugs in behind the same traits.

pub mod cluster;
pub mod cluster_status;
pub mod file;
pub mod memory;
mod notices;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::objects::{Object, ObjectRef};
use crate::status::ServiceState;
pub use lb_alloc::ServiceKey;

/// Where a document was read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// Document number within the file, from 1.
    pub document: usize,
    /// Line the document starts on, from 1.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            // The file as a whole.
            return write!(f, "{}", self.file.display());
        }
        write!(f, "{}:{} (document {})", self.file.display(), self.line, self.document)
    }
}

/// The suffix a problem message gets when the object's last good version
/// stays in force.
pub(crate) fn kept_note(kept: bool) -> &'static str {
    if kept { "; keeping its last good version" } else { "" }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; nothing was dropped.
    Warning,
    /// An object, or part of one, is not in force.
    Error,
}

/// Something wrong with the input, precise enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// How bad.
    pub severity: Severity,
    /// File and document, when read from files.
    pub origin: Option<Origin>,
    /// The object, when known.
    pub object: Option<ObjectRef>,
    /// The field, e.g. `spec.addresses[1]`.
    pub field: Option<String>,
    /// What is wrong, and what would be valid.
    pub message: String,
}

impl Problem {
    /// An error about `object`'s `field`.
    pub fn error(object: Option<ObjectRef>, field: Option<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            origin: None,
            object,
            field,
            message: message.into(),
        }
    }

    /// A warning about `object`'s `field`.
    pub fn warning(object: Option<ObjectRef>, field: Option<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, message)
        }
    }
}

impl fmt::Display for Problem {
    /// One line: control characters from file or object names and values
    /// are escaped, so no input can forge a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::from(match self.severity {
            Severity::Error => "error: ",
            Severity::Warning => "warning: ",
        });
        if let Some(o) = &self.origin {
            line += &format!("{o}: ");
        }
        if let Some(o) = &self.object {
            line += &format!("{o}: ");
        }
        if let Some(field) = &self.field {
            line += &format!("{field}: ");
        }
        line += &self.message;
        for c in line.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The objects in force, and the problems met reading them: one
/// consistent view of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The objects, in a stable order (file, then document), EndpointSlices
    /// excepted (see [`Snapshot::endpoints`]).
    pub objects: Vec<(Option<Origin>, Object)>,
    /// Problems, in the same order.
    pub problems: Vec<Problem>,
    /// Objects that exist but could not be read (and have no last good
    /// version): what they hold must be kept, not released.
    pub unreadable: Vec<ObjectRef>,
    /// False when something could not be read at all and nothing is known
    /// of it: objects may be missing, so nothing is released.
    pub complete: bool,
    /// False when something with errors was read whose earlier content is
    /// unknown (a file with an error, read for the first time): objects
    /// missing from the view may only be cut off, so none is released.
    pub releasable: bool,
    /// True once every kind has been read (listed) at least once.
    pub synced: bool,
    /// Service status written by the controllers, by Service: one entry
    /// per controller (loadBalancerClass) that holds addresses for it.
    pub status: BTreeMap<ServiceKey, Vec<HeldStatus>>,
    /// False when some status could not be read: what it holds is unknown.
    pub status_complete: bool,
    /// True when a state file (file mode), the controller's own included,
    /// could not be read: a reader that follows addresses keeps the last
    /// ones it read rather than taking them all as gone.
    pub status_unreadable: bool,
    /// The EndpointSlices, by namespace and name: a change to them alone
    /// moves only [`Snapshot::endpoints_version`], so consumers that do not
    /// need endpoints (the controller, a route table) need not rebuild.
    pub endpoints: Arc<BTreeMap<ObjectRef, Object>>,
    /// Moves whenever anything but the endpoints changed.
    pub objects_version: u64,
    /// Moves whenever the endpoints changed.
    pub endpoints_version: u64,
}

/// One controller's status for a Service: what `status.loadBalancer` and
/// `metallb.io/ip-allocated-from-pool` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldStatus {
    /// The loadBalancerClass of the controller that wrote it.
    pub class: Option<String>,
    /// What it holds.
    pub state: ServiceState,
}

impl Snapshot {
    /// An empty, complete, synced view.
    pub fn empty() -> Self {
        Self {
            complete: true,
            releasable: true,
            synced: true,
            status_complete: true,
            ..Self::default()
        }
    }

    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// The object with this identity, if in force.
    pub fn get(&self, r: &ObjectRef) -> Option<&Object> {
        if r.kind == "EndpointSlice" {
            return self.endpoints.get(r);
        }
        self.objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| crate::objects::object_ref(o) == *r)
    }

    /// The objects of one kind (`Service`, `IPAddressPool`, …).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().map(|(_, o)| o).filter(move |o| o.kind() == kind)
    }

    /// What the controller of `class` holds for the Service `key`.
    pub fn status_of(&self, key: &ServiceKey, class: Option<&str>) -> Option<&ServiceState> {
        self.status
            .get(key)?
            .iter()
            .find(|h| h.class.as_deref() == class)
            .map(|h| &h.state)
    }
}

/// Why a source cannot give a view at all (a missing directory, an API
/// server that cannot be reached); problems with single objects are
/// [`Problem`]s in the view instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The manifests directory cannot be listed.
    #[error("manifests directory {path}: {source}")]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another backend's failure (an API server that cannot be reached).
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Where views of the cluster come from. Level-triggered: a consumer reads
/// the whole current view whenever [`Source::version`] moves, and the
/// version stays put while nothing changes, so a consumer can wait for it
/// to settle before acting (a file saved in two writes is read whole).
pub trait Source: Send {
    /// The current view. May block on I/O: call it off the runtime's
    /// worker threads.
    fn view(&mut self) -> Result<Snapshot, SourceError>;

    /// A cheap token that differs from the last one whenever the view may
    /// have changed. May block briefly (file metadata).
    fn version(&self) -> u64;

    /// For a source that announces its changes (an API server's watches):
    /// a receiver that sees each one, so consumers follow them as they come
    /// instead of polling, and need not wait for them to settle (each is
    /// whole). Default: none (poll [`Source::version`]).
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The objects changed since the view or delta read at version `since`
    /// (a [`Source::version`] or [`Delta::version`]), for consumers that
    /// follow changes instead of re-reading everything. `None` when the
    /// source cannot tell, or when something beyond single objects changed
    /// (a re-list, a watch failing or recovering): read the whole view.
    /// Default: `None`.
    fn delta(&mut self, since: u64) -> Option<Delta> {
        let _ = since;
        None
    }
}

/// Logs the problems of `problems` not in `logged` (what the last call
/// logged), and remembers them: a reload says what changed.
pub fn log_new_problems(problems: &[Problem], logged: &mut Vec<String>) {
    let now: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for (p, text) in problems.iter().zip(&now) {
        if logged.contains(text) {
            continue;
        }
        match p.severity {
            Severity::Error => tracing::error!("{text}"),
            Severity::Warning => tracing::warn!("{text}"),
        }
    }
    *logged = now;
}

/// Resolves when a source may have changed: at its next announcement
/// (never, once its announcer is gone), else after `poll`.
pub async fn changed_or_polled(changes: &mut Option<tokio::sync::watch::Receiver<u64>>, poll: std::time::Duration) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => tokio::time::sleep(poll).await,
    }
}

/// Reads `source`'s version on a blocking thread (it may stat files),
/// handing the source back with it. Fails only if the read panicked.
pub async fn version_off_runtime<S: Source + 'static>(source: S) -> Result<(S, u64), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let version = source.version();
        (source, version)
    })
    .await
}

/// How long a manifests directory must hold still before a change is read.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// Reads `source`'s version off the runtime; for a source without change
/// notifications (files), once it has moved from `last`, waits until it
/// holds still for [`SETTLE`]: a file caught in the middle of a write
/// (truncated, then written) reads as another file a moment later, and a
/// half-written file must never take routes or addresses away.
pub async fn settled_version<S: Source + 'static>(
    source: S,
    notified: bool,
    last: u64,
) -> Result<(S, u64), tokio::task::JoinError> {
    let (mut source, mut moved) = version_off_runtime(source).await?;
    // Not bounded: a file rewritten in place again and again must never be
    // read in the moment it is empty (a directory that never holds still,
    // a file written without end, is read once it stops).
    while !notified && moved != last {
        tokio::time::sleep(SETTLE).await;
        let (back, again) = version_off_runtime(source).await?;
        source = back;
        if again == moved {
            break;
        }
        moved = again;
    }
    Ok((source, moved))
}

/// Reads `source`'s version and view on a blocking thread (reading may
/// block on I/O), handing the source back with them. Fails only if the
/// read panicked.
pub async fn read_off_runtime<S: Source + 'static>(
    mut source: S,
) -> Result<(S, Result<(u64, Snapshot), SourceError>), tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let version = source.version();
        let view = source.view();
        (source, view.map(|v| (version, v)))
    })
    .await
}

/// What changed since a version: each object that changed, as it is now.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Delta {
    /// The version this delta reaches (give it to the next
    /// [`Source::delta`]).
    pub version: u64,
    /// One entry per object changed, sorted by kind, namespace and name.
    pub changes: Vec<Change>,
}

impl Delta {
    /// The changes up to `version`, sorted as [`Delta::changes`] says.
    pub fn new(version: u64, mut changes: Vec<Change>) -> Self {
        changes.sort_by(|a, b| a.object.cmp(&b.object));
        Self { version, changes }
    }
}

impl Change {
    /// `object` as it is now, with the status shown for it.
    pub fn new(object: ObjectRef, now: Result<Vec<Object>, Vec<Problem>>, status: Vec<HeldStatus>) -> Self {
        Self { object, now, status }
    }
}

/// One object changed, as it is now.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Change {
    /// Which object.
    pub object: ObjectRef,
    /// What it yields now (empty: it is gone, or yields nothing), or the
    /// problems that keep it from being read.
    pub now: Result<Vec<Object>, Vec<Problem>>,
    /// For a Service: the status the controllers wrote for it, as
    /// [`Snapshot::status`] would hold it.
    pub status: Vec<HeldStatus>,
}

/// Takes the controller's status changes: the state file in file mode,
/// status subresource patches in cluster mode.
pub trait StatusSink: Send {
    /// Why a write failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the controller holds now, by Service, as last written.
    fn current(&self) -> &BTreeMap<ServiceKey, ServiceState>;

    /// Applies per-Service changes: `Some` sets a Service's status, `None`
    /// clears it. Durable when it returns `Ok`.
    fn apply(&mut self, changes: &[(ServiceKey, Option<ServiceState>)]) -> Result<(), Self::Error>;

    /// Takes what a reconcile found beyond per-Service status (pending
    /// Services and why, pool usage, configuration problems), for a backend
    /// that reports them (events and pool status in cluster mode). Best
    /// effort: a backend logs what it cannot write. Default: nothing.
    fn report(&mut self, report: &crate::controller::Report) {
        let _ = report;
    }
}

/// Locks a mutex the cluster backend shares between its tasks. Every update
/// under it is one insert, remove or swap, so a task that panicked holding
/// it left the data whole: it stays usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applies per-Service status changes to a map (what a sink keeps in memory).
pub fn apply_changes(map: &mut BTreeMap<ServiceKey, ServiceState>, changes: &[(ServiceKey, Option<ServiceState>)]) {
    for (key, status) in changes {
        match status {
            Some(s) => {
                map.insert(key.clone(), s.clone());
            }
            None => {
                map.remove(key);
            }
        }
    }
}
