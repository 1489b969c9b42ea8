//! lb-controller: assigns external IPs to Services of type LoadBalancer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use lb_bins::{LogFormat, init_logging, shutdown_signal};
use lb_kube::controller::{self, Options, Report};
use lb_kube::source::Severity;

/// Assigns external IPs to Kubernetes Services of type LoadBalancer from
/// MetalLB-style address pools (IPAddressPool CRDs or the legacy MetalLB
/// ConfigMap).
///
/// File mode: --manifests DIR is the cluster. Addresses are written to a state
/// file (default DIR/.lb/state.json) so a restart keeps every address.
///
/// Cluster mode (without --manifests): watches the API server given by
/// --kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster
/// configuration, and writes Service status there.
#[derive(Parser, Debug)]
#[command(
    name = "lb-controller",
    version,
    after_help = "Examples:\n  lb-controller --manifests examples/ --once --output json\n  lb-controller validate --manifests examples/\n  lb-controller --manifests /etc/lb --metrics-listen 127.0.0.1:9120\n  lb-controller --kubeconfig ~/.kube/config --metrics-listen 127.0.0.1:9120"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Directory of Kubernetes manifests (YAML/JSON, multi-document) that is the cluster.
    #[arg(long, value_name = "DIR", global = true)]
    manifests: Option<PathBuf>,
    /// Reconcile once, print the result and exit (0 when the manifests are valid).
    #[arg(long)]
    once: bool,
    /// Output of --once.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// State file (default DIR/.lb/state.json).
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// Handle only Services with this spec.loadBalancerClass (default: Services without one).
    #[arg(long, value_name = "CLASS")]
    lb_class: Option<String>,
    /// Serve Prometheus metrics (/metrics), liveness (/healthz) and
    /// readiness (/readyz) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// How often to look for changes in DIR, in milliseconds. A change is
    /// read once DIR has stayed the same for one such interval.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    poll_ms: u64,
    /// How long a Service must stay gone (from DIR, or from the API server)
    /// before its addresses are released, and a deleted address pool stays
    /// in force for its holders (--once releases at once), in milliseconds.
    /// Raise it to restore deleted pools by hand, one by one.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    release_delay_ms: u64,
    /// Cluster mode: the kubeconfig of the API server.
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Cluster mode: the namespace of the metallb.io objects and of the
    /// leader Lease.
    #[arg(long, value_name = "NS", default_value = "metallb-system")]
    namespace: String,
    /// Cluster mode: the Lease replicas elect their leader on (only the
    /// leader writes). Identity: $POD_NAME, else the host name and PID.
    #[arg(long, value_name = "NAME", default_value = "lb-controller")]
    lease: String,
    /// Cluster mode: write without electing a leader (one replica only).
    #[arg(long)]
    no_leader_election: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the manifests and exit: non-zero, with file, document, object
    /// and field of each problem, when any is invalid.
    Validate,
    /// Print the metallb.io CustomResourceDefinitions lb reads (YAML, as
    /// deploy/crds.yaml holds them).
    Crds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn print_problems(report: &Report) -> bool {
    let mut errors = false;
    for p in &report.problems {
        errors |= p.severity == Severity::Error;
        eprintln!("{p}");
    }
    errors
}

/// Whether the state file `state` would be read as one of `dir`'s
/// manifests (in `dir` itself, named like one).
fn read_as_manifest(state: &std::path::Path, dir: &std::path::Path) -> bool {
    let (Some(name), Some(parent)) = (state.file_name(), state.parent()) else {
        return false;
    };
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    lb_kube::source::file::is_manifest_name(name)
        && matches!((std::fs::canonicalize(parent), std::fs::canonicalize(dir)), (Ok(a), Ok(b)) if a == b)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.run.log_format);
    if let Some(Command::Crds) = cli.command {
        print!("{}", lb_kube::objects::metallb::crds_yaml());
        return ExitCode::SUCCESS;
    }
    if cli.run.lb_class.as_deref() == Some("") {
        eprintln!("error: --lb-class must name a class; leave it out to handle Services without one");
        return ExitCode::from(2);
    }
    let Some(dir) = cli.run.manifests.clone() else {
        return cluster_mode(&cli);
    };
    // A directory that is not there is a typo, not an empty cluster: said,
    // and nothing is made there (the state file would be).
    if let Err(e) = std::fs::read_dir(&dir) {
        eprintln!("error: manifests directory {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    if let Some(state) = &cli.run.state_file
        && read_as_manifest(state, &dir)
    {
        eprintln!(
            "error: --state-file {} is in {} under a manifest's name: it would be read as a manifest; \
             leave --state-file out (DIR/.lb/state.json) or put it outside DIR",
            state.display(),
            dir.display()
        );
        return ExitCode::from(2);
    }
    let options = Options {
        state_file: cli.run.state_file.clone(),
        load_balancer_class: cli.run.lb_class.clone(),
        poll_interval: Duration::from_millis(cli.run.poll_ms.max(50)),
        release_delay: if cli.run.once {
            Duration::ZERO
        } else {
            Duration::from_millis(cli.run.release_delay_ms)
        },
        ..Options::new(dir)
    };
    if let Some(Command::Validate) = cli.command {
        let report = match controller::Controller::read_only(options).and_then(|mut c| c.reconcile(true)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let errors = print_problems(&report);
        // What the Services would meet: a pool that does not exist, an
        // address another Service holds, and the like.
        for s in &report.services {
            for w in &s.warnings {
                // Field problems were printed above already.
                let said = report.problems.iter().any(|p| {
                    p.object
                        .as_ref()
                        .is_some_and(|o| o.kind == "Service" && o.namespace == s.namespace && o.name == s.name)
                        && p.field.as_ref().is_some_and(|f| *w == format!("{f}: {}", p.message))
                });
                if !said {
                    eprintln!("warning: Service {}/{}: {w}", s.namespace, s.name);
                }
            }
        }
        if errors {
            return ExitCode::FAILURE;
        }
        println!(
            "ok: {} LoadBalancer Service(s), {} pool(s)",
            report.services.len(),
            report.pool_stats.len()
        );
        return ExitCode::SUCCESS;
    }
    if cli.run.once {
        let report = match controller::run_once(options) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let errors = print_problems(&report);
        match cli.run.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&report).expect("report serializes")),
            Output::Text => {
                for (service, ips) in &report.released {
                    tracing::info!(service = %service, ips = ?ips, "released");
                }
                for s in &report.services {
                    let ips: Vec<String> = s.ips.iter().map(ToString::to_string).collect();
                    let ips = if ips.is_empty() {
                        "<pending>".to_owned()
                    } else {
                        ips.join(",")
                    };
                    println!(
                        "{}/{}\t{}\t{}\t{}",
                        s.namespace,
                        s.name,
                        ips,
                        s.pool.as_deref().unwrap_or("-"),
                        s.warnings.join("; ")
                    );
                }
            }
        }
        return if errors { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        let shutdown = shutdown_signal();
        controller::run(options, cli.run.metrics_listen, shutdown).await
    });
    exit_code(result)
}

/// Runs on the API server until a shutdown signal.
fn cluster_mode(cli: &Cli) -> ExitCode {
    if cli.run.once || cli.command.is_some() || cli.run.state_file.is_some() {
        eprintln!("error: --once, validate and --state-file need --manifests DIR (file mode)");
        return ExitCode::from(2);
    }
    let options = Options {
        load_balancer_class: cli.run.lb_class.clone(),
        poll_interval: Duration::from_millis(cli.run.poll_ms.clamp(10, 500)),
        release_delay: Duration::from_millis(cli.run.release_delay_ms),
        ..Options::new("")
    };
    let mut cluster = controller::Cluster::new(cli.run.kubeconfig.clone(), cli.run.namespace.clone());
    if !cli.run.no_leader_election {
        cluster = cluster.with_lease(controller::Lease::new(cli.run.lease.clone(), lb_bins::identity()));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let metrics = cli.run.metrics_listen;
    // The signal handler needs the runtime: made inside it.
    let result =
        rt.block_on(async move { controller::run_cluster(options, cluster, metrics, shutdown_signal()).await });
    exit_code(result)
}

/// How a run that follows until a shutdown signal ends: 0 when it stopped
/// cleanly, 2 (with the error) otherwise.
fn exit_code(result: Result<(), controller::Error>) -> ExitCode {
    match result {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
