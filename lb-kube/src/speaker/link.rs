//! The node's network interfaces, read from the kernel over rtnetlink (the
//! MAC included: `/sys` is not always this network namespace's), and which
//! of them answer for service addresses: MetalLB's rules
//! (reference/metallb.md §3.3) — up, ARP-capable, broadcast-capable
//! Ethernet, not enslaved to a bond or bridge (the bond or bridge itself
//! answers) — narrowed by `--interface` flags when given.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use lb_arp::wire::Mac;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Its hardware address, when it is a 6-byte one.
    pub mac: Option<Mac>,
    /// Administratively up.
    pub up: bool,
    /// Marked NOARP.
    pub noarp: bool,
    /// Broadcast-capable.
    pub broadcast: bool,
    /// Ethernet (not loopback, tunnel, …).
    pub ethernet: bool,
    /// Enslaved to a bond or bridge (its index).
    pub controller: Option<u32>,
    /// Has an IPv6 link-local address (neighbour discovery needs one).
    pub link_local6: bool,
    /// The loopback interface.
    pub loopback: bool,
}

impl Link {
    /// Whether this interface answers for service addresses: up,
    /// ARP-capable, broadcast-capable Ethernet with a MAC, not a bond or
    /// bridge member, and taken by `choice`.
    pub fn usable(&self, choice: &Choice) -> bool {
        self.up
            && !self.noarp
            && self.broadcast
            && self.ethernet
            && self.mac.is_some()
            && self.controller.is_none()
            && choice.takes(&self.name)
    }
}

/// MetalLB's default list of interfaces never announced on (its
/// `metallb-excludel2` ConfigMap): containers' and virtual networks'
/// interfaces, which a service address must not be claimed on.
pub const DEFAULT_EXCLUDES: [&str; 14] = [
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// Which interfaces may answer: those named (`--interface`), else every
/// one whose name no exclusion matches (`--exclude-interface`, by default
/// [`DEFAULT_EXCLUDES`]).
#[derive(Debug, Clone)]
pub struct Choice {
    only: Vec<String>,
    exclude: Vec<regex::Regex>,
}

impl Choice {
    /// Only the interfaces `only`, when any; else every one that no
    /// pattern of `exclude` matches (`None`: [`DEFAULT_EXCLUDES`]). A
    /// pattern that is not a regular expression is an error naming it.
    pub fn new(only: Vec<String>, exclude: Option<Vec<String>>) -> Result<Self, String> {
        let patterns = exclude.unwrap_or_else(|| DEFAULT_EXCLUDES.iter().map(|p| (*p).to_owned()).collect());
        let exclude = patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .size_limit(1 << 16)
                    .build()
                    .map_err(|e| format!("--exclude-interface {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { only, exclude })
    }

    /// Whether the interface `name` may answer.
    pub fn takes(&self, name: &str) -> bool {
        match self.only.is_empty() {
            false => self.only.iter().any(|o| o == name),
            true => !self.exclude.iter().any(|r| r.is_match(name)),
        }
    }

    /// The interfaces named, if any.
    pub fn only(&self) -> &[String] {
        &self.only
    }
}

impl Default for Choice {
    /// Every interface but MetalLB's default exclusions.
    fn default() -> Self {
        Self::new(Vec::new(), None).unwrap_or(Self {
            only: Vec::new(),
            exclude: Vec::new(),
        })
    }
}

/// Every interface of this network namespace, by index.
pub fn links() -> io::Result<Vec<Link>> {
    let socket = open()?;
    let mut links: BTreeMap<u32, Link> = BTreeMap::new();
    dump(&socket, RouteNetlinkMessage::GetLink(LinkMessage::default()), |m| {
        if let RouteNetlinkMessage::NewLink(l) = m {
            let flags = l.header.flags;
            let mut link = Link {
                index: l.header.index,
                name: String::new(),
                mac: None,
                up: flags.contains(LinkFlags::Up),
                noarp: flags.contains(LinkFlags::Noarp),
                broadcast: flags.contains(LinkFlags::Broadcast),
                ethernet: l.header.link_layer_type == LinkLayerType::Ether,
                controller: None,
                link_local6: false,
                loopback: flags.contains(LinkFlags::Loopback),
            };
            for a in l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n,
                    LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(Mac),
                    LinkAttribute::Controller(c) if c != 0 => link.controller = Some(c),
                    _ => {}
                }
            }
            links.insert(link.index, link);
        }
    })?;
    let mut ask = AddressMessage::default();
    ask.header.family = AddressFamily::Inet6;
    dump(&socket, RouteNetlinkMessage::GetAddress(ask), |m| {
        if let RouteNetlinkMessage::NewAddress(a) = m {
            let local = a.header.scope == AddressScope::Link
                || a.attributes.iter().any(|at| match at {
                    AddressAttribute::Address(std::net::IpAddr::V6(ip)) => ip.is_unicast_link_local(),
                    _ => false,
                });
            if let (true, Some(l)) = (local, links.get_mut(&a.header.index)) {
                l.link_local6 = true;
            }
        }
    })?;
    Ok(links.into_values().collect())
}

/// Interface changes as they happen: a message for each (or each burst)
/// that the kernel reports on its link group. `None` when the kernel
/// cannot be listened to (the periodic scan still follows the interfaces).
pub fn watch() -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
    let mut socket = match Socket::new(NETLINK_ROUTE) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "interface changes are not followed as they happen");
            return None;
        }
    };
    if let Err(e) = socket.bind(&SocketAddr::new(0, libc::RTMGRP_LINK as u32)) {
        tracing::debug!(error = %e, "interface changes are not followed as they happen");
        return None;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new().name("links".into()).spawn(move || {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            // Overruns (ENOBUFS) say changes were missed: a rescan covers
            // them as well.
            let _ = socket.recv(&mut buf, 0);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    spawned.ok().map(|_| rx)
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// Adds (or, with `add` false, removes) `ip` as a host address (/32 or
/// /128) on the interface `index`. Adding one that is there, or removing
/// one that is not, is no error.
pub fn set_address(index: u32, ip: IpAddr, add: bool) -> io::Result<()> {
    let mut msg = AddressMessage::default();
    msg.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = if ip.is_ipv4() { 32 } else { 128 };
    msg.header.index = index;
    msg.header.scope = AddressScope::Host;
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    let (ask, flags) = match add {
        true => (
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        ),
        false => (RouteNetlinkMessage::DelAddress(msg), NLM_F_REQUEST | NLM_F_ACK),
    };
    match request(&open()?, ask, flags, |_| {}) {
        Err(e) if !add && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}

/// Sends one dump request and hands every message of the answer to `each`.
fn dump(socket: &Socket, ask: RouteNetlinkMessage, each: impl FnMut(RouteNetlinkMessage)) -> io::Result<()> {
    request(socket, ask, NLM_F_DUMP | NLM_F_REQUEST, each)
}

/// Sends one request with `flags` and hands every message of the answer to
/// `each`, until the dump is done or the request acknowledged.
fn request(
    socket: &Socket,
    ask: RouteNetlinkMessage,
    flags: u16,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> io::Result<()> {
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(ask));
    packet.header.flags = flags;
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out);
    socket.send(&out, 0)?;
    let bad = |e: netlink_packet_core::DecodeError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, 0)?;
        let mut at = 0;
        while at < n {
            let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&buf[at..n]).map_err(bad)?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                // An error message with no code acknowledges the request.
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(()),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_and_never_usable() {
        let all = links().unwrap();
        let lo = all.iter().find(|l| l.name == "lo").unwrap();
        assert!(lo.up && lo.loopback && !lo.ethernet);
        assert!(!lo.usable(&Choice::default()));
    }

    #[test]
    fn usable_follows_metallb_rules() {
        let eth = Link {
            index: 2,
            name: "eth0".into(),
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            up: true,
            noarp: false,
            broadcast: true,
            ethernet: true,
            controller: None,
            link_local6: true,
            loopback: false,
        };
        let any = Choice::default();
        assert!(eth.usable(&any));
        assert!(eth.usable(&Choice::new(vec!["eth0".into()], None).unwrap()));
        assert!(!eth.usable(&Choice::new(vec!["eth1".into()], None).unwrap()));
        for broken in [
            Link {
                up: false,
                ..eth.clone()
            },
            Link {
                noarp: true,
                ..eth.clone()
            },
            Link {
                broadcast: false,
                ..eth.clone()
            },
            Link {
                ethernet: false,
                ..eth.clone()
            },
            Link {
                controller: Some(5),
                ..eth.clone()
            },
            Link {
                mac: None,
                ..eth.clone()
            },
        ] {
            assert!(!broken.usable(&any), "{broken:?}");
        }
        // MetalLB's default exclusions: pod and bridge interfaces.
        for name in [
            "veth1a2b",
            "cali123",
            "docker0",
            "cni0",
            "flannel.1",
            "kube-ipvs0",
            "lxc42",
            "lo",
        ] {
            assert!(
                !Link {
                    name: name.into(),
                    ..eth.clone()
                }
                .usable(&any),
                "{name}"
            );
        }
        assert!(
            Link {
                name: "bond0".into(),
                ..eth.clone()
            }
            .usable(&any)
        );
        // Named explicitly, an excluded name answers; own patterns replace
        // the defaults; a bad pattern is refused with its text.
        let veth = Link {
            name: "veth7".into(),
            ..eth.clone()
        };
        assert!(veth.usable(&Choice::new(vec!["veth7".into()], None).unwrap()));
        assert!(veth.usable(&Choice::new(Vec::new(), Some(vec!["^eth".into()])).unwrap()));
        assert!(!eth.usable(&Choice::new(Vec::new(), Some(vec!["^eth".into()])).unwrap()));
        assert!(
            Choice::new(Vec::new(), Some(vec!["(".into()]))
                .unwrap_err()
                .contains("\"(\"")
        );
    }
}
