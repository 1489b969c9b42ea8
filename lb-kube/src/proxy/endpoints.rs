//! Where a Service port's traffic goes: the endpoints its EndpointSlices
//! list, resolved through the Service's port names as kube-proxy does.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::objects::{Object, ObjectRef};
use crate::source::Origin;

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The endpoints of one Service port, picked round robin.
#[derive(Debug, Default)]
pub struct Backends {
    addrs: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Backends {
    /// The endpoints, in the order the slices list them.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the next request starts: endpoints are then tried from there
    /// on (a failed connect moves to the next one).
    pub fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The endpoint `n` places after `start`, wrapping.
    pub fn at(&self, start: usize, n: usize) -> Option<SocketAddr> {
        let len = self.addrs.len();
        (len > 0).then(|| self.addrs[start.wrapping_add(n) % len])
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
    pub fn build(objects: &[(Option<Origin>, Object)], slices: &BTreeMap<ObjectRef, Object>) -> Self {
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
                addrs.sort();
                addrs.dedup();
                // A random start: every swap (any EndpointSlice anywhere)
                // must not send the next requests to the first endpoint.
                let backends = Backends {
                    next: AtomicUsize::new(start_offset()),
                    addrs,
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
