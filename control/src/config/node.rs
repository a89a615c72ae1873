//! The `node:` section: the node's own identity.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::paths::PathText;

/// Where a node's private key lives when the config does not say.
pub const DEFAULT_NODE_KEY: &str = "/etc/skywire/node.key";

/// The `node:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// `node.key`: the node's private key file (see [`crate::keyfile`]), resolved against the
    /// config file's folder. Default [`DEFAULT_NODE_KEY`].
    pub key: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            key: PathBuf::from(DEFAULT_NODE_KEY),
        }
    }
}

/// `node:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    key: Option<PathText>,
}

impl RawNode {
    /// The typed section, relative paths resolved against `base`.
    pub(super) fn resolve(self, base: &Path) -> NodeConfig {
        let defaults = NodeConfig::default();
        NodeConfig {
            key: self.key.map_or(defaults.key, |key| key.resolve(base)),
        }
    }
}
