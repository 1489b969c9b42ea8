//! lb-bgp against real peers: BIRD 2, GoBGP 3 and FRR 8, each started by
//! its test on a loopback address of its own. The session is driven over a
//! plain TCP connection (the test is the I/O; the library has none): it
//! reaches Established, announces three routes with communities in one
//! UPDATE, which the peer's own CLI shows, and stops with a shutdown
//! communication (which BIRD shows).
//!
//! Needs Debian's bird2, gobgpd and frr; without them a test is skipped
//! with a notice, except under CI (`CI=true`).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use lb_bgp::session::{Config, Event, Input, PeerAs};
use lb_bgp::{Announce, Origin, Session, State};

/// A peer daemon this test started: its process, its directory, and how
/// to ask its CLI something.
struct Peer {
    child: Child,
    dir: std::path::PathBuf,
    cli: Box<dyn Fn(&str) -> String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn found(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the peer's tools are here; under CI they must be.
fn available(tools: &[&str]) -> bool {
    if tools.iter().all(|t| found(t)) {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have {tools:?}");
    eprintln!("skipped: needs {tools:?}");
    false
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-bgp-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `ready` holds (10 s at most).
fn wait(what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_bird(addr: Ipv4Addr, port: u16) -> Option<Peer> {
    if !available(&["bird", "birdc"]) {
        return None;
    }
    let dir = scratch("bird");
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
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ctl = ctl.to_string_lossy().into_owned();
    let cli = Box::new(move |cmd: &str| {
        let mut args = vec!["-s", ctl.as_str()];
        args.extend(cmd.split(' '));
        run("birdc", &args)
    });
    let peer = Peer { child, dir, cli };
    wait("BIRD did not start", || {
        (peer.cli)("show status").contains("Daemon is up")
    });
    Some(peer)
}

fn start_gobgp(addr: Ipv4Addr, port: u16, api: u16) -> Option<Peer> {
    if !available(&["gobgpd", "gobgp"]) {
        return None;
    }
    let dir = scratch("gobgp");
    let conf = dir.join("gobgpd.toml");
    std::fs::write(
        &conf,
        format!(
            "[global.config]\n  as = 65000\n  router-id = \"{addr}\"\n  port = {port}\n  local-address-list = [\"{addr}\"]\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"127.0.0.1\"\n    peer-as = 65001\n\
             [neighbors.transport.config]\n    passive-mode = true\n    local-address = \"{addr}\"\n\
             [neighbors.timers.config]\n    hold-time = 90\n\
             [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv4-unicast\"\n\
             [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv6-unicast\"\n"
        ),
    )
    .unwrap();
    let child = Command::new("gobgpd")
        .arg("-f")
        .arg(&conf)
        .args([
            "--api-hosts",
            &format!("127.0.0.1:{api}"),
            "--pprof-disable",
            "-p",
            "-l",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = api.to_string();
    let cli = Box::new(move |cmd: &str| {
        let mut args = vec!["-u", "127.0.0.1", "-p", api.as_str()];
        args.extend(cmd.split(' '));
        run("gobgp", &args)
    });
    let peer = Peer { child, dir, cli };
    wait("GoBGP did not start", || (peer.cli)("neighbor").contains("127.0.0.1"));
    Some(peer)
}

fn start_frr(addr: Ipv4Addr, port: u16) -> Option<Peer> {
    if !available(&["/usr/lib/frr/bgpd", "vtysh"]) {
        return None;
    }
    let dir = scratch("frr");
    let conf = dir.join("bgpd.conf");
    std::fs::write(
        &conf,
        format!(
            "frr defaults traditional\nhostname frr-lb\nlog stdout informational\nrouter bgp 65000\n bgp router-id {addr}\n\
             no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n neighbor 127.0.0.1 remote-as 65001\n\
             neighbor 127.0.0.1 passive\n neighbor 127.0.0.1 ebgp-multihop 2\n address-family ipv4 unicast\n\
             neighbor 127.0.0.1 activate\n exit-address-family\n address-family ipv6 unicast\n\
             neighbor 127.0.0.1 activate\n exit-address-family\n"
        ),
    )
    .unwrap();
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let child = Command::new("/usr/lib/frr/bgpd")
        .arg("-f")
        .arg(&conf)
        .args(["-p", &port.to_string(), "-l", &addr.to_string(), "-Z", "-S", "-n"])
        .arg("-i")
        .arg(run_dir.join("bgpd.pid"))
        .arg("--vty_socket")
        .arg(&run_dir)
        .args(["-P", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let vty = run_dir.to_string_lossy().into_owned();
    let cli = Box::new(move |cmd: &str| run("vtysh", &["--vty_socket", vty.as_str(), "-d", "bgpd", "-c", cmd]));
    let peer = Peer { child, dir, cli };
    wait("FRR did not start", || (peer.cli)("show bgp summary").contains("65000"));
    Some(peer)
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

/// Establishes with `peer` at `addr:port`, announces three IPv4 routes and
/// an IPv6 one, waits until its CLI's `table` shows the first with
/// `attributes` (and `table6` the last), and stops, until
/// its CLI's answer to `after_stop` passes `stopped`.
fn announce_to(
    peer: &Peer,
    addr: Ipv4Addr,
    port: u16,
    (table, table6): (&str, Option<&str>),
    attributes: &[&str],
    after_stop: &str,
    stopped: &dyn Fn(&str) -> bool,
) {
    let mut session = Session::new(Config {
        local_as: 65001,
        peer_as: PeerAs::Is(65000),
        bgp_id: Ipv4Addr::new(127, 0, 0, 1),
        hold_time: 90,
        connect_retry: Duration::from_secs(5),
        families: vec![(1, 1), (2, 1)],
        keepalive_time: None,
        graceful_restart: None,
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
    let them = established.unwrap();
    // 90 proposed here; the peers propose 90 or 180.
    assert_eq!((them.asn, them.bgp_id, them.hold_time), (65000, addr, 90));

    // Three routes, one UPDATE, then End-of-RIB.
    let routes: Vec<Ipv4Net> = ["198.51.100.10/32", "198.51.100.11/32", "203.0.113.0/24"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let mut update = Vec::new();
    let n = Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(192, 0, 2, 10).into(),
        local_pref: None,
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![[65001, 7, 9]],
    }
    .write(&routes, lb_bgp::MAX_LEN, &mut update);
    assert_eq!(n, 1);
    // An IPv6 /128 over the same (IPv4) session: MP_REACH_NLRI with the
    // IPv4-mapped next hop, as FRR and GoBGP send it; then both
    // End-of-RIBs.
    let v6: Ipv6Net = "2001:db8:100::10/128".parse().unwrap();
    Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(192, 0, 2, 10).into(),
        local_pref: None,
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![],
    }
    .write_v6(&[v6], lb_bgp::MAX_LEN, &mut update);
    lb_bgp::update::write_end_of_rib_v6(&mut update);
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
        shown = (peer.cli)(table);
        if routes.iter().all(|r| shown.contains(&r.to_string())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in &routes {
        assert!(shown.contains(&r.to_string()), "{r} not in the peer's table:\n{shown}");
    }
    for a in attributes {
        assert!(shown.contains(a), "no {a:?} in:\n{shown}");
    }
    if let Some(table6) = table6 {
        let start = Instant::now();
        let mut shown6 = String::new();
        while start.elapsed() < Duration::from_secs(10) && !shown6.contains("2001:db8:100::10/128") {
            drive(&mut session, &mut tcp, &mut events, |_, _| true);
            shown6 = (peer.cli)(table6);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            shown6.contains("2001:db8:100::10/128"),
            "the IPv6 route is not in the peer's table:\n{shown6}"
        );
    }

    // A stop with a shutdown communication: BIRD logs the text.
    session.handle_input(Instant::now(), Input::ManualStop("lb-bgp interop done"));
    let mut out = Vec::new();
    session.poll_transmit(&mut out);
    tcp.write_all(&out).unwrap();
    drop(tcp);
    let start = Instant::now();
    loop {
        let status = (peer.cli)(after_stop);
        if stopped(&status) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn local(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, n, 1 + (std::process::id() % 200) as u8)
}

#[test]
fn bird_learns_what_lb_bgp_announces_and_hears_why_it_stops() {
    let addr = local(3);
    let Some(bird) = start_bird(addr, 1179) else { return };
    announce_to(
        &bird,
        addr,
        1179,
        // BIRD takes no IPv4-mapped next hop on an IPv4 session; it learns
        // IPv6 routes over IPv6 sessions (bins/tests/speaker_bgp.rs).
        ("show route all", None),
        &["(65001,100)", "(65001, 7, 9)", "BGP.as_path: 65001", "BGP.origin: IGP"],
        "show protocols all lb",
        // The shutdown communication, as BIRD heard it.
        &|s| s.contains("lb-bgp interop done"),
    );
}

#[test]
fn gobgp_learns_what_lb_bgp_announces() {
    let addr = local(4);
    let api = 50_000 + (std::process::id() % 10_000) as u16;
    let Some(gobgp) = start_gobgp(addr, 1790, api) else {
        return;
    };
    announce_to(
        &gobgp,
        addr,
        1790,
        ("global rib -a ipv4", Some("global rib -a ipv6")),
        &["65001", "192.0.2.10"],
        "neighbor",
        &|s| s.contains("127.0.0.1") && !s.contains("Establ"),
    );
}

#[test]
fn frr_learns_what_lb_bgp_announces() {
    let addr = local(5);
    let Some(frr) = start_frr(addr, 1181) else { return };
    announce_to(
        &frr,
        addr,
        1181,
        ("show bgp ipv4 unicast", Some("show bgp ipv6 unicast")),
        &["65001", "192.0.2.10"],
        "show bgp neighbors 127.0.0.1",
        &|s| s.contains("BGP state = ") && !s.contains("BGP state = Established"),
    );
}
