//! File-mode status: the addresses the controller gave, in a JSON state
//! file that a restarted controller (and the speaker and proxy) read back,
//! the way they would read Service status from the API server.
//!
//! Default location: `<manifests>/.lb/state.json`. Written atomically
//! (temporary file + rename), so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    /// Format version (1).
    pub version: u32,
    /// Status per Service, keyed `namespace/name`.
    pub services: BTreeMap<String, ServiceState>,
}

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
}

/// The default state file for a manifests directory.
pub fn default_path(manifests: &Path) -> PathBuf {
    manifests.join(".lb").join("state.json")
}

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> Result<State, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(State {
                version: 1,
                ..State::default()
            });
        }
        Err(source) => {
            return Err(StateError::Io {
                path: path.into(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
        path: path.into(),
        message: e.to_string(),
    })
}

/// Writes the state file atomically; does nothing when unchanged.
pub fn store(path: &Path, state: &State) -> Result<(), StateError> {
    let io_err = |source| StateError::Io {
        path: path.into(),
        source,
    };
    let text = serde_json::to_string_pretty(state).expect("state serializes") + "\n";
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io_err)?;
    std::fs::rename(&tmp, path).map_err(io_err)
}
