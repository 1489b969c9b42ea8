//! ingress-nginx compatibility mode: the verified tables of
//! reference/ingress.md §3.4 and the quirks of §3.9, each against strict
//! mode on the same Ingresses, and each quirk reported when it decides.

use lb_route::*;
use serde_json::json;

/// An Ingress of class `lb` on host `h.example.com`, created at second
/// `age` (older first). Paths are (path, pathType, service).
fn ing(name: &str, age: u32, annotations: &[(&str, &str)], paths: &[(&str, &str, &str)]) -> Ingress {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), json!(v)))
        .collect();
    let paths: Vec<_> = paths
        .iter()
        .map(|(p, t, svc)| json!({"path": p, "pathType": t, "backend": {"service": {"name": svc, "port": {"number": 80}}}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                     "creationTimestamp": format!("2026-01-01T00:00:{age:02}Z")},
        "spec": {"ingressClassName": "lb", "rules": [{"host": "h.example.com", "http": {"paths": paths}}]}
    }))
    .unwrap()
}

fn with_default(mut i: Ingress, svc: &str) -> Ingress {
    i.spec.default_backend =
        Some(serde_json::from_value(json!({"service": {"name": svc, "port": {"number": 80}}})).unwrap());
    i
}

fn build(mode: Mode, ingresses: &[Ingress]) -> Build {
    let config = Config::default().with_classes(ClassConfig::default().with_mode(mode));
    RouteTable::build(ingresses, &[], &(), &config)
}

fn table(mode: Mode, ingresses: &[Ingress]) -> RouteTable {
    let b = build(mode, ingresses);
    assert!(
        b.problems.iter().all(|p| p.severity == Severity::Warning),
        "{:?}",
        b.problems
    );
    b.table
}

/// `service upstream-path`, `status location`, or the status.
fn go(t: &RouteTable, target: &str) -> String {
    describe(t.lookup(&Request::get("h.example.com", target)))
}

fn describe(d: Decision<'_>) -> String {
    match d {
        Decision::Forward(f) => format!("{} {}", f.service, f.upstream_path),
        Decision::Redirect { status, location } => format!("{} {location}", status.as_u16()),
        d => d.status().as_u16().to_string(),
    }
}

fn quirks(t: &RouteTable, target: &str) -> Quirks {
    t.lookup_traced(&Request::get("h.example.com", target)).1
}

#[test]
fn rewrite_on_a_prefix_path_makes_it_a_prefix_regex() {
    // T-R3: `rewrite-target: /` on Prefix /testpath.
    let ings = [ing(
        "r",
        0,
        &[("rewrite-target", "/")],
        &[("/testpath", "Prefix", "svc")],
    )];
    let compat = table(Mode::IngressNginx, &ings);
    let strict = table(Mode::Strict, &ings);
    for (request, upstream) in [
        ("/testpath", "svc /"),
        ("/testpath/", "svc /"),
        ("/testpath/foo/bar", "svc /"),
        ("/testpath/foo?x=1", "svc /?x=1"),
        ("/testpathology", "svc /"),
        ("/TestPath/x", "svc /"),
        ("/other", "404"),
    ] {
        assert_eq!(go(&compat, request), upstream, "{request}");
    }
    // The spec keeps element-wise, case-sensitive matching; the quirk is
    // reported exactly where the answers part.
    assert_eq!(go(&strict, "/testpathology"), "404");
    assert_eq!(go(&strict, "/TestPath/x"), "404");
    assert_eq!(go(&strict, "/testpath/foo?x=1"), "svc /?x=1");
    assert_eq!(quirks(&compat, "/testpathology"), Quirks::REGEX_HOST);
    assert_eq!(quirks(&compat, "/testpath/foo"), Quirks::NONE);
    assert_eq!(quirks(&strict, "/testpathology"), Quirks::NONE);
}

#[test]
fn path_priority_docs_example() {
    // T-R4: ingress-path-matching.md "Path Priority".
    let ings = [
        ing(
            "ing-1",
            0,
            &[],
            &[("/foo/bar", "Prefix", "svc1"), ("/foo/bar/", "Prefix", "svc2")],
        ),
        ing(
            "ing-2",
            1,
            &[("rewrite-target", "/$1")],
            &[("/foo/bar/(.+)", "ImplementationSpecific", "svc3")],
        ),
    ];
    let b = build(Mode::IngressNginx, &ings);
    // The plain Ingress is told its paths changed meaning.
    assert!(
        b.problems
            .iter()
            .any(|p| p.object.to_string() == "Ingress default/ing-1"
                && p.message.contains("regex mode")
                && p.message.contains("default/ing-2")),
        "{:?}",
        b.problems
    );
    let t = b.table;
    for (request, upstream) in [
        ("/foo/bar/1", "svc3 /1"),
        ("/foo/bar/1/2", "svc3 /1/2"),
        ("/foo/bar/", "svc2 /foo/bar/"),
        ("/foo/bar", "svc1 /foo/bar"),
        ("/foo/barbaz", "svc1 /foo/barbaz"),
        ("/FOO/BAR", "svc1 /FOO/BAR"),
        ("/foo", "404"),
    ] {
        assert_eq!(go(&t, request), upstream, "{request}");
    }
    let strict = table(Mode::Strict, &ings);
    assert_eq!(
        go(&strict, "/foo/bar"),
        "svc2 /foo/bar",
        "the longest Prefix wins in the spec"
    );
    assert_eq!(go(&strict, "/foo/barbaz"), "404");
    assert_eq!(quirks(&t, "/foo/bar"), Quirks::REGEX_HOST);
    assert_eq!(quirks(&t, "/foo/bar/1"), Quirks::NONE, "both modes pick svc3");
}

#[test]
fn first_match_by_length_not_best_match() {
    // T-R5: ingress-path-matching.md "Warning".
    let ings = [ing(
        "i",
        0,
        &[("use-regex", "true")],
        &[
            ("/foo/bar/[A-Z0-9]{3}", "ImplementationSpecific", "a"),
            ("/foo/bar/bar", "Prefix", "b"),
        ],
    )];
    let t = table(Mode::IngressNginx, &ings);
    for (request, svc) in [
        ("/foo/bar/bar", "a"),
        ("/foo/bar/abc", "a"),
        ("/foo/bar/barista", "a"),
        ("/FOO/BAR/BAR", "a"),
        ("/foo/bar/ab", "404"),
    ] {
        assert_eq!(go(&t, request).split(' ').next().unwrap(), svc, "{request}");
    }
    // Strict mode ranks regex paths by their source length too, so here
    // the two modes agree and no quirk is reported.
    let strict = table(Mode::Strict, &ings);
    assert_eq!(go(&strict, "/foo/bar/bar"), "a /foo/bar/bar");
    assert_eq!(quirks(&t, "/foo/bar/bar"), Quirks::NONE);
}

#[test]
fn regex_spreads_to_other_ingresses_of_the_host() {
    // T-R6: cross-Ingress contamination (Ingress B's Exact path becomes a
    // case-insensitive prefix regex).
    for (x, table_rows) in [
        (
            "/[A-Z]{3}",
            &[
                ("/headers", "a"),
                ("/Header", "a"),
                ("/HEADERSX", "a"),
                ("/uuid", "a"),
                ("/ab", "404"),
            ][..],
        ),
        (
            "/api/v[0-9]+",
            &[
                ("/headers", "b"),
                ("/Header", "b"),
                ("/Headerless", "b"),
                ("/HEADER/x", "b"),
                ("/api/v2/x", "a"),
                ("/API/V10", "a"),
                ("/api/vx", "404"),
            ][..],
        ),
    ] {
        let ings = [
            ing("a", 0, &[("use-regex", "true")], &[(x, "ImplementationSpecific", "a")]),
            ing("b", 1, &[], &[("/Header", "Exact", "b")]),
        ];
        let t = table(Mode::IngressNginx, &ings);
        for (request, svc) in table_rows {
            assert_eq!(go(&t, request).split(' ').next().unwrap(), *svc, "{x} {request}");
        }
        // Strict: B's Exact path stays exact (whole path, case-sensitive),
        // whatever A asks.
        let strict = table(Mode::Strict, &ings);
        let first = |target| go(&strict, target).split(' ').next().unwrap().to_owned();
        if x == "/api/v[0-9]+" {
            assert_eq!(first("/Header"), "b");
            assert_eq!(first("/HEADER/x"), "404");
            assert_eq!(quirks(&t, "/HEADER/x"), Quirks::REGEX_HOST);
        } else {
            // A's regex is the longer path: it wins in both modes.
            assert_eq!(first("/Header"), "a");
        }
    }
}

#[test]
fn regex_and_rewrite_tables_agree_in_both_modes() {
    // T-R1 and T-R2 read the same in both modes (one regex Ingress).
    let ings = [ing(
        "r",
        0,
        &[("use-regex", "true"), ("rewrite-target", "/$2")],
        &[("/something(/|$)(.*)", "ImplementationSpecific", "s")],
    )];
    let t2 = [ing(
        "r",
        0,
        &[("rewrite-target", "/new/backend/$1")],
        &[("/foo/bar/(.+)", "ImplementationSpecific", "s")],
    )];
    for mode in [Mode::Strict, Mode::IngressNginx] {
        let t = table(mode, &ings);
        for (request, upstream) in [
            ("/something", "s /"),
            ("/something/new?x=1&y=2", "s /new?x=1&y=2"),
            ("/SOMETHING/New", "s /New"),
            ("/something/%2e%2e/etc", "404"),
            ("/somethingelse", "404"),
        ] {
            assert_eq!(go(&t, request), upstream, "{mode:?} {request}");
        }
        let t = table(mode, &t2);
        for (request, upstream) in [
            ("/foo/bar/bar", "s /new/backend/bar"),
            ("/FOO/BAR/baz", "s /new/backend/baz"),
            ("/foo/bar/", "404"),
            ("/foo/barbaz", "404"),
        ] {
            assert_eq!(go(&t, request), upstream, "{mode:?} {request}");
        }
    }
}

#[test]
fn trailing_slash_paths_redirect_requests_without_it() {
    // T-conf: Prefix /aaa/bbb/ and Exact /foo/ answer 301 to the path
    // without its slash; Prefix /x/ beside Prefix /x does not.
    let ings = [ing(
        "t",
        0,
        &[],
        &[
            ("/aaa/bbb/", "Prefix", "aaa"),
            ("/foo/", "Exact", "foo"),
            ("/x", "Prefix", "x"),
            ("/x/", "Prefix", "x2"),
            ("/", "Prefix", "root"),
        ],
    )];
    let t = table(Mode::IngressNginx, &ings);
    assert_eq!(go(&t, "/aaa/bbb"), "301 http://h.example.com/aaa/bbb/");
    assert_eq!(go(&t, "/aaa/bbb?q=1"), "301 http://h.example.com/aaa/bbb/?q=1");
    assert_eq!(
        describe(t.lookup(&Request::get("H.example.com:8443", "/foo").with_https(true))),
        "301 https://h.example.com/foo/"
    );
    assert_eq!(quirks(&t, "/foo"), Quirks::TRAILING_SLASH_REDIRECT);
    // Everything else is the spec's (element-wise, case-sensitive).
    assert_eq!(go(&t, "/aaa/bbb/c"), "aaa /aaa/bbb/c");
    assert_eq!(go(&t, "/aaa/bbbccc"), "root /aaa/bbbccc");
    assert_eq!(go(&t, "/AAA/bbb/c"), "root /AAA/bbb/c");
    assert_eq!(go(&t, "/foo/"), "foo /foo/");
    assert_eq!(go(&t, "/x").split(' ').next().unwrap(), "x2");
    assert_eq!(quirks(&t, "/x"), Quirks::NONE);
    // Strict: the spec's trailing-slash rules, no implicit redirect.
    let strict = table(Mode::Strict, &ings);
    assert_eq!(go(&strict, "/aaa/bbb"), "aaa /aaa/bbb");
    assert_eq!(go(&strict, "/foo"), "root /foo");
}

#[test]
fn requests_matching_no_path_take_the_first_ingress_annotations() {
    // Quirk 11: the host's root location carries the annotations of the
    // Ingress that created the host.
    let catch_all: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "fallback", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:09Z"},
        "spec": {"ingressClassName": "lb", "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}}}
    }))
    .unwrap();
    let ings = [
        ing(
            "first",
            0,
            &[("allowlist-source-range", "10.0.0.0/8")],
            &[("/app", "Prefix", "app")],
        ),
        ing("second", 1, &[], &[("/open", "Prefix", "open")]),
        catch_all,
    ];
    let t = table(Mode::IngressNginx, &ings);
    let from = |ip: &str, target: &'static str| {
        t.lookup_traced(&Request::get("h.example.com", target).with_client(ip.parse().unwrap()))
    };
    let (d, q) = from("192.168.1.1", "/other");
    assert_eq!(d.status(), 403u16);
    assert_eq!(q, Quirks::ROOT_OPTIONS);
    let (d, q) = from("10.1.1.1", "/other");
    assert_eq!(describe(d), "fallback /other");
    assert_eq!(q, Quirks::ROOT_OPTIONS, "the first Ingress's options ride along");
    // A matched path keeps its own Ingress's options.
    assert_eq!(describe(from("192.168.1.1", "/open").0), "open /open");
    // Strict: the catch-all's own (empty) options.
    let strict = table(Mode::Strict, &ings);
    let d = strict.lookup(&Request::get("h.example.com", "/other").with_client("192.168.1.1".parse().unwrap()));
    assert_eq!(describe(d), "fallback /other");

    // The default backend of an Ingress with a rewrite is rewritten too.
    let ings = [with_default(
        ing("rw", 0, &[("rewrite-target", "/")], &[("/app", "Prefix", "app")]),
        "def",
    )];
    let t = table(Mode::IngressNginx, &ings);
    assert_eq!(go(&t, "/zzz?a=1"), "def /?a=1");
    assert_eq!(quirks(&t, "/zzz"), Quirks::ROOT_OPTIONS);
    assert_eq!(go(&table(Mode::Strict, &ings), "/zzz?a=1"), "def /zzz?a=1");

    // Without any default backend: a redirect of the first Ingress still
    // happens; a plain 404 reports no quirk.
    let ings = [ing(
        "f",
        0,
        &[("force-ssl-redirect", "true")],
        &[("/app", "Prefix", "app")],
    )];
    let t = table(Mode::IngressNginx, &ings);
    assert_eq!(go(&t, "/nothing/"), "308 https://h.example.com/nothing");
    assert_eq!(quirks(&t, "/nothing"), Quirks::ROOT_OPTIONS);
    assert_eq!(go(&table(Mode::Strict, &ings), "/nothing"), "404");
    let t = table(Mode::IngressNginx, &[ing("p", 0, &[], &[("/app", "Prefix", "app")])]);
    assert_eq!(
        t.lookup_traced(&Request::get("h.example.com", "/nothing")),
        (Decision::NotFound, Quirks::NONE)
    );
}

#[test]
fn the_mode_is_chosen_per_ingress_class() {
    let class = |name: &str, mode: Option<&str>| -> IngressClass {
        let mut annotations = serde_json::Map::new();
        if let Some(m) = mode {
            annotations.insert(MODE_ANNOTATION.into(), json!(m));
        }
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations},
                                      "spec": {"controller": CONTROLLER}}))
        .unwrap()
    };
    let classes = [
        class("nginx", Some("ingress-nginx")),
        class("spec", None),
        class("typo", Some("nginx")),
    ];
    let mut rewrite = ing("rw", 0, &[("rewrite-target", "/")], &[("/testpath", "Prefix", "svc")]);
    rewrite.spec.ingress_class_name = Some("nginx".into());
    let b = RouteTable::build(std::slice::from_ref(&rewrite), &classes, &(), &Config::default());
    assert_eq!(go(&b.table, "/testpathology"), "svc /");
    rewrite.spec.ingress_class_name = Some("spec".into());
    let b = RouteTable::build(std::slice::from_ref(&rewrite), &classes, &(), &Config::default());
    assert_eq!(go(&b.table, "/testpathology"), "404");
    // An invalid mode is reported on the IngressClass; its Ingresses are
    // matched in the configured mode.
    rewrite.spec.ingress_class_name = Some("typo".into());
    let b = RouteTable::build(std::slice::from_ref(&rewrite), &classes, &(), &Config::default());
    assert_eq!(go(&b.table, "/testpathology"), "404");
    let p = &b.problems[0];
    assert_eq!(
        (p.severity, p.object.to_string().as_str()),
        (Severity::Error, "IngressClass typo")
    );
    assert!(
        p.field.as_deref().is_some_and(|f| f.contains(MODE_ANNOTATION)) && p.message.contains("\"nginx\""),
        "{p}"
    );

    // Two modes on one host: the older Ingress's class decides, the other
    // is told.
    let mut older = ing("older", 0, &[], &[("/a", "Prefix", "a")]);
    older.spec.ingress_class_name = Some("spec".into());
    let mut newer = ing(
        "newer",
        1,
        &[("use-regex", "true")],
        &[("/b.*", "ImplementationSpecific", "b")],
    );
    newer.spec.ingress_class_name = Some("nginx".into());
    let b = RouteTable::build(&[newer, older], &classes, &(), &Config::default());
    let p = b
        .problems
        .iter()
        .find(|p| p.object.to_string() == "Ingress default/newer")
        .expect("the newer Ingress is told");
    assert!(
        p.message.contains("strict mode") && p.message.contains("default/older"),
        "{p}"
    );
    assert_eq!(go(&b.table, "/A"), "404", "the host stays strict");
    assert_eq!(go(&b.table, "/bxyz"), "b /bxyz");
}

#[test]
fn negative_lookahead_with_rewrite_keeps_capture_numbers() {
    // The Traefik-documented idiom (G5), in both modes.
    let ings = [ing(
        "api",
        0,
        &[("use-regex", "true"), ("rewrite-target", "/$2")],
        &[("/api/(?!(internal|admin)/)(.*)", "ImplementationSpecific", "api")],
    )];
    for mode in [Mode::Strict, Mode::IngressNginx] {
        let t = table(mode, &ings);
        assert_eq!(go(&t, "/api/v1/users?x=1"), "api /v1/users?x=1", "{mode:?}");
        assert_eq!(go(&t, "/api/administrator"), "api /administrator", "{mode:?}");
        assert_eq!(go(&t, "/api/internal/x"), "404", "{mode:?}");
        assert_eq!(go(&t, "/API/Admin/"), "404", "{mode:?}");
    }
}

/// A plain path too long to compile as a regex, on a regex host: the table
/// builds (no panic), the path is reported and not served, the rest serve.
#[test]
fn a_long_plain_path_on_a_regex_host_is_reported_not_a_panic() {
    let long = format!("/{}", "x".repeat(200_000));
    let ings = [
        ing(
            "re",
            1,
            &[("use-regex", "true")],
            &[("/api/[0-9]+", "ImplementationSpecific", "api")],
        ),
        ing("long", 2, &[], &[(&long, "Exact", "long"), ("/ok", "Prefix", "ok")]),
    ];
    let b = build(Mode::IngressNginx, &ings);
    let errors: Vec<_> = b.problems.iter().filter(|p| p.severity == Severity::Error).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].object.to_string().contains("default/long") && errors[0].message.contains("not served"));
    assert_eq!(go(&b.table, "/api/7"), "api /api/7");
    assert_eq!(go(&b.table, "/ok/x"), "ok /ok/x");
    assert_eq!(go(&b.table, &long), "414", "a request this long is refused anyway");
}

/// One tenant's regex paths cannot make every request on the host costly:
/// the host's regex set is filled oldest Ingress first within its budget;
/// the Ingress that passes it and every newer one are reported and not
/// served there, the older ones keep serving.
#[test]
fn regex_paths_past_the_host_budget_are_left_out_newest_first() {
    let paths: Vec<String> = (0..400).map(|i| format!("/t{i}/.*[ab]{{1,200}}")).collect();
    let mut ings = vec![ing(
        "old",
        1,
        &[("use-regex", "true")],
        &[("/old/[0-9]+", "ImplementationSpecific", "old")],
    )];
    for (k, chunk) in paths.chunks(50).enumerate() {
        let p: Vec<(&str, &str, &str)> = chunk
            .iter()
            .map(|p| (p.as_str(), "ImplementationSpecific", "t"))
            .collect();
        ings.push(ing(&format!("tenant{k}"), 2 + k as u32, &[("use-regex", "true")], &p));
    }
    for mode in [Mode::Strict, Mode::IngressNginx] {
        let b = build(mode, &ings);
        let out: Vec<String> = b
            .problems
            .iter()
            .filter(|p| p.message.contains("regex budget"))
            .map(|p| p.object.to_string())
            .collect();
        assert!(!out.is_empty() && out.len() < 8, "{mode:?}: {out:?}");
        // Newest first: the last tenant is out, the oldest Ingress serves.
        assert!(out.iter().any(|o| o.contains("tenant7")), "{out:?}");
        assert!(!out.iter().any(|o| o.contains("default/old")));
        assert_eq!(go(&b.table, "/old/42"), "old /old/42", "{mode:?}");
        assert_eq!(go(&b.table, "/t399/ab"), "404", "{mode:?}: tenant7 is out");
    }
}

/// A path that would close the regex's anchoring group (`)|(.*`) is not
/// a regex of its own: on a regex host it is matched as its text, and
/// cannot capture other Ingresses' requests.
#[test]
fn a_path_cannot_escape_its_regex_anchor() {
    let old = ing(
        "old",
        1,
        &[("use-regex", "true")],
        &[("/api/(.*)", "ImplementationSpecific", "api")],
    );
    let evil = ing("evil", 2, &[], &[("/zzzzzzzzzzz)|(.*", "Prefix", "evil")]);
    let t = build(Mode::IngressNginx, &[old, evil]).table;
    assert_eq!(go(&t, "/api/foo"), "api /api/foo");
    assert_eq!(go(&t, "/zzzzzzzzzzz)|(.*/x"), "evil /zzzzzzzzzzz)|(.*/x");
}
