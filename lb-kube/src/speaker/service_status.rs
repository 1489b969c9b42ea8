//! ServiceL2Status and ServiceBGPStatus in cluster mode, as MetalLB's
//! speakers write them: one object per Service this node announces
//! (`generateName: l2-` or `bgp-`, in the MetalLB namespace, labelled with
//! the node and the Service, owned by the speaker's Pod when the downward
//! API names it), whose status names the node and the interfaces (L2) or
//! the peers the Service's prefixes are configured to go to (BGP); deleted
//! when this node stops announcing the Service. Objects of other nodes are
//! never touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::objects::metallb::{
    InterfaceInfo, ServiceBGPStatus, ServiceBGPStatusSpec, ServiceBGPStatusStatus, ServiceL2Status,
    ServiceL2StatusSpec, ServiceL2StatusStatus,
};

/// The Service (namespace, name) → the interfaces it is announced on (L2)
/// or the peers it goes to (BGP).
pub type Announced = BTreeMap<(String, String), Vec<String>>;

/// A kind of per-Service announcement status.
pub trait StatusKind:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Its status.
    type Status: Serialize + PartialEq + std::fmt::Debug + Send + Sync;
    /// Its objects' `generateName`.
    const PREFIX: &'static str;
    /// A new object without metadata.
    fn empty() -> Self;
    /// The status it holds.
    fn status(&self) -> Option<&Self::Status>;
    /// The status for `node` announcing `namespace/service` with `detail`
    /// (interfaces or peers).
    fn status_for(node: &str, namespace: &str, service: &str, detail: &[String]) -> Self::Status;
}

impl StatusKind for ServiceL2Status {
    type Status = ServiceL2StatusStatus;
    const PREFIX: &'static str = "l2-";
    fn empty() -> Self {
        ServiceL2Status::new("", ServiceL2StatusSpec {})
    }
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn status_for(node: &str, namespace: &str, service: &str, detail: &[String]) -> Self::Status {
        ServiceL2StatusStatus {
            node: Some(node.to_owned()),
            service_name: Some(service.to_owned()),
            service_namespace: Some(namespace.to_owned()),
            interfaces: detail.iter().map(|n| InterfaceInfo { name: n.clone() }).collect(),
        }
    }
}

impl StatusKind for ServiceBGPStatus {
    type Status = ServiceBGPStatusStatus;
    const PREFIX: &'static str = "bgp-";
    fn empty() -> Self {
        ServiceBGPStatus::new("", ServiceBGPStatusSpec {})
    }
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
    fn status_for(node: &str, namespace: &str, service: &str, detail: &[String]) -> Self::Status {
        ServiceBGPStatusStatus {
            node: Some(node.to_owned()),
            service_name: Some(service.to_owned()),
            service_namespace: Some(namespace.to_owned()),
            peers: detail.to_vec(),
        }
    }
}

/// The writer of this node's ServiceL2Status objects.
pub type L2Status = StatusWriter<ServiceL2Status>;
/// The writer of this node's ServiceBGPStatus objects.
pub type BgpStatus = StatusWriter<ServiceBGPStatus>;

/// The label with the announcing node.
pub const NODE_LABEL: &str = "metallb.io/node";
/// The label with the Service's name.
pub const SERVICE_LABEL: &str = "metallb.io/service-name";
/// The label with the Service's namespace.
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";

/// Writes this node's status objects of kind `K`.
#[derive(Debug)]
pub struct StatusWriter<K> {
    wanted: Mutex<Option<Announced>>,
    wake: tokio::sync::Notify,
    kind: std::marker::PhantomData<fn() -> K>,
}

/// The speaker's Pod, to own the objects (the downward API's `POD_NAME`
/// and `POD_UID`).
#[derive(Debug, Clone)]
pub struct Owner {
    /// The Pod's name.
    pub name: String,
    /// The Pod's UID.
    pub uid: String,
}

impl<K: StatusKind> StatusWriter<K> {
    /// Starts the writer for `node` in `namespace`.
    pub fn start(client: kube::Client, namespace: String, node: String, owner: Option<Owner>) -> Arc<Self> {
        let me = Arc::new(Self {
            wanted: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            kind: std::marker::PhantomData,
        });
        let writer = me.clone();
        tokio::spawn(async move {
            let api: Api<K> = Api::namespaced(client, &namespace);
            let mut backoff = Duration::from_secs(1);
            loop {
                let wanted = writer.wanted.lock().unwrap_or_else(PoisonError::into_inner).clone();
                // Again on a change, and every 30 s (someone may have
                // deleted or edited an object); after a failure, sooner
                // (1 s, doubling).
                let mut wait = Duration::from_secs(30);
                if let Some(wanted) = wanted {
                    match reconcile(&api, &node, owner.as_ref(), &wanted).await {
                        Ok(()) => backoff = Duration::from_secs(1),
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, kind = %K::kind(&()), "writing status objects");
                            wait = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
                let _ = tokio::time::timeout(wait, writer.wake.notified()).await;
            }
        });
        me
    }

    /// What this node announces now.
    pub fn publish(&self, announced: Announced) {
        let mut w = self.wanted.lock().unwrap_or_else(PoisonError::into_inner);
        if w.as_ref() != Some(&announced) {
            *w = Some(announced);
            self.wake.notify_one();
        }
    }
}

async fn reconcile<K: StatusKind>(
    api: &Api<K>,
    node: &str,
    owner: Option<&Owner>,
    wanted: &Announced,
) -> Result<(), kube::Error> {
    let mine = api
        .list(&ListParams::default().labels(&format!("{NODE_LABEL}={node}")))
        .await?;
    let mut have: BTreeMap<(String, String), K> = BTreeMap::new();
    for o in mine.items {
        let labels = o.meta().labels.clone().unwrap_or_default();
        let key = (
            labels.get(SERVICE_NAMESPACE_LABEL).cloned().unwrap_or_default(),
            labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        );
        let name = o.meta().name.clone().unwrap_or_default();
        // One object per Service: a second one (a crash between create and
        // bookkeeping) goes, and so does one owned by an earlier Pod of
        // this speaker (the garbage collector would take it later).
        let stale_owner = owner.is_some_and(|p| {
            o.meta()
                .owner_references
                .as_ref()
                .is_none_or(|refs| !refs.iter().any(|r| r.uid == p.uid))
        });
        if !wanted.contains_key(&key) || have.contains_key(&key) || stale_owner {
            api.delete(&name, &DeleteParams::default()).await?;
            tracing::info!(kind = %K::kind(&()), object = %name, service = %format!("{}/{}", key.0, key.1), "deleted");
            continue;
        }
        have.insert(key, o);
    }
    for ((ns, svc), detail) in wanted {
        let status = K::status_for(node, ns, svc, detail);
        let name = match have.get(&(ns.clone(), svc.clone())) {
            Some(o) if o.status() == Some(&status) => continue,
            Some(o) => o.meta().name.clone().unwrap_or_default(),
            None => {
                let mut o = K::empty();
                o.meta_mut().name = None;
                o.meta_mut().generate_name = Some(K::PREFIX.to_owned());
                o.meta_mut().labels = Some(
                    [
                        (NODE_LABEL.to_owned(), node.to_owned()),
                        (SERVICE_LABEL.to_owned(), svc.clone()),
                        (SERVICE_NAMESPACE_LABEL.to_owned(), ns.clone()),
                    ]
                    .into(),
                );
                o.meta_mut().owner_references = owner.map(|p| {
                    vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                        ..Default::default()
                    }]
                });
                let created = api.create(&PostParams::default(), &o).await?;
                created.meta().name.clone().unwrap_or_default()
            }
        };
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(kind = %K::kind(&()), object = %name, service = %format!("{ns}/{svc}"), ?detail, "written");
    }
    Ok(())
}
