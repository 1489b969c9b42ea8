//! A table built in shards, and rebuilt shard by shard after edits, answers
//! every request as the table built whole does: the same decisions, the
//! same certificates, the same Ingresses served and the same problems, on
//! random Ingresses that share hosts, conflict, redirect to their `www.`
//! twin, name TLS hosts, catch everything without a host, or are canaries.

use std::sync::Arc;

use lb_route::*;
use proptest::prelude::*;
use serde_json::json;

/// Rule hosts: exact names whose `www.` twin and wildcard also appear,
/// host-less rules, and an invalid one.
const RULE_HOSTS: &[&str] = &[
    "a.example",
    "www.a.example",
    "b.example",
    "*.example",
    "*.a.example",
    "x.a.example",
    "",
    "Bad.example",
];
const REQUEST_HOSTS: &[&str] = &[
    "a.example",
    "www.a.example",
    "b.example",
    "www.b.example",
    "c.example",
    "x.a.example",
    "y.a.example",
    "other.test",
    "A.example:8080",
    "a.example.",
    "[::1]:8080",
    "127.0.0.1",
    "",
];
const PATHS: &[&str] = &["/", "/a", "/a/", "/a/b", "/b", "/a/12"];
const TYPES: &[&str] = &["Exact", "Prefix", "ImplementationSpecific"];
/// Backends name `svc0`, `svc1` … by port 80 or by the name `http`.
const SERVICES: usize = 3;

/// The Services (`svcN` in `default`: the port named `http`, if any), as
/// lb-kube's resolver tells them: which changed since the last.
#[derive(Debug, Clone, Default)]
struct Ports {
    ports: std::collections::BTreeMap<String, u16>,
    identity: u64,
    /// The identity before, and the Services changed since.
    changed: Option<(u64, String)>,
}

impl Ports {
    /// Service `svcN` made, changed to `port`, or deleted.
    fn set(&self, n: usize, port: Option<u16>) -> Ports {
        let name = format!("svc{n}");
        let mut next = self.clone();
        match port {
            Some(p) => next.ports.insert(name.clone(), p),
            None => next.ports.remove(&name),
        };
        next.identity += 1;
        next.changed = Some((self.identity, name));
        next
    }
}

impl PortResolver for Ports {
    fn resolve(&self, namespace: &str, service: &str, port: &str) -> Option<u16> {
        (namespace == "default" && port == "http").then(|| self.ports.get(service).copied())?
    }

    fn missing(&self, namespace: &str, service: &str, port: &BackendPort) -> Option<String> {
        let ours = self.ports.get(service).filter(|_| namespace == "default");
        match (ours, port) {
            (None, _) => Some(format!("no Service {service}")),
            (Some(p), BackendPort::Number(n)) if p != n => Some(format!("{service} has no port {n}")),
            (_, BackendPort::Unresolved(_)) => Some(format!("{service} has no port named http")),
            _ => None,
        }
    }

    fn identity(&self) -> Option<u64> {
        Some(self.identity)
    }

    fn unchanged_since(&self, since: u64, _: &str, service: &str) -> bool {
        since == self.identity || self.changed.as_ref().is_some_and(|(b, s)| *b == since && s != service)
    }
}

/// One Ingress, as JSON: `i` names it.
fn arb_ingress(i: usize) -> impl Strategy<Value = serde_json::Value> {
    let path = (0..PATHS.len(), 0..TYPES.len(), (0..SERVICES, any::<bool>()));
    let rule = (0..RULE_HOSTS.len(), proptest::collection::vec(path, 0..3));
    (
        proptest::collection::vec(rule, 0..3),
        any::<bool>(),
        0..3u8,
        proptest::collection::vec(proptest::collection::vec(0..RULE_HOSTS.len(), 0..3), 0..3),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(move |(rules, default, day, tls, (regex, www, canary, no_ssl))| {
            let mut annotations = serde_json::Map::new();
            let mut on = |k: &str, v: &str| {
                annotations.insert(format!("nginx.ingress.kubernetes.io/{k}"), json!(v));
            };
            if regex {
                on("use-regex", "true");
            }
            if www {
                on("from-to-www-redirect", "true");
            }
            if canary {
                on("canary", "true");
                on("canary-by-header", "x-canary");
            }
            if no_ssl {
                on("ssl-redirect", "false");
            }
            let backend = |(s, named): (usize, bool)| {
                let port = if named {
                    json!({"name": "http"})
                } else {
                    json!({"number": 80})
                };
                json!({"service": {"name": format!("svc{s}"), "port": port}})
            };
            let rules: Vec<_> = rules
                .into_iter()
                .map(|(h, paths)| {
                    let paths: Vec<_> = paths
                        .into_iter()
                        .map(|(p, t, s)| json!({"path": PATHS[p], "pathType": TYPES[t], "backend": backend(s)}))
                        .collect();
                    json!({"host": RULE_HOSTS[h], "http": {"paths": paths}})
                })
                .collect();
            let tls: Vec<_> = tls
                .into_iter()
                .enumerate()
                .map(|(t, hosts)| {
                    let hosts: Vec<&str> = hosts.into_iter().map(|h| RULE_HOSTS[h]).collect();
                    json!({"hosts": hosts, "secretName": format!("cert{i}-{t}")})
                })
                .collect();
            let mut spec = json!({"ingressClassName": "lb", "rules": rules, "tls": tls});
            if default || rules_empty(&spec) {
                spec["defaultBackend"] = backend((i % SERVICES, false));
            }
            json!({
                "metadata": {"name": format!("ing{i}"), "namespace": "default",
                             "creationTimestamp": format!("2026-01-0{}T00:00:00Z", day + 1),
                             "annotations": annotations},
                "spec": spec
            })
        })
}

fn rules_empty(spec: &serde_json::Value) -> bool {
    spec["rules"].as_array().is_none_or(Vec::is_empty)
}

fn arb_ingresses() -> impl Strategy<Value = Vec<Ingress>> {
    (0..10usize).prop_flat_map(|n| {
        (0..n)
            .map(|i| arb_ingress(i).prop_map(|v| serde_json::from_value::<Ingress>(v).unwrap()))
            .collect::<Vec<_>>()
    })
}

/// Strict or ingress-nginx mode, with or without a default certificate.
fn config((compat, certificate): (bool, bool)) -> Config {
    let mode = if compat { Mode::IngressNginx } else { Mode::Strict };
    let config = Config::default().with_classes(ClassConfig::default().with_mode(mode));
    match certificate {
        true => config.with_default_certificate(SecretRef {
            namespace: "default".into(),
            name: "fallback".into(),
        }),
        false => config,
    }
}

/// Everything a table answers, for comparing two.
fn answers(t: &RouteTable) -> Vec<String> {
    let mut out = Vec::new();
    let mut canary = http::HeaderMap::new();
    canary.insert("x-canary", http::HeaderValue::from_static("always"));
    for host in REQUEST_HOSTS {
        for path in PATHS {
            for https in [false, true] {
                for headers in [&http::HeaderMap::new(), &canary] {
                    let req = Request::get(host, path).with_https(https).with_headers(headers);
                    out.push(format!("{host}{path} https={https}: {:?}", t.lookup_traced(&req)));
                }
            }
        }
        out.push(format!("cert {host}: {:?}", t.certificate(Some(host))));
        out.push(format!("has cert {host}: {}", t.has_certificate(&canonical_host(host))));
    }
    out.push(format!("cert without SNI: {:?}", t.certificate(None)));
    let mut served: Vec<String> = t.ingresses().map(ToString::to_string).collect();
    served.sort();
    out.push(format!("{} served: {served:?}", t.ingress_count()));
    out
}

fn problems(b: &Build) -> Vec<String> {
    let mut p: Vec<String> = b.problems.iter().map(ToString::to_string).collect();
    p.sort();
    p
}

fn shared(ingresses: &[Ingress]) -> Vec<Arc<Ingress>> {
    ingresses.iter().cloned().map(Arc::new).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Built in 8 shards, a table is the table built whole.
    #[test]
    fn a_table_in_shards_is_the_table_built_whole(
        ingresses in arb_ingresses(),
        mode in any::<(bool, bool)>(),
        seed in any::<u64>(),
    ) {
        let config = config(mode);
        let ports = Ports::default().set(0, Some(80)).set(1, Some(81));
        let whole = RouteTable::build(&ingresses, &[], &ports, &config);
        let split = RouteTable::build_cached(&shared(&ingresses), &[], &ports, &config, &mut BuildCache::with_shards(8, seed));
        prop_assert_eq!(answers(&split.table), answers(&whole.table));
        prop_assert_eq!(problems(&split), problems(&whole));
    }

    /// Edits (an Ingress replaced, added or deleted, a Service made,
    /// changed or deleted), each rebuilt with the cache of the last build,
    /// give the table built whole from scratch.
    #[test]
    fn a_table_rebuilt_shard_by_shard_is_the_table_built_whole(
        start in arb_ingresses(),
        edits in proptest::collection::vec((
            0..12usize,
            proptest::option::of(arb_ingress(20)),
            proptest::option::of((0..SERVICES, proptest::option::of(prop_oneof![Just(80u16), Just(81)]))),
        ), 1..6),
        mode in any::<(bool, bool)>(),
        seed in any::<u64>(),
    ) {
        let config = config(mode);
        let mut cache = BuildCache::with_shards(8, seed);
        let mut held = shared(&start);
        let mut ports = Ports::default().set(0, Some(80));
        RouteTable::build_cached(&held, &[], &ports, &config, &mut cache);
        for (k, (at, edit, service)) in edits.into_iter().enumerate() {
            let changed = service.is_some() || edit.is_some() || at < held.len();
            if let Some((n, port)) = service {
                ports = ports.set(n, port);
            }
            match edit {
                // Replaced (or added) under the name of the one at `at`,
                // as an edit of its file would.
                Some(mut v) => {
                    let name = held.get(at).map_or(format!("new{k}"), |i| i.metadata.name.clone());
                    v["metadata"]["name"] = json!(name);
                    let ing = Arc::new(serde_json::from_value::<Ingress>(v).unwrap());
                    match held.iter().position(|i| i.metadata.name == name) {
                        Some(p) => held[p] = ing,
                        None => held.push(ing),
                    }
                }
                None if at < held.len() => {
                    held.remove(at);
                }
                None => {}
            }
            let plain: Vec<Ingress> = held.iter().map(|i| (**i).clone()).collect();
            let whole = RouteTable::build(&plain, &[], &ports, &config);
            let split = RouteTable::build_cached(&held, &[], &ports, &config, &mut cache);
            prop_assert_eq!(answers(&split.table), answers(&whole.table));
            prop_assert_eq!(problems(&split), problems(&whole));
            if !changed {
                // Nothing changed: every shard is kept.
                prop_assert_eq!(cache.shards_built().0, 0);
            }
        }
    }
}

/// Ingress `name` routing Prefix `path` on `host` to Service `service`
/// port 80.
fn one_path(name: &str, host: &str, path: &str, service: &str) -> Arc<Ingress> {
    Arc::new(
        serde_json::from_value::<Ingress>(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ingressClassName": "lb", "rules": [{"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}
        }))
        .unwrap(),
    )
}

/// A large table is split without being asked, and a change to one of its
/// Ingresses builds one shard again: the others are the same shards.
#[test]
fn a_large_table_is_split_and_an_edit_rebuilds_one_shard() {
    let ingress = |i: usize, path: &str| one_path(&format!("h{i}"), &format!("h{i}.example"), path, &format!("s{i}"));
    let mut held: Vec<Arc<Ingress>> = (0..4000).map(|i| ingress(i, "/")).collect();
    let config = Config::default();
    let mut cache = BuildCache::default();
    let first = RouteTable::build_cached(&held, &[], &(), &config, &mut cache).table;
    assert!(format!("{cache:?}").contains("shards: 64"), "{cache:?}");
    // Spread: about 63 each.
    let largest = cache.shard_sizes().max().unwrap_or_default();
    assert!(largest < 200, "{largest}");
    held[7] = ingress(7, "/v2");
    let second = RouteTable::build_cached(&held, &[], &(), &config, &mut cache).table;
    assert_eq!(cache.shards_built(), (1, 64));
    assert_eq!(second.ingress_count(), 4000);
    let go = |t: &RouteTable, host: &str, path: &str| format!("{:?}", t.lookup(&Request::get(host, path)));
    assert!(go(&second, "h7.example", "/v2/x").contains("s7"));
    assert_eq!(go(&second, "h7.example", "/x"), "NotFound");
    assert_eq!(go(&first, "h8.example", "/x"), go(&second, "h8.example", "/x"));
    // Services changed (an unknown resolver): all of them.
    let resolver = |_: &str, _: &str, _: &str| None;
    RouteTable::build_cached(&held, &[], &resolver, &config, &mut cache);
    assert_eq!(cache.shards_built(), (64, 64));
}

/// Ingresses with host-less rules are in every shard: a table with many
/// of them is split in fewer shards, so their copies stay a fraction of
/// the table.
#[test]
fn many_host_less_ingresses_make_fewer_shards() {
    let ingress = |i: usize, host: &str| one_path(&format!("i{i}"), host, &format!("/p{i}"), "s");
    let config = Config::default();
    let hosts: Vec<Arc<Ingress>> = (0..4000).map(|i| ingress(i, &format!("h{i}.example"))).collect();
    let mut cache = BuildCache::default();
    RouteTable::build_cached(&hosts, &[], &(), &config, &mut cache);
    assert_eq!(cache.shards_built(), (64, 64));
    // 500 host-less ones: a ninth of the table, copied into each shard.
    let mut mixed = hosts.clone();
    mixed.extend((4000..4500).map(|i| ingress(i, "")));
    let t = RouteTable::build_cached(&mixed, &[], &(), &config, &mut cache).table;
    assert_eq!(cache.shards_built(), (2, 2));
    let go = |host: &str, path: &str| format!("{:?}", t.lookup(&Request::get(host, path)));
    // Host-less regex paths: each shard would compile their set, so the
    // table is one shard.
    let mut regexy = (*mixed[4000]).clone();
    regexy
        .metadata
        .annotations
        .insert("nginx.ingress.kubernetes.io/use-regex".into(), "true".into());
    let mut with_regex = hosts.clone();
    with_regex.push(Arc::new(regexy));
    RouteTable::build_cached(&with_regex, &[], &(), &config, &mut cache);
    assert_eq!(cache.shards_built(), (1, 1));
    // (A host with rules of its own never falls back to the host-less ones.)
    let other = go("other.example", "/p4200/x");
    assert!(other.contains("i4200"), "{other}");
    assert_eq!(go("h1.example", "/p4200/x"), "NotFound");
    assert!(
        go("h1.example", "/p1").contains("\"i1\""),
        "{}",
        go("h1.example", "/p1")
    );
}
