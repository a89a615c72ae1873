//! The typed config writer: a node's `node:` section, a manager's `manager:` section, the
//! SOCKS apps' `socks:` section and the VPN apps' `vpn:` section built from typed values and written as YAML text that
//! [`Config::load`] reads back to the same values. For tools and tests that start real
//! nodes (the namespace lab, `skywire demo`, `skywire bench`, the integration tests):
//! nothing writes a config by hand.
//!
//! ```text
//! NodeSection / ManagerSection / SocksConfig / VpnConfig
//!     --ConfigFile::to_yaml--> text --Config::parse--> the same values
//! ```
//!
//! Why serde: the YAML is emitted by `serde-saphyr`, the crate that reads it, through
//! `#[derive(Serialize)]` structs that mirror the `Raw*` shapes of `node.rs`, `manager.rs`,
//! `socks.rs` and `vpn.rs`. Its quoting rules (strings that would read as a number, a boolean, a
//! null, a flow or block indicator, a comment, or that hold control characters) are made
//! for its own parser, so an awkward route name or path comes back as written, which a
//! hand-made emitter would have to get right case by case. The `serialize` feature costs
//! two small crates (`base64`, `nohash-hasher`).
//!
//! Invariants:
//!
//! - Every value is written, defaults included, so a round trip compares every field and a
//!   change of a default never changes what a written file means.
//! - [`ConfigFile::to_yaml`] parses what it wrote before returning it: a [`ConfigFile`] that
//!   breaks a rule of the config (routes without a TUN device, two routes with one name, an
//!   MTU out of range) is a [`WriteError::Rejected`] carrying the parser's own located
//!   error, never a file a node would refuse later.
//! - Paths are written as given: a relative one resolves, on loading, against the folder
//!   of the file it is written to, as every config path does.
//!
//! What it does not do: keep comments or the layout of an existing file (it writes new
//! files), or write `apps:` (no tool needs it yet).

use core::time::Duration;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_saphyr::{FlowSeq, SerializerOptions};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{Fwmark, RelaySetup, RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;

use super::node::FwmarkValue;
use super::{
    Config, ConfigError, ManagerConfig, ManagerLink, MetricsConfig, NodeApps, NodeConfig,
    SocksClientConfig, SocksConfig, SocksExitConfig, VpnClientConfig, VpnConfig, VpnExitConfig,
};
use crate::manager::topology::RouteWeight;

/// The `node:` section of a config to write; every field is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    /// `node.key`: the private key file; a relative path is relative to the config file.
    pub key: PathBuf,
    /// `node.listen`: the UDP transport address.
    pub listen: SocketAddr,
    /// `node.control_socket`: the Unix control socket; relative like `key`.
    pub control_socket: PathBuf,
    /// `node.state_dir`: the folder of the node's state files; relative like `key`.
    pub state_dir: PathBuf,
    /// `node.offload`: the kernel's batching offloads.
    pub offload: bool,
    /// `node.fwmark`: `None` leaves the key out (the default, which depends on `tun`),
    /// `Some(None)` writes `off`, `Some(Some(mark))` the mark.
    pub fwmark: Option<Option<Fwmark>>,
    /// `node.tun`: the TUN device; `None` for a relay-only node.
    pub tun: Option<TunSetup>,
    /// `node.routes`: the routes this node is an end of.
    pub routes: Vec<RouteSetup>,
    /// `node.relays`: the relay rules this node holds.
    pub relays: Vec<RelaySetup>,
    /// `node.manager`: the manager to register with (its `endpoint` is always written).
    pub manager: Option<ManagerLink>,
    /// `node.apps`: the app socket and the stack's limits. Every limit is written; the
    /// socket only when set (`None` keeps it derived from `control_socket`, so a tool that
    /// changes the control socket moves the app socket with it), `group` only when set,
    /// `users` only when not empty.
    pub apps: NodeApps,
    /// `node.metrics`: the Prometheus metrics server; `None` writes none (off).
    pub metrics: Option<MetricsConfig>,
}

impl NodeSection {
    /// A node with key file `key` and every other value at its default (the defaults of
    /// [`NodeConfig`]: no TUN, no routes, no relays, no manager).
    pub fn new(key: impl Into<PathBuf>) -> Self {
        Self {
            key: key.into(),
            ..Self::from(&NodeConfig::default())
        }
    }
}

impl From<&NodeConfig> for NodeSection {
    /// The section a loaded config holds, to write it again (paths as resolved).
    fn from(node: &NodeConfig) -> Self {
        Self {
            key: node.key.clone(),
            listen: node.listen(),
            control_socket: node.control_socket().to_owned(),
            state_dir: node.state_dir().to_owned(),
            offload: node.offload(),
            fwmark: {
                let default = node.tun().map(|_| Fwmark::DEFAULT);
                (node.fwmark() != default).then_some(node.fwmark())
            },
            tun: node.tun().cloned(),
            routes: node.routes().to_vec(),
            relays: node.relays().to_vec(),
            manager: node.manager().cloned(),
            apps: node.apps().clone(),
            metrics: node.metrics(),
        }
    }
}

/// The `manager:` section of a config to write; every field is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerSection {
    /// `manager.key`: the manager's private key file; relative to the config file.
    pub key: PathBuf,
    /// `manager.listen`: the TCP address nodes connect to.
    pub listen: SocketAddr,
    /// `manager.allow`: the node keys that may register; `None` writes no `allow`.
    pub allow: Option<Vec<PublicKey>>,
    /// `manager.links`: links the manager may route over.
    pub links: Vec<[PublicKey; 2]>,
    /// `manager.addresses`: TUN addresses pinned to nodes.
    pub addresses: Vec<(PublicKey, Vec<Prefix>)>,
    /// `manager.address_ranges`: where TUN addresses must lie; `None` writes none.
    pub address_ranges: Option<Vec<Prefix>>,
    /// `manager.rule_expiry`, in whole milliseconds.
    pub rule_expiry: Duration,
    /// `manager.setup_timeout`, in whole milliseconds.
    pub setup_timeout: Duration,
    /// `manager.heartbeat`, in whole milliseconds.
    pub heartbeat: Duration,
    /// `manager.weight`.
    pub weight: RouteWeight,
    /// `manager.min_hops`.
    pub min_hops: u8,
    /// `manager.max_hops`.
    pub max_hops: u8,
    /// `manager.metrics.listen`: the Prometheus metrics server; `None` writes none (off).
    pub metrics: Option<SocketAddr>,
}

impl ManagerSection {
    /// A manager with key file `key` and every other value at its default (those of
    /// [`ManagerConfig`]).
    pub fn new(key: impl Into<PathBuf>) -> Self {
        Self {
            key: key.into(),
            ..Self::from(&ManagerConfig::default())
        }
    }
}

impl From<&ManagerConfig> for ManagerSection {
    /// The section a loaded config holds, to write it again (paths as resolved).
    fn from(manager: &ManagerConfig) -> Self {
        Self {
            key: manager.key.clone(),
            listen: manager.listen(),
            allow: manager.allow().map(<[PublicKey]>::to_vec),
            links: manager.links().to_vec(),
            addresses: manager.addresses().to_vec(),
            address_ranges: manager.address_ranges().map(<[Prefix]>::to_vec),
            rule_expiry: manager.rule_expiry(),
            setup_timeout: manager.setup_timeout(),
            heartbeat: manager.heartbeat(),
            weight: manager.weight(),
            min_hops: manager.min_hops(),
            max_hops: manager.max_hops(),
            metrics: manager.metrics_listen(),
        }
    }
}

/// A config file to write: a comment at the top, and the sections it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// Written first, each line as a `# ` comment (say who wrote the file and why).
    pub comment: String,
    /// `node:`, when written.
    pub node: Option<NodeSection>,
    /// `manager:`, when written.
    pub manager: Option<ManagerSection>,
    /// `socks:`, when written: both apps' sections, every field (a loaded config's
    /// [`Config::socks`] is already the typed section, so it is written as it is).
    pub socks: Option<SocksConfig>,
    /// `vpn:`, when written: both apps' sections, every field, like `socks`.
    pub vpn: Option<VpnConfig>,
}

/// Why a [`ConfigFile`] was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A path is not UTF-8, and a config file is text.
    #[error("{key}: the path {} is not UTF-8", path.display())]
    NotUtf8Path {
        /// The key it was for (`node.key`).
        key: String,
        /// The path.
        path: PathBuf,
    },
    /// A duration has a part smaller than a millisecond, which no config duration holds.
    #[error("{key}: {duration:?} is not a whole number of milliseconds")]
    SubMillisecond {
        /// The key it was for (`manager.heartbeat`).
        key: String,
        /// The duration.
        duration: Duration,
    },
    /// The serializer failed (a bug: every value written is a string, number or boolean).
    #[error("cannot emit YAML")]
    Emit(#[source] serde_saphyr::SerializeError),
    /// The values break a rule of the config: the text written does not load. The
    /// parser's error names the key and the line of the text written.
    #[error("the config written does not load")]
    Rejected(#[source] Box<ConfigError>),
    /// The file could not be written.
    #[error("cannot write {}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl ConfigFile {
    /// A file holding the node section `node`.
    pub fn node(node: NodeSection) -> Self {
        Self {
            node: Some(node),
            ..Self::default()
        }
    }

    /// A file holding the manager section `manager`.
    pub fn manager(manager: ManagerSection) -> Self {
        Self {
            manager: Some(manager),
            ..Self::default()
        }
    }

    /// A file holding the SOCKS apps' section `socks` (what `skywire socks client --config`
    /// and `skywire socks exit --config` read).
    pub fn socks(socks: SocksConfig) -> Self {
        Self {
            socks: Some(socks),
            ..Self::default()
        }
    }

    /// A file holding the VPN apps' section `vpn` (what `skywire vpn exit --config` and
    /// `skywire vpn client --config` read).
    pub fn vpn(vpn: VpnConfig) -> Self {
        Self {
            vpn: Some(vpn),
            ..Self::default()
        }
    }

    /// The same file with `comment` at its top.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
        self
    }

    /// The file's text, checked: [`Config::parse`] reads it back (as the file
    /// `written.yaml`) or this fails with [`WriteError::Rejected`].
    pub fn to_yaml(&self) -> Result<String, WriteError> {
        self.checked_text(Path::new("written.yaml"))
    }

    /// Write the file at `path` (replacing it), after the check of [`Self::to_yaml`] made
    /// as the file `path`, so relative paths and error messages mean that file.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), WriteError> {
        let path = path.as_ref();
        let text = self.checked_text(path)?;
        fs::write(path, text).map_err(|source| WriteError::Io {
            file: path.to_owned(),
            source,
        })
    }

    fn checked_text(&self, file: &Path) -> Result<String, WriteError> {
        let text = self.text()?;
        Config::parse(&text, file).map_err(|e| WriteError::Rejected(Box::new(e)))?;
        Ok(text)
    }

    /// The text, unchecked.
    fn text(&self) -> Result<String, WriteError> {
        let file = FileOut {
            node: self.node.as_ref().map(NodeOut::of).transpose()?,
            manager: self.manager.as_ref().map(ManagerOut::of).transpose()?,
            socks: self.socks.as_ref().map(SocksOut::of).transpose()?,
            vpn: self.vpn.as_ref().map(VpnOut::of).transpose()?,
        };
        let mut text = comment_lines(&self.comment);
        if file.node.is_none()
            && file.manager.is_none()
            && file.socks.is_none()
            && file.vpn.is_none()
        {
            // An empty mapping would be written `{}`; a file with only comments says the
            // same (the default config) without it.
            return Ok(text);
        }
        let yaml =
            serde_saphyr::to_string_with_options(&file, options()).map_err(WriteError::Emit)?;
        text.push_str(&yaml);
        Ok(text)
    }
}

/// Block style throughout, short lists (addresses, prefixes, a link's two keys) in flow
/// style, and no block scalars: a long or multi-line string is quoted and escaped on one
/// line, which keeps paths readable and grep-able.
fn options() -> SerializerOptions {
    let mut options = SerializerOptions::default();
    options.prefer_block_scalars = false;
    options
}

/// `comment` as `# ` lines, control characters (which a comment cannot hold) as spaces.
fn comment_lines(comment: &str) -> String {
    let mut out = String::new();
    for line in comment.lines() {
        let clean: String = line
            .chars()
            .map(|c| {
                let unsafe_in_yaml =
                    c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}');
                if unsafe_in_yaml { ' ' } else { c }
            })
            .collect();
        let clean = clean.trim_end();
        if clean.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(clean);
            out.push('\n');
        }
    }
    out
}

/// `path` as text, or [`WriteError::NotUtf8Path`] naming `key`.
fn path_text<'a>(key: &str, path: &'a Path) -> Result<&'a str, WriteError> {
    path.to_str().ok_or_else(|| WriteError::NotUtf8Path {
        key: key.to_owned(),
        path: path.to_owned(),
    })
}

/// A duration as the config writes one, in the largest unit that holds it exactly
/// (`1h`, `2m`, `25s`, `500ms`).
fn duration_text(key: &str, duration: Duration) -> Result<String, WriteError> {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(WriteError::SubMillisecond {
            key: key.to_owned(),
            duration,
        });
    }
    let millis = duration.as_millis();
    let text = match millis {
        0 => "0s".to_owned(),
        m if m.is_multiple_of(3_600_000) => format!("{}h", m / 3_600_000),
        m if m.is_multiple_of(60_000) => format!("{}m", m / 60_000),
        m if m.is_multiple_of(1_000) => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    };
    Ok(text)
}

fn strings<T: ToString>(values: &[T]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
}

// The shapes written. Field order is the order of the keys in the file (that of the
// repository's config.yaml); names are the config's keys.

#[derive(Serialize)]
struct FileOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manager: Option<ManagerOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socks: Option<SocksOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vpn: Option<VpnOut<'a>>,
}

#[derive(Serialize)]
struct NodeOut<'a> {
    key: &'a str,
    listen: String,
    control_socket: &'a str,
    state_dir: &'a str,
    offload: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fwmark: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tun: Option<TunOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relays: Vec<RelayOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manager: Option<LinkOut>,
    apps: AppsOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<MetricsOut>,
}

#[derive(Serialize)]
struct MetricsOut {
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_route: Option<bool>,
}

#[derive(Serialize)]
struct AppsOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<FlowSeq<Vec<String>>>,
    streams: usize,
    streams_per_peer: usize,
    streams_per_app: usize,
    half_open: usize,
    listeners: usize,
    idle_timeout: String,
    take_timeout: String,
    buffer: usize,
    memory: usize,
}

#[derive(Serialize)]
struct TunOut<'a> {
    name: &'a str,
    addresses: FlowSeq<Vec<String>>,
    mtu: u16,
}

#[derive(Serialize)]
struct RouteOut<'a> {
    name: &'a str,
    peer: String,
    prefixes: FlowSeq<Vec<String>>,
    first_hop: String,
    out_id: u32,
    in_id: u32,
    /// Written only when it is not the default (`out_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_in_id: Option<u32>,
    prev_hop: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_keepalive: Option<String>,
}

#[derive(Serialize)]
struct RelayOut {
    in_id: u32,
    prev_hop: String,
    out_id: u32,
    next_hop: String,
}

#[derive(Serialize)]
struct LinkOut {
    address: String,
    key: String,
    endpoint: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    accept: Vec<AcceptOut>,
}

#[derive(Serialize)]
struct PinnedOut {
    node: String,
    addresses: FlowSeq<Vec<String>>,
}

#[derive(Serialize)]
struct AcceptOut {
    peer: String,
    prefixes: FlowSeq<Vec<String>>,
}

#[derive(Serialize)]
struct ManagerOut<'a> {
    key: &'a str,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<FlowSeq<[String; 2]>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    addresses: Vec<PinnedOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address_ranges: Option<FlowSeq<Vec<String>>>,
    rule_expiry: String,
    setup_timeout: String,
    heartbeat: String,
    weight: &'static str,
    min_hops: u8,
    max_hops: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<MetricsOut>,
}

#[derive(Serialize)]
struct SocksOut<'a> {
    client: SocksClientOut<'a>,
    exit: SocksExitOut<'a>,
}

#[derive(Serialize)]
struct SocksClientOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<String>,
    exit_port: u16,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_file: Option<&'a str>,
    connections: usize,
    half_open: usize,
    negotiation_timeout: String,
    dial_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_socket: Option<&'a str>,
}

#[derive(Serialize)]
struct SocksExitOut<'a> {
    port: u16,
    public: bool,
    clients: Vec<String>,
    allow: Vec<String>,
    deny_ports: FlowSeq<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh_ranges: Option<FlowSeq<Vec<String>>>,
    streams: usize,
    streams_per_client: usize,
    rate_per_client: usize,
    half_open: usize,
    dial_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_socket: Option<&'a str>,
}

impl<'a> SocksOut<'a> {
    fn of(socks: &'a SocksConfig) -> Result<Self, WriteError> {
        Ok(Self {
            client: SocksClientOut::of(&socks.client)?,
            exit: SocksExitOut::of(&socks.exit)?,
        })
    }
}

impl<'a> SocksClientOut<'a> {
    fn of(client: &'a SocksClientConfig) -> Result<Self, WriteError> {
        let (username, password_file) = match &client.auth {
            Some((user, file)) => (
                Some(user.as_str()),
                Some(path_text("socks.client.password_file", file)?),
            ),
            None => (None, None),
        };
        Ok(Self {
            exit: client.exit.as_ref().map(ToString::to_string),
            exit_port: client.exit_port,
            listen: client.listen.to_string(),
            username,
            password_file,
            connections: client.connections,
            half_open: client.half_open,
            negotiation_timeout: duration_text(
                "socks.client.negotiation_timeout",
                client.negotiation_timeout,
            )?,
            dial_timeout: duration_text("socks.client.dial_timeout", client.dial_timeout)?,
            app_socket: client
                .app_socket
                .as_deref()
                .map(|p| path_text("socks.client.app_socket", p))
                .transpose()?,
        })
    }
}

impl<'a> SocksExitOut<'a> {
    fn of(exit: &'a SocksExitConfig) -> Result<Self, WriteError> {
        Ok(Self {
            port: exit.port,
            public: exit.public,
            clients: strings(&exit.clients),
            allow: strings(&exit.allow),
            deny_ports: FlowSeq(exit.deny_ports.clone()),
            mesh_ranges: exit.mesh_ranges.as_deref().map(|r| FlowSeq(strings(r))),
            streams: exit.streams,
            streams_per_client: exit.streams_per_client,
            rate_per_client: exit.rate_per_client,
            half_open: exit.half_open,
            dial_timeout: duration_text("socks.exit.dial_timeout", exit.dial_timeout)?,
            app_socket: exit
                .app_socket
                .as_deref()
                .map(|p| path_text("socks.exit.app_socket", p))
                .transpose()?,
        })
    }
}

#[derive(Serialize)]
struct VpnOut<'a> {
    exit: VpnExitOut<'a>,
    client: VpnClientOut<'a>,
}

#[derive(Serialize)]
struct PoolOut {
    ipv4: String,
    ipv6: String,
}

#[derive(Serialize)]
struct VpnExitOut<'a> {
    port: u16,
    public: bool,
    clients: Vec<String>,
    pool: PoolOut,
    allow_lan: FlowSeq<Vec<String>>,
    allow_clients: bool,
    dns: FlowSeq<Vec<String>>,
    uplinks: FlowSeq<Vec<&'a str>>,
    lease_grace: String,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_socket: Option<&'a str>,
}

#[derive(Serialize)]
struct VpnClientOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<String>,
    exit_port: u16,
    lockdown: bool,
    allow_lan: bool,
    lan_ranges: FlowSeq<Vec<String>>,
    dns: bool,
    table: u32,
    priority: u32,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_socket: Option<&'a str>,
}

impl<'a> VpnOut<'a> {
    fn of(vpn: &'a VpnConfig) -> Result<Self, WriteError> {
        Ok(Self {
            exit: VpnExitOut::of(&vpn.exit)?,
            client: VpnClientOut::of(&vpn.client)?,
        })
    }
}

impl<'a> VpnExitOut<'a> {
    fn of(exit: &'a VpnExitConfig) -> Result<Self, WriteError> {
        Ok(Self {
            port: exit.port,
            public: exit.public,
            clients: strings(&exit.clients),
            pool: PoolOut {
                ipv4: exit.pool_ipv4.to_string(),
                ipv6: exit.pool_ipv6.to_string(),
            },
            allow_lan: FlowSeq(strings(&exit.allow_lan)),
            allow_clients: exit.allow_clients,
            dns: FlowSeq(strings(&exit.dns)),
            uplinks: FlowSeq(exit.uplinks.iter().map(String::as_str).collect()),
            lease_grace: duration_text("vpn.exit.lease_grace", exit.lease_grace)?,
            state: path_text("vpn.exit.state", &exit.state)?,
            app_socket: exit
                .app_socket
                .as_deref()
                .map(|p| path_text("vpn.exit.app_socket", p))
                .transpose()?,
        })
    }
}

impl<'a> VpnClientOut<'a> {
    fn of(client: &'a VpnClientConfig) -> Result<Self, WriteError> {
        Ok(Self {
            exit: client.exit.as_ref().map(ToString::to_string),
            exit_port: client.exit_port,
            lockdown: client.lockdown,
            allow_lan: client.allow_lan,
            lan_ranges: FlowSeq(strings(&client.lan_ranges)),
            dns: client.dns,
            table: client.table,
            priority: client.priority,
            state: path_text("vpn.client.state", &client.state)?,
            app_socket: client
                .app_socket
                .as_deref()
                .map(|p| path_text("vpn.client.app_socket", p))
                .transpose()?,
        })
    }
}

impl<'a> NodeOut<'a> {
    fn of(node: &'a NodeSection) -> Result<Self, WriteError> {
        let routes = node
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let keepalive = route
                    .persistent_keepalive
                    .map(|d| duration_text(&format!("node.routes[{i}].persistent_keepalive"), d))
                    .transpose()?;
                Ok(RouteOut {
                    name: &route.name,
                    peer: route.peer.to_string(),
                    prefixes: FlowSeq(strings(&route.prefixes)),
                    first_hop: route.first_hop.to_string(),
                    out_id: route.out_id.get(),
                    in_id: route.in_id.get(),
                    peer_in_id: (route.peer_in_id != route.out_id)
                        .then_some(route.peer_in_id.get()),
                    prev_hop: route.prev_hop.to_string(),
                    persistent_keepalive: keepalive,
                })
            })
            .collect::<Result<_, WriteError>>()?;
        Ok(Self {
            key: path_text("node.key", &node.key)?,
            listen: node.listen.to_string(),
            control_socket: path_text("node.control_socket", &node.control_socket)?,
            state_dir: path_text("node.state_dir", &node.state_dir)?,
            offload: node.offload,
            fwmark: node.fwmark.map(FwmarkValue::text),
            tun: node.tun.as_ref().map(|tun| TunOut {
                name: &tun.name,
                addresses: FlowSeq(strings(&tun.addresses)),
                mtu: tun.mtu,
            }),
            routes,
            relays: node
                .relays
                .iter()
                .map(|relay| RelayOut {
                    in_id: relay.in_id.get(),
                    prev_hop: relay.prev_hop.to_string(),
                    out_id: relay.out_id.get(),
                    next_hop: relay.next_hop.to_string(),
                })
                .collect(),
            apps: AppsOut::of(&node.apps)?,
            metrics: node.metrics.map(|m| MetricsOut {
                listen: m.listen.to_string(),
                per_route: Some(m.per_route),
            }),
            manager: node.manager.as_ref().map(|link| LinkOut {
                address: link.address.to_string(),
                key: link.key.to_string(),
                endpoint: link.endpoint.to_string(),
                accept: link
                    .accept
                    .iter()
                    .map(|rule| AcceptOut {
                        peer: rule
                            .peer
                            .map_or_else(|| "any".to_owned(), |k| k.to_string()),
                        prefixes: FlowSeq(strings(&rule.prefixes)),
                    })
                    .collect(),
            }),
        })
    }
}

impl<'a> AppsOut<'a> {
    fn of(apps: &'a NodeApps) -> Result<Self, WriteError> {
        let stack = &apps.stack;
        Ok(Self {
            socket: apps
                .socket
                .as_deref()
                .map(|p| path_text("node.apps.socket", p))
                .transpose()?,
            group: apps.group.as_ref().map(ToString::to_string),
            users: (!apps.users.is_empty()).then(|| FlowSeq(strings(&apps.users))),
            streams: stack.max_streams,
            streams_per_peer: stack.max_streams_per_peer,
            streams_per_app: stack.max_streams_per_app,
            half_open: stack.max_half_open,
            listeners: stack.max_listeners,
            idle_timeout: duration_text("node.apps.idle_timeout", stack.idle_timeout)?,
            take_timeout: duration_text("node.apps.take_timeout", stack.take_timeout)?,
            buffer: stack.buffer,
            memory: stack.memory,
        })
    }
}

impl<'a> ManagerOut<'a> {
    fn of(manager: &'a ManagerSection) -> Result<Self, WriteError> {
        Ok(Self {
            key: path_text("manager.key", &manager.key)?,
            listen: manager.listen.to_string(),
            allow: manager.allow.as_deref().map(strings),
            links: manager
                .links
                .iter()
                .map(|[a, b]| FlowSeq([a.to_string(), b.to_string()]))
                .collect(),
            addresses: manager
                .addresses
                .iter()
                .map(|(node, addresses)| PinnedOut {
                    node: node.to_string(),
                    addresses: FlowSeq(strings(addresses)),
                })
                .collect(),
            address_ranges: manager
                .address_ranges
                .as_deref()
                .map(|r| FlowSeq(strings(r))),
            rule_expiry: duration_text("manager.rule_expiry", manager.rule_expiry)?,
            setup_timeout: duration_text("manager.setup_timeout", manager.setup_timeout)?,
            heartbeat: duration_text("manager.heartbeat", manager.heartbeat)?,
            weight: manager.weight.as_str(),
            min_hops: manager.min_hops,
            max_hops: manager.max_hops,
            metrics: manager.metrics.map(|listen| MetricsOut {
                listen: listen.to_string(),
                per_route: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests;
