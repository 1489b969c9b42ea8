//! Which node announces a Service's addresses by ARP/NDP, over a view read
//! from manifests: MetalLB's rules, one node at a time.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use lb_alloc::{PoolSet, ServiceKey};
use lb_kube::source::file::parse_manifests;
use lb_kube::source::{HeldStatus, Snapshot};
use lb_kube::speaker::l2::{Announce, announcements};
use lb_kube::status::ServiceState;

fn node(name: &str, labels: &str, unavailable: bool) -> String {
    let cond = if unavailable {
        "\nstatus: {conditions: [{type: NetworkUnavailable, status: \"True\"}]}"
    } else {
        ""
    };
    format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}{cond}\n")
}

/// Three nodes, a pool `p`, an advertisement `ad` (with `ad_spec`), the
/// Service `web` (with `svc_extra` in its spec) holding 192.0.2.1 from
/// `pool`, and endpoints on `endpoint_nodes`.
fn view(ad_spec: &str, svc_extra: &str, pool: &str, endpoint_nodes: &[&str], node_c: &str) -> Snapshot {
    let endpoints: Vec<String> = endpoint_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match *n {
            // An endpoint without a node (a hand-made slice).
            "" => format!("{{addresses: [10.1.0.{i}], conditions: {{ready: true, serving: true}}}}"),
            n => format!("{{addresses: [10.1.0.{i}], nodeName: {n}, conditions: {{ready: true, serving: true}}}}"),
        })
        .collect();
    let text = [
        node("node-a", "zone: east", false),
        node("node-b", "zone: west", false),
        node_c.to_owned(),
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system, labels: {tier: edge}}\nspec: {addresses: [192.0.2.0/24]}\n".to_owned(),
        format!("apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: ad, namespace: metallb-system}}\nspec: {{{ad_spec}}}\n"),
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default, labels: {{app: web}}}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]{svc_extra}}}\n"),
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{}]\n",
            endpoints.join(", ")
        ),
    ]
    .join("---\n");
    let mut snap = parse_manifests(Path::new("test.yaml"), &text);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    snap.status.insert(
        ServiceKey::new("default", "web"),
        vec![HeldStatus {
            class: None,
            state: ServiceState {
                ips: vec!["192.0.2.1".parse::<IpAddr>().unwrap()],
                pool: pool.to_owned(),
            },
        }],
    );
    snap
}

/// The node that announces, and what it announces.
fn who(snap: &Snapshot, alive: Option<&BTreeSet<String>>) -> Vec<(&'static str, Announce)> {
    ["node-a", "node-b", "node-c"]
        .into_iter()
        .flat_map(|n| {
            let (pools, _) = lb_kube::config::pools(snap, &PoolSet::default(), &mut Vec::new());
            announcements(snap, &pools, n, alive).into_iter().map(move |a| (n, a))
        })
        .collect()
}

fn only(snap: &Snapshot) -> Option<&'static str> {
    let found = who(snap, None);
    assert!(found.len() <= 1, "one announcer at most: {found:?}");
    found.first().map(|(n, _)| *n)
}

const C: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-c, labels: {zone: east}}\n";

#[test]
fn one_node_announces_chosen_as_metallb_chooses() {
    // sha256("node-c#192.0.2.1") ranks first, then node-a, then node-b.
    let all = view("", "", "p", &["node-b"], C);
    let found = who(&all, None);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "node-c");
    assert_eq!(found[0].1.ips, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert!(found[0].1.interfaces.is_empty(), "every interface");
    // Not alive in the membership, unavailable, excluded: the next one.
    let alive: BTreeSet<String> = ["node-a".into(), "node-b".into()].into();
    assert_eq!(who(&all, Some(&alive))[0].0, "node-a");
    let unavailable = node("node-c", "zone: east", true);
    assert_eq!(only(&view("", "", "p", &["node-b"], &unavailable)), Some("node-a"));
    let excluded = node(
        "node-c",
        "zone: east, node.kubernetes.io/exclude-from-external-load-balancers: \"\"",
        false,
    );
    assert_eq!(only(&view("", "", "p", &["node-b"], &excluded)), Some("node-a"));
}

#[test]
fn advertisements_select_pools_services_nodes_and_interfaces() {
    // Only zone y nodes, on eth1.
    let y = view(
        "nodeSelectors: [{matchLabels: {zone: west}}], interfaces: [eth1]",
        "",
        "p",
        &["node-a"],
        C,
    );
    let found = who(&y, None);
    assert_eq!(
        (found[0].0, found[0].1.interfaces.clone()),
        ("node-b", vec!["eth1".to_owned()])
    );
    // The pool by name or label; another pool's Service is not announced.
    assert_eq!(
        only(&view("ipAddressPools: [p]", "", "p", &["node-b"], C)),
        Some("node-c")
    );
    assert_eq!(
        only(&view(
            "ipAddressPoolSelectors: [{matchLabels: {tier: edge}}]",
            "",
            "p",
            &["node-b"],
            C
        )),
        Some("node-c")
    );
    assert_eq!(only(&view("ipAddressPools: [other]", "", "p", &["node-b"], C)), None);
    // Service selectors.
    assert_eq!(
        only(&view(
            "serviceSelectors: [{matchLabels: {app: db}}]",
            "",
            "p",
            &["node-b"],
            C
        )),
        None
    );
    assert_eq!(
        only(&view(
            "serviceSelectors: [{matchLabels: {app: web}}]",
            "",
            "p",
            &["node-b"],
            C
        )),
        Some("node-c")
    );
    // Preferred nodes come before the hash.
    let preferred = "preferredNodeSelectors: [{weight: 10, preference: {matchLabels: {zone: west}}}]";
    assert_eq!(only(&view(preferred, "", "p", &["node-b"], C)), Some("node-b"));
}

#[test]
fn endpoints_decide_whether_and_with_local_policy_where() {
    // No serving endpoint anywhere: nobody, even with the Cluster policy.
    assert_eq!(only(&view("", "", "p", &[], C)), None);
    // One without a node still serves: announced with the Cluster policy,
    // by nobody with Local.
    assert_eq!(only(&view("", "", "p", &[""], C)), Some("node-c"));
    assert_eq!(only(&view("", ", externalTrafficPolicy: Local", "p", &[""], C)), None);
    // Local: only a node with an endpoint.
    assert_eq!(
        only(&view("", ", externalTrafficPolicy: Local", "p", &["node-b"], C)),
        Some("node-b")
    );
    assert_eq!(
        only(&view(
            "",
            ", externalTrafficPolicy: Local",
            "p",
            &["node-a", "node-b"],
            C
        )),
        Some("node-a")
    );
}

/// MetalLB's own examples give L2Advertisement and BGPAdvertisement no
/// `spec`; they apply unchanged (every pool, every node), and the CRDs
/// accept them too.
#[test]
fn advertisements_without_a_spec_are_taken_as_metallb_takes_them() {
    let text = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all, namespace: metallb-system}\n---\n\
                apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: all, namespace: metallb-system}\n";
    let snap = parse_manifests(Path::new("test.yaml"), text);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    assert_eq!(snap.objects.len(), 2);
    for crd in lb_kube::objects::metallb::crds() {
        let kind = crd.spec.names.kind.clone();
        for v in &crd.spec.versions {
            let required = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.required.clone())
                .unwrap_or_default();
            let optional = [
                "L2Advertisement",
                "BGPAdvertisement",
                "BFDProfile",
                "Community",
                "ServiceL2Status",
                "ServiceBGPStatus",
            ]
            .contains(&kind.as_str());
            assert_eq!(!required.contains(&"spec".to_owned()), optional, "{kind} {}", v.name);
        }
    }
}

/// A status that names an address outside every pool (a state file edited
/// by hand, a pool deleted since) makes no node claim it; one without a
/// pool name is taken by the pool that holds the address.
#[test]
fn only_addresses_inside_a_pool_in_force_are_announced() {
    let mut snap = view("", "", "p", &["node-b"], C);
    let set = |snap: &mut Snapshot, ip: &str, pool: &str| {
        snap.status.insert(
            ServiceKey::new("default", "web"),
            vec![HeldStatus {
                class: None,
                state: ServiceState {
                    ips: vec![ip.parse::<IpAddr>().unwrap()],
                    pool: pool.to_owned(),
                },
            }],
        );
    };
    for (ip, pool) in [
        ("10.88.0.1", "p"),
        ("255.255.255.255", "p"),
        ("10.88.0.1", ""),
        ("192.0.2.1", "gone"),
    ] {
        set(&mut snap, ip, pool);
        let found = who(&snap, None);
        if ip == "192.0.2.1" {
            // Named pool gone, but the address is p's: p's advertisement.
            assert_eq!(found.len(), 1, "{found:?}");
        } else {
            assert!(found.is_empty(), "{ip} from {pool:?}: {found:?}");
        }
    }
    set(&mut snap, "192.0.2.7", "");
    assert_eq!(who(&snap, None).len(), 1);
}
