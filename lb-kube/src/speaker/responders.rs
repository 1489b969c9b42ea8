//! The interfaces that answer for this node's addresses: one responder
//! thread per usable interface (a packet socket and [`lb_arp::responder`]'s
//! decisions), the addresses each owns (swapped whole, read per frame),
//! the solicited-node groups joined for them, and the announcements sent
//! at takeover on [`lb_arp::announce::Schedule`]'s timetable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lb_arp::announce::{self, Schedule};
use lb_arp::responder::{self, Owned, Response};
use lb_arp::wire::{self, Mac};

use super::link::{Choice, Link};
use super::metrics::{Count, IpLabel, Metrics};
use super::packet::{Family, Groups, Packet, Receiver};

/// The addresses to answer for, each with the interfaces it is announced
/// on (empty: every usable one).
pub type Wanted = BTreeMap<IpAddr, BTreeSet<String>>;

/// The responders of one node.
#[derive(Debug)]
pub struct Responders {
    choice: Choice,
    ports: BTreeMap<u32, Port>,
    wanted: Wanted,
    schedule: Schedule,
    metrics: Metrics,
    /// Interfaces that could not be opened, with the error last logged.
    failed: BTreeMap<u32, String>,
    /// With `--assign-to-lo`: the loopback interface, and the addresses put
    /// on it.
    assign: Option<(u32, BTreeSet<IpAddr>)>,
    /// Where the receiving threads report addresses another host claims.
    conflicts: tokio::sync::mpsc::Sender<(IpAddr, Mac)>,
    /// When each claimed address was last reported and defended.
    defended: HashMap<IpAddr, Instant>,
    /// Claims waiting to be looked at: the claimer's MAC, and when.
    claims: HashMap<IpAddr, (Mac, Instant)>,
    /// When each address answered for was taken over.
    taken_at: HashMap<IpAddr, Instant>,
    /// Stopping: claims are no longer looked at.
    stopping: bool,
    /// Receiving threads ask for real-time scheduling.
    realtime: bool,
}

/// One interface answering.
#[derive(Debug)]
struct Port {
    link: Link,
    owned: Arc<ArcSwap<Owned>>,
    groups: Groups,
    /// The IPv6 addresses whose groups are joined.
    joined: BTreeSet<Ipv6Addr>,
    /// The addresses to announce on this interface now (its sending task
    /// works through them, so a large takeover never holds up the rest).
    announce: tokio::sync::mpsc::UnboundedSender<IpAddr>,
    /// Tells the port's receiving threads to stop.
    stop: Arc<AtomicBool>,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How soon a receiving thread notices it should stop.
const TICK: Duration = Duration::from_millis(250);

/// What a port's threads share.
#[derive(Debug, Clone)]
struct Answering {
    name: String,
    mac: Mac,
    owned: Arc<ArcSwap<Owned>>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    /// Whether the receiving threads ask for real-time scheduling.
    realtime: bool,
    /// Addresses another host claims, and its MAC (dropped when the main
    /// loop is behind: claims repeat).
    conflicts: tokio::sync::mpsc::Sender<(IpAddr, Mac)>,
}

impl Responders {
    /// No interface yet; `choice` says which may answer.
    /// The receiver gets each address another host claims (at most once
    /// per address per [`DEFEND_EVERY`]): hand it to [`Responders::claimed`].
    pub fn new(choice: Choice, metrics: Metrics) -> (Self, tokio::sync::mpsc::Receiver<(IpAddr, Mac)>) {
        let (conflicts, claimed) = tokio::sync::mpsc::channel(1024);
        let me = Self {
            conflicts,
            choice,
            ports: BTreeMap::new(),
            wanted: Wanted::new(),
            schedule: Schedule::default(),
            metrics,
            failed: BTreeMap::new(),
            assign: None,
            taken_at: HashMap::new(),
            defended: HashMap::new(),
            claims: HashMap::new(),
            stopping: false,
            realtime: true,
        };
        (me, claimed)
    }

    /// Announces every address answered for again (after the membership
    /// changed: a node that claimed them for a moment may have poisoned
    /// caches).
    pub fn reannounce(&mut self, now: Instant) {
        for ip in self.wanted.keys() {
            self.schedule.takeover(*ip, now);
        }
    }

    /// Another host, at `claim.1`, claims the address `claim.0`. Unless
    /// that MAC is one of this node's interfaces, the claim is looked at
    /// again [`CONFIRM`] later ([`Responders::confirm_claims`]): by then
    /// this node has read the configuration change that may have moved the
    /// address away (speakers read changes each on their own poll).
    pub fn claimed(&mut self, claim: (IpAddr, Mac), now: Instant) {
        let (ip, mac) = claim;
        if self.stopping || self.ports.values().any(|p| p.link.mac == Some(mac)) || !self.wanted.contains_key(&ip) {
            return;
        }
        if self.claims.len() < 4096 {
            self.claims.entry(ip).or_insert((mac, now + CONFIRM));
        }
    }

    /// When [`Responders::confirm_claims`] has a claim to look at.
    pub fn next_claim(&self) -> Option<Instant> {
        self.claims.values().map(|(_, at)| *at).min()
    }

    /// Looks at the claims due at `now`: an address still answered for
    /// here, and not taken over here moments ago (its last owner may not
    /// have let go yet), is reported as split brain and announced again
    /// (RFC 5227 §2.4's defence), both at most once per [`DEFEND_EVERY`].
    pub fn confirm_claims(&mut self, now: Instant) {
        let due: Vec<(IpAddr, Mac)> = self
            .claims
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(ip, (mac, _))| (*ip, *mac))
            .collect();
        for (ip, mac) in due {
            self.claims.remove(&ip);
            if self.stopping || !self.wanted.contains_key(&ip) {
                continue;
            }
            let handover = self
                .taken_at
                .get(&ip)
                .is_some_and(|at| now.duration_since(*at) < HANDOVER);
            if handover {
                tracing::debug!(%ip, other = %mac, "the last owner still answered just after the takeover");
                continue;
            }
            if self
                .defended
                .get(&ip)
                .is_some_and(|at| now.duration_since(*at) < DEFEND_EVERY)
            {
                continue;
            }
            if self.defended.len() >= 4096 {
                self.defended.retain(|_, at| now.duration_since(*at) < DEFEND_EVERY);
            }
            self.defended.insert(ip, now);
            self.metrics.conflicts.get_or_create(&label(ip)).inc();
            tracing::warn!(%ip, other = %mac, "another host claims an address announced here (split brain?); announcing it again");
            self.schedule.takeover(ip, now);
        }
    }

    /// Whether the receiving threads opened from now on ask for real-time
    /// scheduling (default yes).
    pub fn set_realtime(&mut self, on: bool) {
        self.realtime = on;
    }

    /// Stops answering (at shutdown, before the membership is left).
    pub fn stop(&mut self) {
        self.stopping = true;
        for port in self.ports.values() {
            port.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Puts every address answered for on the loopback interface `lo`
    /// (and takes it off when no longer answered for), so that this node
    /// accepts their traffic without kube-proxy. Needs `CAP_NET_ADMIN`.
    pub fn assign_to(&mut self, lo: u32) {
        self.assign = Some((lo, BTreeSet::new()));
    }

    /// Takes the addresses put on the loopback interface off it (at
    /// shutdown).
    pub fn unassign_all(&mut self) {
        if let Some((lo, put)) = &mut self.assign {
            for ip in std::mem::take(put) {
                if let Err(e) = super::link::set_address(*lo, ip, false) {
                    tracing::warn!(%ip, error = %e, "cannot take the address off the loopback interface");
                }
            }
        }
    }

    /// The interfaces answering, by name.
    pub fn interfaces(&self) -> Vec<String> {
        self.ports.values().map(|p| p.link.name.clone()).collect()
    }

    /// The addresses answered for.
    pub fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// Answers for `wanted` from now on: addresses new here are announced
    /// (takeover), addresses gone are no longer answered.
    pub fn set(&mut self, wanted: Wanted, now: Instant) {
        let released: Vec<IpAddr> = self
            .wanted
            .keys()
            .filter(|ip| !wanted.contains_key(ip))
            .copied()
            .collect();
        let taken: Vec<IpAddr> = wanted
            .keys()
            .filter(|ip| !self.wanted.contains_key(ip))
            .copied()
            .collect();
        // Announced on other interfaces than before: announced anew there.
        let moved: Vec<IpAddr> = wanted
            .iter()
            .filter(|(ip, on)| self.wanted.get(ip).is_some_and(|was| was != *on))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &released {
            self.schedule.release(*ip);
        }
        if let Some((lo, put)) = &mut self.assign {
            // Before the announcements: traffic follows them at once.
            for ip in &taken {
                match super::link::set_address(*lo, *ip, true) {
                    Ok(()) => {
                        put.insert(*ip);
                    }
                    Err(e) => {
                        tracing::error!(%ip, error = %e, "cannot put the address on the loopback interface (needs CAP_NET_ADMIN)")
                    }
                }
            }
            for ip in &released {
                if put.remove(ip)
                    && let Err(e) = super::link::set_address(*lo, *ip, false)
                {
                    tracing::warn!(%ip, error = %e, "cannot take the address off the loopback interface");
                }
            }
        }
        for ip in &released {
            self.taken_at.remove(ip);
        }
        for ip in &taken {
            self.schedule.takeover(*ip, now);
            self.taken_at.insert(*ip, now);
        }
        for ip in &moved {
            self.schedule.takeover(*ip, now);
        }
        // One line per change, however many addresses move.
        if !taken.is_empty() {
            tracing::info!(count = taken.len(), first = ?&taken[..taken.len().min(8)], "taking over addresses");
        }
        if !released.is_empty() {
            tracing::info!(count = released.len(), first = ?&released[..released.len().min(8)], "no longer announcing addresses");
        }
        self.wanted = wanted;
        self.refresh();
    }

    /// Follows the node's interfaces: opens a responder on each usable one
    /// not answering yet (announcing what it owns there), and closes those
    /// gone or no longer usable.
    pub fn rescan(&mut self, links: &[Link], now: Instant) {
        let usable: BTreeMap<u32, &Link> = links
            .iter()
            .filter(|l| l.usable(&self.choice))
            .map(|l| (l.index, l))
            .collect();
        self.ports.retain(|index, port| {
            let keep = usable.get(index).is_some_and(|l| same_port(l, &port.link));
            if !keep {
                tracing::info!(interface = %port.link.name, "interface no longer answers");
            }
            keep
        });
        self.failed.retain(|index, _| usable.contains_key(index));
        for (index, link) in usable {
            if self.ports.contains_key(&index) {
                continue;
            }
            let Some(mac) = link.mac else { continue };
            match self.open(link, mac) {
                Ok(port) => {
                    tracing::info!(interface = %link.name, %mac, "answering ARP and NDP");
                    self.failed.remove(&index);
                    self.ports.insert(index, port);
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.failed.get(&index) != Some(&text) {
                        tracing::error!(interface = %link.name, error = %text, "cannot answer on this interface (needs CAP_NET_RAW)");
                        self.failed.insert(index, text);
                    }
                }
            }
        }
        let fresh: Vec<IpAddr> = self
            .ports
            .values()
            .filter(|p| p.owned.load().is_empty())
            .flat_map(|p| {
                self.wanted
                    .iter()
                    .filter(|(_, on)| on.is_empty() || on.contains(&p.link.name))
            })
            .map(|(ip, _)| *ip)
            .collect();
        for ip in fresh {
            self.schedule.takeover(ip, now);
        }
        self.refresh();
        self.metrics
            .interfaces
            .set(i64::try_from(self.ports.len()).unwrap_or(i64::MAX));
    }

    /// Opens an interface: its sockets, its two receiving threads (ARP,
    /// and neighbour discovery) and its sending task.
    fn open(&self, link: &Link, mac: Mac) -> std::io::Result<Port> {
        let packet = Packet::open(link.index)?;
        let arp = Receiver::open(link.index, Family::Arp, TICK)?;
        let ndp = Receiver::open(link.index, Family::Ndp, TICK)?;
        let owned = Arc::new(ArcSwap::from_pointee(Owned::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Answering {
            name: link.name.clone(),
            mac,
            owned: owned.clone(),
            metrics: self.metrics.clone(),
            stop: stop.clone(),
            realtime: self.realtime,
            conflicts: self.conflicts.clone(),
        };
        for (receiver, kind) in [(arp, "arp"), (ndp, "ndp")] {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{kind}-{}", link.name))
                .spawn(move || answer(&receiver, &shared));
            if let Err(e) = spawned {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        let (announce, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_announcements(packet, shared, queue));
        Ok(Port {
            link: link.clone(),
            owned,
            groups: Groups::new(link.index),
            joined: BTreeSet::new(),
            announce,
            stop,
        })
    }

    /// Gives each interface the addresses it answers for, and joins and
    /// leaves solicited-node groups to match.
    fn refresh(&mut self) {
        for port in self.ports.values_mut() {
            let mine: Vec<IpAddr> = self
                .wanted
                .iter()
                .filter(|(_, on)| on.is_empty() || on.contains(&port.link.name))
                .map(|(ip, _)| *ip)
                .collect();
            let owned = Owned::new(mine);
            let v6: BTreeSet<Ipv6Addr> = owned.v6().iter().copied().collect();
            let gone: Vec<Ipv6Addr> = port.joined.difference(&v6).copied().collect();
            for ip in gone {
                port.groups.leave(wire::solicited_node(ip));
                port.joined.remove(&ip);
            }
            // Joins that failed are tried again at the next refresh.
            let new: Vec<Ipv6Addr> = v6.difference(&port.joined).copied().collect();
            for ip in new {
                match port.groups.join(wire::solicited_node(ip)) {
                    Ok(()) => {
                        port.joined.insert(ip);
                    }
                    Err(e) => {
                        tracing::warn!(interface = %port.link.name, %ip, error = %e, "cannot join the solicited-node group: solicitations sent to it are not seen")
                    }
                }
            }
            port.owned.store(Arc::new(owned));
        }
    }

    /// When [`Responders::announce_due`] has something to send.
    pub fn next_wake(&self) -> Option<Instant> {
        self.schedule.next_wake()
    }

    /// Hands the announcements due at `now` to the sending task of every
    /// interface that owns each address.
    pub fn announce_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.schedule.due(now, |ip| due.push(ip));
        for port in self.ports.values() {
            let owned = port.owned.load();
            for ip in due.iter().copied().filter(|ip| owned.contains(*ip)) {
                let _ = port.announce.send(ip);
            }
        }
    }
}

/// Whether `link` is still the interface a port was opened on (a new
/// link-local address or a flag that does not make it unusable does not
/// reopen it).
fn same_port(link: &Link, was: &Link) -> bool {
    link.index == was.index && link.name == was.name && link.mac == was.mac
}

/// Sends the announcements handed to one interface, waiting for room in a
/// full send buffer, and retrying a frame the queue dropped (`ENOBUFS`) a
/// few times.
async fn send_announcements(packet: Packet, port: Answering, mut queue: tokio::sync::mpsc::UnboundedReceiver<IpAddr>) {
    let mut bufs = [[0u8; wire::ADVERT_FRAME]; 2];
    while let Some(ip) = queue.recv().await {
        if port.stop.load(Ordering::Relaxed) {
            return;
        }
        if !port.owned.load().contains(ip) {
            continue;
        }
        let lens = announce::announce(port.mac, ip, &mut bufs);
        for (buf, len) in bufs.iter().zip(lens).filter(|(_, len)| *len > 0) {
            let mut tries = 0;
            loop {
                match packet.send(&buf[..len]).await {
                    Ok(()) => {
                        port.metrics.gratuitous.get_or_create(&label(ip)).inc();
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && tries < 3 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(1 << tries)).await;
                    }
                    Err(e) => {
                        tracing::warn!(interface = %port.name, %ip, error = %e, "announcement not sent");
                        break;
                    }
                }
            }
        }
    }
}

fn label(ip: IpAddr) -> IpLabel {
    IpLabel { ip: ip.to_string() }
}

/// How often an address claimed by another host is reported and defended
/// at most (RFC 5227's DEFEND_INTERVAL).
pub const DEFEND_EVERY: Duration = Duration::from_secs(10);

/// How long after a takeover another host's claim is taken for the last
/// owner letting go (speakers read a change each on their own poll).
const HANDOVER: Duration = Duration::from_secs(2);

/// How long a claim waits before it is looked at: time for this node to
/// read a configuration change that moved the address away.
pub const CONFIRM: Duration = Duration::from_secs(1);

/// Answers what `receiver` gets until the port stops.
fn answer(receiver: &Receiver, port: &Answering) {
    if port.realtime
        && let Err(e) = super::packet::realtime()
    {
        tracing::debug!(interface = %port.name, error = %e, "the responder runs at normal priority (no CAP_SYS_NICE)");
    }
    let mut frame = [0u8; 2048];
    let mut out = [0u8; wire::ADVERT_FRAME];
    let mut counters: HashMap<IpAddr, (Count, Count)> = HashMap::new();
    while !port.stop.load(Ordering::Relaxed) {
        let n = match receiver.recv(&mut frame) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(interface = %port.name, error = %e, "receiving");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if port.stop.load(Ordering::Relaxed) {
            return;
        }
        let owned = port.owned.load();
        match responder::respond(port.mac, &owned, &frame[..n], &mut out) {
            Response::Reply { len, ip } => {
                // Sent before anything is counted.
                let sent = receiver.send(&out[..len]);
                // The address's counters, looked up (and their label
                // formatted) once per address, not once per frame.
                let (requests, responses) = counters.entry(ip).or_insert_with(|| {
                    let l = label(ip);
                    (
                        port.metrics.requests.get_or_create(&l).clone(),
                        port.metrics.responses.get_or_create(&l).clone(),
                    )
                });
                requests.inc();
                match sent {
                    Ok(()) => responses.inc(),
                    Err(e) => tracing::debug!(interface = %port.name, error = %e, "reply not sent"),
                }
            }
            Response::Conflict { ip, mac: theirs } => {
                // Judged (and rate-limited) by the main loop, which knows
                // this node's other interfaces and recent takeovers.
                let _ = port.conflicts.try_send((ip, theirs));
            }
            Response::Ignore(_) => {}
        }
    }
}
