//! The table against a literal reference matcher: a linear scan written
//! straight from the spec (reference/ingress.md §1.4), on random tables and
//! requests.

use lb_route::*;
use proptest::prelude::*;

const RULE_HOSTS: &[&str] = &["", "a.x.com", "*.x.com", "x.com"];
const REQUEST_HOSTS: &[&str] = &[
    "a.x.com",
    "b.x.com",
    "x.com",
    "c.a.x.com",
    "A.X.com:80",
    "y.com",
    "a.x.com.",
];

#[derive(Debug, Clone)]
struct Spec {
    ingresses: Vec<Ingress>,
}

fn arb_path() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(prop_oneof!["a", "ab", "b"], 0..4),
        any::<bool>(),
    )
        .prop_map(|(segs, slash)| {
            let mut p = String::new();
            for s in &segs {
                p.push('/');
                p.push_str(s);
            }
            if slash || p.is_empty() {
                p.push('/');
            }
            p
        })
}

fn backend(service: String) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service,
            port: ServiceBackendPort {
                name: None,
                number: Some(80),
            },
        }),
        resource: None,
    }
}

fn arb_ingress(i: usize) -> impl Strategy<Value = Ingress> {
    let rule = (
        0..RULE_HOSTS.len(),
        proptest::collection::vec((arb_path(), any::<bool>()), 0..4),
    );
    (
        proptest::collection::vec(rule, 0..3),
        any::<bool>(),
        prop_oneof![Just(None), (0u8..4).prop_map(Some)],
    )
        .prop_map(move |(rules, with_default, day)| {
            let mut ing = Ingress::default();
            ing.metadata.name = format!("ing{i}");
            ing.metadata.namespace = "default".into();
            ing.metadata.creation_timestamp = day.map(|d| format!("2024-01-0{}T00:00:00Z", d + 1));
            ing.spec.ingress_class_name = Some("lb".into());
            if with_default || rules.is_empty() {
                ing.spec.default_backend = Some(backend(format!("ing{i}-default")));
            }
            for (r, (host, paths)) in rules.into_iter().enumerate() {
                ing.spec.rules.push(IngressRule {
                    host: Some(RULE_HOSTS[host].to_owned()),
                    http: Some(HttpIngressRuleValue {
                        paths: paths
                            .into_iter()
                            .enumerate()
                            .map(|(p, (path, exact))| HttpIngressPath {
                                path: Some(path),
                                path_type: Some(if exact { "Exact" } else { "Prefix" }.into()),
                                backend: backend(format!("ing{i}-r{r}-p{p}")),
                            })
                            .collect(),
                    }),
                });
            }
            ing
        })
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (1usize..6)
        .prop_flat_map(|n| (0..n).map(arb_ingress).collect::<Vec<_>>())
        .prop_map(|ingresses| Spec { ingresses })
}

/// The spec, literally: pick the host bucket, scan every path of every
/// Ingress, keep the best by (path length, Exact over Prefix, older).
fn reference(spec: &Spec, host: &str, path: &str) -> String {
    let host = host
        .split(':')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut ings: Vec<&Ingress> = spec.ingresses.iter().collect();
    ings.sort_by_key(|i| {
        let ts = i.metadata.creation_timestamp.clone();
        (ts.is_none(), ts, i.metadata.name.clone())
    });
    let rule_host = |r: &IngressRule| r.host.clone().unwrap_or_default();
    let wild = |h: &str| h.split_once('.').map(|(_, rest)| format!("*.{rest}"));
    let bucket = if ings.iter().any(|i| i.spec.rules.iter().any(|r| rule_host(r) == host)) {
        Some(host.clone())
    } else if let Some(w) = wild(&host).filter(|w| ings.iter().any(|i| i.spec.rules.iter().any(|r| &rule_host(r) == w)))
    {
        Some(w)
    } else if ings
        .iter()
        .any(|i| i.spec.rules.iter().any(|r| rule_host(r).is_empty()))
    {
        Some(String::new())
    } else {
        None
    };
    let mut best: Option<(usize, bool, usize, String)> = None;
    if let Some(b) = &bucket {
        for (age, ing) in ings.iter().enumerate() {
            for rule in ing.spec.rules.iter().filter(|r| &rule_host(r) == b) {
                for p in &rule.http.as_ref().unwrap().paths {
                    let rp = p.path.as_deref().unwrap();
                    let exact = p.path_type.as_deref() == Some("Exact");
                    let hit = if exact {
                        path == rp
                    } else {
                        let q = rp.trim_end_matches('/');
                        rp == "/" || path == q || path.starts_with(&format!("{q}/"))
                    };
                    let service = p.backend.service.as_ref().unwrap().name.clone();
                    let better = |b: &(usize, bool, usize, String)| {
                        (rp.len(), exact) > (b.0, b.1) || ((rp.len(), exact) == (b.0, b.1) && age < b.2)
                    };
                    if hit && best.as_ref().is_none_or(better) {
                        best = Some((rp.len(), exact, age, service));
                    }
                }
            }
        }
    }
    if let Some(b) = best {
        return b.3;
    }
    let default_of = |i: &&&Ingress| {
        i.spec
            .default_backend
            .as_ref()
            .map(|d| d.service.as_ref().unwrap().name.clone())
    };
    if let Some(b) = &bucket
        && let Some(d) = ings
            .iter()
            .filter(|i| i.spec.rules.iter().any(|r| &rule_host(r) == b))
            .find_map(|i| default_of(&i))
    {
        return d;
    }
    ings.iter()
        .filter(|i| i.spec.rules.is_empty())
        .find_map(|i| default_of(&i))
        .unwrap_or_else(|| "404".into())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_the_reference(spec in arb_spec(), requests in proptest::collection::vec((0..REQUEST_HOSTS.len(), arb_path()), 1..20)) {
        let build = RouteTable::build(&spec.ingresses, &[], &(), &Config::default());
        prop_assert!(build.problems.iter().all(|p| p.severity == Severity::Warning), "{:?}", build.problems);
        for (h, path) in requests {
            let host = REQUEST_HOSTS[h];
            let got = match build.table.lookup(&Request::get(host, &path)) {
                Decision::Forward(f) => f.service.to_owned(),
                d => d.status().to_string(),
            };
            prop_assert_eq!(got, reference(&spec, host, &path), "{} {}", host, path);
        }
    }
}
