//! Which certificate a TLS handshake gets, by SNI (reference/ingress.md
//! §1.7): the Secret of an exact `tls.hosts` entry, else of a `*.` wildcard
//! entry covering the name's first label (else the table's default
//! certificate).

use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::host::RuleHost;

/// A `kubernetes.io/tls` Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// Namespace (the Ingress's).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// SNI names to Secrets; the first (oldest Ingress) to claim a name keeps it.
#[derive(Debug, Default)]
pub(crate) struct TlsIndex {
    exact: HashMap<Box<str>, (SecretRef, u32), RandomState>,
    wildcard: HashMap<Box<str>, (SecretRef, u32), RandomState>,
}

impl TlsIndex {
    /// Claims `host` for `secret` on behalf of Ingress number `ingress`.
    /// Returns the Ingress that holds it already, if another one does.
    pub(crate) fn claim(&mut self, host: &RuleHost, secret: &SecretRef, ingress: u32) -> Option<u32> {
        let (map, key) = match host {
            RuleHost::Exact(h) => (&mut self.exact, h.as_str()),
            RuleHost::Wildcard(s) => (&mut self.wildcard, s.as_str()),
            RuleHost::Any => return None,
        };
        match map.get(key) {
            Some((s, by)) if *by != ingress && s != secret => Some(*by),
            Some(_) => None,
            None => {
                map.insert(key.into(), (secret.clone(), ingress));
                None
            }
        }
    }

    /// The Secret claimed for this exact (canonical) name.
    pub(crate) fn exact(&self, name: &str) -> Option<&SecretRef> {
        self.exact.get(name).map(|(s, _)| s)
    }

    /// The Secret claimed for `*.suffix`.
    pub(crate) fn wildcard(&self, suffix: &str) -> Option<&SecretRef> {
        self.wildcard.get(suffix).map(|(s, _)| s)
    }

    /// Whether no Ingress claims a name here.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}
