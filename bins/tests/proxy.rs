//! `lb-proxy explain` as users and outside scripts run it (DESIGN.md §4).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn explain(dir: &Path, url: &str, extra: &[&str]) -> (Value, Output) {
    let mut args = vec![
        "explain",
        "--manifests",
        dir.to_str().unwrap(),
        "--url",
        url,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(&args)
        .output()
        .expect("lb-proxy runs");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out)
}

#[test]
fn shipped_examples_route_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (v, out) = explain(&dir, "http://shop.example.com/api/items?id=7", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["status"], 200);
    assert_eq!(v["ingress"], "default/shop");
    assert_eq!(v["service"], "api");
    assert_eq!(v["port"], 8080, "named port resolved through the Service");
    assert_eq!(v["upstream_path"], "/api/items?id=7");
    assert_eq!(v["location"], Value::Null);
    // Element-wise prefix: /apix is not under /api.
    let (v, _) = explain(&dir, "http://shop.example.com/apix", &[]);
    assert_eq!((v["service"].as_str(), v["port"].as_u64()), (Some("nginx"), Some(80)));
    // A Host header overrides the URL's host.
    let (v, _) = explain(
        &dir,
        "http://192.0.2.1/healthz",
        &["--header", "Host: shop.example.com"],
    );
    assert_eq!(v["service"], "api");
    let (v, out) = explain(&dir, "http://unknown.example.com/", &[]);
    assert!(out.status.success());
    assert_eq!(v["status"], 404);
    assert_eq!(v["service"], Value::Null);
    let (v, _) = explain(&dir, "http://shop.example.com/%2e%2e/x/../../etc", &[]);
    assert_eq!(v["status"], 400);
}

#[test]
fn an_invalid_ingress_is_reported_and_the_rest_still_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ingresses.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: good, namespace: web}
spec:
  ingressClassName: lb
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: web}
spec:
  ingressClassName: lb
  rules:
  - host: b.example.com
    http:
      paths:
      - {path: /, pathType: Prefixx, backend: {service: {name: b, port: {number: 80}}}}
"#,
    )
    .unwrap();
    let (v, out) = explain(dir.path(), "http://a.example.com/x", &[]);
    assert_eq!(v["service"], "a");
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid manifests: exit 1, answer still printed"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ingresses.yaml") && err.contains("document 2") && err.contains("Ingress web/broken"),
        "{err}"
    );
    assert!(
        err.contains("spec.rules[0].http.paths[0].pathType") && err.contains("\"Prefixx\""),
        "{err}"
    );
    let (v, _) = explain(dir.path(), "http://b.example.com/", &[]);
    assert_eq!(v["status"], 404);
}

#[test]
fn bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args([
            "explain",
            "--manifests",
            dir.path().to_str().unwrap(),
            "--url",
            "ftp://x/",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    // Serving flags are checked before anything is bound.
    for (flag, value, said) in [
        ("--trusted-proxy", "127.9.9.9/8", "127.0.0.0/8 is meant"),
        ("--trusted-proxy", "bogus", "neither an address nor a CIDR"),
        ("--workers", "0", "--workers"),
        ("--workers", "5000", "--workers"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .args([
                "--manifests",
                dir.path().to_str().unwrap(),
                "--http-listen",
                "127.0.0.1:0",
                flag,
                value,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(said), "{flag} {value}: {stderr}");
    }
    // A manifests directory that is not there: said before anything
    // listens, nothing made.
    let missing = dir.path().join("typo");
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["--manifests", missing.to_str().unwrap(), "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifests directory"));
    assert!(!missing.exists());
    // A file-mode proxy cannot write Ingress status.
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args([
            "--manifests",
            dir.path().to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--publish-status-address", "192.0.2.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster mode only"));
}

#[test]
fn redirects_carry_their_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: web
  annotations:
    nginx.ingress.kubernetes.io/app-root: /app1
spec:
  ingressClassName: lb
  rules:
  - host: approot.bar.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {number: 80}}}}
"#,
    )
    .unwrap();
    let (v, out) = explain(dir.path(), "http://approot.bar.com/?x=1", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["status"], 302);
    assert_eq!(v["location"], "http://approot.bar.com/app1");
    assert_eq!(v["service"], Value::Null);
    let (v, _) = explain(dir.path(), "http://approot.bar.com/app1", &[]);
    assert_eq!(
        (v["status"].as_u64(), v["upstream_path"].as_str()),
        (Some(200), Some("/app1"))
    );
}

#[test]
fn ingress_nginx_mode_per_class_and_by_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ingresses.yaml"),
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
  annotations: {lb.io/route-mode: ingress-nginx}
spec: {controller: lb.io/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  namespace: web
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /}
spec:
  ingressClassName: nginx
  rules:
  - host: old.example.com
    http:
      paths:
      - {path: /testpath, pathType: Prefix, backend: {service: {name: old, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: modern, namespace: web}
spec:
  ingressClassName: lb
  rules:
  - host: new.example.com
    http:
      paths:
      - {path: /docs/, pathType: Prefix, backend: {service: {name: docs, port: {number: 80}}}}
"#,
    )
    .unwrap();
    // The class asks for ingress-nginx's regex matching; the answer says so.
    let (v, out) = explain(dir.path(), "http://old.example.com/testpathology", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        (v["service"].as_str(), v["upstream_path"].as_str()),
        (Some("old"), Some("/"))
    );
    assert!(v["why"].as_str().unwrap().contains("ingress-nginx regex host"), "{v}");
    // Class lb is strict unless --route-mode says otherwise.
    let (v, _) = explain(dir.path(), "http://new.example.com/docs", &[]);
    assert_eq!((v["status"].as_u64(), v["service"].as_str()), (Some(200), Some("docs")));
    let (v, _) = explain(
        dir.path(),
        "http://new.example.com/docs?x=1",
        &["--route-mode", "ingress-nginx"],
    );
    assert_eq!(v["status"], 301);
    assert_eq!(v["location"], "http://new.example.com/docs/?x=1");
    assert!(v["why"].as_str().unwrap().contains("trailing-slash"), "{v}");
    // An encoded slash: refused by default, a separator when decoded.
    let (v, _) = explain(dir.path(), "http://new.example.com/docs%2Fa", &[]);
    assert_eq!(v["status"], 400);
    let (v, _) = explain(
        dir.path(),
        "http://new.example.com/docs%2Fa",
        &["--encoded-slash", "decode"],
    );
    assert_eq!(
        (v["service"].as_str(), v["upstream_path"].as_str()),
        (Some("docs"), Some("/docs/a"))
    );
}

#[test]
fn an_invalid_route_mode_is_reported_on_its_ingress_class() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("class.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: typo\n  \
         annotations: {lb.io/route-mode: nginx}\nspec: {controller: lb.io/ingress}\n",
    )
    .unwrap();
    let (v, out) = explain(dir.path(), "http://a.example.com/", &[]);
    assert_eq!(out.status.code(), Some(1), "an invalid object fails the run");
    assert_eq!(v["status"], 404, "the answer is still printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("class.yaml") && stderr.contains("IngressClass") && stderr.contains("typo"),
        "{stderr}"
    );
    assert!(stderr.contains("lb.io/route-mode"), "{stderr}");
}

/// Requests a proxy must refuse are 400 in `explain` too; the scheme is
/// case-insensitive; `--method` and `--client-ip` explain preflights and
/// allowlists.
#[test]
fn explain_answers_as_a_strict_proxy_would() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for (url, header) in [
        ("http://user@shop.example.com/", None),
        ("http://shop.example.com:abc/", None),
        ("http://shop.example.com:99999/", None),
        ("http://192.0.2.1/", Some("Host: shop example.com")),
        ("http://192.0.2.1/", Some("Host: user@shop.example.com")),
    ] {
        let extra: Vec<&str> = header.map(|h| vec!["--header", h]).unwrap_or_default();
        let (v, out) = explain(&dir, url, &extra);
        assert_eq!(v["status"], 400, "{url} {header:?}: {v}");
        assert!(out.status.success());
    }
    let (v, _) = explain(
        &dir,
        "http://192.0.2.1/",
        &[
            "--header",
            "Host: shop.example.com",
            "--header",
            "Host: other.example.com",
        ],
    );
    assert_eq!(v["status"], 400, "two Host headers: {v}");
    let (v, _) = explain(&dir, "HTTP://shop.example.com/api/items", &[]);
    assert_eq!(v["service"], "api", "{v}");
    let (v, _) = explain(&dir, "http://shop.example.com/api/items?x=1#frag", &[]);
    assert_eq!(
        (v["status"].as_u64(), v["upstream_path"].as_str()),
        (Some(200), Some("/api/items?x=1")),
        "{v}"
    );
    let (v, _) = explain(&dir, "http://user@shop.example.com/", &[]);
    assert!(v["why"].as_str().unwrap().contains("in the URL"), "{v}");

    // An allowlist and CORS, explained with --client-ip and --method.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("ing.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: guarded\n  annotations:\n    nginx.ingress.kubernetes.io/whitelist-source-range: 10.0.0.0/8\n    nginx.ingress.kubernetes.io/enable-cors: \"true\"\nspec:\n  ingressClassName: lb\n  rules:\n  - host: g.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n",
    )
    .unwrap();
    let url = "http://g.example.com/";
    let (v, _) = explain(tmp.path(), url, &["--client-ip", "10.1.2.3"]);
    assert_eq!(v["status"], 200, "{v}");
    let (v, _) = explain(tmp.path(), url, &["--client-ip", "192.0.2.7"]);
    assert_eq!(v["status"], 403, "{v}");
    let (v, _) = explain(
        tmp.path(),
        url,
        &[
            "--client-ip",
            "10.1.2.3",
            "--method",
            "OPTIONS",
            "--header",
            "Origin: https://app.example.com",
            "--header",
            "Access-Control-Request-Method: PUT",
        ],
    );
    assert_eq!(v["status"], 204, "{v}");
    assert!(v["why"].as_str().unwrap().contains("preflight"), "{v}");
    let out = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args([
            "explain",
            "--manifests",
            tmp.path().to_str().unwrap(),
            "--url",
            url,
            "--method",
            "GE T",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
