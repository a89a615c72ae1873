//! The manager's Prometheus metrics (`manager.metrics`): a [`ManagerStats`] snapshot,
//! asked of the core between its events ([`StatsHandle`]), as families.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `skywire_manager_nodes` | gauge | `state`: `online`, `offline` (registered, not connected) |
//! | `skywire_manager_links` | gauge | `state`: `up`, `down`, `unproven`, `offline`, `one_end` |
//! | `skywire_manager_routes` | gauge | `state`: `active`, `repairing`, `waiting` |
//! | `skywire_manager_route_setups_total` | counter | `result`: `ok`, `failed` (rolled back), `no_path` |
//! | `skywire_manager_route_repairs_total` | counter | |
//! | `skywire_manager_route_computation_seconds` | histogram | |
//! | `skywire_build_info` | gauge 1 | `version` |
//!
//! A repair is a committed setup that replaced an active path (around a dead node or
//! link, or after a manager restart).

use core::fmt;
use core::time::Duration;

use super::core::ManagerStats;
use super::proto::LinkState;
use super::server::StatsHandle;
use crate::metrics::{Exposition, render};

/// How long a scrape waits for the core.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The exposition text of the running manager now, or why there is none.
pub fn scrape(manager: &StatsHandle) -> Result<String, String> {
    let stats = manager.stats(STATS_TIMEOUT).map_err(|e| e.to_string())?;
    exposition(stats).map_err(|_| "the metrics could not be written".to_owned())
}

/// The exposition text of a snapshot.
pub fn exposition(stats: ManagerStats) -> Result<String, fmt::Error> {
    render(move |e| write_manager(e, &stats))
}

/// A link state's label value: the JSON name (`one_end`), not the text (`one end only`).
fn link_label(state: LinkState) -> &'static str {
    match state {
        LinkState::OneEnd => "one_end",
        LinkState::Offline => "offline",
        LinkState::Unproven => "unproven",
        LinkState::Up => "up",
        LinkState::Down => "down",
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn write_manager(e: &mut Exposition<'_>, s: &ManagerStats) -> fmt::Result {
    e.gauges(
        "skywire_manager_nodes",
        "Registered nodes, by whether they are connected now.",
        [
            (vec![("state", "online")], count(s.nodes_online)),
            (vec![("state", "offline")], count(s.nodes_offline)),
        ],
    )?;
    e.gauges(
        "skywire_manager_links",
        "Links between nodes, by state (only up links carry routes).",
        s.links
            .iter()
            .map(|(state, n)| (vec![("state", link_label(*state))], count(*n))),
    )?;
    e.gauges(
        "skywire_manager_routes",
        "Routes the manager keeps, by state.",
        s.routes
            .iter()
            .map(|(state, n)| (vec![("state", state.as_str())], count(*n))),
    )?;
    e.counters(
        "skywire_manager_route_setups",
        "Route setup attempts, by outcome: ok (every hop acknowledged), failed (rolled \
         back), no_path (nothing to install).",
        [
            (vec![("result", "ok")], s.setups_ok),
            (vec![("result", "failed")], s.setups_failed),
            (vec![("result", "no_path")], s.setups_no_path),
        ],
    )?;
    e.counter(
        "skywire_manager_route_repairs",
        "Setups that replaced a route's active path (around a dead node or link).",
        s.repairs,
    )?;
    e.histogram(
        "skywire_manager_route_computation_seconds",
        "Time the route search took, per computation.",
        &s.computation,
    )?;
    e.build_info()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::core::{LINK_STATES, ROUTE_STATES};
    use crate::metrics::Histogram;

    #[test]
    fn every_state_and_outcome_is_a_series() {
        let mut computation = Histogram::new(Histogram::COMPUTE_BOUNDS);
        computation.observe(0.000_3);
        computation.observe(0.002);
        let stats = ManagerStats {
            nodes_online: 3,
            nodes_offline: 1,
            links: LINK_STATES.iter().map(|s| (*s, 1)).collect(),
            routes: ROUTE_STATES.iter().map(|s| (*s, 2)).collect(),
            setups_ok: 5,
            setups_failed: 1,
            setups_no_path: 2,
            repairs: 1,
            computation,
        };
        let text = exposition(stats).unwrap();
        for line in [
            "skywire_manager_nodes{state=\"online\"} 3\n",
            "skywire_manager_nodes{state=\"offline\"} 1\n",
            "skywire_manager_links{state=\"one_end\"} 1\n",
            "skywire_manager_links{state=\"up\"} 1\n",
            "skywire_manager_routes{state=\"repairing\"} 2\n",
            "skywire_manager_route_setups_total{result=\"ok\"} 5\n",
            "skywire_manager_route_setups_total{result=\"no_path\"} 2\n",
            "skywire_manager_route_repairs_total 1\n",
            "skywire_manager_route_computation_seconds_bucket{le=\"0.0005\"} 1\n",
            "skywire_manager_route_computation_seconds_bucket{le=\"+Inf\"} 2\n",
            "skywire_manager_route_computation_seconds_count 2\n",
            "# TYPE skywire_manager_route_computation_seconds histogram\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
