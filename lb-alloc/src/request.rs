//! What a Service asks of the allocator.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

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

/// A Service's identity: its namespace and name, shown `namespace/name`.
/// Cheap to clone (one shared string). Kubernetes names and namespaces hold
/// no `/`, and the allocator tells Services apart by the joined form.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    joined: Arc<str>,
    slash: usize,
}

impl ServiceKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        let (namespace, name) = (namespace.as_ref(), name.as_ref());
        let mut joined = String::with_capacity(namespace.len() + 1 + name.len());
        joined.push_str(namespace);
        joined.push('/');
        joined.push_str(name);
        Self {
            joined: joined.into(),
            slash: namespace.len(),
        }
    }

    /// The key written `namespace/name` (both parts non-empty, one `/`), as
    /// [`ServiceKey`]'s `Display` shows it.
    pub fn parse(joined: &str) -> Option<Self> {
        let (namespace, name) = joined.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !name.contains('/')).then(|| Self::new(namespace, name))
    }

    /// A key sharing the allocator's `namespace/name` string.
    pub(crate) fn from_shared(joined: &Arc<str>) -> Self {
        Self {
            slash: joined.find('/').unwrap_or(0),
            joined: joined.clone(),
        }
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        &self.joined[..self.slash]
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.joined.get(self.slash + 1..).unwrap_or_default()
    }
}

impl Default for ServiceKey {
    fn default() -> Self {
        Self::new("", "")
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.joined)
    }
}

/// Written as the string `namespace/name`.
#[cfg(feature = "serde")]
impl serde::Serialize for ServiceKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.joined)
    }
}

/// Read from the string `namespace/name` (see [`ServiceKey::parse`]).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ServiceKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let joined = String::deserialize(deserializer)?;
        Self::parse(&joined).ok_or_else(|| serde::de::Error::custom(format_args!("{joined:?} is not namespace/name")))
    }
}

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &*self.joined)
    }
}

/// Everything the allocator needs to know about one Service.
///
/// Built by the caller from a Service object (no Kubernetes types here):
/// [`Request::new`], then the `with_*` methods or field assignments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
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

    /// The Service's identity.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(self.namespace.clone(), self.name.clone())
    }

    /// With the families of `spec.clusterIPs`, primary first.
    pub fn with_cluster_families(mut self, families: Vec<Family>) -> Self {
        self.cluster_families = families;
        self
    }

    /// With `spec.ipFamilyPolicy`.
    pub fn with_policy(mut self, policy: FamilyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// With the Service's labels and its namespace's labels.
    pub fn with_labels(mut self, labels: Labels, namespace_labels: Labels) -> Self {
        self.labels = labels;
        self.namespace_labels = namespace_labels;
        self
    }

    /// Asking for these addresses (at most one per family).
    pub fn with_requested_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.requested_ips = ips;
        self
    }

    /// Asking for this pool.
    pub fn with_requested_pool(mut self, pool: impl Into<String>) -> Self {
        self.requested_pool = Some(pool.into());
        self
    }

    /// Sharing with this key, these ports and this backend key (see the
    /// fields).
    pub fn with_sharing(mut self, key: impl Into<String>, ports: Vec<Port>, backend_key: impl Into<String>) -> Self {
        self.sharing_key = Some(key.into());
        self.ports = ports;
        self.backend_key = backend_key.into();
        self
    }

    /// With the Service's ports.
    pub fn with_ports(mut self, ports: Vec<Port>) -> Self {
        self.ports = ports;
        self
    }

    /// Of this `spec.loadBalancerClass`.
    pub fn with_class(mut self, class: impl Into<String>) -> Self {
        self.load_balancer_class = Some(class.into());
        self
    }

    /// Holding these addresses now (`status.loadBalancer.ingress`).
    pub fn with_current_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.current_ips = ips;
        self
    }

    /// Created at `created` (any monotonic key; older wins conflicts).
    pub fn with_created(mut self, created: i64) -> Self {
        self.created = Some(created);
        self
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
