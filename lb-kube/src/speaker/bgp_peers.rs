//! The BGP sessions of one node, one tokio task each, driving
//! [`lb_bgp::Session`] over TCP: it dials the peer (from `sourceAddress`,
//! with TCP MD5 when a password is set, TTL 1 for single-hop eBGP and 255
//! with `ebgpMultiHop`), announces what [`super::bgp::Plan`] gives it
//! through an [`AdjRibOut`] (the whole table then End-of-RIB on each
//! establishment and route refresh, only changes after), and on stop
//! withdraws everything, then closes with a Cease that says why; or, when
//! the process stops and graceful restart was negotiated, closes without
//! a NOTIFICATION so that the peer keeps the routes until the next
//! session's End-of-RIB. Writes never block the task: what the socket
//! does not take waits in a buffer while timers and reads go on, so a
//! peer that stops reading is still cut off by the hold timer.
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
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use super::bgp::{PeerConfig, Plan, Routes};
use super::metrics::{Count, PeerLabel};

/// The restart time offered with `enableGracefulRestart` (FRR's default).
const RESTART_TIME: u16 = 120;
/// LOCAL_PREF sent to iBGP peers when no advertisement sets one (RFC 4271
/// asks for the attribute on every route to an internal peer; 100 is the
/// usual default, FRR's).
const DEFAULT_LOCAL_PREF: u32 = 100;
/// How long a stopping session may take to send its withdrawals and Cease.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

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

/// Why a session stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Its BGPPeer was removed, changed, or no longer selects this node:
    /// withdraw, then a Cease with this text.
    Configuration(String),
    /// The speaker stops: with graceful restart negotiated, the connection
    /// closes without a NOTIFICATION and the routes stay with the peer
    /// for the restart time (a restart of the speaker leaves the node's
    /// data plane in place); else withdraw, then a Cease with this text.
    Shutdown(String),
}

/// One running session.
#[derive(Debug)]
struct Running {
    config: PeerConfig,
    routes: watch::Sender<Arc<Routes>>,
    stop: watch::Sender<Option<Stop>>,
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
    /// the new one), and hands every session its routes. The metric
    /// series of a peer go with the last session to its `ip:port`.
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
                    false => "BGPPeer removed, or no longer selects this node",
                };
                tracing::info!(peer = %name, address = %r.config.label(), "{why}: closing the session");
                r.stop.send_replace(Some(Stop::Configuration(why.to_owned())));
                let l = label(&r.config);
                if !plan.peers.values().any(|p| label(p) == l) {
                    self.metrics.session_up.remove(&l);
                    self.metrics.announced.remove(&l);
                    self.metrics.updates.remove(&l);
                }
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

    /// Stops every session as [`Stop::Shutdown`] says, telling peers
    /// `why`; waits at most `within` for them to close.
    pub async fn shutdown(self, why: &str, within: Duration) {
        let mut tasks = Vec::new();
        for (_, r) in self.running {
            r.stop.send_replace(Some(Stop::Shutdown(why.to_owned())));
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
    let stream = match tokio::time::timeout(config.connect_time, socket.connect(addr)).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    // A dial to a local port nobody listens on can meet itself (TCP
    // simultaneous open): that is no peer.
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connected to itself: nothing listens there",
        ));
    }
    Ok(stream)
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

/// One session's connection: the stream and what it has yet to take.
#[derive(Debug, Default)]
struct Connection {
    stream: Option<TcpStream>,
    /// Bytes the session sent that the socket has not taken yet.
    pending: Vec<u8>,
}

impl Connection {
    /// Queues what the session has to send and writes what the socket
    /// takes now; an error means the connection failed.
    fn push(&mut self, session: &mut Session) -> io::Result<()> {
        session.poll_transmit(&mut self.pending);
        let Some(s) = &self.stream else {
            self.pending.clear();
            return Ok(());
        };
        while !self.pending.is_empty() {
            match s.try_write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes what is pending, waiting at most `within`, then closes:
    /// FIN after the data, and what the peer sent read off first so that
    /// the kernel does not answer with a reset that could drop the last
    /// message.
    async fn close(&mut self, session: &mut Session, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.push(session).is_ok() && !self.pending.is_empty() {
            let Some(s) = &self.stream else { break };
            if tokio::time::timeout_at(deadline, s.writable()).await.is_err() {
                break;
            }
        }
        if let Some(s) = self.stream.take() {
            let _ = socket2::SockRef::from(&s).shutdown(std::net::Shutdown::Write);
            let mut scratch = [0u8; 4096];
            while matches!(s.try_read(&mut scratch), Ok(n) if n > 0) {}
        }
        self.pending.clear();
    }
}

/// What a session task keeps apart from the session itself.
struct Task {
    config: PeerConfig,
    peer: String,
    label: PeerLabel,
    metrics: BgpMetrics,
    rib: AdjRibOut,
    /// This side's address of the connection: the next hop.
    local: Option<IpAddr>,
}

impl Task {
    /// Queues the UPDATEs that take the peer to `routes` (`full`: the
    /// whole table then End-of-RIB).
    fn send_table(&mut self, session: &mut Session, routes: &Routes, full: bool) {
        let Some(local) = self.local else { return };
        let want = desired(&self.config, routes, local);
        let mut bytes = Vec::new();
        let n = match full {
            true => self.rib.full(&want, MAX_LEN, &mut bytes),
            false => self.rib.update(&want, MAX_LEN, &mut bytes),
        };
        if n > 0 && session.send(&bytes) {
            let updates = self.metrics.updates.get_or_create(&self.label);
            for _ in 0..n {
                updates.inc();
            }
        }
        let skipped = want.len().saturating_sub(self.rib.sent().len());
        if skipped > 0 && full {
            tracing::warn!(peer = %self.peer, skipped, "routes of the other address family are not sent on this session (an IPv4 session carries IPv4 routes, an IPv6 one IPv6 routes)");
        }
        self.metrics
            .announced
            .get_or_create(&self.label)
            .set(i64::try_from(self.rib.sent().len()).unwrap_or(i64::MAX));
    }
}

/// One session, until stopped.
async fn run(
    config: PeerConfig,
    fallback_id: Ipv4Addr,
    mut routes: watch::Receiver<Arc<Routes>>,
    mut stop: watch::Receiver<Option<Stop>>,
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
    let label = PeerLabel { peer: peer.clone() };
    metrics.session_up.get_or_create(&label).set(0);
    metrics.announced.get_or_create(&label).set(0);
    let mut t = Task {
        config,
        peer,
        label,
        metrics,
        rib: AdjRibOut::new(),
        local: None,
    };
    let mut conn = Connection::default();
    let mut connecting: Option<Connecting> = None;
    // Whether the peer offered graceful restart on the session up now.
    let mut graceful = false;
    // The last dial error, reported once until it changes.
    let mut dial_error: Option<io::ErrorKind> = None;
    let mut buf = vec![0u8; 64 * 1024];
    session.handle_input(Instant::now(), Input::ManualStart);
    loop {
        while let Some(e) = session.poll_event() {
            match e {
                Event::Connect => {
                    let c = t.config.clone();
                    connecting = Some(Box::pin(async move { dial(&c).await }));
                }
                Event::Disconnect => {
                    // What is queued (a NOTIFICATION) goes first.
                    let _ = conn.push(&mut session);
                    conn.close(&mut session, Duration::ZERO).await;
                    connecting = None;
                }
                Event::Established(p) => {
                    dial_error = None;
                    tracing::info!(peer = %t.peer, asn = p.asn, id = %p.bgp_id, hold = p.hold_time, "BGP session established");
                    t.metrics.session_up.get_or_create(&t.label).set(1);
                    t.rib = AdjRibOut::with_families(&p.families);
                    graceful = p.graceful_restart && t.config.graceful_restart;
                    if !p.families.contains(&family) {
                        tracing::warn!(peer = %t.peer, "the peer did not offer this session's address family: nothing can be announced");
                    }
                    let table = routes.borrow_and_update().clone();
                    t.send_table(&mut session, &table, true);
                }
                Event::Down(why) => {
                    match &why {
                        Down::Stopped => tracing::info!(peer = %t.peer, "BGP session closed"),
                        Down::PeerNotified(code, text) => {
                            tracing::warn!(peer = %t.peer, %code, message = text.as_deref().unwrap_or(""), "BGP session down: the peer sent a NOTIFICATION")
                        }
                        Down::Notified(code) => {
                            tracing::warn!(peer = %t.peer, %code, "BGP session down: NOTIFICATION sent")
                        }
                        Down::ConnectionLost => tracing::warn!(peer = %t.peer, "BGP session down: connection lost"),
                    }
                    if let Some(at) = session.poll_timeout() {
                        let wait = at.saturating_duration_since(Instant::now());
                        tracing::info!(peer = %t.peer, retry_in_s = wait.as_secs(), "dialling the peer again later");
                    }
                    t.rib.reset();
                    t.metrics.session_up.get_or_create(&t.label).set(0);
                    t.metrics.announced.get_or_create(&t.label).set(0);
                }
                Event::RouteRefresh(..) => {
                    let table = routes.borrow().clone();
                    t.send_table(&mut session, &table, true);
                }
                // Received routes are ignored.
                _ => {}
            }
        }
        if conn.push(&mut session).is_err() {
            conn.stream = None;
            session.handle_input(Instant::now(), Input::TcpConnectionFails);
            continue;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        let writing = conn.stream.is_some() && !conn.pending.is_empty();
        tokio::select! {
            _ = stop.changed() => {
                let why = stop.borrow().clone();
                let established = session.state() == State::Established;
                match why {
                    Some(Stop::Shutdown(_)) if established && graceful => {
                        // No NOTIFICATION: the peer keeps the routes.
                        tracing::info!(peer = %t.peer, restart_time = RESTART_TIME, "closing without a NOTIFICATION: graceful restart keeps the routes with the peer until this node's speaker is back");
                        conn.close(&mut session, CLOSE_WITHIN).await;
                    }
                    why => {
                        let text = match why {
                            Some(Stop::Configuration(w) | Stop::Shutdown(w)) => w,
                            None => String::new(),
                        };
                        if established {
                            // Withdraw first, then say goodbye.
                            t.send_table(&mut session, &Routes::new(), false);
                        }
                        session.handle_input(Instant::now(), Input::ManualStop(&text));
                        while session.poll_event().is_some() {}
                        conn.close(&mut session, CLOSE_WITHIN).await;
                    }
                }
                return;
            }
            Ok(()) = routes.changed() => {
                if session.state() == State::Established {
                    let table = routes.borrow_and_update().clone();
                    t.send_table(&mut session, &table, false);
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
                        if dial_error == Some(io::ErrorKind::ConnectionAborted) {
                            // Said again if the next connection fails too.
                        } else if dial_error.take().is_some() {
                            tracing::info!(peer = %t.peer, "connected");
                        }
                        t.local = s.local_addr().ok().map(|a| a.ip());
                        if t.config.router_id.is_none() {
                            match t.local {
                                Some(IpAddr::V4(v4)) => session.set_bgp_id(v4),
                                _ => session.set_bgp_id(fallback_id),
                            }
                        }
                        conn.stream = Some(s);
                        session.handle_input(Instant::now(), Input::TcpConnectionConfirmed);
                    }
                    Err(e) => {
                        // Said once, and again when the reason changes.
                        if dial_error.replace(e.kind()) != Some(e.kind()) {
                            let source = t.config.source.map(|s| s.to_string()).unwrap_or_else(|| "any".into());
                            tracing::warn!(peer = %t.peer, error = %e, %source, "cannot connect to the BGP peer; trying again");
                        } else {
                            tracing::debug!(peer = %t.peer, error = %e, "BGP connect failed");
                        }
                        session.handle_input(Instant::now(), Input::TcpConnectionFails);
                    }
                }
            }
            r = async {
                match conn.stream.as_ref() {
                    Some(s) => s.readable().await,
                    None => std::future::pending().await,
                }
            }, if conn.stream.is_some() => {
                let read = match (r, conn.stream.as_ref()) {
                    (Ok(()), Some(s)) => s.try_read(&mut buf),
                    (Err(e), _) => Err(e),
                    (Ok(()), None) => continue,
                };
                match read {
                    Ok(n) if n > 0 => {
                        session.handle_input(Instant::now(), Input::Received(&buf[..n]));
                        // A peer that floods (a full table sent to a speaker
                        // that ignores it) must not starve the other
                        // sessions, the metrics or the configuration: the
                        // runtime's budget makes this task take turns.
                        tokio::task::coop::consume_budget().await;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => {
                        conn.stream = None;
                        // Closed before the session came up (a peer that
                        // does not know this node, another speaker in its
                        // place): said once, as dial failures are.
                        if session.state() == State::OpenSent
                            && dial_error.replace(io::ErrorKind::ConnectionAborted) != Some(io::ErrorKind::ConnectionAborted)
                        {
                            tracing::warn!(peer = %t.peer, "the peer closed the connection before answering our OPEN (is this node configured as its neighbour?); trying again");
                        }
                        session.handle_input(Instant::now(), Input::TcpConnectionFails);
                    }
                }
            }
            r = async {
                match conn.stream.as_ref() {
                    Some(s) => s.writable().await,
                    None => std::future::pending().await,
                }
            }, if writing => {
                if r.is_err() {
                    conn.stream = None;
                    session.handle_input(Instant::now(), Input::TcpConnectionFails);
                }
            }
            () = super::sleep_until(deadline) => session.handle_timeout(Instant::now()),
        }
    }
}
