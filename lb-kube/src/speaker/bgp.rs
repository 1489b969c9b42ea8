//! What a node announces by BGP, decided over a source view with MetalLB's
//! rules (reference/metallb.md §1.4–1.6, §4.1): the BGPPeers whose node
//! selectors take this node are its sessions; each Service address in a
//! pool that a BGPAdvertisement selects (by pool, Service labels and
//! node) is announced as the address masked to the advertisement's
//! aggregation length, with its local preference and communities, to the
//! advertisement's peers (all when it names none), when a serving endpoint
//! exists (with `externalTrafficPolicy: Local`, on this node).
//!
//! [`Config`] turns the objects into peers and advertisements, reporting
//! every invalid field against its object and keeping an object's last
//! good version in force while a new one is broken; [`Config::plan`] is
//! the decision for one node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv4Subnets, Ipv6Net, Ipv6Subnets};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;
use lb_alloc::{Labels, PoolSet};
use lb_bgp::PeerAs;

use super::select::{any_or_all, candidates, eligible, node, selects_pool, serving_nodes};
use crate::objects::{BGPAdvertisement, BGPPeer, Object, ObjectRef, object_ref};
use crate::source::{Origin, Problem, Snapshot};

/// The BGP port.
pub const BGP_PORT: u16 = 179;

/// One session this node may hold: a BGPPeer, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// The BGPPeer's name (what advertisements' `peers` name).
    pub name: String,
    /// `myASN`.
    pub my_asn: u32,
    /// `peerASN`, or the kind `dynamicASN` accepts.
    pub peer_as: PeerAs,
    /// `peerAddress`.
    pub address: IpAddr,
    /// `peerPort` (179 by default).
    pub port: u16,
    /// `sourceAddress`: the local address to dial from.
    pub source: Option<IpAddr>,
    /// `holdTime` in seconds (90 by default; 0 or at least 3).
    pub hold_time: u16,
    /// `keepaliveTime` in seconds.
    pub keepalive_time: Option<u16>,
    /// `connectTime`: the time between connection attempts (120 s by
    /// default, RFC 4271's ConnectRetryTime).
    pub connect_time: Duration,
    /// `routerID`.
    pub router_id: Option<Ipv4Addr>,
    /// The TCP MD5 password (`password`, or the `passwordSecret`'s).
    pub password: Option<Password>,
    /// `ebgpMultiHop`.
    pub ebgp_multi_hop: bool,
    /// `enableGracefulRestart`.
    pub graceful_restart: bool,
}

/// A TCP MD5 password: never printed (`Debug` shows it redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The key, as the kernel takes it.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A BGPPeer in force: its session, its object, and the nodes it takes.
#[derive(Debug, Clone)]
struct PeerEntry {
    config: PeerConfig,
    object: ObjectRef,
    /// `nodeSelectors` (empty: every node). Not part of the session, so
    /// that taking another node does not reset it on the others.
    nodes: Vec<KubeSelector>,
}

impl PeerConfig {
    /// `ip:port`, as MetalLB labels its metrics.
    pub fn label(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }

    /// Whether the session is iBGP. With a dynamic AS, `internal` is.
    pub fn internal(&self) -> bool {
        match self.peer_as {
            PeerAs::Is(asn) => asn == self.my_asn,
            PeerAs::Internal => true,
            PeerAs::Any | PeerAs::External => false,
        }
    }
}

/// A BGPAdvertisement, checked.
#[derive(Debug, Clone, PartialEq)]
struct Advert {
    name: String,
    v4_len: u8,
    v6_len: u8,
    local_pref: Option<u32>,
    communities: Vec<u32>,
    large_communities: Vec<[u32; 3]>,
    spec: crate::objects::metallb::BGPAdvertisementSpec,
}

/// The attributes of one announced prefix that come from the
/// configuration (the session adds next hop and AS path).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attrs {
    /// LOCAL_PREF (sent to iBGP peers only).
    pub local_pref: Option<u32>,
    /// Standard communities.
    pub communities: BTreeSet<u32>,
    /// Large communities.
    pub large_communities: BTreeSet<[u32; 3]>,
}

/// The prefixes for one peer.
pub type Routes = BTreeMap<IpNet, Attrs>;

/// The decision for one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Its sessions, by BGPPeer name.
    pub peers: BTreeMap<String, PeerConfig>,
    /// What each session announces.
    pub routes: BTreeMap<String, Routes>,
    /// Per Service (namespace, name) announced: the peers its prefixes
    /// are configured to go to (what ServiceBGPStatus says).
    pub services: BTreeMap<(String, String), BTreeSet<String>>,
    /// Per Service (`namespace/name`), its addresses announced.
    pub addresses: BTreeMap<String, BTreeSet<IpAddr>>,
    /// What was dropped while deciding (conflicting local preferences).
    pub problems: Vec<Problem>,
}

/// The BGP configuration in force.
#[derive(Debug, Clone, Default)]
pub struct Config {
    peers: BTreeMap<String, PeerEntry>,
    adverts: BTreeMap<String, (Advert, ObjectRef)>,
    /// When each BGPPeer came into force (a count): of two that dial one
    /// router, the older stays.
    since: BTreeMap<String, u64>,
    next_since: u64,
}

/// At most this many community bytes (4 per standard community, 12 per
/// large one) go with one prefix, so that every UPDATE fits a 4,096-byte
/// message whatever advertisements are united (MetalLB's native speaker
/// caps them at 63 communities).
pub const MAX_COMMUNITY_BYTES: usize = 1024;

/// `ASN:value` (16 bits each) as one community.
fn standard_community(s: &str) -> Option<u32> {
    let (a, b) = s.split_once(':')?;
    Some((u32::from(a.parse::<u16>().ok()?) << 16) | u32::from(b.parse::<u16>().ok()?))
}

/// `large:a:b:c` as a large community.
fn large_community(s: &str) -> Option<[u32; 3]> {
    let rest = s.strip_prefix("large:")?;
    let mut parts = rest.split(':').map(|p| p.parse::<u32>().ok());
    let c = [parts.next()??, parts.next()??, parts.next()??];
    parts.next().is_none().then_some(c)
}

/// A community value in either form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Community {
    Standard(u32),
    Large([u32; 3]),
}

fn community(s: &str) -> Option<Community> {
    match s.starts_with("large:") {
        true => large_community(s).map(Community::Large),
        false => standard_community(s).map(Community::Standard),
    }
}

/// A Go duration (`90s`, `1m30s`, `1.5h`, `500ms`, `0`), exactly (in
/// whole nanoseconds, as Go keeps it); at most about 31 years.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (like 90s or 1m30s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (whole, frac) = rest[..n].split_once('.').unwrap_or((&rest[..n], ""));
        // Bounded so that nothing below can overflow.
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') || whole.len() > 20 || frac.len() > 18 {
            return Err(bad());
        }
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..u] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        rest = &rest[u..];
        let digits = |d: &str| -> u128 { d.bytes().fold(0u128, |v, b| v * 10 + u128::from(b - b'0')) };
        let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(0));
        total += digits(whole) * unit + digits(frac) * unit / scale;
        if total > 1_000_000_000 * 1_000_000_000 {
            return Err(bad());
        }
    }
    let nanos = u64::try_from(total).map_err(|_| bad())?;
    Ok(Duration::from_nanos(nanos))
}

/// Whole seconds of a duration that must fit BGP's 16-bit timers.
fn seconds(field: &str, d: Duration) -> Result<u16, (String, String)> {
    if d.subsec_nanos() != 0 {
        return Err((field.into(), format!("{d:?} is not a whole number of seconds")));
    }
    u16::try_from(d.as_secs()).map_err(|_| (field.into(), format!("{d:?} is longer than 65535 s")))
}

/// The password in a `kubernetes.io/basic-auth` Secret's `password` key.
fn secret_password(secret: &Secret) -> Result<String, String> {
    if secret.type_.as_deref() != Some("kubernetes.io/basic-auth") {
        return Err(format!(
            "Secret is of type {:?}; it must be kubernetes.io/basic-auth",
            secret.type_.as_deref().unwrap_or("")
        ));
    }
    let raw = match (
        secret.data.as_ref().and_then(|d| d.get("password")),
        secret.string_data.as_ref().and_then(|d| d.get("password")),
    ) {
        (_, Some(s)) => s.clone().into_bytes(),
        (Some(b), None) => b.0.clone(),
        (None, None) => return Err("Secret has no `password` key".into()),
    };
    let password = String::from_utf8(raw).map_err(|_| "the password is not UTF-8".to_string())?;
    // The kernel's TCP_MD5SIG key holds at most 80 bytes.
    if password.is_empty() || password.len() > 80 {
        return Err("the password must be 1 to 80 bytes".into());
    }
    Ok(password)
}

/// Checks one BGPPeer; errors are (field, message); warnings are pushed
/// to `warnings`.
fn peer(
    p: &BGPPeer,
    view: &Snapshot,
    warnings: &mut Vec<(String, String)>,
) -> Result<PeerEntry, Vec<(String, String)>> {
    let s = &p.spec;
    let mut errors: Vec<(String, String)> = Vec::new();
    let mut err = |f: &str, m: String| errors.push((f.to_owned(), m));
    let peer_as = match (s.peer_asn, s.dynamic_asn.as_deref()) {
        (Some(_), Some(_)) => {
            err("spec.dynamicASN", "peerASN and dynamicASN are both set; set one".into());
            PeerAs::Any
        }
        (Some(0), None) => {
            err("spec.peerASN", "AS 0 is reserved".into());
            PeerAs::Any
        }
        (Some(asn), None) => PeerAs::Is(asn),
        (None, Some("internal")) => PeerAs::Internal,
        (None, Some("external")) => PeerAs::External,
        (None, Some(other)) => {
            err("spec.dynamicASN", format!("{other:?}: must be internal or external"));
            PeerAs::Any
        }
        (None, None) => {
            err("spec.peerASN", "one of peerASN and dynamicASN must be set".into());
            PeerAs::Any
        }
    };
    if s.my_asn == 0 {
        err("spec.myASN", "AS 0 is reserved".into());
    }
    // AS_TRANS stands in for 4-octet numbers (RFC 6793) and is no AS.
    if s.my_asn == u32::from(lb_bgp::open::AS_TRANS) {
        err("spec.myASN", "AS 23456 (AS_TRANS) is reserved".into());
    }
    if s.peer_asn == Some(u32::from(lb_bgp::open::AS_TRANS)) {
        err("spec.peerASN", "AS 23456 (AS_TRANS) is reserved".into());
    }
    let interface = s.interface.as_deref().filter(|i| !i.is_empty());
    if interface.is_some() {
        err(
            "spec.interface",
            "unnumbered BGP (interface) is not supported; set peerAddress only".into(),
        );
    }
    let address = match (s.peer_address.as_deref(), interface) {
        // An IPv4-mapped IPv6 address is the IPv4 peer.
        (Some(a), _) => a
            .parse::<IpAddr>()
            .map(|a| a.to_canonical())
            .map_err(|_| err("spec.peerAddress", format!("{a:?} is not an IP address")))
            .ok(),
        (None, Some(_)) => None,
        (None, None) => {
            err("spec.peerAddress", "must be set".into());
            None
        }
    };
    let source = s.source_address.as_deref().and_then(|a| {
        a.parse::<IpAddr>()
            .map(|a| a.to_canonical())
            .map_err(|_| err("spec.sourceAddress", format!("{a:?} is not an IP address")))
            .ok()
    });
    if let (Some(a), Some(src)) = (address, source)
        && a.is_ipv4() != src.is_ipv4()
    {
        err(
            "spec.sourceAddress",
            format!("{src} is not of the family of peerAddress {a}"),
        );
    }
    let port = s.peer_port.unwrap_or(BGP_PORT);
    if port == 0 {
        err("spec.peerPort", "port 0 cannot be dialled".into());
    }
    let parse = |field: &str, v: Option<&String>, errors: &mut Vec<(String, String)>| -> Option<u16> {
        let v = v?;
        go_duration(v)
            .map_err(|m| (field.to_owned(), m))
            .and_then(|d| seconds(field, d))
            .map_err(|e| errors.push(e))
            .ok()
    };
    let hold = parse("spec.holdTime", s.hold_time.as_ref(), &mut errors);
    let keepalive = parse("spec.keepaliveTime", s.keepalive_time.as_ref(), &mut errors);
    let connect = parse("spec.connectTime", s.connect_time.as_ref(), &mut errors);
    let mut err = |f: &str, m: String| errors.push((f.to_owned(), m));
    // MetalLB: with only a keepalive time, the hold time is three times it.
    let hold_time = hold.unwrap_or_else(|| keepalive.map_or(90, |k| k.saturating_mul(3)));
    if hold_time != 0 && hold_time < 3 {
        err("spec.holdTime", format!("{hold_time} s: must be 0 or at least 3 s"));
    }
    if let Some(k) = keepalive
        && k > hold_time
    {
        err(
            "spec.keepaliveTime",
            format!("{k} s is longer than the hold time ({hold_time} s)"),
        );
    }
    if connect == Some(0) {
        err("spec.connectTime", "must be at least 1 s".into());
    }
    let router_id = s.router_id.as_deref().and_then(|r| match r.parse::<Ipv4Addr>() {
        Ok(id) if id.is_unspecified() => {
            err("spec.routerID", "0.0.0.0 is no BGP identifier (peers refuse it)".into());
            None
        }
        Ok(id) => Some(id),
        Err(_) => {
            err("spec.routerID", format!("{r:?} is not an IPv4 address"));
            None
        }
    });
    let password = match (&s.password, &s.password_secret) {
        (Some(_), Some(_)) => {
            err(
                "spec.passwordSecret",
                "password and passwordSecret are both set; set one".into(),
            );
            None
        }
        (Some(pw), None) if pw.is_empty() || pw.len() > 80 => {
            err("spec.password", "must be 1 to 80 bytes".into());
            None
        }
        (Some(pw), None) => Some(Password(pw.clone())),
        (None, Some(r)) => {
            let name = r.name.clone().unwrap_or_default();
            let ns = r
                .namespace
                .clone()
                .or_else(|| p.metadata.namespace.clone())
                .unwrap_or_else(|| "default".into());
            let secret = view.objects.iter().find_map(|(_, o)| match o {
                Object::Secret(s)
                    if s.metadata.name.as_deref() == Some(name.as_str())
                        && s.metadata.namespace.as_deref().unwrap_or("default") == ns =>
                {
                    Some(s)
                }
                _ => None,
            });
            match secret.map(|s| secret_password(s)) {
                Some(Ok(pw)) => Some(Password(pw)),
                Some(Err(m)) => {
                    err("spec.passwordSecret", format!("{ns}/{name}: {m}"));
                    None
                }
                None => {
                    err("spec.passwordSecret", format!("Secret {ns}/{name} not found"));
                    None
                }
            }
        }
        (None, None) => None,
    };
    if s.vrf.as_deref().is_some_and(|v| !v.is_empty()) {
        err("spec.vrf", "VRFs are not supported".into());
    }
    if s.local_asn.is_some() {
        err("spec.localASN", "localASN is not supported".into());
    }
    let internal = match peer_as {
        PeerAs::Is(a) => a == s.my_asn,
        PeerAs::Internal => true,
        _ => false,
    };
    if internal && s.ebgp_multi_hop == Some(true) {
        err("spec.ebgpMultiHop", "is for eBGP; this peer is iBGP".into());
    }
    if s.bfd_profile.as_deref().is_some_and(|b| !b.is_empty()) {
        warnings.push((
            "spec.bfdProfile".into(),
            "BFD is not supported: this session runs without it (the hold timer detects failures)".into(),
        ));
    }
    if s.dual_stack_address_family == Some(true) {
        warnings.push((
            "spec.dualStackAddressFamily".into(),
            "not supported: this session carries only its own address family".into(),
        ));
    }
    crate::config::selectors(s.node_selectors.as_ref(), "spec.nodeSelectors", &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(address) = address else {
        return Err(vec![("spec.peerAddress".into(), "must be set".into())]);
    };
    let config = PeerConfig {
        name: p.metadata.name.clone().unwrap_or_default(),
        my_asn: s.my_asn,
        peer_as,
        address,
        port,
        source,
        hold_time,
        keepalive_time: keepalive,
        connect_time: Duration::from_secs(u64::from(connect.unwrap_or(120))),
        router_id,
        password,
        ebgp_multi_hop: s.ebgp_multi_hop.unwrap_or(false),
        graceful_restart: s.enable_graceful_restart.unwrap_or(false),
    };
    Ok(PeerEntry {
        config,
        object: ObjectRef {
            kind: "BGPPeer".into(),
            namespace: p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: p.metadata.name.clone().unwrap_or_default(),
        },
        nodes: s.node_selectors.clone().unwrap_or_default(),
    })
}

/// The longest prefix among the CIDRs a pool's addresses split into, per
/// family (MetalLB's `validateBGPAdvPerPool`: an aggregation length may
/// not be shorter, or the prefix would cover addresses outside the pool).
fn most_specific(pool: &lb_alloc::Pool) -> (u8, u8) {
    let (mut v4, mut v6) = (0u8, 0u8);
    for r in pool.addresses() {
        match (r.first(), r.last()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                v4 = Ipv4Subnets::new(a, b, 0).map(|n| n.prefix_len()).fold(v4, u8::max);
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                v6 = Ipv6Subnets::new(a, b, 0).map(|n| n.prefix_len()).fold(v6, u8::max);
            }
            _ => {}
        }
    }
    (v4, v6)
}

/// Checks one BGPAdvertisement against the aliases and pools.
fn advert(
    a: &BGPAdvertisement,
    aliases: &BTreeMap<String, Community>,
    view: &Snapshot,
    pools: &PoolSet,
) -> Result<Advert, Vec<(String, String)>> {
    let s = &a.spec;
    let mut errors = Vec::new();
    let len = |field: &str, v: Option<i32>, max: u8, errors: &mut Vec<(String, String)>| -> u8 {
        match v {
            None => max,
            Some(v) => match u8::try_from(v) {
                Ok(l) if (1..=max).contains(&l) => l,
                _ => {
                    errors.push((field.to_owned(), format!("{v}: must be 1 to {max}")));
                    max
                }
            },
        }
    };
    let v4_len = len("spec.aggregationLength", s.aggregation_length, 32, &mut errors);
    let v6_len = len("spec.aggregationLengthV6", s.aggregation_length_v6, 128, &mut errors);
    if (v4_len != 32 || v6_len != 128) && s.service_selectors.as_ref().is_some_and(|l| !l.is_empty()) {
        errors.push((
            "spec.serviceSelectors".into(),
            "only allowed with the default aggregation lengths (32 and 128)".into(),
        ));
    }
    crate::config::selectors(s.node_selectors.as_ref(), "spec.nodeSelectors", &mut errors);
    crate::config::selectors(s.service_selectors.as_ref(), "spec.serviceSelectors", &mut errors);
    crate::config::selectors(
        s.ip_address_pool_selectors.as_ref(),
        "spec.ipAddressPoolSelectors",
        &mut errors,
    );
    let (mut communities, mut large_communities) = (Vec::new(), Vec::new());
    for (i, c) in s.communities.iter().flatten().enumerate() {
        match community(c).or_else(|| aliases.get(c).copied()) {
            Some(Community::Standard(v)) => communities.push(v),
            Some(Community::Large(v)) => large_communities.push(v),
            None => errors.push((
                format!("spec.communities[{i}]"),
                format!("{c:?} is neither ASN:value (16 bits each), large:a:b:c, nor a Community alias"),
            )),
        }
    }
    // A community named twice (or by value and by alias) is sent once.
    communities.sort_unstable();
    communities.dedup();
    large_communities.sort_unstable();
    large_communities.dedup();
    if 4 * communities.len() + 12 * large_communities.len() > MAX_COMMUNITY_BYTES {
        errors.push((
            "spec.communities".into(),
            format!("too many: at most {MAX_COMMUNITY_BYTES} bytes of communities (4 each, 12 per large one) fit the UPDATEs they go in"),
        ));
    }
    errors.extend(aggregation_errors(s, v4_len, v6_len, view, pools));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Advert {
        name: a.metadata.name.clone().unwrap_or_default(),
        v4_len,
        v6_len,
        local_pref: s.local_pref,
        communities,
        large_communities,
        spec: s.clone(),
    })
}

/// Where an advertisement's aggregation lengths are shorter than a pool
/// it selects allows: the prefix would cover addresses outside the pool.
fn aggregation_errors(
    s: &crate::objects::metallb::BGPAdvertisementSpec,
    v4_len: u8,
    v6_len: u8,
    view: &Snapshot,
    pools: &PoolSet,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for (_, o) in &view.objects {
        let Object::IPAddressPool(p) = o else { continue };
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if !selects_pool(
            s.ip_address_pools.as_deref(),
            s.ip_address_pool_selectors.as_deref(),
            name,
            &labels,
        ) {
            continue;
        }
        let Some(pool) = pools.get(name) else { continue };
        let (m4, m6) = most_specific(pool);
        if v4_len < m4 {
            errors.push((
                "spec.aggregationLength".into(),
                format!("/{v4_len} is shorter than pool {name}'s most specific range (/{m4}): it would announce addresses outside the pool"),
            ));
        }
        if v6_len < m6 {
            errors.push((
                "spec.aggregationLengthV6".into(),
                format!("/{v6_len} is shorter than pool {name}'s most specific range (/{m6}): it would announce addresses outside the pool"),
            ));
        }
    }
    errors
}

/// Reports a warning about `r`'s `field`.
fn report_warning(problems: &mut Vec<Problem>, origin: &Option<Origin>, r: &ObjectRef, field: &str, message: String) {
    problems.push(Problem {
        origin: origin.clone(),
        ..Problem::warning(Some(r.clone()), Some(field.to_owned()), message)
    });
}

impl Config {
    /// Reads the BGP objects of `view`, whose pools in force are `pools`;
    /// problems go to `problems`. A broken object keeps its last good
    /// version in force; a deleted one goes.
    pub fn update(&mut self, view: &Snapshot, pools: &PoolSet, problems: &mut Vec<Problem>) {
        let report = |problems: &mut Vec<Problem>,
                      origin: &Option<Origin>,
                      r: &ObjectRef,
                      errs: Vec<(String, String)>,
                      kept: bool| {
            let note = crate::source::kept_note(kept);
            problems.extend(errs.into_iter().map(|(field, msg)| Problem {
                origin: origin.clone(),
                ..Problem::error(Some(r.clone()), Some(field), format!("{msg}{note}"))
            }));
        };
        let mut aliases: BTreeMap<String, Community> = BTreeMap::new();
        for (origin, o) in &view.objects {
            let Object::Community(c) = o else { continue };
            let r = object_ref(o);
            for (i, alias) in c.spec.communities.iter().enumerate() {
                let field = format!("spec.communities[{i}]");
                match community(&alias.value) {
                    None => report(
                        problems,
                        origin,
                        &r,
                        vec![(
                            format!("{field}.value"),
                            format!("{:?} is neither ASN:value (16 bits each) nor large:a:b:c", alias.value),
                        )],
                        false,
                    ),
                    Some(_) if aliases.contains_key(&alias.name) => report(
                        problems,
                        origin,
                        &r,
                        vec![(
                            format!("{field}.name"),
                            format!("alias {:?} is defined twice", alias.name),
                        )],
                        false,
                    ),
                    Some(v) => {
                        aliases.insert(alias.name.clone(), v);
                    }
                }
            }
        }
        let mut peers = BTreeMap::new();
        let mut adverts = BTreeMap::new();
        for (origin, o) in &view.objects {
            let r = object_ref(o);
            match o {
                Object::BGPPeer(p) => {
                    let mut warnings = Vec::new();
                    let entry = match peer(p, view, &mut warnings) {
                        Ok(entry) => Some(entry),
                        Err(errs) => {
                            let kept = self.peers.get(&r.name).filter(|k| k.object == r).cloned();
                            report(problems, origin, &r, errs, kept.is_some());
                            kept
                        }
                    };
                    if let Some(entry) = entry {
                        // Names are what advertisements' `peers` say: one
                        // object per name (another namespace's is not ours
                        // in a cluster; in files, the first wins).
                        if let Some(first) = peers.get(&r.name).map(|e: &PeerEntry| e.object.clone()) {
                            report_warning(
                                problems,
                                origin,
                                &r,
                                "metadata.name",
                                format!(
                                    "another BGPPeer named {:?} ({}/{}) comes first; this one is ignored",
                                    r.name, first.namespace, first.name
                                ),
                            );
                        } else {
                            peers.insert(r.name.clone(), entry);
                        }
                    }
                    problems.extend(warnings.into_iter().map(|(field, msg)| Problem {
                        origin: origin.clone(),
                        ..Problem::warning(Some(r.clone()), Some(field), msg)
                    }));
                }
                Object::BGPAdvertisement(a) => match advert(a, &aliases, view, pools) {
                    Ok(ad) => {
                        adverts.insert(r.name.clone(), (ad, r.clone()));
                    }
                    Err(errs) => {
                        // The last good version, unless the pools in force
                        // now make it announce outside them too.
                        let kept = self
                            .adverts
                            .get(&r.name)
                            .filter(|(k, o)| {
                                *o == r && aggregation_errors(&k.spec, k.v4_len, k.v6_len, view, pools).is_empty()
                            })
                            .cloned();
                        report(problems, origin, &r, errs, kept.is_some());
                        if let Some(k) = kept {
                            adverts.insert(r.name.clone(), k);
                        }
                    }
                },
                _ => {}
            }
        }
        // Something could not be read at all (a broken file whose objects
        // cannot even be named): what is missing may only be unread, so
        // the peers and advertisements in force stay.
        if !view.complete {
            for (name, e) in &self.peers {
                peers.entry(name.clone()).or_insert_with(|| e.clone());
            }
            for (name, a) in &self.adverts {
                adverts.entry(name.clone()).or_insert_with(|| a.clone());
            }
        }
        let pool_names: BTreeSet<&str> = view
            .objects
            .iter()
            .filter_map(|(_, o)| match o {
                Object::IPAddressPool(p) => p.metadata.name.as_deref(),
                _ => None,
            })
            .collect();
        for (name, (a, r)) in &adverts {
            let pools = a.spec.ip_address_pools.iter().flatten().enumerate();
            let mut missing: Vec<(String, String)> = pools
                .filter(|(_, p)| !pool_names.contains(p.as_str()))
                .map(|(i, p)| {
                    let message = format!("no IPAddressPool named {p:?}: {name} announces nothing from it");
                    (format!("spec.ipAddressPools[{i}]"), message)
                })
                .collect();
            let to = a.spec.peers.iter().flatten().enumerate();
            missing.extend(to.filter(|(_, p)| !peers.contains_key(*p)).map(|(i, p)| {
                let message = format!("no BGPPeer named {p:?}: {name} announces to it nothing");
                (format!("spec.peers[{i}]"), message)
            }));
            if missing.is_empty() {
                continue;
            }
            // The file and document, looked up once for all of them.
            let origin = view
                .objects
                .iter()
                .find(|(_, o)| object_ref(o) == *r)
                .and_then(|(o, _)| o.clone());
            for (field, message) in missing {
                report_warning(problems, &origin, r, &field, message);
            }
        }
        for name in peers.keys() {
            if !self.since.contains_key(name) {
                self.since.insert(name.clone(), self.next_since);
                self.next_since += 1;
            }
        }
        self.since.retain(|name, _| peers.contains_key(name));
        self.peers = peers;
        self.adverts = adverts;
    }

    /// What `node` announces, and to whom.
    pub fn plan(&self, view: &Snapshot, pools_in_force: &PoolSet, node_name: &str) -> Plan {
        let mut plan = Plan::default();
        let me = node(view, node_name);
        let labels: Labels = me.and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
        let mut dialled: BTreeMap<(IpAddr, u16), &str> = BTreeMap::new();
        // The oldest first, then by name.
        let mut peers: Vec<(&String, &PeerEntry)> = self.peers.iter().collect();
        peers.sort_by_key(|(name, _)| (self.since.get(*name).copied().unwrap_or(u64::MAX), name.as_str()));
        for (name, e) in peers {
            if !any_or_all(Some(&e.nodes), &labels) {
                continue;
            }
            // Two sessions to one router from one node would collide there
            // and flap for ever: the one in force first is kept (the first
            // by name among those that came together), so adding a
            // duplicate never moves a running session.
            if let Some(first) = dialled.insert((e.config.address, e.config.port), name) {
                dialled.insert((e.config.address, e.config.port), first);
                plan.problems.push(Problem::warning(
                    Some(e.object.clone()),
                    Some("spec.peerAddress".into()),
                    format!(
                        "BGPPeer {first} already peers with {} from this node; this one is ignored",
                        e.config.label()
                    ),
                ));
                continue;
            }
            plan.peers.insert(name.clone(), e.config.clone());
            plan.routes.insert(name.clone(), Routes::new());
        }
        // No Node object, or one that may not announce: sessions, no routes.
        if plan.peers.is_empty() || !me.is_some_and(eligible) {
            return plan;
        }
        let serving = serving_nodes(view);
        // Per (peer, prefix): the local preferences asked, to report a
        // conflict once.
        let mut prefs: BTreeMap<(String, IpNet), BTreeSet<u32>> = BTreeMap::new();
        for c in candidates(view, pools_in_force) {
            let here = serving
                .get(&(c.namespace.to_owned(), c.name.to_owned()))
                .is_some_and(|nodes| !c.local || nodes.contains(node_name));
            if !here {
                continue;
            }
            let ads: Vec<&Advert> = self
                .adverts
                .values()
                .map(|(a, _)| a)
                .filter(|a| {
                    selects_pool(
                        a.spec.ip_address_pools.as_deref(),
                        a.spec.ip_address_pool_selectors.as_deref(),
                        c.pool,
                        &c.pool_labels,
                    ) && any_or_all(a.spec.service_selectors.as_ref(), &c.labels)
                        && any_or_all(a.spec.node_selectors.as_ref(), &labels)
                })
                .collect();
            // A shared address cannot follow one Service's selectors.
            if c.shared
                && ads
                    .iter()
                    .any(|a| a.spec.service_selectors.as_ref().is_some_and(|s| !s.is_empty()))
            {
                continue;
            }
            for a in ads {
                let to: Vec<&String> = plan
                    .peers
                    .keys()
                    .filter(|p| a.spec.peers.as_ref().is_none_or(|l| l.is_empty() || l.contains(p)))
                    .collect();
                if to.is_empty() {
                    continue;
                }
                for ip in &c.ips {
                    let prefix = match ip {
                        IpAddr::V4(v) => Ipv4Net::new(*v, a.v4_len).map(|n| IpNet::V4(n.trunc())),
                        IpAddr::V6(v) => Ipv6Net::new(*v, a.v6_len).map(|n| IpNet::V6(n.trunc())),
                    };
                    let Ok(prefix) = prefix else { continue };
                    for p in &to {
                        let Some(routes) = plan.routes.get_mut(*p) else {
                            continue;
                        };
                        let e = routes.entry(prefix).or_default();
                        e.communities.extend(a.communities.iter().copied());
                        e.large_communities.extend(a.large_communities.iter().copied());
                        if let Some(lp) = a.local_pref {
                            let asked = prefs.entry(((*p).clone(), prefix)).or_default();
                            asked.insert(lp);
                            // The highest wins, whatever the order read.
                            e.local_pref = asked.last().copied();
                        }
                    }
                    plan.addresses.entry(c.key()).or_default().insert(*ip);
                }
                plan.services
                    .entry((c.namespace.to_owned(), c.name.to_owned()))
                    .or_default()
                    .extend(to.into_iter().cloned());
            }
        }
        // United communities past what an UPDATE holds: the lowest kept.
        for (peer, routes) in &mut plan.routes {
            for (prefix, a) in routes.iter_mut() {
                let bytes = 4 * a.communities.len() + 12 * a.large_communities.len();
                if bytes <= MAX_COMMUNITY_BYTES {
                    continue;
                }
                while 4 * a.communities.len() + 12 * a.large_communities.len() > MAX_COMMUNITY_BYTES {
                    if a.large_communities.pop_last().is_none() {
                        a.communities.pop_last();
                    }
                }
                plan.problems.push(Problem::warning(
                    None,
                    None,
                    format!("BGPAdvertisements give {prefix} more communities for peer {peer} than an UPDATE holds ({bytes} bytes, {MAX_COMMUNITY_BYTES} at most); the lowest are sent"),
                ));
            }
        }
        for ((peer, prefix), asked) in prefs {
            if asked.len() > 1 {
                plan.problems.push(Problem::warning(
                    None,
                    None,
                    format!(
                        "BGPAdvertisements give {prefix} different localPref values {asked:?} for peer {peer}; announcing the highest"
                    ),
                ));
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| go_duration(s).unwrap();
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.000000001s"), Duration::from_nanos(1_000_000_001));
        for bad in [
            "",
            "90",
            "s",
            "1x",
            "-3s",
            "1e9999s",
            "9999999999999h",
            ".s",
            "1..2s",
            "99999999999999999999999s",
            "1.0000000000000000001s",
        ] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn communities() {
        assert_eq!(community("65001:100"), Some(Community::Standard(0xfde9_0064)));
        assert_eq!(
            community("large:4200000000:1:2"),
            Some(Community::Large([4_200_000_000, 1, 2]))
        );
        for bad in ["65536:1", "1:2:3", "large:1:2", "large:1:2:3:4", "x", ""] {
            assert_eq!(community(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Go's own spellings of a duration read back as that duration;
        /// any text reads as a duration or an error, never a panic.
        #[test]
        fn durations_round_trip(h in 0u64..100, m in 0u64..60, sec in 0u64..60, ms in 0u64..1000, junk in ".{0,12}") {
            let want = Duration::from_millis(((h * 60 + m) * 60 + sec) * 1000 + ms);
            let text = format!("{h}h{m}m{sec}s{ms}ms");
            proptest::prop_assert_eq!(go_duration(&text), Ok(want));
            let _ = go_duration(&junk);
        }

        /// Every community written as MetalLB writes it reads back.
        #[test]
        fn communities_round_trip(a in proptest::num::u16::ANY, b in proptest::num::u16::ANY, l in proptest::array::uniform3(proptest::num::u32::ANY), junk in ".{0,24}") {
            proptest::prop_assert_eq!(community(&format!("{a}:{b}")), Some(Community::Standard((u32::from(a) << 16) | u32::from(b))));
            proptest::prop_assert_eq!(community(&format!("large:{}:{}:{}", l[0], l[1], l[2])), Some(Community::Large(l)));
            let _ = community(&junk);
        }
    }

    #[test]
    fn a_range_splits_into_its_cidrs() {
        let pool = lb_alloc::Pool::new(
            "p",
            vec![
                "10.0.0.0/24".parse().unwrap(),
                "10.0.1.0-10.0.1.127".parse().unwrap(),
                "2001:db8::/64".parse().unwrap(),
            ],
        );
        assert_eq!(most_specific(&pool), (25, 64));
        let odd = lb_alloc::Pool::new("p", vec!["10.0.0.1-10.0.0.5".parse().unwrap()]);
        assert_eq!(most_specific(&odd).0, 32);
    }
}
