//! UPDATE (RFC 4271 §4.3) as a borrowed view: withdrawn routes, path
//! attributes and NLRI, framed and checked once, then read through
//! iterators without allocation. Attribute errors are classified as RFC
//! 7606 asks (reset the session, treat the UPDATE as a withdrawal, or
//! discard the attribute).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::NotificationCode;
use crate::header::{MessageType, write_header};

/// Why an UPDATE, or one of its attributes, does not decode, and what RFC
/// 7606 says to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The lengths do not add up, or a prefix is malformed: the session
    /// must be reset with this NOTIFICATION.
    #[error("malformed UPDATE ({code:?}): the session is reset")]
    Reset {
        /// The NOTIFICATION to send.
        code: NotificationCode,
    },
    /// An attribute is malformed in a way that leaves the NLRI readable:
    /// every route of the UPDATE is to be taken as withdrawn.
    #[error("attribute {attribute} malformed: the UPDATE's routes count as withdrawn")]
    TreatAsWithdraw {
        /// The attribute's type code.
        attribute: u8,
    },
    /// An attribute that does not matter to the routes is malformed: it
    /// is dropped, the rest kept.
    #[error("attribute {attribute} malformed: discarded")]
    Discard {
        /// The attribute's type code.
        attribute: u8,
    },
}

/// UPDATE Message Error: Malformed Attribute List.
const MALFORMED_ATTRIBUTES: NotificationCode = NotificationCode::new(3, 1);
/// UPDATE Message Error: Invalid Network Field.
const INVALID_NETWORK: NotificationCode = NotificationCode::new(3, 10);

/// A received UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update<'a> {
    withdrawn: &'a [u8],
    attributes: &'a [u8],
    nlri: &'a [u8],
}

impl<'a> Update<'a> {
    /// Frames an UPDATE's body (the message without its header): the
    /// three parts' lengths, every prefix and every attribute's framing
    /// are checked here, so the iterators below cannot fail.
    #[inline]
    pub fn decode(body: &'a [u8]) -> Result<Self, UpdateError> {
        let reset = |code| UpdateError::Reset { code };
        let w = body.get(..2).ok_or(reset(MALFORMED_ATTRIBUTES))?;
        let w = usize::from(u16::from_be_bytes([w[0], w[1]]));
        let withdrawn = body.get(2..2 + w).ok_or(reset(MALFORMED_ATTRIBUTES))?;
        let rest = &body[2 + w..];
        let a = rest.get(..2).ok_or(reset(MALFORMED_ATTRIBUTES))?;
        let a = usize::from(u16::from_be_bytes([a[0], a[1]]));
        let attributes = rest.get(2..2 + a).ok_or(reset(MALFORMED_ATTRIBUTES))?;
        let nlri = &rest[2 + a..];
        if !prefixes_ok(withdrawn, 32) || !prefixes_ok(nlri, 32) {
            return Err(reset(INVALID_NETWORK));
        }
        if !attributes_ok(attributes) {
            return Err(reset(MALFORMED_ATTRIBUTES));
        }
        Ok(Self {
            withdrawn,
            attributes,
            nlri,
        })
    }

    /// The IPv4 routes withdrawn (outside MP_UNREACH).
    #[inline]
    pub fn withdrawn(&self) -> impl Iterator<Item = Ipv4Net> + 'a {
        Prefixes(self.withdrawn).filter_map(|(len, bytes)| v4(len, bytes))
    }

    /// The IPv4 routes announced (outside MP_REACH).
    #[inline]
    pub fn nlri(&self) -> impl Iterator<Item = Ipv4Net> + 'a {
        Prefixes(self.nlri).filter_map(|(len, bytes)| v4(len, bytes))
    }

    /// The attributes as sent: flags, type code and value.
    #[inline]
    pub fn attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        Attributes(self.attributes).filter_map(Result::ok)
    }

    /// Whether this is an End-of-RIB marker (RFC 4724): for IPv4 an empty
    /// UPDATE, for another family an MP_UNREACH with nothing in it.
    pub fn end_of_rib(&self) -> Option<(u16, u8)> {
        if self.withdrawn.is_empty() && self.nlri.is_empty() {
            let mut attrs = self.attributes();
            return match (attrs.next(), attrs.next()) {
                (None, _) => Some((1, 1)),
                (Some(a), None) if a.code == MP_UNREACH && a.value.len() == 3 => {
                    Some((u16::from_be_bytes([a.value[0], a.value[1]]), a.value[2]))
                }
                _ => None,
            };
        }
        None
    }
}

impl Update<'_> {
    /// Checks the attributes as RFC 7606 says, returning the most severe
    /// verdict: a second MP_REACH or MP_UNREACH resets the session; a
    /// malformed ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES,
    /// LARGE_COMMUNITY, EXTENDED COMMUNITIES, ORIGINATOR_ID or CLUSTER_LIST
    /// makes the UPDATE a withdrawal; a malformed ATOMIC_AGGREGATE,
    /// AGGREGATOR, AS4_AGGREGATOR or AS4_PATH is discarded (each as
    /// [`crate::attributes::Attribute::decode`] reads it). `four_octet`: AS
    /// numbers in AS_PATH are 4 octets (the capability was exchanged).
    /// A second copy of any other attribute is ignored (§3 g), not an
    /// error.
    #[inline]
    pub fn check(&self, four_octet: bool) -> Result<(), UpdateError> {
        // The most severe verdict so far, ranked 1 (discard), 2 (treat as
        // withdraw), 3 (reset).
        let (mut worst, mut rank) = (None, 0u8);
        // Attribute codes below 64 seen, one bit each (every code checked
        // below is one of them; a repeat of another changes nothing).
        let mut seen = 0u64;
        for a in self.attributes() {
            let bit = 1u64.checked_shl(u32::from(a.code)).unwrap_or(0);
            let first = seen & bit == 0;
            seen |= bit;
            let verdict = match a.code {
                MP_REACH | MP_UNREACH if !first => Some(UpdateError::Reset {
                    code: MALFORMED_ATTRIBUTES,
                }),
                _ if !first => None,
                _ => crate::attributes::Attribute::decode(a, four_octet).err(),
            }
            .map(|v| {
                let r = match v {
                    UpdateError::Reset { .. } => 3,
                    UpdateError::TreatAsWithdraw { .. } => 2,
                    UpdateError::Discard { .. } => 1,
                };
                (r, v)
            });
            if let Some((r, v)) = verdict
                && r > rank
            {
                (worst, rank) = (Some(v), r);
            }
        }
        worst.map_or(Ok(()), Err)
    }
}

/// ATOMIC_AGGREGATE.
pub const ATOMIC_AGGREGATE: u8 = 6;
/// AGGREGATOR.
pub const AGGREGATOR: u8 = 7;

/// One attribute as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Flags: optional 0x80, transitive 0x40, partial 0x20, extended
    /// length 0x10.
    pub flags: u8,
    /// Type code.
    pub code: u8,
    /// Value.
    pub value: &'a [u8],
}

/// ORIGIN.
pub const ORIGIN: u8 = 1;
/// AS_PATH.
pub const AS_PATH: u8 = 2;
/// NEXT_HOP.
pub const NEXT_HOP: u8 = 3;
/// MULTI_EXIT_DISC.
pub const MED: u8 = 4;
/// LOCAL_PREF.
pub const LOCAL_PREF: u8 = 5;
/// COMMUNITIES (RFC 1997).
pub const COMMUNITIES: u8 = 8;
/// MP_REACH_NLRI (RFC 4760).
pub const MP_REACH: u8 = 14;
/// MP_UNREACH_NLRI (RFC 4760).
pub const MP_UNREACH: u8 = 15;
/// LARGE_COMMUNITY (RFC 8092).
pub const LARGE_COMMUNITIES: u8 = 32;

struct Attributes<'a>(&'a [u8]);

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<RawAttribute<'a>, ()>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0;
        if rest.is_empty() {
            return None;
        }
        let fail = |me: &mut Self| {
            me.0 = &[];
            Some(Err(()))
        };
        let (Some(&flags), Some(&code)) = (rest.first(), rest.get(1)) else {
            return fail(self);
        };
        let (head, len) = if flags & 0x10 != 0 {
            match rest.get(2..4) {
                Some(l) => (4, usize::from(u16::from_be_bytes([l[0], l[1]]))),
                None => return fail(self),
            }
        } else {
            match rest.get(2) {
                Some(l) => (3, usize::from(*l)),
                None => return fail(self),
            }
        };
        let Some(value) = rest.get(head..head + len) else {
            return fail(self);
        };
        self.0 = &rest[head + len..];
        Some(Ok(RawAttribute { flags, code, value }))
    }
}

/// Whether `field` is a well-formed run of attributes (flags, code,
/// length of one or two bytes, value).
#[inline]
fn attributes_ok(field: &[u8]) -> bool {
    let mut at = 0;
    while at < field.len() {
        let Some(&flags) = field.get(at) else { return false };
        let (head, len) = match flags & 0x10 {
            0 => match field.get(at + 2) {
                Some(&l) => (3, usize::from(l)),
                None => return false,
            },
            _ => match field.get(at + 2..at + 4) {
                Some(l) => (4, usize::from(u16::from_be_bytes([l[0], l[1]]))),
                None => return false,
            },
        };
        at += head + len;
    }
    at == field.len()
}

/// `(length, bytes)` per prefix of an NLRI field.
struct Prefixes<'a>(&'a [u8]);

impl<'a> Iterator for Prefixes<'a> {
    type Item = (u8, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (&len, rest) = self.0.split_first()?;
        let n = usize::from(len).div_ceil(8);
        let Some(bytes) = rest.get(..n) else {
            self.0 = &[];
            return None;
        };
        self.0 = &rest[n..];
        Some((len, bytes))
    }
}

/// Whether `field` is a well-formed run of prefixes of at most `max` bits.
#[inline]
fn prefixes_ok(field: &[u8], max: u8) -> bool {
    // Service routes are host routes: a run of /32s is checked by stride.
    if max == 32 && field.len().is_multiple_of(5) && field.chunks_exact(5).all(|c| c[0] == 32) {
        return true;
    }
    let mut rest = field;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).div_ceil(8);
        if len > max || tail.len() < n {
            return false;
        }
        rest = &tail[n..];
    }
    true
}

#[inline]
fn v4(len: u8, bytes: &[u8]) -> Option<Ipv4Net> {
    if let (32, [a, b, c, d]) = (len, bytes) {
        return Ipv4Net::new(Ipv4Addr::new(*a, *b, *c, *d), 32).ok();
    }
    let word = match *bytes {
        [] => 0,
        [a] => u32::from_be_bytes([a, 0, 0, 0]),
        [a, b] => u32::from_be_bytes([a, b, 0, 0]),
        [a, b, c] => u32::from_be_bytes([a, b, c, 0]),
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => return None,
    };
    // Host bits past the length are cleared (a prefix is its network).
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Net::new(Ipv4Addr::from(word & mask), len).ok()
}

fn v6(len: u8, bytes: &[u8]) -> Option<Ipv6Net> {
    let mut a = [0u8; 16];
    a.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Ipv6Net::new(Ipv6Addr::from(a), len).ok().map(|n| n.trunc())
}

/// The IPv6 unicast routes of an MP_REACH_NLRI (RFC 4760 §3, RFC 2545).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MpReachV6<'a> {
    /// The global next hop.
    pub next_hop: Ipv6Addr,
    /// The link-local next hop, when the next hop is 32 bytes.
    pub link_local: Option<Ipv6Addr>,
    nlri: &'a [u8],
}

impl<'a> MpReachV6<'a> {
    /// The prefixes announced.
    pub fn prefixes(&self) -> impl Iterator<Item = Ipv6Net> + 'a {
        Prefixes(self.nlri).filter_map(|(l, b)| v6(l, b))
    }
}

/// Reads an MP_REACH_NLRI's value: its IPv6 unicast routes; another
/// address family gives `Ok(None)`; a malformed one, a session reset (RFC
/// 7606 §7.11).
pub fn mp_reach_v6(value: &[u8]) -> Result<Option<MpReachV6<'_>>, UpdateError> {
    let reset = UpdateError::Reset {
        code: MALFORMED_ATTRIBUTES,
    };
    let head = value.get(..4).ok_or(reset)?;
    let (afi, safi, nh_len) = (u16::from_be_bytes([head[0], head[1]]), head[2], usize::from(head[3]));
    let nh = value.get(4..4 + nh_len).ok_or(reset)?;
    // One reserved byte, then the NLRI.
    let nlri = value.get(4 + nh_len + 1..).ok_or(reset)?;
    if (afi, safi) != (2, 1) {
        return Ok(None);
    }
    let addr = |b: &[u8]| <[u8; 16]>::try_from(b).map(Ipv6Addr::from).map_err(|_| reset);
    let (next_hop, link_local) = match nh_len {
        16 => (addr(nh)?, None),
        32 => (addr(&nh[..16])?, Some(addr(&nh[16..])?)),
        _ => return Err(reset),
    };
    if !prefixes_ok(nlri, 128) {
        return Err(reset);
    }
    Ok(Some(MpReachV6 {
        next_hop,
        link_local,
        nlri,
    }))
}

/// Reads an MP_UNREACH_NLRI's value: the IPv6 unicast routes it
/// withdraws (none for an End-of-RIB); another address family gives
/// `Ok(None)`; a malformed one, a session reset (RFC 7606 §7.12).
pub fn mp_unreach_v6(value: &[u8]) -> Result<Option<impl Iterator<Item = Ipv6Net> + '_>, UpdateError> {
    let reset = UpdateError::Reset {
        code: MALFORMED_ATTRIBUTES,
    };
    let head = value.get(..3).ok_or(reset)?;
    if (u16::from_be_bytes([head[0], head[1]]), head[2]) != (2, 1) {
        return Ok(None);
    }
    let withdrawn = &value[3..];
    if !prefixes_ok(withdrawn, 128) {
        return Err(reset);
    }
    Ok(Some(Prefixes(withdrawn).filter_map(|(l, b)| v6(l, b))))
}

/// The origin of a route (ORIGIN's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// IGP (0).
    Igp,
    /// EGP (1).
    Egp,
    /// INCOMPLETE (2).
    Incomplete,
}

/// The attributes lb announces a Service address with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Announce {
    /// ORIGIN (MetalLB sends IGP).
    pub origin: Origin,
    /// The AS path: this speaker's AS for eBGP, empty for iBGP.
    pub as_path: Vec<u32>,
    /// The next hop. IPv4 routes need an IPv4 one (NEXT_HOP); IPv6 routes
    /// take an IPv6 one in MP_REACH_NLRI, or an IPv4 one sent
    /// IPv4-mapped (`::ffff:a.b.c.d`, as FRR and GoBGP do on IPv4
    /// sessions).
    pub next_hop: IpAddr,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// Standard communities.
    pub communities: Vec<u32>,
    /// Large communities.
    pub large_communities: Vec<[u32; 3]>,
}

/// A prefix as NLRI carries it.
trait Nlri {
    /// Its length in bits.
    fn bits(&self) -> u8;
    /// Its address's bytes.
    fn bytes(&self) -> impl AsRef<[u8]>;
}

impl Nlri for Ipv4Net {
    #[inline]
    fn bits(&self) -> u8 {
        self.prefix_len()
    }
    #[inline]
    fn bytes(&self) -> impl AsRef<[u8]> {
        self.network().octets()
    }
}

impl Nlri for Ipv6Net {
    #[inline]
    fn bits(&self) -> u8 {
        self.prefix_len()
    }
    #[inline]
    fn bytes(&self) -> impl AsRef<[u8]> {
        self.network().octets()
    }
}

/// The IPv6 unicast AFI and SAFI, as MP attributes start.
const IPV6_UNICAST_WIRE: [u8; 3] = [0, 2, 1];

impl Announce {
    /// The bytes [`Announce::put_attributes`] writes.
    fn attributes_len(&self, next_hop: bool) -> usize {
        let head = |len: usize| if len > 255 { 4 } else { 3 };
        let sized = |len: usize| head(len) + len;
        let path: usize = self.as_path.chunks(255).map(|c| 2 + 4 * c.len()).sum();
        let mut n = sized(1) + sized(path);
        if next_hop && self.next_hop.is_ipv4() {
            n += sized(4);
        }
        if self.local_pref.is_some() {
            n += sized(4);
        }
        if !self.communities.is_empty() {
            n += sized(4 * self.communities.len());
        }
        if !self.large_communities.is_empty() {
            n += sized(12 * self.large_communities.len());
        }
        n
    }

    /// Appends the attributes every route of this announcement carries,
    /// NEXT_HOP included when `next_hop` (IPv4 routes), straight into
    /// `out` (no allocation).
    fn put_attributes(&self, out: &mut Vec<u8>, next_hop: bool) {
        let head = |out: &mut Vec<u8>, flags: u8, code: u8, len: usize| match u8::try_from(len) {
            Ok(l) => out.extend_from_slice(&[flags, code, l]),
            Err(_) => {
                out.extend_from_slice(&[flags | 0x10, code]);
                out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            }
        };
        let origin = match self.origin {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        };
        out.extend_from_slice(&[0x40, ORIGIN, 1, origin]);
        let path: usize = self.as_path.chunks(255).map(|c| 2 + 4 * c.len()).sum();
        head(out, 0x40, AS_PATH, path);
        for chunk in self.as_path.chunks(255) {
            // AS_SEQUENCE, then the count.
            out.extend_from_slice(&[2, u8::try_from(chunk.len()).unwrap_or(u8::MAX)]);
            for asn in chunk {
                out.extend_from_slice(&asn.to_be_bytes());
            }
        }
        if let (true, IpAddr::V4(nh)) = (next_hop, self.next_hop) {
            out.extend_from_slice(&[0x40, NEXT_HOP, 4]);
            out.extend_from_slice(&nh.octets());
        }
        if let Some(lp) = self.local_pref {
            out.extend_from_slice(&[0x40, LOCAL_PREF, 4]);
            out.extend_from_slice(&lp.to_be_bytes());
        }
        if !self.communities.is_empty() {
            head(out, 0xc0, COMMUNITIES, 4 * self.communities.len());
            for c in &self.communities {
                out.extend_from_slice(&c.to_be_bytes());
            }
        }
        if !self.large_communities.is_empty() {
            head(out, 0xc0, LARGE_COMMUNITIES, 12 * self.large_communities.len());
            for c in self.large_communities.iter().flatten() {
                out.extend_from_slice(&c.to_be_bytes());
            }
        }
    }

    /// These attributes encoded once, for writing many UPDATEs with them.
    pub fn encode(&self) -> Encoded {
        let mut v4 = Vec::with_capacity(self.attributes_len(true));
        self.put_attributes(&mut v4, true);
        let mut v6 = Vec::with_capacity(self.attributes_len(false));
        self.put_attributes(&mut v6, false);
        Encoded {
            v4: self.next_hop.is_ipv4().then_some(v4),
            v6,
            next_hop_v6: match self.next_hop {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            },
        }
    }

    /// Appends UPDATEs announcing the IPv4 `prefixes` with these
    /// attributes to `out`, as many prefixes per message as fit in `max`
    /// bytes (MetalLB sends one each). See [`Encoded::write`]; to write
    /// many times with the same attributes, [`Announce::encode`] them once.
    pub fn write(&self, prefixes: &[Ipv4Net], max: usize, out: &mut Vec<u8>) -> usize {
        self.encode().write(prefixes, max, out)
    }

    /// Appends UPDATEs announcing the IPv6 `prefixes` in MP_REACH_NLRI.
    /// See [`Encoded::write_v6`].
    pub fn write_v6(&self, prefixes: &[Ipv6Net], max: usize, out: &mut Vec<u8>) -> usize {
        self.encode().write_v6(prefixes, max, out)
    }
}

/// An [`Announce`]'s attributes, encoded: writing UPDATEs with them then
/// allocates nothing and copies the attributes whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// With NEXT_HOP, for IPv4 routes; `None` with an IPv6 next hop.
    v4: Option<Vec<u8>>,
    /// Without NEXT_HOP, for IPv6 routes (MP_REACH_NLRI carries it).
    v6: Vec<u8>,
    next_hop_v6: Ipv6Addr,
}

impl Encoded {
    /// Appends UPDATEs announcing the IPv4 `prefixes` to `out`, as many
    /// prefixes per message as fit in `max` bytes. 4-octet AS numbers in
    /// AS_PATH (the capability is always negotiated by lb). Returns how
    /// many messages were written: none when the next hop is IPv6 (IPv4
    /// routes over an IPv6 next hop need RFC 8950, which lb does not
    /// offer).
    #[inline]
    pub fn write(&self, prefixes: &[Ipv4Net], max: usize, out: &mut Vec<u8>) -> usize {
        let Some(attrs) = &self.v4 else { return 0 };
        let room = max.saturating_sub(crate::HEADER_LEN + 4 + attrs.len());
        let attrs_len = u16::try_from(attrs.len()).unwrap_or(u16::MAX).to_be_bytes();
        let mut written = 0;
        let mut left = prefixes;
        while !left.is_empty() {
            let (take, size) = fitting(left, room);
            let [l0, l1] = u16::try_from(crate::HEADER_LEN + 4 + attrs.len() + size)
                .unwrap_or(u16::MAX)
                .to_be_bytes();
            // Marker, length, type, no withdrawals, the attributes' length.
            let mut head = [0xff; crate::HEADER_LEN + 4];
            head[16..].copy_from_slice(&[l0, l1, 2, 0, 0, attrs_len[0], attrs_len[1]]);
            out.extend_from_slice(&head);
            out.extend_from_slice(attrs);
            put_prefixes(&left[..take], out);
            left = &left[take..];
            written += 1;
        }
        written
    }

    /// Appends UPDATEs announcing the IPv6 `prefixes` in MP_REACH_NLRI
    /// (RFC 4760, the first attribute as RFC 7606 §5.1 asks; no NEXT_HOP
    /// attribute), as many per message as fit in `max` bytes. Returns how
    /// many messages were written.
    pub fn write_v6(&self, prefixes: &[Ipv6Net], max: usize, out: &mut Vec<u8>) -> usize {
        // MP_REACH_NLRI with an extended length: flags, code, length,
        // AFI/SAFI, next hop length and address, reserved.
        let mp_fixed = 4 + 3 + 1 + 16 + 1;
        let room = max.saturating_sub(crate::HEADER_LEN + 4 + mp_fixed + self.v6.len());
        let mut written = 0;
        let mut left = prefixes;
        while !left.is_empty() {
            let (take, size) = fitting(left, room);
            write_header(out, MessageType::Update, 4 + mp_fixed + self.v6.len() + size);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(
                &u16::try_from(mp_fixed + self.v6.len() + size)
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(&[0x90, MP_REACH]);
            out.extend_from_slice(&u16::try_from(mp_fixed - 4 + size).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&IPV6_UNICAST_WIRE);
            out.push(16);
            out.extend_from_slice(&self.next_hop_v6.octets());
            out.push(0);
            put_prefixes(&left[..take], out);
            out.extend_from_slice(&self.v6);
            left = &left[take..];
            written += 1;
        }
        written
    }
}

/// Appends UPDATEs withdrawing the IPv4 `prefixes` (as many per message as
/// fit in `max` bytes) to `out`; returns how many.
pub fn write_withdrawals(prefixes: &[Ipv4Net], max: usize, out: &mut Vec<u8>) -> usize {
    let mut written = 0;
    let mut left = prefixes;
    while !left.is_empty() {
        let (take, size) = fitting(left, max - (crate::HEADER_LEN + 4).min(max));
        write_header(out, MessageType::Update, 4 + size);
        out.extend_from_slice(&u16::try_from(size).unwrap_or(u16::MAX).to_be_bytes());
        put_prefixes(&left[..take], out);
        out.extend_from_slice(&[0, 0]);
        left = &left[take..];
        written += 1;
    }
    written
}

/// Appends UPDATEs withdrawing the IPv6 `prefixes` in MP_UNREACH_NLRI (as
/// many per message as fit in `max` bytes) to `out`; returns how many.
pub fn write_withdrawals_v6(prefixes: &[Ipv6Net], max: usize, out: &mut Vec<u8>) -> usize {
    // Withdrawn length, attributes length, MP_UNREACH's flags, code,
    // extended length and AFI/SAFI.
    let fixed = crate::HEADER_LEN + 2 + 2 + 4 + 3;
    let mut written = 0;
    let mut left = prefixes;
    while !left.is_empty() {
        let (take, size) = fitting(left, max - fixed.min(max));
        write_header(out, MessageType::Update, 2 + 2 + 4 + 3 + size);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&u16::try_from(4 + 3 + size).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&[0x90, MP_UNREACH]);
        out.extend_from_slice(&u16::try_from(3 + size).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&IPV6_UNICAST_WIRE);
        put_prefixes(&left[..take], out);
        left = &left[take..];
        written += 1;
    }
    written
}

/// How many of `prefixes`, from the first, fit in `room` bytes (at least
/// one, so that every call makes progress), and the bytes they take.
#[inline]
fn fitting<P: Nlri>(prefixes: &[P], room: usize) -> (usize, usize) {
    let (mut take, mut size) = (0, 0);
    for p in prefixes {
        let n = 1 + usize::from(p.bits()).div_ceil(8);
        if size + n > room && take > 0 {
            break;
        }
        size += n;
        take += 1;
    }
    (take, size)
}

/// Appends `prefixes` in NLRI form: a length, then as many bytes as it
/// covers.
#[inline]
fn put_prefixes<P: Nlri>(prefixes: &[P], out: &mut Vec<u8>) {
    for p in prefixes {
        let n = usize::from(p.bits()).div_ceil(8);
        out.push(p.bits());
        out.extend_from_slice(&p.bytes().as_ref()[..n]);
    }
}

/// Appends the IPv4 unicast End-of-RIB marker (RFC 4724: an empty UPDATE).
pub fn write_end_of_rib(out: &mut Vec<u8>) {
    write_header(out, MessageType::Update, 4);
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// Appends the IPv6 unicast End-of-RIB marker (RFC 4724: an UPDATE with
/// only an empty MP_UNREACH_NLRI).
pub fn write_end_of_rib_v6(out: &mut Vec<u8>) {
    write_header(out, MessageType::Update, 4 + 6);
    out.extend_from_slice(&[0, 0, 0, 6, 0x80, MP_UNREACH, 3]);
    out.extend_from_slice(&IPV6_UNICAST_WIRE);
}
