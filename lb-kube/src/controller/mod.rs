//! The controller: snapshot → `lb-alloc` → status, once or following the
//! manifests directory.

pub mod metrics;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_alloc::{Allocator, Labels, Outcome, PoolSet, Request};
use serde::Serialize;

use crate::config;
use crate::objects::Object;
use crate::service::{self, FieldIssue};
use crate::source::file::FileSource;
use crate::source::{Problem, Snapshot};
use crate::status::{self, ServiceState, State, StateError};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifests directory (file mode).
    pub manifests: PathBuf,
    /// The state file; default `<manifests>/.lb/state.json`.
    pub state_file: Option<PathBuf>,
    /// Handle Services of this loadBalancerClass only (default: those without one).
    pub load_balancer_class: Option<String>,
    /// How often the directory is checked for changes (live mode).
    pub poll_interval: Duration,
}

impl Options {
    /// Options for a manifests directory, defaults otherwise.
    pub fn new(manifests: impl Into<PathBuf>) -> Self {
        Self {
            manifests: manifests.into(),
            state_file: None,
            load_balancer_class: None,
            poll_interval: Duration::from_millis(500),
        }
    }

    fn state_path(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| status::default_path(&self.manifests))
    }
}

/// One Service in the controller's report (the `--output json` contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceReport {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The addresses held; empty when none could be assigned.
    pub ips: Vec<IpAddr>,
    /// The pool they come from.
    pub pool: Option<String>,
    /// Why there are no (or fewer) addresses, and other things to fix.
    pub warnings: Vec<String>,
}

/// The result of one reconcile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// One entry per LoadBalancer Service, by namespace/name.
    pub services: Vec<ServiceReport>,
    /// Problems with the manifests.
    #[serde(skip)]
    pub problems: Vec<Problem>,
    /// Address counts per pool.
    #[serde(skip)]
    pub pool_stats: Vec<lb_alloc::PoolStats>,
}

/// Why the controller cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The manifests directory cannot be read.
    #[error("manifests directory {path}: {source}")]
    Manifests {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state file cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The controller's state between reconciles.
#[derive(Debug)]
pub struct Controller {
    options: Options,
    source: FileSource,
    alloc: Allocator,
    pools: PoolSet,
    state: State,
}

impl Controller {
    /// A controller over `options.manifests`, with the state file loaded.
    pub fn new(options: Options) -> Result<Self, Error> {
        let state = status::load(&options.state_path())?;
        Ok(Self {
            source: FileSource::new(&options.manifests),
            alloc: Allocator::with_class(options.load_balancer_class.clone()),
            pools: PoolSet::default(),
            state,
            options,
        })
    }

    /// Whether the manifests changed since the last reconcile.
    pub fn changed(&self) -> bool {
        self.source.changed()
    }

    /// Reads the manifests, assigns addresses and writes the state file
    /// (unless `dry_run`).
    pub fn reconcile(&mut self, dry_run: bool) -> Result<Report, Error> {
        let snapshot = self.source.read().map_err(|source| Error::Manifests {
            path: self.options.manifests.clone(),
            source,
        })?;
        let report = self.reconcile_snapshot(&snapshot);
        if !dry_run {
            status::store(&self.options.state_path(), &self.state)?;
        }
        Ok(report)
    }

    /// The reconcile itself, on a snapshot from any source.
    pub fn reconcile_snapshot(&mut self, snapshot: &Snapshot) -> Report {
        let mut problems = snapshot.problems.clone();
        self.pools = config::pools(snapshot, &self.pools, &mut problems);
        let ns_labels: HashMap<String, Labels> = snapshot
            .objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::Namespace(n) => Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default())),
                _ => None,
            })
            .collect();
        let no_labels = Labels::new();
        let mut requests: Vec<Request> = Vec::new();
        let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut blocked: Vec<(String, String, String)> = Vec::new();
        for (origin, obj) in &snapshot.objects {
            let Object::Service(svc) = obj else { continue };
            if !service::is_load_balancer(svc) {
                continue;
            }
            let ns = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let key = format!("{ns}/{}", svc.metadata.name.clone().unwrap_or_default());
            let current = match self.state.services.get(&key) {
                Some(s) => s.ips.clone(),
                None => service::status_ips(svc),
            };
            let (mut req, issues) = service::request(svc, ns_labels.get(&ns).unwrap_or(&no_labels), &current);
            let invalid = issues.iter().any(|i| i.error);
            for FieldIssue { field, message, error } in issues {
                let r = Some(crate::objects::object_ref(obj));
                let p = if error {
                    Problem::error(r, Some(field.clone()), message.clone())
                } else {
                    Problem::warning(r, Some(field.clone()), message.clone())
                };
                problems.push(Problem {
                    origin: origin.clone(),
                    ..p
                });
                notes
                    .entry(key.clone())
                    .or_default()
                    .push(format!("{field}: {message}"));
            }
            if invalid {
                // Keep what it holds; ask for nothing new until it is fixed.
                if current.is_empty() {
                    blocked.push((req.namespace.clone(), req.name.clone(), key.clone()));
                    continue;
                }
                req.requested_ips = current.clone();
                req.requested_pool = None;
            }
            requests.push(req);
        }
        // Services that exist but cannot be read keep what they hold, and so
        // does everything when a document could not be parsed at all.
        let seen: HashSet<String> = requests.iter().map(Request::key).collect();
        let unreadable: HashSet<String> = snapshot
            .unreadable
            .iter()
            .filter(|r| r.kind == "Service")
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        for (key, held) in &self.state.services {
            let keep = unreadable.contains(key) || !snapshot.complete;
            if seen.contains(key) || !keep {
                continue;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            let mut req = Request::new(ns, name);
            req.cluster_families = held.ips.iter().map(|&ip| lb_alloc::Family::of(ip)).collect();
            req.policy = if held.ips.len() == 2 {
                lb_alloc::FamilyPolicy::RequireDualStack
            } else {
                lb_alloc::FamilyPolicy::SingleStack
            };
            req.requested_ips = held.ips.clone();
            req.current_ips = held.ips.clone();
            req.load_balancer_class = self.options.load_balancer_class.clone();
            notes
                .entry(key.clone())
                .or_default()
                .push("manifest could not be read; keeping its addresses".into());
            requests.push(req);
        }

        let sync = self.alloc.sync(&self.pools, &requests);
        let mut state = State {
            version: 1,
            ..State::default()
        };
        let mut services = Vec::new();
        for (req, res) in requests.iter().zip(&sync.results) {
            let mut warnings = notes.remove(&req.key()).unwrap_or_default();
            if let Some((ips, why)) = &res.evicted {
                let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
                warnings.push(format!("released {}: {why}", ips.join(", ")));
            }
            warnings.extend(res.warnings.iter().map(ToString::to_string));
            let (ips, pool) = match &res.outcome {
                Outcome::Assigned(a) => {
                    state.services.insert(
                        req.key(),
                        ServiceState {
                            ips: a.ips.clone(),
                            pool: a.pool.clone(),
                        },
                    );
                    (a.ips.clone(), Some(a.pool.clone()))
                }
                Outcome::Pending(why) | Outcome::Ignored(why) => {
                    warnings.push(why.to_string());
                    (vec![], None)
                }
                _ => (vec![], None),
            };
            services.push(ServiceReport {
                namespace: req.namespace.clone(),
                name: req.name.clone(),
                ips,
                pool,
                warnings,
            });
        }
        for (namespace, name, key) in blocked {
            let warnings = notes.remove(&key).unwrap_or_default();
            services.push(ServiceReport {
                namespace,
                name,
                ips: vec![],
                pool: None,
                warnings,
            });
        }
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        self.state = state;
        Report {
            services,
            problems,
            pool_stats: self.alloc.pool_stats(),
        }
    }
}

/// Runs once: reconcile, write the state file, return the report.
pub fn run_once(options: Options) -> Result<Report, Error> {
    Controller::new(options)?.reconcile(false)
}

/// Follows the manifests directory until `shutdown` resolves: reconciles at
/// start and on every change; problems are logged, the last good
/// configuration stays in force. `on_report` sees every report.
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
    mut on_report: impl FnMut(&Report),
) -> Result<(), Error> {
    let interval = options.poll_interval;
    let mut controller = Controller::new(options)?;
    tokio::pin!(shutdown);
    let mut first = true;
    loop {
        if first || controller.changed() {
            first = false;
            match controller.reconcile(false) {
                Ok(report) => on_report(&report),
                Err(e) => tracing::error!(error = %e, "reconcile failed; keeping the last good state"),
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
