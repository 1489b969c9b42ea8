//! The cluster backend of the status sink: Service status written through
//! the status subresource (`status.loadBalancer.ingress`) and the
//! `metallb.io/ip-allocated-from-pool` annotation, as MetalLB writes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use lb_alloc::ServiceKey;
use serde_json::json;

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::{Snapshot, StatusSink, lock};
use crate::controller::Report;
use crate::objects::IPAddressPool;
use crate::objects::metallb::{ConfigurationState, ConfigurationStateStatus, IPAddressPoolStatus};
use crate::service::IP_ALLOCATED_FROM_POOL;
use crate::source::Severity;
use crate::status::ServiceState;

/// Patches in flight at once (the API server is the floor: one connection
/// per patch would leave it idle between round trips).
const CONCURRENCY: usize = 8;

/// A check of the leader Lease, and until when it stands.
#[derive(Debug, Clone, Copy)]
struct Fenced {
    /// On the monotonic clock.
    until: std::time::Instant,
    /// On the wall clock, in Unix milliseconds.
    wall_until: i64,
}

impl Fenced {
    fn stands(&self) -> bool {
        std::time::Instant::now() < self.until && self.wall_left() > Duration::ZERO
    }

    /// What is left until the wall-clock bound: a write started under this
    /// check gives up by then, so none reaches the server long after it.
    fn wall_left(&self) -> Duration {
        let left = self
            .wall_until
            .saturating_sub(k8s_openapi::jiff::Timestamp::now().as_millisecond());
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }
}

/// The least time a check of the leader Lease must leave before its
/// wall-clock bound for writes to start under it (each gives up by then).
const MIN_WRITE_WINDOW: Duration = Duration::from_millis(500);

/// How long one check of the leader Lease stands for the writes after it
/// (a new Service's status is then one round trip, not two).
const FENCE_REUSE: Duration = Duration::from_secs(1);

/// Events in flight at once: they come after the status they tell of, in
/// the background, and must not slow the status writes of the next
/// reconcile down.
const EVENTS_IN_FLIGHT: usize = 1;

/// `IPAllocated` (and `AllocationFailed`) events one report publishes at
/// most: a first start over thousands of Services logs the rest as a count
/// instead of doubling the API server's work.
const MAX_ALLOCATED_EVENTS: usize = 100;

/// How often pool status and ConfigurationState are written again even
/// when unchanged (a pool or the ConfigurationState deleted and made again
/// gets its status back within this).
const REWRITE_EVERY: Duration = Duration::from_secs(600);

/// Reports waiting to be written at most (each waits for the one before).
const MAX_QUEUED_REPORTS: usize = 4;

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
    /// Every write that failed was refused by the API server for its own
    /// Service (a webhook, a validation, a quota): the others went through,
    /// and the server and the Lease were reachable.
    pub refused: bool,
}

/// The kube-rs backend of [`StatusSink`]. Its writes block on the tokio
/// runtime given: call [`StatusSink::apply`] off the runtime's workers (the
/// controller's loop does).
pub struct KubeStatus {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    current: BTreeMap<ServiceKey, ServiceState>,
    field_manager: String,
    /// Where the metallb.io objects live (pool status is written there).
    namespace: String,
    recorder: kube::runtime::events::Recorder,
    /// Why each pending Service holds nothing, as last said, so an
    /// unchanged reason is not reported again at every reconcile.
    told: HashMap<ServiceKey, String>,
    /// Services whose status was written since the last report.
    written: std::collections::HashSet<ServiceKey>,
    /// The report being written in the background, if any.
    reporting: Option<tokio::task::JoinHandle<()>>,
    /// Reports spawned and not yet written.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// When pool status and ConfigurationState were last written whatever
    /// was written before.
    refreshed: Option<std::time::Instant>,
    /// With leader election: the Lease (name, holder identity) that must
    /// still name this replica when writes start.
    fence: Option<(String, String)>,
    /// Until when the last fence check stands (see [`KubeStatus::fenced`]).
    fenced_until: Option<Fenced>,
    /// Set when a fence check found the Lease gone or held by another.
    deposed: Arc<std::sync::atomic::AtomicBool>,
    /// Each pool's status as last written.
    pools: Shared<HashMap<String, IPAddressPoolStatus>>,
    /// The ConfigurationState `controller` as last written.
    state: Shared<Option<ConfigurationStateStatus>>,
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
    pub fn new(
        client: kube::Client,
        runtime: tokio::runtime::Handle,
        view: &Snapshot,
        class: Option<&str>,
        namespace: &str,
    ) -> Self {
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
            recorder: recorder(client.clone(), None),
            client,
            runtime,
            current,
            field_manager: "lb-controller".to_owned(),
            namespace: namespace.to_owned(),
            told: HashMap::new(),
            written: std::collections::HashSet::new(),
            reporting: None,
            queued: Arc::default(),
            refreshed: None,
            fence: None,
            fenced_until: None,
            deposed: Arc::default(),
            pools: Shared::default(),
            state: Shared::default(),
        }
    }

    /// The same, writing as `manager` (the field manager the API server
    /// records: which replica wrote what; also the events' instance).
    pub fn with_field_manager(mut self, manager: impl Into<String>) -> Self {
        self.field_manager = manager.into();
        self.recorder = recorder(self.client.clone(), Some(self.field_manager.clone()));
        self
    }

    /// The same, writing only while the Lease `lease` (in the metallb.io
    /// namespace) names `identity`: checked on the API server before
    /// writes (a check stands for at most a second, see `fenced`), so a
    /// replica that lost it, or cannot reach the server, writes nothing.
    pub fn with_fence(mut self, lease: impl Into<String>, identity: impl Into<String>) -> Self {
        self.fence = Some((lease.into(), identity.into()));
        self
    }

    /// A flag set once a check finds the Lease deleted or held by another
    /// replica: this one must stop (the election library may not notice a
    /// deleted Lease).
    pub fn deposed(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.deposed.clone()
    }

    /// Whether this replica may write now (see [`KubeStatus::with_fence`]),
    /// and until when writes need no new check: at most [`FENCE_REUSE`]
    /// (and a sixth of the Lease's duration) after this one began, and
    /// never past the Lease's last renewal plus two thirds of its duration
    /// on the wall clock (a standby takes it only once the whole duration
    /// has run out by its clock; clocks must agree well within the third
    /// left). A process stopped and resumed finds its monotonic clock moved
    /// on and checks again; a paused VM whose monotonic clock stood still
    /// is caught by the wall clock.
    /// A Lease deleted or held by another sets `deposed`.
    async fn fenced(
        client: kube::Client,
        namespace: &str,
        fence: &(String, String),
        deposed: &std::sync::atomic::AtomicBool,
    ) -> Result<Fenced, kube::Error> {
        use k8s_openapi::api::coordination::v1::Lease;
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let first = std::time::Instant::now();
        loop {
            let start = std::time::Instant::now();
            let lease = match bounded("reading the leader Lease", leases.get(&fence.0)).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    deposed.store(true, std::sync::atomic::Ordering::Release);
                    return Err(kube::Error::Api(e));
                }
                other => other?,
            };
            let spec = lease.spec.unwrap_or_default();
            let holder = spec.holder_identity.unwrap_or_default();
            if holder != fence.1 {
                deposed.store(true, std::sync::atomic::Ordering::Release);
                return Err(kube::Error::Service(
                    format!("the leader Lease {} is held by {holder:?}, not this replica", fence.0).into(),
                ));
            }
            let (wall_until, reuse, duration) = match (spec.renew_time, spec.lease_duration_seconds) {
                (Some(renewed), Some(secs)) => {
                    let secs = i64::from(secs.max(0));
                    let reuse = Duration::from_millis(u64::try_from(secs * 1000 / 6).unwrap_or(0));
                    let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
                    (
                        renewed.0.as_millisecond() + secs * 2000 / 3,
                        reuse.min(FENCE_REUSE),
                        duration,
                    )
                }
                _ => (i64::MIN, Duration::ZERO, Duration::ZERO),
            };
            let fenced = Fenced {
                until: start + reuse,
                wall_until,
            };
            if fenced.wall_left() >= MIN_WRITE_WINDOW {
                if first.elapsed() >= Duration::from_millis(100) {
                    tracing::info!(waited = ?first.elapsed(), lease = %fence.0, "writes waited for the leader Lease's renewal");
                }
                return Ok(fenced);
            }
            // The Lease names this replica but was not renewed lately (a
            // renewal due any moment, an API server back from an outage):
            // nothing is written until it is renewed, and if that does not
            // happen within a third of its duration, a standby may be taking
            // it over: given up (the next reconcile checks again).
            if first.elapsed() >= duration / 3 {
                return Err(kube::Error::Service(
                    format!(
                        "the leader Lease {} was not renewed in the last two thirds of its duration; not writing until it is",
                        fence.0
                    )
                    .into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The events a report calls for, with MetalLB's reasons:
    /// `IPAllocated` for a Service whose status was just written with
    /// addresses, `ClearAssignment` when an address is taken back,
    /// `AllocationFailed` when the reason a Service holds nothing changes.
    /// A restart over assigned Services says nothing.
    fn events(&mut self, report: &Report) -> Vec<(ServiceKey, Option<String>, Event)> {
        let written = std::mem::take(&mut self.written);
        let mut allocated = 0usize;
        let mut failed_events = 0usize;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for s in report.services.iter().filter(|s| s.ours) {
            let key = ServiceKey::new(&s.namespace, &s.name);
            seen.insert(key.clone());
            for w in s.warnings.iter().filter(|w| w.starts_with("released ")) {
                out.push((
                    key.clone(),
                    s.uid.clone(),
                    event(EventType::Normal, "ClearAssignment", w.clone()),
                ));
            }
            let why = match s.ips.is_empty() {
                true => s.warnings.iter().rfind(|w| !w.starts_with("released ")).cloned(),
                false => None,
            };
            match why {
                Some(why) if self.told.get(&key) != Some(&why) => {
                    // Past the cap, not told: tried at the next report.
                    failed_events += 1;
                    if failed_events <= MAX_ALLOCATED_EVENTS {
                        out.push((
                            key.clone(),
                            s.uid.clone(),
                            event(EventType::Warning, "AllocationFailed", why.clone()),
                        ));
                        self.told.insert(key.clone(), why);
                    }
                }
                Some(_) => {}
                None => {
                    self.told.remove(&key);
                }
            }
            if !s.ips.is_empty() && written.contains(&key) {
                allocated += 1;
                if allocated > MAX_ALLOCATED_EVENTS {
                    continue;
                }
                let ips: Vec<String> = s.ips.iter().map(ToString::to_string).collect();
                let note = format!(
                    "Assigned IP [{}] from pool {}",
                    ips.join(", "),
                    s.pool.as_deref().unwrap_or("-")
                );
                out.push((
                    key.clone(),
                    s.uid.clone(),
                    event(EventType::Normal, "IPAllocated", note),
                ));
            }
        }
        // A partial report looked at some Services only: the written ones
        // it did not look at are told by a later one.
        if report.partial {
            self.written.extend(written.into_iter().filter(|k| !seen.contains(k)));
        } else {
            self.told.retain(|k, _| seen.contains(k));
        }
        if allocated > MAX_ALLOCATED_EVENTS {
            tracing::info!(
                assigned = allocated,
                events = MAX_ALLOCATED_EVENTS,
                "addresses assigned; IPAllocated events for the first ones only"
            );
        }
        if failed_events > MAX_ALLOCATED_EVENTS {
            tracing::info!(
                failed = failed_events,
                events = MAX_ALLOCATED_EVENTS,
                "Services without an address; AllocationFailed events for the first ones only (the rest at the next reconcile)"
            );
        }
        out
    }

    /// The ConfigurationState a report calls for, if it changed: Invalid
    /// with the errors (the last good configuration stays in force), or
    /// Valid.
    fn configuration_state(&mut self, report: &Report) -> Option<ConfigurationStateStatus> {
        // The configuration's errors, not those of users' Services (which
        // their events tell, in their own namespaces).
        let errors: Vec<String> = report
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .filter(|p| p.object.as_ref().is_none_or(|o| o.kind != "Service"))
            .map(ToString::to_string)
            .collect();
        let state = if errors.is_empty() {
            ConfigurationStateStatus {
                result: Some("Valid".into()),
                error_summary: None,
            }
        } else {
            let mut summary = errors.join("; ");
            if summary.len() > 4000 {
                summary = truncated(summary, 4000) + " …";
            }
            ConfigurationStateStatus {
                result: Some("Invalid".into()),
                error_summary: Some(summary),
            }
        };
        let mut last = lock(&self.state);
        if last.as_ref() == Some(&state) {
            return None;
        }
        *last = Some(state.clone());
        Some(state)
    }

    /// The pool status each pool's counters call for, where it changed.
    fn pool_status(&mut self, report: &Report) -> Vec<(String, IPAddressPoolStatus)> {
        let count = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for p in &report.pool_stats {
            let status = IPAddressPoolStatus {
                assigned_ipv4: count(p.in_use[0]),
                assigned_ipv6: count(p.in_use[1]),
                available_ipv4: count(p.available(lb_alloc::Family::V4)),
                available_ipv6: count(p.available(lb_alloc::Family::V6)),
            };
            let mut last = lock(&self.pools);
            if last.get(&p.name) != Some(&status) {
                last.insert(p.name.clone(), status.clone());
                out.push((p.name.clone(), status));
            }
        }
        out
    }

    /// Writes one Service's status and annotation; a Service gone
    /// meanwhile needs nothing.
    async fn write(
        client: kube::Client,
        manager: String,
        key: ServiceKey,
        state: Option<ServiceState>,
        limit: Duration,
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
        // One call, as MetalLB makes it: the status subresource takes the
        // annotation too.
        let patch = json!({
            "metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: pool}},
            "status": {"loadBalancer": {"ingress": ingress}},
        });
        let result = bounded_by(
            limit,
            "writing status",
            api.patch_status(key.name(), &pp, &Patch::Merge(&patch)),
        )
        .await;
        match result {
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }
}

/// How long one write may take: a request on a dead connection must not
/// hold the controller (or its step-down) for the kernel's TCP timeout.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `request`, failed with an error naming `what` when it takes longer
/// than [`WRITE_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    bounded_by(WRITE_TIMEOUT, what, request).await
}

/// [`bounded`] by `limit`.
async fn bounded_by<T>(
    limit: Duration,
    what: &str,
    request: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(limit, request).await.unwrap_or_else(|_| {
        Err(kube::Error::Service(
            format!("{what}: no answer in {:.1} s", limit.as_secs_f64()).into(),
        ))
    })
}

/// The events recorder of lb-controller (`instance`: which replica).
fn recorder(client: kube::Client, instance: Option<String>) -> kube::runtime::events::Recorder {
    let reporter = kube::runtime::events::Reporter {
        controller: "lb-controller".into(),
        instance,
    };
    kube::runtime::events::Recorder::new(client, reporter)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(mut text: String, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// A value the sink and its report task share.
type Shared<T> = std::sync::Arc<std::sync::Mutex<T>>;

/// An event of `reason` saying `note`.
fn event(type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        // Events hold at most 1 kB of note.
        note: Some(truncated(note, 1000)),
        action: "Allocate".into(),
        secondary: None,
    }
}

impl StatusSink for KubeStatus {
    type Error = KubeStatusError;

    fn report(&mut self, report: &Report) {
        // What was written is not read back (the server's copy may have been
        // deleted and made again, or edited): now and then, a whole report
        // writes pool status and ConfigurationState again.
        if !report.partial && self.refreshed.is_none_or(|t| t.elapsed() >= REWRITE_EVERY) {
            self.refreshed = Some(std::time::Instant::now());
            lock(&self.pools).clear();
            *lock(&self.state) = None;
        }
        let events = self.events(report);
        let pools = self.pool_status(report);
        let state = self.configuration_state(report);
        if events.is_empty() && pools.is_empty() && state.is_none() {
            return;
        }
        // Reports written one after the other; while the API server is too
        // slow for them, they do not pile up: this one's events are dropped
        // (counted) and its pool and configuration status left for the next
        // report to write.
        if self.queued.load(std::sync::atomic::Ordering::Acquire) >= MAX_QUEUED_REPORTS {
            let mut written_pools = lock(&self.pools);
            for (name, _) in &pools {
                written_pools.remove(name);
            }
            if state.is_some() {
                *lock(&self.state) = None;
            }
            tracing::warn!(
                events = events.len(),
                "the API server is behind on reports: events dropped, pool and configuration status written later"
            );
            return;
        }
        let queued = self.queued.clone();
        queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let manager = self.field_manager.clone();
        let (written_pools, written_state) = (self.pools.clone(), self.state.clone());
        let (recorder, client, namespace) = (self.recorder.clone(), self.client.clone(), self.namespace.clone());
        // Off the reconcile's path (status is what Services wait for), one
        // report after the other (a pool's counters never go back in time).
        let previous = self.reporting.take();
        self.reporting = Some(self.runtime.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let recorder = &recorder;
            let mut failures = Vec::new();
            let published = futures::stream::iter(events)
                .map(|(key, uid, ev)| async move {
                    // With the uid, `kubectl describe service` shows it.
                    let reference = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Service".into()),
                        namespace: Some(key.namespace().to_owned()),
                        name: Some(key.name().to_owned()),
                        uid,
                        ..ObjectReference::default()
                    };
                    bounded("publishing an event", recorder.publish(&ev, &reference))
                        .await
                        .map_err(|e| format!("event on {key}: {e}"))
                })
                .buffer_unordered(EVENTS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            failures.extend(published.into_iter().filter_map(Result::err));
            if let Some(state) = state {
                let api: Api<ConfigurationState> = Api::namespaced(client.clone(), &namespace);
                let object = json!({
                    "apiVersion": "metallb.io/v1beta1",
                    "kind": "ConfigurationState",
                    "metadata": {"name": "controller", "labels": {"metallb.io/component-type": "controller"}},
                    "spec": {},
                });
                let pp = PatchParams::apply(&manager).force();
                let written = async {
                    api.patch("controller", &pp, &Patch::Apply(&object)).await?;
                    // Explicit nulls: a merge patch leaves out what it omits.
                    let status = json!({"status": {"result": state.result, "errorSummary": state.error_summary}});
                    let pp = PatchParams {
                        field_manager: Some(manager.clone()),
                        ..PatchParams::default()
                    };
                    api.patch_status("controller", &pp, &Patch::Merge(&status)).await
                };
                if let Err(e) = bounded("writing ConfigurationState", written).await {
                    failures.push(format!("ConfigurationState controller: {e}"));
                    // Not written: the next report writes it again.
                    *lock(&written_state) = None;
                }
            }
            let api: Api<IPAddressPool> = Api::namespaced(client, &namespace);
            for (name, status) in pools {
                let patch = json!({"status": status});
                let pp = PatchParams {
                    field_manager: Some(manager.clone()),
                    ..PatchParams::default()
                };
                match bounded(
                    "writing pool status",
                    api.patch_status(&name, &pp, &Patch::Merge(&patch)),
                )
                .await
                {
                    // A pool deleted meanwhile has no status to write.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        failures.push(format!("status of IPAddressPool {name}: {e}"));
                        lock(&written_pools).remove(&name);
                    }
                    Ok(_) => {}
                }
            }
            if let Some(first) = failures.first() {
                // Best effort: said once per report that meets it.
                tracing::warn!(failed = failures.len(), first = %first, "reporting to the API server");
            }
            queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }));
    }

    fn current(&self) -> &BTreeMap<ServiceKey, ServiceState> {
        &self.current
    }

    fn apply(&mut self, changes: &[(ServiceKey, Option<ServiceState>)]) -> Result<(), KubeStatusError> {
        let client = self.client.clone();
        let (fence, namespace, manager) = (self.fence.clone(), self.namespace.clone(), self.field_manager.clone());
        // With a fence, whether the last check of the Lease still stands is
        // looked at before each write starts: a leader stopped mid-batch
        // (and replaced meanwhile) writes at most the CONCURRENCY writes
        // already in flight, not the rest of its batch. Writes are kept
        // CONCURRENCY in flight throughout (no barrier between slices).
        let mut fenced_until = self.fenced_until.take();
        let deposed = self.deposed.clone();
        let (results, fenced_until) = self.runtime.block_on(async move {
            let mut results: Vec<(usize, Result<(), kube::Error>)> = Vec::with_capacity(changes.len());
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut todo = changes.iter().enumerate();
            let mut stopped = false;
            loop {
                while !stopped && in_flight.len() < CONCURRENCY {
                    let Some((i, (key, state))) = todo.next() else { break };
                    if let Some(fence) = &fence
                        && !fenced_until.as_ref().is_some_and(Fenced::stands)
                    {
                        match Self::fenced(client.clone(), &namespace, fence, &deposed).await {
                            Ok(until) => fenced_until = Some(until),
                            Err(e) => {
                                // The rest is not written; this one carries why.
                                fenced_until = None;
                                results.push((i, Err(e)));
                                stopped = true;
                                break;
                            }
                        }
                    }
                    let (client, manager) = (client.clone(), manager.clone());
                    let (key, state) = (key.clone(), state.clone());
                    let limit = fenced_until.map_or(WRITE_TIMEOUT, |f| f.wall_left().min(WRITE_TIMEOUT));
                    in_flight.push(async move { (i, Self::write(client, manager, key, state, limit).await) });
                }
                match in_flight.next().await {
                    Some(done) => results.push(done),
                    None => break,
                }
            }
            (results, fenced_until)
        });
        self.fenced_until = fenced_until;
        // Changes never tried (after a failed fence check) count as failed.
        let tried: std::collections::HashSet<usize> = results.iter().map(|(i, _)| *i).collect();
        let mut untried = 0;
        for (key, state) in (0..changes.len()).filter(|i| !tried.contains(i)).map(|i| &changes[i]) {
            // Not written either (see below).
            if state.is_some() {
                self.current.remove(key);
            }
            untried += 1;
        }
        let mut failed: Vec<(usize, kube::Error)> = Vec::new();
        for (i, result) in results {
            let (key, state) = &changes[i];
            match result {
                Ok(()) => match state {
                    Some(s) if !s.ips.is_empty() => {
                        self.written.insert(key.clone());
                        self.current.insert(key.clone(), s.clone());
                    }
                    Some(s) => {
                        self.current.insert(key.clone(), s.clone());
                    }
                    None => {
                        self.current.remove(key);
                    }
                },
                Err(e) => {
                    // Not taken as written: a Service deleted and made again
                    // under its name would otherwise count as holding what
                    // was written to its former self, and the failed write
                    // as done (never tried again). A failed clearing keeps
                    // what was written before, which differs from it.
                    if state.is_some() {
                        self.current.remove(key);
                    }
                    failed.push((i, e));
                }
            }
        }
        failed.sort_by_key(|(i, _)| *i);
        let count = failed.len() + untried;
        let refused = untried == 0
            && failed
                .iter()
                .all(|(_, e)| matches!(e, kube::Error::Api(a) if (400..500).contains(&a.code) && a.code != 401 && a.code != 429));
        match failed.into_iter().next() {
            None => Ok(()),
            Some((i, error)) => Err(KubeStatusError {
                failed: count,
                first: changes[i].0.clone(),
                error,
                refused,
            }),
        }
    }
}
