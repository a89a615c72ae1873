//! [`NodeCore::status`]: a snapshot of the node for `skywire status` and the tests, built
//! from the route table, the route ends, the expiry state and the drop counters. It
//! allocates (names, prefix lists), so it is asked for between batches, never per packet.

use std::time::Instant;

use super::{NodeCore, NodeDrop, RouteEnd};
use crate::engine::status::{NodeStatus, RelayStatus, RouteStatus};
use crate::route::{ForwardDrop, Rule};
use crate::session::DropReason;

impl NodeCore {
    /// A snapshot for `skywire status`.
    pub fn status(&self, now: Instant) -> NodeStatus {
        let snapshot = self.table.snapshot();
        let mut relays: Vec<RelayStatus> = snapshot
            .iter()
            .filter_map(|(in_id, entry)| match entry.rule {
                Rule::Forward {
                    prev_hop,
                    next_hop,
                    out_id,
                } => Some(RelayStatus {
                    in_id,
                    prev_hop,
                    out_id,
                    next_hop,
                    packets: entry.stats.packets(),
                    bytes: entry.stats.bytes(),
                    origin: self.expiry.origin(in_id),
                    idle: self.expiry.idle(in_id, now),
                }),
                Rule::Deliver { .. } => None,
            })
            .collect();
        relays.sort_by_key(|r| r.in_id);
        let mut ends: Vec<&RouteEnd> = self.ends.iter().collect();
        ends.sort_by_key(|e| e.seq);
        let routes = ends
            .into_iter()
            .map(|end| {
                let s = end.session.stats();
                let drops = DropReason::ALL
                    .iter()
                    .map(|r| (r.as_str(), s.drops.get(*r)))
                    .chain([(super::SOURCE_NOT_ALLOWED, end.spoofed)])
                    .collect();
                RouteStatus {
                    name: end.setup.name.clone(),
                    peer: end.setup.peer,
                    first_hop: end.setup.first_hop,
                    out_id: end.setup.out_id,
                    in_id: end.setup.in_id,
                    prefixes: end.setup.prefixes.clone(),
                    last_handshake: end
                        .session
                        .last_handshake()
                        .map(|t| now.saturating_duration_since(t)),
                    handshakes: s.handshakes_completed,
                    receiving: end.session.receiving(),
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    drops,
                    origin: end.origin,
                    idle: self.expiry.idle(end.setup.in_id, now),
                }
            })
            .collect();
        let mut drops: Vec<(&'static str, u64)> = ForwardDrop::ALL
            .iter()
            .map(|r| (r.as_str(), self.forward_stats.get(*r)))
            .collect();
        drops.extend(
            NodeDrop::ALL
                .iter()
                .map(|r| (r.as_str(), self.drops.get(*r))),
        );
        NodeStatus {
            public_key: self.public_key,
            listen: self.listen,
            tun: self.tun_name.clone(),
            routes,
            relays,
            drops,
            expired: self.expiry.expired(),
            events_dropped: self.events.dropped,
            stack: self.stack.status(),
            fwmark: self.fwmark,
            grants: {
                let mut grants: Vec<_> = self.grants().map(|(k, p)| (*k, p.to_vec())).collect();
                grants.sort_by_key(|(k, _)| *k);
                grants
            },
            under_load: self.is_under_load(now),
            retired: self.retired,
        }
    }
}
