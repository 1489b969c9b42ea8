//! An in-memory source: a view set by hand, for tests and for embedders
//! that hold their objects themselves.

use lb_alloc::ServiceKey;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Snapshot, Source, SourceError};

/// A source whose view is whatever was last [`MemorySource::set`].
#[derive(Debug, Default)]
pub struct MemorySource {
    view: Snapshot,
    version: AtomicU64,
}

impl MemorySource {
    /// A source holding `view`.
    pub fn new(view: Snapshot) -> Self {
        Self {
            view,
            version: AtomicU64::new(1),
        }
    }

    /// Replaces the view (and moves the version).
    pub fn set(&mut self, view: Snapshot) {
        self.view = view;
        self.version.fetch_add(1, Ordering::Relaxed);
    }
}

impl Source for MemorySource {
    fn view(&mut self) -> Result<Snapshot, SourceError> {
        Ok(self.view.clone())
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
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
