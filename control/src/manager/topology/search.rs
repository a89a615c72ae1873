//! The route search: the cheapest simple path between two nodes of a [`Topology`] within
//! hop limits and an avoid list, by a [`RouteWeight`] (the module documentation of
//! `topology` says how). A [`Router`] owns the search's buffers and is reused from call to
//! call.

use core::fmt;
use core::str::FromStr;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;

use super::graph::{Edge, NodeIdx, Topology, mix};
use super::{DEFAULT_MAX_HOPS, DEFAULT_SEARCH_LIMIT, MAX_MIN_HOPS};

/// `manager.weight`, the CLI's `--weight`, the control socket's and the manager
/// protocol's `weight` are all this type, written `hops` or `latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RouteWeight {
    /// The number of links: every usable link costs 1 (`hops`).
    #[default]
    #[cfg_attr(
        feature = "clap",
        value(help = "The number of links: every usable link costs 1")
    )]
    Hops,
    /// The sum of [`LinkMetrics::latency_cost`](super::LinkMetrics::latency_cost):
    /// round-trip times in microseconds, unmeasured links costed high, lossy links
    /// penalised (`latency`).
    #[cfg_attr(
        feature = "clap",
        value(
            help = "The sum of the links' round-trip times, unmeasured links costed high, lossy links penalised"
        )
    )]
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

const NONE: usize = usize::MAX;

/// A search key: `(cost, hops, tie)`, compared cost first, so equal costs prefer fewer
/// hops, and equal costs and hops the smaller sum of the links' per-pair tie-breaks
/// ([`Edge::tie`]).
type Key = (u64, u32, u64);

/// A min-queue of `(key, state)`.
type Queue = BinaryHeap<Reverse<(Key, usize)>>;

fn add(a: Key, b: Key) -> Key {
    (
        a.0.saturating_add(b.0),
        a.1.saturating_add(b.1),
        a.2.saturating_add(b.2),
    )
}

/// The search's seed for the pair `src`, `dst`: the same either way round, so the route
/// back is the route there reversed.
fn pair_seed(topo: &Topology, src: NodeIdx, dst: NodeIdx) -> u64 {
    let salt = |i: NodeIdx| topo.node(i).map_or(0, |n| n.salt);
    let (a, b) = (salt(src), salt(dst));
    mix(a.min(b) ^ mix(a.max(b)))
}

/// What a layered search knows about one state; valid only if `stamp` is the current
/// epoch.
#[derive(Debug, Clone, Copy)]
struct Label {
    stamp: u32,
    hops: u32,
    cost: u64,
    tie: u64,
    /// The state this one was reached from (towards the search's origin).
    prev: usize,
}

const BLANK: Label = Label {
    stamp: 0,
    hops: 0,
    cost: 0,
    tie: 0,
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
    /// The pair's tie-break seed ([`pair_seed`]).
    seed: u64,
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
            .map(|l| (l.cost, l.hops, l.tie))
    }

    fn prev(&self, state: usize) -> usize {
        self.labels.get(state).map_or(NONE, |l| l.prev)
    }

    /// Records `key` for `state` if it beats what is there; says whether it did.
    fn improve(&mut self, state: usize, key: Key, prev: usize, epoch: u32) -> bool {
        match self.labels.get_mut(state) {
            Some(label) if label.stamp != epoch || (label.cost, label.hops, label.tie) > key => {
                *label = Label {
                    stamp: epoch,
                    hops: key.1,
                    cost: key.0,
                    tie: key.2,
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
        while let Some(&Reverse((key, state))) = queue.peek() {
            if self.best(state, epoch) == Some(key) {
                return Some(key);
            }
            queue.pop();
        }
        None
    }

    /// Dijkstra over `(node, min(hops, last))` from `(start, 0)`, keyed by `(cost, hops, tie)`,
    /// exploring everything reachable: the lower bounds of the fallback search.
    fn run(&mut self, topo: &Topology, queue: &mut Queue, blocked: &[u32], epoch: u32, q: Query) {
        queue.clear();
        self.improve(q.start, (0, 0, 0), NONE, epoch);
        queue.push(Reverse(((0, 0, 0), q.start)));
        while self.fresh_top(queue, epoch).is_some() {
            let Some(Reverse((key, state))) = queue.pop() else {
                break;
            };
            self.expand_forward(topo, queue, blocked, epoch, q, key, state, |_, _| {});
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
            let next_key = add(key, (edge.cost(q.weight), 1, edge.tie(q.seed)));
            let next = next_layer * q.n + w;
            if self.improve(next, next_key, state, epoch) {
                queue.push(Reverse((next_key, next)));
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
                if let Some((cost, _, _)) = self.best(state, epoch) {
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
    /// tops together cannot beat it (the classic rule; `(cost, hops, tie)` keys add and compare
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
        forward.improve(q.start, (0, 0, 0), NONE, epoch);
        fq.push(Reverse(((0, 0, 0), q.start)));
        backward.improve(goal, (0, 0, 0), NONE, epoch);
        bq.push(Reverse(((0, 0, 0), goal)));
        let mut mu: Option<(usize, Key)> = None;
        while let (Some(top_f), Some(top_b)) =
            (forward.fresh_top(fq, epoch), backward.fresh_top(bq, epoch))
        {
            if mu.is_some_and(|(_, best)| add(top_f, top_b) >= best) {
                break;
            }
            if fq.len() <= bq.len() {
                let Some(Reverse((key, state))) = fq.pop() else {
                    break;
                };
                let meet = |next: usize, key: Key| {
                    if let Some(rest) = backward.best(next, epoch) {
                        offer(&mut mu, next, add(key, rest));
                    }
                };
                forward.expand_forward(topo, fq, blocked, epoch, q, key, state, meet);
            } else {
                let Some(Reverse((here, state))) = bq.pop() else {
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
                    let key = add(here, (edge.cost(q.weight), 1, edge.tie(q.seed)));
                    for k in from.into_iter().flatten() {
                        // Layer 0 holds the start and nothing else.
                        if (v == q.start) != (k == 0) {
                            continue;
                        }
                        let prev = k * q.n + v;
                        if backward.improve(prev, key, state, epoch) {
                            bq.push(Reverse((key, prev)));
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
    /// The sum of its links' tie-breaks.
    tie: u64,
}

/// Route computation with reusable buffers. One `Router` serves any number of
/// [`Topology`]s and calls; its arrays grow to the largest topology and `min_hops` seen
/// and are never cleared between calls (entries carry the epoch of the call that wrote
/// them).
#[derive(Debug, Clone)]
pub struct Router {
    search_limit: usize,
    pub(super) epoch: u32,
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
    /// `(cost + bound, u32::MAX - hops, tie, partial)`: cheapest first, then deepest,
    /// then by the pair's tie-break.
    open: BinaryHeap<Reverse<(u64, u32, u64, usize)>>,
    /// `on_path[node] == path_epoch`: on the partial path being extended.
    on_path: Vec<u32>,
    pub(super) path_epoch: u32,
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
            seed: pair_seed(topo, s, d),
        };
        let (meet, (cost, hops, _)) = self
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
            tie: 0,
        };
        self.partials.push(root);
        self.open.push(Reverse((0, u32::MAX, 0, 0)));
        while let Some(Reverse((_, _, _, at))) = self.open.pop() {
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
                let tie = here.tie.saturating_add(edge.tie(forward.seed));
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
                self.open.push(Reverse((
                    estimate,
                    u32::MAX - hops,
                    tie,
                    self.partials.len(),
                )));
                self.partials.push(Partial {
                    node: edge.to.0,
                    hops,
                    parent: at,
                    cost,
                    tie,
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
