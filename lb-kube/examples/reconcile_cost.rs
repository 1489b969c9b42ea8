//! What one reconcile costs with many Services (in memory, no I/O):
//! `cargo run --release -p lb-kube --example reconcile_cost [-- SERVICES [NEW]]`.

use std::time::Instant;

use lb_kube::controller::{Controller, Options};
use lb_kube::objects;
use lb_kube::source::Snapshot;
use lb_kube::source::memory::{MemorySource, MemoryStatus};

fn object(json: serde_json::Value) -> objects::Object {
    objects::decode(json).unwrap().unwrap()
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut view = Snapshot::empty();
    view.objects.push((
        None,
        object(serde_json::json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "p", "namespace": "metallb-system"}, "spec": {"addresses": ["10.1.0.0/16"]}})),
    ));
    for i in 0..n {
        view.objects.push((
            None,
            object(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("s{i:05}"), "namespace": "default", "uid": format!("{i:032}"),
                         "labels": {"app": "web", "tier": "frontend"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
                     "selector": {"app": "web"}, "sessionAffinity": "None", "externalTrafficPolicy": "Cluster",
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}})),
        ));
    }
    let source = MemorySource::new(view.clone()).with_deltas();
    let mut c = Controller::with(Options::new("unused"), source, MemoryStatus::default());
    let t = Instant::now();
    c.reconcile(false).unwrap();
    println!("first reconcile, {n} Services: {:.2?}", t.elapsed());
    let t = Instant::now();
    let clone = view.clone();
    println!("clone of the view: {:.2?}", t.elapsed());
    drop(clone);
    for _ in 0..3 {
        let t = Instant::now();
        c.reconcile_snapshot(&view, Instant::now());
        println!("reconcile of an unchanged view: {:.2?}", t.elapsed());
    }
    // A reconcile through the source arms following changes again.
    c.reconcile(false).unwrap();
    // One new Service at a time, followed as a change (what cluster mode
    // does with a watch event); the source's own diff is not timed.
    let new: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    for i in 0..new {
        view.objects.push((
            None,
            object(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("new{i}"), "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})),
        ));
        c.source_mut().set(view.clone());
        let t = Instant::now();
        let report = c.reconcile(false).unwrap();
        println!(
            "one new Service followed as a change: {:.2?} (looked at {} Service, partial: {})",
            t.elapsed(),
            report.services.len(),
            report.partial
        );
    }
}
