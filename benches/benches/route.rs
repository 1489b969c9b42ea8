//! Route-table benchmarks (issue targets in the README's performance
//! section): 10k Ingresses x 5 paths over 10k hosts, one host with 500
//! regex paths, a linear-scan baseline and a matchit-based matcher.
//!
//! `cargo bench -p lb-benches --bench route`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use lb_benches::{Counting, allocations, live_bytes};
use lb_route::{BuildCache, Config, Decision, Ingress, Request, RouteTable};

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 10_000;

/// `n` Ingresses, one host each, 5 paths: `/`, `/api`, `/api/v1`,
/// `/static` (Prefix) and `/healthz` (Exact). `annotated`: each with an
/// annotation of its own (`proxy-body-size`), so none shares its options.
fn ingresses(n: usize, annotated: bool) -> Vec<Ingress> {
    (0..n)
        .map(|i| {
            let paths: Vec<serde_json::Value> = [
                ("/", "Prefix"),
                ("/api", "Prefix"),
                ("/api/v1", "Prefix"),
                ("/static", "Prefix"),
                ("/healthz", "Exact"),
            ]
            .iter()
            .enumerate()
            .map(|(p, (path, kind))| {
                serde_json::json!({"path": path, "pathType": kind,
                    "backend": {"service": {"name": format!("svc{i}-{p}"), "port": {"number": 8080}}}})
            })
            .collect();
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("ing{i}"), "namespace": format!("ns{}", i % 50),
                             "annotations": if annotated {
                                 serde_json::json!({"nginx.ingress.kubernetes.io/proxy-body-size": format!("{}k", i + 1)})
                             } else {
                                 serde_json::json!({})
                             }},
                "spec": {"ingressClassName": "lb", "rules": [{"host": format!("host{i}.example.com"), "http": {"paths": paths}}]}
            }))
            .expect("valid Ingress")
        })
        .collect()
}

/// `n` Ingresses of 5 paths each (`/t{i}/p0` … Prefix, `/t{i}/p4`
/// Exact), all on one host: a shared API host many teams add to.
fn one_host(n: usize) -> Vec<Ingress> {
    (0..n)
        .map(|i| {
            let paths: Vec<serde_json::Value> = (0..5)
                .map(|p| {
                    serde_json::json!({"path": format!("/t{i}/p{p}"), "pathType": if p == 4 { "Exact" } else { "Prefix" },
                        "backend": {"service": {"name": format!("svc{i}"), "port": {"number": 80}}}})
                })
                .collect();
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("ing{i}"), "namespace": "ns"},
                "spec": {"ingressClassName": "lb", "rules": [{"host": "api.example.com", "http": {"paths": paths}}]}
            }))
            .expect("valid Ingress")
        })
        .collect()
}

fn regex_host(n: usize) -> Vec<Ingress> {
    let paths: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"path": format!("/r{i}/[0-9]+/items(/|$)(.*)"), "pathType": "ImplementationSpecific",
                "backend": {"service": {"name": format!("svc{i}"), "port": {"number": 80}}}})
        })
        .collect();
    vec![
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "regex", "namespace": "default",
                         "annotations": {"nginx.ingress.kubernetes.io/use-regex": "true"}},
            "spec": {"ingressClassName": "lb", "rules": [{"host": "re.example.com", "http": {"paths": paths}}]}
        }))
        .expect("valid Ingress"),
    ]
}

/// `n` Ingresses of one adversarial regex path each on one host (in
/// ingress-nginx mode): the table keeps within the host's regex budget and
/// reports the rest.
fn adversarial_regex_host(n: usize) -> Vec<Ingress> {
    (0..n)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("adv{i:05}"), "namespace": "default",
                             "annotations": {"nginx.ingress.kubernetes.io/use-regex": "true"}},
                "spec": {"ingressClassName": "lb", "rules": [{"host": "adv.example.com", "http": {"paths": [
                    {"path": format!("/.*[ab]{{1,200}}{i}"), "pathType": "ImplementationSpecific",
                     "backend": {"service": {"name": format!("svc{i}"), "port": {"number": 80}}}}]}}]}
            }))
            .expect("valid Ingress")
        })
        .collect()
}

/// 1,024 requests spread over `hosts` of the `n` hosts, a mix of paths,
/// every one routed. Their bytes lie back to back in one buffer, read in
/// order, as a proxy reads requests from its connection buffers: what a
/// lookup finds in cache is the request it was just handed, and what it
/// must fetch is the table's.
struct Requests {
    buf: String,
    /// (end of the host in `buf`, end of the target).
    ends: Vec<(usize, usize)>,
}

impl Requests {
    fn new(n: usize, hosts: usize) -> Self {
        let paths = [
            "/api/v1/users/42",
            "/",
            "/static/app.js",
            "/healthz",
            "/api/orders?id=7",
            "/about/team",
        ];
        let mut buf = String::new();
        let mut ends = Vec::new();
        for k in 0..1024 {
            buf.push_str(&format!("host{}.example.com", ((k % hosts) * 7919) % n));
            let host_end = buf.len();
            buf.push_str(paths[k % paths.len()]);
            ends.push((host_end, buf.len()));
        }
        Self { buf, ends }
    }

    /// The `k`th request's host and target.
    fn get(&self, k: usize) -> (&str, &str) {
        let start = if k == 0 { 0 } else { self.ends[k - 1].1 };
        let (host_end, end) = self.ends[k];
        (&self.buf[start..host_end], &self.buf[host_end..end])
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.ends.len()).map(|k| self.get(k))
    }
}

/// The spec's matcher as a plain scan over every path of every Ingress.
struct Linear(Vec<(String, String, bool, String)>);

impl Linear {
    fn new(ings: &[Ingress]) -> Self {
        let mut v = Vec::new();
        for ing in ings {
            for rule in &ing.spec.rules {
                for p in &rule.http.as_ref().unwrap().paths {
                    v.push((
                        rule.host.clone().unwrap_or_default(),
                        p.path.clone().unwrap_or_default(),
                        p.path_type.as_deref() == Some("Exact"),
                        p.backend.service.as_ref().unwrap().name.clone(),
                    ));
                }
            }
        }
        Self(v)
    }

    fn lookup(&self, host: &str, path: &str) -> Option<&str> {
        let path = path.split('?').next().unwrap_or(path);
        let mut best: Option<(usize, bool, &str)> = None;
        for (h, p, exact, svc) in &self.0 {
            if h != host {
                continue;
            }
            let q = p.trim_end_matches('/');
            let hit = if *exact {
                path == p
            } else {
                p == "/" || path == q || path.strip_prefix(q).is_some_and(|r| r.starts_with('/'))
            };
            if hit && best.is_none_or(|b| (p.len(), *exact) > (b.0, b.1)) {
                best = Some((p.len(), *exact, svc));
            }
        }
        best.map(|b| b.2)
    }
}

/// Hosts and paths in one matchit router: `host/path` for Exact,
/// `host/prefix` plus `host/prefix/{*rest}` for Prefix.
fn matchit_router(ings: &[Ingress]) -> matchit::Router<String> {
    let mut r = matchit::Router::new();
    for ing in ings {
        for rule in &ing.spec.rules {
            let host = rule.host.clone().unwrap_or_default();
            for p in &rule.http.as_ref().unwrap().paths {
                let path = p.path.clone().unwrap_or_default();
                let svc = p.backend.service.as_ref().unwrap().name.clone();
                let q = path.trim_end_matches('/');
                if p.path_type.as_deref() == Some("Exact") {
                    let _ = r.insert(format!("/{host}{path}"), svc);
                } else {
                    let _ = r.insert(format!("/{host}{q}"), svc.clone());
                    let _ = r.insert(format!("/{host}{q}/"), svc.clone());
                    let _ = r.insert(format!("/{host}{q}/{{*rest}}"), svc);
                }
            }
        }
    }
    r
}

fn memory_report() {
    let ings = ingresses(N, false);
    let (before, calls) = (live_bytes(), allocations());
    let build = RouteTable::build(&ings, &[], &(), &Config::default());
    let (after, calls) = (live_bytes(), allocations() - calls);
    assert!(build.problems.is_empty());
    println!(
        "memory: route table of {N} Ingresses x 5 paths: {} bytes ({} per Ingress); the build made {calls} allocations ({} per Ingress)",
        after - before,
        (after - before) / N as isize,
        calls / N as isize
    );
    drop(build);
}

/// Benches `f` on the requests in turn (`f` hands its result to
/// `black_box`).
fn cycle(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    reqs: &Requests,
    f: impl Fn(&str, &str),
) {
    g.bench_function(name, |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) & 1023;
            let (h, p) = reqs.get(k);
            f(h, p)
        })
    });
}

fn benches(c: &mut Criterion) {
    memory_report();
    let ings = ingresses(N, false);
    let table = RouteTable::build(&ings, &[], &(), &Config::default()).table;
    let reqs = Requests::new(N, 1024);
    for (h, p) in reqs.iter() {
        assert!(
            matches!(table.lookup(&Request::get(h, p)), Decision::Forward(_)),
            "{h}{p}"
        );
    }
    let mut g = c.benchmark_group("route");
    g.measurement_time(Duration::from_secs(4));
    cycle(&mut g, "lookup_10k_ingresses", &reqs, |h, p| {
        black_box(table.lookup(&Request::get(h, p)));
    });
    // The same with the requests on 16 hosts: what a lookup costs when its
    // host's routes are in cache, as for a site's busiest hosts.
    let hot = Requests::new(N, 16);
    cycle(&mut g, "lookup_10k_ingresses_16_hot_hosts", &hot, |h, p| {
        black_box(table.lookup(&Request::get(h, p)));
    });
    // The same table in shards, as a serving proxy builds it (a cached
    // build of 10,000 Ingresses): the host picks a shard first.
    let held: Vec<std::sync::Arc<Ingress>> = ings.iter().cloned().map(std::sync::Arc::new).collect();
    let mut cache = BuildCache::default();
    let sharded = RouteTable::build_cached(&held, &[], &(), &Config::default(), &mut cache).table;
    assert!(cache.shards_built().1 > 1, "{cache:?}");
    cycle(&mut g, "lookup_10k_ingresses_in_shards", &reqs, |h, p| {
        black_box(sharded.lookup(&Request::get(h, p)));
    });
    // The same with no two Ingresses sharing their options.
    let distinct = RouteTable::build(&ingresses(N, true), &[], &(), &Config::default()).table;
    cycle(&mut g, "lookup_10k_ingresses_distinct_options", &reqs, |h, p| {
        black_box(distinct.lookup(&Request::get(h, p)));
    });
    let linear = Linear::new(&ings);
    cycle(&mut g, "baseline_linear_scan_10k_ingresses", &reqs, |h, p| {
        black_box(linear.lookup(h, p));
    });
    let router = matchit_router(&ings);
    g.bench_function("matchit_10k_ingresses", |b| {
        let mut k = 0;
        // Its keys back to back too.
        let (mut keys, mut ends) = (String::new(), vec![0]);
        for (h, p) in reqs.iter() {
            keys.push_str(&format!("/{h}{}", p.split('?').next().unwrap()));
            ends.push(keys.len());
        }
        b.iter(|| {
            k = (k + 1) & 1023;
            let key = &keys[ends[k]..ends[k + 1]];
            black_box(router.at(key).map(|m| m.value.len()).ok())
        })
    });
    g.sample_size(10);
    g.bench_function("build_10k_ingresses", |b| {
        b.iter(|| black_box(RouteTable::build(&ings, &[], &(), &Config::default())))
    });
    // One Ingress of 10,000 edited (two versions in turn), the table
    // built again with the cache of the last build: one shard is built.
    let edited = {
        let mut v = ings[7].clone();
        v.spec.rules[0].http.as_mut().unwrap().paths[0].path = Some("/edited".into());
        [std::sync::Arc::new(v), held[7].clone()]
    };
    let mut turn = 0;
    let mut held = held;
    g.bench_function("rebuild_10k_ingresses_one_edited", |b| {
        b.iter(|| {
            turn ^= 1;
            held[7] = edited[turn].clone();
            black_box(RouteTable::build_cached(
                &held,
                &[],
                &(),
                &Config::default(),
                &mut cache,
            ))
        })
    });
    assert_eq!(cache.shards_built().0, 1, "{cache:?}");
    let shared = one_host(N);
    g.bench_function("build_10k_ingresses_one_host", |b| {
        b.iter(|| black_box(RouteTable::build(&shared, &[], &(), &Config::default())))
    });
    let table = RouteTable::build(&shared, &[], &(), &Config::default()).table;
    assert!(matches!(
        table.lookup(&Request::get("api.example.com", "/t9999/p2/x")),
        Decision::Forward(_)
    ));
    g.sample_size(100);
    g.bench_function("lookup_one_host_50k_paths", |b| {
        let mut k = 0;
        let targets: Vec<String> = (0..1024)
            .map(|k| format!("/t{}/p{}/x", (k * 7919) % N, k % 4))
            .collect();
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(table.lookup(&Request::get("api.example.com", &targets[k])))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("regex");
    g.measurement_time(Duration::from_secs(4));
    let re = RouteTable::build(&regex_host(500), &[], &(), &Config::default());
    assert!(re.problems.is_empty(), "{:?}", re.problems);
    let re = re.table;
    for (name, path) in [
        ("lookup_500_regex_paths_last", "/r499/123/items/x"),
        ("lookup_500_regex_paths_first", "/r0/1/items"),
        ("lookup_500_regex_paths_miss", "/nothing/here"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(re.lookup(&Request::get("re.example.com", path))))
        });
    }
    // The per-request bound: 2,000 adversarial regex paths on one host
    // (unbounded, seconds per lookup), 8 KiB paths that vary so the lazy
    // DFA keeps building states.
    let adv = RouteTable::build(&adversarial_regex_host(2000), &[], &(), &Config::default());
    assert!(!adv.problems.is_empty(), "the budget leaves some out");
    let adv = adv.table;
    let paths: Vec<String> = ["ab", "ba", "aab", "abb", "bba", "baa", "abab", "bbaa"]
        .iter()
        .map(|u| format!("/{}", u.repeat(8000 / u.len())))
        .collect();
    g.bench_function("regex_worst_case_2000_adversarial_8k_path", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) % paths.len();
            black_box(adv.lookup(&Request::get("adv.example.com", &paths[k])))
        })
    });
    g.finish();
}

/// What the steps of a lookup that read only the request cost, and what
/// fetching a request from [`Requests`] costs the lookup benches.
fn parts(c: &mut Criterion) {
    let reqs = Requests::new(N, 16);
    let policy = lb_route::PathPolicy::default();
    let mut g = c.benchmark_group("parts");
    g.bench_function("parse_target", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(lb_route::Target::parse(reqs.get(k).1, &policy).is_ok())
        })
    });
    g.bench_function("canonical_host", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(lb_route::canonical_host(reqs.get(k).0).len())
        })
    });
    g.bench_function("harness_request_fetch", |b| {
        let mut k = 0;
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(reqs.get(k).0.len())
        })
    });
    g.finish();
}

criterion_group!(route, benches, parts);
criterion_main!(route);
