//! The VPN exit's address pool: which client key holds which tunnel address. Sans-IO: no
//! clock (every call takes `now` in unix seconds), no files (the state goes through
//! [`Pool::to_state`] and [`Pool::from_state`] as serde values).
//!
//! Addresses. In the IPv4 pool the network address, the first host (`.1`, the exit's own
//! address on its TUN) and the last address (broadcast) are never leased, so a /30 has one
//! address to lease and a /29 five. A lease's IPv6 address (when the pool has IPv6) uses
//! the same host number in the IPv6 pool as its IPv4 address in the IPv4 pool, so
//! `198.19.128.7` goes with `fd00:5b::7`; the IPv6 pool must be at least as large
//! ([`PoolError::Ipv6Smaller`]), and its network address and `::1` are reserved the same
//! way.
//!
//! A lease's life (`docs/design/vpn-plan.md`, D9):
//!
//! - [`Pool::lease`] gives a key its existing entry first (whatever its state), else an
//!   address never leased since the pool was created, else the address released longest
//!   ago (least recently used, so a reused address has had the longest time for the
//!   previous client's flows to die). Each call adds a holder: a client may reconnect
//!   before its old stream has ended.
//! - [`Pool::drop_holder`] removes one; at zero the lease enters its grace period, so a
//!   client that comes back within it gets the same address.
//! - [`Pool::expire`] frees the leases whose grace has passed; [`Pool::release`] frees one
//!   at once (the client said `release`).
//!
//! Invariant: no address is ever held by two keys, and no key holds two addresses
//! (property-tested against a naive model in `pool/tests.rs`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

/// A pool could not be made, or has no address left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The IPv4 pool was given an IPv6 prefix.
    #[error("{0}: the IPv4 pool needs an IPv4 prefix")]
    NotIpv4(Prefix),
    /// The IPv6 pool was given an IPv4 prefix.
    #[error("{0}: the IPv6 pool needs an IPv6 prefix")]
    NotIpv6(Prefix),
    /// The prefix is longer than a /30 (IPv4) or a /126 (IPv6): nothing left to lease once
    /// the reserved addresses are taken out.
    #[error("{0}: too small for a pool (at most a /30 for IPv4, a /126 for IPv6)")]
    TooSmall(Prefix),
    /// The IPv6 pool has fewer host numbers than the IPv4 pool, which leases use in both.
    #[error(
        "{ipv6}: smaller than the IPv4 pool {ipv4} (a lease uses the same host number in \
         both); use a larger IPv6 prefix"
    )]
    Ipv6Smaller {
        /// The IPv4 pool.
        ipv4: Prefix,
        /// The IPv6 pool.
        ipv6: Prefix,
    },
    /// Every address is leased or in its grace period.
    #[error("all {capacity} addresses of {pool} are leased")]
    Exhausted {
        /// The IPv4 pool.
        pool: Prefix,
        /// How many addresses it can lease.
        capacity: u32,
    },
}

/// The addresses a client key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The client's node key (the route's authenticated peer).
    pub key: PublicKey,
    /// Its IPv4 address in the pool.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address, when the pool has IPv6.
    pub ipv6: Option<Ipv6Addr>,
}

/// Whether a lease is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Some lease streams are open.
    Held {
        /// How many.
        holders: u32,
        /// When the key last went from no holder to one (unix seconds).
        since: u64,
    },
    /// No stream; freed by [`Pool::expire`] once the grace has passed.
    Grace {
        /// When the last holder went (unix seconds).
        since: u64,
    },
}

/// What the exit keeps on disk: the leases and the freed addresses, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    /// Every entry, held or in grace.
    pub leases: Vec<LeaseRecord>,
    /// Addresses freed, released longest ago first (the reuse order).
    #[serde(default)]
    pub free: Vec<Ipv4Addr>,
}

/// One entry of [`PoolState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The client's key, as 64 hex digits.
    #[serde(with = "key_hex")]
    pub key: PublicKey,
    /// Its IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address, for the reader; on load it is derived from the IPv4 one again.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
}

struct Entry {
    index: u32,
    state: LeaseState,
}

/// The pool: see the module doc.
pub struct Pool {
    ipv4: Prefix,
    ipv6: Option<Prefix>,
    net4: u32,
    net6: u128,
    /// One past the last host number that may be leased (the broadcast address's).
    end: u32,
    entries: BTreeMap<PublicKey, Entry>,
    by_index: HashMap<u32, PublicKey>,
    /// Host numbers never leased, as ranges `start -> end` (end exclusive).
    fresh: BTreeMap<u32, u32>,
    /// Host numbers freed, longest ago first.
    free: VecDeque<u32>,
}

/// The first host number that may be leased: 0 is the network, 1 the exit's gateway.
const FIRST: u32 = 2;

impl Pool {
    /// An empty pool on these prefixes (host bits are ignored).
    pub fn new(ipv4: Prefix, ipv6: Option<Prefix>) -> Result<Self, PoolError> {
        let IpAddr::V4(addr4) = ipv4.network() else {
            return Err(PoolError::NotIpv4(ipv4));
        };
        if ipv4.len() > 30 {
            return Err(PoolError::TooSmall(ipv4));
        }
        // A /0 has 2^32 addresses: the broadcast's host number, 2^32 - 1, still fits.
        let end = u32::try_from((1u64 << (32 - u32::from(ipv4.len()))) - 1).unwrap_or(u32::MAX);
        let mut net6 = 0;
        if let Some(ipv6) = ipv6 {
            let IpAddr::V6(addr6) = ipv6.network() else {
                return Err(PoolError::NotIpv6(ipv6));
            };
            if ipv6.len() > 126 {
                return Err(PoolError::TooSmall(ipv6));
            }
            let bits = 128 - u32::from(ipv6.len());
            // Host numbers 2..end must all fit below 2^bits.
            if bits < 32 && u64::from(end) > 1u64 << bits {
                return Err(PoolError::Ipv6Smaller { ipv4, ipv6 });
            }
            net6 = u128::from(addr6);
        }
        Ok(Self {
            ipv4: Prefix::new(IpAddr::V4(addr4), ipv4.len()).unwrap_or(ipv4),
            ipv6: ipv6.map(|p| Prefix::new(p.network(), p.len()).unwrap_or(p)),
            net4: u32::from(addr4),
            net6,
            end,
            entries: BTreeMap::new(),
            by_index: HashMap::new(),
            fresh: BTreeMap::from([(FIRST, end)]),
            free: VecDeque::new(),
        })
    }

    /// The IPv4 pool (its network address).
    pub fn ipv4(&self) -> Prefix {
        self.ipv4
    }

    /// The IPv6 pool, if any.
    pub fn ipv6(&self) -> Option<Prefix> {
        self.ipv6
    }

    /// The exit's own IPv4 address on the TUN: host number 1 of the pool.
    pub fn gateway4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.net4.wrapping_add(1))
    }

    /// The exit's own IPv6 address on the TUN: `::1` of the IPv6 pool.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.ipv6.map(|_| Ipv6Addr::from(self.net6.wrapping_add(1)))
    }

    /// How many addresses the pool can lease at once.
    pub fn capacity(&self) -> u32 {
        self.end.saturating_sub(FIRST)
    }

    /// How many keys have an entry (held or in grace).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add a holder to `key`'s lease, making one if it has none (see the module doc for the
    /// address chosen).
    pub fn lease(&mut self, key: PublicKey, now: u64) -> Result<Lease, PoolError> {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.state = match entry.state {
                LeaseState::Held { holders, since } => LeaseState::Held {
                    holders: holders.saturating_add(1),
                    since,
                },
                LeaseState::Grace { .. } => LeaseState::Held {
                    holders: 1,
                    since: now,
                },
            };
            let index = entry.index;
            return Ok(self.lease_at(key, index));
        }
        let index = match self.take_fresh() {
            Some(index) => index,
            None => self.free.pop_front().ok_or(PoolError::Exhausted {
                pool: self.ipv4,
                capacity: self.capacity(),
            })?,
        };
        self.entries.insert(
            key,
            Entry {
                index,
                state: LeaseState::Held {
                    holders: 1,
                    since: now,
                },
            },
        );
        self.by_index.insert(index, key);
        Ok(self.lease_at(key, index))
    }

    /// Remove one holder from `key`'s lease; the last one starts its grace at `now`.
    /// Returns the new state, or `None` when the key has no entry.
    pub fn drop_holder(&mut self, key: &PublicKey, now: u64) -> Option<LeaseState> {
        let entry = self.entries.get_mut(key)?;
        if let LeaseState::Held { holders, since } = entry.state {
            entry.state = match holders.saturating_sub(1) {
                0 => LeaseState::Grace { since: now },
                holders => LeaseState::Held { holders, since },
            };
        }
        Some(entry.state)
    }

    /// Free `key`'s lease now, whatever its state; its address becomes the most recently
    /// released one.
    pub fn release(&mut self, key: &PublicKey) -> Option<Lease> {
        let entry = self.entries.remove(key)?;
        self.by_index.remove(&entry.index);
        self.free.push_back(entry.index);
        Some(self.lease_at(*key, entry.index))
    }

    /// Free every lease that has been in grace for more than `grace` seconds at `now`, in
    /// the order their grace began, and return them.
    pub fn expire(&mut self, now: u64, grace: u64) -> Vec<Lease> {
        let mut due: Vec<(u64, PublicKey)> = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry.state {
                LeaseState::Grace { since } if now.saturating_sub(since) > grace => {
                    Some((since, *key))
                }
                _ => None,
            })
            .collect();
        due.sort();
        due.iter()
            .filter_map(|(_, key)| self.release(key))
            .collect()
    }

    /// `key`'s lease and its state, if it has one.
    pub fn get(&self, key: &PublicKey) -> Option<(Lease, LeaseState)> {
        self.entries
            .get(key)
            .map(|entry| (self.lease_at(*key, entry.index), entry.state))
    }

    /// Every entry, by key.
    pub fn leases(&self) -> impl Iterator<Item = (Lease, LeaseState)> + '_ {
        self.entries
            .iter()
            .map(|(key, entry)| (self.lease_at(*key, entry.index), entry.state))
    }

    /// The state to save.
    pub fn to_state(&self) -> PoolState {
        let mut leases: Vec<(u32, LeaseRecord)> = self
            .entries
            .iter()
            .map(|(key, entry)| {
                let lease = self.lease_at(*key, entry.index);
                let record = LeaseRecord {
                    key: *key,
                    ipv4: lease.ipv4,
                    ipv6: lease.ipv6,
                };
                (entry.index, record)
            })
            .collect();
        leases.sort_by_key(|(index, _)| *index);
        PoolState {
            leases: leases.into_iter().map(|(_, record)| record).collect(),
            free: self.free.iter().map(|&i| self.ipv4_at(i)).collect(),
        }
    }

    /// A pool on these prefixes with the saved leases, each in grace from `now` (its
    /// client must come back to hold it). Entries outside the pool, and any that would
    /// break the invariant (a second entry for a key or an address), are dropped.
    pub fn from_state(
        ipv4: Prefix,
        ipv6: Option<Prefix>,
        state: PoolState,
        now: u64,
    ) -> Result<Self, PoolError> {
        let mut pool = Self::new(ipv4, ipv6)?;
        for record in &state.leases {
            let Some(index) = pool.index_of(record.ipv4) else {
                continue;
            };
            if pool.entries.contains_key(&record.key) || pool.by_index.contains_key(&index) {
                continue;
            }
            pool.remove_fresh(index);
            pool.entries.insert(
                record.key,
                Entry {
                    index,
                    state: LeaseState::Grace { since: now },
                },
            );
            pool.by_index.insert(index, record.key);
        }
        let mut seen = HashSet::new();
        for &addr in &state.free {
            let Some(index) = pool.index_of(addr) else {
                continue;
            };
            if pool.by_index.contains_key(&index) || !seen.insert(index) {
                continue;
            }
            pool.remove_fresh(index);
            pool.free.push_back(index);
        }
        Ok(pool)
    }

    /// The lowest host number never leased, taken out of the fresh ranges.
    fn take_fresh(&mut self) -> Option<u32> {
        let (&start, &end) = self.fresh.iter().next()?;
        self.fresh.remove(&start);
        if start.saturating_add(1) < end {
            self.fresh.insert(start.saturating_add(1), end);
        }
        Some(start)
    }

    /// Mark `index` as used (not fresh).
    fn remove_fresh(&mut self, index: u32) {
        let Some((&start, &end)) = self.fresh.range(..=index).next_back() else {
            return;
        };
        if index >= end {
            return;
        }
        self.fresh.remove(&start);
        if start < index {
            self.fresh.insert(start, index);
        }
        if index.saturating_add(1) < end {
            self.fresh.insert(index.saturating_add(1), end);
        }
    }

    /// The host number of `addr` if the pool may lease it.
    fn index_of(&self, addr: Ipv4Addr) -> Option<u32> {
        if !self.ipv4.contains(IpAddr::V4(addr)) {
            return None;
        }
        let index = u32::from(addr).wrapping_sub(self.net4);
        (FIRST..self.end).contains(&index).then_some(index)
    }

    fn ipv4_at(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.net4.wrapping_add(index))
    }

    fn lease_at(&self, key: PublicKey, index: u32) -> Lease {
        Lease {
            key,
            ipv4: self.ipv4_at(index),
            ipv6: self
                .ipv6
                .map(|_| Ipv6Addr::from(self.net6.wrapping_add(u128::from(index)))),
        }
    }
}

/// The default IPv6 pool of an exit: a /64 in `fd00::/8` (RFC 4193's unique local
/// addresses) whose 56 bits after `fd` come from BLAKE3 of the exit's key (`derive_key`
/// with this module's context), so two exits almost never pick the same one and an exit
/// keeps its pool across restarts.
pub fn ula_for(key: &PublicKey) -> Prefix {
    let hash = blake3::derive_key("skywire 2025 vpn exit ipv6 pool", key.as_bytes());
    let [a, b, c, d, e, f, g, ..] = hash;
    let net = u128::from_be_bytes([0xfd, a, b, c, d, e, f, g, 0, 0, 0, 0, 0, 0, 0, 0]);
    // 64 is a valid IPv6 prefix length, so `new` always succeeds.
    #[allow(clippy::expect_used)]
    Prefix::new(IpAddr::V6(Ipv6Addr::from(net)), 64).expect("/64 is a valid IPv6 length")
}

/// Keys in state files as 64 hex digits.
mod key_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use skywire_dataplane::crypto::PublicKey;

    pub(super) fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
