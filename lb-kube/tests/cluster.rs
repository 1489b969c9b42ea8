//! Cluster mode against a real API server (etcd + kube-apiserver from
//! `KUBEBUILDER_ASSETS`, started by the test; skipped with a notice when
//! the variable is unset).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use lb_kube::controller::{Cluster, Lease, Options, run_cluster};
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

/// What `kubectl apply -f deploy/` installs, but the Deployment (no
/// kubelet here), and the pool `p`: the kubeconfig of the controller's
/// ServiceAccount, to run it as in the tests.
fn installed(api: &ApiServer) -> std::path::PathBuf {
    for file in ["crds.yaml", "namespace.yaml", "rbac.yaml"] {
        api.apply(&std::fs::read_to_string(deploy(file)).unwrap());
    }
    let kubeconfig = api.service_account_kubeconfig("metallb-system", "lb-controller");
    api.apply(POOL);
    kubeconfig
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
        Self::start_as(kubeconfig, None)
    }

    /// A replica electing its leader on the Lease `lb-controller` as
    /// `identity`, or writing alone.
    fn start_as(kubeconfig: &std::path::Path, identity: Option<&str>) -> Self {
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
        let mut cluster = Cluster::new(Some(kubeconfig.to_path_buf()), "metallb-system");
        if let Some(id) = identity {
            let mut lease = Lease::new("lb-controller", id);
            lease.duration = LEASE;
            cluster = cluster.with_lease(lease);
        }
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

    /// Waits (at most `within`) for the controller to end by itself.
    fn finish(mut self, within: Duration) -> Result<(), lb_kube::controller::Error> {
        let task = self.task.take().expect("running");
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(within, task).await })
            .expect("ended in time");
        result.expect("no panic")
    }

    /// Stops it and returns how it ended (`Ok` unless it had ended by
    /// itself with an error).
    fn stopped(mut self) -> Result<(), lb_kube::controller::Error> {
        self.stop_and_wait().unwrap_or(Ok(()))
    }

    fn stop_and_wait(&mut self) -> Option<Result<(), lb_kube::controller::Error>> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let t = self.task.take()?;
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), t).await });
        Some(result.expect("the controller stops within 10 s").expect("no panic"))
    }

    fn shutdown(&mut self) {
        if let Some(result) = self.stop_and_wait() {
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
    let kubeconfig = installed(&api);
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
    // A Service deleted and created again under its name at once (within
    // the release delay) shows its address again.
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        services.delete("c", &Default::default()).await.unwrap();
    });
    api.apply(&service("c"));
    wait_for("c's address after its re-creation", || {
        status_of(&api, "c").0 == "10.0.0.3"
    });
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
    // The pool counts what is held.
    wait_for("the pool's status", || pool_status(&api) == (3, 6));
    assert!(events(&api, "a").contains(&("IPAllocated".into(), "Assigned IP [10.0.0.1] from pool p".into())));
    // A pool edit that drops a held address moves its Service, and says so.
    api.apply(&POOL.replace("10.0.0.1-10.0.0.9", "10.0.0.3-10.0.0.9"));
    wait_for("a moved", || status_of(&api, "a").0 == "10.0.0.5");
    assert_eq!(status_of(&api, "c").0, "10.0.0.3");
    wait_for("the ClearAssignment event", || {
        events(&api, "a")
            .iter()
            .any(|(reason, note)| reason == "ClearAssignment" && note.contains("10.0.0.1"))
    });
    // An invalid pool is reported; the last good one stays in force.
    wait_for("a valid configuration", || configuration_state(&api).0 == "Valid");
    api.apply(&POOL.replace("10.0.0.1-10.0.0.9", "10.0.0.3-10.0.0.999"));
    wait_for("an invalid configuration", || configuration_state(&api).0 == "Invalid");
    let (_, summary) = configuration_state(&api);
    assert!(summary.contains("IPAddressPool metallb-system/p"), "{summary}");
    api.apply(&service("e"));
    wait_for("e's address from the pool in force", || {
        status_of(&api, "e").0 == "10.0.0.6"
    });
    assert_eq!(status_of(&api, "a").0, "10.0.0.5");
    api.apply(&POOL.replace("10.0.0.1-10.0.0.9", "10.0.0.3-10.0.0.9"));
    wait_for("a valid configuration again", || configuration_state(&api).0 == "Valid");
    assert_eq!(configuration_state(&api).1, "", "the old errors are cleared");
    // A Service the pools cannot serve says why.
    api.apply(&service("big").replace(
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  loadBalancerIP: 10.9.9.9\n",
    ));
    wait_for("the AllocationFailed event", || {
        events(&api, "big")
            .iter()
            .any(|(reason, _)| reason == "AllocationFailed")
    });
    // Dual stack (the API server has both Service families): a Service
    // that requires both gets one address of each in its status, from a
    // pool with both.
    api.apply(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: dual, namespace: metallb-system}\n\
         spec: {addresses: [10.0.1.0/30, 'fd00:1::/126'], serviceAllocation: {namespaces: [dual]}}\n",
    );
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: dual}\n");
    api.apply(&service("ds").replace("namespace: default", "namespace: dual").replace(
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6, IPv4]\n",
    ));
    wait_for("ds's two addresses", || ingress_ips(&api, "dual", "ds").len() == 2);
    let mut ips = ingress_ips(&api, "dual", "ds");
    ips.sort();
    assert_eq!(ips, ["10.0.1.0", "fd00:1::"]);
    c.stop();
}

/// Every ingress IP of a Service's status.
fn ingress_ips(api: &ApiServer, namespace: &str, name: &str) -> Vec<String> {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, &namespace);
        let svc = services.get(&name).await.ok();
        svc.and_then(|s| s.status)
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect()
    })
}

/// `status.assignedIPv4` and `availableIPv4` of the pool `p`.
fn pool_status(api: &ApiServer) -> (i64, i64) {
    api.run(|client| async move {
        let pools: kube::Api<lb_kube::objects::IPAddressPool> = kube::Api::namespaced(client, "metallb-system");
        let status = pools.get("p").await.ok().and_then(|p| p.status).unwrap_or_default();
        (status.assigned_ipv4, status.available_ipv4)
    })
}

/// The (reason, note) of the events about a Service.
fn events(api: &ApiServer, name: &str) -> Vec<(String, String)> {
    let name = name.to_owned();
    api.run(|client| async move {
        let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client, "default");
        events
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            // Named, and with its uid (what `kubectl describe` selects by).
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.uid.as_deref().is_some_and(|u| !u.is_empty()))
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    })
}

/// Who wrote a Service's status (the field managers of its status).
/// The leader Lease's duration in these tests (shorter than the default
/// 15 s, to keep them quick).
const LEASE: Duration = Duration::from_secs(6);

fn status_writers(api: &ApiServer, name: &str) -> Vec<String> {
    let name = name.to_owned();
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        let svc = services.get(&name).await.unwrap();
        svc.metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.subresource.as_deref() == Some("status"))
            .filter_map(|f| f.manager)
            .collect()
    })
}

fn lease_holder(api: &ApiServer) -> String {
    api.run(|client| async move {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client, "metallb-system");
        leases
            .get("lb-controller")
            .await
            .ok()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    })
}

/// Two replicas: one leads and writes, the other stands by and writes
/// nothing; when the leader stops, the standby takes over and writes.
#[test]
fn two_replicas_elect_one_writer() {
    let Some(api) = ApiServer::start("two_replicas_elect_one_writer") else {
        return;
    };
    let kubeconfig = installed(&api);
    let a = Running::start_as(&kubeconfig, Some("replica-a"));
    let b = Running::start_as(&kubeconfig, Some("replica-b"));
    api.apply(&service("s1"));
    wait_for("s1's address", || status_of(&api, "s1").0 == "10.0.0.1");
    let leader = lease_holder(&api);
    assert!(leader == "replica-a" || leader == "replica-b", "{leader:?}");
    assert_eq!(status_writers(&api, "s1"), [format!("lb-controller/{leader}")]);
    // The leader stops (releasing the Lease); the standby takes over.
    let (stopped, standby) = if leader == "replica-a" { (a, b) } else { (b, a) };
    let takeover = Instant::now();
    stopped.stop();
    api.apply(&service("s2"));
    wait_for("s2's address", || status_of(&api, "s2").0 == "10.0.0.2");
    let took = takeover.elapsed();
    let other = if leader == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    assert_eq!(lease_holder(&api), other);
    assert_eq!(status_writers(&api, "s2"), [format!("lb-controller/{other}")]);
    assert_eq!(status_of(&api, "s1").0, "10.0.0.1", "nothing moved at the takeover");
    // A standby waits out the Lease it last saw, then takes it: within the
    // duration, plus a reconcile.
    assert!(took < LEASE + Duration::from_secs(3), "took over in {took:?}");
    eprintln!("takeover after a graceful stop: {took:?}");
    // The Lease deleted under the leader (the election library does not
    // notice): its next write's check finds it gone, and it stops (a
    // restarted replica makes the Lease again).
    api.run(|client| async move {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client, "metallb-system");
        leases.delete("lb-controller", &Default::default()).await.unwrap();
    });
    // (After the last check's second has run out.)
    std::thread::sleep(Duration::from_millis(1500));
    api.apply(&service("s3"));
    let result = standby.finish(Duration::from_secs(20));
    assert!(
        matches!(result, Err(lb_kube::controller::Error::LostLease)),
        "{result:?}"
    );
    assert_eq!(status_of(&api, "s3").0, "", "nothing written without the Lease");
}

/// `result` and `errorSummary` of the ConfigurationState `controller`.
fn configuration_state(api: &ApiServer) -> (String, String) {
    api.run(|client| async move {
        let states: kube::Api<lb_kube::objects::metallb::ConfigurationState> =
            kube::Api::namespaced(client, "metallb-system");
        let status = states
            .get("controller")
            .await
            .ok()
            .and_then(|s| s.status)
            .unwrap_or_default();
        (
            status.result.unwrap_or_default(),
            status.error_summary.unwrap_or_default(),
        )
    })
}

/// Without the metallb.io CRDs the controller still starts (those kinds
/// are synced empty and reported) and says why Services get nothing.
#[test]
fn missing_crds_do_not_stall_the_controller() {
    let Some(api) = ApiServer::start("missing_crds_do_not_stall_the_controller") else {
        return;
    };
    api.apply(&service("lonely"));
    let c = Running::start(&api.kubeconfig());
    wait_for("lonely's AllocationFailed event", || {
        events(&api, "lonely")
            .iter()
            .any(|(reason, _)| reason == "AllocationFailed")
    });
    assert_eq!(status_of(&api, "lonely").0, "");
    c.stop();
}

/// A policy that refuses status writes for Services labelled `deny`.
const DENY_STATUS: &str = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: deny-status}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: ['']
      apiVersions: [v1]
      operations: [UPDATE]
      resources: [services/status]
  validations:
  - expression: \"!has(object.metadata.labels) || !('deny' in object.metadata.labels)\"
    message: refused by the test's policy
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: deny-status}
spec:
  policyName: deny-status
  validationActions: [Deny]
";

/// A status write the API server refuses (an admission policy) is tried
/// again by itself, and lands once the policy is gone, with nothing else
/// changing: also for a Service deleted and made again under its name
/// (whose former self was written the same address).
#[test]
fn a_refused_status_write_is_tried_again_until_it_lands() {
    let Some(api) = ApiServer::start("a_refused_status_write_is_tried_again_until_it_lands") else {
        return;
    };
    let kubeconfig = installed(&api);
    api.apply(&service("again"));
    let c = Running::start(&kubeconfig);
    wait_for("again's address", || status_of(&api, "again").0 == "10.0.0.1");
    api.apply(DENY_STATUS);
    // The policy takes a moment to be in force: a probe Service shows when.
    let labelled =
        |name: &str| service(name).replace("namespace: default}", "namespace: default, labels: {deny: 'yes'}}");
    api.apply(&labelled("probe"));
    std::thread::sleep(Duration::from_secs(2));
    // Deleted and made again, refused: it keeps its address (within the
    // release delay), which the server does not let it show.
    api.run(|client| async move {
        let services: kube::Api<Service> = kube::Api::namespaced(client, "default");
        services
            .delete("again", &kube::api::DeleteParams::default())
            .await
            .unwrap();
    });
    api.apply(&labelled("again"));
    api.apply(&labelled("new"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status_of(&api, "again").0, "", "the policy refuses the write");
    assert_eq!(status_of(&api, "new").0, "");
    // The policy goes; nothing else changes.
    api.run(|client| async move {
        use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
        let bindings: kube::Api<ValidatingAdmissionPolicyBinding> = kube::Api::all(client);
        bindings
            .delete("deny-status", &kube::api::DeleteParams::default())
            .await
            .unwrap();
    });
    wait_for("again's address written", || status_of(&api, "again").0 == "10.0.0.1");
    wait_for("new's address written", || !status_of(&api, "new").0.is_empty());
    c.stop();
}

/// Two replicas through an API server outage longer than the Lease: the
/// Lease changes hands or not, but afterwards one replica leads, follows
/// the server again and assigns (watches that wait out their retries are
/// not a reason to give the Lease up).
#[test]
fn replicas_carry_on_after_an_api_server_outage_longer_than_the_lease() {
    let Some(mut api) = ApiServer::start("replicas_carry_on_after_an_api_server_outage_longer_than_the_lease") else {
        return;
    };
    let kubeconfig = installed(&api);
    let a = Running::start_as(&kubeconfig, Some("replica-a"));
    let b = Running::start_as(&kubeconfig, Some("replica-b"));
    api.apply(&service("s1"));
    wait_for("s1's address", || status_of(&api, "s1").0 == "10.0.0.1");
    api.stop_apiserver();
    std::thread::sleep(LEASE * 3);
    api.restart_apiserver();
    let back = Instant::now();
    api.apply(&service("s2"));
    let deadline = back + Duration::from_secs(45);
    while status_of(&api, "s2").0 != "10.0.0.2" {
        assert!(
            Instant::now() < deadline,
            "no replica assigned s2 within 45 s of the server's return"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("assigned {:?} after the server came back", back.elapsed());
    assert_eq!(status_of(&api, "s1").0, "10.0.0.1", "nothing moved");
    // A replica that lost the Lease in the outage stops (restarted, it
    // stands by); the one leading keeps running.
    let leader = lease_holder(&api);
    let (leading, other) = if leader == "replica-a" { (a, b) } else { (b, a) };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        leading.task.as_ref().is_some_and(|t| !t.is_finished()),
        "the leader {leader} stopped"
    );
    // The other ran on, or stopped on losing the Lease in the outage (as
    // documented: restarted, it stands by).
    let result = other.stopped();
    assert!(
        matches!(result, Ok(()) | Err(lb_kube::controller::Error::LostLease)),
        "{result:?}"
    );
    leading.stop();
}

/// The Lease deleted under two replicas: the leader stops at its next
/// write (it cannot tell it still leads); the standby makes the Lease
/// again, takes it and writes.
#[test]
fn a_deleted_lease_is_made_again_and_a_standby_takes_over() {
    let Some(api) = ApiServer::start("a_deleted_lease_is_made_again_and_a_standby_takes_over") else {
        return;
    };
    let kubeconfig = installed(&api);
    let a = Running::start_as(&kubeconfig, Some("replica-a"));
    api.apply(&service("s1"));
    wait_for("s1's address", || status_of(&api, "s1").0 == "10.0.0.1");
    let b = Running::start_as(&kubeconfig, Some("replica-b"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lease_holder(&api), "replica-a");
    api.run(|client| async move {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client, "metallb-system");
        leases.delete("lb-controller", &Default::default()).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(1500));
    api.apply(&service("s2"));
    let result = a.finish(Duration::from_secs(20));
    assert!(
        matches!(result, Err(lb_kube::controller::Error::LostLease)),
        "{result:?}"
    );
    let deadline = Instant::now() + LEASE * 4;
    while status_of(&api, "s2").0 != "10.0.0.2" {
        assert!(Instant::now() < deadline, "the standby never took over");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lease_holder(&api), "replica-b");
    b.stop();
}
