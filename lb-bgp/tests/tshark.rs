//! What lb-bgp writes, read by an independent decoder: Wireshark's BGP
//! dissector (tshark), each message as a TCP segment to port 179 in a
//! capture made with text2pcap. No malformed packet, no expert warning,
//! and the fields read back as written.
//!
//! Needs tshark and text2pcap (Debian's tshark and wireshark-common);
//! without them it is skipped with a notice, except under CI (`CI=true`).

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::{Ipv4Net, Ipv6Net};
use lb_bgp::update::{write_end_of_rib_v6, write_withdrawals_v6};
use lb_bgp::{Announce, Notification, NotificationCode, OpenMessage, Origin, RouteRefresh, write_keepalive};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-v").output().is_ok_and(|o| o.status.success())
}

fn tshark(pcap: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tshark").arg("-r").arg(pcap).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn wireshark_reads_what_lb_bgp_writes() {
    if !(have("tshark") && have("text2pcap")) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must have tshark and text2pcap"
        );
        eprintln!("skipped: needs tshark and text2pcap");
        return;
    }
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let mut m = Vec::new();
    OpenMessage {
        asn: 4_200_000_001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        families: vec![(1, 1), (2, 1)],
        route_refresh: true,
        graceful_restart: Some((120, false)),
    }
    .write(&mut m);
    messages.push(std::mem::take(&mut m));
    write_keepalive(&mut m);
    messages.push(std::mem::take(&mut m));
    Announce {
        origin: Origin::Igp,
        as_path: vec![4_200_000_001],
        next_hop: Ipv4Addr::new(192, 0, 2, 1).into(),
        local_pref: None,
        communities: vec![0xfde9_0064],
        large_communities: vec![[4_200_000_001, 7, 9]],
    }
    .write(
        &["198.51.100.10/32", "198.51.100.11/32", "203.0.113.0/24"].map(|p| p.parse::<Ipv4Net>().unwrap()),
        lb_bgp::MAX_LEN,
        &mut m,
    );
    messages.push(std::mem::take(&mut m));
    // IPv6 routes in MP_REACH_NLRI, their withdrawal and End-of-RIB in
    // MP_UNREACH_NLRI.
    Announce {
        origin: Origin::Igp,
        as_path: vec![],
        next_hop: "2001:db8::2".parse().unwrap(),
        local_pref: Some(150),
        communities: vec![],
        large_communities: vec![],
    }
    .write_v6(
        &["2001:db8:100::10/128", "2001:db8:200::/64"].map(|p| p.parse::<Ipv6Net>().unwrap()),
        lb_bgp::MAX_LEN,
        &mut m,
    );
    messages.push(std::mem::take(&mut m));
    write_withdrawals_v6(&["2001:db8:100::11/128".parse().unwrap()], lb_bgp::MAX_LEN, &mut m);
    messages.push(std::mem::take(&mut m));
    write_end_of_rib_v6(&mut m);
    messages.push(std::mem::take(&mut m));
    RouteRefresh {
        afi: 1,
        safi: 1,
        subtype: 0,
    }
    .write(&mut m);
    messages.push(std::mem::take(&mut m));
    Notification::write_shutdown(
        NotificationCode::ADMINISTRATIVE_SHUTDOWN,
        "maintenance: node drained",
        &mut m,
    );
    messages.push(std::mem::take(&mut m));

    let dir = tempfile_dir();
    let text = dir.join("dump.txt");
    let mut dump = String::new();
    for msg in &messages {
        for (i, chunk) in msg.chunks(16).enumerate() {
            dump.push_str(&format!("{:06x}", i * 16));
            for b in chunk {
                dump.push_str(&format!(" {b:02x}"));
            }
            dump.push('\n');
        }
    }
    std::fs::write(&text, dump).unwrap();
    let pcap = dir.join("lb-bgp.pcap");
    let out = Command::new("text2pcap")
        .args(["-q", "-T", "40000,179"])
        .arg(&text)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let types = tshark(&pcap, &["-Y", "bgp", "-T", "fields", "-e", "bgp.type"]);
    let types: Vec<&str> = types.split_whitespace().collect();
    assert_eq!(
        types,
        ["1", "4", "2", "2", "2", "2", "5", "3"],
        "one BGP message per segment, in order"
    );
    let bad = tshark(&pcap, &["-Y", "_ws.malformed || _ws.expert.severity >= warning"]);
    assert!(bad.trim().is_empty(), "{bad}");
    let verbose = tshark(&pcap, &["-V"]);
    for seen in [
        "My AS: 23456",
        "AS Number: 4200000001",
        "203.0.113.0/24",
        "198.51.100.11/32",
        "maintenance: node drained",
        "2001:db8:100::10/128",
        "2001:db8:200::/64",
        "2001:db8:100::11/128",
        "Next hop: 2001:db8::2",
        "Local preference: 150",
    ] {
        assert!(verbose.contains(seen), "no {seen:?} in tshark's reading:\n{verbose}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lb-bgp-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
