//! The table against literal reference matchers, on random tables and
//! requests: a linear scan written straight from the spec
//! (reference/ingress.md §1.4), and ingress-nginx's algorithm for
//! [`Mode::IngressNginx`] (§3.1: sorted locations, first regex match, the
//! trailing-slash redirect).

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

/// Regex paths for Ingresses with `use-regex` (compat runs only).
const REGEX_PATHS: &[&str] = &["/a.*", "/(a|b)b", "/[ab]+/", "/ab?$", "/b"];

fn arb_ingress(i: usize, regex: bool) -> impl Strategy<Value = Ingress> {
    let rule = (
        0..RULE_HOSTS.len(),
        proptest::collection::vec((arb_path(), any::<bool>()), 0..4),
    );
    (
        proptest::collection::vec(rule, 0..3),
        any::<bool>(),
        prop_oneof![Just(None), (0u8..4).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => (0..REGEX_PATHS.len()).prop_map(Some)],
    )
        .prop_map(move |(rules, with_default, day, regex_path)| {
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
            if let (true, Some(re), Some(rule)) = (regex, regex_path, ing.spec.rules.first_mut()) {
                ing.metadata.annotations.insert(USE_REGEX.into(), "true".into());
                rule.http.as_mut().unwrap().paths.push(HttpIngressPath {
                    path: Some(REGEX_PATHS[re].into()),
                    path_type: Some("ImplementationSpecific".into()),
                    backend: backend(format!("ing{i}-re")),
                });
            }
            ing
        })
}

fn arb_spec(regex: bool) -> impl Strategy<Value = Spec> {
    (1usize..6)
        .prop_flat_map(move |n| (0..n).map(|i| arb_ingress(i, regex)).collect::<Vec<_>>())
        .prop_map(|ingresses| Spec { ingresses })
}

fn rule_host(r: &IngressRule) -> String {
    r.host.clone().unwrap_or_default()
}

/// The Ingresses oldest first.
fn by_age(spec: &Spec) -> Vec<&Ingress> {
    let mut ings: Vec<&Ingress> = spec.ingresses.iter().collect();
    ings.sort_by_key(|i| {
        let ts = i.metadata.creation_timestamp.clone();
        (ts.is_none(), ts, i.metadata.name.clone())
    });
    ings
}

/// The rule host a request host selects (exact, else wildcard, else the
/// host-less rules), if any.
fn bucket(ings: &[&Ingress], host: &str) -> Option<String> {
    let host = host
        .split(':')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let wild = |h: &str| h.split_once('.').map(|(_, rest)| format!("*.{rest}"));
    if ings.iter().any(|i| i.spec.rules.iter().any(|r| rule_host(r) == host)) {
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
    }
}

/// The default backend for requests no path of the bucket matches.
fn default_for(ings: &[&Ingress], bucket: Option<&String>) -> String {
    let default_of = |i: &&&Ingress| {
        i.spec
            .default_backend
            .as_ref()
            .map(|d| d.service.as_ref().unwrap().name.clone())
    };
    if let Some(b) = bucket
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

/// The spec, literally: pick the host bucket, scan every path of every
/// Ingress, keep the best by (path length, Exact over Prefix, older).
fn reference(spec: &Spec, host: &str, path: &str) -> String {
    let ings = by_age(spec);
    let bucket = bucket(&ings, host);
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
    match best {
        Some(b) => b.3,
        None => default_for(&ings, bucket.as_ref()),
    }
}

/// ingress-nginx, literally: a host where any Ingress has `use-regex`
/// renders every path as `~* ^path`, sorted by length then path
/// (descending), the first match winning; other hosts answer `x` with a
/// 301 when a path `x/` exists and none is `x`, and match as the spec.
fn nginx_reference(spec: &Spec, host: &str, path: &str) -> String {
    let ings = by_age(spec);
    let Some(b) = bucket(&ings, host) else {
        return default_for(&ings, None);
    };
    // (path, service) in the order the locations are created.
    let mut locations: Vec<(&str, String)> = Vec::new();
    let mut regex_host = false;
    for ing in &ings {
        let rules: Vec<_> = ing.spec.rules.iter().filter(|r| rule_host(r) == b).collect();
        let has_paths = rules.iter().any(|r| !r.http.as_ref().unwrap().paths.is_empty());
        regex_host |= has_paths && ing.metadata.annotations.contains_key(USE_REGEX);
        for p in rules.iter().flat_map(|r| &r.http.as_ref().unwrap().paths) {
            locations.push((
                p.path.as_deref().unwrap(),
                p.backend.service.as_ref().unwrap().name.clone(),
            ));
        }
    }
    if regex_host {
        locations.sort_by(|a, b| (b.0.len(), b.0).cmp(&(a.0.len(), a.0)));
        let hit = locations.into_iter().find(|(p, _)| {
            // nginx's PCRE without UTF mode: bytes, ASCII classes.
            regex::bytes::RegexBuilder::new(&format!("^(?:{p})"))
                .unicode(false)
                .case_insensitive(true)
                .build()
                .unwrap()
                .is_match(path.as_bytes())
        });
        return match hit {
            Some((_, service)) => service,
            None => default_for(&ings, Some(&b)),
        };
    }
    let named = |p: &str| locations.iter().any(|l| l.0 == p);
    if !path.ends_with('/') && named(&format!("{path}/")) && !named(path) {
        return "301".into();
    }
    reference(spec, host, path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_the_reference(spec in arb_spec(false), requests in proptest::collection::vec((0..REQUEST_HOSTS.len(), arb_path()), 1..20)) {
        let build = RouteTable::build(&spec.ingresses, &[], &(), &Config::default());
        prop_assert!(build.problems.iter().all(|p| p.severity == Severity::Warning), "{:?}", build.problems);
        for (h, path) in requests {
            let host = REQUEST_HOSTS[h];
            let got = match build.table.lookup(&Request::get(host, &path)) {
                Decision::Forward(f) => f.service.to_owned(),
                d => d.status().as_u16().to_string(),
            };
            prop_assert_eq!(got, reference(&spec, host, &path), "{} {}", host, path);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn compat_table_agrees_with_the_nginx_reference(spec in arb_spec(true), requests in proptest::collection::vec((0..REQUEST_HOSTS.len(), arb_path()), 1..20)) {
        let config = Config::default().with_classes(ClassConfig::default().with_mode(Mode::IngressNginx));
        let build = RouteTable::build(&spec.ingresses, &[], &(), &config);
        prop_assert!(build.problems.iter().all(|p| p.severity == Severity::Warning), "{:?}", build.problems);
        for (h, path) in requests {
            let host = REQUEST_HOSTS[h];
            let (decision, quirks) = build.table.lookup_traced(&Request::get(host, &path));
            let got = match decision {
                Decision::Forward(f) => f.service.to_owned(),
                d => d.status().as_u16().to_string(),
            };
            prop_assert_eq!(&got, &nginx_reference(&spec, host, &path), "{} {}", host, path);
            // A quirk is reported when the spec would have answered otherwise.
            if got != reference(&spec, host, &path) && !spec.ingresses.iter().any(|i| i.metadata.annotations.contains_key(USE_REGEX)) {
                prop_assert!(!quirks.is_empty(), "{} {}: no quirk reported", host, path);
            }
        }
    }
}
