//! An in-memory source: a view set by hand, for tests and for embedders
//! that hold their objects themselves.

use lb_alloc::ServiceKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Change, Delta, Snapshot, Source, SourceError};
use crate::objects::{Object, ObjectRef, object_ref};

/// A source whose view is whatever was last [`MemorySource::set`]. It
/// tells what changed between views ([`Source::delta`]) when only objects
/// and Service status did, as the API server's watches do.
#[derive(Debug, Default)]
pub struct MemorySource {
    view: Snapshot,
    version: AtomicU64,
    /// With deltas: each version's changed objects (`None`: more than
    /// objects changed).
    log: Option<Vec<(u64, Option<Vec<ObjectRef>>)>>,
    /// With deltas: where each object is in the view.
    index: HashMap<ObjectRef, Vec<usize>>,
    /// The version deltas were first logged from.
    log_start: u64,
}

impl MemorySource {
    /// A source holding `view`.
    pub fn new(view: Snapshot) -> Self {
        Self {
            view,
            version: AtomicU64::new(1),
            log: None,
            index: HashMap::new(),
            log_start: 1,
        }
    }

    /// The same, telling what changed between the views set.
    pub fn with_deltas(mut self) -> Self {
        self.log = Some(Vec::new());
        self.index = index(&self.view);
        self.log_start = self.version();
        self
    }

    /// Replaces the view (and moves the version).
    pub fn set(&mut self, view: Snapshot) {
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(log) = &mut self.log {
            log.push((version, changed(&self.view, &view)));
            self.index = index(&view);
        }
        self.view = view;
    }
}

fn index(view: &Snapshot) -> HashMap<ObjectRef, Vec<usize>> {
    let mut index: HashMap<ObjectRef, Vec<usize>> = HashMap::new();
    for (i, (_, o)) in view.objects.iter().enumerate() {
        index.entry(object_ref(o)).or_default().push(i);
    }
    index
}

/// The objects that differ between two views, or `None` when more than
/// objects and their status does (or an identity is doubled).
fn changed(old: &Snapshot, new: &Snapshot) -> Option<Vec<ObjectRef>> {
    let same_rest = old.problems == new.problems
        && old.unreadable == new.unreadable
        && (old.complete, old.releasable, old.synced, old.status_complete)
            == (new.complete, new.releasable, new.synced, new.status_complete);
    if !same_rest {
        return None;
    }
    let index = |v: &Snapshot| -> Option<HashMap<ObjectRef, Object>> {
        let mut m = HashMap::new();
        for (_, o) in &v.objects {
            if m.insert(object_ref(o), o.clone()).is_some() {
                return None;
            }
        }
        Some(m)
    };
    let (a, b) = (index(old)?, index(new)?);
    let mut out: Vec<ObjectRef> = a
        .iter()
        .filter(|(r, o)| b.get(*r) != Some(*o))
        .map(|(r, _)| r.clone())
        .chain(b.keys().filter(|r| !a.contains_key(*r)).cloned())
        .collect();
    for key in old.status.keys().chain(new.status.keys()) {
        if old.status.get(key) != new.status.get(key) {
            let r = ObjectRef {
                kind: "Service".into(),
                namespace: key.namespace().into(),
                name: key.name().into(),
            };
            if !b.contains_key(&r) && !a.contains_key(&r) {
                return None;
            }
            out.push(r);
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

impl Source for MemorySource {
    fn view(&mut self) -> Result<Snapshot, SourceError> {
        Ok(self.view.clone())
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    fn delta(&mut self, since: u64) -> Option<Delta> {
        if since < self.log_start {
            return None;
        }
        let mut refs = Vec::new();
        for (v, changed) in self.log.as_ref()? {
            if *v > since {
                refs.extend(changed.as_ref()?.iter().cloned());
            }
        }
        refs.sort();
        refs.dedup();
        let changes = refs
            .into_iter()
            .map(|r| {
                let now: Vec<Object> = self
                    .index
                    .get(&r)
                    .into_iter()
                    .flatten()
                    .filter_map(|&i| self.view.objects.get(i))
                    .map(|(_, o)| o.clone())
                    .collect();
                let key = ServiceKey::new(&r.namespace, &r.name);
                let status = match r.kind.as_str() {
                    "Service" => self.view.status.get(&key).cloned().unwrap_or_default(),
                    _ => Vec::new(),
                };
                Change::new(r, Ok(now), status)
            })
            .collect();
        Some(Delta::new(self.version(), changes))
    }
}

/// A status sink in memory, recording every batch of changes it was given.
#[derive(Debug, Default)]
pub struct MemoryStatus {
    current: std::collections::BTreeMap<ServiceKey, crate::status::ServiceState>,
    /// Every batch applied, in order.
    pub batches: Vec<Vec<(ServiceKey, Option<crate::status::ServiceState>)>>,
}

impl MemoryStatus {
    /// A sink that holds `current` at start.
    pub fn new(current: std::collections::BTreeMap<ServiceKey, crate::status::ServiceState>) -> Self {
        Self {
            current,
            batches: Vec::new(),
        }
    }
}

impl super::StatusSink for MemoryStatus {
    type Error = std::convert::Infallible;

    fn current(&self) -> &std::collections::BTreeMap<ServiceKey, crate::status::ServiceState> {
        &self.current
    }

    fn apply(&mut self, changes: &[(ServiceKey, Option<crate::status::ServiceState>)]) -> Result<(), Self::Error> {
        super::apply_changes(&mut self.current, changes);
        self.batches.push(changes.to_vec());
        Ok(())
    }
}
