//! Addresses as numbers: families, inclusive ranges, and the pool entry syntax
//! (`CIDR` or `first-last`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    /// Index into per-family arrays: 0 for IPv4, 1 for IPv6.
    pub fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub(crate) fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_num`].
pub(crate) fn from_num(family: Family, n: u128) -> IpAddr {
    match family {
        // Values of a V4 range never exceed u32::MAX.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Whether an IPv4 address ends in `.0` or `.255`, which some old firmware
/// mistakes for a network or broadcast address (MetalLB's `avoidBuggyIPs`).
pub fn is_buggy(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if matches!(a.octets()[3], 0 | 255))
}

pub(crate) fn is_buggy_num(family: Family, n: u128) -> bool {
    family == Family::V4 && matches!(n & 0xff, 0 | 255)
}

/// How many `.0`/`.255` addresses lie in `[first, last]` (IPv4 numbers).
pub(crate) fn buggy_count(first: u128, last: u128) -> u128 {
    // Buggy addresses in [0, n]: two per complete /24 before n's, plus .0 of
    // n's /24, plus its .255 when n is it.
    let upto = |n: u128| (n / 256) * 2 + 1 + u128::from(n % 256 == 255);
    upto(last) - if first == 0 { 0 } else { upto(first - 1) }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrRange {
    family: Family,
    first: u128,
    last: u128,
}

impl AddrRange {
    /// The range `first..=last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<Self, AddressError> {
        if Family::of(first) != Family::of(last) {
            return Err(AddressError::MixedFamilies);
        }
        let (a, b) = (to_num(first), to_num(last));
        if a > b {
            return Err(AddressError::Reversed { first, last });
        }
        Ok(Self {
            family: Family::of(first),
            first: a,
            last: b,
        })
    }

    /// All addresses of a network (host bits are ignored, as MetalLB does).
    pub fn from_net(net: IpNet) -> Self {
        let net = net.trunc();
        let (first, last) = (net.network(), net.broadcast());
        Self {
            family: Family::of(first),
            first: to_num(first),
            last: to_num(last),
        }
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        from_num(self.family, self.first)
    }

    /// The last address.
    pub fn last(&self) -> IpAddr {
        from_num(self.family, self.last)
    }

    pub(crate) fn first_num(&self) -> u128 {
        self.first
    }

    pub(crate) fn last_num(&self) -> u128 {
        self.last
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_num(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &AddrRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    /// Number of addresses, saturating at `u128::MAX` for `::/0`.
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of addresses usable when `avoid_buggy` is set: `.0` and `.255`
    /// IPv4 addresses do not count.
    pub fn usable(&self, avoid_buggy: bool) -> u128 {
        if avoid_buggy && self.family == Family::V4 {
            self.len() - buggy_count(self.first, self.last)
        } else {
            self.len()
        }
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

/// Parses one entry of `spec.addresses`: a CIDR (`192.168.1.0/24`,
/// `fc00::/64`) or a range (`192.168.1.240-192.168.1.250`). A bare address is
/// rejected with a hint, as MetalLB does.
impl FromStr for AddrRange {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.contains('/') {
            return IpNet::from_str(s)
                .map(AddrRange::from_net)
                .map_err(|_| AddressError::InvalidCidr(s.to_owned()));
        }
        if let Some((a, b)) = s.split_once('-') {
            let parse =
                |t: &str| IpAddr::from_str(t.trim()).map_err(|_| AddressError::InvalidRangeEnd(t.trim().to_owned()));
            return AddrRange::new(parse(a)?, parse(b)?);
        }
        match IpAddr::from_str(s) {
            Ok(ip) => Err(AddressError::BareAddress(ip)),
            Err(_) => Err(AddressError::Unrecognized(s.to_owned())),
        }
    }
}

/// Why an address entry is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The entry is empty.
    #[error("empty address entry; expected a CIDR like 192.168.1.0/24 or a range like 192.168.1.10-192.168.1.20")]
    Empty,
    /// A single address without a prefix length.
    #[error("bare address {0} is not allowed; write a single address as {0}/{len} or {0}-{0}", len = if .0.is_ipv4() { 32 } else { 128 })]
    BareAddress(IpAddr),
    /// Text with a `/` that is not a CIDR.
    #[error("invalid CIDR {0:?}; expected an address and a prefix length like 192.168.1.0/24 or fc00::/64")]
    InvalidCidr(String),
    /// One end of an `a-b` range is not an address.
    #[error("invalid range end {0:?}; expected an IPv4 or IPv6 address")]
    InvalidRangeEnd(String),
    /// The two ends of a range are of different families.
    #[error("range mixes IPv4 and IPv6; both ends must be of one family")]
    MixedFamilies,
    /// The range starts after it ends.
    #[error("range start {first} is after its end {last}")]
    Reversed {
        /// The given start.
        first: IpAddr,
        /// The given end.
        last: IpAddr,
    },
    /// Neither a CIDR, a range nor an address.
    #[error("{0:?} is neither a CIDR (192.168.1.0/24) nor a range (192.168.1.10-192.168.1.20)")]
    Unrecognized(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Result<AddrRange, AddressError> {
        s.parse()
    }

    #[test]
    fn cidr_masks_host_bits_like_metallb() {
        let a = r("192.168.1.5/24").unwrap();
        assert_eq!(a.first().to_string(), "192.168.1.0");
        assert_eq!(a.last().to_string(), "192.168.1.255");
        assert_eq!(a.len(), 256);
    }

    #[test]
    fn range_with_spaces() {
        let a = r(" 192.168.1.240 - 192.168.1.250 ").unwrap();
        assert_eq!(a.len(), 11);
        assert!(a.contains("192.168.1.245".parse().unwrap()));
        assert!(!a.contains("192.168.1.251".parse().unwrap()));
    }

    #[test]
    fn bare_address_rejected_with_hint() {
        let e = r("10.0.0.1").unwrap_err();
        assert_eq!(e, AddressError::BareAddress("10.0.0.1".parse().unwrap()));
        assert!(e.to_string().contains("10.0.0.1/32"));
        assert!(r("fc00::1").unwrap_err().to_string().contains("fc00::1/128"));
    }

    #[test]
    fn bad_entries() {
        assert_eq!(r(""), Err(AddressError::Empty));
        assert!(matches!(r("10.0.0.0/33"), Err(AddressError::InvalidCidr(_))));
        assert!(matches!(r("10.0.0.9-10.0.0.1"), Err(AddressError::Reversed { .. })));
        assert_eq!(r("10.0.0.1-fc00::1"), Err(AddressError::MixedFamilies));
        assert!(matches!(r("10.0.0.1-x"), Err(AddressError::InvalidRangeEnd(_))));
        assert!(matches!(r("hello"), Err(AddressError::Unrecognized(_))));
    }

    #[test]
    fn whole_v6_space_does_not_overflow() {
        let a = r("::/0").unwrap();
        assert_eq!(a.len(), u128::MAX);
    }

    #[test]
    fn buggy_counting() {
        assert_eq!(r("10.0.0.0/24").unwrap().usable(true), 254);
        assert_eq!(r("10.0.0.0/23").unwrap().usable(true), 508);
        assert_eq!(r("10.0.0.1-10.0.0.254").unwrap().usable(true), 254);
        assert_eq!(r("10.0.0.255-10.0.1.0").unwrap().usable(true), 0);
        assert_eq!(r("10.0.0.0/31").unwrap().usable(true), 1);
        assert_eq!(r("10.0.0.0/31").unwrap().usable(false), 2);
        assert_eq!(r("fc00::/120").unwrap().usable(true), 256);
        // Brute force on a few odd ranges.
        for (a, b) in [(0u32, 1000u32), (255, 256), (3, 770), (511, 512)] {
            let want = (a..=b).filter(|n| matches!(n & 0xff, 0 | 255)).count() as u128;
            assert_eq!(buggy_count(a as u128, b as u128), want, "{a}-{b}");
        }
    }
}
