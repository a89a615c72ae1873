//! The sans-IO core of a node: every per-packet decision of the engine, with no socket, no
//! TUN device and no clock. The driver feeds it datagrams, TUN packets and the time, and it
//! answers through a [`NodeIo`] sink that the driver implements over the real sockets (and
//! tests implement over vectors).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::setup::{NodeSetup, RouteSetup};
use super::status::{NodeStatus, RelayStatus, RouteStatus};
use crate::crypto::PublicKey;
use crate::crypto::cipher::Limits;
use crate::crypto::noise::{HandshakeError, StaticKeys};
use crate::route::{
    Decision, EndpointId, ForwardDrop, ForwardStats, PrefixTable, RouteReader, RouteTable, Rule,
    TableError, forward, prefix,
};
use crate::session::{DropReason, HEADROOM, Outcome, SendError, Session};
use crate::wire::{HANDSHAKE_INIT_LEN, TAG_LEN};

/// Packets kept per route while its handshake runs; older ones are dropped first.
pub const STAGED_PER_ROUTE: usize = 16;

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
}

impl NodeDrop {
    /// Every reason, in counter order.
    pub const ALL: [NodeDrop; 5] = [
        NodeDrop::NotIp,
        NodeDrop::NoRoute,
        NodeDrop::NoSession,
        NodeDrop::QueueFull,
        NodeDrop::TooBig,
    ];

    /// A short name for status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeDrop::NotIp => "not ip",
            NodeDrop::NoRoute => "no route",
            NodeDrop::NoSession => "no session",
            NodeDrop::QueueFull => "queue full",
            NodeDrop::TooBig => "too big",
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
    /// Two rules use the same incoming route id.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A route's peer key is unusable (a low-order point).
    #[error("route peer key is unusable: {0}")]
    PeerKey(HandshakeError),
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

/// One route this node is an end of.
#[derive(Debug)]
struct RouteEnd {
    setup: RouteSetup,
    session: Session,
    staged: Staged,
}

/// The per-packet logic of a node.
#[derive(Debug)]
pub struct NodeCore {
    public_key: PublicKey,
    listen: SocketAddr,
    tun_name: Option<String>,
    table: RouteTable,
    reader: RouteReader,
    forward_stats: ForwardStats,
    ends: Vec<RouteEnd>,
    prefixes: PrefixTable<EndpointId>,
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
    /// the wall-clock time at `now`, for handshake timestamps.
    pub fn new(
        setup: &NodeSetup,
        listen: SocketAddr,
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, SetupError> {
        let mtu = setup.tun.as_ref().map_or(1420, |t| usize::from(t.mtu));
        let table = RouteTable::new();
        let mut ends = Vec::new();
        let mut prefixes = PrefixTable::default();
        table.update(|t| -> Result<(), SetupError> {
            for relay in &setup.relays {
                t.insert(
                    relay.in_id,
                    Rule::Forward {
                        prev_hop: relay.prev_hop,
                        next_hop: relay.next_hop,
                        out_id: relay.out_id,
                    },
                )?;
            }
            for (i, route) in setup.routes.iter().enumerate() {
                let endpoint = EndpointId(u32::try_from(i).unwrap_or(u32::MAX));
                t.insert(
                    route.in_id,
                    Rule::Deliver {
                        prev_hop: route.prev_hop,
                        endpoint,
                    },
                )?;
                let keys = StaticKeys::new(setup.private_key.clone(), route.peer)
                    .map_err(SetupError::PeerKey)?;
                let mut session =
                    Session::new(keys, route.out_id, Limits::WIREGUARD, now, unix_time);
                session.set_persistent_keepalive(route.persistent_keepalive);
                if route.persistent_keepalive.is_some() {
                    session.request_handshake();
                }
                for p in &route.prefixes {
                    prefixes.insert(*p, endpoint);
                }
                ends.push(RouteEnd {
                    setup: route.clone(),
                    session,
                    staged: Staged::new(buffer_len(mtu)),
                });
            }
            Ok(())
        })?;
        Ok(Self {
            public_key: setup.public_key(),
            listen,
            tun_name: setup.tun.as_ref().map(|t| t.name.clone()),
            reader: table.reader(),
            table,
            forward_stats: ForwardStats::default(),
            ends,
            prefixes,
            drops: NodeDrops::default(),
            mtu,
            scratch: vec![0u8; buffer_len(mtu)],
        })
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

    /// A datagram arrived from `from`: forward it, or open it at one of our route ends.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
        io: &mut impl NodeIo,
    ) {
        let decision = forward(self.reader.load(), from, buf);
        match decision {
            Decision::Forward { next_hop } => io.send_udp(next_hop, buf),
            Decision::Drop(reason) => self.forward_stats.record(reason),
            Decision::Deliver { endpoint } => {
                let Some(end) = self.ends.get_mut(endpoint.0 as usize) else {
                    self.forward_stats.record(ForwardDrop::UnknownRoute);
                    return;
                };
                let first_hop = end.setup.first_hop;
                match end.session.decapsulate(now, buf) {
                    Outcome::Deliver(plain) => io.write_tun(plain),
                    Outcome::Reply(reply) => io.send_udp(first_hop, reply),
                    Outcome::Consumed | Outcome::Closed | Outcome::Dropped(_) => {}
                }
                Self::flush_staged(end, now, io);
            }
        }
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
        let Some(end) = self.ends.get_mut(endpoint.0 as usize) else {
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

    /// Send what waited for the handshake, once the route has keys.
    fn flush_staged(end: &mut RouteEnd, now: Instant, io: &mut impl NodeIo) {
        while end.session.is_established() {
            let first_hop = end.setup.first_hop;
            let Some((slot, len)) = end.staged.pop() else {
                return;
            };
            if let Ok(n) = end.session.encapsulate(now, slot, len) {
                io.send_udp(first_hop, slot.get(..n).unwrap_or_default());
            }
        }
    }

    fn poll_end(end: &mut RouteEnd, now: Instant, scratch: &mut [u8], io: &mut impl NodeIo) {
        Self::flush_staged(end, now, io);
        while let Some(n) = end.session.poll(now, scratch) {
            io.send_udp(end.setup.first_hop, scratch.get(..n).unwrap_or_default());
        }
    }

    /// Let every route act on its timers (handshakes, keepalives, expiry).
    pub fn poll_timers(&mut self, now: Instant, io: &mut impl NodeIo) {
        for end in &mut self.ends {
            Self::poll_end(end, now, &mut self.scratch, io);
        }
    }

    /// When [`poll_timers`](Self::poll_timers) next has work (`None`: only after input).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ends
            .iter()
            .filter_map(|e| e.session.poll_timeout())
            .min()
    }

    /// Close every route: an authenticated close packet to each peer that has keys.
    pub fn close_all(&mut self, now: Instant, io: &mut impl NodeIo) {
        for end in &mut self.ends {
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
                }),
                Rule::Deliver { .. } => None,
            })
            .collect();
        relays.sort_by_key(|r| r.in_id);
        let routes = self
            .ends
            .iter()
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
        }
    }
}

#[cfg(test)]
mod tests;
