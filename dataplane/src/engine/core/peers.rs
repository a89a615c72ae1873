//! The node's memory of its peer keys: one [`PeerMemory`] per peer key the node has or had
//! a route end with, shared by all its route ends with that key.
//!
//! A route end's session goes when the route end goes (removed, re-installed, repaired);
//! its peer's memory stays, so a fresh session still refuses initiations no newer than one
//! the node accepted from that key before, counts the key's initiations against the same
//! rate budget, and sends timestamps newer than any it sent the key (`session::peer`
//! says what each piece is for). A restart of the node loses it all, as in WireGuard.
//!
//! An entry is found or made when a route end is installed (`apply`, which may allocate),
//! and route ends hold its index: the packet path reaches the memory without hashing,
//! allocating or locking. Indices never change meaning while a route end holds them: an
//! entry is reused for another key only when no route end has its key.
//!
//! **Bound.** At most [`PEERS_REMEMBERED`] entries, or more only while more distinct peer
//! keys than that have a live route end at once (an entry per live peer, which the route
//! ends themselves outweigh). When a new key needs an entry and the table is full, the
//! entry of the key whose last route end went longest ago is given to the new key: that
//! key is forgotten as a restart would forget it (an initiation captured from it could be
//! accepted once on a new route end to it with the same route ids, which still gives the
//! replayer no keys), and its rate budget starts full. With no key free of route ends, the
//! table grows by one instead.

use std::collections::HashMap;
use std::time::Instant;

use crate::crypto::PublicKey;
use crate::session::PeerMemory;

/// Peer keys without a route end whose memory is kept, at the least. An entry is about
/// 150 bytes with its index, so a full table is about 600 KiB.
pub const PEERS_REMEMBERED: usize = 4096;

/// The index of a peer key's entry, held by each route end with that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PeerIdx(usize);

#[derive(Debug)]
struct Entry {
    key: PublicKey,
    memory: PeerMemory,
    /// Live route ends with this key.
    ends: usize,
    /// When the last of them went (`None` while there are some, or never were).
    released: Option<Instant>,
}

/// One [`PeerMemory`] per peer key, in slots that route ends index.
#[derive(Debug)]
pub(super) struct Peers {
    entries: Vec<Entry>,
    by_key: HashMap<PublicKey, usize>,
    limit: usize,
}

impl Default for Peers {
    fn default() -> Self {
        Self::with_limit(PEERS_REMEMBERED)
    }
}

impl Peers {
    /// A table that reuses entries once it holds `limit` of them.
    pub(super) fn with_limit(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            by_key: HashMap::new(),
            limit,
        }
    }

    /// A route end with `key` is installed: its entry, found or made.
    pub(super) fn attach(&mut self, key: PublicKey) -> PeerIdx {
        let fresh = Entry {
            key,
            memory: PeerMemory::new(),
            ends: 1,
            released: None,
        };
        if let Some(&at) = self.by_key.get(&key)
            && let Some(entry) = self.entries.get_mut(at)
        {
            entry.ends += 1;
            entry.released = None;
            return PeerIdx(at);
        }
        let reusable = (self.entries.len() >= self.limit)
            .then(|| self.longest_released())
            .flatten();
        let at = match reusable.and_then(|at| Some((at, self.entries.get_mut(at)?))) {
            Some((at, entry)) => {
                self.by_key.remove(&entry.key);
                *entry = fresh;
                at
            }
            None => {
                self.entries.push(fresh);
                self.entries.len() - 1
            }
        };
        self.by_key.insert(key, at);
        PeerIdx(at)
    }

    /// A route end holding `idx` went at `now`. Its key's memory stays.
    pub(super) fn detach(&mut self, idx: PeerIdx, now: Instant) {
        if let Some(entry) = self.entries.get_mut(idx.0) {
            entry.ends = entry.ends.saturating_sub(1);
            if entry.ends == 0 {
                entry.released = Some(now);
            }
        }
    }

    /// An initiation accepted from `key` before the node restarted: remembered in the
    /// key's entry, made if there is none (as for a key whose route ends went at `now`;
    /// within the table's bound).
    pub(super) fn restore(&mut self, key: PublicKey, timestamp: u64, mac: [u8; 16], now: Instant) {
        if let Some(&at) = self.by_key.get(&key)
            && let Some(entry) = self.entries.get_mut(at)
        {
            entry.memory.restore_accepted(timestamp, mac);
            return;
        }
        if self.entries.len() >= self.limit {
            return;
        }
        let mut memory = PeerMemory::new();
        memory.restore_accepted(timestamp, mac);
        self.entries.push(Entry {
            key,
            memory,
            ends: 0,
            released: Some(now),
        });
        self.by_key.insert(key, self.entries.len() - 1);
    }

    /// Every key with an accepted initiation: the key, its timestamp and mac1.
    pub(super) fn accepted(&self) -> impl Iterator<Item = (PublicKey, u64, [u8; 16])> + '_ {
        self.entries.iter().filter_map(|e| {
            e.memory
                .accepted_initiation()
                .map(|(timestamp, mac)| (e.key, timestamp, mac))
        })
    }

    /// The memory a route end reaches with its index.
    pub(super) fn memory_mut(&mut self, idx: PeerIdx) -> Option<&mut PeerMemory> {
        self.entries.get_mut(idx.0).map(|e| &mut e.memory)
    }

    /// The memory of `key`, if the node remembers it.
    pub(super) fn memory(&self, key: &PublicKey) -> Option<&PeerMemory> {
        let at = *self.by_key.get(key)?;
        self.entries.get(at).map(|e| &e.memory)
    }

    /// How many peer keys the node remembers.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry, among those of keys without a route end, whose last route end went
    /// longest ago.
    fn longest_released(&self) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ends == 0)
            .min_by_key(|(_, e)| e.released)
            .map(|(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    #[test]
    fn one_entry_per_key_kept_after_its_route_ends_go() {
        let mut peers = Peers::default();
        let now = Instant::now();
        let a = peers.attach(key(1));
        let again = peers.attach(key(1));
        assert_eq!(a, again);
        let b = peers.attach(key(2));
        assert_ne!(a, b);
        peers.memory_mut(a).unwrap().next_timestamp(77);
        peers.detach(a, now);
        peers.detach(again, now);
        assert_eq!(peers.len(), 2);
        // The key comes back on a new route end: same entry, same memory.
        let back = peers.attach(key(1));
        assert_eq!(back, a);
        assert_eq!(peers.memory(&key(1)).unwrap().newest_sent(), 77);
    }

    #[test]
    fn what_a_restart_restores_is_kept_unless_something_newer_came_since() {
        let mut peers = Peers::with_limit(2);
        let now = Instant::now();
        // Key 1 has a route end that accepted a newer initiation already; key 2 has none.
        let a = peers.attach(key(1));
        peers.memory_mut(a).unwrap().restore_accepted(500, [1; 16]);
        peers.restore(key(1), 400, [9; 16], now);
        peers.restore(key(2), 300, [2; 16], now);
        let mut all: Vec<_> = peers.accepted().collect();
        all.sort_by_key(|(k, _, _)| *k);
        assert_eq!(all, [(key(1), 500, [1; 16]), (key(2), 300, [2; 16])]);
        // A later route end to key 2 finds it: older initiations are refused.
        let b = peers.attach(key(2));
        assert!(!peers.memory_mut(b).unwrap().is_newer(300));
        assert!(peers.memory_mut(b).unwrap().is_newer(301));
        // The bound holds: a third key is not restored into a full table.
        peers.restore(key(3), 100, [3; 16], now);
        assert_eq!(peers.len(), 2);
    }

    #[test]
    fn at_the_bound_the_key_released_longest_ago_is_forgotten() {
        let mut peers = Peers::with_limit(3);
        let t0 = Instant::now();
        let idx: Vec<PeerIdx> = (1..=3).map(|n| peers.attach(key(n))).collect();
        for (i, &at) in idx.iter().enumerate() {
            peers.memory_mut(at).unwrap().next_timestamp(100 + i as u64);
        }
        // Keys 2 and 3 lose their route ends, 3 first; key 1 keeps its own.
        peers.detach(idx[2], t0);
        peers.detach(idx[1], t0 + Duration::from_secs(1));
        let four = peers.attach(key(4));
        assert_eq!(four, idx[2], "key 3's entry is reused");
        assert_eq!(peers.len(), 3);
        assert!(peers.memory(&key(3)).is_none());
        assert_eq!(peers.memory(&key(4)), Some(&PeerMemory::new()));
        assert_eq!(peers.memory(&key(2)).unwrap().newest_sent(), 101);
        // Key 2 goes next; then nothing is free and the table grows.
        assert_eq!(peers.attach(key(5)), idx[1]);
        let six = peers.attach(key(6));
        assert_eq!(peers.len(), 4);
        assert!(![idx[0], idx[1], idx[2]].contains(&six));
        assert_eq!(peers.memory(&key(1)).unwrap().newest_sent(), 100);
    }
}
