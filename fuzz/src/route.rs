//! Target for `route::forward`, a relay's per-packet decision on bytes from the network.
//!
//! Input: one byte that picks the address the packet came from (`from_addr`), then the
//! packet. The table has two rules (one relay, one delivery) and is built once per process.
//! Checked: malformed exactly when the route header check fails; the only bytes a forward
//! changes are the route id, rewritten to the rule's outgoing id; nothing else changes a
//! byte; the route's counters move only for accepted packets.

use std::net::SocketAddr;
use std::sync::OnceLock;

use skywire_dataplane::route::{
    Decision, EndpointId, ForwardDrop, RouteTable, Rule, forward as decide,
};
use skywire_dataplane::wire::{RouteHeader, RouteId};

/// The relay rule's incoming id.
pub const FORWARD_ID: u32 = 0x0a0b_0c0d;
/// The relay rule's outgoing id.
pub const FORWARD_OUT_ID: u32 = 0x0102_0304;
/// The delivery rule's id.
pub const DELIVER_ID: u32 = 7;

/// The address selected by the first input byte: 0 is the relay rule's previous hop, 1 the
/// delivery rule's, anything else a stranger.
pub fn from_addr(selector: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 1], 4000 + u16::from(selector.min(2))))
}

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let id = |n| RouteId::new(n).expect("non-zero");
        let table = RouteTable::new();
        table
            .insert(
                id(FORWARD_ID),
                Rule::Forward {
                    prev_hop: from_addr(0),
                    next_hop: SocketAddr::from(([198, 18, 0, 2], 5000)),
                    out_id: id(FORWARD_OUT_ID),
                },
            )
            .expect("new id");
        table
            .insert(
                id(DELIVER_ID),
                Rule::Deliver {
                    prev_hop: from_addr(1),
                    endpoint: EndpointId(9),
                },
            )
            .expect("new id");
        table
    })
}

/// Decide one packet.
pub fn forward(data: &[u8]) {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let from = from_addr(selector);
    let snapshot = table().snapshot();
    let header = RouteHeader::new_checked(packet).ok();
    let entry = header.and_then(|h| snapshot.lookup(h.route_id()));
    let counted_before = entry.map(|e| (e.stats.packets(), e.stats.bytes()));

    let mut buf = packet.to_vec();
    let decision = decide(&snapshot, from, &mut buf);

    match decision {
        Decision::Drop(ForwardDrop::Malformed) => assert!(header.is_none()),
        Decision::Drop(ForwardDrop::UnknownRoute) => assert!(header.is_some() && entry.is_none()),
        Decision::Drop(ForwardDrop::WrongPreviousHop) => {
            assert_ne!(entry.expect("a rule").rule.prev_hop(), from);
        }
        Decision::Forward { .. } | Decision::Deliver { .. } => {
            assert_eq!(entry.expect("a rule").rule.prev_hop(), from);
        }
    }
    if let Decision::Forward { .. } = decision {
        assert_eq!(buf[..4], packet[..4]);
        assert_eq!(buf[4..8], FORWARD_OUT_ID.to_be_bytes());
        assert_eq!(buf[8..], packet[8..]);
    } else {
        assert_eq!(buf, packet, "only a forward may change bytes");
    }
    if let (Some(entry), Some((packets, bytes))) = (entry, counted_before) {
        let accepted = matches!(
            decision,
            Decision::Forward { .. } | Decision::Deliver { .. }
        );
        let len = if accepted { packet.len() as u64 } else { 0 };
        assert_eq!(entry.stats.packets(), packets + u64::from(accepted));
        assert_eq!(entry.stats.bytes(), bytes + len);
    }
}
