//! Whole messages: decoding a framed message into a borrowed view, and
//! writing KEEPALIVE, NOTIFICATION and ROUTE-REFRESH.

use crate::error::{DecodeError, NotificationCode};
use crate::header::{HEADER_LEN, MessageType, write_header};
use crate::open::Open;

/// One decoded message, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// OPEN.
    Open(Open<'a>),
    /// UPDATE.
    Update(crate::update::Update<'a>),
    /// NOTIFICATION.
    Notification(Notification<'a>),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

impl<'a> Message<'a> {
    /// Decodes one message as [`crate::frame`] returned it (its type and
    /// its whole bytes).
    #[inline]
    pub fn decode(kind: MessageType, message: &'a [u8]) -> Result<Self, DecodeError> {
        let body = message.get(HEADER_LEN..).unwrap_or_default();
        Ok(match kind {
            MessageType::Open => Self::Open(Open::decode(body)?),
            MessageType::Update => Self::Update(crate::update::Update::decode(body).map_err(DecodeError::Update)?),
            MessageType::Notification => Self::Notification(Notification::decode(body)?),
            MessageType::Keepalive => Self::Keepalive,
            MessageType::RouteRefresh => Self::RouteRefresh(RouteRefresh::decode(body)?),
        })
    }
}

/// A NOTIFICATION: why the peer closes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification<'a> {
    /// Code and subcode.
    pub code: NotificationCode,
    /// The data field.
    pub data: &'a [u8],
}

/// The longest shutdown communication (RFC 9003), in bytes.
pub const MAX_SHUTDOWN_MESSAGE: usize = 255;

impl<'a> Notification<'a> {
    /// Decodes a NOTIFICATION's body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let [code, subcode, data @ ..] = body else {
            return Err(DecodeError::BadNotification);
        };
        Ok(Self {
            code: NotificationCode::new(*code, *subcode),
            data,
        })
    }

    /// The shutdown communication (RFC 9003) of a Cease with subcode
    /// Administrative Shutdown or Reset: its text, when the data holds a
    /// well-formed one (a length byte, then that many bytes of UTF-8).
    /// Anything else (an old speaker's data, a length past the end, bad
    /// UTF-8) gives `None`: the data is then just data.
    pub fn shutdown_message(&self) -> Option<&'a str> {
        if self.code != NotificationCode::ADMINISTRATIVE_SHUTDOWN && self.code != NotificationCode::ADMINISTRATIVE_RESET
        {
            return None;
        }
        let (n, rest) = self.data.split_first()?;
        std::str::from_utf8(rest.get(..usize::from(*n))?).ok()
    }

    /// Appends a NOTIFICATION with `code` and `data` to `out`.
    pub fn write(code: NotificationCode, data: &[u8], out: &mut Vec<u8>) {
        let data = &data[..data.len().min(crate::MAX_LEN - HEADER_LEN - 2)];
        write_header(out, MessageType::Notification, 2 + data.len());
        out.push(code.code);
        out.push(code.subcode);
        out.extend_from_slice(data);
    }

    /// Appends a Cease (`code`: Administrative Shutdown or Reset) that
    /// carries `text` as its shutdown communication (RFC 9003), cut at a
    /// character boundary to at most [`MAX_SHUTDOWN_MESSAGE`] bytes.
    pub fn write_shutdown(code: NotificationCode, text: &str, out: &mut Vec<u8>) {
        let mut end = text.len().min(MAX_SHUTDOWN_MESSAGE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text.as_bytes()[..end];
        write_header(out, MessageType::Notification, 3 + text.len());
        out.push(code.code);
        out.push(code.subcode);
        out.push(u8::try_from(text.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(text);
    }
}

/// Appends a KEEPALIVE to `out`.
pub fn write_keepalive(out: &mut Vec<u8>) {
    write_header(out, MessageType::Keepalive, 0);
}

/// A ROUTE-REFRESH (RFC 2918): a request for an address family's routes
/// again, or (RFC 7313) the beginning or end of such a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    /// Address family.
    pub afi: u16,
    /// Subsequent address family.
    pub safi: u8,
    /// 0 request, 1 beginning of refresh, 2 end of refresh (RFC 7313);
    /// others are kept and ignored.
    pub subtype: u8,
}

impl RouteRefresh {
    /// Decodes a ROUTE-REFRESH's body (exactly 4 bytes).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let [a, b, subtype, safi] = body else {
            return Err(DecodeError::BadRouteRefresh);
        };
        Ok(Self {
            afi: u16::from_be_bytes([*a, *b]),
            safi: *safi,
            subtype: *subtype,
        })
    }

    /// Appends it to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        write_header(out, MessageType::RouteRefresh, 4);
        out.extend_from_slice(&self.afi.to_be_bytes());
        out.push(self.subtype);
        out.push(self.safi);
    }
}
