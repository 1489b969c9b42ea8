//! What the API server would refuse, checked in file mode: names,
//! namespaces and the Service fields the controller reads. An object that
//! fails is reported and left out, as `kubectl apply` would have refused it.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{DecodeError, Object, object_ref};

fn err(field: impl Into<String>, message: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// RFC 1123 label: lower-case alphanumerics and `-`, alphanumeric at both
/// ends, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}

/// RFC 1123 subdomain: such labels joined by `.`, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// RFC 1035 label (Service names): an RFC 1123 label starting with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// An IANA service name (a named port): at most 15 lower-case
/// alphanumerics and `-`, at least one letter, no `--`, no `-` at an end.
fn is_port_name(s: &str) -> bool {
    is_dns1123_label(s) && s.len() <= 15 && !s.contains("--") && s.bytes().any(|c| c.is_ascii_lowercase())
}

/// Checks `object` as the API server would; the first problem found.
pub fn check(object: &Object) -> Result<(), DecodeError> {
    let r = object_ref(object);
    let cluster_scoped = matches!(object, Object::Namespace(_) | Object::Node(_) | Object::IngressClass(_));
    if r.name.is_empty() {
        return Err(err("metadata.name", "is required"));
    }
    let (name_ok, rule) = match object {
        Object::Service(_) => (
            is_dns1035_label(&r.name),
            "a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63)",
        ),
        Object::Namespace(_) => (
            is_dns1123_label(&r.name),
            "a DNS-1123 label (lower-case letters, digits and '-', at most 63)",
        ),
        _ => (
            is_dns1123_subdomain(&r.name),
            "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253)",
        ),
    };
    if !name_ok {
        return Err(err("metadata.name", format!("{:?} must be {rule}", r.name)));
    }
    if !cluster_scoped && !is_dns1123_label(&r.namespace) {
        return Err(err(
            "metadata.namespace",
            format!(
                "{:?} must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)",
                r.namespace
            ),
        ));
    }
    match object {
        Object::Service(svc) => service(svc),
        Object::EndpointSlice(slice) => endpoint_slice(slice),
        _ => Ok(()),
    }
}

/// The EndpointSlice fields a proxy reads: an address that is not one of
/// the slice's type, a port out of range (the API server refuses both; a
/// proxy would quietly lose the endpoint).
fn endpoint_slice(slice: &k8s_openapi::api::discovery::v1::EndpointSlice) -> Result<(), DecodeError> {
    let kind = slice.address_type.as_str();
    if !matches!(kind, "IPv4" | "IPv6" | "FQDN") {
        return Err(err("addressType", format!("{kind:?} is not one of IPv4, IPv6, FQDN")));
    }
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        if let Some(n) = p.port
            && !(1..=65535).contains(&n)
        {
            return Err(err(format!("ports[{i}].port"), format!("{n} is not in 1-65535")));
        }
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            return Err(err(
                format!("ports[{i}].protocol"),
                format!("{proto:?} is not one of TCP, UDP, SCTP"),
            ));
        }
        if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty())
            && !is_dns1123_label(name)
        {
            return Err(err(
                format!("ports[{i}].name"),
                format!("{name:?} must be a DNS-1123 label"),
            ));
        }
    }
    for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
        if ep.addresses.is_empty() || ep.addresses.len() > 100 {
            return Err(err(
                format!("endpoints[{i}].addresses"),
                format!("has {} addresses; 1 to 100 are allowed", ep.addresses.len()),
            ));
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let ok = match kind {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => is_dns1123_subdomain(a),
            };
            if !ok {
                return Err(err(
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("{a:?} is not an {kind} address (addressType)"),
                ));
            }
        }
    }
    Ok(())
}

fn service(svc: &Service) -> Result<(), DecodeError> {
    let Some(spec) = &svc.spec else { return Ok(()) };
    if let Some(t) = &spec.type_
        && !matches!(t.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName")
    {
        return Err(err(
            "spec.type",
            format!("{t:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
        ));
    }
    if spec.load_balancer_class.as_deref() == Some("") {
        return Err(err(
            "spec.loadBalancerClass",
            "must not be empty (leave it out for the default controller)",
        ));
    }
    let external_name = spec.type_.as_deref() == Some("ExternalName");
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if !external_name && !headless && spec.ports.as_ref().is_none_or(Vec::is_empty) {
        return Err(err("spec.ports", "is required (at least one port)"));
    }
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        if !(1..=65535).contains(&p.port) {
            return Err(err(
                format!("spec.ports[{i}].port"),
                format!("{} is not in 1-65535", p.port),
            ));
        }
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            return Err(err(
                format!("spec.ports[{i}].protocol"),
                format!("{proto:?} is not one of TCP, UDP, SCTP"),
            ));
        }
        if let Some(n) = p.node_port
            && !(0..=65535).contains(&n)
        {
            return Err(err(
                format!("spec.ports[{i}].nodePort"),
                format!("{n} is not in 1-65535"),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                return Err(err(
                    format!("spec.ports[{i}].targetPort"),
                    format!("{n} is not in 1-65535"),
                ));
            }
            Some(IntOrString::String(s)) if !is_port_name(s) => {
                return Err(err(
                    format!("spec.ports[{i}].targetPort"),
                    format!("{s:?} is not a port number or an IANA service name"),
                ));
            }
            _ => {}
        }
        if let Some(name) = &p.name
            && !is_dns1123_label(name)
        {
            return Err(err(
                format!("spec.ports[{i}].name"),
                format!("{name:?} must be a DNS-1123 label"),
            ));
        }
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|s| !s.is_empty())
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(err(
            "spec.loadBalancerIP",
            format!("{ip:?} is not an IP address (no leading zeros, as Go parses them)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EndpointSlice the API server would refuse is refused here too,
    /// naming the field: it must not lose an endpoint in silence.
    #[test]
    fn endpoint_slices_hold_addresses_of_their_type_and_ports_in_range() {
        let slice = |kind: &str, address: &str, port: i64| {
            let text = format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
                 addressType: {kind}\nports: [{{name: http, port: {port}}}]\n\
                 endpoints: [{{addresses: [\"{address}\"]}}]\n"
            );
            let snap = crate::source::file::parse_manifests(std::path::Path::new("/m/web.yaml"), &text);
            snap.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()
        };
        assert!(slice("IPv4", "10.0.0.1", 8080).is_empty());
        assert!(slice("IPv6", "fd00::1", 8080).is_empty());
        for (kind, address, port, field) in [
            ("IPv4", "10.0.0.300", 8080, "endpoints[0].addresses[0]"),
            ("IPv4", "hello", 8080, "endpoints[0].addresses[0]"),
            ("IPv4", "", 8080, "endpoints[0].addresses[0]"),
            ("IPv6", "10.0.0.1", 8080, "endpoints[0].addresses[0]"),
            ("IPv4", "10.0.0.1", 70000, "ports[0].port"),
            ("IPv5", "10.0.0.1", 8080, "addressType"),
        ] {
            let problems = slice(kind, address, port);
            assert!(
                problems.iter().any(|p| p.contains(field)),
                "{kind} {address} {port}: {problems:?}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(is_dns1123_label("a-1") && !is_dns1123_label("-a") && !is_dns1123_label("A"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d") && !is_dns1123_subdomain("a..b"));
        assert!(is_dns1035_label("web") && !is_dns1035_label("1web"));
        assert!(is_port_name("http") && !is_port_name("80") && !is_port_name("a--b"));
    }
}
