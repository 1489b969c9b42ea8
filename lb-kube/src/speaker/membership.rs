//! Which speakers are alive: SWIM membership ([foca], sans-IO) over UDP,
//! seeded from the Node objects' addresses (the same in file and cluster
//! mode). A speaker that stops answering probes is suspected, then
//! declared down after the suspicion timeout, and the others elect new
//! owners for its addresses; a speaker shut down cleanly leaves at once.
//!
//! foca rather than memberlist-compatible gossip: it is maintained, has no
//! I/O of its own (this module owns the socket and the timers, as every
//! lb core does), and its timings are ours to set. It does not speak
//! memberlist's protocol, so lb's speakers and MetalLB's do not see each
//! other: each side would elect among its own and both would answer. Run
//! one or the other on a LAN (they also share the default port, so both on
//! one node fails to start).
//!
//! It runs on a thread of its own, so that work on the speaker's event
//! loop (elections over thousands of Services, takeover bursts) never
//! delays an answer to a probe: a late answer is a false suspicion.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{Config, Foca, Identity, OwnedNotification, PostcardCodec, Timer};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// How fast a dead speaker is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often each speaker probes another one.
    pub probe_interval: Duration,
    /// How long a probe waits for its direct answer before asking others
    /// to probe (less than `probe_interval`).
    pub probe_timeout: Duration,
    /// How long a suspected speaker has to refute before it is down.
    pub suspicion_timeout: Duration,
}

impl Default for Timing {
    /// Tuned for a LAN and sub-second failover: a dead speaker is probed
    /// within 100 ms, suspected 100 ms later and down 200 ms after that.
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(40),
            suspicion_timeout: Duration::from_millis(200),
        }
    }
}

/// A speaker as the membership knows it: its node name, its address, and
/// when it started (milliseconds since the epoch, plus one per rejoin) so
/// that a restarted speaker is a newer member than the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node.
    pub node: String,
    /// Where its membership socket listens.
    pub addr: SocketAddr,
    started: u64,
}

impl Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            started: self.started.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, other: &Self) -> bool {
        // The newer of two incarnations at one address.
        self.started > other.started
    }
}

/// The running membership: the nodes alive (this one included), updated
/// as the membership changes.
#[derive(Debug)]
pub struct Membership {
    /// The live nodes.
    pub alive: watch::Receiver<BTreeSet<String>>,
    seeds: watch::Sender<Vec<SocketAddr>>,
    /// Dropped (or sent) to make the membership leave and stop.
    leave: Option<tokio::sync::oneshot::Sender<()>>,
    /// Resolves when the membership's thread has stopped.
    done: tokio::sync::oneshot::Receiver<()>,
}

/// foca's settings for `timing` and a cluster of `size` speakers: updates
/// are passed on often enough to reach everyone (at least 6 times), and
/// suspicion lasts longer in larger clusters (log10 of the size, as
/// memberlist and Lifeguard scale it).
fn config(timing: Timing, size: usize) -> Config {
    let n = NonZeroU32::new(u32::try_from(size.max(2)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    let mut config = Config::new_lan(n);
    config.probe_period = timing.probe_interval;
    config.probe_rtt = timing.probe_timeout;
    config.suspect_to_down_after = timing.suspicion_timeout.mul_f64(f64::from(n.get()).log10().max(1.0));
    config.max_transmissions = config
        .max_transmissions
        .max(NonZeroU8::new(6).unwrap_or(NonZeroU8::MIN));
    config.max_packet_size = NonZeroUsize::new(MAX_PACKET).unwrap_or(NonZeroUsize::MIN);
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: timing.probe_interval,
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    config
}

/// The largest datagram sent or accepted.
const MAX_PACKET: usize = 1400;
/// How often seeds that are not members are asked to join.
const JOIN_EVERY: Duration = Duration::from_secs(1);

impl Membership {
    /// Binds `bind` and joins as `node`, reachable at `advertise`, on a
    /// thread of its own.
    pub fn start(node: String, bind: SocketAddr, advertise: SocketAddr, timing: Timing) -> std::io::Result<Self> {
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let me = Member {
            node: node.clone(),
            addr: advertise,
            started,
        };
        let foca = Foca::new(
            me,
            config(timing, 1),
            rand::make_rng::<rand::rngs::StdRng>(),
            PostcardCodec,
        );
        let (alive_tx, alive) = watch::channel(BTreeSet::from([node]));
        let (seeds, seeds_rx) = watch::channel(Vec::new());
        let (leave, leave_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("membership".into()).spawn(move || {
            runtime.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => drive(foca, socket, timing, alive_tx, seeds_rx, leave_rx).await,
                    Err(e) => tracing::error!(error = %e, "membership socket"),
                }
            });
            let _ = done_tx.send(());
        })?;
        Ok(Self {
            alive,
            seeds,
            leave: Some(leave),
            done,
        })
    }

    /// The addresses of the other speakers to join (the Node objects').
    pub fn seed(&self, addrs: Vec<SocketAddr>) {
        self.seeds.send_if_modified(|s| {
            let changed = *s != addrs;
            *s = addrs;
            changed
        });
    }

    /// Leaves the membership (the others notice at once), waiting at most
    /// `within` for the goodbyes to be sent.
    pub async fn leave(mut self, within: Duration) {
        if let Some(l) = self.leave.take() {
            let _ = l.send(());
        }
        let _ = tokio::time::timeout(within, &mut self.done).await;
    }
}

type Swim = Foca<Member, PostcardCodec, rand::rngs::StdRng, foca::NoCustomBroadcast>;

/// Owns the socket and the timers, and feeds foca.
async fn drive(
    mut foca: Swim,
    socket: UdpSocket,
    timing: Timing,
    alive: watch::Sender<BTreeSet<String>>,
    mut seeds: watch::Receiver<Vec<SocketAddr>>,
    mut leave: tokio::sync::oneshot::Receiver<()>,
) {
    let mut runtime = foca::AccumulatingRuntime::new();
    let mut timers: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut pending: std::collections::HashMap<u64, Timer<Member>> = std::collections::HashMap::new();
    let mut next_timer = 0u64;
    let mut buf = vec![0u8; MAX_PACKET];
    let mut join = tokio::time::interval(JOIN_EVERY);
    join.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut me = foca.identity().clone();
    // When a datagram last arrived: members that all fall silent at once
    // while still counted alive mean this node's view is wedged (seen
    // after heavy link flapping); it then starts over with a new identity.
    let mut heard = Instant::now();
    let silence = (timing.probe_interval * 10).max(Duration::from_secs(2));
    loop {
        let wake = timers.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            got = socket.recv_from(&mut buf) => match got {
                Ok((n, _)) => {
                    heard = Instant::now();
                    if let Err(e) = foca.handle_data(&buf[..n], &mut runtime) {
                        tracing::debug!(error = %e, "membership datagram refused");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "membership socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = super::sleep_until(wake) => {
                let now = Instant::now();
                while let Some(Reverse((at, id))) = timers.peek().copied() {
                    if at > now {
                        break;
                    }
                    timers.pop();
                    if let Some(t) = pending.remove(&id)
                        && let Err(e) = foca.handle_timer(t, &mut runtime)
                    {
                        tracing::debug!(error = %e, "membership timer");
                    }
                }
            }
            _ = seeds.changed() => {
                let now = seeds.borrow_and_update().clone();
                // The cluster's size sets how often updates are passed on
                // and how long suspicion lasts.
                if let Err(e) = foca.set_config(config(timing, now.len() + 1)) {
                    tracing::debug!(error = %e, "membership settings");
                }
                join_seeds(&mut foca, &now, &me, &mut runtime);
            }
            _ = join.tick() => {
                if foca.num_members() > 0 && heard.elapsed() > silence {
                    tracing::warn!(silent = ?heard.elapsed(), "no word from any speaker counted alive: joining again");
                    let size = seeds.borrow().len() + 1;
                    me = Member { started: me.started.saturating_add(1), ..me.clone() };
                    foca = Foca::new(me.clone(), config(timing, size), rand::make_rng::<rand::rngs::StdRng>(), PostcardCodec);
                    timers.clear();
                    pending.clear();
                    heard = Instant::now();
                    let mut only_me = BTreeSet::from([me.node.clone()]);
                    alive.send_if_modified(|a| {
                        std::mem::swap(a, &mut only_me);
                        *a != only_me
                    });
                }
                join_seeds(&mut foca, &seeds.borrow(), &me, &mut runtime);
            }
            // Asked to leave, or the speaker gone without asking.
            _ = &mut leave => {
                if let Err(e) = foca.leave_cluster(&mut runtime) {
                    tracing::debug!(error = %e, "leaving the membership");
                }
                flush(&mut runtime, &socket, &mut timers, &mut pending, &mut next_timer, &alive, &foca).await;
                return;
            }
        }
        flush(
            &mut runtime,
            &socket,
            &mut timers,
            &mut pending,
            &mut next_timer,
            &alive,
            &foca,
        )
        .await;
    }
}

/// Asks every seed that is not a member (nor this speaker) to join.
fn join_seeds(foca: &mut Swim, seeds: &[SocketAddr], me: &Member, runtime: &mut foca::AccumulatingRuntime<Member>) {
    let members: BTreeSet<SocketAddr> = foca.iter_members().map(|m| m.id().addr).collect();
    for addr in seeds {
        if *addr == me.addr || members.contains(addr) {
            continue;
        }
        // Who answers at the address is not known yet: foca learns the
        // real identity from the answer (a conflict on the address is won
        // by the real one).
        let probe = Member {
            node: String::new(),
            addr: *addr,
            started: 0,
        };
        if let Err(e) = foca.announce(probe, &mut *runtime) {
            tracing::debug!(%addr, error = %e, "membership announce");
        }
    }
}

/// Sends what foca wants sent, arms what it wants armed, and publishes the
/// live set when it changed.
async fn flush(
    runtime: &mut foca::AccumulatingRuntime<Member>,
    socket: &UdpSocket,
    timers: &mut BinaryHeap<Reverse<(Instant, u64)>>,
    pending: &mut std::collections::HashMap<u64, Timer<Member>>,
    next: &mut u64,
    alive: &watch::Sender<BTreeSet<String>>,
    foca: &Swim,
) {
    while let Some((to, data)) = runtime.to_send() {
        if let Err(e) = socket.send_to(&data, to.addr).await {
            tracing::debug!(to = %to.addr, error = %e, "membership send");
        }
    }
    let now = Instant::now();
    while let Some((after, timer)) = runtime.to_schedule() {
        *next += 1;
        pending.insert(*next, timer);
        timers.push(Reverse((now + after, *next)));
    }
    let mut changed = false;
    while let Some(n) = runtime.to_notify() {
        match &n {
            OwnedNotification::MemberUp(m) => tracing::info!(node = %m.node, addr = %m.addr, "speaker up"),
            OwnedNotification::MemberDown(m) => tracing::warn!(node = %m.node, addr = %m.addr, "speaker down"),
            OwnedNotification::Rejoin(m) => tracing::warn!(node = %m.node, "declared down by the others; rejoined"),
            _ => {}
        }
        changed = true;
    }
    if changed {
        let mut now: BTreeSet<String> = foca.iter_members().map(|m| m.id().node.clone()).collect();
        now.insert(foca.identity().node.clone());
        now.remove("");
        alive.send_if_modified(|a| {
            let differs = *a != now;
            *a = now;
            differs
        });
    }
}
