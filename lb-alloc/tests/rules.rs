//! One test per allocation rule (MetalLB semantics, reference/metallb.md §2).

use std::net::IpAddr;

use lb_alloc::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(name: &str, addrs: &[&str]) -> Pool {
    Pool::new(name, addrs.iter().map(|a| a.parse().unwrap()).collect())
}

fn pools(ps: Vec<Pool>) -> PoolSet {
    let (set, errs) = PoolSet::build(ps);
    assert!(errs.is_empty(), "{errs:?}");
    set
}

fn svc(name: &str) -> Request {
    Request::new("default", name)
}

fn tcp(port: u16) -> Port {
    Port {
        protocol: Protocol::Tcp,
        port,
    }
}

fn ips(r: &ServiceResult) -> Vec<String> {
    r.ips().iter().map(|i| i.to_string()).collect()
}

fn pending(r: &ServiceResult) -> &Reason {
    match &r.outcome {
        Outcome::Pending(r) => r,
        o => panic!("expected pending, got {o:?}"),
    }
}

fn one(a: &mut Allocator, p: &PoolSet, reqs: &[Request]) -> Vec<ServiceResult> {
    a.sync(p, reqs).results
}

#[test]
fn lowest_free_in_configuration_order() {
    let p = pools(vec![pool("a", &["10.0.0.10-10.0.0.11", "10.0.0.1/32"])]);
    let mut a = Allocator::new();
    let r = one(&mut a, &p, &[svc("s1"), svc("s2"), svc("s3"), svc("s4")]);
    assert_eq!(ips(&r[0]), ["10.0.0.10"]);
    assert_eq!(ips(&r[1]), ["10.0.0.11"]);
    assert_eq!(ips(&r[2]), ["10.0.0.1"]);
    assert!(matches!(pending(&r[3]), Reason::Exhausted { .. }));
    assert!(
        pending(&r[3])
            .to_string()
            .contains("no available IPv4 address in pool(s) a")
    );
}

#[test]
fn network_address_is_allocated_like_metallb() {
    let p = pools(vec![pool("a", &["1.2.3.0/31"])]);
    let r = one(&mut Allocator::new(), &p, &[svc("s")]);
    assert_eq!(ips(&r[0]), ["1.2.3.0"]);
}

#[test]
fn avoid_buggy_ips() {
    let p = pools(vec![pool("a", &["10.0.0.254-10.0.1.1"]).with_avoid_buggy_ips(true)]);
    let mut a = Allocator::new();
    let r = one(&mut a, &p, &[svc("s1"), svc("s2"), svc("s3")]);
    assert_eq!(ips(&r[0]), ["10.0.0.254"]);
    assert_eq!(ips(&r[1]), ["10.0.1.1"]);
    assert!(matches!(pending(&r[2]), Reason::Exhausted { .. }));
    // Asking for a buggy address fails: it is outside the pool.
    let mut req = svc("x");
    req.requested_ips = vec![ip("10.0.1.0")];
    let r = one(&mut Allocator::new(), &p, &[req]);
    assert!(matches!(pending(&r[0]), Reason::BuggyIp { .. }));
}

#[test]
fn turning_on_avoid_buggy_ips_evicts_holders_of_dot_zero() {
    let off = pools(vec![pool("a", &["10.0.0.0/30"])]);
    let on = pools(vec![pool("a", &["10.0.0.0/30"]).with_avoid_buggy_ips(true)]);
    let mut a = Allocator::new();
    assert_eq!(ips(&one(&mut a, &off, &[svc("s")])[0]), ["10.0.0.0"]);
    let r = &one(&mut a, &on, &[svc("s")])[0];
    assert_eq!(ips(r), ["10.0.0.1"]);
    assert!(r.changed);
    let (lost, why) = r.evicted.as_ref().unwrap();
    assert_eq!(lost, &[ip("10.0.0.0")]);
    assert!(matches!(why, Reason::BuggyIp { .. }));
}

#[test]
fn auto_assign_false_only_by_name_or_address() {
    let p = pools(vec![pool("manual", &["10.0.0.0/30"]).with_auto_assign(false)]);
    let mut by_pool = svc("by-pool");
    by_pool.requested_pool = Some("manual".into());
    let mut by_ip = svc("by-ip");
    by_ip.requested_ips = vec![ip("10.0.0.3")];
    let r = one(&mut Allocator::new(), &p, &[svc("auto"), by_pool, by_ip]);
    assert_eq!(pending(&r[0]), &Reason::NoEligiblePool);
    assert_eq!(ips(&r[1]), ["10.0.0.0"]);
    assert_eq!(ips(&r[2]), ["10.0.0.3"]);
}

#[test]
fn priority_pools_first_then_spill_to_the_next_then_general() {
    let prio = |n| ServiceAllocation {
        priority: Some(n),
        ..Default::default()
    };
    let p = pools(vec![
        pool("general", &["10.0.9.0/32"]),
        pool("p20", &["10.0.2.0/32"]).with_allocation(prio(20)),
        pool("p10", &["10.0.1.0/32"]).with_allocation(prio(10)),
    ]);
    let r = one(&mut Allocator::new(), &p, &[svc("a"), svc("b"), svc("c"), svc("d")]);
    assert_eq!(ips(&r[0]), ["10.0.1.0"]);
    assert_eq!(ips(&r[1]), ["10.0.2.0"]);
    assert_eq!(ips(&r[2]), ["10.0.9.0"]);
    assert_eq!(
        pending(&r[3]).to_string(),
        "no available IPv4 address in pool(s) p10, p20, general"
    );
}

#[test]
fn general_pools_are_tried_by_name_not_at_random() {
    let p = pools(vec![pool("zz", &["10.0.2.0/32"]), pool("aa", &["10.0.1.0/32"])]);
    for _ in 0..5 {
        assert_eq!(ips(&one(&mut Allocator::new(), &p, &[svc("a")])[0]), ["10.0.1.0"]);
    }
}

#[test]
fn namespace_and_label_restricted_pools() {
    let team = ServiceAllocation {
        priority: Some(1),
        namespaces: ["team-a".to_string()].into(),
        service_selectors: vec![LabelSelector::from_labels([("tier", "web")])],
        ..Default::default()
    };
    let p = pools(vec![
        pool("team", &["10.0.1.0/30"]).with_allocation(team),
        pool("rest", &["10.0.9.0/30"]),
    ]);
    let mut web = Request::new("team-a", "web");
    web.labels.insert("tier".into(), "web".into());
    let db = Request::new("team-a", "db");
    let mut other = Request::new("team-b", "web");
    other.labels.insert("tier".into(), "web".into());
    let mut sneaky = Request::new("team-b", "x");
    sneaky.requested_pool = Some("team".into());
    let r = one(&mut Allocator::new(), &p, &[web, db, other, sneaky]);
    assert_eq!(ips(&r[0]), ["10.0.1.0"]);
    assert_eq!(ips(&r[1]), ["10.0.9.0"]);
    assert_eq!(ips(&r[2]), ["10.0.9.1"]);
    assert_eq!(pending(&r[3]), &Reason::PoolDoesNotAdmit("team".into()));
}

#[test]
fn namespace_selectors_use_namespace_labels() {
    let gold = ServiceAllocation {
        namespace_selectors: vec![LabelSelector::from_labels([("tier", "gold")])],
        ..Default::default()
    };
    let p = pools(vec![pool("gold", &["10.0.1.0/30"]).with_allocation(gold)]);
    let mut in_gold = Request::new("shop", "a");
    in_gold.namespace_labels.insert("tier".into(), "gold".into());
    let r = one(&mut Allocator::new(), &p, &[in_gold, Request::new("shop", "b")]);
    assert_eq!(ips(&r[0]), ["10.0.1.0"]);
    assert_eq!(pending(&r[1]), &Reason::NoEligiblePool);
}

#[test]
fn requested_addresses_are_checked() {
    let p = pools(vec![
        pool("a", &["10.0.0.0/24", "fc00::/120"]),
        pool("b", &["10.0.1.0/24"]),
    ]);
    let req = |name: &str, list: &[&str]| {
        let mut r = svc(name);
        r.requested_ips = list.iter().map(|s| ip(s)).collect();
        r
    };
    let mut in_other_pool = req("pool", &["10.0.1.5"]);
    in_other_pool.requested_pool = Some("a".into());
    let mut dual = req("dual", &["10.0.0.7", "fc00::7"]);
    dual.cluster_families = vec![Family::V4, Family::V6];
    dual.policy = FamilyPolicy::RequireDualStack;
    let mut split = req("split", &["10.0.1.9", "fc00::9"]);
    split.cluster_families = vec![Family::V4, Family::V6];
    split.policy = FamilyPolicy::RequireDualStack;
    let r = one(
        &mut Allocator::new(),
        &p,
        &[
            req("ok", &["10.0.0.5"]),
            req("outside", &["192.0.2.1"]),
            req("v6-on-v4", &["fc00::5"]),
            req("two-v4", &["10.0.0.8", "10.0.0.9"]),
            req("three", &["10.0.0.1", "10.0.0.2", "fc00::1"]),
            in_other_pool,
            dual,
            split,
        ],
    );
    assert_eq!(ips(&r[0]), ["10.0.0.5"]);
    assert_eq!(pending(&r[1]), &Reason::NotInAnyPool(ip("192.0.2.1")));
    assert_eq!(pending(&r[2]), &Reason::RequestedWrongFamily(ip("fc00::5")));
    assert!(matches!(pending(&r[3]), Reason::RequestedSameFamily(..)));
    assert_eq!(pending(&r[4]), &Reason::TooManyRequested(3));
    assert!(matches!(pending(&r[5]), Reason::NotInRequestedPool { .. }));
    assert_eq!(ips(&r[6]), ["10.0.0.7", "fc00::7"]);
    assert!(matches!(pending(&r[7]), Reason::DifferentPools { .. }));
}

#[test]
fn conflict_over_a_requested_address_goes_to_the_older_service() {
    let p = pools(vec![pool("a", &["10.0.0.0/24"])]);
    let mut young = Request::new("default", "aaa-young");
    young.requested_ips = vec![ip("10.0.0.9")];
    young.created = Some(200);
    let mut old = Request::new("default", "zzz-old");
    old.requested_ips = vec![ip("10.0.0.9")];
    old.created = Some(100);
    let r = one(&mut Allocator::new(), &p, &[young, old]);
    assert_eq!(ips(&r[1]), ["10.0.0.9"]);
    let why = pending(&r[0]);
    assert!(
        matches!(why, Reason::InUse { by, conflict: Conflict::NoSharingKey, .. } if by.to_string() == "default/zzz-old")
    );
    assert!(why.to_string().contains("10.0.0.9 is in use by default/zzz-old"));
}

#[test]
fn a_valid_holder_is_never_displaced_by_a_newcomer() {
    let p = pools(vec![pool("a", &["10.0.0.0/24"])]);
    let mut a = Allocator::new();
    let mut holder = svc("zzz");
    holder.created = Some(500);
    one(&mut a, &p, &[holder.clone()]);
    let mut grabber = svc("aaa");
    grabber.created = Some(1);
    grabber.requested_ips = vec![ip("10.0.0.0")];
    let r = one(&mut a, &p, &[holder.clone(), grabber.clone()]);
    assert_eq!(ips(&r[0]), ["10.0.0.0"]);
    assert!(matches!(pending(&r[1]), Reason::InUse { .. }));
    // Same after a restart from status.
    holder.current_ips = vec![ip("10.0.0.0")];
    let r = one(&mut Allocator::new(), &p, &[grabber, holder]);
    assert_eq!(ips(&r[1]), ["10.0.0.0"]);
    assert!(!r[1].changed);
    assert!(matches!(pending(&r[0]), Reason::InUse { .. }));
}

#[test]
fn requested_pool_change_moves_the_service() {
    let p = pools(vec![pool("a", &["10.0.0.0/30"]), pool("b", &["10.0.1.0/30"])]);
    let mut a = Allocator::new();
    let mut s = svc("s");
    assert_eq!(ips(&one(&mut a, &p, &[s.clone()])[0]), ["10.0.0.0"]);
    s.requested_pool = Some("b".into());
    let r = &one(&mut a, &p, &[s.clone()])[0];
    assert_eq!(ips(r), ["10.0.1.0"]);
    assert_eq!(r.evicted.as_ref().unwrap().1, Reason::PoolChanged("b".into()));
    s.requested_pool = Some("nope".into());
    assert_eq!(pending(&one(&mut a, &p, &[s])[0]), &Reason::UnknownPool("nope".into()));
}

#[test]
fn sharing_same_key_disjoint_ports() {
    let p = pools(vec![pool("a", &["10.0.0.0/30"])]);
    let share = |name: &str, key: &str, ports: &[Port]| {
        let mut r = svc(name);
        r.sharing_key = Some(key.into());
        r.ports = ports.to_vec();
        r
    };
    let dns_udp = Port {
        protocol: Protocol::Udp,
        port: 53,
    };
    let r = one(
        &mut Allocator::new(),
        &p,
        &[
            share("a-http", "k", &[tcp(80)]),
            share("b-https", "k", &[tcp(443)]),
            share("c-http-again", "k", &[tcp(80)]),
            share("d-other-key", "j", &[tcp(22)]),
            share("e-dns-tcp", "k", &[tcp(53)]),
            share("f-dns-udp", "k", &[dns_udp]),
            svc("g-no-key"),
        ],
    );
    assert_eq!(ips(&r[0]), ["10.0.0.0"]);
    assert_eq!(ips(&r[1]), ["10.0.0.0"]);
    assert_eq!(ips(&r[2]), ["10.0.0.1"], "port 80 collides, so the next address");
    assert_eq!(ips(&r[3]), ["10.0.0.2"]);
    assert_eq!(ips(&r[4]), ["10.0.0.0"]);
    assert_eq!(ips(&r[5]), ["10.0.0.0"], "UDP/53 and TCP/53 may share");
    assert_eq!(ips(&r[6]), ["10.0.0.3"]);
}

#[test]
fn sharing_needs_equal_backend_keys() {
    let p = pools(vec![pool("a", &["10.0.0.0/31"])]);
    let mut cluster = svc("a");
    cluster.sharing_key = Some("k".into());
    cluster.ports = vec![tcp(80)];
    let mut local = svc("b");
    local.sharing_key = Some("k".into());
    local.ports = vec![tcp(81)];
    local.backend_key = "app=web".into();
    local.requested_ips = vec![ip("10.0.0.0")];
    let r = one(&mut Allocator::new(), &p, &[cluster, local]);
    assert!(matches!(
        pending(&r[1]),
        Reason::InUse {
            conflict: Conflict::BackendMismatch,
            ..
        }
    ));
}

#[test]
fn a_changed_sharing_key_reallocates_when_others_share() {
    let p = pools(vec![pool("a", &["10.0.0.0/30"])]);
    let mut a = Allocator::new();
    let mut x = svc("x");
    x.sharing_key = Some("k".into());
    x.ports = vec![tcp(80)];
    let mut y = svc("y");
    y.sharing_key = Some("k".into());
    y.ports = vec![tcp(443)];
    let r = one(&mut a, &p, &[x.clone(), y.clone()]);
    assert_eq!(ips(&r[0]), ips(&r[1]));
    y.sharing_key = Some("other".into());
    let r = one(&mut a, &p, &[x.clone(), y.clone()]);
    assert_eq!(ips(&r[0]), ["10.0.0.0"]);
    assert_eq!(ips(&r[1]), ["10.0.0.1"]);
    assert!(matches!(
        r[1].evicted,
        Some((
            _,
            Reason::InUse {
                conflict: Conflict::KeyMismatch,
                ..
            }
        ))
    ));
    // A sole owner may change its key in place.
    y.sharing_key = Some("third".into());
    assert!(!one(&mut a, &p, &[x, y])[1].changed);
}

#[test]
fn require_dual_stack_takes_both_from_one_pool() {
    let p = pools(vec![
        pool("v4only", &["10.0.0.0/30"]),
        pool("v6only", &["fc00::/126"]),
        pool("zdual", &["10.0.1.0/30", "fc01::/126"]),
    ]);
    let mut s = svc("s");
    s.cluster_families = vec![Family::V6, Family::V4];
    s.policy = FamilyPolicy::RequireDualStack;
    let mut single = svc("single");
    single.policy = FamilyPolicy::RequireDualStack;
    let r = one(&mut Allocator::new(), &p, &[s, single]);
    assert_eq!(ips(&r[0]), ["10.0.1.0", "fc01::"]);
    let Outcome::Assigned(a) = &r[0].outcome else {
        panic!("{:?}", r[0].outcome)
    };
    assert_eq!((a.ips.as_slice(), a.pool.as_str()), (r[0].ips(), "zdual"));
    assert_eq!(pending(&r[1]), &Reason::NotEnoughClusterIps);
}

#[test]
fn prefer_dual_stack_falls_back_to_primary_then_secondary() {
    let p = pools(vec![pool("a-v6", &["fc00::/127"]), pool("b-v4", &["10.0.0.0/32"])]);
    let pref = |name: &str, primary: Family| {
        let mut r = svc(name);
        r.cluster_families = vec![primary, primary.other()];
        r.policy = FamilyPolicy::PreferDualStack;
        r
    };
    let r = one(
        &mut Allocator::new(),
        &p,
        &[pref("1", Family::V4), pref("2", Family::V4), pref("3", Family::V4)],
    );
    assert_eq!(ips(&r[0]), ["10.0.0.0"], "no pool has both: primary family");
    assert_eq!(
        r[0].warnings,
        vec![Reason::SecondFamilyUnavailable(Family::V6, "b-v4".into())]
    );
    assert_eq!(ips(&r[1]), ["fc00::"], "primary exhausted: secondary");
    assert_eq!(ips(&r[2]), ["fc00::1"]);
}

#[test]
fn dual_stack_pool_changes() {
    let single = pools(vec![pool("a", &["10.0.0.0/30"])]);
    let dual = pools(vec![pool("a", &["10.0.0.0/30", "fc00::/126"])]);
    let dual_and_new = pools(vec![
        pool("a", &["10.0.0.0/30"]),
        pool("new", &["10.0.5.0/30", "fc05::/126"]),
    ]);
    let mut s = svc("s");
    s.cluster_families = vec![Family::V4, Family::V6];
    s.policy = FamilyPolicy::PreferDualStack;
    let mut a = Allocator::new();
    assert_eq!(ips(&one(&mut a, &single, &[s.clone()])[0]), ["10.0.0.0"]);
    // A single-stack pool that becomes dual adds the second address.
    let r = &one(&mut a, &dual, &[s.clone()])[0];
    assert_eq!(ips(r), ["10.0.0.0", "fc00::"]);
    assert!(r.evicted.is_none());
    // A dual pool that becomes single: the IPv6 address is gone, re-allocated single.
    let r = &one(&mut a, &single, &[s.clone()])[0];
    assert_eq!(ips(r), ["10.0.0.0"]);
    // A new dual pool does not attract a Service that holds an address.
    let r = &one(&mut a, &dual_and_new, &[s.clone()])[0];
    assert_eq!(ips(r), ["10.0.0.0"]);
    assert!(!r.changed);
}

/// A family's range taken out of a dual-stack pool: a PreferDualStack
/// Service keeps its other address where it is (it does not move to the
/// lowest free one), whichever family goes, and says why it lost the one.
#[test]
fn a_family_leaving_the_pool_keeps_the_other_address_in_place() {
    let dual = pools(vec![pool("a", &["10.0.0.0/29", "fc00::/125"])]);
    let v4 = pools(vec![pool("a", &["10.0.0.0/29"])]);
    let v6 = pools(vec![pool("a", &["fc00::/125"])]);
    let mut required = svc("r");
    required.cluster_families = vec![Family::V4, Family::V6];
    required.policy = FamilyPolicy::RequireDualStack;
    required.created = Some(1);
    let mut preferred = svc("p");
    preferred.cluster_families = vec![Family::V4, Family::V6];
    preferred.policy = FamilyPolicy::PreferDualStack;
    preferred.created = Some(2);
    for (without, kept) in [(&v4, "10.0.0.1"), (&v6, "fc00::1")] {
        let mut a = Allocator::new();
        let r = one(&mut a, &dual, &[required.clone(), preferred.clone()]);
        assert_eq!(ips(&r[0]), ["10.0.0.0", "fc00::"]);
        assert_eq!(ips(&r[1]), ["10.0.0.1", "fc00::1"]);
        let r = one(&mut a, without, &[required.clone(), preferred.clone()]);
        // r needs both families: it waits.
        let _ = pending(&r[0]);
        assert_eq!(ips(&r[1]), [kept], "p keeps its {kept}");
        let (lost, why) = r[1].evicted.as_ref().expect("the other family is released");
        assert_eq!(lost.len(), 1);
        assert!(matches!(why, Reason::NotInAnyPool(_)), "{why}");
    }
}

#[test]
fn pending_services_get_addresses_when_capacity_appears() {
    let p = pools(vec![pool("a", &["10.0.0.0/32"])]);
    let mut a = Allocator::new();
    let r = one(&mut a, &p, &[svc("first"), svc("second")]);
    assert!(matches!(pending(&r[1]), Reason::Exhausted { .. }));
    let report = a.sync(&p, &[svc("second")]);
    assert_eq!(
        report.released,
        vec![(ServiceKey::new("default", "first"), vec![ip("10.0.0.0")])]
    );
    assert_eq!(ips(&report.results[0]), ["10.0.0.0"]);
    // Or when a pool grows.
    let bigger = pools(vec![pool("a", &["10.0.0.0/31"])]);
    let r = one(&mut a, &bigger, &[svc("second"), svc("third")]);
    assert_eq!(ips(&r[0]), ["10.0.0.0"]);
    assert_eq!(ips(&r[1]), ["10.0.0.1"]);
}

#[test]
fn a_dual_stack_service_with_one_family_gets_the_second_when_it_appears() {
    let p = pools(vec![pool("a", &["10.0.0.0/32", "fc00::/127"])]);
    let mut dual = svc("dual");
    dual.cluster_families = vec![Family::V6, Family::V4];
    dual.policy = FamilyPolicy::PreferDualStack;
    let mut a = Allocator::new();
    // "dual" sorts after "a-v4", which takes the only IPv4 address.
    let r = one(&mut a, &p, &[svc("a-v4"), dual.clone()]);
    assert_eq!(ips(&r[1]), ["fc00::"]);
    // "a-v4" leaves: the address it freed completes "dual" in the same sync.
    let r = one(&mut a, &p, &[dual.clone()]);
    assert_eq!(ips(&r[0]), ["fc00::", "10.0.0.0"]);
    assert!(r[0].changed && r[0].warnings.is_empty());

    // Sharing that becomes possible also counts, even when the sharer
    // changes after "a-dual" was looked at in the same sync.
    let mut a = Allocator::new();
    let mut keyed = dual.clone();
    keyed.name = "a-dual".into();
    keyed.sharing_key = Some("k".into());
    keyed.ports = vec![tcp(443)];
    one(&mut a, &p, &[svc("b-v4")]);
    let r = one(&mut a, &p, &[keyed.clone(), svc("b-v4")]);
    assert_eq!(ips(&r[0]), ["fc00::"]);
    let mut sharer = svc("b-v4");
    sharer.sharing_key = Some("k".into());
    sharer.ports = vec![tcp(80)];
    let r = one(&mut a, &p, &[keyed.clone(), sharer.clone()]);
    assert_eq!(ips(&r[0]), ["fc00::", "10.0.0.0"]);
    assert_eq!(ips(&r[1]), ["10.0.0.0"]);
    // A restart from that status changes nothing.
    let mut restarted = [keyed, sharer];
    for (q, res) in restarted.iter_mut().zip(&r) {
        q.current_ips = res.ips().to_vec();
    }
    let again = one(&mut Allocator::new(), &p, &restarted);
    assert_eq!(ips(&again[0]), ["fc00::", "10.0.0.0"]);
    assert_eq!(ips(&again[1]), ["10.0.0.0"]);
}

#[test]
fn removed_pool_evicts_and_reallocates() {
    let both = pools(vec![pool("a", &["10.0.0.0/30"]), pool("b", &["10.0.1.0/30"])]);
    let only_b = pools(vec![pool("b", &["10.0.1.0/30"])]);
    let mut a = Allocator::new();
    assert_eq!(ips(&one(&mut a, &both, &[svc("s")])[0]), ["10.0.0.0"]);
    let r = &one(&mut a, &only_b, &[svc("s")])[0];
    assert_eq!(ips(r), ["10.0.1.0"]);
    assert_eq!(
        r.evicted,
        Some((vec![ip("10.0.0.0")], Reason::NotInAnyPool(ip("10.0.0.0"))))
    );
    let r = &one(&mut a, &PoolSet::default(), &[svc("s")])[0];
    assert_eq!(pending(r), &Reason::NoPools);
}

#[test]
fn renamed_pool_keeps_the_address() {
    let old = pools(vec![pool("old", &["10.0.0.0/30"])]);
    let new = pools(vec![pool("new", &["10.0.0.0/29"])]);
    let mut a = Allocator::new();
    one(&mut a, &old, &[svc("x"), svc("y")]);
    let r = one(&mut a, &new, &[svc("x"), svc("y"), svc("z")]);
    assert_eq!(ips(&r[0]), ["10.0.0.0"]);
    assert!(!r[0].changed && !r[1].changed);
    assert_eq!(ips(&r[2]), ["10.0.0.2"]);
    assert_eq!(a.assignment("default", "x").unwrap().pool, "new");
}

#[test]
fn restart_from_status_changes_nothing() {
    let p = pools(vec![pool("a", &["10.0.0.0/24"]), pool("b", &["fc00::/64"])]);
    let mut reqs: Vec<Request> = (0..50).map(|i| svc(&format!("s{i:02}"))).collect();
    reqs[7].cluster_families = vec![Family::V6];
    reqs[9].requested_ips = vec![ip("10.0.0.200")];
    let mut a = Allocator::new();
    let first = a.sync(&p, &reqs);
    // Delete a few so the address space has holes, then add more.
    reqs.retain(|r| !["s03", "s04"].contains(&r.name.as_str()));
    reqs.push(svc("late"));
    let second = a.sync(&p, &reqs);
    assert!(
        second
            .results
            .iter()
            .filter(|r| r.service.name() != "late")
            .all(|r| !r.changed)
    );
    // Restart: a fresh allocator fed the status, requests in reverse order.
    for (r, res) in reqs.iter_mut().zip(&second.results) {
        r.current_ips = res.ips().to_vec();
    }
    reqs.reverse();
    let mut fresh = Allocator::new();
    let third = fresh.sync(&p, &reqs);
    for r in &third.results {
        assert!(!r.changed, "{} moved: {:?}", r.service, r.outcome);
        assert_eq!(
            Some(r.ips().to_vec()),
            a.assignment("default", r.service.name()).map(|x| x.ips)
        );
    }
    assert_eq!(first.results.len(), 50);
}

#[test]
fn other_load_balancer_classes_are_ignored() {
    let p = pools(vec![pool("a", &["10.0.0.0/30"])]);
    let mut theirs = svc("theirs");
    theirs.load_balancer_class = Some("other.io/lb".into());
    let r = one(&mut Allocator::new(), &p, &[theirs.clone(), svc("ours")]);
    assert!(matches!(r[0].outcome, Outcome::Ignored(Reason::OtherClass(_))));
    assert_eq!(ips(&r[1]), ["10.0.0.0"]);
    let mut mine = Allocator::with_class(Some("other.io/lb".into()));
    let r = one(&mut mine, &p, &[theirs, svc("ours")]);
    assert_eq!(ips(&r[0]), ["10.0.0.0"]);
    assert!(matches!(r[1].outcome, Outcome::Ignored(_)));
}

#[test]
fn counters_per_pool_and_family() {
    let p = pools(vec![
        pool("a", &["10.0.0.0/24", "fc00::/64"]).with_avoid_buggy_ips(true),
    ]);
    let mut a = Allocator::new();
    let mut v6 = svc("v6");
    v6.cluster_families = vec![Family::V6];
    let mut shared1 = svc("s1");
    shared1.sharing_key = Some("k".into());
    shared1.ports = vec![tcp(1)];
    let mut shared2 = svc("s2");
    shared2.sharing_key = Some("k".into());
    shared2.ports = vec![tcp(2)];
    one(&mut a, &p, &[v6, shared1, shared2, svc("x")]);
    let s = &a.pool_stats()[0];
    assert_eq!(s.total, [254, 1 << 64]);
    assert_eq!(s.in_use, [2, 1], "a shared address counts once");
    assert_eq!(s.available(Family::V4), 252);
}

/// A Service key reads back from the `namespace/name` it is shown as, and
/// nothing else is one.
#[test]
fn service_keys_parse_from_what_they_display() {
    let k = ServiceKey::new("team-a", "web");
    assert_eq!(k.to_string(), "team-a/web");
    assert_eq!(ServiceKey::parse("team-a/web"), Some(k.clone()));
    assert_eq!((k.namespace(), k.name()), ("team-a", "web"));
    for bad in ["", "web", "/web", "team-a/", "a/b/c", "/"] {
        assert_eq!(ServiceKey::parse(bad), None, "{bad:?}");
    }
}
