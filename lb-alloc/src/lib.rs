//! MetalLB-compatible external IP allocation for Kubernetes Services of type
//! LoadBalancer, without Kubernetes types and without I/O.
//!
//! The vocabulary: a [`Pool`] holds address ranges and policy; a [`PoolSet`]
//! is a validated set of pools (no overlaps); a [`Request`] is what one
//! Service asks for; the [`Allocator`] answers each with an [`Outcome`].
//!
//! Semantics follow MetalLB (pools, `autoAssign`, `avoidBuggyIPs`,
//! `serviceAllocation`, requested addresses and pools, sharing keys, dual
//! stack), with three deliberate differences, each one a fix:
//! - pool order is deterministic (priority, then name) where MetalLB's is random;
//! - the lowest free address is found in O(log n), not by a scan;
//! - conflicts go to the holder, then the oldest Service, then by name.
#![forbid(unsafe_code)]

mod addr;
mod allocator;
mod holders;
mod pool;
mod reason;
mod request;
mod selector;
mod space;
mod visit;

pub use addr::{AddrRange, AddressError, Family, is_buggy};
pub use allocator::{Allocator, Assignment, Outcome, PoolStats, ServiceResult, SyncReport};
pub use pool::{Pool, PoolError, PoolSet, ServiceAllocation};
pub use reason::{Conflict, Need, Reason};
pub use request::{FamilyPolicy, Port, Protocol, Request, ServiceKey};
pub use selector::{LabelSelector, Labels, Operator, Requirement, SelectorError};
