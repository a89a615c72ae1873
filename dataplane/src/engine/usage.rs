//! Metering: what the node carried since it was last asked, for the node's usage ledger
//! (`skywire usage`). Status and metrics report counters since the start; this reports
//! the *differences* since the previous [`NodeCore::take_usage`](super::NodeCore::take_usage),
//! including the last counts of route ends and relay rules removed in between, so the
//! ledger that adds them up loses nothing to route churn and never counts a byte twice.
//!
//! Each byte is counted once, at the node that saw it, in one of three places:
//!
//! - **Route ends** (originated traffic, this node is an end): on the transport, every
//!   datagram the end sent on its first hop (data, handshake, keepalive, ping, close,
//!   cookie reply) and every one it accepted (authenticated; dropped ones are counted as
//!   drops, not here), with their whole UDP payload; inside, the data packets sealed and
//!   opened (IP packets, their length), and of those, what came from and went to the TUN
//!   device. A data packet on the wire is its IP packet plus
//!   [`TRANSPORT_OVERHEAD`](crate::wire::TRANSPORT_OVERHEAD) bytes.
//! - **Relay rules** (relayed traffic): every datagram forwarded, with its whole UDP
//!   payload, the same bytes the route's ends count on the wire.
//! - **App streams**: the bytes apps on this node sent and received on streams, by peer key
//!   and the stream's service port (the port dialed, or the port listened on).

use std::net::SocketAddr;

use crate::crypto::PublicKey;
use crate::wire::RouteId;

use super::Origin;

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Count {
    /// One packet of `len` bytes.
    #[inline]
    pub fn add(&mut self, len: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.bytes = self.bytes.wrapping_add(len as u64);
    }

    /// What was counted between `earlier` and `self` (counters only grow; wrapping, as
    /// the counters do).
    pub fn since(self, earlier: Count) -> Count {
        Count {
            packets: self.packets.wrapping_sub(earlier.packets),
            bytes: self.bytes.wrapping_sub(earlier.bytes),
        }
    }

    /// Add `other` to this count.
    pub fn merge(&mut self, other: Count) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    /// Nothing counted.
    pub fn is_zero(self) -> bool {
        self.packets == 0 && self.bytes == 0
    }
}

/// What one route end carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndCounts {
    /// Datagrams sent on the route's first hop, all types.
    pub wire_sent: Count,
    /// Datagrams of the route its session accepted, all types.
    pub wire_received: Count,
    /// Data packets sealed (IP packets: from the TUN device and from the stack).
    pub sealed: Count,
    /// Data packets opened.
    pub opened: Count,
    /// IP packets read from the TUN device for this route.
    pub tun_read: Count,
    /// IP packets of this route written to the TUN device.
    pub tun_written: Count,
}

impl EndCounts {
    /// What was counted between `earlier` and `self`.
    pub fn since(self, earlier: EndCounts) -> EndCounts {
        EndCounts {
            wire_sent: self.wire_sent.since(earlier.wire_sent),
            wire_received: self.wire_received.since(earlier.wire_received),
            sealed: self.sealed.since(earlier.sealed),
            opened: self.opened.since(earlier.opened),
            tun_read: self.tun_read.since(earlier.tun_read),
            tun_written: self.tun_written.since(earlier.tun_written),
        }
    }

    /// Add `other` to these counts.
    pub fn merge(&mut self, other: EndCounts) {
        self.wire_sent.merge(other.wire_sent);
        self.wire_received.merge(other.wire_received);
        self.sealed.merge(other.sealed);
        self.opened.merge(other.opened);
        self.tun_read.merge(other.tun_read);
        self.tun_written.merge(other.tun_written);
    }

    /// Nothing counted.
    pub fn is_zero(self) -> bool {
        self.wire_sent.is_zero()
            && self.wire_received.is_zero()
            && self.sealed.is_zero()
            && self.opened.is_zero()
            && self.tun_read.is_zero()
            && self.tun_written.is_zero()
    }
}

/// What a route end carried since the last ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUsage {
    /// The route's name.
    pub name: String,
    /// The peer at its far end.
    pub peer: PublicKey,
    /// The id packets of the route arrive with.
    pub in_id: RouteId,
    /// Who installed it.
    pub origin: Origin,
    /// The counts.
    pub counts: EndCounts,
}

/// What a relay rule forwarded since the last ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayUsage {
    /// The id packets arrive with.
    pub in_id: RouteId,
    /// Where they come from.
    pub prev_hop: SocketAddr,
    /// Where they go.
    pub next_hop: SocketAddr,
    /// Who installed it.
    pub origin: Origin,
    /// Datagrams forwarded.
    pub forwarded: Count,
}

/// Stream bytes of the apps on this node, for one peer key and service port, since the
/// last ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamUsage {
    /// The peer at the stream's far end.
    pub peer: PublicKey,
    /// The service: the port dialed (streams this node opened) or listened on (streams
    /// that arrived).
    pub port: u16,
    /// Bytes apps here sent.
    pub sent: u64,
    /// Bytes apps here received.
    pub received: u64,
}

/// Everything carried since the last [`NodeCore::take_usage`](super::NodeCore::take_usage).
/// Lists hold only what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Route ends, live and removed since.
    pub ends: Vec<EndUsage>,
    /// Relay rules, live and removed since.
    pub relays: Vec<RelayUsage>,
    /// App streams.
    pub streams: Vec<StreamUsage>,
}

/// At most this many removed route ends and relay rules are kept apart between two asks
/// (from the start to the first ask, too); more are added to the last one kept (their
/// traffic still counted, under another route's name). A node asked every few seconds
/// never comes near it.
pub const REMOVED_KEPT: usize = 4096;
