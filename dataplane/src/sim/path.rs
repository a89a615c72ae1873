//! Static routes along a path of nodes: the relays get a relay rule each way, the ends get a
//! route end each, all installed through the cores' own [`NodeCore::apply`].
//!
//! Route ids are fresh at each node (a counter of the mesh, skipping ids a node uses), so
//! runs are repeatable. Like the node manager, the mesh installs the relays and the
//! destination first and the source last (its route end takes the prefixes, so traffic
//! moves onto a complete route), and removes what it installed if a node refuses. Routes of
//! [`Origin::Config`] are also written into the nodes' setups, as into their config files, so
//! a [restarted](Mesh::restart) node has them again.
//!
//! [`NodeCore::apply`]: crate::engine::NodeCore::apply

use std::net::SocketAddr;

use super::{Mesh, NodeId, SimError};
use crate::engine::{Origin, RelaySetup, RouteSetup, RuleChange};
use crate::wire::RouteId;

/// A route installed by [`Mesh::add_route`], with the ids it uses at every hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The nodes, source first.
    pub path: Vec<NodeId>,
    /// `forward[k]`: the id packets towards the destination carry when they reach
    /// `path[k + 1]`.
    pub forward: Vec<RouteId>,
    /// `backward[k]`: the id packets towards the source carry when they reach `path[k]`.
    pub backward: Vec<RouteId>,
    /// Where the rules came from.
    pub origin: Origin,
}

impl Route {
    /// The first node of the path.
    pub fn source(&self) -> NodeId {
        self.path.first().copied().unwrap_or(NodeId(0))
    }

    /// The last node of the path.
    pub fn destination(&self) -> NodeId {
        self.path.last().copied().unwrap_or(NodeId(0))
    }

    /// The incoming id of the source's route end (to [ping](Mesh::ping) from it).
    pub fn source_in(&self) -> RouteId {
        self.backward.first().copied().unwrap_or(RouteId::MIN)
    }

    /// The incoming id of the destination's route end.
    pub fn destination_in(&self) -> RouteId {
        self.forward.last().copied().unwrap_or(RouteId::MIN)
    }
}

impl Mesh {
    /// Install a route along `path` (source first) as configured rules ([`Origin::Config`]).
    /// Each end's route end carries the host addresses of the other end's TUN device; an
    /// end without TUN carries pings only.
    pub fn add_route(&mut self, path: &[NodeId]) -> Result<Route, SimError> {
        self.add_route_with(path, Origin::Config)
    }

    /// Install a route along `path` with rules of `origin`.
    pub fn add_route_with(&mut self, path: &[NodeId], origin: Origin) -> Result<Route, SimError> {
        let (&source, &destination) = match (path.first(), path.last()) {
            (Some(s), Some(d)) if path.len() >= 2 && s != d => (s, d),
            _ => return Err(SimError::BadPath),
        };
        if path.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(SimError::BadPath);
        }
        let addrs: Vec<SocketAddr> = path
            .iter()
            .map(|&n| self.addr(n))
            .collect::<Result<_, _>>()?;
        let forward: Vec<RouteId> = path
            .iter()
            .skip(1)
            .map(|&n| self.fresh_id(n))
            .collect::<Result<_, _>>()?;
        let backward: Vec<RouteId> = path
            .iter()
            .take(path.len() - 1)
            .map(|&n| self.fresh_id(n))
            .collect::<Result<_, _>>()?;
        let last = path.len() - 1;
        let at = |v: &[RouteId], k: usize| v.get(k).copied().ok_or(SimError::BadPath);
        let addr = |k: usize| addrs.get(k).copied().ok_or(SimError::BadPath);

        // The changes per position on the path; relays first, then destination, source.
        let mut changes: Vec<(NodeId, Vec<RuleChange>)> = Vec::with_capacity(path.len());
        for (k, &node) in path.iter().enumerate().skip(1).take(last.saturating_sub(1)) {
            let relays = [
                RelaySetup {
                    in_id: at(&forward, k - 1)?,
                    prev_hop: addr(k - 1)?,
                    out_id: at(&forward, k)?,
                    next_hop: addr(k + 1)?,
                },
                RelaySetup {
                    in_id: at(&backward, k)?,
                    prev_hop: addr(k + 1)?,
                    out_id: at(&backward, k - 1)?,
                    next_hop: addr(k - 1)?,
                },
            ];
            let batch = relays
                .into_iter()
                .map(|relay| RuleChange::AddRelay { relay, origin })
                .collect();
            changes.push((node, batch));
        }
        let (source_key, destination_key) =
            (self.public_key(source)?, self.public_key(destination)?);
        let to_destination = RouteSetup {
            name: format!("to-{}", addr(last)?),
            peer: destination_key,
            prefixes: self.tun_hosts(destination)?,
            first_hop: addr(1)?,
            out_id: at(&forward, 0)?,
            in_id: at(&backward, 0)?,
            peer_in_id: at(&forward, last - 1)?,
            prev_hop: addr(1)?,
            persistent_keepalive: None,
        };
        let to_source = RouteSetup {
            name: format!("to-{}", addr(0)?),
            peer: source_key,
            prefixes: self.tun_hosts(source)?,
            first_hop: addr(last - 1)?,
            out_id: at(&backward, last - 1)?,
            in_id: at(&forward, last - 1)?,
            peer_in_id: at(&backward, 0)?,
            prev_hop: addr(last - 1)?,
            persistent_keepalive: None,
        };
        changes.push((
            destination,
            vec![RuleChange::AddEnd {
                route: to_source,
                origin,
            }],
        ));
        changes.push((
            source,
            vec![RuleChange::AddEnd {
                route: to_destination,
                origin,
            }],
        ));

        for (done, (node, batch)) in changes.iter().enumerate() {
            if let Err(e) = self.apply(*node, batch.clone()) {
                // Take back what the earlier nodes accepted.
                for (node, batch) in changes.iter().take(done) {
                    let removals = batch
                        .iter()
                        .map(|c| RuleChange::Remove { in_id: c.in_id() })
                        .collect();
                    let _ = self.apply(*node, removals);
                }
                return Err(e);
            }
        }
        if origin == Origin::Config {
            for (node, batch) in changes {
                let setup = &mut self.node_mut(node)?.setup;
                for change in batch {
                    match change {
                        RuleChange::AddRelay { relay, .. } => setup.relays.push(relay),
                        RuleChange::AddEnd { route, .. } => setup.routes.push(route),
                        RuleChange::Remove { .. } => {}
                    }
                }
            }
        }
        Ok(Route {
            path: path.to_vec(),
            forward,
            backward,
            origin,
        })
    }

    /// The next route id no rule at `node` uses.
    fn fresh_id(&mut self, node: NodeId) -> Result<RouteId, SimError> {
        let snapshot = self.core(node)?.table().snapshot();
        for _ in 0..=snapshot.len() {
            let candidate = RouteId::new(self.next_route_id);
            self.next_route_id = self.next_route_id.checked_add(1).unwrap_or(1000);
            if let Some(id) = candidate
                && snapshot.lookup(id).is_none()
            {
                return Ok(id);
            }
        }
        Err(SimError::NoFreeRouteId(node))
    }
}
