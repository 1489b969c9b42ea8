//! What building a table found wrong, per object and field.

use std::fmt;

use crate::table::IngressRef;

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Noted; the object serves.
    Warning,
    /// The object (all of it) is not served.
    Error,
}

/// The object a [`Problem`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Subject {
    /// An Ingress.
    Ingress(IngressRef),
    /// An IngressClass (cluster-scoped), by name.
    IngressClass(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Ingress(i) => write!(f, "Ingress {i}"),
            Subject::IngressClass(c) => write!(f, "IngressClass {c}"),
        }
    }
}

/// One finding about one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Problem {
    /// Warning or error.
    pub severity: Severity,
    /// The object.
    pub object: Subject,
    /// The field, e.g. `spec.rules[0].http.paths[1].path`; `None` for the
    /// whole object.
    pub field: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// A field path, `None` when empty (the whole object).
pub(crate) fn field(f: impl Into<String>) -> Option<String> {
    let f = f.into();
    (!f.is_empty()).then_some(f)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match &self.field {
            None => write!(f, "{sev}: {}: {}", self.object, self.message),
            Some(field) => write!(f, "{sev}: {}: {field}: {}", self.object, self.message),
        }
    }
}
