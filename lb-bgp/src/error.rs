//! Decode errors, each with the NOTIFICATION that reports it (RFC 4271
//! §4.5 and §6, RFC 5492, RFC 7313).

/// A NOTIFICATION's error code and subcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotificationCode {
    /// Error code (1 header, 2 OPEN, 3 UPDATE, 4 hold timer, 5 FSM,
    /// 6 cease, 7 route refresh).
    pub code: u8,
    /// Error subcode (0: unspecific).
    pub subcode: u8,
}

impl std::fmt::Display for NotificationCode {
    /// RFC 4271's names (and the later RFCs' subcodes), then the numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = match self.code {
            1 => "Message Header Error",
            2 => "OPEN Message Error",
            3 => "UPDATE Message Error",
            4 => "Hold Timer Expired",
            5 => "Finite State Machine Error",
            6 => "Cease",
            7 => "ROUTE-REFRESH Message Error",
            _ => "unknown error",
        };
        let sub = match (self.code, self.subcode) {
            (_, 0) => None,
            (1, 1) => Some("Connection Not Synchronized"),
            (1, 2) => Some("Bad Message Length"),
            (1, 3) => Some("Bad Message Type"),
            (2, 1) => Some("Unsupported Version Number"),
            (2, 2) => Some("Bad Peer AS"),
            (2, 3) => Some("Bad BGP Identifier"),
            (2, 4) => Some("Unsupported Optional Parameter"),
            (2, 6) => Some("Unacceptable Hold Time"),
            (2, 7) => Some("Unsupported Capability"),
            (3, 1) => Some("Malformed Attribute List"),
            (3, 2) => Some("Unrecognized Well-known Attribute"),
            (3, 3) => Some("Missing Well-known Attribute"),
            (3, 4) => Some("Attribute Flags Error"),
            (3, 5) => Some("Attribute Length Error"),
            (3, 6) => Some("Invalid ORIGIN Attribute"),
            (3, 8) => Some("Invalid NEXT_HOP Attribute"),
            (3, 9) => Some("Optional Attribute Error"),
            (3, 10) => Some("Invalid Network Field"),
            (3, 11) => Some("Malformed AS_PATH"),
            (5, 1) => Some("Unexpected Message in OpenSent State"),
            (5, 2) => Some("Unexpected Message in OpenConfirm State"),
            (5, 3) => Some("Unexpected Message in Established State"),
            (6, 1) => Some("Maximum Number of Prefixes Reached"),
            (6, 2) => Some("Administrative Shutdown"),
            (6, 3) => Some("Peer De-configured"),
            (6, 4) => Some("Administrative Reset"),
            (6, 5) => Some("Connection Rejected"),
            (6, 6) => Some("Other Configuration Change"),
            (6, 7) => Some("Connection Collision Resolution"),
            (6, 8) => Some("Out of Resources"),
            (6, 9) => Some("Hard Reset"),
            (6, 10) => Some("BFD Down"),
            (7, 1) => Some("Invalid Message Length"),
            _ => Some("unknown subcode"),
        };
        match sub {
            Some(sub) => write!(f, "{code} / {sub} ({}/{})", self.code, self.subcode),
            None => write!(f, "{code} ({}/{})", self.code, self.subcode),
        }
    }
}

impl NotificationCode {
    /// Message Header Error: Connection Not Synchronized.
    pub const NOT_SYNCHRONIZED: Self = Self::new(1, 1);
    /// Message Header Error: Bad Message Length.
    pub const BAD_LENGTH: Self = Self::new(1, 2);
    /// Message Header Error: Bad Message Type.
    pub const BAD_TYPE: Self = Self::new(1, 3);
    /// OPEN Message Error, unspecific.
    pub const OPEN: Self = Self::new(2, 0);
    /// OPEN Message Error: Unsupported Version Number.
    pub const BAD_VERSION: Self = Self::new(2, 1);
    /// OPEN Message Error: Bad Peer AS.
    pub const BAD_PEER_AS: Self = Self::new(2, 2);
    /// OPEN Message Error: Bad BGP Identifier.
    pub const BAD_BGP_ID: Self = Self::new(2, 3);
    /// OPEN Message Error: Unsupported Optional Parameter.
    pub const UNSUPPORTED_PARAMETER: Self = Self::new(2, 4);
    /// OPEN Message Error: Unacceptable Hold Time.
    pub const BAD_HOLD_TIME: Self = Self::new(2, 6);
    /// OPEN Message Error: Unsupported Capability (RFC 5492).
    pub const UNSUPPORTED_CAPABILITY: Self = Self::new(2, 7);
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: Self = Self::new(4, 0);
    /// Cease: Administrative Shutdown (RFC 4486).
    pub const ADMINISTRATIVE_SHUTDOWN: Self = Self::new(6, 2);
    /// Cease: Administrative Reset (RFC 4486).
    pub const ADMINISTRATIVE_RESET: Self = Self::new(6, 4);
    /// Cease: Connection Collision Resolution (RFC 4486).
    pub const CONNECTION_COLLISION_RESOLUTION: Self = Self::new(6, 7);
    /// ROUTE-REFRESH Message Error: Invalid Message Length (RFC 7313).
    pub const BAD_ROUTE_REFRESH_LENGTH: Self = Self::new(7, 1);

    /// The code and subcode.
    pub const fn new(code: u8, subcode: u8) -> Self {
        Self { code, subcode }
    }
}

/// Why a message does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The marker is not sixteen 0xFF bytes.
    #[error("the header's marker is not all ones")]
    NotSynchronized,
    /// The length field is out of bounds for the message (or for any
    /// message).
    #[error("bad message length {0}")]
    BadLength(u16),
    /// An unknown message type.
    #[error("bad message type {0}")]
    BadType(u8),
    /// The OPEN's version is not 4.
    #[error("unsupported BGP version {0} (4 is)")]
    BadVersion(u8),
    /// A hold time of 1 or 2 seconds.
    #[error("unacceptable hold time {0} (0 or at least 3)")]
    BadHoldTime(u16),
    /// A BGP Identifier of 0.0.0.0.
    #[error("BGP identifier 0.0.0.0")]
    BadBgpId,
    /// The OPEN's optional parameters do not add up.
    #[error("malformed optional parameters")]
    MalformedParameters,
    /// An optional parameter of a type other than capabilities.
    #[error("unsupported optional parameter type {0}")]
    UnsupportedParameter(u8),
    /// A capability whose value does not fit its code.
    #[error("malformed capability {0}")]
    MalformedCapability(u8),
    /// A ROUTE-REFRESH of the wrong length.
    #[error("malformed ROUTE-REFRESH")]
    BadRouteRefresh,
    /// A NOTIFICATION too short for its code and subcode.
    #[error("malformed NOTIFICATION")]
    BadNotification,
    /// An UPDATE whose framing or prefixes are malformed (session reset).
    #[error(transparent)]
    Update(crate::update::UpdateError),
}

impl DecodeError {
    /// The NOTIFICATION that reports this error to the peer.
    pub fn notification(self) -> NotificationCode {
        match self {
            Self::NotSynchronized => NotificationCode::NOT_SYNCHRONIZED,
            Self::BadLength(_) | Self::BadNotification => NotificationCode::BAD_LENGTH,
            Self::BadType(_) => NotificationCode::BAD_TYPE,
            Self::BadVersion(_) => NotificationCode::BAD_VERSION,
            Self::BadHoldTime(_) => NotificationCode::BAD_HOLD_TIME,
            Self::BadBgpId => NotificationCode::BAD_BGP_ID,
            Self::MalformedParameters | Self::MalformedCapability(_) => NotificationCode::OPEN,
            Self::UnsupportedParameter(_) => NotificationCode::UNSUPPORTED_PARAMETER,
            Self::BadRouteRefresh => NotificationCode::BAD_ROUTE_REFRESH_LENGTH,
            Self::Update(crate::update::UpdateError::Reset { code }) => code,
            // Not produced by decoding (only by `Update::check`), which
            // keeps the session; as a NOTIFICATION, malformed attributes.
            Self::Update(_) => NotificationCode::new(3, 1),
        }
    }

    /// The NOTIFICATION's data field for this error (RFC 4271 §6.1: the
    /// bad length or type; §6.2: the largest supported version).
    pub fn data(self) -> Vec<u8> {
        match self {
            Self::BadLength(n) => n.to_be_bytes().to_vec(),
            Self::BadType(t) => vec![t],
            Self::BadVersion(_) => 4u16.to_be_bytes().to_vec(),
            _ => Vec::new(),
        }
    }
}
