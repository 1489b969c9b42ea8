//! What a Service asks of the allocator.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use crate::addr::Family;
use crate::reason::Reason;
use crate::selector::Labels;

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FamilyPolicy {
    /// One address, of the primary family.
    #[default]
    SingleStack,
    /// Both families when one pool can give both, else one.
    PreferDualStack,
    /// Both families, from one pool, or none.
    RequireDualStack,
}

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// One Service port as sharing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// The protocol.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// Everything the allocator needs to know about one Service.
///
/// Built by the caller from a Service object; no Kubernetes types here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Labels of the Service's namespace (for `namespaceSelectors`).
    pub namespace_labels: Labels,
    /// Labels of the Service (for `serviceSelectors`).
    pub labels: Labels,
    /// Families of `spec.clusterIPs`, primary first (one or two).
    pub cluster_families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub policy: FamilyPolicy,
    /// Addresses asked for (`metallb.io/loadBalancerIPs` or
    /// `spec.loadBalancerIP`): at most one per family.
    pub requested_ips: Vec<IpAddr>,
    /// The pool asked for (`metallb.io/address-pool`).
    pub requested_pool: Option<String>,
    /// `metallb.io/allow-shared-ip`: Services with the same key may share an
    /// address when their ports do not collide.
    pub sharing_key: Option<String>,
    /// Sharing also needs equal backend keys: the selector of an
    /// `externalTrafficPolicy: Local` Service, empty for Cluster.
    pub backend_key: String,
    /// The Service's ports.
    pub ports: Vec<Port>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// Addresses the Service already holds (`status.loadBalancer.ingress`),
    /// kept when still valid.
    pub current_ips: Vec<IpAddr>,
    /// Creation time (any monotonic key, e.g. Unix seconds): older Services
    /// win conflicts. `None` sorts last.
    pub created: Option<i64>,
}

/// Which families a Service needs, derived from its policy and cluster IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    One(Family),
    Both,
    Prefer(Family),
}

impl Want {
    pub(crate) fn accepts(self, f: Family) -> bool {
        match self {
            Want::One(g) => f == g,
            Want::Both | Want::Prefer(_) => true,
        }
    }
}

impl Request {
    /// A request for `namespace/name` with defaults (single-stack IPv4, no
    /// ports, nothing requested).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            cluster_families: vec![Family::V4],
            ..Default::default()
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub(crate) fn want(&self) -> Result<Want, Reason> {
        let primary = *self.cluster_families.first().ok_or(Reason::NoClusterIp)?;
        let dual = self.cluster_families.iter().any(|&f| f != primary);
        Ok(match (self.policy, dual) {
            (FamilyPolicy::SingleStack, _) | (FamilyPolicy::PreferDualStack, false) => Want::One(primary),
            (FamilyPolicy::PreferDualStack, true) => Want::Prefer(primary),
            (FamilyPolicy::RequireDualStack, true) => Want::Both,
            (FamilyPolicy::RequireDualStack, false) => return Err(Reason::NotEnoughClusterIps),
        })
    }

    /// Checks the requested addresses against the wanted families.
    pub(crate) fn check_requested(&self, want: Want) -> Result<(), Reason> {
        let ips = &self.requested_ips;
        if ips.len() > 2 {
            return Err(Reason::TooManyRequested(ips.len()));
        }
        if let [a, b] = ips[..]
            && Family::of(a) == Family::of(b)
        {
            return Err(Reason::RequestedSameFamily(a, b));
        }
        for &ip in ips {
            if !want.accepts(Family::of(ip)) {
                return Err(Reason::RequestedWrongFamily(ip));
            }
        }
        if want == Want::Both && ips.len() == 1 {
            return Err(Reason::RequireDualNeedsTwo);
        }
        Ok(())
    }

    /// A hash of every field that can change the allocation; `current_ips`
    /// and `created` are not part of it.
    pub(crate) fn fingerprint(&self) -> u64 {
        // A fixed seed: deterministic across runs.
        let mut h = foldhash::fast::FixedState::with_seed(0x6c62_2d61_6c6c_6f63).build_hasher();
        (
            &self.namespace,
            &self.name,
            &self.namespace_labels,
            &self.labels,
            &self.cluster_families,
            self.policy,
            &self.requested_ips,
            &self.requested_pool,
        )
            .hash(&mut h);
        (
            &self.sharing_key,
            &self.backend_key,
            &self.ports,
            &self.load_balancer_class,
        )
            .hash(&mut h);
        h.finish()
    }
}
