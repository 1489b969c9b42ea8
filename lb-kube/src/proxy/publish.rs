//! Ingress status in cluster mode: the addresses clients reach the proxy
//! at, written into `status.loadBalancer.ingress` of every Ingress it
//! serves (ingress-nginx's `--publish-status-address`), by one replica at a
//! time: the holder of a Lease. Ingresses of other classes are never
//! touched; one that stops being served keeps what it had (another proxy
//! may serve it next).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};

use crate::objects::Object;
use crate::source::Snapshot;

/// Writes the addresses into the status of the Ingresses served.
#[derive(Debug)]
pub struct Publisher {
    /// Where the addresses come from.
    addresses: Addresses,
    /// The Ingresses served, with their status as the view has it, and
    /// the status they should have.
    wanted: Mutex<Vec<(String, String, serde_json::Value, serde_json::Value)>>,
    wake: tokio::sync::Notify,
}

/// The addresses written.
#[derive(Debug, Clone)]
pub enum Addresses {
    /// These (IPs, or host names): `--publish-status-address`.
    Fixed(Vec<String>),
    /// Those of this Service's status (the LoadBalancer Service in front
    /// of the proxy): `--publish-service`. None yet: nothing is written.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Leader election for the status writer.
#[derive(Debug, Clone)]
pub struct Election {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (its Pod's name).
    pub identity: String,
}

impl Publisher {
    /// Starts the writer on `client`: every Ingress passed to
    /// [`Publisher::publish`] gets `addresses` in its status, written while
    /// this replica holds `election`'s Lease (always without one).
    pub async fn start(
        client: kube::Client,
        addresses: Addresses,
        election: Option<Election>,
    ) -> Result<Arc<Self>, String> {
        let publisher = Arc::new(Self {
            addresses,
            wanted: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        });
        let leading = match &election {
            Some(e) => {
                let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &e.name)
                    .with_namespace(&e.namespace)
                    .with_identity(&e.identity)
                    .with_field_manager(format!("lb-proxy/{}", e.identity))
                    .with_duration(15)
                    .with_grace(5)
                    .build()
                    .await
                    .map_err(|err| format!("Lease {}/{}: {err}", e.namespace, e.name))?;
                let (held, _task) = manager.watch().await;
                Some(held)
            }
            None => None,
        };
        let me = publisher.clone();
        let manager = match &election {
            Some(e) => format!("lb-proxy/{}", e.identity),
            None => "lb-proxy".to_owned(),
        };
        tokio::spawn(async move { me.run(client, leading, manager).await });
        Ok(publisher)
    }

    /// The Ingresses served now, with their status as the view has it:
    /// those whose status differs are written (by the leader).
    pub fn publish(&self, view: &Snapshot, table: &lb_route::RouteTable) {
        let served: std::collections::HashSet<(&str, &str), foldhash::fast::RandomState> = table
            .ingresses()
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .collect();
        let addresses = match &self.addresses {
            Addresses::Fixed(a) => a.clone(),
            Addresses::Service { namespace, name } => view
                .objects
                .iter()
                .find_map(|(_, o)| match o {
                    Object::Service(s)
                        if s.metadata.namespace.as_deref() == Some(namespace.as_str())
                            && s.metadata.name.as_deref() == Some(name.as_str()) =>
                    {
                        Some(s)
                    }
                    _ => None,
                })
                .and_then(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
                .map(|list| {
                    list.iter()
                        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut wanted = Vec::new();
        let desired = addresses_status(&addresses);
        for (_, o) in &view.objects {
            if addresses.is_empty() {
                break;
            }
            let Object::Ingress(i) = o else { continue };
            let ns = i.metadata.namespace.as_deref().unwrap_or("default");
            let name = i.metadata.name.as_deref().unwrap_or_default();
            if served.contains(&(ns, name)) {
                let status =
                    serde_json::to_value(i.status.as_ref().and_then(|s| s.load_balancer.as_ref())).unwrap_or_default();
                wanted.push((ns.to_owned(), name.to_owned(), status, desired.clone()));
            }
        }
        *self.wanted.lock().unwrap_or_else(PoisonError::into_inner) = wanted;
        self.wake.notify_one();
    }

    async fn run(
        self: Arc<Self>,
        client: kube::Client,
        mut leading: Option<tokio::sync::watch::Receiver<bool>>,
        manager: String,
    ) {
        loop {
            // An election that stopped (its task gone) leads nobody.
            let leads = leading
                .as_mut()
                .is_none_or(|l| l.has_changed().is_ok() && *l.borrow_and_update());
            if leads {
                let wanted = self.wanted.lock().unwrap_or_else(PoisonError::into_inner).clone();
                for (ns, name, seen, status) in wanted {
                    // As the watch shows it: nothing to do, no request.
                    if seen == status["loadBalancer"] {
                        continue;
                    }
                    let api: kube::Api<Ingress> = kube::Api::namespaced(client.clone(), &ns);
                    // Read fresh: the watch may lag our own last write.
                    let current = match api.get_status(&name).await {
                        Ok(i) => serde_json::to_value(i.status.and_then(|s| s.load_balancer)).unwrap_or_default(),
                        Err(e) => {
                            tracing::debug!(ingress = %format!("{ns}/{name}"), error = %e, "reading Ingress status");
                            continue;
                        }
                    };
                    if current == status["loadBalancer"] {
                        continue;
                    }
                    let patch = serde_json::json!({ "status": status });
                    match api
                        .patch_status(
                            &name,
                            &PatchParams {
                                field_manager: Some(manager.clone()),
                                ..PatchParams::default()
                            },
                            &Patch::Merge(&patch),
                        )
                        .await
                    {
                        Ok(_) => tracing::info!(ingress = %format!("{ns}/{name}"), "status: addresses written"),
                        Err(e) => {
                            tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "writing Ingress status")
                        }
                    }
                }
            }
            // Again on a new table, on a change of leadership, and every
            // 30 s (someone else may have changed a status).
            let changed = async {
                match leading.as_mut() {
                    Some(l) => {
                        if l.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }
}

/// The `status` an Ingress gets: each address as an IP or, when it is not
/// one, a host name.
fn addresses_status(addresses: &[String]) -> serde_json::Value {
    let ingress: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| match a.parse::<std::net::IpAddr>() {
            Ok(_) => serde_json::json!({ "ip": a }),
            Err(_) => serde_json::json!({ "hostname": a }),
        })
        .collect();
    serde_json::json!({ "loadBalancer": { "ingress": ingress } })
}
