//! BGP-4 (RFC 4271) as pure code, for lb's speaker: no sockets, no clock.
//!
//! [`frame`] splits messages off a byte stream and checks their header
//! (marker, length, type); [`Message::decode`] reads one message into a
//! borrowed view (no allocation); the `write` methods append a message to a
//! caller's buffer. Every decode error is a [`DecodeError`] that names the
//! NOTIFICATION to send ([`DecodeError::notification`]), as RFC 4271 §6
//! asks.
//!
//! This first part holds framing, OPEN and its capabilities (RFC 5492,
//! RFC 9072's extended parameter length), KEEPALIVE, NOTIFICATION (with
//! RFC 9003's shutdown communication) and ROUTE-REFRESH (RFC 2918 and
//! RFC 7313's subtypes), and UPDATE: framed, its prefixes and attribute
//! framing checked at once, its attributes classified as RFC 7606 asks
//! ([`Update::check`]), IPv6 routes in MP_REACH, End-of-RIB; and written
//! with many prefixes per message ([`Announce::write`]). [`Session`] is
//! RFC 4271's state machine, sans I/O, for a session that dials out or
//! one the peer opened ([`session::collision`] picks one when both do).
//! [`AdjRibOut`] turns the routes to announce into the smallest UPDATE
//! stream, IPv4 and IPv6.
#![forbid(unsafe_code)]

pub mod attributes;
pub mod error;
pub mod header;
pub mod message;
pub mod open;
pub mod rib;
pub mod session;
pub mod update;

pub use error::{DecodeError, NotificationCode};
pub use header::{HEADER_LEN, MAX_LEN, MessageType, frame};
pub use message::{Message, Notification, RouteRefresh, write_keepalive};
pub use open::{Capability, Open, OpenMessage};
pub use rib::{AdjRibOut, IPV4_UNICAST, IPV6_UNICAST};
pub use session::{PeerAs, Session, State};
pub use update::{Announce, Encoded, Origin, RawAttribute, Update, UpdateError};
