//! What building a table found wrong, per object and field.

use std::fmt;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Noted; the object serves.
    Warning,
    /// The object (all of it) is not served.
    Error,
}

/// One finding about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Warning or error.
    pub severity: Severity,
    /// `Ingress ns/name`.
    pub object: String,
    /// The field, e.g. `spec.rules[0].http.paths[1].path`; empty for the
    /// whole object.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.field.is_empty() {
            write!(f, "{sev}: {}: {}", self.object, self.message)
        } else {
            write!(f, "{sev}: {}: {}: {}", self.object, self.field, self.message)
        }
    }
}
