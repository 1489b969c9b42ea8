//! ingress-nginx annotations as executed by the table (reference/ingress.md
//! §3.3–3.5, the verified tables of §3.4 where strict mode agrees).

use lb_route::*;

fn table(annotations: &str, paths: &[(&str, &str)], tls: bool) -> RouteTable {
    let mut yaml = format!(
        "metadata: {{name: ing, namespace: default, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: lb\n"
    );
    if tls {
        yaml += "  tls: [{hosts: [h.example.com], secretName: cert}]\n";
    }
    yaml += "  rules:\n  - host: h.example.com\n    http:\n      paths:\n";
    for (path, kind) in paths {
        yaml += &format!(
            "      - {{path: {path:?}, pathType: {kind}, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
        );
    }
    let ing: Ingress = serde_json::from_value(serde_saphyr::from_str::<serde_json::Value>(&yaml).unwrap()).unwrap();
    let b = RouteTable::build(&[ing], &[], &(), &Config::default());
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    b.table
}

fn go(t: &RouteTable, target: &str) -> String {
    describe(t.lookup(&Request::get("h.example.com", target)))
}

fn describe(d: Decision<'_>) -> String {
    match d {
        Decision::Forward(f) => f.upstream_path.into_owned(),
        Decision::Redirect { status, location } => format!("{} {location}", status.as_u16()),
        d => d.status().as_u16().to_string(),
    }
}

#[test]
fn rewrite_with_captures_docs_example() {
    // T-R1: docs/examples/rewrite.
    let t = table(
        r#"nginx.ingress.kubernetes.io/use-regex: "true", nginx.ingress.kubernetes.io/rewrite-target: /$2"#,
        &[("/something(/|$)(.*)", "ImplementationSpecific")],
        false,
    );
    for (request, upstream) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/something/new", "/new"),
        ("/something/new?x=1&y=2", "/new?x=1&y=2"),
        ("/something?q=1", "/?q=1"),
        ("/something/new/", "/new/"),
        ("/SOMETHING/New", "/New"),
        ("/something//a", "/a"),
        ("/something/a%20b", "/a%20b"),
        ("/something/../something/x", "/x"),
        ("/x/../something/new", "/new"),
        ("/something/%2e%2e/etc", "404"),
        ("/somethingelse", "404"),
        ("/something-else", "404"),
        ("/prefix/something/new", "404"),
        // Strict: an encoded slash is refused, not decoded into a separator.
        ("/something/a%2Fb", "400"),
    ] {
        assert_eq!(go(&t, request), upstream, "{request}");
    }
}

#[test]
fn rewrite_custom_parameters_and_implied_regex() {
    // T-R2: rewrite-target alone makes ImplementationSpecific paths regexes.
    let t = table(
        r#"nginx.ingress.kubernetes.io/rewrite-target: /new/backend/$1"#,
        &[("/foo/bar/(.+)", "ImplementationSpecific")],
        false,
    );
    for (request, upstream) in [
        ("/foo/bar/bar", "/new/backend/bar"),
        ("/foo/bar/a/b", "/new/backend/a/b"),
        ("/foo/bar/x?y=1", "/new/backend/x?y=1"),
        ("/FOO/BAR/baz", "/new/backend/baz"),
        ("/foo/bar/", "404"),
        ("/foo/bar", "404"),
        ("/foo/barbaz", "404"),
    ] {
        assert_eq!(go(&t, request), upstream, "{request}");
    }
}

#[test]
fn rewrite_on_a_prefix_path_replaces_the_whole_uri() {
    // T-R3, strict: the Prefix path keeps its element-wise, case-sensitive meaning.
    let t = table(
        r#"nginx.ingress.kubernetes.io/rewrite-target: /"#,
        &[("/testpath", "Prefix")],
        false,
    );
    for (request, upstream) in [
        ("/testpath", "/"),
        ("/testpath/", "/"),
        ("/testpath/foo/bar", "/"),
        ("/testpath/foo?x=1", "/?x=1"),
        ("/testpathology", "404"),
        ("/TestPath/x", "404"),
        ("/other", "404"),
    ] {
        assert_eq!(go(&t, request), upstream, "{request}");
    }
    // X-Forwarded-Prefix only when a rewrite happens.
    let t = table(
        r#"nginx.ingress.kubernetes.io/rewrite-target: /, nginx.ingress.kubernetes.io/x-forwarded-prefix: /p"#,
        &[("/testpath", "Prefix")],
        false,
    );
    match t.lookup(&Request::get("h.example.com", "/testpath/x")) {
        Decision::Forward(f) => assert_eq!(f.x_forwarded_prefix, Some("/p")),
        d => panic!("{d:?}"),
    }
}

#[test]
fn redirects() {
    let t = table(
        r#"nginx.ingress.kubernetes.io/app-root: /app1"#,
        &[("/", "Prefix")],
        false,
    );
    assert_eq!(go(&t, "/"), "302 http://h.example.com/app1");
    assert_eq!(go(&t, "/?x=1"), "302 http://h.example.com/app1", "query dropped");
    assert_eq!(go(&t, "/other"), "/other", "only the root");

    let t = table(
        r#"nginx.ingress.kubernetes.io/permanent-redirect: "http://redirect.example.com""#,
        &[("/something", "Prefix")],
        false,
    );
    for r in ["/something", "/something/", "/something/deep", "/something?x=1"] {
        assert_eq!(go(&t, r), "301 http://redirect.example.com", "verbatim, {r}");
    }
    let t = table(
        r#"nginx.ingress.kubernetes.io/temporal-redirect: "https://t.example/x", nginx.ingress.kubernetes.io/temporal-redirect-code: "307""#,
        &[("/", "Prefix")],
        false,
    );
    assert_eq!(go(&t, "/a"), "307 https://t.example/x");
}

#[test]
fn https_redirects() {
    // A host with a certificate: plain http goes to https, 308, one trailing slash stripped.
    let t = table("", &[("/", "Prefix")], true);
    assert_eq!(go(&t, "/"), "308 https://h.example.com");
    assert_eq!(go(&t, "/a/b?x=1"), "308 https://h.example.com/a/b?x=1");
    assert_eq!(
        describe(t.lookup(&Request::get("h.example.com:8080", "/a/"))),
        "308 https://h.example.com/a"
    );
    let mut req = Request::get("h.example.com", "/a");
    req.https = true;
    assert_eq!(describe(t.lookup(&req)), "/a", "https requests are served");
    let t = table(
        r#"nginx.ingress.kubernetes.io/preserve-trailing-slash: "true""#,
        &[("/", "Prefix")],
        true,
    );
    assert_eq!(go(&t, "/"), "308 https://h.example.com/");
    let t = table(
        r#"nginx.ingress.kubernetes.io/ssl-redirect: "false""#,
        &[("/", "Prefix")],
        true,
    );
    assert_eq!(go(&t, "/"), "/");
    // No certificate: only when forced.
    assert_eq!(go(&table("", &[("/", "Prefix")], false), "/"), "/");
    let t = table(
        r#"nginx.ingress.kubernetes.io/force-ssl-redirect: "true""#,
        &[("/", "Prefix")],
        false,
    );
    assert_eq!(go(&t, "/x"), "308 https://h.example.com/x");
}

#[test]
fn source_ranges() {
    let t = table(
        r#"nginx.ingress.kubernetes.io/allowlist-source-range: "10.0.0.0/8,192.168.1.7", nginx.ingress.kubernetes.io/denylist-source-range: "10.9.0.0/16""#,
        &[("/", "Prefix")],
        false,
    );
    let from = |ip: Option<&str>| {
        let mut r = Request::get("h.example.com", "/x");
        r.client = ip.map(|i| i.parse().unwrap());
        describe(t.lookup(&r))
    };
    assert_eq!(from(Some("10.1.2.3")), "/x");
    assert_eq!(from(Some("192.168.1.7")), "/x");
    assert_eq!(from(Some("192.168.1.8")), "403");
    assert_eq!(from(Some("10.9.1.1")), "403", "the denylist wins");
    assert_eq!(from(None), "403", "unknown client, allowlist set");
}

#[test]
fn options_reach_the_proxy_and_bad_values_disable_only_their_ingress() {
    let t = table(
        r#"nginx.ingress.kubernetes.io/proxy-body-size: 8m, nginx.ingress.kubernetes.io/backend-protocol: HTTPS, nginx.ingress.kubernetes.io/upstream-vhost: internal.svc"#,
        &[("/", "Prefix")],
        false,
    );
    match t.lookup(&Request::get("h.example.com", "/")) {
        Decision::Forward(f) => {
            assert_eq!(f.options.proxy_body_size, Some(8 << 20));
            assert_eq!(f.options.backend_protocol, BackendProtocol::Https);
            assert_eq!(f.upstream_host, "internal.svc");
        }
        d => panic!("{d:?}"),
    }
    let bad: Ingress = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad", "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "lots",
                                                    "nginx.ingress.kubernetes.io/server-snippet": "return 200;"}},
        "spec": {"ingressClassName": "lb", "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}
    }))
    .unwrap();
    let b = RouteTable::build(&[bad], &[], &(), &Config::default());
    assert_eq!(b.table.ingress_count(), 0);
    let err = b.problems.iter().find(|p| p.severity == Severity::Error).unwrap();
    assert_eq!(
        err.field.as_deref(),
        Some("metadata.annotations[\"nginx.ingress.kubernetes.io/proxy-body-size\"]")
    );
    assert!(err.message.starts_with("\"lots\""), "{err}");
    assert!(
        b.problems
            .iter()
            .any(|p| p.severity == Severity::Warning && p.message.contains("snippets are refused"))
    );
}

#[test]
fn cors_preflight_and_response_headers() {
    let t = table(
        r#"nginx.ingress.kubernetes.io/enable-cors: "true", nginx.ingress.kubernetes.io/cors-allow-origin: "https://app.example.com, https://*.foo.com", nginx.ingress.kubernetes.io/cors-max-age: "600""#,
        &[("/", "Prefix")],
        false,
    );
    let ask = |method: http::Method, origin: Option<&str>| {
        let mut headers = http::HeaderMap::new();
        if let Some(o) = origin {
            headers.insert(http::header::ORIGIN, o.parse().unwrap());
        }
        let mut r = Request::get("h.example.com", "/api");
        r.method = &method;
        r.headers = Some(&headers);
        match t.lookup(&r) {
            Decision::Preflight { headers } => ("preflight".to_string(), headers),
            Decision::Forward(f) => ("forward".to_string(), f.response_headers(origin)),
            d => (d.status().as_u16().to_string(), vec![]),
        }
    };
    let (kind, h) = ask(http::Method::OPTIONS, Some("https://app.example.com"));
    assert_eq!(kind, "preflight");
    assert!(
        h.contains(&("access-control-allow-origin", "https://app.example.com".into())),
        "{h:?}"
    );
    assert!(h.contains(&("access-control-max-age", "600".into())));
    assert!(h.contains(&("access-control-allow-credentials", "true".into())));
    // One-label wildcard origins.
    let (_, h) = ask(http::Method::GET, Some("https://a.foo.com"));
    assert!(
        h.contains(&("access-control-allow-origin", "https://a.foo.com".into())),
        "{h:?}"
    );
    let (kind, h) = ask(http::Method::GET, Some("https://a.b.foo.com"));
    assert_eq!((kind.as_str(), h.len()), ("forward", 0), "not allowed: no CORS headers");
    // OPTIONS without Origin is not a preflight: forwarded.
    assert_eq!(ask(http::Method::OPTIONS, None).0, "forward");
    // A bad origin list disables the Ingress.
    let bad: Ingress = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad", "annotations": {"nginx.ingress.kubernetes.io/enable-cors": "true",
            "nginx.ingress.kubernetes.io/cors-allow-origin": "app.example.com\r\nX: y"}},
        "spec": {"ingressClassName": "lb", "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}
    }))
    .unwrap();
    assert_eq!(
        RouteTable::build(&[bad], &[], &(), &Config::default())
            .table
            .ingress_count(),
        0
    );
}

#[test]
fn canary_by_header_cookie_and_weight() {
    let ing = |name: &str, service: &str, annotations: serde_json::Value| -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"ingressClassName": "lb", "rules": [{"host": "h.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}
        }))
        .unwrap()
    };
    let main = ing("main", "stable", serde_json::json!({}));
    let canary = ing(
        "canary",
        "next",
        serde_json::json!({
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary",
            "nginx.ingress.kubernetes.io/canary-by-cookie": "canary",
            "nginx.ingress.kubernetes.io/canary-weight": "25",
        }),
    );
    // The canary is listed first: it still attaches to the main route, not a conflict.
    let b = RouteTable::build(&[canary.clone(), main.clone()], &[], &(), &Config::default());
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    let t = &b.table;
    let pick = |header: Option<&str>, cookie: Option<&str>, sample: Option<u32>| {
        let mut h = http::HeaderMap::new();
        if let Some(v) = header {
            h.insert("x-canary", v.parse().unwrap());
        }
        if let Some(c) = cookie {
            h.insert(http::header::COOKIE, c.parse().unwrap());
        }
        let mut r = Request::get("h.example.com", "/x");
        r.headers = Some(&h);
        r.sample = sample;
        match t.lookup(&r) {
            Decision::Forward(f) => format!("{}{}", f.service, if f.canary { " (canary)" } else { "" }),
            d => panic!("{d:?}"),
        }
    };
    assert_eq!(pick(None, None, None), "stable");
    assert_eq!(pick(Some("always"), None, None), "next (canary)");
    assert_eq!(
        pick(Some("never"), Some("canary=always"), Some(0)),
        "stable",
        "the header decides first"
    );
    assert_eq!(
        pick(Some("maybe"), Some("a=1; canary=always"), None),
        "next (canary)",
        "falls through to the cookie"
    );
    assert_eq!(pick(None, Some("canary=never"), Some(0)), "stable");
    // Weight 25 of 100: samples 0..25 go to the canary.
    assert_eq!(pick(None, None, Some(24)), "next (canary)");
    assert_eq!(pick(None, None, Some(25)), "stable");
    assert_eq!(pick(None, None, Some(124)), "next (canary)");

    // A canary without a main Ingress for its host and path is reported and unused.
    let b = RouteTable::build(&[canary], &[], &(), &Config::default());
    assert!(
        b.problems[0].message.contains("no other Ingress serves it"),
        "{:?}",
        b.problems
    );
    assert_eq!(b.table.lookup(&Request::get("h.example.com", "/")).status(), 404u16);
}

#[test]
fn canary_by_header_pattern() {
    let ing = |name: &str, service: &str, annotations: serde_json::Value| -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"ingressClassName": "lb", "rules": [{"host": "h.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}
        }))
        .unwrap()
    };
    let canary = |extra: serde_json::Value| {
        let mut a = serde_json::json!({
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-by-header": "X-Region",
            "nginx.ingress.kubernetes.io/canary-by-header-pattern": "^(eu|us)-west",
        });
        a.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ing("canary", "next", a)
    };
    let main = ing("main", "stable", serde_json::json!({}));
    let service = |t: &RouteTable, region: &str| {
        let mut h = http::HeaderMap::new();
        h.insert("x-region", region.parse().unwrap());
        let mut r = Request::get("h.example.com", "/x");
        r.headers = Some(&h);
        match t.lookup(&r) {
            Decision::Forward(f) => f.service.to_owned(),
            d => panic!("{d:?}"),
        }
    };
    let b = RouteTable::build(
        &[main.clone(), canary(serde_json::json!({}))],
        &[],
        &(),
        &Config::default(),
    );
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(service(&b.table, "eu-west-1"), "next");
    assert_eq!(service(&b.table, "us-west"), "next");
    assert_eq!(service(&b.table, "ap-south"), "stable");
    assert_eq!(
        service(&b.table, "EU-west"),
        "stable",
        "case-sensitive, as ngx.re.match"
    );
    assert_eq!(service(&b.table, "always"), "stable", "a pattern replaces always/never");
    // A header value, when set too, is what counts.
    let b = RouteTable::build(
        &[
            main.clone(),
            canary(serde_json::json!({"nginx.ingress.kubernetes.io/canary-by-header-value": "ap-south"})),
        ],
        &[],
        &(),
        &Config::default(),
    );
    assert_eq!(service(&b.table, "ap-south"), "next");
    assert_eq!(service(&b.table, "eu-west-1"), "stable");
    // A pattern that cannot run in linear time disables the canary Ingress.
    let b = RouteTable::build(
        &[
            main,
            canary(serde_json::json!({"nginx.ingress.kubernetes.io/canary-by-header-pattern": "^(?!eu)"})),
        ],
        &[],
        &(),
        &Config::default(),
    );
    let p = &b.problems[0];
    assert_eq!(p.severity, Severity::Error);
    assert!(
        p.field
            .as_deref()
            .is_some_and(|f| f.contains("canary-by-header-pattern"))
            && p.message.contains("^(?!eu)"),
        "{p}"
    );
    assert_eq!(service(&b.table, "eu-west-1"), "stable");
}

#[test]
fn from_to_www_redirect() {
    let mk = |host: &str, name: &str| -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {"nginx.ingress.kubernetes.io/from-to-www-redirect": "true"}},
            "spec": {"ingressClassName": "lb", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        }))
        .unwrap()
    };
    let t = RouteTable::build(&[mk("www.foo.com", "www")], &[], &(), &Config::default()).table;
    assert_eq!(
        describe(t.lookup(&Request::get("foo.com", "/a?b=1"))),
        "308 http://www.foo.com/a?b=1"
    );
    assert_eq!(describe(t.lookup(&Request::get("www.foo.com", "/a"))), "/a");
    let t = RouteTable::build(&[mk("bar.com", "apex")], &[], &(), &Config::default()).table;
    assert_eq!(
        describe(t.lookup(&Request::get("WWW.bar.com:80", "/"))),
        "308 http://bar.com/"
    );
    // Never over a host some rule names.
    let t = RouteTable::build(
        &[mk("bar.com", "apex"), mk("www.bar.com", "www")],
        &[],
        &(),
        &Config::default(),
    )
    .table;
    assert_eq!(describe(t.lookup(&Request::get("www.bar.com", "/x"))), "/x");
    assert_eq!(describe(t.lookup(&Request::get("bar.com", "/x"))), "/x");
}

/// Booleans read as ingress-nginx reads them (Go's strconv.ParseBool), and
/// an empty rewrite-target refused rather than taken as `/`.
#[test]
fn booleans_as_go_parses_them_and_an_empty_rewrite_is_invalid() {
    for yes in ["1", "t", "T", "TRUE", "true", "True"] {
        let t = table(
            &format!(r#"nginx.ingress.kubernetes.io/use-regex: "{yes}""#),
            &[("/id/[0-9]+", "ImplementationSpecific")],
            false,
        );
        assert_eq!(go(&t, "/id/42"), "/id/42", "{yes}");
    }
    for no in ["0", "f", "F", "FALSE", "false", "False"] {
        let t = table(
            &format!(r#"nginx.ingress.kubernetes.io/use-regex: "{no}""#),
            &[("/id", "Prefix")],
            false,
        );
        assert_eq!(go(&t, "/id/42"), "/id/42", "{no}");
    }
    let build = |annotations: &str| {
        let yaml = format!(
            "metadata: {{name: ing, namespace: default, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: lb\n  rules:\n  - host: h.example.com\n    http:\n      paths:\n      - {{path: /a, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
        );
        let ing: Ingress = serde_json::from_value(serde_saphyr::from_str::<serde_json::Value>(&yaml).unwrap()).unwrap();
        RouteTable::build(&[ing], &[], &(), &Config::default())
    };
    for bad in [
        r#"nginx.ingress.kubernetes.io/use-regex: "yes""#,
        r#"nginx.ingress.kubernetes.io/ssl-redirect: "on""#,
        r#"nginx.ingress.kubernetes.io/rewrite-target: """#,
    ] {
        let b = build(bad);
        assert!(
            b.problems.iter().any(|p| p.severity == Severity::Error),
            "{bad}: {:?}",
            b.problems
        );
        assert_eq!(
            describe(b.table.lookup(&Request::get("h.example.com", "/a"))),
            "404",
            "{bad}: left out"
        );
    }
}
