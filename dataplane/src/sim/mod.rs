//! An in-memory mesh: nodes with route tables and route sessions, joined by a simulated
//! transport that carries datagrams between transport addresses.
//!
//! This is the test double for the transport seam (as wireguard-go's `bindtest`): it lets
//! multi-hop behaviour be tested deterministically, without root, sockets or TUN devices.
//! It is also what `skywire demo --in-memory` runs. It allocates per
//! datagram and is single-threaded; the real forwarding engine is neither.
//!
//! Every node runs the same per-packet code as a real node: [`crate::route::forward()`] for
//! every datagram it receives, and [`Session::decapsulate`] for the ones delivered to its
//! endpoints. Relays have no sessions for routes they relay, so they cannot decrypt.

pub mod demo;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::cipher::Limits;
use crate::crypto::keys::{RngError, random_u32};
use crate::crypto::noise::{HandshakeError, StaticKeys};
use crate::crypto::{PrivateKey, PublicKey};
use crate::route::{Decision, EndpointId, ForwardStats, RouteTable, Rule, TableError, forward};
use crate::session::{HEADROOM, Outcome, SendError, Session};
use crate::wire::{HANDSHAKE_INIT_LEN, RouteId, TAG_LEN};

/// Largest payload the mesh carries (a TUN MTU of 1420, as WireGuard's default).
pub const MAX_PAYLOAD: usize = 1420;
const BUF_LEN: usize = HEADROOM + MAX_PAYLOAD + TAG_LEN;
/// Payloads kept per endpoint while its handshake runs (the rest are dropped).
const STAGED_MAX: usize = 128;

/// Index of a node in a [`Mesh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Something went wrong building the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No node with this index or address.
    #[error("no such node")]
    NoSuchNode,
    /// A route needs at least two distinct nodes.
    #[error("a route needs at least two nodes")]
    PathTooShort,
    /// The route table refused a rule.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The route's keys are unusable.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The random source failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// One end of a route on a node.
#[derive(Debug)]
pub struct Endpoint {
    /// The route's session.
    pub session: Session,
    /// Where this end sends its packets.
    pub first_hop: SocketAddr,
    /// Plaintext payloads delivered to this end, in arrival order.
    pub inbox: Vec<Vec<u8>>,
    staged: VecDeque<Vec<u8>>,
}

/// A node of the mesh.
#[derive(Debug)]
pub struct Node {
    /// Its transport address.
    pub addr: SocketAddr,
    key: PrivateKey,
    /// Its forwarding rules.
    pub table: RouteTable,
    /// Its forwarding drop counters.
    pub forward_stats: ForwardStats,
    /// Its route endpoints, indexed by [`EndpointId`].
    pub endpoints: Vec<Endpoint>,
    /// Datagrams this node relayed to another hop.
    pub relayed: u64,
}

impl Node {
    /// The node's identity.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Packets this node decrypted (data it opened at its own endpoints).
    pub fn decrypted(&self) -> u64 {
        self.endpoints
            .iter()
            .map(|e| e.session.stats().rx_packets)
            .sum()
    }
}

/// The two ends of a route built by [`Mesh::add_route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEnds {
    /// The first node of the path and its endpoint.
    pub source: (NodeId, EndpointId),
    /// The last node of the path and its endpoint.
    pub destination: (NodeId, EndpointId),
}

/// The simulated network.
#[derive(Debug)]
pub struct Mesh {
    nodes: Vec<Node>,
    wire: VecDeque<Datagram>,
    now: Instant,
    start: Instant,
    unix_base: Duration,
    limits: Limits,
    /// When true, every datagram put on the wire is also appended to [`Mesh::captured`].
    pub capture: bool,
    /// The datagrams captured while [`Mesh::capture`] was on.
    pub captured: Vec<Datagram>,
    /// Datagrams sent to an address no node has.
    pub lost: u64,
}

impl Mesh {
    /// An empty mesh whose clock starts at `now`, with WireGuard's key limits.
    pub fn new(now: Instant) -> Self {
        Self::with_limits(now, Limits::WIREGUARD)
    }

    /// An empty mesh with the given key limits for every session.
    pub fn with_limits(now: Instant, limits: Limits) -> Self {
        Self {
            nodes: Vec::new(),
            wire: VecDeque::new(),
            now,
            start: now,
            unix_base: Duration::from_secs(1_800_000_000),
            limits,
            capture: false,
            captured: Vec::new(),
            lost: 0,
        }
    }

    /// Add a node with a new identity at transport address `addr`.
    pub fn add_node(&mut self, addr: SocketAddr) -> Result<NodeId, SimError> {
        self.add_node_with_key(addr, PrivateKey::generate()?)
    }

    /// Add a node with the given identity.
    pub fn add_node_with_key(
        &mut self,
        addr: SocketAddr,
        key: PrivateKey,
    ) -> Result<NodeId, SimError> {
        self.nodes.push(Node {
            addr,
            key,
            table: RouteTable::new(),
            forward_stats: ForwardStats::default(),
            endpoints: Vec::new(),
            relayed: 0,
        });
        Ok(NodeId(self.nodes.len() - 1))
    }

    /// The node with this index.
    pub fn node(&self, id: NodeId) -> Result<&Node, SimError> {
        self.nodes.get(id.0).ok_or(SimError::NoSuchNode)
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node, SimError> {
        self.nodes.get_mut(id.0).ok_or(SimError::NoSuchNode)
    }

    /// An endpoint of a node.
    pub fn endpoint(&self, (node, ep): (NodeId, EndpointId)) -> Result<&Endpoint, SimError> {
        self.node(node)?
            .endpoints
            .get(ep.0 as usize)
            .ok_or(SimError::NoSuchNode)
    }

    fn endpoint_mut(
        &mut self,
        (node, ep): (NodeId, EndpointId),
    ) -> Result<&mut Endpoint, SimError> {
        self.node_mut(node)?
            .endpoints
            .get_mut(ep.0 as usize)
            .ok_or(SimError::NoSuchNode)
    }

    /// The simulated clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Move the clock forward and let every session act on its timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.run();
    }

    /// Install a route along `path` (first node to last): forwarding rules in both
    /// directions on every hop, with random route ids, and a session at each end. The
    /// relays get rules only, no keys.
    pub fn add_route(&mut self, path: &[NodeId]) -> Result<RouteEnds, SimError> {
        let (&first, &last) = match (path.first(), path.last()) {
            (Some(f), Some(l)) if path.len() >= 2 && f != l => (f, l),
            _ => return Err(SimError::PathTooShort),
        };
        let addrs: Vec<SocketAddr> = path
            .iter()
            .map(|&n| self.node(n).map(|n| n.addr))
            .collect::<Result<_, _>>()?;
        let hops = path.len();
        // forward_ids[i]: id at path[i] for the direction first -> last (i >= 1);
        // reverse_ids[i]: id at path[i] for last -> first (i <= hops - 2).
        let forward_ids = self.fresh_ids(path)?;
        let reverse_ids = self.fresh_ids(path)?;
        let id_at = |ids: &[RouteId], i: usize| ids.get(i).copied().ok_or(SimError::NoSuchNode);
        let addr_at = |i: usize| addrs.get(i).copied().ok_or(SimError::NoSuchNode);

        let src_ep = EndpointId(self.node(first)?.endpoints.len() as u32);
        let dst_ep = EndpointId(self.node(last)?.endpoints.len() as u32);
        for (i, &node) in path.iter().enumerate() {
            let table = &self.node(node)?.table;
            if i >= 1 {
                let rule = if i + 1 < hops {
                    Rule::Forward {
                        prev_hop: addr_at(i - 1)?,
                        next_hop: addr_at(i + 1)?,
                        out_id: id_at(&forward_ids, i + 1)?,
                    }
                } else {
                    Rule::Deliver {
                        prev_hop: addr_at(i - 1)?,
                        endpoint: dst_ep,
                    }
                };
                table.insert(id_at(&forward_ids, i)?, rule)?;
            }
            if i + 1 < hops {
                let rule = if i >= 1 {
                    Rule::Forward {
                        prev_hop: addr_at(i + 1)?,
                        next_hop: addr_at(i - 1)?,
                        out_id: id_at(&reverse_ids, i - 1)?,
                    }
                } else {
                    Rule::Deliver {
                        prev_hop: addr_at(1)?,
                        endpoint: src_ep,
                    }
                };
                table.insert(id_at(&reverse_ids, i)?, rule)?;
            }
        }

        let (first_key, last_key) = (self.node(first)?.key.clone(), self.node(last)?.key.clone());
        let (first_pub, last_pub) = (first_key.public_key(), last_key.public_key());
        let src_session = self.new_session(first_key, last_pub, id_at(&forward_ids, 1)?)?;
        let dst_session = self.new_session(last_key, first_pub, id_at(&reverse_ids, hops - 2)?)?;
        self.node_mut(first)?.endpoints.push(Endpoint {
            session: src_session,
            first_hop: addr_at(1)?,
            inbox: Vec::new(),
            staged: VecDeque::new(),
        });
        self.node_mut(last)?.endpoints.push(Endpoint {
            session: dst_session,
            first_hop: addr_at(hops - 2)?,
            inbox: Vec::new(),
            staged: VecDeque::new(),
        });
        Ok(RouteEnds {
            source: (first, src_ep),
            destination: (last, dst_ep),
        })
    }

    fn new_session(
        &self,
        local: PrivateKey,
        remote: PublicKey,
        route_id: RouteId,
    ) -> Result<Session, SimError> {
        let keys = StaticKeys::new(local, remote)?;
        Ok(Session::new(
            keys,
            route_id,
            self.limits,
            self.now,
            self.unix_time(),
        ))
    }

    /// Random route ids, one per node of `path`, unused in that node's table.
    fn fresh_ids(&self, path: &[NodeId]) -> Result<Vec<RouteId>, SimError> {
        path.iter()
            .map(|&n| {
                let snapshot = self.node(n)?.table.snapshot();
                loop {
                    if let Some(id) = RouteId::new(random_u32()?)
                        && snapshot.lookup(id).is_none()
                    {
                        return Ok(id);
                    }
                }
            })
            .collect()
    }

    /// Wall-clock time of the simulated clock (for handshake timestamps).
    fn unix_time(&self) -> Duration {
        self.unix_base + self.now.saturating_duration_since(self.start)
    }

    /// Replace the session of an endpoint with a fresh one, as after the node restarted:
    /// same identity and route, no keys.
    pub fn restart_endpoint(&mut self, at: (NodeId, EndpointId)) -> Result<(), SimError> {
        let (now, limits, unix) = (self.now, self.limits, self.unix_time());
        let endpoint = self.endpoint_mut(at)?;
        let keys = endpoint.session.keys().clone();
        let route_id = endpoint.session.route_id();
        endpoint.session = Session::new(keys, route_id, limits, now, unix);
        endpoint.staged.clear();
        Ok(())
    }

    /// Send `payload` from an endpoint. If its session has no keys yet the payload waits
    /// (up to a bound) for the handshake, which starts at once.
    pub fn send(&mut self, at: (NodeId, EndpointId), payload: &[u8]) -> Result<(), SimError> {
        let payload = payload
            .get(..MAX_PAYLOAD.min(payload.len()))
            .unwrap_or_default();
        let (now, from) = (self.now, self.node(at.0)?.addr);
        let endpoint = self.endpoint_mut(at)?;
        let to = endpoint.first_hop;
        if !endpoint.staged.is_empty() {
            if endpoint.staged.len() < STAGED_MAX {
                endpoint.staged.push_back(payload.to_vec());
            }
            return Ok(());
        }
        let mut buf = vec![0u8; BUF_LEN];
        if let Some(slot) = buf.get_mut(HEADROOM..HEADROOM + payload.len()) {
            slot.copy_from_slice(payload);
        }
        match endpoint.session.encapsulate(now, &mut buf, payload.len()) {
            Ok(n) => {
                buf.truncate(n);
                self.transmit(Datagram {
                    from,
                    to,
                    bytes: buf,
                });
            }
            Err(SendError::NoSession) => endpoint.staged.push_back(payload.to_vec()),
            Err(SendError::Seal(_)) => {}
        }
        self.poll_sessions();
        Ok(())
    }

    /// Put a datagram on the wire as is (for tests that replay, forge or inject).
    pub fn inject(&mut self, datagram: Datagram) {
        self.transmit(datagram);
    }

    fn transmit(&mut self, datagram: Datagram) {
        if self.capture {
            self.captured.push(datagram.clone());
        }
        self.wire.push_back(datagram);
    }

    /// Deliver datagrams until the wire is empty, letting sessions answer and act on
    /// their timers in between. Returns the number of datagrams delivered.
    pub fn run(&mut self) -> usize {
        let mut delivered = 0;
        self.poll_sessions();
        while let Some(datagram) = self.wire.pop_front() {
            delivered += 1;
            self.receive(datagram);
            if self.wire.is_empty() {
                self.poll_sessions();
            }
        }
        delivered
    }

    fn receive(&mut self, mut datagram: Datagram) {
        let now = self.now;
        let Some(node) = self.nodes.iter_mut().find(|n| n.addr == datagram.to) else {
            self.lost += 1;
            return;
        };
        let snapshot = node.table.snapshot();
        match forward(&snapshot, datagram.from, &mut datagram.bytes) {
            Decision::Drop(reason) => node.forward_stats.record(reason),
            Decision::Forward { next_hop } => {
                node.relayed += 1;
                let from = node.addr;
                self.transmit(Datagram {
                    from,
                    to: next_hop,
                    bytes: datagram.bytes,
                });
            }
            Decision::Deliver { endpoint } => {
                let from = node.addr;
                let Some(ep) = node.endpoints.get_mut(endpoint.0 as usize) else {
                    return;
                };
                let to = ep.first_hop;
                let reply = match ep.session.decapsulate(now, &mut datagram.bytes) {
                    Outcome::Deliver(plain) => {
                        ep.inbox.push(plain.to_vec());
                        None
                    }
                    Outcome::Reply(bytes) => Some(bytes.to_vec()),
                    Outcome::Consumed
                    | Outcome::Closed
                    | Outcome::Pong(_)
                    | Outcome::Dropped(_) => None,
                };
                if let Some(bytes) = reply {
                    self.transmit(Datagram { from, to, bytes });
                }
            }
        }
    }

    /// Flush staged payloads of established sessions and send what sessions want to send.
    fn poll_sessions(&mut self) {
        let now = self.now;
        let mut out = Vec::new();
        for node in &mut self.nodes {
            for ep in &mut node.endpoints {
                while ep.session.is_established() {
                    let Some(payload) = ep.staged.pop_front() else {
                        break;
                    };
                    let mut buf = vec![0u8; BUF_LEN];
                    if let Some(slot) = buf.get_mut(HEADROOM..HEADROOM + payload.len()) {
                        slot.copy_from_slice(&payload);
                    }
                    if let Ok(n) = ep.session.encapsulate(now, &mut buf, payload.len()) {
                        buf.truncate(n);
                        out.push(Datagram {
                            from: node.addr,
                            to: ep.first_hop,
                            bytes: buf,
                        });
                    }
                }
                let mut buf = vec![0u8; BUF_LEN.max(HANDSHAKE_INIT_LEN)];
                while let Some(n) = ep.session.poll(now, &mut buf) {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    out.push(Datagram {
                        from: node.addr,
                        to: ep.first_hop,
                        bytes,
                    });
                }
            }
        }
        for datagram in out {
            self.transmit(datagram);
        }
    }
}

#[cfg(test)]
mod tests;
