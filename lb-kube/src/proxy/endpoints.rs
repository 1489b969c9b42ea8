//! Where a Service port's traffic goes: the endpoints its EndpointSlices
//! list, resolved through the Service's port names as kube-proxy does.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use lb_route::LoadBalance;

use crate::objects::{Object, ObjectRef};
use crate::source::Origin;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How fast a latency estimate forgets: an observation's weight halves
/// in about 7 s (ingress-nginx's and Finagle's 10 s time constant).
const DECAY: Duration = Duration::from_secs(10);

/// What a failed exchange counts as (at least): an endpoint that refuses
/// connections is drawn again only once this has decayed below what the
/// others cost.
const FAILURE: Duration = Duration::from_secs(1);

/// The endpoints of one Service port, with what the `ewma` balancer
/// knows of each.
#[derive(Debug, Default)]
pub struct Backends {
    addrs: Vec<SocketAddr>,
    /// One per address, in the same order; kept across swaps for the
    /// addresses that stay.
    loads: Vec<Arc<Load>>,
    next: AtomicUsize,
}

impl Backends {
    /// The endpoints, sorted.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the next request starts (endpoints are then tried from there
    /// on: a failed connect moves to the next one): the next in turn, or
    /// for `ewma` the cheaper at `now` ([`now`]) of two drawn with
    /// `random`.
    pub fn start(&self, how: LoadBalance, random: u64, now: u64) -> usize {
        match how {
            LoadBalance::Ewma if self.addrs.len() > 1 => {
                let len = self.addrs.len() as u64;
                let a = (random % len) as usize;
                // A second one, never the first.
                let b = (a + 1 + ((random >> 32) % (len - 1)) as usize) % self.addrs.len();
                if self.loads[b].cost(now) < self.loads[a].cost(now) {
                    b
                } else {
                    a
                }
            }
            _ => self.next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The endpoint `n` places after `start`, wrapping.
    pub fn at(&self, start: usize, n: usize) -> Option<SocketAddr> {
        let len = self.addrs.len();
        (len > 0).then(|| self.addrs[start.wrapping_add(n) % len])
    }

    /// A request sent at `now` to the endpoint `n` places after `start`:
    /// counted in flight until it is [`Busy::done`], forgotten or dropped.
    pub fn busy(&self, start: usize, n: usize, now: u64) -> Option<Busy> {
        let len = self.loads.len();
        (len > 0).then(|| Busy::new(self.loads[start.wrapping_add(n) % len].clone(), now))
    }
}

/// What an endpoint not yet heard from costs per request in flight to it
/// (in nanoseconds, as estimates are): more than any answer, so that it
/// takes one request at a time until it answers, yet finite, so that two
/// such endpoints still compare by their requests in flight.
const UNHEARD: f64 = 1e15;

/// One endpoint's load as the `ewma` balancer sees it: a latency
/// estimate that jumps to a slower answer at once and decays towards
/// faster ones (and towards zero while nothing is heard), and the
/// requests in flight.
#[derive(Debug, Default)]
pub struct Load {
    /// The estimate and when it was made (one lock: an estimate is never
    /// read with another one's time, and a peak is never overwritten by
    /// an answer that read the estimate before it).
    estimate: std::sync::Mutex<Estimate>,
    in_flight: AtomicU32,
}

/// A latency estimate in nanoseconds (0: nothing heard yet), made at
/// `stamp` ([`now`]).
#[derive(Debug, Default, Clone, Copy)]
struct Estimate {
    ewma: f64,
    stamp: u64,
}

impl Load {
    fn estimate(&self) -> std::sync::MutexGuard<'_, Estimate> {
        self.estimate.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What sending one more request here costs, at `now`: the decayed
    /// estimate times the requests in flight plus one.
    fn cost(&self, now: u64) -> f64 {
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed));
        let Estimate { ewma, stamp } = *self.estimate();
        if ewma == 0.0 {
            return UNHEARD * pending;
        }
        ewma * weight(stamp, now) * (pending + 1.0)
    }

    /// Takes in an exchange that took `took`, at `now`.
    fn observe(&self, took: Duration, now: u64) {
        let took = (took.as_nanos() as f64).max(1.0);
        let mut e = self.estimate();
        let w = weight(e.stamp, now);
        // Peak sensitive: a slower answer counts in full at once.
        e.ewma = if e.ewma == 0.0 || took > e.ewma * w {
            took
        } else {
            e.ewma * w + took * (1.0 - w)
        };
        e.stamp = now;
    }
}

/// The weight an estimate made at `then` keeps at `now` (decaying
/// towards 0 with [`DECAY`]).
fn weight(then: u64, now: u64) -> f64 {
    let age = now.saturating_sub(then) as f64;
    (-age / DECAY.as_nanos() as f64).exp()
}

/// Nanoseconds since the first call in this process: the balancer's clock.
pub fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A request in flight to one endpoint (see [`Backends::busy`]). Dropped
/// without [`Busy::done`] or [`Busy::forget`] (the client went away
/// first), the time it had waited counts as an answer: an endpoint that
/// hangs is seen to, however impatient its clients.
#[derive(Debug)]
pub struct Busy {
    load: Arc<Load>,
    since: u64,
    settled: bool,
}

impl Busy {
    fn new(load: Arc<Load>, now: u64) -> Self {
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            load,
            since: now,
            settled: false,
        }
    }

    /// The endpoint answered at `now` (the response head came): the time
    /// taken counts in its estimate. `failed`: it did not (refused,
    /// reset, a timeout), which counts as at least [`FAILURE`].
    pub fn done(mut self, failed: bool, now: u64) {
        let took = Duration::from_nanos(now.saturating_sub(self.since));
        let took = if failed { took.max(FAILURE) } else { took };
        self.load.observe(took, now);
        self.settled = true;
    }

    /// Nothing was learnt about the endpoint (the client's own fault).
    pub fn forget(mut self) {
        self.settled = true;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.settled {
            let now = now();
            self.load
                .observe(Duration::from_nanos(now.saturating_sub(self.since)), now);
        }
    }
}

/// A start for a round robin that differs between swaps and replicas.
fn start_offset() -> usize {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as usize
}

/// Every Service port's endpoints, by namespace, Service and port number
/// (nested, so that a request looks up borrowed names: no key is made).
#[derive(Debug, Default)]
pub struct Endpoints {
    map: HashMap<String, Services>,
}

/// One namespace's Services: their ports' endpoints.
type Services = HashMap<String, Vec<(u16, Arc<Backends>)>>;

impl Endpoints {
    /// The endpoints of the Services in `objects`, from the EndpointSlices
    /// in `slices`. A Service port takes the slice ports of its own name
    /// (unnamed with unnamed); endpoints that are ready (or do not say) are
    /// used; when none is, those still serving while terminating are (as
    /// kube-proxy falls back). FQDN slices and unparsable addresses are
    /// skipped.
    ///
    /// An endpoint that was in `previous` keeps its load (its latency
    /// estimate and the requests still in flight).
    pub fn build(
        objects: &[(Option<Origin>, Object)],
        slices: &BTreeMap<ObjectRef, Object>,
        previous: Option<&Endpoints>,
    ) -> Self {
        // Slices by (namespace, service).
        let mut by_service: HashMap<(&str, &str), Vec<&k8s_openapi::api::discovery::v1::EndpointSlice>> =
            HashMap::new();
        for (r, o) in slices {
            let Object::EndpointSlice(slice) = o else { continue };
            let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
                continue;
            };
            by_service
                .entry((r.namespace.as_str(), service.as_str()))
                .or_default()
                .push(slice);
        }
        let mut map: HashMap<String, Services> = HashMap::new();
        for (_, o) in objects {
            let Object::Service(svc) = o else { continue };
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let Some(name) = svc.metadata.name.as_deref() else {
                continue;
            };
            let Some(slices) = by_service.get(&(ns, name)) else {
                continue;
            };
            for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let Ok(number) = u16::try_from(port.port) else { continue };
                let wanted = port.name.as_deref().unwrap_or_default();
                let (mut ready, mut serving) = (Vec::new(), Vec::new());
                for slice in slices {
                    if slice.address_type == "FQDN" {
                        continue;
                    }
                    let target = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref().unwrap_or_default() == wanted);
                    let Some(target) = target.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else {
                        continue;
                    };
                    for ep in slice.endpoints.iter().flatten() {
                        let c = ep.conditions.as_ref();
                        let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
                        let is_serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
                        let list = match (is_ready, is_serving) {
                            (true, _) => &mut ready,
                            (false, true) => &mut serving,
                            _ => continue,
                        };
                        for a in &ep.addresses {
                            if let Ok(ip) = a.parse::<IpAddr>() {
                                list.push(SocketAddr::new(ip, target));
                            }
                        }
                    }
                }
                let mut addrs = if ready.is_empty() { serving } else { ready };
                // Sorted: the loads of the last build are found by search.
                addrs.sort();
                addrs.dedup();
                let before = previous.and_then(|p| p.get(ns, name, number));
                let loads = addrs
                    .iter()
                    .map(|a| {
                        before
                            .and_then(|b| b.addrs.binary_search(a).ok().map(|i| b.loads[i].clone()))
                            .unwrap_or_default()
                    })
                    .collect();
                // A random start: every swap (any EndpointSlice anywhere)
                // must not send the next requests to the first endpoint.
                let backends = Backends {
                    next: AtomicUsize::new(start_offset()),
                    addrs,
                    loads,
                };
                let ports = map
                    .entry(ns.to_owned())
                    .or_default()
                    .entry(name.to_owned())
                    .or_default();
                // A port listed twice: the last one, as a map would keep.
                ports.retain(|(p, _)| *p != number);
                ports.push((number, Arc::new(backends)));
            }
        }
        Self { map }
    }

    /// The endpoints of `namespace/service` port `port`, if it has any.
    pub fn get(&self, namespace: &str, service: &str, port: u16) -> Option<&Arc<Backends>> {
        self.map
            .get(namespace)?
            .get(service)?
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, b)| b)
            .filter(|b| !b.addrs.is_empty())
    }

    /// How many Service ports have endpoints.
    pub fn len(&self) -> usize {
        self.map
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .filter(|(_, b)| !b.addrs.is_empty())
            .count()
    }

    /// Whether no Service port has endpoints.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backends on 127.0.0.1..=n, port 80, nothing heard yet.
    fn backends(n: u8) -> Backends {
        let addrs: Vec<SocketAddr> = (1..=n).map(|i| SocketAddr::from(([127, 0, 0, i], 80))).collect();
        Backends {
            loads: addrs.iter().map(|_| Arc::default()).collect(),
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    fn draws() -> impl Iterator<Item = u64> {
        // Any spread of draws will do: a simple sequence, well mixed.
        (0..2000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    #[test]
    fn ewma_never_starts_at_the_costliest_endpoint_and_counts_requests_in_flight() {
        let b = backends(3);
        let t = now();
        for (i, ms) in [1, 2, 50].into_iter().enumerate() {
            b.loads[i].observe(Duration::from_millis(ms), t);
        }
        let picked: Vec<usize> = draws().map(|r| b.start(LoadBalance::Ewma, r, now())).collect();
        assert!(!picked.contains(&2), "the 50 ms endpoint was picked");
        assert!(picked.contains(&0) && picked.contains(&1));
        // Five requests waiting on a 1 ms endpoint: it costs 6 ms now,
        // more than a 2 ms one with none.
        let b = backends(2);
        for (i, ms) in [1, 2].into_iter().enumerate() {
            b.loads[i].observe(Duration::from_millis(ms), t);
        }
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 0));
        let held: Vec<Busy> = (0..5).filter_map(|_| b.busy(0, 0, now())).collect();
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 1));
        drop(held);
        assert_eq!(b.loads[0].in_flight.load(Ordering::Relaxed), 0);
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 0));
    }

    #[test]
    fn an_endpoint_not_heard_from_takes_one_request_at_a_time() {
        let b = backends(2);
        b.loads[0].observe(Duration::from_secs(5), now());
        // Endpoint 1 costs nothing until a request is in flight to it.
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 1));
        let first = b.busy(1, 0, now());
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 0));
        // Its answer sets its estimate: now the faster of the two.
        first.into_iter().for_each(|busy| busy.done(false, now()));
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 1));
    }

    /// A request the client gave up on still tells how long the endpoint
    /// kept it: a hung endpoint does not decay into the cheapest one.
    #[test]
    fn a_request_dropped_unanswered_counts_the_time_it_waited() {
        let b = backends(2);
        let t = now();
        b.loads[0].observe(Duration::from_micros(1), t);
        b.loads[1].observe(Duration::from_micros(1), t);
        let hung = b.busy(1, 0, t);
        std::thread::sleep(Duration::from_millis(20));
        drop(hung);
        assert!(b.loads[1].cost(now()) > 19e6, "{}", b.loads[1].cost(now()));
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 0));
        // One forgotten (the client's fault) teaches nothing.
        let c = backends(1);
        c.busy(0, 0, 0).into_iter().for_each(Busy::forget);
        assert_eq!(c.loads[0].cost(now()), 0.0);
        assert_eq!(c.loads[0].in_flight.load(Ordering::Relaxed), 0);
    }

    /// Endpoints not heard from still compare by what they have in flight.
    #[test]
    fn unheard_endpoints_compare_by_requests_in_flight() {
        let b = backends(2);
        let held: Vec<Busy> = (0..3).filter_map(|_| b.busy(0, 0, now())).collect();
        let one = b.busy(1, 0, now());
        assert!(draws().all(|r| b.start(LoadBalance::Ewma, r, now()) == 1));
        drop((held, one.map(Busy::forget)));
    }

    #[test]
    fn estimates_jump_to_slower_answers_and_decay_towards_faster_ones() {
        let l = Load::default();
        let t = 1_000_000_000;
        l.observe(Duration::from_millis(10), t);
        l.observe(Duration::from_millis(40), t);
        assert_eq!(l.cost(t), 40e6, "a slower answer counts in full");
        // Ten seconds later the 40 ms weigh e^-1; a 1 ms answer pulls the
        // estimate most of the way down.
        let later = t + DECAY.as_nanos() as u64;
        assert!((l.cost(later) - 40e6 / std::f64::consts::E).abs() < 1e3);
        l.observe(Duration::from_millis(1), later);
        let expected = 40e6 / std::f64::consts::E + 1e6 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((l.cost(later) - expected).abs() < 1e3, "{}", l.cost(later));
        // A failure counts as a second at least.
        let b = backends(1);
        b.busy(0, 0, now()).into_iter().for_each(|busy| busy.done(true, now()));
        assert!(b.loads[0].cost(now()) >= 0.99e9);
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = backends(3);
        let starts: Vec<usize> = (0..6).map(|i| b.start(LoadBalance::RoundRobin, i, 0)).collect();
        let addrs: Vec<_> = starts.iter().filter_map(|&s| b.at(s, 0)).collect();
        assert_eq!(addrs[..3], addrs[3..]);
        assert_eq!(addrs[..3].iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    }

    #[test]
    fn endpoints_that_stay_keep_their_load_across_a_swap() {
        let manifests = |ips: &[&str]| {
            let endpoints: String = ips.iter().map(|ip| format!("- addresses: [\"{ip}\"]\n")).collect();
            let text = format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\n\
                 spec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{endpoints}"
            );
            crate::source::file::parse_manifests(std::path::Path::new("/m/web.yaml"), &text)
        };
        let one = manifests(&["10.0.0.1", "10.0.0.2"]);
        assert!(one.problems.is_empty(), "{:?}", one.problems);
        let first = Endpoints::build(&one.objects, &one.endpoints, None);
        let b = first.get("shop", "web", 80).unwrap_or_else(|| panic!("{first:?}"));
        let in_flight = b.busy(1, 0, now());
        b.loads[1].observe(Duration::from_millis(7), now());
        let two = manifests(&["10.0.0.2", "10.0.0.3"]);
        let second = Endpoints::build(&two.objects, &two.endpoints, Some(&first));
        let c = second.get("shop", "web", 80).unwrap_or_else(|| panic!("{second:?}"));
        assert_eq!(
            c.addrs(),
            [
                SocketAddr::from(([10, 0, 0, 2], 8080)),
                SocketAddr::from(([10, 0, 0, 3], 8080))
            ]
        );
        assert!(Arc::ptr_eq(&c.loads[0], &b.loads[1]), "10.0.0.2 keeps its load");
        assert_eq!(c.loads[0].in_flight.load(Ordering::Relaxed), 1);
        assert_eq!(c.loads[1].cost(now()), 0.0, "10.0.0.3 starts afresh");
        drop(in_flight);
        assert_eq!(c.loads[0].in_flight.load(Ordering::Relaxed), 0);
    }
}
