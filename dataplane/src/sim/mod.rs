//! The in-memory mesh: real engine cores ([`NodeCore`]) joined by a simulated transport,
//! each with an in-memory TUN device, on a simulated clock.
//!
//! This is the test double for the engine's two I/O seams, as wireguard-go's `bindtest` and
//! `tuntest` are for its own: multi-node behaviour is tested deterministically, without
//! root, sockets, TUN devices or a real clock. Every node runs exactly the code a real node
//! runs between its system calls; only [`crate::engine`]'s driver (the mio loop and the
//! batches) is left out. It is also what `skywire demo --in-memory` runs ([`demo`]).
//!
//! # Model
//!
//! - **Nodes** are built from a [`NodeSetup`] (key, transport address, optional TUN, config
//!   routes and relays) by [`Mesh::add_node`], or with a fresh key by [`Mesh::add_host`] (a
//!   TUN address) and [`Mesh::add_relay`] (none). A node is addressed by its [`NodeId`] or
//!   its transport address. A node can be [killed](Mesh::kill) and
//!   [restarted](Mesh::restart) from its setup.
//! - **Routes** come from the setups, from [`Mesh::apply`], or from [`Mesh::add_route`],
//!   which installs a static route along a path of nodes with fresh route ids through the
//!   cores' own `apply` ([`Route`] lists the ids at every hop).
//! - **The wire** is one FIFO of [`Datagram`]s. Whatever a core sends is collected from its
//!   [`Outbox`] onto the wire as soon as the mesh's call into the core returns (or, for a
//!   caller driving the core through [`Mesh::parts`], at the next step or [`Mesh::flush`]).
//!   Delivery pops the oldest datagram and hands it to the receiving core's
//!   [`NodeCore::handle_datagram`], unless no node has the address, the link between sender
//!   and receiver is [cut](Mesh::cut), or the receiver is [down](Mesh::kill); each fate is
//!   counted in [`WireStats`]. Anything can be [injected](Mesh::inject) as if a node (or a
//!   stranger) had sent it, and every datagram put on the wire can be
//!   [captured](Mesh::set_capture).
//! - **The TUN device** of a node records every packet its core writes ([`Mesh::tun`]);
//!   [`Mesh::tun_input`] hands the core a packet as if read from the device. Nodes without a
//!   TUN in their setup still get a record (their route ends may carry pings only).
//! - **Time** is the mesh's [`Mesh::now`], moved only by [`Mesh::advance_clock`] (and the
//!   helpers that call it); cores see no other clock. The wall-clock time for handshake
//!   timestamps is a fixed base plus the simulated time elapsed.
//!
//! # Stepping
//!
//! The pieces are public so a caller can interleave its own per-node work (a manager agent
//! beside each core): [`Mesh::deliver_next`] and [`Mesh::deliver_all`] move datagrams,
//! [`Mesh::poll_timers`] and [`Mesh::poll_all_timers`] run the cores' timers,
//! [`Mesh::drain_events`] reads what a core reported. [`Mesh::settle`] combines them: deliver
//! until the wire is empty, poll every timer, repeat until nothing moves; [`Mesh::advance`]
//! moves the clock and settles; [`Mesh::run_for`] does that in steps.
//!
//! The mesh allocates per datagram and runs on one thread; it is a test double, not the
//! packet path. Nothing that arrives from the "network" (injected bytes, a forwarding loop
//! between misconfigured relays) can make it panic or run forever: cores drop bad bytes, and
//! [`Mesh::settle`] stops after [`SETTLE_LIMIT`] deliveries (or [`Mesh::set_settle_limit`]).

pub mod demo;
mod ip;
mod node;
mod path;
mod streams;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::keys::RngError;
use crate::crypto::{PrivateKey, PublicKey};
use crate::engine::core::buffer_len;
use crate::engine::{
    ApplyError, EngineEvent, NodeCore, NodeSetup, NodeStatus, PingError, RuleChange, SetupError,
    TunSetup,
};
use crate::route::Prefix;
use crate::session::HEADROOM;
use crate::wire::RouteId;

pub use ip::{IPV4_HEADER_LEN, ipv4, ipv4_addresses, ipv4_payload};
pub use node::{NodeParts, Outbox};
pub use path::Route;
pub use streams::SIM_OWNER;

use node::SimNode;

/// Deliveries after which [`Mesh::settle`] gives up on the wire going quiet (a forwarding
/// loop between relays never does) unless [`Mesh::set_settle_limit`] says otherwise; what
/// is left stays on the wire.
pub const SETTLE_LIMIT: usize = 1 << 20;

/// MTU of the TUN devices [`Mesh::add_host`] gives its nodes (WireGuard's default).
pub const TUN_MTU: u16 = 1420;

/// Index of a node in a [`Mesh`], in the order the nodes were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// A datagram on the simulated transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender's transport address.
    pub from: SocketAddr,
    /// Receiver's transport address.
    pub to: SocketAddr,
    /// The bytes, exactly as they would be in a UDP payload.
    pub bytes: Vec<u8>,
}

/// What became of a datagram taken off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The receiving node's core handled it.
    Handled(NodeId),
    /// No node has the destination address.
    NoOne,
    /// The link between sender and receiver is cut.
    Cut,
    /// The receiving node is down.
    Down(NodeId),
}

/// Counters of the simulated transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Datagrams put on the wire (sent by cores or injected).
    pub sent: u64,
    /// Datagrams handed to a core.
    pub delivered: u64,
    /// Datagrams to an address no node has.
    pub to_nobody: u64,
    /// Datagrams lost on a cut link.
    pub cut: u64,
    /// Datagrams to a node that was down.
    pub to_down: u64,
}

/// A request to the mesh could not be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No node has this id.
    #[error("no node {0:?} in the mesh")]
    NoSuchNode(NodeId),
    /// Another node has this transport address.
    #[error("transport address {0} is taken by another node")]
    AddressInUse(SocketAddr),
    /// The node is down (killed and not restarted).
    #[error("node {0:?} is down")]
    NodeDown(NodeId),
    /// A route needs at least two nodes, different ends, and no node twice in a row.
    #[error("a route needs two or more nodes, distinct ends and no node twice in a row")]
    BadPath,
    /// No unused route id was left at a node.
    #[error("no free route id at node {0:?}")]
    NoFreeRouteId(NodeId),
    /// The node's core could not be built from its setup.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A node's core refused a batch of rule changes.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A node's core refused a ping.
    #[error(transparent)]
    Ping(#[from] PingError),
    /// The random source failed (making a key).
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// The simulated network: nodes, the wire between them, and the clock.
#[derive(Debug)]
pub struct Mesh {
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, NodeId>,
    wire: VecDeque<Datagram>,
    now: Instant,
    start: Instant,
    unix_base: Duration,
    /// Links that lose every datagram, both ways (smaller id first).
    cut: HashSet<(NodeId, NodeId)>,
    capture: bool,
    captured: Vec<Datagram>,
    stats: WireStats,
    /// Deliveries after which [`Mesh::settle`] gives up.
    settle_limit: usize,
    /// A core was lent out by [`Mesh::parts`], so outboxes may hold output to collect.
    lent: bool,
    /// The next route id [`Mesh::add_route`] tries.
    next_route_id: u32,
}

impl Mesh {
    /// An empty mesh whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            wire: VecDeque::new(),
            now,
            start: now,
            unix_base: Duration::from_secs(1_800_000_000),
            cut: HashSet::new(),
            capture: false,
            captured: Vec::new(),
            stats: WireStats::default(),
            settle_limit: SETTLE_LIMIT,
            lent: false,
            next_route_id: 1000,
        }
    }

    // ----- nodes -----

    /// Add a node running `setup`, at its `listen` address; its configured routes and
    /// relays become rules as in a real node.
    pub fn add_node(&mut self, setup: NodeSetup) -> Result<NodeId, SimError> {
        let addr = setup.listen;
        if self.by_addr.contains_key(&addr) {
            return Err(SimError::AddressInUse(addr));
        }
        let node = SimNode::new(setup, self.now, self.unix_time())?;
        let id = NodeId(self.nodes.len());
        self.nodes.push(node);
        self.by_addr.insert(addr, id);
        Ok(id)
    }

    /// Add a node with a fresh key at `addr`, with a TUN device holding `tun_address` (a
    /// host address with the length of its subnet, as `10.77.0.1/24`) and no rules.
    pub fn add_host(&mut self, addr: SocketAddr, tun_address: Prefix) -> Result<NodeId, SimError> {
        let mut setup = bare_setup(addr)?;
        setup.tun = Some(TunSetup {
            name: "sim0".into(),
            addresses: vec![tun_address],
            mtu: TUN_MTU,
        });
        self.add_node(setup)
    }

    /// Add a node with a fresh key at `addr`, without TUN device or rules: a relay.
    pub fn add_relay(&mut self, addr: SocketAddr) -> Result<NodeId, SimError> {
        self.add_node(bare_setup(addr)?)
    }

    /// How many nodes the mesh has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the mesh has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's id, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        (0..self.nodes.len()).map(NodeId)
    }

    fn node(&self, id: NodeId) -> Result<&SimNode, SimError> {
        self.nodes.get(id.0).ok_or(SimError::NoSuchNode(id))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut SimNode, SimError> {
        self.nodes.get_mut(id.0).ok_or(SimError::NoSuchNode(id))
    }

    /// A node that is up, for a call into its core.
    fn running(&mut self, id: NodeId) -> Result<&mut SimNode, SimError> {
        let node = self.node_mut(id)?;
        if node.up {
            Ok(node)
        } else {
            Err(SimError::NodeDown(id))
        }
    }

    /// The node with this transport address.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<NodeId> {
        self.by_addr.get(&addr).copied()
    }

    /// A node's transport address.
    pub fn addr(&self, id: NodeId) -> Result<SocketAddr, SimError> {
        Ok(self.node(id)?.addr())
    }

    /// A node's public key.
    pub fn public_key(&self, id: NodeId) -> Result<PublicKey, SimError> {
        Ok(self.node(id)?.setup.public_key())
    }

    /// What a node was built from (with the configured routes [`Mesh::add_route`] added).
    pub fn setup(&self, id: NodeId) -> Result<&NodeSetup, SimError> {
        Ok(&self.node(id)?.setup)
    }

    /// The host addresses of a node's TUN device (empty without one): the prefixes a route
    /// to it carries.
    pub fn tun_hosts(&self, id: NodeId) -> Result<Vec<Prefix>, SimError> {
        let setup = &self.node(id)?.setup;
        Ok(setup
            .tun
            .iter()
            .flat_map(|t| &t.addresses)
            .filter_map(|p| host(p.addr()))
            .collect())
    }

    /// A node's engine core, to read.
    pub fn core(&self, id: NodeId) -> Result<&NodeCore, SimError> {
        Ok(&self.node(id)?.core)
    }

    /// A node's engine core, to change behind the mesh's back (what it sends through a
    /// sink of its own does not reach the wire; see [`Mesh::parts`] for that).
    pub fn core_mut(&mut self, id: NodeId) -> Result<&mut NodeCore, SimError> {
        Ok(&mut self.node_mut(id)?.core)
    }

    /// A node's core with the sink that leads onto the wire, and the clock: for callers
    /// that drive the core themselves. Its output is collected at the next step.
    pub fn parts(&mut self, id: NodeId) -> Result<NodeParts<'_>, SimError> {
        let now = self.now;
        self.lent = true;
        let node = self.running(id)?;
        Ok(NodeParts {
            core: &mut node.core,
            io: &mut node.outbox,
            now,
        })
    }

    /// A node's status, as `skywire status` would show it now.
    pub fn status(&self, id: NodeId) -> Result<NodeStatus, SimError> {
        Ok(self.node(id)?.core.status(self.now))
    }

    /// Apply a batch of rule changes at a node ([`NodeCore::apply`]).
    pub fn apply(&mut self, id: NodeId, changes: Vec<RuleChange>) -> Result<(), SimError> {
        let now = self.now;
        self.running(id)?.core.apply(now, changes)?;
        Ok(())
    }

    /// Tell a node its neighbours ([`NodeCore::set_neighbours`]); how many it kept.
    pub fn set_neighbours(
        &mut self,
        id: NodeId,
        neighbours: &[(SocketAddr, PublicKey)],
    ) -> Result<usize, SimError> {
        Ok(self.node_mut(id)?.core.set_neighbours(neighbours))
    }

    /// Make every pair of nodes neighbours of each other (their setups' addresses and
    /// keys), as a manager's `NEIGHBOURS` would for a full mesh of links.
    pub fn all_neighbours(&mut self) {
        let everyone: Vec<(SocketAddr, PublicKey)> = self
            .nodes
            .iter()
            .map(|n| (n.addr(), n.setup.public_key()))
            .collect();
        for node in &mut self.nodes {
            let own = node.setup.public_key();
            let others: Vec<(SocketAddr, PublicKey)> = everyone
                .iter()
                .filter(|(_, k)| *k != own)
                .copied()
                .collect();
            node.core.set_neighbours(&others);
        }
    }

    /// Send a link probe from a node to `to` ([`NodeCore::probe`]).
    pub fn probe(&mut self, id: NodeId, to: SocketAddr, nonce: u64) -> Result<(), SimError> {
        let now = self.now;
        let node = self.running(id)?;
        node.core.probe(now, to, nonce, &mut node.outbox);
        self.collect(id);
        Ok(())
    }

    /// Ping from a node's route end with incoming id `in_id` ([`NodeCore::ping`]).
    pub fn ping(&mut self, id: NodeId, in_id: RouteId, nonce: u64) -> Result<(), SimError> {
        let now = self.now;
        let node = self.running(id)?;
        let result = node.core.ping(now, in_id, nonce, &mut node.outbox);
        self.collect(id);
        Ok(result?)
    }

    /// The events a node's core reported since the last call, oldest first.
    pub fn drain_events(&mut self, id: NodeId) -> Result<Vec<EngineEvent>, SimError> {
        Ok(self.node_mut(id)?.core.drain_events().collect())
    }

    /// A node reads `packet` from its TUN device ([`NodeCore::handle_tun_packet`]).
    pub fn tun_input(&mut self, id: NodeId, packet: &[u8]) -> Result<(), SimError> {
        let mut buf = vec![0u8; buffer_len(packet.len())];
        if let Some(at) = buf.get_mut(HEADROOM..HEADROOM + packet.len()) {
            at.copy_from_slice(packet);
        }
        let now = self.now;
        let node = self.running(id)?;
        node.core
            .handle_tun_packet(now, &mut buf, packet.len(), &mut node.outbox);
        self.collect(id);
        Ok(())
    }

    /// The IP packets a node's core wrote to its TUN device, oldest first (since the last
    /// [`Mesh::take_tun`]).
    pub fn tun(&self, id: NodeId) -> Result<&[Vec<u8>], SimError> {
        Ok(&self.node(id)?.tun)
    }

    /// The IP packets a node's core wrote to its TUN device, taken from the record.
    pub fn take_tun(&mut self, id: NodeId) -> Result<Vec<Vec<u8>>, SimError> {
        Ok(std::mem::take(&mut self.node_mut(id)?.tun))
    }

    /// Let a node's core act on its timers ([`NodeCore::poll_timers`]).
    pub fn poll_timers(&mut self, id: NodeId) -> Result<(), SimError> {
        let now = self.now;
        let node = self.running(id)?;
        node.core.poll_timers(now, &mut node.outbox);
        self.collect(id);
        Ok(())
    }

    /// Let every node that is up act on its timers, in id order.
    pub fn poll_all_timers(&mut self) {
        for id in self.ids() {
            // Only nodes that are down refuse, and they have no timers to run.
            let _ = self.poll_timers(id);
        }
    }

    /// The earliest moment a node that is up has timer work (`None`: only after input).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.core.next_deadline())
            .min()
    }

    /// A node stops, as if killed: its queued output is lost, datagrams to it are lost
    /// (counted in [`WireStats::to_down`]), its timers stop, and calls into it are refused.
    pub fn kill(&mut self, id: NodeId) -> Result<(), SimError> {
        let node = self.node_mut(id)?;
        node.up = false;
        node.outbox.take();
        Ok(())
    }

    /// A node starts afresh from its setup (key, address, TUN and configured rules, with the
    /// configured routes [`Mesh::add_route`] added): new sessions without keys, no manager
    /// rules, no events. Its TUN record is kept. Works on a running node too (a restart).
    pub fn restart(&mut self, id: NodeId) -> Result<(), SimError> {
        let (now, unix_time) = (self.now, self.unix_time());
        let node = self.node_mut(id)?;
        let fresh = SimNode::new(node.setup.clone(), now, unix_time)?;
        let tun = std::mem::take(&mut node.tun);
        *node = SimNode { tun, ..fresh };
        Ok(())
    }

    /// Whether a node is up.
    pub fn is_up(&self, id: NodeId) -> Result<bool, SimError> {
        Ok(self.node(id)?.up)
    }

    // ----- the wire -----

    /// Put a datagram on the wire as is, as if `from` had sent it (to replay, forge,
    /// misroute, or send garbage). It is delivered in turn like any other.
    pub fn inject(&mut self, datagram: Datagram) {
        self.put(datagram);
    }

    /// The datagrams on the wire, oldest (next to be delivered) first.
    pub fn in_flight(&self) -> &VecDeque<Datagram> {
        &self.wire
    }

    /// Take the next datagram off the wire without delivering it (it is lost, unless the
    /// caller injects it again).
    pub fn take_next(&mut self) -> Option<Datagram> {
        self.flush();
        self.wire.pop_front()
    }

    /// Lose every datagram on the wire.
    pub fn clear_in_flight(&mut self) {
        self.flush();
        self.wire.clear();
    }

    /// Keep (or stop keeping) a copy of every datagram put on the wire from now on.
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on;
    }

    /// The datagrams captured, in the order they were put on the wire.
    pub fn captured(&self) -> &[Datagram] {
        &self.captured
    }

    /// The datagrams captured, taken.
    pub fn take_captured(&mut self) -> Vec<Datagram> {
        std::mem::take(&mut self.captured)
    }

    /// Cut the link between two nodes: every datagram between them, either way, is lost
    /// (counted in [`WireStats::cut`]) until [`Mesh::mend`].
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    /// Mend a cut link.
    pub fn mend(&mut self, a: NodeId, b: NodeId) {
        self.cut.remove(&(a.min(b), a.max(b)));
    }

    /// Whether the link between two nodes is cut.
    pub fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// The transport's counters.
    pub fn wire_stats(&self) -> WireStats {
        self.stats
    }

    /// Move what cores sent through [`Mesh::parts`] onto the wire (and into TUN records).
    pub fn flush(&mut self) {
        if !std::mem::take(&mut self.lent) {
            return;
        }
        for id in self.ids() {
            self.collect(id);
        }
    }

    /// Take the oldest datagram off the wire and deliver it; `None` if the wire is empty.
    pub fn deliver_next(&mut self) -> Option<Delivery> {
        self.flush();
        let mut datagram = self.wire.pop_front()?;
        let Some(to) = self.by_addr(datagram.to) else {
            self.stats.to_nobody += 1;
            return Some(Delivery::NoOne);
        };
        if let Some(from) = self.by_addr(datagram.from)
            && self.is_cut(from, to)
        {
            self.stats.cut += 1;
            return Some(Delivery::Cut);
        }
        let now = self.now;
        let Ok(node) = self.running(to) else {
            self.stats.to_down += 1;
            return Some(Delivery::Down(to));
        };
        node.core
            .handle_datagram(now, datagram.from, &mut datagram.bytes, &mut node.outbox);
        self.stats.delivered += 1;
        self.collect(to);
        Some(Delivery::Handled(to))
    }

    /// How many deliveries [`Mesh::settle`] and [`Mesh::deliver_all`] make at most before
    /// they give up (default [`SETTLE_LIMIT`]).
    pub fn set_settle_limit(&mut self, limit: usize) {
        self.settle_limit = limit;
    }

    /// Deliver until the wire is empty, answers included (at most the settle limit of
    /// datagrams); timers do not run. Returns how many datagrams were taken off the wire.
    pub fn deliver_all(&mut self) -> usize {
        let mut taken = 0;
        while taken < self.settle_limit && self.deliver_next().is_some() {
            taken += 1;
        }
        taken
    }

    /// Run until quiet at the current time: deliver everything on the wire, let every
    /// timer act, and again while that sent something. Returns how many datagrams were
    /// taken off the wire; stops after the settle limit ([`SETTLE_LIMIT`] unless
    /// [set](Mesh::set_settle_limit)), leaving the rest.
    pub fn settle(&mut self) -> usize {
        let mut taken = 0;
        loop {
            while taken < self.settle_limit && self.deliver_next().is_some() {
                taken += 1;
            }
            if taken >= self.settle_limit {
                return taken;
            }
            self.poll_all_timers();
            if self.wire.is_empty() {
                return taken;
            }
        }
    }

    // ----- time -----

    /// The simulated clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Wall-clock time of the simulated clock (for handshake timestamps).
    pub fn unix_time(&self) -> Duration {
        self.unix_base + self.now.saturating_duration_since(self.start)
    }

    /// Move the clock forward, nothing else: no delivery, no timer runs.
    pub fn advance_clock(&mut self, by: Duration) {
        self.now += by;
    }

    /// Move the clock forward and [settle](Mesh::settle). Returns the datagrams delivered.
    pub fn advance(&mut self, by: Duration) -> usize {
        self.advance_clock(by);
        self.settle()
    }

    /// Advance in steps of `step` until `duration` has passed, settling after each (a zero
    /// step does nothing).
    pub fn run_for(&mut self, duration: Duration, step: Duration) {
        if step.is_zero() {
            return;
        }
        let end = self.now + duration;
        while self.now < end {
            self.advance(step);
        }
    }

    // ----- inside -----

    /// Move a node's output onto the wire and into its TUN record.
    fn collect(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(id.0) else {
            return;
        };
        if node.outbox.is_empty() {
            return;
        }
        let from = node.addr();
        let Outbox { udp, tun } = node.outbox.take();
        node.tun.extend(tun);
        for (to, bytes) in udp {
            self.put(Datagram { from, to, bytes });
        }
    }

    fn put(&mut self, datagram: Datagram) {
        self.stats.sent += 1;
        if self.capture {
            self.captured.push(datagram.clone());
        }
        self.wire.push_back(datagram);
    }
}

/// A setup with a fresh key at `addr`, no TUN, no rules, no offloads.
fn bare_setup(addr: SocketAddr) -> Result<NodeSetup, SimError> {
    Ok(NodeSetup {
        private_key: PrivateKey::generate()?,
        listen: addr,
        tun: None,
        routes: Vec::new(),
        relays: Vec::new(),
        offload: false,
        stack: crate::stack::StackSetup::default(),
        fwmark: None,
        peers: Vec::new(),
    })
}

/// The host prefix of an address (`/32` or `/128`).
fn host(addr: IpAddr) -> Option<Prefix> {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    Prefix::new(addr, len)
}

#[cfg(test)]
mod cookie_tests;
#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
