//! The sans-IO core of a node: every per-packet decision of the engine, with no socket, no
//! TUN device and no clock. The driver feeds it datagrams, TUN packets and the time, and it
//! answers through a [`NodeIo`] sink that the driver implements over the real sockets (and
//! tests implement over vectors).
//!
//! Call order: [`NodeCore::handle_datagram`] for every datagram, [`NodeCore::handle_tun_packet`]
//! for every TUN packet, [`NodeCore::poll_timers`] after each batch and when
//! [`NodeCore::next_deadline`] passes, and [`NodeCore::drain_events`] after that. Control
//! requests ([`NodeCore::apply`], [`NodeCore::probe`], [`NodeCore::ping`],
//! [`NodeCore::status`]) come between batches.
//!
//! Rules change while the node runs: [`NodeCore::apply`] takes a batch of
//! [`RuleChange`]s, checks all of it, and publishes the table change in one
//! [`RouteTable::update`], so the forwarding path sees the whole batch or none of it. Route
//! ends live in slots indexed by [`EndpointId`]; a slot is reused only after its Deliver
//! rule is gone. A prefix claimed by several route ends goes to the one added last; when it
//! goes, the prefix falls back to the most recent remaining claimant (the prefix table is
//! rebuilt from the live ends after each batch). Manager rules expire when their packet
//! counter stands still for their `expire_after`, sampled at most once a second.
//!
//! Link probes (type 8 and 9, route id zero) are handled before the route table: a probe
//! is answered in place to its source; a reply counts only from the address its probe went
//! to, with a nonce still outstanding (at most [`PROBES_OUTSTANDING`], oldest forgotten
//! first). Pings go through a route end's session; each end keeps at most
//! [`PINGS_PER_ROUTE`] of them (waiting for keys or for their pong, oldest forgotten first).
//! What the core learns on its own is queued as [`EngineEvent`]s, at most [`EVENT_QUEUE`]
//! until drained; more are counted and dropped. Nothing here allocates per packet: the
//! probe table and the event queue are allocated once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::event::{EVENT_QUEUE, EngineEvent};
use super::setup::{ApplyError, NodeSetup, Origin, RelaySetup, RouteSetup, RuleChange};
use super::status::{NodeStatus, RelayStatus, RouteStatus};
use crate::crypto::cipher::Limits;
use crate::crypto::noise::StaticKeys;
use crate::crypto::{PrivateKey, PublicKey};
use crate::route::{
    Decision, EndpointId, Entry, ForwardDrop, ForwardStats, PrefixTable, RouteReader, RouteStats,
    RouteTable, Rule, forward, prefix,
};
use crate::session::{DropReason, HEADROOM, Outcome, SendError, Session};
use crate::wire::{
    HANDSHAKE_INIT_LEN, LINK_PROBE_LEN, LinkProbePacket, LinkProbeRepr, PING_LEN, RouteId, TAG_LEN,
    is_link_probe,
};

/// Packets kept per route while its handshake runs; older ones are dropped first.
pub const STAGED_PER_ROUTE: usize = 16;
/// Link probes awaiting their reply; when full, the oldest is forgotten.
pub const PROBES_OUTSTANDING: usize = 1024;
/// Pings kept per route end (waiting for keys, or for their pong); the oldest is forgotten.
pub const PINGS_PER_ROUTE: usize = 8;
/// How often the packet counters of manager rules are sampled for expiry.
pub const EXPIRY_SAMPLE: Duration = Duration::from_secs(1);

/// Where the core's output goes. Sends are best effort: an implementation that cannot send
/// (a full socket buffer) drops the packet and counts it with [`NodeDrop::QueueFull`].
pub trait NodeIo {
    /// Send `packet` on the transport to `to`.
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]);
    /// Write an IP packet to the TUN device.
    fn write_tun(&mut self, packet: &[u8]);
}

/// Node-wide drops that happen before a packet reaches a route's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeDrop {
    /// A TUN packet that is not IPv4 or IPv6.
    NotIp,
    /// A TUN packet whose destination matches no route's prefixes.
    NoRoute,
    /// A TUN packet dropped while its route had no keys (the staging queue was full).
    NoSession,
    /// A packet the driver could not send or write (socket buffer or TUN queue full).
    QueueFull,
    /// A TUN packet larger than the buffers (above the configured MTU).
    TooBig,
    /// A malformed link probe or probe reply (type 8 or 9).
    BadProbe,
    /// A probe reply whose nonce is not outstanding, or that came from another address
    /// than the probe went to.
    UnexpectedProbeReply,
    /// An authenticated pong that answers no ping of its route end.
    UnexpectedPong,
}

impl NodeDrop {
    /// Every reason, in counter order.
    pub const ALL: [NodeDrop; 8] = [
        NodeDrop::NotIp,
        NodeDrop::NoRoute,
        NodeDrop::NoSession,
        NodeDrop::QueueFull,
        NodeDrop::TooBig,
        NodeDrop::BadProbe,
        NodeDrop::UnexpectedProbeReply,
        NodeDrop::UnexpectedPong,
    ];

    /// A short name for status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeDrop::NotIp => "not ip",
            NodeDrop::NoRoute => "no route",
            NodeDrop::NoSession => "no session",
            NodeDrop::QueueFull => "queue full",
            NodeDrop::TooBig => "too big",
            NodeDrop::BadProbe => "bad probe",
            NodeDrop::UnexpectedProbeReply => "unexpected probe reply",
            NodeDrop::UnexpectedPong => "unexpected pong",
        }
    }
}

/// Counters of [`NodeDrop`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeDrops([u64; NodeDrop::ALL.len()]);

impl NodeDrops {
    /// Count one.
    pub fn add(&mut self, reason: NodeDrop) {
        self.add_n(reason, 1);
    }

    /// Count `n`.
    pub fn add_n(&mut self, reason: NodeDrop, n: u64) {
        if let Some(c) = self.0.get_mut(reason as usize) {
            *c += n;
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: NodeDrop) -> u64 {
        self.0.get(reason as usize).copied().unwrap_or(0)
    }
}

/// The core could not be built from its setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The configured rules were refused (two use the same incoming id, or a peer key is
    /// unusable).
    #[error(transparent)]
    Rules(#[from] ApplyError),
}

/// A ping could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// No route end has this incoming id.
    #[error("no route end with route id {0}")]
    UnknownRoute(RouteId),
}

/// A fixed ring of preallocated buffers for payloads waiting for a handshake.
#[derive(Debug)]
struct Staged {
    slots: Vec<Vec<u8>>,
    lens: [usize; STAGED_PER_ROUTE],
    head: usize,
    len: usize,
}

impl Staged {
    fn new(buffer_len: usize) -> Self {
        Self {
            slots: (0..STAGED_PER_ROUTE)
                .map(|_| vec![0u8; buffer_len])
                .collect(),
            lens: [0; STAGED_PER_ROUTE],
            head: 0,
            len: 0,
        }
    }

    /// Keep a copy of `payload`; returns false if the oldest one had to be dropped.
    fn push(&mut self, payload: &[u8]) -> bool {
        let dropped_oldest = self.len == STAGED_PER_ROUTE;
        if dropped_oldest {
            self.head = (self.head + 1) % STAGED_PER_ROUTE;
            self.len -= 1;
        }
        let at = (self.head + self.len) % STAGED_PER_ROUTE;
        if let (Some(slot), Some(len)) = (self.slots.get_mut(at), self.lens.get_mut(at))
            && let Some(dst) = slot.get_mut(HEADROOM..HEADROOM + payload.len())
        {
            dst.copy_from_slice(payload);
            *len = payload.len();
            self.len += 1;
        }
        !dropped_oldest
    }

    /// The oldest buffer and its payload length, removed from the queue.
    fn pop(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        if self.len == 0 {
            return None;
        }
        let at = self.head;
        self.head = (self.head + 1) % STAGED_PER_ROUTE;
        self.len -= 1;
        let len = *self.lens.get(at)?;
        Some((self.slots.get_mut(at)?, len))
    }
}

/// A ping of a route end: waiting for keys (`sent` is `None`) or for its pong.
#[derive(Debug, Clone, Copy)]
struct Ping {
    nonce: u64,
    sent: Option<Instant>,
}

/// The pings of one route end, in a fixed ring.
#[derive(Debug, Default)]
struct Pings {
    slots: [Option<Ping>; PINGS_PER_ROUTE],
    next: usize,
    /// How many wait for keys (so the packet path can skip the ring when none do).
    unsent: usize,
}

impl Pings {
    /// Keep a new ping waiting to be sent, forgetting the oldest if the ring is full.
    fn push(&mut self, nonce: u64) {
        if let Some(slot) = self.slots.get_mut(self.next) {
            *slot = Some(Ping { nonce, sent: None });
        }
        self.next = (self.next + 1) % PINGS_PER_ROUTE;
        self.count_unsent();
    }

    fn count_unsent(&mut self) {
        self.unsent = self
            .slots
            .iter()
            .flatten()
            .filter(|p| p.sent.is_none())
            .count();
    }

    /// The sending time of the sent ping with this nonce, which is forgotten.
    fn answer(&mut self, nonce: u64) -> Option<Instant> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_some_and(|p| p.nonce == nonce && p.sent.is_some()))?;
        slot.take().and_then(|p| p.sent)
    }
}

/// One route this node is an end of.
#[derive(Debug)]
struct RouteEnd {
    setup: RouteSetup,
    session: Session,
    staged: Staged,
    origin: Origin,
    /// Install order: the most recently added end wins a prefix several ends claim.
    seq: u64,
    pings: Pings,
}

/// The expiry state of a manager rule.
#[derive(Debug)]
struct Managed {
    route: u64,
    expire_after: Duration,
    /// The rule's counters in the route table.
    stats: Arc<RouteStats>,
    /// The packet count at the last sample, and the sample that first saw it.
    seen: u64,
    active: Instant,
}

/// A link probe awaiting its reply.
#[derive(Debug, Clone, Copy)]
struct Probe {
    nonce: u64,
    to: SocketAddr,
    sent: Instant,
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

/// The bounded event queue; allocated once, so pushing never allocates.
#[derive(Debug)]
struct Events {
    queue: Vec<EngineEvent>,
    dropped: u64,
}

impl Events {
    fn push(&mut self, event: EngineEvent) {
        if self.queue.len() < EVENT_QUEUE {
            self.queue.push(event);
        } else {
            self.dropped += 1;
        }
    }
}

/// The per-packet logic of a node.
#[derive(Debug)]
pub struct NodeCore {
    private_key: PrivateKey,
    public_key: PublicKey,
    listen: SocketAddr,
    tun_name: Option<String>,
    /// Wall-clock time at an instant, for the handshake timestamps of new sessions.
    clock: (Instant, Duration),
    table: RouteTable,
    reader: RouteReader,
    forward_stats: ForwardStats,
    /// Route ends by [`EndpointId`]; `None` slots are free (listed in `free`).
    ends: Vec<Option<RouteEnd>>,
    free: Vec<u32>,
    next_seq: u64,
    prefixes: PrefixTable<EndpointId>,
    /// Manager rules by incoming id, for expiry and status.
    managed: BTreeMap<RouteId, Managed>,
    next_sample: Option<Instant>,
    expired: u64,
    probes: Vec<Option<Probe>>,
    next_probe: usize,
    events: Events,
    drops: NodeDrops,
    /// Largest IP packet accepted from the TUN device.
    mtu: usize,
    scratch: Vec<u8>,
}

/// Bytes a buffer needs for an IP packet of `mtu` bytes sealed in place.
pub fn buffer_len(mtu: usize) -> usize {
    (HEADROOM + mtu + TAG_LEN).max(HANDSHAKE_INIT_LEN)
}

impl NodeCore {
    /// Build the core. `listen` is the bound transport address (for status); `unix_time` is
    /// the wall-clock time at `now`, for handshake timestamps. The setup's routes and relays
    /// become rules of [`Origin::Config`].
    pub fn new(
        setup: &NodeSetup,
        listen: SocketAddr,
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, SetupError> {
        let mtu = setup.tun.as_ref().map_or(1420, |t| usize::from(t.mtu));
        let table = RouteTable::new();
        let mut core = Self {
            private_key: setup.private_key.clone(),
            public_key: setup.public_key(),
            listen,
            tun_name: setup.tun.as_ref().map(|t| t.name.clone()),
            clock: (now, unix_time),
            reader: table.reader(),
            table,
            forward_stats: ForwardStats::default(),
            ends: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            prefixes: PrefixTable::default(),
            managed: BTreeMap::new(),
            next_sample: None,
            expired: 0,
            probes: vec![None; PROBES_OUTSTANDING],
            next_probe: 0,
            events: Events {
                queue: Vec::with_capacity(EVENT_QUEUE),
                dropped: 0,
            },
            drops: NodeDrops::default(),
            mtu,
            scratch: vec![0u8; buffer_len(mtu)],
        };
        let relays = setup.relays.iter().map(|relay| RuleChange::AddRelay {
            relay: *relay,
            origin: Origin::Config,
        });
        let routes = setup.routes.iter().map(|route| RuleChange::AddEnd {
            route: route.clone(),
            origin: Origin::Config,
        });
        core.apply(now, relays.chain(routes).collect())?;
        Ok(core)
    }

    /// Apply a batch of rule changes, all or nothing: every change is checked first (ids in
    /// use or unknown, counting the batch's own earlier changes; peer keys), then the route
    /// table changes in one atomic update, so the forwarding path sees the whole batch or
    /// none of it. Removing a route end drops its session, staged packets and pings without
    /// a close packet; its prefixes fall back to the most recent remaining end that claims
    /// them.
    pub fn apply(&mut self, now: Instant, changes: Vec<RuleChange>) -> Result<(), ApplyError> {
        // The checks that need no table, and endpoint slots for new ends. A slot freed by
        // this batch is reused only by a later one, so no id changes meaning within a batch.
        let mut free = self.free.clone();
        let mut fresh = self.ends.len();
        let mut planned = Vec::with_capacity(changes.len());
        for change in changes {
            planned.push(match change {
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
        self.free = free;
        for (change, done) in planned.into_iter().zip(done) {
            match (change, done) {
                (Planned::Relay { relay, origin }, Done::Added(stats)) => {
                    self.track(relay.in_id, origin, stats, now);
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
                    self.track(route.in_id, origin, stats, now);
                    self.install_end(now, route, origin, *keys, endpoint);
                }
                (Planned::Remove { in_id }, Done::Removed(entry)) => {
                    self.managed.remove(&in_id);
                    self.forget_end(&entry);
                }
                // Each change produced its own kind of result above.
                _ => {}
            }
        }
        if self.managed.is_empty() {
            self.next_sample = None;
        } else if self.next_sample.is_none() {
            self.next_sample = now.checked_add(EXPIRY_SAMPLE);
        }
        self.rebuild_prefixes();
        Ok(())
    }

    fn track(&mut self, in_id: RouteId, origin: Origin, stats: Arc<RouteStats>, now: Instant) {
        if let Origin::Manager {
            route,
            expire_after,
        } = origin
        {
            let seen = stats.packets();
            self.managed.insert(
                in_id,
                Managed {
                    route,
                    expire_after,
                    stats,
                    seen,
                    active: now,
                },
            );
        }
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
        let mut session = Session::new(keys, route.out_id, Limits::WIREGUARD, now, unix_time);
        session.set_persistent_keepalive(route.persistent_keepalive);
        if route.persistent_keepalive.is_some() {
            session.request_handshake();
        }
        let end = RouteEnd {
            setup: route,
            session,
            staged: Staged::new(buffer_len(self.mtu)),
            origin,
            seq: self.next_seq,
            pings: Pings::default(),
        };
        self.next_seq += 1;
        let at = endpoint.0 as usize;
        if self.ends.len() <= at {
            self.ends.resize_with(at + 1, || None);
        }
        if let Some(slot) = self.ends.get_mut(at) {
            *slot = Some(end);
        }
    }

    /// A removed rule: if it delivered to a route end, the end goes and its slot is free.
    fn forget_end(&mut self, entry: &Entry) {
        if let Rule::Deliver { endpoint, .. } = entry.rule
            && let Some(slot) = self.ends.get_mut(endpoint.0 as usize)
            && slot.take().is_some()
        {
            self.free.push(endpoint.0);
        }
    }

    /// The prefix table from the live ends, in install order: the last claimant wins.
    fn rebuild_prefixes(&mut self) {
        let mut order: Vec<(u64, usize)> = self
            .ends
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (e.seq, i)))
            .collect();
        order.sort_unstable();
        let mut prefixes = PrefixTable::default();
        for (_, i) in order {
            let endpoint = EndpointId(u32::try_from(i).unwrap_or(u32::MAX));
            if let Some(Some(end)) = self.ends.get(i) {
                for p in &end.setup.prefixes {
                    prefixes.insert(*p, endpoint);
                }
            }
        }
        self.prefixes = prefixes;
    }

    /// Remove manager rules whose packet counter stood still for their `expire_after`;
    /// samples the counters at most once per [`EXPIRY_SAMPLE`].
    fn expire(&mut self, now: Instant) {
        let Some(at) = self.next_sample else {
            return;
        };
        if now < at {
            return;
        }
        self.next_sample = now.checked_add(EXPIRY_SAMPLE);
        let mut idle = Vec::new();
        for (in_id, rule) in &mut self.managed {
            let packets = rule.stats.packets();
            if packets != rule.seen {
                // A packet matched since the last sample, so no later than now.
                rule.seen = packets;
                rule.active = now;
            } else if now.saturating_duration_since(rule.active) >= rule.expire_after {
                idle.push((*in_id, rule.route));
            }
        }
        if idle.is_empty() {
            return;
        }
        let changes = idle
            .iter()
            .map(|&(in_id, _)| RuleChange::Remove { in_id })
            .collect();
        // Every id is a live rule, so the batch cannot be refused.
        if self.apply(now, changes).is_ok() {
            for (in_id, route) in idle {
                self.expired += 1;
                self.events.push(EngineEvent::Expired { in_id, route });
            }
        }
    }

    /// The route table (relays' counters live in it).
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// Count a drop the driver saw (a full socket buffer, a TUN write refused).
    pub fn count_drop(&mut self, reason: NodeDrop) {
        self.drops.add(reason);
    }

    /// Count `n` drops the driver saw.
    pub fn count_drops(&mut self, reason: NodeDrop, n: u64) {
        self.drops.add_n(reason, n);
    }

    /// Count `n` datagrams the driver dropped before forwarding (cut by the kernel).
    pub fn count_forward_drops(&mut self, reason: ForwardDrop, n: u64) {
        self.forward_stats.record_n(reason, n);
    }

    /// A datagram arrived from `from`: answer or match it if it is a link probe; otherwise
    /// forward it, or open it at one of our route ends.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        io: &mut impl NodeIo,
    ) {
        if is_link_probe(buf) {
            self.handle_probe(now, from, buf, io);
            return;
        }
        let decision = forward(self.reader.load(), from, buf);
        match decision {
            Decision::Forward { next_hop } => io.send_udp(next_hop, buf),
            Decision::Drop(reason) => self.forward_stats.record(reason),
            Decision::Deliver { endpoint } => {
                let Some(Some(end)) = self.ends.get_mut(endpoint.0 as usize) else {
                    self.forward_stats.record(ForwardDrop::UnknownRoute);
                    return;
                };
                let first_hop = end.setup.first_hop;
                match end.session.decapsulate(now, buf) {
                    Outcome::Deliver(plain) => io.write_tun(plain),
                    Outcome::Reply(reply) => io.send_udp(first_hop, reply),
                    Outcome::Pong(nonce) => match end.pings.answer(nonce) {
                        Some(sent) => self.events.push(EngineEvent::Pong {
                            in_id: end.setup.in_id,
                            peer: end.setup.peer,
                            nonce,
                            rtt: now.saturating_duration_since(sent),
                        }),
                        None => self.drops.add(NodeDrop::UnexpectedPong),
                    },
                    Outcome::Consumed | Outcome::Closed | Outcome::Dropped(_) => {}
                }
                Self::flush_staged(end, now, io);
            }
        }
    }

    /// A link probe or reply: answer a probe in place (same size); match a reply against
    /// the outstanding probes.
    fn handle_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        io: &mut impl NodeIo,
    ) {
        let Ok(packet) = LinkProbePacket::new_checked(&buf[..]) else {
            self.drops.add(NodeDrop::BadProbe);
            return;
        };
        let probe = LinkProbeRepr::parse(&packet);
        if !probe.reply {
            let reply = LinkProbeRepr {
                reply: true,
                nonce: probe.nonce,
            };
            if reply.emit(buf).is_ok() {
                io.send_udp(from, buf.get(..LINK_PROBE_LEN).unwrap_or_default());
            }
            return;
        }
        let slot = self
            .probes
            .iter_mut()
            .find(|p| p.is_some_and(|p| p.nonce == probe.nonce && p.to == from));
        match slot.and_then(Option::take) {
            Some(sent) => self.events.push(EngineEvent::ProbeReply {
                from,
                nonce: probe.nonce,
                rtt: now.saturating_duration_since(sent.sent),
            }),
            None => self.drops.add(NodeDrop::UnexpectedProbeReply),
        }
    }

    /// Send a link probe with `nonce` to the neighbour at `to`. Its reply, if one comes,
    /// becomes an [`EngineEvent::ProbeReply`]; no reply means the probe or reply was lost
    /// (or the neighbour runs no node). At most [`PROBES_OUTSTANDING`] probes wait for
    /// replies; a new one beyond that makes the oldest be forgotten.
    pub fn probe(&mut self, now: Instant, to: SocketAddr, nonce: u64, io: &mut impl NodeIo) {
        if let Some(slot) = self.probes.get_mut(self.next_probe) {
            *slot = Some(Probe {
                nonce,
                to,
                sent: now,
            });
        }
        self.next_probe = (self.next_probe + 1) % PROBES_OUTSTANDING;
        let mut packet = [0u8; LINK_PROBE_LEN];
        if (LinkProbeRepr {
            reply: false,
            nonce,
        })
        .emit(&mut packet)
        .is_ok()
        {
            io.send_udp(to, &packet);
        }
    }

    /// Ping the far end of the route end whose incoming id is `in_id`, through its session.
    /// Without keys the ping waits for a handshake, which it starts. The pong, if one comes,
    /// becomes an [`EngineEvent::Pong`] whose round-trip time counts from the moment the
    /// ping was sent; no pong means it was lost. Each route end keeps at most
    /// [`PINGS_PER_ROUTE`] pings; a new one beyond that makes the oldest be forgotten.
    pub fn ping(
        &mut self,
        now: Instant,
        in_id: RouteId,
        nonce: u64,
        io: &mut impl NodeIo,
    ) -> Result<(), PingError> {
        let endpoint = match self.reader.load().lookup(in_id).map(|e| e.rule) {
            Some(Rule::Deliver { endpoint, .. }) => endpoint,
            _ => return Err(PingError::UnknownRoute(in_id)),
        };
        let Some(Some(end)) = self.ends.get_mut(endpoint.0 as usize) else {
            return Err(PingError::UnknownRoute(in_id));
        };
        end.pings.push(nonce);
        Self::poll_end(end, now, &mut self.scratch, io);
        Ok(())
    }

    /// An IP packet was read from the TUN device into `buf[HEADROOM..][..len]`; `buf` has
    /// [`TAG_LEN`] bytes of room after it. Seal it onto its route.
    pub fn handle_tun_packet(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        io: &mut impl NodeIo,
    ) {
        if len > self.mtu {
            self.drops.add(NodeDrop::TooBig);
            return;
        }
        let Some(packet) = buf.get(HEADROOM..HEADROOM + len) else {
            self.drops.add(NodeDrop::TooBig);
            return;
        };
        let Some(dst) = prefix::destination(packet) else {
            self.drops.add(NodeDrop::NotIp);
            return;
        };
        let Some(&endpoint) = self.prefixes.lookup(dst) else {
            self.drops.add(NodeDrop::NoRoute);
            return;
        };
        let Some(Some(end)) = self.ends.get_mut(endpoint.0 as usize) else {
            self.drops.add(NodeDrop::NoRoute);
            return;
        };
        // Keep order: while packets wait for a handshake, later ones queue behind them.
        if end.staged.len > 0 {
            Self::stage(end, &mut self.drops, buf, len);
            return;
        }
        match end.session.encapsulate(now, buf, len) {
            Ok(n) => io.send_udp(end.setup.first_hop, buf.get(..n).unwrap_or_default()),
            Err(SendError::NoSession) => {
                Self::stage(end, &mut self.drops, buf, len);
                Self::poll_end(end, now, &mut self.scratch, io);
            }
            Err(SendError::Seal(_)) => self.drops.add(NodeDrop::TooBig),
        }
    }

    fn stage(end: &mut RouteEnd, drops: &mut NodeDrops, buf: &[u8], len: usize) {
        let payload = buf.get(HEADROOM..HEADROOM + len).unwrap_or_default();
        if !end.staged.push(payload) {
            drops.add(NodeDrop::NoSession);
        }
    }

    /// Send what waited for the handshake (packets, then pings), once the route has keys.
    fn flush_staged(end: &mut RouteEnd, now: Instant, io: &mut impl NodeIo) {
        let first_hop = end.setup.first_hop;
        while end.session.is_established() {
            let Some((slot, len)) = end.staged.pop() else {
                break;
            };
            if let Ok(n) = end.session.encapsulate(now, slot, len) {
                io.send_udp(first_hop, slot.get(..n).unwrap_or_default());
            }
        }
        if end.pings.unsent == 0 {
            return;
        }
        let mut packet = [0u8; PING_LEN];
        for slot in &mut end.pings.slots {
            let Some(ping) = slot.as_mut().filter(|p| p.sent.is_none()) else {
                continue;
            };
            match end.session.ping(now, &mut packet, ping.nonce) {
                Ok(n) => {
                    ping.sent = Some(now);
                    io.send_udp(first_hop, packet.get(..n).unwrap_or_default());
                }
                // A handshake is requested; the rest wait for it too.
                Err(SendError::NoSession) => break,
                Err(SendError::Seal(_)) => *slot = None,
            }
        }
        end.pings.count_unsent();
    }

    fn poll_end(end: &mut RouteEnd, now: Instant, scratch: &mut [u8], io: &mut impl NodeIo) {
        Self::flush_staged(end, now, io);
        while let Some(n) = end.session.poll(now, scratch) {
            io.send_udp(end.setup.first_hop, scratch.get(..n).unwrap_or_default());
        }
    }

    /// Let every route act on its timers (handshakes, keepalives, key expiry), and remove
    /// manager rules that were idle too long.
    pub fn poll_timers(&mut self, now: Instant, io: &mut impl NodeIo) {
        for end in self.ends.iter_mut().flatten() {
            Self::poll_end(end, now, &mut self.scratch, io);
        }
        self.expire(now);
    }

    /// When [`poll_timers`](Self::poll_timers) next has work (`None`: only after input).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ends
            .iter()
            .flatten()
            .filter_map(|e| e.session.poll_timeout())
            .chain(self.next_sample)
            .min()
    }

    /// The events since the last call, oldest first: expired rules, probe replies, pongs.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, EngineEvent> {
        self.events.queue.drain(..)
    }

    /// Count `n` events the driver could not deliver (its channel was full).
    pub fn count_events_dropped(&mut self, n: u64) {
        self.events.dropped += n;
    }

    /// Close every route: an authenticated close packet to each peer that has keys.
    pub fn close_all(&mut self, now: Instant, io: &mut impl NodeIo) {
        for end in self.ends.iter_mut().flatten() {
            if let Some(n) = end.session.close(now, &mut self.scratch) {
                io.send_udp(
                    end.setup.first_hop,
                    self.scratch.get(..n).unwrap_or_default(),
                );
            }
        }
    }

    /// A snapshot for `skywire status`.
    pub fn status(&self, now: Instant) -> NodeStatus {
        let snapshot = self.table.snapshot();
        let mut relays: Vec<RelayStatus> = snapshot
            .iter()
            .filter_map(|(in_id, entry)| match entry.rule {
                Rule::Forward {
                    prev_hop,
                    next_hop,
                    out_id,
                } => Some(RelayStatus {
                    in_id,
                    prev_hop,
                    out_id,
                    next_hop,
                    packets: entry.stats.packets(),
                    bytes: entry.stats.bytes(),
                    origin: self.origin(in_id),
                    idle: self.idle(in_id, now),
                }),
                Rule::Deliver { .. } => None,
            })
            .collect();
        relays.sort_by_key(|r| r.in_id);
        let mut ends: Vec<&RouteEnd> = self.ends.iter().flatten().collect();
        ends.sort_by_key(|e| e.seq);
        let routes = ends
            .into_iter()
            .map(|end| {
                let s = end.session.stats();
                let drops = DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str(), s.drops.get(*r)))
                    .collect();
                RouteStatus {
                    name: end.setup.name.clone(),
                    peer: end.setup.peer,
                    first_hop: end.setup.first_hop,
                    out_id: end.setup.out_id,
                    in_id: end.setup.in_id,
                    prefixes: end.setup.prefixes.clone(),
                    last_handshake: end
                        .session
                        .last_handshake()
                        .map(|t| now.saturating_duration_since(t)),
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    drops,
                    origin: end.origin,
                    idle: self.idle(end.setup.in_id, now),
                }
            })
            .collect();
        let mut drops: Vec<(&'static str, u64)> = ForwardDrop::ALL
            .iter()
            .map(|r| (r.as_str(), self.forward_stats.get(*r)))
            .collect();
        drops.extend(
            NodeDrop::ALL
                .iter()
                .map(|r| (r.as_str(), self.drops.get(*r))),
        );
        NodeStatus {
            public_key: self.public_key,
            listen: self.listen,
            tun: self.tun_name.clone(),
            routes,
            relays,
            drops,
            expired: self.expired,
            events_dropped: self.events.dropped,
        }
    }

    fn origin(&self, in_id: RouteId) -> Origin {
        self.managed
            .get(&in_id)
            .map_or(Origin::Config, |m| Origin::Manager {
                route: m.route,
                expire_after: m.expire_after,
            })
    }

    fn idle(&self, in_id: RouteId, now: Instant) -> Option<Duration> {
        self.managed
            .get(&in_id)
            .map(|m| now.saturating_duration_since(m.active))
    }
}

#[cfg(test)]
mod tests;
