//! What building a table may hold: the regex budgets bound the heap however
//! many regex Ingresses and hosts there are. The heap of this test binary is
//! capped, so passing a bound aborts the test.

use cap::Cap;
use lb_route::*;
use serde_json::json;

#[global_allocator]
static HEAP: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Heap the tests below may use on top of what they had before building:
/// the table's regex budget, three times (individual regexes, and the two
/// sets an ingress-nginx regex host makes of them), and room for the table
/// and the Ingresses themselves.
const ALLOWED: usize = 3 * TABLE_REGEX_BUDGET + (48 << 20);

/// `n` Ingresses with one regex path each (`use-regex`), on `hosts` hosts. Each path compiles to about 160 KiB (within the
/// per-regex limit): 2,000 of them would hold 320 MiB.
fn heavy(n: usize, hosts: usize) -> Vec<Ingress> {
    (0..n)
        .map(|i| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("heavy{i:05}"), "namespace": "default",
                             "creationTimestamp": format!("2026-01-01T{:02}:{:02}:{:02}Z", i / 3600, i / 60 % 60, i % 60),
                             "annotations": {"nginx.ingress.kubernetes.io/use-regex": "true"}},
                "spec": {"ingressClassName": "lb", "rules": [{"host": format!("h{}.example.com", i % hosts), "http": {"paths": [
                    {"path": format!(r"/\w{{1,1000}}-{i}/"), "pathType": "ImplementationSpecific",
                     "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}}]}
            }))
            .unwrap()
        })
        .collect()
}

/// Builds with the heap capped; one build at a time (the cap is the
/// process's).
fn build_capped(ingresses: &[Ingress], mode: Mode) -> Build {
    build_capped_with(ingresses, mode, &mut BuildCache::default())
}

/// The same with a regex cache kept by the caller (counted in the cap).
fn build_capped_with(ingresses: &[Ingress], mode: Mode, cache: &mut BuildCache) -> Build {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let ingresses: Vec<std::sync::Arc<Ingress>> = ingresses.iter().cloned().map(std::sync::Arc::new).collect();
    HEAP.set_limit(HEAP.allocated() + ALLOWED).unwrap();
    let config = Config::default().with_classes(ClassConfig::default().with_mode(mode));
    let build = RouteTable::build_cached(&ingresses, &[], &(), &config, cache);
    HEAP.set_limit(usize::MAX).unwrap();
    build
}

/// A cache kept between builds holds only what the tables took: building
/// again over the same heavy Ingresses, with the last table and the cache
/// alive, stays within the same cap, and serves the same.
#[test]
fn a_regex_cache_kept_between_builds_stays_within_the_budgets() {
    let ingresses = heavy(2000, 2000);
    let mut cache = BuildCache::default();
    let first = build_capped_with(&ingresses, Mode::Strict, &mut cache);
    drop(first);
    let again = build_capped_with(&ingresses, Mode::Strict, &mut cache);
    assert!(served(&again.table, "h0.example.com", "/abc-0/"));
    assert!(!served(&again.table, "h1999.example.com", "/abc-1999/"));
}

fn over_budget(b: &Build) -> Vec<String> {
    b.problems
        .iter()
        .filter(|p| p.message.contains("budget"))
        .map(|p| p.object.to_string())
        .collect()
}

fn served(t: &RouteTable, host: &str, path: &str) -> bool {
    matches!(t.lookup(&Request::get(host, path)), Decision::Forward(_))
}

/// One host: the host's set budget keeps the oldest Ingresses; the table's
/// budget keeps the newer ones from being compiled at all.
#[test]
fn thousands_of_heavy_regex_paths_on_one_host_stay_within_the_budgets() {
    let ingresses = heavy(2000, 1);
    let b = build_capped(&ingresses, Mode::Strict);
    let left_out = over_budget(&b);
    assert!(!left_out.is_empty(), "some Ingresses pass a budget and are reported");
    assert!(
        !left_out.contains(&"Ingress default/heavy00000".to_owned()),
        "{left_out:?}"
    );
    assert!(served(&b.table, "h0.example.com", "/abc-0/"));
    assert!(!served(&b.table, "h0.example.com", "/abc-1999/"));
}

/// One regex path on each of many hosts: no host's set is over its budget,
/// the table's budget bounds them all, oldest first.
#[test]
fn heavy_regex_paths_on_many_hosts_stay_within_the_table_budget() {
    let ingresses = heavy(2000, 2000);
    let b = build_capped(&ingresses, Mode::Strict);
    let left_out = over_budget(&b);
    assert!(!left_out.is_empty(), "the table's budget is reached and reported");
    assert!(
        !left_out.contains(&"Ingress default/heavy00000".to_owned()),
        "{left_out:?}"
    );
    assert!(
        left_out.contains(&"Ingress default/heavy01999".to_owned()),
        "{left_out:?}"
    );
    assert!(served(&b.table, "h0.example.com", "/abc-0/"));
    assert!(!served(&b.table, "h1999.example.com", "/abc-1999/"));
}

/// In ingress-nginx mode a regex host turns every path on it into a regex.
/// An older Ingress's plain paths there come first in the budget: newer
/// regex Ingresses that fill it do not take their place.
#[test]
fn older_paths_on_a_regex_host_keep_their_place_in_the_budget() {
    let older: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "older", "namespace": "default", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "lb", "rules": [{"host": "h0.example.com", "http": {"paths": [
            {"path": "/keep", "pathType": "Prefix",
             "backend": {"service": {"name": "kept", "port": {"number": 80}}}}]}}]}
    }))
    .unwrap();
    let mut ingresses = heavy(2000, 1);
    ingresses.push(older);
    let b = build_capped(&ingresses, Mode::IngressNginx);
    let left_out = over_budget(&b);
    assert!(!left_out.is_empty(), "the budget is reached and reported");
    assert!(!left_out.contains(&"Ingress default/older".to_owned()), "{left_out:?}");
    match b.table.lookup(&Request::get("h0.example.com", "/keep/x")) {
        Decision::Forward(f) => assert_eq!(f.service, "kept"),
        d => panic!("{d:?}"),
    }
    assert!(served(&b.table, "h0.example.com", "/abc-0/"));
    assert!(!served(&b.table, "h0.example.com", "/abc-1999/"));
    // One report per Ingress left out.
    let mut unique = left_out.clone();
    unique.dedup();
    assert_eq!(unique, left_out);
}
