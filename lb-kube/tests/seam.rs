//! The source/status seam: the controller driven by an in-memory backend,
//! status read back through the file source as Service status, and
//! endpoint churn kept apart from everything else.

use std::collections::BTreeMap;

use lb_alloc::ServiceKey;
use lb_kube::controller::{Controller, Options};
use lb_kube::objects;
use lb_kube::source::file::FileSource;
use lb_kube::source::memory::{MemorySource, MemoryStatus};
use lb_kube::source::{Snapshot, Source};
use lb_kube::status::ServiceState;

fn object(yaml: &str) -> objects::Object {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    objects::decode(v).unwrap().unwrap()
}

fn view(services: &[&str]) -> Snapshot {
    let mut s = Snapshot::empty();
    s.objects.push((
        None,
        object("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system}\nspec: {addresses: [10.0.0.0/29]}\n"),
    ));
    for name in services {
        s.objects.push((
            None,
            object(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n"
            )),
        ));
    }
    s
}

/// The controller on an in-memory backend writes only what the Services'
/// status does not show: b's status shows what the sink holds, a's shows
/// nothing (this view never changes), so a is written, and written again
/// at the next reconcile, until its status shows it.
#[test]
fn the_controller_runs_on_an_in_memory_backend_and_writes_what_status_does_not_show() {
    let b_state = ServiceState {
        ips: vec!["10.0.0.5".parse().unwrap()],
        pool: "p".into(),
    };
    let held = BTreeMap::from([(ServiceKey::new("default", "b"), b_state.clone())]);
    let mut v = view(&["a", "b"]);
    v.status.insert(
        ServiceKey::new("default", "b"),
        vec![lb_kube::source::HeldStatus {
            class: None,
            state: b_state,
        }],
    );
    let mut c = Controller::with(Options::new("unused"), MemorySource::new(v), MemoryStatus::new(held));
    let r = c.reconcile(false).unwrap();
    assert_eq!(
        r.services[1].ips,
        ["10.0.0.5".parse::<std::net::IpAddr>().unwrap()],
        "b keeps what the sink held"
    );
    assert_eq!(c.sink().batches.len(), 1);
    assert_eq!(c.sink().batches[0].len(), 1, "only a is new: {:?}", c.sink().batches);
    assert_eq!(c.sink().batches[0][0].0, ServiceKey::new("default", "a"));
    // a's status still does not show it: written again; b never.
    c.reconcile(false).unwrap();
    assert_eq!(c.sink().batches.len(), 2);
    assert_eq!(c.sink().batches[1].len(), 1);
    assert_eq!(c.sink().batches[1][0].0, ServiceKey::new("default", "a"));
    assert!(!c.changed());
}

#[test]
fn status_is_in_the_view_and_endpoints_change_apart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pool.yaml"),
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system}\nspec: {addresses: [10.0.0.0/29]}\n",
    )
    .unwrap();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n";
    let slice = |ip: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{{addresses: [{ip}]}}]\n"
        )
    };
    std::fs::write(dir.path().join("web.yaml"), format!("{svc}---\n{}", slice("10.1.0.1"))).unwrap();
    Controller::new(Options::new(dir.path()))
        .unwrap()
        .reconcile(false)
        .unwrap();

    let mut src = FileSource::new(dir.path()).with_status_file(dir.path().join(".lb/state.json"));
    let v1 = src.view().unwrap();
    let held = v1
        .status_of(&ServiceKey::new("default", "web"), None)
        .expect("status in the view");
    assert_eq!(held.ips, ["10.0.0.0".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(v1.endpoints.len(), 1);
    assert!(v1.of_kind("EndpointSlice").next().is_none(), "endpoints are apart");

    // Endpoint churn moves only the endpoints version.
    let before = src.version();
    std::fs::write(dir.path().join("web.yaml"), format!("{svc}---\n{}", slice("10.1.0.2"))).unwrap();
    assert_ne!(src.version(), before);
    let v2 = src.view().unwrap();
    assert_eq!(v2.objects_version, v1.objects_version);
    assert_ne!(v2.endpoints_version, v1.endpoints_version);
    // A Service change moves only the objects version.
    std::fs::write(
        dir.path().join("web.yaml"),
        format!("{}---\n{}", svc.replace("port: 80", "port: 81"), slice("10.1.0.2")),
    )
    .unwrap();
    let v3 = src.view().unwrap();
    assert_ne!(v3.objects_version, v2.objects_version);
    assert_eq!(v3.endpoints_version, v2.endpoints_version);
}

/// A sink that fails its first writes, then takes them.
#[derive(Debug, Default)]
struct Flaky {
    failures_left: usize,
    current: BTreeMap<ServiceKey, ServiceState>,
    written: std::sync::Arc<std::sync::Mutex<Vec<ServiceKey>>>,
    tries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl lb_kube::source::StatusSink for Flaky {
    type Error = std::io::Error;

    fn current(&self) -> &BTreeMap<ServiceKey, ServiceState> {
        &self.current
    }

    fn apply(&mut self, changes: &[(ServiceKey, Option<ServiceState>)]) -> Result<(), Self::Error> {
        self.tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.failures_left > 0 {
            self.failures_left -= 1;
            return Err(std::io::Error::other("disk full"));
        }
        lb_kube::source::apply_changes(&mut self.current, changes);
        let mut written = self.written.lock().unwrap();
        written.extend(changes.iter().map(|(k, _)| k.clone()));
        Ok(())
    }
}

/// Follows the one-Service view with `sink` (polling every 20 ms) until
/// `stop` resolves.
fn follow_until(sink: Flaky, stop: impl std::future::Future<Output = ()>) {
    let options = Options {
        poll_interval: std::time::Duration::from_millis(20),
        ..Options::new("unused")
    };
    let c = Controller::with(options, MemorySource::new(view(&["a"])), sink);
    let mut registry = prometheus_client::registry::Registry::default();
    let gauges = lb_kube::controller::metrics::Metrics::register(&mut registry);
    let telemetry = lb_kube::metrics::Telemetry::new(registry);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(lb_kube::controller::follow(c, gauges, telemetry, stop))
        .unwrap();
}

/// A status write that fails is retried at the next poll, with nothing
/// else changing, until it succeeds.
#[test]
fn a_failed_status_write_is_retried_without_any_change() {
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Flaky {
        failures_left: 2,
        written: written.clone(),
        ..Flaky::default()
    };
    let done = written.clone();
    follow_until(sink, async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while done.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    assert_eq!(*written.lock().unwrap(), [ServiceKey::new("default", "a")]);
}

/// A status write that keeps failing (a webhook refusing one Service, a
/// full disk) is tried again with a growing wait, not at every poll.
#[test]
fn a_write_that_keeps_failing_is_retried_with_backoff() {
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sink = Flaky {
        failures_left: usize::MAX,
        tries: tries.clone(),
        ..Flaky::default()
    };
    follow_until(sink, async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    });
    // At every 20 ms poll that would be about 75 tries; backing off from
    // 20 ms (20, 40, 80 … 1280 ms) it is about 7.
    let tries = tries.load(std::sync::atomic::Ordering::Relaxed);
    assert!((4..=12).contains(&tries), "{tries} tries in 1.5 s");
}
