//! Micro-benchmarks of the node manager's route computation (`control::manager::topology`)
//! on a generated mesh of 10 000 nodes: a ring (so it is connected) plus links from every
//! node to 4 others chosen at random (about 10 links per node), round-trip times of 1 to
//! 100 ms, one link in 20 unmeasured and one in 10 lossy. All from a fixed seed, so runs
//! are comparable. Each iteration computes one route between the next of 1024 random
//! pairs; throughput is in routes.
//!
//! - `bfs_reference`: the reference: what the 2017 Skywire manager did, a breadth-first
//!   search by hop count over an adjacency map keyed by public key, with a fresh parent map
//!   per route and no constraints. `hops` answers the same question.
//! - `hops`, `latency`: the plain shortest path by each weight, with one reused `Router`.
//! - `hops_fresh_router`: the same as `hops` through `Topology::route`, which allocates a
//!   new `Router` (its arrays) per call.
//! - `hops_min3_avoid100`, `latency_min3_avoid100`: at least 3 hops, 100 random nodes
//!   avoided (pairs that include one of them are not drawn).
//! - `latency_neighbours_min4`: the ends of a random link, at least 4 hops apart: the case
//!   where the cheapest long-enough walk may loop, so some routes take the fallback
//!   search. The share that does is printed when the benchmark starts.
//! - `latency_fallback_min4`: only those of the above that take the fallback: its cost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::SplitMix;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use skywire_control::manager::topology::{
    Constraints, LinkMetrics, RouteError, RouteWeight, Router, Topology,
};
use skywire_dataplane::crypto::PublicKey;

/// A route's source and destination.
type Pair = (PublicKey, PublicKey);

/// Nodes in the generated mesh.
const NODES: usize = 10_000;

/// Random links from each node, on top of the ring.
const RANDOM_LINKS: usize = 4;

/// Source/destination pairs cycled through.
const PAIRS: usize = 1024;

/// Nodes in the avoid list of the `avoid100` rows.
const AVOIDED: usize = 100;

struct Mesh {
    topo: Topology,
    keys: Vec<PublicKey>,
    rng: SplitMix,
}

fn mesh() -> Mesh {
    let mut rng = SplitMix(0x5eed_70b0);
    let keys: Vec<PublicKey> = (0..NODES)
        .map(|_| {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            PublicKey::from_bytes(bytes)
        })
        .collect();
    let mut topo = Topology::new();
    for &key in &keys {
        topo.add_node(key).unwrap();
    }
    let add = |topo: &mut Topology, rng: &mut SplitMix, a: usize, b: usize| {
        if a == b || !topo.add_link(keys[a], keys[b]).unwrap() {
            return;
        }
        let rtt =
            (rng.below(20) != 0).then(|| Duration::from_micros(1_000 + rng.below(99_000) as u64));
        let loss = if rng.below(10) == 0 {
            rng.below(30) as f32 / 100.0
        } else {
            0.0
        };
        let metrics = LinkMetrics {
            rtt,
            loss,
            up: true,
        };
        topo.set_link_metrics(keys[a], keys[b], metrics).unwrap();
    };
    for a in 0..NODES {
        add(&mut topo, &mut rng, a, (a + 1) % NODES);
        for _ in 0..RANDOM_LINKS {
            let b = rng.below(NODES);
            add(&mut topo, &mut rng, a, b);
        }
    }
    Mesh { topo, keys, rng }
}

/// `PAIRS` distinct random pairs, none of whose ends is in `avoid`.
fn pairs(mesh: &mut Mesh, avoid: &HashSet<PublicKey>) -> Vec<Pair> {
    let mut out = Vec::with_capacity(PAIRS);
    while out.len() < PAIRS {
        let (a, b) = (
            mesh.keys[mesh.rng.below(NODES)],
            mesh.keys[mesh.rng.below(NODES)],
        );
        if a != b && !avoid.contains(&a) && !avoid.contains(&b) {
            out.push((a, b));
        }
    }
    out
}

/// `PAIRS` random links, as pairs of their ends.
fn neighbour_pairs(mesh: &mut Mesh) -> Vec<Pair> {
    let links: Vec<_> = mesh.topo.links().map(|(a, b, _)| (a, b)).collect();
    (0..PAIRS)
        .map(|_| links[mesh.rng.below(links.len())])
        .collect()
}

/// The reference: breadth-first search by hops over a map, as the original manager did.
fn bfs(
    adjacency: &HashMap<PublicKey, Vec<PublicKey>>,
    src: PublicKey,
    dst: PublicKey,
) -> Vec<PublicKey> {
    let mut parent: HashMap<PublicKey, PublicKey> = HashMap::new();
    let mut queue = VecDeque::from([src]);
    parent.insert(src, src);
    while let Some(node) = queue.pop_front() {
        if node == dst {
            let mut path = vec![dst];
            let mut at = dst;
            while at != src {
                at = parent[&at];
                path.push(at);
            }
            path.reverse();
            return path;
        }
        for &next in &adjacency[&node] {
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(next) {
                e.insert(node);
                queue.push_back(next);
            }
        }
    }
    Vec::new()
}

fn route(c: &mut Criterion) {
    let mut mesh = mesh();
    let none = HashSet::new();
    let avoid: HashSet<PublicKey> = (0..AVOIDED)
        .map(|_| mesh.keys[mesh.rng.below(NODES)])
        .collect();
    let random = pairs(&mut mesh, &none);
    let clear_of_avoided = pairs(&mut mesh, &avoid);
    let neighbours = neighbour_pairs(&mut mesh);

    let hops = Constraints::default();
    let latency = Constraints {
        weight: RouteWeight::Latency,
        ..Constraints::default()
    };
    let min3_avoid = |weight| Constraints {
        min_hops: 3,
        avoid: avoid.clone(),
        weight,
        ..Constraints::default()
    };
    let min4 = Constraints {
        min_hops: 4,
        weight: RouteWeight::Latency,
        ..Constraints::default()
    };

    // How many of the neighbour routes take the fallback: with a limit of 0 partial
    // paths, exactly those fail with `SearchLimit`.
    let mut probe = Router::with_search_limit(0);
    let fallback: Vec<Pair> = neighbours
        .iter()
        .copied()
        .filter(|&(a, b)| {
            matches!(
                probe.route(&mesh.topo, a, b, &min4),
                Err(RouteError::SearchLimit { .. })
            )
        })
        .collect();
    eprintln!(
        "mesh: {} nodes, {} links; latency_neighbours_min4: {} of {PAIRS} routes take the fallback search",
        mesh.topo.node_count(),
        mesh.topo.link_count(),
        fallback.len(),
    );

    let rows: [(&str, &[Pair], Constraints); 6] = [
        ("hops", &random, hops.clone()),
        ("latency", &random, latency),
        (
            "hops_min3_avoid100",
            &clear_of_avoided,
            min3_avoid(RouteWeight::Hops),
        ),
        (
            "latency_min3_avoid100",
            &clear_of_avoided,
            min3_avoid(RouteWeight::Latency),
        ),
        ("latency_neighbours_min4", &neighbours, min4.clone()),
        ("latency_fallback_min4", &fallback, min4),
    ];

    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    let mut adjacency: HashMap<PublicKey, Vec<PublicKey>> = HashMap::new();
    for (a, b, _) in mesh.topo.links() {
        adjacency.entry(a).or_default().push(b);
        adjacency.entry(b).or_default().push(a);
    }
    for &(a, b) in &random {
        assert_eq!(
            bfs(&adjacency, a, b).len(),
            mesh.topo.route(a, b, &hops).unwrap().nodes.len(),
            "the reference and hops agree on the length"
        );
    }
    let mut next = 0;
    group.bench_function("bfs_reference", |bench| {
        bench.iter(|| {
            let (a, b) = random[next % PAIRS];
            next += 1;
            black_box(bfs(&adjacency, a, b))
        });
    });
    let mut router = Router::new();
    for (name, pairs, constraints) in &rows {
        // Every pair has a route: the benchmark measures successes only.
        for &(a, b) in pairs.iter() {
            router.route(&mesh.topo, a, b, constraints).unwrap();
        }
        let mut next = 0;
        group.bench_function(*name, |bench| {
            bench.iter(|| {
                let (a, b) = pairs[next % pairs.len()];
                next += 1;
                black_box(router.route(&mesh.topo, a, b, constraints).unwrap())
            });
        });
    }
    let mut next = 0;
    group.bench_function("hops_fresh_router", |bench| {
        bench.iter(|| {
            let (a, b) = random[next % PAIRS];
            next += 1;
            black_box(mesh.topo.route(a, b, &hops).unwrap())
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = route
}
criterion_main!(benches);
