//! Cluster mode against a real API server (etcd + kube-apiserver from
//! `KUBEBUILDER_ASSETS`, started by the test; skipped with a notice when
//! the variable is unset).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use lb_kube::controller::{Cluster, Options, run_cluster};
use support::apiserver::ApiServer;

const POOL: &str = "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: p, namespace: metallb-system}
spec:
  addresses: [10.0.0.1-10.0.0.9]
";

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: LoadBalancer
  ports: [{{port: 80, protocol: TCP}}]
"
    )
}

/// The first ingress IP of a Service, `ipMode` and pool annotation.
fn status_of(api: &ApiServer, name: &str) -> (String, String, String) {
    let name = name.to_owned();
    let svc = api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        services.get(&name).await.ok()
    });
    let Some(svc) = svc else { return Default::default() };
    let ingress = svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .and_then(|i| i.into_iter().next());
    let pool = svc
        .metadata
        .annotations
        .and_then(|a| a.get("metallb.io/ip-allocated-from-pool").cloned())
        .unwrap_or_default();
    (
        ingress.as_ref().and_then(|i| i.ip.clone()).unwrap_or_default(),
        ingress.and_then(|i| i.ip_mode).unwrap_or_default(),
        pool,
    )
}

fn deploy(file: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running controller in cluster mode, stopped on drop.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), lb_kube::controller::Error>>>,
    runtime: tokio::runtime::Runtime,
}

impl Running {
    fn start(kubeconfig: &std::path::Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = Options {
            poll_interval: Duration::from_millis(50),
            release_delay: Duration::from_millis(500),
            ..Options::new("unused")
        };
        let cluster = Cluster::new(Some(kubeconfig.to_path_buf()), "metallb-system");
        let task = runtime.spawn(run_cluster(options, cluster, None, async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task: Some(task),
            runtime,
        }
    }

    fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let result = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), t).await });
            let result = result.expect("the controller stops within 10 s").expect("no panic");
            result.expect("the controller ran without error");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown();
        }
    }
}

#[test]
fn services_get_addresses_in_status_and_keep_them_across_restarts() {
    let Some(mut api) = ApiServer::start("services_get_addresses_in_status_and_keep_them_across_restarts") else {
        return;
    };
    // What `kubectl apply -f deploy/` installs, but the Deployment (no
    // kubelet here): the controller runs in the test as its ServiceAccount.
    for file in ["crds.yaml", "namespace.yaml", "rbac.yaml"] {
        api.apply(&std::fs::read_to_string(deploy(file)).unwrap());
    }
    let kubeconfig = api.service_account_kubeconfig("metallb-system", "lb-controller");
    api.apply(POOL);
    api.apply(&service("a"));
    let c = Running::start(&kubeconfig);
    wait_for("a's address", || status_of(&api, "a").0 == "10.0.0.1");
    let (ip, mode, pool) = status_of(&api, "a");
    assert_eq!((ip.as_str(), mode.as_str(), pool.as_str()), ("10.0.0.1", "VIP", "p"));
    // A second Service while it runs.
    api.apply(&service("b"));
    wait_for("b's address", || status_of(&api, "b").0 == "10.0.0.2");
    c.stop();
    // Restart over the same cluster: nothing moves; a newcomer gets the next.
    api.apply(&service("c"));
    let c = Running::start(&kubeconfig);
    wait_for("c's address", || status_of(&api, "c").0 == "10.0.0.3");
    assert_eq!(status_of(&api, "a").0, "10.0.0.1");
    assert_eq!(status_of(&api, "b").0, "10.0.0.2");
    // The API server goes away and comes back: nothing is lost, and the
    // controller follows again.
    api.restart_apiserver();
    api.apply(&service("d"));
    wait_for("d's address", || status_of(&api, "d").0 == "10.0.0.4");
    for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        assert_eq!(status_of(&api, name).0, ip, "{name}");
    }
    // A Service that stops being a LoadBalancer loses its address.
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        let patch = serde_json::json!({"spec": {"type": "ClusterIP"}});
        services
            .patch(
                "b",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    });
    wait_for("b's address released", || status_of(&api, "b").0.is_empty());
    c.stop();
}
