//! Expiry of manager rules: a rule of [`Origin::Manager`] is removed once its packet counter
//! stood still for its `expire_after`.
//!
//! The counters are the route table's own (relaxed atomics the forwarding path bumps
//! anyway), so the packet path does no extra work: they are sampled at most once per
//! [`EXPIRY_SAMPLE`] from [`NodeCore::poll_timers`]. A rule is active at the first sample
//! that sees its counter move, so it goes between `expire_after` and one sample later,
//! never early. Rules of [`Origin::Config`] are not tracked and never expire. Idle rules
//! are removed in one [`NodeCore::apply`] batch, counted, and reported as
//! [`EngineEvent::Expired`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::NodeCore;
use crate::engine::event::EngineEvent;
use crate::engine::setup::{Origin, RuleChange};
use crate::route::RouteStats;
use crate::wire::RouteId;

/// How often the packet counters of manager rules are sampled for expiry.
pub const EXPIRY_SAMPLE: Duration = Duration::from_secs(1);

/// The expiry state of a manager rule.
#[derive(Debug)]
struct Managed {
    route: u64,
    expire_after: Duration,
    /// The rule's counters in the route table.
    stats: Arc<RouteStats>,
    /// The packet count at the last sample, and the sample that first saw it.
    seen: u64,
    active: Instant,
}

/// The manager rules of a node and when their counters are sampled next.
#[derive(Debug, Default)]
pub(super) struct Expiry {
    /// Manager rules by incoming id, for expiry and status.
    managed: BTreeMap<RouteId, Managed>,
    next_sample: Option<Instant>,
    /// Rules removed because they were idle.
    expired: u64,
}

impl Expiry {
    /// A rule was added with `origin`; manager rules are tracked from `now`.
    pub(super) fn track(
        &mut self,
        in_id: RouteId,
        origin: Origin,
        stats: Arc<RouteStats>,
        now: Instant,
    ) {
        if let Origin::Manager {
            route,
            expire_after,
        } = origin
        {
            let seen = stats.packets();
            self.managed.insert(
                in_id,
                Managed {
                    route,
                    expire_after,
                    stats,
                    seen,
                    active: now,
                },
            );
        }
    }

    /// The rule with this id was removed.
    pub(super) fn forget(&mut self, in_id: RouteId) {
        self.managed.remove(&in_id);
    }

    /// After a batch: sample from a second after `now` if manager rules are new, not at
    /// all if none are left.
    pub(super) fn rearm(&mut self, now: Instant) {
        if self.managed.is_empty() {
            self.next_sample = None;
        } else if self.next_sample.is_none() {
            self.next_sample = now.checked_add(EXPIRY_SAMPLE);
        }
    }

    /// When the counters are sampled next (`None`: no manager rules).
    pub(super) fn next_sample(&self) -> Option<Instant> {
        self.next_sample
    }

    /// Rules removed because they were idle.
    pub(super) fn expired(&self) -> u64 {
        self.expired
    }

    /// Where the rule with this id came from.
    pub(super) fn origin(&self, in_id: RouteId) -> Origin {
        self.managed
            .get(&in_id)
            .map_or(Origin::Config, |m| Origin::Manager {
                route: m.route,
                expire_after: m.expire_after,
            })
    }

    /// For manager rules: how long no packet matched (as of the last sample).
    pub(super) fn idle(&self, in_id: RouteId, now: Instant) -> Option<Duration> {
        self.managed
            .get(&in_id)
            .map(|m| now.saturating_duration_since(m.active))
    }

    /// If a sample is due: sample every counter, and return the rules idle too long (incoming
    /// id, manager route), which the caller removes.
    fn due(&mut self, now: Instant) -> Vec<(RouteId, u64)> {
        let mut idle = Vec::new();
        let Some(at) = self.next_sample else {
            return idle;
        };
        if now < at {
            return idle;
        }
        self.next_sample = now.checked_add(EXPIRY_SAMPLE);
        for (in_id, rule) in &mut self.managed {
            let packets = rule.stats.packets();
            if packets != rule.seen {
                // A packet matched since the last sample, so no later than now.
                rule.seen = packets;
                rule.active = now;
            } else if now.saturating_duration_since(rule.active) >= rule.expire_after {
                idle.push((*in_id, rule.route));
            }
        }
        idle
    }
}

impl NodeCore {
    /// Remove manager rules whose packet counter stood still for their `expire_after`;
    /// samples the counters at most once per [`EXPIRY_SAMPLE`].
    pub(super) fn expire(&mut self, now: Instant) {
        let idle = self.expiry.due(now);
        if idle.is_empty() {
            return;
        }
        let changes = idle
            .iter()
            .map(|&(in_id, _)| RuleChange::Remove { in_id })
            .collect();
        // Every id is a live rule, so the batch cannot be refused.
        if self.apply(now, changes).is_ok() {
            for (in_id, route) in idle {
                self.expiry.expired += 1;
                self.events.push(EngineEvent::Expired { in_id, route });
            }
        }
    }
}
