//! Table tests for the Ingress v1 rules (reference/ingress.md §1): the
//! Kubernetes docs' examples, precedence, hosts, default backends,
//! conflicts, classes and bad input.

use lb_route::*;

/// Builds a table from YAML documents (Ingresses, then IngressClasses).
fn build(yaml: &str) -> Build {
    build_with(yaml, &())
}

fn build_with(yaml: &str, ports: &dyn PortResolver) -> Build {
    let mut ingresses = Vec::new();
    let mut classes = Vec::new();
    for doc in yaml.split("\n---\n") {
        let v: serde_json::Value = serde_saphyr::from_str(doc).expect("test YAML");
        if v["kind"] == "IngressClass" {
            classes.push(serde_json::from_value::<IngressClass>(v).unwrap());
        } else {
            ingresses.push(serde_json::from_value::<Ingress>(v).unwrap());
        }
    }
    RouteTable::build(&ingresses, &classes, ports, &Config::default())
}

/// `ingress -> service:port upstream`, or the status.
fn go(t: &RouteTable, host: &str, target: &str) -> String {
    match t.lookup(&Request::get(host, target)) {
        Decision::Forward(f) => format!("{} -> {}:{} {}", f.ingress.name, f.service, f.port, f.upstream_path),
        d => d.status().as_u16().to_string(),
    }
}

/// Just the service, or the status.
fn svc(t: &RouteTable, host: &str, target: &str) -> String {
    match t.lookup(&Request::get(host, target)) {
        Decision::Forward(f) => f.service.to_owned(),
        d => d.status().as_u16().to_string(),
    }
}

/// One Ingress of class lb with one host and the given (path, type, service) paths.
fn ingress(name: &str, host: &str, paths: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: \"{host}\"\n    http:\n      paths:\n"
    );
    for (path, kind, service) in paths {
        s += &format!(
            "      - {{path: {path:?}, pathType: {kind}, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        );
    }
    s
}

#[test]
fn docs_examples() {
    // (paths, request, expected service or 404), kubernetes.io Ingress "Examples".
    type Paths<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Paths<'_>, &str, &str)] = &[
        (&[("/", "Prefix")], "/anything/at/all", "p0"),
        (&[("/foo", "Exact")], "/foo", "p0"),
        (&[("/foo", "Exact")], "/bar", "404"),
        (&[("/foo", "Exact")], "/foo/", "404"),
        (&[("/foo/", "Exact")], "/foo", "404"),
        (&[("/foo", "Prefix")], "/foo", "p0"),
        (&[("/foo", "Prefix")], "/foo/", "p0"),
        (&[("/foo/", "Prefix")], "/foo", "p0"),
        (&[("/foo/", "Prefix")], "/foo/", "p0"),
        (&[("/aaa/bb", "Prefix")], "/aaa/bbb", "404"),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbb", "p0"),
        (&[("/aaa/bbb/", "Prefix")], "/aaa/bbb", "p0"),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbb/", "p0"),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbb/ccc", "p0"),
        (&[("/aaa/bbb", "Prefix")], "/aaa/bbbxyz", "404"),
        (&[("/", "Prefix"), ("/aaa", "Prefix")], "/aaa/ccc", "p1"),
        (
            &[("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")],
            "/aaa/bbb",
            "p2",
        ),
        (
            &[("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")],
            "/ccc",
            "p0",
        ),
        (&[("/aaa", "Prefix")], "/ccc", "404"),
        (&[("/foo", "Prefix"), ("/foo", "Exact")], "/foo", "p1"),
        (&[("/foo", "Exact"), ("/foo", "Prefix")], "/foo", "p0"),
        // Case-sensitive paths.
        (&[("/foo", "Exact")], "/FOO", "404"),
        (&[("/foo", "Prefix")], "/Foo/bar", "404"),
        // The longest rule path wins: `/foo/` (5) over `/foo` (4), even
        // when the shorter one is Exact.
        (&[("/foo", "Prefix"), ("/foo/", "Prefix")], "/foo", "p1"),
        (&[("/foo", "Exact"), ("/foo/", "Prefix")], "/foo", "p1"),
        (&[("/foo/", "Exact"), ("/foo", "Prefix")], "/foo/", "p0"),
    ];
    for (paths, request, want) in cases {
        let named: Vec<(&str, &str, String)> = paths
            .iter()
            .enumerate()
            .map(|(i, (p, k))| (*p, *k, format!("p{i}")))
            .collect();
        let named: Vec<(&str, &str, &str)> = named.iter().map(|(p, k, s)| (*p, *k, s.as_str())).collect();
        let b = build(&ingress("docs", "example.com", &named));
        assert!(b.problems.is_empty(), "{:?}", b.problems);
        assert_eq!(svc(&b.table, "example.com", request), *want, "{paths:?} {request}");
    }
}

#[test]
fn hosts_exact_then_wildcard_then_any_without_fallback() {
    let yaml = [
        ingress("exact", "foo.bar.com", &[("/exact-only", "Prefix", "exact")]),
        ingress("wild", "*.bar.com", &[("/", "Prefix", "wild")]),
        ingress("any", "", &[("/", "Prefix", "any")]),
    ]
    .join("\n---\n");
    let b = build(&yaml);
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    let t = &b.table;
    assert_eq!(svc(t, "foo.bar.com", "/exact-only/x"), "exact");
    // The exact host is chosen before paths: no fallback to the wildcard.
    assert_eq!(svc(t, "foo.bar.com", "/other"), "404");
    assert_eq!(svc(t, "baz.bar.com", "/other"), "wild");
    assert_eq!(svc(t, "BAZ.Bar.COM", "/"), "wild");
    // One label only.
    assert_eq!(svc(t, "a.baz.bar.com", "/"), "any");
    assert_eq!(svc(t, "bar.com", "/"), "any");
    // Port and one trailing dot are ignored; no Host at all is host-less.
    assert_eq!(svc(t, "foo.bar.com:8080", "/exact-only"), "exact");
    assert_eq!(svc(t, "foo.bar.com.", "/exact-only"), "exact");
    assert_eq!(svc(t, "elsewhere.example", "/x"), "any");
}

#[test]
fn unknown_host_is_404_without_a_catch_all() {
    let b = build(&ingress("one", "foo.bar.com", &[("/", "Prefix", "foo")]));
    assert_eq!(svc(&b.table, "foo.bar.com", "/"), "foo");
    assert_eq!(svc(&b.table, "other.com", "/"), "404");
}

#[test]
fn default_backends() {
    let yaml = r#"
kind: Ingress
metadata: {name: catch-all, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: lb
  defaultBackend: {service: {name: echo, port: {number: 8080}}}
---
kind: Ingress
metadata: {name: later-catch-all, namespace: default, creationTimestamp: "2024-06-01T00:00:00Z"}
spec:
  ingressClassName: lb
  defaultBackend: {service: {name: later, port: {number: 8080}}}
---
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  ingressClassName: lb
  defaultBackend: {service: {name: shop-home, port: {number: 80}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {number: 80}}}}
"#;
    let b = build(yaml);
    let t = &b.table;
    // A no-rules Ingress catches every host, and none; the oldest wins.
    assert_eq!(go(t, "anything.example", "/x?y=1"), "catch-all -> echo:8080 /x?y=1");
    assert_eq!(svc(t, "", "/"), "echo");
    assert_eq!(b.problems.len(), 1, "{:?}", b.problems);
    assert!(b.problems[0].object.to_string().contains("later-catch-all"));
    assert!(b.problems[0].message.contains("older Ingress default/catch-all"));
    // An Ingress's defaultBackend serves its own hosts' unmatched paths.
    assert_eq!(svc(t, "shop.example.com", "/cart/1"), "cart");
    assert_eq!(svc(t, "shop.example.com", "/about"), "shop-home");
}

#[test]
fn conflicts_go_to_the_oldest_ingress() {
    let mk = |name: &str, ts: Option<&str>, service: &str| {
        let ing = ingress(name, "app.example.com", &[("/api", "Prefix", service)]);
        match ts {
            Some(ts) => ing.replace(
                "namespace: default}",
                &format!("namespace: default, creationTimestamp: \"{ts}\"}}"),
            ),
            None => ing,
        }
    };
    let yaml = [
        mk("b-newer", Some("2025-01-01T00:00:00Z"), "newer"),
        mk("no-time", None, "untimed"),
        mk("z-older", Some("2023-01-01T00:00:00Z"), "older"),
    ]
    .join("\n---\n");
    let b = build(&yaml);
    assert_eq!(svc(&b.table, "app.example.com", "/api/v1"), "older");
    let losers: Vec<String> = b.problems.iter().map(|p| p.object.to_string()).collect();
    assert_eq!(losers, ["Ingress default/b-newer", "Ingress default/no-time"]);
    assert!(b.problems.iter().all(|p| p.severity == Severity::Warning));
    assert_eq!(b.problems[0].field.as_deref(), Some("spec.rules[0].http.paths[0]"));
    // A path named twice in one Ingress: the first, and it says so (no
    // other Ingress is involved).
    let twice = build(&ingress(
        "twice",
        "app.example.com",
        &[("/a", "Prefix", "first"), ("/a", "Prefix", "second")],
    ));
    assert_eq!(svc(&twice.table, "app.example.com", "/a"), "first");
    let said: Vec<&str> = twice.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        said,
        ["host app.example.com path \"/a\" (Prefix) is named twice in this Ingress; the first is used"]
    );
    // Equal times: by namespace/name, whatever the input order.
    let same = [
        mk("b", Some("2024-01-01T00:00:00Z"), "b"),
        mk("a", Some("2024-01-01T00:00:00Z"), "a"),
    ]
    .join("\n---\n");
    assert_eq!(svc(&build(&same).table, "app.example.com", "/api"), "a");
    // Same path, different type: not a conflict.
    let both = [
        ingress("e", "app.example.com", &[("/api", "Exact", "exact")]),
        ingress("p", "app.example.com", &[("/api", "Prefix", "prefix")]),
    ]
    .join("\n---\n");
    let b = build(&both);
    assert!(b.problems.is_empty());
    assert_eq!(svc(&b.table, "app.example.com", "/api"), "exact");
    assert_eq!(svc(&b.table, "app.example.com", "/api/x"), "prefix");
}

#[test]
fn other_classes_are_ignored() {
    let yaml = [
        ingress("ours", "a.example.com", &[("/", "Prefix", "ours")]),
        ingress("theirs", "b.example.com", &[("/", "Prefix", "theirs")])
            .replace("ingressClassName: lb", "ingressClassName: nginx"),
        ingress("missing", "c.example.com", &[("/", "Prefix", "missing")])
            .replace("ingressClassName: lb", "ingressClassName: nope"),
        "kind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}".to_owned(),
    ]
    .join("\n---\n");
    let b = build(&yaml);
    assert_eq!(b.table.ingress_count(), 1);
    assert_eq!(svc(&b.table, "a.example.com", "/"), "ours");
    assert_eq!(svc(&b.table, "b.example.com", "/"), "404");
    assert_eq!(svc(&b.table, "c.example.com", "/"), "404");
}

#[test]
fn named_ports_resolve_through_the_caller() {
    let yaml = ingress("named", "foo.bar.com", &[("/", "Prefix", "x")])
        .replace("port: {number: 80}", "port: {name: http}")
        .replace("name: x,", "name: echo,");
    let ports = |ns: &str, svc: &str, port: &str| (ns == "default" && svc == "echo" && port == "http").then_some(8080);
    let b = build_with(&yaml, &ports);
    assert_eq!(go(&b.table, "foo.bar.com", "/"), "named -> echo:8080 /");
    // Unknown to the resolver: 503, not a crash or a guess.
    let b = build(&yaml);
    assert_eq!(svc(&b.table, "foo.bar.com", "/"), "503");
}

#[test]
fn a_bad_ingress_disables_only_itself() {
    let good = ingress("good", "good.example.com", &[("/", "Prefix", "good")]);
    let bads = [
        (
            "bad-type",
            ingress("bad-type", "bad.example.com", &[("/", "Regex", "bad")]),
            "spec.rules[0].http.paths[0].pathType",
        ),
        (
            "bad-host",
            ingress("bad-host", "Bad.Example.com", &[("/", "Prefix", "bad")]),
            "spec.rules[0].host",
        ),
        (
            "bad-path",
            ingress("bad-path", "bad.example.com", &[("/a/../b", "Prefix", "bad")]),
            "spec.rules[0].http.paths[0].path",
        ),
        (
            "relative",
            ingress("relative", "bad.example.com", &[("foo", "Exact", "bad")]),
            "spec.rules[0].http.paths[0].path",
        ),
        (
            "bad-port",
            ingress("bad-port", "bad.example.com", &[("/", "Prefix", "bad")]).replace("number: 80", "number: 70000"),
            "spec.rules[0].http.paths[0].backend.service.port.number",
        ),
        (
            "two-ports",
            ingress("two-ports", "bad.example.com", &[("/", "Prefix", "bad")])
                .replace("{number: 80}", "{number: 80, name: http}"),
            "spec.rules[0].http.paths[0].backend.service.port",
        ),
        (
            "bad-regex-flag",
            ingress("bad-regex-flag", "bad.example.com", &[("/", "Prefix", "bad")]).replace(
                "namespace: default}",
                "namespace: default, annotations: {nginx.ingress.kubernetes.io/use-regex: \"yes\"}}",
            ),
            "metadata.annotations[\"nginx.ingress.kubernetes.io/use-regex\"]",
        ),
    ];
    for (name, bad, field) in bads {
        let b = build(&[good.clone(), bad.replace("bad.example.com", "good.example.com")].join("\n---\n"));
        assert_eq!(svc(&b.table, "good.example.com", "/"), "good", "{name}");
        assert_eq!(b.table.ingress_count(), 1, "{name}");
        let p = b
            .problems
            .iter()
            .find(|p| p.severity == Severity::Error)
            .unwrap_or_else(|| panic!("{name}: {:?}", b.problems));
        assert_eq!(p.object.to_string(), format!("Ingress default/{name}"));
        assert_eq!(p.field.as_deref(), Some(field), "{name}: {p}");
    }
    // Neither rules nor default backend.
    let empty = "kind: Ingress\nmetadata: {name: empty}\nspec: {ingressClassName: lb}";
    let b = build(empty);
    assert_eq!(b.problems[0].field.as_deref(), Some("spec"));
}

#[test]
fn regex_paths_with_use_regex() {
    let yaml = ingress(
        "re",
        "re.example.com",
        &[
            ("/id/[0-9]+", "ImplementationSpecific", "ids"),
            ("/exact", "Exact", "exact"),
        ],
    )
    .replace(
        "namespace: default}",
        "namespace: default, annotations: {nginx.ingress.kubernetes.io/use-regex: \"true\"}}",
    );
    let b = build(&yaml);
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    let t = &b.table;
    // Anchored at the start only, case-insensitive (ingress-nginx's `~*`).
    for hit in ["/id/1", "/id/12", "/id/123a", "/ID/5"] {
        assert_eq!(svc(t, "re.example.com", hit), "ids", "{hit}");
    }
    assert_eq!(svc(t, "re.example.com", "/id/aaa"), "404");
    assert_eq!(svc(t, "re.example.com", "/x/id/1"), "404");
    // Exact and Prefix paths of the same Ingress keep their meaning.
    assert_eq!(svc(t, "re.example.com", "/EXACT"), "404");

    let anchored = yaml.replace("/id/[0-9]+", "/id/[0-9]+$");
    assert_eq!(svc(&build(&anchored).table, "re.example.com", "/id/123a"), "404");

    // The common negative-lookahead idiom is translated (G5) ...
    let look = yaml.replace("/id/[0-9]+", "/api/((?!_internal).*)");
    let t = build(&look).table;
    assert_eq!(svc(&t, "re.example.com", "/api/users"), "ids");
    assert_eq!(svc(&t, "re.example.com", "/api/_internal/x"), "404");
    assert_eq!(svc(&t, "re.example.com", "/API/_Internal"), "404");
    // ... other look-around cannot be run in linear time: refused, with the reason.
    let look = yaml.replace("/id/[0-9]+", "/api/(?=v1).*");
    let b = build(&look);
    assert_eq!(b.table.ingress_count(), 0);
    assert!(
        b.problems[0].message.contains("look-around is not supported"),
        "{}",
        b.problems[0]
    );
}

#[test]
fn one_canonical_path_for_matching_and_forwarding() {
    let yaml = ingress(
        "norm",
        "n.example.com",
        &[("/foo", "Prefix", "foo"), ("/exact", "Exact", "exact")],
    );
    let t = build(&yaml).table;
    assert_eq!(go(&t, "n.example.com", "/aaa/../foo/x"), "norm -> foo:80 /foo/x");
    assert_eq!(
        go(&t, "n.example.com", "//foo//bar?q=%41"),
        "norm -> foo:80 /foo/bar?q=%41"
    );
    assert_eq!(go(&t, "n.example.com", "/%66oo"), "norm -> foo:80 /foo");
    assert_eq!(go(&t, "n.example.com", "/./exact"), "norm -> exact:80 /exact");
    assert_eq!(svc(&t, "n.example.com", "/foo;x"), "404");
    assert_eq!(svc(&t, "n.example.com", "/../foo"), "400");
    assert_eq!(svc(&t, "n.example.com", "/foo%00"), "400");
    assert_eq!(svc(&t, "n.example.com", "/foo%2Fbar"), "400");
    // The absolute form's authority wins over Host; Host is forwarded as sent.
    match t.lookup(&Request::get("other.example", "http://n.example.com/foo")) {
        Decision::Forward(f) => assert_eq!((f.service, f.upstream_host), ("foo", "other.example")),
        d => panic!("{d:?}"),
    }
}

#[test]
fn certificates_by_sni() {
    let yaml = r#"
kind: Ingress
metadata: {name: old, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  ingressClassName: lb
  tls:
  - {hosts: [foo.bar.com], secretName: foo-cert}
  - {hosts: ["*.bar.com"], secretName: wild-cert}
  rules:
  - host: foo.bar.com
---
kind: Ingress
metadata: {name: new, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  ingressClassName: lb
  tls:
  - {hosts: [foo.bar.com], secretName: other-cert}
  - secretName: implicit-cert
  rules:
  - host: implicit.example.com
"#;
    let b = build(yaml);
    let t = &b.table;
    let cert = |sni: Option<&str>| t.certificate(sni).map(|s| s.to_string());
    assert_eq!(cert(Some("foo.bar.com")).as_deref(), Some("shop/foo-cert"));
    assert_eq!(cert(Some("FOO.bar.com.")).as_deref(), Some("shop/foo-cert"));
    assert_eq!(cert(Some("baz.bar.com")).as_deref(), Some("shop/wild-cert"));
    assert_eq!(cert(Some("a.baz.bar.com")), None, "a wildcard covers one label");
    assert_eq!(
        cert(Some("implicit.example.com")).as_deref(),
        Some("shop/implicit-cert"),
        "no hosts: the rule hosts"
    );
    assert_eq!(cert(None), None);
    assert!(t.has_certificate("foo.bar.com") && t.has_certificate("x.bar.com") && !t.has_certificate("bar.com"));
    // The newer Ingress's claim on foo.bar.com is reported, not used.
    assert_eq!(b.problems.len(), 1, "{:?}", b.problems);
    assert!(
        b.problems[0].object.to_string().ends_with("shop/new")
            && b.problems[0].message.contains("older Ingress shop/old")
    );

    // A default certificate serves the rest.
    let config = Config::default().with_default_certificate(SecretRef {
        namespace: "lb".into(),
        name: "default".into(),
    });
    let ings: Vec<Ingress> = yaml
        .split("\n---\n")
        .map(|d| serde_json::from_value(serde_saphyr::from_str::<serde_json::Value>(d).unwrap()).unwrap())
        .collect();
    let t = RouteTable::build(&ings, &[], &(), &config).table;
    assert_eq!(t.certificate(None).unwrap().name, "default");
    assert_eq!(t.certificate(Some("unknown.example")).unwrap().name, "default");

    // An invalid TLS host disables the Ingress, naming the field.
    let bad = yaml.replace(
        "hosts: [foo.bar.com], secretName: foo-cert",
        "hosts: [Foo_Bar], secretName: foo-cert",
    );
    let b = build(&bad);
    let p = b.problems.iter().find(|p| p.severity == Severity::Error).unwrap();
    assert_eq!(
        (p.object.to_string().as_str(), p.field.as_deref()),
        ("Ingress shop/old", Some("spec.tls[0].hosts[0]"))
    );
}

/// A rule path with non-ASCII characters never matches a request (they
/// arrive percent-encoded): the Ingress is told how to write it.
#[test]
fn non_ascii_rule_paths_are_reported_with_their_encoded_form() {
    let ing: Ingress = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cafe", "namespace": "default"},
        "spec": {"ingressClassName": "lb", "rules": [{"host": "h.example.com", "http": {"paths": [
            {"path": "/café", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}}]}
    }))
    .unwrap();
    let b = RouteTable::build(&[ing], &[], &(), &Config::default());
    assert!(
        b.problems.iter().any(|p| p.message.contains("\"/caf%C3%A9\"")),
        "{:?}",
        b.problems
    );
}

#[test]
fn a_regex_cache_carries_compiled_paths_between_builds_and_changes_no_decision() {
    let parse = |yaml: &str| -> Vec<Ingress> {
        yaml.split("\n---\n")
            .map(|doc| serde_json::from_value(serde_saphyr::from_str::<serde_json::Value>(doc).unwrap()).unwrap())
            .collect()
    };
    let regexy = |name: &str, host: &str, path: &str| {
        ingress(name, host, &[(path, "ImplementationSpecific", name)]).replace(
            "namespace: default}",
            "namespace: default, annotations: {nginx.ingress.kubernetes.io/use-regex: \"true\"}}",
        )
    };
    let first = [
        regexy("a", "a.example", "/a/[0-9]+"),
        regexy("b", "b.example", "/b/[a-z]+$"),
    ]
    .join("\n---\n");
    let second = [
        regexy("a", "a.example", "/a/[0-9]+"),
        regexy("b", "b.example", "/b/[0-9]+$"),
    ]
    .join("\n---\n");
    let mut cache = BuildCache::default();
    let config = Config::default();
    let arcs = |ings: Vec<Ingress>| ings.into_iter().map(std::sync::Arc::new).collect::<Vec<_>>();
    for yaml in [&first, &second, &first] {
        let ings = parse(yaml);
        let cached = RouteTable::build_cached(&arcs(ings.clone()), &[], &(), &config, &mut cache);
        let fresh = RouteTable::build(&ings, &[], &(), &config);
        assert!(cached.problems.is_empty(), "{:?}", cached.problems);
        for (host, path) in [
            ("a.example", "/a/12"),
            ("a.example", "/a/x"),
            ("b.example", "/b/xy"),
            ("b.example", "/b/12"),
        ] {
            assert_eq!(
                go(&cached.table, host, path),
                go(&fresh.table, host, path),
                "{host}{path}"
            );
        }
        // What the build used, no more (the other b pattern is dropped).
        assert!(format!("{cache:?}").contains("regexes: 2"), "{cache:?}");
    }
    let t = RouteTable::build_cached(&arcs(parse(&second)), &[], &(), &config, &mut cache).table;
    assert_eq!(svc(&t, "b.example", "/b/12"), "b");
    assert_eq!(svc(&t, "b.example", "/b/xy"), "404");
}
