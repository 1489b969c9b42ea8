//! Adj-RIB-Out (RFC 4271 §3.2): what was sent to one peer, and the
//! smallest stream of UPDATEs that takes the peer from that to what should
//! be announced now: withdrawals batched, announcements grouped by equal
//! attributes so that one UPDATE carries many prefixes (MetalLB sends one
//! per prefix), unchanged routes not sent again; the whole table again,
//! then End-of-RIB, when the session is (re)established or the peer asks
//! for a refresh.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::update::{Announce, write_end_of_rib, write_withdrawals};

/// The routes announced to one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<Ipv4Net, Announce>,
}

impl AdjRibOut {
    /// Nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the peer was last told.
    pub fn sent(&self) -> &BTreeMap<Ipv4Net, Announce> {
        &self.sent
    }

    /// Appends to `out` the UPDATEs (each at most `max` bytes) that take
    /// the peer from what it was told to `desired`, and remembers `desired`
    /// as told. Returns how many messages were written (0: nothing
    /// changed).
    pub fn update(&mut self, desired: &BTreeMap<Ipv4Net, Announce>, max: usize, out: &mut Vec<u8>) -> usize {
        let gone: Vec<Ipv4Net> = self.sent.keys().filter(|p| !desired.contains_key(p)).copied().collect();
        let mut written = write_withdrawals(&gone, max, out);
        let mut changed: BTreeMap<&Announce, Vec<Ipv4Net>> = BTreeMap::new();
        for (p, a) in desired {
            if self.sent.get(p) != Some(a) {
                changed.entry(a).or_default().push(*p);
            }
        }
        for (a, prefixes) in &changed {
            written += a.write(prefixes, max, out);
        }
        self.sent = desired.clone();
        written
    }

    /// Appends the whole of `desired` (grouped by attributes), then
    /// End-of-RIB, to `out`: after the session is (re)established, or when
    /// the peer asks for a refresh. Returns how many messages were written.
    pub fn full(&mut self, desired: &BTreeMap<Ipv4Net, Announce>, max: usize, out: &mut Vec<u8>) -> usize {
        self.sent.clear();
        let written = self.update(desired, max, out);
        write_end_of_rib(out);
        written + 1
    }

    /// The session went down: the peer holds nothing of ours.
    pub fn reset(&mut self) {
        self.sent.clear();
    }
}
