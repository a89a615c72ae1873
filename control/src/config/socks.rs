//! The `socks:` section: the SOCKS client app (`socks.client`, a SOCKS5 server on this
//! machine that carries connections over the mesh) and the SOCKS exit app (`socks.exit`,
//! which dials the destinations for its clients). See `control/src/apps/socks/`.
//!
//! `socks.client`:
//!
//! | key | type | default |
//! |---|---|---|
//! | `exit` | the exit node's public key | none: `--exit` must say |
//! | `exit_port` | the exit app's port on that node | 1080 |
//! | `listen` | `IP:PORT` of the SOCKS5 server | `127.0.0.1:1080` |
//! | `username`, `password_file` | RFC 1929 credentials clients must give (the file holds the password; mode 0600) | none: no authentication |
//! | `connections` | connections served at once | 8192 |
//! | `half_open` | connections still negotiating or dialing | 512 |
//! | `negotiation_timeout` | for a client's greeting, credentials and request | 10s |
//! | `dial_timeout` | for the stream to the exit | 10s |
//! | `app_socket` | the node's app socket | `node.apps` of this file, else the default |
//!
//! `socks.exit`:
//!
//! | key | type | default |
//! |---|---|---|
//! | `port` | the port it listens on, on its node | 1080 |
//! | `public` | serve every node | `false` |
//! | `clients` | keys of the nodes it serves (when not public) | `[]`: none |
//! | `allow` | destinations allowed although private: `PREFIX:PORT` or `PREFIX:*` | `[]` |
//! | `deny_ports` | destination ports refused unless an `allow` entry names them | `[25]` |
//! | `mesh_ranges` | prefixes of the mesh, refused as destinations | this file's `node.tun` addresses and route prefixes |
//! | `streams` | connections at once | 8192 |
//! | `streams_per_client` | connections of one client key at once | 256 |
//! | `rate_per_client` | new connections per second of one client key (bursts of twice that) | 50 |
//! | `half_open` | connections still resolving or dialing | 512 |
//! | `dial_timeout` | for the name's resolution and the connection | 10s |
//! | `app_socket` | the node's app socket | as for the client |
//!
//! An `allow` entry ([`Exception`]) is `PREFIX:PORT` or `PREFIX:*`, an IPv6 prefix in
//! brackets (`198.18.0.0/15:8080`, `[2001:db8::/32]:443`); the prefix needs its length.
//! The exit's policy (`apps::socks::policy`) uses these types as they are.
//!
//! Checks: a client `listen` address other than loopback needs `username` and
//! `password_file` (an open SOCKS server on a LAN address is an open proxy into the mesh);
//! `username` and `password_file` go together; `public: true` with `clients` is an error
//! (one of them is a mistake). How long an idle connection lives is the node's
//! `node.apps.idle_timeout`: the node carries the bytes.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::{Prefix, PrefixError};

use super::error::{ConfigError, Problem};
use super::paths::PathText;
use super::values::{
    CountValue, DurationValue, ListenAddr, PortValue, PrefixValue, PublicKeyValue,
};
use super::yaml::{KeyPath, Locator};

/// Destination ports the exit refuses unless an exception names them: SMTP.
pub const DEFAULT_DENY_PORTS: [u16; 1] = [25];

/// Which ports an exception allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ports {
    /// `*`: every port but the denied ones (`Policy::deny_ports`).
    All,
    /// One port, even a denied one.
    One(u16),
}

/// Destinations allowed although the special ranges, the mesh or the exit's own addresses
/// would refuse them: `PREFIX:PORT` or `PREFIX:*`, IPv6 in brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exception {
    /// The addresses.
    pub prefix: Prefix,
    /// The ports.
    pub ports: Ports,
}

/// An exception could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionError {
    /// No `:PORT` or `:*` after the prefix.
    #[error("expected PREFIX:PORT or PREFIX:*, for example 198.18.0.0/15:8080")]
    MissingPort,
    /// An IPv6 prefix without brackets, or a `[` without its `]`.
    #[error("an IPv6 prefix goes in brackets, for example [2001:db8::/32]:443")]
    Brackets,
    /// The prefix does not parse.
    #[error("{0}")]
    Prefix(#[from] PrefixError),
    /// The port is not `*` or a number from 1 to 65535.
    #[error("the port must be * or 1-65535")]
    BadPort,
}

impl FromStr for Exception {
    type Err = ExceptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (prefix, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (prefix, after) = rest.split_once(']').ok_or(ExceptionError::Brackets)?;
                let port = after.strip_prefix(':').ok_or(ExceptionError::MissingPort)?;
                (prefix, port)
            }
            None => {
                let (prefix, port) = s.rsplit_once(':').ok_or(ExceptionError::MissingPort)?;
                if prefix.contains(':') {
                    return Err(ExceptionError::Brackets);
                }
                (prefix, port)
            }
        };
        let prefix: Prefix = prefix.parse()?;
        let ports = match port {
            "*" => Ports::All,
            // u16's FromStr takes a leading `+`; a port is digits only.
            text => match text.parse::<u16>() {
                Ok(port) if port != 0 && !text.starts_with('+') => Ports::One(port),
                _ => return Err(ExceptionError::BadPort),
            },
        };
        Ok(Self { prefix, ports })
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix.addr() {
            IpAddr::V4(_) => write!(f, "{}:", self.prefix)?,
            IpAddr::V6(_) => write!(f, "[{}]:", self.prefix)?,
        }
        match self.ports {
            Ports::All => f.write_str("*"),
            Ports::One(port) => write!(f, "{port}"),
        }
    }
}

/// The SOCKS port: the exit app's on its node, and the client's local listener.
pub const DEFAULT_SOCKS_PORT: u16 = 1080;

/// The client's listener when the config does not say: loopback only.
pub const DEFAULT_SOCKS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_SOCKS_PORT);

/// `socks.client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksClientConfig {
    /// The exit node's key.
    pub exit: Option<PublicKey>,
    /// The exit app's port on it.
    pub exit_port: u16,
    /// The SOCKS5 server's address.
    pub listen: SocketAddr,
    /// RFC 1929 username, and the file with the password.
    pub auth: Option<(String, PathBuf)>,
    /// Connections served at once.
    pub connections: usize,
    /// Connections negotiating or dialing at once.
    pub half_open: usize,
    /// For a client's greeting, credentials and request.
    pub negotiation_timeout: Duration,
    /// For the stream to the exit.
    pub dial_timeout: Duration,
    /// The node's app socket, when written.
    pub app_socket: Option<PathBuf>,
}

impl Default for SocksClientConfig {
    fn default() -> Self {
        Self {
            exit: None,
            exit_port: DEFAULT_SOCKS_PORT,
            listen: DEFAULT_SOCKS_LISTEN,
            auth: None,
            connections: 8192,
            half_open: 512,
            negotiation_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(10),
            app_socket: None,
        }
    }
}

/// `socks.exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksExitConfig {
    /// Its port on its node.
    pub port: u16,
    /// Serve every node.
    pub public: bool,
    /// The nodes it serves (when not public).
    pub clients: Vec<PublicKey>,
    /// Destinations allowed although private.
    pub allow: Vec<Exception>,
    /// Ports refused unless an `allow` entry names them.
    pub deny_ports: Vec<u16>,
    /// The mesh's prefixes, refused as destinations; `None`: from the node section.
    pub mesh_ranges: Option<Vec<Prefix>>,
    /// Connections at once.
    pub streams: usize,
    /// Connections of one client key at once.
    pub streams_per_client: usize,
    /// New connections per second of one client key.
    pub rate_per_client: usize,
    /// Connections resolving or dialing at once.
    pub half_open: usize,
    /// For the resolution and the connection.
    pub dial_timeout: Duration,
    /// The node's app socket, when written.
    pub app_socket: Option<PathBuf>,
}

impl Default for SocksExitConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_SOCKS_PORT,
            public: false,
            clients: Vec::new(),
            allow: Vec::new(),
            deny_ports: DEFAULT_DENY_PORTS.to_vec(),
            mesh_ranges: None,
            streams: 8192,
            streams_per_client: 256,
            rate_per_client: 50,
            half_open: 512,
            dial_timeout: Duration::from_secs(10),
            app_socket: None,
        }
    }
}

/// The `socks:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocksConfig {
    /// `socks.client`.
    pub client: SocksClientConfig,
    /// `socks.exit`.
    pub exit: SocksExitConfig,
}

/// An `allow` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct ExceptionValue(Exception);

impl TryFrom<String> for ExceptionValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse().map(Self).map_err(|_| Problem::NotAnException)
    }
}

/// A username: 1 to 255 bytes (RFC 1929), no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct UsernameValue(String);

impl TryFrom<String> for UsernameValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        if text.is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
            Err(Problem::NotAUsername)
        } else {
            Ok(Self(text))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSocks {
    client: Option<RawClient>,
    exit: Option<RawExit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    exit: Option<PublicKeyValue>,
    exit_port: Option<PortValue>,
    listen: Option<ListenAddr>,
    username: Option<UsernameValue>,
    password_file: Option<PathText>,
    connections: Option<CountValue>,
    half_open: Option<CountValue>,
    negotiation_timeout: Option<DurationValue>,
    dial_timeout: Option<DurationValue>,
    app_socket: Option<PathText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExit {
    port: Option<PortValue>,
    public: Option<bool>,
    clients: Option<Vec<PublicKeyValue>>,
    allow: Option<Vec<ExceptionValue>>,
    deny_ports: Option<Vec<PortValue>>,
    mesh_ranges: Option<Vec<PrefixValue>>,
    streams: Option<CountValue>,
    streams_per_client: Option<CountValue>,
    rate_per_client: Option<CountValue>,
    half_open: Option<CountValue>,
    dial_timeout: Option<DurationValue>,
    app_socket: Option<PathText>,
}

impl RawSocks {
    /// The typed section after its checks (module doc); paths resolved against `base`.
    pub(super) fn resolve(self, base: &Path, at: &Locator<'_>) -> Result<SocksConfig, ConfigError> {
        let client = self.client.unwrap_or_default().resolve(base, at)?;
        let exit = self.exit.unwrap_or_default().resolve(base, at)?;
        Ok(SocksConfig { client, exit })
    }
}

impl RawClient {
    fn resolve(self, base: &Path, at: &Locator<'_>) -> Result<SocksClientConfig, ConfigError> {
        let path = KeyPath::top("socks").key("client");
        let d = SocksClientConfig::default();
        let auth = match (self.username, self.password_file) {
            (Some(user), Some(file)) => Some((user.0, file.resolve(base))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(at.invalid(&path.key("username"), Problem::UsernameWithoutPassword));
            }
            (None, Some(_)) => {
                return Err(
                    at.invalid(&path.key("password_file"), Problem::UsernameWithoutPassword)
                );
            }
        };
        let listen = self.listen.map_or(d.listen, |l| l.0);
        if !listen.ip().is_loopback() && auth.is_none() {
            return Err(at.invalid(&path.key("listen"), Problem::SocksListenNeedsAuth));
        }
        Ok(SocksClientConfig {
            exit: self.exit.map(|k| k.0),
            exit_port: self.exit_port.map_or(d.exit_port, |p| p.0),
            listen,
            auth,
            connections: self.connections.map_or(d.connections, |c| c.0),
            half_open: self.half_open.map_or(d.half_open, |c| c.0),
            negotiation_timeout: self
                .negotiation_timeout
                .map_or(d.negotiation_timeout, |t| t.0),
            dial_timeout: self.dial_timeout.map_or(d.dial_timeout, |t| t.0),
            app_socket: self.app_socket.map(|p| p.resolve(base)),
        })
    }
}

impl RawExit {
    fn resolve(self, base: &Path, at: &Locator<'_>) -> Result<SocksExitConfig, ConfigError> {
        let path = KeyPath::top("socks").key("exit");
        let d = SocksExitConfig::default();
        let public = self.public.unwrap_or(false);
        let clients: Vec<PublicKey> = self
            .clients
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.0)
            .collect();
        if public && !clients.is_empty() {
            return Err(at.invalid(&path.key("clients"), Problem::PublicWithClients));
        }
        Ok(SocksExitConfig {
            port: self.port.map_or(d.port, |p| p.0),
            public,
            clients,
            allow: self
                .allow
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.0)
                .collect(),
            deny_ports: self.deny_ports.map_or(d.deny_ports, |ports| {
                ports.into_iter().map(|p| p.0).collect()
            }),
            mesh_ranges: self
                .mesh_ranges
                .map(|ranges| ranges.into_iter().map(|p| p.0).collect()),
            streams: self.streams.map_or(d.streams, |c| c.0),
            streams_per_client: self
                .streams_per_client
                .map_or(d.streams_per_client, |c| c.0),
            rate_per_client: self.rate_per_client.map_or(d.rate_per_client, |c| c.0),
            half_open: self.half_open.map_or(d.half_open, |c| c.0),
            dial_timeout: self.dial_timeout.map_or(d.dial_timeout, |t| t.0),
            app_socket: self.app_socket.map(|p| p.resolve(base)),
        })
    }
}
