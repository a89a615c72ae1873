//! [`NodeCore::take_usage`]: the differences since the last ask (`crate::engine::usage`).
//! A route end keeps its counts at the last ask beside its counters; a relay rule's
//! counters live in the route table, so its counts at the last ask are kept here by route
//! id. What a removed end or rule counted after the last ask is set apart when it goes and
//! handed out at the next ask, from the start (so the first ask misses nothing); a node
//! whose usage nobody reads keeps at most [`REMOVED_KEPT`] of them apart.

use std::collections::HashMap;

use super::{NodeCore, RouteEnd};
use crate::engine::usage::{
    Count, EndCounts, EndUsage, REMOVED_KEPT, RelayUsage, StreamUsage, Usage,
};
use crate::route::{Entry, Rule};
use crate::wire::RouteId;

/// The metering state of a node.
#[derive(Debug, Default)]
pub(super) struct Metering {
    /// Each relay rule's counts at the last ask.
    relays: HashMap<RouteId, Count>,
    /// Removed since the last ask.
    gone: Usage,
}

impl Metering {
    /// A relay rule with `entry` was removed: set apart what it forwarded since the last
    /// ask.
    pub(super) fn relay_removed(&mut self, in_id: RouteId, entry: &Entry, origin: super::Origin) {
        let mark = self.relays.remove(&in_id).unwrap_or_default();
        if let Rule::Forward {
            prev_hop, next_hop, ..
        } = entry.rule
        {
            let forwarded = counted(entry).since(mark);
            if forwarded.is_zero() {
                return;
            }
            let usage = RelayUsage {
                in_id,
                prev_hop,
                next_hop,
                origin,
                forwarded,
            };
            if self.gone.relays.len() < REMOVED_KEPT {
                self.gone.relays.push(usage);
            } else if let Some(last) = self.gone.relays.last_mut() {
                last.forwarded.merge(forwarded);
            }
        }
    }

    /// A route end was removed: set apart what it counted since the last ask.
    pub(super) fn end_removed(&mut self, end: &RouteEnd) {
        let counts = end.counts().since(end.metered);
        if counts.is_zero() {
            return;
        }
        if self.gone.ends.len() < REMOVED_KEPT {
            self.gone.ends.push(usage_of(end, counts));
        } else if let Some(last) = self.gone.ends.last_mut() {
            last.counts.merge(counts);
        }
    }
}

fn counted(entry: &Entry) -> Count {
    Count {
        packets: entry.stats.packets(),
        bytes: entry.stats.bytes(),
    }
}

fn usage_of(end: &RouteEnd, counts: EndCounts) -> EndUsage {
    EndUsage {
        name: end.setup.name.clone(),
        peer: end.setup.peer,
        in_id: end.setup.in_id,
        origin: end.origin,
        counts,
    }
}

impl NodeCore {
    /// What the node carried since the last call (since it started, at the first):
    /// route ends, relay rules and app streams with their differences, the ones removed in
    /// between included; only what changed is listed. Meant for one reader, the node's
    /// ledger: each call moves the marks. Allocates; called between batches.
    pub fn take_usage(&mut self) -> Usage {
        let metering = &mut self.metering;
        let mut usage = std::mem::take(&mut metering.gone);
        for end in self.ends.iter_mut() {
            let now = end.counts();
            let counts = now.since(end.metered);
            end.metered = now;
            if !counts.is_zero() {
                usage.ends.push(usage_of(end, counts));
            }
        }
        let snapshot = self.table.snapshot();
        let mut marks = HashMap::with_capacity(metering.relays.len());
        for (in_id, entry) in snapshot.iter() {
            if let Rule::Forward {
                prev_hop, next_hop, ..
            } = entry.rule
            {
                let now = counted(entry);
                let forwarded = now.since(metering.relays.get(&in_id).copied().unwrap_or_default());
                marks.insert(in_id, now);
                if !forwarded.is_zero() {
                    usage.relays.push(RelayUsage {
                        in_id,
                        prev_hop,
                        next_hop,
                        origin: self.expiry.origin(in_id),
                        forwarded,
                    });
                }
            }
        }
        metering.relays = marks;
        usage
            .streams
            .extend(
                self.stack
                    .take_usage()
                    .into_iter()
                    .map(|((peer, port), (sent, received))| StreamUsage {
                        peer,
                        port,
                        sent,
                        received,
                    }),
            );
        usage
    }
}
