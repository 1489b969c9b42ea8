//! The proxy's metrics.

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
    /// Reads of the configuration that failed (the last table kept).
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
}

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
            "Requests a backend failed, by Service and kind",
            m.upstream_errors.clone(),
        );
        registry.register("lb_proxy_reloads", "Route tables swapped in", m.reloads.clone());
        registry.register(
            "lb_proxy_reload_errors",
            "Configuration reads that failed (the last table kept serving)",
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
            "lb_proxy_config_problems",
            "Problems in the Ingresses in force",
            m.problems.clone(),
        );
        m
    }
}
