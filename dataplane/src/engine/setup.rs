//! What a node is told to do: its identity, transport, TUN device, routes and relay rules.
//! The control plane builds a [`NodeSetup`] (from `config.yaml` today, from the manager
//! later); the engine applies it.

use core::time::Duration;
use std::net::SocketAddr;

use crate::crypto::{PrivateKey, PublicKey};
use crate::route::Prefix;
use crate::wire::RouteId;

/// Everything the engine needs to run a node.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The node's identity.
    pub private_key: PrivateKey,
    /// The UDP transport address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// The TUN device carrying IP traffic into routes; `None` for a relay-only node.
    pub tun: Option<TunSetup>,
    /// Routes this node is an end of.
    pub routes: Vec<RouteSetup>,
    /// Forwarding rules this node holds as a relay.
    pub relays: Vec<RelaySetup>,
    /// Use the kernel's batching offloads: TUN super-packets (virtio-net header, TSO and
    /// GRO), UDP GSO and GRO. Each falls back to one packet per call by itself when the
    /// kernel refuses it; `false` never asks.
    pub offload: bool,
}

/// The TUN device of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSetup {
    /// Interface name, at most 15 bytes.
    pub name: String,
    /// Addresses with prefix lengths, assigned to the interface (`10.77.0.1/24`).
    pub addresses: Vec<Prefix>,
    /// MTU of the interface: the largest IP packet carried, before the 36-byte route
    /// overhead and the UDP/IP headers of the transport.
    pub mtu: u16,
}

/// A route this node is an end of, set up statically (like a WireGuard peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSetup {
    /// A name for status output.
    pub name: String,
    /// The static public key of the node at the other end.
    pub peer: PublicKey,
    /// Destinations sent over this route: IP packets from the TUN device whose destination
    /// falls in one of these prefixes (longest match over all routes).
    pub prefixes: Vec<Prefix>,
    /// The first hop's transport address.
    pub first_hop: SocketAddr,
    /// The route id the first hop knows this route by (written into every packet we send).
    pub out_id: RouteId,
    /// The route id packets of this route carry when they reach us.
    pub in_id: RouteId,
    /// The transport address those packets must come from (the last relay, or the peer).
    pub prev_hop: SocketAddr,
    /// Send a keepalive whenever nothing was sent for this long.
    pub persistent_keepalive: Option<Duration>,
}

/// A forwarding rule of a relay: packets arriving from `prev_hop` with `in_id` leave for
/// `next_hop` with `out_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySetup {
    /// Incoming route id.
    pub in_id: RouteId,
    /// The only address such packets may come from.
    pub prev_hop: SocketAddr,
    /// Outgoing route id.
    pub out_id: RouteId,
    /// Where they go.
    pub next_hop: SocketAddr,
}

impl NodeSetup {
    /// The node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.private_key.public_key()
    }
}
