//! MetalLB's promise, in file mode: a bad configuration changes nothing.
//! Each test holds addresses, does to the directory what users do (typos,
//! broken YAML, unreadable files, duplicates, half-written saves, a second
//! controller), and asserts what is still held afterwards.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_kube::controller::{Controller, Options, Report};
use lb_kube::source::Severity;
use lb_kube::source::file::FileSource;

const POOL: &str = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: pool\n  namespace: metallb-system\nspec:\n  addresses:\n  - 10.0.0.1-10.0.0.9\n";

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n"
    )
}

fn services(names: &[&str]) -> String {
    names.iter().map(|n| service(n)).collect::<Vec<_>>().join("---\n")
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

fn ips(report: &Report) -> BTreeMap<String, Vec<IpAddr>> {
    report
        .services
        .iter()
        .map(|s| (format!("{}/{}", s.namespace, s.name), s.ips.clone()))
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn once(dir: &Path) -> Report {
    Controller::new(Options::new(dir)).unwrap().reconcile(false).unwrap()
}

/// A fresh controller's dry run beside a running one (which holds the
/// state file's lock).
fn dry(dir: &Path) -> Report {
    Controller::read_only(Options::new(dir))
        .unwrap()
        .reconcile(true)
        .unwrap()
}

fn state(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".lb/state.json")).unwrap()
}

/// Three Services holding .1, .2, .3 in a fresh directory.
fn held() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pool.yaml", POOL);
    write(dir.path(), "svc.yaml", &services(&["a", "b", "c"]));
    let r = once(dir.path());
    assert_eq!(
        ips(&r).into_values().collect::<Vec<_>>(),
        [vec![ip("10.0.0.1")], vec![ip("10.0.0.2")], vec![ip("10.0.0.3")]]
    );
    dir
}

fn all_held(r: &Report) {
    assert_eq!(
        ips(r).into_values().collect::<Vec<_>>(),
        [vec![ip("10.0.0.1")], vec![ip("10.0.0.2")], vec![ip("10.0.0.3")]],
        "{r:#?}"
    );
}

/// Broken configurations that a restarted controller (`--once`) meets
/// with no earlier good version known: nothing is released, the state file
/// is untouched, and fixing the mistake renumbers nobody.
#[test]
fn a_configuration_that_cannot_be_read_releases_nothing() {
    type Breakage = (&'static str, fn(&Path));
    let breakages: [Breakage; 5] = [
        ("typo in an address", |d| {
            write(d, "pool.yaml", &POOL.replace("10.0.0.1-", "10.0.0.I-"))
        }),
        ("YAML syntax error", |d| {
            write(d, "pool.yaml", &POOL.replace("  - 10.0.0.1", "  - [10.0.0.1"))
        }),
        ("dangling symlink", |d| {
            std::fs::remove_file(d.join("pool.yaml")).unwrap();
            std::os::unix::fs::symlink(d.join("gone.yaml"), d.join("pool.yaml")).unwrap();
        }),
        ("no kind", |d| {
            write(d, "pool.yaml", &POOL.replace("kind: IPAddressPool\n", ""))
        }),
        ("legacy ConfigMap that does not convert", |d| {
            std::fs::remove_file(d.join("pool.yaml")).unwrap();
            write(
                d,
                "config.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n  namespace: metallb-system\ndata:\n  config: |\n    address-pools:\n    - name: pool\n      protocl: layer2\n      addresses:\n      - 10.0.0.1-10.0.0.9\n",
            );
        }),
    ];
    for (what, breakage) in breakages {
        let dir = held();
        let before = state(dir.path());
        breakage(dir.path());
        // And a new Service arrives meanwhile.
        write(dir.path(), "svc.yaml", &services(&["a", "b", "c", "d"]));
        let r = once(dir.path());
        assert!(
            r.problems.iter().any(|p| p.severity == Severity::Error),
            "{what}: reported"
        );
        assert!(!r.config_in_force, "{what}");
        let got = ips(&r);
        assert_eq!(got["default/a"], [ip("10.0.0.1")], "{what}");
        assert_eq!(got["default/b"], [ip("10.0.0.2")], "{what}");
        assert_eq!(got["default/c"], [ip("10.0.0.3")], "{what}");
        assert!(got["default/d"].is_empty(), "{what}: nothing given out");
        assert_eq!(state(dir.path()), before, "{what}: state file untouched");
        // Fixed: everyone keeps their address, the newcomer gets the next.
        let _ = std::fs::remove_file(dir.path().join("pool.yaml"));
        let _ = std::fs::remove_file(dir.path().join("config.yaml"));
        write(dir.path(), "pool.yaml", POOL);
        let got = ips(&once(dir.path()));
        assert_eq!(got["default/a"], [ip("10.0.0.1")], "{what}");
        assert_eq!(got["default/c"], [ip("10.0.0.3")], "{what}");
        assert_eq!(got["default/d"], [ip("10.0.0.4")], "{what}");
    }
}

/// In follow mode a pool that breaks keeps its last good version; one that
/// never read well freezes the allocation until fixed.
#[test]
fn a_broken_pool_keeps_its_last_good_version_in_follow_mode() {
    let dir = held();
    let mut c = Controller::new(Options::new(dir.path())).unwrap();
    all_held(&c.reconcile(false).unwrap());
    write(dir.path(), "pool.yaml", &POOL.replace("10.0.0.1-", "10.0.0.I-"));
    let r = c.reconcile(false).unwrap();
    all_held(&r);
    assert!(r.config_in_force, "the last good version is in force");
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("keeping its last good version"))
    );
}

/// Deleting document 1 and breaking document 2 in one save: the broken one
/// keeps its last good version (by identity, not position), and the deleted
/// one is not resurrected — but a file with an error releases nothing it
/// held, so its address waits until the file reads well again.
#[test]
fn last_good_version_follows_identity_not_position() {
    let dir = held();
    let mut c = Controller::new(Options::new(dir.path())).unwrap();
    all_held(&c.reconcile(false).unwrap());
    let broken_b = service("b").replace("  ports:\n", "  ports:\n  - [\n");
    write(dir.path(), "svc.yaml", &format!("{broken_b}---\n{}", service("c")));
    let mut src = FileSource::new(dir.path());
    let view = src.read().unwrap();
    assert!(view.get(&ref_of("a")).is_none(), "a is not resurrected");
    let r = c.reconcile(false).unwrap();
    all_held(&r);
    assert!(r.released.is_empty());
    // Fixed: now a is released, and only a.
    write(dir.path(), "svc.yaml", &services(&["b", "c"]));
    let r = c.reconcile(false).unwrap();
    assert_eq!(
        r.released,
        [(lb_alloc::ServiceKey::new("default", "a"), vec![ip("10.0.0.1")])]
    );
    assert_eq!(ips(&r)["default/b"], [ip("10.0.0.2")]);
}

fn ref_of(name: &str) -> lb_kube::objects::ObjectRef {
    lb_kube::objects::ObjectRef {
        kind: "Service".into(),
        namespace: "default".into(),
        name: name.into(),
    }
}

/// The same object twice: an error naming both places, and neither copy
/// changes anything: the version in force stays (here a copy that sorts
/// first would move `a`, and a copy that is not a LoadBalancer would
/// release it), for Services and for pools alike.
#[test]
fn duplicates_are_errors_and_change_nothing() {
    let dir = held();
    let mut c = Controller::new(Options::new(dir.path())).unwrap();
    all_held(&c.reconcile(false).unwrap());
    for (file, text) in [
        (
            "0-copy.yaml",
            service("a").replace("  ports:\n", "  loadBalancerIP: 10.0.0.7\n  ports:\n"),
        ),
        ("0-copy.yaml", service("a").replace("LoadBalancer", "ClusterIP")),
        ("0-pool.yaml", POOL.replace("10.0.0.1-10.0.0.9", "10.0.1.0/24")),
    ] {
        write(dir.path(), file, &text);
        for r in [c.reconcile(false).unwrap(), dry(dir.path())] {
            let dup: Vec<_> = r
                .problems
                .iter()
                .filter(|p| p.message.contains("defined twice"))
                .collect();
            assert_eq!(dup.len(), 1, "{:#?}", r.problems);
            let text = dup[0].to_string();
            assert!(text.contains(file) && text.contains(".yaml:1"), "{text}");
            assert_eq!(dup[0].severity, Severity::Error);
            all_held(&r);
        }
        std::fs::remove_file(dir.path().join(file)).unwrap();
    }
    drop(c);
    // A duplicate with no version in force (both new): nothing given to it.
    write(dir.path(), "new1.yaml", &service("z"));
    write(dir.path(), "new2.yaml", &service("z"));
    let r = once(dir.path());
    assert!(ips(&r).get("default/z").is_none_or(Vec::is_empty), "{r:#?}");
}

/// A file cut short (or with any error) releases nothing it held: the
/// Services whose documents come after the break keep their addresses.
#[test]
fn a_truncated_file_releases_nothing_it_held() {
    let dir = held();
    let full = services(&["a", "b", "c"]);
    for cut in [full.find("type: L").unwrap() + 7, full.find("name: b").unwrap() + 4] {
        write(dir.path(), "svc.yaml", &full[..cut]);
        let r = once(dir.path());
        assert!(r.problems.iter().any(|p| p.severity == Severity::Error));
        all_held(&r);
        assert!(r.released.is_empty());
    }
}

/// The legacy ConfigMap without its `config` key (a typo) is an error, not
/// a configuration without pools.
#[test]
fn a_legacy_configmap_without_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config\n  namespace: metallb-system\ndata:\n  config: |\n    address-pools:\n    - name: pool\n      protocol: layer2\n      addresses:\n      - 10.0.0.1-10.0.0.9\n";
    write(dir.path(), "config.yaml", cm);
    write(dir.path(), "svc.yaml", &services(&["a"]));
    assert_eq!(ips(&once(dir.path()))["default/a"], [ip("10.0.0.1")]);
    write(dir.path(), "config.yaml", &cm.replace("  config: |", "  confg: |"));
    let r = once(dir.path());
    assert!(
        r.problems
            .iter()
            .any(|p| p.severity == Severity::Error && p.message.contains("no `config` key"))
    );
    assert_eq!(ips(&r)["default/a"], [ip("10.0.0.1")]);
}

/// A controller following `dir` with a 2 s release delay, its own view of
/// the directory, and the time of its first reconcile (which holds .1–.3).
fn following(dir: &Path) -> (Controller, FileSource, Instant) {
    let options = Options {
        release_delay: Duration::from_secs(2),
        ..Options::new(dir)
    };
    let mut c = Controller::new(options).unwrap();
    let mut src = FileSource::new(dir);
    let t0 = Instant::now();
    all_held(&c.reconcile_snapshot(&src.read().unwrap(), t0));
    (c, src, t0)
}

/// A file caught half-written (its later Services not there yet) releases
/// nothing while the release delay runs; the full file then changes nothing.
#[test]
fn a_half_written_file_releases_nothing() {
    let dir = held();
    let (mut c, mut src, t0) = following(dir.path());
    let full = services(&["a", "b", "c"]);
    // Cut at a document boundary: valid YAML, c simply not written yet.
    write(dir.path(), "svc.yaml", &services(&["a", "b"]));
    let r = c.reconcile_snapshot(&src.read().unwrap(), t0 + Duration::from_millis(100));
    assert!(
        !r.problems.iter().any(|p| p.severity == Severity::Error),
        "a valid file"
    );
    assert!(r.released.is_empty());
    assert_eq!(ips(&r)["default/c"], [ip("10.0.0.3")], "c is kept while the delay runs");
    write(dir.path(), "svc.yaml", &full);
    all_held(&c.reconcile_snapshot(&src.read().unwrap(), t0 + Duration::from_millis(600)));
    // Gone for longer than the delay: released.
    write(dir.path(), "svc.yaml", &services(&["a", "b"]));
    let r = c.reconcile_snapshot(&src.read().unwrap(), t0 + Duration::from_secs(3));
    assert!(r.released.is_empty());
    assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(5)));
    let r = c.reconcile_snapshot(&src.read().unwrap(), t0 + Duration::from_secs(5));
    assert_eq!(
        r.released,
        [(lb_alloc::ServiceKey::new("default", "c"), vec![ip("10.0.0.3")])]
    );
}

/// A stale status in a manifest (a `kubectl get -o yaml` dump) does not take
/// an address the state file gives another Service.
#[test]
fn the_holder_wins_over_a_stale_status() {
    let dir = held();
    let stale = format!(
        "{}status:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.2\n",
        service("aa")
    );
    write(dir.path(), "aa.yaml", &stale);
    let got = ips(&once(dir.path()));
    assert_eq!(got["default/b"], [ip("10.0.0.2")]);
    assert_eq!(got["default/aa"], [ip("10.0.0.4")]);
}

/// Two controllers of different loadBalancerClasses on one directory: each
/// keeps its own state file, neither gives out the other's addresses, and
/// neither releases the other's.
#[test]
fn lb_class_instances_sharing_a_directory_keep_apart() {
    let dir = held();
    let classed = |name: &str| {
        service(name).replace(
            "  type: LoadBalancer\n",
            "  type: LoadBalancer\n  loadBalancerClass: example.com/x\n",
        )
    };
    write(
        dir.path(),
        "x.yaml",
        &format!("{}---\n{}", classed("x1"), classed("x2")),
    );
    let x = Options {
        load_balancer_class: Some("example.com/x".into()),
        ..Options::new(dir.path())
    };
    let rx = Controller::new(x.clone()).unwrap().reconcile(false).unwrap();
    let gx = ips(&rx);
    assert_eq!(gx["default/x1"], [ip("10.0.0.4")], "{rx:#?}");
    assert_eq!(gx["default/x2"], [ip("10.0.0.5")]);
    assert!(x.state_path().ends_with(".lb/state.example.com%2Fx.json"));
    // The default controller again: keeps its own, releases nothing of x's,
    // and a newcomer skips x's addresses.
    write(dir.path(), "svc.yaml", &services(&["a", "b", "c", "d"]));
    let r = once(dir.path());
    let got = ips(&r);
    assert_eq!(got["default/d"], [ip("10.0.0.6")], "{r:#?}");
    assert!(got["default/x1"].is_empty(), "not ours");
    let rx = Controller::new(x).unwrap().reconcile(false).unwrap();
    assert_eq!(ips(&rx)["default/x1"], [ip("10.0.0.4")]);
    assert!(state(dir.path()).contains("default/d"));
}

/// The state file: refused when of an unknown version or not a regular
/// file (a fifo must not block, /dev/zero must not be read forever).
#[test]
fn state_file_is_checked_before_use() {
    let dir = held();
    let path = dir.path().join(".lb/state.json");
    let good = state(dir.path());
    let text = good.replace("\"version\": 1", "\"version\": 2");
    std::fs::write(&path, text).unwrap();
    let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
    assert!(e.contains("format version 2"), "{e}");
    let text = good.replace("\"10.0.0.1\"", "\"10.0.0.1\", \"10.0.0.8\"");
    std::fs::write(&path, text).unwrap();
    let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
    assert!(e.contains("default/a holds 2 addresses of one family"), "{e}");
    for bad in ["default", "default/a/b", "/a", "default/"] {
        std::fs::write(&path, good.replace("\"default/a\"", &format!("{bad:?}"))).unwrap();
        let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
        assert!(e.contains(&format!("{bad:?} is not namespace/name")), "{e}");
    }
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    std::fs::remove_file(&path).unwrap();
    let status = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success());
    let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

/// A Service kept while its manifest cannot be read is held with its last
/// request, sharing key, labels and all: sharing and selector-restricted
/// pools do not evict it (nor its healthy neighbour).
#[test]
fn kept_services_keep_their_sharing_and_their_restricted_pool() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pool.yaml",
        &POOL.replace(
            "spec:\n",
            "spec:\n  serviceAllocation:\n    serviceSelectors:\n    - matchLabels: {team: a}\n",
        ),
    );
    let shared = |name: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{team: a}}\n  annotations:\n    metallb.io/allow-shared-ip: k\nspec:\n  type: LoadBalancer\n  ports:\n  - port: {port}\n"
        )
    };
    let both = format!("{}---\n{}", shared("a", 80), shared("b", 443));
    write(dir.path(), "svc.yaml", &both);
    let mut c = Controller::new(Options {
        release_delay: Duration::from_secs(60),
        ..Options::new(dir.path())
    })
    .unwrap();
    let r = c.reconcile(false).unwrap();
    assert_eq!(ips(&r)["default/a"], [ip("10.0.0.1")]);
    assert_eq!(ips(&r)["default/b"], [ip("10.0.0.1")], "shared");
    // b's document cut off mid-way, then a's document gone (release delay).
    for text in [both[..both.len() - 20].to_owned(), shared("b", 443)] {
        write(dir.path(), "svc.yaml", &text);
        let r = c.reconcile(false).unwrap();
        assert_eq!(ips(&r)["default/a"], [ip("10.0.0.1")], "{r:#?}");
        assert_eq!(ips(&r)["default/b"], [ip("10.0.0.1")], "{r:#?}");
        assert!(r.released.is_empty());
    }
}

/// A Service whose fields go bad keeps its last valid request: a typo in
/// its family policy does not drop its IPv6 address.
#[test]
fn an_invalid_service_keeps_its_last_valid_request() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "pool.yaml",
        &POOL.replace(
            "  - 10.0.0.1-10.0.0.9\n",
            "  - 10.0.0.1-10.0.0.9\n  - fc00::1-fc00::9\n",
        ),
    );
    let dual = service("d").replace(
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
    );
    write(dir.path(), "svc.yaml", &dual);
    let mut c = Controller::new(Options::new(dir.path())).unwrap();
    let want = vec![ip("10.0.0.1"), ip("fc00::1")];
    assert_eq!(ips(&c.reconcile(false).unwrap())["default/d"], want);
    write(
        dir.path(),
        "svc.yaml",
        &dual.replace("RequireDualStack", "RequireDualStak"),
    );
    let r = c.reconcile(false).unwrap();
    assert!(r.problems.iter().any(|p| p.severity == Severity::Error));
    assert_eq!(ips(&r)["default/d"], want, "{r:#?}");
    // And a fresh controller (no memory of its request) carries it as is.
    drop(c);
    let r = once(dir.path());
    assert_eq!(ips(&r)["default/d"], want, "{r:#?}");
}

/// A pool gone from the manifests (a pools file caught cut at a document
/// boundary) stays in force for the release delay: its Services keep their
/// addresses, and only a pool that stays gone releases them.
#[test]
fn a_vanished_pool_stays_in_force_for_the_release_delay() {
    let dir = held();
    // (Named to sort after the vanished one, which a newcomer would take
    // first if it still gave out addresses.)
    let second = POOL
        .replace("name: pool", "name: zz-other")
        .replace("10.0.0.1-10.0.0.9", "10.0.1.1-10.0.1.9");
    write(dir.path(), "pool.yaml", &format!("{second}---\n{POOL}"));
    let (mut c, mut src, t0) = following(dir.path());
    write(dir.path(), "pool.yaml", &second);
    // A newcomer meanwhile: the vanished pool keeps its holders only.
    write(dir.path(), "svc.yaml", &services(&["a", "b", "c", "d"]));
    let r = c.reconcile_snapshot(&src.read().unwrap(), t0 + Duration::from_millis(300));
    let got = ips(&r);
    for (name, held) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
        assert_eq!(got[&format!("default/{name}")], [ip(held)], "{r:#?}");
    }
    assert!(
        r.problems
            .iter()
            .any(|p| p.message.contains("keeps its holders for the release delay"))
    );
    assert!(
        ips(&r)["default/d"]
            .iter()
            .all(|ip| ip.to_string().starts_with("10.0.1.")),
        "{r:#?}"
    );
    let r = c.reconcile_snapshot(&src.read().unwrap(), t0 + Duration::from_secs(3));
    assert!(
        ips(&r)["default/a"]
            .iter()
            .all(|ip| ip.to_string().starts_with("10.0.1.")),
        "{r:#?}"
    );
}

/// Two controllers of one class on one state file would overwrite each
/// other's addresses: the second is refused while the first runs; a dry run
/// beside it reads the file without the lock; once the first is gone, the
/// next starts.
#[test]
fn one_controller_writes_a_state_file() {
    let dir = held();
    let first = Controller::new(Options::new(dir.path())).unwrap();
    let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
    assert!(e.contains("in use by another lb-controller"), "{e}");
    assert!(e.contains("state.json.lock"), "{e}");
    let mut dry = Controller::read_only(Options::new(dir.path())).unwrap();
    let r = dry.reconcile(true).unwrap();
    assert_eq!(ips(&r)["default/a"], [ip("10.0.0.1")]);
    // It writes nothing, even when asked to.
    write(dir.path(), "svc.yaml", &services(&["a", "b", "c", "new"]));
    let before = state(dir.path());
    let e = dry.reconcile(false).unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(state(dir.path()), before);
    // Another class has its own file and lock.
    let other = Options {
        load_balancer_class: Some("x".into()),
        ..Options::new(dir.path())
    };
    Controller::new(other).unwrap();
    drop(first);
    let r = once(dir.path());
    assert_eq!(ips(&r)["default/a"], [ip("10.0.0.1")]);
}

/// A state file reached through a symlink (a persistent volume) is written
/// through it, and shares its lock with every other path to it.
#[test]
fn a_symlinked_state_file_is_written_through_the_link() {
    let dir = held();
    let persist = tempfile::tempdir().unwrap();
    let real = persist.path().join("state.json");
    std::fs::rename(dir.path().join(".lb/state.json"), &real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join(".lb/state.json")).unwrap();
    write(dir.path(), "svc.yaml", &services(&["a", "b", "c", "d"]));
    let r = once(dir.path());
    assert_eq!(ips(&r)["default/a"], [ip("10.0.0.1")], "read through the link");
    let link = std::fs::symlink_metadata(dir.path().join(".lb/state.json")).unwrap();
    assert!(link.file_type().is_symlink(), "the link stays a link");
    assert!(
        std::fs::read_to_string(&real).unwrap().contains("default/d"),
        "written through"
    );
    // Another path to the same file meets the same lock.
    let other = persist.path().join("other-link.json");
    std::os::unix::fs::symlink(&real, &other).unwrap();
    let first = Controller::new(Options::new(dir.path())).unwrap();
    let via_other = Options {
        state_file: Some(other),
        ..Options::new(dir.path())
    };
    let e = Controller::new(via_other).unwrap_err().to_string();
    assert!(e.contains("in use by another lb-controller"), "{e}");
    drop(first);
}

/// A lock file removed while a controller holds it (another may now take
/// a new one) stops its writes; a lock path that is not a regular file is
/// refused rather than opened (a fifo would block); a --state-file whose
/// directory does not exist is refused.
#[test]
fn the_lock_and_the_state_path_are_checked() {
    let dir = held();
    let mut c = Controller::new(Options::new(dir.path())).unwrap();
    std::fs::remove_file(dir.path().join(".lb/state.json.lock")).unwrap();
    write(dir.path(), "svc.yaml", &services(&["a", "b", "c", "d"]));
    let e = c.reconcile(false).unwrap_err().to_string();
    assert!(e.contains("removed or replaced"), "{e}");
    assert!(!state(dir.path()).contains("default/d"));
    drop(c);
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join(".lb/state.json.lock"))
        .status()
        .unwrap();
    assert!(status.success());
    let e = Controller::new(Options::new(dir.path())).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let typo = Options {
        state_file: Some(dir.path().join("no-such-dir/state.json")),
        ..Options::new(dir.path())
    };
    let e = Controller::new(typo).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert!(!dir.path().join("no-such-dir").exists());
}

/// Every pool gone at once (a pruned directory, an uninstalled chart):
/// like MetalLB, nothing is released or given out until a pool exists.
#[test]
fn no_pool_at_all_keeps_every_address() {
    let dir = held();
    std::fs::remove_file(dir.path().join("pool.yaml")).unwrap();
    let r = once(dir.path());
    assert_eq!(
        ips(&r).into_values().collect::<Vec<_>>(),
        [vec![ip("10.0.0.1")], vec![ip("10.0.0.2")], vec![ip("10.0.0.3")]],
        "{r:#?}"
    );
    assert!(r.problems.iter().any(|p| p.message.contains("no address pool")));
    assert!(state(dir.path()).contains("10.0.0.3"));
}

/// Writes pools `a` (10.0.0.1-9, auto-assigned) and `b` (10.0.1.1-9, only
/// on request), a Service `x` and a Service `pinned` asking for 10.0.1.5;
/// returns what writes a pool's document again.
fn two_pools_and_a_pinned_service(dir: &std::path::Path) -> impl Fn(&str, &str) -> String {
    let pool = |name: &str, range: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}, namespace: metallb-system}}\nspec:\n  addresses: [{range}]\n  autoAssign: {}\n",
            name == "a"
        )
    };
    write(dir, "pa.yaml", &pool("a", "10.0.0.1-10.0.0.9"));
    write(dir, "pb.yaml", &pool("b", "10.0.1.1-10.0.1.9"));
    let pinned = service("pinned").replace(
        "  type: LoadBalancer\n",
        "  type: LoadBalancer\n  loadBalancerIP: 10.0.1.5\n",
    );
    write(dir, "svc.yaml", &(service("x") + "---\n" + &pinned));
    pool
}

/// Pools deleted one after the other (`kubectl delete --all`) and put back
/// one after the other: no Service is released or moved — the pools go
/// together after one delay, and come back with the delay again.
#[test]
fn pools_deleted_and_restored_one_by_one_move_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pool = two_pools_and_a_pinned_service(dir.path());
    let options = || Options {
        release_delay: std::time::Duration::from_millis(300),
        ..Options::new(dir.path())
    };
    let mut c = Controller::new(options()).unwrap();
    let before = ips(&c.reconcile(false).unwrap());
    assert_eq!(before["default/pinned"], [ip("10.0.1.5")]);
    // Deleted a few ms apart.
    std::fs::remove_file(dir.path().join("pa.yaml")).unwrap();
    c.reconcile(false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::remove_file(dir.path().join("pb.yaml")).unwrap();
    c.reconcile(false).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(280));
    // a's delay alone has passed, not b's: both are still in force.
    assert_eq!(ips(&c.reconcile(false).unwrap()), before);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Both gone: no pool at all, everything kept.
    assert_eq!(ips(&c.reconcile(false).unwrap()), before);
    // Back one by one: a first.
    std::thread::sleep(std::time::Duration::from_millis(500));
    write(dir.path(), "pa.yaml", &pool("a", "10.0.0.1-10.0.0.9"));
    assert_eq!(ips(&c.reconcile(false).unwrap()), before, "b's holder waits for b");
    write(dir.path(), "pb.yaml", &pool("b", "10.0.1.1-10.0.1.9"));
    assert_eq!(ips(&c.reconcile(false).unwrap()), before);
    assert_eq!(ips(&c.reconcile(false).unwrap()), before);
}

/// Pools deleted together and put back one by one before their delay ran
/// out: the pools still missing when one comes back get the delay again,
/// counted from that return (not from the deletion).
#[test]
fn a_pool_back_within_the_delay_gives_the_others_the_delay_again() {
    let dir = tempfile::tempdir().unwrap();
    let pool = two_pools_and_a_pinned_service(dir.path());
    let options = || Options {
        release_delay: std::time::Duration::from_millis(400),
        ..Options::new(dir.path())
    };
    let mut c = Controller::new(options()).unwrap();
    let before = ips(&c.reconcile(false).unwrap());
    assert_eq!(before["default/pinned"], [ip("10.0.1.5")]);
    std::fs::remove_file(dir.path().join("pa.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("pb.yaml")).unwrap();
    c.reconcile(false).unwrap();
    // a is back 250 ms after the deletion, b 250 ms after a: past the
    // deletion's delay, within the delay of a's return.
    std::thread::sleep(std::time::Duration::from_millis(250));
    write(dir.path(), "pa.yaml", &pool("a", "10.0.0.1-10.0.0.9"));
    assert_eq!(ips(&c.reconcile(false).unwrap()), before);
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(ips(&c.reconcile(false).unwrap()), before, "b's holder waits for b");
    write(dir.path(), "pb.yaml", &pool("b", "10.0.1.1-10.0.1.9"));
    assert_eq!(ips(&c.reconcile(false).unwrap()), before);
}
