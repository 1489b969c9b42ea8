//! The BGP sessions of one node, one tokio task each, driving
//! [`lb_bgp::Session`] over TCP: it dials the peer (from `sourceAddress`,
//! with TCP MD5 when a password is set, TTL 1 for single-hop eBGP and 255
//! with `ebgpMultiHop`), announces what [`super::bgp::Plan`] gives it
//! through an [`AdjRibOut`] (the whole table then End-of-RIB on each
//! establishment and route refresh, only changes after), and on stop
//! withdraws everything, then closes with a Cease that says why.
//!
//! The next hop is this side's address of the TCP connection, as
//! MetalLB's; an IPv4 session carries IPv4 routes and an IPv6 session
//! IPv6 routes.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use lb_bgp::session::{Config as SessionConfig, Down, Event, Input};
use lb_bgp::{AdjRibOut, Announce, IPV4_UNICAST, IPV6_UNICAST, MAX_LEN, Origin, Session, State};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use super::bgp::{PeerConfig, Plan, Routes};
use super::metrics::{Count, PeerLabel};

/// The restart time offered with `enableGracefulRestart` (FRR's default).
const RESTART_TIME: u16 = 120;
/// LOCAL_PREF sent to iBGP peers when no advertisement sets one (RFC 4271
/// asks for the attribute on every route to an internal peer; 100 is the
/// usual default).
const DEFAULT_LOCAL_PREF: u32 = 100;

/// The BGP metrics, under MetalLB's names, by peer `ip:port`.
#[derive(Debug, Clone, Default)]
pub struct BgpMetrics {
    /// 1 while the session is established.
    pub session_up: Family<PeerLabel, Gauge>,
    /// UPDATE messages sent.
    pub updates: Family<PeerLabel, Count>,
    /// Prefixes announced to the peer now.
    pub announced: Family<PeerLabel, Gauge>,
}

/// One running session.
#[derive(Debug)]
struct Running {
    config: PeerConfig,
    routes: watch::Sender<Arc<Routes>>,
    stop: watch::Sender<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

/// This node's sessions.
#[derive(Debug)]
pub struct Peers {
    running: BTreeMap<String, Running>,
    metrics: BgpMetrics,
    /// The BGP Identifier when neither `routerID` nor an IPv4 side of the
    /// connection gives one.
    fallback_id: Ipv4Addr,
}

impl Peers {
    /// No session yet. `fallback_id` is the BGP Identifier used when
    /// neither the peer's `routerID` nor an IPv4 local address gives one.
    pub fn new(metrics: BgpMetrics, fallback_id: Ipv4Addr) -> Self {
        Self {
            running: BTreeMap::new(),
            metrics,
            fallback_id,
        }
    }

    /// Follows `plan`: starts the sessions it adds, stops (with a Cease)
    /// those it drops or whose configuration changed (started again with
    /// the new one), and hands every session its routes.
    pub fn set(&mut self, plan: &Plan) {
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| plan.peers.get(*name) != Some(&r.config))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                let why = match plan.peers.contains_key(&name) {
                    true => "BGPPeer changed",
                    false => "BGPPeer removed",
                };
                tracing::info!(peer = %name, address = %r.config.label(), "{why}: closing the session");
                r.stop.send_replace(Some(why.to_owned()));
                self.metrics.session_up.remove(&label(&r.config));
                self.metrics.announced.remove(&label(&r.config));
            }
        }
        for (name, config) in &plan.peers {
            let routes = Arc::new(plan.routes.get(name).cloned().unwrap_or_default());
            match self.running.get(name) {
                Some(r) => {
                    r.routes.send_if_modified(|old| {
                        let changed = **old != *routes;
                        if changed {
                            *old = routes.clone();
                        }
                        changed
                    });
                }
                None => {
                    let (routes_tx, routes_rx) = watch::channel(routes);
                    let (stop_tx, stop_rx) = watch::channel(None);
                    let task = tokio::spawn(run(
                        config.clone(),
                        self.fallback_id,
                        routes_rx,
                        stop_rx,
                        self.metrics.clone(),
                    ));
                    self.running.insert(
                        name.clone(),
                        Running {
                            config: config.clone(),
                            routes: routes_tx,
                            stop: stop_tx,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Stops every session: withdraws its routes, then sends a Cease with
    /// `why`; waits at most `within` for them to be sent.
    pub async fn shutdown(self, why: &str, within: Duration) {
        let mut tasks = Vec::new();
        for (_, r) in self.running {
            r.stop.send_replace(Some(why.to_owned()));
            tasks.push(r.task);
        }
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("some BGP sessions did not close in time");
        }
    }
}

fn label(c: &PeerConfig) -> PeerLabel {
    PeerLabel { peer: c.label() }
}

/// Opens the TCP connection to the peer as its configuration says.
async fn dial(config: &PeerConfig) -> io::Result<TcpStream> {
    let addr = SocketAddr::new(config.address, config.port);
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(pw) = &config.password {
        super::tcp::set_md5(&socket, addr.ip(), pw.as_bytes())?;
    }
    if let Some(src) = config.source {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    // Single-hop eBGP peers are one hop away (RFC 4271 leaves it to
    // configuration; FRR and BIRD send TTL 1 unless told multihop).
    let ttl = match (config.internal(), config.ebgp_multi_hop) {
        (true, _) => None,
        (false, true) => Some(255),
        (false, false) => Some(1),
    };
    if let Some(ttl) = ttl {
        let s = socket2::SockRef::from(&socket);
        match addr {
            SocketAddr::V4(_) => s.set_ttl_v4(ttl)?,
            SocketAddr::V6(_) => s.set_unicast_hops_v6(ttl)?,
        }
    }
    socket.set_nodelay(true)?;
    // The connect attempt lasts at most the time between attempts.
    match tokio::time::timeout(config.connect_time, socket.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// The routes with this session's next hop, AS path and local preference.
fn desired(config: &PeerConfig, routes: &Routes, local: IpAddr) -> BTreeMap<IpNet, Announce> {
    let internal = config.internal();
    routes
        .iter()
        .map(|(p, a)| {
            let announce = Announce {
                origin: Origin::Igp,
                as_path: if internal { vec![] } else { vec![config.my_asn] },
                next_hop: local,
                local_pref: internal.then(|| a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
                communities: a.communities.iter().copied().collect(),
                large_communities: a.large_communities.iter().copied().collect(),
            };
            (*p, announce)
        })
        .collect()
}

/// A connection in progress.
type Connecting = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<TcpStream>> + Send>>;

/// One session, until stopped.
async fn run(
    config: PeerConfig,
    fallback_id: Ipv4Addr,
    mut routes: watch::Receiver<Arc<Routes>>,
    mut stop: watch::Receiver<Option<String>>,
    metrics: BgpMetrics,
) {
    let peer = config.label();
    let family = match config.address {
        IpAddr::V4(_) => IPV4_UNICAST,
        IpAddr::V6(_) => IPV6_UNICAST,
    };
    let mut session = Session::new(SessionConfig {
        local_as: config.my_asn,
        peer_as: config.peer_as,
        bgp_id: config.router_id.unwrap_or(fallback_id),
        hold_time: config.hold_time,
        connect_retry: config.connect_time,
        families: vec![family],
        keepalive_time: config.keepalive_time,
        graceful_restart: config.graceful_restart.then_some(RESTART_TIME),
    });
    let l = PeerLabel { peer: peer.clone() };
    metrics.session_up.get_or_create(&l).set(0);
    let mut stream: Option<TcpStream> = None;
    let mut connecting: Option<Connecting> = None;
    let mut local: Option<IpAddr> = None;
    let mut rib = AdjRibOut::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    session.handle_input(Instant::now(), Input::ManualStart);
    loop {
        // Drain the session: its events, then its bytes.
        while let Some(e) = session.poll_event() {
            match e {
                Event::Connect => {
                    let c = config.clone();
                    connecting = Some(Box::pin(async move { dial(&c).await }));
                }
                Event::Disconnect => {
                    // What is queued (a NOTIFICATION) goes first.
                    flush(&mut session, &mut stream, &mut out).await;
                    stream = None;
                    connecting = None;
                }
                Event::Established(p) => {
                    tracing::info!(%peer, asn = p.asn, id = %p.bgp_id, hold = p.hold_time, "BGP session established");
                    metrics.session_up.get_or_create(&l).set(1);
                    rib = AdjRibOut::with_families(&p.families);
                    if !p.families.contains(&family) {
                        tracing::warn!(%peer, "the peer did not offer this session's address family: nothing can be announced");
                    }
                    send_table(
                        &mut session,
                        &mut rib,
                        &config,
                        &routes.borrow(),
                        local,
                        true,
                        &metrics,
                        &l,
                    );
                }
                Event::Down(why) => {
                    match &why {
                        Down::Stopped => tracing::info!(%peer, "BGP session closed"),
                        Down::PeerNotified(code, text) => {
                            tracing::warn!(%peer, ?code, message = text.as_deref().unwrap_or(""), "BGP session down: the peer sent a NOTIFICATION")
                        }
                        Down::Notified(code) => {
                            tracing::warn!(%peer, ?code, "BGP session down: NOTIFICATION sent")
                        }
                        Down::ConnectionLost => tracing::warn!(%peer, "BGP session down: connection lost"),
                    }
                    rib.reset();
                    metrics.session_up.get_or_create(&l).set(0);
                    metrics.announced.get_or_create(&l).set(0);
                }
                Event::RouteRefresh(..) => {
                    send_table(
                        &mut session,
                        &mut rib,
                        &config,
                        &routes.borrow(),
                        local,
                        true,
                        &metrics,
                        &l,
                    );
                }
                // Received routes are ignored.
                _ => {}
            }
        }
        if !flush(&mut session, &mut stream, &mut out).await {
            session.handle_input(Instant::now(), Input::TcpConnectionFails);
            continue;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.changed() => {
                let why = stop.borrow().clone().unwrap_or_default();
                if session.state() == State::Established {
                    // Withdraw first, then say goodbye.
                    send_table(&mut session, &mut rib, &config, &Routes::new(), local, false, &metrics, &l);
                }
                session.handle_input(Instant::now(), Input::ManualStop(&why));
                while session.poll_event().is_some() {}
                flush(&mut session, &mut stream, &mut out).await;
                if let Some(mut s) = stream.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), s.shutdown()).await;
                }
                metrics.session_up.remove(&l);
                metrics.announced.remove(&l);
                return;
            }
            Ok(()) = routes.changed() => {
                if session.state() == State::Established {
                    send_table(&mut session, &mut rib, &config, &routes.borrow_and_update(), local, false, &metrics, &l);
                }
            }
            r = async {
                match connecting.as_mut() {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            }, if connecting.is_some() => {
                connecting = None;
                match r {
                    Ok(s) => {
                        local = s.local_addr().ok().map(|a| a.ip());
                        if config.router_id.is_none() {
                            match local {
                                Some(IpAddr::V4(v4)) => session.set_bgp_id(v4),
                                _ => session.set_bgp_id(fallback_id),
                            }
                        }
                        stream = Some(s);
                        session.handle_input(Instant::now(), Input::TcpConnectionConfirmed);
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "BGP connect failed");
                        session.handle_input(Instant::now(), Input::TcpConnectionFails);
                    }
                }
            }
            r = async {
                match stream.as_mut() {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            }, if stream.is_some() => {
                match r {
                    Ok(0) | Err(_) => {
                        stream = None;
                        session.handle_input(Instant::now(), Input::TcpConnectionFails);
                    }
                    Ok(n) => session.handle_input(Instant::now(), Input::Received(&buf[..n])),
                }
            }
            () = super::sleep_until(deadline) => session.handle_timeout(Instant::now()),
        }
    }
}

/// Queues the UPDATEs that take the peer to `routes` (`full`: the whole
/// table then End-of-RIB).
#[allow(clippy::too_many_arguments)]
fn send_table(
    session: &mut Session,
    rib: &mut AdjRibOut,
    config: &PeerConfig,
    routes: &Routes,
    local: Option<IpAddr>,
    full: bool,
    metrics: &BgpMetrics,
    l: &PeerLabel,
) {
    let Some(local) = local else { return };
    let want = desired(config, routes, local);
    let mut bytes = Vec::new();
    let n = match full {
        true => rib.full(&want, MAX_LEN, &mut bytes),
        false => rib.update(&want, MAX_LEN, &mut bytes),
    };
    if n > 0 && session.send(&bytes) {
        let updates = metrics.updates.get_or_create(l);
        for _ in 0..n {
            updates.inc();
        }
    }
    metrics
        .announced
        .get_or_create(l)
        .set(i64::try_from(rib.sent().len()).unwrap_or(i64::MAX));
}

/// Writes what the session has to send; false when the connection failed
/// (or a write took longer than the hold time allows).
async fn flush(session: &mut Session, stream: &mut Option<TcpStream>, out: &mut Vec<u8>) -> bool {
    out.clear();
    if !session.poll_transmit(out) {
        return true;
    }
    let Some(s) = stream else { return true };
    match tokio::time::timeout(Duration::from_secs(30), s.write_all(out)).await {
        Ok(Ok(())) => true,
        _ => {
            *stream = None;
            false
        }
    }
}
