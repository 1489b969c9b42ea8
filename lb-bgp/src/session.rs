//! One BGP session as RFC 4271 §8's finite state machine, sans I/O, behind
//! one drive contract: the caller passes inputs and the time
//! ([`Session::handle_input`], [`Session::handle_timeout`]) and drains,
//! in this order, the bytes to send ([`Session::poll_transmit`]), the next
//! deadline ([`Session::poll_timeout`]) and what happened
//! ([`Session::poll_event`]).
//!
//! A session either dials out ([`Session::new`], the usual one) or takes
//! a connection the peer opened ([`Session::accept`]). When both sides
//! connect, the caller holds one session of each kind for the peer and
//! [`collision`] says which one to close with
//! [`Input::OpenCollisionDump`] (§6.8). A connection that cannot be
//! opened is tried again after a wait that doubles from 1 s up to the
//! ConnectRetry time; after an error on a connection the session goes to
//! Idle and starts again by itself after an idle hold time that doubles on
//! each consecutive failure (1 s up to 120 s). Both waits start again from
//! 1 s only once a session has stayed established for a minute, so a peer
//! that resets every session at once is not redialled every second. A stop
//! by the caller stays stopped.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::error::{DecodeError, NotificationCode};
use crate::header::{MAX_LEN, frame};
use crate::message::{Message, Notification, write_keepalive};
use crate::open::{Capability, OpenMessage};

/// The states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not connecting.
    Idle,
    /// Connecting (the caller opens the TCP connection).
    Connect,
    /// The connection failed; waiting to retry.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

/// What the session is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This speaker's AS.
    pub local_as: u32,
    /// The peer's AS.
    pub peer_as: PeerAs,
    /// This speaker's BGP Identifier.
    pub bgp_id: Ipv4Addr,
    /// The hold time proposed (seconds; 0 or at least 3; 90 by default).
    pub hold_time: u16,
    /// Time between connection attempts (RFC 4271: 120 s).
    pub connect_retry: Duration,
    /// Address families offered `(afi, safi)`.
    pub families: Vec<(u16, u8)>,
    /// The time between KEEPALIVEs; `None`: a third of the hold time
    /// negotiated (RFC 4271 §10). Never more than a third of it.
    pub keepalive_time: Option<u16>,
    /// Offer graceful restart (RFC 4724) with this restart time (seconds,
    /// at most 4095): the peer keeps this speaker's routes that long
    /// while it restarts, until its End-of-RIB.
    pub graceful_restart: Option<u16>,
}

/// Which AS the peer may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAs {
    /// Exactly this one.
    Is(u32),
    /// Any (MetalLB's `dynamicASN`, unchecked).
    Any,
    /// The local AS: iBGP (`dynamicASN: internal`).
    Internal,
    /// Any other AS: eBGP (`dynamicASN: external`).
    External,
}

impl PeerAs {
    /// Whether `asn` is acceptable from a peer of a speaker in `local`.
    pub fn accepts(self, asn: u32, local: u32) -> bool {
        match self {
            PeerAs::Is(want) => asn == want,
            PeerAs::Any => true,
            PeerAs::Internal => asn == local,
            PeerAs::External => asn != local,
        }
    }
}

/// What the peer said in its OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its AS.
    pub asn: u32,
    /// Its BGP Identifier.
    pub bgp_id: Ipv4Addr,
    /// The hold time in force: the smaller of both proposals.
    pub hold_time: u16,
    /// Whether it offered route refresh.
    pub route_refresh: bool,
    /// Whether it offered graceful restart (RFC 4724): with it, a session
    /// closed without a NOTIFICATION leaves the routes with the peer for
    /// the restart time, until the next session's End-of-RIB.
    pub graceful_restart: bool,
    /// The time between this side's KEEPALIVEs (0: none).
    pub keepalive_time: u16,
    /// The address families both offered.
    pub families: Vec<(u16, u8)>,
}

/// An input from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// Start (event 1, ManualStart).
    ManualStart,
    /// Stop, telling the peer why (event 2, ManualStop; a Cease,
    /// Administrative Shutdown, with this shutdown communication when a
    /// connection is up).
    ManualStop(&'a str),
    /// Stop because the peer's configuration changed: as
    /// [`Input::ManualStop`] but the Cease says Administrative Reset (RFC
    /// 4486), so the peer expects the session back.
    ManualReset(&'a str),
    /// The TCP connection is up (events 16/17).
    TcpConnectionConfirmed,
    /// The TCP connection failed or closed (event 18).
    TcpConnectionFails,
    /// Bytes received from the peer.
    Received(&'a [u8]),
    /// This connection lost a collision with another one to the same peer
    /// (event 23): a Cease (Connection Collision Resolution) when
    /// connected, then Idle (a dial in progress or waiting is abandoned);
    /// it does not start again by itself (the
    /// caller starts a dialling session again with
    /// [`Input::ManualStart`] once the other connection is gone).
    OpenCollisionDump,
}

/// What happened, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (after sending what is queued).
    Disconnect,
    /// The session is established.
    Established(Peer),
    /// The session went down.
    Down(Down),
    /// An UPDATE arrived (lb announces only; the count is kept).
    UpdateReceived,
    /// The peer asked for the routes again (ROUTE-REFRESH, AFI and SAFI).
    RouteRefresh(u16, u8),
}

/// Why a session went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// The peer sent a NOTIFICATION (with its shutdown communication, if
    /// any).
    PeerNotified(NotificationCode, Option<String>),
    /// This side sent one.
    Notified(NotificationCode),
    /// The connection failed or closed.
    ConnectionLost,
    /// Stopped by the caller.
    Stopped,
}

/// One session.
#[derive(Debug)]
pub struct Session {
    config: Config,
    state: State,
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    /// When to start again by itself after an error, and the next wait.
    idle_hold: Option<Instant>,
    backoff: Duration,
    /// Since when the session has been established.
    up_since: Option<Instant>,
    peer: Option<Peer>,
    received: Vec<u8>,
    transmit: Vec<u8>,
    events: VecDeque<Event>,
    /// A connection the peer opened: never dials, never starts again.
    passive: bool,
    /// The state of the jitter's random numbers; `None`: no jitter.
    jitter: Option<u64>,
    /// Stop reading after the peer's OPEN, for the caller to resolve a
    /// collision ([`Session::pausing_at_open`]).
    pause_at_open: bool,
    /// Stopped there; the next [`Input::Received`] goes on.
    paused: bool,
}

/// The hold time while waiting for the peer's OPEN (RFC 4271 §8: "a large
/// value", 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// The first and longest wait before starting again after an error.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(120));
/// How long a session must stay established before a failure counts as a
/// first one again (BIRD's "error forget time" idea).
const STABLE: Duration = Duration::from_secs(60);

impl Session {
    /// A session in Idle.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Idle,
            connect_retry: None,
            hold: None,
            keepalive: None,
            idle_hold: None,
            backoff: BACKOFF.0,
            up_since: None,
            peer: None,
            received: Vec::new(),
            transmit: Vec::new(),
            events: VecDeque::new(),
            passive: false,
            jitter: None,
            pause_at_open: false,
            paused: false,
        }
    }

    /// For a caller that may hold two connections to the peer: after the
    /// peer's OPEN, the session reads nothing more (a KEEPALIVE that came
    /// in the same segment waits) until the caller has asked [`collision`]
    /// and, if this session stays, resumes it with
    /// `Input::Received(&[])` ([`Session::is_paused`]). Without it, an OPEN
    /// and a KEEPALIVE read together would establish the session before
    /// the caller could compare BGP Identifiers as the peer does.
    pub fn pausing_at_open(mut self) -> Self {
        self.pause_at_open = true;
        self
    }

    /// Whether the session stopped reading after the peer's OPEN.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The BGP Identifier this session sends.
    pub fn bgp_id(&self) -> Ipv4Addr {
        self.config.bgp_id
    }

    /// Jitters the timers as RFC 4271 §10 asks, so that many speakers
    /// started together do not dial and keep alive in step: the
    /// ConnectRetry timer, the waits before starting again and the
    /// KeepaliveTimer are each multiplied by a factor drawn uniformly from
    /// 0.75 to 1. The session has no randomness of its own: `seed` is the
    /// caller's (a session without one keeps exact timers).
    pub fn with_jitter(mut self, seed: u64) -> Self {
        self.jitter = Some(seed);
        self
    }

    /// `d` times a factor in [0.75, 1) when jittering.
    fn jittered(&mut self, d: Duration) -> Duration {
        let Some(state) = &mut self.jitter else { return d };
        // splitmix64.
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits as a fraction of one.
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.75 + 0.25 * unit)
    }

    /// A session for a connection the peer opened (RFC 4271's passive
    /// side), in Active: [`Input::TcpConnectionConfirmed`] sends the OPEN.
    /// It ends in Idle when the connection does (no redial: the peer
    /// dials again, and the caller's dialling session goes on).
    pub fn accept(config: Config) -> Self {
        Self {
            state: State::Active,
            passive: true,
            ..Self::new(config)
        }
    }

    /// Whether the peer opened this session's connection.
    pub fn is_passive(&self) -> bool {
        self.passive
    }

    /// What the peer said in its OPEN, once it did (OpenConfirm and
    /// Established).
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Sets the BGP Identifier the next OPEN carries: a speaker without a
    /// configured router ID takes its side of the connection's IPv4
    /// address, known once connected (before
    /// [`Input::TcpConnectionConfirmed`]).
    pub fn set_bgp_id(&mut self, id: Ipv4Addr) {
        self.config.bgp_id = id;
    }

    /// Queues an UPDATE (or any whole message) to send; only while
    /// Established (returns whether it was queued).
    pub fn send(&mut self, message: &[u8]) -> bool {
        if self.state != State::Established {
            return false;
        }
        self.transmit.extend_from_slice(message);
        true
    }

    /// Handles one input at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::ManualStart => {
                if self.state == State::Idle && !self.passive {
                    self.backoff = BACKOFF.0;
                    self.start(now);
                }
            }
            Input::ManualStop(why) | Input::ManualReset(why) => {
                let code = match input {
                    Input::ManualReset(_) => NotificationCode::ADMINISTRATIVE_RESET,
                    _ => NotificationCode::ADMINISTRATIVE_SHUTDOWN,
                };
                if matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established) {
                    Notification::write_shutdown(code, why, &mut self.transmit);
                }
                let was = self.state;
                // A dial in progress is abandoned too.
                if matches!(was, State::Connect | State::Active) {
                    self.events.push_back(Event::Disconnect);
                }
                self.idle(None);
                if was != State::Idle {
                    self.events.push_back(Event::Down(Down::Stopped));
                }
            }
            Input::TcpConnectionConfirmed => {
                if matches!(self.state, State::Connect | State::Active) {
                    self.connect_retry = None;
                    OpenMessage {
                        asn: self.config.local_as,
                        hold_time: self.config.hold_time,
                        bgp_id: self.config.bgp_id,
                        families: self.config.families.clone(),
                        // RFC 2918's; not RFC 7313's enhanced form, whose
                        // demarcation messages lb does not send.
                        route_refresh: true,
                        // Not restarting: the routes are announced anew.
                        graceful_restart: self.config.graceful_restart.map(|t| (t.min(4095), false)),
                    }
                    .write(&mut self.transmit);
                    self.hold = Some(now + OPEN_HOLD);
                    self.state = State::OpenSent;
                }
            }
            Input::TcpConnectionFails => match self.state {
                State::OpenSent if self.passive => self.idle(None),
                State::Connect | State::OpenSent => {
                    self.received.clear();
                    self.hold = None;
                    // Again soon, then less and less often: a router that
                    // is coming back is found within seconds, one that is
                    // gone is not hammered.
                    let wait = self.next_backoff(now, self.config.connect_retry);
                    self.connect_retry = Some(now + wait);
                    self.state = State::Active;
                    self.events.push_back(Event::Disconnect);
                }
                State::OpenConfirm | State::Established => self.fail(now, Down::ConnectionLost, None),
                State::Idle | State::Active => {}
            },
            Input::Received(bytes) => {
                self.paused = false;
                if matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established) {
                    self.received.extend_from_slice(bytes);
                    self.read(now);
                }
            }
            Input::OpenCollisionDump => match self.state {
                // Waiting to start again (after the peer closed this
                // connection for the collision, say): not any more.
                State::Idle => self.idle_hold = None,
                State::Connect | State::Active => {
                    // A dial in progress or waiting: abandoned.
                    if !self.passive {
                        self.events.push_back(Event::Disconnect);
                    }
                    self.idle(None);
                }
                State::OpenSent | State::OpenConfirm | State::Established => {
                    let code = NotificationCode::CONNECTION_COLLISION_RESOLUTION;
                    Notification::write(code, &[], &mut self.transmit);
                    self.idle(None);
                    self.events.push_back(Event::Down(Down::Notified(code)));
                }
            },
        }
    }

    /// Handles the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.idle_hold.is_some_and(|t| t <= now) {
            self.idle_hold = None;
            self.start(now);
        }
        if self.connect_retry.is_some_and(|t| t <= now) {
            // ConnectRetryTimer_Expires (event 9): try again.
            self.events.push_back(Event::Disconnect);
            self.start(now);
        }
        if self.hold.is_some_and(|t| t <= now) {
            // HoldTimer_Expires (event 10).
            self.fail(
                now,
                Down::Notified(NotificationCode::HOLD_TIMER_EXPIRED),
                Some(NotificationCode::HOLD_TIMER_EXPIRED),
            );
        }
        if self.keepalive.is_some_and(|t| t <= now) {
            // KeepaliveTimer_Expires (event 11).
            write_keepalive(&mut self.transmit);
            let every = self
                .peer
                .as_ref()
                .map(|p| Duration::from_secs(u64::from(p.keepalive_time)));
            self.keepalive = every.map(|d| now + self.jittered(d));
        }
    }

    /// The next time [`Session::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.idle_hold, self.connect_retry, self.hold, self.keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves the bytes to send into `out`; whether there were any.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.transmit.is_empty() {
            return false;
        }
        out.append(&mut self.transmit);
        true
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn start(&mut self, now: Instant) {
        self.connect_retry = Some(now + self.jittered(self.config.connect_retry));
        self.state = State::Connect;
        self.events.push_back(Event::Connect);
    }

    /// Goes to Idle, sending `notify` first when given; with `restart`,
    /// starts again after the idle hold time.
    fn idle(&mut self, restart: Option<Instant>) {
        let connected = matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established);
        self.state = State::Idle;
        self.connect_retry = None;
        self.hold = None;
        self.keepalive = None;
        self.peer = None;
        self.received.clear();
        self.idle_hold = restart;
        if connected || restart.is_some() {
            self.events.push_back(Event::Disconnect);
        }
    }

    /// An error: NOTIFICATION (when given), Idle, start again later.
    fn fail(&mut self, now: Instant, why: Down, notify: Option<NotificationCode>) {
        self.fail_with(now, why, notify, &[]);
    }

    fn fail_with(&mut self, now: Instant, why: Down, notify: Option<NotificationCode>, data: &[u8]) {
        if let Some(code) = notify {
            Notification::write(code, data, &mut self.transmit);
        }
        let wait = self.next_backoff(now, BACKOFF.1);
        self.idle(self.restart_at(now + wait));
        self.events.push_back(Event::Down(why));
    }

    /// When to start again by itself: at `at`, unless the peer opened the
    /// connection.
    fn restart_at(&self, at: Instant) -> Option<Instant> {
        (!self.passive).then_some(at)
    }

    /// The wait before the next attempt, at most `cap` (then jittered),
    /// doubling the one after; from the
    /// first again when the last session stayed up for [`STABLE`].
    fn next_backoff(&mut self, now: Instant, cap: Duration) -> Duration {
        if self
            .up_since
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) >= STABLE)
        {
            self.backoff = BACKOFF.0;
        }
        let wait = self.backoff.min(cap);
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        self.jittered(wait)
    }

    /// Reads every whole message received.
    fn read(&mut self, now: Instant) {
        let mut at = 0;
        loop {
            let buf = std::mem::take(&mut self.received);
            let framed = frame(&buf[at..], MAX_LEN);
            let (kind, len) = match framed {
                Ok(Some((kind, m))) => (kind, m.len()),
                Ok(None) => {
                    self.received = buf;
                    self.received.drain(..at);
                    return;
                }
                Err(e) => return self.decode_error(now, e),
            };
            let was = self.state;
            let result = Message::decode(kind, &buf[at..at + len]).map(|m| self.message(now, m));
            if let Err(e) = result {
                return self.decode_error(now, e);
            }
            at += len;
            if self.state == State::Idle {
                return;
            }
            self.received = buf;
            if self.pause_at_open && was == State::OpenSent && self.state == State::OpenConfirm {
                self.paused = true;
                self.received.drain(..at);
                return;
            }
        }
    }

    fn decode_error(&mut self, now: Instant, e: DecodeError) {
        let code = e.notification();
        self.fail_with(now, Down::Notified(code), Some(code), &e.data());
    }

    fn message(&mut self, now: Instant, m: Message<'_>) {
        match (self.state, m) {
            (_, Message::Notification(n)) => {
                let why = Down::PeerNotified(n.code, n.shutdown_message().map(str::to_owned));
                // The peer's operator shut it down, de-configured or reset
                // it, changed its configuration or hard-reset it (Cease 2,
                // 3, 4, 6, 9; RFC 4486, RFC 8538): no fault of the session,
                // so no longer wait; a router restarting is dialled again
                // within seconds however often it restarts.
                if n.code.code == 6 && matches!(n.code.subcode, 2 | 3 | 4 | 6 | 9) {
                    self.backoff = BACKOFF.0;
                    self.up_since = None;
                }
                let wait = self.next_backoff(now, BACKOFF.1);
                self.idle(self.restart_at(now + wait));
                self.events.push_back(Event::Down(why));
            }
            (State::OpenSent, Message::Open(o)) => {
                let asn = o.asn();
                if !self.config.peer_as.accepts(asn, self.config.local_as) {
                    return self.fail(
                        now,
                        Down::Notified(NotificationCode::BAD_PEER_AS),
                        Some(NotificationCode::BAD_PEER_AS),
                    );
                }
                // An internal peer with this speaker's own identifier (RFC
                // 6286 §2.2), or this speaker itself through a connection
                // to its own port.
                if asn == self.config.local_as && o.bgp_id == self.config.bgp_id {
                    return self.fail(
                        now,
                        Down::Notified(NotificationCode::BAD_BGP_ID),
                        Some(NotificationCode::BAD_BGP_ID),
                    );
                }
                // lb writes 4-octet AS numbers in AS_PATH (RFC 6793): a
                // peer without the capability cannot read them.
                if !o.capabilities().any(|c| matches!(c, Capability::FourOctetAs(_))) {
                    let code = NotificationCode::UNSUPPORTED_CAPABILITY;
                    let mut data = vec![65, 4];
                    data.extend_from_slice(&self.config.local_as.to_be_bytes());
                    return self.fail_with(now, Down::Notified(code), Some(code), &data);
                }
                let hold_time = self.config.hold_time.min(o.hold_time);
                let keepalive_time = match hold_time {
                    0 => 0,
                    h => self.config.keepalive_time.map_or(h / 3, |k| k.min(h / 3)).max(1),
                };
                let mut offered: Vec<(u16, u8)> = o
                    .capabilities()
                    .filter_map(|c| match c {
                        Capability::Multiprotocol { afi, safi } => Some((afi, safi)),
                        _ => None,
                    })
                    .collect();
                // No multiprotocol capability: IPv4 unicast (RFC 4760 §8).
                if offered.is_empty() {
                    offered.push((1, 1));
                }
                self.peer = Some(Peer {
                    asn,
                    bgp_id: o.bgp_id,
                    hold_time,
                    route_refresh: o.capabilities().any(|c| c == Capability::RouteRefresh),
                    graceful_restart: o
                        .capabilities()
                        .any(|c| matches!(c, Capability::GracefulRestart { .. })),
                    keepalive_time,
                    families: self
                        .config
                        .families
                        .iter()
                        .copied()
                        .filter(|f| offered.contains(f))
                        .collect(),
                });
                write_keepalive(&mut self.transmit);
                self.arm(now, hold_time, keepalive_time);
                self.state = State::OpenConfirm;
            }
            (State::OpenConfirm, Message::Keepalive) => {
                self.arm_hold(now);
                self.up_since = Some(now);
                self.state = State::Established;
                if let Some(p) = self.peer.clone() {
                    self.events.push_back(Event::Established(p));
                }
            }
            (State::Established, Message::Keepalive) => self.arm_hold(now),
            (State::Established, Message::Update(_)) => {
                self.arm_hold(now);
                self.events.push_back(Event::UpdateReceived);
            }
            (State::Established, Message::RouteRefresh(r)) => {
                // A request (subtype 0) for a family of this session; the
                // demarcations of an enhanced refresh (RFC 7313, not
                // offered) are ignored.
                let negotiated = self
                    .peer
                    .as_ref()
                    .is_some_and(|p| p.families.contains(&(r.afi, r.safi)));
                if r.subtype == 0 && negotiated {
                    self.events.push_back(Event::RouteRefresh(r.afi, r.safi));
                }
            }
            // Anything else is out of place: Finite State Machine Error,
            // with the state as subcode (RFC 6608).
            (state, _) => {
                let sub = match state {
                    State::OpenSent => 1,
                    State::OpenConfirm => 2,
                    _ => 3,
                };
                let code = NotificationCode::new(5, sub);
                self.fail(now, Down::Notified(code), Some(code));
            }
        }
    }

    /// Arms the hold and keepalive timers for a negotiated hold time (0:
    /// neither).
    fn arm(&mut self, now: Instant, hold_time: u16, keepalive_time: u16) {
        if hold_time == 0 {
            self.hold = None;
            self.keepalive = None;
        } else {
            self.hold = Some(now + Duration::from_secs(u64::from(hold_time)));
            self.keepalive = Some(now + self.jittered(Duration::from_secs(u64::from(keepalive_time))));
        }
    }

    fn arm_hold(&mut self, now: Instant) {
        if let Some(p) = &self.peer
            && p.hold_time > 0
        {
            self.hold = Some(now + Duration::from_secs(u64::from(p.hold_time)));
        }
    }
}

/// Which of two connections to one peer is closed (RFC 4271 §6.8, RFC
/// 6286 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The one this speaker dialled.
    Outgoing,
    /// The one the peer opened.
    Incoming,
}

/// Whether the dialled session `outgoing` and the accepted session
/// `incoming` (same peer) collide, and which to close with
/// [`Input::OpenCollisionDump`]:
///
/// - one of them is Established: the other goes (§6.8 closes the newer
///   connection; a dial still waiting is abandoned too, since the peer
///   would close it);
/// - both have the peer's OPEN: the connection opened by the speaker with
///   the higher BGP Identifier stays; with equal identifiers (possible
///   between different ASes, RFC 6286), the one opened by the speaker with
///   the higher AS number;
/// - otherwise nothing yet.
pub fn collision(outgoing: &Session, incoming: &Session) -> Option<Side> {
    let live = |s: &Session| s.state != State::Idle;
    if !live(outgoing) || !live(incoming) {
        return None;
    }
    match (outgoing.state, incoming.state) {
        (State::Established, _) => return Some(Side::Incoming),
        (_, State::Established) => return Some(Side::Outgoing),
        _ => {}
    }
    let (Some(_), Some(peer)) = (&outgoing.peer, &incoming.peer) else {
        return None;
    };
    let local = (u32::from(incoming.config.bgp_id), incoming.config.local_as);
    let remote = (u32::from(peer.bgp_id), peer.asn);
    Some(if local < remote { Side::Outgoing } else { Side::Incoming })
}
