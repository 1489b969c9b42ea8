//! Two sessions wired to each other on a virtual clock (quinn's pair
//! harness): establishment, hold-time negotiation and keepalives, the hold
//! timer, a wrong peer AS (fixed or dynamic), a configured keepalive
//! time, graceful restart offered, a stop with a shutdown communication,
//! the restart backoff, and the collision of two connections when both
//! speakers dial.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lb_bgp::session::{Config, Down, Event, Input, PeerAs, Side, collision};
use lb_bgp::{NotificationCode, Session, State};

struct Pair {
    now: Instant,
    a: Session,
    b: Session,
    /// Whether bytes pass between them.
    linked: bool,
    events: Vec<(char, Event)>,
}

fn config(local_as: u32, peer_as: Option<u32>, id: u8, hold_time: u16) -> Config {
    Config {
        local_as,
        peer_as: peer_as.map_or(PeerAs::Any, PeerAs::Is),
        bgp_id: Ipv4Addr::new(192, 0, 2, id),
        hold_time,
        connect_retry: Duration::from_secs(5),
        families: vec![(1, 1), (2, 1)],
        keepalive_time: None,
        graceful_restart: None,
    }
}

impl Pair {
    fn new(a: Config, b: Config) -> Self {
        Self {
            now: Instant::now(),
            a: Session::new(a),
            b: Session::new(b),
            linked: true,
            events: Vec::new(),
        }
    }

    /// Both start; the caller's "connection" succeeds at once on both ends.
    fn connect(&mut self) {
        self.a.handle_input(self.now, Input::ManualStart);
        self.b.handle_input(self.now, Input::ManualStart);
        self.drain();
        self.a.handle_input(self.now, Input::TcpConnectionConfirmed);
        self.b.handle_input(self.now, Input::TcpConnectionConfirmed);
        self.drain();
    }

    /// Moves bytes and events until nothing moves.
    fn drain(&mut self) {
        loop {
            let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
            self.a.poll_transmit(&mut to_b);
            self.b.poll_transmit(&mut to_a);
            while let Some(e) = self.a.poll_event() {
                self.events.push(('a', e));
            }
            while let Some(e) = self.b.poll_event() {
                self.events.push(('b', e));
            }
            if to_a.is_empty() && to_b.is_empty() {
                return;
            }
            if self.linked {
                self.b.handle_input(self.now, Input::Received(&to_b));
                self.a.handle_input(self.now, Input::Received(&to_a));
            }
        }
    }

    /// Advances the clock to `until`, firing timers on the way.
    fn run(&mut self, until: Instant) {
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn downs(&self, who: char) -> Vec<Down> {
        self.events
            .iter()
            .filter(|(w, _)| *w == who)
            .filter_map(|(_, e)| match e {
                Event::Down(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn two_sessions_establish_and_keep_alive() {
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, None, 2, 30));
    p.connect();
    assert_eq!((p.a.state(), p.b.state()), (State::Established, State::Established));
    let peer = p
        .events
        .iter()
        .find_map(|(w, e)| match (w, e) {
            ('a', Event::Established(peer)) => Some(peer.clone()),
            _ => None,
        })
        .unwrap();
    // The smaller hold time wins; both families offered by both.
    assert_eq!((peer.asn, peer.hold_time, peer.families.len()), (65000, 30, 2));
    assert!(peer.route_refresh);
    // Ten minutes of keepalives every 10 s keep it up.
    let start = p.now;
    p.run(start + Duration::from_secs(600));
    assert_eq!((p.a.state(), p.b.state()), (State::Established, State::Established));
    assert!(p.downs('a').is_empty() && p.downs('b').is_empty());
}

#[test]
fn silence_expires_the_hold_timer_and_the_session_restarts_with_backoff() {
    let mut p = Pair::new(config(65001, Some(65000), 1, 9), config(65000, Some(65001), 2, 9));
    p.connect();
    assert_eq!(p.a.state(), State::Established);
    p.linked = false;
    let cut = p.now;
    p.run(cut + Duration::from_secs(9));
    assert_eq!(p.downs('a'), vec![Down::Notified(NotificationCode::HOLD_TIMER_EXPIRED)]);
    assert_eq!(p.a.state(), State::Idle);
    // It starts again by itself: one second later, then two.
    let starts = |p: &Pair| {
        p.events
            .iter()
            .filter(|(w, e)| *w == 'a' && *e == Event::Connect)
            .count()
    };
    let before = starts(&p);
    p.run(p.now + Duration::from_millis(1100));
    assert_eq!(starts(&p), before + 1);
    assert_eq!(p.a.state(), State::Connect);
}

#[test]
fn a_wrong_peer_as_is_refused_with_bad_peer_as() {
    let mut p = Pair::new(config(65001, Some(64999), 1, 90), config(65000, None, 2, 90));
    p.connect();
    assert_eq!(p.downs('a'), vec![Down::Notified(NotificationCode::BAD_PEER_AS)]);
    assert_eq!(
        p.downs('b'),
        vec![Down::PeerNotified(NotificationCode::BAD_PEER_AS, None)]
    );
    assert_ne!(p.b.state(), State::Established);
}

#[test]
fn a_stop_tells_the_peer_why() {
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, None, 2, 90));
    p.connect();
    p.a.handle_input(p.now, Input::ManualStop("node drained"));
    p.drain();
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.downs('a'), vec![Down::Stopped]);
    assert_eq!(
        p.downs('b'),
        vec![Down::PeerNotified(
            NotificationCode::ADMINISTRATIVE_SHUTDOWN,
            Some("node drained".into())
        )]
    );
    // Stopped stays stopped.
    p.run(p.now + Duration::from_secs(300));
    assert_eq!(p.a.state(), State::Idle);
}

#[test]
fn garbage_from_the_peer_is_answered_with_its_notification() {
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, None, 2, 90));
    p.connect();
    p.a.handle_input(p.now, Input::Received(&[0u8; 19]));
    let mut out = Vec::new();
    p.a.poll_transmit(&mut out);
    let (kind, m) = lb_bgp::frame(&out, lb_bgp::MAX_LEN).unwrap().unwrap();
    let lb_bgp::Message::Notification(n) = lb_bgp::Message::decode(kind, m).unwrap() else {
        panic!()
    };
    assert_eq!(n.code, NotificationCode::NOT_SYNCHRONIZED);
    assert_eq!(p.a.state(), State::Idle);
}

/// The messages `a` sends while the pair moves on to `until`.
fn sent_by_a(p: &mut Pair, until: Instant) -> Vec<lb_bgp::MessageType> {
    let mut kinds = Vec::new();
    while p.now < until {
        let next = [p.a.poll_timeout(), p.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        p.now = next.min(until);
        p.a.handle_timeout(p.now);
        p.b.handle_timeout(p.now);
        let mut out = Vec::new();
        p.a.poll_transmit(&mut out);
        let mut rest = out.as_slice();
        while let Some((k, m)) = lb_bgp::frame(rest, lb_bgp::MAX_LEN).unwrap() {
            kinds.push(k);
            rest = &rest[m.len()..];
        }
        p.b.handle_input(p.now, Input::Received(&out));
        let mut back = Vec::new();
        p.b.poll_transmit(&mut back);
        p.a.handle_input(p.now, Input::Received(&back));
    }
    kinds
}

#[test]
fn a_configured_keepalive_time_is_kept_and_never_above_a_third_of_the_hold() {
    let mut a = config(65001, Some(65000), 1, 90);
    a.keepalive_time = Some(5);
    let mut p = Pair::new(a, config(65000, None, 2, 90));
    p.connect();
    let until = p.now + Duration::from_secs(60);
    let keepalives = sent_by_a(&mut p, until);
    assert_eq!(keepalives.len(), 12, "{keepalives:?}");

    // 60 s asked, hold 30 negotiated: every 10 s.
    let mut a = config(65001, Some(65000), 1, 90);
    a.keepalive_time = Some(60);
    let mut p = Pair::new(a, config(65000, None, 2, 30));
    p.connect();
    let until = p.now + Duration::from_secs(60);
    assert_eq!(sent_by_a(&mut p, until).len(), 6);
}

#[test]
fn dynamic_peer_as_takes_its_kind_only() {
    let mut a = config(65001, None, 1, 90);
    a.peer_as = PeerAs::Internal;
    let mut p = Pair::new(a.clone(), config(65000, None, 2, 90));
    p.connect();
    assert_eq!(p.downs('a'), vec![Down::Notified(NotificationCode::BAD_PEER_AS)]);

    let mut p = Pair::new(a.clone(), config(65001, None, 2, 90));
    p.connect();
    assert_eq!(p.a.state(), State::Established);

    a.peer_as = PeerAs::External;
    let mut p = Pair::new(a.clone(), config(65001, None, 2, 90));
    p.connect();
    assert_eq!(p.downs('a'), vec![Down::Notified(NotificationCode::BAD_PEER_AS)]);
    let mut p = Pair::new(a, config(4_200_000_000, None, 2, 90));
    p.connect();
    assert_eq!(p.a.state(), State::Established);
}

#[test]
fn graceful_restart_is_offered_when_configured() {
    let mut a = config(65001, Some(65000), 1, 90);
    a.graceful_restart = Some(120);
    let mut s = Session::new(a);
    let now = Instant::now();
    s.handle_input(now, Input::ManualStart);
    s.handle_input(now, Input::TcpConnectionConfirmed);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    let (kind, m) = lb_bgp::frame(&out, lb_bgp::MAX_LEN).unwrap().unwrap();
    let lb_bgp::Message::Open(o) = lb_bgp::Message::decode(kind, m).unwrap() else {
        panic!()
    };
    // Not restarting; both families with their forwarding state kept (F),
    // so a peer keeps the routes through a restart of the speaker until
    // its End-of-RIB.
    assert!(
        o.capabilities().any(|c| c
            == lb_bgp::Capability::GracefulRestart {
                flags: 0,
                time: 120,
                families: &[0, 1, 1, 0x80, 0, 2, 1, 0x80],
            }),
        "{:?}",
        o.capabilities().collect::<Vec<_>>()
    );
}

#[test]
fn a_peer_without_four_octet_as_numbers_is_refused() {
    let mut s = Session::new(config(65001, Some(65000), 1, 90));
    let now = Instant::now();
    s.handle_input(now, Input::ManualStart);
    s.handle_input(now, Input::TcpConnectionConfirmed);
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    // An OPEN from AS 65000 with no capability at all.
    let mut open = vec![0xff; 16];
    open.extend_from_slice(&[0, 29, 1, 4, 0xfd, 0xe8, 0, 90, 192, 0, 2, 2, 0]);
    s.handle_input(now, Input::Received(&open));
    out.clear();
    s.poll_transmit(&mut out);
    let (kind, m) = lb_bgp::frame(&out, lb_bgp::MAX_LEN).unwrap().unwrap();
    let lb_bgp::Message::Notification(n) = lb_bgp::Message::decode(kind, m).unwrap() else {
        panic!()
    };
    assert_eq!(n.code, NotificationCode::UNSUPPORTED_CAPABILITY);
    assert_eq!(s.state(), State::Idle);
}

/// The times of `s`'s Connect events while the caller's dials all fail,
/// until `until`.
fn failing_dials(s: &mut Session, start: Instant, until: Duration) -> Vec<u64> {
    let mut now = start;
    let mut at = Vec::new();
    s.handle_input(now, Input::ManualStart);
    loop {
        while let Some(e) = s.poll_event() {
            if e == Event::Connect {
                at.push(now.duration_since(start).as_secs());
                s.handle_input(now, Input::TcpConnectionFails);
            }
        }
        match s.poll_timeout() {
            Some(t) if t <= start + until => {
                now = t;
                s.handle_timeout(now);
            }
            _ => return at,
        }
    }
}

#[test]
fn a_peer_that_refuses_is_redialled_soon_then_less_often() {
    // ConnectRetry 120 s (the default): 1, 2, 4 … s apart, at most 120.
    let mut c = config(65001, Some(65000), 1, 90);
    c.connect_retry = Duration::from_secs(120);
    let at = failing_dials(&mut Session::new(c), Instant::now(), Duration::from_secs(600));
    assert_eq!(&at[..8], &[0, 1, 3, 7, 15, 31, 63, 127], "{at:?}");
    assert_eq!(at[8] - at[7], 120, "{at:?}");
    // A shorter ConnectRetry caps the wait.
    let mut c = config(65001, Some(65000), 1, 90);
    c.connect_retry = Duration::from_secs(5);
    let at = failing_dials(&mut Session::new(c), Instant::now(), Duration::from_secs(40));
    assert_eq!(&at[..6], &[0, 1, 3, 7, 12, 17], "{at:?}");
}

/// `a` connected to a fresh peer and established.
fn establish_with_fresh_peer(a: Session, now: Instant) -> Pair {
    let mut b = Session::new(config(65000, None, 2, 90));
    b.handle_input(now, Input::ManualStart);
    let mut p = Pair {
        now,
        a,
        b,
        linked: true,
        events: Vec::new(),
    };
    p.drain();
    p.a.handle_input(now, Input::TcpConnectionConfirmed);
    p.b.handle_input(now, Input::TcpConnectionConfirmed);
    p.drain();
    assert_eq!(p.a.state(), State::Established);
    p
}

#[test]
fn a_peer_that_resets_every_session_at_once_is_not_redialled_every_second() {
    let start = Instant::now();
    let mut now = start;
    let mut a = Session::new(config(65001, Some(65000), 1, 90));
    a.handle_input(now, Input::ManualStart);
    let mut dials = Vec::new();
    for round in 0..6 {
        // Until `a` dials again by itself.
        loop {
            match a.poll_event() {
                Some(Event::Connect) => break,
                Some(_) => continue,
                None => {
                    now = a.poll_timeout().unwrap();
                    a.handle_timeout(now);
                }
            }
        }
        dials.push(now.duration_since(start).as_secs());
        let mut p = establish_with_fresh_peer(a, now);
        // Once, the session stays up for a while.
        if round == 3 {
            p.run(p.now + Duration::from_secs(150));
        }
        // The peer resets it: a prefix limit (Cease, Maximum Number of
        // Prefixes Reached).
        let mut cease = Vec::new();
        lb_bgp::Notification::write(NotificationCode::new(6, 1), &[], &mut cease);
        p.a.handle_input(p.now, Input::Received(&cease));
        p.drain();
        assert_eq!(p.a.state(), State::Idle);
        (a, now) = (p.a, p.now);
    }
    // 1, 2, 4 s; after a session that lasted, from 1 s again.
    assert_eq!(dials, [0, 1, 3, 7, 158, 160]);
}

/// A peer that offers no multiprotocol capability takes IPv4 unicast (RFC
/// 4760 §8).
#[test]
fn no_multiprotocol_capability_means_ipv4_unicast() {
    let mut s = Session::new(config(65001, Some(65000), 1, 90));
    let now = Instant::now();
    s.handle_input(now, Input::ManualStart);
    s.handle_input(now, Input::TcpConnectionConfirmed);
    // An OPEN from AS 65000 with only the 4-octet AS capability.
    let mut open = vec![0xff; 16];
    open.extend_from_slice(&[
        0, 37, 1, 4, 0xfd, 0xe8, 0, 90, 192, 0, 2, 2, 8, 2, 6, 65, 4, 0, 0, 0xfd, 0xe8,
    ]);
    s.handle_input(now, Input::Received(&open));
    s.handle_input(now, Input::Received(&[0xff; 16]));
    s.handle_input(now, Input::Received(&[0, 19, 4]));
    let peer = std::iter::from_fn(|| s.poll_event())
        .find_map(|e| match e {
            Event::Established(p) => Some(p),
            _ => None,
        })
        .unwrap();
    assert_eq!(peer.families, [(1, 1)]);
    assert!(!peer.graceful_restart);
}

/// A stop while dialling tells the caller to drop the dial.
#[test]
fn a_stop_while_connecting_abandons_the_dial() {
    let mut s = Session::new(config(65001, Some(65000), 1, 90));
    let now = Instant::now();
    s.handle_input(now, Input::ManualStart);
    assert_eq!(s.poll_event(), Some(Event::Connect));
    s.handle_input(now, Input::ManualStop("bye"));
    assert_eq!(s.poll_event(), Some(Event::Disconnect));
    assert_eq!(s.poll_event(), Some(Event::Down(Down::Stopped)));
    let mut out = Vec::new();
    assert!(!s.poll_transmit(&mut out), "nothing to send without a connection");
}

/// An internal peer with this speaker's own BGP identifier (or the speaker
/// itself, through a connection to its own port) is refused (RFC 6286).
#[test]
fn an_internal_peer_with_our_identifier_is_refused() {
    let mut p = Pair::new(config(65001, Some(65001), 1, 90), config(65001, Some(65001), 1, 90));
    p.connect();
    assert_eq!(p.downs('a'), vec![Down::Notified(NotificationCode::BAD_BGP_ID)]);
    // eBGP may share identifiers (they are unique within an AS).
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, Some(65001), 1, 90));
    p.connect();
    assert_eq!(p.a.state(), State::Established);
}

#[test]
fn notification_codes_read_as_the_rfcs_name_them() {
    assert_eq!(
        NotificationCode::new(1, 2).to_string(),
        "Message Header Error / Bad Message Length (1/2)"
    );
    assert_eq!(
        NotificationCode::HOLD_TIMER_EXPIRED.to_string(),
        "Hold Timer Expired (4/0)"
    );
    assert_eq!(
        NotificationCode::new(9, 9).to_string(),
        "unknown error / unknown subcode (9/9)"
    );
}

/// A router whose operator restarts it again and again (a Cease, then
/// refused dials while it is down) is dialled again within seconds each
/// time, not after longer and longer waits.
#[test]
fn an_administrative_cease_does_not_lengthen_the_wait() {
    let start = Instant::now();
    let mut now = start;
    let mut a = Session::new(config(65001, Some(65000), 1, 90));
    a.handle_input(now, Input::ManualStart);
    let mut outages = Vec::new();
    for _ in 0..4 {
        // Until `a` dials; the first two dials meet a router still down.
        let mut refused = 0;
        let down = now;
        loop {
            match a.poll_event() {
                Some(Event::Connect) if refused < 2 => {
                    refused += 1;
                    a.handle_input(now, Input::TcpConnectionFails);
                }
                Some(Event::Connect) => break,
                Some(_) => continue,
                None => {
                    now = a.poll_timeout().unwrap();
                    a.handle_timeout(now);
                }
            }
        }
        outages.push(now.duration_since(down).as_secs());
        let mut p = establish_with_fresh_peer(a, now);
        p.run(p.now + Duration::from_secs(10));
        // The router restarts: Cease, Administrative Shutdown.
        p.b.handle_input(p.now, Input::ManualStop("restarting"));
        p.drain();
        (a, now) = (p.a, p.now);
    }
    // Each time the same: 1 s, then 2 and 4 s for the refused dials.
    assert_eq!(outages[1..], [7, 7, 7], "{outages:?}");
}

/// Two speakers, each with a dialled and an accepted session, wired as two
/// TCP connections: `conns[0]` is the one A dialled (A's outgoing to B's
/// incoming), `conns[1]` the one B dialled. Each speaker resolves
/// collisions on its own, as a caller of [`collision`] does.
struct Speakers {
    now: Instant,
    a: [Session; 2],
    b: [Session; 2],
    events: Vec<(&'static str, Event)>,
}

impl Speakers {
    fn new(id_a: u8, id_b: u8) -> Self {
        let (ca, cb) = (
            config(65001, Some(65000), id_a, 90),
            config(65000, Some(65001), id_b, 90),
        );
        Self {
            now: Instant::now(),
            a: [
                Session::new(ca.clone()).pausing_at_open(),
                Session::accept(ca).pausing_at_open(),
            ],
            b: [
                Session::new(cb.clone()).pausing_at_open(),
                Session::accept(cb).pausing_at_open(),
            ],
            events: Vec::new(),
        }
    }

    /// The two ends of connection `i`: (dialler's outgoing, acceptor's
    /// incoming).
    fn ends(&mut self, i: usize) -> (&mut Session, &mut Session) {
        match i {
            0 => (&mut self.a[0], &mut self.b[1]),
            _ => (&mut self.b[0], &mut self.a[1]),
        }
    }

    /// Connection `i` comes up on both ends.
    fn connect(&mut self, i: usize) {
        let now = self.now;
        let (out, inc) = self.ends(i);
        out.handle_input(now, Input::TcpConnectionConfirmed);
        inc.handle_input(now, Input::TcpConnectionConfirmed);
    }

    /// Moves bytes and events, resolving collisions, until nothing moves.
    fn drain(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                let now = self.now;
                let (out, inc) = self.ends(i);
                let (mut to_inc, mut to_out) = (Vec::new(), Vec::new());
                out.poll_transmit(&mut to_inc);
                inc.poll_transmit(&mut to_out);
                moved |= !to_inc.is_empty() || !to_out.is_empty();
                inc.handle_input(now, Input::Received(&to_inc));
                out.handle_input(now, Input::Received(&to_out));
            }
            for (who, [out, inc]) in [("a", &mut self.a), ("b", &mut self.b)] {
                if let Some(side) = collision(out, inc) {
                    let loser = match side {
                        Side::Outgoing => &mut *out,
                        Side::Incoming => &mut *inc,
                    };
                    loser.handle_input(self.now, Input::OpenCollisionDump);
                    moved = true;
                }
                for s in [&mut *out, &mut *inc] {
                    if s.is_paused() {
                        s.handle_input(self.now, Input::Received(&[]));
                        moved = true;
                    }
                }
                for (end, s) in [("out", &mut *out), ("in", &mut *inc)] {
                    while let Some(e) = s.poll_event() {
                        let name = match (who, end) {
                            ("a", "out") => "a.out",
                            ("a", _) => "a.in",
                            (_, "out") => "b.out",
                            _ => "b.in",
                        };
                        self.events.push((name, e));
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn states(&self) -> [State; 4] {
        [
            self.a[0].state(),
            self.b[1].state(),
            self.b[0].state(),
            self.a[1].state(),
        ]
    }
}

/// Both speakers dial each other at once (RFC 4271 §6.8): each one alone
/// closes the same connection, the one dialled by the speaker with the
/// lower BGP identifier, with a Cease (Connection Collision Resolution);
/// the other connection becomes the session.
#[test]
fn when_both_dial_the_connection_of_the_higher_identifier_stays() {
    use State::{Established, Idle};
    // Equal identifiers (eBGP): the higher AS, A's 65001, keeps its dial.
    for (id_a, id_b, survivor) in [(1, 2, 1), (2, 1, 0), (1, 1, 0)] {
        let mut s = Speakers::new(id_a, id_b);
        s.a[0].handle_input(s.now, Input::ManualStart);
        s.b[0].handle_input(s.now, Input::ManualStart);
        s.connect(0);
        s.connect(1);
        s.drain();
        let want = match survivor {
            0 => [Established, Established, Idle, Idle],
            _ => [Idle, Idle, Established, Established],
        };
        assert_eq!(s.states(), want, "ids {id_a} and {id_b}");
        let cease = Event::Down(Down::Notified(NotificationCode::CONNECTION_COLLISION_RESOLUTION));
        assert!(s.events.iter().any(|(_, e)| *e == cease), "{:?}", s.events);
        // The loser does not dial again by itself while the winner is up.
        let until = s.now + Duration::from_secs(600);
        while let Some(t) = [&s.a[0], &s.b[0]].iter().filter_map(|x| x.poll_timeout()).min() {
            if t > until {
                break;
            }
            s.now = t;
            for x in s.a.iter_mut().chain(s.b.iter_mut()) {
                x.handle_timeout(t);
            }
            s.drain();
        }
        assert_eq!(s.states(), want, "still, after 10 min of keepalives");
        let dials = s.events.iter().filter(|(_, e)| *e == Event::Connect).count();
        assert_eq!(dials, 2, "only the first dial of each: {:?}", s.events);
    }
}

/// A connection the peer opens while a session is established is closed;
/// the session stays. A dialled session that lost to an accepted one
/// starts again when told to, once the accepted one is gone, and the
/// accepted one never dials.
#[test]
fn an_established_session_wins_and_the_loser_starts_again_when_told() {
    let mut s = Speakers::new(1, 2);
    s.a[0].handle_input(s.now, Input::ManualStart);
    s.connect(0);
    s.drain();
    assert_eq!(s.a[0].state(), State::Established);
    // B dials too: its connection is closed by A.
    s.b[0].handle_input(s.now, Input::ManualStart);
    s.connect(1);
    s.drain();
    assert_eq!(
        s.states(),
        [State::Established, State::Established, State::Idle, State::Idle]
    );
    // The other way round: B dialled and is established; A's dial,
    // started later, is abandoned at once.
    let mut s = Speakers::new(1, 2);
    s.b[0].handle_input(s.now, Input::ManualStart);
    s.connect(1);
    s.drain();
    assert_eq!(s.a[1].state(), State::Established);
    s.a[0].handle_input(s.now, Input::ManualStart);
    s.drain();
    assert_eq!(
        s.a[0].state(),
        State::Idle,
        "A's dial abandoned: A is already established with B"
    );
    assert_eq!(s.a[1].state(), State::Established);
    // B stops: A's accepted session ends and does not dial; A's dialling
    // session is started again by its caller.
    s.b[0].handle_input(s.now, Input::ManualStop("restart"));
    s.drain();
    assert_eq!(s.a[1].state(), State::Idle);
    assert!(
        s.a[1].poll_timeout().is_none(),
        "an accepted session does not start again by itself"
    );
    s.a[1].handle_input(s.now, Input::ManualStart);
    assert_eq!(s.a[1].state(), State::Idle, "nor when told to");
    s.a[0].handle_input(s.now, Input::ManualStart);
    assert_eq!(s.a[0].state(), State::Connect);
}

/// The seconds between the first `dials` dials of `s`, every one refused.
fn dial_gaps(mut s: Session, dials: usize) -> Vec<f64> {
    let start = Instant::now();
    let mut now = start;
    let mut at = Vec::new();
    s.handle_input(now, Input::ManualStart);
    while at.len() < dials {
        while let Some(e) = s.poll_event() {
            if e == Event::Connect {
                at.push(now.duration_since(start).as_secs_f64());
                s.handle_input(now, Input::TcpConnectionFails);
            }
        }
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
    }
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

/// With a seed, the waits between dials and between KEEPALIVEs are
/// jittered (RFC 4271 §10): each between 0.75 and 1 times the exact one,
/// not all equal, and different for another seed, so that speakers
/// started together drift apart.
#[test]
fn jitter_spreads_the_dials_and_keepalives_of_speakers_started_together() {
    let mut c = config(65001, Some(65000), 1, 90);
    c.connect_retry = Duration::from_secs(120);
    let exact = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0];
    let gaps = |seed: u64| dial_gaps(Session::new(c.clone()).with_jitter(seed), 10);
    let (a, b) = (gaps(1), gaps(2));
    for (gap, exact) in a.iter().chain(&b).zip(exact.iter().cycle()) {
        assert!(
            *gap >= exact * 0.75 - 1e-9 && *gap <= *exact,
            "{gap} for {exact}: {a:?}"
        );
    }
    assert_ne!(a, b);
    assert!(a.iter().zip(exact).any(|(g, e)| (g - e).abs() > 1e-3), "{a:?}");
    // KEEPALIVEs: hold 90, every 30 s at most, 22.5 s at least.
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, None, 2, 90));
    p.a = Session::new(config(65001, Some(65000), 1, 90)).with_jitter(7);
    p.connect();
    assert_eq!(p.a.state(), State::Established);
    // `a` alone from here, the peer's KEEPALIVEs fed to it by hand.
    let (mut a, mut last) = (p.a, p.now);
    let mut gaps = Vec::new();
    let mut peer_keepalive = Vec::new();
    lb_bgp::write_keepalive(&mut peer_keepalive);
    for _ in 0..20 {
        let next = a.poll_timeout().unwrap();
        a.handle_timeout(next);
        let mut out = Vec::new();
        if a.poll_transmit(&mut out) {
            gaps.push(next.duration_since(last).as_secs_f64());
            last = next;
            a.handle_input(next, Input::Received(&peer_keepalive));
        }
    }
    assert_eq!(a.state(), State::Established);
    assert!(gaps.len() >= 10, "{gaps:?}");
    assert!(gaps.iter().all(|g| (22.5 - 1e-9..=30.0).contains(g)), "{gaps:?}");
    assert!(gaps.iter().any(|g| (g - 30.0).abs() > 1e-3), "{gaps:?}");
}

/// A stop for a changed configuration tells the peer Administrative Reset
/// (RFC 4486: the session comes back), with the text.
#[test]
fn a_reset_says_administrative_reset() {
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, None, 2, 90));
    p.connect();
    p.a.handle_input(p.now, Input::ManualReset("BGPPeer changed"));
    p.drain();
    assert_eq!(p.downs('a'), vec![Down::Stopped]);
    assert_eq!(
        p.downs('b'),
        vec![Down::PeerNotified(
            NotificationCode::ADMINISTRATIVE_RESET,
            Some("BGPPeer changed".into())
        )]
    );
}

/// The peer's OPEN and KEEPALIVE read together on one connection while the
/// other is in OpenConfirm: the session stops after the OPEN, so the
/// caller compares identifiers as the peer does, instead of the session
/// establishing first and winning by the "established stays" rule while
/// the peer closes it by the identifiers.
#[test]
fn an_open_and_keepalive_read_together_still_meet_the_identifier_rule() {
    let mut s = Speakers::new(1, 2);
    s.a[0].handle_input(s.now, Input::ManualStart);
    s.b[0].handle_input(s.now, Input::ManualStart);
    s.connect(0);
    s.connect(1);
    let now = s.now;
    let mut bytes = Vec::new();
    // B's dial reaches A's accepted session: OpenConfirm there.
    s.b[0].poll_transmit(&mut bytes);
    s.a[1].handle_input(now, Input::Received(&bytes));
    assert_eq!(s.a[1].state(), State::OpenConfirm);
    // A's dial: B's side answers the OPEN, and B's OPEN and KEEPALIVE
    // reach A in one read.
    bytes.clear();
    s.a[0].poll_transmit(&mut bytes);
    s.b[1].handle_input(now, Input::Received(&bytes));
    bytes.clear();
    s.b[1].poll_transmit(&mut bytes);
    let mut plain = Session::new(config(65001, Some(65000), 1, 90));
    plain.handle_input(now, Input::ManualStart);
    plain.handle_input(now, Input::TcpConnectionConfirmed);
    plain.handle_input(now, Input::Received(&bytes));
    assert_eq!(plain.state(), State::Established, "without the pause, both at once");
    s.a[0].handle_input(now, Input::Received(&bytes));
    assert_eq!(s.a[0].state(), State::OpenConfirm);
    assert!(s.a[0].is_paused());
    assert_eq!(
        collision(&s.a[0], &s.a[1]),
        Some(Side::Outgoing),
        "A's identifier is the lower"
    );
}

/// The peer resolved the collision first: its Cease 6/7 on this side's dial
/// schedules a redial, which the caller cancels while the other
/// connection carries the session; started again when told.
#[test]
fn a_dial_the_peer_closed_for_a_collision_waits_while_the_other_connection_lives() {
    let mut p = Pair::new(config(65001, Some(65000), 1, 90), config(65000, None, 2, 90));
    p.a.handle_input(p.now, Input::ManualStart);
    p.b.handle_input(p.now, Input::ManualStart);
    p.drain();
    p.a.handle_input(p.now, Input::TcpConnectionConfirmed);
    p.b.handle_input(p.now, Input::TcpConnectionConfirmed);
    p.b.handle_input(p.now, Input::OpenCollisionDump);
    p.drain();
    let cease = Down::PeerNotified(NotificationCode::CONNECTION_COLLISION_RESOLUTION, None);
    assert!(p.downs('a').contains(&cease), "{:?}", p.events);
    assert!(p.a.poll_timeout().is_some(), "a redial is scheduled");
    p.a.handle_input(p.now, Input::OpenCollisionDump);
    assert_eq!(p.a.poll_timeout(), None, "and cancelled");
    p.a.handle_input(p.now, Input::ManualStart);
    assert_eq!(p.a.state(), State::Connect);
}

/// A ConnectRetry time shorter than the backoff caps the wait, and the
/// wait is still jittered.
#[test]
fn a_short_connect_retry_is_jittered_too() {
    let mut c = config(65001, Some(65000), 1, 90);
    c.connect_retry = Duration::from_secs(10);
    let gaps: Vec<f64> = dial_gaps(Session::new(c).with_jitter(3), 12)
        .into_iter()
        .skip(5)
        .collect();
    assert!(gaps.iter().all(|g| (7.5 - 1e-9..=10.0).contains(g)), "{gaps:?}");
    assert!(gaps.iter().any(|g| (g - 10.0).abs() > 1e-3), "{gaps:?}");
}
