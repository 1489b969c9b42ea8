//! lb-controller as users and outside scripts run it (DESIGN.md §4).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lb-controller"))
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("lb-controller runs")
}

fn once(dir: &Path) -> (Value, Output) {
    let out = run(&["--manifests", dir.to_str().unwrap(), "--once", "--output", "json"]);
    let v =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (v, out)
}

fn ips_of(v: &Value) -> Vec<(String, Vec<String>)> {
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = format!("{}/{}", s["namespace"].as_str().unwrap(), s["name"].as_str().unwrap());
            (
                key,
                s["ips"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// One GET on loopback; the whole response.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_examples(to: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for f in ["metallb-pool.yaml", "services.yaml"] {
        std::fs::copy(src.join(f), to.join(f)).unwrap();
    }
}

fn service(name: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n{extra}spec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n"
    )
}

#[test]
fn json_contract_on_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let (v, out) = once(dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    for s in services {
        assert_eq!(s["pool"], "first-pool");
        assert!(s["warnings"].as_array().unwrap().is_empty());
    }
    assert_eq!(
        ips_of(&v),
        [
            ("default/nginx".to_string(), vec!["192.168.1.200".to_string()]),
            (
                "ingress-nginx/ingress-nginx-controller".to_string(),
                vec!["192.168.1.201".to_string()]
            ),
        ]
    );
}

#[test]
fn legacy_configmap_gives_the_same_addresses_metallb_would() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/legacy-configmap");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let out = run(&[
        "--manifests",
        dir.to_str().unwrap(),
        "--state-file",
        state.to_str().unwrap(),
        "--once",
        "--output",
        "json",
    ]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ips_of(&v)[0].1, ["192.168.1.240"]);
    assert_eq!(v["services"][0]["pool"], "default");
}

#[test]
fn a_state_file_that_would_be_read_as_a_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let inside = dir.path().join("state.json");
    let out = run(&[
        "--manifests",
        dir.path().to_str().unwrap(),
        "--state-file",
        inside.to_str().unwrap(),
        "--once",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would be read as a manifest"));
    assert!(!inside.exists(), "nothing was written");
    // Hidden, or elsewhere: taken.
    for ok in [dir.path().join(".state.json"), dir.path().join("state.txt")] {
        let out = run(&[
            "--manifests",
            dir.path().to_str().unwrap(),
            "--state-file",
            ok.to_str().unwrap(),
            "--once",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn pending_services_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: tiny, namespace: metallb-system}\nspec:\n  addresses: [10.0.0.1/32]\n";
    std::fs::write(
        dir.path().join("a.yaml"),
        format!("{pool}{}{}", service("a", ""), service("b", "")),
    )
    .unwrap();
    let (v, out) = once(dir.path());
    assert!(out.status.success());
    assert_eq!(v["services"][0]["ips"][0], "10.0.0.1");
    assert_eq!(v["services"][1]["ips"].as_array().unwrap().len(), 0);
    assert_eq!(v["services"][1]["pool"], Value::Null);
    assert_eq!(
        v["services"][1]["warnings"][0],
        "no available IPv4 address in pool(s) tiny"
    );
}

#[test]
fn invalid_manifests_name_file_document_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: good, namespace: metallb-system}\nspec:\n  addresses: [10.0.0.0/30]\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: bad, namespace: metallb-system}\nspec:\n  addresses: [10.0.1.0/30, 10.0.2.7]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: typo}\nspec: {tpye: LoadBalancer}\n---\nkey: [unclosed\n";
    let file = dir.path().join("pools.yaml");
    std::fs::write(&file, text).unwrap();
    let out = run(&["validate", "--manifests", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let name = file.display().to_string();
    assert!(err.contains(&format!("{name}:7 (document 2): IPAddressPool metallb-system/bad: spec.addresses[1]: bare address 10.0.2.7 is not allowed; write a single address as 10.0.2.7/32")), "{err}");
    assert!(
        err.contains(&format!(
            "{name}:13 (document 3): Service default/typo: spec.tpye: unknown field"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{name}:18 (document 4): invalid YAML")), "{err}");
    // validate writes nothing.
    assert!(!dir.path().join(".lb").exists());
    // --once still serves the good part, and exits non-zero.
    let (v, out) = once(dir.path());
    assert!(!out.status.success());
    assert_eq!(v["services"].as_array().unwrap().len(), 0);
}

#[test]
fn overlapping_pools_are_rejected_with_both_named() {
    let dir = tempfile::tempdir().unwrap();
    let pool = |n: &str, a: &str| {
        format!(
            "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {n}, namespace: metallb-system}}\nspec:\n  addresses: [{a}]\n"
        )
    };
    std::fs::write(
        dir.path().join("p.yaml"),
        pool("a", "10.0.0.0/24") + &pool("b", "10.0.0.128/25"),
    )
    .unwrap();
    let out = run(&["validate", "--manifests", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IPAddressPool metallb-system/b: spec.addresses: pool \"b\": addresses 10.0.0.128-10.0.0.255 overlap 10.0.0.0-10.0.0.255 of pool \"a\""), "{err}");
}

#[test]
fn restart_over_the_state_file_changes_no_address() {
    let dir = tempfile::tempdir().unwrap();
    let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system}\nspec:\n  addresses: [10.0.0.0/24]\n";
    std::fs::write(dir.path().join("pool.yaml"), pool).unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let all: String = names.iter().map(|n| service(n, "")).collect();
    std::fs::write(dir.path().join("svc.yaml"), &all).unwrap();
    let (first, _) = once(dir.path());
    // Delete some Services, add others whose names sort first.
    let some: String = names
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, n)| service(n, ""))
        .collect();
    std::fs::write(dir.path().join("svc.yaml"), format!("{}{some}", service("a-new", ""))).unwrap();
    let (second, _) = once(dir.path());
    let before: std::collections::HashMap<_, _> = ips_of(&first).into_iter().collect();
    for (k, ips) in ips_of(&second) {
        if let Some(old) = before.get(&k) {
            assert_eq!(&ips, old, "{k} moved across a restart");
        }
    }
    // The newcomer took the lowest freed address, not anyone's.
    let second_map: std::collections::HashMap<_, _> = ips_of(&second).into_iter().collect();
    assert_eq!(second_map["default/a-new"], ["10.0.0.0"]);
}

#[test]
fn live_mode_follows_the_directory_and_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let pool = |addr: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: metallb-system}}\nspec:\n  addresses: [{addr}]\n"
        )
    };
    std::fs::write(dir.path().join("pool.yaml"), pool("10.0.0.0/30")).unwrap();
    std::fs::write(dir.path().join("svc.yaml"), service("web", "")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(bin())
        .args([
            "--manifests",
            dir.path().to_str().unwrap(),
            "--poll-ms",
            "50",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.path().join(".lb/state.json");
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&state).unwrap_or_default();
            if text.contains(what) {
                return text;
            }
            assert!(Instant::now() < deadline, "state never contained {what}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("10.0.0.0");
    std::fs::write(dir.path().join("svc.yaml"), service("web", "") + &service("api", "")).unwrap();
    wait_for("default/api");
    // A broken pool keeps its last good version: nobody loses an address.
    std::fs::write(dir.path().join("pool.yaml"), pool("10.0.0.0/30, 10.9.9.9")).unwrap();
    std::fs::write(
        dir.path().join("svc.yaml"),
        service("web", "") + &service("api", "") + &service("db", ""),
    )
    .unwrap();
    let text = wait_for("default/db");
    assert!(
        text.contains("10.0.0.0") && text.contains("10.0.0.1") && text.contains("10.0.0.2"),
        "{text}"
    );
    // Metrics under MetalLB's names (set just after the state file is
    // written: looked at until they show it, at most 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = http_get(port, "/metrics");
        if m.contains("metallb_allocator_addresses_in_use_total{pool=\"p\"} 3") || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(port, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(
        metrics.contains("metallb_allocator_addresses_in_use_total{pool=\"p\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("metallb_allocator_addresses_total{pool=\"p\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("metallb_k8s_client_config_stale_bool 1"), "{metrics}");
    // SIGTERM: clean exit.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

/// A metrics address that cannot be bound stops the controller at once,
/// with the address named, before it touches anything.
#[test]
fn an_unbindable_metrics_address_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["--manifests", dir.path().to_str().unwrap(), "--metrics-listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(!dir.path().join(".lb/state.json").exists());
}

/// `--lb-class ""` would mean "Services without a class" to some and
/// "every Service" to others: it is refused.
#[test]
fn an_empty_lb_class_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let out = run(&["--manifests", dir.path().to_str().unwrap(), "--once", "--lb-class", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lb-class"));
}

/// A manifests directory that is not there is a typo, not an empty
/// cluster: an error, and no directory (nor state file) is made for it.
#[test]
fn a_manifests_directory_that_is_not_there_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    // (--once: a controller that did start would not return.)
    for args in [&["--once"][..], &["validate"]] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--manifests", missing.to_str().unwrap()]);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("manifests directory"));
        assert!(!missing.exists(), "{args:?}");
    }
}

/// A second controller on a directory a running one writes exits with an
/// error instead of overwriting its state file; `validate` still works.
#[test]
fn a_second_controller_on_one_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let d = dir.path().to_str().unwrap();
    let mut child = Command::new(bin())
        .args(["--manifests", d, "--poll-ms", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.path().join(".lb/state.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let held = std::fs::read_to_string(&state).unwrap();
    let out = run(&["--manifests", d, "--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in use by another lb-controller"), "{stderr}");
    let out = run(&["--manifests", d, "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), held);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = run(&["--manifests", d, "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// SIGTERM while the first reconcile of a large directory runs: a clean
/// exit, and a state file that is whole (or not written at all). Logs on a
/// pipe carry no colour codes.
#[test]
fn sigterm_during_the_first_reconcile_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let many: String = (0..20_000).map(|i| service(&format!("s{i}"), "")).collect();
    std::fs::write(dir.path().join("many.yaml"), many).unwrap();
    let port = free_port();
    let mut child = Command::new(bin())
        .args([
            "--manifests",
            dir.path().to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
        err
    });
    // Up (the endpoint answers) but not ready: the first reconcile runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "metrics never came up");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(http_get(port, "/readyz").starts_with("HTTP/1.1 503"));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = wait_exit(&mut child, 60);
    assert!(status.success(), "{status:?}");
    if let Ok(text) = std::fs::read_to_string(dir.path().join(".lb/state.json")) {
        let v: Value = serde_json::from_str(&text).expect("a whole state file");
        assert_eq!(v["version"], 1);
    }
    let err = logs.join().unwrap();
    assert!(!err.contains('\u{1b}'), "colour codes on a pipe: {err}");
}

/// `validate` stands in for the API server: names, ports, protocols and
/// types it would refuse are errors naming the field; what the Services
/// would meet (a pool that does not exist, an address held by another,
/// old and new annotations that disagree) are warnings.
#[test]
fn validate_checks_what_the_api_server_would() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    for (doc, field) in [
        (service("Web", ""), "metadata.name"),
        (
            service("web", "").replace("namespace: default", "namespace: Bad_NS"),
            "metadata.namespace",
        ),
        (
            service("web", "").replace("port: 80", "port: 70000"),
            "spec.ports[0].port",
        ),
        (
            service("web", "").replace("  - port: 80", "  - port: 80\n    protocol: HTTP"),
            "spec.ports[0].protocol",
        ),
        (
            service("web", "").replace("type: LoadBalancer", "type: Loadbalancer"),
            "spec.type",
        ),
        (
            service("web", "").replace("  ports:", "  loadBalancerIP: 192.168.001.210\n  ports:"),
            "spec.loadBalancerIP",
        ),
        (
            service("web", "").replace("  ports:", "  loadBalancerClass: \"\"\n  ports:"),
            "spec.loadBalancerClass",
        ),
        (service("web", "").replace("  ports:\n  - port: 80\n", ""), "spec.ports"),
    ] {
        std::fs::write(dir.path().join("bad.yaml"), &doc).unwrap();
        let out = run(&["validate", "--manifests", dir.path().to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{field}: {err}");
        assert!(
            err.contains("bad.yaml:2 (document 1)") && err.contains(field),
            "{field}: {err}"
        );
    }
    std::fs::write(
        dir.path().join("bad.yaml"),
        service(
            "web",
            "  annotations:\n    metallb.io/address-pool: nope\n    metallb.universe.tf/address-pool: first-pool\n",
        ) + &service("db", "  annotations:\n    metallb.io/loadBalancerIPs: 192.168.1.210\n")
            + &service("db2", "  annotations:\n    metallb.io/loadBalancerIPs: 192.168.1.210\n"),
    )
    .unwrap();
    let out = run(&["validate", "--manifests", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope\" does not exist"), "{err}");
    assert!(
        err.contains("metallb.universe.tf/address-pool") && err.contains("differs"),
        "{err}"
    );
    assert!(err.contains("192.168.1.210 is in use by default/db"), "{err}");
    assert_eq!(err.matches("differs from").count(), 1, "said once: {err}");
}
