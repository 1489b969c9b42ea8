//! The message header (RFC 4271 §4.1): framing a byte stream.

use crate::error::DecodeError;

/// The header's length: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// The largest message without the extended-message capability.
pub const MAX_LEN: usize = 4096;

/// The message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// OPEN (1).
    Open,
    /// UPDATE (2).
    Update,
    /// NOTIFICATION (3).
    Notification,
    /// KEEPALIVE (4).
    Keepalive,
    /// ROUTE-REFRESH (5, RFC 2918).
    RouteRefresh,
}

impl MessageType {
    /// The type from its code.
    #[inline]
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Open,
            2 => Self::Update,
            3 => Self::Notification,
            4 => Self::Keepalive,
            5 => Self::RouteRefresh,
            _ => return None,
        })
    }

    /// The type's code.
    pub fn code(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Update => 2,
            Self::Notification => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh => 5,
        }
    }

    /// The shortest and longest a message of this type may be (RFC 4271
    /// §4, §6.1; ROUTE-REFRESH: RFC 2918).
    #[inline]
    fn bounds(self, max: usize) -> (usize, usize) {
        match self {
            Self::Open => (29, max),
            Self::Update => (23, max),
            Self::Notification => (21, max),
            Self::Keepalive => (HEADER_LEN, HEADER_LEN),
            Self::RouteRefresh => (23, max),
        }
    }
}

/// The first whole message at the start of `stream`: its type and its
/// bytes (header included), or `None` while more bytes are needed. `max`
/// is the largest message allowed ([`MAX_LEN`], or 65535 with extended
/// messages negotiated). The header is checked as RFC 4271 §6.1 says: the
/// marker, the length (within `max` and the type's own bounds) and the
/// type; an error means the connection must close with the NOTIFICATION the
/// error names.
#[inline]
pub fn frame(stream: &[u8], max: usize) -> Result<Option<(MessageType, &[u8])>, DecodeError> {
    let Some(head) = stream.get(..HEADER_LEN) else {
        // A wrong marker is wrong however little of it has arrived.
        let marker = &stream[..stream.len().min(16)];
        return match marker.iter().all(|b| *b == 0xff) {
            true => Ok(None),
            false => Err(DecodeError::NotSynchronized),
        };
    };
    if head[..16] != [0xff; 16] {
        return Err(DecodeError::NotSynchronized);
    }
    let len = u16::from_be_bytes([head[16], head[17]]);
    let kind = MessageType::from_code(head[18]);
    let (min, most) = match kind {
        Some(k) => k.bounds(max),
        None => (HEADER_LEN, max),
    };
    if usize::from(len) < min || usize::from(len) > most {
        return Err(DecodeError::BadLength(len));
    }
    let Some(kind) = kind else {
        return Err(DecodeError::BadType(head[18]));
    };
    Ok(stream.get(..usize::from(len)).map(|m| (kind, m)))
}

/// Appends a header for a message of `kind` whose body is `body_len`
/// bytes.
pub(crate) fn write_header(out: &mut Vec<u8>, kind: MessageType, body_len: usize) {
    out.extend_from_slice(&[0xff; 16]);
    let len = u16::try_from(HEADER_LEN + body_len).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind.code());
}
