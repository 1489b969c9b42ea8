//! lb-controller in cluster mode, as a Deployment runs it, against a real
//! API server (`KUBEBUILDER_ASSETS`; skipped with a notice when unset).

#[path = "../../lb-kube/tests/support/apiserver.rs"]
mod apiserver;
#[path = "support/bird.rs"]
mod bird;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;

#[test]
fn the_binary_assigns_in_cluster_mode_and_stops_cleanly() {
    let Some(api) = apiserver::ApiServer::start("the_binary_assigns_in_cluster_mode_and_stops_cleanly") else {
        return;
    };
    let deploy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["crds.yaml", "namespace.yaml", "rbac.yaml"] {
        api.apply(&std::fs::read_to_string(deploy.join(file)).unwrap());
    }
    api.apply("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system}\nspec: {addresses: [10.0.0.1-10.0.0.9]}\n");
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    let kubeconfig = api.service_account_kubeconfig("metallb-system", "lb-controller");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-controller"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("POD_NAME", "lb-controller-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ip = loop {
        let ip = api.run(|client| async move {
            let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
            services
                .get_status("web")
                .await
                .ok()
                .and_then(|s| s.status?.load_balancer?.ingress?.into_iter().next()?.ip)
        });
        if let Some(ip) = ip {
            break ip;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("lb-controller exited early: {status}");
        }
        assert!(Instant::now() < deadline, "no address in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ip, "10.0.0.1");
    let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
}

/// A network namespace joined to this one by a veth pair: the API server
/// refuses loopback endpoint addresses, so the backend lives there.
/// Removed on drop.
struct Netns {
    name: String,
    host_if: String,
    /// The address inside.
    inside: String,
}

impl Netns {
    /// `None` (with a notice) when namespaces cannot be made here.
    fn create(tag: u8) -> Option<Self> {
        let id = std::process::id() % 60_000;
        let (name, host_if, peer_if) = (
            format!("lbt{id}{tag}"),
            format!("lbt{id}{tag}a"),
            format!("lbt{id}{tag}b"),
        );
        let net = format!("10.{}.{}.", 213 + tag, id % 250);
        let ip = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        let ns = Self {
            inside: format!("{net}2"),
            name: name.clone(),
            host_if: host_if.clone(),
        };
        let ok = ip(&["netns", "add", &name])
            && ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if])
            && ip(&["link", "set", &peer_if, "netns", &name])
            && ip(&["addr", "add", &format!("{net}1/30"), "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{net}2/30"),
                "dev",
                &peer_if,
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", &peer_if, "up"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        if !ok {
            eprintln!("skipped: cannot create a network namespace (needs root and iproute2)");
            return None;
        }
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// lb-proxy in cluster mode: Ingresses, Services and EndpointSlices from
/// the API server; an edit routes anew.
#[test]
fn the_proxy_serves_ingresses_from_the_api_server() {
    let Some(api) = apiserver::ApiServer::start("the_proxy_serves_ingresses_from_the_api_server") else {
        return;
    };
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let Some(netns) = Netns::create(0) else { return };
    let (backend, port) = (8080, free());
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new("ip")
            .args(["netns", "exec", &netns.name, env!("CARGO_BIN_EXE_lb-echo")])
            .args(["--listen", &format!("{}:{backend}", netns.inside), "--service", "web"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // deploy/proxy.yaml as is: its RBAC is all the proxy gets below.
    let deploy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/proxy.yaml");
    api.apply(&std::fs::read_to_string(deploy).unwrap());
    let kubeconfig = api.service_account_kubeconfig("lb-proxy", "lb-proxy");
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{name: http, port: 80}]}\n");
    api.apply(&format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {backend}, protocol: TCP}}]\nendpoints: [{{addresses: [\"{}\"], conditions: {{ready: true}}}}]\n",
        netns.inside
    ));
    let ingress = |path: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: shop, namespace: default}}\n\
             spec: {{ingressClassName: lb, rules: [{{host: shop.example.com, http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}]}}}}]}}\n"
        )
    };
    api.apply(&ingress("/a"));
    children.0.push(
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .args(["--publish-service", "lb-proxy/lb-proxy"])
            .env("POD_NAME", "lb-proxy-test")
            .env("POD_NAMESPACE", "lb-proxy")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let get_from = |host: &str, path: &str| -> u16 {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return 0;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    };
    let get = |path: &str| get_from("shop.example.com", path);
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("/a routed", &|| get("/a/x") == 200);
    // The Ingress served gets the proxy's address in its status (written
    // by the Lease holder); one of another class does not.
    api.apply(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: theirs, namespace: default}\n\
         spec: {ingressClassName: other, rules: [{host: theirs.example.com}]}\n",
    );
    let status = |name: &'static str| {
        api.run(move |client| async move {
            let ingresses: kube::Api<k8s_openapi::api::networking::v1::Ingress> =
                kube::Api::namespaced(client, "default");
            ingresses
                .get_status(name)
                .await
                .ok()
                .and_then(|i| i.status?.load_balancer?.ingress?.into_iter().next()?.ip)
        })
    };
    // The Service in front gets its address (lb-controller's job).
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "lb-proxy");
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
        services
            .patch_status(
                "lb-proxy",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    });
    wait("the shop Ingress's status", &|| {
        status("shop").as_deref() == Some("192.0.2.10")
    });
    assert_eq!(status("theirs"), None);
    assert_eq!(get("/b/x"), 404);
    api.apply(&ingress("/b"));
    wait("/b routed after the edit", &|| get("/b/x") == 200);
    assert_eq!(get("/a/x"), 404);
    // Basic auth: closed without its Secret; with it (an Opaque Secret, as
    // `kubectl create secret generic` makes), the password is asked for.
    api.apply(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: staff, namespace: default, annotations: \
         {nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users}}\n\
         spec: {ingressClassName: lb, rules: [{host: staff.example.com, http: {paths: [{path: /, pathType: Prefix, \
         backend: {service: {name: web, port: {name: http}}}}]}}]}\n",
    );
    wait("staff refused without its Secret", &|| {
        get_from("staff.example.com", "/") == 503
    });
    api.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: default}\ntype: Opaque\n\
         stringData: {auth: \"ann:{PLAIN}pw\"}\n",
    );
    wait("staff asks for the password", &|| {
        get_from("staff.example.com", "/") == 401
    });
    drop(children);
    drop(netns);
}

/// Processes this test started, killed (by PID) when it ends, panicking
/// or not.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// lb-speaker in cluster mode, with deploy/speaker.yaml's RBAC: addresses
/// from Service status, answered on the one interface it is given (a veth
/// into a namespace where a client asks), ServiceL2Status written and
/// deleted with the Service.
#[test]
fn the_speaker_answers_from_service_status_and_writes_service_l2_status() {
    let Some(api) = apiserver::ApiServer::start("the_speaker_answers_from_service_status_and_writes_service_l2_status")
    else {
        return;
    };
    let Some(netns) = Netns::create(1) else { return };
    let deploy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["crds.yaml", "namespace.yaml", "speaker.yaml"] {
        api.apply(&std::fs::read_to_string(deploy.join(file)).unwrap());
    }
    let kubeconfig = api.service_account_kubeconfig("metallb-system", "lb-speaker");
    let vip = netns
        .inside
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}.100"))
        .unwrap();
    api.apply("apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n");
    api.apply(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab, namespace: metallb-system}}\nspec: {{addresses: [{vip}/32]}}\n"
    ));
    // As MetalLB's docs write it: no spec.
    api.apply(
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: all, namespace: metallb-system}\n",
    );
    api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, annotations: {metallb.io/ip-allocated-from-pool: lab}}\n\
         spec: {type: LoadBalancer, ports: [{port: 80}]}\n",
    );
    api.apply(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{port: 80}]\nendpoints: [{addresses: [10.0.0.5], nodeName: node-a, conditions: {ready: true}}]\n",
    );
    // The controller's part: the address in the Service's status.
    let vip2 = vip.clone();
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": vip2}]}}});
        services
            .patch_status(
                "web",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    });
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new(env!("CARGO_BIN_EXE_lb-speaker"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node", "node-a", "--interface", &netns.host_if, "--no-memberlist"])
            .env("POD_NAME", "lb-speaker-test")
            .env("POD_UID", "6d2f1c5e-0b1a-4c8e-9a57-3f0e2d4b8c11")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mac = {
        let out = Command::new("ip")
            .args(["-j", "link", "show", &netns.host_if])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["address"].as_str().unwrap().to_owned()
    };
    let peer_if = format!("{}b", &netns.host_if[..netns.host_if.len() - 1]);
    let answers = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "arping",
                "-i",
                &peer_if,
                "-c",
                "1",
                "-W",
                "0.2",
                &vip,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase().contains(&mac)
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let statuses = || {
        api.run(|client| async move {
            let api: kube::Api<lb_kube::objects::metallb::ServiceL2Status> =
                kube::Api::namespaced(client, "metallb-system");
            api.list(&Default::default()).await.unwrap().items
        })
    };
    wait("the speaker answers for the Service's address", &answers);
    wait("a ServiceL2Status for the Service", &|| statuses().len() == 1);
    let s = &statuses()[0];
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("metallb.io/node").map(String::as_str), Some("node-a"));
    assert_eq!(labels.get("metallb.io/service-name").map(String::as_str), Some("web"));
    assert!(s.metadata.name.as_deref().is_some_and(|n| n.starts_with("l2-")));
    // Owned by the speaker's Pod (the downward API's name and UID).
    let owner = s.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].name.as_str()),
        ("Pod", "lb-speaker-test")
    );
    assert_eq!(owner[0].uid, "6d2f1c5e-0b1a-4c8e-9a57-3f0e2d4b8c11");
    let status = s.status.clone().unwrap_or_default();
    assert_eq!(status.node.as_deref(), Some("node-a"));
    assert_eq!(status.service_namespace.as_deref(), Some("default"));
    assert_eq!(
        status.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        vec![netns.host_if.as_str()]
    );
    // The Service goes: no answer, no status object.
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        services.delete("web", &Default::default()).await.unwrap();
    });
    wait("no answer once the Service is gone", &|| !answers());
    wait("the ServiceL2Status deleted", &|| statuses().is_empty());
    drop(children);
    drop(netns);
}

/// lb-speaker's BGP mode in cluster mode, with deploy/speaker.yaml's RBAC:
/// the Service's addresses from its status announced to BIRD with the
/// password of a basic-auth Secret, ServiceBGPStatus written with the
/// peers, and both gone with the Service.
#[test]
fn the_speaker_announces_by_bgp_from_service_status_and_writes_service_bgp_status() {
    let Some(api) =
        apiserver::ApiServer::start("the_speaker_announces_by_bgp_from_service_status_and_writes_service_bgp_status")
    else {
        return;
    };
    if !bird::bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (bird::local(31), 1796);
    let bird = bird::Bird::start(dir.path(), addr, port, " password \"s3cret\";");
    let deploy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["crds.yaml", "namespace.yaml", "speaker.yaml"] {
        api.apply(&std::fs::read_to_string(deploy.join(file)).unwrap());
    }
    let kubeconfig = api.service_account_kubeconfig("metallb-system", "lb-speaker");
    api.apply("apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {rack: r1}}\n");
    api.apply(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: pub, namespace: metallb-system}\nspec: {addresses: [198.51.100.0/24]}\n",
    );
    api.apply("apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: all, namespace: metallb-system}\nspec: {communities: [\"65001:7\"]}\n");
    api.apply(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: bgp-auth, namespace: metallb-system}\ntype: kubernetes.io/basic-auth\nstringData: {password: s3cret}\n",
    );
    api.apply(&format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: bird4, namespace: metallb-system}}\n\
         spec: {{myASN: 65001, peerASN: 65000, peerAddress: {addr}, peerPort: {port}, ebgpMultiHop: true,\
         passwordSecret: {{name: bgp-auth}}, nodeSelectors: [{{matchLabels: {{rack: r1}}}}]}}\n"
    ));
    api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, annotations: {metallb.io/ip-allocated-from-pool: pub}}\n\
         spec: {type: LoadBalancer, ports: [{port: 80}]}\n",
    );
    api.apply(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{port: 80}]\nendpoints: [{addresses: [10.0.0.5], nodeName: node-a, conditions: {ready: true}}]\n",
    );
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.20"}]}}});
        services
            .patch_status(
                "web",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    });
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new(env!("CARGO_BIN_EXE_lb-speaker"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "--node",
                "node-a",
                "--no-memberlist",
                "--exclude-interface",
                ".*",
                "--no-realtime",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let statuses = || {
        api.run(|client| async move {
            let api: kube::Api<lb_kube::objects::metallb::ServiceBGPStatus> =
                kube::Api::namespaced(client, "metallb-system");
            api.list(&Default::default()).await.unwrap().items
        })
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("BIRD learns the Service's address over MD5", &|| {
        let r = bird.routes();
        r.contains("198.51.100.20/32") && r.contains("(65001,7)")
    });
    wait("a ServiceBGPStatus for the Service", &|| statuses().len() == 1);
    let since = bird.protocol("v4");
    let s = &statuses()[0];
    assert!(s.metadata.name.as_deref().is_some_and(|n| n.starts_with("bgp-")));
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("metallb.io/node").map(String::as_str), Some("node-a"));
    let status = s.status.clone().unwrap_or_default();
    assert_eq!(
        (
            status.node.as_deref(),
            status.service_name.as_deref(),
            status.peers.clone()
        ),
        (Some("node-a"), Some("web"), vec!["bird4".to_owned()])
    );
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        services.delete("web", &Default::default()).await.unwrap();
    });
    wait("withdrawn with the Service", &|| {
        !bird.routes().contains("198.51.100.20/32")
    });
    wait("the ServiceBGPStatus deleted", &|| statuses().is_empty());
    // The session itself stayed up all along.
    assert!(since.contains("Established"), "{since}");
    bird.assert_stayed("v4", &since);
    drop(children);
}
