//! lb-bgp against a real peer: BIRD 2, started by this test on a loopback
//! address of its own. The session is driven over a plain TCP connection
//! (the test is the I/O; the library has none): it reaches Established,
//! announces three routes with communities in one UPDATE, which BIRD
//! shows with every attribute, and stops with a shutdown communication,
//! which BIRD logs.
//!
//! Needs `bird` and `birdc` (Debian's bird2); without them it is skipped
//! with a notice, except under CI (`CI=true`).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use lb_bgp::session::{Config, Event, Input};
use lb_bgp::{Announce, Origin, Session, State};

struct Bird {
    child: Child,
    ctl: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bird {
    fn birdc(&self, cmd: &str) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.ctl)
            .args(cmd.split(' '))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn start_bird(addr: Ipv4Addr, port: u16) -> Option<Bird> {
    let found = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(found("bird") && found("birdc")) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have BIRD (bird2)"
        );
        eprintln!("skipped: needs bird and birdc (Debian's bird2)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("lb-bgp-bird-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bird.conf");
    std::fs::write(
        &conf,
        format!(
            "log stderr all;\nrouter id {addr};\nprotocol device {{ }}\nprotocol bgp lb {{\n  local {addr} port {port} as 65000;\n  \
             neighbor 127.0.0.1 as 65001;\n  passive on;\n  strict bind on;\n  multihop;\n  hold time 90;\n  error wait time 1, 2;\n  \
             ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ),
    )
    .unwrap();
    let ctl = dir.join("bird.ctl");
    let child = Command::new("bird")
        .arg("-f")
        .arg("-c")
        .arg(&conf)
        .arg("-s")
        .arg(&ctl)
        .arg("-P")
        .arg(dir.join("bird.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("bird.log")).unwrap())
        .spawn()
        .unwrap();
    let bird = Bird { child, ctl, dir };
    let start = Instant::now();
    while !bird.birdc("show status").contains("Daemon is up") {
        assert!(start.elapsed() < Duration::from_secs(10), "BIRD did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(bird)
}

/// Drives `session` over `tcp` until `done` says so (or 10 s pass).
fn drive(
    session: &mut Session,
    tcp: &mut TcpStream,
    events: &mut Vec<Event>,
    done: impl Fn(&Session, &[Event]) -> bool,
) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    while !done(session, events) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "state {:?}, events {events:?}",
            session.state()
        );
        out.clear();
        if session.poll_transmit(&mut out) {
            tcp.write_all(&out).unwrap();
        }
        while let Some(e) = session.poll_event() {
            events.push(e);
        }
        match tcp.read(&mut buf) {
            Ok(0) => session.handle_input(Instant::now(), Input::TcpConnectionFails),
            Ok(n) => session.handle_input(Instant::now(), Input::Received(&buf[..n])),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => session.handle_input(Instant::now(), Input::TcpConnectionFails),
        }
        session.handle_timeout(Instant::now());
    }
    // What the last input made: sent and seen before returning.
    out.clear();
    if session.poll_transmit(&mut out) {
        tcp.write_all(&out).unwrap();
    }
    while let Some(e) = session.poll_event() {
        events.push(e);
    }
}

#[test]
fn bird_learns_what_lb_bgp_announces_and_hears_why_it_stops() {
    let addr = Ipv4Addr::new(127, 0, 3, 1 + (std::process::id() % 200) as u8);
    let port = 1179;
    let Some(bird) = start_bird(addr, port) else { return };
    let mut session = Session::new(Config {
        local_as: 65001,
        peer_as: Some(65000),
        bgp_id: Ipv4Addr::new(127, 0, 0, 1),
        hold_time: 90,
        connect_retry: Duration::from_secs(5),
        families: vec![(1, 1), (2, 1)],
    });
    let mut events = Vec::new();
    session.handle_input(Instant::now(), Input::ManualStart);
    assert_eq!(session.poll_event(), Some(Event::Connect));
    let mut tcp = TcpStream::connect((addr, port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    session.handle_input(Instant::now(), Input::TcpConnectionConfirmed);
    drive(&mut session, &mut tcp, &mut events, |s, _| {
        s.state() == State::Established
    });
    let established = events.iter().find_map(|e| match e {
        Event::Established(p) => Some(p.clone()),
        _ => None,
    });
    let peer = established.unwrap();
    assert_eq!((peer.asn, peer.bgp_id, peer.hold_time), (65000, addr, 90));

    // Three routes, one UPDATE, then End-of-RIB.
    let routes: Vec<Ipv4Net> = ["198.51.100.10/32", "198.51.100.11/32", "203.0.113.0/24"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut update = Vec::new();
    let n = Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(127, 0, 0, 1),
        local_pref: None,
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![[65001, 7, 9]],
    }
    .write(&routes, lb_bgp::MAX_LEN, &mut update);
    assert_eq!(n, 1);
    assert!(session.send(&update));
    assert!(
        session.send(
            &[0xff; 16]
                .iter()
                .copied()
                .chain([0, 23, 2, 0, 0, 0, 0])
                .collect::<Vec<u8>>()
        )
    );
    let start = Instant::now();
    let mut shown = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        drive(&mut session, &mut tcp, &mut events, |_, _| true);
        let mut out = Vec::new();
        if session.poll_transmit(&mut out) {
            tcp.write_all(&out).unwrap();
        }
        shown = bird.birdc("show route all");
        if routes.iter().all(|r| shown.contains(&r.to_string())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in &routes {
        assert!(shown.contains(&r.to_string()), "{r} not in BIRD's table:\n{shown}");
    }
    assert!(shown.contains("(65001,100)"), "{shown}");
    assert!(shown.contains("(65001, 7, 9)"), "{shown}");
    assert!(shown.contains("BGP.as_path: 65001"), "{shown}");

    // A stop with a shutdown communication: BIRD logs the text.
    session.handle_input(Instant::now(), Input::ManualStop("lb-bgp interop done"));
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    tcp.write_all(&out).unwrap();
    drop(tcp);
    let start = Instant::now();
    loop {
        let status = bird.birdc("show protocols all lb");
        if status.contains("lb-bgp interop done") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
