//! Reloading a running node's config (SIGHUP, `skywire reload`; issue 15), sans-IO: what
//! changes between the config the node runs and the one on disk.
//!
//! The new file is read and checked whole first ([`crate::config::Config::load`] and the
//! key it names); a bad one changes nothing, and its error (file, line, key) goes back to
//! whoever asked. A good one is compared with the running config, and only the differences
//! are applied, in **one** engine batch ([`RuleChange`]s, all or nothing): configured routes
//! and relay rules that are gone or changed are removed, new and changed ones added.
//! Routes and relays that did not change are not touched: their sessions, keys and
//! counters stay, so they keep forwarding through the reload without a lost packet.
//!
//! What cannot change under a running node (its key, transport address, TUN device,
//! control socket, manager, fwmark, offloads, app socket, state folder, metrics) is named in
//! [`ReloadSummary::restart_needed`] and logged: it takes effect at the next start, as with
//! `wg syncconf`, which applies peers and leaves the interface alone.

use serde::{Deserialize, Serialize};
use skywire_dataplane::engine::{ApplyError, EngineGone, Origin, RuleChange};

use crate::config::{ConfigError, NodeConfig};

/// A reload did not happen; the node runs on with the config it had.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The node was not started from a config file (an embedded node).
    #[error("this node was not started from a config file")]
    NoConfig,
    /// The file (or the key it names) is bad: its error has the file, line and key.
    #[error("the config was not reloaded: {0}")]
    Config(Box<ConfigError>),
    /// The engine refused the batch (say, a configured route id that a manager route
    /// holds now): nothing of it was applied.
    #[error("the config was not reloaded: the node refused its routes: {0}")]
    Refused(#[from] ApplyError),
    /// The engine is gone.
    #[error(transparent)]
    Engine(#[from] EngineGone),
}

impl From<ConfigError> for ReloadError {
    fn from(error: ConfigError) -> Self {
        Self::Config(Box::new(error))
    }
}

/// What a reload does to the running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadPlan {
    /// The engine batch: removals first, then additions.
    pub changes: Vec<RuleChange>,
    /// What the batch does, for the log and the reply.
    pub summary: ReloadSummary,
}

/// A reload's effect, counted; the reply to `skywire reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadSummary {
    /// Configured routes added (new, or changed: removed then added).
    pub routes_added: usize,
    /// Configured routes removed (gone, or changed).
    pub routes_removed: usize,
    /// Configured routes left as they were.
    pub routes_kept: usize,
    /// Relay rules added.
    pub relays_added: usize,
    /// Relay rules removed.
    pub relays_removed: usize,
    /// Relay rules left as they were.
    pub relays_kept: usize,
    /// Keys that changed but apply only at the next start (`node.listen`, ...).
    pub restart_needed: Vec<String>,
}

impl ReloadSummary {
    /// Whether the reload changed nothing in the engine.
    pub fn is_noop(&self) -> bool {
        self.routes_added + self.routes_removed + self.relays_added + self.relays_removed == 0
    }
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "routes: {} added, {} removed, {} kept; relay rules: {} added, {} removed, {} kept",
            self.routes_added,
            self.routes_removed,
            self.routes_kept,
            self.relays_added,
            self.relays_removed,
            self.relays_kept
        )?;
        if !self.restart_needed.is_empty() {
            write!(
                f,
                "; changed but applied only at the next start: {}",
                self.restart_needed.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The changes that take a node running `old` to `new`. [`ReloadSummary::restart_needed`]
/// compares `old` and `new` too; a node compares the config it started with instead
/// ([`restart_needed`]), since only a start applies those keys.
pub fn plan(old: &NodeConfig, new: &NodeConfig) -> ReloadPlan {
    let mut summary = ReloadSummary::default();
    let mut removals = Vec::new();
    let mut additions = Vec::new();

    for route in old.routes() {
        match new.routes().iter().find(|r| r.in_id == route.in_id) {
            Some(same) if same == route => summary.routes_kept += 1,
            _ => {
                removals.push(RuleChange::Remove { in_id: route.in_id });
                summary.routes_removed += 1;
            }
        }
    }
    for route in new.routes() {
        if !old.routes().contains(route) {
            additions.push(RuleChange::AddEnd {
                route: route.clone(),
                origin: Origin::Config,
            });
            summary.routes_added += 1;
        }
    }
    for relay in old.relays() {
        if new.relays().contains(relay) {
            summary.relays_kept += 1;
        } else {
            removals.push(RuleChange::Remove { in_id: relay.in_id });
            summary.relays_removed += 1;
        }
    }
    for relay in new.relays() {
        if !old.relays().contains(relay) {
            additions.push(RuleChange::AddRelay {
                relay: *relay,
                origin: Origin::Config,
            });
            summary.relays_added += 1;
        }
    }

    summary.restart_needed = restart_needed(old, new);
    removals.extend(additions);
    ReloadPlan {
        changes: removals,
        summary,
    }
}

/// The keys that differ between the config a node `started` with and `new` and that only
/// a start applies.
pub fn restart_needed(started: &NodeConfig, new: &NodeConfig) -> Vec<String> {
    let (old, new) = (started, new);
    let fixed: [(&str, bool); 10] = [
        ("node.key", old.key != new.key),
        ("node.listen", old.listen() != new.listen()),
        ("node.tun", old.tun() != new.tun()),
        (
            "node.control_socket",
            old.control_socket() != new.control_socket(),
        ),
        ("node.manager", old.manager() != new.manager()),
        ("node.fwmark", old.fwmark() != new.fwmark()),
        ("node.offload", old.offload() != new.offload()),
        ("node.apps", old.apps() != new.apps()),
        ("node.state_dir", old.state_dir() != new.state_dir()),
        ("node.metrics", old.metrics() != new.metrics()),
    ];
    fixed
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| (*key).to_owned())
        .collect()
}

#[cfg(test)]
mod tests;
