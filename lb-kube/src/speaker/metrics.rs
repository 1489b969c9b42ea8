//! The speaker's metrics, under MetalLB's names so that its dashboards and
//! alerts keep working. MetalLB's counters are scraped as
//! `metallb_layer2_requests_received{ip=…}` (Prometheus' plain text
//! format, no `_total`); OpenMetrics, which this endpoint speaks, would
//! require `_total` on a counter's samples, so these are exposed as
//! `unknown`-typed [`Count`]s with exactly MetalLB's sample names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A count that only goes up, exposed under its name as is (no `_total`),
/// as MetalLB's counters are scraped.
#[derive(Debug, Clone, Default)]
pub struct Count(Arc<AtomicU64>);

impl Count {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Count {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for Count {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One service address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IpLabel {
    /// The address.
    pub ip: String,
}

/// One BGP peer, `ip:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer.
    pub peer: String,
}

/// One address announced for one Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AnnouncedLabels {
    /// The Service, `namespace/name`.
    pub service: String,
    /// `layer2` (or `bgp`).
    pub protocol: &'static str,
    /// This node.
    pub node: String,
    /// The address.
    pub ip: String,
}

/// Every metric the speaker keeps.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// ARP requests and neighbour solicitations received for owned
    /// addresses.
    pub requests: Family<IpLabel, Count>,
    /// Replies sent.
    pub responses: Family<IpLabel, Count>,
    /// Gratuitous ARP and unsolicited advertisement frames sent.
    pub gratuitous: Family<IpLabel, Count>,
    /// Another host seen claiming an owned address (split brain; counted
    /// at most once per address per interface every 10 s, and not in the
    /// moments after a takeover).
    pub conflicts: Family<IpLabel, Counter>,
    /// 1 for each address this node announces.
    pub announced: Family<AnnouncedLabels, Gauge>,
    /// Interfaces answering.
    pub interfaces: Gauge,
    /// Speakers this one sees alive (itself included).
    pub members: Gauge,
    /// The BGP sessions'.
    pub bgp: super::bgp_peers::BgpMetrics,
    /// The labels of [`Metrics::announced`] last set, per protocol.
    last_announced: Arc<std::sync::Mutex<std::collections::HashMap<&'static str, Vec<AnnouncedLabels>>>>,
}

impl Metrics {
    /// Sets the addresses announced by `protocol` (`layer2`, `bgp`) to
    /// `now`, leaving the other protocol's.
    pub fn set_announced(&self, protocol: &'static str, now: Vec<AnnouncedLabels>) {
        let mut last = self
            .last_announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = last.insert(protocol, now.clone()).unwrap_or_default();
        let kept: std::collections::HashSet<&AnnouncedLabels> = now.iter().collect();
        for gone in before.iter().filter(|l| !kept.contains(l)) {
            self.announced.remove(gone);
        }
        for l in &now {
            self.announced.get_or_create(l).set(1);
        }
    }

    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "metallb_bgp_session_up",
            "BGP session state (1 is up, 0 is down), by peer ip:port",
            m.bgp.session_up.clone(),
        );
        registry.register(
            "metallb_bgp_updates_total",
            "BGP UPDATE messages sent, by peer",
            m.bgp.updates.clone(),
        );
        registry.register(
            "metallb_bgp_announced_prefixes_total",
            "Prefixes announced on the BGP session now, by peer",
            m.bgp.announced.clone(),
        );
        registry.register(
            "metallb_layer2_requests_received",
            "ARP requests and neighbour solicitations received for announced addresses",
            m.requests.clone(),
        );
        registry.register(
            "metallb_layer2_responses_sent",
            "ARP replies and neighbour advertisements sent for announced addresses",
            m.responses.clone(),
        );
        registry.register(
            "metallb_layer2_gratuitous_sent",
            "Gratuitous ARP and unsolicited neighbour advertisement frames sent",
            m.gratuitous.clone(),
        );
        registry.register(
            "lb_layer2_conflicts",
            "Frames from another MAC claiming an address announced here (split brain)",
            m.conflicts.clone(),
        );
        registry.register(
            "metallb_speaker_announced",
            "Addresses this node announces, by Service and protocol",
            m.announced.clone(),
        );
        registry.register(
            "lb_layer2_interfaces",
            "Interfaces answering ARP and NDP",
            m.interfaces.clone(),
        );
        registry.register(
            "lb_speaker_members",
            "Speakers seen alive, this one included",
            m.members.clone(),
        );
        m
    }
}
