//! OPEN (RFC 4271 §4.2) and its capabilities (RFC 5492), with RFC 9072's
//! extended optional parameters length.

use std::net::Ipv4Addr;

use crate::error::DecodeError;
use crate::header::{HEADER_LEN, MessageType, write_header};

/// `AS_TRANS` (RFC 6793): the 2-octet AS of a speaker whose AS does not fit.
pub const AS_TRANS: u16 = 23456;

/// A received OPEN, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open<'a> {
    /// The 2-octet My Autonomous System field ([`AS_TRANS`] for a 4-octet
    /// AS: see [`Open::asn`]).
    pub my_as: u16,
    /// The proposed hold time, in seconds (0, or at least 3).
    pub hold_time: u16,
    /// The BGP Identifier (never 0.0.0.0).
    pub bgp_id: Ipv4Addr,
    /// The capability parameters' contents, checked to be well formed.
    capabilities: Params<'a>,
}

/// The optional parameters of type 2 (capabilities), one after another,
/// each as `(length field size, bytes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params<'a> {
    bytes: &'a [u8],
    extended: bool,
}

/// One capability (RFC 5492) as received: the ones lb acts on, decoded;
/// the others kept as code and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability<'a> {
    /// Multiprotocol extensions (code 1, RFC 4760): AFI and SAFI.
    Multiprotocol {
        /// Address family (1 IPv4, 2 IPv6).
        afi: u16,
        /// Subsequent address family (1 unicast).
        safi: u8,
    },
    /// Route refresh (code 2, RFC 2918).
    RouteRefresh,
    /// Extended messages (code 6, RFC 8654).
    ExtendedMessage,
    /// Graceful restart (code 64, RFC 4724): flags (the top four bits of
    /// the first byte), restart time in seconds, and per address family
    /// `(afi, safi, flags)` as 4-byte entries.
    GracefulRestart {
        /// The restart flags (R = 0x8, N = 0x4).
        flags: u8,
        /// The restart time, seconds (12 bits).
        time: u16,
        /// The address families, 4 bytes each.
        families: &'a [u8],
    },
    /// 4-octet AS numbers (code 65, RFC 6793): the speaker's AS.
    FourOctetAs(u32),
    /// ADD-PATH (code 69, RFC 7911): `(afi, safi, send/receive)` entries.
    AddPath(&'a [u8]),
    /// Enhanced route refresh (code 70, RFC 7313).
    EnhancedRouteRefresh,
    /// Any other capability: skipped by lb, kept for logs.
    Other {
        /// The capability code.
        code: u8,
        /// Its value.
        value: &'a [u8],
    },
}

impl<'a> Open<'a> {
    /// Decodes an OPEN's body (the message without its header), checking
    /// what RFC 4271 §6.2 asks: version 4, an acceptable hold time, a
    /// non-zero identifier, and optional parameters that add up (only
    /// capabilities are supported).
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let fixed = body.get(..10).ok_or(DecodeError::BadLength(len(body)))?;
        if fixed[0] != 4 {
            return Err(DecodeError::BadVersion(fixed[0]));
        }
        let my_as = u16::from_be_bytes([fixed[1], fixed[2]]);
        let hold_time = u16::from_be_bytes([fixed[3], fixed[4]]);
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::BadHoldTime(hold_time));
        }
        let bgp_id = Ipv4Addr::new(fixed[5], fixed[6], fixed[7], fixed[8]);
        if bgp_id.is_unspecified() {
            return Err(DecodeError::BadBgpId);
        }
        let rest = &body[10..];
        // RFC 9072: a length of 255 with a first parameter type of 255
        // announces 2-byte lengths.
        let (params, extended) = match (fixed[9], rest.first()) {
            (255, Some(255)) => {
                let n = rest.get(1..3).ok_or(DecodeError::MalformedParameters)?;
                let n = usize::from(u16::from_be_bytes([n[0], n[1]]));
                (rest.get(3..).filter(|p| p.len() == n), true)
            }
            (n, _) => (Some(rest).filter(|p| p.len() == usize::from(n)), false),
        };
        let params = Params {
            bytes: params.ok_or(DecodeError::MalformedParameters)?,
            extended,
        };
        // Every parameter and capability is checked now, so that the
        // iterator below cannot fail.
        for p in params.iter() {
            let (kind, value) = p?;
            if kind != 2 {
                return Err(DecodeError::UnsupportedParameter(kind));
            }
            for c in Caps(value) {
                c?;
            }
        }
        Ok(Self {
            my_as,
            hold_time,
            bgp_id,
            capabilities: params,
        })
    }

    /// The capabilities, in the order sent.
    pub fn capabilities(&self) -> impl Iterator<Item = Capability<'a>> + 'a {
        self.capabilities
            .iter()
            .filter_map(Result::ok)
            .flat_map(|(_, value)| Caps(value).filter_map(Result::ok))
    }

    /// The speaker's AS: the 4-octet capability's when sent, else My AS.
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }
}

fn len(b: &[u8]) -> u16 {
    u16::try_from(b.len() + HEADER_LEN).unwrap_or(u16::MAX)
}

impl<'a> Params<'a> {
    /// `(type, value)` per parameter.
    fn iter(&self) -> impl Iterator<Item = Result<(u8, &'a [u8]), DecodeError>> + 'a {
        let (mut rest, extended) = (self.bytes, self.extended);
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let head = if extended { 3 } else { 2 };
            let Some(h) = rest.get(..head) else {
                rest = &[];
                return Some(Err(DecodeError::MalformedParameters));
            };
            let n = if extended {
                usize::from(u16::from_be_bytes([h[1], h[2]]))
            } else {
                usize::from(h[1])
            };
            let Some(value) = rest.get(head..head + n) else {
                rest = &[];
                return Some(Err(DecodeError::MalformedParameters));
            };
            let kind = h[0];
            rest = &rest[head + n..];
            Some(Ok((kind, value)))
        })
    }
}

/// The capabilities in one parameter's value.
struct Caps<'a>(&'a [u8]);

impl<'a> Iterator for Caps<'a> {
    type Item = Result<Capability<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0;
        if rest.is_empty() {
            return None;
        }
        let (Some(&code), Some(&n)) = (rest.first(), rest.get(1)) else {
            self.0 = &[];
            return Some(Err(DecodeError::MalformedParameters));
        };
        let Some(value) = rest.get(2..2 + usize::from(n)) else {
            self.0 = &[];
            return Some(Err(DecodeError::MalformedParameters));
        };
        self.0 = &rest[2 + usize::from(n)..];
        let bad = DecodeError::MalformedCapability(code);
        Some(match (code, value.len()) {
            (1, 4) => Ok(Capability::Multiprotocol {
                afi: u16::from_be_bytes([value[0], value[1]]),
                safi: value[3],
            }),
            (2, 0) => Ok(Capability::RouteRefresh),
            (6, 0) => Ok(Capability::ExtendedMessage),
            (64, n) if n >= 2 && (n - 2) % 4 == 0 => Ok(Capability::GracefulRestart {
                flags: value[0] >> 4,
                time: u16::from_be_bytes([value[0] & 0x0f, value[1]]),
                families: &value[2..],
            }),
            (65, 4) => Ok(Capability::FourOctetAs(u32::from_be_bytes([
                value[0], value[1], value[2], value[3],
            ]))),
            (69, n) if n % 4 == 0 => Ok(Capability::AddPath(value)),
            (70, 0) => Ok(Capability::EnhancedRouteRefresh),
            (1 | 2 | 6 | 64 | 65 | 69 | 70, _) => Err(bad),
            _ => Ok(Capability::Other { code, value }),
        })
    }
}

/// An OPEN to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenMessage {
    /// This speaker's AS (sent as [`AS_TRANS`] plus the 4-octet capability
    /// when it does not fit in 2 octets).
    pub asn: u32,
    /// The proposed hold time, seconds (0, or at least 3).
    pub hold_time: u16,
    /// The BGP Identifier.
    pub bgp_id: Ipv4Addr,
    /// Address families to announce `(afi, safi)`: a multiprotocol
    /// capability each.
    pub families: Vec<(u16, u8)>,
    /// Offer route refresh (RFC 2918).
    pub route_refresh: bool,
    /// Offer graceful restart (RFC 4724) with this restart time
    /// (seconds, at most 4095), restarting or not, for every family
    /// offered, with their forwarding state kept (F bit): what lb
    /// announces is forwarded by the node's data plane, which a restart of
    /// the speaker leaves in place, so a peer may keep the routes until
    /// the new session's End-of-RIB.
    pub graceful_restart: Option<(u16, bool)>,
}

impl OpenMessage {
    /// Appends the whole message (header included) to `out`. The
    /// 4-octet AS capability is always sent (RFC 6793).
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut caps: Vec<u8> = Vec::with_capacity(64);
        let mut cap = |code: u8, value: &[u8]| {
            caps.push(code);
            caps.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
            caps.extend_from_slice(value);
        };
        for (afi, safi) in &self.families {
            let [a, b] = afi.to_be_bytes();
            cap(1, &[a, b, 0, *safi]);
        }
        if self.route_refresh {
            cap(2, &[]);
        }
        if let Some((time, restarting)) = self.graceful_restart {
            let time = time.min(0x0fff);
            let flags: u16 = if restarting { 0x8000 } else { 0 };
            let mut v = (flags | time).to_be_bytes().to_vec();
            for (afi, safi) in &self.families {
                v.extend_from_slice(&afi.to_be_bytes());
                v.extend_from_slice(&[*safi, 0x80]);
            }
            cap(64, &v);
        }
        cap(65, &self.asn.to_be_bytes());
        // One capabilities parameter; RFC 9072's form only if it needs it.
        let extended = caps.len() + 2 > 255;
        let params_len = caps.len() + if extended { 3 } else { 2 };
        let body = 10 + if extended { 3 } else { 0 } + params_len;
        write_header(out, MessageType::Open, body);
        out.push(4);
        let my_as = u16::try_from(self.asn).unwrap_or(AS_TRANS);
        out.extend_from_slice(&my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        if extended {
            out.extend_from_slice(&[255, 255]);
            out.extend_from_slice(&u16::try_from(params_len).unwrap_or(u16::MAX).to_be_bytes());
            out.push(2);
            out.extend_from_slice(&u16::try_from(caps.len()).unwrap_or(u16::MAX).to_be_bytes());
        } else {
            out.push(u8::try_from(params_len).unwrap_or(u8::MAX));
            out.push(2);
            out.push(u8::try_from(caps.len()).unwrap_or(u8::MAX));
        }
        out.extend_from_slice(&caps);
    }
}
