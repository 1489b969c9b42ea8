//! Arbitrary regex paths (use-regex, both modes) and request paths: building
//! never panics, and a pattern without look-around routes exactly the paths
//! the same regex, anchored at the start and case-insensitive, matches (over
//! bytes with ASCII classes, as nginx's PCRE without UTF mode).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lb_route::*;

#[derive(Arbitrary, Debug)]
struct Input {
    compat: bool,
    pattern: String,
    probes: Vec<String>,
}

fuzz_target!(|input: Input| {
    let path = HttpIngressPath {
        path: Some(input.pattern.clone()),
        path_type: Some("ImplementationSpecific".into()),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: "svc".into(),
                port: ServiceBackendPort { name: None, number: Some(80) },
            }),
            resource: None,
        },
    };
    let mut ing = Ingress::default();
    ing.metadata.name = "re".into();
    ing.metadata.annotations = [(USE_REGEX.to_owned(), "true".to_owned())].into();
    ing.spec.ingress_class_name = Some("lb".into());
    ing.spec.rules = vec![IngressRule {
        host: Some("h.example.com".into()),
        http: Some(HttpIngressRuleValue { paths: vec![path] }),
    }];
    let mode = if input.compat { Mode::IngressNginx } else { Mode::Strict };
    let config = Config::default().with_classes(ClassConfig::default().with_mode(mode));
    let built = RouteTable::build(&[ing], &[], &(), &config);
    let accepted = built.problems.iter().all(|p| p.severity == Severity::Warning);
    // As nginx's PCRE (no UTF mode): bytes, ASCII classes and case folding.
    let reference = regex::bytes::RegexBuilder::new(&format!("^(?:{})", input.pattern))
        .unicode(false)
        .case_insensitive(true)
        .build()
        .ok()
        .filter(|_| accepted && !input.pattern.contains("(?"));
    for probe in input.probes.iter().take(8) {
        let decision = built.table.lookup(&Request::get("h.example.com", probe));
        // Only paths the canonicalizer leaves as they are.
        let plain = probe.starts_with('/')
            && probe.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-' || b == b'_')
            && !probe.contains("//");
        if let (Some(re), true) = (&reference, plain) {
            let forwarded = matches!(decision, Decision::Forward(_));
            assert_eq!(forwarded, re.is_match(probe.as_bytes()), "{:?} on {probe:?}", input.pattern);
        }
    }
});
