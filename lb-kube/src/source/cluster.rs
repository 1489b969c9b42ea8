//! The cluster backend of the source seam: kube-rs watches on a Kubernetes
//! API server, yielding the same [`Snapshot`]s (objects, problems, status)
//! as the file backend.
//!
//! One watcher task per kind keeps that kind's objects (as the API server
//! sent them) in a shared store and moves a version counter on every
//! change; [`KubeSource::view`] decodes what changed since the last view
//! (objects are cached per `resourceVersion`, so an edit to one Service
//! decodes one Service), keeps each object's last good version when a new
//! one does not decode, and reads Service status from the Services
//! themselves (`status.loadBalancer.ingress` and
//! `metallb.io/ip-allocated-from-pool`). A kind is synced once its watch has
//! listed everything once; the view is synced when every kind is.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use super::{Change, Delta, HeldStatus, Problem, Snapshot, Source, SourceError, lock};
use crate::objects::legacy::LEGACY_CONFIGMAP;
use crate::objects::{self, Fields, Object, ObjectRef};
use crate::objects::{BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use crate::status::ServiceState;

/// A kind to watch, and where.
#[derive(Debug, Clone)]
pub struct Watch {
    resource: ApiResource,
    /// `None`: all namespaces (or a cluster-scoped kind).
    namespace: Option<String>,
    /// Only objects with this name (the legacy ConfigMap).
    name: Option<String>,
    /// A field selector (`type=kubernetes.io/tls` for Secrets).
    fields: Option<String>,
}

impl Watch {
    /// Every object of `K`, in every namespace.
    pub fn all<K: kube::Resource<DynamicType = ()>>() -> Self {
        Self {
            resource: ApiResource::erase::<K>(&()),
            namespace: None,
            name: None,
            fields: None,
        }
    }

    /// The objects of `K` in `namespace`.
    pub fn namespaced<K: kube::Resource<DynamicType = ()>>(namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_owned()),
            ..Self::all::<K>()
        }
    }

    /// Only the object named `name` (in the namespace given).
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Only objects matching a field selector (e.g. `type=kubernetes.io/tls`).
    pub fn fields(mut self, selector: &str) -> Self {
        self.fields = Some(selector.to_owned());
        self
    }

    /// The kind watched.
    pub fn kind(&self) -> &str {
        &self.resource.kind
    }
}

/// What the controller reads: Services, Namespaces (for pool namespace
/// selectors), the metallb.io kinds in `metallb_namespace` and the legacy
/// ConfigMap there.
pub fn controller_watches(metallb_namespace: &str) -> Vec<Watch> {
    let mut w = vec![Watch::all::<Service>(), Watch::all::<Namespace>()];
    w.extend(metallb_watches(metallb_namespace));
    w
}

/// What the proxy reads: Ingresses, IngressClasses, Services (named
/// ports), EndpointSlices (backends) and TLS Secrets (certificates).
pub fn proxy_watches() -> Vec<Watch> {
    vec![
        Watch::all::<Ingress>(),
        Watch::all::<IngressClass>(),
        Watch::all::<Service>(),
        Watch::all::<EndpointSlice>(),
        Watch::all::<Secret>().fields("type=kubernetes.io/tls"),
        // htpasswd files for basic auth (`kubectl create secret generic`).
        Watch::all::<Secret>().fields("type=Opaque"),
    ]
}

/// What the speaker reads: the controller's kinds (Services with their
/// status, pools, advertisements, peers), Nodes (candidates, membership
/// seeds), EndpointSlices (serving endpoints) and the basic-auth Secrets
/// of the MetalLB namespace (BGPPeer `passwordSecret`).
pub fn speaker_watches(metallb_namespace: &str) -> Vec<Watch> {
    let mut w = controller_watches(metallb_namespace);
    w.extend([
        Watch::all::<Node>(),
        Watch::all::<EndpointSlice>(),
        Watch::namespaced::<Secret>(metallb_namespace).fields("type=kubernetes.io/basic-auth"),
    ]);
    w
}

/// Every kind lb reads (speaker and proxy need the rest).
pub fn all_watches(metallb_namespace: &str) -> Vec<Watch> {
    let mut w = controller_watches(metallb_namespace);
    w.extend([
        Watch::all::<Node>(),
        Watch::all::<EndpointSlice>(),
        Watch::all::<Ingress>(),
        Watch::all::<IngressClass>(),
        Watch::all::<Secret>(),
    ]);
    w
}

fn metallb_watches(ns: &str) -> Vec<Watch> {
    vec![
        Watch::namespaced::<IPAddressPool>(ns),
        Watch::namespaced::<L2Advertisement>(ns),
        Watch::namespaced::<BGPAdvertisement>(ns),
        Watch::namespaced::<BGPPeer>(ns),
        Watch::namespaced::<Community>(ns),
        Watch::namespaced::<BFDProfile>(ns),
    ]
    .into_iter()
    // The legacy ConfigMap is read where MetalLB read it, and only when
    // that is the namespace lb is given (its Role grants no other).
    .chain((ns == LEGACY_CONFIGMAP.0).then(|| Watch::namespaced::<ConfigMap>(ns).named(LEGACY_CONFIGMAP.1)))
    .collect()
}

/// One kind's objects as the API server last sent them.
#[derive(Debug, Default)]
struct KindStore {
    objects: BTreeMap<ObjectRef, Arc<Value>>,
    /// Objects of a re-list in progress (replacing `objects` when done).
    listing: Option<BTreeMap<ObjectRef, Arc<Value>>>,
    /// Listed completely at least once.
    synced: bool,
    /// The last watch error, while it lasts.
    error: Option<String>,
    /// The server does not serve the kind (404 on list): no objects.
    missing: bool,
}

impl KindStore {
    /// Listed once, and not failing now.
    fn healthy(&self) -> bool {
        self.synced && self.error.is_none()
    }
}

/// A kind's store as a view reads it.
struct KindCopy {
    kind: String,
    objects: Vec<(ObjectRef, Arc<Value>)>,
    synced: bool,
    error: Option<String>,
    missing: bool,
}

/// The changes of the last while, for [`Source::delta`].
#[derive(Debug, Default)]
struct ChangeLog {
    /// The version each change moved the source to, the kind (an index
    /// into the watches) and the object changed; `None`: more than one
    /// object may have changed (a re-list, a watch failing or recovering).
    entries: VecDeque<(u64, usize, Option<ObjectRef>)>,
    /// Changes up to this version are no longer in `entries`.
    dropped_through: u64,
}

/// How many changes the log keeps: a consumer further behind reads the
/// whole view.
const LOG_CAPACITY: usize = 4096;

impl ChangeLog {
    fn push(&mut self, version: u64, kind: usize, object: Option<ObjectRef>) {
        if self.entries.len() == LOG_CAPACITY
            && let Some((v, _, _)) = self.entries.pop_front()
        {
            self.dropped_through = v;
        }
        self.entries.push_back((version, kind, object));
    }

    /// The objects changed after `since`, each once, or `None` when that
    /// cannot be told.
    fn since(&self, since: u64) -> Option<Vec<(usize, ObjectRef)>> {
        if since < self.dropped_through {
            return None;
        }
        let mut out = std::collections::HashSet::new();
        for (v, kind, object) in self.entries.iter().rev() {
            if *v <= since {
                break;
            }
            out.insert((*kind, object.clone()?));
        }
        Some(out.into_iter().collect())
    }
}

/// What the watcher tasks share with the source.
#[derive(Debug)]
struct Shared {
    /// Each kind's store; the versions move and the log grows under it.
    kinds: Mutex<Vec<KindStore>>,
    log: Mutex<ChangeLog>,
    /// Moves on every change to any kind but EndpointSlices.
    objects_version: AtomicU64,
    /// Moves on every change to EndpointSlices.
    endpoints_version: AtomicU64,
    /// Counts changes, for those who wait for the next one.
    changes: tokio::sync::watch::Sender<u64>,
}

/// A decoded object, for the `resourceVersion` it was decoded from.
#[derive(Debug)]
struct Decoded {
    resource_version: String,
    /// The objects it yields (a legacy ConfigMap yields its pools too), or
    /// the problems that keep it from being used.
    result: Result<Arc<Vec<Object>>, Vec<Problem>>,
}

/// The kube-rs backend of [`Source`]. Dropping it stops its watches.
#[derive(Debug)]
pub struct KubeSource {
    shared: Arc<Shared>,
    watches: Vec<Watch>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    decoded: HashMap<ObjectRef, Decoded>,
    last_good: HashMap<ObjectRef, Arc<Vec<Object>>>,
}

impl KubeSource {
    /// Starts watching `watches` through `client` (on the current tokio
    /// runtime).
    pub fn start(client: kube::Client, watches: Vec<Watch>) -> Self {
        let shared = Arc::new(Shared {
            kinds: Mutex::new(watches.iter().map(|_| KindStore::default()).collect()),
            log: Mutex::new(ChangeLog::default()),
            objects_version: AtomicU64::new(0),
            endpoints_version: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
        });
        let tasks = watches
            .iter()
            .enumerate()
            .map(|(i, w)| tokio::spawn(watch(client.clone(), w.clone(), i, shared.clone())))
            .collect();
        Self {
            shared,
            watches,
            tasks,
            decoded: HashMap::new(),
            last_good: HashMap::new(),
        }
    }

    /// A receiver that sees every change to the watched kinds
    /// (`changed().await` resolves after the next one).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Whether an object of `kind` named `name` is in the store (any
    /// namespace).
    pub fn has(&self, kind: &str, name: &str) -> bool {
        let kinds = lock(&self.shared.kinds);
        self.watches
            .iter()
            .zip(kinds.iter())
            .filter(|(w, _)| w.kind() == kind)
            .any(|(_, k)| k.objects.keys().any(|r| r.name == name))
    }

    /// Whether every watch has listed its kind once.
    pub fn synced(&self) -> bool {
        self.all_of(None, |k| k.synced)
    }

    /// Whether every watch has listed once and none is failing now: what
    /// a standby waits for before it takes over, so it does not decide on
    /// a store that stopped following the server.
    pub fn healthy(&self) -> bool {
        self.all_of(None, KindStore::healthy)
    }

    /// [`KubeSource::synced`] for the watches of `kinds` only (a consumer
    /// that can decide without the others does not wait for them).
    pub fn synced_of(&self, kinds: &[&str]) -> bool {
        self.all_of(Some(kinds), |k| k.synced)
    }

    /// [`KubeSource::healthy`] for the watches of `kinds` only.
    pub fn healthy_of(&self, kinds: &[&str]) -> bool {
        self.all_of(Some(kinds), KindStore::healthy)
    }

    /// Whether `holds` of the store of every watch (of `kinds`, if given).
    fn all_of(&self, kinds: Option<&[&str]>, holds: impl Fn(&KindStore) -> bool) -> bool {
        let stores = lock(&self.shared.kinds);
        self.watches
            .iter()
            .zip(stores.iter())
            .filter(|(w, _)| kinds.is_none_or(|kinds| kinds.contains(&w.kind())))
            .all(|(_, k)| holds(k))
    }

    fn decode(&mut self, r: &ObjectRef, value: &Arc<Value>) -> &Decoded {
        let rv = value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let fresh = self.decoded.get(r).is_none_or(|d| d.resource_version != rv);
        if fresh {
            let result = decode_one(r, Value::clone(value)).map(Arc::new);
            self.decoded.insert(
                r.clone(),
                Decoded {
                    resource_version: rv.to_owned(),
                    result,
                },
            );
        }
        &self.decoded[r]
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Decodes one object as the API server sent it (unknown fields ignored:
/// the server validated them), converting the legacy ConfigMap.
fn decode_one(r: &ObjectRef, value: Value) -> Result<Vec<Object>, Vec<Problem>> {
    match objects::decode_as(value, Fields::Lenient) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(obj)) => {
            let mut objs = vec![obj];
            let mut problems = Vec::new();
            if let Object::ConfigMap(cm) = &objs[0] {
                let converted = objects::legacy::convert(cm, r, &mut problems, None);
                objs.extend(converted);
            }
            if problems.is_empty() { Ok(objs) } else { Err(problems) }
        }
        Err(e) => Err(vec![Problem::error(
            Some(r.clone()),
            e.field().map(str::to_owned),
            e.message(),
        )]),
    }
}

impl Source for KubeSource {
    fn view(&mut self) -> Result<Snapshot, SourceError> {
        let mut snap = Snapshot::empty();
        // The versions before reading: a change during the read moves them
        // again, so it is read next time.
        snap.objects_version = self.shared.objects_version.load(Ordering::Acquire);
        snap.endpoints_version = self.shared.endpoints_version.load(Ordering::Acquire);
        // Copied out under the lock (cheap: shared values), decoded after.
        let kinds: Vec<KindCopy> = {
            let kinds = lock(&self.shared.kinds);
            self.watches
                .iter()
                .zip(kinds.iter())
                .map(|(w, k)| KindCopy {
                    kind: w.kind().to_owned(),
                    objects: k.objects.iter().map(|(r, v)| (r.clone(), v.clone())).collect(),
                    synced: k.synced,
                    error: k.error.clone(),
                    missing: k.missing,
                })
                .collect()
        };
        let mut endpoints = BTreeMap::new();
        let mut good: HashMap<ObjectRef, Arc<Vec<Object>>> = HashMap::new();
        for KindCopy {
            kind,
            objects,
            synced,
            error,
            missing,
        } in kinds
        {
            if missing {
                snap.problems.push(Problem::warning(
                    None,
                    None,
                    format!(
                        "the API server does not serve {kind} (is its CRD installed? kubectl apply -f deploy/crds.yaml)"
                    ),
                ));
            }
            snap.synced &= synced;
            if let Some(e) = error {
                snap.problems.push(Problem::warning(
                    None,
                    None,
                    format!("watching {kind}: {e}; retrying, the last objects listed stay in force"),
                ));
            }
            for (r, value) in objects {
                let result = self.decode(&r, &value).result.clone();
                let objs = match result {
                    Ok(objs) => objs,
                    Err(mut problems) => {
                        let kept = self.last_good.get(&r).cloned();
                        if kept.is_some()
                            && let Some(last) = problems.last_mut()
                        {
                            last.message.push_str(super::kept_note(true));
                        }
                        snap.problems.extend(problems);
                        match kept {
                            Some(objs) => objs,
                            None => {
                                snap.unreadable.push(r);
                                continue;
                            }
                        }
                    }
                };
                for o in objs.iter() {
                    match o {
                        Object::EndpointSlice(_) => {
                            endpoints.insert(objects::object_ref(o), o.clone());
                        }
                        Object::Service(svc) => {
                            if let Some((key, held)) = held_status(svc) {
                                snap.status.entry(key).or_default().push(held);
                            }
                            snap.objects.push((None, o.clone()));
                        }
                        _ => snap.objects.push((None, o.clone())),
                    }
                }
                good.insert(r, objs);
            }
        }
        self.decoded
            .retain(|r, _| good.contains_key(r) || snap.unreadable.contains(r));
        self.last_good = good;
        snap.endpoints = Arc::new(endpoints);
        Ok(snap)
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.subscribe())
    }

    fn delta(&mut self, since: u64) -> Option<Delta> {
        let (version, changed) = {
            let kinds = lock(&self.shared.kinds);
            let log = lock(&self.shared.log);
            let version = self.shared.objects_version.load(Ordering::Acquire)
                + self.shared.endpoints_version.load(Ordering::Acquire);
            let changed: Vec<(ObjectRef, Option<Arc<Value>>)> = log
                .since(since)?
                .into_iter()
                .map(|(kind, r)| {
                    let value = kinds.get(kind).and_then(|k| k.objects.get(&r)).cloned();
                    (r, value)
                })
                .collect();
            (version, changed)
        };
        let mut changes = Vec::with_capacity(changed.len());
        for (r, value) in changed {
            let now = match value {
                None => {
                    self.decoded.remove(&r);
                    self.last_good.remove(&r);
                    Ok(Vec::new())
                }
                Some(value) => match self.decode(&r, &value).result.clone() {
                    Ok(objs) => {
                        self.last_good.insert(r.clone(), objs.clone());
                        Ok(objs.to_vec())
                    }
                    Err(problems) => Err(problems),
                },
            };
            let status = match &now {
                Ok(objs) => objs
                    .iter()
                    .filter_map(|o| match o {
                        Object::Service(svc) => held_status(svc).map(|(_, h)| h),
                        _ => None,
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            changes.push(Change::new(r, now, status));
        }
        Some(Delta::new(version, changes))
    }

    fn version(&self) -> u64 {
        // Both counters only grow: their sum moves whenever either does.
        self.shared.objects_version.load(Ordering::Acquire) + self.shared.endpoints_version.load(Ordering::Acquire)
    }
}

/// What a Service's own status says it holds, for the view's status.
fn held_status(svc: &Service) -> Option<(lb_alloc::ServiceKey, HeldStatus)> {
    let ips = crate::service::status_ips(svc);
    if ips.is_empty() {
        return None;
    }
    let key = lb_alloc::ServiceKey::new(
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or_default(),
    );
    let pool = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::service::IP_ALLOCATED_FROM_POOL))
        .cloned()
        .unwrap_or_default();
    let class = svc.spec.as_ref().and_then(|s| s.load_balancer_class.clone());
    Some((
        key,
        HeldStatus {
            class,
            state: ServiceState { ips, pool },
        },
    ))
}

/// The identity and stored form of an object from the API server: the
/// kind and apiVersion filled in (list items lack them), managedFields
/// dropped (large, and not read).
fn stored(resource: &ApiResource, mut obj: DynamicObject) -> Option<(ObjectRef, Arc<Value>)> {
    // Dropped before anything is copied: most of a written object's bytes.
    obj.metadata.managed_fields = None;
    // The body is kept as it was received; only the metadata is typed.
    let mut map = match obj.data {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    map.insert("metadata".into(), serde_json::to_value(&obj.metadata).ok()?);
    map.insert("apiVersion".into(), Value::String(resource.api_version.clone()));
    map.insert("kind".into(), Value::String(resource.kind.clone()));
    // The status of metallb.io objects (pool counters, …) is what lb and
    // MetalLB write, not configuration: not kept, so writing it changes
    // nothing here.
    if resource.group == "metallb.io" {
        map.remove("status");
    }
    let value = Value::Object(map);
    Some((ObjectRef::of(&value), Arc::new(value)))
}

/// Whether two stored forms of an object differ only in
/// `metadata.resourceVersion` (an echo of a write to what is not kept).
fn same_content(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let meta_same = |x: &Value, y: &Value| match (x.as_object(), y.as_object()) {
        (Some(x), Some(y)) => {
            let rest = |m: &'_ serde_json::Map<String, Value>| m.len() - usize::from(m.contains_key("resourceVersion"));
            rest(x) == rest(y)
                && x.iter()
                    .filter(|(k, _)| *k != "resourceVersion")
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => x == y,
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| match b.get(k) {
            Some(w) if k == "metadata" => meta_same(v, w),
            Some(w) => v == w,
            None => false,
        })
}

/// Follows one kind until aborted: a list, then watch events, re-listing
/// (with backoff) whenever the watch breaks.
async fn watch(client: kube::Client, w: Watch, index: usize, shared: Arc<Shared>) {
    let api: Api<DynamicObject> = match &w.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &w.resource),
        None => Api::all_with(client, &w.resource),
    };
    let mut config = watcher::Config::default();
    let fields: Vec<String> = w
        .name
        .iter()
        .map(|n| format!("metadata.name={n}"))
        .chain(w.fields.clone())
        .collect();
    if !fields.is_empty() {
        config = config.fields(&fields.join(","));
    }
    let endpoints = w.resource.kind == "EndpointSlice";
    // Retries wait here, not in kube's backoff (which a list that starts
    // and fails resets at every try): doubling from WATCH_RETRY_MIN to
    // WATCH_RETRY_MAX while the watch fails, back to the start once it
    // lists or follows again.
    let mut events = watcher::watcher(api, config).boxed();
    let mut retry = WATCH_RETRY_MIN;
    while let Some(event) = events.next().await {
        let failed = event.is_err();
        if matches!(event, Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))) {
            retry = WATCH_RETRY_MIN;
        }
        // The stores' lock is held for this block only (not across the
        // retry's wait).
        {
            let mut kinds = lock(&shared.kinds);
            let Some(store) = kinds.get_mut(index) else { return };
            // What moved: one object (`Some(Some)`), or possibly many.
            let mut moved: Option<Option<ObjectRef>> = None;
            match event {
                Ok(Event::Init) => {
                    // A list starts; whether it works is known at its end (a
                    // watch that keeps failing starts one at every retry: its
                    // error stands until then, so it is said once).
                    store.listing = Some(BTreeMap::new());
                }
                Ok(Event::InitApply(obj)) => {
                    if let (Some(listing), Some((r, v))) = (store.listing.as_mut(), stored(&w.resource, obj)) {
                        listing.insert(r, v);
                    }
                }
                Ok(Event::InitDone) => {
                    if let Some(listing) = store.listing.take() {
                        store.objects = listing;
                    }
                    if store.error.take().is_some() {
                        tracing::info!(kind = %w.resource.kind, "watch recovered; listed again");
                    }
                    if std::mem::replace(&mut store.missing, false) {
                        tracing::info!(kind = %w.resource.kind, "served by the API server now");
                    }
                    store.synced = true;
                    moved = Some(None);
                }
                Ok(Event::Apply(obj)) => {
                    if let Some((r, v)) = stored(&w.resource, obj) {
                        // An echo that changes nothing kept moves nothing.
                        if store.objects.get(&r).is_none_or(|old| !same_content(old, &v)) {
                            moved = Some(Some(r.clone()));
                        }
                        store.objects.insert(r, v);
                    }
                    if store.error.take().is_some() {
                        tracing::info!(kind = %w.resource.kind, "watch recovered");
                        moved = Some(None);
                    }
                }
                Ok(Event::Delete(obj)) => {
                    if let Some((r, _)) = stored(&w.resource, obj) {
                        store.objects.remove(&r);
                        moved = Some(Some(r));
                    }
                    if store.error.take().is_some() {
                        tracing::info!(kind = %w.resource.kind, "watch recovered");
                        moved = Some(None);
                    }
                }
                Err(e) => {
                    // A kind the server does not serve (its CRD is not
                    // installed) has no objects: synced empty, and said.
                    if let watcher::Error::InitialListFailed(kube::Error::Api(ae)) = &e
                        && ae.code == 404
                    {
                        if !store.missing {
                            tracing::warn!(kind = %w.resource.kind, "not served by the API server (CRD not installed?)");
                            store.synced = true;
                            store.missing = true;
                            store.objects.clear();
                            moved = Some(None);
                        }
                    } else if store.error.is_none() {
                        // Said once while it lasts (retries fail with ever
                        // different words), and once when it recovers.
                        let text = e.to_string();
                        tracing::warn!(kind = %w.resource.kind, error = %text, "watch failed; retrying");
                        store.error = Some(text);
                        moved = Some(None);
                    }
                }
            }
            if let Some(object) = moved {
                // Moved and logged under the stores' lock: versions and log
                // entries keep one order.
                let counter = if endpoints {
                    &shared.endpoints_version
                } else {
                    &shared.objects_version
                };
                counter.fetch_add(1, Ordering::AcqRel);
                let version =
                    shared.objects_version.load(Ordering::Acquire) + shared.endpoints_version.load(Ordering::Acquire);
                lock(&shared.log).push(version, index, object);
                drop(kinds);
                shared.changes.send_modify(|n| *n += 1);
            }
        }
        if failed {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(WATCH_RETRY_MAX);
        }
    }
}

/// The first wait before a failed watch tries again.
const WATCH_RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest wait between two tries of a watch that keeps failing (an
/// API server back from a restart is followed again within it; a kind the
/// controller may not read costs a list and a log line that often).
const WATCH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);
