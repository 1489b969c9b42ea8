//! The speaker: which Service addresses this node makes reachable, and how.
//! [`l2`] decides what it announces by ARP/NDP over a source view (file or
//! cluster mode alike); [`membership`] says which speakers are alive;
//! [`responders`] answers on the node's interfaces ([`link`]) through
//! packet sockets ([`packet`]). [`run`] ties them together.

pub mod bgp;
pub mod bgp_peers;
pub mod l2;
pub mod link;
pub mod membership;
pub mod metrics;
pub mod packet;
pub mod responders;
pub mod select;
pub mod service_status;
pub mod tcp;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use tokio::time::Instant;

use crate::objects::Object;
use crate::source::{Snapshot, Source};
use membership::{Membership, Timing};
use responders::{Responders, Wanted};

/// How the speaker runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (its Node object's).
    pub node: String,
    /// Which interfaces may answer (`--interface`, `--exclude-interface`).
    pub interfaces: link::Choice,
    /// How often a source without change notifications is polled.
    pub poll_interval: Duration,
    /// How often the node's interfaces are read again.
    pub rescan_interval: Duration,
    /// Where to serve metrics, `/healthz` and `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    /// The membership among speakers; `None`: every Node object counts as
    /// alive (no failover but what Node objects say).
    pub membership: Option<MembershipOptions>,
    /// Put the addresses answered for on the loopback interface, and take
    /// them off when no longer answered for (`--assign-to-lo`; needs
    /// `CAP_NET_ADMIN`, and `arp_ignore=1` so that the kernel does not
    /// answer ARP for them from every node).
    pub assign_to_lo: bool,
    /// Run the receiving threads in the real-time class when allowed
    /// (`CAP_SYS_NICE`); `--no-realtime` turns it off.
    pub realtime: bool,
    /// Cluster mode: the writer of this node's ServiceL2Status objects.
    pub l2_status: Option<std::sync::Arc<service_status::L2Status>>,
    /// Cluster mode: the writer of this node's ServiceBGPStatus objects.
    pub bgp_status: Option<std::sync::Arc<service_status::BgpStatus>>,
    /// Where BGP peers may connect to this speaker (`--bgp-listen`; `None`:
    /// the speaker only dials, as MetalLB's does). `[::]` takes IPv4 peers
    /// too.
    pub bgp_listen: Option<SocketAddr>,
}

/// Where the membership listens and how fast it decides.
#[derive(Debug, Clone, Copy)]
pub struct MembershipOptions {
    /// The UDP address to bind; with an unspecified IP, this node's Node
    /// object's InternalIP is the address the others use.
    pub bind: SocketAddr,
    /// Probe and suspicion timing.
    pub timing: Timing,
}

/// The membership's default UDP port (MetalLB's memberlist port).
pub const MEMBERSHIP_PORT: u16 = 7946;

impl Options {
    /// The defaults for `node`: every usable interface, membership on
    /// `0.0.0.0:7946` with [`Timing::default`].
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            interfaces: link::Choice::default(),
            poll_interval: Duration::from_millis(200),
            rescan_interval: Duration::from_secs(10),
            metrics_listen: None,
            assign_to_lo: false,
            realtime: true,
            l2_status: None,
            bgp_status: None,
            bgp_listen: None,
            membership: Some(MembershipOptions {
                bind: SocketAddr::from(([0, 0, 0, 0], MEMBERSHIP_PORT)),
                timing: Timing::default(),
            }),
        }
    }
}

/// Why the speaker cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// The membership socket cannot be bound, or has no address to give.
    #[error("membership on {addr}: {message}")]
    Membership {
        /// The bind address.
        addr: SocketAddr,
        /// What is wrong.
        message: String,
    },
    /// The BGP listening socket cannot be bound.
    #[error("--bgp-listen {addr}: {source}")]
    BgpListen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The node's interfaces cannot be read.
    #[error("reading the network interfaces: {0}")]
    Links(std::io::Error),
    /// Reading the source panicked (a bug).
    #[error("internal error: reading the configuration panicked")]
    Panicked,
}

/// Announces this node's addresses until `shutdown` resolves: follows the
/// source and the membership, elects, answers ARP and NDP on the usable
/// interfaces, and announces each address it takes over. On shutdown,
/// leaves the membership first (the others take over at once) and stops
/// answering.
pub async fn run<S: Source + 'static>(
    mut source: S,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let telemetry = crate::metrics::Telemetry::new(registry);
    if let Some(addr) = options.metrics_listen {
        crate::metrics::start(addr, telemetry.clone())
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
    }
    let bgp_listener = match options.bgp_listen {
        Some(addr) => Some(bgp_peers::bind(addr).map_err(|source| Error::BgpListen { addr, source })?),
        None => None,
    };
    tokio::pin!(shutdown);
    let mut changes = source.changes();
    // The first view that lists everything (an API server's first lists).
    let mut said = false;
    let (mut version, first) = loop {
        let (back, read) = crate::source::read_off_runtime(source)
            .await
            .map_err(|_| Error::Panicked)?;
        source = back;
        let (version, view) = read?;
        // Not before the addresses can be read: a speaker that joined
        // without them would be handed a share it cannot announce.
        if view.synced && !view.status_unreadable {
            break (version, view);
        }
        if !std::mem::replace(&mut said, true) {
            match view.status_unreadable {
                true => tracing::error!("the state file cannot be read: not joining until it can"),
                false => tracing::info!("waiting for the first list of every kind"),
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = crate::source::changed_or_polled(&mut changes, options.poll_interval) => {}
        }
    };
    let mut state = State::new(first);
    state.log();
    let (mut responders, mut claimed) = Responders::new(options.interfaces.clone(), metrics.clone());
    responders.set_realtime(options.realtime);
    let links = link::links().map_err(Error::Links)?;
    if options.assign_to_lo {
        let lo = links.iter().find(|l| l.loopback).ok_or_else(|| {
            Error::Links(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "--assign-to-lo: no loopback interface",
            ))
        })?;
        responders.assign_to(lo.index);
        warn_arp_ignore(&links, &options.interfaces);
    }
    responders.rescan(&links, std::time::Instant::now());
    if responders.interfaces().is_empty() {
        tracing::warn!(only = ?options.interfaces.only(), "no interface answers yet (none usable, or no CAP_NET_RAW)");
    }
    let mut membership = match options.membership {
        Some(m) => Some(start_membership(&options.node, m, &state.view).await?),
        None => None,
    };
    if !state.has_node(&options.node) {
        tracing::warn!(node = %options.node, "no Node object of this name: this node is elected for nothing until one appears");
    }
    let stopped = match (&mut membership, options.membership) {
        (Some(m), Some(o)) => tokio::select! {
            () = &mut shutdown => true,
            () = settle(m, &state.view, o.bind) => false,
        },
        _ => false,
    };
    if stopped {
        if let Some(m) = membership {
            m.leave(Duration::from_millis(300)).await;
        }
        return Ok(());
    }
    let mut peers = bgp_peers::Peers::new(
        metrics.bgp.clone(),
        fallback_id(&options.node, &state.view),
        bgp_listener,
    );
    apply_bgp(&mut peers, &mut state, &options, &metrics);
    let mut alive = membership.as_ref().map(|m| m.alive.borrow().clone());
    if let Some(a) = &alive {
        metrics.members.set(i64::try_from(a.len()).unwrap_or(i64::MAX));
    }
    apply(&mut responders, &state, &options, alive.as_ref(), &metrics);
    telemetry.set_ready(true);
    let mut rescan = tokio::time::interval(options.rescan_interval);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Interfaces coming and going are seen at once, not at the next scan.
    let mut link_changes = link::watch();
    loop {
        let wake = responders.next_wake().map(Instant::from_std);
        let claim_due = responders.next_claim().map(Instant::from_std);
        let rescan_now = async {
            let Some(rx) = &mut link_changes else {
                return std::future::pending().await;
            };
            if rx.recv().await.is_none() {
                return std::future::pending().await;
            }
            // A burst of changes is read once.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while rx.try_recv().is_ok() {}
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = sleep_until(wake) => responders.announce_due(std::time::Instant::now()),
            () = sleep_until(claim_due) => responders.confirm_claims(std::time::Instant::now()),
            Some(claim) = claimed.recv() => responders.claimed(claim, std::time::Instant::now()),
            _ = rescan.tick() => rescan_links(&mut responders, &state, &options, alive.as_ref(), &metrics),
            () = rescan_now => rescan_links(&mut responders, &state, &options, alive.as_ref(), &metrics),
            () = membership_changed(&mut membership) => {
                alive = membership.as_mut().map(|m| m.alive.borrow_and_update().clone());
                if let Some(a) = &alive {
                    metrics.members.set(i64::try_from(a.len()).unwrap_or(i64::MAX));
                }
                apply(&mut responders, &state, &options, alive.as_ref(), &metrics);
                // A node that held some of these for a moment may have
                // taught caches its MAC: the owners say theirs again.
                responders.reannounce(std::time::Instant::now());
            }
            () = crate::source::changed_or_polled(&mut changes, options.poll_interval) => {
                // A file half written is not read (it would take addresses
                // away for a moment).
                let (back, moved) = crate::source::settled_version(source, changes.is_some(), version)
                    .await
                    .map_err(|_| Error::Panicked)?;
                source = back;
                if moved == version {
                    continue;
                }
                let (back, read) = crate::source::read_off_runtime(source)
                    .await
                    .map_err(|_| Error::Panicked)?;
                source = back;
                match read {
                    Ok((v, _)) if v == version => {}
                    Ok((v, new)) => {
                        version = v;
                        state.update(new);
                        state.log();
                        if let (Some(m), Some(o)) = (&membership, options.membership) {
                            m.seed(seeds(&state.view, &options.node, o.bind));
                        }
                        apply(&mut responders, &state, &options, alive.as_ref(), &metrics);
                        apply_bgp(&mut peers, &mut state, &options, &metrics);
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the configuration; the last one stays in force"),
                }
            }
        }
    }
    telemetry.set_ready(false);
    // Stop answering first, then leave: the others take over at once and
    // nobody sees two answers.
    responders.stop();
    if let Some(m) = membership {
        m.leave(Duration::from_millis(300)).await;
    }
    responders.unassign_all();
    drop(responders);
    tracing::info!("stopped answering");
    // Every BGP route withdrawn, then a Cease that says why.
    peers.shutdown("lb-speaker shutting down", Duration::from_secs(3)).await;
    Ok(())
}

/// The configuration in force: the last view read, the address pools in
/// force (a broken new version of a pool leaves the last good one), and
/// the problems found.
struct State {
    view: Snapshot,
    pools: lb_alloc::PoolSet,
    problems: Vec<crate::source::Problem>,
    logged: Vec<String>,
    /// The BGP peers and advertisements in force.
    bgp: bgp::Config,
    /// The BGP decision's own problems last logged.
    bgp_logged: Vec<String>,
    /// Whether the state file could not be read the last time (reported
    /// once per outage).
    status_broken: bool,
}

impl State {
    fn new(view: Snapshot) -> Self {
        let mut me = Self {
            view: Snapshot::empty(),
            pools: lb_alloc::PoolSet::default(),
            problems: Vec::new(),
            logged: Vec::new(),
            bgp: bgp::Config::default(),
            bgp_logged: Vec::new(),
            status_broken: false,
        };
        me.update(view);
        me
    }

    /// Takes a new view. A state file that cannot be read leaves the
    /// addresses last read in force: a half-written or broken file does
    /// not withdraw them all.
    fn update(&mut self, mut view: Snapshot) {
        if view.status_unreadable {
            if !std::mem::replace(&mut self.status_broken, true) {
                tracing::error!("a state file cannot be read: the addresses last read stay announced until it can");
            }
            view.status = std::mem::take(&mut self.view.status);
        } else if std::mem::replace(&mut self.status_broken, false) {
            tracing::info!("the state file reads again");
        }
        let mut problems = view.problems.clone();
        let (pools, _) = crate::config::pools(&view, &self.pools, &mut problems);
        self.pools = pools;
        self.bgp.update(&view, &self.pools, &mut problems);
        self.problems = problems;
        self.view = view;
    }

    /// Logs the problems not logged before.
    fn log(&mut self) {
        crate::source::log_new_problems(&self.problems, &mut self.logged);
    }

    fn has_node(&self, node: &str) -> bool {
        self.view
            .objects
            .iter()
            .any(|(_, o)| matches!(o, Object::Node(n) if n.metadata.name.as_deref() == Some(node)))
    }
}

/// Reads the interfaces again and follows them (and what is reported with
/// them).
fn rescan_links(
    responders: &mut Responders,
    state: &State,
    options: &Options,
    alive: Option<&BTreeSet<String>>,
    metrics: &metrics::Metrics,
) {
    match link::links() {
        Ok(links) => {
            responders.rescan(&links, std::time::Instant::now());
            apply(responders, state, options, alive, metrics);
        }
        Err(e) => tracing::warn!(error = %e, "reading the network interfaces"),
    }
}

/// Elects over the configuration in force and hands the result to the
/// responders.
fn apply(
    responders: &mut Responders,
    state: &State,
    options: &Options,
    alive: Option<&BTreeSet<String>>,
    metrics: &metrics::Metrics,
) {
    let node = options.node.as_str();
    let answering = responders.interfaces();
    let mut announced = service_status::Announced::new();
    // Per address, the interfaces (`None`: every one; one advertisement
    // for every interface wins over lists).
    let mut on: std::collections::BTreeMap<IpAddr, Option<BTreeSet<String>>> = Default::default();
    let mut announced_ips = Vec::new();
    for a in l2::announcements(&state.view, &state.pools, node, alive) {
        let names: Vec<String> = match a.interfaces.is_empty() {
            true => answering.clone(),
            false => a.interfaces.iter().filter(|i| answering.contains(i)).cloned().collect(),
        };
        if names.is_empty() {
            tracing::warn!(service = %a.service, interfaces = ?a.interfaces, "announceFailed: elected, but none of its interfaces answers on this node");
        }
        for ip in &a.ips {
            let e = on.entry(*ip).or_insert_with(|| Some(BTreeSet::new()));
            match (a.interfaces.is_empty(), e) {
                (true, e) => *e = None,
                (false, Some(set)) => set.extend(a.interfaces.iter().cloned()),
                (false, None) => {}
            }
            // Announced means answered on some interface.
            if !names.is_empty() {
                announced_ips.push(metrics::AnnouncedLabels {
                    service: a.service.clone(),
                    protocol: "layer2",
                    node: node.to_owned(),
                    ip: ip.to_string(),
                });
            }
        }
        if let Some((ns, name)) = a.service.split_once('/') {
            announced.insert((ns.to_owned(), name.to_owned()), names);
        }
    }
    metrics.set_announced("layer2", announced_ips);
    let wanted: Wanted = on.into_iter().map(|(ip, set)| (ip, set.unwrap_or_default())).collect();
    responders.set(wanted, std::time::Instant::now());
    if let Some(w) = &options.l2_status {
        w.publish(announced);
    }
}

/// Decides what this node announces by BGP and hands it to the sessions.
fn apply_bgp(peers: &mut bgp_peers::Peers, state: &mut State, options: &Options, metrics: &metrics::Metrics) {
    let plan = state.bgp.plan(&state.view, &state.pools, &options.node);
    crate::source::log_new_problems(&plan.problems, &mut state.bgp_logged);
    let announced = plan
        .addresses
        .iter()
        .flat_map(|(service, ips)| {
            ips.iter().map(|ip| metrics::AnnouncedLabels {
                service: service.clone(),
                protocol: "bgp",
                node: options.node.clone(),
                ip: ip.to_string(),
            })
        })
        .collect();
    metrics.set_announced("bgp", announced);
    peers.set(&plan);
    if let Some(w) = &options.bgp_status {
        w.publish(
            plan.services
                .iter()
                .map(|(k, peers)| (k.clone(), peers.iter().cloned().collect()))
                .collect(),
        );
    }
}

/// The BGP Identifier for sessions without `routerID` and without an IPv4
/// local address: the node's IPv4 InternalIP, else a hash of its name (as
/// MetalLB falls back to a checksum of the host name).
fn fallback_id(node: &str, view: &Snapshot) -> std::net::Ipv4Addr {
    let from_node = select::node(view, node)
        .and_then(|n| node_address(n, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
        .and_then(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
    from_node.unwrap_or_else(|| {
        // FNV-1a, never 0.
        let h = node
            .bytes()
            .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        std::net::Ipv4Addr::from(h.max(1))
    })
}

/// With addresses on `lo`, the kernel answers ARP for them on every
/// interface unless `arp_ignore` is at least 1 there (the larger of `all`
/// and the interface's own setting counts): says so for each interface
/// that answers.
fn warn_arp_ignore(links: &[link::Link], choice: &link::Choice) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/arp_ignore"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    let all = read("all");
    for l in links.iter().filter(|l| l.usable(choice)) {
        if all.max(read(&l.name)) == 0 {
            tracing::warn!(interface = %l.name, "arp_ignore is 0: the kernel answers ARP for the addresses put on lo from this node too; set net.ipv4.conf.all.arp_ignore=1");
        }
    }
}

/// Resolves at `at`; never without one.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the membership's live set changed (never without one).
async fn membership_changed(membership: &mut Option<Membership>) {
    match membership {
        Some(m) => {
            if m.alive.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The first InternalIP of a Node object (else its first address) that
/// the membership socket bound to `bind` can reach: of its family (an IPv6
/// socket bound to `::` reaches both).
fn node_address(n: &Node, bind: IpAddr) -> Option<IpAddr> {
    let addrs = n.status.as_ref()?.addresses.as_ref()?;
    let fits = |ip: &IpAddr| ip.is_ipv4() == bind.is_ipv4() || bind == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
    let parsed = |kind: Option<&str>| {
        addrs
            .iter()
            .filter(|a| kind.is_none_or(|k| a.type_ == k))
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .find(fits)
    };
    parsed(Some("InternalIP")).or_else(|| parsed(None))
}

/// The membership addresses of the other nodes in `view`, for a socket
/// bound to `bind`.
fn seeds(view: &Snapshot, me: &str, bind: SocketAddr) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = view
        .objects
        .iter()
        .filter_map(|(_, o)| match o {
            Object::Node(n) if n.metadata.name.as_deref() != Some(me) => node_address(n, bind.ip()),
            _ => None,
        })
        .map(|ip| SocketAddr::new(ip, bind.port()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Joins the membership, reachable at the bind address, or at this node's
/// Node object's address when the bind address is unspecified.
async fn start_membership(node: &str, o: MembershipOptions, view: &Snapshot) -> Result<Membership, Error> {
    let fail = |message: String| Error::Membership { addr: o.bind, message };
    let advertise = match o.bind.ip().is_unspecified() {
        false => o.bind,
        true => {
            let mine = view.objects.iter().find_map(|(_, obj)| match obj {
                Object::Node(n) if n.metadata.name.as_deref() == Some(node) => Some(n),
                _ => None,
            });
            let ip = mine.and_then(|n| node_address(n, o.bind.ip())).ok_or_else(|| {
                fail(format!(
                    "node {node:?} has no Node object with an address to give the other speakers; \
                     bind a specific address (--memberlist-bind IP:PORT) or add the Node's status.addresses"
                ))
            })?;
            SocketAddr::new(ip, o.bind.port())
        }
    };
    let m = Membership::start(node.to_owned(), o.bind, advertise, o.timing).map_err(|e| fail(e.to_string()))?;
    tracing::info!(bind = %o.bind, %advertise, "membership started");
    m.seed(seeds(view, node, o.bind));
    Ok(m)
}

/// Waits, at start, until every other node's speaker has been seen, or a
/// second (joining takes one round trip whatever the probe interval; a
/// node whose speaker is not running never answers), so that a speaker
/// that starts beside running ones does not claim their addresses for a
/// moment.
async fn settle(m: &mut Membership, view: &Snapshot, bind: SocketAddr) {
    let others = seeds(view, "", bind).len();
    let until = Instant::now() + Duration::from_secs(1);
    while m.alive.borrow().len() < others {
        if tokio::time::timeout_at(until, m.alive.changed()).await.is_err() {
            break;
        }
    }
}
