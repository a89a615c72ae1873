//! `node.metrics` and `manager.metrics`: where the Prometheus metrics are served
//! ([`crate::metrics`]). Off unless written.
//!
//! | key | type | default |
//! |---|---|---|
//! | `listen` | `IP:PORT` to serve `GET /metrics` on (required); `127.0.0.1:9586` is the usual choice | none: no metrics |
//! | `per_route` (node only) | bool: series per route end and relay rule | `false` |
//!
//! Any address is accepted; one that is not loopback is logged as a warning when bound,
//! since the metrics show the node's peers and traffic volumes.

use std::net::SocketAddr;

use serde::Deserialize;

use super::values::ListenAddr;

/// `node.metrics`: the node's metrics server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricsConfig {
    /// `listen`: the TCP address of `GET /metrics` (port 0: any free port, logged).
    pub listen: SocketAddr,
    /// `per_route`: series per route end and relay rule besides the node-wide ones.
    pub per_route: bool,
}

/// `node.metrics` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeMetrics {
    listen: ListenAddr,
    per_route: Option<bool>,
}

impl From<RawNodeMetrics> for MetricsConfig {
    fn from(raw: RawNodeMetrics) -> Self {
        Self {
            listen: raw.listen.0,
            per_route: raw.per_route.unwrap_or(false),
        }
    }
}

/// `manager.metrics` as written: only `listen` (the manager has no per-route series).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManagerMetrics {
    pub(super) listen: ListenAddr,
}
