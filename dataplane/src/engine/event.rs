//! What the engine reports on its own: expired rules, link probe replies, pongs, next hops
//! it has no way to (at most once a minute each). Events go
//! to the control plane over a bounded channel (see
//! [`EngineHandle::events`](super::EngineHandle::events)); when it is full they are
//! dropped and counted ([`NodeStatus::events_dropped`](super::NodeStatus::events_dropped)).

use core::time::Duration;
use std::net::SocketAddr;

use crate::crypto::PublicKey;
use crate::wire::RouteId;

/// Events queued before the consumer reads them; more are dropped and counted.
pub const EVENT_QUEUE: usize = 1024;

/// Something the engine did or learned that the control plane did not ask for just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A manager rule (relay or route end) was removed after no packet matched it for its
    /// `expire_after`.
    Expired {
        /// The rule's incoming id.
        in_id: RouteId,
        /// The manager's route number the rule belonged to.
        route: u64,
    },
    /// A neighbour's authenticated link probe came from another address than the one this
    /// node probes it at: on a multi-homed neighbour, the address on this link (where its
    /// probes and answers to them come from).
    ProbedFrom {
        /// The neighbour.
        peer: PublicKey,
        /// Where its probe came from.
        from: SocketAddr,
    },
    /// A neighbour answered a link probe.
    ProbeReply {
        /// The neighbour's transport address (where the probe went).
        from: SocketAddr,
        /// The probe's nonce.
        nonce: u64,
        /// From sending the probe to receiving the reply.
        rtt: Duration,
    },
    /// The kernel refused to send to a next hop for want of a way there (no route, an
    /// unreachable network or host, a firewall): the datagrams were dropped and counted
    /// as `unreachable`. Sent at most once per next hop per
    /// [`UNREACHABLE_REPORT_EVERY`](super::core::UNREACHABLE_REPORT_EVERY), for the log.
    Unreachable {
        /// The next hop's address.
        to: SocketAddr,
        /// The OS error of the refused send (`ENETUNREACH`, `EHOSTUNREACH`, ...), as
        /// `std::io::Error::from_raw_os_error` takes it.
        os_error: i32,
    },
    /// The node read one of its own transport datagrams, to `to`, from its TUN device: the
    /// host routes `to` into the tunnel (a routing loop). Dropped and counted as `routing
    /// loop`; sent at most once per address per
    /// [`UNREACHABLE_REPORT_EVERY`](super::core::UNREACHABLE_REPORT_EVERY), for the log.
    RoutingLoop {
        /// The transport address the host routes into the TUN device.
        to: SocketAddr,
    },
    /// The far end of a route answered a ping.
    Pong {
        /// The incoming id of the route end that sent the ping.
        in_id: RouteId,
        /// The far end's public key.
        peer: PublicKey,
        /// The ping's nonce.
        nonce: u64,
        /// From sending the ping (after the handshake, if one was needed) to the pong.
        rtt: Duration,
    },
}
