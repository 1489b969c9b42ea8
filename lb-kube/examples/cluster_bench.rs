//! Cluster mode against a real API server, measured against the floor the
//! API server sets (a bare client issuing the same writes), in one run:
//!
//! ```sh
//! cargo build --release -p lb-bins
//! KUBEBUILDER_ASSETS=../shared/kube/bin cargo run --release -p lb-kube --example cluster_bench [-- SERVICES]
//! ```
//!
//! With SERVICES LoadBalancer Services (default 10,000) in the cluster:
//! 1. a bare client patches every Service's status, 8 in flight (the
//!    floor), then clears them; again with lb-controller's ServiceAccount
//!    and a watch on the Services open (a minimal controller's floor);
//! 2. `lb-controller` (the release binary beside this example) starts and
//!    writes every status: the time until the last one is seen; 1 and 2
//!    are repeated `LB_BENCH_ROUNDS` times (default 3), statuses cleared
//!    between, and the medians of the ratios within a round reported;
//! 3. it restarts over the assigned Services: time to ready, and how many
//!    Services it wrote (none should change);
//! 4. one new Service at a time, 20 times: create to status seen, against
//!    one bare status patch;
//! 5. the controller's resident memory.
//!
//! `LB_BENCH_LOG=FILE` appends the controller's log to FILE.
//! `LB_BENCH_LEASE=1` runs the controller with leader election, as
//! `deploy/` does (each batch of writes then checks the Lease first, or
//! relies on a check less than a second old).

#[path = "../tests/support/apiserver.rs"]
mod apiserver;

use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const IN_FLIGHT: usize = 8;

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

fn ip(i: usize) -> String {
    format!("10.1.{}.{}", i / 250, i % 250 + 1)
}

/// Services with an address in their status.
async fn assigned(api: &Api<Service>) -> usize {
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|s| {
                    s.status
                        .as_ref()
                        .and_then(|s| s.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .is_some_and(|i| !i.is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Patches the status of `names` (an address each, or cleared), 8 in
/// flight, as lb-controller patches them (status and pool annotation).
async fn patch_all(api: &Api<Service>, names: &[String], set: bool) -> Duration {
    let start = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            let (ingress, pool) = if set {
                (json!([{"ip": ip(i)}]), json!("p"))
            } else {
                (serde_json::Value::Null, serde_json::Value::Null)
            };
            // The patch lb-controller sends: status and the pool annotation.
            let patch = json!({
                "metadata": {"annotations": {"metallb.io/ip-allocated-from-pool": pool}},
                "status": {"loadBalancer": {"ingress": ingress}},
            });
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    start.elapsed()
}

/// The time of `names`' status patches by a bare client (after which they
/// are cleared again): as the administrator, or with the credentials of
/// `kubeconfig`; with a watch on the Services open meanwhile or not.
fn floor(
    server: &apiserver::ApiServer,
    names: &[String],
    kubeconfig: Option<&std::path::Path>,
    watch: bool,
) -> Duration {
    server.run(|admin| async move {
        let client = match kubeconfig {
            None => admin,
            Some(path) => apiserver::client_from(path).await,
        };
        let api: Api<Service> = Api::namespaced(client, "default");
        let watching = watch.then(|| {
            let api = api.clone();
            tokio::spawn(async move {
                let events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default());
                events.for_each(|_| async {}).await;
            })
        });
        if watching.is_some() {
            // Listed before the patches start.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let t = patch_all(&api, names, true).await;
        patch_all(&api, names, false).await;
        if let Some(w) = watching {
            w.abort();
        }
        t
    })
}

/// Starts lb-controller over Services without status and waits until it
/// has written every one: the time from its start, and the running process.
fn controller_writes_all(
    server: &apiserver::ApiServer,
    kubeconfig: &std::path::Path,
    port: u16,
    names: &[String],
) -> (Duration, std::process::Child) {
    let start = Instant::now();
    let child = controller(kubeconfig, port);
    let (last, n) = (names.last().cloned().unwrap_or_default(), names.len());
    let took = server.run(|client| async move {
        let api: Api<Service> = Api::namespaced(client, "default");
        // Cheap polls of the Service written last (they are written in
        // name order), then one full list to confirm: listing 10,000
        // Services every few milliseconds would load the API server more
        // than the controller does.
        loop {
            let s = api.get_status(&last).await.ok();
            let has = s
                .and_then(|s| s.status)
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .is_some_and(|i| !i.is_empty());
            if has {
                let at = start.elapsed();
                if assigned(&api).await == n {
                    return at;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (took, child)
}

/// Starts the release lb-controller against `kubeconfig`, metrics on `port`.
fn controller(kubeconfig: &std::path::Path, port: u16) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|p| p.parent()).unwrap().join("lb-controller");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p lb-bins ({})",
        bin.display()
    );
    // LB_BENCH_LEASE=1: with leader election, as deploy/ runs it.
    let lease = std::env::var_os("LB_BENCH_LEASE").is_some_and(|v| v == "1");
    std::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(if lease { vec![] } else { vec!["--no-leader-election"] })
        .env("POD_NAME", "bench")
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        // LB_BENCH_LOG=FILE: the controller's log, appended there.
        .stderr(match std::env::var_os("LB_BENCH_LOG") {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .unwrap()
}

fn ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn stop(mut child: std::process::Child) {
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let Some(server) = apiserver::ApiServer::start("cluster_bench") else {
        std::process::exit(2);
    };
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    for file in ["crds.yaml", "namespace.yaml", "rbac.yaml"] {
        server.apply(&std::fs::read_to_string(root.join(file)).unwrap());
    }
    server.apply(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: metallb-system}\nspec: {addresses: [10.1.0.0/16]}\n",
    );
    let kubeconfig = server.service_account_kubeconfig("metallb-system", "lb-controller");
    let names: Vec<String> = (0..n).map(|i| format!("s{i:05}")).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let created = server.run(|client| {
        let names = names.clone();
        async move {
            let api: Api<Service> = Api::namespaced(client, "default");
            let start = Instant::now();
            futures::stream::iter(names.iter())
                .map(|name| {
                    let api = api.clone();
                    async move { api.create(&PostParams::default(), &service(name)).await.map(|_| ()) }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await
                .unwrap();
            start.elapsed()
        }
    });
    println!("created {n} Services in {created:.1?} ({IN_FLIGHT} in flight)");

    // 1 and 2, in interleaved rounds (this machine is noisy: ratios are
    // taken within a round, and their medians reported).
    //
    // The floor: a bare client's status patches, as the cluster's
    // administrator; then with lb-controller's own credentials (its
    // ServiceAccount: the API server authorizes each request by RBAC) and a
    // watch on the Services open meanwhile (the API server sends each
    // change to a watcher; a controller cannot do without one): what a
    // minimal controller would pay. Then lb-controller assigns them all.
    let rounds: usize = std::env::var("LB_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let (mut to_bare, mut to_minimal) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let bare = floor(&server, &names, None, false);
        let minimal = floor(&server, &names, Some(&kubeconfig), true);
        let (lb, child) = controller_writes_all(&server, &kubeconfig, port, &names);
        let (bare_x, minimal_x) = (
            lb.as_secs_f64() / bare.as_secs_f64(),
            lb.as_secs_f64() / minimal.as_secs_f64(),
        );
        println!(
            "round {round}: {n} status patches: bare client {bare:.2?}; as a minimal controller (lb-controller's \
             ServiceAccount, a Service watch open) {minimal:.2?}; lb-controller, from its start to every status \
             written {lb:.2?}: {bare_x:.2}x the bare client, {minimal_x:.2}x the minimal controller"
        );
        to_bare.push(bare_x);
        to_minimal.push(minimal_x);
        if round == rounds {
            let (rss, hwm) = rss_kib(child.id());
            println!(
                "lb-controller memory with {n} Services: {} MiB resident, {} MiB peak",
                rss / 1024,
                hwm / 1024
            );
        }
        stop(child);
        if round < rounds {
            let names = &names;
            server.run(|client| async move {
                patch_all(&Api::namespaced(client, "default"), names, false).await;
            });
        }
    }
    let middle = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "every status written, median of {rounds} rounds: {:.2}x the bare client, {:.2}x the minimal controller",
        middle(to_bare),
        middle(to_minimal)
    );

    // 3. Cold start over assigned Services: ready, and nothing written.
    let versions = |server: &apiserver::ApiServer| {
        server.run(|client| async move {
            let api: Api<Service> = Api::namespaced(client, "default");
            let list = api.list(&ListParams::default()).await.unwrap();
            list.items
                .into_iter()
                .map(|s| s.metadata.resource_version)
                .collect::<Vec<_>>()
        })
    };
    let before = versions(&server);
    let start = Instant::now();
    let child = controller(&kubeconfig, port);
    while !ready(port) {
        std::thread::sleep(Duration::from_millis(10));
        assert!(start.elapsed() < Duration::from_secs(120), "not ready in 120 s");
    }
    let cold = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = versions(&server);
    let written = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    println!("cold start over {n} assigned Services: ready in {cold:.2?}, {written} Services written");

    // 4. One new Service: create to status seen, against one bare patch.
    let (new, one) = server.run(|client| async move {
        let api: Api<Service> = Api::namespaced(client, "default");
        // The bare patches go to a Service of another loadBalancerClass,
        // which lb leaves alone.
        let mut bare = service("bare");
        if let Some(spec) = bare.spec.as_mut() {
            spec.load_balancer_class = Some("example.com/other".into());
        }
        api.create(&PostParams::default(), &bare).await.unwrap();
        let mut new = Vec::new();
        let mut one = Vec::new();
        for i in 0..20 {
            let name = format!("new{i:02}");
            // Seen through a watch (as the controller sees its changes),
            // not by polling, which would add its own interval.
            let params = kube::api::WatchParams::default().fields(&format!("metadata.name={name}"));
            let version = api
                .list_metadata(&ListParams::default().limit(1))
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap_or_default();
            let mut seen = api.watch(&params, &version).await.unwrap().boxed();
            api.create(&PostParams::default(), &service(&name)).await.unwrap();
            // From the Service's existence (the create answered), as the
            // bare patch is timed from its request.
            let start = Instant::now();
            while let Some(event) = seen.try_next().await.unwrap() {
                let kube::api::WatchEvent::Modified(s) = event else {
                    continue;
                };
                let has = s
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .is_some_and(|i| !i.is_empty());
                if has {
                    new.push(start.elapsed());
                    break;
                }
            }
            let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": format!("10.2.0.{}", i + 1)}]}}});
            let start = Instant::now();
            api.patch_status("bare", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
            one.push(start.elapsed());
        }
        (median(new), median(one))
    });
    println!(
        "one new Service, create to status seen (watch): p50 {new:.2?}; one bare status patch: p50 {one:.2?} ({:.1}x)",
        new.as_secs_f64() / one.as_secs_f64()
    );
    stop(child);
}
