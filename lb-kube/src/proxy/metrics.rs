//! The proxy's metrics.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The labels of a request: where it went and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The deciding Ingress, `namespace/name` (empty: none).
    pub ingress: String,
    /// The backend Service, `namespace/name` (empty: none).
    pub service: String,
    /// The status answered.
    pub status: u16,
}

impl RequestLabels {
    /// Whether these are the labels of `names` (an Ingress and the
    /// Service in its namespace it routed to, if it did; none: no Ingress
    /// decided) and `status`.
    fn are(&self, names: Option<(&lb_route::IngressRef, Option<&str>)>, status: u16) -> bool {
        let qualified = |label: &str, ns: &str, name: &str| {
            label.len() == ns.len() + 1 + name.len()
                && label.starts_with(ns)
                && label.as_bytes()[ns.len()] == b'/'
                && label.ends_with(name)
        };
        self.status == status
            && match names {
                None => self.ingress.is_empty() && self.service.is_empty(),
                Some((i, s)) => {
                    qualified(&self.ingress, &i.namespace, &i.name)
                        && match s {
                            Some(s) => qualified(&self.service, &i.namespace, s),
                            None => self.service.is_empty(),
                        }
                }
            }
    }
}

/// The labels of an upstream failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The backend Service, `namespace/name`.
    pub service: String,
    /// `connect`, `timeout`, `no_endpoint` or `failed`.
    pub kind: &'static str,
}

/// Every metric the proxy keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from the request head to the response head.
    pub duration: Histogram,
    /// Upstream failures.
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    /// Route table swaps (endpoint-only swaps included).
    pub reloads: Counter,
    /// Reads of the configuration that failed as a whole (the last table
    /// kept); a broken object is a problem, not a failed read.
    pub reload_errors: Counter,
    /// Time to read the configuration, build the table and swap it in
    /// (whole rebuilds; endpoint-only swaps are not counted).
    pub rebuild_duration: Histogram,
    /// Service ports with endpoints in the table in force.
    pub endpoints: Gauge,
    /// Requests refused for their framing (smuggling vectors and the like).
    pub refused: Counter,
    /// Ingress problems in the table in force.
    pub problems: Gauge,
    /// Counters of `requests` found before, by a hash of their labels: a
    /// request finds its own without making label strings.
    known: Arc<Mutex<HashMap<u64, (RequestLabels, Counter)>>>,
}

/// Label sets remembered at most (then forgotten and found again).
const KNOWN: usize = 4096;

impl Metrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            upstream_errors: Family::default(),
            reloads: Counter::default(),
            reload_errors: Counter::default(),
            rebuild_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            endpoints: Gauge::default(),
            refused: Counter::default(),
            problems: Gauge::default(),
            known: Arc::default(),
        };
        registry.register(
            "lb_proxy_requests",
            "Requests answered, by Ingress, Service and status",
            m.requests.clone(),
        );
        registry.register(
            "lb_proxy_request_duration_seconds",
            "Time from a request's head to its response's head",
            m.duration.clone(),
        );
        registry.register(
            "lb_proxy_upstream_errors",
            "Exchanges with a backend that failed, by Service and kind (a failed connect retried on another endpoint too)",
            m.upstream_errors.clone(),
        );
        registry.register("lb_proxy_reloads", "Route tables swapped in", m.reloads.clone());
        registry.register(
            "lb_proxy_reload_errors",
            "Configuration reads that failed as a whole (the directory or API unreadable, a build that panicked; the last table kept serving); problems in single objects are lb_proxy_config_problems",
            m.reload_errors.clone(),
        );
        registry.register(
            "lb_proxy_rebuild_duration_seconds",
            "Time to read the configuration, build a route table and swap it in",
            m.rebuild_duration.clone(),
        );
        registry.register(
            "lb_proxy_endpoints",
            "Service ports with ready endpoints",
            m.endpoints.clone(),
        );
        registry.register(
            "lb_proxy_refused_requests",
            "Requests refused for their framing (smuggling vectors, bad heads) before they were parsed",
            m.refused.clone(),
        );
        registry.register(
            "lb_proxy_config_problems",
            "Problems in the Ingresses in force",
            m.problems.clone(),
        );
        m
    }

    /// Counts a request routed by `names` (the Ingress, and the Service in
    /// its namespace; none: answered by the proxy) and answered `status`.
    pub(crate) fn count_request(&self, names: Option<(&lb_route::IngressRef, Option<&str>)>, status: u16) {
        // Per request: foldhash, not SipHash (the labels are checked on a
        // hit anyway).
        let key = {
            let mut h = std::hash::BuildHasher::build_hasher(&foldhash::fast::FixedState::default());
            if let Some((i, s)) = names {
                (&i.namespace, &i.name, s).hash(&mut h);
            }
            status.hash(&mut h);
            h.finish()
        };
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((labels, counter)) = known.get(&key)
            && labels.are(names, status)
        {
            counter.inc();
            return;
        }
        let labels = match names {
            Some((i, s)) => RequestLabels {
                ingress: i.to_string(),
                service: s.map(|s| format!("{}/{s}", i.namespace)).unwrap_or_default(),
                status,
            },
            None => RequestLabels {
                ingress: String::new(),
                service: String::new(),
                status,
            },
        };
        let counter = self.requests.get_or_create(&labels).clone();
        counter.inc();
        if known.len() >= KNOWN {
            known.clear();
        }
        known.insert(key, (labels, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, registry).unwrap();
        s
    }

    #[test]
    fn requests_are_counted_under_their_own_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let shop = lb_route::IngressRef {
            namespace: "web".into(),
            name: "shop".into(),
        };
        // Names that run together the same way must not share a counter.
        let tricky = lb_route::IngressRef {
            namespace: "web/sh".into(),
            name: "op".into(),
        };
        for _ in 0..3 {
            m.count_request(Some((&shop, Some("cart"))), 200);
        }
        m.count_request(Some((&shop, Some("cart"))), 502);
        m.count_request(Some((&tricky, Some("cart"))), 200);
        m.count_request(None, 404);
        m.count_request(None, 404);
        // Refused by an Ingress's allowlist: its name, no Service.
        m.count_request(Some((&shop, None)), 403);
        m.count_request(Some((&shop, None)), 403);
        let t = text(&registry);
        for line in [
            r#"lb_proxy_requests_total{ingress="web/shop",service="web/cart",status="200"} 3"#,
            r#"lb_proxy_requests_total{ingress="web/shop",service="web/cart",status="502"} 1"#,
            r#"lb_proxy_requests_total{ingress="web/sh/op",service="web/sh/cart",status="200"} 1"#,
            r#"lb_proxy_requests_total{ingress="",service="",status="404"} 2"#,
            r#"lb_proxy_requests_total{ingress="web/shop",service="",status="403"} 2"#,
        ] {
            assert!(t.contains(line), "{line} not in\n{t}");
        }
    }
}
