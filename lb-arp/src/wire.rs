//! Ethernet frames carrying ARP (RFC 826) or IPv6 neighbour discovery
//! (RFC 4861 §4.3–4.4), read from and written into caller buffers: no heap
//! allocation, no panic on any input. Fixed headers are read through
//! `pnet_packet`; NDP options are walked here (bounded by the packet, each
//! option's length checked), and checksums are verified.

use std::net::{Ipv4Addr, Ipv6Addr};

use pnet_packet::Packet as _;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The Ethernet address IPv6 multicast `ip` is sent to (RFC 2464 §7).
    pub fn ipv6_multicast(ip: Ipv6Addr) -> Mac {
        let o = ip.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }

    /// Whether this is a group (multicast or broadcast) address.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 == 1
    }

    fn from_pnet(m: pnet_base::MacAddr) -> Mac {
        Mac(m.octets())
    }

    fn to_pnet(self) -> pnet_base::MacAddr {
        let [a, b, c, d, e, f] = self.0;
        pnet_base::MacAddr::new(a, b, c, d, e, f)
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Why a frame is not one this crate acts on. Every frame of another kind
/// is [`WireError::Ignored`]; the others are malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not ARP over Ethernet for IPv4, nor ICMPv6 neighbour discovery.
    #[error("not ARP or neighbour discovery")]
    Ignored,
    /// Shorter than its headers say.
    #[error("truncated")]
    Truncated,
    /// ARP for another hardware or protocol, or with other address sizes.
    #[error("ARP not for IPv4 over Ethernet")]
    ArpKind,
    /// An ARP operation other than request or reply.
    #[error("ARP operation {0}")]
    ArpOperation(u16),
    /// The ICMPv6 checksum does not match.
    #[error("bad ICMPv6 checksum")]
    Checksum,
    /// Not valid neighbour discovery (RFC 4861 §7.1): a hop limit other
    /// than 255, a code other than 0, a multicast target, an option of
    /// length 0, a source link-layer option from the unspecified address.
    #[error("invalid neighbour discovery: {0}")]
    Invalid(&'static str),
}

/// An ARP message for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// The Ethernet destination.
    pub eth_dst: Mac,
    /// The Ethernet source.
    pub eth_src: Mac,
    /// Request (`false`) or reply (`true`).
    pub reply: bool,
    /// The sender's hardware address.
    pub sender_mac: Mac,
    /// The sender's IPv4 address (0.0.0.0 in a probe).
    pub sender_ip: Ipv4Addr,
    /// The target's hardware address (unknown, zero, in a request).
    pub target_mac: Mac,
    /// The address asked about (request) or answered to (reply).
    pub target_ip: Ipv4Addr,
}

/// A neighbour solicitation or advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// The Ethernet destination.
    pub eth_dst: Mac,
    /// The Ethernet source.
    pub eth_src: Mac,
    /// The IPv6 source (`::` in duplicate address detection).
    pub ip_src: Ipv6Addr,
    /// The IPv6 destination.
    pub ip_dst: Ipv6Addr,
    /// Advertisement (`true`) or solicitation (`false`).
    pub advert: bool,
    /// An advertisement's flags (R, S, O in the top bits); 0 for a
    /// solicitation.
    pub flags: u8,
    /// The address solicited or advertised.
    pub target: Ipv6Addr,
    /// The source (solicitation) or target (advertisement) link-layer
    /// address option, if present.
    pub link_addr: Option<Mac>,
}

/// A frame this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// ARP.
    Arp(Arp),
    /// Neighbour solicitation or advertisement.
    Neighbor(Neighbor),
}

const ETH: usize = 14;
const ARP: usize = 28;
const IPV6: usize = 40;
/// ICMPv6 type, code, checksum, 4 bytes, target.
const ND: usize = 24;

/// Reads one Ethernet frame.
pub fn parse(frame: &[u8]) -> Result<Frame, WireError> {
    let eth = EthernetPacket::new(frame).ok_or(WireError::Truncated)?;
    let (eth_dst, eth_src) = (Mac::from_pnet(eth.get_destination()), Mac::from_pnet(eth.get_source()));
    match eth.get_ethertype() {
        EtherTypes::Arp => parse_arp(eth.payload(), eth_dst, eth_src).map(Frame::Arp),
        EtherTypes::Ipv6 => parse_nd(eth.payload(), eth_dst, eth_src).map(Frame::Neighbor),
        _ => Err(WireError::Ignored),
    }
}

fn parse_arp(bytes: &[u8], eth_dst: Mac, eth_src: Mac) -> Result<Arp, WireError> {
    let arp = ArpPacket::new(bytes).ok_or(WireError::Truncated)?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(WireError::ArpKind);
    }
    let reply = match arp.get_operation() {
        ArpOperations::Request => false,
        ArpOperations::Reply => true,
        other => return Err(WireError::ArpOperation(other.0)),
    };
    Ok(Arp {
        eth_dst,
        eth_src,
        reply,
        sender_mac: Mac::from_pnet(arp.get_sender_hw_addr()),
        sender_ip: arp.get_sender_proto_addr(),
        target_mac: Mac::from_pnet(arp.get_target_hw_addr()),
        target_ip: arp.get_target_proto_addr(),
    })
}

fn parse_nd(bytes: &[u8], eth_dst: Mac, eth_src: Mac) -> Result<Neighbor, WireError> {
    let ip = Ipv6Packet::new(bytes).ok_or(WireError::Truncated)?;
    // Neighbour discovery carries no extension headers (RFC 4861 §7.1).
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
        return Err(WireError::Ignored);
    }
    let len = usize::from(ip.get_payload_length());
    let icmp_bytes = bytes.get(IPV6..IPV6 + len).ok_or(WireError::Truncated)?;
    let icmp = Icmpv6Packet::new(icmp_bytes).ok_or(WireError::Truncated)?;
    let advert = match icmp.get_icmpv6_type() {
        Icmpv6Types::NeighborSolicit => false,
        Icmpv6Types::NeighborAdvert => true,
        _ => return Err(WireError::Ignored),
    };
    if icmp_bytes.len() < ND {
        return Err(WireError::Truncated);
    }
    let (src, dst) = (ip.get_source(), ip.get_destination());
    let sum = pnet_packet::icmpv6::checksum(&icmp, &src, &dst);
    if sum != icmp.get_checksum() {
        return Err(WireError::Checksum);
    }
    if ip.get_hop_limit() != 255 {
        return Err(WireError::Invalid("hop limit is not 255"));
    }
    if icmp.get_icmpv6_code().0 != 0 {
        return Err(WireError::Invalid("code is not 0"));
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&icmp_bytes[8..24]);
    let target = Ipv6Addr::from(target);
    if target.is_multicast() {
        return Err(WireError::Invalid("multicast target"));
    }
    // The option carrying a link-layer address: source (1) in a
    // solicitation, target (2) in an advertisement.
    let wanted = if advert { 2 } else { 1 };
    let mut link_addr = None;
    let mut options = &icmp_bytes[ND..];
    while !options.is_empty() {
        let (&kind, rest) = options.split_first().ok_or(WireError::Truncated)?;
        let units = usize::from(*rest.first().ok_or(WireError::Truncated)?);
        if units == 0 {
            return Err(WireError::Invalid("an option of length 0"));
        }
        let option = options.get(..units * 8).ok_or(WireError::Truncated)?;
        if kind == wanted && units == 1 {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&option[2..8]);
            link_addr = Some(Mac(mac));
        }
        options = &options[units * 8..];
    }
    if !advert && src.is_unspecified() && link_addr.is_some() {
        return Err(WireError::Invalid(
            "a source link-layer option from the unspecified address",
        ));
    }
    Ok(Neighbor {
        eth_dst,
        eth_src,
        ip_src: src,
        ip_dst: dst,
        advert,
        flags: if advert { icmp_bytes[4] } else { 0 },
        target,
        link_addr,
    })
}

/// Bytes [`write_arp`] writes.
pub const ARP_FRAME: usize = ETH + ARP;
/// Bytes [`write_advert`] writes (with the target link-layer option).
pub const ADVERT_FRAME: usize = ETH + IPV6 + ND + 8;

/// The Solicited flag of an advertisement.
pub const SOLICITED: u8 = 0x40;
/// The Override flag of an advertisement.
pub const OVERRIDE: u8 = 0x20;

/// Writes an ARP frame into `buf` (at least [`ARP_FRAME`] bytes); returns
/// the bytes written, or `None` when `buf` is too short.
pub fn write_arp(buf: &mut [u8], msg: &Arp) -> Option<usize> {
    let frame = buf.get_mut(..ARP_FRAME)?;
    {
        let mut eth = MutableEthernetPacket::new(&mut frame[..])?;
        eth.set_destination(msg.eth_dst.to_pnet());
        eth.set_source(msg.eth_src.to_pnet());
        eth.set_ethertype(EtherTypes::Arp);
    }
    let mut arp = MutableArpPacket::new(&mut frame[ETH..])?;
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(if msg.reply {
        ArpOperations::Reply
    } else {
        ArpOperations::Request
    });
    arp.set_sender_hw_addr(msg.sender_mac.to_pnet());
    arp.set_sender_proto_addr(msg.sender_ip);
    arp.set_target_hw_addr(msg.target_mac.to_pnet());
    arp.set_target_proto_addr(msg.target_ip);
    Some(ARP_FRAME)
}

/// Writes a neighbour advertisement for `msg.target` with `msg.flags` and
/// the target link-layer option `msg.link_addr` (required) into `buf` (at
/// least [`ADVERT_FRAME`] bytes), hop limit 255, checksum set. Returns the
/// bytes written, or `None` when `buf` is too short or the option missing.
pub fn write_advert(buf: &mut [u8], msg: &Neighbor) -> Option<usize> {
    msg.link_addr?;
    write_neighbor(buf, msg, true)
}

/// Writes a neighbour solicitation (with the source link-layer option when
/// `msg.link_addr` is set) into `buf`: for tests and probes. Returns the
/// bytes written.
pub fn write_solicit(buf: &mut [u8], msg: &Neighbor) -> Option<usize> {
    write_neighbor(buf, msg, false)
}

/// Writes an advertisement (`advert`, with `msg.flags`) or a solicitation,
/// with the target (2) or source (1) link-layer option when `msg.link_addr`
/// is set.
fn write_neighbor(buf: &mut [u8], msg: &Neighbor, advert: bool) -> Option<usize> {
    let options = if msg.link_addr.is_some() { 8 } else { 0 };
    let total = ETH + IPV6 + ND + options;
    let frame = buf.get_mut(..total)?;
    {
        let mut eth = MutableEthernetPacket::new(&mut frame[..])?;
        eth.set_destination(msg.eth_dst.to_pnet());
        eth.set_source(msg.eth_src.to_pnet());
        eth.set_ethertype(EtherTypes::Ipv6);
    }
    {
        let mut ip = MutableIpv6Packet::new(&mut frame[ETH..])?;
        ip.set_version(6);
        ip.set_traffic_class(0);
        ip.set_flow_label(0);
        ip.set_payload_length((ND + options) as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(msg.ip_src);
        ip.set_destination(msg.ip_dst);
    }
    let icmp = &mut frame[ETH + IPV6..];
    icmp[0] = match advert {
        true => Icmpv6Types::NeighborAdvert.0,
        false => Icmpv6Types::NeighborSolicit.0,
    };
    icmp[1..8].fill(0);
    if advert {
        icmp[4] = msg.flags;
    }
    icmp[8..24].copy_from_slice(&msg.target.octets());
    if let Some(mac) = msg.link_addr {
        icmp[24] = if advert { 2 } else { 1 };
        icmp[25] = 1;
        icmp[26..32].copy_from_slice(&mac.0);
    }
    let sum = pnet_packet::icmpv6::checksum(&Icmpv6Packet::new(&icmp[..])?, &msg.ip_src, &msg.ip_dst);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

/// The solicited-node multicast address of `ip` (RFC 4291 §2.7.1): where
/// solicitations for it are sent, the group to join per owned address.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}
