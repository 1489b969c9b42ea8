//! The metallb.io custom resources, every field of MetalLB's API
//! (reference: MetalLB `api/v1beta1`, `api/v1beta2`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `IPAddressPool.spec`: addresses and allocation policy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs (`192.168.1.0/24`) or ranges (`192.168.1.10-192.168.1.20`).
    pub addresses: Vec<String>,
    /// Whether automatic allocation may use the pool (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Never hand out IPv4 `.0` and `.255` (default false).
    #[serde(default, rename = "avoidBuggyIPs", skip_serializing_if = "Option::is_none")]
    pub avoid_buggy_ips: Option<bool>,
    /// Which Services the pool serves, and its priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// `IPAddressPool.spec.serviceAllocation`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower first; 0 or unset last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces served, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selectors: Option<Vec<LabelSelector>>,
    /// Services served, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selectors: Option<Vec<LabelSelector>>,
}

/// `IPAddressPool.status`, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses in use.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    /// IPv6 addresses in use.
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    /// IPv4 addresses free.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    /// IPv6 addresses free (capped at i64::MAX).
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
}

/// `L2Advertisement.spec`: which pools are announced by ARP/NDP, from where.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools by name (both lists empty: every pool).
    #[serde(default, rename = "ipAddressPools", skip_serializing_if = "Option::is_none")]
    pub ip_address_pools: Option<Vec<String>>,
    /// Pools by label.
    #[serde(default, rename = "ipAddressPoolSelectors", skip_serializing_if = "Option::is_none")]
    pub ip_address_pool_selectors: Option<Vec<LabelSelector>>,
    /// Nodes that may announce (empty: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<Vec<LabelSelector>>,
    /// Interfaces to announce on (empty: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// Services announced through this advertisement (empty: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selectors: Option<Vec<LabelSelector>>,
    /// Soft node preferences for the election.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_node_selectors: Option<Vec<PreferredNodeSelector>>,
}

/// A weighted node preference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    /// 1..100.
    pub weight: i32,
    /// The nodes preferred.
    pub preference: LabelSelector,
}

/// `BGPAdvertisement.spec`: which pools are announced by BGP, and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// IPv4 prefix length announced (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<i32>,
    /// IPv6 prefix length announced (default 128).
    #[serde(default, rename = "aggregationLengthV6", skip_serializing_if = "Option::is_none")]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF (iBGP only).
    #[serde(default, rename = "localPref", skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// `ASN:value`, `large:a:b:c`, or a Community alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<String>>,
    /// Pools by name (both lists empty: every pool).
    #[serde(default, rename = "ipAddressPools", skip_serializing_if = "Option::is_none")]
    pub ip_address_pools: Option<Vec<String>>,
    /// Pools by label.
    #[serde(default, rename = "ipAddressPoolSelectors", skip_serializing_if = "Option::is_none")]
    pub ip_address_pool_selectors: Option<Vec<LabelSelector>>,
    /// Nodes that announce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<Vec<LabelSelector>>,
    /// BGPPeer names (empty: all peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// Services announced (only with default aggregation lengths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selectors: Option<Vec<LabelSelector>>,
}

/// A reference to a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretReference {
    /// Secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Secret namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `BGPPeer.spec` (v1beta2, the storage version): one BGP session.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta2",
    kind = "BGPPeer",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// Local AS.
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// Remote AS (exactly one of peerASN / dynamicASN).
    #[serde(default, rename = "peerASN", skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    /// `internal` or `external`.
    #[serde(default, rename = "dynamicASN", skip_serializing_if = "Option::is_none")]
    pub dynamic_asn: Option<String>,
    /// local-as replacement.
    #[serde(default, rename = "localASN", skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    /// Peer address (exactly one of peerAddress / interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,
    /// Unnumbered BGP over this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Local address to dial from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Peer TCP port (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Hold time (Go duration, 0 or >= 3s; default 90s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Keepalive time (Go duration, <= holdTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// Connect retry time (Go duration, whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// Router ID (IPv4 address).
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// TCP MD5 password from a basic-auth Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// BFDProfile name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    /// Multi-hop eBGP.
    #[serde(default, rename = "ebgpMultiHop", skip_serializing_if = "Option::is_none")]
    pub ebgp_multi_hop: Option<bool>,
    /// Host VRF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Nodes that hold the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selectors: Option<Vec<LabelSelector>>,
    /// Graceful restart (immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_graceful_restart: Option<bool>,
    /// Deprecated.
    #[serde(default, rename = "disableMP", skip_serializing_if = "Option::is_none")]
    pub disable_mp: Option<bool>,
    /// Both address families on one session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_stack_address_family: Option<bool>,
}

/// The v1beta1 form of BGPPeer, converted to v1beta2 on read.
pub mod v1beta1 {
    use super::*;

    /// `BGPPeer.spec` as v1beta1 wrote it.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    #[kube(
        group = "metallb.io",
        version = "v1beta1",
        kind = "BGPPeer",
        namespaced,
        derive = "PartialEq"
    )]
    #[serde(rename_all = "camelCase")]
    pub struct BGPPeerSpec {
        /// Local AS.
        #[serde(rename = "myASN")]
        pub my_asn: u32,
        /// Remote AS.
        #[serde(rename = "peerASN")]
        pub peer_asn: u32,
        /// Peer address.
        pub peer_address: String,
        /// Local address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub source_address: Option<String>,
        /// Peer port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer_port: Option<u16>,
        /// Hold time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hold_time: Option<String>,
        /// Keepalive time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keepalive_time: Option<String>,
        /// Router ID.
        #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
        pub router_id: Option<String>,
        /// Nodes, in v1beta1's own selector shape.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub node_selectors: Option<Vec<LabelSelector>>,
        /// TCP MD5 password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// BFDProfile name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bfd_profile: Option<String>,
        /// Multi-hop eBGP.
        #[serde(default, rename = "ebgpMultiHop", skip_serializing_if = "Option::is_none")]
        pub ebgp_multi_hop: Option<bool>,
    }

    impl From<BGPPeerSpec> for super::BGPPeerSpec {
        fn from(s: BGPPeerSpec) -> Self {
            super::BGPPeerSpec {
                my_asn: s.my_asn,
                peer_asn: Some(s.peer_asn),
                peer_address: Some(s.peer_address),
                source_address: s.source_address,
                peer_port: s.peer_port,
                hold_time: s.hold_time,
                keepalive_time: s.keepalive_time,
                router_id: s.router_id,
                node_selectors: s.node_selectors,
                password: s.password,
                bfd_profile: s.bfd_profile,
                ebgp_multi_hop: s.ebgp_multi_hop,
                ..Default::default()
            }
        }
    }
}

/// `Community.spec`: named BGP community values.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "Community",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

/// One community alias.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CommunityAlias {
    /// The alias.
    pub name: String,
    /// `16bit:16bit` or `large:32:32:32`.
    pub value: String,
}

/// `BFDProfile.spec`: BFD timers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// ms, 10..60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    /// ms, 10..60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    /// 2..255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u32>,
    /// ms, 10..60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval: Option<u32>,
    /// Echo mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Passive mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// 1..254.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ttl: Option<u32>,
}

/// `ConfigurationState`: whether a component's configuration is in force
/// (MetalLB's, written by the controller as `controller`). No spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ConfigurationState",
    namespaced,
    status = "ConfigurationStateStatus",
    derive = "PartialEq"
)]
pub struct ConfigurationStateSpec {}

/// `ConfigurationState.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStateStatus {
    /// `Valid`, `Invalid` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// What is wrong, when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_summary: Option<String>,
}

/// `ServiceL2Status`: which node announces a Service by ARP/NDP, and on
/// which interfaces (MetalLB's, written by the announcing speaker). No
/// spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    namespaced,
    status = "ServiceL2StatusStatus",
    derive = "PartialEq"
)]
pub struct ServiceL2StatusSpec {}

/// `ServiceL2Status.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    /// The announcing node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The Service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The Service's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_namespace: Option<String>,
    /// The interfaces it is announced on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// One interface of a [`ServiceL2StatusStatus`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct InterfaceInfo {
    /// The interface's name.
    pub name: String,
}

/// `ServiceBGPStatus`: the peers a Service's prefixes are configured to
/// go to from one node (MetalLB's, written by each announcing speaker).
/// No spec.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    namespaced,
    status = "ServiceBGPStatusStatus",
    derive = "PartialEq"
)]
pub struct ServiceBGPStatusSpec {}

/// `ServiceBGPStatus.status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBGPStatusStatus {
    /// The announcing node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The Service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The Service's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_namespace: Option<String>,
    /// The BGPPeers its prefixes are configured to go to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// The kinds whose `spec` may be left out (MetalLB's CRDs do not require
/// it: every field in it is optional).
pub const SPEC_OPTIONAL: [&str; 6] = [
    "L2Advertisement",
    "BGPAdvertisement",
    "BFDProfile",
    "Community",
    "ServiceL2Status",
    "ServiceBGPStatus",
];

/// The metallb.io CustomResourceDefinitions, one per kind, as our types
/// define them (BGPPeer serves v1beta1 and v1beta2, stored as v1beta2).
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    use kube::CustomResourceExt as _;
    let peer = kube::core::crd::merge_crds(vec![v1beta1::BGPPeer::crd(), BGPPeer::crd()], "v1beta2")
        .unwrap_or_else(|_| BGPPeer::crd());
    let mut all = vec![
        BFDProfile::crd(),
        BGPAdvertisement::crd(),
        peer,
        Community::crd(),
        ConfigurationState::crd(),
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        ServiceBGPStatus::crd(),
        ServiceL2Status::crd(),
    ];
    for crd in &mut all {
        if !SPEC_OPTIONAL.contains(&crd.spec.names.kind.as_str()) {
            continue;
        }
        for v in &mut crd.spec.versions {
            if let Some(schema) = v.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                let required = schema.required.take().unwrap_or_default();
                let left: Vec<String> = required.into_iter().filter(|r| r != "spec").collect();
                schema.required = (!left.is_empty()).then_some(left);
            }
        }
    }
    all
}

/// [`crds`] as one multi-document YAML stream, what `deploy/crds.yaml`
/// holds (`lb-controller crds` prints it).
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# The metallb.io CustomResourceDefinitions lb reads: MetalLB's group, kinds and versions.\n\
         # Generated by `lb-controller crds`; do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        // Our own types always serialize.
        out.push_str(&serde_saphyr::to_string(&crd).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    /// Every kind has its CRD; BGPPeer serves both versions, stores v1beta2.
    #[test]
    fn crds_cover_every_kind_and_both_peer_versions() {
        let crds = super::crds();
        let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "BFDProfile",
                "BGPAdvertisement",
                "BGPPeer",
                "Community",
                "ConfigurationState",
                "IPAddressPool",
                "L2Advertisement",
                "ServiceBGPStatus",
                "ServiceL2Status"
            ]
        );
        let peer = &crds[2].spec.versions;
        let mut versions: Vec<(&str, bool)> = peer.iter().map(|v| (v.name.as_str(), v.storage)).collect();
        versions.sort_unstable();
        assert_eq!(versions, [("v1beta1", false), ("v1beta2", true)]);
    }
}
