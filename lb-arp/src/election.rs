//! Which node announces an address: MetalLB's stateless ranking, so that
//! mixed fleets agree. Candidates are ordered by SHA-256 of
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
