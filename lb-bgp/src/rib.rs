//! Adj-RIB-Out (RFC 4271 §3.2): what was sent to one peer, and the
//! smallest stream of UPDATEs that takes the peer from that to what should
//! be announced now: withdrawals batched, announcements grouped by equal
//! attributes so that one UPDATE carries many prefixes (MetalLB sends one
//! per prefix), unchanged routes not sent again; the whole table again,
//! then End-of-RIB, when the session is (re)established or the peer asks
//! for a refresh. IPv4 routes go in UPDATE's own fields, IPv6 routes in
//! MP_REACH_NLRI / MP_UNREACH_NLRI; a family the session did not
//! negotiate is not sent.

use std::collections::BTreeMap;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::update::{Announce, write_end_of_rib, write_end_of_rib_v6, write_withdrawals, write_withdrawals_v6};

/// IPv4 unicast `(AFI, SAFI)`.
pub const IPV4_UNICAST: (u16, u8) = (1, 1);
/// IPv6 unicast `(AFI, SAFI)`.
pub const IPV6_UNICAST: (u16, u8) = (2, 1);

/// The routes announced to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjRibOut {
    sent: BTreeMap<IpNet, Announce>,
    v4: bool,
    v6: bool,
}

impl Default for AdjRibOut {
    fn default() -> Self {
        Self::new()
    }
}

impl AdjRibOut {
    /// Nothing sent yet, to a peer that takes IPv4 unicast only.
    pub fn new() -> Self {
        Self::with_families(&[IPV4_UNICAST])
    }

    /// Nothing sent yet, to a peer that negotiated `families` (`(AFI,
    /// SAFI)` pairs; IPv4 and IPv6 unicast are the ones lb sends).
    pub fn with_families(families: &[(u16, u8)]) -> Self {
        Self {
            sent: BTreeMap::new(),
            v4: families.contains(&IPV4_UNICAST),
            v6: families.contains(&IPV6_UNICAST),
        }
    }

    /// What the peer was last told.
    pub fn sent(&self) -> &BTreeMap<IpNet, Announce> {
        &self.sent
    }

    /// Whether this peer is sent `prefix`: its family was negotiated, and
    /// an IPv4 route has an IPv4 next hop.
    fn sendable(&self, prefix: &IpNet, a: &Announce) -> bool {
        match prefix {
            IpNet::V4(_) => self.v4 && a.next_hop.is_ipv4(),
            IpNet::V6(_) => self.v6,
        }
    }

    /// Appends to `out` the UPDATEs (each at most `max` bytes) that take
    /// the peer from what it was told to `desired`, and remembers what
    /// was sent of it. Returns how many messages were written (0: nothing
    /// changed).
    pub fn update(&mut self, desired: &BTreeMap<IpNet, Announce>, max: usize, out: &mut Vec<u8>) -> usize {
        let (mut gone4, mut gone6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = (Vec::new(), Vec::new());
        for p in self.sent.keys() {
            if !desired.get(p).is_some_and(|a| self.sendable(p, a)) {
                match p {
                    IpNet::V4(p) => gone4.push(*p),
                    IpNet::V6(p) => gone6.push(*p),
                }
            }
        }
        let mut written = write_withdrawals(&gone4, max, out) + write_withdrawals_v6(&gone6, max, out);
        let mut changed: BTreeMap<&Announce, (Vec<Ipv4Net>, Vec<Ipv6Net>)> = BTreeMap::new();
        for (p, a) in desired {
            if self.sendable(p, a) && self.sent.get(p) != Some(a) {
                let e = changed.entry(a).or_default();
                match p {
                    IpNet::V4(p) => e.0.push(*p),
                    IpNet::V6(p) => e.1.push(*p),
                }
            }
        }
        for (a, (v4, v6)) in &changed {
            let encoded = a.encode();
            written += encoded.write(v4, max, out) + encoded.write_v6(v6, max, out);
        }
        self.sent = desired
            .iter()
            .filter(|(p, a)| self.sendable(p, a))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        written
    }

    /// Appends the whole of `desired` (grouped by attributes), then an
    /// End-of-RIB per family negotiated, to `out`: after the session is
    /// (re)established, or when the peer asks for a refresh. Returns how
    /// many messages were written.
    pub fn full(&mut self, desired: &BTreeMap<IpNet, Announce>, max: usize, out: &mut Vec<u8>) -> usize {
        self.sent.clear();
        let mut written = self.update(desired, max, out);
        if self.v4 {
            write_end_of_rib(out);
            written += 1;
        }
        if self.v6 {
            write_end_of_rib_v6(out);
            written += 1;
        }
        written
    }

    /// The session went down: the peer holds nothing of ours.
    pub fn reset(&mut self) {
        self.sent.clear();
    }
}
