//! Link-layer sockets: per interface, one `AF_PACKET` socket that receives
//! the ARP frames that arrive on it and one the neighbour solicitations and
//! advertisements (kernel filters drop everything else before it is
//! copied out), and one that sends whole Ethernet frames out of it. And the IPv6 solicited-node multicast groups joined for the
//! owned IPv6 addresses, so that solicitations reach the interface (and
//! switches that snoop MLD forward them).
//!
//! The one place in lb that uses `unsafe`: the kernel takes the interface
//! to bind to as a `sockaddr_ll`, which the socket library has no safe
//! constructor for; the reactor takes the socket's descriptor on the
//! promise that it stays open; and [`realtime`] asks the kernel for a
//! scheduling class through libc.

use std::collections::BTreeMap;
use std::io::{self, Read as _};
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockFilter, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// The EtherType of IPv6.
const ETH_P_IPV6: u16 = 0x86dd;

/// A packet socket bound to one interface.
#[derive(Debug)]
pub struct Packet {
    fd: AsyncFd<Socket>,
}

impl Packet {
    /// Opens the sending socket on the interface `index` (it receives
    /// nothing). Needs `CAP_NET_RAW`.
    #[allow(unsafe_code)]
    pub fn open(index: u32) -> io::Result<Self> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        socket.bind(&link_address(index, 0)?)?;
        socket.set_nonblocking(true)?;
        // SAFETY: the socket owns its descriptor, which stays open, and is
        // the one `as_raw_fd` returns, until the `AsyncFd` drops it.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) }?;
        Ok(Self { fd })
    }

    /// Sends one Ethernet frame, waiting for room in the send buffer.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |s| s.send(frame))
            .await
            .map(|_| ())
    }
}

/// What a [`Receiver`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ARP frames.
    Arp,
    /// IPv6 neighbour solicitations and advertisements.
    Ndp,
}

/// A blocking socket on one interface that receives one family of frames,
/// for a thread of its own: a frame wakes that thread straight from the
/// kernel, with no event loop between (a responder mostly sleeps, and
/// waking is most of its reply time). Replies go out of it too. Bound to
/// its EtherType (not to every protocol), it never sees what the host
/// sends, so the host's own traffic is not copied to it.
#[derive(Debug)]
pub struct Receiver {
    socket: Socket,
}

impl Receiver {
    /// Opens it on the interface `index`; a blocked receive returns
    /// `WouldBlock`/`TimedOut` after `tick` so that its thread can look
    /// whether it should stop. Needs `CAP_NET_RAW`.
    pub fn open(index: u32, family: Family, tick: std::time::Duration) -> io::Result<Self> {
        // Protocol 0 receives nothing until bound: the filter is in place
        // before the first frame is queued.
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        let protocol = match family {
            Family::Arp => {
                socket.attach_filter(&arp_filter())?;
                ETH_P_ARP
            }
            Family::Ndp => {
                socket.attach_filter(&ndp_filter())?;
                ETH_P_IPV6
            }
        };
        socket.bind(&link_address(index, protocol)?)?;
        socket.set_read_timeout(Some(tick))?;
        Ok(Self { socket })
    }

    /// Waits for the next frame into `buf` (a longer one is cut to `buf`'s
    /// length).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.socket).read(buf)
    }

    /// Sends one Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.socket.send(frame).map(|_| ())
    }
}

/// The `sockaddr_ll` of interface `index` for `protocol` (0: none).
#[allow(unsafe_code)]
fn link_address(index: u32, protocol: u16) -> io::Result<SockAddr> {
    let index = i32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's `sockaddr_*` types,
    // smaller than the storage (the call checks that too).
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = index;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of `len` bytes.
    Ok(unsafe { SockAddr::new(storage, len) })
}

// Classic BPF, as the kernel runs it on each frame before it is queued.
const LD_B_ABS: u16 = 0x30;
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
/// The kernel's ancillary data: whether the frame carried a VLAN tag (the
/// tag is taken off before packet sockets see it: a tagged frame belongs to
/// the VLAN interface, not to this one).
const VLAN_TAG_PRESENT: u32 = 0xffff_f000 + 48;
/// The kernel's ancillary data: the packet type.
const PKTTYPE: u32 = 0xffff_f000 + 4;
/// Unicast to another host (seen in promiscuous mode only).
const OTHERHOST: u32 = 3;
/// Keep the frame (up to this many bytes).
const KEEP: u32 = 0xffff;

/// ARP frames, but those of a VLAN and those for another host.
fn arp_filter() -> [SockFilter; 6] {
    [
        /* 0 */ SockFilter::new(LD_W_ABS, 0, 0, VLAN_TAG_PRESENT),
        /* 1 */ SockFilter::new(JEQ_K, 3, 0, 1), // tagged → 5 drop
        /* 2 */ SockFilter::new(LD_B_ABS, 0, 0, PKTTYPE),
        /* 3 */ SockFilter::new(JEQ_K, 1, 0, OTHERHOST), // → 5 drop
        /* 4 */ SockFilter::new(RET_K, 0, 0, KEEP),
        /* 5 */ SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// IPv6 frames whose next header is ICMPv6 (58) with type 135
/// (solicitation) or 136 (advertisement), but those of a VLAN and those for
/// another host. The filter looks at fixed offsets: neighbour discovery
/// behind extension headers (which RFC 4861 hosts do not send) is dropped.
fn ndp_filter() -> [SockFilter; 12] {
    [
        /* 0 */ SockFilter::new(LD_W_ABS, 0, 0, VLAN_TAG_PRESENT),
        /* 1 */ SockFilter::new(JEQ_K, 9, 0, 1), // tagged → 11 drop
        /* 2 */ SockFilter::new(LD_B_ABS, 0, 0, PKTTYPE),
        /* 3 */ SockFilter::new(JEQ_K, 7, 0, OTHERHOST), // → 11 drop
        /* 4 */ SockFilter::new(LD_B_ABS, 0, 0, 14 + 6), // next header
        /* 5 */ SockFilter::new(JEQ_K, 0, 5, 58), // else → 11 drop
        /* 6 */ SockFilter::new(LD_B_ABS, 0, 0, 14 + 40), // ICMPv6 type
        /* 7 */ SockFilter::new(JEQ_K, 2, 0, 135), // → 10 keep
        /* 8 */ SockFilter::new(JEQ_K, 1, 0, 136), // → 10 keep
        /* 9 */ SockFilter::new(RET_K, 0, 0, 0),
        /* 10 */ SockFilter::new(RET_K, 0, 0, KEEP),
        /* 11 */ SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// The solicited-node multicast groups joined on one interface, counted
/// per group (addresses that share their last 24 bits share a group).
/// The kernel caps the groups one socket may hold, so more sockets are
/// opened as they fill.
#[derive(Debug)]
pub struct Groups {
    index: u32,
    sockets: Vec<UdpSocket>,
    /// Group → (socket, how many owned addresses need it).
    joined: BTreeMap<Ipv6Addr, (usize, usize)>,
}

impl Groups {
    /// No group joined yet on the interface `index`.
    pub fn new(index: u32) -> Self {
        Self {
            index,
            sockets: Vec::new(),
            joined: BTreeMap::new(),
        }
    }

    /// Joins `group` (once per group however many addresses need it).
    pub fn join(&mut self, group: Ipv6Addr) -> io::Result<()> {
        if let Some((_, n)) = self.joined.get_mut(&group) {
            *n += 1;
            return Ok(());
        }
        // Only the newest socket can have room: the others filled up.
        if let Some(s) = self.sockets.last() {
            match s.join_multicast_v6(&group, self.index) {
                Ok(()) => {
                    self.joined.insert(group, (self.sockets.len() - 1, 1));
                    return Ok(());
                }
                // Full: a new socket below.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ENOMEM)) => {}
                Err(e) => return Err(e),
            }
        }
        let s = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
        s.join_multicast_v6(&group, self.index)?;
        self.sockets.push(s);
        self.joined.insert(group, (self.sockets.len() - 1, 1));
        Ok(())
    }

    /// Leaves `group` once no owned address needs it.
    pub fn leave(&mut self, group: Ipv6Addr) {
        let Some((socket, n)) = self.joined.get_mut(&group) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            let socket = *socket;
            self.joined.remove(&group);
            if let Err(e) = self.sockets[socket].leave_multicast_v6(&group, self.index) {
                tracing::debug!(%group, error = %e, "leaving a multicast group");
            }
        }
    }

    /// The groups joined.
    pub fn joined(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.joined.keys().copied()
    }
}

/// Puts the calling thread in the real-time FIFO class at a low priority
/// (10 of 99), as keepalived does for VRRP: a receiving thread then runs as
/// soon as a frame wakes it, instead of waiting its turn, which roughly
/// halves a reply's latency on a busy or virtualised node. The work per
/// frame is a few microseconds and the kernel caps real-time threads at
/// 95% of a CPU, so a flood cannot take a core. Needs `CAP_SYS_NICE` (or
/// an `RLIMIT_RTPRIO`); without it, the thread stays as it is.
#[allow(unsafe_code)]
pub fn realtime() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: `param` is a valid, initialised `sched_param` that outlives
    // the call; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
