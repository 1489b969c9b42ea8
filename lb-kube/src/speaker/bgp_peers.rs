//! The BGP sessions of one node, one tokio task each, driving
//! [`lb_bgp::Session`] over TCP: it dials the peer (from `sourceAddress`,
//! with TCP MD5 when a password is set, TTL 1 for single-hop eBGP and 255
//! with `ebgpMultiHop`) and, with `--bgp-listen`, takes the connections
//! the peer opens (when both sides connect, [`lb_bgp::session::collision`]
//! picks the one that stays), announces what [`super::bgp::Plan`] gives it
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
use lb_bgp::session::{Config as SessionConfig, Down, Event, Input, Side, collision};
use lb_bgp::{
    AdjRibOut, Announce, IPV4_UNICAST, IPV6_UNICAST, MAX_LEN, Notification, NotificationCode, Origin, Session, State,
};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{Interest, Ready};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use super::bgp::{Password, PeerConfig, Plan, Routes};
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
    /// Its BGPPeer was removed or no longer selects this node: withdraw,
    /// then a Cease (Administrative Shutdown) with this text.
    Configuration(String),
    /// Its BGPPeer changed: withdraw, then a Cease (Administrative Reset:
    /// the session comes back, with the new configuration) with this
    /// text.
    Changed(String),
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
    /// Where connections the peer opens go.
    incoming: mpsc::Sender<TcpStream>,
    task: tokio::task::JoinHandle<()>,
}

/// Which session a connection from a peer's address goes to (`None`: an
/// address several BGPPeers share).
type Routing = Arc<std::sync::Mutex<BTreeMap<IpAddr, Option<mpsc::Sender<TcpStream>>>>>;

/// The socket peers connect to (`--bgp-listen`).
#[derive(Debug)]
struct Listening {
    listener: Arc<TcpListener>,
    routing: Routing,
    /// The TCP MD5 keys set on it, by peer address.
    keys: BTreeMap<IpAddr, Password>,
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
    listening: Option<Listening>,
}

impl Drop for Peers {
    fn drop(&mut self) {
        if let Some(l) = &self.listening {
            l.task.abort();
        }
    }
}

impl Peers {
    /// No session yet. `fallback_id` is the BGP Identifier used when
    /// neither the peer's `routerID` nor an IPv4 local address gives one.
    /// With `listener` (`--bgp-listen`), peers may connect too: a
    /// connection from a peer's address goes to its session, any other
    /// is closed.
    pub fn new(metrics: BgpMetrics, fallback_id: Ipv4Addr, listener: Option<TcpListener>) -> Self {
        let listening = listener.map(|l| {
            let listener = Arc::new(l);
            let routing = Routing::default();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "BGP peers may connect here (--bgp-listen)");
            }
            let task = tokio::spawn(listen(listener.clone(), routing.clone()));
            Listening {
                listener,
                routing,
                keys: BTreeMap::new(),
                task,
            }
        });
        Self {
            running: BTreeMap::new(),
            metrics,
            fallback_id,
            listening,
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
                let stop = match plan.peers.contains_key(&name) {
                    true => Stop::Changed("BGPPeer changed".to_owned()),
                    false => Stop::Configuration("BGPPeer removed, or no longer selects this node".to_owned()),
                };
                let (Stop::Changed(why) | Stop::Configuration(why) | Stop::Shutdown(why)) = &stop;
                tracing::info!(bgp_peer = %name, peer = %r.config.label(), "{why}: closing the session");
                r.stop.send_replace(Some(stop));
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
                    let (incoming_tx, incoming_rx) = mpsc::channel(1);
                    let task = tokio::spawn(run(
                        config.clone(),
                        self.fallback_id,
                        routes_rx,
                        stop_rx,
                        incoming_rx,
                        self.metrics.clone(),
                    ));
                    self.running.insert(
                        name.clone(),
                        Running {
                            config: config.clone(),
                            routes: routes_tx,
                            stop: stop_tx,
                            incoming: incoming_tx,
                            task,
                        },
                    );
                }
            }
        }
        if let Some(l) = &mut self.listening {
            l.follow(&self.running);
        }
    }

    /// Stops every session as [`Stop::Shutdown`] says, telling peers
    /// `why`; waits at most `within` for them to close.
    pub async fn shutdown(mut self, why: &str, within: Duration) {
        let mut tasks = Vec::new();
        for (_, r) in std::mem::take(&mut self.running) {
            r.stop.send_replace(Some(Stop::Shutdown(why.to_owned())));
            tasks.push(r.task);
        }
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(within, all).await.is_err() {
            tracing::warn!("some BGP sessions did not close in time");
        }
    }
}

impl Listening {
    /// Routes connections to the sessions `running`, and sets the TCP MD5
    /// keys of their peers on the socket (the kernel then drops unsigned
    /// segments from those addresses) and clears the keys of peers gone.
    fn follow(&mut self, running: &BTreeMap<String, Running>) {
        let v6 = self.listener.local_addr().is_ok_and(|a| a.is_ipv6());
        // Two BGPPeers can share an address (with different ports): a
        // connection from it cannot tell which one it is, so it goes to
        // neither (their own dials still work).
        let mut by_address: BTreeMap<IpAddr, Vec<&Running>> = BTreeMap::new();
        for r in running.values() {
            // An IPv4 socket never hears from an IPv6 peer.
            if v6 || r.config.address.is_ipv4() {
                by_address.entry(r.config.address).or_default().push(r);
            }
        }
        let mut routing = BTreeMap::new();
        let mut keys = BTreeMap::new();
        // Shared already at the last change: said then.
        let was_shared = |a: &IpAddr| self.routing.lock().is_ok_and(|r| matches!(r.get(a), Some(None)));
        for (addr, rs) in &by_address {
            match rs.as_slice() {
                [r] => {
                    routing.insert(*addr, Some(r.incoming.clone()));
                    if let Some(pw) = &r.config.password {
                        keys.insert(*addr, pw.clone());
                    }
                }
                _ => {
                    routing.insert(*addr, None);
                    if !was_shared(addr) {
                        tracing::warn!(peer = %addr, "several BGPPeers of this node have this address: connections it opens are closed (the speaker's own dials go on)");
                    }
                }
            }
        }
        // An IPv4 peer reaches an IPv6 socket as an IPv4-mapped address.
        let key_addr = |a: IpAddr| match (v6, a) {
            (true, IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => a,
        };
        let gone: Vec<IpAddr> = self.keys.keys().filter(|a| !keys.contains_key(*a)).copied().collect();
        for addr in gone {
            if let Err(e) = super::tcp::clear_md5(&*self.listener, key_addr(addr)) {
                tracing::warn!(peer = %addr, error = %e, "cannot clear the TCP MD5 key of a peer gone");
            }
            self.keys.remove(&addr);
        }
        for (addr, key) in keys {
            if self.keys.get(&addr) == Some(&key) {
                continue;
            }
            // Only a key the kernel took counts as set (tried again at the
            // next change).
            match super::tcp::set_md5(&*self.listener, key_addr(addr), key.as_bytes()) {
                Ok(()) => {
                    self.keys.insert(addr, key);
                }
                Err(e) => {
                    self.keys.remove(&addr);
                    tracing::warn!(peer = %addr, error = %e, "cannot set the TCP MD5 key for connections from this peer");
                }
            }
        }
        if let Ok(mut r) = self.routing.lock() {
            *r = routing;
        }
    }
}

/// The socket BGP peers connect to: `[::]` takes IPv4 peers too.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(64)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections and hands each to the session of its peer's
/// address; closes the others (said once per address).
async fn listen(listener: Arc<TcpListener>, routing: Routing) {
    let mut strangers = std::collections::BTreeSet::new();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // taken: wait a little rather than spin.
                tracing::debug!(error = %e, "accepting a BGP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = remote.ip().to_canonical();
        let session = routing.lock().ok().and_then(|r| r.get(&ip).cloned());
        match session {
            Some(Some(s)) => {
                if s.try_send(stream).is_err() {
                    tracing::debug!(peer = %ip, "a connection from the peer arrived while another waits: closed");
                }
            }
            // Said when the BGPPeers came to share it.
            Some(None) => tracing::debug!(peer = %ip, "a connection from an address several BGPPeers share: closed"),
            None => {
                if strangers.len() < 1024 && strangers.insert(ip) {
                    tracing::warn!(from = %ip, "a BGP connection from an address that is no peer of this node: closed");
                }
            }
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
    if let Some(ttl) = ttl(config) {
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
            // Bounded: a peer that keeps sending does not keep this task.
            let mut scratch = [0u8; 4096];
            for _ in 0..16 {
                if !matches!(s.try_read(&mut scratch), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        self.pending.clear();
    }
}

/// A session and its connection: the one this speaker dials, or one the
/// peer opened.
#[derive(Debug)]
struct Link {
    session: Session,
    conn: Connection,
    /// This side's address of the connection: the next hop.
    local: Option<IpAddr>,
    /// Whether the session on it is established.
    up: bool,
}

impl Link {
    fn new(session: Session) -> Self {
        Self {
            session,
            conn: Connection::default(),
            local: None,
            up: false,
        }
    }

    /// Resolves when the connection can be read, or written while
    /// something waits to be written.
    async fn ready(&self) -> io::Result<Ready> {
        let Some(s) = &self.conn.stream else {
            return std::future::pending().await;
        };
        let interest = match self.conn.pending.is_empty() {
            true => Interest::READABLE,
            false => Interest::READABLE | Interest::WRITABLE,
        };
        s.ready(interest).await
    }

    /// The connection failed or closed.
    fn lost(&mut self) {
        self.conn.stream = None;
        self.session.handle_input(Instant::now(), Input::TcpConnectionFails);
    }
}

/// What a session task keeps apart from its links.
struct Task {
    config: PeerConfig,
    peer: String,
    label: PeerLabel,
    metrics: BgpMetrics,
    rib: AdjRibOut,
    family: (u16, u8),
    fallback_id: Ipv4Addr,
    /// Whether graceful restart was negotiated on the session up now.
    graceful: bool,
    /// The last dial error, reported once until it changes.
    dial_error: Option<io::ErrorKind>,
    /// Dials the peer closed before answering, in a row.
    early_closes: u32,
    /// The dial in progress.
    connecting: Option<Connecting>,
}

impl Task {
    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            local_as: self.config.my_asn,
            peer_as: self.config.peer_as,
            bgp_id: self.config.router_id.unwrap_or(self.fallback_id),
            hold_time: self.config.hold_time,
            connect_retry: self.config.connect_time,
            families: vec![self.family],
            keepalive_time: self.config.keepalive_time,
            graceful_restart: self.config.graceful_restart.then_some(RESTART_TIME),
        }
    }

    /// A seed for the session's timer jitter, different in every
    /// process and for every session.
    fn jitter_seed(&self) -> u64 {
        use std::hash::BuildHasher as _;
        std::collections::hash_map::RandomState::new().hash_one((&self.peer, Instant::now()))
    }

    /// The BGP Identifier on a connection from `local`: `routerID`, else
    /// an IPv4 side of the connection, else the fallback.
    fn bgp_id(&self, local: Option<IpAddr>) -> Ipv4Addr {
        match (self.config.router_id, local) {
            (Some(id), _) => id,
            (None, Some(IpAddr::V4(v4))) => v4,
            _ => self.fallback_id,
        }
    }

    /// Queues the UPDATEs that take the peer to `routes` (`full`: the
    /// whole table then End-of-RIB).
    fn send_table(&mut self, link: &mut Link, routes: &Routes, full: bool) {
        let Some(local) = link.local else { return };
        let want = desired(&self.config, routes, local);
        let mut bytes = Vec::new();
        let n = match full {
            true => self.rib.full(&want, MAX_LEN, &mut bytes),
            false => self.rib.update(&want, MAX_LEN, &mut bytes),
        };
        if n > 0 && link.session.send(&bytes) {
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

    /// Acts on what `link`'s session says.
    async fn events(&mut self, link: &mut Link, routes: &mut watch::Receiver<Arc<Routes>>) {
        let passive = link.session.is_passive();
        let side = if passive { "opened by the peer" } else { "dialled" };
        while let Some(e) = link.session.poll_event() {
            match e {
                Event::Connect => {
                    let c = self.config.clone();
                    self.connecting = Some(Box::pin(async move { dial(&c).await }));
                }
                Event::Disconnect => {
                    // What is queued (a NOTIFICATION) goes first.
                    let _ = link.conn.push(&mut link.session);
                    link.conn.close(&mut link.session, Duration::ZERO).await;
                    // A dial abandoned when the ConnectRetry timer fired
                    // (the session dials again at once): nobody answered.
                    if !passive && self.connecting.take().is_some() && link.session.state() == State::Connect {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "no answer within connectTime");
                        self.dial_failed(&e);
                    }
                }
                Event::Established(p) => {
                    self.dial_error = None;
                    self.early_closes = 0;
                    tracing::info!(peer = %self.peer, asn = p.asn, id = %p.bgp_id, hold = p.hold_time, connection = side, "BGP session established");
                    self.metrics.session_up.get_or_create(&self.label).set(1);
                    self.rib = AdjRibOut::with_families(&p.families);
                    self.graceful = p.graceful_restart && self.config.graceful_restart;
                    if !p.families.contains(&self.family) {
                        tracing::warn!(peer = %self.peer, "the peer did not offer this session's address family: nothing can be announced");
                    }
                    link.up = true;
                    let table = routes.borrow_and_update().clone();
                    self.send_table(link, &table, true);
                }
                Event::Down(why) => {
                    let was_up = std::mem::take(&mut link.up);
                    let collision = NotificationCode::CONNECTION_COLLISION_RESOLUTION;
                    match &why {
                        Down::Stopped => tracing::info!(peer = %self.peer, "BGP session closed"),
                        Down::Notified(c) | Down::PeerNotified(c, _) if *c == collision => {
                            tracing::info!(peer = %self.peer, connection = side, "both sides connected: this connection is closed, the other one stays (RFC 4271 connection collision)")
                        }
                        // A connection that never carried a session.
                        _ if !was_up => {
                            tracing::info!(peer = %self.peer, connection = side, reason = ?why, "BGP connection closed before the session came up")
                        }
                        Down::PeerNotified(code, text) => {
                            tracing::warn!(peer = %self.peer, %code, message = text.as_deref().unwrap_or(""), "BGP session down: the peer sent a NOTIFICATION")
                        }
                        Down::Notified(code) => {
                            tracing::warn!(peer = %self.peer, %code, "BGP session down: NOTIFICATION sent")
                        }
                        Down::ConnectionLost => tracing::warn!(peer = %self.peer, "BGP session down: connection lost"),
                    }
                    if let (false, Some(at)) = (passive, link.session.poll_timeout()) {
                        let retry_in = at.saturating_duration_since(Instant::now());
                        tracing::info!(peer = %self.peer, ?retry_in, "dialling the peer again later");
                    }
                    if was_up {
                        self.rib.reset();
                        self.metrics.session_up.get_or_create(&self.label).set(0);
                        self.metrics.announced.get_or_create(&self.label).set(0);
                    }
                }
                Event::RouteRefresh(..) => {
                    let table = routes.borrow().clone();
                    self.send_table(link, &table, true);
                }
                // Received routes are ignored.
                _ => {}
            }
        }
    }

    /// Reads what `link`'s connection has, or notes that it closed.
    async fn read(&mut self, link: &mut Link, ready: io::Result<Ready>, buf: &mut [u8]) {
        let read = match (ready, link.conn.stream.as_ref()) {
            // Writable only: the read would block, which is fine.
            (Ok(_), Some(s)) => s.try_read(buf),
            (Ok(_), None) => return,
            (Err(e), _) => Err(e),
        };
        match read {
            Ok(n) if n > 0 => {
                link.session.handle_input(Instant::now(), Input::Received(&buf[..n]));
                // A peer that floods (a full table sent to a speaker that
                // ignores it) must not starve the other sessions, the
                // metrics or the configuration: the runtime's budget makes
                // this task take turns.
                tokio::task::coop::consume_budget().await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => {
                // Closed before the session came up: once is a router
                // still closing the last session; again and again, a
                // router that does not know this node (said once).
                if !link.session.is_passive() && link.session.state() == State::OpenSent {
                    self.early_closes = self.early_closes.saturating_add(1);
                    if self.early_closes == 2 {
                        tracing::warn!(peer = %self.peer, "the peer closes the connection before answering our OPEN (is this node configured as its neighbour?); trying again");
                    }
                }
                link.lost();
            }
        }
    }

    /// Reports a failed dial: once, and again when the reason changes.
    fn dial_failed(&mut self, e: &io::Error) {
        if self.dial_error.replace(e.kind()) != Some(e.kind()) {
            let source = self
                .config
                .source
                .map(|s| s.to_string())
                .unwrap_or_else(|| "any".into());
            tracing::warn!(peer = %self.peer, error = %e, %source, "cannot connect to the BGP peer; trying again");
        } else {
            tracing::debug!(peer = %self.peer, error = %e, "BGP connect failed");
        }
    }

    /// A dial finished. `other_id`: the BGP Identifier the connection the
    /// peer opened carries, if one is open (one speaker, one identifier).
    fn dialled(&mut self, link: &mut Link, r: io::Result<TcpStream>, other_id: Option<Ipv4Addr>) {
        match r {
            Ok(s) => {
                if self.dial_error.take().is_some() {
                    tracing::info!(peer = %self.peer, "connected");
                }
                link.local = s.local_addr().ok().map(|a| a.ip().to_canonical());
                link.session
                    .set_bgp_id(other_id.unwrap_or_else(|| self.bgp_id(link.local)));
                link.conn.stream = Some(s);
                link.session.handle_input(Instant::now(), Input::TcpConnectionConfirmed);
            }
            Err(e) => {
                self.dial_failed(&e);
                link.session.handle_input(Instant::now(), Input::TcpConnectionFails);
            }
        }
    }

    /// A connection the peer opened: a session on it, unless one from the
    /// peer already has its OPEN or is established (then the newcomer is
    /// told it lost the collision and closed, as BIRD does); the same while
    /// this speaker's dial carries the session (`dial_up`). `other_id`: the
    /// BGP Identifier of this speaker's dial, if connected.
    async fn accepted(
        &mut self,
        incoming: &mut Option<Link>,
        stream: TcpStream,
        other_id: Option<Ipv4Addr>,
        dial_up: bool,
    ) {
        if dial_up || incoming.as_ref().is_some_and(|l| l.session.peer().is_some()) {
            let mut refused = Link::new(Session::accept(self.session_config()));
            refused.conn.stream = Some(stream);
            let mut bytes = Vec::new();
            Notification::write(NotificationCode::CONNECTION_COLLISION_RESOLUTION, &[], &mut bytes);
            refused.conn.pending = bytes;
            refused
                .conn
                .close(&mut refused.session, Duration::from_millis(100))
                .await;
            tracing::debug!(peer = %self.peer, "the peer connected while a session is up: closed (RFC 4271 connection collision)");
            return;
        }
        if let Err(e) = single_hop_ttl(&self.config, &stream).and_then(|()| stream.set_nodelay(true)) {
            tracing::warn!(peer = %self.peer, error = %e, "cannot set up the connection the peer opened");
            return;
        }
        let session = Session::accept(self.session_config())
            .with_jitter(self.jitter_seed())
            .pausing_at_open();
        let mut link = Link::new(session);
        link.local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        link.session
            .set_bgp_id(other_id.unwrap_or_else(|| self.bgp_id(link.local)));
        link.conn.stream = Some(stream);
        link.session.handle_input(Instant::now(), Input::TcpConnectionConfirmed);
        tracing::debug!(peer = %self.peer, "the peer opened a connection");
        // One the peer opened before and left before its OPEN is dropped.
        *incoming = Some(link);
    }

    /// Stops `link`'s session as `why` says.
    async fn stop(&mut self, link: &mut Link, why: Option<&Stop>) {
        let established = link.session.state() == State::Established;
        match why {
            Some(Stop::Shutdown(_)) if established && self.graceful => {
                // No NOTIFICATION: the peer keeps the routes.
                tracing::info!(peer = %self.peer, restart_time = RESTART_TIME, "closing without a NOTIFICATION: graceful restart keeps the routes with the peer until this node's speaker is back");
                link.conn.close(&mut link.session, CLOSE_WITHIN).await;
            }
            why => {
                let (text, reset) = match why {
                    Some(Stop::Configuration(w) | Stop::Shutdown(w)) => (w.as_str(), false),
                    Some(Stop::Changed(w)) => (w.as_str(), true),
                    None => ("", false),
                };
                if established {
                    // Withdraw first, then say goodbye.
                    self.send_table(link, &Routes::new(), false);
                }
                let input = match reset {
                    true => Input::ManualReset(text),
                    false => Input::ManualStop(text),
                };
                link.session.handle_input(Instant::now(), input);
                while link.session.poll_event().is_some() {}
                link.conn.close(&mut link.session, CLOSE_WITHIN).await;
            }
        }
    }
}

/// TTL 1 for single-hop eBGP, 255 with `ebgpMultiHop` (RFC 4271 leaves it
/// to configuration; FRR and BIRD send TTL 1 unless told multihop).
fn ttl(config: &PeerConfig) -> Option<u32> {
    match (config.internal(), config.ebgp_multi_hop) {
        (true, _) => None,
        (false, true) => Some(255),
        (false, false) => Some(1),
    }
}

/// Sets [`ttl`] on a connection the peer opened.
fn single_hop_ttl(config: &PeerConfig, stream: &TcpStream) -> io::Result<()> {
    let Some(ttl) = ttl(config) else { return Ok(()) };
    let s = socket2::SockRef::from(stream);
    match stream.local_addr()? {
        SocketAddr::V4(_) => s.set_ttl_v4(ttl),
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => s.set_ttl_v4(ttl),
        SocketAddr::V6(_) => s.set_unicast_hops_v6(ttl),
    }
}

/// One session, until stopped: the connection it dials and, with
/// `--bgp-listen`, the ones the peer opens (`incoming`); when both sides
/// connect, [`collision`] picks the one that stays.
async fn run(
    config: PeerConfig,
    fallback_id: Ipv4Addr,
    mut routes: watch::Receiver<Arc<Routes>>,
    mut stop: watch::Receiver<Option<Stop>>,
    mut incoming_streams: mpsc::Receiver<TcpStream>,
    metrics: BgpMetrics,
) {
    let peer = config.label();
    let family = match config.address {
        IpAddr::V4(_) => IPV4_UNICAST,
        IpAddr::V6(_) => IPV6_UNICAST,
    };
    let label = PeerLabel { peer: peer.clone() };
    metrics.session_up.get_or_create(&label).set(0);
    metrics.announced.get_or_create(&label).set(0);
    let mut t = Task {
        config,
        peer,
        label,
        metrics,
        rib: AdjRibOut::new(),
        family,
        fallback_id,
        graceful: false,
        dial_error: None,
        early_closes: 0,
        connecting: None,
    };
    let session = Session::new(t.session_config())
        .with_jitter(t.jitter_seed())
        .pausing_at_open();
    let mut out = Link::new(session);
    let mut incoming: Option<Link> = None;
    let mut buf = vec![0u8; 64 * 1024];
    out.session.handle_input(Instant::now(), Input::ManualStart);
    loop {
        // What both sessions say, and which connection stays when both
        // sides connected.
        loop {
            t.events(&mut out, &mut routes).await;
            let now = Instant::now();
            if let Some(inc) = incoming.as_mut() {
                t.events(inc, &mut routes).await;
                let loser = match collision(&out.session, &inc.session) {
                    Some(Side::Outgoing) => Some(&mut out.session),
                    Some(Side::Incoming) => Some(&mut inc.session),
                    // The dial waits while the peer's connection, past its
                    // OPEN, may carry the session (the peer closed the
                    // dial for the collision, or it failed meanwhile).
                    None if inc.session.peer().is_some()
                        && out.session.state() == State::Idle
                        && out.session.poll_timeout().is_some() =>
                    {
                        Some(&mut out.session)
                    }
                    None => None,
                };
                if let Some(l) = loser {
                    l.handle_input(now, Input::OpenCollisionDump);
                    continue;
                }
            }
            // Collisions settled: a session stopped after the peer's OPEN
            // reads on.
            let mut resumed = false;
            for link in std::iter::once(&mut out).chain(incoming.as_mut()) {
                if link.session.is_paused() {
                    link.session.handle_input(now, Input::Received(&[]));
                    resumed = true;
                }
            }
            if !resumed {
                break;
            }
        }
        if incoming.as_ref().is_some_and(|l| l.session.state() == State::Idle) {
            incoming = None;
            // The dial that waited for it starts again.
            if out.session.state() == State::Idle && out.session.poll_timeout().is_none() {
                out.session.handle_input(Instant::now(), Input::ManualStart);
            }
            continue;
        }
        if out.conn.push(&mut out.session).is_err() {
            out.lost();
            continue;
        }
        if let Some(inc) = incoming.as_mut()
            && inc.conn.push(&mut inc.session).is_err()
        {
            inc.lost();
            continue;
        }
        let deadline = [
            out.session.poll_timeout(),
            incoming.as_ref().and_then(|l| l.session.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.changed() => {
                let why = stop.borrow().clone();
                t.stop(&mut out, why.as_ref()).await;
                if let Some(inc) = incoming.as_mut() {
                    t.stop(inc, why.as_ref()).await;
                }
                return;
            }
            Ok(()) = routes.changed() => {
                let table = routes.borrow_and_update().clone();
                for link in std::iter::once(&mut out).chain(incoming.as_mut()) {
                    if link.session.state() == State::Established {
                        t.send_table(link, &table, false);
                    }
                }
            }
            r = async {
                match t.connecting.as_mut() {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            }, if t.connecting.is_some() => {
                t.connecting = None;
                let other_id = incoming.as_ref().filter(|l| l.conn.stream.is_some()).map(|l| l.session.bgp_id());
                t.dialled(&mut out, r, other_id);
            }
            Some(stream) = incoming_streams.recv() => {
                let other_id = out.conn.stream.is_some().then(|| out.session.bgp_id());
                // A dial that waits, waits for a connection past its OPEN,
                // which a newcomer does not replace.
                let dial_up = out.session.state() == State::Established;
                t.accepted(&mut incoming, stream, other_id, dial_up).await;
            }
            r = out.ready() => t.read(&mut out, r, &mut buf).await,
            r = async {
                match incoming.as_ref() {
                    Some(l) => l.ready().await,
                    None => std::future::pending().await,
                }
            }, if incoming.is_some() => {
                if let Some(inc) = incoming.as_mut() {
                    t.read(inc, r, &mut buf).await;
                }
            }
            () = super::sleep_until(deadline) => {
                let now = Instant::now();
                out.session.handle_timeout(now);
                if let Some(inc) = incoming.as_mut() {
                    inc.session.handle_timeout(now);
                }
            }
        }
    }
}
