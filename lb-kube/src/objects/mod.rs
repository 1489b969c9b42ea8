//! Typed Kubernetes objects: core kinds from k8s-openapi, the metallb.io
//! custom resources, and the legacy MetalLB ConfigMap.
//!
//! Every object is decoded from a JSON value (YAML documents are turned into
//! one first), so file mode and cluster mode share one decoder. Decoding is
//! strict: unknown fields are reported with their path, like
//! `kubectl apply --validate=strict`.

pub mod legacy;
pub mod metallb;
pub mod validate;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

pub use metallb::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};

/// One object of a kind lb reads. Equal when they hold the same content
/// (the same allocation is equal without a look at it).
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Object {
    Service(Arc<Service>),
    Namespace(Arc<Namespace>),
    Node(Arc<Node>),
    EndpointSlice(Arc<EndpointSlice>),
    ConfigMap(Arc<ConfigMap>),
    Secret(Arc<Secret>),
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    IPAddressPool(Arc<IPAddressPool>),
    L2Advertisement(Arc<L2Advertisement>),
    BGPAdvertisement(Arc<BGPAdvertisement>),
    /// v1beta1 objects are converted to v1beta2.
    BGPPeer(Arc<BGPPeer>),
    Community(Arc<Community>),
    BFDProfile(Arc<BFDProfile>),
}

/// Kind, namespace and name of an object, read from its JSON even when the
/// object itself does not decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace` (`default` when absent, as kubectl does).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        /// Shared, or equal field by field.
        fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
            Arc::ptr_eq(a, b) || **a == **b
        }
        use Object as O;
        match (self, other) {
            (O::Service(a), O::Service(b)) => same(a, b),
            (O::Namespace(a), O::Namespace(b)) => same(a, b),
            (O::Node(a), O::Node(b)) => same(a, b),
            (O::EndpointSlice(a), O::EndpointSlice(b)) => same(a, b),
            (O::ConfigMap(a), O::ConfigMap(b)) => same(a, b),
            (O::Secret(a), O::Secret(b)) => same(a, b),
            (O::Ingress(a), O::Ingress(b)) => same(a, b),
            (O::IngressClass(a), O::IngressClass(b)) => same(a, b),
            (O::IPAddressPool(a), O::IPAddressPool(b)) => same(a, b),
            (O::L2Advertisement(a), O::L2Advertisement(b)) => same(a, b),
            (O::BGPAdvertisement(a), O::BGPAdvertisement(b)) => same(a, b),
            (O::BGPPeer(a), O::BGPPeer(b)) => same(a, b),
            (O::Community(a), O::Community(b)) => same(a, b),
            (O::BFDProfile(a), O::BFDProfile(b)) => same(a, b),
            // Listed, so that a new kind cannot compile without its arm.
            (
                O::Service(_)
                | O::Namespace(_)
                | O::Node(_)
                | O::EndpointSlice(_)
                | O::ConfigMap(_)
                | O::Secret(_)
                | O::Ingress(_)
                | O::IngressClass(_)
                | O::IPAddressPool(_)
                | O::L2Advertisement(_)
                | O::BGPAdvertisement(_)
                | O::BGPPeer(_)
                | O::Community(_)
                | O::BFDProfile(_),
                _,
            ) => false,
        }
    }
}

impl Object {
    /// The object's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Service(_) => "Service",
            Object::Namespace(_) => "Namespace",
            Object::Node(_) => "Node",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::IPAddressPool(_) => "IPAddressPool",
            Object::L2Advertisement(_) => "L2Advertisement",
            Object::BGPAdvertisement(_) => "BGPAdvertisement",
            Object::BGPPeer(_) => "BGPPeer",
            Object::Community(_) => "Community",
            Object::BFDProfile(_) => "BFDProfile",
        }
    }
}

impl ObjectRef {
    /// Reads kind, namespace and name from raw JSON.
    pub fn of(value: &Value) -> Self {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        let meta = value.get("metadata");
        let ns = s(meta.and_then(|m| m.get("namespace")));
        ObjectRef {
            kind: s(value.get("kind")),
            namespace: if ns.is_empty() { "default".into() } else { ns },
            name: s(meta.and_then(|m| m.get("name"))),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.is_empty() {
            write!(f, "{} (no name) in {}", self.kind, self.namespace)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why a document is not an object lb can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The document is not a mapping.
    #[error("document is not a mapping with apiVersion, kind and metadata")]
    NotAnObject,
    /// `apiVersion` or `kind` is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A kind lb does not know in a group it reads.
    #[error("unknown kind {kind:?} in apiVersion {api_version:?}; known kinds: {known}")]
    UnknownKind {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// The kinds lb reads in that group.
        known: String,
    },
    /// A field does not decode.
    #[error("{field}: {message}")]
    Field {
        /// Path of the field (`spec.addresses[0]`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Fields the schema does not have.
    #[error("unknown field(s) {}", .0.join(", "))]
    UnknownFields(Vec<String>),
}

impl DecodeError {
    /// What is wrong, without the field [`DecodeError::field`] names.
    pub fn message(&self) -> String {
        match self {
            DecodeError::Field { message, .. } => message.clone(),
            DecodeError::UnknownFields(f) => match f.get(1..) {
                Some(rest) if !rest.is_empty() => format!("unknown field (also unknown: {})", rest.join(", ")),
                _ => "unknown field".into(),
            },
            other => other.to_string(),
        }
    }

    /// The field the error is about, if one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DecodeError::Field { field, .. } => Some(field),
            DecodeError::UnknownFields(f) => f.first().map(String::as_str),
            DecodeError::Missing(f) => Some(f),
            _ => None,
        }
    }
}

/// Groups lb reads, with the kinds it knows in each. A document of another
/// group (a Deployment, someone else's CRD) is skipped, not an error.
const KNOWN: &[(&str, &[&str])] = &[
    ("v1", &["Service", "Namespace", "Node", "ConfigMap", "Secret"]),
    ("discovery.k8s.io", &["EndpointSlice"]),
    ("networking.k8s.io", &["Ingress", "IngressClass"]),
    (
        "metallb.io",
        &[
            "IPAddressPool",
            "L2Advertisement",
            "BGPAdvertisement",
            "BGPPeer",
            "Community",
            "BFDProfile",
        ],
    ),
];

/// How strictly [`decode_as`] reads fields it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fields {
    /// Unknown fields are errors, as `kubectl apply --validate=strict`
    /// reports them (file mode: a typo must not pass silently).
    Strict,
    /// Unknown fields are ignored (objects from an API server, which has
    /// validated them against its own, possibly newer, schema).
    Lenient,
}

/// metallb.io kinds that hold status written by MetalLB's components (or
/// lb's), read by nobody as configuration: skipped.
const STATUS_KINDS: &[&str] = &["ConfigurationState", "ServiceL2Status", "ServiceBGPStatus"];

/// Decodes one object strictly. `Ok(None)`: a group lb does not read
/// (skipped).
pub fn decode(value: Value) -> Result<Option<Object>, DecodeError> {
    decode_as(value, Fields::Strict)
}

/// Decodes one object, reading unknown fields as `fields` says.
pub fn decode_as(mut value: Value, fields: Fields) -> Result<Option<Object>, DecodeError> {
    let strict = fields == Fields::Strict;
    let obj = value.as_object().ok_or(DecodeError::NotAnObject)?;
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Missing("apiVersion"))?
        .to_owned();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(DecodeError::Missing("kind"))?
        .to_owned();
    let group = api_version.rsplit_once('/').map_or("v1", |(g, _)| g);
    let group = if api_version == "v1" { "v1" } else { group };
    let Some((_, kinds)) = KNOWN.iter().find(|(g, _)| *g == group) else {
        return Ok(None);
    };
    if !kinds.contains(&kind.as_str()) {
        if group == "v1" && api_version != "v1" {
            return Ok(None);
        }
        // Status objects components write, not configuration.
        if group == "metallb.io" && STATUS_KINDS.contains(&kind.as_str()) {
            return Ok(None);
        }
        return Err(DecodeError::UnknownKind {
            api_version,
            kind,
            known: kinds.join(", "),
        });
    }
    // Give objects without a namespace the default one, as kubectl does.
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace")
            .or_insert_with(|| Value::String("default".into()));
    }
    // MetalLB's CRDs leave these kinds' spec optional (every field in it
    // is): its own examples have none.
    if metallb::SPEC_OPTIONAL.contains(&kind.as_str())
        && let Some(o) = value.as_object_mut()
    {
        o.entry("spec").or_insert_with(|| Value::Object(Default::default()));
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        (_, "Service") => Object::Service(typed_as(value, strict)?),
        (_, "Namespace") => Object::Namespace(typed_as(strip_namespace(value), strict)?),
        (_, "Node") => Object::Node(typed_as(strip_namespace(value), strict)?),
        (_, "ConfigMap") => Object::ConfigMap(typed_as(value, strict)?),
        (_, "Secret") => Object::Secret(typed_as(value, strict)?),
        (_, "EndpointSlice") => Object::EndpointSlice(typed_as(value, strict)?),
        (_, "Ingress") => Object::Ingress(typed_as(value, strict)?),
        (_, "IngressClass") => Object::IngressClass(typed_as(strip_namespace(value), strict)?),
        ("metallb.io/v1beta1", "IPAddressPool") => Object::IPAddressPool(typed_as(value, strict)?),
        ("metallb.io/v1beta1", "L2Advertisement") => Object::L2Advertisement(typed_as(value, strict)?),
        ("metallb.io/v1beta1", "BGPAdvertisement") => Object::BGPAdvertisement(typed_as(value, strict)?),
        ("metallb.io/v1beta2", "BGPPeer") => Object::BGPPeer(typed_as(value, strict)?),
        ("metallb.io/v1beta1", "BGPPeer") => {
            let old: metallb::v1beta1::BGPPeer = Arc::unwrap_or_clone(typed_as(value, strict)?);
            Object::BGPPeer(Arc::new(BGPPeer {
                metadata: old.metadata,
                spec: old.spec.into(),
            }))
        }
        ("metallb.io/v1beta1", "Community") => Object::Community(typed_as(value, strict)?),
        ("metallb.io/v1beta1", "BFDProfile") => Object::BFDProfile(typed_as(value, strict)?),
        _ => {
            return Err(DecodeError::Field {
                field: "apiVersion".into(),
                message: format!("{api_version:?} is not a served version of {kind}"),
            });
        }
    };
    validate::check(&object)?;
    Ok(Some(object))
}

/// Kind, namespace and name of a decoded object.
pub fn object_ref(object: &Object) -> ObjectRef {
    fn of<K: kube::Resource<DynamicType = ()>>(o: &K) -> ObjectRef {
        let m = o.meta();
        ObjectRef {
            kind: K::kind(&()).into_owned(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
        }
    }
    match object {
        Object::Service(o) => of(o.as_ref()),
        Object::Namespace(o) => of(o.as_ref()),
        Object::Node(o) => of(o.as_ref()),
        Object::EndpointSlice(o) => of(o.as_ref()),
        Object::ConfigMap(o) => of(o.as_ref()),
        Object::Secret(o) => of(o.as_ref()),
        Object::Ingress(o) => of(o.as_ref()),
        Object::IngressClass(o) => of(o.as_ref()),
        Object::IPAddressPool(o) => of(o.as_ref()),
        Object::L2Advertisement(o) => of(o.as_ref()),
        Object::BGPAdvertisement(o) => of(o.as_ref()),
        Object::BGPPeer(o) => of(o.as_ref()),
        Object::Community(o) => of(o.as_ref()),
        Object::BFDProfile(o) => of(o.as_ref()),
    }
}

fn strip_namespace(mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.get("namespace") == Some(&Value::String("default".into()))
    {
        meta.remove("namespace");
    }
    value
}

/// A field path as Kubernetes writes it: list indices in brackets
/// (`spec.ports[0].port`, not `spec.ports.0.port`) and annotation and label
/// keys whole (`metadata.annotations[metallb.io/address-pool]`).
fn field_path(path: &str) -> String {
    for map in ["metadata.annotations.", "metadata.labels.", "data."] {
        if let Some(key) = path.strip_prefix(map)
            && !key.is_empty()
            && map != "data."
        {
            return format!("{}[{key}]", &map[..map.len() - 1]);
        }
    }
    let mut out = String::with_capacity(path.len());
    for (i, part) in path.split('.').enumerate() {
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && i > 0 {
            out.push_str(&format!("[{part}]"));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// A serde message in the words of the manifest, not of Rust types:
/// `expected i32` is "expected an integer", `expected ServiceSpec` is
/// "expected a mapping".
fn plain_serde_message(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_owned();
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
        "f32" | "f64" => "a number",
        "a boolean" | "a string" | "a sequence" | "a map" => expected,
        e if e.starts_with(|c: char| c.is_ascii_uppercase()) && !e.contains(' ') => "a mapping",
        e if e.starts_with("struct ") || e.starts_with("a map") => "a mapping",
        e => e,
    };
    format!("{head}, expected {expected}")
}

/// Strict typed decoding: the path of a bad field, and every unknown field.
pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> Result<Arc<T>, DecodeError> {
    typed_as(value, true)
}

/// Decodes `value` as `T`; with `strict`, unknown fields are an error.
fn typed_as<T: DeserializeOwned>(value: Value, strict: bool) -> Result<Arc<T>, DecodeError> {
    let mut unknown = Vec::new();
    // serde_ignored writes `?` for an Option layer: not part of the field path.
    let mut note =
        |path: serde_ignored::Path<'_>| unknown.push(field_path(&path.to_string().replace(".?", "").replace("?.", "")));
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let t: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().to_string();
        // A missing top-level field: name it as the field.
        let field = match field_path(&e.path().to_string()) {
            p if p == "." => message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
                .unwrap_or(".")
                .to_owned(),
            p => p,
        };
        let message = if field != "." && message.starts_with("missing field") {
            "is required".to_owned()
        } else {
            plain_serde_message(&message)
        };
        DecodeError::Field { field, message }
    })?;
    // `status` of objects read from files is not ours to judge; apiVersion
    // and kind were checked by `decode` (kube's derived types skip them).
    unknown.retain(|p| strict && !(p.starts_with("status") || p == "apiVersion" || p == "kind"));
    if unknown.is_empty() {
        Ok(Arc::new(t))
    } else {
        Err(DecodeError::UnknownFields(unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_pool_with_every_field() {
        let v = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p", "namespace": "metallb-system"},
            "spec": {"addresses": ["10.0.0.0/24"], "autoAssign": false, "avoidBuggyIPs": true,
                     "serviceAllocation": {"priority": 5, "namespaces": ["a"], "namespaceSelectors": [{"matchLabels": {"x": "y"}}],
                                           "serviceSelectors": [{"matchExpressions": [{"key": "k", "operator": "Exists"}]}]}}});
        let Some(Object::IPAddressPool(p)) = decode(v).unwrap() else {
            panic!()
        };
        assert_eq!(p.spec.avoid_buggy_ips, Some(true));
        assert_eq!(p.spec.service_allocation.as_ref().unwrap().priority, Some(5));
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let v = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/24"], "autoassign": true}});
        assert_eq!(
            decode(v).unwrap_err(),
            DecodeError::UnknownFields(vec!["spec.autoassign".into()])
        );
        let v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": "eighty"}]}});
        let e = decode(v).unwrap_err();
        assert_eq!(e.field(), Some("spec.ports[0].port"), "{e}");
        let v =
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"tpye": "LoadBalancer"}});
        assert_eq!(
            decode(v).unwrap_err(),
            DecodeError::UnknownFields(vec!["spec.tpye".into()])
        );
    }

    #[test]
    fn kinds() {
        let v = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAdressPool", "metadata": {"name": "p"}});
        assert!(matches!(decode(v), Err(DecodeError::UnknownKind { .. })));
        let v = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        assert!(decode(v).unwrap().is_none());
        assert_eq!(
            decode(json!({"kind": "Service"})).unwrap_err(),
            DecodeError::Missing("apiVersion")
        );
        assert_eq!(decode(json!([1])).unwrap_err(), DecodeError::NotAnObject);
    }

    #[test]
    fn v1beta1_peer_converts() {
        let v = json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "r"},
            "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "127.0.0.2", "holdTime": "30s"}});
        let Some(Object::BGPPeer(p)) = decode(v).unwrap() else {
            panic!()
        };
        assert_eq!(p.spec.peer_asn, Some(64501));
        assert_eq!(p.spec.hold_time.as_deref(), Some("30s"));
    }
}
