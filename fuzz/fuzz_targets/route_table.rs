//! Arbitrary Ingresses (hosts, paths, path types, regex, backends) built
//! into a route table, strict or ingress-nginx mode, then looked up:
//! building never panics, a forwarded request names a Service and port of
//! a path that was accepted, strict mode reports no quirk, and the same
//! table built in shards answers alike, with the same problems.
#![no_main]

use arbitrary::Arbitrary;
use lb_route::*;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Path {
    path: Option<String>,
    kind: u8,
    service: String,
    port: (Option<String>, Option<i32>),
}

#[derive(Arbitrary, Debug)]
struct Ing {
    regex: Option<String>,
    annotations: Vec<(u8, String)>,
    default: Option<String>,
    rules: Vec<(Option<String>, Vec<Path>)>,
    created: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// ingress-nginx mode instead of strict.
    compat: bool,
    ingresses: Vec<Ing>,
    requests: Vec<(String, String)>,
}

fn backend(service: &str, port: (Option<String>, Option<i32>)) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.to_owned(),
            port: ServiceBackendPort {
                name: port.0,
                number: port.1,
            },
        }),
        resource: None,
    }
}

fuzz_target!(|input: Input| {
    let ingresses: Vec<Ingress> = input
        .ingresses
        .into_iter()
        .take(16)
        .enumerate()
        .map(|(i, ing)| {
            let mut out = Ingress::default();
            out.metadata.name = format!("i{i}");
            out.metadata.creation_timestamp = ing.created.map(|d| format!("2024-01-01T00:00:{:02}Z", d % 60));
            if let Some(r) = ing.regex {
                out.metadata.annotations.insert(USE_REGEX.into(), r);
            }
            const KEYS: &[&str] = &[
                "rewrite-target",
                "app-root",
                "permanent-redirect",
                "temporal-redirect",
                "permanent-redirect-code",
                "ssl-redirect",
                "force-ssl-redirect",
                "preserve-trailing-slash",
                "proxy-body-size",
                "proxy-read-timeout",
                "backend-protocol",
                "allowlist-source-range",
                "denylist-source-range",
                "upstream-vhost",
                "x-forwarded-prefix",
                "server-snippet",
                "unknown",
                "canary",
                "canary-by-header",
                "canary-by-header-value",
                "canary-by-cookie",
                "canary-weight",
                "enable-cors",
                "cors-allow-origin",
                "affinity",
                "auth-type",
                "auth-secret",
                "auth-url",
                "canary-by-header-pattern",
                "use-regex",
            ];
            for (k, v) in ing.annotations.into_iter().take(8) {
                let key = format!("{ANNOTATION_PREFIX}{}", KEYS[k as usize % KEYS.len()]);
                out.metadata.annotations.insert(key, v);
            }
            out.spec.ingress_class_name = Some("lb".into());
            out.spec.default_backend = ing.default.map(|s| backend(&s, (None, Some(80))));
            for (host, paths) in ing.rules.into_iter().take(8) {
                out.spec.rules.push(IngressRule {
                    host,
                    http: Some(HttpIngressRuleValue {
                        paths: paths
                            .into_iter()
                            .take(16)
                            .map(|p| HttpIngressPath {
                                path: p.path,
                                path_type: Some(
                                    ["Exact", "Prefix", "ImplementationSpecific", "Other"][p.kind as usize % 4].into(),
                                ),
                                backend: backend(&p.service, p.port),
                            })
                            .collect(),
                    }),
                });
            }
            out
        })
        .collect();
    let ports = |_: &str, _: &str, name: &str| (name.len() == 4).then_some(8080);
    let mode = if input.compat { Mode::IngressNginx } else { Mode::Strict };
    let config = Config::default().with_classes(ClassConfig::default().with_mode(mode));
    let build = RouteTable::build(&ingresses, &[], &ports, &config);
    let held: Vec<std::sync::Arc<Ingress>> = ingresses.iter().cloned().map(std::sync::Arc::new).collect();
    let mut cache = BuildCache::with_shards(4, input.requests.len() as u64);
    let split = RouteTable::build_cached(&held, &[], &ports, &config, &mut cache);
    let said = |b: &Build| {
        let mut p: Vec<String> = b.problems.iter().map(ToString::to_string).collect();
        p.sort();
        p
    };
    assert_eq!(said(&split), said(&build));
    assert_eq!(split.table.ingress_count(), build.table.ingress_count());
    for (i, (host, target)) in input.requests.iter().take(16).enumerate() {
        let mut req = Request::get(host, target);
        req.https = i % 2 == 1;
        req.client = Some(std::net::IpAddr::from([10, 0, 0, i as u8]));
        req.sample = Some(i as u32 * 7);
        let (decision, quirks) = build.table.lookup_traced(&req);
        assert_eq!(split.table.lookup_traced(&req), (decision.clone(), quirks));
        assert_eq!(split.table.certificate(Some(host)), build.table.certificate(Some(host)));
        assert!(input.compat || quirks.is_empty(), "quirks only in ingress-nginx mode");
        if let Decision::Forward(f) = decision {
            assert!(f.port > 0);
            assert!(f.upstream_path.starts_with('/'));
            assert!(ingresses.iter().any(|i| i.metadata.name == f.ingress.name));
        }
    }
});
