//! The controller's metrics, under MetalLB's names so existing dashboards
//! keep working.

use lb_alloc::Family as IpFamily;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Report;

type Labels = Vec<(&'static str, String)>;

/// The controller's gauges, registered in one registry.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    addresses_total: Family<Labels, Gauge>,
    addresses_in_use: Family<Labels, Gauge>,
    ipv4_total: Family<Labels, Gauge>,
    ipv6_total: Family<Labels, Gauge>,
    ipv4_in_use: Family<Labels, Gauge>,
    ipv6_in_use: Family<Labels, Gauge>,
    services: Family<Labels, Gauge>,
    config_loaded: Gauge,
    config_stale: Gauge,
}

impl Metrics {
    /// The gauges, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let families = [
            (
                "metallb_allocator_addresses_total",
                "Number of usable IP addresses, per pool",
                &m.addresses_total,
            ),
            (
                "metallb_allocator_addresses_in_use_total",
                "Number of IP addresses in use, per pool",
                &m.addresses_in_use,
            ),
            (
                "metallb_allocator_ipv4_addresses_total",
                "Number of usable IPv4 addresses, per pool",
                &m.ipv4_total,
            ),
            (
                "metallb_allocator_ipv6_addresses_total",
                "Number of usable IPv6 addresses, per pool",
                &m.ipv6_total,
            ),
            (
                "metallb_allocator_ipv4_addresses_in_use_total",
                "Number of IPv4 addresses in use, per pool",
                &m.ipv4_in_use,
            ),
            (
                "metallb_allocator_ipv6_addresses_in_use_total",
                "Number of IPv6 addresses in use, per pool",
                &m.ipv6_in_use,
            ),
            (
                "lb_controller_services",
                "LoadBalancer Services, by whether they hold an address",
                &m.services,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "metallb_k8s_client_config_loaded_bool",
            "1 when a configuration was loaded",
            m.config_loaded.clone(),
        );
        registry.register(
            "metallb_k8s_client_config_stale_bool",
            "1 when the last configuration had errors and an older one (or none) is in force",
            m.config_stale.clone(),
        );
        m
    }

    /// Marks the configuration in force as stale (or not): a status
    /// write failed.
    pub fn set_stale(&self, stale: bool) {
        self.config_stale.set(i64::from(stale));
    }

    /// A standby replica whose watches have listed the configuration: it
    /// counts as loaded (MetalLB's alert on `config_loaded_bool 0` must not
    /// fire for every standby); the leader tells whether it is valid.
    pub fn set_standby(&self) {
        self.config_loaded.set(1);
        self.config_stale.set(0);
    }

    /// Sets every gauge from a report; `config_ok` is false when the
    /// reconcile found errors (MetalLB's `config_stale_bool`).
    pub fn update(&self, report: &Report, config_ok: bool) {
        let gauge = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
        for f in [
            &self.addresses_total,
            &self.addresses_in_use,
            &self.ipv4_total,
            &self.ipv6_total,
            &self.ipv4_in_use,
            &self.ipv6_in_use,
        ] {
            // Pools that are gone leave no stale series.
            f.clear();
        }
        let (v4, v6) = (IpFamily::V4.index(), IpFamily::V6.index());
        for s in &report.pool_stats {
            let pool: Labels = vec![("pool", s.name.clone())];
            self.addresses_total
                .get_or_create(&pool)
                .set(gauge(s.total[v4].saturating_add(s.total[v6])));
            self.addresses_in_use
                .get_or_create(&pool)
                .set(gauge(s.in_use[v4].saturating_add(s.in_use[v6])));
            self.ipv4_total.get_or_create(&pool).set(gauge(s.total[v4]));
            self.ipv6_total.get_or_create(&pool).set(gauge(s.total[v6]));
            self.ipv4_in_use.get_or_create(&pool).set(gauge(s.in_use[v4]));
            self.ipv6_in_use.get_or_create(&pool).set(gauge(s.in_use[v6]));
        }
        // Another class's Services are neither assigned nor pending here.
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (assigned, pending) = (count(report.assigned), count(report.pending));
        let state = |s: &str| -> Labels { vec![("state", s.to_owned())] };
        self.services.get_or_create(&state("assigned")).set(assigned);
        self.services.get_or_create(&state("pending")).set(pending);
        self.config_loaded.set(i64::from(report.config_in_force));
        self.config_stale.set(i64::from(!config_ok));
    }
}
