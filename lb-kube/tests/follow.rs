//! Following changes Service by Service (what cluster mode does with its
//! watches) ends exactly where reconciling the whole view each time ends:
//! the same addresses, the same pools, the same counts, after every step of
//! any sequence of Service creations, edits, deletions, status echoes,
//! other controllers' addresses and pool edits.

use std::collections::BTreeMap;

use lb_alloc::ServiceKey;
use lb_kube::controller::{Controller, Options, Report};
use lb_kube::objects;
use lb_kube::source::memory::{MemorySource, MemoryStatus};
use lb_kube::source::{HeldStatus, Snapshot, StatusSink as _};
use lb_kube::status::ServiceState;
use proptest::prelude::*;

fn object(yaml: &str) -> objects::Object {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    objects::decode(v).unwrap().unwrap()
}

/// How a Service looks in one step.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// A plain LoadBalancer Service.
    Plain,
    /// Asks for pool `q` (not auto-assigned).
    PoolQ,
    /// Shares its address under key `k`.
    Shared,
    /// Another loadBalancerClass.
    OtherClass,
    /// Not a LoadBalancer.
    ClusterIp,
    /// The deprecated annotation (a warning, nothing else).
    Deprecated,
    /// A label (no pool selects on it).
    Labelled,
    /// Asks for 10.0.0.3.
    Requested,
}

#[derive(Debug, Clone)]
enum Op {
    /// Creates or edits Service `i`; created at second `c` (kept on edits).
    Put(usize, Shape, u8),
    Delete(usize),
    /// Another controller shows address `n` of pool p (or outside it) for
    /// Service `i`.
    Foreign(usize, u8),
    /// Pool p's size.
    Pool(u8),
}

const NAMES: usize = 8;

#[derive(Debug, Clone, Default)]
struct Model {
    services: BTreeMap<usize, (Shape, usize)>,
    foreign: BTreeMap<usize, u8>,
    pool_len: u8,
    /// The controller's loadBalancerClass (`z`: one another controller's
    /// class sorts before, so it wins contested addresses).
    class: Option<&'static str>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Put(i, shape, c) => {
                let created = self.services.get(&i).map_or(usize::from(c), |s| s.1);
                self.services.insert(i, (shape, created));
            }
            Op::Delete(i) => {
                self.services.remove(&i);
            }
            Op::Foreign(i, n) => {
                self.foreign.insert(i, n);
            }
            Op::Pool(n) => self.pool_len = n,
        }
    }

    /// The view, with the status `echo` shows for this controller's
    /// Services (what the API server would send back after the writes).
    fn view(&self, echo: &BTreeMap<ServiceKey, ServiceState>) -> Snapshot {
        let mut s = Snapshot::empty();
        let last = 1 + u32::from(self.pool_len.clamp(1, 12));
        s.objects.push((
            None,
            object(&format!(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: metallb-system}}\nspec: {{addresses: [10.0.0.1-10.0.0.{last}]}}\n"
            )),
        ));
        s.objects.push((
            None,
            object("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: q, namespace: metallb-system}\nspec: {addresses: [10.0.1.0/30], autoAssign: false}\n"),
        ));
        let own = self
            .class
            .map(|c| format!(", loadBalancerClass: {c}"))
            .unwrap_or_default();
        for (&i, &(shape, created)) in &self.services {
            let (kind, mut annotations, mut extra) = ("LoadBalancer", String::new(), own.clone());
            let mut labels = String::new();
            let kind = match shape {
                Shape::Plain => kind,
                Shape::PoolQ => {
                    annotations = "metallb.io/address-pool: q".into();
                    kind
                }
                Shape::Shared => {
                    annotations = "metallb.io/allow-shared-ip: k".into();
                    kind
                }
                Shape::OtherClass => {
                    extra = ", loadBalancerClass: example.com/other".into();
                    kind
                }
                Shape::ClusterIp => "ClusterIP",
                Shape::Deprecated => {
                    annotations = "metallb.universe.tf/allow-shared-ip: d".into();
                    kind
                }
                Shape::Labelled => {
                    labels = "tier: web".into();
                    kind
                }
                Shape::Requested => {
                    annotations = "metallb.io/loadBalancerIPs: 10.0.0.3".into();
                    kind
                }
            };
            s.objects.push((
                None,
                object(&format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default, uid: u{i}, \
                     creationTimestamp: '2026-01-01T00:{:02}:{:02}Z', annotations: {{{annotations}}}, labels: {{{labels}}}}}\n\
                     spec: {{type: {kind}, ports: [{{port: {port}}}]{extra}}}\n",
                    created / 60,
                    created % 60,
                    port = 80 + i,
                )),
            ));
        }
        for (key, state) in echo {
            s.status.entry(key.clone()).or_default().push(HeldStatus {
                class: self.class.map(str::to_owned),
                state: state.clone(),
            });
        }
        for (&i, &n) in &self.foreign {
            // Shown on Service i, for the other class (whatever it is now).
            let ip = if n < 16 {
                format!("10.0.0.{n}")
            } else {
                format!("10.9.0.{n}")
            };
            s.status
                .entry(ServiceKey::new("default", format!("s{i}")))
                .or_default()
                .push(HeldStatus {
                    class: Some("example.com/other".into()),
                    state: ServiceState {
                        ips: vec![ip.parse().unwrap()],
                        pool: String::new(),
                    },
                });
        }
        s
    }
}

fn op() -> impl Strategy<Value = Op> {
    let shape = prop_oneof![
        4 => Just(Shape::Plain),
        1 => Just(Shape::PoolQ),
        1 => Just(Shape::Shared),
        1 => Just(Shape::OtherClass),
        1 => Just(Shape::ClusterIp),
        1 => Just(Shape::Deprecated),
        1 => Just(Shape::Labelled),
        1 => Just(Shape::Requested),
    ];
    prop_oneof![
        8 => (0..NAMES, shape, 0u8..4).prop_map(|(i, s, c)| Op::Put(i, s, c)),
        2 => (0..NAMES).prop_map(Op::Delete),
        1 => (0..NAMES, 0u8..20).prop_map(|(i, n)| Op::Foreign(i, n)),
        1 => (1u8..10).prop_map(Op::Pool),
    ]
}

type Ctl = Controller<MemorySource, MemoryStatus>;

fn controller(deltas: bool, model: &Model) -> Ctl {
    let source = MemorySource::new(model.view(&BTreeMap::new()));
    let source = if deltas { source.with_deltas() } else { source };
    let options = Options {
        load_balancer_class: model.class.map(str::to_owned),
        ..Options::new("unused")
    };
    Controller::with(options, source, MemoryStatus::default())
}

/// One step: the changes, a reconcile, then the writes echoed back as the
/// API server's watch would, and a reconcile of that.
fn step(c: &mut Ctl, model: &Model) -> (Report, Report) {
    let view = model.view(c.sink().current());
    c.source_mut().set(view);
    let first = c.reconcile(false).unwrap();
    let view = model.view(c.sink().current());
    c.source_mut().set(view);
    let echo = c.reconcile(false).unwrap();
    (first, echo)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn following_services_one_by_one_ends_where_a_whole_reconcile_ends(
        steps in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..30),
        class in prop_oneof![Just(None), Just(Some("z"))],
    ) {
        let mut model = Model { pool_len: 4, class, ..Model::default() };
        let mut following = controller(true, &model);
        let mut whole = controller(false, &model);
        following.reconcile(false).unwrap();
        whole.reconcile(false).unwrap();
        for (n, ops) in steps.iter().enumerate() {
            // Several changes land before the controller looks: one delta.
            for op in ops {
                model.apply(op);
            }
            let (f1, f2) = step(&mut following, &model);
            let (w1, w2) = step(&mut whole, &model);
            prop_assert!(!w1.partial && !w2.partial);
            prop_assert_eq!(
                following.sink().current(),
                whole.sink().current(),
                "after step {} ({:?}); partial: {}, {}", n, ops, f1.partial, f2.partial
            );
            prop_assert_eq!((f2.assigned, f2.pending), (w2.assigned, w2.pending), "counts after step {}", n);
            let mut fp: Vec<String> = f2.problems.iter().map(ToString::to_string).collect();
            let mut wp: Vec<String> = w2.problems.iter().map(ToString::to_string).collect();
            fp.sort();
            wp.sort();
            prop_assert_eq!(fp, wp, "problems after step {}", n);
            // The echo of the writes needs no write: status shows what is held.
            prop_assert!(!following.unsaved() && !whole.unsaved());
        }
    }
}

/// The fast path is taken: a new Service (and the echo of its status) is
/// looked at alone; a pool edit or a deletion is a whole reconcile. Were
/// the fast path never taken, the property above would prove nothing.
#[test]
fn a_new_service_is_looked_at_alone_and_a_pool_edit_is_whole() {
    let mut model = Model {
        pool_len: 4,
        ..Model::default()
    };
    for i in 0..3 {
        model.apply(&Op::Put(i, Shape::Plain, i as u8));
    }
    let mut c = controller(true, &model);
    c.reconcile(false).unwrap();
    // The echo of the first writes.
    step(&mut c, &model);

    model.apply(&Op::Put(5, Shape::Plain, 9));
    let (new, echo) = step(&mut c, &model);
    assert!(new.partial, "a new Service alone: {new:?}");
    assert_eq!(new.services.len(), 1);
    assert_eq!(new.services[0].name, "s5");
    assert_eq!(new.services[0].ips, ["10.0.0.4".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!((new.assigned, new.pending), (4, 0));
    assert!(echo.partial && !c.unsaved(), "the echo of its status changes nothing");

    model.apply(&Op::Pool(2));
    let (edit, _) = step(&mut c, &model);
    assert!(!edit.partial, "a pool edit is whole");

    model.apply(&Op::Delete(5));
    let (gone, _) = step(&mut c, &model);
    assert!(!gone.partial, "a deletion is whole");
    assert!(!c.sink().current().contains_key(&ServiceKey::new("default", "s5")));
    assert!(!c.changed());
}
