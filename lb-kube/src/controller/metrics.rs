//! Prometheus text exposition of the controller's counters, under MetalLB's
//! metric names so existing dashboards keep working.

use std::fmt::Write;

use lb_alloc::Family;

use super::Report;

fn gauge(out: &mut String, name: &str, help: &str, rows: &[(String, u128)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the metrics for the last report. `config_ok` is false when the
/// last reconcile found errors (MetalLB's `config_stale_bool`).
pub fn render(report: &Report, config_ok: bool) -> String {
    let mut out = String::new();
    let per = |f: &dyn Fn(&lb_alloc::PoolStats) -> u128| -> Vec<(String, u128)> {
        report
            .pool_stats
            .iter()
            .map(|s| (format!("{{pool=\"{}\"}}", label(&s.name)), f(s)))
            .collect()
    };
    gauge(
        &mut out,
        "metallb_allocator_addresses_total",
        "Number of usable IP addresses, per pool",
        &per(&|s| s.total[0] + s.total[1]),
    );
    gauge(
        &mut out,
        "metallb_allocator_addresses_in_use_total",
        "Number of IP addresses in use, per pool",
        &per(&|s| s.in_use[0] + s.in_use[1]),
    );
    gauge(
        &mut out,
        "metallb_allocator_ipv4_addresses_total",
        "Number of usable IPv4 addresses, per pool",
        &per(&|s| s.total[Family::V4.index()]),
    );
    gauge(
        &mut out,
        "metallb_allocator_ipv6_addresses_total",
        "Number of usable IPv6 addresses, per pool",
        &per(&|s| s.total[Family::V6.index()]),
    );
    gauge(
        &mut out,
        "metallb_allocator_ipv4_addresses_in_use_total",
        "Number of IPv4 addresses in use, per pool",
        &per(&|s| s.in_use[Family::V4.index()]),
    );
    gauge(
        &mut out,
        "metallb_allocator_ipv6_addresses_in_use_total",
        "Number of IPv6 addresses in use, per pool",
        &per(&|s| s.in_use[Family::V6.index()]),
    );
    let assigned = report.services.iter().filter(|s| !s.ips.is_empty()).count() as u128;
    gauge(
        &mut out,
        "lb_controller_services",
        "LoadBalancer Services, by whether they hold an address",
        &[
            ("{state=\"assigned\"}".into(), assigned),
            ("{state=\"pending\"}".into(), report.services.len() as u128 - assigned),
        ],
    );
    gauge(
        &mut out,
        "metallb_k8s_client_config_loaded_bool",
        "1 when a configuration was loaded",
        &[(String::new(), 1)],
    );
    gauge(
        &mut out,
        "metallb_k8s_client_config_stale_bool",
        "1 when the last configuration had errors and an older one is in force",
        &[(String::new(), u128::from(!config_ok))],
    );
    out
}
