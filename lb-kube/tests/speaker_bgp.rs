//! What a node announces by BGP, and to which peers, over a view read from
//! manifests: MetalLB's rules (peers by node selector, advertisements by
//! pool, Service and node, aggregation, communities and aliases, local
//! preference, endpoints), and every invalid field reported with the last
//! good version of its object kept.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use lb_alloc::{PoolSet, ServiceKey};
use lb_kube::source::file::parse_manifests;
use lb_kube::source::{HeldStatus, Problem, Snapshot};
use lb_kube::speaker::bgp::{Config, Plan};
use lb_kube::status::ServiceState;

const NODES: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {zone: east}}\n---\n\
apiVersion: v1\nkind: Node\nmetadata: {name: node-b, labels: {zone: west}}\n";

const POOL: &str = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system, labels: {tier: edge}}\n\
spec: {addresses: [192.0.2.0/24, \"2001:db8::/120\"]}\n";

fn peer(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec: {{myASN: 65001, {spec}}}\n"
    )
}

fn ad(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec: {{{spec}}}\n"
    )
}

/// The view of `docs` plus the nodes, the pool and the Service `web`
/// holding 192.0.2.1 and 2001:db8::1, with `svc_extra` in its spec and
/// endpoints on `endpoint_nodes`.
fn view(docs: &[String], svc_extra: &str, endpoint_nodes: &[&str]) -> Snapshot {
    let endpoints: Vec<String> = endpoint_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{{addresses: [10.1.0.{i}], nodeName: {n}, conditions: {{ready: true}}}}"))
        .collect();
    let mut all = vec![NODES.to_owned(), POOL.to_owned()];
    all.extend(docs.iter().cloned());
    all.push(format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default, labels: {{app: web}}}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]{svc_extra}}}\n"
    ));
    all.push(format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{}]\n",
        endpoints.join(", ")
    ));
    let mut snap = parse_manifests(Path::new("test.yaml"), &all.join("---\n"));
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    snap.status.insert(
        ServiceKey::new("default", "web"),
        vec![HeldStatus {
            class: None,
            state: ServiceState {
                ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
                pool: "p".into(),
            },
        }],
    );
    snap
}

/// The plan for `node`, with the configuration read from `snap` after
/// `config` (an earlier one), and the problems found.
fn plan_after(config: &mut Config, snap: &Snapshot, node: &str) -> (Plan, Vec<Problem>) {
    let mut problems = Vec::new();
    let (pools, _) = lb_kube::config::pools(snap, &PoolSet::default(), &mut problems);
    config.update(snap, &pools, &mut problems);
    let plan = config.plan(snap, &pools, node);
    problems.extend(plan.problems.clone());
    (plan, problems)
}

fn plan(snap: &Snapshot, node: &str) -> (Plan, Vec<Problem>) {
    plan_after(&mut Config::default(), snap, node)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The prefixes announced to `peer`.
fn prefixes(p: &Plan, peer: &str) -> Vec<String> {
    p.routes
        .get(peer)
        .map(|r| r.keys().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn every_node_with_a_matching_advertisement_announces_to_its_peers() {
    let snap = view(
        &[
            peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"),
            peer(
                "r2",
                "peerASN: 65000, peerAddress: \"2001:db8::fe\", nodeSelectors: [{matchLabels: {zone: west}}]",
            ),
            ad("all", ""),
        ],
        "",
        &["node-b"],
    );
    let (a, problems) = plan(&snap, "node-a");
    assert!(problems.is_empty(), "{problems:?}");
    // node-a has r1 only; both addresses go to it (the session carries
    // what its family allows).
    assert_eq!(a.peers.keys().collect::<Vec<_>>(), ["r1"]);
    assert_eq!(prefixes(&a, "r1"), ["192.0.2.1/32", "2001:db8::1/128"]);
    let (b, _) = plan(&snap, "node-b");
    assert_eq!(b.peers.keys().collect::<Vec<_>>(), ["r1", "r2"]);
    assert_eq!(prefixes(&b, "r2"), ["192.0.2.1/32", "2001:db8::1/128"]);
    assert_eq!(
        b.services
            .get(&("default".into(), "web".into()))
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    let addresses: Vec<IpAddr> = b.addresses["default/web"].iter().copied().collect();
    assert_eq!(addresses.len(), 2);
}

#[test]
fn endpoints_decide_whether_and_with_local_policy_where() {
    let docs = [peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"), ad("all", "")];
    // No serving endpoint anywhere: nothing announced, the session stays.
    let (p, _) = plan(&view(&docs, "", &[]), "node-a");
    assert_eq!(p.peers.len(), 1);
    assert!(prefixes(&p, "r1").is_empty());
    // Cluster policy: an endpoint anywhere will do.
    let (p, _) = plan(&view(&docs, "", &["node-b"]), "node-a");
    assert_eq!(prefixes(&p, "r1").len(), 2);
    // Local policy: only the nodes with one.
    let local = ", externalTrafficPolicy: Local";
    assert!(prefixes(&plan(&view(&docs, local, &["node-b"]), "node-a").0, "r1").is_empty());
    assert_eq!(
        prefixes(&plan(&view(&docs, local, &["node-b"]), "node-b").0, "r1").len(),
        2
    );
}

#[test]
fn advertisements_select_pools_services_nodes_and_peers() {
    let r = [
        peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"),
        peer("r2", "peerASN: 65000, peerAddress: 192.0.2.253"),
    ];
    let with = |a: &str| {
        let mut d = r.to_vec();
        d.push(ad("x", a));
        plan(&view(&d, "", &["node-a"]), "node-a").0
    };
    assert_eq!(prefixes(&with("ipAddressPools: [p]"), "r1").len(), 2);
    assert!(prefixes(&with("ipAddressPools: [other]"), "r1").is_empty());
    assert_eq!(
        prefixes(&with("ipAddressPoolSelectors: [{matchLabels: {tier: edge}}]"), "r1").len(),
        2
    );
    assert!(prefixes(&with("ipAddressPoolSelectors: [{matchLabels: {tier: core}}]"), "r1").is_empty());
    assert_eq!(
        prefixes(&with("serviceSelectors: [{matchLabels: {app: web}}]"), "r1").len(),
        2
    );
    assert!(prefixes(&with("serviceSelectors: [{matchLabels: {app: db}}]"), "r1").is_empty());
    assert_eq!(
        prefixes(&with("nodeSelectors: [{matchLabels: {zone: east}}]"), "r1").len(),
        2
    );
    assert!(prefixes(&with("nodeSelectors: [{matchLabels: {zone: west}}]"), "r1").is_empty());
    let only_r2 = with("peers: [r2]");
    assert!(prefixes(&only_r2, "r1").is_empty());
    assert_eq!(prefixes(&only_r2, "r2").len(), 2);
}

#[test]
fn aggregation_communities_aliases_and_local_preference() {
    let docs = [
        peer("r1", "peerASN: 65001, peerAddress: 192.0.2.254"),
        "apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: communities, namespace: metallb-system}\n\
         spec: {communities: [{name: no-export, value: \"65535:65281\"}, {name: big, value: \"large:65001:1:2\"}]}\n"
            .to_owned(),
        ad(
            "wide",
            "aggregationLength: 24, aggregationLengthV6: 120, localPref: 50, communities: [\"65001:1\", no-export]",
        ),
        ad("narrow", "localPref: 200, communities: [\"large:65001:7:9\", big]"),
        ad("again", "localPref: 200, communities: [\"65001:1\", \"65001:2\"]"),
    ];
    let (p, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
    assert!(problems.is_empty(), "{problems:?}");
    let r = &p.routes["r1"];
    assert_eq!(
        r.keys().copied().collect::<Vec<_>>(),
        [
            net("192.0.2.0/24"),
            net("192.0.2.1/32"),
            net("2001:db8::/120"),
            net("2001:db8::1/128")
        ]
    );
    let wide = &r[&net("192.0.2.0/24")];
    assert_eq!(wide.local_pref, Some(50));
    assert_eq!(
        wide.communities.iter().copied().collect::<Vec<_>>(),
        [0xfde9_0001, 0xffff_ff01]
    );
    // Two advertisements of one prefix: communities united.
    let narrow = &r[&net("192.0.2.1/32")];
    assert_eq!(narrow.local_pref, Some(200));
    assert_eq!(
        narrow.communities.iter().copied().collect::<Vec<_>>(),
        [0xfde9_0001, 0xfde9_0002]
    );
    assert_eq!(
        narrow.large_communities.iter().copied().collect::<Vec<_>>(),
        [[65001, 1, 2], [65001, 7, 9]]
    );

    // Different local preferences for one prefix: the highest, reported.
    let mut conflicting = docs.to_vec();
    conflicting.push(ad("low", "localPref: 10"));
    let (p, problems) = plan(&view(&conflicting, "", &["node-a"]), "node-a");
    assert_eq!(p.routes["r1"][&net("192.0.2.1/32")].local_pref, Some(200));
    assert!(problems.iter().any(|p| p.message.contains("localPref")), "{problems:?}");
}

#[test]
fn a_node_that_may_not_announce_keeps_its_sessions_and_announces_nothing() {
    let docs = [peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"), ad("all", "")];
    let mut snap = view(&docs, "", &["node-a"]);
    let excluded = parse_manifests(
        Path::new("n.yaml"),
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {node.kubernetes.io/exclude-from-external-load-balancers: \"\"}}\n",
    );
    let i = snap
        .objects
        .iter()
        .position(
            |(_, o)| matches!(o, lb_kube::objects::Object::Node(n) if n.metadata.name.as_deref() == Some("node-a")),
        )
        .unwrap();
    snap.objects[i] = excluded.objects[0].clone();
    let (p, _) = plan(&snap, "node-a");
    assert_eq!(p.peers.len(), 1);
    assert!(prefixes(&p, "r1").is_empty());
    // No Node object at all: the same.
    let (p, _) = plan(&view(&docs, "", &["node-a"]), "node-z");
    assert_eq!(p.peers.len(), 1);
    assert!(prefixes(&p, "r1").is_empty());
}

#[test]
fn every_invalid_field_is_reported_and_disables_only_its_object() {
    let bad_peers = [
        ("peerAddress: 192.0.2.254", "spec.peerASN"),
        (
            "peerASN: 65000, dynamicASN: internal, peerAddress: 192.0.2.254",
            "spec.dynamicASN",
        ),
        ("dynamicASN: sideways, peerAddress: 192.0.2.254", "spec.dynamicASN"),
        ("peerASN: 65000", "spec.peerAddress"),
        ("peerASN: 65000, interface: eth0", "spec.interface"),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, nodeSelectors: [{matchLabels: {\"a b\": c}}]",
            "spec.nodeSelectors[0]",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, nodeSelectors: [{matchLabels: {kubernetes.io/hostname: \"node a\"}}]",
            "spec.nodeSelectors[0]",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, interface: eth0",
            "spec.interface",
        ),
        ("peerASN: 65000, peerAddress: router", "spec.peerAddress"),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, sourceAddress: \"::1\"",
            "spec.sourceAddress",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: 2s",
            "spec.holdTime",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: soon",
            "spec.holdTime",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: 30s, keepaliveTime: 60s",
            "spec.keepaliveTime",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, connectTime: 1500ms",
            "spec.connectTime",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, routerID: \"::1\"",
            "spec.routerID",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, password: a, passwordSecret: {name: s}",
            "spec.passwordSecret",
        ),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, passwordSecret: {name: missing}",
            "spec.passwordSecret",
        ),
        (
            "peerASN: 65001, peerAddress: 192.0.2.254, ebgpMultiHop: true",
            "spec.ebgpMultiHop",
        ),
        ("peerASN: 65000, peerAddress: 192.0.2.254, vrf: red", "spec.vrf"),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, routerID: 0.0.0.0",
            "spec.routerID",
        ),
        ("peerASN: 23456, peerAddress: 192.0.2.254", "spec.peerASN"),
        (
            "peerASN: 65000, peerAddress: 192.0.2.254, nodeSelectors: [{matchExpressions: [{key: zone, operator: Sideways}]}]",
            "spec.nodeSelectors[0]",
        ),
    ];
    for (spec, field) in bad_peers {
        let docs = [
            peer("bad", spec),
            peer("good", "peerASN: 65000, peerAddress: 192.0.2.250"),
            ad("all", ""),
        ];
        let (p, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
        assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["good"], "{spec}");
        assert!(
            problems
                .iter()
                .any(|p| p.field.as_deref() == Some(field) && p.object.as_ref().is_some_and(|o| o.name == "bad")),
            "{spec}: {problems:?}"
        );
        assert_eq!(prefixes(&p, "good").len(), 2, "{spec}");
    }
    let too_many: Vec<String> = (0..100).map(|i| format!("\"large:1:2:{i}\"")).collect();
    let too_many = format!("communities: [{}]", too_many.join(", "));
    let bad_ads = [
        ("aggregationLength: 33", "spec.aggregationLength"),
        ("aggregationLength: 16", "spec.aggregationLength"),
        ("aggregationLengthV6: 64", "spec.aggregationLengthV6"),
        ("communities: [\"70000:1\"]", "spec.communities[0]"),
        ("communities: [\"65001:1\", nosuchalias]", "spec.communities[1]"),
        (
            "aggregationLength: 28, serviceSelectors: [{matchLabels: {app: web}}]",
            "spec.serviceSelectors",
        ),
        (
            "serviceSelectors: [{matchExpressions: [{key: app, operator: In}]}]",
            "spec.serviceSelectors[0]",
        ),
        (too_many.as_str(), "spec.communities"),
        (
            "ipAddressPoolSelectors: [{matchLabels: {\"a b\": c}}]",
            "spec.ipAddressPoolSelectors[0]",
        ),
    ];
    for (spec, field) in bad_ads {
        let docs = [peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"), ad("bad", spec)];
        let (p, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
        assert!(prefixes(&p, "r1").is_empty(), "{spec}");
        assert!(
            problems.iter().any(|p| p.field.as_deref() == Some(field)),
            "{spec}: {problems:?}"
        );
    }
    // BFD is a warning: the session runs without it.
    let docs = [peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254, bfdProfile: fast")];
    let (p, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
    assert_eq!(p.peers.len(), 1);
    assert!(problems.iter().any(|p| p.field.as_deref() == Some("spec.bfdProfile")));
}

#[test]
fn a_broken_edit_keeps_the_last_good_version_in_force() {
    let good = [
        peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: 30s"),
        ad("all", "communities: [\"65001:1\"]"),
    ];
    let mut config = Config::default();
    let (before, _) = plan_after(&mut config, &view(&good, "", &["node-a"]), "node-a");
    let broken = [
        peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: 1s"),
        ad("all", "communities: [\"65001:999999\"]"),
    ];
    let (after, problems) = plan_after(&mut config, &view(&broken, "", &["node-a"]), "node-a");
    assert_eq!(after, before);
    assert!(
        problems
            .iter()
            .filter(|p| p.message.contains("keeping its last good version"))
            .count()
            == 2,
        "{problems:?}"
    );
    // Deleted: gone.
    let (gone, _) = plan_after(&mut config, &view(&[], "", &["node-a"]), "node-a");
    assert!(gone.peers.is_empty());
}

#[test]
fn a_password_comes_from_a_basic_auth_secret() {
    let secret = |kind: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: metallb-system}}\ntype: {kind}\nstringData: {{password: hunter2}}\n"
        )
    };
    let docs = [
        peer(
            "r1",
            "peerASN: 65000, peerAddress: 192.0.2.254, passwordSecret: {name: s}",
        ),
        secret("kubernetes.io/basic-auth"),
    ];
    let (p, problems) = plan(&view(&docs, "", &[]), "node-a");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        p.peers["r1"].password.as_ref().map(|p| p.as_bytes()),
        Some(&b"hunter2"[..])
    );
    // Never printed.
    assert!(!format!("{p:?}").contains("hunter2"));
    let docs = [
        peer(
            "r1",
            "peerASN: 65000, peerAddress: 192.0.2.254, passwordSecret: {name: s}",
        ),
        secret("Opaque"),
    ];
    let (p, problems) = plan(&view(&docs, "", &[]), "node-a");
    assert!(p.peers.is_empty());
    assert!(
        problems.iter().any(|p| p.message.contains("basic-auth")),
        "{problems:?}"
    );
}

#[test]
fn durations_and_defaults_follow_metallb() {
    let docs = [
        peer("a", "peerASN: 65000, peerAddress: 192.0.2.254"),
        peer("b", "peerASN: 65000, peerAddress: 192.0.2.253, keepaliveTime: 10s"),
        peer(
            "c",
            "peerASN: 65000, peerAddress: 192.0.2.252, holdTime: 1m30s, keepaliveTime: 5s, connectTime: 5s",
        ),
        peer(
            "d",
            "dynamicASN: external, peerAddress: 192.0.2.251, peerPort: 1179, holdTime: \"0s\"",
        ),
    ];
    let (p, problems) = plan(&view(&docs, "", &[]), "node-a");
    assert!(problems.is_empty(), "{problems:?}");
    let t = |n: &str| {
        (
            p.peers[n].hold_time,
            p.peers[n].keepalive_time,
            p.peers[n].connect_time.as_secs(),
        )
    };
    assert_eq!(t("a"), (90, None, 120));
    assert_eq!(t("b"), (30, Some(10), 120));
    assert_eq!(t("c"), (90, Some(5), 5));
    assert_eq!(t("d"), (0, None, 120));
    assert_eq!(p.peers["d"].port, 1179);
    assert_eq!(p.peers["d"].peer_as, lb_bgp::PeerAs::External);
}

/// The legacy ConfigMap (MetalLB ≤ 0.12) announces as its converted
/// resources would.
#[test]
fn the_legacy_configmap_announces_by_bgp() {
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config, namespace: metallb-system}\ndata:\n  config: |\n    \
                  peers:\n    - {peer-address: 192.0.2.254, peer-asn: 65000, my-asn: 65001, hold-time: 30s}\n    \
                  bgp-communities: {no-export: \"65535:65281\"}\n    \
                  address-pools:\n    - name: p\n      protocol: bgp\n      addresses: [192.0.2.0/24]\n      \
                  bgp-advertisements:\n      - {aggregation-length: 32, communities: [no-export]}\n      \
                  - {aggregation-length: 24}\n";
    let mut all = vec![NODES.to_owned(), config.to_owned()];
    all.push("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n".into());
    all.push(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.1.0.1], nodeName: node-b, conditions: {ready: true}}]\n"
            .into(),
    );
    let mut snap = parse_manifests(Path::new("test.yaml"), &all.join("---\n"));
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    snap.status.insert(
        ServiceKey::new("default", "web"),
        vec![HeldStatus {
            class: None,
            state: ServiceState {
                ips: vec!["192.0.2.1".parse().unwrap()],
                pool: "p".into(),
            },
        }],
    );
    let (p, problems) = plan(&snap, "node-a");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(p.peers.len(), 1);
    let (name, peer) = p.peers.iter().next().unwrap();
    assert_eq!((peer.hold_time, peer.address.to_string().as_str()), (30, "192.0.2.254"));
    let r = &p.routes[name];
    assert_eq!(
        r.keys().copied().collect::<Vec<_>>(),
        [net("192.0.2.0/24"), net("192.0.2.1/32")]
    );
    assert_eq!(
        r[&net("192.0.2.1/32")].communities.iter().copied().collect::<Vec<_>>(),
        [0xffff_ff01]
    );
    assert!(r[&net("192.0.2.0/24")].communities.is_empty());
}

#[test]
fn duplicate_and_unknown_peers_are_reported() {
    let docs = [
        peer("a", "peerASN: 65000, peerAddress: 192.0.2.254"),
        peer("b", "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: 30s"),
        ad("x", "peers: [a, nobody]"),
    ];
    let (p, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
    // One session per router from one node: the first by name when they
    // come together.
    assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["a"]);
    assert!(
        problems
            .iter()
            .any(|p| p.object.as_ref().is_some_and(|o| o.name == "b") && p.message.contains("already peers")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.field.as_deref() == Some("spec.peers[1]")),
        "{problems:?}"
    );
    assert_eq!(prefixes(&p, "a").len(), 2);
    // A duplicate added later never moves the running session, whatever
    // its name; once the first goes, the other takes over.
    let mut config = Config::default();
    let b = peer("b", "peerASN: 65000, peerAddress: 192.0.2.254, holdTime: 30s");
    let (p, _) = plan_after(&mut config, &view(std::slice::from_ref(&b), "", &["node-a"]), "node-a");
    assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["b"]);
    let both = [peer("a", "peerASN: 65000, peerAddress: 192.0.2.254"), b.clone()];
    let (p, problems) = plan_after(&mut config, &view(&both, "", &["node-a"]), "node-a");
    assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["b"], "the one in force stays");
    assert!(
        problems
            .iter()
            .any(|p| p.object.as_ref().is_some_and(|o| o.name == "a") && p.message.contains("already peers")),
        "{problems:?}"
    );
    let (p, _) = plan_after(&mut config, &view(&both[..1], "", &["node-a"]), "node-a");
    assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["a"]);
    // The IPv4-mapped spelling is the same router.
    let mapped = [
        peer("a", "peerASN: 65000, peerAddress: 192.0.2.254"),
        peer("m", "peerASN: 65000, peerAddress: \"::ffff:192.0.2.254\""),
    ];
    let (p, _) = plan_after(&mut config, &view(&mapped, "", &["node-a"]), "node-a");
    assert_eq!(p.peers.keys().collect::<Vec<_>>(), ["a"]);
    let docs = [
        peer("a", "peerASN: 65000, peerAddress: 192.0.2.254"),
        ad("x", "ipAddressPools: [p, gone]"),
    ];
    let (_, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
    assert!(
        problems
            .iter()
            .any(|p| p.field.as_deref() == Some("spec.ipAddressPools[1]")),
        "{problems:?}"
    );
}

#[test]
fn taking_another_node_does_not_change_the_session() {
    let one = [peer(
        "r1",
        "peerASN: 65000, peerAddress: 192.0.2.254, nodeSelectors: [{matchLabels: {zone: east}}]",
    )];
    let both = [peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254")];
    let (a, _) = plan(&view(&one, "", &[]), "node-a");
    let (b, _) = plan(&view(&both, "", &[]), "node-a");
    assert_eq!(a.peers["r1"], b.peers["r1"]);
    assert!(plan(&view(&one, "", &[]), "node-b").0.peers.is_empty());
}

#[test]
fn united_communities_are_capped_to_what_an_update_holds() {
    let many = |from: u32| {
        let list: Vec<String> = (from..from + 200).map(|i| format!("\"65001:{i}\"")).collect();
        format!("communities: [{}]", list.join(", "))
    };
    let docs = [
        peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"),
        ad("x", &many(0)),
        ad("second", &many(200)),
    ];
    let (p, problems) = plan(&view(&docs, "", &["node-a"]), "node-a");
    let a = &p.routes["r1"][&net("192.0.2.1/32")];
    assert_eq!(a.communities.len(), lb_kube::speaker::bgp::MAX_COMMUNITY_BYTES / 4);
    assert!(
        problems.iter().any(|p| p.message.contains("more communities")),
        "{problems:?}"
    );
}

/// A broken advertisement's last good version is not kept when the pools
/// now in force would make it announce outside them.
#[test]
fn a_kept_advertisement_follows_the_pools() {
    let mut config = Config::default();
    let good = [
        peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"),
        ad("x", "aggregationLength: 24"),
    ];
    let (before, _) = plan_after(&mut config, &view(&good, "", &["node-a"]), "node-a");
    assert!(prefixes(&before, "r1").contains(&"192.0.2.0/24".to_owned()));
    // Broken, and the pool shrinks to a /28: the /24 is not kept.
    let broken = [
        peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"),
        ad("x", "aggregationLength: 24, communities: [bogus]"),
    ];
    let mut snap = view(&broken, "", &["node-a"]);
    for (_, o) in &mut snap.objects {
        if let lb_kube::objects::Object::IPAddressPool(p) = o {
            std::sync::Arc::make_mut(p).spec.addresses = vec!["192.0.2.0/28".into()];
        }
    }
    let (after, problems) = plan_after(&mut config, &snap, "node-a");
    assert!(prefixes(&after, "r1").is_empty(), "{:?}", prefixes(&after, "r1"));
    assert!(
        !problems
            .iter()
            .any(|p| p.message.contains("keeping its last good version")),
        "{problems:?}"
    );
}

/// A document so broken that its object cannot be named (the view is
/// incomplete) takes no peer or advertisement away.
#[test]
fn an_unreadable_document_takes_nothing_away() {
    let mut config = Config::default();
    let good = [peer("r1", "peerASN: 65000, peerAddress: 192.0.2.254"), ad("x", "")];
    let (before, _) = plan_after(&mut config, &view(&good, "", &["node-a"]), "node-a");
    let mut snap = view(&[], "", &["node-a"]);
    snap.complete = false;
    let (after, _) = plan_after(&mut config, &snap, "node-a");
    assert_eq!(after.peers, before.peers);
    assert_eq!(after.routes, before.routes);
    // Read whole again without them: gone.
    let (gone, _) = plan_after(&mut config, &view(&[], "", &["node-a"]), "node-a");
    assert!(gone.peers.is_empty());
}
