//! The route table: read-copy-update over [`arc_swap`].
//!
//! Readers (forwarding threads) hold an `Arc` of an immutable [`Snapshot`]; loading it is
//! lock-free (a [`RouteReader`] caches it and only touches shared memory to check that it is
//! still current). Writers (the control plane) serialise on a mutex, copy the map, apply a
//! whole batch of changes, and publish the new snapshot with one atomic swap: a reader sees
//! the table before the batch or after it, never in between. Old snapshots are freed when
//! their last reader drops them.
//!
//! Counters live in an `Arc<RouteStats>` per entry and are shared by every snapshot that has
//! the entry, so updating other routes never resets them. They are relaxed atomics: exact
//! counts, no ordering with anything else.
//!
//! `arc-swap` was chosen over a lock (readers must not block while the control plane
//! writes) and over hand-written epoch reclamation (it is small, maintained and audited).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, Cache};

use crate::wire::RouteId;

/// A local endpoint of routes on this node (a TUN device, a stream stack, a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u32);

/// What a hop does with packets that arrive with a given route id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Relay: rewrite the id to `out_id` and send to `next_hop`.
    Forward {
        /// The only transport address packets of this route may come from.
        prev_hop: SocketAddr,
        /// Where to send them.
        next_hop: SocketAddr,
        /// The route id the next hop expects.
        out_id: RouteId,
    },
    /// Last hop: hand the packet to a local endpoint.
    Deliver {
        /// The only transport address packets of this route may come from.
        prev_hop: SocketAddr,
        /// The endpoint that owns the route's session.
        endpoint: EndpointId,
    },
}

impl Rule {
    /// The hop packets of this route must come from.
    pub fn prev_hop(&self) -> SocketAddr {
        match self {
            Rule::Forward { prev_hop, .. } | Rule::Deliver { prev_hop, .. } => *prev_hop,
        }
    }
}

/// Packet and byte counters of one route at this hop.
#[derive(Debug, Default)]
pub struct RouteStats {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl RouteStats {
    /// Count one packet of `len` bytes.
    #[inline]
    pub fn record(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Count `packets` packets totalling `bytes` bytes (for batches).
    #[inline]
    pub fn record_batch(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Packets counted.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Bytes counted.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A rule and its counters.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What to do.
    pub rule: Rule,
    /// Counters, shared across snapshots.
    pub stats: Arc<RouteStats>,
}

/// A change to the table could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The route id is already in use at this hop.
    #[error("route id {0} is already in use")]
    Exists(RouteId),
    /// No rule has this route id.
    #[error("no route with id {0}")]
    NotFound(RouteId),
}

/// A hasher for route ids: one multiply of the id mixed with a per-table random seed.
///
/// Route ids are chosen at random by the control plane, not by the senders of packets, so
/// an attacker cannot fill one bucket; the seed still keeps layouts different per node.
#[derive(Debug, Clone, Copy)]
pub struct IdHasherBuilder {
    seed: u64,
}

impl IdHasherBuilder {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        // A fixed seed is still correct if the random source fails, only less varied.
        let _ = crate::crypto::keys::fill_random(&mut seed);
        Self {
            seed: u64::from_le_bytes(seed) | 1,
        }
    }
}

impl BuildHasher for IdHasherBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: self.seed }
    }
}

/// See [`IdHasherBuilder`].
#[derive(Debug, Clone, Copy)]
pub struct IdHasher {
    state: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: fold so
        // that both depend on every input bit.
        let x = self.state;
        x ^ (x >> 29) ^ (x << 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = (self.state ^ value)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(23);
    }
}

type Map = HashMap<RouteId, Entry, IdHasherBuilder>;

/// An immutable version of the table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    routes: Map,
    version: u64,
}

impl Snapshot {
    /// The entry for `id`.
    #[inline]
    pub fn lookup(&self, id: RouteId) -> Option<&Entry> {
        self.routes.get(&id)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Bumped by every published change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every rule, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (RouteId, &Entry)> {
        self.routes.iter().map(|(id, entry)| (*id, entry))
    }
}

/// Changes to apply to the table as one atomic batch; see [`RouteTable::update`].
#[derive(Debug)]
pub struct Editor<'a> {
    routes: &'a mut Map,
}

impl Editor<'_> {
    /// Add a rule for a new id; returns its counters.
    pub fn insert(&mut self, id: RouteId, rule: Rule) -> Result<Arc<RouteStats>, TableError> {
        if self.routes.contains_key(&id) {
            return Err(TableError::Exists(id));
        }
        let stats = Arc::new(RouteStats::default());
        self.routes.insert(
            id,
            Entry {
                rule,
                stats: Arc::clone(&stats),
            },
        );
        Ok(stats)
    }

    /// Change the rule of an existing id, keeping its counters.
    pub fn replace(&mut self, id: RouteId, rule: Rule) -> Result<(), TableError> {
        let entry = self.routes.get_mut(&id).ok_or(TableError::NotFound(id))?;
        entry.rule = rule;
        Ok(())
    }

    /// Remove a rule; returns it with its counters. Threads still holding an older snapshot
    /// may count a few more packets into them before they move on.
    pub fn remove(&mut self, id: RouteId) -> Result<Entry, TableError> {
        self.routes.remove(&id).ok_or(TableError::NotFound(id))
    }

    /// The entry for `id` as the batch stands so far.
    pub fn lookup(&self, id: RouteId) -> Option<&Entry> {
        self.routes.get(&id)
    }
}

/// The route table of one node.
#[derive(Debug)]
pub struct RouteTable {
    current: Arc<ArcSwap<Snapshot>>,
    writer: Mutex<()>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        let empty = Snapshot {
            routes: Map::with_hasher(IdHasherBuilder::new()),
            version: 0,
        };
        Self {
            current: Arc::new(ArcSwap::from_pointee(empty)),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot. Lock-free; cheap enough per batch of packets.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A per-thread reader that caches the snapshot and checks for a newer one on each load.
    pub fn reader(&self) -> RouteReader {
        RouteReader {
            cache: Cache::new(Arc::clone(&self.current)),
        }
    }

    /// Apply a batch of changes atomically. If `edit` returns `Err`, nothing is applied.
    pub fn update<R, E>(&self, edit: impl FnOnce(&mut Editor<'_>) -> Result<R, E>) -> Result<R, E> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load();
        let mut routes = old.routes.clone();
        let result = edit(&mut Editor {
            routes: &mut routes,
        })?;
        self.current.store(Arc::new(Snapshot {
            routes,
            version: old.version + 1,
        }));
        Ok(result)
    }

    /// Add one rule.
    pub fn insert(&self, id: RouteId, rule: Rule) -> Result<Arc<RouteStats>, TableError> {
        self.update(|t| t.insert(id, rule))
    }

    /// Remove one rule.
    pub fn remove(&self, id: RouteId) -> Result<Entry, TableError> {
        self.update(|t| t.remove(id))
    }
}

/// A forwarding thread's handle on the table; see [`RouteTable::reader`].
pub struct RouteReader {
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
}

impl core::fmt::Debug for RouteReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RouteReader")
    }
}

impl RouteReader {
    /// The current snapshot: one atomic load when nothing changed, never a lock.
    #[inline]
    pub fn load(&mut self) -> &Arc<Snapshot> {
        self.cache.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], n))
    }

    fn id(n: u32) -> RouteId {
        RouteId::new(n).unwrap()
    }

    fn deliver(n: u32) -> Rule {
        Rule::Deliver {
            prev_hop: addr(1),
            endpoint: EndpointId(n),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Replace(u32, u32),
        Remove(u32),
        Batch(Vec<(u32, u32)>, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 1u32..40;
        prop_oneof![
            (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Replace(k, v)),
            key.clone().prop_map(Op::Remove),
            (
                prop::collection::vec((key, any::<u32>()), 0..6),
                any::<bool>()
            )
                .prop_map(|(v, fail)| Op::Batch(v, fail)),
        ]
    }

    proptest! {
        /// The table against a BTreeMap: same answers, and a failed batch changes nothing.
        #[test]
        fn matches_model(ops in prop::collection::vec(op(), 1..200)) {
            let table = RouteTable::new();
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let got = table.insert(id(k), deliver(v)).is_ok();
                        let want = !model.contains_key(&k);
                        if want { model.insert(k, v); }
                        prop_assert_eq!(got, want);
                    }
                    Op::Replace(k, v) => {
                        let got = table.update(|t| t.replace(id(k), deliver(v))).is_ok();
                        let want = model.contains_key(&k);
                        if want { model.insert(k, v); }
                        prop_assert_eq!(got, want);
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(table.remove(id(k)).is_ok(), model.remove(&k).is_some());
                    }
                    Op::Batch(items, fail) => {
                        let result: Result<(), ()> = table.update(|t| {
                            for &(k, v) in &items {
                                let _ = t.remove(id(k));
                                t.insert(id(k), deliver(v)).map_err(|_| ())?;
                            }
                            if fail { Err(()) } else { Ok(()) }
                        });
                        prop_assert_eq!(result.is_ok(), !fail);
                        if !fail {
                            for &(k, v) in &items { model.insert(k, v); }
                        }
                    }
                }
                let snap = table.snapshot();
                prop_assert_eq!(snap.len(), model.len());
                for k in 1..40 {
                    let got = snap.lookup(id(k)).map(|e| e.rule);
                    prop_assert_eq!(got, model.get(&k).map(|&v| deliver(v)));
                }
            }
        }
    }

    #[test]
    fn counters_survive_other_updates_and_replace() {
        let table = RouteTable::new();
        let stats = table.insert(id(1), deliver(1)).unwrap();
        table.snapshot().lookup(id(1)).unwrap().stats.record(100);
        table.insert(id(2), deliver(2)).unwrap();
        table.update(|t| t.replace(id(1), deliver(9))).unwrap();
        table.snapshot().lookup(id(1)).unwrap().stats.record(50);
        assert_eq!((stats.packets(), stats.bytes()), (2, 150));
        let removed = table.remove(id(1)).unwrap();
        assert_eq!(removed.stats.bytes(), 150);
        assert_eq!(
            table.insert(id(2), deliver(2)).err(),
            Some(TableError::Exists(id(2)))
        );
    }

    /// Readers on other threads never see half a batch: forward and reverse ids of a route
    /// are installed and removed together, and every snapshot has both or neither.
    #[test]
    fn readers_never_see_half_a_batch() {
        let table = Arc::new(RouteTable::new());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let table = Arc::clone(&table);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut reader = table.reader();
                    let mut checks = 0u64;
                    let mut versions_seen = 0u64;
                    let mut last_version = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let snap = reader.load();
                        if snap.version() != last_version {
                            versions_seen += 1;
                            last_version = snap.version();
                        }
                        for k in (1..200).step_by(2) {
                            let a = snap.lookup(id(k)).is_some();
                            let b = snap.lookup(id(k + 1)).is_some();
                            assert_eq!(a, b, "half-applied batch at version {}", snap.version());
                            checks += 1;
                        }
                    }
                    (checks, versions_seen)
                })
            })
            .collect();
        for round in 0..2000u32 {
            let k = (round % 100) * 2 + 1;
            let present = table.snapshot().lookup(id(k)).is_some();
            table
                .update(|t| -> Result<(), TableError> {
                    if present {
                        t.remove(id(k))?;
                        t.remove(id(k + 1))?;
                    } else {
                        t.insert(id(k), deliver(k))?;
                        t.insert(id(k + 1), deliver(k + 1))?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            let (checks, versions) = reader.join().unwrap();
            assert!(checks > 0 && versions > 0);
        }
        assert_eq!(table.snapshot().version(), 2000);
    }

    #[test]
    fn reader_sees_updates() {
        let table = RouteTable::new();
        let mut reader = table.reader();
        assert!(reader.load().lookup(id(5)).is_none());
        table.insert(id(5), deliver(5)).unwrap();
        assert!(reader.load().lookup(id(5)).is_some());
    }
}
