//! Rules changing while the node runs: [`NodeCore::apply`] and the route-end slots.
//!
//! A batch of [`RuleChange`]s is checked whole before anything changes (ids in use or
//! unknown, counting the batch's own earlier changes; peer keys), then published in one
//! [`RouteTable::update`](crate::route::RouteTable::update): the forwarding path sees the
//! whole batch or none of it. Only then does the rest of the node follow, and nothing there
//! can fail.
//!
//! Route ends live in slots indexed by [`EndpointId`], the value a Deliver rule carries. A
//! slot freed by a batch is reused only by a later batch, after its Deliver rule is gone, so
//! an id never changes meaning under a packet. The prefix table is rebuilt from the live
//! ends after every batch, in install order: a prefix several ends claim goes to the newest,
//! and falls back to the most recent remaining claimant when that one goes. Batches are rare
//! (configuration, the node manager); they may allocate, the packet path never does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::peers::PeerIdx;
use super::probe::Pings;
use super::staging::Staged;
use super::{NodeCore, RouteEnd, buffer_len};
use crate::crypto::PublicKey;
use crate::crypto::cipher::Limits;
use crate::crypto::noise::StaticKeys;
use crate::engine::setup::{ApplyError, GrantError, Origin, RelaySetup, RouteSetup, RuleChange};
use crate::engine::usage::EndCounts;
use crate::route::{EndpointId, Entry, Prefix, PrefixTable, RouteStats, Rule};
use crate::session::{RouteIds, Session};
use crate::wire::RouteId;

/// The route ends of a node, in slots indexed by [`EndpointId`], and the prefixes they
/// claim.
#[derive(Debug, Default)]
pub(super) struct Ends {
    /// Route ends by [`EndpointId`]; `None` slots are free (listed in `free`).
    pub(super) slots: Vec<Option<RouteEnd>>,
    pub(super) free: Vec<u32>,
    next_seq: u64,
    /// Destination prefixes to the route end that carries them, and that end's peer entry
    /// (the owner of the prefix, for the source check of packets the peer sealed).
    pub(super) prefixes: PrefixTable<(EndpointId, PeerIdx)>,
    /// Each peer key's newest route end: where the stack's packets to that key go.
    by_peer: HashMap<PublicKey, EndpointId>,
    /// Prefixes granted to peer keys beyond their route ends' own ([`NodeCore::grant`]),
    /// kept while the peer has no route end, so that they outlive a route's repair.
    pub(super) grants: HashMap<PublicKey, Vec<Prefix>>,
}

impl Ends {
    /// The route end in this slot.
    pub(super) fn get_mut(&mut self, endpoint: EndpointId) -> Option<&mut RouteEnd> {
        self.slots.get_mut(endpoint.0 as usize)?.as_mut()
    }

    /// The route end whose prefixes hold `dst` (longest match).
    pub(super) fn route_to(&mut self, dst: IpAddr) -> Option<&mut RouteEnd> {
        let &(endpoint, _) = self.prefixes.lookup(dst)?;
        self.get_mut(endpoint)
    }

    /// The newest route end to `peer`.
    pub(super) fn newest_to(&mut self, peer: &PublicKey) -> Option<&mut RouteEnd> {
        let &endpoint = self.by_peer.get(peer)?;
        self.get_mut(endpoint)
    }

    /// Whether a route end to `peer` is live.
    pub(super) fn has_peer(&self, peer: &PublicKey) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// The live route ends, by slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = &RouteEnd> {
        self.slots.iter().flatten()
    }

    /// The live route ends, by slot.
    /// Every prefix a live route end claims (a prefix may appear more than once).
    pub(super) fn prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.iter().flat_map(|e| e.setup.prefixes.iter())
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut RouteEnd> {
        self.slots.iter_mut().flatten()
    }

    /// Put `end` into its slot, numbered after every end installed before it.
    fn install(&mut self, endpoint: EndpointId, mut end: RouteEnd) {
        end.seq = self.next_seq;
        self.next_seq += 1;
        let at = endpoint.0 as usize;
        if self.slots.len() <= at {
            self.slots.resize_with(at + 1, || None);
        }
        if let Some(slot) = self.slots.get_mut(at) {
            *slot = Some(end);
        }
    }

    /// A removed rule: if it delivered to a route end, the end goes (returned) and its slot
    /// is free.
    fn forget(&mut self, entry: &Entry) -> Option<RouteEnd> {
        let Rule::Deliver { endpoint, .. } = entry.rule else {
            return None;
        };
        let end = self.slots.get_mut(endpoint.0 as usize)?.take()?;
        self.free.push(endpoint.0);
        Some(end)
    }

    /// The prefix table (and each peer's newest end) from the live ends, in install order
    /// (the last claimant wins), then each granted prefix to its peer's newest end.
    pub(super) fn rebuild_prefixes(&mut self) {
        let mut order: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (e.seq, i)))
            .collect();
        order.sort_unstable();
        let mut prefixes = PrefixTable::default();
        let mut by_peer = HashMap::new();
        for (_, i) in order {
            let endpoint = EndpointId(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(Some(end)) = self.slots.get(i) {
                for p in &end.setup.prefixes {
                    prefixes.insert(*p, (endpoint, end.peer));
                }
                by_peer.insert(end.setup.peer, endpoint);
            }
        }
        for (peer, granted) in &self.grants {
            let Some(&endpoint) = by_peer.get(peer) else {
                continue;
            };
            let Some(Some(end)) = self.slots.get(endpoint.0 as usize) else {
                continue;
            };
            for p in granted {
                prefixes.insert(*p, (endpoint, end.peer));
            }
        }
        self.prefixes = prefixes;
        self.by_peer = by_peer;
    }
}

/// A change of an [`NodeCore::apply`] batch, checked as far as it can be without the table.
enum Planned {
    Relay {
        relay: RelaySetup,
        origin: Origin,
    },
    End {
        route: RouteSetup,
        origin: Origin,
        keys: Box<StaticKeys>,
        endpoint: EndpointId,
    },
    Remove {
        in_id: RouteId,
    },
}

/// What the table did for a [`Planned`] change.
enum Done {
    Added(Arc<RouteStats>),
    Removed(Entry),
}

impl NodeCore {
    /// Apply a batch of rule changes, all or nothing: every change is checked first (ids in
    /// use or unknown, counting the batch's own earlier changes; peer keys; a manager end
    /// claiming another peer's prefix, [`ApplyError::PrefixClaimed`]), then the route
    /// table changes in one atomic update, so the forwarding path sees the whole batch or
    /// none of it. Removing a route end drops its session, staged packets and pings without
    /// a close packet; its prefixes fall back to the most recent remaining end that claims
    /// them. Its peer key's memory (`peers`) stays: a route end added later with the same
    /// peer, in this batch or another, shares it.
    pub fn apply(&mut self, now: Instant, changes: Vec<RuleChange>) -> Result<(), ApplyError> {
        // The checks that need no table, and endpoint slots for new ends. A slot freed by
        // this batch is reused only by a later one, so no id changes meaning within a batch.
        self.check_claims(&changes)?;
        let mut free = self.ends.free.clone();
        let mut fresh = self.ends.slots.len();
        let mut planned = Vec::with_capacity(changes.len());
        for change in changes {
            planned.push(match change {
                RuleChange::AddRelay { relay, .. } if relay.prev_hop == relay.next_hop => {
                    return Err(ApplyError::Loop(relay.in_id));
                }
                RuleChange::AddRelay { relay, origin } => Planned::Relay { relay, origin },
                RuleChange::AddEnd { route, origin } => {
                    let keys = StaticKeys::new(self.private_key.clone(), route.peer).map_err(
                        |source| ApplyError::PeerKey {
                            in_id: route.in_id,
                            source,
                        },
                    )?;
                    let slot = free.pop().unwrap_or_else(|| {
                        fresh += 1;
                        u32::try_from(fresh - 1).unwrap_or(u32::MAX)
                    });
                    Planned::End {
                        route,
                        origin,
                        keys: Box::new(keys),
                        endpoint: EndpointId(slot),
                    }
                }
                RuleChange::Remove { in_id } => Planned::Remove { in_id },
            });
        }
        let done = self.table.update(|t| {
            let mut done = Vec::with_capacity(planned.len());
            for change in &planned {
                done.push(match change {
                    Planned::Relay { relay, .. } => {
                        let rule = Rule::Forward {
                            prev_hop: relay.prev_hop,
                            next_hop: relay.next_hop,
                            out_id: relay.out_id,
                        };
                        Done::Added(
                            t.insert(relay.in_id, rule)
                                .map_err(|_| ApplyError::InUse(relay.in_id))?,
                        )
                    }
                    Planned::End {
                        route, endpoint, ..
                    } => {
                        let rule = Rule::Deliver {
                            prev_hop: route.prev_hop,
                            endpoint: *endpoint,
                        };
                        Done::Added(
                            t.insert(route.in_id, rule)
                                .map_err(|_| ApplyError::InUse(route.in_id))?,
                        )
                    }
                    Planned::Remove { in_id } => {
                        Done::Removed(t.remove(*in_id).map_err(|_| ApplyError::NotFound(*in_id))?)
                    }
                });
            }
            Ok(done)
        })?;
        // Published; now the rest of the node follows, in batch order. Nothing fails here.
        self.ends.free = free;
        let mut removed_peers = Vec::new();
        for (change, done) in planned.into_iter().zip(done) {
            match (change, done) {
                (Planned::Relay { relay, origin }, Done::Added(stats)) => {
                    self.expiry.track(relay.in_id, origin, stats, now);
                }
                (
                    Planned::End {
                        route,
                        origin,
                        keys,
                        endpoint,
                    },
                    Done::Added(stats),
                ) => {
                    self.expiry.track(route.in_id, origin, stats, now);
                    self.install_end(now, route, origin, *keys, endpoint);
                }
                (Planned::Remove { in_id }, Done::Removed(entry)) => {
                    let origin = self.expiry.origin(in_id);
                    self.expiry.forget(in_id);
                    if let Rule::Forward { .. } = entry.rule {
                        self.retired
                            .add_relay(entry.stats.packets(), entry.stats.bytes());
                        self.metering.relay_removed(in_id, &entry, origin);
                    }
                    if let Some(end) = self.ends.forget(&entry) {
                        self.retired.add_end(end.session.stats(), end.spoofed);
                        self.metering.end_removed(&end);
                        // The peer's memory stays for the next route end with that key.
                        self.peers.detach(end.peer, now);
                        removed_peers.push(end.setup.peer);
                    }
                }
                // Each change produced its own kind of result above.
                _ => {}
            }
        }
        self.expiry.rearm(now);
        self.ends.rebuild_prefixes();
        // Streams with a key no route end leads to any more end now; those with a key that
        // still has one (a repaired route) carry on over it.
        for peer in removed_peers {
            if !self.ends.has_peer(&peer) {
                self.stack.peer_gone(&peer);
            }
        }
        Ok(())
    }

    /// A route end the manager adds may not claim a prefix that an end with another peer
    /// claims (one this node configured or asked for): otherwise whoever can make the
    /// manager install an end (or poses as it) could take another peer's traffic. Ends the
    /// batch removes do not count; ends it adds do. Configured ends keep the older rule (a
    /// prefix several claim goes to the newest), since the operator wrote them all.
    fn check_claims(&self, changes: &[RuleChange]) -> Result<(), ApplyError> {
        let removed: Vec<RouteId> = changes
            .iter()
            .filter_map(|c| match c {
                RuleChange::Remove { in_id } => Some(*in_id),
                _ => None,
            })
            .collect();
        let mut claims: Vec<(Prefix, PublicKey)> = self
            .ends
            .iter()
            .filter(|e| !removed.contains(&e.setup.in_id))
            .flat_map(|e| e.setup.prefixes.iter().map(|p| (*p, e.setup.peer)))
            .collect();
        for change in changes {
            let RuleChange::AddEnd { route, origin } = change else {
                continue;
            };
            if matches!(origin, Origin::Manager { .. }) {
                // Another peer's grant is taken only by a prefix that covers all of it: one
                // inside it (a mesh node's address inside a VPN exit's default route) is
                // the longer match for that node alone, which `accept` bounds.
                let taken = route.prefixes.iter().find(|p| {
                    claims
                        .iter()
                        .any(|(q, peer)| *peer != route.peer && overlaps(p, q))
                        || self.ends.grants.iter().any(|(peer, granted)| {
                            *peer != route.peer && granted.iter().any(|q| covers(p, q))
                        })
                });
                if let Some(prefix) = taken {
                    return Err(ApplyError::PrefixClaimed {
                        in_id: route.in_id,
                        prefix: *prefix,
                    });
                }
            }
            claims.extend(route.prefixes.iter().map(|p| (*p, route.peer)));
        }
        Ok(())
    }

    fn install_end(
        &mut self,
        now: Instant,
        route: RouteSetup,
        origin: Origin,
        keys: StaticKeys,
        endpoint: EndpointId,
    ) {
        let (base, base_unix) = self.clock;
        let unix_time = base_unix.saturating_add(now.saturating_duration_since(base));
        let ids = RouteIds {
            out_id: route.out_id,
            in_id: route.in_id,
            peer_in_id: route.peer_in_id,
        };
        let mut session = Session::new(keys, ids, Limits::WIREGUARD, now, unix_time);
        session.set_persistent_keepalive(route.persistent_keepalive);
        if route.persistent_keepalive.is_some() {
            session.request_handshake();
        }
        let peer = self.peers.attach(route.peer);
        let end = RouteEnd {
            setup: route,
            session,
            staged: Staged::new(buffer_len(self.mtu)),
            origin,
            seq: 0,
            pings: Pings::default(),
            spoofed: 0,
            peer,
            counted: EndCounts::default(),
            metered: EndCounts::default(),
        };
        self.ends.install(endpoint, end);
    }
}

impl NodeCore {
    /// Give `peer` the `prefixes` beyond its route ends' own (replacing what it had; an
    /// empty list takes the grant back): packets to them from the TUN go to the peer's
    /// newest route end, and the peer may send from them. A VPN client grants its exit
    /// `0.0.0.0/0` and `::/0`; an exit grants each client its leased addresses. A grant
    /// lasts while the node runs, whether or not the peer has a route end (it applies
    /// again when one comes back), and adds no kernel routes.
    ///
    /// Refused ([`GrantError::Claimed`]) when another peer's route end or grant has the
    /// same prefix: longest match decides between different lengths, but nothing could
    /// decide between two owners of one prefix.
    pub fn grant(&mut self, peer: PublicKey, prefixes: Vec<Prefix>) -> Result<(), GrantError> {
        let others_end = self
            .ends
            .iter()
            .filter(|e| e.setup.peer != peer)
            .flat_map(|e| e.setup.prefixes.iter());
        let others_grant = self
            .ends
            .grants
            .iter()
            .filter(|(k, _)| **k != peer)
            .flat_map(|(_, g)| g.iter());
        let others: Vec<&Prefix> = others_end.chain(others_grant).collect();
        if let Some(prefix) = prefixes.iter().find(|p| others.contains(p)) {
            return Err(GrantError::Claimed(*prefix));
        }
        if prefixes.is_empty() {
            self.ends.grants.remove(&peer);
        } else {
            let mut prefixes = prefixes;
            prefixes.sort_unstable_by_key(|p| (p.addr(), p.len()));
            prefixes.dedup();
            self.ends.grants.insert(peer, prefixes);
        }
        self.ends.rebuild_prefixes();
        Ok(())
    }

    /// The prefixes granted to each peer key ([`Self::grant`]).
    pub fn grants(&self) -> impl Iterator<Item = (&PublicKey, &[Prefix])> {
        self.ends.grants.iter().map(|(k, v)| (k, v.as_slice()))
    }
}

/// Whether `outer` holds every address of `inner`.
fn covers(outer: &Prefix, inner: &Prefix) -> bool {
    outer.len() <= inner.len() && outer.contains(inner.network())
}

/// Whether two prefixes share an address (one contains the other's network).
fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}
