//! The legacy MetalLB ConfigMap (`metallb-system/config`, key `config`, the
//! format of MetalLB up to v0.12), mapped to metallb.io resources the way
//! MetalLB's `configmaptocrs` converter maps it:
//!
//! - each pool becomes an IPAddressPool (names lower-cased, `_` → `-`);
//! - each `protocol: layer2` pool gets an L2Advertisement `l2advertisementN`;
//! - each BGP advertisement becomes a BGPAdvertisement `bgpadvertisementN`
//!   (a `bgp` pool without any gets one empty advertisement);
//! - peers become BGPPeers `peerN` (holdTime 90s unless given);
//! - `bgp-communities` become one Community `communities`;
//! - `bfd-profiles` become BFDProfiles.
//!
//! As in v0.12, a pool without `protocol` is an error, and so is a layer2
//! pool with BGP advertisements. Unknown keys are errors (v0.12 parsed with
//! `UnmarshalStrict`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use serde::Deserialize;

use super::metallb::*;
use super::{Object, ObjectRef, typed};
use crate::source::{Origin, Problem};

/// Namespace and name of the legacy ConfigMap.
pub const LEGACY_CONFIGMAP: (&str, &str) = ("metallb-system", "config");

/// Whether `r` names the legacy ConfigMap.
pub fn is_legacy_configmap(r: &ObjectRef) -> bool {
    r.kind == "ConfigMap" && (r.namespace.as_str(), r.name.as_str()) == LEGACY_CONFIGMAP
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyConfig {
    #[serde(default)]
    peers: Vec<LegacyPeer>,
    #[serde(default)]
    bgp_communities: BTreeMap<String, String>,
    #[serde(default)]
    address_pools: Vec<LegacyPool>,
    #[serde(default)]
    bfd_profiles: Vec<LegacyBfd>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPeer {
    my_asn: u32,
    peer_asn: u32,
    peer_address: String,
    source_address: Option<String>,
    peer_port: Option<u16>,
    hold_time: Option<String>,
    keepalive_time: Option<String>,
    router_id: Option<String>,
    password: Option<String>,
    bfd_profile: Option<String>,
    ebgp_multihop: Option<bool>,
    #[serde(default)]
    node_selectors: Vec<LegacyNodeSelector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyNodeSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<LegacyExpression>,
}

#[derive(Deserialize)]
struct LegacyExpression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPool {
    name: String,
    protocol: Option<String>,
    addresses: Vec<String>,
    avoid_buggy_ips: Option<bool>,
    auto_assign: Option<bool>,
    #[serde(default)]
    bgp_advertisements: Vec<LegacyBgpAdvertisement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyBgpAdvertisement {
    aggregation_length: Option<i32>,
    aggregation_length_v6: Option<i32>,
    localpref: Option<u32>,
    #[serde(default)]
    communities: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyBfd {
    name: String,
    receive_interval: Option<u32>,
    transmit_interval: Option<u32>,
    detect_multiplier: Option<u32>,
    echo_interval: Option<u32>,
    echo_mode: Option<bool>,
    passive_mode: Option<bool>,
    minimum_ttl: Option<u32>,
}

/// A Kubernetes-valid name, as the converter makes it.
fn k8s_name(name: &str) -> String {
    name.to_lowercase().replace('_', "-")
}

fn meta(namespace: &str, name: String) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_owned()),
        name: Some(name),
        ..ObjectMeta::default()
    }
}

/// The objects a legacy ConfigMap stands for; none if `cm` is not the
/// legacy ConfigMap. Errors are added to `problems`; on any error nothing
/// is returned: the configuration is refused whole (as v0.12 did), and the
/// caller keeps its last good version.
pub fn convert(cm: &ConfigMap, r: &ObjectRef, problems: &mut Vec<Problem>, origin: Option<&Origin>) -> Vec<Object> {
    if (r.namespace.as_str(), r.name.as_str()) != LEGACY_CONFIGMAP {
        return Vec::new();
    }
    let Some(text) = cm.data.as_ref().and_then(|d| d.get("config")) else {
        // A typo in the key would silently remove every pool.
        problems.push(Problem {
            origin: origin.cloned(),
            ..Problem::error(
                Some(r.clone()),
                Some("data".into()),
                "the legacy MetalLB ConfigMap has no `config` key; write the configuration under data.config",
            )
        });
        return Vec::new();
    };
    let mut errors = Vec::new();
    let objects = convert_text(text, &r.namespace, &mut errors);
    let failed = !errors.is_empty();
    problems.extend(errors.into_iter().map(|(field, message)| Problem {
        origin: origin.cloned(),
        ..Problem::error(Some(r.clone()), Some(field), message)
    }));
    if failed { Vec::new() } else { objects }
}

/// Converts the text of the `config` key. Errors are (field, message).
pub fn convert_text(text: &str, namespace: &str, errors: &mut Vec<(String, String)>) -> Vec<Object> {
    let field = |f: &str| format!("data.config{}{f}", if f.is_empty() { "" } else { "." });
    let value = match crate::source::file::parse_document(text) {
        Ok(v) => v,
        Err(e) => {
            errors.push((field(""), e));
            return Vec::new();
        }
    };
    if value.is_null() {
        return Vec::new();
    }
    let cfg: Arc<LegacyConfig> = match typed(value) {
        Ok(c) => c,
        Err(e) => {
            errors.push((field(e.field().unwrap_or("")), e.message()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let (mut l2n, mut bgpn) = (0, 0);
    for (i, p) in cfg.address_pools.iter().enumerate() {
        let name = k8s_name(&p.name);
        out.push(Object::IPAddressPool(Arc::new(IPAddressPool {
            metadata: meta(namespace, name.clone()),
            spec: IPAddressPoolSpec {
                addresses: p.addresses.clone(),
                auto_assign: p.auto_assign,
                avoid_buggy_ips: p.avoid_buggy_ips,
                service_allocation: None,
            },
            status: None,
        })));
        match p.protocol.as_deref() {
            Some("layer2") if !p.bgp_advertisements.is_empty() => errors.push((
                field(&format!("address-pools[{i}].bgp-advertisements")),
                format!(
                    "pool {:?} has protocol layer2 and cannot have bgp-advertisements",
                    p.name
                ),
            )),
            Some("layer2") => {
                l2n += 1;
                out.push(Object::L2Advertisement(Arc::new(L2Advertisement {
                    metadata: meta(namespace, format!("l2advertisement{l2n}")),
                    spec: L2AdvertisementSpec {
                        ip_address_pools: Some(vec![name.clone()]),
                        ..Default::default()
                    },
                })));
            }
            Some("bgp") => {
                let ads: Vec<Option<&LegacyBgpAdvertisement>> = if p.bgp_advertisements.is_empty() {
                    vec![None]
                } else {
                    p.bgp_advertisements.iter().map(Some).collect()
                };
                for ad in ads {
                    bgpn += 1;
                    out.push(Object::BGPAdvertisement(Arc::new(BGPAdvertisement {
                        metadata: meta(namespace, format!("bgpadvertisement{bgpn}")),
                        spec: BGPAdvertisementSpec {
                            aggregation_length: ad.and_then(|a| a.aggregation_length),
                            aggregation_length_v6: ad.and_then(|a| a.aggregation_length_v6),
                            local_pref: ad.and_then(|a| a.localpref),
                            communities: ad.map(|a| a.communities.clone()).filter(|c| !c.is_empty()),
                            ip_address_pools: Some(vec![name.clone()]),
                            ..Default::default()
                        },
                    })));
                }
            }
            Some(other) => errors.push((
                field(&format!("address-pools[{i}].protocol")),
                format!("unknown protocol {other:?}; expected layer2 or bgp"),
            )),
            None => errors.push((
                field(&format!("address-pools[{i}].protocol")),
                format!("pool {:?} has no protocol; expected layer2 or bgp", p.name),
            )),
        }
    }
    for (i, peer) in cfg.peers.iter().enumerate() {
        let selectors = peer
            .node_selectors
            .iter()
            .map(|s| LabelSelector {
                match_labels: (!s.match_labels.is_empty()).then(|| s.match_labels.clone()),
                match_expressions: (!s.match_expressions.is_empty()).then(|| {
                    s.match_expressions
                        .iter()
                        .map(|e| LabelSelectorRequirement {
                            key: e.key.clone(),
                            operator: e.operator.clone(),
                            values: (!e.values.is_empty()).then(|| e.values.clone()),
                        })
                        .collect()
                }),
            })
            .collect::<Vec<_>>();
        out.push(Object::BGPPeer(Arc::new(BGPPeer {
            metadata: meta(namespace, format!("peer{}", i + 1)),
            spec: BGPPeerSpec {
                my_asn: peer.my_asn,
                peer_asn: Some(peer.peer_asn),
                peer_address: Some(peer.peer_address.clone()),
                source_address: peer.source_address.clone(),
                peer_port: peer.peer_port,
                hold_time: Some(peer.hold_time.clone().unwrap_or_else(|| "90s".into())),
                keepalive_time: peer.keepalive_time.clone(),
                router_id: peer.router_id.clone(),
                password: peer.password.clone(),
                bfd_profile: peer.bfd_profile.clone(),
                ebgp_multi_hop: peer.ebgp_multihop,
                node_selectors: (!selectors.is_empty()).then_some(selectors),
                ..Default::default()
            },
        })));
    }
    if !cfg.bgp_communities.is_empty() {
        out.push(Object::Community(Arc::new(Community {
            metadata: meta(namespace, "communities".into()),
            spec: CommunitySpec {
                communities: cfg
                    .bgp_communities
                    .iter()
                    .map(|(name, value)| CommunityAlias {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            },
        })));
    }
    for b in &cfg.bfd_profiles {
        out.push(Object::BFDProfile(Arc::new(BFDProfile {
            metadata: meta(namespace, k8s_name(&b.name)),
            spec: BFDProfileSpec {
                receive_interval: b.receive_interval,
                transmit_interval: b.transmit_interval,
                detect_multiplier: b.detect_multiplier,
                echo_interval: b.echo_interval,
                echo_mode: b.echo_mode,
                passive_mode: b.passive_mode,
                minimum_ttl: b.minimum_ttl,
            },
        })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::object_ref;

    fn names(objs: &[Object]) -> Vec<String> {
        objs.iter().map(|o| object_ref(o).to_string()).collect()
    }

    #[test]
    fn maps_like_configmaptocrs() {
        let text = "
peers:
- my-asn: 64500
  peer-asn: 64501
  peer-address: 10.0.0.1
bgp-communities:
  no-advertise: 65535:65282
address-pools:
- name: Default_Pool
  protocol: layer2
  addresses: [192.168.1.240-192.168.1.250]
- name: bgp
  protocol: bgp
  addresses: [10.9.0.0/24]
  bgp-advertisements:
  - aggregation-length: 32
    communities: [no-advertise]
  - aggregation-length: 24
- name: bgp-plain
  protocol: bgp
  addresses: [10.8.0.0/24]
";
        let mut errors = vec![];
        let objs = convert_text(text, "metallb-system", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            names(&objs),
            [
                "IPAddressPool metallb-system/default-pool",
                "L2Advertisement metallb-system/l2advertisement1",
                "IPAddressPool metallb-system/bgp",
                "BGPAdvertisement metallb-system/bgpadvertisement1",
                "BGPAdvertisement metallb-system/bgpadvertisement2",
                "IPAddressPool metallb-system/bgp-plain",
                "BGPAdvertisement metallb-system/bgpadvertisement3",
                "BGPPeer metallb-system/peer1",
                "Community metallb-system/communities",
            ]
        );
        let Object::BGPPeer(p) = &objs[7] else { panic!() };
        assert_eq!(p.spec.hold_time.as_deref(), Some("90s"));
    }

    #[test]
    fn v0_12_errors() {
        let mut errors = vec![];
        convert_text(
            "address-pools:\n- name: a\n  addresses: [10.0.0.0/24]\n",
            "m",
            &mut errors,
        );
        assert_eq!(errors[0].0, "data.config.address-pools[0].protocol");
        let mut errors = vec![];
        convert_text(
            "address-pools:\n- name: a\n  protocol: layer2\n  addresses: [10.0.0.0/24]\n  bgp-advertisements: [{}]\n",
            "m",
            &mut errors,
        );
        assert!(errors[0].1.contains("cannot have bgp-advertisements"));
        let mut errors = vec![];
        convert_text("address-pool:\n- name: a\n", "m", &mut errors);
        assert_eq!(errors[0].0, "data.config.address-pool", "{errors:?}");
    }
}
