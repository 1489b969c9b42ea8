//! A Service object, read the way MetalLB's controller reads it, as an
//! `lb-alloc` request.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use lb_alloc::{Family, FamilyPolicy, Labels, Port, Protocol, Request};

/// Annotations read on Services: the current `metallb.io/` name first, then
/// the deprecated `metallb.universe.tf/` one.
pub const ADDRESS_POOL: [&str; 2] = ["metallb.io/address-pool", "metallb.universe.tf/address-pool"];
/// Requested addresses (comma-separated, one per family).
pub const LOAD_BALANCER_IPS: [&str; 2] = ["metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"];
/// Sharing key.
pub const ALLOW_SHARED_IP: [&str; 2] = ["metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip"];
/// Written by the controller: the pool an address came from.
pub const IP_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";

/// Something wrong or worth noting about a Service's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    /// `metadata.annotations[metallb.io/loadBalancerIPs]`, `spec.loadBalancerIP`, …
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// True for errors (the request is not usable as written).
    pub error: bool,
}

/// Whether the Service is of type LoadBalancer.
pub fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// The addresses in `status.loadBalancer.ingress`.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// The request for a LoadBalancer Service. `current` is what it holds now.
/// Issues with `error: true` mean the annotations contradict each other or
/// do not parse; the caller decides what to keep.
pub fn request(svc: &Service, namespace_labels: &Labels, current: &[IpAddr]) -> (Request, Vec<FieldIssue>) {
    let meta = &svc.metadata;
    let spec = svc.spec.clone().unwrap_or_default();
    let mut issues = Vec::new();
    let mut req = Request::new(
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    );
    req.namespace_labels = namespace_labels.clone();
    req.labels = meta.labels.clone().unwrap_or_default();
    req.current_ips = current.to_vec();
    req.created = meta.creation_timestamp.as_ref().map(|t| t.0.as_second());
    let annotations = meta.annotations.clone().unwrap_or_default();
    let mut annotation = |names: [&str; 2]| -> Option<(String, String)> {
        let (name, value) = names
            .iter()
            .find_map(|n| annotations.get(*n).map(|v| (*n, v.clone())))?;
        if let (Some(new), Some(old)) = (annotations.get(names[0]), annotations.get(names[1]))
            && new != old
        {
            issues.push(FieldIssue {
                field: format!("metadata.annotations[{}]", names[1]),
                message: format!("differs from {} ({new:?}), which is the one used", names[0]),
                error: false,
            });
        }
        if name != names[0] {
            issues.push(FieldIssue {
                field: format!("metadata.annotations[{name}]"),
                message: format!("deprecated annotation; use {}", names[0]),
                error: false,
            });
        }
        Some((format!("metadata.annotations[{name}]"), value))
    };
    req.requested_pool = annotation(ADDRESS_POOL).map(|(_, v)| v.trim().to_owned());
    req.sharing_key = annotation(ALLOW_SHARED_IP).map(|(_, v)| v).filter(|v| !v.is_empty());
    let ips_annotation = annotation(LOAD_BALANCER_IPS);

    req.policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        Some("SingleStack") | None => FamilyPolicy::SingleStack,
        Some(other) => {
            issues.push(FieldIssue {
                field: "spec.ipFamilyPolicy".into(),
                message: format!("unknown policy {other:?}; expected SingleStack, PreferDualStack or RequireDualStack"),
                error: true,
            });
            FamilyPolicy::SingleStack
        }
    };
    req.cluster_families = cluster_families(&spec, req.policy, &mut issues);

    match (
        ips_annotation,
        spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty()),
    ) {
        (Some((field, _)), Some(_)) => issues.push(FieldIssue {
            field,
            message: "set together with spec.loadBalancerIP; use only one of them".into(),
            error: true,
        }),
        (Some((field, list)), None) => {
            for (i, part) in list.split(',').map(str::trim).enumerate() {
                match part.parse::<IpAddr>() {
                    Ok(ip) => req.requested_ips.push(ip),
                    Err(_) => issues.push(FieldIssue {
                        field: field.clone(),
                        message: format!(
                            "entry {i} ({part:?}) is not an IP address; expected e.g. 192.168.1.10,fc00::10"
                        ),
                        error: true,
                    }),
                }
            }
        }
        (None, Some(ip)) => match ip.parse() {
            Ok(ip) => req.requested_ips.push(ip),
            Err(_) => issues.push(FieldIssue {
                field: "spec.loadBalancerIP".into(),
                message: format!("{ip:?} is not an IP address"),
                error: true,
            }),
        },
        (None, None) => {}
    }

    // Sharing also compares backends: the selector of a Local Service.
    if spec.external_traffic_policy.as_deref() == Some("Local") {
        let sel = spec.selector.clone().unwrap_or_default();
        req.backend_key = sel
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    req.ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            },
            port: u16::try_from(p.port).unwrap_or(0),
        })
        .collect();
    req.load_balancer_class = spec.load_balancer_class.clone();
    (req, issues)
}

/// Families from `spec.clusterIPs` (or `clusterIP`), else `spec.ipFamilies`,
/// else, in file mode where nobody assigned cluster IPs, from the policy:
/// dual-stack policies get both families, IPv4 first.
fn cluster_families(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    policy: FamilyPolicy,
    issues: &mut Vec<FieldIssue>,
) -> Vec<Family> {
    let ips: Vec<String> = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.is_empty() && c != "None")
        .collect();
    let mut fams = Vec::new();
    for (i, c) in ips.iter().enumerate() {
        match c.parse::<IpAddr>() {
            Ok(ip) => fams.push(Family::of(ip)),
            Err(_) => issues.push(FieldIssue {
                field: format!("spec.clusterIPs[{i}]"),
                message: format!("{c:?} is not an IP address"),
                error: true,
            }),
        }
    }
    if fams.is_empty() {
        for f in spec.ip_families.iter().flatten() {
            match f.as_str() {
                "IPv4" => fams.push(Family::V4),
                "IPv6" => fams.push(Family::V6),
                other => issues.push(FieldIssue {
                    field: "spec.ipFamilies".into(),
                    message: format!("unknown family {other:?}; expected IPv4 or IPv6"),
                    error: true,
                }),
            }
        }
    }
    if fams.is_empty() {
        fams.push(Family::V4);
    }
    if fams.len() == 1
        && policy != FamilyPolicy::SingleStack
        && spec.cluster_ips.is_none()
        && spec.ip_families.is_none()
    {
        fams.push(fams[0].other());
    }
    fams
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn reads_annotations_families_and_ports() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "shop", "annotations": {
                "metallb.io/loadBalancerIPs": "192.168.1.10, fc00::10",
                "metallb.universe.tf/allow-shared-ip": "k",
                "metallb.io/address-pool": "prod"}},
            "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack", "clusterIPs": ["10.96.0.1", "fd00::1"],
                     "externalTrafficPolicy": "Local", "selector": {"b": "2", "a": "1"},
                     "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}]}}));
        let (r, issues) = request(&s, &Labels::new(), &[]);
        assert_eq!(
            r.requested_ips,
            vec!["192.168.1.10".parse::<IpAddr>().unwrap(), "fc00::10".parse().unwrap()]
        );
        assert_eq!(r.requested_pool.as_deref(), Some("prod"));
        assert_eq!(r.sharing_key.as_deref(), Some("k"));
        assert_eq!(r.backend_key, "a=1,b=2");
        assert_eq!(r.cluster_families, vec![Family::V4, Family::V6]);
        assert_eq!(r.policy, FamilyPolicy::RequireDualStack);
        assert_eq!(
            r.ports[0],
            Port {
                protocol: Protocol::Udp,
                port: 53
            }
        );
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(!issues[0].error && issues[0].message.contains("use metallb.io/allow-shared-ip"));
    }

    #[test]
    fn both_request_forms_is_an_error() {
        let s = svc(
            json!({"metadata": {"name": "x", "annotations": {"metallb.io/loadBalancerIPs": "10.0.0.1"}},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "10.0.0.2"}}),
        );
        let (_, issues) = request(&s, &Labels::new(), &[]);
        assert!(issues[0].error && issues[0].field == "metadata.annotations[metallb.io/loadBalancerIPs]");
        let s = svc(
            json!({"metadata": {"name": "x", "annotations": {"metallb.io/loadBalancerIPs": "10.0.0.1,banana"}},
            "spec": {"type": "LoadBalancer"}}),
        );
        let (r, issues) = request(&s, &Labels::new(), &[]);
        assert!(issues[0].error && issues[0].message.contains("banana"));
        assert_eq!(r.requested_ips.len(), 1);
    }

    #[test]
    fn file_mode_families_follow_the_policy() {
        let s = svc(
            json!({"metadata": {"name": "x"}, "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack"}}),
        );
        assert_eq!(
            request(&s, &Labels::new(), &[]).0.cluster_families,
            vec![Family::V4, Family::V6]
        );
        let s = svc(json!({"metadata": {"name": "x"}, "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6"]}}));
        assert_eq!(request(&s, &Labels::new(), &[]).0.cluster_families, vec![Family::V6]);
    }
}
