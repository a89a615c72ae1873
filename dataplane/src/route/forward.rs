//! The per-packet decision of a hop, for packets that arrive from the transport.
//!
//! A relay reads only the 8-byte route header: it never decrypts and cannot, since it has no
//! key. It checks the packet came from the rule's previous hop, rewrites the id in place, and
//! counts. The previous-hop check compares UDP source addresses: it drops misrouted packets
//! and casual injection, but a source address can be spoofed, so it is no authentication.
//! What protects a route's traffic is the end-to-end AEAD; what an injected packet can cost
//! is bounded by the session (drops before any work, handshakes rate-limited).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::table::{EndpointId, Rule, Snapshot};
use crate::wire::RouteHeader;

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The route id was rewritten in place: send the packet to `next_hop`.
    Forward {
        /// The next hop's transport address.
        next_hop: SocketAddr,
    },
    /// This node is the route's end: hand the packet to the endpoint's session.
    Deliver {
        /// Which local endpoint.
        endpoint: EndpointId,
    },
    /// Drop the packet, for this reason.
    Drop(ForwardDrop),
}

/// Why a hop dropped a packet before any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardDrop {
    /// The route header is malformed (version, type, reserved bytes, zero id, length).
    Malformed,
    /// No rule for this route id.
    UnknownRoute,
    /// A rule exists but the packet came from another address than its previous hop.
    WrongPreviousHop,
}

impl ForwardDrop {
    /// Every reason, in the order of [`ForwardStats`] counters.
    pub const ALL: [ForwardDrop; 3] = [
        ForwardDrop::Malformed,
        ForwardDrop::UnknownRoute,
        ForwardDrop::WrongPreviousHop,
    ];

    /// A short name for status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            ForwardDrop::Malformed => "malformed",
            ForwardDrop::UnknownRoute => "unknown route",
            ForwardDrop::WrongPreviousHop => "wrong previous hop",
        }
    }
}

/// Node-wide drop counters of the forwarding step, shared by forwarding threads.
#[derive(Debug, Default)]
pub struct ForwardStats {
    drops: [AtomicU64; ForwardDrop::ALL.len()],
}

impl ForwardStats {
    /// Count a drop.
    #[inline]
    pub fn record(&self, reason: ForwardDrop) {
        if let Some(counter) = self.drops.get(reason as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count `n` drops.
    pub fn record_n(&self, reason: ForwardDrop, n: u64) {
        if let Some(counter) = self.drops.get(reason as usize) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The count for `reason`.
    pub fn get(&self, reason: ForwardDrop) -> u64 {
        self.drops
            .get(reason as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Decide what to do with `packet`, which arrived from `from`; rewrite its route id in place
/// when it is to be forwarded, and count it on its route.
#[inline]
pub fn forward(snapshot: &Snapshot, from: SocketAddr, packet: &mut [u8]) -> Decision {
    let len = packet.len();
    let Ok(mut header) = RouteHeader::new_checked(packet) else {
        return Decision::Drop(ForwardDrop::Malformed);
    };
    let Some(entry) = snapshot.lookup(header.route_id()) else {
        return Decision::Drop(ForwardDrop::UnknownRoute);
    };
    if entry.rule.prev_hop() != from {
        return Decision::Drop(ForwardDrop::WrongPreviousHop);
    }
    entry.stats.record(len);
    match entry.rule {
        Rule::Forward {
            next_hop, out_id, ..
        } => {
            header.set_route_id(out_id);
            Decision::Forward { next_hop }
        }
        Rule::Deliver { endpoint, .. } => Decision::Deliver { endpoint },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteTable;
    use crate::wire::RouteId;

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], n))
    }

    #[test]
    fn decisions() {
        let table = RouteTable::new();
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let r = |n| RouteId::new(n).unwrap();
        table
            .insert(
                r(7),
                Rule::Forward {
                    prev_hop: a,
                    next_hop: c,
                    out_id: r(9),
                },
            )
            .unwrap();
        table
            .insert(
                r(8),
                Rule::Deliver {
                    prev_hop: b,
                    endpoint: EndpointId(4),
                },
            )
            .unwrap();
        let snap = table.snapshot();
        let packet = |id: u32| {
            let mut p = vec![1u8, 3, 0, 0];
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&[0xcc; 40]);
            p
        };

        let mut p = packet(7);
        assert_eq!(forward(&snap, a, &mut p), Decision::Forward { next_hop: c });
        assert_eq!(p[4..8], 9u32.to_be_bytes());
        assert!(p[8..].iter().all(|&x| x == 0xcc), "payload untouched");

        let mut p = packet(7);
        assert_eq!(
            forward(&snap, b, &mut p),
            Decision::Drop(ForwardDrop::WrongPreviousHop)
        );
        assert_eq!(p[4..8], 7u32.to_be_bytes(), "not rewritten when dropped");

        let mut p = packet(8);
        assert_eq!(
            forward(&snap, b, &mut p),
            Decision::Deliver {
                endpoint: EndpointId(4)
            }
        );
        let mut p = packet(6);
        assert_eq!(
            forward(&snap, a, &mut p),
            Decision::Drop(ForwardDrop::UnknownRoute)
        );
        let mut p = packet(7);
        p[0] = 9;
        assert_eq!(
            forward(&snap, a, &mut p),
            Decision::Drop(ForwardDrop::Malformed)
        );
        for len in 0..8 {
            let mut p = packet(7);
            p.truncate(len);
            assert_eq!(
                forward(&snap, a, &mut p),
                Decision::Drop(ForwardDrop::Malformed)
            );
        }
        let entry = snap.lookup(r(7)).unwrap();
        assert_eq!((entry.stats.packets(), entry.stats.bytes()), (1, 48));
    }
}
