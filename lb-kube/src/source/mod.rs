//! Where objects come from: one snapshot of the cluster, with every problem
//! found on the way, named by file, document, object and field.

pub mod file;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use crate::objects::{Object, ObjectRef};

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

/// The objects in force, and the problems met reading them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The objects, in a stable order (file, then document).
    pub objects: Vec<(Option<Origin>, Object)>,
    /// Problems, in the same order.
    pub problems: Vec<Problem>,
    /// Objects that exist but could not be read (and have no last good
    /// version): what they hold must be kept, not released.
    pub unreadable: Vec<ObjectRef>,
    /// False when a document could not even be parsed and no last good
    /// version exists: objects may be missing, so nothing is released.
    pub complete: bool,
}

impl Snapshot {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}
