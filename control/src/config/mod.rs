//! The typed configuration of skywire, read from one YAML file (`config.yaml`).
//!
//! Parse, don't validate: [`Config::load`] turns the file into typed values in one step or
//! fails with a [`ConfigError`] naming the file, the line and column, and the dotted key path,
//! shown as `FILE:LINE:COL: KEY: MESSAGE` (`config.yaml:12:5: apps.foo.daemon: invalid
//! boolean`). There is no partial result, so a caller that acts only on `Ok` applies all of a
//! config or nothing of it. This module reads the file (and [`ConfigFile::write`] writes
//! one) and does no other I/O: whether the paths it names exist is for their users to find
//! out when they use them.
//!
//! Sections, one module each with its serde shape (`Raw*`) and its typed value:
//!
//! - `node:` ([`NodeConfig`]): the node's identity (its private key file), transport, TUN
//!   device, routes and relay rules; [`Config::node_setup`] turns it into the engine's
//!   [`NodeSetup`].
//!   A node with `node.manager` ([`ManagerLink`]) registers with a manager and gets its
//!   routes from it. `node.apps` ([`NodeApps`]) places the app socket, says who may use it
//!   and sets the limits of apps' streams; [`Config::apps_config`] looks its user and
//!   group names up for the app socket's server ([`AppsConfig`]).
//! - `manager:` ([`ManagerConfig`]): the node manager's key, TCP address, admission list,
//!   links, timers and route defaults; [`Config::manager_key`] loads its private key.
//!   Both may serve Prometheus metrics (`node.metrics`, `manager.metrics`:
//!   [`MetricsConfig`]).
//! - `apps:` ([`Apps`]): the viscript launcher's apps, in the original schema.
//! - `socks:` ([`SocksConfig`]): the SOCKS client app and the SOCKS exit app.
//! - `vpn:` ([`VpnConfig`]): the VPN exit app and the VPN client app.
//!
//! The other direction, `write`: [`ConfigFile`] writes `node:` ([`NodeSection`]),
//! `manager:` ([`ManagerSection`]), `socks:` and `vpn:` from typed values as YAML that
//! [`Config::load`] reads back to the same values, for the tools and tests that start real
//! nodes (nothing writes a config by hand).
//!
//! Invariants:
//!
//! - Unknown keys are errors at every level (`deny_unknown_fields`): a typo never silently
//!   turns into a default.
//! - Relative paths resolve against the folder holding the config file, not the current
//!   directory; no `~` expansion, no `$PATH` search.
//! - Files longer than [`MAX_CONFIG_LEN`] are refused before parsing, and the parser runs
//!   under a budget (depth, nodes, aliases), so a small file cannot expand into a large one.
//! - A file holds one YAML document; an empty file is the default config.
//! - Checks across values (two routes with one name) run right after parsing, before
//!   [`Config::parse`] returns; their errors are located like parse errors, through a second,
//!   structure-only pass over the text (`yaml::Layout`). Only what needs more than the file
//!   (the private key, for "a route's peer is this node") waits for [`Config::node_setup`].
//! - Private key files are read only on request ([`Config::node_setup`],
//!   [`Config::manager_key`]), through one function with one set of checks
//!   ([`crate::keyfile::load_private_key`]); so are `/etc/passwd` and `/etc/group`
//!   ([`Config::apps_config`]).
//!
//! Adding a section: a module with a `Raw*` struct (`#[serde(deny_unknown_fields)]`) and
//! its typed value, a field in `RawConfig` and in [`Config`], and a line in `Config::parse`.
//! A check that can fail belongs in a `TryFrom<String>` newtype (like `AppName`) with a new
//! [`Problem`], so the parser locates its errors like any other; a check across values goes
//! in the section's `resolve`, reporting through `yaml::Locator`. A section that tools write
//! gets a typed `*Section` in `write.rs`, its serde shape there, and a round-trip test.

mod apps;
mod error;
mod manager;
mod metrics;
mod node;
mod paths;
mod socks;
mod values;
mod vpn;
mod write;
mod yaml;

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::engine::NodeSetup;

pub use apps::{App, AppName, AppPath, Apps};
pub use error::{ConfigError, Position, Problem};
pub use manager::{
    DEFAULT_HEARTBEAT, DEFAULT_MANAGER_KEY, DEFAULT_MANAGER_LISTEN, DEFAULT_RULE_EXPIRY,
    DEFAULT_SETUP_TIMEOUT, HEARTBEATS_BEFORE_DEAD, ManagerConfig,
};
pub use metrics::MetricsConfig;
pub use node::{
    AcceptRule, AppsConfig, DEFAULT_APP_SOCKET, DEFAULT_CONTROL_SOCKET, DEFAULT_LISTEN,
    DEFAULT_MTU, DEFAULT_NODE_KEY, DEFAULT_STATE_DIR, ManagerLink, NodeApps, NodeConfig,
    derive_app_socket,
};
pub use socks::{
    DEFAULT_DENY_PORTS, DEFAULT_SOCKS_LISTEN, DEFAULT_SOCKS_PORT, Exception, ExceptionError, Ports,
    SocksClientConfig, SocksConfig, SocksExitConfig,
};
pub use values::{Account, MAX_HOPS};
pub use vpn::{
    DEFAULT_LEASE_GRACE, DEFAULT_VPN_CLIENT_STATE, DEFAULT_VPN_EXIT_STATE, DEFAULT_VPN_PORT,
    DEFAULT_VPN_PRIORITY, DEFAULT_VPN_TABLE, Ipv6Pool, MAX_POOL_IPV4_LEN, MAX_POOL_IPV6_LEN,
    MAX_VPN_PRIORITY, RESERVED_TABLES, VpnClientConfig, VpnConfig, VpnExitConfig,
    default_lan_ranges, default_pool_ipv4,
};
pub use write::{ConfigFile, ManagerSection, NodeSection, WriteError};
use yaml::{KeyPath, Layout, Locator};

/// The largest config file read, in bytes (1 MiB). Real configs are a few kilobytes; the bound
/// keeps a wrong path (a log, a disk image) from being read and parsed whole.
pub const MAX_CONFIG_LEN: usize = 1 << 20;

/// A whole config file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The file it was read from, as given (for messages).
    pub file: PathBuf,
    /// `node:`; defaults when the section is absent.
    pub node: NodeConfig,
    /// `manager:`; defaults when the section is absent.
    pub manager: ManagerConfig,
    /// `apps:`; none when the section is absent.
    pub apps: Apps,
    /// `socks:`; defaults when the section is absent.
    pub socks: SocksConfig,
    /// `vpn:`; defaults when the section is absent.
    pub vpn: VpnConfig,
    /// Whether `node:` is written, with a value or without.
    has_node: bool,
    /// Whether `manager:` is written, with a value or without.
    has_manager: bool,
    /// Where each key is, for errors found after parsing.
    layout: Layout,
}

/// The file as written. For `node` and `manager`, being written at all counts (see
/// [`Config::has_manager_section`]), so `Some(None)` is the key with no value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "yaml::written")]
    node: Option<Option<node::RawNode>>,
    #[serde(default, deserialize_with = "yaml::written")]
    manager: Option<Option<manager::RawManager>>,
    apps: Option<apps::RawApps>,
    socks: Option<socks::RawSocks>,
    vpn: Option<vpn::RawVpn>,
}

impl Config {
    /// Read and parse the config file at `path`.
    ///
    /// Refuses anything but a regular file (symlinks are followed), a file longer than
    /// [`MAX_CONFIG_LEN`], and text that is not UTF-8, before parsing it as [`Config::parse`]
    /// does.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let file = path.as_ref();
        let text = read_text(file)?;
        Self::parse(&text, file)
    }

    /// Parse `text`, the content of the config file `file`. `file` is named in errors, and
    /// relative paths in the text resolve against its folder; it is not read.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let file = file.as_ref();
        if text.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge {
                file: file.to_owned(),
                len: u64::try_from(text.len()).unwrap_or(u64::MAX),
            });
        }
        let raw: RawConfig = yaml::deserialize(text, file)?;
        let layout = Layout::of(text);
        let at = Locator {
            file,
            layout: &layout,
        };
        let base = file.parent().unwrap_or_else(|| Path::new(""));
        let has_node = raw.node.is_some();
        let has_manager = raw.manager.is_some();
        let node = raw.node.flatten().unwrap_or_default().resolve(base, &at)?;
        let manager = raw
            .manager
            .flatten()
            .unwrap_or_default()
            .resolve(base, &at)?;
        let apps = raw.apps.unwrap_or_default().resolve(base);
        let socks = raw.socks.unwrap_or_default().resolve(base, &at)?;
        let vpn = raw.vpn.unwrap_or_default().resolve(base, &at)?;
        Ok(Self {
            file: file.to_owned(),
            node,
            manager,
            apps,
            socks,
            vpn,
            has_node,
            has_manager,
            layout,
        })
    }

    /// Whether the file has a `node:` section (even one with no value, all defaults).
    pub fn has_node_section(&self) -> bool {
        self.has_node
    }

    /// Whether the file has a `manager:` section (even one with no value, all defaults).
    ///
    /// A file with a `manager:` section and no `node:` section configures a manager only:
    /// its identity is `manager.key`, not the default `node.key`.
    pub fn has_manager_section(&self) -> bool {
        self.has_manager
    }

    /// The manager's private key, loaded from `manager.key` (see
    /// [`crate::keyfile::load_private_key`]: the same checks as for `node.key`).
    ///
    /// Fails with [`ConfigError::Key`], naming `manager.key` and its line (or the
    /// `manager:` line when the key is the default), when the key file cannot be used.
    pub fn manager_key(&self) -> Result<PrivateKey, ConfigError> {
        self.manager.private_key(&self.locator())
    }

    /// What the engine needs to run this node: the `node:` section with its private key,
    /// loaded from `node.key` (see [`crate::keyfile::load_private_key`]).
    ///
    /// Fails with [`ConfigError::Key`], naming `node.key` and its line, when the key file
    /// cannot be used, and with [`Problem::PeerIsSelf`] when a route's `peer` is this node's
    /// own public key. Either way nothing is returned to apply.
    pub fn node_setup(&self) -> Result<NodeSetup, ConfigError> {
        self.node.setup(&self.locator())
    }

    /// What the node's app socket server needs (`node.apps`): its path, the uids of
    /// `node.apps.users` and the gid of `node.apps.group`, looked up in `/etc/passwd` and
    /// `/etc/group` ([`crate::accounts`]), and the stack's limits.
    ///
    /// Fails with [`Problem::UnknownUser`] or [`Problem::UnknownGroup`], naming the key and
    /// its line, for a name those files do not have.
    pub fn apps_config(&self) -> Result<AppsConfig, ConfigError> {
        self.node
            .apps_config(&node::SystemAccounts, &self.locator())
    }

    /// Errors about this file's values, located in it.
    fn locator(&self) -> Locator<'_> {
        Locator {
            file: &self.file,
            layout: &self.layout,
        }
    }
}

/// The private key in the key file at `path`, which the config names at `key`; the
/// error, when it cannot be used, names `key` and keeps the key file's error as its source.
fn load_key(path: &Path, key: &KeyPath, at: &Locator<'_>) -> Result<PrivateKey, ConfigError> {
    crate::keyfile::load_private_key(path).map_err(|source| at.unusable_key(key, source))
}

/// The file's text: a regular file, at most [`MAX_CONFIG_LEN`] bytes, UTF-8.
fn read_text(file: &Path) -> Result<String, ConfigError> {
    let io_error = |source| ConfigError::Io {
        file: file.to_owned(),
        source,
    };
    let too_large = |len: u64| ConfigError::TooLarge {
        file: file.to_owned(),
        len,
    };
    let limit = u64::try_from(MAX_CONFIG_LEN).unwrap_or(u64::MAX);

    // Check what the path names before opening it: opening a FIFO for reading would block.
    let meta = fs::metadata(file).map_err(io_error)?;
    if !meta.is_file() {
        return Err(ConfigError::NotRegularFile {
            file: file.to_owned(),
        });
    }
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    // Read one byte past the limit, in case the file grew since `metadata`.
    let mut bytes = Vec::new();
    File::open(file)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(io_error)?;
    if bytes.len() > MAX_CONFIG_LEN {
        return Err(too_large(u64::try_from(bytes.len()).unwrap_or(u64::MAX)));
    }
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let prefix = err.as_bytes().get(..valid).unwrap_or_default();
        // The prefix is valid UTF-8 by definition; the fallback is never taken.
        let prefix = std::str::from_utf8(prefix).unwrap_or_default();
        ConfigError::NotUtf8 {
            file: file.to_owned(),
            position: error::Position::after(prefix),
        }
    })
}

#[cfg(test)]
mod tests;
