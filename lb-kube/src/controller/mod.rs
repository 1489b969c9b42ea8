//! The controller: snapshot → `lb-alloc` → status, once or following the
//! manifests directory.

pub mod metrics;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_alloc::{Allocator, Labels, Outcome, PoolSet, Request, ServiceKey};
use serde::Serialize;

use crate::config;
use crate::objects::Object;
use crate::service::{self, FieldIssue};
use crate::source::file::FileSource;
use crate::source::{Problem, Severity, Snapshot, Source, StatusSink};
use crate::status::{self, FileStatus, ServiceState, StateError};

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifests directory (file mode).
    pub manifests: PathBuf,
    /// The state file; default `<manifests>/.lb/state.json` (see
    /// [`status::default_path`]).
    pub state_file: Option<PathBuf>,
    /// Handle Services of this loadBalancerClass only (default: those without one).
    pub load_balancer_class: Option<String>,
    /// How often the directory is checked for changes (live mode).
    pub poll_interval: Duration,
    /// How long a Service must stay gone from the manifests before its
    /// addresses are released (live mode), so a file caught half-written
    /// releases nothing. Zero releases at once (as `--once` does).
    pub release_delay: Duration,
}

impl Options {
    /// Options for a manifests directory, defaults otherwise.
    pub fn new(manifests: impl Into<PathBuf>) -> Self {
        Self {
            manifests: manifests.into(),
            state_file: None,
            load_balancer_class: None,
            poll_interval: Duration::from_millis(500),
            release_delay: Duration::ZERO,
        }
    }

    /// The state file in use.
    pub fn state_path(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| status::default_path(&self.manifests, self.load_balancer_class.as_deref()))
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
    /// Whether this controller handles it (false: another loadBalancerClass's).
    #[serde(skip)]
    pub ours: bool,
    /// `metadata.uid`, when the Service was read (events name it).
    #[serde(skip)]
    pub uid: Option<String>,
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
    /// Services that are gone, with the addresses released.
    #[serde(skip)]
    pub released: Vec<(lb_alloc::ServiceKey, Vec<IpAddr>)>,
    /// False when the configuration has errors that no earlier version
    /// covers: every address is kept as it is and none is given out.
    #[serde(skip)]
    pub config_in_force: bool,
    /// True when only some Services changed and only they were looked at:
    /// `services` holds those alone, every other Service is as the last
    /// report said. `problems`, `pool_stats` and the counts are whole.
    #[serde(skip)]
    pub partial: bool,
    /// This controller's Services holding addresses.
    #[serde(skip)]
    pub assigned: usize,
    /// This controller's Services holding none.
    #[serde(skip)]
    pub pending: usize,
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
    /// The source cannot give a view.
    #[error(transparent)]
    Source(crate::source::SourceError),
    /// The metrics address cannot be bound.
    #[error("--metrics-listen {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The status sink failed to write (the changes are retried with the
    /// next reconcile).
    #[error("writing status: {0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
    /// The API server cannot be reached or configured.
    #[error("cluster: {0}")]
    Cluster(String),
    /// This replica led and lost its Lease: it stopped writing.
    #[error("lost the leader Lease; stopped writing (restart to stand by)")]
    LostLease,
    /// A reconcile panicked (a bug; the state file holds the last good state).
    #[error("internal error: a reconcile panicked")]
    Panicked,
}

/// The controller's state between reconciles: a source of views, a sink
/// for status, and the allocator. Generic over both so the same code runs
/// on files, on the API server, or in memory (tests).
#[derive(Debug)]
pub struct Controller<S: Source = FileSource, K: StatusSink = FileStatus> {
    options: Options,
    source: S,
    sink: K,
    alloc: Allocator,
    pools: PoolSet,
    /// What each Service holds, as last decided.
    held: BTreeMap<ServiceKey, ServiceState>,
    /// Decided changes not yet written to the sink (a failed write is
    /// retried with the next).
    unsaved: BTreeMap<ServiceKey, Option<ServiceState>>,
    /// When the writes that failed are tried again (backing off from one
    /// poll interval to [`RETRY_MAX`] while they keep failing).
    retry_at: Option<Instant>,
    retry_backoff: Duration,
    /// Held Services gone from the manifests, since when.
    missing_since: HashMap<ServiceKey, Instant>,
    /// Pools in force gone from the manifests, since when.
    pool_missing_since: HashMap<String, Instant>,
    /// The last reconcile found no pool at all and kept everything.
    no_pool: bool,
    /// The last request read well for each Service: what a Service that
    /// cannot be read now is held with, so nothing about it changes.
    last_requests: HashMap<ServiceKey, Request>,
    /// When the last reconcile ran.
    last_now: Option<Instant>,
    /// The source's version at the last read.
    read_version: Option<u64>,
    /// What the last whole reconcile leaves for following Service changes
    /// one by one; `None` when the next reconcile must be whole.
    follow: Option<Follow>,
}

/// What a whole reconcile leaves for the Service changes that follow it,
/// so a change to one Service costs that Service (not 10,000 re-read):
/// incremental updates live here, in the controller, because only it knows
/// which changes a single Service's request and assignment can absorb (the
/// source only knows what changed; lb-alloc assigns one Service in place).
#[derive(Debug, Default)]
struct Follow {
    /// Every Namespace's labels (pool namespace selectors).
    ns_labels: HashMap<String, Labels>,
    /// Services whose status is carried as it is, or that cannot be read:
    /// a change to them needs a whole reconcile.
    frozen: HashSet<ServiceKey>,
    /// Addresses other controllers hold, and those of carried Services:
    /// the allocator's reservations.
    foreign: Vec<(IpAddr, ServiceKey)>,
    carried: Vec<(IpAddr, ServiceKey)>,
    /// The problems beside those of Services' own fields, and those.
    problems: Vec<Problem>,
    service_problems: HashMap<ServiceKey, Vec<Problem>>,
    /// This controller's Services in the last report: whether each holds
    /// addresses; and how many do, and do not.
    listed: HashMap<ServiceKey, bool>,
    assigned: usize,
    pending: usize,
    /// When the last whole reconcile ran: one runs at least every
    /// [`WHOLE_EVERY`] while changes come.
    at: Option<Instant>,
}

impl Follow {
    /// Notes whether `key` is listed as ours and holding addresses
    /// (`None`: not ours), keeping the counts.
    fn list(&mut self, key: &ServiceKey, holds: Option<bool>) {
        let before = match holds {
            Some(h) => self.listed.insert(key.clone(), h),
            None => self.listed.remove(key),
        };
        for (state, delta) in [(before, -1i8), (holds, 1)] {
            let count = match state {
                Some(true) => &mut self.assigned,
                Some(false) => &mut self.pending,
                None => continue,
            };
            *count = if delta < 0 { count.saturating_sub(1) } else { *count + 1 };
        }
    }
}

/// How long Service changes are followed one by one before a whole
/// reconcile runs again anyway.
const WHOLE_EVERY: Duration = Duration::from_secs(600);

/// The state file of `options`, symlinks resolved. A `--state-file` whose
/// directory does not exist is refused (a typo would start from nothing
/// and renumber every Service); the default `.lb` is created as needed.
fn checked_state_path(options: &Options) -> Result<PathBuf, Error> {
    let path = status::resolve(&options.state_path());
    if let Some(explicit) = &options.state_file
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Error::State(StateError::Io {
            path: explicit.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("its directory {} does not exist", dir.display()),
            ),
        }));
    }
    Ok(path)
}

/// What a Service is kept with while no pool is defined at all.
const NO_POOL: &str = "no address pool is defined: addresses are kept as they are and none is given out until one is";

/// What a Service is kept with when it is not asked for.
const FROZEN: &str = "the address pool configuration has errors that no earlier version covers: \
                      addresses are kept as they are and none is given out until it is fixed";

impl Controller {
    /// A controller over `options.manifests`, with the state file locked
    /// (one controller writes it; another is refused) and loaded (its
    /// Services keep what it holds).
    pub fn new(options: Options) -> Result<Self, Error> {
        let path = checked_state_path(&options)?;
        let sink = FileStatus::open(&path, options.load_balancer_class.as_deref())?;
        let source = FileSource::new(&options.manifests).with_status_file(path);
        Ok(Self::with(options, source, sink))
    }

    /// A controller for dry runs ([`Controller::reconcile`] with `dry_run`)
    /// beside a running one: the state file is read without its lock, and
    /// a reconcile that would write fails.
    pub fn read_only(options: Options) -> Result<Self, Error> {
        let path = checked_state_path(&options)?;
        let sink = FileStatus::open_read_only(&path, options.load_balancer_class.as_deref())?;
        let source = FileSource::new(&options.manifests).with_status_file(path);
        Ok(Self::with(options, source, sink))
    }
}

impl<S: Source, K: StatusSink> Controller<S, K> {
    /// A controller reading views from `source` and writing status to
    /// `sink`; what the sink holds is what each Service holds at start.
    pub fn with(options: Options, source: S, sink: K) -> Self {
        let class = options.load_balancer_class.clone();
        Self {
            held: sink.current().clone(),
            source,
            sink,
            alloc: Allocator::with_class(class),
            pools: PoolSet::default(),
            options,
            unsaved: BTreeMap::new(),
            retry_at: None,
            retry_backoff: Duration::ZERO,
            missing_since: HashMap::new(),
            pool_missing_since: HashMap::new(),
            no_pool: false,
            last_requests: HashMap::new(),
            last_now: None,
            read_version: None,
            follow: None,
        }
    }

    /// The status sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// The source (to feed an in-memory one).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Whether the view may have changed since the last reconcile.
    pub fn changed(&self) -> bool {
        self.read_version != Some(self.source.version())
    }

    /// Whether decided status changes wait to be written (a write failed):
    /// the next reconcile retries them.
    pub fn unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// When a reconcile is due without any change: the end of a release
    /// delay, or the retry of writes that failed.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = self.retry_at.filter(|_| self.unsaved());
        // Holding everything for want of any pool: only a change (a pool
        // coming back) can end it.
        if self.no_pool {
            return retry;
        }
        self.missing_since
            .values()
            .chain(self.pool_missing_since.values())
            .map(|&t| t + self.options.release_delay)
            .chain(retry)
            .min()
    }

    /// Reads the view, assigns addresses and writes the status (unless
    /// `dry_run`).
    pub fn reconcile(&mut self, dry_run: bool) -> Result<Report, Error> {
        let now = Instant::now();
        let followed = if dry_run { None } else { self.reconcile_changes(now) };
        let report = match followed {
            Some(report) => report,
            None => {
                let version = self.source.version();
                let snapshot = self.source.view().map_err(|e| match e {
                    crate::source::SourceError::Directory { path, source } => Error::Manifests { path, source },
                    other => Error::Source(other),
                })?;
                self.read_version = Some(version);
                self.reconcile_whole(&snapshot, now)
            }
        };
        if !dry_run && !self.unsaved.is_empty() {
            let changes: Vec<(ServiceKey, Option<ServiceState>)> =
                self.unsaved.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let written = self.sink.apply(&changes);
            // What was written is done, even when some writes failed (one
            // Service's failure must not hold the others back).
            let current = self.sink.current();
            self.unsaved.retain(|k, v| current.get(k) != v.as_ref());
            if let Err(e) = written {
                // Tried again later, backing off while it keeps failing (a
                // Service a webhook refuses is not written twice a second).
                self.retry_backoff = (self.retry_backoff * 2).clamp(self.options.poll_interval, RETRY_MAX);
                self.retry_at = Some(Instant::now() + self.retry_backoff);
                // What was decided is still told (events, pool status).
                self.sink.report(&report);
                return Err(Error::Sink(Box::new(e)));
            }
            self.retry_backoff = Duration::ZERO;
            self.retry_at = None;
        }
        if !dry_run {
            self.sink.report(&report);
        }
        Ok(report)
    }

    /// Follows the source's changes since the last read, Service by
    /// Service, when they are changes a single Service's update absorbs: a
    /// new Service, or one whose request is unchanged (its status written
    /// back, a label no pool selects on), or one pending; another
    /// controller's addresses that no holder here and no waiting Service
    /// cares about. `None`: a whole reconcile is needed (configuration,
    /// Namespaces, a Service gone or edited so that it may give up an
    /// address another Service waits for, anything on hold).
    fn reconcile_changes(&mut self, now: Instant) -> Option<Report> {
        let follow = self.follow.as_ref()?;
        if follow
            .at
            .is_none_or(|t| now.saturating_duration_since(t) >= WHOLE_EVERY)
        {
            return None;
        }
        let delta = self.source.delta(self.read_version?)?;
        // Everything is looked at before anything changes: a change this
        // path cannot take leaves the state as it was.
        let mut foreign = follow.foreign.clone();
        let mut foreign_changed = false;
        let mut services = Vec::new();
        let mut new_namespaces: HashMap<String, Labels> = HashMap::new();
        for change in &delta.changes {
            match change.object.kind.as_str() {
                "Service" => {}
                // Kinds the controller does not read.
                "EndpointSlice" | "Node" | "Ingress" | "IngressClass" | "Secret" => continue,
                // A Namespace matters by its labels (pool selectors) alone:
                // its status, annotations or finalizers change nothing.
                "Namespace" => {
                    let labels = match &change.now {
                        Ok(objects) => match objects.first() {
                            Some(Object::Namespace(n)) => Some(n.metadata.labels.clone().unwrap_or_default()),
                            _ => None,
                        },
                        Err(_) => return None,
                    };
                    match (labels, follow.ns_labels.get(&change.object.name)) {
                        (Some(now), Some(before)) if now == *before => {}
                        // A new Namespace holds no Service yet: its labels
                        // are noted for the Services to come.
                        (Some(now), None) if !follow.listed.keys().any(|k| k.namespace() == change.object.name) => {
                            new_namespaces.insert(change.object.name.clone(), now);
                        }
                        _ => return None,
                    }
                    continue;
                }
                _ => return None,
            }
            let key = ServiceKey::new(&change.object.namespace, &change.object.name);
            if follow.frozen.contains(&key) {
                return None;
            }
            let Ok(objects) = &change.now else { return None };
            let holder = |ip: &IpAddr| !self.alloc.holders(*ip).is_empty();
            let mut theirs = Vec::new();
            self.foreign_of(&key, &change.status, holder, &mut theirs);
            let before: Vec<(IpAddr, ServiceKey)> = foreign.iter().filter(|(_, k)| *k == key).cloned().collect();
            if before != theirs {
                // Another controller taking an address held here, or giving
                // one back that a waiting Service may take: whole.
                let taken = theirs
                    .iter()
                    .any(|(ip, _)| holder(ip) && !before.iter().any(|(b, _)| b == ip));
                let given_back = before.iter().any(|(ip, _)| {
                    !theirs.iter().any(|(t, _)| t == ip) && self.pools.pools().iter().any(|p| p.contains(*ip))
                });
                if taken || given_back {
                    return None;
                }
                foreign.retain(|(_, k)| *k != key);
                foreign.extend(theirs);
                foreign_changed = true;
            }
            let known = self.held.contains_key(&key)
                || self.last_requests.contains_key(&key)
                || follow.listed.contains_key(&key);
            match objects.first() {
                Some(Object::Service(svc)) if service::is_load_balancer(svc) => services.push((key, svc, change)),
                // Gone, or no longer a LoadBalancer: releasing it is a
                // whole reconcile's (delays, waiting Services).
                _ if known => return None,
                _ => {}
            }
        }
        let no_labels = Labels::new();
        let mut requests = Vec::with_capacity(services.len());
        for (key, svc, change) in services {
            let name = key.to_string();
            let ours = svc.spec.as_ref().and_then(|s| s.load_balancer_class.as_ref())
                == self.options.load_balancer_class.as_ref();
            let current = match self.held.get(&key) {
                Some(s) => s.ips.clone(),
                None if ours => service::status_ips(svc)
                    .into_iter()
                    .filter(|ip| self.alloc.holders(*ip).iter().all(|h| *h == name))
                    .collect(),
                None => Vec::new(),
            };
            // A newcomer whose status shows addresses (a restore, a status
            // copied over) may contend for them: the whole reconcile's
            // order decides.
            if !self.held.contains_key(&key) && !current.is_empty() {
                return None;
            }
            let labels = new_namespaces
                .get(key.namespace())
                .or_else(|| follow.ns_labels.get(key.namespace()))
                .unwrap_or(&no_labels);
            let (req, issues) = service::request(svc, labels, &current);
            if issues.iter().any(|i| i.error) {
                return None;
            }
            // A holder whose request changed may give up an address.
            if self.held.contains_key(&key)
                && self
                    .last_requests
                    .get(&key)
                    .is_none_or(|last| *last != req.clone().with_current_ips(last.current_ips.clone()))
            {
                return None;
            }
            let own = change
                .status
                .iter()
                .find(|h| h.class == self.options.load_balancer_class)
                .map(|h| h.state.clone());
            requests.push((key, svc.metadata.uid.clone(), change.object.clone(), req, issues, own));
        }
        // In the order a whole reconcile visits them (most held first, then
        // older, then by namespace and name): several new Services in one
        // change contend as they would there.
        requests.sort_by(|a, b| {
            let key = |r: &Request| {
                (
                    std::cmp::Reverse(r.current_ips.len()),
                    r.created.is_none(),
                    r.created,
                    r.namespace.clone(),
                    r.name.clone(),
                )
            };
            key(&a.3).cmp(&key(&b.3))
        });

        let mut follow = self.follow.take()?;
        follow.ns_labels.extend(new_namespaces);
        if foreign_changed {
            self.alloc.set_reserved(foreign.iter().chain(&follow.carried).cloned());
            follow.foreign = foreign;
        }
        self.read_version = Some(delta.version);
        self.last_now = Some(now);
        let mut whole = false;
        let mut reports = Vec::with_capacity(requests.len());
        for (key, uid, object, req, issues, shown) in requests {
            let res = self.alloc.assign(&req);
            let new = match &res.outcome {
                Outcome::Assigned(a) => Some(ServiceState {
                    ips: a.ips.clone(),
                    pool: a.pool.clone(),
                }),
                _ => None,
            };
            let old = self.held.get(&key);
            // An address given up may go to a Service waiting for one.
            whole |= res.evicted.is_some()
                || old.is_some_and(|o| o.ips.iter().any(|ip| new.as_ref().is_none_or(|n| !n.ips.contains(ip))));
            if old != new.as_ref() || (!same_status(new.as_ref(), shown.as_ref()) && !self.unsaved.contains_key(&key)) {
                self.unsaved.insert(key.clone(), new.clone());
            }
            match &new {
                Some(n) => self.held.insert(key.clone(), n.clone()),
                None => self.held.remove(&key),
            };
            let mut warnings = Vec::new();
            let mut problems = Vec::new();
            for FieldIssue { field, message, .. } in issues {
                warnings.push(format!("{field}: {message}"));
                problems.push(Problem::warning(Some(object.clone()), Some(field), message));
            }
            match problems.is_empty() {
                true => follow.service_problems.remove(&key),
                false => follow.service_problems.insert(key.clone(), problems),
            };
            if let Some((ips, why)) = &res.evicted {
                warnings.push(format!("released {}: {why}", join(ips)));
            }
            warnings.extend(res.warnings.iter().map(ToString::to_string));
            if let Outcome::Pending(why) | Outcome::Ignored(why) = &res.outcome {
                warnings.push(why.to_string());
            }
            let ours = !matches!(res.outcome, Outcome::Ignored(_));
            follow.list(&key, ours.then_some(new.is_some()));
            self.last_requests.insert(key.clone(), req);
            reports.push(ServiceReport {
                namespace: key.namespace().to_owned(),
                name: key.name().to_owned(),
                ips: new.as_ref().map(|n| n.ips.clone()).unwrap_or_default(),
                pool: new.map(|n| n.pool),
                warnings,
                ours,
                uid,
            });
        }
        let problems = follow
            .problems
            .iter()
            .chain(follow.service_problems.values().flatten())
            .cloned()
            .collect();
        let (assigned, pending) = (follow.assigned, follow.pending);
        self.follow = Some(follow);
        if whole {
            return None;
        }
        reports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Some(Report {
            services: reports,
            problems,
            pool_stats: self.alloc.pool_stats(),
            released: Vec::new(),
            config_in_force: true,
            partial: true,
            assigned,
            pending,
        })
    }

    /// Pools in force that are gone from the view stay in force for the
    /// release delay (a pools file caught cut short releases nothing).
    fn keep_vanished_pools(&mut self, pools: &mut PoolSet, now: Instant, problems: &mut Vec<Problem>) {
        let delay = self.options.release_delay;
        let gone: Vec<lb_alloc::Pool> = self
            .pools
            .pools()
            .iter()
            .filter(|p| pools.get(p.name()).is_none())
            .cloned()
            .collect();
        // A missing pool back (or, below, a pool back after none at all):
        // the pools still missing are given the delay again, from now (pools
        // put back by hand one by one, a directory or a List applied pool by
        // pool, must not lose what the later pools hold).
        let back = self
            .pool_missing_since
            .keys()
            .any(|name| !gone.iter().any(|p| p.name() == name));
        self.pool_missing_since
            .retain(|name, _| gone.iter().any(|p| p.name() == name));
        if delay.is_zero() || gone.is_empty() {
            return;
        }
        if std::mem::take(&mut self.no_pool) || back {
            for t in self.pool_missing_since.values_mut() {
                *t = now;
            }
        }
        for pool in &gone {
            self.pool_missing_since.entry(pool.name().to_owned()).or_insert(now);
        }
        // One delay for all, from the latest to go: pools deleted one after
        // the other in one command stay, or go, together.
        let latest = self.pool_missing_since.values().max().copied().unwrap_or(now);
        let left = (latest + delay).saturating_duration_since(now);
        let mut kept = Vec::new();
        for pool in gone {
            if !left.is_zero() {
                problems.push(Problem::warning(
                    None,
                    None,
                    // The same words at every reconcile of the delay: said
                    // once in the log, not once per reconcile.
                    format!(
                        "pool {:?} was deleted; it keeps its holders for the release delay ({} ms) unless it comes back",
                        pool.name(),
                        delay.as_millis()
                    ),
                ));
                // It keeps its holders; it gives out nothing new.
                kept.push(pool.with_auto_assign(false));
            }
        }
        let (with_kept, errors) = PoolSet::build(pools.pools().iter().cloned().chain(kept));
        if errors.is_empty() {
            *pools = with_kept;
        }
    }

    /// Addresses the other controllers hold (the view's status of other
    /// classes), as reservations.
    fn foreign(&self, snapshot: &Snapshot) -> Vec<(IpAddr, ServiceKey)> {
        let ours: HashSet<IpAddr> = self.held.values().flat_map(|s| s.ips.iter().copied()).collect();
        let mut reserved = Vec::new();
        for (key, entries) in &snapshot.status {
            self.foreign_of(key, entries, |ip| ours.contains(ip), &mut reserved);
        }
        reserved
    }

    /// The addresses other controllers hold for the Service `key`, per its
    /// status `entries`; `ours` tells the addresses this one holds.
    fn foreign_of(
        &self,
        key: &ServiceKey,
        entries: &[crate::source::HeldStatus],
        ours: impl Fn(&IpAddr) -> bool,
        reserved: &mut Vec<(IpAddr, ServiceKey)>,
    ) {
        let own_class = &self.options.load_balancer_class;
        for h in entries.iter().filter(|h| h.class != *own_class) {
            // Both holding one address (a race at start): the class
            // that sorts first keeps it, as both controllers agree.
            let we_win = *own_class < h.class;
            for &ip in &h.state.ips {
                if !(we_win && ours(&ip)) {
                    reserved.push((ip, key.clone()));
                }
            }
        }
    }

    /// The reconcile itself, on a snapshot from any source, at `now`. The
    /// next [`Controller::reconcile`] reads the whole view again (the
    /// snapshot given here need not be the source's).
    pub fn reconcile_snapshot(&mut self, snapshot: &Snapshot, now: Instant) -> Report {
        let report = self.reconcile_whole(snapshot, now);
        self.follow = None;
        report
    }

    /// A whole reconcile of `snapshot`, the source's view: what it leaves
    /// lets the next reconcile follow Service changes one by one.
    fn reconcile_whole(&mut self, snapshot: &Snapshot, now: Instant) -> Report {
        self.follow = None;
        let mut problems = snapshot.problems.clone();
        let (mut pools, pools_complete) = config::pools(snapshot, &self.pools, &mut problems);
        self.keep_vanished_pools(&mut pools, now, &mut problems);
        let foreign_known = snapshot.status_complete;
        self.last_now = Some(now);
        // Services held without a request this round (they cannot be read
        // and none was read before): their status is carried as it is.
        let mut carried: BTreeMap<ServiceKey, ServiceState> = BTreeMap::new();
        let ns_labels: HashMap<String, Labels> = snapshot
            .objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::Namespace(n) => Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default())),
                _ => None,
            })
            .collect();
        // Who holds what, per the state file: the holder wins over a stale
        // status in a manifest.
        let holder_of: HashMap<IpAddr, &ServiceKey> = self
            .held
            .iter()
            .flat_map(|(k, s)| s.ips.iter().map(move |&ip| (ip, k)))
            .collect();
        let no_labels = Labels::new();
        let own_class = self.options.load_balancer_class.clone();
        let mut requests: Vec<Request> = Vec::new();
        let mut notes: BTreeMap<ServiceKey, Vec<String>> = BTreeMap::new();
        let mut blocked: Vec<ServiceKey> = Vec::new();
        let mut fresh: HashMap<ServiceKey, Request> = HashMap::new();
        let mut uids: HashMap<ServiceKey, String> = HashMap::new();
        // Problems about one Service are kept by Service, so a change that
        // is followed one by one replaces them; the rest stay as they are.
        let mut base_problems = Vec::new();
        let mut service_problems: HashMap<ServiceKey, Vec<Problem>> = HashMap::new();
        for p in &problems {
            match &p.object {
                Some(o) if o.kind == "Service" => service_problems
                    .entry(ServiceKey::new(&o.namespace, &o.name))
                    .or_default()
                    .push(p.clone()),
                _ => base_problems.push(p.clone()),
            }
        }
        for (origin, obj) in &snapshot.objects {
            let Object::Service(svc) = obj else { continue };
            if !service::is_load_balancer(svc) {
                continue;
            }
            let ns = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
            let key = ServiceKey::new(&ns, svc.metadata.name.as_deref().unwrap_or_default());
            if let Some(uid) = &svc.metadata.uid {
                uids.insert(key.clone(), uid.clone());
            }
            // What it holds: per this controller, else what its status
            // shows (a restart, a migration) when it is of this class.
            let ours = svc.spec.as_ref().and_then(|s| s.load_balancer_class.as_ref()) == own_class.as_ref();
            let current = match self.held.get(&key) {
                Some(s) => s.ips.clone(),
                None if ours => service::status_ips(svc)
                    .into_iter()
                    .filter(|ip| holder_of.get(ip).is_none_or(|&h| *h == key))
                    .collect(),
                None => Vec::new(),
            };
            let (req, issues) = service::request(svc, ns_labels.get(&ns).unwrap_or(&no_labels), &current);
            let invalid = issues.iter().any(|i| i.error);
            for FieldIssue { field, message, error } in issues {
                let r = Some(crate::objects::object_ref(obj));
                let p = if error {
                    Problem::error(r, Some(field.clone()), message.clone())
                } else {
                    Problem::warning(r, Some(field.clone()), message.clone())
                };
                let p = Problem {
                    origin: origin.clone(),
                    ..p
                };
                service_problems.entry(key.clone()).or_default().push(p.clone());
                problems.push(p);
                notes
                    .entry(key.clone())
                    .or_default()
                    .push(format!("{field}: {message}"));
            }
            if invalid {
                // Nothing about it changes until it is fixed: the last valid
                // request stays in force, or what it holds is carried.
                if let Some(last) = self.last_requests.get(&key) {
                    let mut last = last.clone();
                    last.current_ips = current;
                    requests.push(last);
                } else if let Some(held) = self.held.get(&key) {
                    carried.insert(key, held.clone());
                } else {
                    blocked.push(key);
                }
                continue;
            }
            fresh.insert(key, req.clone());
            requests.push(req);
        }
        // Held Services missing from the snapshot keep what they hold when
        // they exist but cannot be read, when the snapshot may be missing
        // objects, or until their release delay has passed.
        let seen: HashSet<ServiceKey> = requests
            .iter()
            .map(Request::key)
            .chain(blocked.iter().cloned())
            .chain(carried.keys().cloned())
            .collect();
        let unreadable: HashSet<ServiceKey> = snapshot
            .unreadable
            .iter()
            .filter(|r| r.kind == "Service")
            .map(|r| ServiceKey::new(&r.namespace, &r.name))
            .collect();
        // A Service that cannot be read whose name is unknown may be any.
        let keep_all = !snapshot.complete || !snapshot.releasable || unreadable.iter().any(|k| k.name().is_empty());
        self.missing_since
            .retain(|k, _| !seen.contains(k) && self.held.contains_key(k));
        for (key, held) in &self.held {
            if seen.contains(key) {
                continue;
            }
            let note = if unreadable.contains(key) || keep_all {
                // Kept for as long as it cannot be read, not on a timer.
                self.missing_since.remove(key);
                "it could not be read; keeping its addresses".to_owned()
            } else {
                let since = *self.missing_since.entry(key.clone()).or_insert(now);
                let left = (since + self.options.release_delay).saturating_duration_since(now);
                if left.is_zero() {
                    continue;
                }
                // The same words at every reconcile of the delay.
                format!(
                    "deleted or no longer a LoadBalancer of this class; its addresses are released after the release delay ({} ms) unless it comes back",
                    self.options.release_delay.as_millis()
                )
            };
            notes.entry(key.clone()).or_default().push(note);
            // Its last request, as it was: labels, sharing key, ports and
            // all, so the allocator keeps it exactly where it is.
            match self.last_requests.get(key) {
                Some(last) => {
                    let mut last = last.clone();
                    last.current_ips = held.ips.clone();
                    requests.push(last);
                }
                None => {
                    carried.insert(key.clone(), held.clone());
                }
            }
        }
        // What nobody may take: the other controllers' addresses, and those
        // of carried Services (unless a Service that reads well shares them).
        let foreign = self.foreign(snapshot);
        let requested: HashSet<ServiceKey> = requests.iter().map(Request::key).collect();
        let mut carried_reserved = Vec::new();
        for (key, held) in &carried {
            let shared = |ip: &IpAddr| {
                self.held
                    .iter()
                    .any(|(k, h)| k != key && requested.contains(k) && h.ips.contains(ip))
            };
            for ip in held.ips.iter().filter(|ip| !shared(ip)) {
                carried_reserved.push((*ip, key.clone()));
            }
        }
        self.alloc
            .set_reserved(foreign.iter().chain(&carried_reserved).cloned());
        // A file with errors whose earlier content is unknown may have held
        // a pool that Services hold addresses from: then nothing changes.
        let held_pool_missing = self.held.values().any(|h| pools.get(&h.pool).is_none());
        let pools_complete = pools_complete && (snapshot.releasable || !held_pool_missing);
        if !(pools_complete && foreign_known) {
            return self.hold_everything(requests, carried, blocked, notes, problems, FROZEN);
        }
        // No pool at all while Services hold addresses (every pool deleted
        // at once: a pruned GitOps directory, an uninstalled chart): like
        // MetalLB, change nothing until a pool exists again.
        if pools.is_empty() && !self.held.is_empty() {
            self.no_pool = true;
            let mut problems = problems;
            problems.push(Problem::warning(
                None,
                None,
                "no address pool is defined: every address is kept as it is, and none given out, until one is",
            ));
            return self.hold_everything(requests, carried, blocked, notes, problems, NO_POOL);
        }
        self.pools = pools;

        let sync = self.alloc.sync(&self.pools, &requests);
        let mut state = BTreeMap::new();
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
                    state.insert(
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
                ours: !matches!(res.outcome, Outcome::Ignored(_)),
                uid: uids.get(&req.key()).cloned(),
            });
        }
        push_carried(&mut services, &carried, &mut notes, None);
        let frozen: HashSet<ServiceKey> = carried.keys().chain(&blocked).cloned().collect();
        state.extend(carried);
        push_blocked(&mut services, blocked, &mut notes);
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        // What a Service's status shows must be what it holds: one that
        // shows otherwise (recreated under its name, its status edited or
        // cleared, a write that failed) is written again.
        let own = self.options.load_balancer_class.as_deref();
        for key in fresh.keys() {
            let want = state.get(key);
            if !same_status(want, snapshot.status_of(key, own)) && !self.unsaved.contains_key(key) {
                self.unsaved.insert(key.clone(), want.cloned());
            }
        }
        // Remember the requests read well; forget those of Services that
        // hold nothing any more.
        self.last_requests.extend(fresh);
        self.last_requests
            .retain(|k, _| state.contains_key(k) || requested.contains(k));
        let mut released = Vec::new();
        for (key, old) in &self.held {
            if !state.contains_key(key) {
                self.unsaved.insert(key.clone(), None);
                released.push((key.clone(), old.ips.clone()));
            } else if state.get(key) != Some(old) {
                self.unsaved.insert(key.clone(), state.get(key).cloned());
            }
        }
        for (key, new) in &state {
            if !self.held.contains_key(key) {
                self.unsaved.insert(key.clone(), Some(new.clone()));
            }
        }
        self.held = state;
        let listed: HashMap<ServiceKey, bool> = services
            .iter()
            .filter(|s| s.ours)
            .map(|s| (ServiceKey::new(&s.namespace, &s.name), !s.ips.is_empty()))
            .collect();
        let (assigned, pending) = counts(&listed);
        // Changes to Services alone can be followed one by one from here,
        // unless something is on hold: a view that may miss objects,
        // Services that cannot be read, releases waiting for their delay.
        // Nor when the other controllers' addresses reserved here depended
        // on what this reconcile gave up (an address both claimed, lost
        // here: it is reserved from the next reconcile on).
        let whole = snapshot.complete
            && snapshot.releasable
            && unreadable.is_empty()
            && self.missing_since.is_empty()
            && self.pool_missing_since.is_empty()
            && self.foreign(snapshot) == foreign;
        if whole {
            self.follow = Some(Follow {
                ns_labels,
                frozen,
                foreign,
                carried: carried_reserved,
                problems: base_problems,
                service_problems,
                listed,
                assigned,
                pending,
                at: Some(now),
            });
        }
        Report {
            services,
            problems,
            pool_stats: self.alloc.pool_stats(),
            released,
            config_in_force: true,
            partial: false,
            assigned,
            pending,
        }
    }

    /// The configuration cannot be trusted: every Service keeps what the
    /// state file gives it, nothing is released and nothing given out.
    fn hold_everything(
        &self,
        requests: Vec<Request>,
        carried: BTreeMap<ServiceKey, ServiceState>,
        blocked: Vec<ServiceKey>,
        mut notes: BTreeMap<ServiceKey, Vec<String>>,
        problems: Vec<Problem>,
        why: &str,
    ) -> Report {
        let mut services = Vec::new();
        for req in requests {
            if req.load_balancer_class != self.options.load_balancer_class {
                continue;
            }
            let key = req.key();
            let mut warnings = notes.remove(&key).unwrap_or_default();
            warnings.push(why.to_owned());
            let held = self.held.get(&key);
            services.push(ServiceReport {
                namespace: req.namespace,
                name: req.name,
                ips: held.map(|h| h.ips.clone()).unwrap_or_default(),
                pool: held.map(|h| h.pool.clone()),
                warnings,
                ours: true,
                uid: None,
            });
        }
        push_carried(&mut services, &carried, &mut notes, Some(why));
        push_blocked(&mut services, blocked, &mut notes);
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let assigned = services.iter().filter(|s| !s.ips.is_empty()).count();
        Report {
            pending: services.len() - assigned,
            assigned,
            services,
            problems,
            pool_stats: self.alloc.pool_stats(),
            released: Vec::new(),
            config_in_force: false,
            partial: false,
        }
    }
}

/// How many of the listed Services hold addresses, and how many none.
fn counts(listed: &HashMap<ServiceKey, bool>) -> (usize, usize) {
    let assigned = listed.values().filter(|&&a| a).count();
    (assigned, listed.len() - assigned)
}

/// Whether a Service's status shows what it holds (addresses in any order,
/// and the pool).
fn same_status(want: Option<&ServiceState>, have: Option<&ServiceState>) -> bool {
    match (want, have) {
        (None, None) => true,
        // At most one address per family: the same length and every one
        // found is the same set.
        (Some(w), Some(h)) => {
            w.pool == h.pool && w.ips.len() == h.ips.len() && w.ips.iter().all(|ip| h.ips.contains(ip))
        }
        _ => false,
    }
}

/// Services whose status is carried as it is (see `reconcile_snapshot`).
fn push_carried(
    services: &mut Vec<ServiceReport>,
    carried: &BTreeMap<ServiceKey, ServiceState>,
    notes: &mut BTreeMap<ServiceKey, Vec<String>>,
    extra: Option<&str>,
) {
    for (k, held) in carried {
        let mut warnings = notes.remove(k).unwrap_or_default();
        warnings.extend(extra.map(str::to_owned));
        services.push(ServiceReport {
            namespace: k.namespace().to_owned(),
            name: k.name().to_owned(),
            ips: held.ips.clone(),
            pool: Some(held.pool.clone()),
            warnings,
            ours: true,
            uid: None,
        });
    }
}

fn push_blocked(
    services: &mut Vec<ServiceReport>,
    blocked: Vec<ServiceKey>,
    notes: &mut BTreeMap<ServiceKey, Vec<String>>,
) {
    for key in blocked {
        services.push(ServiceReport {
            namespace: key.namespace().to_owned(),
            name: key.name().to_owned(),
            ips: vec![],
            pool: None,
            warnings: notes.remove(&key).unwrap_or_default(),
            ours: true,
            uid: None,
        });
    }
}

/// Runs once: reconcile, write the state file, return the report.
pub fn run_once(options: Options) -> Result<Report, Error> {
    Controller::new(options)?.reconcile(false)
}

/// Follows the manifests directory until `shutdown` resolves: reconciles at
/// start and on every change, once the directory has stayed the same for
/// one poll interval (an editor's save in several writes is read whole);
/// problems and changed Services are logged, the last good configuration
/// stays in force. With `metrics_listen`, serves `/metrics`, `/healthz` and
/// `/readyz` there (ready after the first reconcile); an address that
/// cannot be bound is an error before anything else is done. File I/O runs
/// on blocking threads, never on the runtime's workers; a shutdown during a
/// reconcile lets it finish (its state file is written whole) and returns.
pub async fn run(
    options: Options,
    metrics_listen: Option<std::net::SocketAddr>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let (gauges, telemetry) = serve_metrics(metrics_listen).await?;
    tokio::pin!(shutdown);
    let opened = tokio::task::spawn_blocking(move || Controller::new(options));
    let controller = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        c = opened => c.map_err(|_| Error::Panicked)??,
    };
    follow(controller, gauges, telemetry, shutdown).await
}

/// The controller's gauges and the telemetry behind `/metrics`, `/healthz`
/// and `/readyz`, served on `listen` when given (an address that cannot be
/// bound is an error).
async fn serve_metrics(
    listen: Option<std::net::SocketAddr>,
) -> Result<(metrics::Metrics, std::sync::Arc<crate::metrics::Telemetry>), Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    let gauges = metrics::Metrics::register(&mut registry);
    let telemetry = crate::metrics::Telemetry::new(registry);
    if let Some(addr) = listen {
        crate::metrics::start(addr, telemetry.clone())
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
    }
    Ok((gauges, telemetry))
}

/// Where cluster mode finds its API server and objects.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Cluster {
    /// A kubeconfig file; none: `$KUBECONFIG`, `~/.kube/config`, then the
    /// in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the metallb.io objects (MetalLB's `--namespace`),
    /// and of the leader Lease.
    pub namespace: String,
    /// Leader election: replicas compete for this Lease and only its holder
    /// writes. None: this replica writes alone.
    pub lease: Option<Lease>,
}

/// Leader election on a `coordination.k8s.io` Lease.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lease {
    /// The Lease's name (in [`Cluster::namespace`]).
    pub name: String,
    /// This replica's identity (the Pod's name in a cluster).
    pub identity: String,
    /// How long a holder that stops renewing keeps the Lease: a standby
    /// takes over within it.
    pub duration: Duration,
}

impl Lease {
    /// The Lease `name`, held by `identity`, for 15 s after each renewal
    /// (renewed 5 s before it runs out).
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
        }
    }
}

impl Cluster {
    /// The API server of `kubeconfig` (or the usual places), metallb.io
    /// objects in `namespace`, no leader election.
    pub fn new(kubeconfig: Option<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            kubeconfig,
            namespace: namespace.into(),
            lease: None,
        }
    }

    /// The same, electing a leader on `lease`.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// A client for the API server.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Cluster(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| Error::Cluster(e.to_string()))?
            }
            None => kube::Config::infer().await.map_err(|e| Error::Cluster(e.to_string()))?,
        };
        kube::Client::try_from(config).map_err(|e| Error::Cluster(e.to_string()))
    }
}

/// Cluster mode: [`run`] on the API server. Watches Services, Namespaces
/// and the metallb.io objects; once every watch has listed once (and, with
/// a [`Lease`], once this replica leads), reads what every Service's status
/// holds (so holders keep their addresses), then reconciles on every change
/// and writes status through the status subresource. A leader that loses
/// its Lease stops ([`Error::LostLease`]): restarted, it stands by. Writes
/// start only while a check on the API server that the Lease names this
/// replica stands (at most a second). On shutdown a leader releases its Lease; a standby
/// takes over at the latest when the Lease it last saw runs out.
pub async fn run_cluster(
    options: Options,
    cluster: Cluster,
    metrics_listen: Option<std::net::SocketAddr>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    use crate::source::cluster::{KubeSource, controller_watches};
    use crate::source::cluster_status::KubeStatus;
    let (gauges, telemetry) = serve_metrics(metrics_listen).await?;
    tokio::pin!(shutdown);
    let client = cluster.client().await?;
    // Standbys keep their watches current, so a takeover starts warm.
    let mut source = KubeSource::start(client.clone(), controller_watches(&cluster.namespace));
    let mut changes = source.subscribe();
    if !until(|| source.synced_of(ALLOCATION_KINDS), &mut changes, shutdown.as_mut()).await {
        return Ok(());
    }
    // A namespace that does not exist reads as one without pools: said.
    if !source.has("Namespace", &cluster.namespace) {
        tracing::warn!(
            namespace = %cluster.namespace,
            "the namespace of the address pools (--namespace) does not exist: no pool can be read from it, and no leader Lease held there"
        );
    }
    let mut leading = None;
    if let Some(lease) = &cluster.lease {
        let secs = lease.duration.as_secs().max(3);
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&cluster.namespace)
            .with_identity(&lease.identity)
            .with_field_manager(format!("lb-controller/{}", lease.identity))
            .with_duration(secs)
            // Renewed a third of the way through (a check then finds it
            // renewed well inside the two thirds writes rely on, even when
            // a renewal is slow to land on a busy API server).
            .with_grace((secs * 2 / 3).max(1))
            .build()
            .await
            .map_err(|e| Error::Cluster(format!("Lease {}: {e}", lease.name)))?;
        let (mut held, task) = manager.watch().await;
        // A standby is ready: synced, and able to take over.
        telemetry.set_ready(true);
        gauges.set_standby();
        tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting to lead");
        while !*held.borrow_and_update() {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                changed = held.changed() => {
                    if changed.is_err() {
                        return Err(Error::Cluster(format!("Lease {}: the election stopped", lease.name)));
                    }
                }
                // The election library makes the Lease when it starts only:
                // one deleted meanwhile is made again here (empty, so the
                // election takes it), or no replica would ever lead.
                () = tokio::time::sleep(lease.duration) => recreate_lease(&client, &cluster.namespace, &lease.name).await,
            }
        }
        tracing::info!(lease = %lease.name, identity = %lease.identity, "leading");
        // Decide on a store that follows the server: wait out failing
        // watches (they re-list when the server answers again), but not
        // while holding the Lease longer than it lasts: a replica whose
        // watches keep failing releases it (the election ends with its
        // channel) so that one that can follow the server takes over.
        let healthy = until(|| source.healthy_of(ALLOCATION_KINDS), &mut changes, shutdown.as_mut());
        let patience = lease.duration * 4;
        match tokio::time::timeout(patience, healthy).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(_) => {
                drop(held);
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                return Err(Error::Cluster(format!(
                    "the watches of {} kept failing for {:?} after this replica took the Lease {}: released it",
                    ALLOCATION_KINDS.join(", "),
                    patience,
                    lease.name
                )));
            }
        }
        leading = Some((held, task));
    }
    let (source, view) = tokio::task::spawn_blocking(move || {
        let view = source.view();
        (source, view)
    })
    .await
    .map_err(|_| Error::Panicked)?;
    let view = view.map_err(Error::Source)?;
    let manager = match &cluster.lease {
        Some(l) => format!("lb-controller/{}", l.identity),
        None => "lb-controller".to_owned(),
    };
    let sink = KubeStatus::new(
        client,
        tokio::runtime::Handle::current(),
        &view,
        options.load_balancer_class.as_deref(),
        &cluster.namespace,
    )
    .with_field_manager(manager);
    let sink = match &cluster.lease {
        Some(l) => sink.with_fence(l.name.clone(), l.identity.clone()),
        None => sink,
    };
    let deposed = sink.deposed();
    let controller = Controller::with(options, source, sink);
    let Some((mut held, task)) = leading else {
        return follow(controller, gauges, telemetry, shutdown).await;
    };
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost_flag = lost.clone();
    let stop = async move {
        // A Lease deleted under the election (which may not notice) or
        // taken by another, as a write's check found: stop as well.
        let found_deposed = async {
            while !deposed.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::select! {
            _ = &mut shutdown => {}
            _ = held.wait_for(|leads| !leads) => lost_flag.store(true, std::sync::atomic::Ordering::Release),
            _ = found_deposed => lost_flag.store(true, std::sync::atomic::Ordering::Release),
        }
        // Dropping the receiver ends the election: the Lease is released.
        drop(held);
    };
    let result = follow(controller, gauges, telemetry, stop).await;
    // The election task releases the Lease once its channel is closed.
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    if lost.load(std::sync::atomic::Ordering::Acquire) {
        return Err(Error::LostLease);
    }
    result
}

/// Makes the Lease `name` in `namespace` again, without a holder, if it
/// does not exist (another replica making it first is as good).
async fn recreate_lease(client: &kube::Client, namespace: &str, name: &str) {
    use k8s_openapi::api::coordination::v1::Lease as KubeLease;
    let leases: kube::Api<KubeLease> = kube::Api::namespaced(client.clone(), namespace);
    if let Ok(None) = leases.get_opt(name).await {
        let lease = KubeLease {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match leases.create(&kube::api::PostParams::default(), &lease).await {
            Ok(_) => tracing::warn!(lease = %name, "the leader Lease was deleted; made it again"),
            Err(e) => tracing::debug!(lease = %name, error = %e, "making the leader Lease again"),
        }
    }
}

/// The longest wait between two tries of status writes that keep failing.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The kinds allocation decides on: the controller waits for these to list
/// (and, taking over, to follow the server) before it decides. The others
/// it watches (advertisements, peers, communities, BFD profiles) only add
/// to what it reports.
const ALLOCATION_KINDS: &[&str] = &["Service", "Namespace", "IPAddressPool", "ConfigMap"];

/// Waits until `ready` holds, looking again at each change of the source
/// (and every 200 ms); false when `shutdown` comes first.
async fn until<F: std::future::Future<Output = ()>>(
    ready: impl Fn() -> bool,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    mut shutdown: std::pin::Pin<&mut F>,
) -> bool {
    while !ready() {
        tokio::select! {
            _ = &mut shutdown => return false,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    true
}

/// The loop of [`run`], on any source and sink: reconciles at start and
/// whenever the source's version moves (once it has settled) or a release
/// is due, until `shutdown` resolves.
pub async fn follow<S, K>(
    mut controller: Controller<S, K>,
    gauges: metrics::Metrics,
    telemetry: std::sync::Arc<crate::metrics::Telemetry>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error>
where
    S: Source + 'static,
    K: StatusSink + 'static,
{
    let interval = controller.options.poll_interval;
    // A source that announces its changes is followed as they come, and
    // its changes are whole (no settling).
    let mut changes = controller.source.changes();
    tokio::pin!(shutdown);
    let mut first = true;
    let mut last_error: Option<String> = None;
    let mut logged = Logged::default();
    loop {
        let (c, due) = blocking(controller, |c| {
            c.next_deadline().is_some_and(|t| t <= Instant::now()) || c.changed()
        })
        .await?;
        controller = c;
        if first || due {
            // Settle: wait until one poll interval passes without a change.
            if !first && changes.is_none() {
                // At most ten intervals: a directory that never settles is
                // read anyway.
                for _ in 0..10 {
                    let (c, before) = blocking(controller, |c| c.source.version()).await?;
                    controller = c;
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let (c, after) = blocking(controller, |c| c.source.version()).await?;
                    controller = c;
                    if after == before {
                        break;
                    }
                }
            }
            first = false;
            // Not raced against `shutdown`: a reconcile runs to its end.
            let (c, result) = blocking(controller, |c| c.reconcile(false)).await?;
            controller = c;
            match result {
                Ok(report) => {
                    if last_error.take().is_some() {
                        tracing::info!("reconciling again");
                    }
                    logged.log(&report);
                    // Stale is about the configuration: one Service's bad
                    // annotation is that Service's (its events say so).
                    let config_ok = !report.problems.iter().any(|p| {
                        p.severity == Severity::Error && p.object.as_ref().is_none_or(|o| o.kind != "Service")
                    });
                    gauges.update(&report, config_ok);
                    telemetry.set_ready(report.config_in_force);
                }
                Err(e) => {
                    // What is in force is not what the status says: stale,
                    // not ready, until a write succeeds; unless the API
                    // server only refused some Services' writes (a webhook,
                    // a quota): those wait, the rest of the work goes on.
                    let refused = matches!(&e, Error::Sink(s) if s
                        .downcast_ref::<crate::source::cluster_status::KubeStatusError>()
                        .is_some_and(|k| k.refused));
                    if !refused {
                        gauges.set_stale(true);
                        telemetry.set_ready(false);
                    }
                    // Said once, not at every poll while it lasts.
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::error!(error = %text, "reconcile failed; keeping the last good state");
                        last_error = Some(text);
                    }
                }
            }
        }
        let mut wait = interval;
        if let Some(t) = controller.next_deadline() {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        let announced = async {
            match &mut changes {
                // A closed channel (the source is gone) falls back to polling.
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
            _ = announced => {}
        }
    }
}

/// Runs `f` on the controller on a blocking thread.
async fn blocking<S, K, T>(
    mut c: Controller<S, K>,
    f: impl FnOnce(&mut Controller<S, K>) -> T + Send + 'static,
) -> Result<(Controller<S, K>, T), Error>
where
    S: Source + 'static,
    K: StatusSink + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let t = f(&mut c);
        (c, t)
    })
    .await
    .map_err(|_| Error::Panicked)
}

/// What was last logged, so a reconcile logs what changed, not everything.
#[derive(Debug, Default)]
struct Logged {
    problems: HashSet<String>,
    services: HashMap<(String, String), ServiceReport>,
}

impl Logged {
    fn log(&mut self, report: &Report) {
        let problems: HashSet<String> = report.problems.iter().map(ToString::to_string).collect();
        for p in &report.problems {
            let text = p.to_string();
            if self.problems.contains(&text) {
                continue;
            }
            // The level says error or warning; the text need not again.
            let plain = text
                .strip_prefix("error: ")
                .or_else(|| text.strip_prefix("warning: "))
                .unwrap_or(&text);
            match p.severity {
                Severity::Error => tracing::error!("{plain}"),
                Severity::Warning => tracing::warn!("{plain}"),
            }
        }
        self.problems = problems;
        for (service, ips) in &report.released {
            tracing::info!(service = %service, ips = %join(ips), "released");
        }
        // A partial report tells the Services it looked at; the others
        // are as they were.
        let first = self.services.is_empty() && !report.partial;
        if first {
            // This controller's Services (not another class's).
            tracing::info!(
                services = report.assigned + report.pending,
                assigned = report.assigned,
                pending = report.pending,
                "reconciled"
            );
        }
        let mut whole = (!report.partial).then(|| HashMap::with_capacity(report.services.len()));
        for s in &report.services {
            let key = (s.namespace.clone(), s.name.clone());
            // The first time, only what needs attention; then what changed:
            // the addresses, and the warnings, each on its own.
            let before = self.services.get(&key);
            let service = format!("{}/{}", s.namespace, s.name);
            let moved = before.is_none_or(|b| (&b.ips, &b.pool) != (&s.ips, &s.pool));
            if !first && moved {
                let pool = s.pool.as_deref().unwrap_or("");
                if s.ips.is_empty() {
                    tracing::info!(service = %service, "no address");
                } else {
                    tracing::info!(service = %service, ips = %join(&s.ips), pool = %pool, "assigned");
                }
            }
            if before.is_none_or(|b| b.warnings != s.warnings) {
                for w in &s.warnings {
                    tracing::warn!(service = %service, "{w}");
                }
            }
            match &mut whole {
                Some(services) => services.insert(key, s.clone()),
                None => self.services.insert(key, s.clone()),
            };
        }
        if let Some(services) = whole {
            self.services = services;
        }
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
