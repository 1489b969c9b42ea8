//! lb-proxy: serves HTTP(S) by Kubernetes Ingress rules; `explain` says
//! where a URL would go, and why, without sending traffic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lb_bins::{LogFormat, init_logging_except};
use lb_kube::proxy;
use lb_kube::source::Severity;

/// mimalloc: the serving path allocates per request, and glibc's
/// allocator cost about 7 % of the CPU under load (perf, benches/proxy.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory for 10 s before it goes back to the kernel (unless
/// `MIMALLOC_PURGE_DELAY` says otherwise). Call it first in `main`. mimalloc's default is 1 s:
/// a rebuild frees the table it replaced and builds the next one a moment
/// later, and faulting those megabytes in again as fresh pages was a
/// tenth of a 10,000-Ingress rebuild (`perf`). A burst of edits reuses
/// them; an idle proxy still gives them back.
fn keep_freed_memory() {
    /// `mi_option_purge_delay`: its place in `mi_option_e` of mimalloc 2
    /// and 3 (libmimalloc-sys names no constant for it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // (RESET_DELAY: its older name, which mimalloc still reads.)
    if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return;
    }
    // SAFETY: sets one integer option, passing no pointer. Setting options
    // is not thread-safe in mimalloc: this runs first in `main`, before
    // any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 10_000);
    }
}

/// Routes HTTP and HTTPS by Kubernetes Ingress rules (spec-exact matching,
/// ingress-nginx annotations), reading Ingresses, IngressClasses, Services
/// and EndpointSlices from a directory of manifests.
#[derive(Parser, Debug)]
#[command(
    name = "lb-proxy",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  lb-proxy --manifests examples/ --http-listen 127.0.0.1:8080\n  lb-proxy explain --manifests examples/ --url http://shop.example.com/cart --output json\n  lb-proxy explain --manifests examples/ --url http://10.0.0.1/ --header 'Host: shop.example.com'"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print where a request for URL would go (Ingress, Service, port,
    /// upstream path) or what the proxy would answer instead, and why.
    Explain(ExplainArgs),
}

/// Serving: the default when no subcommand is given.
#[derive(clap::Args, Debug)]
#[group(id = "listen", required = true, multiple = true, args = ["http_listen", "https_listen"])]
struct ServeArgs {
    /// Directory of Kubernetes manifests (YAML/JSON, multi-document) that
    /// is the cluster; followed for changes. Without it: cluster mode, on
    /// the API server of --kubeconfig (or $KUBECONFIG, ~/.kube/config, the
    /// in-cluster configuration).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// Cluster mode: the kubeconfig to use.
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Serve plain HTTP on ADDR (repeatable).
    #[arg(long = "http-listen", value_name = "ADDR")]
    http_listen: Vec<std::net::SocketAddr>,
    /// Serve HTTPS on ADDR (repeatable): certificates from the
    /// kubernetes.io/tls Secrets the Ingresses name, by SNI.
    #[arg(long = "https-listen", value_name = "ADDR")]
    https_listen: Vec<std::net::SocketAddr>,
    /// The certificate for names no Ingress's TLS covers: a
    /// kubernetes.io/tls Secret, NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    default_certificate: Option<String>,
    /// Do not send Strict-Transport-Security on HTTPS answers.
    #[arg(long)]
    no_hsts: bool,
    /// Trust X-Forwarded-* headers from clients in CIDR, or from one
    /// address (repeatable); other clients' are overwritten.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = cidr)]
    trusted: Vec<ipnet::IpNet>,
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on ADDR.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds in-flight requests get to finish at shutdown.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    drain_seconds: u64,
    /// Seconds the proxy keeps accepting after SIGTERM, already not ready
    /// (/readyz 503), so that load balancers stop sending before it stops
    /// listening (ingress-nginx's shutdown-grace-period); then the drain.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    shutdown_grace_seconds: u64,
    /// Seconds a client has to send a whole request head (ingress-nginx's
    /// client-header-timeout); slower clients are cut off.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    client_header_timeout: u64,
    /// Seconds a connection may stay silent both ways (between keep-alive
    /// requests, or a stalled body) before it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 75)]
    keepalive_timeout: u64,
    /// Cluster mode: write ADDR (an IP or a host name; repeatable) into the
    /// status of every Ingress served (ingress-nginx's
    /// --publish-status-address), by the replica holding --election-id.
    #[arg(
        long = "publish-status-address",
        value_name = "ADDR",
        conflicts_with = "publish_service"
    )]
    publish_status_address: Vec<String>,
    /// Cluster mode: write the addresses of this LoadBalancer Service's
    /// status (the one in front of the proxy), NAMESPACE/NAME, instead.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    publish_service: Option<String>,
    /// Cluster mode: the Lease replicas elect their status writer on, in
    /// --election-namespace (default: lb-proxy-CLASS, so that proxies of
    /// different classes elect apart). Identity: $POD_NAME, else the host
    /// name and PID.
    #[arg(long, value_name = "NAME")]
    election_id: Option<String>,
    /// Cluster mode: the namespace of the --election-id Lease (default:
    /// $POD_NAMESPACE, else "default").
    #[arg(long, value_name = "NS")]
    election_namespace: Option<String>,
    /// Threads that serve requests (default: one per CPU the process may
    /// use). With 1, everything runs on one thread, as an nginx worker.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Do not log each request (the access log, target lb_proxy::access).
    #[arg(long)]
    no_access_log: bool,
    #[command(flatten)]
    route: RouteArgs,
}

/// Which Ingresses are served, and how they match.
#[derive(clap::Args, Debug)]
struct RouteArgs {
    /// Serve Ingresses whose class is NAME even without an IngressClass of ours.
    #[arg(long, value_name = "NAME", default_value = "lb")]
    ingress_class: String,
    /// Also serve Ingresses that name no class at all.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// How Ingresses are matched unless their IngressClass says otherwise
    /// (annotation lb.io/route-mode): the Kubernetes spec, or
    /// ingress-nginx's behaviour for users migrating from it.
    #[arg(long, value_enum, default_value_t = RouteMode::Strict)]
    route_mode: RouteMode,
    /// What an encoded slash (%2F, %5C) in a request path does: 400, kept
    /// as data, or decoded into a separator (as nginx does).
    #[arg(long, value_enum, default_value_t = EncodedSlashArg::Reject)]
    encoded_slash: EncodedSlashArg,
}

impl RouteArgs {
    fn config(&self) -> lb_route::Config {
        lb_route::Config::default()
            .with_classes(
                lb_route::ClassConfig::default()
                    .with_class(self.ingress_class.clone())
                    .with_watch_without_class(self.watch_ingress_without_class)
                    .with_mode(match self.route_mode {
                        RouteMode::Strict => lb_route::Mode::Strict,
                        RouteMode::IngressNginx => lb_route::Mode::IngressNginx,
                    }),
            )
            .with_path_policy(
                lb_route::PathPolicy::default().with_encoded_slash(match self.encoded_slash {
                    EncodedSlashArg::Reject => lb_route::EncodedSlash::Reject,
                    EncodedSlashArg::Keep => lb_route::EncodedSlash::Keep,
                    EncodedSlashArg::Decode => lb_route::EncodedSlash::Decode,
                }),
            )
    }
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    /// Directory of Kubernetes manifests (YAML/JSON, multi-document) that is the cluster.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// The request URL, http:// or https://.
    #[arg(long, value_name = "URL")]
    url: String,
    /// A request header, NAME:VALUE (repeatable); a Host header overrides the URL's host.
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// The request method (OPTIONS with Origin and
    /// Access-Control-Request-Method headers explains a CORS preflight).
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    method: String,
    /// The client's address, for whitelist-source-range and denylist-source-range.
    #[arg(long, value_name = "IP")]
    client_ip: Option<std::net::IpAddr>,
    #[command(flatten)]
    route: RouteArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RouteMode {
    Strict,
    IngressNginx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EncodedSlashArg {
    Reject,
    Keep,
    Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// A network, or one address as its own /32 or /128; host bits set past
/// the prefix are refused (they would be silently dropped).
fn cidr(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    let net: ipnet::IpNet = s
        .parse()
        // (clap names the value already.)
        .map_err(|_| "neither an address nor a CIDR (like 10.0.0.0/8)".to_owned())?;
    if net.trunc() != net {
        return Err(format!("host bits past its prefix: {} is meant?", net.trunc()));
    }
    Ok(net)
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let off: &[&str] = match cli.serve.no_access_log {
        true => &["lb_proxy::access"],
        false => &[],
    };
    init_logging_except(cli.log_format, off);
    match cli.command {
        Some(Command::Explain(args)) => explain(args),
        None => serve(cli.serve),
    }
}

/// Serves until SIGTERM or Ctrl-C.
fn serve(args: ServeArgs) -> ExitCode {
    let mut options = lb_kube::proxy::serve::Options::new(args.http_listen);
    options.https_listen = args.https_listen;
    options.hsts = !args.no_hsts;
    options.route = args.route.config();
    if let Some(d) = &args.default_certificate {
        let Some((namespace, name)) = d.split_once('/').filter(|(ns, n)| !ns.is_empty() && !n.is_empty()) else {
            eprintln!("error: --default-certificate {d:?} is not NAMESPACE/NAME");
            return ExitCode::from(2);
        };
        options.route = options.route.with_default_certificate(lb_route::SecretRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    options.trusted = args.trusted;
    options.metrics_listen = args.metrics_listen;
    options.drain = std::time::Duration::from_secs(args.drain_seconds);
    options.grace = std::time::Duration::from_secs(args.shutdown_grace_seconds);
    options.limits.header_timeout = std::time::Duration::from_secs(args.client_header_timeout.max(1));
    options.limits.idle_timeout = std::time::Duration::from_secs(args.keepalive_timeout.max(1));
    // SIGHUP: look at the configuration now (as `nginx -s reload` asks).
    let reload = options.reload.clone();
    let mut builder = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (manifests, kubeconfig) = (args.manifests, args.kubeconfig);
    // Said before anything listens (a port taken for a typo is confusing).
    if let Some(dir) = &manifests
        && let Err(e) = std::fs::read_dir(dir)
    {
        eprintln!("error: manifests directory {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let publish = match (args.publish_status_address, args.publish_service) {
        (fixed, None) if fixed.is_empty() => None,
        (fixed, None) => Some(lb_kube::proxy::publish::Addresses::Fixed(fixed)),
        (_, Some(s)) => match s.split_once('/').filter(|(ns, n)| !ns.is_empty() && !n.is_empty()) {
            Some((namespace, name)) => Some(lb_kube::proxy::publish::Addresses::Service {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            None => {
                eprintln!("error: --publish-service {s:?} is not NAMESPACE/NAME");
                return ExitCode::from(2);
            }
        },
    };
    if manifests.is_some() && publish.is_some() {
        eprintln!("error: --publish-status-address writes Ingress status on an API server: cluster mode only");
        return ExitCode::from(2);
    }
    let election_id = args
        .election_id
        .unwrap_or_else(|| format!("lb-proxy-{}", args.route.ingress_class));
    let election_namespace = args
        .election_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".to_owned());
    let result = runtime.block_on(async move {
        let shutdown = lb_bins::shutdown_signal();
        tokio::pin!(shutdown);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        reload.notify_one();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "SIGHUP will not reload: no handler"),
        }
        match manifests {
            Some(dir) => {
                let source = lb_kube::source::file::FileSource::new(&dir);
                lb_kube::proxy::serve::run(source, options, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => {
                let setup = async {
                    let cluster = lb_kube::controller::Cluster::new(kubeconfig, "default");
                    let client = cluster.client().await.map_err(|e| e.to_string())?;
                    let mut options = options;
                    if let Some(publish) = publish {
                        let election = lb_kube::proxy::publish::Election {
                            namespace: election_namespace,
                            name: election_id,
                            identity: lb_bins::identity(),
                        };
                        let p =
                            lb_kube::proxy::publish::Publisher::start(client.clone(), publish, Some(election)).await?;
                        options.publisher = Some(p);
                    }
                    Ok::<_, String>((client, options))
                };
                // SIGTERM is heard while the API server is reached too.
                let (client, options) = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    ready = setup => ready?,
                };
                let watches = lb_kube::source::cluster::proxy_watches();
                let source = lb_kube::source::cluster::KubeSource::start(client, watches);
                lb_kube::proxy::serve::run(source, options, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    });
    match result {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serve");
            ExitCode::from(2)
        }
    }
}

fn explain(args: ExplainArgs) -> ExitCode {
    let config = args.route.config();
    let Ok(method) = http::Method::from_bytes(args.method.as_bytes()) else {
        eprintln!("error: --method {:?} is not an HTTP method", args.method);
        return ExitCode::from(2);
    };
    let ask = proxy::Ask {
        method,
        client: args.client_ip,
        ..proxy::Ask::get(&args.url, &args.headers)
    };
    let (answer, problems) = match proxy::explain(&args.manifests, &ask, &config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut errors = false;
    for p in &problems {
        errors |= p.severity == Severity::Error;
        eprintln!("{p}");
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer).expect("answer serializes")),
        Output::Text => {
            let target = match (&answer.service, answer.port, &answer.location) {
                (Some(s), Some(p), _) => format!("{s}:{p} {}", answer.upstream_path.as_deref().unwrap_or_default()),
                (_, _, Some(l)) => format!("-> {l}"),
                _ => "-".to_owned(),
            };
            println!("{}\t{}\t{}", answer.status, target, answer.why);
        }
    }
    if errors { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
