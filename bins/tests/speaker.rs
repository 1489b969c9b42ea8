//! lb-speaker end to end, in network namespaces this test creates: a
//! bridge ("the LAN"), a client and two nodes, each node with the service
//! addresses on `lo` (arp_ignore=1: the kernel does not answer for them)
//! and an echo server behind them. The addresses come from lb-controller's
//! state file; the speakers elect, answer and fail over. Real peers check
//! them: arping, ndisc6, ping, curl, tcpdump + tshark.
//!
//! Needs root, iproute2 and those tools; without them it is skipped with a
//! notice, except under CI (`CI=true`), where that is a failure.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const TOOLS: [&str; 7] = ["ip", "arping", "ndisc6", "ping", "curl", "tcpdump", "tshark"];

/// Whether this machine can run the lab; under CI it must.
fn lab_possible() -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    if missing.is_empty() && root {
        return true;
    }
    let why = format!("needs root and {missing:?}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the L2 lab: {why}"
    );
    eprintln!("skipped: the L2 lab {why}");
    false
}

/// The LAN: namespaces `PREFIX-sw` (the bridge), `-c` (client), `-a`,
/// `-b` (nodes). Removed on drop, with every process started in them.
struct Lab {
    prefix: String,
    /// The third octet of 10.77.X.0/24 and the 16 bits of fd77:X::/64.
    net: u8,
    children: Vec<(String, Child)>,
}

impl Lab {
    fn up(tag: &str) -> Self {
        Self::up_with(tag, true)
    }

    /// The LAN; with `vips_on_lo`, the service addresses put on the
    /// nodes' `lo` by hand (else the speakers put them there).
    fn up_with(tag: &str, vips_on_lo: bool) -> Self {
        let id = std::process::id() % 10_000;
        let prefix = format!("lb{id}{tag}");
        let net = (std::process::id() % 200) as u8 + tag.len() as u8;
        let lab = Self {
            prefix,
            net,
            children: Vec::new(),
        };
        let sw = lab.ns("sw");
        sh(&format!(
            "ip netns add {sw} && ip -n {sw} link add br0 type bridge && ip -n {sw} link set br0 up"
        ));
        for (i, host) in ["c", "a", "b"].iter().enumerate() {
            let ns = lab.ns(host);
            let n = i + 1;
            sh(&format!(
                "ip netns add {ns} && ip -n {ns} link set lo up && \
                 ip link add eth0 netns {ns} type veth peer name p{host} netns {sw} && \
                 ip -n {sw} link set p{host} master br0 && ip -n {sw} link set p{host} up && \
                 ip -n {ns} addr add {v4}.{n}/24 dev eth0 && ip -n {ns} addr add {v6}::{n}/64 dev eth0 nodad && \
                 ip -n {ns} link set eth0 up",
                v4 = lab.v4(),
                v6 = lab.v6(),
            ));
        }
        for node in ["a", "b"] {
            let ns = lab.ns(node);
            if vips_on_lo {
                sh(&format!(
                    "ip -n {ns} addr add {v4}.100/32 dev lo && ip -n {ns} addr add {v6}::100/128 dev lo",
                    v4 = lab.v4(),
                    v6 = lab.v6(),
                ));
            }
            sh(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1 \
                 net.ipv4.conf.all.arp_announce=2"
            ));
        }
        lab
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn v4(&self) -> String {
        format!("10.77.{}", self.net)
    }

    fn v6(&self) -> String {
        format!("fd77:{}", self.net)
    }

    /// Runs `cmd` in `host`'s namespace, waiting for it.
    fn run(&self, host: &str, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// Starts `args` in `host`'s namespace; output to `log`.
    fn spawn(&mut self, host: &str, name: &str, args: &[&str], log: &Path) -> u32 {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        pid
    }

    /// Kills the process named `name` (SIGKILL: no goodbye).
    fn kill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The MAC of `host`'s eth0.
    fn mac(&self, host: &str) -> String {
        let out = self.run(host, "ip -j link show eth0");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["address"].as_str().unwrap().to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for host in ["c", "a", "b", "sw"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(host)]).status();
        }
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The cluster: two nodes, a pool with the lab's service addresses (and
/// one nobody holds), an L2Advertisement, and one IPv4 and one IPv6
/// Service served by endpoints on both nodes.
fn manifests(lab: &Lab, dir: &Path) {
    let (v4, v6) = (lab.v4(), lab.v6());
    let node = |name: &str, n: u8| {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n  addresses: [{{type: InternalIP, address: {v4}.{n}}}]\n---\n"
        )
    };
    let service = |name: &str, ip: &str, family: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{metallb.io/loadBalancerIPs: \"{ip}\"}}\n\
             spec:\n  type: LoadBalancer\n  ipFamilies: [{family}]\n  ports: [{{port: 80}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: {family}\nports: [{{port: 80}}]\nendpoints:\n\
             - {{addresses: [\"{ip}\"], nodeName: node-a, conditions: {{ready: true}}}}\n\
             - {{addresses: [\"{ip}\"], nodeName: node-b, conditions: {{ready: true}}}}\n---\n"
        )
    };
    let mut all = node("node-a", 2) + &node("node-b", 3);
    all += &format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lab, namespace: metallb-system}}\n\
         spec:\n  addresses: [{v4}.100/32, {v4}.101/32, {v6}::100/128]\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lab, namespace: metallb-system}}\n---\n"
    );
    all += &service("web4", &format!("{v4}.100"), "IPv4");
    all += &service("web6", &format!("{v6}::100"), "IPv6");
    std::fs::File::create(dir.join("cluster.yaml"))
        .unwrap()
        .write_all(all.as_bytes())
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lb-controller"))
        .args(["--manifests", dir.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// Starts the speaker and an echo server on `node` (a or b), and waits
/// until the speaker is ready.
fn start_node(lab: &mut Lab, node: &str, dir: &Path, extra: &[&str]) {
    let logs = dir.join(".logs");
    std::fs::create_dir_all(&logs).unwrap();
    lab.spawn(
        node,
        &format!("echo-{node}"),
        &[
            env!("CARGO_BIN_EXE_lb-echo"),
            "--listen",
            "[::]:80",
            "--pod",
            &format!("node-{node}"),
        ],
        &logs.join(format!("echo-{node}.log")),
    );
    lab.spawn(
        node,
        &format!("speaker-{node}"),
        &[
            env!("CARGO_BIN_EXE_lb-speaker"),
            "--manifests",
            dir.to_str().unwrap(),
            "--node",
            &format!("node-{node}"),
            "--metrics-listen",
            "127.0.0.1:9121",
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
        &logs.join(format!("speaker-{node}.log")),
    );
    let start = Instant::now();
    while !lab
        .run(node, "curl -sf -m 1 http://127.0.0.1:9121/readyz")
        .status
        .success()
    {
        let log = std::fs::read_to_string(logs.join(format!("speaker-{node}.log"))).unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "speaker on {node} not ready:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `node`'s speaker's metrics contain `line`.
fn wait_for_metric(lab: &Lab, node: &str, line: &str) {
    let start = Instant::now();
    loop {
        let m = text(&lab.run(node, "curl -sf -m 1 http://127.0.0.1:9121/metrics"));
        if m.lines().any(|l| l == line) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "node {node}: no {line:?} in\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node (a or b) MetalLB's election picks for `ip` among both.
fn owner(ip: &str) -> &'static str {
    let ip: IpAddr = ip.parse().unwrap();
    match lb_arp::election::owner(ip, ["node-a", "node-b"]) {
        Some("node-a") => "a",
        Some("node-b") => "b",
        other => panic!("{other:?}"),
    }
}

/// The MACs that answered arping's requests, one line per reply.
fn arping(lab: &Lab, ip: &str, count: u32) -> (bool, Vec<String>) {
    let out = lab.run("c", &format!("arping -i eth0 -c {count} -W 0.1 {ip}"));
    let macs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_lowercase))
        .collect();
    (out.status.success(), macs)
}

#[test]
fn layer2_answers_for_the_elected_node_and_fails_over() {
    if !lab_possible() {
        return;
    }
    let mut lab = Lab::up("l2");
    let dir = tempfile::tempdir().unwrap();
    manifests(&lab, dir.path());
    let (vip4, vip6, unheld) = (
        format!("{}.100", lab.v4()),
        format!("{}::100", lab.v6()),
        format!("{}.101", lab.v4()),
    );
    // Before any speaker runs, nothing answers for the addresses.
    assert!(
        arping(&lab, &vip4, 2).1.is_empty(),
        "the kernel answers ARP for the VIP"
    );
    // The node that does not win the IPv4 address starts first and holds
    // every address alone; the winner joins and takes its share over.
    let first = owner(&vip4);
    let other = if first == "a" { "b" } else { "a" };
    start_node(&mut lab, other, dir.path(), &[]);
    start_node(&mut lab, first, dir.path(), &[]);
    for node in ["a", "b"] {
        wait_for_metric(&lab, node, "lb_speaker_members 2");
    }
    let capture = dir.path().join("c.pcap");
    let pcap = capture.to_str().unwrap().to_owned();
    let tcpdump_log = dir.path().join("tcpdump.log");
    lab.spawn(
        "c",
        "tcpdump",
        &["tcpdump", "-i", "eth0", "-nn", "-U", "-w", &pcap, "arp or icmp6"],
        &tcpdump_log,
    );
    let start = Instant::now();
    while !std::fs::read_to_string(&tcpdump_log)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "tcpdump did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mac_a, mac_b) = (lab.mac("a"), lab.mac("b"));
    let owner_mac = if first == "a" { &mac_a } else { &mac_b };

    // Exactly one reply per request, from the elected node's MAC.
    let (ok, macs) = arping(&lab, &vip4, 3);
    assert!(ok, "arping got no reply");
    assert_eq!(
        macs,
        vec![owner_mac.clone(); 3],
        "one reply per request, from node-{first}"
    );
    // A pool address nobody holds gets no answer.
    let (ok, macs) = arping(&lab, &unheld, 2);
    assert!(!ok && macs.is_empty(), "{macs:?}");
    // IPv6: a neighbour advertisement with the owner's MAC.
    let owner6 = owner(&vip6);
    let mac6 = if owner6 == "a" { &mac_a } else { &mac_b };
    let out = lab.run("c", &format!("ndisc6 -r 3 -w 500 {vip6} eth0"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).to_lowercase().contains(mac6.as_str()), "{}", text(&out));
    // Traffic reaches a server behind the addresses.
    lab.run("c", "ip neigh flush dev eth0; ip -6 neigh flush dev eth0");
    let out = lab.run("c", &format!("ping -c 2 -i 0.2 -W 1 {vip4}"));
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.run("c", &format!("ping -6 -c 2 -i 0.2 -W 1 {vip6}"));
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.run("c", &format!("curl -sf -m 2 http://{vip4}/"));
    assert!(text(&out).contains(&format!("\"node-{first}\"")), "{}", text(&out));
    let out = lab.run("c", &format!("curl -sf -m 2 http://[{vip6}]/"));
    assert!(text(&out).contains(&format!("\"node-{owner6}\"")), "{}", text(&out));

    // An independent decoder finds the frames well-formed.
    std::thread::sleep(Duration::from_millis(300));
    lab.kill("tcpdump");
    let tshark = |filter: &str| {
        let o = Command::new("tshark")
            .args(["-r", &pcap, "-Y", filter])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(tshark(&format!("arp.opcode==2 && arp.src.proto_ipv4=={vip4}")).contains("is at"));
    assert!(
        tshark(&format!(
            "icmpv6.type==136 && ipv6.hlim==255 && icmpv6.nd.na.flag.s==1 && icmpv6.nd.na.flag.o==1 && icmpv6.opt.linkaddr && icmpv6.nd.na.target_address=={vip6}"
        ))
        .contains("Advertisement")
    );
    let warnings = tshark("_ws.expert.severity >= warning");
    assert!(warnings.trim().is_empty(), "{warnings}");

    // The metrics say what was answered, under MetalLB's names.
    let out = lab.run(first, "curl -sf http://127.0.0.1:9121/metrics");
    let m = text(&out);
    assert!(
        m.contains(&format!("metallb_layer2_responses_sent{{ip=\"{vip4}\"}}")),
        "{m}"
    );
    assert!(m.contains(&format!("metallb_speaker_announced{{service=\"default/web4\",protocol=\"layer2\",node=\"node-{first}\",ip=\"{vip4}\"}} 1")), "{m}");

    // Failover: the owner dies (its link and its speaker); the client's
    // pings recover through the other node.
    let ping_log = dir.path().join("ping.log");
    lab.spawn(
        "c",
        "ping",
        &["ping", "-D", "-i", "0.01", "-W", "0.1", "-w", "6", &vip4],
        &ping_log,
    );
    std::thread::sleep(Duration::from_secs(1));
    let killed = now();
    lab.run(first, "ip link set eth0 down");
    lab.kill(&format!("speaker-{first}"));
    if let Some((_, c)) = lab.children.iter_mut().find(|(n, _)| n == "ping") {
        let _ = c.wait();
    }
    let replies: Vec<f64> = std::fs::read_to_string(&ping_log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let after: Vec<f64> = replies.iter().copied().filter(|t| *t > killed).collect();
    assert!(!after.is_empty(), "no reply after the owner died");
    let outage = after[0] - replies.iter().copied().filter(|t| *t <= killed).fold(killed, f64::max);
    eprintln!("failover outage: {:.0} ms", (after[0] - killed) * 1000.0);
    assert!(outage < 1.5, "outage {outage:.3} s");
    let neigh = text(&lab.run("c", &format!("ip neigh show {vip4}")));
    let new_mac = if other == "a" { &mac_a } else { &mac_b };
    assert!(neigh.contains(new_mac.as_str()), "{neigh}");
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What users do to a running speaker: a broken file beside the good ones
/// changes nothing; a Service deleted stops being answered for; put back,
/// it is answered for again.
#[test]
fn layer2_follows_edits_and_keeps_the_last_good_configuration() {
    if !lab_possible() {
        return;
    }
    let mut lab = Lab::up("ed");
    let dir = tempfile::tempdir().unwrap();
    manifests(&lab, dir.path());
    let vip4 = format!("{}.100", lab.v4());
    start_node(&mut lab, "a", dir.path(), &["--no-memberlist"]);
    let mac_a = lab.mac("a");
    let answered = |lab: &Lab| arping(lab, &vip4, 2).1;
    // Only node-a runs, but without membership node-b counts as alive: the
    // address is answered only where the election puts it.
    let expect = if owner(&vip4) == "a" {
        vec![mac_a.clone(); 2]
    } else {
        vec![]
    };
    assert_eq!(answered(&lab), expect);
    if expect.is_empty() {
        // Take node-b out of the election: its Node object goes.
        let text = std::fs::read_to_string(dir.path().join("cluster.yaml")).unwrap();
        let without_b = text.replacen(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: node-b}}\nstatus:\n  addresses: [{{type: InternalIP, address: {}.3}}]\n---\n", lab.v4()), "", 1);
        assert_ne!(text, without_b);
        std::fs::write(dir.path().join("cluster.yaml"), without_b).unwrap();
    }
    let eventually = |lab: &Lab, want: &[String]| {
        let start = Instant::now();
        loop {
            let got = answered(lab);
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "answers {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let two = vec![mac_a.clone(); 2];
    eventually(&lab, &two);
    // A broken file: reported, and the rest stays in force.
    std::fs::write(dir.path().join("broken.yaml"), "kind: Service\nmetadata: {name: [\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(answered(&lab), two);
    let log = std::fs::read_to_string(dir.path().join(".logs/speaker-a.log")).unwrap();
    assert!(log.contains("broken.yaml"), "{log}");
    // A state file that cannot be read (a half-written file, garbage)
    // withdraws nothing; the addresses last read stay answered.
    let state = dir.path().join(".lb/state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{ half a file").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(answered(&lab), two);
    std::fs::write(&state, &good).unwrap();
    // The interface goes down and comes back: answered again at once (not
    // at the next periodic scan, 10 s away).
    lab.run("a", "ip link set eth0 down");
    std::thread::sleep(Duration::from_millis(300));
    lab.run("a", "ip link set eth0 up");
    let start = Instant::now();
    eventually(&lab, &two);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    // The Service deleted: no longer answered for.
    let text = std::fs::read_to_string(dir.path().join("cluster.yaml")).unwrap();
    let cut = text.find("kind: Service\nmetadata:\n  name: web4").unwrap();
    let start = text[..cut].rfind("apiVersion").unwrap();
    let end = cut + text[cut..].find("---\n").unwrap() + 4;
    std::fs::write(
        dir.path().join("cluster.yaml"),
        format!("{}{}", &text[..start], &text[end..]),
    )
    .unwrap();
    eventually(&lab, &[]);
    // Put back: answered again.
    std::fs::write(dir.path().join("cluster.yaml"), &text).unwrap();
    eventually(&lab, &two);
}

/// Two speakers that cannot see each other (their membership ports
/// differ) both claim the address; each notices the other's claim and
/// reports it.
#[test]
fn layer2_split_brain_is_detected_and_reported() {
    if !lab_possible() {
        return;
    }
    let mut lab = Lab::up("sb");
    let dir = tempfile::tempdir().unwrap();
    manifests(&lab, dir.path());
    let vip4 = format!("{}.100", lab.v4());
    start_node(&mut lab, "a", dir.path(), &["--memberlist-bind", "0.0.0.0:7946"]);
    start_node(&mut lab, "b", dir.path(), &["--memberlist-bind", "0.0.0.0:7947"]);
    // Both answer: the symptom a client sees.
    let (ok, macs) = arping(&lab, &vip4, 2);
    assert!(ok);
    assert_eq!(macs.len(), 4, "{macs:?}");
    for node in ["a", "b"] {
        let start = Instant::now();
        loop {
            let m = text(&lab.run(node, "curl -sf -m 1 http://127.0.0.1:9121/metrics"));
            if m.contains(&format!("lb_layer2_conflicts_total{{ip=\"{vip4}\"}}")) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "node {node} reports no conflict:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(dir.path().join(format!(".logs/speaker-{node}.log"))).unwrap();
        assert!(log.contains("split brain"), "{log}");
    }
}

/// `--assign-to-lo`: the owner puts the address on its `lo` (so it takes
/// the traffic without anything else set up) and a clean stop takes it
/// off; the other node puts it on its own when it takes over.
#[test]
fn layer2_assign_to_lo_moves_the_address_with_its_owner() {
    if !lab_possible() {
        return;
    }
    let mut lab = Lab::up_with("lo", false);
    let dir = tempfile::tempdir().unwrap();
    manifests(&lab, dir.path());
    let vip4 = format!("{}.100", lab.v4());
    let first = owner(&vip4);
    let other = if first == "a" { "b" } else { "a" };
    start_node(&mut lab, first, dir.path(), &["--assign-to-lo"]);
    start_node(&mut lab, other, dir.path(), &["--assign-to-lo"]);
    for node in ["a", "b"] {
        wait_for_metric(&lab, node, "lb_speaker_members 2");
    }
    let on_lo = |lab: &Lab, node: &str| text(&lab.run(node, "ip -4 addr show dev lo")).contains(&format!("{vip4}/32"));
    let eventually = |what: &str, done: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    eventually("the owner puts the address on lo", &|| on_lo(&lab, first));
    assert!(!on_lo(&lab, other));
    let out = lab.run("c", &format!("curl -sf -m 2 http://{vip4}/"));
    assert!(text(&out).contains(&format!("\"node-{first}\"")), "{}", text(&out));
    // A clean stop: the owner leaves, takes the address off, and the other
    // node takes it over, on its lo too.
    let pid = lab
        .children
        .iter()
        .find(|(n, _)| *n == format!("speaker-{first}"))
        .map(|(_, c)| c.id())
        .unwrap();
    sh(&format!("kill -TERM {pid}"));
    eventually("the stopped owner took the address off", &|| !on_lo(&lab, first));
    eventually("the other node put it on", &|| on_lo(&lab, other));
    lab.run("c", "ip neigh flush dev eth0");
    let start = Instant::now();
    loop {
        let out = lab.run("c", &format!("curl -sf -m 1 http://{vip4}/"));
        if text(&out).contains(&format!("\"node-{other}\"")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", text(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM while a speaker waits for the others at start: it exits at once
/// and claims nothing on the way out.
#[test]
fn layer2_sigterm_during_start_up_exits_at_once() {
    if !lab_possible() {
        return;
    }
    let mut lab = Lab::up("st");
    let dir = tempfile::tempdir().unwrap();
    manifests(&lab, dir.path());
    let log = dir.path().join("speaker.log");
    // node-b's speaker never runs: node-a waits for it (up to a second
    // with the defaults, longer with slower probes).
    let pid = lab.spawn(
        "a",
        "speaker-a",
        &[
            env!("CARGO_BIN_EXE_lb-speaker"),
            "--manifests",
            dir.path().to_str().unwrap(),
            "--node",
            "node-a",
            "--probe-interval-ms",
            "2000",
            "--probe-timeout-ms",
            "500",
        ],
        &log,
    );
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    sh(&format!("kill -TERM {pid}"));
    let child = &mut lab.children.iter_mut().find(|(n, _)| n == "speaker-a").unwrap().1;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still running 3 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("taking over"), "{text}");
}

/// Moving an address by configuration (its owner's Node labelled out of
/// load balancing) is no split brain, though the two speakers read the
/// change each on its own poll; and a speaker that starts while the state
/// file cannot be read does not join (it would be handed a share it cannot
/// announce) until it can.
#[test]
fn layer2_moves_by_configuration_without_a_false_alarm() {
    if !lab_possible() {
        return;
    }
    let mut lab = Lab::up("mv");
    let dir = tempfile::tempdir().unwrap();
    manifests(&lab, dir.path());
    let vip4 = format!("{}.100", lab.v4());
    let first = owner(&vip4);
    let other = if first == "a" { "b" } else { "a" };
    start_node(&mut lab, "a", dir.path(), &[]);
    start_node(&mut lab, "b", dir.path(), &[]);
    for node in ["a", "b"] {
        wait_for_metric(&lab, node, "lb_speaker_members 2");
    }
    let mac = |n: &str| lab.mac(n);
    let (mac_first, mac_other) = (mac(first), mac(other));
    assert_eq!(arping(&lab, &vip4, 2).1, vec![mac_first.clone(); 2]);
    let path = dir.path().join("cluster.yaml");
    let manifest = std::fs::read_to_string(&path).unwrap();
    let labelled = manifest.replacen(
        &format!("metadata: {{name: node-{first}}}"),
        &format!("metadata: {{name: node-{first}, labels: {{node.kubernetes.io/exclude-from-external-load-balancers: \"true\"}}}}"),
        1,
    );
    assert_ne!(manifest, labelled);
    std::fs::write(&path, labelled).unwrap();
    let start = Instant::now();
    while arping(&lab, &vip4, 1).1 != vec![mac_other.clone()] {
        assert!(start.elapsed() < Duration::from_secs(5), "the address did not move");
    }
    // Past the time a claim waits before it is judged.
    std::thread::sleep(Duration::from_secs(2));
    for node in ["a", "b"] {
        let m = text(&lab.run(node, "curl -sf -m 1 http://127.0.0.1:9121/metrics"));
        assert!(!m.contains("lb_layer2_conflicts_total"), "node {node}: {m}");
    }
    assert_eq!(arping(&lab, &vip4, 2).1, vec![mac_other.clone(); 2]);

    // A restart while the state file is broken: node-first does not join,
    // so the other keeps every address; fixed, it joins and takes its share.
    std::fs::write(&path, &manifest).unwrap();
    lab.kill(&format!("speaker-{first}"));
    let state = dir.path().join(".lb/state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{ broken").unwrap();
    lab.spawn(
        first,
        &format!("speaker-{first}-again"),
        &[
            env!("CARGO_BIN_EXE_lb-speaker"),
            "--manifests",
            dir.path().to_str().unwrap(),
            "--node",
            &format!("node-{first}"),
            "--metrics-listen",
            "127.0.0.1:9121",
        ],
        &dir.path().join("again.log"),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        arping(&lab, &vip4, 2).1,
        vec![mac_other.clone(); 2],
        "the restarted node took a share it cannot announce"
    );
    std::fs::write(&state, &good).unwrap();
    let start = Instant::now();
    while arping(&lab, &vip4, 1).1 != vec![mac_first.clone()] {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the restarted node never took its share back"
        );
    }
}
