//! The graph: nodes (up or down, by public key, each with a dense index) and undirected
//! links with one [`LinkMetrics`] for both directions, kept in per-node adjacency lists.
//! Plain data; the route search over it is in `search`.

use std::collections::HashMap;
use std::time::Duration;

use skywire_dataplane::crypto::PublicKey;

use super::search::{Constraints, Path, RouteError, RouteWeight, Router};
use super::{MAX_LOSS, MAX_RTT, UNKNOWN_RTT};

/// What a link measures, the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkMetrics {
    /// Round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// Fraction of packets lost, `0.0..=1.0`.
    pub loss: f32,
    /// Whether the link carries traffic at all; a down link is never routed over.
    pub up: bool,
}

impl Default for LinkMetrics {
    /// A new link: up, round-trip time not yet measured, no loss seen.
    fn default() -> Self {
        Self {
            rtt: None,
            loss: 0.0,
            up: true,
        }
    }
}

impl LinkMetrics {
    /// The link's cost under [`RouteWeight::Latency`], in microseconds: the round-trip time
    /// ([`UNKNOWN_RTT`] if not measured, at least 1 µs, at most [`MAX_RTT`]) divided by
    /// `1 - loss`, with loss clamped to `0..=MAX_LOSS` (not a number counts as
    /// `MAX_LOSS`). `rtt / (1 - loss)` is the expected time to get a packet across when
    /// lost ones are sent again, so a fast lossy link can lose to a slower clean one.
    pub fn latency_cost(&self) -> u64 {
        let rtt = self.rtt.unwrap_or(UNKNOWN_RTT).min(MAX_RTT);
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        let loss = if self.loss.is_nan() {
            MAX_LOSS
        } else {
            self.loss.clamp(0.0, MAX_LOSS)
        };
        // At most 6e7 / 0.1: the float is exact enough and the cast cannot saturate.
        (micros as f64 / (1.0 - f64::from(loss))).ceil() as u64
    }
}

/// Why a change to the topology was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The key is not a node of the topology.
    #[error("unknown node {0}")]
    UnknownNode(PublicKey),
    /// A link was asked from a node to itself.
    #[error("a link joins two different nodes")]
    SelfLink,
    /// There is no link between the two nodes.
    #[error("no link between {0} and {1}")]
    NoLink(PublicKey, PublicKey),
    /// The topology already holds `u32::MAX` nodes.
    #[error("the topology is full")]
    Full,
}

/// A node's dense index into the topology's arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct NodeIdx(pub(super) u32);

impl NodeIdx {
    pub(super) fn get(self) -> usize {
        self.0 as usize
    }

    pub(super) fn from_usize(index: usize) -> Option<Self> {
        u32::try_from(index).ok().map(Self)
    }
}

/// Bits of one link's tie-break: sums over any path (at most `u32::MAX` hops) stay far
/// from overflowing.
const TIE_BITS: u32 = 20;

/// splitmix64's finaliser: a fixed, well-mixed function of 64 bits.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node's salt for tie-breaks: its key's bytes, mixed.
fn salt(key: &PublicKey) -> u64 {
    key.as_bytes().chunks_exact(8).fold(0, |h, chunk| {
        mix(h ^ <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes))
    })
}

/// One direction of a link, kept in the adjacency list of its near end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Edge {
    pub(super) to: NodeIdx,
    pub(super) metrics: LinkMetrics,
    /// `metrics.latency_cost()`, computed when the metrics change rather than per search.
    pub(super) latency: u64,
    /// The two ends' salts combined, the same in both directions.
    salts: u64,
}

impl Edge {
    fn new(to: NodeIdx, metrics: LinkMetrics, salts: u64) -> Self {
        Self {
            to,
            metrics,
            latency: metrics.latency_cost(),
            salts,
        }
    }

    pub(super) fn cost(&self, weight: RouteWeight) -> u64 {
        match weight {
            RouteWeight::Hops => 1,
            RouteWeight::Latency => self.latency,
        }
    }

    /// The link's tie-break for the pair whose seed is `seed`: a pseudo-random number
    /// below `2^TIE_BITS`, fixed for the link and the pair, the same in both directions.
    /// Among paths of equal cost and hops the search takes the smallest sum, so each pair
    /// of ends gets its own choice among them, and always the same one.
    pub(super) fn tie(&self, seed: u64) -> u64 {
        mix(seed ^ self.salts) >> (64 - TIE_BITS)
    }
}

/// A slot of the node array; a removed node's slot waits in the free list.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) key: PublicKey,
    /// Mixed from the key: what tie-breaks are made of.
    pub(super) salt: u64,
    up: bool,
    live: bool,
    edges: Vec<Edge>,
}

/// The mesh as the manager sees it: nodes (up or down) and undirected links with metrics.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    index: HashMap<PublicKey, NodeIdx>,
    pub(super) nodes: Vec<Node>,
    /// `live && up` per slot, dense, for the search's inner loop.
    usable: Vec<bool>,
    free: Vec<NodeIdx>,
    links: usize,
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node, up and without links. Returns `false` if it was already there (and
    /// changes nothing).
    pub fn add_node(&mut self, key: PublicKey) -> Result<bool, TopologyError> {
        if self.index.contains_key(&key) {
            return Ok(false);
        }
        let node = Node {
            key,
            salt: salt(&key),
            up: true,
            live: true,
            edges: Vec::new(),
        };
        let idx = if let Some(idx) = self.free.pop() {
            if let (Some(slot), Some(usable)) = (
                self.nodes.get_mut(idx.get()),
                self.usable.get_mut(idx.get()),
            ) {
                *slot = node;
                *usable = true;
            }
            idx
        } else {
            let idx = NodeIdx::from_usize(self.nodes.len())
                .filter(|idx| idx.0 != u32::MAX)
                .ok_or(TopologyError::Full)?;
            self.nodes.push(node);
            self.usable.push(true);
            idx
        };
        self.index.insert(key, idx);
        Ok(true)
    }

    /// Removes a node and its links. Returns `false` if it was not there.
    pub fn remove_node(&mut self, key: PublicKey) -> bool {
        let Some(idx) = self.index.remove(&key) else {
            return false;
        };
        let edges = match self.nodes.get_mut(idx.get()) {
            Some(node) => {
                node.live = false;
                node.up = false;
                std::mem::take(&mut node.edges)
            }
            None => Vec::new(),
        };
        for edge in &edges {
            if let Some(other) = self.nodes.get_mut(edge.to.get()) {
                other.edges.retain(|e| e.to != idx);
            }
        }
        self.links = self.links.saturating_sub(edges.len());
        if let Some(usable) = self.usable.get_mut(idx.get()) {
            *usable = false;
        }
        self.free.push(idx);
        true
    }

    /// Marks a node up or down. A down node keeps its links but no route crosses it.
    pub fn set_node_up(&mut self, key: PublicKey, up: bool) -> Result<(), TopologyError> {
        let idx = self.idx(key).ok_or(TopologyError::UnknownNode(key))?;
        if let (Some(node), Some(usable)) = (
            self.nodes.get_mut(idx.get()),
            self.usable.get_mut(idx.get()),
        ) {
            node.up = up;
            *usable = up;
        }
        Ok(())
    }

    /// Whether the node is up; `None` if it is unknown.
    pub fn node_up(&self, key: PublicKey) -> Option<bool> {
        self.idx(key).and_then(|idx| self.node(idx)).map(|n| n.up)
    }

    /// Whether the node is in the topology.
    pub fn contains(&self, key: PublicKey) -> bool {
        self.index.contains_key(&key)
    }

    /// The number of nodes, up or down.
    pub fn node_count(&self) -> usize {
        self.index.len()
    }

    /// The number of links, up or down.
    pub fn link_count(&self) -> usize {
        self.links
    }

    /// Every node with whether it is up, in index order (not sorted by key).
    pub fn nodes(&self) -> impl Iterator<Item = (PublicKey, bool)> + '_ {
        self.nodes.iter().filter(|n| n.live).map(|n| (n.key, n.up))
    }

    /// Adds an up link of unknown round-trip time between two nodes. Returns `false` if
    /// the link was already there (its metrics are kept).
    pub fn add_link(&mut self, a: PublicKey, b: PublicKey) -> Result<bool, TopologyError> {
        let (ia, ib) = self.pair(a, b)?;
        if self.edge(ia, ib).is_some() {
            return Ok(false);
        }
        let metrics = LinkMetrics::default();
        let salts = salt(&a) ^ salt(&b);
        if let Some(node) = self.nodes.get_mut(ia.get()) {
            node.edges.push(Edge::new(ib, metrics, salts));
        }
        if let Some(node) = self.nodes.get_mut(ib.get()) {
            node.edges.push(Edge::new(ia, metrics, salts));
        }
        self.links += 1;
        Ok(true)
    }

    /// Removes the link between two nodes. Returns `false` if there was none.
    pub fn remove_link(&mut self, a: PublicKey, b: PublicKey) -> bool {
        let Ok((ia, ib)) = self.pair(a, b) else {
            return false;
        };
        let mut removed = false;
        for (from, to) in [(ia, ib), (ib, ia)] {
            if let Some(node) = self.nodes.get_mut(from.get())
                && let Some(at) = node.edges.iter().position(|e| e.to == to)
            {
                node.edges.swap_remove(at);
                removed = true;
            }
        }
        if removed {
            self.links = self.links.saturating_sub(1);
        }
        removed
    }

    /// Sets the metrics of the link between two nodes (both directions).
    pub fn set_link_metrics(
        &mut self,
        a: PublicKey,
        b: PublicKey,
        metrics: LinkMetrics,
    ) -> Result<(), TopologyError> {
        let (ia, ib) = self.pair(a, b)?;
        if self.edge(ia, ib).is_none() {
            return Err(TopologyError::NoLink(a, b));
        }
        for (from, to) in [(ia, ib), (ib, ia)] {
            if let Some(edge) = self
                .nodes
                .get_mut(from.get())
                .and_then(|n| n.edges.iter_mut().find(|e| e.to == to))
            {
                *edge = Edge::new(to, metrics, edge.salts);
            }
        }
        Ok(())
    }

    /// The metrics of the link between two nodes, if there is one.
    pub fn link(&self, a: PublicKey, b: PublicKey) -> Option<LinkMetrics> {
        let (ia, ib) = self.pair(a, b).ok()?;
        self.edge(ia, ib).map(|e| e.metrics)
    }

    /// Every link once, as `(a, b, metrics)`, in no particular order.
    pub fn links(&self) -> impl Iterator<Item = (PublicKey, PublicKey, LinkMetrics)> + '_ {
        self.nodes.iter().enumerate().flat_map(move |(i, node)| {
            node.edges
                .iter()
                .filter(move |e| i < e.to.get())
                .filter_map(move |e| self.node(e.to).map(|to| (node.key, to.key, e.metrics)))
        })
    }

    /// The node's neighbours with the metrics of the link to each; nothing for an unknown
    /// node.
    pub fn neighbours(
        &self,
        key: PublicKey,
    ) -> impl Iterator<Item = (PublicKey, LinkMetrics)> + '_ {
        let edges = self
            .idx(key)
            .and_then(|idx| self.node(idx))
            .map(|n| n.edges.as_slice())
            .unwrap_or(&[]);
        edges
            .iter()
            .filter_map(|e| self.node(e.to).map(|to| (to.key, e.metrics)))
    }

    /// Whether every node of the path is known and up and every link between them exists
    /// and is up: a quick check for an installed route after the topology changed.
    pub fn path_usable(&self, path: &Path) -> bool {
        path.nodes
            .iter()
            .all(|&key| self.node_up(key) == Some(true))
            && path
                .links()
                .all(|(a, b)| self.link(a, b).is_some_and(|m| m.up))
    }

    /// The cheapest simple path from `src` to `dst` under `constraints`; see the module
    /// documentation. Allocates a [`Router`] for this one call: keep a `Router` instead
    /// when computing many routes.
    pub fn route(
        &self,
        src: PublicKey,
        dst: PublicKey,
        constraints: &Constraints,
    ) -> Result<Path, RouteError> {
        Router::new().route(self, src, dst, constraints)
    }

    pub(super) fn idx(&self, key: PublicKey) -> Option<NodeIdx> {
        self.index.get(&key).copied()
    }

    pub(super) fn node(&self, idx: NodeIdx) -> Option<&Node> {
        self.nodes.get(idx.get()).filter(|n| n.live)
    }

    fn pair(&self, a: PublicKey, b: PublicKey) -> Result<(NodeIdx, NodeIdx), TopologyError> {
        let ia = self.idx(a).ok_or(TopologyError::UnknownNode(a))?;
        let ib = self.idx(b).ok_or(TopologyError::UnknownNode(b))?;
        if ia == ib {
            return Err(TopologyError::SelfLink);
        }
        Ok((ia, ib))
    }

    fn edge(&self, from: NodeIdx, to: NodeIdx) -> Option<&Edge> {
        self.node(from)?.edges.iter().find(|e| e.to == to)
    }

    pub(super) fn edges(&self, idx: usize) -> &[Edge] {
        self.nodes.get(idx).map_or(&[], |n| n.edges.as_slice())
    }

    pub(super) fn is_usable(&self, idx: usize) -> bool {
        self.usable.get(idx).copied().unwrap_or(false)
    }
}
