//! Kubernetes Ingress routing as a pure, typed table.
//!
//! Feed it Ingresses (and IngressClasses) as the serde types of
//! [`Ingress`] / [`IngressClass`], which deserialize from the same YAML or
//! JSON as the API server's; get a [`RouteTable`] and a list of
//! [`Problem`]s naming the Ingress and field of anything invalid (an invalid
//! Ingress is left out whole; the others serve). Then ask the table where a
//! [`Request`] goes: a [`Decision`].
//!
//! Matching follows the Ingress v1 spec exactly: hosts exact or `*.`
//! wildcard of one label, case-insensitive, port and one trailing dot
//! ignored; Exact paths byte-equal, Prefix paths element-wise with the
//! trailing slash ignored; the longest rule path wins, Exact before Prefix
//! at equal length; conflicts go to the oldest Ingress. The request target
//! is parsed once into one canonical form ([`Target`]) that is matched and
//! forwarded alike. No I/O, no clock, no `unsafe`.
//!
//! That is the default, [`Mode::Strict`]. An IngressClass annotated
//! `lb.io/route-mode: ingress-nginx` ([`MODE_ANNOTATION`]) gets
//! [`Mode::IngressNginx`] instead: ingress-nginx's departures from the spec
//! (regex hosts, trailing-slash redirects, root-location annotations),
//! which [`RouteTable::lookup_traced`] reports as [`Quirks`] whenever they
//! decide a request.
#![forbid(unsafe_code)]

mod annotations;
mod bucket;
mod class;
mod host;
mod ingress;
mod lookup;
mod pathregex;
mod problem;
mod shard;
mod table;
mod target;
mod tls;

pub use annotations::{
    Affinity, BackendProtocol, BasicAuth, Canary, Cors, ExternalAuth, HeaderPattern, LoadBalance,
    PREFIX as ANNOTATION_PREFIX, Redirect, RouteOptions,
};
pub use class::{CONTROLLER, ClassConfig, DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION, MODE_ANNOTATION, Mode};
pub use host::{HostError, RuleHost, canonical_host, valid_authority};
pub use ingress::{
    HttpIngressPath, HttpIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTls, ObjectMeta, ServiceBackendPort, TypedLocalObjectReference,
};
pub use lookup::{Decision, Forward, Quirks, Request};
pub use problem::{Problem, Severity, Subject};
pub use shard::{BuildCache, RouteTable};
pub use table::{
    Backend, BackendPort, Build, Config, HOST_REGEX_BUDGET, IngressRef, PathKind, PortResolver, TABLE_REGEX_BUDGET,
    USE_REGEX,
};
pub use target::{EncodedSlash, PathPolicy, Target, TargetError};
pub use tls::SecretRef;
