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

use super::link::Link;
use super::metrics::{IpLabel, Metrics};
use super::packet::{Groups, Packet, Receiver};

/// The addresses to answer for, each with the interfaces it is announced
/// on (empty: every usable one).
pub type Wanted = BTreeMap<IpAddr, BTreeSet<String>>;

/// The responders of one node.
#[derive(Debug)]
pub struct Responders {
    only: Vec<String>,
    ports: BTreeMap<u32, Port>,
    wanted: Wanted,
    schedule: Schedule,
    metrics: Metrics,
    /// Interfaces that could not be opened, with the error last logged.
    failed: BTreeMap<u32, String>,
    /// With `--assign-to-lo`: the loopback interface, and the addresses put
    /// on it.
    assign: Option<(u32, BTreeSet<IpAddr>)>,
}

/// One interface answering.
#[derive(Debug)]
struct Port {
    link: Link,
    mac: Mac,
    packet: Arc<Packet>,
    owned: Arc<ArcSwap<Owned>>,
    groups: Groups,
    /// The IPv6 addresses whose groups are joined.
    joined: BTreeSet<Ipv6Addr>,
    /// Tells the port's receiving thread to stop.
    stop: Arc<AtomicBool>,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How soon a receiving thread notices it should stop.
const TICK: Duration = Duration::from_millis(250);

impl Responders {
    /// No interface yet; `only` narrows the usable ones (`--interface`).
    pub fn new(only: Vec<String>, metrics: Metrics) -> Self {
        Self {
            only,
            ports: BTreeMap::new(),
            wanted: Wanted::new(),
            schedule: Schedule::default(),
            metrics,
            failed: BTreeMap::new(),
            assign: None,
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
        for ip in &taken {
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
            .filter(|l| l.usable(&self.only))
            .map(|l| (l.index, l))
            .collect();
        self.ports.retain(|index, port| {
            let keep = usable.get(index).is_some_and(|l| **l == port.link);
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
            let opened = Packet::open(index).and_then(|p| Ok((p, Receiver::open(index, TICK)?)));
            match opened {
                Ok((packet, receiver)) => {
                    let packet = Arc::new(packet);
                    let owned = Arc::new(ArcSwap::from_pointee(Owned::default()));
                    let stop = Arc::new(AtomicBool::new(false));
                    let (name, o, m, st) = (link.name.clone(), owned.clone(), self.metrics.clone(), stop.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("answer-{}", link.name))
                        .spawn(move || answer(&receiver, mac, &name, &o, &m, &st));
                    if let Err(e) = spawned {
                        tracing::error!(interface = %link.name, error = %e, "cannot start a responder thread");
                        continue;
                    }
                    tracing::info!(interface = %link.name, %mac, "answering ARP and NDP");
                    self.failed.remove(&index);
                    self.ports.insert(
                        index,
                        Port {
                            link: link.clone(),
                            mac,
                            packet,
                            owned,
                            groups: Groups::new(index),
                            joined: BTreeSet::new(),
                            stop,
                        },
                    );
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.failed.get(&index) != Some(&text) {
                        tracing::error!(interface = %link.name, error = %text, "cannot open a packet socket (needs CAP_NET_RAW)");
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
            for gone in port.joined.difference(&v6) {
                port.groups.leave(wire::solicited_node(*gone));
            }
            for new in v6.difference(&port.joined) {
                if let Err(e) = port.groups.join(wire::solicited_node(*new)) {
                    tracing::warn!(interface = %port.link.name, ip = %new, error = %e, "cannot join the solicited-node group: solicitations sent to it are not seen");
                }
            }
            port.joined = v6;
            port.owned.store(Arc::new(owned));
        }
    }

    /// When [`Responders::announce_due`] has something to send.
    pub fn next_wake(&self) -> Option<Instant> {
        self.schedule.next_wake()
    }

    /// Sends the announcements due at `now`, on every interface that owns
    /// each address, waiting for room in a full send buffer (a takeover of
    /// thousands of addresses fills it) rather than dropping frames.
    pub async fn announce_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.schedule.due(now, |ip| due.push(ip));
        let mut bufs = [[0u8; wire::ADVERT_FRAME]; 2];
        for port in self.ports.values() {
            let owned = port.owned.load();
            for ip in due.iter().copied().filter(|ip| owned.contains(*ip)) {
                let lens = announce::announce(port.mac, ip, &mut bufs);
                for (buf, len) in bufs.iter().zip(lens).filter(|(_, len)| *len > 0) {
                    match port.packet.send(&buf[..len]).await {
                        Ok(()) => self.metrics.gratuitous.get_or_create(&label(ip)).inc(),
                        Err(e) => {
                            tracing::debug!(interface = %port.link.name, %ip, error = %e, "announcement not sent");
                            0
                        }
                    };
                }
            }
        }
    }
}

fn label(ip: IpAddr) -> IpLabel {
    IpLabel { ip: ip.to_string() }
}

/// How often one address's conflict is logged at most.
const CONFLICT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Answers on one interface until `stop` is set.
fn answer(receiver: &Receiver, mac: Mac, name: &str, owned: &ArcSwap<Owned>, metrics: &Metrics, stop: &AtomicBool) {
    let mut frame = [0u8; 2048];
    let mut out = [0u8; wire::ADVERT_FRAME];
    let mut conflicts: HashMap<IpAddr, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match receiver.recv(&mut frame) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(interface = %name, error = %e, "receiving");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let owned = owned.load();
        match responder::respond(mac, &owned, &frame[..n], &mut out) {
            Response::Reply { len, ip } => {
                // Sent before anything is counted: counting allocates.
                let sent = receiver.send(&out[..len]);
                let ip = label(ip);
                metrics.requests.get_or_create(&ip).inc();
                match sent {
                    Ok(()) => metrics.responses.get_or_create(&ip).inc(),
                    Err(e) => {
                        tracing::debug!(interface = %name, error = %e, "reply not sent");
                        0
                    }
                };
            }
            Response::Conflict { ip, mac: theirs } => {
                metrics.conflicts.get_or_create(&label(ip)).inc();
                let now = Instant::now();
                if conflicts
                    .get(&ip)
                    .is_none_or(|last| now.duration_since(*last) >= CONFLICT_LOG_EVERY)
                {
                    conflicts.insert(ip, now);
                    tracing::warn!(interface = %name, %ip, other = %theirs, "another host claims an address announced here (split brain?)");
                }
            }
            Response::Ignore(_) => {}
        }
    }
}
