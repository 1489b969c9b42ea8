//! Ingress and IngressClass as plain serde types.
//!
//! They mirror `networking.k8s.io/v1` field for field, so they deserialize
//! from the same YAML or JSON as `kubectl` reads (unknown fields such as
//! `status` are ignored). Only what routing needs is kept. With the
//! `k8s-openapi` feature they also convert from k8s-openapi's types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The object metadata routing uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`; empty means `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` (RFC 3339). The oldest Ingress wins
    /// conflicts; RFC 3339 timestamps in UTC compare as strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// The namespace, `default` when empty.
    pub fn namespace(&self) -> &str {
        if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }
}

/// `networking.k8s.io/v1` Ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingress {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: IngressSpec,
}

/// `IngressSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The IngressClass this Ingress belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// Where requests that match no rule go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<IngressBackend>,
    /// TLS termination: hosts and their certificate Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<IngressTls>,
    /// Host and path rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<IngressRule>,
}

/// `IngressBackend`: exactly one of `service` or `resource`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressBackend {
    /// A Service and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<IngressServiceBackend>,
    /// Another object (not routable by a proxy; reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<TypedLocalObjectReference>,
}

/// `IngressServiceBackend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressServiceBackend {
    /// The Service, in the Ingress's namespace.
    pub name: String,
    /// The Service port, by name or number.
    #[serde(default)]
    pub port: ServiceBackendPort,
}

/// `ServiceBackendPort`: exactly one of `name` or `number`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBackendPort {
    /// A named Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A numbered Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i32>,
}

/// `TypedLocalObjectReference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypedLocalObjectReference {
    /// API group of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
}

/// `IngressTLS`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// Hosts served with this certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The `kubernetes.io/tls` Secret, in the Ingress's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// `IngressRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    /// A DNS name or `*.` wildcard; empty or absent matches every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngressRuleValue>,
}

/// `HTTPIngressRuleValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpIngressRuleValue {
    /// Paths, each to a backend.
    #[serde(default)]
    pub paths: Vec<HttpIngressPath>,
}

/// `HTTPIngressPath`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpIngressPath {
    /// The path; absent means `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `Exact`, `Prefix` or `ImplementationSpecific` (required by the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_type: Option<String>,
    /// Where matching requests go.
    pub backend: IngressBackend,
}

/// `networking.k8s.io/v1` IngressClass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressClass {
    /// Metadata (its annotations carry the default-class marker and our
    /// route mode).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    #[serde(default)]
    pub spec: IngressClassSpec,
}

/// `IngressClassSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressClassSpec {
    /// The controller that serves this class, e.g. `lb.io/ingress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
}

#[cfg(feature = "k8s-openapi")]
mod from_k8s {
    use k8s_openapi::api::networking::v1 as k;

    use super::*;

    fn meta(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            name: m.name.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            annotations: m.annotations.clone().unwrap_or_default(),
            creation_timestamp: m.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        }
    }

    fn backend(b: &k::IngressBackend) -> IngressBackend {
        IngressBackend {
            service: b.service.as_ref().map(|s| IngressServiceBackend {
                name: s.name.clone(),
                port: s
                    .port
                    .as_ref()
                    .map(|p| ServiceBackendPort {
                        name: p.name.clone(),
                        number: p.number,
                    })
                    .unwrap_or_default(),
            }),
            resource: b.resource.as_ref().map(|r| TypedLocalObjectReference {
                api_group: r.api_group.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
            }),
        }
    }

    /// Reads what routing needs of an Ingress; its status, managed fields
    /// and other metadata are not copied.
    impl From<&k::Ingress> for Ingress {
        fn from(i: &k::Ingress) -> Self {
            let spec = i.spec.as_ref();
            Ingress {
                metadata: meta(&i.metadata),
                spec: IngressSpec {
                    ingress_class_name: spec.and_then(|s| s.ingress_class_name.clone()),
                    default_backend: spec.and_then(|s| s.default_backend.as_ref()).map(backend),
                    tls: spec
                        .and_then(|s| s.tls.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|t| IngressTls {
                            hosts: t.hosts.clone().unwrap_or_default(),
                            secret_name: t.secret_name.clone(),
                        })
                        .collect(),
                    rules: spec
                        .and_then(|s| s.rules.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|r| IngressRule {
                            host: r.host.clone(),
                            http: r.http.as_ref().map(|h| HttpIngressRuleValue {
                                paths: h
                                    .paths
                                    .iter()
                                    .map(|p| HttpIngressPath {
                                        path: p.path.clone(),
                                        path_type: Some(p.path_type.clone()),
                                        backend: backend(&p.backend),
                                    })
                                    .collect(),
                            }),
                        })
                        .collect(),
                },
            }
        }
    }

    impl From<k::Ingress> for Ingress {
        fn from(i: k::Ingress) -> Self {
            Self::from(&i)
        }
    }

    impl From<k::IngressClass> for IngressClass {
        fn from(c: k::IngressClass) -> Self {
            IngressClass {
                metadata: meta(&c.metadata),
                spec: IngressClassSpec {
                    controller: c.spec.and_then(|s| s.controller),
                },
            }
        }
    }
}
