//! lb-controller in cluster mode, as a Deployment runs it, against a real
//! API server (`KUBEBUILDER_ASSETS`; skipped with a notice when unset).

#[path = "../../lb-kube/tests/support/apiserver.rs"]
mod apiserver;

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
