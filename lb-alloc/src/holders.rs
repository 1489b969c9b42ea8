//! Who holds each address: the reverse of the Services' address lists.
//!
//! Kept compact because there is one entry per held address: IPv4 keys are
//! `u32`, IPv6 keys are 16 bytes, and an entry is a single holder id or, for
//! the rare shared address, the index of a holder list kept on the side.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use foldhash::fast::RandomState;

/// One address's holders.
#[derive(Debug, Clone, Copy)]
enum Entry {
    One(u32),
    /// Index into [`HolderMap::lists`].
    Many(u32),
}

/// Address → holder ids (slot numbers).
#[derive(Debug, Default)]
pub(crate) struct HolderMap {
    v4: HashMap<u32, Entry, RandomState>,
    v6: HashMap<Ipv6Addr, Entry, RandomState>,
    /// Holder lists of shared addresses; emptied lists are reused.
    lists: Vec<Vec<u32>>,
    free_lists: Vec<u32>,
}

impl HolderMap {
    fn entry(&self, ip: IpAddr) -> Option<&Entry> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&u32::from(a)),
            IpAddr::V6(a) => self.v6.get(&a),
        }
    }

    fn set(&mut self, ip: IpAddr, e: Entry) {
        match ip {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), e),
            IpAddr::V6(a) => self.v6.insert(a, e),
        };
    }

    fn unset(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => self.v4.remove(&u32::from(a)),
            IpAddr::V6(a) => self.v6.remove(&a),
        };
    }

    /// The holders of `ip`, empty when it is free.
    pub(crate) fn get(&self, ip: IpAddr) -> &[u32] {
        match self.entry(ip) {
            None => &[],
            Some(Entry::One(id)) => std::slice::from_ref(id),
            Some(Entry::Many(l)) => &self.lists[*l as usize],
        }
    }

    /// Adds a holder; returns whether it is the first (the address was free).
    pub(crate) fn add(&mut self, ip: IpAddr, id: u32) -> bool {
        match self.entry(ip).copied() {
            None => {
                self.set(ip, Entry::One(id));
                true
            }
            Some(Entry::One(other)) => {
                let l = match self.free_lists.pop() {
                    Some(l) => {
                        self.lists[l as usize].extend([other, id]);
                        l
                    }
                    None => {
                        self.lists.push(vec![other, id]);
                        self.lists.len() as u32 - 1
                    }
                };
                self.set(ip, Entry::Many(l));
                false
            }
            Some(Entry::Many(l)) => {
                self.lists[l as usize].push(id);
                false
            }
        }
    }

    /// Removes a holder; returns whether it was the last (the address is
    /// free now).
    pub(crate) fn remove(&mut self, ip: IpAddr, id: u32) -> bool {
        match self.entry(ip).copied() {
            None => false,
            Some(Entry::One(_)) => {
                self.unset(ip);
                true
            }
            Some(Entry::Many(l)) => {
                let list = &mut self.lists[l as usize];
                list.retain(|&x| x != id);
                if let [one] = list[..] {
                    list.clear();
                    self.free_lists.push(l);
                    self.set(ip, Entry::One(one));
                }
                false
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
        self.lists.clear();
        self.free_lists.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_then_many_then_one_then_none() {
        let mut h = HolderMap::default();
        for ip in ["10.0.0.1", "fc00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(h.get(ip).is_empty());
            assert!(h.add(ip, 7));
            assert_eq!(h.get(ip), [7]);
            assert!(!h.add(ip, 9));
            assert!(!h.add(ip, 11));
            assert_eq!(h.get(ip), [7, 9, 11]);
            assert!(!h.remove(ip, 9));
            assert!(!h.remove(ip, 7));
            assert_eq!(h.get(ip), [11]);
            assert!(h.remove(ip, 11));
            assert!(h.get(ip).is_empty());
        }
        // The emptied list is reused.
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        h.add(ip, 1);
        h.add(ip, 2);
        assert_eq!(h.lists.len(), 1);
        assert_eq!(h.get(ip), [1, 2]);
    }
}
