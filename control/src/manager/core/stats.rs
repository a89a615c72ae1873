//! What the manager counts for its metrics: the outcome of every route setup, repairs,
//! and how long route computations take; and [`ManagerCore::stats`], a snapshot of those
//! with the sizes of the books (nodes, links, routes by state).
//!
//! The counters move where the setup transaction decides (`setup`), never per frame. The
//! one clock the core reads is here: the stopwatch around a route computation, a
//! measurement no decision depends on (tests can set a fake one,
//! [`ManagerCore::set_stopwatch`]).

use std::time::Instant;

use super::ManagerCore;
use crate::manager::proto::{LinkState, RouteState};
use crate::metrics::Histogram;

/// The manager's counters since it started.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Counters {
    /// Setups that committed (every hop acknowledged).
    pub(super) setups_ok: u64,
    /// Setups rolled back (a refusal, a missing acknowledgement, a hop or link lost, the
    /// route removed meanwhile).
    pub(super) setups_failed: u64,
    /// Attempts that found no path (or no endpoint), so installed nothing.
    pub(super) no_path: u64,
    /// Committed setups that replaced an active path (repairs and moves).
    pub(super) repairs: u64,
    /// Route computations: seconds each took.
    pub(super) computation: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            setups_ok: 0,
            setups_failed: 0,
            no_path: 0,
            repairs: 0,
            computation: Histogram::new(Histogram::COMPUTE_BOUNDS),
        }
    }
}

/// A snapshot of the manager for its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerStats {
    /// Registered nodes connected now.
    pub nodes_online: usize,
    /// Registered nodes not connected now (kept while their routes may come back).
    pub nodes_offline: usize,
    /// Links by state, every state listed.
    pub links: Vec<(LinkState, usize)>,
    /// Routes by state, every state listed.
    pub routes: Vec<(RouteState, usize)>,
    /// Setups that committed.
    pub setups_ok: u64,
    /// Setups rolled back.
    pub setups_failed: u64,
    /// Attempts that found no path.
    pub setups_no_path: u64,
    /// Committed setups that replaced an active path.
    pub repairs: u64,
    /// Route computation time, in seconds.
    pub computation: Histogram,
}

/// Every link state, in the order the metrics list them.
pub const LINK_STATES: [LinkState; 5] = [
    LinkState::Up,
    LinkState::Down,
    LinkState::Unproven,
    LinkState::Offline,
    LinkState::OneEnd,
];

/// Every route state, in the order the metrics list them.
pub const ROUTE_STATES: [RouteState; 3] = [
    RouteState::Active,
    RouteState::Repairing,
    RouteState::Waiting,
];

impl ManagerCore {
    /// A snapshot of the counters and the books' sizes. It walks the books (no frame, no
    /// allocation per node beyond the link view), so it is for a scrape, not a loop.
    pub fn stats(&self) -> ManagerStats {
        let online = self
            .registry
            .nodes
            .values()
            .filter(|n| n.conn.is_some())
            .count();
        let links = self.links.infos(|k| self.registry.online(k));
        let routes: Vec<RouteState> = self.routes.iter().map(|r| self.state_of(r)).collect();
        let c = &self.counters;
        ManagerStats {
            nodes_online: online,
            nodes_offline: self.registry.nodes.len().saturating_sub(online),
            links: LINK_STATES
                .iter()
                .map(|s| (*s, links.iter().filter(|l| l.state == *s).count()))
                .collect(),
            routes: ROUTE_STATES
                .iter()
                .map(|s| (*s, routes.iter().filter(|r| *r == s).count()))
                .collect(),
            setups_ok: c.setups_ok,
            setups_failed: c.setups_failed,
            setups_no_path: c.no_path,
            repairs: c.repairs,
            computation: c.computation.clone(),
        }
    }

    /// Use `stopwatch` instead of [`Instant::now`] to time route computations (tests).
    pub fn set_stopwatch(&mut self, stopwatch: fn() -> Instant) {
        self.stopwatch = stopwatch;
    }

    /// Start timing a route computation.
    pub(super) fn stopwatch_start(&self) -> Instant {
        (self.stopwatch)()
    }

    /// A route computation started at `start` ended.
    pub(super) fn computed(&mut self, start: Instant) {
        let took = (self.stopwatch)().saturating_duration_since(start);
        self.counters.computation.observe(took.as_secs_f64());
    }
}
