//! Which node announces an address: MetalLB's stateless rules, so that
//! mixed fleets agree (reference/metallb.md §3.1). A Service is announced
//! only while it has a serving endpoint somewhere. The candidates are the
//! nodes alive (the membership, or every Node), less those marked
//! `NetworkUnavailable` or labelled to be excluded from external load
//! balancers, less those no L2Advertisement of the Service selects; with
//! `externalTrafficPolicy: Local`, only nodes with a serving endpoint of
//! it. They are ordered by preference (descending), then by SHA-256 of
//! `node + "#" + address` (the address as Go prints it), byte-wise
//! ascending; the first announces. For a dual-stack Service the first
//! address decides for both.

use std::net::IpAddr;

use sha2::{Digest as _, Sha256};

/// The candidates in announcing order: the first is the owner.
pub fn ranking<'a>(ip: IpAddr, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ranked: Vec<(&str, [u8; 32])> = candidates.into_iter().map(|n| (n, key(n, ip))).collect();
    ranked.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    ranked.into_iter().map(|(n, _)| n).collect()
}

/// The node that announces `ip` among `candidates`.
pub fn owner<'a>(ip: IpAddr, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .min_by(|a, b| key(a, ip).cmp(&key(b, ip)).then_with(|| a.cmp(b)))
}

fn key(node: &str, ip: IpAddr) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(b"#");
    h.update(ip.to_string().as_bytes());
    h.finalize().into()
}

/// A node as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<'a> {
    /// Its name.
    pub name: &'a str,
    /// Alive (in the membership; without one, every Node object is).
    pub alive: bool,
    /// Its `NetworkUnavailable` condition is true.
    pub network_unavailable: bool,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub excluded: bool,
    /// Some L2Advertisement of the Service selects it (its node selectors
    /// match, or it has none).
    pub advertised: bool,
    /// The weight of the preferred-node selectors that match it.
    pub preference: i64,
}

/// A Service as the election sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service<'a> {
    /// Its addresses; the first decides.
    pub ips: &'a [IpAddr],
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// A serving endpoint exists somewhere (on a node or not).
    pub serving: bool,
    /// The nodes with a serving endpoint of it.
    pub endpoint_nodes: &'a [&'a str],
}

/// The node that announces `service`'s addresses among `nodes`, or none
/// (no serving endpoint, no address, or no eligible node).
pub fn announcer<'a>(service: &Service<'_>, nodes: &[Node<'a>]) -> Option<&'a str> {
    let first = *service.ips.first()?;
    if !service.serving {
        return None;
    }
    nodes
        .iter()
        .filter(|n| n.alive && !n.network_unavailable && !n.excluded && n.advertised)
        .filter(|n| !service.local || service.endpoint_nodes.contains(&n.name))
        .min_by(|a, b| {
            b.preference
                .cmp(&a.preference)
                .then_with(|| key(a.name, first).cmp(&key(b.name, first)))
                .then_with(|| a.name.cmp(b.name))
        })
        .map(|n| n.name)
}
