//! What a node announces by ARP/NDP, decided over a source view with
//! MetalLB's rules (reference/metallb.md §3.1): a Service of type
//! LoadBalancer with addresses, in a pool some L2Advertisement selects
//! (by pool name or labels, and by Service labels), with a serving
//! endpoint somewhere, is announced by one node, chosen by
//! [`lb_arp::election::announcer`] among the nodes alive that are not
//! `NetworkUnavailable` nor excluded from external load balancers and that
//! an advertisement's node selectors take (with `externalTrafficPolicy:
//! Local`, only nodes with a serving endpoint).

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use lb_alloc::{Labels, PoolSet};
use lb_arp::election;

use super::select::{any_or_all, candidates, matches, network_unavailable, selects_pool, serving_nodes};
use crate::objects::{L2Advertisement, Object};
use crate::source::Snapshot;

pub use super::select::EXCLUDE_LABEL;

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
    let mut ads: Vec<&L2Advertisement> = Vec::new();
    for (_, o) in &view.objects {
        match o {
            Object::Node(n) => nodes.push(n),
            Object::L2Advertisement(a) => ads.push(a),
            _ => {}
        }
    }
    let serving = serving_nodes(view);
    let mut out = Vec::new();
    for c in candidates(view, pools_in_force) {
        let (ns, name) = (c.namespace, c.name);
        let mine: Vec<&L2Advertisement> = ads
            .iter()
            .copied()
            .filter(|a| {
                selects_pool(
                    a.spec.ip_address_pools.as_deref(),
                    a.spec.ip_address_pool_selectors.as_deref(),
                    c.pool,
                    &c.pool_labels,
                ) && any_or_all(a.spec.service_selectors.as_ref(), &c.labels)
            })
            .collect();
        // A shared address cannot follow one Service's selectors.
        if mine.is_empty()
            || (c.shared
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
        let local = c.local;
        let ips = c.ips.clone();
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

fn preference(ads: &[&L2Advertisement], labels: &Labels) -> i64 {
    ads.iter()
        .flat_map(|a| a.spec.preferred_node_selectors.iter().flatten())
        .filter(|p| matches(&p.preference, labels))
        .map(|p| i64::from(p.weight))
        .sum()
}
