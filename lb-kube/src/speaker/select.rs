//! What both announcement modes read the same way (reference/metallb.md
//! §1.7, §3.1, §4.1): which Services hold addresses inside a pool in
//! force, which advertisements select a pool and a Service, which nodes
//! may announce, and where a Service has serving endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;
use lb_alloc::{LabelSelector, Labels, PoolSet, ServiceKey};

use crate::config::label_selector;
use crate::objects::Object;
use crate::source::Snapshot;

/// The label that keeps a node out of every election.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A Service of type LoadBalancer whose addresses lie in a pool in force.
#[derive(Debug)]
pub struct Candidate<'a> {
    /// The Service.
    pub service: &'a Service,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its addresses, as its status holds them.
    pub ips: Vec<IpAddr>,
    /// The pool they are in.
    pub pool: &'a str,
    /// That pool's labels.
    pub pool_labels: Labels,
    /// The Service's labels.
    pub labels: Labels,
    /// Whether it shares its address (`allow-shared-ip`): then no
    /// advertisement with Service selectors may take it.
    pub shared: bool,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
}

impl Candidate<'_> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The Services with addresses to announce in `view`. An address is
/// announced only inside a pool in force (the one its status names, else
/// the one holding it), as MetalLB's speakers do: a status that says
/// otherwise (edited by hand, a pool since deleted) never makes a node
/// claim an address that is not the cluster's to give.
pub fn candidates<'a>(view: &'a Snapshot, pools_in_force: &'a PoolSet) -> Vec<Candidate<'a>> {
    let mut pools: BTreeMap<&str, Labels> = BTreeMap::new();
    for (_, o) in &view.objects {
        if let Object::IPAddressPool(p) = o {
            pools.insert(
                p.metadata.name.as_deref().unwrap_or_default(),
                p.metadata.labels.clone().unwrap_or_default(),
            );
        }
    }
    let mut out = Vec::new();
    for (_, o) in &view.objects {
        let Object::Service(s) = o else { continue };
        let spec = s.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
            continue;
        }
        let namespace = s.metadata.namespace.as_deref().unwrap_or("default");
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let class = spec.and_then(|s| s.load_balancer_class.as_deref());
        let Some(held) = view
            .status
            .get(&ServiceKey::new(namespace, name))
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
        out.push(Candidate {
            service: s,
            namespace,
            name,
            ips: held.state.ips.clone(),
            pool: pool.name(),
            pool_labels: pools.get(pool.name()).cloned().unwrap_or_default(),
            labels: s.metadata.labels.clone().unwrap_or_default(),
            shared: s.metadata.annotations.as_ref().is_some_and(|a| {
                a.contains_key("metallb.io/allow-shared-ip") || a.contains_key("metallb.universe.tf/allow-shared-ip")
            }),
            local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
        });
    }
    out
}

/// Whether an advertisement that names the pools `names` and selects
/// `selectors` takes the pool `name` with `labels` (none named nor
/// selected: every pool).
pub fn selects_pool(names: Option<&[String]>, selectors: Option<&[KubeSelector]>, name: &str, labels: &Labels) -> bool {
    let names = names.unwrap_or_default();
    let selectors = selectors.unwrap_or_default();
    (names.is_empty() && selectors.is_empty())
        || names.iter().any(|n| n == name)
        || selectors.iter().any(|s| matches(s, labels))
}

/// An empty (or absent) selector list takes everything; otherwise one must
/// match.
pub fn any_or_all(list: Option<&Vec<KubeSelector>>, labels: &Labels) -> bool {
    match list {
        None => true,
        Some(l) if l.is_empty() => true,
        Some(l) => l.iter().any(|s| matches(s, labels)),
    }
}

/// A selector that does not parse takes nothing (its object reports it).
pub fn matches(s: &KubeSelector, labels: &Labels) -> bool {
    label_selector(s).is_ok_and(|s: LabelSelector| s.matches(labels))
}

/// Whether the node says its network is unavailable.
pub fn network_unavailable(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "NetworkUnavailable" && c.status == "True"))
}

/// Whether a node may announce at all: not `NetworkUnavailable`, not
/// excluded from external load balancers.
pub fn eligible(n: &Node) -> bool {
    !network_unavailable(n)
        && !n
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EXCLUDE_LABEL))
}

/// The Node object named `name`.
pub fn node<'a>(view: &'a Snapshot, name: &str) -> Option<&'a Node> {
    view.objects.iter().find_map(|(_, o)| match o {
        Object::Node(n) if n.metadata.name.as_deref() == Some(name) => Some(n.as_ref()),
        _ => None,
    })
}

/// The nodes with a serving endpoint, per Service (namespace, name) with
/// one serving anywhere.
pub fn serving_nodes(view: &Snapshot) -> BTreeMap<(String, String), BTreeSet<String>> {
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
