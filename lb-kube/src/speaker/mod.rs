//! The speaker: which Service addresses this node makes reachable, and how.
//! [`l2`] decides what it announces by ARP/NDP over a source view (file or
//! cluster mode alike); the sockets that answer live beside it.

pub mod l2;
