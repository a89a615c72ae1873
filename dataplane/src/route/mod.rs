//! Forwarding rules: which route id goes where, and the per-packet decision of a hop.
//!
//! - [`table`]: the [`RouteTable`], incoming route id to a [`Rule`] (forward to the next hop
//!   with a new id, or deliver to a local endpoint), with lock-free per-route counters.
//!   Forwarding threads read immutable snapshots without blocking; the control plane
//!   publishes a new snapshot atomically, so a reader never sees half an update.
//! - [`prefix`]: IP prefixes and the longest-prefix match from a TUN packet to its route.
//! - [`mod@forward`]: what a hop does with a packet: check the header, look up the id, check
//!   the previous hop, rewrite the id, count. Relays never decrypt.

pub mod forward;
pub mod prefix;
pub mod table;

pub use forward::{Decision, ForwardDrop, ForwardStats, forward};
pub use prefix::{Prefix, PrefixError, PrefixTable};
pub use table::{
    EndpointId, Entry, RouteReader, RouteStats, RouteTable, Rule, Snapshot, TableError,
};
