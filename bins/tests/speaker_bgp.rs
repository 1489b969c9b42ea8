//! lb-speaker's BGP mode end to end in file mode, against BIRD started by
//! the test on loopback (127.0.x.y and ::1): the addresses lb-controller
//! wrote in its state file are learned by BIRD over IPv4 (eBGP) and IPv6
//! (iBGP, MP_REACH_NLRI) with their communities, large communities and
//! local preference; withdrawn when the Service or its last endpoint goes,
//! without the session flapping; a broken edit keeps the last good peer;
//! TCP MD5 signs the session; a restarted peer gets the whole table again;
//! a frozen peer is detected by the hold timer; a peer that comes up late
//! is found within seconds (default timers); SIGTERM withdraws and closes
//! with a Cease that says why, or, with graceful restart, leaves the routes
//! with the peer until the speaker is back. With `--bgp-listen`, a peer
//! that dials the speaker gets the same session (TCP MD5 too), and when
//! both dial, one session stays.
//!
//! Needs Debian's bird2; without it the tests are skipped with a notice,
//! except under CI (`CI=true`), where that is a failure.

#[path = "support/bird.rs"]
mod bird;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bird::{Bird, Running, bird_available, eventually, local};

/// The manifests: node-a (this speaker), a dual-stack pool, a Community
/// alias, one advertisement, the two peers, and the Service `web` with
/// its endpoint (`ready`) unless `service` is false.
fn manifests(dir: &Path, bird: Ipv4Addr, port: u16, peer_extra: &str, service: bool, ready: bool) -> String {
    let mut all = format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: node-a}}\nstatus: {{addresses: [{{type: InternalIP, address: 127.0.0.1}}]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pub, namespace: metallb-system}}\n\
         spec: {{addresses: [198.51.100.0/24, \"2001:db8:100::/64\"]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {{name: communities, namespace: metallb-system}}\n\
         spec: {{communities: [{{name: no-export, value: \"65535:65281\"}}]}}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: ad, namespace: metallb-system}}\n\
         spec: {{communities: [\"65001:100\", \"large:65001:7:9\", no-export], localPref: 150}}\n---\n\
         apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: bird4, namespace: metallb-system}}\n\
         spec: {{myASN: 65001, peerASN: 65000, peerAddress: {bird}, peerPort: {port}, ebgpMultiHop: true{peer_extra}}}\n---\n\
         apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: bird6, namespace: metallb-system}}\n\
         spec: {{myASN: 65001, peerASN: 65001, peerAddress: \"::1\", peerPort: {}}}\n",
        port + 1
    );
    if service {
        all += &format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default, annotations: {{metallb.io/loadBalancerIPs: \"198.51.100.10,2001:db8:100::10\"}}}}\n\
             spec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [10.0.0.5], nodeName: node-a, conditions: {{ready: {ready}}}}}]\n"
        );
    }
    std::fs::write(dir.join("cluster.yaml"), &all).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb-controller"))
        .args(["--manifests", dir.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    all
}

/// The speaker on `dir` as node-a, BGP only (no interface answers ARP),
/// with its metrics on `metrics`.
fn speaker(dir: &Path, metrics: u16) -> Running {
    speaker_with(dir, metrics, &[])
}

/// [`speaker`] with more flags.
fn speaker_with(dir: &Path, metrics: u16, flags: &[&str]) -> Running {
    let log = std::fs::File::create(dir.join("speaker.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lb-speaker"))
        .args([
            "--manifests",
            dir.to_str().unwrap(),
            "--node",
            "node-a",
            "--no-memberlist",
        ])
        .args(["--exclude-interface", ".*", "--no-realtime", "--poll-ms", "100"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Running(child)
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("speaker.log")).unwrap_or_default()
}

fn metrics(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "2", &format!("http://127.0.0.1:{port}/metrics")])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn sigterm(p: &Running) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn bird_learns_both_families_and_follows_edits_without_a_flap() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(21), 1790);
    let bird = Bird::start(dir.path(), addr, port, "");
    manifests(dir.path(), addr, port, "", true, true);
    let mut spk = speaker(dir.path(), 9481);
    eventually("both routes learned", || {
        let r = bird.routes();
        r.contains("198.51.100.10/32") && r.contains("2001:db8:100::10/128")
    });
    let routes = bird.routes();
    let (v4, v6) = routes.split_once("Table master6").unwrap();
    // eBGP: our AS in the path, no LOCAL_PREF sent (BIRD shows its
    // default 100); iBGP: an empty path and the advertisement's 150.
    for want in [
        "BGP.as_path: 65001",
        "BGP.local_pref: 100",
        "(65001,100) (65535,65281)",
        "(65001, 7, 9)",
        "BGP.next_hop: 127.0.0.1",
    ] {
        assert!(v4.contains(want), "no {want:?} in\n{v4}");
    }
    for want in [
        "BGP.as_path: \n",
        "BGP.local_pref: 150",
        "(65001,100) (65535,65281)",
        "(65001, 7, 9)",
        "BGP.next_hop: ::1",
    ] {
        assert!(v6.contains(want), "no {want:?} in\n{v6}");
    }
    let m = metrics(9481);
    for want in [
        format!("metallb_bgp_session_up{{peer=\"{addr}:{port}\"}} 1"),
        format!("metallb_bgp_announced_prefixes_total{{peer=\"{addr}:{port}\"}} 1"),
        format!("metallb_bgp_session_up{{peer=\"[::1]:{}\"}} 1", port + 1),
        "metallb_speaker_announced{service=\"default/web\",protocol=\"bgp\",node=\"node-a\",ip=\"198.51.100.10\"} 1"
            .into(),
    ] {
        assert!(m.contains(&want), "no {want:?} in\n{m}");
    }
    // BIRD stamps a session's state again as its channels finish the first
    // feed, a millisecond or so after it is up: the stamp to compare is the
    // one that holds.
    let mut since = (bird.protocol("v4"), bird.protocol("v6"));
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let again = (bird.protocol("v4"), bird.protocol("v6"));
        if again == since {
            break;
        }
        since = again;
    }

    // The endpoint stops being ready: withdrawn.
    manifests(dir.path(), addr, port, "", true, false);
    eventually("withdrawn without a serving endpoint", || {
        !bird.routes().contains("198.51.100.10/32")
    });
    // Ready again, then the Service deleted: back, then withdrawn.
    manifests(dir.path(), addr, port, "", true, true);
    eventually("announced again", || bird.routes().contains("2001:db8:100::10/128"));
    manifests(dir.path(), addr, port, "", false, true);
    eventually("withdrawn with the Service", || {
        let r = bird.routes();
        !r.contains("198.51.100.10/32") && !r.contains("2001:db8:100::10/128")
    });
    // A broken edit of the peer: reported, the last good one stays up.
    manifests(dir.path(), addr, port, ", holdTime: 1s", true, true);
    eventually("the broken peer reported", || log(dir.path()).contains("spec.holdTime"));
    eventually("announced under the last good peer", || {
        bird.routes().contains("198.51.100.10/32")
    });
    // A peer file rewritten in place again and again (truncated, then
    // written, as `cat >` and some editors do), and once broken as YAML:
    // the last good peer stays, nothing is withdrawn.
    let good = std::fs::read(dir.path().join("cluster.yaml")).unwrap();
    for _ in 0..60 {
        let mut f = std::fs::File::create(dir.path().join("cluster.yaml")).unwrap();
        f.write_all(&good[..good.len() / 2]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
        f.write_all(&good[good.len() / 2..]).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(20));
    }
    let broken = String::from_utf8(good.clone())
        .unwrap()
        .replace("ebgpMultiHop: true", "ebgpMultiHop: {");
    std::fs::write(dir.path().join("cluster.yaml"), broken).unwrap();
    eventually("the broken file reported", || log(dir.path()).contains("invalid YAML"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(bird.routes().contains("198.51.100.10/32"));
    std::fs::write(dir.path().join("cluster.yaml"), &good).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // None of it flapped a session.
    assert_eq!((bird.protocol("v4"), bird.protocol("v6")), since, "{}", log(dir.path()));
    assert!(since.0.contains("Established"), "{}", since.0);

    // A valid change of the peer: closed with a Cease, Administrative
    // Reset, that says why; back at once.
    manifests(dir.path(), addr, port, ", holdTime: 30s", true, true);
    eventually("BIRD heard the reset", || {
        bird.cli("show protocols all v4").contains("BGPPeer changed")
    });
    eventually("BIRD logged the reset", || {
        bird.log().contains("Received: Administrative reset")
    });
    eventually("back", || bird.protocol("v4").contains("Established"));
    eventually("and the route", || bird.routes().contains("198.51.100.10/32"));

    // SIGTERM: withdrawn, then a Cease with the reason, then exit 0.
    sigterm(&spk);
    let status = spk.0.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", log(dir.path()));
    eventually("BIRD heard why", || {
        bird.cli("show protocols all v4").contains("lb-speaker shutting down")
    });
    assert!(!bird.routes().contains("198.51.100.10/32"));
}

#[test]
fn tcp_md5_signs_the_session_and_a_wrong_password_never_establishes() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(22), 1792);
    let bird = Bird::start(dir.path(), addr, port, " password \"hunter2\";");
    let secret = |pw: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bgp-auth, namespace: metallb-system}}\ntype: kubernetes.io/basic-auth\nstringData: {{password: {pw}}}\n"
        )
    };
    manifests(dir.path(), addr, port, ", passwordSecret: {name: bgp-auth}", true, true);
    std::fs::write(dir.path().join("secret.yaml"), secret("wrong")).unwrap();
    let _spk = speaker(dir.path(), 9482);
    eventually("the iBGP session (no password) is up", || {
        bird.protocol("v6").contains("Established")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!bird.protocol("v4").contains("Established"), "{}", bird.protocol("v4"));
    // The right password: signed segments, the session comes up.
    std::fs::write(dir.path().join("secret.yaml"), secret("hunter2")).unwrap();
    eventually("established with MD5", || bird.protocol("v4").contains("Established"));
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));
}

#[test]
fn a_restarted_peer_gets_the_table_again_and_a_frozen_one_is_cut_off() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(23), 1794);
    let mut bird = Bird::start(dir.path(), addr, port, "");
    // Hold time 3 s on our side: the smaller proposal wins.
    manifests(dir.path(), addr, port, ", holdTime: 3s", true, true);
    let _spk = speaker(dir.path(), 9483);
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));

    // BIRD killed and started again: reconnects, the whole table again.
    bird.restart();
    eventually("learned again after the peer's restart", || {
        let r = bird.routes();
        r.contains("198.51.100.10/32") && r.contains("2001:db8:100::10/128")
    });
    eventually("session up in the metrics", || {
        metrics(9483).contains(&format!("metallb_bgp_session_up{{peer=\"{addr}:{port}\"}} 1"))
    });

    // Frozen: no KEEPALIVE for 3 s, the hold timer cuts the session.
    let pid = bird.pid().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let frozen = Instant::now();
    eventually("hold timer expired", || {
        metrics(9483).contains(&format!("metallb_bgp_session_up{{peer=\"{addr}:{port}\"}} 0"))
    });
    let took = frozen.elapsed();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(log(dir.path()).contains("NOTIFICATION sent"), "{}", log(dir.path()));
    // Thawed: it comes back by itself.
    eventually("re-established after the thaw", || {
        metrics(9483).contains(&format!("metallb_bgp_session_up{{peer=\"{addr}:{port}\"}} 1"))
    });
    eventually("learned after the thaw", || bird.routes().contains("198.51.100.10/32"));
}

#[test]
fn a_peer_that_comes_up_late_is_found_within_seconds() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(24), 1798);
    // Default timers (connectTime 120 s): refused dials are retried after
    // 1, 2, 4 … s, not after two minutes.
    manifests(dir.path(), addr, port, "", true, true);
    let _spk = speaker(dir.path(), 9484);
    std::thread::sleep(Duration::from_millis(2500));
    let bird = Bird::start(dir.path(), addr, port, "");
    let up = Instant::now();
    eventually("established with the late peer", || {
        bird.protocol("v4").contains("Established")
    });
    assert!(up.elapsed() < Duration::from_secs(6), "{:?}", up.elapsed());
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));
}

#[test]
fn graceful_restart_keeps_the_routes_through_a_speaker_restart() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(25), 1800);
    let bird = Bird::start(dir.path(), addr, port, " graceful restart on;");
    manifests(dir.path(), addr, port, ", enableGracefulRestart: true", true, true);
    let mut spk = speaker(dir.path(), 9485);
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));
    sigterm(&spk);
    assert!(spk.0.wait().unwrap().success());
    eventually("the session is down", || !bird.protocol("v4").contains("Established"));
    // The peer keeps the route while the speaker is away…
    for _ in 0..20 {
        assert!(bird.routes().contains("198.51.100.10/32"), "{}", bird.routes());
        std::thread::sleep(Duration::from_millis(100));
    }
    // … and through its return.
    let _back = speaker(dir.path(), 9485);
    eventually("re-established", || bird.protocol("v4").contains("Established"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(bird.routes().contains("198.51.100.10/32"), "{}", bird.routes());
    // The IPv6 session, without graceful restart, withdrew at SIGTERM as
    // usual and announces again now.
    eventually("IPv6 back", || bird.routes().contains("2001:db8:100::10/128"));
}

/// A peer that floods UPDATEs (a full table sent to a speaker that
/// ignores what it receives) does not starve the speaker: BIRD's session
/// beside it stays up and the metrics keep answering.
#[test]
fn a_flooding_peer_starves_nothing_else() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(26), 1802);
    let bird = Bird::start(dir.path(), addr, port, "");
    // The flooder: accepts the speaker, answers its OPEN, then sends
    // UPDATEs of 800 /32 as fast as the socket takes them for 12 s.
    let listener = std::net::TcpListener::bind((local(27), 1804)).unwrap();
    let flood = std::thread::spawn(move || {
        use std::io::Read as _;
        let Ok((mut s, _)) = listener.accept() else { return 0u64 };
        let mut open = Vec::new();
        lb_bgp::OpenMessage {
            asn: 65002,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(192, 0, 2, 99),
            families: vec![(1, 1)],
            route_refresh: false,
            graceful_restart: None,
        }
        .write(&mut open);
        lb_bgp::write_keepalive(&mut open);
        let _ = s.write_all(&open);
        let mut update = Vec::new();
        let prefixes: Vec<ipnet::Ipv4Net> = (0..800u32)
            .map(|i| ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())
            .collect();
        lb_bgp::Announce {
            origin: lb_bgp::Origin::Igp,
            as_path: vec![65002],
            next_hop: Ipv4Addr::new(192, 0, 2, 99).into(),
            local_pref: None,
            communities: vec![],
            large_communities: vec![],
        }
        .write(&prefixes, lb_bgp::MAX_LEN, &mut update);
        let batch: Vec<u8> = update.repeat(16);
        let _ = s.set_nonblocking(true);
        let start = Instant::now();
        let mut sent = 0u64;
        let mut scratch = [0u8; 4096];
        while start.elapsed() < Duration::from_secs(12) {
            let _ = s.read(&mut scratch);
            if let Ok(n) = s.write(&batch) {
                sent += n as u64;
            }
        }
        sent
    });
    let extra = format!(
        "---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: flood, namespace: metallb-system}}\n\
         spec: {{myASN: 65001, peerASN: 65002, peerAddress: {}, peerPort: 1804, ebgpMultiHop: true}}\n",
        local(27)
    );
    let all = manifests(dir.path(), addr, port, "", true, true);
    std::fs::write(dir.path().join("cluster.yaml"), all + &extra).unwrap();
    let _spk = speaker(dir.path(), 9486);
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));
    let since = bird.protocol("v4");
    // Through the flood (BIRD's hold time is 9 s): the metrics answer,
    // BIRD's session never drops.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(11) {
        let asked = Instant::now();
        assert!(metrics(9486).contains("metallb_bgp_session_up"), "no metrics");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "metrics took {:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent = flood.join().unwrap();
    // The speaker reads as fast as it decodes (a debug build here): some
    // thousands of UPDATEs at the least, its one thread kept busy.
    assert!(
        sent > 1_000_000,
        "the flood was too thin to mean anything: {sent} bytes"
    );
    bird.assert_stayed("v4", &since);
}

/// A router and a node in network namespaces this test creates, joined by
/// a veth (192.0.2.1 / 2001:db8::1 on the router, .2 / ::2 on the node);
/// removed on drop with every process started in them.
struct Netns {
    router: String,
    node: String,
    children: Vec<Running>,
}

impl Netns {
    fn create() -> Option<Netns> {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
        let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
        if !(root && ip) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the BGP netns test (root and iproute2)"
            );
            eprintln!("skipped: the BGP netns test needs root and iproute2");
            return None;
        }
        let tag = std::process::id() % 100_000;
        let n = Netns {
            router: format!("lbbgp{tag}r"),
            node: format!("lbbgp{tag}n"),
            children: Vec::new(),
        };
        let (vr, vn) = (format!("lbb{tag}r"), format!("lbb{tag}n"));
        for cmd in [
            format!("ip netns add {}", n.router),
            format!("ip netns add {}", n.node),
            format!("ip link add {vr} type veth peer name {vn}"),
            format!("ip link set {vr} netns {}", n.router),
            format!("ip link set {vn} netns {}", n.node),
            format!("ip -n {} link set lo up", n.router),
            format!("ip -n {} link set lo up", n.node),
            format!("ip -n {} addr add 192.0.2.1/24 dev {vr}", n.router),
            format!("ip -n {} addr add 2001:db8::1/64 dev {vr} nodad", n.router),
            format!("ip -n {} addr add 192.0.2.2/24 dev {vn}", n.node),
            format!("ip -n {} addr add 2001:db8::2/64 dev {vn} nodad", n.node),
            format!("ip -n {} link set {vr} up", n.router),
            format!("ip -n {} link set {vn} up", n.node),
            // The Service addresses, where the node's data plane has them.
            format!("ip -n {} addr add 198.51.100.10/32 dev lo", n.node),
            format!("ip -n {} addr add 2001:db8:100::10/128 dev lo", n.node),
        ] {
            let ok = Command::new("sh").args(["-c", &cmd]).status().unwrap().success();
            assert!(ok, "{cmd}");
        }
        Some(n)
    }

    fn spawn(&mut self, ns: &str, args: &[&str], log: &Path) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.children.push(Running(child));
    }

    fn run(&self, ns: &str, cmd: &str) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.children.clear();
        for ns in [&self.router, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The realistic case: BIRD on a router one hop away installs what the
/// speaker announces in its kernel table, and packets to the Service
/// addresses reach the node (ping, both families); the Service gone, the
/// router's routes go.
#[test]
fn a_router_forwards_to_the_service_addresses_the_speaker_announces() {
    if !bird_available() {
        return;
    }
    let Some(mut lab) = Netns::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bird.conf");
    std::fs::write(
        &conf,
        "log stderr all;\nrouter id 192.0.2.1;\nprotocol device { }\nprotocol direct { ipv4; ipv6; }\n\
         protocol kernel k4 { ipv4 { export where source = RTS_BGP; }; }\n\
         protocol kernel k6 { ipv6 { export where source = RTS_BGP; }; }\n\
         protocol bgp n4 { local as 65000; neighbor 192.0.2.2 as 65001; passive on; hold time 9; ipv4 { import all; export none; }; }\n\
         protocol bgp n6 { local as 65000; neighbor 2001:db8::2 as 65001; passive on; hold time 9; ipv6 { import all; export none; }; }\n",
    )
    .unwrap();
    let ctl = dir.path().join("bird.ctl").to_string_lossy().into_owned();
    let router = lab.router.clone();
    lab.spawn(
        &router,
        &["bird", "-f", "-c", conf.to_str().unwrap(), "-s", &ctl],
        &dir.path().join("bird.log"),
    );
    let manifests_dir = dir.path().join("m");
    std::fs::create_dir_all(&manifests_dir).unwrap();
    let write = |service: bool| {
        let mut all = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus: {addresses: [{type: InternalIP, address: 192.0.2.2}]}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: pub, namespace: metallb-system}\n\
             spec: {addresses: [198.51.100.0/24, \"2001:db8:100::/64\"]}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: ad, namespace: metallb-system}\n---\n\
             apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r4, namespace: metallb-system}\n\
             spec: {myASN: 65001, peerASN: 65000, peerAddress: 192.0.2.1, connectTime: 1s}\n---\n\
             apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r6, namespace: metallb-system}\n\
             spec: {myASN: 65001, peerASN: 65000, peerAddress: \"2001:db8::1\", connectTime: 1s}\n"
            .to_owned();
        if service {
            all += "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default, annotations: {metallb.io/loadBalancerIPs: \"198.51.100.10,2001:db8:100::10\"}}\n\
                    spec: {type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{port: 80}]}\n---\n\
                    apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
                    addressType: IPv4\nendpoints: [{addresses: [10.0.0.5], nodeName: node-a, conditions: {ready: true}}]\n";
        }
        std::fs::write(manifests_dir.join("cluster.yaml"), all).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lb-controller"))
            .args(["--manifests", manifests_dir.to_str().unwrap(), "--once"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    write(true);
    let node = lab.node.clone();
    lab.spawn(
        &node,
        &[
            env!("CARGO_BIN_EXE_lb-speaker"),
            "--manifests",
            manifests_dir.to_str().unwrap(),
            "--node",
            "node-a",
            "--no-memberlist",
            "--exclude-interface",
            ".*",
            "--no-realtime",
            "--poll-ms",
            "100",
        ],
        &dir.path().join("speaker.log"),
    );
    let fib = |family: &str, ip: &str| lab.run(&router, &format!("ip {family} route show {ip}")).1;
    eventually("the router's kernel has the IPv4 route", || {
        fib("-4", "198.51.100.10").contains("via 192.0.2.2")
    });
    eventually("and the IPv6 one", || {
        fib("-6", "2001:db8:100::10").contains("via 2001:db8::2")
    });
    assert!(
        lab.run(&router, "ping -c 1 -W 2 198.51.100.10").0,
        "no IPv4 answer through the route"
    );
    assert!(
        lab.run(&router, "ping -6 -c 1 -W 2 2001:db8:100::10").0,
        "no IPv6 answer through the route"
    );
    // The Service goes: so do the router's routes.
    write(false);
    eventually("the IPv4 route withdrawn", || {
        !fib("-4", "198.51.100.10").contains("via")
    });
    eventually("the IPv6 route withdrawn", || {
        !fib("-6", "2001:db8:100::10").contains("via")
    });
    let speaker_log = std::fs::read_to_string(dir.path().join("speaker.log")).unwrap_or_default();
    assert!(!speaker_log.contains("ERROR"), "{speaker_log}");
}

/// BIRD as an active peer: it dials the speaker's `--bgp-listen` port
/// and retries every second.
fn dials_in(port: u16) -> String {
    format!(" passive off; neighbor port {port}; connect retry time 1; connect delay time 1;")
}

#[test]
fn a_peer_that_dials_the_speaker_gets_its_routes_and_strangers_are_closed() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = local(28);
    // BIRD listens on 1806, but the BGPPeer names 1809, where nothing
    // listens: only BIRD's own dial can bring the session up, signed.
    let bird = Bird::start(
        dir.path(),
        addr,
        1806,
        &format!("{} password \"hunter2\";", dials_in(1808)),
    );
    manifests(dir.path(), addr, 1809, ", password: hunter2", true, true);
    let spk = speaker_with(dir.path(), 9487, &["--bgp-listen", "[::]:1808"]);
    eventually("BIRD's connection became the session", || {
        bird.protocol("v4").contains("Established")
    });
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));
    let routes = bird.routes();
    assert!(
        routes.contains("(65001,100)") && routes.contains("(65001, 7, 9)"),
        "{routes}"
    );
    assert!(log(dir.path()).contains("opened by the peer"), "{}", log(dir.path()));
    // Someone else connects: closed at once, said in the log.
    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", 1808)).unwrap();
    stranger.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    let closed = match std::io::Read::read(&mut stranger, &mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "closed without a word");
    eventually("the stranger is reported", || {
        log(dir.path()).contains("no peer of this node")
    });
    // The Service goes: withdrawn on the same session.
    manifests(dir.path(), addr, 1809, ", password: hunter2", false, true);
    eventually("withdrawn", || !bird.routes().contains("198.51.100.10/32"));
    assert!(bird.protocol("v4").contains("Established"));
    // SIGTERM: a Cease that says why, on the connection BIRD opened.
    sigterm(&spk);
    eventually("closed with a message", || {
        bird.cli("show protocols all v4").contains("lb-speaker shutting down")
    });
}

/// BIRD and the speaker both dial, BIRD every second: however the races
/// go (on loopback the first connection is usually established before the
/// second arrives, which is then closed), one session stays.
#[test]
fn when_both_sides_dial_one_session_stays() {
    if !bird_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (addr, port) = (local(29), 1810);
    manifests(dir.path(), addr, port, "", true, true);
    let _spk = speaker_with(dir.path(), 9488, &["--bgp-listen", "127.0.0.1:1812"]);
    let bird = Bird::start(dir.path(), addr, port, &dials_in(1812));
    eventually("established", || bird.protocol("v4").contains("Established"));
    eventually("learned", || bird.routes().contains("198.51.100.10/32"));
    let since = bird.protocol("v4");
    let ups = |l: String| {
        l.lines()
            .filter(|l| l.contains("BGP session established") && l.contains(&addr.to_string()))
            .count()
    };
    let before = ups(log(dir.path()));
    // It stays: no flap on either side for 5 s (30 of BIRD's retries).
    std::thread::sleep(Duration::from_secs(5));
    bird.assert_stayed("v4", &since);
    assert_eq!(ups(log(dir.path())), before, "{}", log(dir.path()));
    let up = format!("metallb_bgp_session_up{{peer=\"{addr}:{port}\"}} 1");
    assert!(metrics(9488).contains(&up), "{}", metrics(9488));
}

/// Reads whole messages from `s` until `enough` says so or the
/// connection ends (or 10 s pass): each as (type, bytes).
fn read_messages(
    s: &mut std::net::TcpStream,
    enough: impl Fn(&[(lb_bgp::MessageType, Vec<u8>)]) -> bool,
) -> Vec<(lb_bgp::MessageType, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut buf, mut got) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    while !enough(&got) && Instant::now() < deadline {
        while let Ok(Some((kind, m))) = lb_bgp::frame(&buf, lb_bgp::MAX_LEN) {
            let len = m.len();
            got.push((kind, m.to_vec()));
            buf.drain(..len);
        }
        if enough(&got) {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match std::io::Read::read(s, &mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    got
}

/// Both connections to one peer in OpenConfirm at once, which BIRD on
/// loopback is too quick to show: the test is the peer here, holding the
/// speaker's dial and its own connection to `--bgp-listen`, and answers
/// both OPENs together. The speaker closes one with a Cease (Connection
/// Collision Resolution), the one opened by the side with the lower BGP
/// Identifier, and announces on the other.
#[test]
fn a_collision_keeps_the_connection_of_the_higher_identifier() {
    use lb_bgp::{Message, MessageType, NotificationCode, OpenMessage};
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let peer = std::net::TcpListener::bind(("127.0.0.1", 1814)).unwrap();
    manifests(
        dir.path(),
        Ipv4Addr::LOCALHOST,
        1814,
        ", routerID: 10.0.0.10",
        true,
        true,
    );
    let _spk = speaker_with(dir.path(), 9489, &["--bgp-listen", "127.0.0.1:1816"]);
    // The speaker's ID is 10.0.0.10: a peer with a higher one keeps the
    // connection it opened, one with a lower one the speaker's.
    for (id, keeps_peers) in [([10, 0, 0, 20], true), ([10, 0, 0, 5], false)] {
        let (mut dialled, _) = peer.accept().unwrap();
        let mut opened = std::net::TcpStream::connect(("127.0.0.1", 1816)).unwrap();
        let is_open = |m: &[(MessageType, Vec<u8>)]| m.iter().any(|(k, _)| *k == MessageType::Open);
        assert!(
            is_open(&read_messages(&mut dialled, is_open)),
            "the speaker's OPEN on its dial"
        );
        assert!(
            is_open(&read_messages(&mut opened, is_open)),
            "and on the connection the peer opened"
        );
        let mut open = Vec::new();
        OpenMessage {
            asn: 65000,
            hold_time: 9,
            bgp_id: Ipv4Addr::from(id),
            families: vec![(1, 1)],
            route_refresh: true,
            graceful_restart: None,
        }
        .write(&mut open);
        dialled.write_all(&open).unwrap();
        opened.write_all(&open).unwrap();
        let (mut keep, mut lose) = match keeps_peers {
            true => (opened, dialled),
            false => (dialled, opened),
        };
        // The loser: a Cease 6/7, then the end.
        let lost = read_messages(&mut lose, |_| false);
        let cease = lost.iter().find_map(|(k, m)| match Message::decode(*k, m) {
            Ok(Message::Notification(n)) => Some(n.code),
            _ => None,
        });
        assert_eq!(
            cease,
            Some(NotificationCode::CONNECTION_COLLISION_RESOLUTION),
            "{lost:?}"
        );
        // The winner: KEEPALIVE; ours brings it up, and the route comes.
        let is_ka = |m: &[(MessageType, Vec<u8>)]| m.iter().any(|(k, _)| *k == MessageType::Keepalive);
        assert!(
            is_ka(&read_messages(&mut keep, is_ka)),
            "the winner goes on to OpenConfirm"
        );
        let mut ka = Vec::new();
        lb_bgp::write_keepalive(&mut ka);
        keep.write_all(&ka).unwrap();
        let has_route = |m: &[(MessageType, Vec<u8>)]| {
            m.iter().any(|(k, b)| match Message::decode(*k, b) {
                Ok(Message::Update(u)) => u.nlri().any(|p| p.to_string() == "198.51.100.10/32"),
                _ => false,
            })
        };
        assert!(
            has_route(&read_messages(&mut keep, has_route)),
            "announced on the winner"
        );
        eventually("one session up", || {
            metrics(9489).contains("metallb_bgp_session_up{peer=\"127.0.0.1:1814\"} 1")
        });
        // While the peer's connection carries it, the speaker does not
        // dial again.
        if keeps_peers {
            peer.set_nonblocking(true).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            assert!(
                peer.accept().is_err(),
                "no dial while the peer's connection is the session"
            );
            peer.set_nonblocking(false).unwrap();
        } else {
            // The peer connects again while the dial carries the session:
            // a Cease and the end, no OPEN (no session started for it).
            let mut again = std::net::TcpStream::connect(("127.0.0.1", 1816)).unwrap();
            let got = read_messages(&mut again, |_| false);
            let kinds: Vec<MessageType> = got.iter().map(|(k, _)| *k).collect();
            assert_eq!(kinds, [MessageType::Notification], "{got:?}");
        }
        // The peer goes; the speaker dials again (next round).
        drop(keep);
        eventually("down", || {
            metrics(9489).contains("metallb_bgp_session_up{peer=\"127.0.0.1:1814\"} 0")
        });
    }
}
