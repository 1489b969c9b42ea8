//! The serving proxy: listeners, connections (HTTP/1.1, and HTTP/2 with
//! prior knowledge), the route table and endpoints swapped in whole on
//! every change, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::endpoints::Endpoints;
use super::forward;
use super::upstream::Upstream;
use crate::source::{Problem, Snapshot, Source};

/// How the proxy serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Plain-HTTP listeners.
    pub http_listen: Vec<SocketAddr>,
    /// HTTPS listeners (certificates from TLS Secrets, by SNI).
    pub https_listen: Vec<SocketAddr>,
    /// Send `Strict-Transport-Security` on HTTPS answers (ingress-nginx's
    /// default: a year, subdomains included).
    pub hsts: bool,
    /// Which Ingresses are served, and how paths are matched.
    pub route: lb_route::Config,
    /// Clients whose `X-Forwarded-*` headers are trusted (other clients'
    /// are overwritten).
    pub trusted: Vec<ipnet::IpNet>,
    /// Limits and timeouts against slow or greedy clients.
    pub limits: Limits,
    /// How often a source without change notifications is looked at.
    pub poll_interval: Duration,
    /// How long in-flight requests may take to finish at shutdown.
    pub drain: Duration,
    /// At shutdown, how long the proxy still accepts connections after it
    /// says it is not ready (load balancers and kube-proxy take a moment
    /// to stop sending), before it stops accepting and drains.
    pub grace: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (ready once the
    /// first table is in force).
    pub metrics_listen: Option<SocketAddr>,
    /// Wakes the proxy to look at the configuration now (the binary
    /// forwards SIGHUP here), besides change notifications and polling.
    pub reload: Arc<tokio::sync::Notify>,
    /// Cluster mode: writes the proxy's addresses into the status of the
    /// Ingresses it serves.
    pub publisher: Option<Arc<super::publish::Publisher>>,
}

impl Options {
    /// Serving plain HTTP on `listen`, defaults otherwise.
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        Self {
            http_listen: listen,
            https_listen: Vec::new(),
            hsts: true,
            route: lb_route::Config::default(),
            trusted: Vec::new(),
            limits: Limits::default(),
            poll_interval: Duration::from_millis(500),
            drain: Duration::from_secs(10),
            grace: Duration::ZERO,
            metrics_listen: None,
            reload: Arc::default(),
            publisher: None,
        }
    }
}

/// Bounds on what one client may hold or send.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Time to send a whole request head (slowloris).
    pub header_timeout: Duration,
    /// Time a connection may stay silent both ways: keep-alive between
    /// requests, a stalled request body (nginx's keepalive_timeout, 75 s).
    pub idle_timeout: Duration,
    /// Bytes of request head (line and headers) held at most.
    pub max_head_bytes: usize,
    /// Request headers at most.
    pub max_headers: usize,
    /// Open connections per client address.
    pub connections_per_ip: usize,
    /// Open connections in all.
    pub connections: usize,
    /// Body size when the Ingress does not say (`proxy-body-size`;
    /// ingress-nginx's default is 1 MiB).
    pub default_body: u64,
    /// Time to connect to a backend when the Ingress does not say.
    pub connect_timeout: Duration,
    /// Time for a backend to answer when the Ingress does not say.
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            connections_per_ip: 1024,
            connections: 16_384,
            default_body: 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What requests are routed with: swapped whole on every change.
#[derive(Debug)]
pub struct Served {
    /// The route table (shared with the next [`Served`] when only
    /// endpoints change).
    pub table: Arc<lb_route::RouteTable>,
    /// The endpoints of every Service port.
    pub endpoints: Endpoints,
    /// The certificates of the TLS Secrets (shared with the next
    /// [`Served`] when only endpoints change).
    pub certs: Arc<super::tls::Certificates>,
    /// The htpasswd Secrets (shared like the certificates).
    pub auth: Arc<super::basic::Htpasswds>,
}

/// Why the proxy cannot serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener cannot be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The source cannot give a first view.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The metrics address cannot be bound.
    #[error("--metrics-listen {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// TLS cannot be set up.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// A table build panicked (a bug).
    #[error("internal error: building the route table panicked")]
    Panicked,
    /// The thread that rebuilds tables cannot be started.
    #[error("starting the table rebuild thread: {0}")]
    Rebuilder(std::io::Error),
}

/// The one thread that reads the source, builds new tables and frees the
/// ones they replace, off the serving threads: one at a time and in order
/// (on a pool, the free of a table of 10,000 Ingresses could run beside
/// the next build, two threads taking turns with the serving ones).
struct Rebuilder {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// What the rebuild thread is asked to do.
enum Job {
    /// Run this.
    Run(Box<dyn FnOnce() + Send>),
    /// Free this once no request holds it any more.
    Retire(Arc<Served>),
}

/// How often the rebuild thread looks whether the requests holding a
/// replaced table have let go of it.
const RETIRE_CHECK: Duration = Duration::from_millis(50);

impl Rebuilder {
    fn start() -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("lb-rebuild".into()).spawn(move || {
            use std::sync::mpsc::RecvTimeoutError;
            let mut retired: Vec<Arc<Served>> = Vec::new();
            loop {
                let job = match retired.is_empty() {
                    true => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    false => rx.recv_timeout(RETIRE_CHECK),
                };
                match job {
                    Ok(Job::Run(f)) => f(),
                    Ok(Job::Retire(old)) => retired.push(old),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                // Held here alone now: freed here, not by the request that
                // let go last on a serving thread.
                retired.retain(|t| Arc::strong_count(t) > 1);
            }
        })?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the thread; `Error::Panicked` if it panicked.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        };
        self.jobs.send(Job::Run(Box::new(job))).map_err(|_| Error::Panicked)?;
        match rx.await {
            Ok(Ok(t)) => Ok(t),
            _ => Err(Error::Panicked),
        }
    }

    /// Frees `old` on the thread once no request holds it (a table of
    /// 10,000 Ingresses takes milliseconds to free).
    fn retire(&self, old: Arc<Served>) {
        if let Err(std::sync::mpsc::SendError(Job::Retire(old))) = self.jobs.send(Job::Retire(old)) {
            // The thread is gone (the process is ending): here, then.
            drop(old);
        }
    }
}

/// Builds what a view serves: the route table, the endpoints and the
/// certificates (problems returned).
/// A TLS Secret that stops reading keeps the certificate it had in
/// `previous`, and an unchanged htpasswd Secret keeps its file (with the
/// credentials that verified); what the last build left (shards, regexes, the
/// last good version of each Ingress) is in `rebuild`.
pub fn served(
    view: &Snapshot,
    route: &lb_route::Config,
    previous: Option<&Served>,
    rebuild: &mut super::Rebuild,
) -> (Served, Vec<Problem>) {
    let (table, mut problems) = super::routes_kept(view, route, rebuild);
    let endpoints = Endpoints::build(&view.objects, &view.endpoints, previous.map(|p| &p.endpoints));
    let (certs, cert_problems) = super::tls::Certificates::build(view, &provider(), previous.map(|p| &*p.certs));
    problems.extend(cert_problems);
    if let Some(d) = &route.default_certificate
        && !certs.has(d)
    {
        problems.push(Problem::error(
            Some(crate::objects::ObjectRef {
                kind: "Secret".into(),
                namespace: d.namespace.clone(),
                name: d.name.clone(),
            }),
            None,
            "the default certificate (--default-certificate) is missing or not a usable kubernetes.io/tls \
             Secret: TLS handshakes for names no Ingress covers fail",
        ));
    }
    problems.extend(missing_secrets(view, &table, route.default_certificate.is_some()));
    let (auth, auth_problems) = super::basic::Htpasswds::build(view, previous.map(|p| &*p.auth));
    problems.extend(auth_problems);
    let table = Arc::new(table);
    (
        Served {
            table,
            endpoints,
            certs: Arc::new(certs),
            auth: Arc::new(auth),
        },
        problems,
    )
}

/// A warning for every Secret an Ingress in `table` names that the view
/// does not hold at all: a TLS one (its hosts get the default certificate,
/// or fail the handshake without one, while plain HTTP still redirects
/// there), a basic-auth one (every request gets 503). (A Secret that is
/// there but does not read is reported on itself.)
pub(super) fn missing_secrets(view: &Snapshot, table: &lb_route::RouteTable, default: bool) -> Vec<Problem> {
    type Keys<'t> = std::collections::HashSet<(&'t str, &'t str), foldhash::fast::RandomState>;
    /// Whether `table` serves the Ingress `key` (the set made once, when
    /// first asked: only for an Ingress that names a missing Secret).
    fn serves<'t>(used: &mut Option<Keys<'t>>, table: &'t lb_route::RouteTable, key: (&str, &str)) -> bool {
        used.get_or_insert_with(|| {
            table
                .ingresses()
                .map(|i| (i.namespace.as_str(), i.name.as_str()))
                .collect()
        })
        .contains(&key)
    }
    use crate::objects::Object;
    // Made only when some Ingress names a Secret that is not there.
    let mut used: Option<Keys<'_>> = None;
    let present: std::collections::HashSet<(&str, &str), foldhash::fast::RandomState> = view
        .objects
        .iter()
        .filter_map(|(_, o)| match o {
            Object::Secret(s) => Some((
                s.metadata.namespace.as_deref().unwrap_or("default"),
                s.metadata.name.as_deref().unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    for (origin, o) in &view.objects {
        let Object::Ingress(ing) = o else { continue };
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let name = ing.metadata.name.as_deref().unwrap_or_default();
        // (Keys written out: 10,000 Ingresses pass here at every rebuild.)
        let annotation = |key: &str| ing.metadata.annotations.as_ref().and_then(|a| a.get(key));
        if annotation("nginx.ingress.kubernetes.io/auth-type").is_some_and(|t| t == "basic")
            && let Some(secret) = annotation("nginx.ingress.kubernetes.io/auth-secret")
            && !present.contains(&(ns, secret.as_str()))
            && serves(&mut used, table, (ns, name))
        {
            problems.push(Problem {
                origin: origin.clone(),
                ..Problem::warning(
                    Some(crate::objects::object_ref(o)),
                    Some("metadata.annotations[\"nginx.ingress.kubernetes.io/auth-secret\"]".to_owned()),
                    format!("Secret {ns}/{secret} does not exist: every request gets 503 until it does"),
                )
            });
        }
        for (i, tls) in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()).enumerate() {
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            if present.contains(&(ns, secret)) {
                continue;
            }
            if !serves(&mut used, table, (ns, name)) {
                // Not served (another class, or broken): said on itself.
                break;
            }
            let hosts = tls.hosts.iter().flatten().cloned().collect::<Vec<_>>().join(", ");
            let then = if default {
                "they get the default certificate"
            } else {
                "TLS handshakes for them fail (no --default-certificate)"
            };
            problems.push(Problem {
                origin: origin.clone(),
                ..Problem::warning(
                    Some(crate::objects::object_ref(o)),
                    Some(format!("spec.tls[{i}].secretName")),
                    format!("Secret {ns}/{secret} does not exist: HTTPS for {hosts} is not served with it; {then}"),
                )
            });
        }
    }
    problems
}

/// The TLS implementation's cryptography.
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Serves until `shutdown` resolves: binds every listener (an address that
/// cannot be bound is an error before anything is served), builds the first
/// table, then follows the source — a change to anything but endpoints
/// builds a new table off the serving threads, a change to endpoints alone
/// only new endpoints, and either is swapped in whole: in-flight requests
/// finish on what they started with. On shutdown, stops accepting and
/// gives in-flight requests [`Options::drain`] to finish.
pub async fn run<S: Source + 'static>(
    mut source: S,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    // Heard from the start: a source that never lists (an API server
    // that forbids it) must not make the process deaf to SIGTERM.
    tokio::pin!(shutdown);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = super::metrics::Metrics::register(&mut registry);
    let telemetry = crate::metrics::Telemetry::new(registry);
    if let Some(addr) = options.metrics_listen {
        crate::metrics::start(addr, telemetry.clone())
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
    }
    let mut listeners = Vec::new();
    let plain = options.http_listen.iter().map(|a| (*a, false));
    for (addr, https) in plain.chain(options.https_listen.iter().map(|a| (*a, true))) {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let scheme = if https { "HTTPS" } else { "HTTP" };
        tracing::info!(addr = %l.local_addr().unwrap_or(addr), "serving {scheme}");
        listeners.push((l, https));
    }
    let route = options.route.clone();
    // A source that lists (an API server) serves nothing before it has:
    // an empty table would answer 404 to everything meanwhile.
    let mut changes = source.changes();
    let mut said = false;
    let (mut version, view) = loop {
        let (back, read) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            read = read_view(source) => read?,
        };
        source = back;
        let (version, view) = read?;
        if view.synced {
            break (version, view);
        }
        if !std::mem::replace(&mut said, true) {
            tracing::info!("waiting for the first list of every kind");
        }
        let wait = async {
            match &mut changes {
                Some(rx) => {
                    let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
                }
                None => tokio::time::sleep(options.poll_interval).await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            () = wait => {}
        }
    };
    let rebuilder = Rebuilder::start().map_err(Error::Rebuilder)?;
    // The first build too runs off the serving threads (`/healthz` and
    // `/metrics` are served meanwhile).
    let first = route.clone();
    let first = rebuilder.run(move || {
        let mut rebuild = super::Rebuild::default();
        let (built, problems) = served(&view, &first, None, &mut rebuild);
        (view, rebuild, built, problems)
    });
    let (view, mut rebuild, built, mut table_problems) = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        built = first => built?,
    };
    if let Some(p) = &options.publisher {
        p.publish(&view, &built.table);
    }
    // What the source found (YAML errors, unknown fields, duplicates) and
    // what the table and certificates did.
    let mut logged = Vec::new();
    let problems: Vec<Problem> = view.problems.iter().chain(&table_problems).cloned().collect();
    crate::source::log_new_problems(&problems, &mut logged);
    tracing::info!(endpoints = built.endpoints.len(), "route table built");
    metrics
        .endpoints
        .set(i64::try_from(built.endpoints.len()).unwrap_or(i64::MAX));
    metrics.problems.set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
    telemetry.set_ready(true);
    let current = Arc::new(ArcSwap::from_pointee(built));
    let mut objects_version = view.objects_version;
    // Whether the last read of the configuration failed.
    let mut failing = false;
    let upstream = Arc::new(Upstream::new(&options).map_err(Error::Tls)?);
    // Idle backend connections past their time are closed now and then.
    let pool = Arc::downgrade(&upstream.http1);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        while let Some(pool) = {
            every.tick().await;
            pool.upgrade()
        } {
            pool.sweep();
        }
    });
    let limits = Arc::new(options.limits.clone());
    let conns = Arc::new(forward::Connections::default());
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let mut accepts = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let resolver = Arc::new(super::tls::Resolver {
        served: current.clone(),
        default: options.route.default_certificate.clone(),
    });
    let tls = super::tls::server_config(Arc::new(provider()), resolver)
        .map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)))
        .map_err(Error::Tls)?;
    for (listener, https) in listeners {
        let ctx = forward::Context {
            served: current.clone(),
            upstream: upstream.clone(),
            limits: limits.clone(),
            trusted: Arc::new(options.trusted.clone()),
            port: listener.local_addr().map(|a| a.port()).unwrap_or_default(),
            https,
            hsts: https && options.hsts,
            slot: None,
            peer_ip: None,
            metrics: metrics.clone(),
        };
        accepts.spawn(accept_loop(
            listener,
            https.then(|| tls.clone()),
            ctx,
            conns.clone(),
            graceful.clone(),
            stop_rx.clone(),
        ));
    }
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            () = crate::source::changed_or_polled(&mut changes, options.poll_interval) => {}
            _ = options.reload.notified() => {}
        }
        // A directory that never holds still keeps this waiting: SIGTERM
        // is still heard.
        let (back, moved) = tokio::select! {
            _ = &mut shutdown => break,
            settled = crate::source::settled_version(source, changes.is_some(), version) => {
                settled.map_err(|_| Error::Panicked)?
            }
        };
        source = back;
        if moved == version {
            // Back as it was before the failure.
            if std::mem::replace(&mut failing, false) {
                tracing::info!("the configuration reads again");
            }
            continue;
        }
        let route = route.clone();
        let previous = current.load_full();
        let started = Instant::now();
        let mut cache = std::mem::take(&mut rebuild);
        let publisher = options.publisher.clone();
        let job = rebuilder.run(move || {
            // A panic (a bug) in the build leaves the source and the
            // caches here, and the last good table serving.
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let view = source.view();
                view.map(|view| {
                    let whole = view.objects_version != objects_version;
                    let (built, problems) = if whole {
                        let (built, problems) = served(&view, &route, Some(&previous), &mut cache);
                        if let Some(p) = &publisher {
                            p.publish(&view, &built.table);
                        }
                        (built, problems)
                    } else {
                        // Endpoints alone changed: the table stays, and the
                        // certificates (Secrets are not endpoints).
                        let endpoints = Endpoints::build(&view.objects, &view.endpoints, Some(&previous.endpoints));
                        let table = previous.table.clone();
                        let certs = previous.certs.clone();
                        let auth = previous.auth.clone();
                        (
                            Served {
                                table,
                                endpoints,
                                certs,
                                auth,
                            },
                            Vec::new(),
                        )
                    };
                    (moved, view.objects_version, whole, built, problems, view.problems)
                })
            }));
            if built.is_err() {
                // Whatever it held may be half made.
                cache = super::Rebuild::default();
            }
            (source, built, cache)
        });
        let (back, rebuilt, cache) = tokio::select! {
            _ = &mut shutdown => break,
            job = job => job?,
        };
        source = back;
        rebuild = cache;
        let Ok(rebuilt) = rebuilt else {
            metrics.reload_errors.inc();
            tracing::error!(
                "building the route table panicked (a bug, please report it); the last good table keeps \
                 serving until the configuration changes again"
            );
            // Not tried again until something changes.
            version = moved;
            continue;
        };
        match rebuilt {
            Ok((v, objects, whole, built, problems, source_problems)) => {
                version = v;
                objects_version = objects;
                metrics
                    .endpoints
                    .set(i64::try_from(built.endpoints.len()).unwrap_or(i64::MAX));
                if whole {
                    table_problems = problems;
                }
                let all: Vec<Problem> = source_problems.iter().chain(&table_problems).cloned().collect();
                metrics.problems.set(i64::try_from(all.len()).unwrap_or(i64::MAX));
                metrics.reloads.inc();
                if std::mem::replace(&mut failing, false) {
                    tracing::info!("the configuration reads again");
                }
                // The table it replaces is freed off the serving threads
                // (10,000 Ingresses take milliseconds to free), once the
                // requests holding it are done.
                let old = current.swap(Arc::new(built));
                rebuilder.retire(old);
                crate::source::log_new_problems(&all, &mut logged);
                if whole {
                    let took = started.elapsed();
                    metrics.rebuild_duration.observe(took.as_secs_f64());
                    let (shards, of) = rebuild.shards_built();
                    tracing::info!(?took, "route table swapped ({shards} of {of} shards built)");
                } else {
                    tracing::debug!(took = ?started.elapsed(), "endpoints swapped");
                }
            }
            Err(e) => {
                metrics.reload_errors.inc();
                // Once per outage (it is tried again at every poll).
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(error = %e, "reading the configuration; the last good table keeps serving");
                }
            }
        }
    }
    // Not ready any more (load balancers stop sending), stop accepting,
    // then let what is in flight finish, within the bound.
    telemetry.set_ready(false);
    if !options.grace.is_zero() {
        tracing::info!(grace = ?options.grace, "not ready; still accepting for the grace period");
        tokio::time::sleep(options.grace).await;
    }
    let _ = stop_tx.send(true);
    while accepts.join_next().await.is_some() {}
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        // Then the upgraded connections (WebSockets), which left hyper's
        // watch at their 101 but hold their places till they end.
        let drained = async {
            graceful.shutdown().await;
            while conns.total() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            () = drained => tracing::info!("drained"),
            _ = tokio::time::sleep(options.drain) => tracing::warn!(after = ?options.drain, "drain bound reached; closing the rest"),
        }
    }
    Ok(())
}

/// The source's version and view, read on a blocking thread (file I/O and
/// decoding stay off the serving threads).
async fn read_view<S: Source + 'static>(
    source: S,
) -> Result<(S, Result<(u64, Snapshot), crate::source::SourceError>), Error> {
    crate::source::read_off_runtime(source)
        .await
        .map_err(|_| Error::Panicked)
}

/// Accepts connections until told to stop, each served on its own task.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: forward::Context,
    conns: Arc<forward::Connections>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The guard bounds heads (hyper's own would arm a second timer
        // for every request).
        .header_read_timeout(None)
        .max_buf_size(ctx.limits.max_head_bytes.max(8192));
    // hyper's own bound (100) costs nothing; another one is set per parse.
    if ctx.limits.max_headers != 100 {
        builder.http1().max_headers(ctx.limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(ctx.limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            // An IPv4 client of a dual-stack listener comes as
            // `::ffff:a.b.c.d`: as its IPv4 address, so that IPv4 ranges
            // (allowlists, denylists, --trusted) see it.
            Ok((stream, peer)) => (stream, SocketAddr::new(peer.ip().to_canonical(), peer.port())),
            Err(e) => {
                // Out of file descriptors and the like: pause, not end.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = conns.admit(peer.ip(), &ctx.limits) else {
            // Over the caps: closed at once.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (max_head, head_timeout, idle) = (
            ctx.limits.max_head_bytes,
            ctx.limits.header_timeout,
            ctx.limits.idle_timeout,
        );
        let mut ctx = ctx.clone();
        ctx.slot = Some(Arc::new(slot));
        ctx.peer_ip = Some(HeaderValue::from_maybe_shared(bytes::Bytes::from(peer.ip().to_string())).ok()).flatten();
        // One context per connection, shared by its requests.
        let ctx = Arc::new(ctx);
        let builder = builder.clone();
        // A watcher per connection: the shutdown waits for it, and no task
        // holds the shutdown itself.
        let watcher = graceful.watcher();
        let refused = ctx.metrics.refused.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counted = in_flight.clone();
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                let request = super::guard::InFlight::new(counted.clone());
                async move {
                    let response = forward::handle(&ctx, peer, req).await;
                    Ok::<_, std::convert::Infallible>(response.map(|body| super::guard::Tracked {
                        body,
                        _in_flight: request,
                    }))
                }
            });
            let result = match tls {
                None => {
                    let stream = super::guard::Guarded::new(stream, max_head, head_timeout, idle, peer)
                        .counting(refused.clone())
                        .tracking(in_flight.clone());
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    // The handshake gets the head timeout too (a client that
                    // opens and says nothing is cut off).
                    let stream = match tokio::time::timeout(head_timeout, tls.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %peer, "TLS handshake not done in time");
                            return;
                        }
                    };
                    let stream = super::guard::Guarded::new(stream, max_head, head_timeout, idle, peer)
                        .counting(refused.clone())
                        .tracking(in_flight.clone());
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(client = %peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ingress naming a TLS Secret that does not exist is told: its
    /// hosts are redirected to HTTPS that is not served with it.
    #[test]
    fn a_missing_tls_or_auth_secret_is_reported_on_the_ingress_naming_it() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop, namespace: shop}\n\
                    spec:\n  ingressClassName: lb\n  tls: [{hosts: [shop.example], secretName: shop-tls}]\n\
                    \x20 rules:\n  - host: shop.example\n    http:\n      paths:\n\
                    \x20     - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n\
                    ---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: theirs, namespace: shop}\n\
                    spec:\n  ingressClassName: other\n  tls: [{hosts: [their.example], secretName: their-tls}]\n\
                    \x20 rules:\n  - host: their.example\n\
                    ---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: staff, namespace: shop, \
                    annotations: {nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users}}\n\
                    spec:\n  ingressClassName: lb\n  rules:\n  - host: staff.example\n";
        let file = std::path::Path::new("/manifests/shop.yaml");
        let snap = crate::source::file::parse_manifests(file, text);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let (_, problems) = served(
            &snap,
            &lb_route::Config::default(),
            None,
            &mut super::super::Rebuild::default(),
        );
        let p = problems
            .iter()
            .find(|p| p.to_string().contains("shop/shop-tls does not exist"))
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert_eq!(p.field.as_deref(), Some("spec.tls[0].secretName"), "{p:?}");
        assert_eq!(p.origin.as_ref().map(|o| o.file.as_path()), Some(file));
        // Another class's Ingress is not ours to warn about.
        assert!(
            !problems.iter().any(|p| p.to_string().contains("their-tls")),
            "{problems:?}"
        );
        // A basic-auth Secret that is not there: every request gets 503.
        let p = problems
            .iter()
            .find(|p| p.to_string().contains("shop/users does not exist"))
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert_eq!(
            p.field.as_deref(),
            Some("metadata.annotations[\"nginx.ingress.kubernetes.io/auth-secret\"]")
        );
    }
}
