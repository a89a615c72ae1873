//! The node manager: it knows the mesh and installs routes on every hop.
//!
//! Layers, each sans-IO except the two drivers:
//!
//! - [`proto`]: the node-manager protocol (frames, the key proof, per-frame MACs, typed
//!   bodies); specified in `docs/PROTOCOL.md` §11.
//! - [`topology`]: nodes, links and their metrics; shortest paths with hop limits and
//!   avoid lists.
//! - [`core`]: the manager's state machine: registration, links, route setup with
//!   acknowledgements and rollback, repair when a node or link dies.
//! - [`agent`]: the node's side: registration with what the node owns, rules installed
//!   into the engine, link probes and reports.
//! - [`server`] (the manager's TCP server) and [`client`] (the node's connection, with
//!   reconnection), the only parts with sockets and threads.
//!
//! Who owns what: a route belongs to the node that asked for it (its source), and a link
//! declared by a node belongs to that node. Nodes keep both and send them again when they
//! register, so the manager keeps nothing on disk: after a restart it learns the mesh again
//! from the nodes, while the rules already installed keep forwarding.

pub mod core;
pub mod proto;
pub mod server;
pub mod show;
pub mod topology;

#[cfg(test)]
mod sim;
