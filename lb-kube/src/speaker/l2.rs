//! What a node announces by ARP/NDP, decided over a source view with
//! MetalLB's rules (reference/metallb.md §3.1): a Service of type
//! LoadBalancer with addresses, in a pool some L2Advertisement selects
//! (by pool name or labels, and by Service labels), with a serving
//! endpoint somewhere, is announced by one node, chosen by
//! [`lb_arp::election::announcer`] among the nodes alive that are not
//! `NetworkUnavailable` nor excluded from external load balancers and that
//! an advertisement's node selectors take (with `externalTrafficPolicy:
//! Local`, only nodes with a serving endpoint).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use lb_alloc::{LabelSelector, Labels, PoolSet, ServiceKey};
use lb_arp::election;

use crate::config::label_selector;
use crate::objects::{L2Advertisement, Object};
use crate::source::Snapshot;

/// The label that keeps a node out of every election.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Addresses one node announces for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The Service, `namespace/name`.
    pub service: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// The interfaces to announce on; empty: every usable one.
    pub interfaces: Vec<String>,
}

/// What `node` announces in `view`, whose address pools in force are
/// `pools`. `alive` is the membership's view of the live nodes; `None`
/// takes every Node object as alive. An address is announced only inside a
/// pool in force (the one its status names, else the one holding it), as
/// MetalLB's speakers do: a status that says otherwise (edited by hand, a
/// pool since deleted) never makes a node claim an address that is not
/// the cluster's to give.
pub fn announcements(
    view: &Snapshot,
    pools_in_force: &PoolSet,
    node: &str,
    alive: Option<&BTreeSet<String>>,
) -> Vec<Announce> {
    let mut nodes: Vec<&Node> = Vec::new();
    let mut pools: BTreeMap<&str, Labels> = BTreeMap::new();
    let mut ads: Vec<&L2Advertisement> = Vec::new();
    let mut services: Vec<&Service> = Vec::new();
    for (_, o) in &view.objects {
        match o {
            Object::Node(n) => nodes.push(n),
            Object::IPAddressPool(p) => {
                pools.insert(
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.metadata.labels.clone().unwrap_or_default(),
                );
            }
            Object::L2Advertisement(a) => ads.push(a),
            Object::Service(s) => services.push(s),
            _ => {}
        }
    }
    let serving = serving_nodes(view);
    let mut out = Vec::new();
    for s in services {
        let spec = s.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
            continue;
        }
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let class = spec.and_then(|s| s.load_balancer_class.as_deref());
        let Some(held) = view
            .status
            .get(&ServiceKey::new(ns, name))
            .and_then(|h| h.iter().find(|h| h.class.as_deref() == class))
        else {
            continue;
        };
        let holds = |p: &&lb_alloc::Pool| held.state.ips.iter().all(|ip| p.contains(*ip));
        let Some(pool) = pools_in_force.get(&held.state.pool).filter(holds).or_else(|| {
            let first = held.state.ips.first()?;
            pools_in_force.pool_of(*first).filter(holds)
        }) else {
            continue;
        };
        let service_labels = s.metadata.labels.clone().unwrap_or_default();
        let pool_labels = pools.get(pool.name()).cloned().unwrap_or_default();
        let shared = s.metadata.annotations.as_ref().is_some_and(|a| {
            a.contains_key("metallb.io/allow-shared-ip") || a.contains_key("metallb.universe.tf/allow-shared-ip")
        });
        let mine: Vec<&L2Advertisement> = ads
            .iter()
            .copied()
            .filter(|a| {
                selects_pool(a, pool.name(), &pool_labels)
                    && any_or_all(a.spec.service_selectors.as_ref(), &service_labels)
            })
            .collect();
        // A shared address cannot follow one Service's selectors.
        if mine.is_empty()
            || (shared
                && mine
                    .iter()
                    .any(|a| a.spec.service_selectors.as_ref().is_some_and(|s| !s.is_empty())))
        {
            continue;
        }
        let endpoint_nodes: Vec<&str> = serving
            .get(&(ns.to_owned(), name.to_owned()))
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let candidates: Vec<election::Node<'_>> = nodes
            .iter()
            .map(|n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                let name = n.metadata.name.as_deref().unwrap_or_default();
                election::Node {
                    name,
                    alive: alive.is_none_or(|a| a.contains(name)),
                    network_unavailable: network_unavailable(n),
                    excluded: labels.contains_key(EXCLUDE_LABEL),
                    advertised: mine.iter().any(|a| any_or_all(a.spec.node_selectors.as_ref(), &labels)),
                    preference: preference(&mine, &labels),
                }
            })
            .collect();
        let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let ips = held.state.ips.clone();
        let chosen = election::announcer(
            &election::Service {
                ips: &ips,
                local,
                serving: serving.contains_key(&(ns.to_owned(), name.to_owned())),
                endpoint_nodes: &endpoint_nodes,
            },
            &candidates,
        );
        if chosen != Some(node) {
            continue;
        }
        let labels = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let here: Vec<&&L2Advertisement> = mine
            .iter()
            .filter(|a| any_or_all(a.spec.node_selectors.as_ref(), &labels))
            .collect();
        let every = here
            .iter()
            .any(|a| a.spec.interfaces.as_ref().is_none_or(Vec::is_empty));
        let mut interfaces: Vec<String> = match every {
            true => Vec::new(),
            false => here
                .iter()
                .flat_map(|a| a.spec.interfaces.iter().flatten().cloned())
                .collect(),
        };
        interfaces.sort();
        interfaces.dedup();
        out.push(Announce {
            service: format!("{ns}/{name}"),
            ips,
            interfaces,
        });
    }
    out
}

/// Whether an advertisement takes the pool `name` (no pool named or
/// selected: every pool).
fn selects_pool(a: &L2Advertisement, name: &str, labels: &Labels) -> bool {
    let names = a.spec.ip_address_pools.as_deref().unwrap_or_default();
    let selectors = a.spec.ip_address_pool_selectors.as_deref().unwrap_or_default();
    (names.is_empty() && selectors.is_empty())
        || names.iter().any(|n| n == name)
        || selectors.iter().any(|s| matches(s, labels))
}

/// An empty (or absent) selector list takes everything; otherwise one must
/// match.
fn any_or_all(
    list: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>>,
    labels: &Labels,
) -> bool {
    match list {
        None => true,
        Some(l) if l.is_empty() => true,
        Some(l) => l.iter().any(|s| matches(s, labels)),
    }
}

/// A selector that does not parse takes nothing (its object reports it).
fn matches(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector, labels: &Labels) -> bool {
    label_selector(s).is_ok_and(|s: LabelSelector| s.matches(labels))
}

fn preference(ads: &[&L2Advertisement], labels: &Labels) -> i64 {
    ads.iter()
        .flat_map(|a| a.spec.preferred_node_selectors.iter().flatten())
        .filter(|p| matches(&p.preference, labels))
        .map(|p| i64::from(p.weight))
        .sum()
}

fn network_unavailable(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "NetworkUnavailable" && c.status == "True"))
}

/// The nodes with a serving endpoint, per Service (namespace, name) with
/// one serving anywhere.
fn serving_nodes(view: &Snapshot) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for o in view.endpoints.values() {
        let Object::EndpointSlice(es) = o else { continue };
        let ns = es.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let Some(service) = es
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        for e in es.endpoints.iter().flatten() {
            let c = e.conditions.as_ref();
            // `serving` (Kubernetes 1.20+), else `ready`; unset means yes.
            let serving = c.and_then(|c| c.serving.or(c.ready)).unwrap_or(true);
            if serving {
                // Served somewhere, even by an endpoint without a node.
                let nodes = out.entry((ns.clone(), service.clone())).or_default();
                if let Some(node) = &e.node_name {
                    nodes.insert(node.clone());
                }
            }
        }
    }
    out
}
