//! A snapshot of a running node, for `skywire status`: plain data, exact counters.

use core::time::Duration;
use std::net::SocketAddr;

use super::setup::{Fwmark, Origin};
use crate::crypto::PublicKey;
use crate::route::Prefix;
use crate::session::{DropCounts, DropReason, SessionStats};
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
    /// The counters of route ends and relay rules removed since the node started: a
    /// node-wide total is the sum over `routes` (or `relays`) plus this, and never goes
    /// down when a route end or rule goes.
    pub retired: Retired,
}

/// Counters of removed route ends and relay rules, added up when each was removed (never
/// per packet), so node-wide totals stay monotonic across route repairs and expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// Data packets sent on removed route ends.
    pub tx_packets: u64,
    /// Payload bytes sent on them.
    pub tx_bytes: u64,
    /// Data packets received on them.
    pub rx_packets: u64,
    /// Payload bytes received on them.
    pub rx_bytes: u64,
    /// Handshakes they completed.
    pub handshakes: u64,
    /// Their drops, by reason.
    pub drops: DropCounts,
    /// Their `source not allowed` drops.
    pub source_not_allowed: u64,
    /// Packets forwarded by removed relay rules.
    pub relayed_packets: u64,
    /// Bytes forwarded by them.
    pub relayed_bytes: u64,
}

impl Retired {
    /// A route end with these session counters and `spoofed` drops went.
    pub fn add_end(&mut self, stats: &SessionStats, spoofed: u64) {
        self.tx_packets = self.tx_packets.saturating_add(stats.tx_packets);
        self.tx_bytes = self.tx_bytes.saturating_add(stats.tx_bytes);
        self.rx_packets = self.rx_packets.saturating_add(stats.rx_packets);
        self.rx_bytes = self.rx_bytes.saturating_add(stats.rx_bytes);
        self.handshakes = self.handshakes.saturating_add(stats.handshakes_completed);
        self.drops.merge(&stats.drops);
        self.source_not_allowed = self.source_not_allowed.saturating_add(spoofed);
    }

    /// A relay rule that forwarded `packets` and `bytes` went.
    pub fn add_relay(&mut self, packets: u64, bytes: u64) {
        self.relayed_packets = self.relayed_packets.saturating_add(packets);
        self.relayed_bytes = self.relayed_bytes.saturating_add(bytes);
    }

    /// The drops by reason name, in the order a route end's are listed
    /// ([`RouteStatus::drops`]).
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.drops.get(*r)))
            .chain([(super::core::SOURCE_NOT_ALLOWED, self.source_not_allowed)])
            .collect()
    }
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
