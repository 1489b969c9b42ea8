//! Path attribute values, typed: [`Attribute`] reads one received
//! attribute ([`RawAttribute`]) as a borrowed view, without allocation
//! (RFC 4271 §5, RFC 1997 communities, RFC 4360 extended communities, RFC
//! 4456 ORIGINATOR_ID and CLUSTER_LIST, RFC 6793 AS4_PATH and
//! AS4_AGGREGATOR, RFC 8092 large communities); [`AttributeValue`] is the
//! owned form, which writes itself. A value that does not fit its type is
//! an [`UpdateError`] with RFC 7606's verdict; an attribute lb does not
//! know is kept whole ([`Attribute::Other`]), as optional transitive
//! attributes must be. [`merge_as4_path`] rebuilds the path a 2-octet
//! speaker passed on (RFC 6793 §4.2.3).

use std::net::Ipv4Addr;

use crate::update::{
    AGGREGATOR, AS_PATH, ATOMIC_AGGREGATE, COMMUNITIES, LARGE_COMMUNITIES, LOCAL_PREF, MED, MP_REACH, MP_UNREACH,
    NEXT_HOP, ORIGIN, Origin, RawAttribute, UpdateError,
};

/// ORIGINATOR_ID (RFC 4456).
pub const ORIGINATOR_ID: u8 = 9;
/// CLUSTER_LIST (RFC 4456).
pub const CLUSTER_LIST: u8 = 10;
/// EXTENDED COMMUNITIES (RFC 4360).
pub const EXTENDED_COMMUNITIES: u8 = 16;
/// AS4_PATH (RFC 6793).
pub const AS4_PATH: u8 = 17;
/// AS4_AGGREGATOR (RFC 6793).
pub const AS4_AGGREGATOR: u8 = 18;

/// The kind of an AS_PATH segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// AS_SET (1): unordered, counts as one AS.
    Set,
    /// AS_SEQUENCE (2).
    Sequence,
    /// AS_CONFED_SEQUENCE (3, RFC 5065): counts as none.
    ConfedSequence,
    /// AS_CONFED_SET (4, RFC 5065): counts as none.
    ConfedSet,
}

impl SegmentKind {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Set,
            2 => Self::Sequence,
            3 => Self::ConfedSequence,
            4 => Self::ConfedSet,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::Set => 1,
            Self::Sequence => 2,
            Self::ConfedSequence => 3,
            Self::ConfedSet => 4,
        }
    }
}

/// An AS path as received: segments of 2- or 4-octet AS numbers, checked
/// when decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsPath<'a> {
    bytes: &'a [u8],
    width: usize,
}

impl<'a> AsPath<'a> {
    /// The segments, in order: their kind and AS numbers.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentKind, impl Iterator<Item = u32> + 'a)> + 'a {
        let width = self.width;
        let mut rest = self.bytes;
        std::iter::from_fn(move || {
            let (&kind, tail) = rest.split_first()?;
            let (&count, tail) = tail.split_first()?;
            let n = usize::from(count) * width;
            let asns = tail.get(..n)?;
            rest = &tail[n..];
            let kind = SegmentKind::from_code(kind)?;
            Some((kind, asns.chunks_exact(width).map(asn)))
        })
    }

    /// The path length as route selection counts it (RFC 4271 §9.1.2.2:
    /// a set counts one; confederation segments none).
    pub fn len(&self) -> usize {
        self.segments()
            .map(|(kind, asns)| match kind {
                SegmentKind::Sequence => asns.count(),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .sum()
    }

    /// Whether the path holds no AS.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The owned form.
    pub fn to_value(&self) -> Vec<(SegmentKind, Vec<u32>)> {
        self.segments().map(|(k, asns)| (k, asns.collect())).collect()
    }
}

fn asn(b: &[u8]) -> u32 {
    match *b {
        [a, b] => u32::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn word(b: &[u8]) -> u32 {
    match *b {
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// One received path attribute, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH, with AS numbers as wide as the session negotiated.
    AsPath(AsPath<'a>),
    /// NEXT_HOP.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR: the AS and address that aggregated.
    Aggregator(u32, Ipv4Addr),
    /// COMMUNITIES, 4 bytes each.
    Communities(&'a [u8]),
    /// ORIGINATOR_ID.
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST, 4 bytes each.
    ClusterList(&'a [u8]),
    /// MP_REACH_NLRI, as sent (see [`crate::update::mp_reach_v6`]).
    MpReach(&'a [u8]),
    /// MP_UNREACH_NLRI, as sent (see [`crate::update::mp_unreach_v6`]).
    MpUnreach(&'a [u8]),
    /// EXTENDED COMMUNITIES, 8 bytes each.
    ExtendedCommunities(&'a [u8]),
    /// AS4_PATH (always 4-octet AS numbers).
    As4Path(AsPath<'a>),
    /// AS4_AGGREGATOR.
    As4Aggregator(u32, Ipv4Addr),
    /// LARGE_COMMUNITY, 12 bytes each.
    LargeCommunities(&'a [u8]),
    /// Any other attribute, kept whole.
    Other(RawAttribute<'a>),
}

/// The AS path checks of RFC 4271 §6.3 and RFC 7606 §7.2: known segment
/// kinds, non-empty segments, exactly filling the value.
fn as_path(value: &[u8], width: usize) -> Option<AsPath<'_>> {
    let mut rest = value;
    while let [kind, count, tail @ ..] = rest {
        let n = usize::from(*count) * width;
        if SegmentKind::from_code(*kind).is_none() || *count == 0 || tail.len() < n {
            return None;
        }
        rest = &tail[n..];
    }
    rest.is_empty().then_some(AsPath { bytes: value, width })
}

fn address(b: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
}

impl<'a> Attribute<'a> {
    /// Reads `raw`; `four_octet`: the session negotiated 4-octet AS
    /// numbers (AS_PATH and AGGREGATOR carry them). A malformed value is
    /// RFC 7606's verdict: the UPDATE treated as a withdrawal (ORIGIN,
    /// AS_PATH, NEXT_HOP, MED, LOCAL_PREF, the communities, ORIGINATOR_ID,
    /// CLUSTER_LIST) or the attribute discarded (ATOMIC_AGGREGATE, the
    /// aggregators, AS4_PATH: RFC 6793 §6).
    pub fn decode(raw: RawAttribute<'a>, four_octet: bool) -> Result<Self, UpdateError> {
        let v = raw.value;
        let withdraw = UpdateError::TreatAsWithdraw { attribute: raw.code };
        let discard = UpdateError::Discard { attribute: raw.code };
        let width = if four_octet { 4 } else { 2 };
        Ok(match raw.code {
            ORIGIN => match v {
                [0] => Self::Origin(Origin::Igp),
                [1] => Self::Origin(Origin::Egp),
                [2] => Self::Origin(Origin::Incomplete),
                _ => return Err(withdraw),
            },
            AS_PATH => Self::AsPath(as_path(v, width).ok_or(withdraw)?),
            NEXT_HOP => Self::NextHop(address(v).ok_or(withdraw)?),
            MED if v.len() == 4 => Self::Med(word(v)),
            LOCAL_PREF if v.len() == 4 => Self::LocalPref(word(v)),
            MED | LOCAL_PREF => return Err(withdraw),
            ATOMIC_AGGREGATE if v.is_empty() => Self::AtomicAggregate,
            ATOMIC_AGGREGATE => return Err(discard),
            AGGREGATOR | AS4_AGGREGATOR => {
                let w = if raw.code == AS4_AGGREGATOR { 4 } else { width };
                if v.len() != w + 4 {
                    return Err(discard);
                }
                let (a, ip) = (asn(&v[..w]), address(&v[w..]).ok_or(discard)?);
                match raw.code {
                    AGGREGATOR => Self::Aggregator(a, ip),
                    _ => Self::As4Aggregator(a, ip),
                }
            }
            COMMUNITIES if v.len().is_multiple_of(4) => Self::Communities(v),
            ORIGINATOR_ID => Self::OriginatorId(address(v).ok_or(withdraw)?),
            CLUSTER_LIST if v.len().is_multiple_of(4) => Self::ClusterList(v),
            EXTENDED_COMMUNITIES if v.len().is_multiple_of(8) => Self::ExtendedCommunities(v),
            LARGE_COMMUNITIES if v.len().is_multiple_of(12) => Self::LargeCommunities(v),
            COMMUNITIES | CLUSTER_LIST | EXTENDED_COMMUNITIES | LARGE_COMMUNITIES => return Err(withdraw),
            AS4_PATH => Self::As4Path(as_path(v, 4).ok_or(discard)?),
            MP_REACH => Self::MpReach(v),
            MP_UNREACH => Self::MpUnreach(v),
            _ => Self::Other(raw),
        })
    }

    /// The owned form.
    pub fn to_value(&self) -> AttributeValue {
        let words = |v: &[u8]| v.chunks_exact(4).map(word).collect();
        match *self {
            Self::Origin(o) => AttributeValue::Origin(o),
            Self::AsPath(p) => AttributeValue::AsPath(p.to_value()),
            Self::NextHop(a) => AttributeValue::NextHop(a),
            Self::Med(m) => AttributeValue::Med(m),
            Self::LocalPref(l) => AttributeValue::LocalPref(l),
            Self::AtomicAggregate => AttributeValue::AtomicAggregate,
            Self::Aggregator(a, ip) => AttributeValue::Aggregator(a, ip),
            Self::Communities(v) => AttributeValue::Communities(words(v)),
            Self::OriginatorId(a) => AttributeValue::OriginatorId(a),
            Self::ClusterList(v) => AttributeValue::ClusterList(v.chunks_exact(4).filter_map(address).collect()),
            Self::MpReach(v) => AttributeValue::MpReach(v.to_vec()),
            Self::MpUnreach(v) => AttributeValue::MpUnreach(v.to_vec()),
            Self::ExtendedCommunities(v) => AttributeValue::ExtendedCommunities(
                v.chunks_exact(8).filter_map(|c| <[u8; 8]>::try_from(c).ok()).collect(),
            ),
            Self::As4Path(p) => AttributeValue::As4Path(p.to_value()),
            Self::As4Aggregator(a, ip) => AttributeValue::As4Aggregator(a, ip),
            Self::LargeCommunities(v) => AttributeValue::LargeCommunities(
                v.chunks_exact(12)
                    .map(|c| [word(&c[..4]), word(&c[4..8]), word(&c[8..])])
                    .collect(),
            ),
            Self::Other(r) => AttributeValue::Other {
                flags: r.flags,
                code: r.code,
                value: r.value.to_vec(),
            },
        }
    }
}

/// An owned path attribute, for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH (written with 4-octet AS numbers).
    AsPath(Vec<(SegmentKind, Vec<u32>)>),
    /// NEXT_HOP.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR (4-octet AS).
    Aggregator(u32, Ipv4Addr),
    /// COMMUNITIES.
    Communities(Vec<u32>),
    /// ORIGINATOR_ID.
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST.
    ClusterList(Vec<Ipv4Addr>),
    /// MP_REACH_NLRI's value.
    MpReach(Vec<u8>),
    /// MP_UNREACH_NLRI's value.
    MpUnreach(Vec<u8>),
    /// EXTENDED COMMUNITIES.
    ExtendedCommunities(Vec<[u8; 8]>),
    /// AS4_PATH.
    As4Path(Vec<(SegmentKind, Vec<u32>)>),
    /// AS4_AGGREGATOR.
    As4Aggregator(u32, Ipv4Addr),
    /// LARGE_COMMUNITY.
    LargeCommunities(Vec<[u32; 3]>),
    /// Any other attribute.
    Other {
        /// Its flags (the extended-length bit is set as the length needs).
        flags: u8,
        /// Its type code.
        code: u8,
        /// Its value.
        value: Vec<u8>,
    },
}

impl AttributeValue {
    /// Appends the attribute (flags, code, length, value) to `out`, with
    /// 4-octet AS numbers in AS_PATH and AGGREGATOR.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        let path = |segments: &[(SegmentKind, Vec<u32>)], value: &mut Vec<u8>| {
            for (kind, asns) in segments {
                for chunk in asns.chunks(255) {
                    value.push(kind.code());
                    value.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                    for a in chunk {
                        value.extend_from_slice(&a.to_be_bytes());
                    }
                }
            }
        };
        let (flags, code) = match self {
            Self::Origin(o) => {
                value.push(match o {
                    Origin::Igp => 0,
                    Origin::Egp => 1,
                    Origin::Incomplete => 2,
                });
                (0x40, ORIGIN)
            }
            Self::AsPath(p) => {
                path(p, &mut value);
                (0x40, AS_PATH)
            }
            Self::NextHop(a) => {
                value.extend_from_slice(&a.octets());
                (0x40, NEXT_HOP)
            }
            Self::Med(m) => {
                value.extend_from_slice(&m.to_be_bytes());
                (0x80, MED)
            }
            Self::LocalPref(l) => {
                value.extend_from_slice(&l.to_be_bytes());
                (0x40, LOCAL_PREF)
            }
            Self::AtomicAggregate => (0x40, ATOMIC_AGGREGATE),
            Self::Aggregator(a, ip) | Self::As4Aggregator(a, ip) => {
                value.extend_from_slice(&a.to_be_bytes());
                value.extend_from_slice(&ip.octets());
                match self {
                    Self::Aggregator(..) => (0xc0, AGGREGATOR),
                    _ => (0xc0, AS4_AGGREGATOR),
                }
            }
            Self::Communities(c) => {
                c.iter().for_each(|c| value.extend_from_slice(&c.to_be_bytes()));
                (0xc0, COMMUNITIES)
            }
            Self::OriginatorId(a) => {
                value.extend_from_slice(&a.octets());
                (0x80, ORIGINATOR_ID)
            }
            Self::ClusterList(l) => {
                l.iter().for_each(|a| value.extend_from_slice(&a.octets()));
                (0x80, CLUSTER_LIST)
            }
            Self::MpReach(v) => {
                value.extend_from_slice(v);
                (0x80, MP_REACH)
            }
            Self::MpUnreach(v) => {
                value.extend_from_slice(v);
                (0x80, MP_UNREACH)
            }
            Self::ExtendedCommunities(c) => {
                c.iter().for_each(|c| value.extend_from_slice(c));
                (0xc0, EXTENDED_COMMUNITIES)
            }
            Self::As4Path(p) => {
                path(p, &mut value);
                (0xc0, AS4_PATH)
            }
            Self::LargeCommunities(c) => {
                c.iter()
                    .flatten()
                    .for_each(|p| value.extend_from_slice(&p.to_be_bytes()));
                (0xc0, LARGE_COMMUNITIES)
            }
            Self::Other { flags, code, value: v } => {
                value.extend_from_slice(v);
                (*flags & !0x10, *code)
            }
        };
        match u8::try_from(value.len()) {
            Ok(len) => out.extend_from_slice(&[flags, code, len]),
            Err(_) => {
                out.extend_from_slice(&[flags | 0x10, code]);
                out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
            }
        }
        out.extend_from_slice(&value);
    }
}

/// The AS path of an UPDATE a 2-octet ("OLD") speaker passed on, rebuilt
/// from its AS_PATH (2-octet, AS_TRANS standing in for larger numbers) and
/// AS4_PATH as RFC 6793 §4.2.3 says: when AS_PATH holds fewer ASes than
/// AS4_PATH, AS4_PATH is ignored; otherwise the leading ASes of AS_PATH
/// that AS4_PATH does not cover, then AS4_PATH. Confederation segments of
/// AS4_PATH are ignored (RFC 6793 §6).
pub fn merge_as4_path(as_path: &AsPath<'_>, as4_path: &AsPath<'_>) -> Vec<(SegmentKind, Vec<u32>)> {
    let as4: Vec<(SegmentKind, Vec<u32>)> = as4_path
        .to_value()
        .into_iter()
        .filter(|(k, _)| matches!(k, SegmentKind::Set | SegmentKind::Sequence))
        .collect();
    let count = |p: &[(SegmentKind, Vec<u32>)]| -> usize {
        p.iter()
            .map(|(k, a)| match k {
                SegmentKind::Sequence => a.len(),
                SegmentKind::Set => 1,
                _ => 0,
            })
            .sum()
    };
    let path = as_path.to_value();
    let (have, four) = (count(&path), count(&as4));
    if have < four {
        return path;
    }
    // The leading ASes of AS_PATH, as many as AS4_PATH lacks.
    let mut keep = have - four;
    let mut out: Vec<(SegmentKind, Vec<u32>)> = Vec::new();
    for (kind, asns) in path {
        if keep == 0 {
            break;
        }
        match kind {
            SegmentKind::Sequence => {
                let take = keep.min(asns.len());
                out.push((kind, asns[..take].to_vec()));
                keep -= take;
            }
            SegmentKind::Set => {
                out.push((kind, asns));
                keep -= 1;
            }
            _ => out.push((kind, asns)),
        }
    }
    out.extend(as4);
    out
}
