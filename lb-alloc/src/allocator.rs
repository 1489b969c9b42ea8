//! The allocator: which Service holds which address.
//!
//! The decision order for one Service follows MetalLB's controller
//! (`convergeBalancer`): keep what it holds while that is still valid, else
//! the addresses it requests, else the pool it requests, else the first pool
//! in [`PoolSet`] order with a free (or legally shareable) address, lowest
//! address first. Where MetalLB is random (the order of general pools) we are
//! deterministic: priority, then name.

use std::collections::{BTreeSet, HashMap};

use foldhash::fast::RandomState;
use std::net::IpAddr;
use std::sync::Arc;

use crate::addr::{Family, is_buggy, to_num};
use crate::holders::HolderMap;
use crate::pool::PoolSet;
use crate::reason::{Conflict, Need, Reason};
use crate::request::{Port, Request, ServiceKey, Want};
use crate::space::Space;
use crate::visit::sort_visits;

/// Addresses held by a Service: at most one per family, in the order they
/// were taken. Slots past `len` hold the unspecified IPv4 address, so the
/// derived equality is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ips {
    ips: [IpAddr; 2],
    len: u8,
}

impl Default for Ips {
    fn default() -> Self {
        Self {
            ips: [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); 2],
            len: 0,
        }
    }
}

impl Ips {
    fn from_slice(ips: &[IpAddr]) -> Self {
        let mut out = Self::default();
        ips.iter().take(2).for_each(|&ip| out.push(ip));
        out
    }
    fn as_slice(&self) -> &[IpAddr] {
        &self.ips[..self.len as usize]
    }
    fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.as_slice().iter().copied()
    }
    fn len(&self) -> usize {
        self.len as usize
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Adds an address; a third is ignored (callers hold one per family).
    fn push(&mut self, ip: IpAddr) {
        if let Some(s) = self.ips.get_mut(self.len as usize) {
            *s = ip;
            self.len += 1;
        }
    }
    fn to_vec(self) -> Vec<IpAddr> {
        self.as_slice().to_vec()
    }
    fn same_set(&self, other: &[IpAddr]) -> bool {
        self.len() == other.len() && other.iter().all(|ip| self.as_slice().contains(ip))
    }
}

/// What a sharing Service carries to decide who it may share with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    key: Box<str>,
    backend: Box<str>,
    ports: Box<[Port]>,
}

#[derive(Debug)]
struct Slot {
    /// `namespace/name`, shared with the name index.
    name: Arc<str>,
    /// Held addresses when `placed`; otherwise the addresses the Service
    /// held before (status, or before a pool change), still to be placed.
    ips: Ips,
    placed: bool,
    pool: u32,
    share: Option<Box<Share>>,
    fingerprint: u64,
    /// The pool-set generation it was last converged under.
    generation: u32,
    complete: bool,
    seen: u64,
}

/// The addresses one Service was given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Assignment {
    /// The addresses, one per family, in the order they were assigned.
    pub ips: Vec<IpAddr>,
    /// The pool they come from.
    pub pool: String,
}

/// The allocator's answer for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The Service holds these addresses.
    Assigned(Assignment),
    /// The Service has no address, for this reason; it is retried on every
    /// sync, so it gets one as soon as one can be given.
    Pending(Reason),
    /// Not ours (another loadBalancerClass).
    Ignored(Reason),
}

/// The result for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceResult {
    /// The Service.
    pub service: ServiceKey,
    /// What it holds now, or why it holds nothing.
    pub outcome: Outcome,
    /// Whether its addresses differ from those it held (or had in status) before.
    pub changed: bool,
    /// Addresses it lost, and why (they were no longer valid for it).
    pub evicted: Option<(Vec<IpAddr>, Reason)>,
    /// Things worth telling that are not failures (e.g. single-stack
    /// fallback of PreferDualStack).
    pub warnings: Vec<Reason>,
}

impl ServiceResult {
    /// The addresses held, empty when none.
    pub fn ips(&self) -> &[IpAddr] {
        match &self.outcome {
            Outcome::Assigned(a) => &a.ips,
            _ => &[],
        }
    }
}

/// What a [`Allocator::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncReport {
    /// One result per request, in the order the requests were given.
    pub results: Vec<ServiceResult>,
    /// Services that were held before and are gone now, with the addresses
    /// freed.
    pub released: Vec<(ServiceKey, Vec<IpAddr>)>,
}

/// Address counts of one pool, per family (index 0 IPv4, 1 IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The pool.
    pub name: String,
    /// Usable addresses (avoidBuggyIPs excluded).
    pub total: [u128; 2],
    /// Addresses held by at least one Service.
    pub in_use: [u128; 2],
}

impl PoolStats {
    /// Addresses still free in a family.
    pub fn available(&self, f: Family) -> u128 {
        self.total[f.index()] - self.in_use[f.index()]
    }
}

/// Assigns addresses to Services from a [`PoolSet`].
///
/// Deterministic: the same pools and requests give the same assignments,
/// whatever the order of the requests. Sticky: a Service keeps a valid
/// address across syncs, pool reloads and restarts (feed its status back as
/// [`Request::current_ips`]).
///
/// ```
/// use lb_alloc::{Allocator, Pool, PoolSet, Request};
///
/// let (pools, errors) = PoolSet::build([Pool::new("default", vec!["192.168.1.240-192.168.1.250".parse().unwrap()])]);
/// assert!(errors.is_empty());
/// let mut alloc = Allocator::new();
/// let report = alloc.sync(&pools, &[Request::new("default", "web"), Request::new("default", "db")]);
/// // No creation times given: ties go by namespace/name, whatever the input order.
/// assert_eq!(report.results[0].ips(), ["192.168.1.241".parse::<std::net::IpAddr>().unwrap()]);
/// assert_eq!(report.results[1].ips(), ["192.168.1.240".parse::<std::net::IpAddr>().unwrap()]);
/// ```
#[derive(Debug, Default)]
pub struct Allocator {
    class: Option<String>,
    pools: PoolSet,
    spaces: Vec<Vec<Space>>,
    generation: u32,
    epoch: u64,
    names: HashMap<Arc<str>, u32, RandomState>,
    /// Reused buffer for `namespace/name` look-ups.
    scratch: String,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    ips: HolderMap,
    /// Reused buffer for the automatic pool order of one request.
    order_buf: Vec<usize>,
    shared: HashMap<Box<str>, BTreeSet<IpAddr>>,
    /// Addresses held outside this allocator, with their holder, and
    /// whether the reservation itself marks the address used.
    reserved: HashMap<IpAddr, Reserved, RandomState>,
}

#[derive(Debug)]
struct Reserved {
    by: ServiceKey,
    taken: bool,
}

impl Allocator {
    /// An allocator for Services without a `loadBalancerClass`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An allocator for Services of one `loadBalancerClass` (`None`: only
    /// Services without one), like MetalLB's `--lb-class`.
    pub fn with_class(class: Option<String>) -> Self {
        Self {
            class,
            ..Self::default()
        }
    }

    /// The pools in force.
    pub fn pools(&self) -> &PoolSet {
        &self.pools
    }

    /// Sets the addresses held outside this allocator (e.g. by the
    /// controller of another `loadBalancerClass` sharing the pools), each
    /// with a name for its holder. No Service is given a reserved address;
    /// a Service holding one loses it at the next [`Allocator::sync`]
    /// (with [`Conflict::Reserved`]). Replaces the previous reservations;
    /// call it before `sync`.
    pub fn set_reserved(&mut self, reserved: impl IntoIterator<Item = (IpAddr, ServiceKey)>) {
        let new: HashMap<IpAddr, ServiceKey, RandomState> = reserved.into_iter().collect();
        let old = std::mem::take(&mut self.reserved);
        for (ip, r) in old {
            if r.taken
                && !new.contains_key(&ip)
                && self.ips.get(ip).is_empty()
                && let Some((p, e)) = self.pools.locate(ip)
            {
                self.spaces[p][e].put_back(to_num(ip));
            }
            if r.taken && new.contains_key(&ip) {
                self.reserved.insert(ip, Reserved { by: r.by, taken: true });
            }
        }
        for (ip, by) in new {
            if let Some(r) = self.reserved.get_mut(&ip) {
                r.by = by;
                continue;
            }
            // Holders of a newly reserved address converge again.
            for &id in self.ips.get(ip).iter() {
                if let Some(slot) = self.slots[id as usize].as_mut() {
                    slot.complete = false;
                }
            }
            self.reserved.insert(ip, Reserved { by, taken: false });
            self.take_reserved(ip);
        }
    }

    /// Marks a reserved address used, when it is in a pool and free.
    fn take_reserved(&mut self, ip: IpAddr) {
        let Some(r) = self.reserved.get_mut(&ip) else { return };
        if r.taken {
            return;
        }
        if let Some((p, e)) = self.pools.locate(ip)
            && self.spaces[p][e].is_free(to_num(ip))
        {
            self.spaces[p][e].take(to_num(ip));
            r.taken = true;
        }
    }

    /// Brings every Service in line with `pools`: Services missing from
    /// `requests` are released; holders keep valid addresses (holders first,
    /// older first, so a restart or reload moves nobody); everyone else is
    /// assigned, or gets a reason.
    pub fn sync(&mut self, pools: &PoolSet, requests: &[Request]) -> SyncReport {
        if *pools != self.pools {
            self.set_pools(pools.clone());
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let live = self.slots.len() - self.free_slots.len();
        let new = requests.len().saturating_sub(live);
        self.slots.reserve(new.saturating_sub(self.free_slots.len()));
        self.names.reserve(new);
        let mut ids = Vec::with_capacity(requests.len());
        for req in requests {
            let id = self.slot_for(req);
            let slot = self.slot_mut(id);
            // A repeated key is processed once, as its first occurrence.
            ids.push((slot.seen != epoch).then_some(id));
            slot.seen = epoch;
        }
        let mut report = SyncReport::default();
        for id in 0..self.slots.len() as u32 {
            if self.slots[id as usize].as_ref().is_some_and(|s| s.seen != self.epoch) {
                let key = ServiceKey::from_shared(&self.slot(id).name);
                if let Some(ips) = self.remove_slot(id) {
                    report.released.push((key, ips));
                }
            }
        }
        let prints: Vec<u64> = requests.iter().map(Request::fingerprint).collect();
        let mut order: Vec<usize> = (0..requests.len()).filter(|&i| ids[i].is_some()).collect();
        sort_visits(&mut order, requests, |i| ids[i].map_or(0, |id| self.slot(id).ips.len()));
        // Phase 1: put back what was held before a restart or pool change,
        // before anyone allocates anew: Services whose request is unchanged
        // first (a changed one must not push them out), then in `order`.
        let unplaced: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| ids[i].is_some_and(|id| !self.slot(id).placed && !self.slot(id).ips.is_empty()))
            .collect();
        let (same, changed): (Vec<usize>, Vec<usize>) = unplaced
            .into_iter()
            .partition(|&i| ids[i].is_some_and(|id| self.slot(id).fingerprint == prints[i]));
        for i in same.into_iter().chain(changed) {
            let id = ids[i].expect("ordered requests have slots");
            let prior = self.slot(id).ips.to_vec();
            let _ = self.place(id, &requests[i], &prior, None);
        }
        // Phase 2: converge each Service.
        let mut results: Vec<Option<ServiceResult>> = vec![None; requests.len()];
        let mut requests_changed = false;
        for &i in &order {
            let id = ids[i].expect("ordered requests have slots");
            requests_changed |= self.slot(id).fingerprint != prints[i];
            results[i] = Some(self.converge_or_keep(id, &requests[i], prints[i]));
        }
        // Phase 3: capacity that appeared during phase 2 (a Service moved or
        // was evicted, or changed so that others may now share its address,
        // after a waiting one was looked at) goes to the pending Services and
        // to dual-stack Services holding one family, in the order a restart
        // would visit them (most held first), so a restart from status finds
        // nothing to change. Taking capacity frees none, so one pass suffices.
        let freed = !report.released.is_empty() || results.iter().flatten().any(|r| r.changed);
        if freed || requests_changed {
            let mut waiting: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| {
                    let id = ids[i].expect("ordered requests have slots");
                    match results[i].as_ref().map(|r| &r.outcome) {
                        Some(Outcome::Pending(_)) => true,
                        Some(Outcome::Assigned(_)) => !self.slot(id).complete,
                        _ => false,
                    }
                })
                .collect();
            sort_visits(&mut waiting, requests, |i| {
                ids[i].map_or(0, |id| self.slot(id).ips.len())
            });
            for i in waiting {
                let first = results[i].take().expect("waiting requests have results");
                let id = ids[i].expect("ordered requests have slots");
                let mut again = self.converge(id, &requests[i], prints[i]);
                // Compare with what it held before this sync, not with what
                // it held after phase 2.
                match first.evicted {
                    Some((lost, _)) if Ips::from_slice(&lost).same_set(again.ips()) => again.changed = false,
                    lost => {
                        again.changed |= first.changed;
                        again.evicted = again.evicted.or(lost);
                    }
                }
                results[i] = Some(again);
            }
        }
        report.results = results
            .into_iter()
            .zip(requests)
            .map(|(r, req)| {
                r.unwrap_or_else(|| ServiceResult {
                    service: req.key(),
                    outcome: Outcome::Ignored(Reason::RequestChanged),
                    changed: false,
                    evicted: None,
                    warnings: vec![],
                })
            })
            .collect();
        report
    }

    /// Assigns one Service against the pools in force (an incremental
    /// [`Allocator::sync`] for embedders that track changes themselves).
    pub fn assign(&mut self, req: &Request) -> ServiceResult {
        let id = self.slot_for(req);
        self.converge(id, req, req.fingerprint())
    }

    /// Forgets a Service and frees its addresses. Returns what was freed.
    /// Pending Services may fit now: assign them again.
    pub fn release(&mut self, namespace: &str, name: &str) -> Option<Vec<IpAddr>> {
        let id = *self.names.get(format!("{namespace}/{name}").as_str())?;
        self.remove_slot(id)
    }

    /// What a Service holds.
    pub fn assignment(&self, namespace: &str, name: &str) -> Option<Assignment> {
        let slot = self.slot(*self.names.get(format!("{namespace}/{name}").as_str())?);
        (slot.placed && !slot.ips.is_empty()).then(|| Assignment {
            ips: slot.ips.to_vec(),
            pool: self.pools.pools()[slot.pool as usize].name().to_owned(),
        })
    }

    /// The Services holding an address.
    pub fn holders(&self, ip: IpAddr) -> Vec<&str> {
        self.ips.get(ip).iter().map(|&id| &*self.slot(id).name).collect()
    }

    /// Counters per pool (MetalLB's `metallb_allocator_addresses_*`).
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        self.pools
            .pools()
            .iter()
            .zip(&self.spaces)
            .map(|(pool, spaces)| {
                let mut in_use = [0u128; 2];
                for (r, s) in pool.addresses().iter().zip(spaces) {
                    in_use[r.family().index()] += s.used();
                }
                PoolStats {
                    name: pool.name().to_owned(),
                    total: [pool.capacity(Family::V4), pool.capacity(Family::V6)],
                    in_use,
                }
            })
            .collect()
    }

    /// Number of intervals in the free-address index (for memory reports).
    pub fn index_intervals(&self) -> usize {
        self.spaces.iter().flatten().map(Space::intervals).sum()
    }

    fn set_pools(&mut self, pools: PoolSet) {
        self.spaces = pools
            .pools()
            .iter()
            .map(|p| {
                p.addresses()
                    .iter()
                    .map(|r| Space::new(r, p.avoid_buggy_ips()))
                    .collect()
            })
            .collect();
        self.pools = pools;
        self.ips.clear();
        self.shared.clear();
        for slot in self.slots.iter_mut().flatten() {
            slot.placed = false;
        }
        self.generation = self.generation.wrapping_add(1);
        let reserved: Vec<IpAddr> = self.reserved.keys().copied().collect();
        for ip in reserved {
            if let Some(r) = self.reserved.get_mut(&ip) {
                r.taken = false;
            }
            self.take_reserved(ip);
        }
    }

    fn slot(&self, id: u32) -> &Slot {
        self.slots[id as usize].as_ref().expect("live slot")
    }

    fn slot_mut(&mut self, id: u32) -> &mut Slot {
        self.slots[id as usize].as_mut().expect("live slot")
    }

    fn slot_for(&mut self, req: &Request) -> u32 {
        self.scratch.clear();
        self.scratch.push_str(&req.namespace);
        self.scratch.push('/');
        self.scratch.push_str(&req.name);
        if let Some(&id) = self.names.get(self.scratch.as_str()) {
            return id;
        }
        let key: Arc<str> = Arc::from(self.scratch.as_str());
        let slot = Slot {
            name: key.clone(),
            ips: Ips::from_slice(&req.current_ips),
            placed: false,
            pool: 0,
            share: None,
            fingerprint: 0,
            generation: 0,
            complete: false,
            seen: 0,
        };
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() as u32 - 1
            }
        };
        self.names.insert(key, id);
        id
    }

    fn remove_slot(&mut self, id: u32) -> Option<Vec<IpAddr>> {
        let freed = self.unhold(id);
        let slot = self.slots[id as usize].take().expect("live slot");
        self.names.remove(&slot.name);
        self.free_slots.push(id);
        (!freed.is_empty()).then_some(freed)
    }

    /// Frees what the slot holds (if placed); returns those addresses.
    fn unhold(&mut self, id: u32) -> Vec<IpAddr> {
        let slot = self.slot(id);
        if !slot.placed {
            return Vec::new();
        }
        let held = slot.ips.to_vec();
        let key = slot.share.as_ref().map(|s| s.key.clone());
        for &ip in &held {
            if !self.ips.remove(ip, id) {
                continue;
            }
            if let Some(r) = self.reserved.get_mut(&ip) {
                // The reservation keeps it used.
                r.taken = true;
            } else if let Some((p, e)) = self.pools.locate(ip) {
                self.spaces[p][e].put_back(to_num(ip));
            }
            if let Some(k) = &key
                && let Some(set) = self.shared.get_mut(k)
            {
                set.remove(&ip);
                if set.is_empty() {
                    self.shared.remove(k);
                }
            }
        }
        let slot = self.slot_mut(id);
        slot.ips = Ips::default();
        slot.placed = false;
        held
    }

    /// Whether `req` may hold `ip` next to its current holders.
    fn may_share(&self, id: u32, req: &Request, ip: IpAddr) -> Result<(), Reason> {
        for &other in self.ips.get(ip).iter().filter(|&&o| o != id) {
            let holder = self.slot(other);
            let conflict = match (req.sharing_key.as_deref().filter(|k| !k.is_empty()), &holder.share) {
                (Some(key), Some(s)) if *s.key != *key => Some(Conflict::KeyMismatch),
                (Some(_), Some(s)) if *s.backend != *req.backend_key => Some(Conflict::BackendMismatch),
                (Some(_), Some(s)) => req
                    .ports
                    .iter()
                    .find(|p| s.ports.contains(p))
                    .map(|p| Conflict::Port(p.protocol, p.port)),
                _ => Some(Conflict::NoSharingKey),
            };
            if let Some(conflict) = conflict {
                return Err(Reason::InUse {
                    ip,
                    by: ServiceKey::from_shared(&holder.name),
                    conflict,
                });
            }
        }
        Ok(())
    }

    /// Places exactly `ips` for the slot, added to what it holds: all from
    /// one pool (`pool` if given), admitted, shareable. All or nothing.
    fn place(&mut self, id: u32, req: &Request, ips: &[IpAddr], pool: Option<usize>) -> Result<usize, Reason> {
        let slot = self.slot(id);
        let mut at = (slot.placed && !slot.ips.is_empty()).then_some(slot.pool as usize);
        for &ip in ips {
            let (p, _) = self.pools.locate(ip).ok_or(Reason::NotInAnyPool(ip))?;
            let pl = &self.pools.pools()[p];
            if pl.avoid_buggy_ips() && is_buggy(ip) {
                return Err(Reason::BuggyIp {
                    ip,
                    pool: pl.name().into(),
                });
            }
            if let Some(want) = pool.filter(|&w| w != p) {
                return Err(Reason::NotInRequestedPool {
                    ip,
                    pool: self.pools.pools()[want].name().into(),
                });
            }
            if let Some(q) = at.filter(|&q| q != p) {
                let a = self
                    .slot(id)
                    .ips
                    .iter()
                    .chain(ips.iter().copied())
                    .find(|&x| self.pools.locate(x).map(|l| l.0) == Some(q));
                return Err(Reason::DifferentPools {
                    a: a.unwrap_or(ip),
                    pool_a: self.pools.pools()[q].name().into(),
                    b: ip,
                    pool_b: pl.name().into(),
                });
            }
            at = Some(p);
            if let Some(r) = self.reserved.get(&ip) {
                return Err(Reason::InUse {
                    ip,
                    by: r.by.clone(),
                    conflict: Conflict::Reserved,
                });
            }
            if !pl.admits(&req.namespace, &req.namespace_labels, &req.labels) {
                return Err(Reason::PoolDoesNotAdmit(pl.name().into()));
            }
            self.may_share(id, req, ip)?;
        }
        let Some(p) = at else { return Err(Reason::NoPools) };
        let share = req.sharing_key.as_deref().filter(|k| !k.is_empty()).map(|k| {
            Box::new(Share {
                key: k.into(),
                backend: req.backend_key.as_str().into(),
                ports: req.ports.clone().into_boxed_slice(),
            })
        });
        let slot = self.slot_mut(id);
        if !slot.placed {
            slot.ips = Ips::default();
            slot.placed = true;
        }
        slot.pool = p as u32;
        slot.share = share;
        for &ip in ips {
            self.slot_mut(id).ips.push(ip);
            if self.ips.add(ip, id) {
                let (p, e) = self.pools.locate(ip).expect("checked above");
                self.spaces[p][e].take(to_num(ip));
                if let Some(k) = req.sharing_key.as_deref().filter(|k| !k.is_empty()) {
                    self.shared.entry(k.into()).or_default().insert(ip);
                }
            }
        }
        Ok(p)
    }

    /// The first address of family `f` in pool `p` (pool order: entries in
    /// configuration order, lowest address first) that is free or shareable.
    fn candidate(&self, id: u32, req: &Request, p: usize, f: Family) -> Option<IpAddr> {
        let pool = &self.pools.pools()[p];
        let mut best: Option<(usize, u128)> = pool
            .addresses()
            .iter()
            .zip(&self.spaces[p])
            .enumerate()
            .filter(|(_, (r, _))| r.family() == f)
            .find_map(|(e, (_, s))| s.lowest_free().map(|n| (e, n)));
        if let Some(set) = req
            .sharing_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .and_then(|k| self.shared.get(k))
        {
            for &ip in set
                .iter()
                .filter(|&&ip| Family::of(ip) == f && !self.reserved.contains_key(&ip))
            {
                let Some((q, e)) = self.pools.locate(ip) else { continue };
                let pos = (e, to_num(ip));
                if q == p && best.is_none_or(|b| pos < b) && self.may_share(id, req, ip).is_ok() {
                    best = Some(pos);
                }
            }
        }
        best.map(|(_, n)| crate::addr::from_num(f, n))
    }

    fn allocate(&mut self, id: u32, req: &Request, want: Want, pools: &[usize]) -> Result<usize, Reason> {
        let passes: &[&[Family]] = match want {
            Want::One(Family::V4) => &[&[Family::V4]],
            Want::One(Family::V6) => &[&[Family::V6]],
            Want::Both => &[&[Family::V4, Family::V6]],
            Want::Prefer(Family::V4) => &[&[Family::V4, Family::V6], &[Family::V4], &[Family::V6]],
            Want::Prefer(Family::V6) => &[&[Family::V6, Family::V4], &[Family::V6], &[Family::V4]],
        };
        for fams in passes {
            for &p in pools {
                let mut ips = [IpAddr::from([0u8; 4]); 2];
                let found = fams
                    .iter()
                    .zip(&mut ips)
                    .all(|(&f, slot)| self.candidate(id, req, p, f).map(|ip| *slot = ip).is_some());
                if found {
                    return self.place(id, req, &ips[..fams.len()], Some(p));
                }
            }
        }
        let need = match want {
            Want::One(f) => Need::One(f),
            Want::Both => Need::Both,
            Want::Prefer(_) => Need::Either,
        };
        Err(Reason::Exhausted {
            need,
            pools: pools.iter().map(|&p| self.pools.pools()[p].name().to_owned()).collect(),
        })
    }

    fn converge_or_keep(&mut self, id: u32, req: &Request, print: u64) -> ServiceResult {
        let slot = self.slot(id);
        if slot.placed && slot.complete && slot.generation == self.generation && slot.fingerprint == print {
            return ServiceResult {
                service: ServiceKey::from_shared(&slot.name),
                outcome: Outcome::Assigned(Assignment {
                    ips: slot.ips.to_vec(),
                    pool: self.pools.pools()[slot.pool as usize].name().to_owned(),
                }),
                changed: false,
                evicted: None,
                warnings: vec![],
            };
        }
        self.converge(id, req, print)
    }

    /// MetalLB's `convergeBalancer` for one Service; `print` is its
    /// request's fingerprint.
    fn converge(&mut self, id: u32, req: &Request, print: u64) -> ServiceResult {
        let before = self.slot(id).ips;
        self.unhold(id);
        {
            let gen_ = self.generation;
            let slot = self.slot_mut(id);
            slot.fingerprint = print;
            slot.generation = gen_;
            slot.complete = false;
        }
        let mut result = ServiceResult {
            service: ServiceKey::from_shared(&self.slot(id).name),
            outcome: Outcome::Pending(Reason::NoPools),
            changed: false,
            evicted: None,
            warnings: vec![],
        };
        let decided = self.decide(id, req, before, &mut result);
        let slot = self.slot(id);
        result.outcome = match decided {
            Ok(p) => {
                let want = req.want().ok();
                let partial =
                    matches!(want, Some(Want::Prefer(_))) && slot.ips.len() == 1 && req.requested_ips.is_empty();
                self.slot_mut(id).complete = !partial;
                Outcome::Assigned(Assignment {
                    ips: self.slot(id).ips.to_vec(),
                    pool: self.pools.pools()[p].name().to_owned(),
                })
            }
            Err(r @ Reason::OtherClass(_)) => Outcome::Ignored(r),
            Err(r) => Outcome::Pending(r),
        };
        // A slot that placed nothing holds nothing, whatever it remembers.
        let now = if self.slot(id).placed {
            self.slot(id).ips
        } else {
            Ips::default()
        };
        result.changed = !now.same_set(before.as_slice());
        if let (Some((lost, _)), false) = (&mut result.evicted, result.changed) {
            // Evicted and given the same addresses back: nothing was lost.
            if now.same_set(lost) {
                result.evicted = None;
            }
        }
        if !self.slot(id).placed {
            // Nothing placed: forget the prior addresses for good.
            self.slot_mut(id).ips = Ips::default();
        }
        result
    }

    fn decide(&mut self, id: u32, req: &Request, before: Ips, out: &mut ServiceResult) -> Result<usize, Reason> {
        let evict = |out: &mut ServiceResult, ips: Ips, r: Reason| {
            if !ips.is_empty() && out.evicted.is_none() {
                out.evicted = Some((ips.to_vec(), r));
            }
        };
        if req.load_balancer_class != self.class {
            evict(out, before, Reason::OtherClass(req.load_balancer_class.clone()));
            return Err(Reason::OtherClass(req.load_balancer_class.clone()));
        }
        let checked = req.want().and_then(|w| req.check_requested(w).map(|_| w));
        let want = match checked {
            Ok(w) => w,
            Err(r) => {
                evict(out, before, r.clone());
                return Err(r);
            }
        };
        if self.pools.is_empty() {
            evict(out, before, Reason::NoPools);
            return Err(Reason::NoPools);
        }
        let requested_pool = match &req.requested_pool {
            Some(name) => match self.pools.position(name) {
                Some(p) => Some(p),
                None => {
                    evict(out, before, Reason::UnknownPool(name.clone()));
                    return Err(Reason::UnknownPool(name.clone()));
                }
            },
            None => None,
        };

        // 1. Keep what is held, when still valid.
        let (mut keep, mut dropped) = (Ips::default(), Ips::default());
        for ip in before.iter() {
            if want.accepts(Family::of(ip)) {
                keep.push(ip)
            } else {
                dropped.push(ip)
            }
        }
        if let Some(ip) = dropped.iter().next() {
            evict(out, dropped, Reason::FamilyChanged(ip));
        }
        // A family whose range left every pool is let go alone: the other
        // family's address stays where it is (a PreferDualStack Service
        // keeps it; a RequireDualStack one then looks for the pair).
        if req.requested_ips.is_empty() && keep.len() > 1 {
            let (mut inside, mut outside) = (Ips::default(), Ips::default());
            for ip in keep.iter() {
                if self.pools.locate(ip).is_some() {
                    inside.push(ip);
                } else {
                    outside.push(ip);
                }
            }
            if let (Some(ip), false) = (outside.iter().next(), inside.is_empty()) {
                evict(out, outside, Reason::NotInAnyPool(ip));
                keep = inside;
            }
        }
        if let Some(first) = keep.iter().next() {
            let held_pool = self.pools.locate(first).map(|l| l.0);
            let kept = if let Some(p) = requested_pool.filter(|&p| held_pool != Some(p)) {
                Err(Reason::PoolChanged(self.pools.pools()[p].name().into()))
            } else if !req.requested_ips.is_empty() && !keep.same_set(&req.requested_ips) {
                Err(Reason::RequestChanged)
            } else {
                self.place(id, req, keep.as_slice(), requested_pool)
            };
            match kept {
                Ok(p) => match self.complete_dual(id, req, want, p) {
                    Ok(warning) => {
                        out.warnings.extend(warning);
                        return Ok(p);
                    }
                    Err(r) => {
                        self.unhold(id);
                        evict(out, keep, r);
                    }
                },
                Err(r) => evict(out, keep, r),
            }
        }

        // 2. The requested addresses.
        if !req.requested_ips.is_empty() {
            return self.place(id, req, &req.requested_ips, requested_pool);
        }
        // 3. The requested pool, or 4. the pools in automatic order.
        let mut pools = std::mem::take(&mut self.order_buf);
        pools.clear();
        match requested_pool {
            Some(p) => {
                let pool = &self.pools.pools()[p];
                if !pool.admits(&req.namespace, &req.namespace_labels, &req.labels) {
                    return Err(Reason::PoolDoesNotAdmit(pool.name().into()));
                }
                pools.push(p);
            }
            None => pools.extend(
                self.pools
                    .auto_order(&req.namespace, &req.namespace_labels, &req.labels),
            ),
        }
        let allocated = if pools.is_empty() {
            Err(Reason::NoEligiblePool)
        } else {
            self.allocate(id, req, want, &pools)
        };
        self.order_buf = pools;
        let p = allocated?;
        if let (Want::Prefer(_), &[ip]) = (want, self.slot(id).ips.as_slice()) {
            out.warnings.push(Reason::SecondFamilyUnavailable(
                Family::of(ip).other(),
                self.pools.pools()[p].name().into(),
            ));
        }
        Ok(p)
    }

    /// With one family held, a dual-stack Service gets the other from the
    /// same pool: required for RequireDualStack (error otherwise), attempted
    /// for PreferDualStack (warning otherwise).
    fn complete_dual(&mut self, id: u32, req: &Request, want: Want, p: usize) -> Result<Option<Reason>, Reason> {
        let &[held] = self.slot(id).ips.as_slice() else {
            return Ok(None);
        };
        if !matches!(want, Want::Both | Want::Prefer(_)) || !req.requested_ips.is_empty() {
            return Ok(None);
        }
        let f = Family::of(held).other();
        match self.candidate(id, req, p, f) {
            Some(ip) => self.place(id, req, &[ip], Some(p)).map(|_| None),
            None => {
                let missing = Reason::SecondFamilyUnavailable(f, self.pools.pools()[p].name().into());
                if want == Want::Both {
                    Err(missing)
                } else {
                    Ok(Some(missing))
                }
            }
        }
    }
}
