//! The manager's map of the mesh and its route computation. Sans-IO: a [`Topology`] is
//! plain data that the manager updates as nodes register, links are measured and things
//! die; [`Router::route`] (or [`Topology::route`]) turns it into a [`Path`]. Nothing here
//! touches a socket or the clock, and nothing installs a route: that is the caller's job.
//!
//! # Model
//!
//! - Nodes are identified by their `PublicKey` and are *up* or *down*. Inside, each node
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
//! # Equal-cost paths
//!
//! Many paths often tie (every shortest path of a grid under [`RouteWeight::Hops`]). So
//! that routes spread over them instead of all taking the one the search meets first, each
//! link carries a third, small cost for each pair of ends: a pseudo-random number of 20
//! bits mixed from the pair's keys and the link's ends' keys. Among paths of equal cost and
//! hops the search takes the one whose numbers add up to least: different pairs pick
//! different paths, the same pair always the same one (it depends on nothing but the keys
//! and the topology), and the two directions of a pair the same path. It never makes a
//! path costlier or longer. The fallback search orders its partial paths by it too.
//!
//! # How, and what it costs
//!
//! Shortest paths are easy; a *minimum* number of hops is what makes the problem hard (a
//! simple path of at least `k` hops is a longest-path-like question). The search runs in
//! two stages:
//!
//! 1. **Layered Dijkstra, bidirectional.** States are `(node, min(hops, min_hops))`:
//!    `min_hops + 1` copies of the graph, where the last layer means "far enough". The
//!    cheapest walk from `(src, 0)` to `(dst, min_hops)`, keyed by `(cost, hops, tie)`, never
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
//!
//! Modules: `graph` (the [`Topology`] and its [`LinkMetrics`]) and `search` (the
//! [`Router`], [`Constraints`], [`RouteWeight`] and the resulting [`Path`]).

mod graph;
mod search;

use std::time::Duration;

pub use graph::{LinkMetrics, Topology, TopologyError};
pub use search::{Constraints, Path, RouteError, RouteWeight, Router, UnknownWeight};

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

#[cfg(test)]
mod tests;
