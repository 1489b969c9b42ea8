//! lb-speaker: makes this node's share of the Service addresses reachable
//! (Layer 2: answers ARP and NDP, announces at takeover; BGP: announces
//! them to the BGPPeers that select this node).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lb_bins::{LogFormat, init_logging, shutdown_signal};
use lb_kube::speaker::membership::Timing;
use lb_kube::speaker::{self, MembershipOptions, Options};

/// Announces the Service addresses this node is elected for: answers ARP
/// requests and IPv6 neighbour solicitations for them on the node's
/// interfaces and sends gratuitous ARP / unsolicited advertisements when it
/// takes one over. Speakers find each other by SWIM membership over UDP
/// (port 7946, as MetalLB's memberlist) seeded from the Node objects'
/// InternalIPs, and elect one node per address as MetalLB does.
///
/// BGP: with BGPPeers (and BGPAdvertisements) in the configuration, this
/// node also dials each peer that selects it and announces the addresses
/// of the Services it should (MetalLB's rules), IPv4 and IPv6, with TCP
/// MD5, graceful restart and MetalLB's metrics; SIGTERM withdraws them and
/// closes each session with a Cease that says why.
///
/// File mode: --manifests DIR is the cluster; addresses come from the
/// controller's state file (default DIR/.lb/state.json).
///
/// Cluster mode (without --manifests): watches the API server given by
/// --kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster
/// configuration; addresses come from Service status.
///
/// Needs CAP_NET_RAW for Layer 2 (packet sockets); BGP needs none (it only
/// dials out). The node must accept traffic to
/// the addresses it answers for (kube-proxy's rules, or the address on
/// `lo` with arp_ignore=1): see the README.
#[derive(Parser, Debug)]
#[command(
    name = "lb-speaker",
    version,
    after_help = "Examples:\n  lb-speaker --manifests examples/ --node node-a\n  lb-speaker --manifests /etc/lb --node $(hostname) --interface eth0 --metrics-listen 127.0.0.1:9121\n  lb-speaker --kubeconfig ~/.kube/config --node $NODE_NAME"
)]
struct Cli {
    /// Directory of Kubernetes manifests (YAML/JSON, multi-document) that is the cluster.
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// The controller's state file (default DIR/.lb/state.json; the other
    /// classes' state files beside it are read too).
    #[arg(long, value_name = "PATH", requires = "manifests")]
    state_file: Option<PathBuf>,
    /// This node's name, as its Node object has it.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    node: String,
    /// Answer only on this interface (repeat for more). Default: every
    /// interface that is up, ARP-capable Ethernet, not a bond or bridge member.
    #[arg(long = "interface", value_name = "IF")]
    interfaces: Vec<String>,
    /// Never answer on interfaces whose name matches REGEX (repeat for
    /// more; replaces the default list, MetalLB's: docker, cbr, dummy,
    /// virbr, lxcbr, veth, lo, cali, tunl, flannel, kube-ipvs, cni,
    /// nodelocaldns, lxc). Not applied to interfaces named by --interface.
    #[arg(long = "exclude-interface", value_name = "REGEX")]
    exclude_interfaces: Vec<String>,
    /// The membership's UDP address. With an unspecified IP, the others
    /// reach this speaker at its Node object's InternalIP.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7946")]
    memberlist_bind: SocketAddr,
    /// No membership: every Node object counts as alive (no failover but
    /// what the Node objects say).
    #[arg(long)]
    no_memberlist: bool,
    /// How often each speaker probes another one, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    probe_interval_ms: u64,
    /// How long a probe waits for its direct answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 40)]
    probe_timeout_ms: u64,
    /// How long a suspected speaker has to answer before it counts as
    /// down, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    suspicion_timeout_ms: u64,
    /// Put each address this node answers for on `lo` (and take it off
    /// when another node takes over), so the node accepts its traffic
    /// without kube-proxy. Needs CAP_NET_ADMIN, and arp_ignore=1 (see the
    /// README).
    #[arg(long)]
    assign_to_lo: bool,
    /// Keep the responder threads at normal priority. By default they ask
    /// for the real-time FIFO class at a low priority (needs CAP_SYS_NICE;
    /// without it they stay at normal priority), which roughly halves the
    /// reply latency on a busy node.
    #[arg(long)]
    no_realtime: bool,
    /// Serve Prometheus metrics (/metrics), liveness (/healthz) and
    /// readiness (/readyz) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Also accept BGP connections that peers open, on this address
    /// (e.g. `[::]:179`, which takes IPv4 peers too). Without it the
    /// speaker only dials its peers, as MetalLB's does. A connection from
    /// an address that is no BGPPeer of this node is closed; when both
    /// sides connect, one connection stays (RFC 4271 collision rules).
    #[arg(long, value_name = "ADDR")]
    bgp_listen: Option<SocketAddr>,
    /// How often to look for changes in DIR, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    poll_ms: u64,
    /// Cluster mode: the kubeconfig of the API server.
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Cluster mode: the namespace of the metallb.io objects.
    #[arg(long, value_name = "NS", default_value = "metallb-system")]
    namespace: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if cli.node.trim().is_empty() {
        eprintln!("error: --node (or $NODE_NAME) is empty");
        return ExitCode::from(2);
    }
    let timing = Timing {
        probe_interval: Duration::from_millis(cli.probe_interval_ms),
        probe_timeout: Duration::from_millis(cli.probe_timeout_ms),
        suspicion_timeout: Duration::from_millis(cli.suspicion_timeout_ms),
    };
    if timing.probe_interval.is_zero() || timing.probe_timeout.is_zero() || timing.suspicion_timeout.is_zero() {
        eprintln!("error: --probe-interval-ms, --probe-timeout-ms and --suspicion-timeout-ms must be above 0");
        return ExitCode::from(2);
    }
    // Bounded so that a slip of the finger cannot make failover (or a
    // shutdown during start-up) take hours.
    if timing.probe_interval > Duration::from_secs(60) || timing.suspicion_timeout > Duration::from_secs(600) {
        eprintln!("error: --probe-interval-ms is at most 60000 and --suspicion-timeout-ms at most 600000");
        return ExitCode::from(2);
    }
    let bind_ip = cli.memberlist_bind.ip();
    let broadcast = bind_ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST);
    if !cli.no_memberlist && (bind_ip.is_multicast() || broadcast) {
        eprintln!("error: --memberlist-bind needs a unicast address (or 0.0.0.0 / [::])");
        return ExitCode::from(2);
    }
    if !cli.no_memberlist && cli.memberlist_bind.port() == 0 {
        eprintln!("error: --memberlist-bind needs a port (the other speakers use the same one)");
        return ExitCode::from(2);
    }
    if timing.probe_timeout >= timing.probe_interval {
        eprintln!("error: --probe-timeout-ms must be below --probe-interval-ms");
        return ExitCode::from(2);
    }
    let exclude = (!cli.exclude_interfaces.is_empty()).then(|| cli.exclude_interfaces.clone());
    let interfaces = match lb_kube::speaker::link::Choice::new(cli.interfaces.clone(), exclude) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        interfaces,
        poll_interval: Duration::from_millis(cli.poll_ms.clamp(10, 5000)),
        metrics_listen: cli.metrics_listen,
        assign_to_lo: cli.assign_to_lo,
        bgp_listen: cli.bgp_listen,
        realtime: !cli.no_realtime,
        membership: (!cli.no_memberlist).then_some(MembershipOptions {
            bind: cli.memberlist_bind,
            timing,
        }),
        ..Options::new(cli.node.clone())
    };
    // One thread: a frame's wake-up runs its answer on the thread that
    // saw it ready (a second thread costs a hand-off per request).
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async move {
        let shutdown = shutdown_signal();
        match cli.manifests {
            Some(dir) => {
                let state = cli
                    .state_file
                    .unwrap_or_else(|| lb_kube::status::default_path(&dir, None));
                let source = lb_kube::source::file::FileSource::new(&dir).with_status_file(state);
                speaker::run(source, options, shutdown).await.map_err(|e| e.to_string())
            }
            None => {
                let cluster = lb_kube::controller::Cluster::new(cli.kubeconfig, cli.namespace.clone());
                let client = cluster.client().await.map_err(|e| e.to_string())?;
                let owner = match (std::env::var("POD_NAME"), std::env::var("POD_UID")) {
                    (Ok(name), Ok(uid)) if !name.is_empty() && !uid.is_empty() => {
                        Some(lb_kube::speaker::service_status::Owner { name, uid })
                    }
                    _ => None,
                };
                let mut options = options;
                options.l2_status = Some(lb_kube::speaker::service_status::L2Status::start(
                    client.clone(),
                    cli.namespace.clone(),
                    cli.node.clone(),
                    owner.clone(),
                ));
                options.bgp_status = Some(lb_kube::speaker::service_status::BgpStatus::start(
                    client.clone(),
                    cli.namespace.clone(),
                    cli.node.clone(),
                    owner,
                ));
                let watches = lb_kube::source::cluster::speaker_watches(&cli.namespace);
                let source = lb_kube::source::cluster::KubeSource::start(client, watches);
                speaker::run(source, options, shutdown).await.map_err(|e| e.to_string())
            }
        }
    });
    match result {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot announce");
            ExitCode::from(2)
        }
    }
}
