//! Why a Service has no address, or lost the one it had.

use std::fmt;
use std::net::IpAddr;

use crate::addr::Family;
use crate::request::{Protocol, ServiceKey};

/// Why a Service got no address, lost one, or got fewer than it asked for.
/// Each variant names the pool, address or Service concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// No pool is configured at all.
    #[error("no address pools are configured")]
    NoPools,
    /// Pools exist, but none with autoAssign admits this Service.
    #[error("no pool with autoAssign serves this Service (check the pools' autoAssign and serviceAllocation)")]
    NoEligiblePool,
    /// Every eligible pool is out of addresses of the needed families.
    #[error("no available {need} address in pool(s) {}", .pools.join(", "))]
    Exhausted {
        /// What was needed.
        need: Need,
        /// The pools tried, in the order tried.
        pools: Vec<String>,
    },
    /// `metallb.io/address-pool` names no pool.
    #[error("requested pool {0:?} does not exist")]
    UnknownPool(String),
    /// The requested pool's serviceAllocation does not admit this Service.
    #[error("pool {0:?} does not serve this Service's namespace or labels")]
    PoolDoesNotAdmit(String),
    /// An address outside every pool.
    #[error("{0} is not in any address pool")]
    NotInAnyPool(IpAddr),
    /// A `.0`/`.255` address of a pool with avoidBuggyIPs.
    #[error("{ip} is excluded from pool {pool:?} by avoidBuggyIPs")]
    BuggyIp {
        /// The address.
        ip: IpAddr,
        /// Its pool.
        pool: String,
    },
    /// A requested address outside the requested pool.
    #[error("{ip} is not in the requested pool {pool:?}")]
    NotInRequestedPool {
        /// The address.
        ip: IpAddr,
        /// The requested pool.
        pool: String,
    },
    /// Two addresses from two pools (dual stack needs one pool).
    #[error(
        "{a} (pool {pool_a:?}) and {b} (pool {pool_b:?}) are in different pools; both families must come from one pool"
    )]
    DifferentPools {
        /// The first address.
        a: IpAddr,
        /// Its pool.
        pool_a: String,
        /// The second address.
        b: IpAddr,
        /// Its pool.
        pool_b: String,
    },
    /// The address is held by a Service this one may not share with.
    #[error("{ip} is in use by {by}: {conflict}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// The holder.
        by: ServiceKey,
        /// Why sharing is not allowed.
        conflict: Conflict,
    },
    /// More than two requested addresses.
    #[error("{0} addresses requested; at most one IPv4 and one IPv6 address may be requested")]
    TooManyRequested(usize),
    /// Two requested addresses of one family.
    #[error("{0} and {1} are of the same family; request at most one address per family")]
    RequestedSameFamily(IpAddr, IpAddr),
    /// A requested address of a family the Service does not have.
    #[error("requested {0} does not match the Service's IP families")]
    RequestedWrongFamily(IpAddr),
    /// RequireDualStack with one requested address.
    #[error("ipFamilyPolicy RequireDualStack needs one IPv4 and one IPv6 requested address")]
    RequireDualNeedsTwo,
    /// RequireDualStack with a single cluster IP.
    #[error("ipFamilyPolicy RequireDualStack but the Service has a single cluster IP family")]
    NotEnoughClusterIps,
    /// No cluster IP family known.
    #[error("the Service has no cluster IP family")]
    NoClusterIp,
    /// The Service's loadBalancerClass (`None`: it has none) is another
    /// controller's.
    #[error("{} handled by another controller", match .0 {
        Some(c) => format!("loadBalancerClass {c:?} is"),
        None => "Services without a loadBalancerClass are".to_owned(),
    })]
    OtherClass(Option<String>),
    /// A held address no longer matches the Service's families.
    #[error("{0} no longer matches the Service's IP families")]
    FamilyChanged(IpAddr),
    /// The Service now asks for another pool.
    #[error("the Service now requests pool {0:?}")]
    PoolChanged(String),
    /// The Service now asks for other addresses.
    #[error("the Service now requests other addresses")]
    RequestChanged,
    /// PreferDualStack got only one family.
    #[error("no {0} address available in pool {1:?}; serving single-stack")]
    SecondFamilyUnavailable(Family, String),
}

/// The families a Service needed when none could be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// One address of this family.
    One(Family),
    /// One of each family.
    Both,
    /// One of either family.
    Either,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::One(family) => write!(f, "{family}"),
            Need::Both => f.write_str("IPv4 and IPv6"),
            Need::Either => f.write_str("IPv4 or IPv6"),
        }
    }
}

/// Why two Services may not share an address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// The holder or the newcomer has no sharing key.
    NoSharingKey,
    /// Different sharing keys.
    KeyMismatch,
    /// Different externalTrafficPolicy or Local selectors.
    BackendMismatch,
    /// Both use this port.
    Port(Protocol, u16),
    /// Held outside this allocator (see `Allocator::set_reserved`).
    Reserved,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::NoSharingKey => {
                f.write_str("sharing needs the same metallb.io/allow-shared-ip key on both Services")
            }
            Conflict::KeyMismatch => f.write_str("the metallb.io/allow-shared-ip keys differ"),
            Conflict::BackendMismatch => {
                f.write_str("externalTrafficPolicy differs, or both are Local with different selectors")
            }
            Conflict::Port(p, n) => write!(f, "both use {p:?}/{n}"),
            Conflict::Reserved => f.write_str("it is held by another controller (another loadBalancerClass)"),
        }
    }
}
