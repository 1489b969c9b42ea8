//! What a node answers: ARP requests and neighbour solicitations for the
//! addresses it owns on an interface, with the interface's MAC; and what it
//! notices: another MAC claiming one of those addresses (split brain).
//! Decisions write the answer into a caller buffer: no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{self, Arp, Frame, Mac, Neighbor, WireError};

/// The addresses a node owns on one interface (kept sorted; looked up by
/// binary search).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

impl Owned {
    /// The set of `ips`.
    pub fn new(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut o = Self::default();
        for ip in ips {
            match ip {
                IpAddr::V4(a) => o.v4.push(a),
                IpAddr::V6(a) => o.v6.push(a),
            }
        }
        o.v4.sort_unstable();
        o.v4.dedup();
        o.v6.sort_unstable();
        o.v6.dedup();
        o
    }

    /// Whether `ip` is owned.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.binary_search(&a).is_ok(),
            IpAddr::V6(a) => self.v6.binary_search(&a).is_ok(),
        }
    }

    /// Whether nothing is owned.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The owned IPv6 addresses (their solicited-node groups are joined).
    pub fn v6(&self) -> &[Ipv6Addr] {
        &self.v6
    }
}

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Send the first `len` bytes of the output buffer: the answer about
    /// `ip`.
    Reply {
        /// Bytes of the answer.
        len: usize,
        /// The owned address asked about.
        ip: IpAddr,
    },
    /// Another MAC claims an address owned here.
    Conflict {
        /// The address.
        ip: IpAddr,
        /// The MAC that claims it.
        mac: Mac,
    },
    /// Nothing to do.
    Ignore(Ignored),
}

/// Why a frame gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not ARP or neighbour discovery, or malformed.
    Wire(WireError),
    /// Sent by this interface.
    Own,
    /// For an address not owned here.
    NotOwned,
    /// Addressed to another host (its unicast MAC or address).
    NotForUs,
    /// An answer or announcement about an address not owned here.
    Answer,
}

/// Decides on `frame`, received on the interface of `mac` where `owned`
/// are this node's, writing any reply into `out` (at least
/// [`wire::ADVERT_FRAME`] bytes).
pub fn respond(mac: Mac, owned: &Owned, frame: &[u8], out: &mut [u8]) -> Response {
    match wire::parse(frame) {
        Err(e) => Response::Ignore(Ignored::Wire(e)),
        Ok(Frame::Arp(a)) => arp(mac, owned, &a, out),
        Ok(Frame::Neighbor(n)) => neighbor(mac, owned, &n, out),
    }
}

fn arp(mac: Mac, owned: &Owned, a: &Arp, out: &mut [u8]) -> Response {
    if a.eth_src == mac || a.sender_mac == mac {
        return Response::Ignore(Ignored::Own);
    }
    // Any ARP frame whose sender is an address owned here, from another
    // MAC: a reply, an announcement or a request, someone else uses it
    // (RFC 5227 §2.4).
    if !a.sender_ip.is_unspecified() && owned.contains(IpAddr::V4(a.sender_ip)) {
        return Response::Conflict {
            ip: IpAddr::V4(a.sender_ip),
            mac: a.sender_mac,
        };
    }
    if a.reply || a.sender_ip == a.target_ip {
        return Response::Ignore(Ignored::Answer);
    }
    if !owned.contains(IpAddr::V4(a.target_ip)) {
        return Response::Ignore(Ignored::NotOwned);
    }
    if !(a.eth_dst == Mac::BROADCAST || a.eth_dst == mac) || a.sender_mac.is_group() {
        return Response::Ignore(Ignored::NotForUs);
    }
    // Probes (sender 0.0.0.0, RFC 5227) are answered too: that defends
    // the address.
    let reply = Arp {
        eth_dst: a.sender_mac,
        eth_src: mac,
        reply: true,
        sender_mac: mac,
        sender_ip: a.target_ip,
        target_mac: a.sender_mac,
        target_ip: a.sender_ip,
    };
    match wire::write_arp(out, &reply) {
        Some(len) => Response::Reply {
            len,
            ip: IpAddr::V4(a.target_ip),
        },
        None => Response::Ignore(Ignored::Wire(WireError::Truncated)),
    }
}

fn neighbor(mac: Mac, owned: &Owned, n: &Neighbor, out: &mut [u8]) -> Response {
    if n.eth_src == mac {
        return Response::Ignore(Ignored::Own);
    }
    let target = IpAddr::V6(n.target);
    if n.advert {
        return match (owned.contains(target), n.link_addr) {
            (true, Some(other)) if other != mac => Response::Conflict { ip: target, mac: other },
            _ => Response::Ignore(Ignored::Answer),
        };
    }
    if !owned.contains(target) {
        return Response::Ignore(Ignored::NotOwned);
    }
    // To the target's solicited-node group, or to the target itself (a
    // unicast reachability probe, which need not carry the sender's
    // link-layer address: MetalLB ignores those).
    if n.ip_dst != wire::solicited_node(n.target) && n.ip_dst != n.target {
        return Response::Ignore(Ignored::NotForUs);
    }
    if !(n.eth_dst == mac || n.eth_dst.is_group()) {
        return Response::Ignore(Ignored::NotForUs);
    }
    let reply = if n.ip_src.is_unspecified() {
        // Duplicate address detection for an address owned here: defended
        // to all nodes, unsolicited (RFC 4861 §7.2.4).
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        Neighbor {
            eth_dst: Mac::ipv6_multicast(all),
            eth_src: mac,
            ip_src: n.target,
            ip_dst: all,
            advert: true,
            flags: wire::OVERRIDE,
            target: n.target,
            link_addr: Some(mac),
        }
    } else {
        Neighbor {
            eth_dst: n.link_addr.unwrap_or(n.eth_src),
            eth_src: mac,
            ip_src: n.target,
            ip_dst: n.ip_src,
            advert: true,
            flags: wire::SOLICITED | wire::OVERRIDE,
            target: n.target,
            link_addr: Some(mac),
        }
    };
    match wire::write_advert(out, &reply) {
        Some(len) => Response::Reply { len, ip: target },
        None => Response::Ignore(Ignored::Wire(WireError::Truncated)),
    }
}
