//! Layer 2 announcement of service addresses, as pure decisions (no I/O):
//!
//! - [`wire`]: Ethernet frames carrying ARP and IPv6 neighbour discovery,
//!   read and written without allocation, never panicking on input;
//! - [`responder`]: what to answer (ARP requests and neighbour
//!   solicitations for owned addresses, unicast reachability probes
//!   included) and what to report (another MAC claiming an owned address);
//! - [`announce`]: gratuitous ARP and unsolicited advertisements at
//!   takeover, and their schedule;
//! - [`election`]: which node announces an address, ranked as MetalLB does.
//!
//! The speaker in `lb-kube` owns the sockets and the clock and calls these.
#![forbid(unsafe_code)]

pub mod announce;
pub mod election;
pub mod responder;
pub mod wire;

pub use responder::{Ignored, Owned, Response, respond};
pub use wire::{Mac, WireError};
