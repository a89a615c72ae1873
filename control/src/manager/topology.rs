//! The manager's map of the mesh and its route computation. Sans-IO: a [`Topology`] is
//! plain data that the manager updates as nodes register, links are measured and things
//! die; [`Router::route`] (or [`Topology::route`]) turns it into a [`Path`]. Nothing here
//! touches a socket or the clock, and nothing installs a route: that is the caller's job.
//!
//! # Model
//!
//! - Nodes are identified by their [`PublicKey`] and are *up* or *down*. Inside, each node
//!   has a dense index (`NodeIdx`), so the search works on arrays rather than hash maps;
//!   the index of a removed node is reused by the next node added.
//! - Links are undirected, at most one between two nodes, with one [`LinkMetrics`] for
//!   both directions (round-trip time, loss, up or down). Each node keeps its links in an
//!   adjacency list, so looking up one link costs the degree of its end.
//! - A route is usable only over nodes that are up, links that are up, and nodes not in the
//!   caller's avoid list.
//!
//! # What a route is
//!
//! [`Router::route`] returns the cheapest **simple** path (no node twice) from `src` to
//! `dst` whose number of links (hops: `A-E` is 1, `A-B-E` is 2) lies in
//! `[min_hops, max_hops]`, by the [`RouteWeight`] in the [`Constraints`]. Among paths of equal
//! cost the search prefers fewer hops. Links are symmetric, so the route from `dst` to
//! `src` is the same path reversed ([`Path::reversed`]) at the same cost; there is no need
//! to compute it twice.
//!
//! # How, and what it costs
//!
//! Shortest paths are easy; a *minimum* number of hops is what makes the problem hard (a
//! simple path of at least `k` hops is a longest-path-like question). The search runs in
//! two stages:
//!
//! 1. **Layered Dijkstra, bidirectional.** States are `(node, min(hops, min_hops))`:
//!    `min_hops + 1` copies of the graph, where the last layer means "far enough". The
//!    cheapest walk from `(src, 0)` to `(dst, min_hops)`, keyed by `(cost, hops)`, never
//!    re-entering `src` and never passing through `dst`, is the cheapest *walk* that is
//!    long enough. Every valid path is such a walk, so if the walk is simple and within
//!    `max_hops`, it is the answer. With `min_hops` 1 this is plain shortest path, and a
//!    walk of positive costs (every link costs at least 1) is always simple. The search
//!    grows from both ends at once (forwards from `src`, backwards from `dst` over the
//!    reversed layered graph) and stops by the classic rule: when the two queue tops
//!    together cannot beat the best meeting seen. Worst case
//!    `O((V + E) * L * log(V * L))` with `L = min_hops + 1`; on a random mesh it touches
//!    two small balls around the ends rather than one large one around the source.
//! 2. **Fallback: best-first search over simple paths**, only when the walk repeats a node
//!    (`min_hops` forced a detour through a cheap loop) or is longer than `max_hops` (a
//!    cheaper walk with more hops than allowed). Two more layered Dijkstras (one under
//!    [`RouteWeight::Hops`]), run from `dst` over everything reachable (`O(V * L)` memory
//!    written, so the fallback costs at least a full search), give for every `(node, hops still needed)` a lower bound on the remaining cost
//!    and on the remaining hops. An A* search then grows partial simple paths from `src`,
//!    cheapest `cost + bound` first, dropping any that would repeat a node, exceed
//!    `max_hops`, or cannot reach `dst` within it. The bounds are admissible, so the first
//!    complete path it takes off the queue is optimal. The number of partial paths is
//!    exponential in the worst case, so the search stops with [`RouteError::SearchLimit`]
//!    after [`Router::search_limit`] of them (about 24 bytes each, plus the queue).
//!
//! # Buffers
//!
//! A [`Router`] owns every array the search needs, sized to the topology and reused from
//! call to call: per-state arrays are tagged with a call number (an epoch) instead of
//! being cleared, so a route in the common case touches only the states it explores. The
//! only allocation per route in the common case is the returned [`Path`]. [`Topology::route`] is the
//! convenient form with a fresh `Router` each call; a manager computing many routes keeps
//! one `Router`.

use core::fmt;
use core::str::FromStr;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;

/// Default [`Constraints::max_hops`].
pub const DEFAULT_MAX_HOPS: usize = 16;

/// The largest accepted [`Constraints::min_hops`]: the layered search holds
/// `min_hops + 1` states per node.
pub const MAX_MIN_HOPS: usize = 64;

/// What a link of unknown round-trip time costs under [`RouteWeight::Latency`]: high, so any
/// measured link of sane latency is preferred, but usable.
pub const UNKNOWN_RTT: Duration = Duration::from_secs(1);

/// The round-trip time at which [`RouteWeight::Latency`] stops telling links apart, so sums of
/// link costs cannot overflow.
pub const MAX_RTT: Duration = Duration::from_secs(60);

/// The loss rate at which [`RouteWeight::Latency`] stops penalising more: a lossy link costs
/// at most `1 / (1 - MAX_LOSS)` = 10 times its round-trip time.
pub const MAX_LOSS: f32 = 0.9;

/// Default [`Router::search_limit`]: partial paths the fallback search may create.
pub const DEFAULT_SEARCH_LIMIT: usize = 1 << 18;

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

/// What a route minimises: the one route weight type of the project. The config's
/// `manager.weight`, the CLI's `--weight`, the control socket's and the manager
/// protocol's `weight` are all this type, written `hops` or `latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RouteWeight {
    /// The number of links: every usable link costs 1 (`hops`).
    #[default]
    Hops,
    /// The sum of [`LinkMetrics::latency_cost`]: round-trip times in microseconds,
    /// unmeasured links costed high, lossy links penalised (`latency`).
    Latency,
}

impl RouteWeight {
    /// Every weight, in the order they are documented.
    pub const ALL: [Self; 2] = [Self::Hops, Self::Latency];

    /// The name as written in configs, on the command line and on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hops => "hops",
            Self::Latency => "latency",
        }
    }
}

impl fmt::Display for RouteWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`RouteWeight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a route weight is `hops` or `latency`")]
pub struct UnknownWeight;

impl FromStr for RouteWeight {
    type Err = UnknownWeight;

    fn from_str(text: &str) -> Result<Self, UnknownWeight> {
        Self::ALL
            .into_iter()
            .find(|weight| weight.as_str() == text)
            .ok_or(UnknownWeight)
    }
}

/// What a route must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraints {
    /// The fewest links the path may have; 0 counts as 1. At most [`MAX_MIN_HOPS`].
    pub min_hops: usize,
    /// The most links the path may have; at least 1 and at least `min_hops`.
    pub max_hops: usize,
    /// Nodes the path must not cross. Keys not in the topology are ignored; `src` or `dst`
    /// in the list is an error.
    pub avoid: HashSet<PublicKey>,
    /// What the path minimises.
    pub weight: RouteWeight,
}

impl Default for Constraints {
    /// One to [`DEFAULT_MAX_HOPS`] hops, nothing avoided, fewest hops.
    fn default() -> Self {
        Self {
            min_hops: 1,
            max_hops: DEFAULT_MAX_HOPS,
            avoid: HashSet::new(),
            weight: RouteWeight::Hops,
        }
    }
}

/// A route: the nodes from source to destination, both included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Source first, destination last; no node twice.
    pub nodes: Vec<PublicKey>,
    /// The sum of the link costs under the weight the path was computed with.
    pub cost: u64,
}

impl Path {
    /// The number of links.
    pub fn hops(&self) -> usize {
        self.nodes.len().saturating_sub(1)
    }

    /// The first node.
    pub fn src(&self) -> Option<PublicKey> {
        self.nodes.first().copied()
    }

    /// The last node.
    pub fn dst(&self) -> Option<PublicKey> {
        self.nodes.last().copied()
    }

    /// The nodes between source and destination: the relays.
    pub fn relays(&self) -> &[PublicKey] {
        let end = self.nodes.len().saturating_sub(1);
        self.nodes.get(1..end).unwrap_or(&[])
    }

    /// The links in order, each as (nearer the source, nearer the destination).
    pub fn links(&self) -> impl Iterator<Item = (PublicKey, PublicKey)> + '_ {
        self.nodes.windows(2).filter_map(|pair| match pair {
            [a, b] => Some((*a, *b)),
            _ => None,
        })
    }

    /// Whether the path crosses `node` (as source, relay or destination).
    pub fn uses_node(&self, node: PublicKey) -> bool {
        self.nodes.contains(&node)
    }

    /// Whether the path crosses the link between `a` and `b`, in either direction.
    pub fn uses_link(&self, a: PublicKey, b: PublicKey) -> bool {
        self.links()
            .any(|(x, y)| (x == a && y == b) || (x == b && y == a))
    }

    /// The route back: the same nodes in reverse order, at the same cost.
    pub fn reversed(&self) -> Path {
        Path {
            nodes: self.nodes.iter().rev().copied().collect(),
            cost: self.cost,
        }
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

/// Why no route was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The source or destination is not a node of the topology.
    #[error("unknown node {0}")]
    UnknownNode(PublicKey),
    /// Source and destination are the same node.
    #[error("source and destination are the same node")]
    SameNode,
    /// The source or destination is in the avoid list.
    #[error("the source or destination is in the avoid list")]
    SrcOrDstAvoided,
    /// The source or destination is down.
    #[error("node {0} is down")]
    NodeDown(PublicKey),
    /// `max_hops` is 0, `min_hops` exceeds `max_hops`, or `min_hops` exceeds
    /// [`MAX_MIN_HOPS`].
    #[error("bad constraints: min_hops {min_hops}, max_hops {max_hops}")]
    BadConstraints {
        /// The requested minimum.
        min_hops: usize,
        /// The requested maximum.
        max_hops: usize,
    },
    /// No simple path over usable nodes and links satisfies the constraints.
    #[error("no path satisfies the constraints")]
    NoPath,
    /// The fallback search created this many partial paths without an answer.
    #[error("route search gave up after {limit} partial paths")]
    SearchLimit {
        /// The limit that was reached.
        limit: usize,
    },
}

/// A node's dense index into the topology's arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct NodeIdx(u32);

impl NodeIdx {
    fn get(self) -> usize {
        self.0 as usize
    }

    fn from_usize(index: usize) -> Option<Self> {
        u32::try_from(index).ok().map(Self)
    }
}

/// One direction of a link, kept in the adjacency list of its near end.
#[derive(Debug, Clone, Copy)]
struct Edge {
    to: NodeIdx,
    metrics: LinkMetrics,
    /// `metrics.latency_cost()`, computed when the metrics change rather than per search.
    latency: u64,
}

impl Edge {
    fn new(to: NodeIdx, metrics: LinkMetrics) -> Self {
        Self {
            to,
            metrics,
            latency: metrics.latency_cost(),
        }
    }

    fn cost(&self, weight: RouteWeight) -> u64 {
        match weight {
            RouteWeight::Hops => 1,
            RouteWeight::Latency => self.latency,
        }
    }
}

/// A slot of the node array; a removed node's slot waits in the free list.
#[derive(Debug, Clone)]
struct Node {
    key: PublicKey,
    up: bool,
    live: bool,
    edges: Vec<Edge>,
}

/// The mesh as the manager sees it: nodes (up or down) and undirected links with metrics.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    index: HashMap<PublicKey, NodeIdx>,
    nodes: Vec<Node>,
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
        if let Some(node) = self.nodes.get_mut(ia.get()) {
            node.edges.push(Edge::new(ib, metrics));
        }
        if let Some(node) = self.nodes.get_mut(ib.get()) {
            node.edges.push(Edge::new(ia, metrics));
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
                *edge = Edge::new(to, metrics);
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

    fn idx(&self, key: PublicKey) -> Option<NodeIdx> {
        self.index.get(&key).copied()
    }

    fn node(&self, idx: NodeIdx) -> Option<&Node> {
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

    fn edges(&self, idx: usize) -> &[Edge] {
        self.nodes.get(idx).map_or(&[], |n| n.edges.as_slice())
    }

    fn is_usable(&self, idx: usize) -> bool {
        self.usable.get(idx).copied().unwrap_or(false)
    }
}

/// No predecessor: the start state, or the root of the partial-path tree.
const NONE: usize = usize::MAX;

/// A search key: `(cost, hops)`, compared cost first, so equal costs prefer fewer hops.
type Key = (u64, u32);

/// A min-queue of `(cost, hops, state)`.
type Queue = BinaryHeap<Reverse<(u64, u32, usize)>>;

fn add(a: Key, b: Key) -> Key {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

/// What a layered search knows about one state; valid only if `stamp` is the current
/// epoch.
#[derive(Debug, Clone, Copy)]
struct Label {
    stamp: u32,
    hops: u32,
    cost: u64,
    /// The state this one was reached from (towards the search's origin).
    prev: usize,
}

const BLANK: Label = Label {
    stamp: 0,
    hops: 0,
    cost: 0,
    prev: NONE,
};

/// A layered search's labels, one per state `layer * n + node`, in one array so that a
/// state's label is one memory access.
#[derive(Debug, Clone, Default)]
struct Layers {
    labels: Vec<Label>,
}

/// One layered search: where it starts and ends, over how many layers, by what weight.
#[derive(Debug, Clone, Copy)]
struct Query {
    /// Never re-entered: it is on every walk already.
    start: usize,
    /// Entered only into the last layer, and never left: no walk passes through it.
    end: usize,
    /// Nodes in the topology's arrays (the layer stride).
    n: usize,
    /// The last layer: `min_hops`.
    last: usize,
    weight: RouteWeight,
}

/// The node across `edge`, if a route may step onto it: the link is up, the node is up
/// and not in this call's avoid list.
fn enterable(topo: &Topology, blocked: &[u32], epoch: u32, edge: &Edge) -> Option<usize> {
    let w = edge.to.get();
    (edge.metrics.up && topo.is_usable(w) && blocked.get(w) != Some(&epoch)).then_some(w)
}

impl Layers {
    fn fit(&mut self, states: usize) {
        if self.labels.len() < states {
            self.labels.resize(states, BLANK);
        }
    }

    fn clear_stamps(&mut self) {
        self.labels.fill(BLANK);
    }

    fn best(&self, state: usize, epoch: u32) -> Option<Key> {
        self.labels
            .get(state)
            .filter(|l| l.stamp == epoch)
            .map(|l| (l.cost, l.hops))
    }

    fn prev(&self, state: usize) -> usize {
        self.labels.get(state).map_or(NONE, |l| l.prev)
    }

    /// Records `key` for `state` if it beats what is there; says whether it did.
    fn improve(&mut self, state: usize, key: Key, prev: usize, epoch: u32) -> bool {
        match self.labels.get_mut(state) {
            Some(label) if label.stamp != epoch || (label.cost, label.hops) > key => {
                *label = Label {
                    stamp: epoch,
                    hops: key.1,
                    cost: key.0,
                    prev,
                };
                true
            }
            _ => false,
        }
    }

    /// The key at the top of `queue` after dropping stale entries (pushed before their
    /// state was improved again).
    fn fresh_top(&self, queue: &mut Queue, epoch: u32) -> Option<Key> {
        while let Some(&Reverse((cost, hops, state))) = queue.peek() {
            if self.best(state, epoch) == Some((cost, hops)) {
                return Some((cost, hops));
            }
            queue.pop();
        }
        None
    }

    /// Dijkstra over `(node, min(hops, last))` from `(start, 0)`, keyed by `(cost, hops)`,
    /// exploring everything reachable: the lower bounds of the fallback search.
    fn run(&mut self, topo: &Topology, queue: &mut Queue, blocked: &[u32], epoch: u32, q: Query) {
        queue.clear();
        self.improve(q.start, (0, 0), NONE, epoch);
        queue.push(Reverse((0, 0, q.start)));
        while self.fresh_top(queue, epoch).is_some() {
            let Some(Reverse((cost, hops, state))) = queue.pop() else {
                break;
            };
            self.expand_forward(
                topo,
                queue,
                blocked,
                epoch,
                q,
                (cost, hops),
                state,
                |_, _| {},
            );
        }
    }

    /// One forward step of Dijkstra from `state`, reached at `key`: every state one usable
    /// link further whose label improves is queued and passed to `improved`.
    #[allow(clippy::too_many_arguments)]
    fn expand_forward(
        &mut self,
        topo: &Topology,
        queue: &mut Queue,
        blocked: &[u32],
        epoch: u32,
        q: Query,
        key: Key,
        state: usize,
        mut improved: impl FnMut(usize, Key),
    ) {
        let (layer, v) = (state / q.n, state % q.n);
        if v == q.end {
            return;
        }
        let next_layer = (layer + 1).min(q.last);
        for edge in topo.edges(v) {
            let Some(w) = enterable(topo, blocked, epoch, edge) else {
                continue;
            };
            if w == q.start || (w == q.end && next_layer < q.last) {
                continue;
            }
            let next_key = add(key, (edge.cost(q.weight), 1));
            let next = next_layer * q.n + w;
            if self.improve(next, next_key, state, epoch) {
                queue.push(Reverse((next_key.0, next_key.1, next)));
                improved(next, next_key);
            }
        }
    }

    /// For every `(node, r)`: the least value of the first key component over walks from
    /// the query's start to the node with at least `r` hops (`u64::MAX` if none), written
    /// to `out[r * n + node]`. Walks of fewer than `last` hops sit in the layer of their
    /// exact length, so "at least `r`" is the minimum over layers `r..=last`.
    fn lower_bounds(&self, epoch: u32, n: usize, last: usize, out: &mut Vec<u64>) {
        out.clear();
        out.resize(n * (last + 1), u64::MAX);
        for v in 0..n {
            let mut least = u64::MAX;
            for layer in (0..=last).rev() {
                let state = layer * n + v;
                if let Some((cost, _)) = self.best(state, epoch) {
                    least = least.min(cost);
                }
                if let Some(slot) = out.get_mut(state) {
                    *slot = least;
                }
            }
        }
    }
}

/// Keeps the cheaper of `mu` and a walk of `key` through `state`.
fn offer(mu: &mut Option<(usize, Key)>, state: usize, key: Key) {
    if mu.is_none_or(|(_, best)| key < best) {
        *mu = Some((state, key));
    }
}

/// Both halves of the bidirectional search: labels and queue per direction.
#[derive(Debug, Clone, Default)]
struct Meet {
    forward: Layers,
    backward: Layers,
    forward_queue: Queue,
    backward_queue: Queue,
}

impl Meet {
    /// Bidirectional Dijkstra over the layered graph, from `(start, 0)` forwards and from
    /// `(end, last)` backwards, always growing the smaller queue. `mu` is the cheapest
    /// walk seen through a state both sides labelled; the search stops when the two queue
    /// tops together cannot beat it (the classic rule; `(cost, hops)` keys add and compare
    /// like numbers). Returns the meeting state and the walk's key.
    fn run(
        &mut self,
        topo: &Topology,
        blocked: &[u32],
        epoch: u32,
        q: Query,
    ) -> Option<(usize, Key)> {
        let Self {
            forward,
            backward,
            forward_queue: fq,
            backward_queue: bq,
        } = self;
        fq.clear();
        bq.clear();
        let goal = q.last * q.n + q.end;
        forward.improve(q.start, (0, 0), NONE, epoch);
        fq.push(Reverse((0, 0, q.start)));
        backward.improve(goal, (0, 0), NONE, epoch);
        bq.push(Reverse((0, 0, goal)));
        let mut mu: Option<(usize, Key)> = None;
        while let (Some(top_f), Some(top_b)) =
            (forward.fresh_top(fq, epoch), backward.fresh_top(bq, epoch))
        {
            if mu.is_some_and(|(_, best)| add(top_f, top_b) >= best) {
                break;
            }
            if fq.len() <= bq.len() {
                let Some(Reverse((cost, hops, state))) = fq.pop() else {
                    break;
                };
                let meet = |next: usize, key: Key| {
                    if let Some(rest) = backward.best(next, epoch) {
                        offer(&mut mu, next, add(key, rest));
                    }
                };
                forward.expand_forward(topo, fq, blocked, epoch, q, (cost, hops), state, meet);
            } else {
                let Some(Reverse((cost, hops, state))) = bq.pop() else {
                    break;
                };
                let (layer, w) = (state / q.n, state % q.n);
                if w == q.start {
                    continue; // (start, 0) has no predecessors
                }
                // The layers a step into `layer` can come from.
                let from = if layer == q.last {
                    [layer.checked_sub(1), Some(layer)]
                } else {
                    [layer.checked_sub(1), None]
                };
                for edge in topo.edges(w) {
                    let Some(v) = enterable(topo, blocked, epoch, edge) else {
                        continue;
                    };
                    if v == q.end {
                        continue; // the end is never left
                    }
                    let key = add((cost, hops), (edge.cost(q.weight), 1));
                    for k in from.into_iter().flatten() {
                        // Layer 0 holds the start and nothing else.
                        if (v == q.start) != (k == 0) {
                            continue;
                        }
                        let prev = k * q.n + v;
                        if backward.improve(prev, key, state, epoch) {
                            bq.push(Reverse((key.0, key.1, prev)));
                            if let Some(head) = forward.best(prev, epoch) {
                                offer(&mut mu, prev, add(head, key));
                            }
                        }
                    }
                }
            }
        }
        mu
    }
}

/// A partial simple path of the fallback search, as a tree: its last node and the index of
/// the partial path it extends.
#[derive(Debug, Clone, Copy)]
struct Partial {
    node: u32,
    hops: u32,
    parent: usize,
    cost: u64,
}

/// Route computation with reusable buffers. One `Router` serves any number of
/// [`Topology`]s and calls; its arrays grow to the largest topology and `min_hops` seen
/// and are never cleared between calls (entries carry the epoch of the call that wrote
/// them).
#[derive(Debug, Clone)]
pub struct Router {
    search_limit: usize,
    epoch: u32,
    /// `blocked[node] == epoch`: in this call's avoid list.
    blocked: Vec<u32>,
    meet: Meet,
    walk: Vec<usize>,
    // The fallback's state.
    reverse: Layers,
    reverse_hops: Layers,
    queue: Queue,
    cost_bound: Vec<u64>,
    hops_bound: Vec<u64>,
    partials: Vec<Partial>,
    /// `(cost + bound, u32::MAX - hops, partial)`: cheapest first, then deepest.
    open: BinaryHeap<Reverse<(u64, u32, usize)>>,
    /// `on_path[node] == path_epoch`: on the partial path being extended.
    on_path: Vec<u32>,
    path_epoch: u32,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with the [`DEFAULT_SEARCH_LIMIT`].
    pub fn new() -> Self {
        Self::with_search_limit(DEFAULT_SEARCH_LIMIT)
    }

    /// A router whose fallback search gives up after `limit` partial paths.
    pub fn with_search_limit(limit: usize) -> Self {
        Self {
            search_limit: limit,
            epoch: 0,
            blocked: Vec::new(),
            meet: Meet::default(),
            walk: Vec::new(),
            reverse: Layers::default(),
            reverse_hops: Layers::default(),
            queue: Queue::new(),
            cost_bound: Vec::new(),
            hops_bound: Vec::new(),
            partials: Vec::new(),
            open: BinaryHeap::new(),
            on_path: Vec::new(),
            path_epoch: 0,
        }
    }

    /// How many partial paths the fallback search may create before it gives up.
    pub fn search_limit(&self) -> usize {
        self.search_limit
    }

    /// The cheapest simple path from `src` to `dst` in `topo` under `constraints`; see the
    /// module documentation for what that means and what it costs.
    pub fn route(
        &mut self,
        topo: &Topology,
        src: PublicKey,
        dst: PublicKey,
        constraints: &Constraints,
    ) -> Result<Path, RouteError> {
        let Constraints {
            min_hops,
            max_hops,
            ref avoid,
            weight,
        } = *constraints;
        if max_hops == 0 || min_hops > max_hops || min_hops > MAX_MIN_HOPS {
            return Err(RouteError::BadConstraints { min_hops, max_hops });
        }
        let s = topo.idx(src).ok_or(RouteError::UnknownNode(src))?;
        let d = topo.idx(dst).ok_or(RouteError::UnknownNode(dst))?;
        if s == d {
            return Err(RouteError::SameNode);
        }
        if avoid.contains(&src) || avoid.contains(&dst) {
            return Err(RouteError::SrcOrDstAvoided);
        }
        for (key, idx) in [(src, s), (dst, d)] {
            if !topo.is_usable(idx.get()) {
                return Err(RouteError::NodeDown(key));
            }
        }
        let last = min_hops.max(1);
        // A simple path has at most one link fewer than there are nodes.
        if last >= topo.node_count() {
            return Err(RouteError::NoPath);
        }
        let n = topo.nodes.len();
        let states = n * (last + 1);
        self.next_epoch();
        self.meet.forward.fit(states);
        self.meet.backward.fit(states);
        if self.blocked.len() < n {
            self.blocked.resize(n, 0);
        }
        for idx in avoid.iter().filter_map(|&key| topo.idx(key)) {
            if let Some(slot) = self.blocked.get_mut(idx.get()) {
                *slot = self.epoch;
            }
        }

        let query = Query {
            start: s.get(),
            end: d.get(),
            n,
            last,
            weight,
        };
        let (meet, (cost, hops)) = self
            .meet
            .run(topo, &self.blocked, self.epoch, query)
            .ok_or(RouteError::NoPath)?;

        // The forward half back to the start, then the backward half on to the end. The
        // chains follow Dijkstra trees; the cap only guards against a bug looping forever.
        self.walk.clear();
        let mut state = meet;
        while state != NONE && self.walk.len() <= states {
            self.walk.push(state % n);
            state = self.meet.forward.prev(state);
        }
        self.walk.reverse();
        let mut state = self.meet.backward.prev(meet);
        while state != NONE && self.walk.len() <= states {
            self.walk.push(state % n);
            state = self.meet.backward.prev(state);
        }
        let hops_ok = usize::try_from(hops).is_ok_and(|h| h <= max_hops);
        if hops_ok && self.walk_is_simple(n) {
            return Ok(Path {
                nodes: self.walk.iter().filter_map(|&v| key_of(topo, v)).collect(),
                cost,
            });
        }
        self.search(topo, query, max_hops)
    }

    /// Stage 2: best-first search over partial simple paths, pruned by the layered lower
    /// bounds of the remaining cost and hops.
    fn search(
        &mut self,
        topo: &Topology,
        forward: Query,
        max_hops: usize,
    ) -> Result<Path, RouteError> {
        let Query {
            n, last, weight, ..
        } = forward;
        let (src, dst) = (forward.start, forward.end);
        let states = n * (last + 1);
        // The same layered walk, run from the destination: at least `r` more hops from a
        // node to `dst` cost at least `cost_bound[r * n + node]`. `src` is its `end`: it is
        // on every partial path, so no remaining walk may use it.
        let back = Query {
            start: dst,
            end: src,
            ..forward
        };
        self.reverse.fit(states);
        self.reverse
            .run(topo, &mut self.queue, &self.blocked, self.epoch, back);
        self.reverse
            .lower_bounds(self.epoch, n, last, &mut self.cost_bound);
        if weight == RouteWeight::Hops {
            self.hops_bound.clone_from(&self.cost_bound);
        } else {
            let by_hops = Query {
                weight: RouteWeight::Hops,
                ..back
            };
            self.reverse_hops.fit(states);
            self.reverse_hops
                .run(topo, &mut self.queue, &self.blocked, self.epoch, by_hops);
            self.reverse_hops
                .lower_bounds(self.epoch, n, last, &mut self.hops_bound);
        }
        if self.on_path.len() < n {
            self.on_path.resize(n, 0);
        }
        let max_hops = u32::try_from(max_hops).unwrap_or(u32::MAX);
        let last_u32 = u32::try_from(last).unwrap_or(u32::MAX);

        self.partials.clear();
        self.open.clear();
        let root = Partial {
            node: u32::try_from(src).unwrap_or(u32::MAX),
            hops: 0,
            parent: NONE,
            cost: 0,
        };
        self.partials.push(root);
        self.open.push(Reverse((0, u32::MAX, 0)));
        while let Some(Reverse((_, _, at))) = self.open.pop() {
            let Some(&here) = self.partials.get(at) else {
                continue;
            };
            let v = here.node as usize;
            if v == dst {
                return Ok(self.partial_path(topo, at, here.cost));
            }
            self.mark_path(at);
            let hops = here.hops.saturating_add(1);
            if hops > max_hops {
                continue;
            }
            let needed = last.saturating_sub(hops as usize);
            for edge in topo.edges(v) {
                let Some(w) = enterable(topo, &self.blocked, self.epoch, edge) else {
                    continue;
                };
                if self.on_path.get(w) == Some(&self.path_epoch) {
                    continue; // not simple
                }
                let cost = here.cost.saturating_add(edge.cost(weight));
                let estimate = if w == dst {
                    if hops < last_u32 {
                        continue;
                    }
                    cost
                } else {
                    let bound = needed * n + w;
                    let more_cost = self.cost_bound.get(bound).copied().unwrap_or(u64::MAX);
                    let more_hops = self.hops_bound.get(bound).copied().unwrap_or(u64::MAX);
                    if more_cost == u64::MAX
                        || u64::from(hops).saturating_add(more_hops) > u64::from(max_hops)
                    {
                        continue;
                    }
                    cost.saturating_add(more_cost)
                };
                if self.partials.len() >= self.search_limit {
                    return Err(RouteError::SearchLimit {
                        limit: self.search_limit,
                    });
                }
                self.open
                    .push(Reverse((estimate, u32::MAX - hops, self.partials.len())));
                self.partials.push(Partial {
                    node: edge.to.0,
                    hops,
                    parent: at,
                    cost,
                });
            }
        }
        Err(RouteError::NoPath)
    }

    /// Marks the nodes of partial path `at` in `on_path` under a fresh path epoch.
    fn mark_path(&mut self, mut at: usize) {
        self.path_epoch = self.path_epoch.wrapping_add(1);
        if self.path_epoch == 0 {
            self.on_path.fill(0);
            self.path_epoch = 1;
        }
        while let Some(p) = self.partials.get(at) {
            if let Some(slot) = self.on_path.get_mut(p.node as usize) {
                *slot = self.path_epoch;
            }
            at = p.parent;
        }
    }

    fn partial_path(&mut self, topo: &Topology, mut at: usize, cost: u64) -> Path {
        self.walk.clear();
        while let Some(p) = self.partials.get(at) {
            self.walk.push(p.node as usize);
            at = p.parent;
        }
        Path {
            nodes: self
                .walk
                .iter()
                .rev()
                .filter_map(|&v| key_of(topo, v))
                .collect(),
            cost,
        }
    }

    /// Whether `walk` repeats no node (uses `on_path` as the seen set).
    fn walk_is_simple(&mut self, n: usize) -> bool {
        if self.on_path.len() < n {
            self.on_path.resize(n, 0);
        }
        self.path_epoch = self.path_epoch.wrapping_add(1);
        if self.path_epoch == 0 {
            self.on_path.fill(0);
            self.path_epoch = 1;
        }
        for &v in &self.walk {
            match self.on_path.get_mut(v) {
                Some(seen) if *seen == self.path_epoch => return false,
                Some(seen) => *seen = self.path_epoch,
                None => return false,
            }
        }
        true
    }

    fn next_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.blocked.fill(0);
            self.meet.forward.clear_stamps();
            self.meet.backward.clear_stamps();
            self.reverse.clear_stamps();
            self.reverse_hops.clear_stamps();
            self.epoch = 1;
        }
    }
}

fn key_of(topo: &Topology, v: usize) -> Option<PublicKey> {
    topo.nodes.get(v).map(|n| n.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u8) -> PublicKey {
        PublicKey::from_bytes([i; 32])
    }

    /// Nodes `0..n` and the given links, all up with default metrics.
    fn graph(n: u8, links: &[(u8, u8)]) -> Topology {
        let mut topo = Topology::new();
        for i in 0..n {
            assert!(topo.add_node(key(i)).unwrap());
        }
        for &(a, b) in links {
            assert!(topo.add_link(key(a), key(b)).unwrap());
        }
        topo
    }

    fn rtt(topo: &mut Topology, a: u8, b: u8, ms: u64) {
        let metrics = LinkMetrics {
            rtt: Some(Duration::from_millis(ms)),
            ..LinkMetrics::default()
        };
        topo.set_link_metrics(key(a), key(b), metrics).unwrap();
    }

    fn nodes(path: &Path) -> Vec<u8> {
        path.nodes.iter().map(|k| k.as_bytes()[0]).collect()
    }

    fn hops(min_hops: usize, max_hops: usize) -> Constraints {
        Constraints {
            min_hops,
            max_hops,
            ..Constraints::default()
        }
    }

    fn latency() -> Constraints {
        Constraints {
            weight: RouteWeight::Latency,
            ..Constraints::default()
        }
    }

    #[test]
    fn line_graph() {
        let topo = graph(4, &[(0, 1), (1, 2), (2, 3)]);
        let path = topo.route(key(0), key(3), &Constraints::default()).unwrap();
        assert_eq!(nodes(&path), [0, 1, 2, 3]);
        assert_eq!((path.cost, path.hops()), (3, 3));
        assert_eq!(path.src(), Some(key(0)));
        assert_eq!(path.dst(), Some(key(3)));
        assert_eq!(path.relays(), [key(1), key(2)]);
        // Links are symmetric: the way back is the same path reversed.
        let back = topo.route(key(3), key(0), &Constraints::default()).unwrap();
        assert_eq!(back, path.reversed());
    }

    #[test]
    fn hops_and_latency_choose_different_paths() {
        // 0-1-4 is two slow links; 0-2-3-4 is three fast ones.
        let mut topo = graph(5, &[(0, 1), (1, 4), (0, 2), (2, 3), (3, 4)]);
        rtt(&mut topo, 0, 1, 50);
        rtt(&mut topo, 1, 4, 50);
        for (a, b) in [(0, 2), (2, 3), (3, 4)] {
            rtt(&mut topo, a, b, 1);
        }
        let by_hops = topo.route(key(0), key(4), &Constraints::default()).unwrap();
        assert_eq!((nodes(&by_hops), by_hops.cost), (vec![0, 1, 4], 2));
        let by_latency = topo.route(key(0), key(4), &latency()).unwrap();
        assert_eq!(
            (nodes(&by_latency), by_latency.cost),
            (vec![0, 2, 3, 4], 3_000)
        );

        // Loss: 0-2 losing 99% (clamped to 90%) costs 10 ms, and the slow path wins.
        let lossy = LinkMetrics {
            rtt: Some(Duration::from_millis(1)),
            loss: 0.99,
            up: true,
        };
        topo.set_link_metrics(key(2), key(0), lossy).unwrap();
        rtt(&mut topo, 0, 1, 5);
        rtt(&mut topo, 1, 4, 5);
        let path = topo.route(key(0), key(4), &latency()).unwrap();
        assert_eq!((nodes(&path), path.cost), (vec![0, 1, 4], 10_000));
    }

    #[test]
    fn latency_cost() {
        let cost = |rtt: Option<u64>, loss: f32| {
            LinkMetrics {
                rtt: rtt.map(Duration::from_micros),
                loss,
                up: true,
            }
            .latency_cost()
        };
        assert_eq!(cost(Some(10_000), 0.0), 10_000);
        assert_eq!(cost(Some(10_000), 0.5), 20_000);
        assert_eq!(cost(Some(10_000), 1.0), 100_000);
        assert_eq!(cost(Some(10_000), f32::NAN), 100_000);
        assert_eq!(cost(Some(10_000), -1.0), 10_000);
        assert_eq!(cost(None, 0.0), 1_000_000);
        assert_eq!(cost(Some(0), 0.0), 1);
        assert_eq!(cost(Some(u64::MAX), 0.0), 60_000_000);
    }

    #[test]
    fn min_hops_takes_the_longer_path() {
        // A=0, B=1, C=2, D=3, E=4: A-B-E and A-C-D-E.
        let topo = graph(5, &[(0, 1), (1, 4), (0, 2), (2, 3), (3, 4)]);
        let path = topo.route(key(0), key(4), &hops(1, 16)).unwrap();
        assert_eq!(nodes(&path), [0, 1, 4]);
        let path = topo.route(key(0), key(4), &hops(3, 16)).unwrap();
        assert_eq!((nodes(&path), path.cost), (vec![0, 2, 3, 4], 3));
        assert_eq!(
            topo.route(key(0), key(4), &hops(4, 16)),
            Err(RouteError::NoPath)
        );
        // 0 counts as 1.
        let path = topo.route(key(0), key(4), &hops(0, 16)).unwrap();
        assert_eq!(nodes(&path), [0, 1, 4]);
    }

    #[test]
    fn min_hops_detour_must_stay_simple() {
        // 0-1-2 with a triangle 1-3-4 hanging off 1: three hops would need 0-1-3-1-2,
        // which repeats 1. No simple path has three hops.
        let mut topo = graph(5, &[(0, 1), (1, 2), (1, 3), (3, 4), (4, 1)]);
        assert_eq!(
            topo.route(key(0), key(2), &hops(3, 16)),
            Err(RouteError::NoPath)
        );
        // Add an expensive simple way round: 0-5-6-2. The cheap walk through the triangle
        // still repeats 1, so the answer is the expensive path.
        for i in 5..7 {
            topo.add_node(key(i)).unwrap();
        }
        for (a, b) in [(0, 5), (5, 6), (6, 2)] {
            topo.add_link(key(a), key(b)).unwrap();
            rtt(&mut topo, a, b, 100);
        }
        for (a, b) in [(0, 1), (1, 2), (1, 3), (3, 4), (4, 1)] {
            rtt(&mut topo, a, b, 1);
        }
        let want = Constraints {
            min_hops: 3,
            ..latency()
        };
        let path = topo.route(key(0), key(2), &want).unwrap();
        assert_eq!((nodes(&path), path.cost), (vec![0, 5, 6, 2], 300_000));
        // That answer came from the fallback search, which a limit of one partial path
        // stops at once.
        let mut router = Router::with_search_limit(1);
        assert_eq!(
            router.route(&topo, key(0), key(2), &want),
            Err(RouteError::SearchLimit { limit: 1 })
        );
        // And without a minimum, the cheap direct path.
        let path = topo.route(key(0), key(2), &latency()).unwrap();
        assert_eq!(nodes(&path), [0, 1, 2]);
    }

    #[test]
    fn max_hops_excludes_paths() {
        let topo = graph(4, &[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(
            topo.route(key(0), key(3), &hops(1, 2)),
            Err(RouteError::NoPath)
        );
        assert!(topo.route(key(0), key(3), &hops(1, 3)).is_ok());

        // By latency, the cheapest walk 0-1-2-3 has three hops; with at most two, the
        // dearer 0-4-3 is the answer.
        let mut topo = graph(5, &[(0, 1), (1, 2), (2, 3), (0, 4), (4, 3)]);
        for (a, b) in [(0, 1), (1, 2), (2, 3)] {
            rtt(&mut topo, a, b, 1);
        }
        rtt(&mut topo, 0, 4, 10);
        rtt(&mut topo, 4, 3, 10);
        let path = topo.route(key(0), key(3), &latency()).unwrap();
        assert_eq!(nodes(&path), [0, 1, 2, 3]);
        let want = Constraints {
            max_hops: 2,
            ..latency()
        };
        let path = topo.route(key(0), key(3), &want).unwrap();
        assert_eq!((nodes(&path), path.cost), (vec![0, 4, 3], 20_000));
    }

    #[test]
    fn avoid_list() {
        let topo = graph(4, &[(0, 1), (1, 3), (0, 2), (2, 3)]);
        let mut want = Constraints::default();
        want.avoid.insert(key(1));
        want.avoid.insert(key(99)); // unknown: ignored
        let path = topo.route(key(0), key(3), &want).unwrap();
        assert_eq!(nodes(&path), [0, 2, 3]);
        assert!(!path.uses_node(key(1)));
        want.avoid.insert(key(2));
        assert_eq!(topo.route(key(0), key(3), &want), Err(RouteError::NoPath));
        for end in [0, 3] {
            let mut want = Constraints::default();
            want.avoid.insert(key(end));
            assert_eq!(
                topo.route(key(0), key(3), &want),
                Err(RouteError::SrcOrDstAvoided)
            );
        }
    }

    #[test]
    fn down_nodes_and_links() {
        let mut topo = graph(4, &[(0, 1), (1, 3), (0, 2), (2, 3)]);
        let path = topo.route(key(0), key(3), &Constraints::default()).unwrap();
        assert_eq!(nodes(&path), [0, 1, 3]);
        assert!(topo.path_usable(&path));

        topo.set_node_up(key(1), false).unwrap();
        assert_eq!(topo.node_up(key(1)), Some(false));
        assert!(!topo.path_usable(&path));
        assert!(path.uses_node(key(1)));
        assert_eq!(
            nodes(&topo.route(key(0), key(3), &Constraints::default()).unwrap()),
            [0, 2, 3]
        );
        topo.set_node_up(key(1), true).unwrap();

        let down = LinkMetrics {
            up: false,
            ..LinkMetrics::default()
        };
        topo.set_link_metrics(key(3), key(1), down).unwrap();
        assert!(!topo.path_usable(&path));
        assert!(path.uses_link(key(3), key(1)));
        assert!(!path.uses_link(key(0), key(3)));
        assert_eq!(
            nodes(&topo.route(key(0), key(3), &Constraints::default()).unwrap()),
            [0, 2, 3]
        );
        topo.set_link_metrics(key(0), key(2), down).unwrap();
        assert_eq!(
            topo.route(key(0), key(3), &Constraints::default()),
            Err(RouteError::NoPath)
        );

        topo.set_node_up(key(3), false).unwrap();
        assert_eq!(
            topo.route(key(0), key(3), &Constraints::default()),
            Err(RouteError::NodeDown(key(3)))
        );
    }

    #[test]
    fn bad_requests() {
        let topo = graph(3, &[(0, 1), (1, 2)]);
        let any = Constraints::default();
        assert_eq!(
            topo.route(key(0), key(9), &any),
            Err(RouteError::UnknownNode(key(9)))
        );
        assert_eq!(
            topo.route(key(9), key(0), &any),
            Err(RouteError::UnknownNode(key(9)))
        );
        assert_eq!(topo.route(key(1), key(1), &any), Err(RouteError::SameNode));
        for (min_hops, max_hops) in [(1, 0), (3, 2), (MAX_MIN_HOPS + 1, MAX_MIN_HOPS + 2)] {
            assert_eq!(
                topo.route(key(0), key(2), &hops(min_hops, max_hops)),
                Err(RouteError::BadConstraints { min_hops, max_hops })
            );
        }
        // More hops than the topology has nodes: no path, without a search.
        assert_eq!(
            topo.route(key(0), key(2), &hops(MAX_MIN_HOPS, MAX_MIN_HOPS)),
            Err(RouteError::NoPath)
        );
    }

    #[test]
    fn topology_changes() {
        let mut topo = graph(3, &[(0, 1), (1, 2)]);
        assert!(!topo.add_node(key(0)).unwrap());
        assert!(!topo.add_link(key(1), key(0)).unwrap());
        assert_eq!(topo.add_link(key(1), key(1)), Err(TopologyError::SelfLink));
        assert_eq!(
            topo.add_link(key(1), key(7)),
            Err(TopologyError::UnknownNode(key(7)))
        );
        assert_eq!(
            topo.set_link_metrics(key(0), key(2), LinkMetrics::default()),
            Err(TopologyError::NoLink(key(0), key(2)))
        );
        assert_eq!(
            topo.set_node_up(key(7), false),
            Err(TopologyError::UnknownNode(key(7)))
        );
        assert_eq!((topo.node_count(), topo.link_count()), (3, 2));
        let mut links: Vec<_> = topo
            .links()
            .map(|(a, b, _)| {
                let (a, b) = (a.as_bytes()[0], b.as_bytes()[0]);
                (a.min(b), a.max(b))
            })
            .collect();
        links.sort_unstable();
        assert_eq!(links, [(0, 1), (1, 2)]);
        let mut around: Vec<_> = topo.neighbours(key(1)).map(|(k, _)| k).collect();
        around.sort_unstable();
        assert_eq!(around, [key(0), key(2)]);
        assert_eq!(topo.neighbours(key(7)).count(), 0);

        rtt(&mut topo, 0, 1, 7);
        assert_eq!(
            topo.link(key(1), key(0)).unwrap().rtt,
            Some(Duration::from_millis(7))
        );
        assert!(topo.remove_link(key(1), key(0)));
        assert!(!topo.remove_link(key(0), key(1)));
        assert_eq!(topo.link(key(0), key(1)), None);
        assert_eq!(topo.link_count(), 1);

        // Removing a node takes its links; its slot is reused by the next node.
        assert!(topo.remove_node(key(1)));
        assert!(!topo.remove_node(key(1)));
        assert!(!topo.contains(key(1)));
        assert_eq!((topo.node_count(), topo.link_count()), (2, 0));
        assert_eq!(topo.neighbours(key(2)).count(), 0);
        assert!(topo.add_node(key(5)).unwrap());
        assert_eq!(topo.nodes.len(), 3);
        topo.add_link(key(0), key(5)).unwrap();
        topo.add_link(key(5), key(2)).unwrap();
        let path = topo.route(key(0), key(2), &Constraints::default()).unwrap();
        assert_eq!(nodes(&path), [0, 5, 2]);
        let mut all: Vec<_> = topo.nodes().map(|(k, up)| (k.as_bytes()[0], up)).collect();
        all.sort_unstable();
        assert_eq!(all, [(0, true), (2, true), (5, true)]);
    }

    #[test]
    fn one_router_many_topologies() {
        let mut router = Router::new();
        let small = graph(3, &[(0, 1), (1, 2)]);
        let big = graph(
            8,
            &[
                (0, 1),
                (1, 2),
                (2, 3),
                (3, 4),
                (4, 5),
                (5, 6),
                (6, 7),
                (0, 7),
            ],
        );
        for _ in 0..3 {
            let path = router.route(&small, key(0), key(2), &hops(1, 4)).unwrap();
            assert_eq!(nodes(&path), [0, 1, 2]);
            let path = router.route(&big, key(0), key(3), &hops(1, 8)).unwrap();
            assert_eq!(nodes(&path), [0, 1, 2, 3]);
            let path = router.route(&big, key(0), key(3), &hops(4, 8)).unwrap();
            assert_eq!(nodes(&path), [0, 7, 6, 5, 4, 3]);
            assert_eq!(
                router
                    .route(&big, key(0), key(1), &hops(1, 6))
                    .map(|p| p.hops()),
                Ok(1)
            );
        }
        // Epochs wrapping around clear the stamps rather than reading old ones.
        router.epoch = u32::MAX - 1;
        router.path_epoch = u32::MAX - 1;
        for _ in 0..4 {
            let path = router.route(&big, key(0), key(3), &hops(4, 8)).unwrap();
            assert_eq!(nodes(&path), [0, 7, 6, 5, 4, 3]);
        }
    }

    /// The naive model: every simple path by depth-first search.
    fn brute_force(
        topo: &Topology,
        src: PublicKey,
        dst: PublicKey,
        c: &Constraints,
    ) -> Option<u64> {
        fn dfs(
            topo: &Topology,
            c: &Constraints,
            path: &mut Vec<PublicKey>,
            cost: u64,
            dst: PublicKey,
            best: &mut Option<u64>,
        ) {
            let here = *path.last().unwrap();
            let hops = path.len() - 1;
            if here == dst {
                if hops >= c.min_hops.max(1) && best.is_none_or(|b| cost < b) {
                    *best = Some(cost);
                }
                return;
            }
            if hops == c.max_hops {
                return;
            }
            for (next, metrics) in topo.neighbours(here) {
                if metrics.up
                    && topo.node_up(next) == Some(true)
                    && !c.avoid.contains(&next)
                    && !path.contains(&next)
                {
                    let step = match c.weight {
                        RouteWeight::Hops => 1,
                        RouteWeight::Latency => metrics.latency_cost(),
                    };
                    path.push(next);
                    dfs(topo, c, path, cost + step, dst, best);
                    path.pop();
                }
            }
        }
        let mut best = None;
        dfs(topo, c, &mut vec![src], 0, dst, &mut best);
        best
    }

    /// Checks a returned path against the topology and constraints, and returns its cost
    /// recomputed from the links.
    fn check_path(
        topo: &Topology,
        path: &Path,
        src: PublicKey,
        dst: PublicKey,
        c: &Constraints,
    ) -> u64 {
        assert_eq!(path.src(), Some(src));
        assert_eq!(path.dst(), Some(dst));
        assert!((c.min_hops.max(1)..=c.max_hops).contains(&path.hops()));
        let distinct: HashSet<_> = path.nodes.iter().collect();
        assert_eq!(distinct.len(), path.nodes.len(), "not simple: {path:?}");
        assert!(topo.path_usable(path));
        assert!(path.nodes.iter().all(|k| !c.avoid.contains(k)));
        path.links()
            .map(|(a, b)| {
                let metrics = topo.link(a, b).unwrap();
                match c.weight {
                    RouteWeight::Hops => 1,
                    RouteWeight::Latency => metrics.latency_cost(),
                }
            })
            .sum()
    }

    #[derive(Debug, Clone)]
    struct Case {
        n: u8,
        down: Vec<bool>,
        links: Vec<(u8, u8, Option<u64>, u8, bool)>,
        min_hops: usize,
        max_hops: usize,
        avoid: Vec<bool>,
        latency: bool,
    }

    fn case() -> impl Strategy<Value = Case> {
        (2u8..=8).prop_flat_map(|n| {
            let link = (
                0..n,
                0..n,
                proptest::option::weighted(0.8, 1u64..6),
                0u8..4,
                proptest::bool::weighted(0.9),
            );
            (
                Just(n),
                proptest::collection::vec(proptest::bool::weighted(0.1), n as usize),
                proptest::collection::vec(link, 0..=(n as usize * 3)),
                0usize..=5,
                1usize..=7,
                proptest::collection::vec(proptest::bool::weighted(0.1), n as usize),
                any::<bool>(),
            )
                .prop_map(|(n, down, links, min_hops, max_hops, avoid, latency)| {
                    Case {
                        n,
                        down,
                        links,
                        min_hops,
                        max_hops,
                        avoid,
                        latency,
                    }
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// On small random graphs, for every ordered pair: the same optimal cost as the
        /// brute-force enumeration of simple paths, a valid simple path within the
        /// constraints, and the same error when there is none. One router serves all pairs.
        #[test]
        fn matches_brute_force(case in case()) {
            let mut topo = graph(case.n, &[]);
            for &(a, b, rtt_ms, loss, up) in &case.links {
                if a != b && topo.add_link(key(a), key(b)).unwrap() {
                    let metrics = LinkMetrics {
                        rtt: rtt_ms.map(Duration::from_millis),
                        loss: f32::from(loss) * 0.25,
                        up,
                    };
                    topo.set_link_metrics(key(a), key(b), metrics).unwrap();
                }
            }
            for (i, &down) in case.down.iter().enumerate() {
                topo.set_node_up(key(i as u8), !down).unwrap();
            }
            let constraints = Constraints {
                min_hops: case.min_hops,
                max_hops: case.max_hops,
                avoid: (0..case.n).filter(|&i| case.avoid[i as usize]).map(key).collect(),
                weight: if case.latency { RouteWeight::Latency } else { RouteWeight::Hops },
            };
            let mut router = Router::new();
            for s in 0..case.n {
                for d in 0..case.n {
                    let (src, dst) = (key(s), key(d));
                    let got = router.route(&topo, src, dst, &constraints);
                    let want = if case.min_hops > case.max_hops {
                        Err(RouteError::BadConstraints {
                            min_hops: case.min_hops,
                            max_hops: case.max_hops,
                        })
                    } else if s == d {
                        Err(RouteError::SameNode)
                    } else if case.avoid[s as usize] || case.avoid[d as usize] {
                        Err(RouteError::SrcOrDstAvoided)
                    } else if case.down[s as usize] {
                        Err(RouteError::NodeDown(src))
                    } else if case.down[d as usize] {
                        Err(RouteError::NodeDown(dst))
                    } else {
                        brute_force(&topo, src, dst, &constraints).ok_or(RouteError::NoPath)
                    };
                    match (got, want) {
                        (Ok(path), Ok(best)) => {
                            let cost = check_path(&topo, &path, src, dst, &constraints);
                            prop_assert_eq!(cost, path.cost);
                            prop_assert_eq!(path.cost, best);
                            prop_assert_eq!(
                                router.route(&topo, dst, src, &constraints).map(|p| p.cost),
                                Ok(best)
                            );
                        }
                        (got, want) => prop_assert_eq!(got.map(|p| p.cost), want),
                    }
                }
            }
        }
    }
}
