//! A snapshot of a running node, for `skywire status`: plain data, exact counters.

use core::time::Duration;
use std::net::SocketAddr;

use super::setup::{Fwmark, Origin};
use crate::crypto::PublicKey;
use crate::route::Prefix;
use crate::wire::RouteId;

/// The state of a node at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's identity.
    pub public_key: PublicKey,
    /// The bound transport address.
    pub listen: SocketAddr,
    /// The TUN device's name, if the node has one.
    pub tun: Option<String>,
    /// Routes this node is an end of.
    pub routes: Vec<RouteStatus>,
    /// Relay rules and their counters.
    pub relays: Vec<RelayStatus>,
    /// Node-wide drops before any route was found, by reason name.
    pub drops: Vec<(&'static str, u64)>,
    /// Manager rules (relays and route ends) removed because they were idle too long.
    pub expired: u64,
    /// Events not delivered because the event queue was full.
    pub events_dropped: u64,
    /// Apps' streams: how many, and what the stack refused or dropped.
    pub stack: crate::stack::StackStatus,
    /// The firewall mark on the node's transport packets, if any.
    pub fwmark: Option<Fwmark>,
    /// Prefixes granted to peer keys beyond their route ends' own, by key.
    pub grants: Vec<(PublicKey, Vec<Prefix>)>,
    /// Under load: handshake initiations without a valid cookie MAC are answered with
    /// cookie replies instead of being read (`docs/PROTOCOL.md` §5.10).
    pub under_load: bool,
}

/// One route end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    /// Its name.
    pub name: String,
    /// The peer's public key.
    pub peer: PublicKey,
    /// Where packets go first.
    pub first_hop: SocketAddr,
    /// Ids out (at the first hop) and in (here).
    pub out_id: RouteId,
    /// Incoming route id.
    pub in_id: RouteId,
    /// Destinations routed over it.
    pub prefixes: Vec<Prefix>,
    /// Time since the last completed handshake.
    pub last_handshake: Option<Duration>,
    /// Handshakes completed, as either side.
    pub handshakes: u64,
    /// The current keys' receiving state: our key id and the lowest counter not accepted
    /// yet ([`Session::receiving`](crate::session::Session::receiving)).
    pub receiving: Option<(u32, u64)>,
    /// Data packets and payload bytes sent.
    pub tx_packets: u64,
    /// Payload bytes sent.
    pub tx_bytes: u64,
    /// Data packets received.
    pub rx_packets: u64,
    /// Payload bytes received.
    pub rx_bytes: u64,
    /// Drops at this route end, by reason name (all reasons, zeros included).
    pub drops: Vec<(&'static str, u64)>,
    /// Where the route end came from.
    pub origin: Origin,
    /// For manager rules: how long no packet has arrived on the route (sampled about once
    /// a second). `None` for configured ones, which never expire.
    pub idle: Option<Duration>,
}

/// One relay rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStatus {
    /// Incoming id.
    pub in_id: RouteId,
    /// Where packets come from.
    pub prev_hop: SocketAddr,
    /// Outgoing id.
    pub out_id: RouteId,
    /// Where they go.
    pub next_hop: SocketAddr,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Where the rule came from.
    pub origin: Origin,
    /// For manager rules: how long no packet has matched the rule (sampled about once a
    /// second). `None` for configured ones, which never expire.
    pub idle: Option<Duration>,
}
