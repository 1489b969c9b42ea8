//! The cluster backend of the status sink: Service status written through
//! the status subresource (`status.loadBalancer.ingress`) and the
//! `metallb.io/ip-allocated-from-pool` annotation, as MetalLB writes them.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use lb_alloc::ServiceKey;
use serde_json::json;

use super::{Snapshot, StatusSink};
use crate::service::IP_ALLOCATED_FROM_POOL;
use crate::status::ServiceState;

/// Patches in flight at once (the API server is the floor: one connection
/// per patch would leave it idle between round trips).
const CONCURRENCY: usize = 8;

/// Why a status write failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the status of {failed} Service(s), first {first}: {error}")]
pub struct KubeStatusError {
    /// How many writes failed.
    pub failed: usize,
    /// The first that failed.
    pub first: ServiceKey,
    /// Its error.
    pub error: kube::Error,
}

/// The kube-rs backend of [`StatusSink`]. Its writes block on the tokio
/// runtime given: call [`StatusSink::apply`] off the runtime's workers (the
/// controller's loop does).
pub struct KubeStatus {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    current: BTreeMap<ServiceKey, ServiceState>,
    field_manager: String,
}

impl std::fmt::Debug for KubeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStatus")
            .field("current", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl KubeStatus {
    /// A sink for the controller of `class`, holding what the Services'
    /// own status says (read from a synced view first, so holders keep
    /// their addresses).
    pub fn new(client: kube::Client, runtime: tokio::runtime::Handle, view: &Snapshot, class: Option<&str>) -> Self {
        let current = view
            .status
            .iter()
            .filter_map(|(k, held)| {
                held.iter()
                    .find(|h| h.class.as_deref() == class)
                    .map(|h| (k.clone(), h.state.clone()))
            })
            .collect();
        Self {
            client,
            runtime,
            current,
            field_manager: "lb-controller".to_owned(),
        }
    }

    /// The same, writing as `manager` (the field manager the API server
    /// records: which replica wrote what).
    pub fn with_field_manager(mut self, manager: impl Into<String>) -> Self {
        self.field_manager = manager.into();
        self
    }

    /// Writes one Service's status and annotation; a Service gone
    /// meanwhile needs nothing.
    async fn write(
        client: kube::Client,
        manager: String,
        key: ServiceKey,
        state: Option<ServiceState>,
    ) -> Result<(), kube::Error> {
        let api: Api<Service> = Api::namespaced(client, key.namespace());
        let (ingress, pool) = match &state {
            Some(s) => (
                json!(s.ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>()),
                json!(s.pool),
            ),
            None => (serde_json::Value::Null, serde_json::Value::Null),
        };
        let pp = PatchParams {
            field_manager: Some(manager),
            ..PatchParams::default()
        };
        let status = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let annotation = json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: pool}}});
        let result = async {
            api.patch_status(key.name(), &pp, &Patch::Merge(&status)).await?;
            api.patch(key.name(), &pp, &Patch::Merge(&annotation)).await
        }
        .await;
        match result {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }
}

impl StatusSink for KubeStatus {
    type Error = KubeStatusError;

    fn current(&self) -> &BTreeMap<ServiceKey, ServiceState> {
        &self.current
    }

    fn apply(&mut self, changes: &[(ServiceKey, Option<ServiceState>)]) -> Result<(), KubeStatusError> {
        let client = self.client.clone();
        let results: Vec<(usize, Result<(), kube::Error>)> = self.runtime.block_on(
            futures::stream::iter(changes.iter().cloned().enumerate())
                .map(|(i, (key, state))| {
                    let (client, manager) = (client.clone(), self.field_manager.clone());
                    async move { (i, Self::write(client, manager, key, state).await) }
                })
                .buffer_unordered(CONCURRENCY)
                .collect(),
        );
        let mut failed: Vec<(usize, kube::Error)> = Vec::new();
        for (i, result) in results {
            let (key, state) = &changes[i];
            match result {
                Ok(()) => match state {
                    Some(s) => {
                        self.current.insert(key.clone(), s.clone());
                    }
                    None => {
                        self.current.remove(key);
                    }
                },
                Err(e) => failed.push((i, e)),
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        let count = failed.len();
        match failed.into_iter().next() {
            None => Ok(()),
            Some((i, error)) => Err(KubeStatusError {
                failed: count,
                first: changes[i].0.clone(),
                error,
            }),
        }
    }
}
