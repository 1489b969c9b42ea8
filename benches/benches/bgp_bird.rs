//! End to end, as the BGP issue asks: lb-bgp dials BIRD on loopback and
//! announces 100,000 /32 (the Adj-RIB-Out's whole table, packed UPDATEs,
//! then End-of-RIB); the time from the first byte written until
//! `birdc show route count` reports all 100,000, over 5 rounds (a new
//! session each, BIRD flushed between), median and range.
//!
//! `cargo bench -p lb-benches --bench bgp_bird` (needs Debian's bird2;
//! without it, says so and exits).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use lb_bgp::session::{Config, Input, PeerAs};
use lb_bgp::{AdjRibOut, Announce, IPV4_UNICAST, MAX_LEN, Origin, Session, State};

const ROUTES: u32 = 100_000;
const ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 1);
const PORT: u16 = 1877;

fn birdc(ctl: &str, cmd: &str) -> String {
    let mut args = vec!["-s", ctl];
    args.extend(cmd.split(' '));
    let out = Command::new("birdc").args(&args).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The routes BIRD holds, from `show route count`.
fn count(ctl: &str) -> u32 {
    let text = birdc(ctl, "show route count");
    text.lines()
        .find_map(|l| l.split(" of ").next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// Moves bytes between `session` and `tcp` until `done` (10 s at most).
fn drive(session: &mut Session, tcp: &mut TcpStream, done: impl Fn(&Session) -> bool) {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while !done(session) && start.elapsed() < Duration::from_secs(10) {
        let mut out = Vec::new();
        if session.poll_transmit(&mut out) {
            let _ = tcp.write_all(&out);
        }
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => session.handle_input(std::time::Instant::now(), Input::Received(&buf[..n])),
            Err(_) => session.handle_timeout(std::time::Instant::now()),
        }
        while session.poll_event().is_some() {}
    }
}

fn main() {
    let found = Command::new("sh")
        .args(["-c", "command -v bird && command -v birdc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: needs bird and birdc (Debian's bird2)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lb-bench-bird-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let conf = dir.join("bird.conf");
    let ctl = dir.join("bird.ctl").to_string_lossy().into_owned();
    let _ = std::fs::write(
        &conf,
        format!(
            "router id {ADDR};\nprotocol device {{ }}\nprotocol bgp lb {{\n  local {ADDR} port {PORT} as 65000;\n  \
             neighbor 127.0.0.1 as 65001;\n  passive on;\n  strict bind on;\n  multihop;\n  error wait time 1, 2;\n  \
             ipv4 {{ import all; export none; }};\n}}\n"
        ),
    );
    let Ok(mut bird) = Command::new("bird")
        .arg("-f")
        .arg("-c")
        .arg(&conf)
        .args(["-s", &ctl])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("bird did not start");
        return;
    };
    let up = Instant::now();
    while !birdc(&ctl, "show status").contains("Daemon is up") && up.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let announce = Announce {
        origin: Origin::Igp,
        as_path: vec![65001],
        next_hop: Ipv4Addr::new(192, 0, 2, 10).into(),
        local_pref: None,
        communities: vec![(65001 << 16) | 100],
        large_communities: vec![],
    };
    let desired: BTreeMap<IpNet, Announce> = (0..ROUTES)
        .filter_map(|i| Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).ok())
        .map(|p| (IpNet::V4(p), announce.clone()))
        .collect();
    let mut times = Vec::new();
    for round in 0..5 {
        let mut session = Session::new(Config {
            local_as: 65001,
            peer_as: PeerAs::Is(65000),
            bgp_id: Ipv4Addr::new(127, 0, 0, 1),
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            families: vec![IPV4_UNICAST],
            keepalive_time: None,
            graceful_restart: None,
        });
        session.handle_input(std::time::Instant::now(), Input::ManualStart);
        let Ok(mut tcp) = TcpStream::connect((ADDR, PORT)) else {
            eprintln!("round {round}: cannot connect to BIRD");
            std::thread::sleep(Duration::from_secs(2));
            continue;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(10)));
        let _ = tcp.set_nodelay(true);
        session.handle_input(std::time::Instant::now(), Input::TcpConnectionConfirmed);
        drive(&mut session, &mut tcp, |s| s.state() == State::Established);
        if session.state() != State::Established {
            eprintln!("round {round}: no session");
            continue;
        }
        let mut rib = AdjRibOut::with_families(&[IPV4_UNICAST]);
        let start = Instant::now();
        let mut update = Vec::new();
        let messages = rib.full(&desired, MAX_LEN, &mut update);
        session.send(&update);
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        let _ = tcp.write_all(&out);
        while count(&ctl) < ROUTES && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = start.elapsed();
        println!(
            "round {round}: {ROUTES} /32 in {messages} UPDATEs ({} bytes), all in BIRD after {:.0} ms",
            update.len(),
            took.as_secs_f64() * 1e3
        );
        times.push(took);
        // Stop: BIRD flushes the routes before the next round.
        session.handle_input(std::time::Instant::now(), Input::ManualStop("bench round done"));
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        let _ = tcp.write_all(&out);
        drop(tcp);
        let flush = Instant::now();
        while count(&ctl) > 0 && flush.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(2500));
    }
    let _ = bird.kill();
    let _ = bird.wait();
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        let median = times[times.len() / 2];
        println!(
            "bgp_bird: {ROUTES} /32 visible in BIRD: median {:.0} ms (range {:.0}–{:.0} ms over {} rounds; target < 1000 ms)",
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            times.len()
        );
    }
}
