//! Announcements at takeover: gratuitous ARP (the request and the reply
//! form, both broadcast, sender = target = the address) and the unsolicited
//! neighbour advertisement (to all nodes, Override set), sent at once and
//! repeated every [`REPEAT`] for [`WINDOW`], as MetalLB does.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::wire::{self, Arp, Mac, Neighbor};

/// How often an address is announced again within its window.
pub const REPEAT: Duration = Duration::from_millis(1100);
/// How long after a takeover an address is announced.
pub const WINDOW: Duration = Duration::from_secs(5);

/// The frames that announce `ip` from `mac`, written into `bufs` (each at
/// least [`wire::ADVERT_FRAME`] bytes): how many of `bufs` were filled and
/// their lengths.
pub fn announce(mac: Mac, ip: IpAddr, bufs: &mut [[u8; wire::ADVERT_FRAME]; 2]) -> [usize; 2] {
    let mut lens = [0; 2];
    match ip {
        IpAddr::V4(a) => {
            for (i, reply) in [false, true].into_iter().enumerate() {
                let msg = Arp {
                    eth_dst: Mac::BROADCAST,
                    eth_src: mac,
                    reply,
                    sender_mac: mac,
                    sender_ip: a,
                    target_mac: if reply { Mac::BROADCAST } else { Mac::ZERO },
                    target_ip: a,
                };
                lens[i] = wire::write_arp(&mut bufs[i], &msg).unwrap_or(0);
            }
        }
        IpAddr::V6(a) => {
            let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
            let msg = Neighbor {
                eth_dst: Mac::ipv6_multicast(all),
                eth_src: mac,
                ip_src: a,
                ip_dst: all,
                advert: true,
                flags: wire::OVERRIDE,
                target: a,
                link_addr: Some(mac),
            };
            lens[0] = wire::write_advert(&mut bufs[0], &msg).unwrap_or(0);
        }
    }
    lens
}

/// When each address taken over is announced next, and until when.
#[derive(Debug, Default, Clone)]
pub struct Schedule {
    entries: BTreeMap<IpAddr, (Instant, Instant)>,
}

impl Schedule {
    /// `ip` was taken over at `now`: announced at once, then every
    /// [`REPEAT`] until `now +` [`WINDOW`]. Taking over again within the
    /// window extends it (no extra burst).
    pub fn takeover(&mut self, ip: IpAddr, now: Instant) {
        self.entries
            .entry(ip)
            .and_modify(|(_, until)| *until = now + WINDOW)
            .or_insert((now, now + WINDOW));
    }

    /// `ip` is no longer owned: no more announcements.
    pub fn release(&mut self, ip: IpAddr) {
        self.entries.remove(&ip);
    }

    /// Calls `send` for every address due at `now`, and moves it on.
    pub fn due(&mut self, now: Instant, mut send: impl FnMut(IpAddr)) {
        for (ip, (next, _)) in self.entries.iter_mut() {
            if *next <= now {
                send(*ip);
                *next = now + REPEAT;
            }
        }
        self.entries.retain(|_, (next, until)| *next <= *until);
    }

    /// When [`Schedule::due`] has something to send next.
    pub fn next_wake(&self) -> Option<Instant> {
        self.entries.values().map(|(next, _)| *next).min()
    }
}
