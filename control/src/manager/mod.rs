//! The node manager: it knows the mesh and installs routes on every hop.
//!
//! Layers, each sans-IO except the server:
//!
//! - [`proto`]: the node-manager protocol (frames, the key proof, per-frame MACs, typed
//!   messages); specified in `docs/PROTOCOL.md` §11. Nodes speak it too (their side is
//!   [`crate::node::agent`] and [`crate::node::uplink`]).
//! - [`topology`]: nodes, links and their metrics (its `graph`); shortest paths with hop
//!   limits and avoid lists (its `search`).
//! - [`core`]: the manager's state machine: registry of nodes, book of links, book of
//!   routes and their setups (acknowledgements and rollback), repair when a node or link
//!   dies.
//! - [`server`]: the manager's TCP server, the only part with sockets and threads.
//! - [`metrics`]: the manager's Prometheus metrics (`manager.metrics`), from the core's
//!   [`core::ManagerStats`].
//! - [`show`]: the text `skywire route` and `skywire nodes` print.
//!
//! Who owns what: a route belongs to the node that asked for it (its source), and a link
//! declared by a node belongs to that node. Nodes keep both and send them again when they
//! register, so the manager keeps nothing on disk: after a restart it learns the mesh again
//! from the nodes, while the rules already installed keep forwarding.

pub mod core;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod show;
pub mod topology;

#[cfg(test)]
mod sim;
