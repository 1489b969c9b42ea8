//! ServiceL2Status in cluster mode, as MetalLB's speakers write them: one
//! object per Service this node announces (`generateName: l2-`, in the
//! MetalLB namespace, labelled with the node and the Service, owned by the
//! speaker's Pod when the downward API names it), whose status names the
//! node and the interfaces; deleted when this node stops announcing the
//! Service. Objects of other nodes are never touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

use crate::objects::metallb::{InterfaceInfo, ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus};

/// The Service (namespace, name) → the interfaces it is announced on.
pub type Announced = BTreeMap<(String, String), Vec<String>>;

/// The label with the announcing node.
pub const NODE_LABEL: &str = "metallb.io/node";
/// The label with the Service's name.
pub const SERVICE_LABEL: &str = "metallb.io/service-name";
/// The label with the Service's namespace.
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";

/// Writes this node's ServiceL2Status objects.
#[derive(Debug)]
pub struct L2Status {
    wanted: Mutex<Option<Announced>>,
    wake: tokio::sync::Notify,
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

impl L2Status {
    /// Starts the writer for `node` in `namespace`.
    pub fn start(client: kube::Client, namespace: String, node: String, owner: Option<Owner>) -> Arc<Self> {
        let me = Arc::new(Self {
            wanted: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        });
        let writer = me.clone();
        tokio::spawn(async move {
            let api: Api<ServiceL2Status> = Api::namespaced(client, &namespace);
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
                            tracing::warn!(error = %e, retry_in = ?backoff, "writing ServiceL2Status");
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

async fn reconcile(
    api: &Api<ServiceL2Status>,
    node: &str,
    owner: Option<&Owner>,
    wanted: &Announced,
) -> Result<(), kube::Error> {
    let mine = api
        .list(&ListParams::default().labels(&format!("{NODE_LABEL}={node}")))
        .await?;
    let mut have: BTreeMap<(String, String), ServiceL2Status> = BTreeMap::new();
    for o in mine.items {
        let labels = o.metadata.labels.clone().unwrap_or_default();
        let key = (
            labels.get(SERVICE_NAMESPACE_LABEL).cloned().unwrap_or_default(),
            labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        );
        let name = o.metadata.name.clone().unwrap_or_default();
        // One object per Service: a second one (a crash between create and
        // bookkeeping) goes, and so does one owned by an earlier Pod of
        // this speaker (the garbage collector would take it later).
        let stale_owner = owner.is_some_and(|p| {
            o.metadata
                .owner_references
                .as_ref()
                .is_none_or(|refs| !refs.iter().any(|r| r.uid == p.uid))
        });
        if !wanted.contains_key(&key) || have.contains_key(&key) || stale_owner {
            api.delete(&name, &DeleteParams::default()).await?;
            tracing::info!(object = %name, service = %format!("{}/{}", key.0, key.1), "ServiceL2Status deleted");
            continue;
        }
        have.insert(key, o);
    }
    for ((ns, svc), interfaces) in wanted {
        let status = ServiceL2StatusStatus {
            node: Some(node.to_owned()),
            service_name: Some(svc.clone()),
            service_namespace: Some(ns.clone()),
            interfaces: interfaces.iter().map(|n| InterfaceInfo { name: n.clone() }).collect(),
        };
        let name = match have.get(&(ns.clone(), svc.clone())) {
            Some(o) if o.status.as_ref() == Some(&status) => continue,
            Some(o) => o.metadata.name.clone().unwrap_or_default(),
            None => {
                let mut o = ServiceL2Status::new("", ServiceL2StatusSpec {});
                o.metadata.name = None;
                o.metadata.generate_name = Some("l2-".to_owned());
                o.metadata.labels = Some(
                    [
                        (NODE_LABEL.to_owned(), node.to_owned()),
                        (SERVICE_LABEL.to_owned(), svc.clone()),
                        (SERVICE_NAMESPACE_LABEL.to_owned(), ns.clone()),
                    ]
                    .into(),
                );
                o.metadata.owner_references = owner.map(|p| {
                    vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                        ..Default::default()
                    }]
                });
                let created = api.create(&PostParams::default(), &o).await?;
                created.metadata.name.unwrap_or_default()
            }
        };
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(object = %name, service = %format!("{ns}/{svc}"), ?interfaces, "ServiceL2Status written");
    }
    Ok(())
}
