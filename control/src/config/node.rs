//! The `node:` section: the node's identity, its transport, its TUN device, the routes it is
//! an end of and the relay rules it holds. Statically configured, like a WireGuard config:
//! everything the engine needs except the private key, which [`NodeConfig::setup`] loads.
//!
//! | key | type | default |
//! |---|---|---|
//! | `key` | path of the private key file | [`DEFAULT_NODE_KEY`] |
//! | `listen` | `IP:PORT`, the UDP transport | [`DEFAULT_LISTEN`] |
//! | `control_socket` | path of the Unix control socket | [`DEFAULT_CONTROL_SOCKET`] |
//! | `state_dir` | folder of the node's state files (the routes and links it owns: `crate::node::state`) | [`DEFAULT_STATE_DIR`] |
//! | `tun` | `{name, addresses, mtu}` | none: a relay-only node |
//! | `routes` | list of routes (below) | `[]` |
//! | `relays` | list of `{in_id, prev_hop, out_id, next_hop}` | `[]` |
//! | `offload` | bool: TUN TSO/GRO and UDP GSO/GRO (each falls back by itself when the kernel refuses) | `true` |
//! | `fwmark` | `off`, `MARK` or `MARK/MASK`: the firewall mark on the node's transport packets, so a VPN client's policy routing lets them bypass the tunnel (needs root or `CAP_NET_ADMIN`) | `0x736b0000/0xffff0000` with a `tun`, else `off` |
//! | `manager` | `{address, key, endpoint, accept}`, the node's manager ([`ManagerLink`]) | none: a statically configured node |
//! | `apps` | the app socket and the limits of apps' streams ([`NodeApps`], see `app_socket.rs`) | the defaults there |
//! | `metrics` | `{listen, per_route}`: Prometheus metrics on `GET /metrics` ([`MetricsConfig`]) | none: no metrics |
//!
//! In `tun`, `name` and `addresses` are required and `mtu` defaults to [`DEFAULT_MTU`]. A
//! route is `{name, peer, prefixes, first_hop, out_id, in_id, peer_in_id, prev_hop,
//! persistent_keepalive}`, every key but `peer_in_id` and `persistent_keepalive` required;
//! in a relay rule every key is. `peer_in_id` is the id the route's packets carry when they
//! reach the peer (the peer's `in_id`); with `in_id` it binds the route's handshakes to the
//! route (`docs/PROTOCOL.md` §5.2), so it must be the peer's `in_id` exactly. It defaults to
//! `out_id`, which is right when `first_hop` is the peer itself; a route through relays
//! must set it, or its handshakes fail (`bad handshake` at the responder).
//! An absent `tun`, `routes` or `relays`, or one written with no value, is none. In
//! `manager`, `address` and `key` are required; `endpoint` defaults to `listen`; `accept`
//! ([`AcceptRule`]s: `{peer, prefixes}`, `peer` a key or `any`) lists who may set up a
//! route to this node through the manager, and defaults to nobody: a node accepts the
//! route ends it asked for, and only those, unless its operator says more. A rule without
//! `prefixes` lets its peer have route ends that carry app streams only (no TUN traffic).
//!
//! Checks across values, after parsing (each error names the key and its line; a clash
//! names both values):
//!
//! - a TUN device has at least one address, and an MTU of at least 1280 if one is IPv6;
//! - a route with prefixes needs a TUN device (it delivers to it); one without carries app
//!   streams only;
//! - route names are unique; an incoming route id (`in_id`) is unique among all routes and
//!   relay rules of the node (it is the key of the node's forwarding table);
//! - no two routes send the same prefix (same network and length; overlapping prefixes of
//!   different lengths are fine, the longest match wins);
//! - a route's peer is not the node itself: checked by [`NodeConfig::setup`], which has the
//!   private key;
//! - a node with a manager has no static routes (the manager installs its routes), and an
//!   `endpoint` unless `listen` is an address other nodes can send to (a specific IP and a
//!   port other than 0).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{Fwmark, NodeSetup, RelaySetup, RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::wire::RouteId;

pub(super) use app_socket::SystemAccounts;
pub use app_socket::{AppsConfig, DEFAULT_APP_SOCKET, NodeApps, derive_app_socket};

use super::error::{ConfigError, Problem};
use super::metrics::{MetricsConfig, RawNodeMetrics};
use super::paths::PathText;
use super::values::{
    DurationValue, HopAddr, InterfaceName, ListenAddr, MIN_IPV6_MTU, ManagerAddr, Mtu, PeerValue,
    PrefixValue, PublicKeyValue, RouteIdValue, RouteName,
};
use super::yaml::{KeyPath, Locator};

/// Where a node's private key lives when the config does not say.
pub const DEFAULT_NODE_KEY: &str = "/etc/skywire/node.key";

/// The UDP transport address when the config does not say: every address, port 6000 (the
/// original's node transports start at port 6000).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6000));

/// The node's control socket when the config does not say. The daemon creates it 0600 in a
/// 0700 directory.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/skywire/node.sock";

/// The default of `node.state_dir`: systemd's `StateDirectory=skywire`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/skywire";

/// The TUN device's MTU when the config does not say: WireGuard's, which leaves room for
/// the route overhead and the transport's headers inside a 1500-byte path.
pub const DEFAULT_MTU: u16 = 1420;

/// The longest Unix socket path: `sun_path` is 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

mod app_socket;

/// The `node:` section.
///
/// `key` is a plain field; the rest is read through methods, because it was checked as a
/// whole (unique ids, a TUN device for the routes) and must not change piecemeal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// `node.key`: the node's private key file (see [`crate::keyfile`]), resolved against the
    /// config file's folder. Default [`DEFAULT_NODE_KEY`].
    pub key: PathBuf,
    listen: SocketAddr,
    control_socket: PathBuf,
    state_dir: PathBuf,
    tun: Option<TunSetup>,
    routes: Vec<RouteSetup>,
    relays: Vec<RelaySetup>,
    offload: bool,
    fwmark: Option<Fwmark>,
    manager: Option<ManagerLink>,
    apps: NodeApps,
    metrics: Option<MetricsConfig>,
}

/// `node.manager.accept[i]`: a node (or any node) that may set up a route to this one
/// through the manager, and the addresses it may use on that route.
///
/// The manager installs the destination's end of a route nobody at the destination asked
/// for; this is the destination's consent. A route end from the manager whose peer and
/// prefixes no rule allows is refused, and a peer may send only from its end's prefixes
/// (the engine drops other inner sources), so a rule bounds what that peer can do here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcceptRule {
    /// `peer`: the node's public key, or `None` for `any`.
    pub peer: Option<PublicKey>,
    /// `prefixes`: every prefix of the route end must lie inside one of these (they are
    /// the addresses the peer may send from, and that this node's traffic to them goes to).
    pub prefixes: Vec<Prefix>,
}

impl AcceptRule {
    /// Whether this rule lets `peer` have a route end here with `prefixes`.
    pub fn allows(&self, peer: &PublicKey, prefixes: &[Prefix]) -> bool {
        self.peer.is_none_or(|k| k == *peer)
            && prefixes.iter().all(|p| {
                self.prefixes
                    .iter()
                    .any(|q| q.len() <= p.len() && q.contains(p.network()))
            })
    }
}

/// `node.manager`: how a node reaches its manager, what it tells the manager about
/// itself, and which routes it lets the manager set up to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManagerLink {
    /// `address`: the manager's TCP address, a specific IP and a port other than 0.
    pub address: SocketAddr,
    /// `key`: the manager's static public key, which the manager proves it holds
    /// (`skywire pubkey --config manager.yaml` prints it).
    pub key: PublicKey,
    /// `endpoint`: the transport address other nodes send this node's packets to. Written
    /// or, when left out, `node.listen`; either way a specific IP and a port other than 0.
    pub endpoint: SocketAddr,
    /// `accept`: who may set up a route to this node (empty: nobody but the routes it asks
    /// for itself).
    pub accept: Vec<AcceptRule>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            key: PathBuf::from(DEFAULT_NODE_KEY),
            listen: DEFAULT_LISTEN,
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            tun: None,
            routes: Vec::new(),
            relays: Vec::new(),
            offload: true,
            fwmark: None,
            manager: None,
            apps: NodeApps::default(),
            metrics: None,
        }
    }
}

impl NodeConfig {
    /// `node.listen`: the UDP transport address to bind. Default [`DEFAULT_LISTEN`].
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `node.control_socket`: the Unix socket of the node's control interface, resolved
    /// against the config file's folder. Default [`DEFAULT_CONTROL_SOCKET`].
    pub fn control_socket(&self) -> &Path {
        &self.control_socket
    }

    /// `node.state_dir`: the folder of the node's state files, resolved against the config
    /// file's folder. Default [`DEFAULT_STATE_DIR`].
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `node.tun`: the TUN device; `None` for a relay-only node.
    pub fn tun(&self) -> Option<&TunSetup> {
        self.tun.as_ref()
    }

    /// `node.routes`: the routes this node is an end of, in the order of the file.
    pub fn routes(&self) -> &[RouteSetup] {
        &self.routes
    }

    /// `node.relays`: the forwarding rules this node holds as a relay, in the order of the
    /// file.
    pub fn relays(&self) -> &[RelaySetup] {
        &self.relays
    }

    /// `node.offload`: use the kernel's batching offloads (TUN super-packets, UDP GSO and
    /// GRO). Default `true`; `false` moves one packet per system call, for comparison or
    /// for a kernel whose offloads misbehave.
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// `node.fwmark`: the firewall mark on the node's transport socket. Default
    /// [`Fwmark::DEFAULT`] for a node with a TUN device (whose host may run a VPN client),
    /// none for a relay-only node; `off` is none.
    pub fn fwmark(&self) -> Option<Fwmark> {
        self.fwmark
    }

    /// `node.manager`: the manager this node registers with and takes its routes from;
    /// `None` for a statically configured node.
    pub fn manager(&self) -> Option<&ManagerLink> {
        self.manager.as_ref()
    }

    /// `node.apps`: the app socket and the limits of apps' streams, names not looked up
    /// (see [`crate::config::Config::apps_config`]).
    pub fn apps(&self) -> &NodeApps {
        &self.apps
    }

    /// `node.metrics`: where the node serves its Prometheus metrics; `None` (the default)
    /// for none.
    pub fn metrics(&self) -> Option<MetricsConfig> {
        self.metrics
    }

    /// The app socket's path: `node.apps.socket`, or the one derived from
    /// [`Self::control_socket`] ([`derive_app_socket`]).
    pub fn app_socket(&self) -> PathBuf {
        self.apps.socket_path(&self.control_socket)
    }

    /// What the app socket's server needs, names in `node.apps.users` and `node.apps.group`
    /// looked up in `book`.
    pub(super) fn apps_config(
        &self,
        book: &dyn app_socket::AccountBook,
        at: &Locator<'_>,
    ) -> Result<AppsConfig, ConfigError> {
        self.apps.resolve_accounts(&self.control_socket, book, at)
    }

    /// The engine's setup: this section with the private key loaded from [`Self::key`].
    ///
    /// Fails, naming `node.key`, when the key file cannot be used (its error is the
    /// source), and, naming the route's `peer`, when a route leads to this node itself.
    pub(super) fn setup(&self, at: &Locator<'_>) -> Result<NodeSetup, ConfigError> {
        let node = KeyPath::top("node");
        let private_key = super::load_key(&self.key, &node.key("key"), at)?;
        let own = private_key.public_key();
        if let Some(i) = self.routes.iter().position(|route| route.peer == own) {
            let peer = node.key("routes").index(i).key("peer");
            return Err(at.invalid(&peer, Problem::PeerIsSelf));
        }
        Ok(NodeSetup {
            private_key,
            listen: self.listen,
            tun: self.tun.clone(),
            routes: self.routes.clone(),
            relays: self.relays.clone(),
            offload: self.offload,
            stack: self.apps.stack,
            fwmark: self.fwmark,
            peers: Vec::new(),
        })
    }
}

/// `node.fwmark` as written: `off`, `MARK` or `MARK/MASK` (decimal, or hex with `0x`); a
/// mark without a mask is compared whole. The mark is not 0 (unmarked) and lies inside its
/// mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct FwmarkValue(pub(super) Option<Fwmark>);

impl TryFrom<String> for FwmarkValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        fn number(text: &str) -> Option<u32> {
            match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()
                }
                Some(_) => None,
                None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                    text.parse().ok()
                }
                None => None,
            }
        }
        let text = text.trim();
        if text == "off" {
            return Ok(Self(None));
        }
        let (mark, mask) = match text.split_once('/') {
            Some((mark, mask)) => (number(mark), number(mask)),
            None => (number(text), Some(u32::MAX)),
        };
        match (mark, mask) {
            (Some(mark), Some(mask)) if mark != 0 && mark & !mask == 0 => {
                Ok(Self(Some(Fwmark { mark, mask })))
            }
            _ => Err(Problem::NotAFwmark),
        }
    }
}

impl FwmarkValue {
    /// How the writer spells `fwmark` (`off` for none).
    pub(super) fn text(fwmark: Option<Fwmark>) -> String {
        fwmark.map_or_else(|| "off".to_owned(), |f| f.to_string())
    }
}

/// `node:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    key: Option<PathText>,
    listen: Option<ListenAddr>,
    control_socket: Option<PathText>,
    state_dir: Option<PathText>,
    tun: Option<RawTun>,
    routes: Option<Vec<RawRoute>>,
    relays: Option<Vec<RawRelay>>,
    offload: Option<bool>,
    fwmark: Option<FwmarkValue>,
    manager: Option<RawManagerLink>,
    apps: Option<app_socket::RawNodeApps>,
    metrics: Option<RawNodeMetrics>,
}

/// `node.manager` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagerLink {
    address: ManagerAddr,
    key: PublicKeyValue,
    endpoint: Option<HopAddr>,
    accept: Option<Vec<RawAccept>>,
}

/// `node.manager.accept[i]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccept {
    peer: PeerValue,
    #[serde(default)]
    prefixes: Vec<PrefixValue>,
}

/// `node.tun` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTun {
    name: InterfaceName,
    addresses: Vec<PrefixValue>,
    mtu: Option<Mtu>,
}

/// `node.routes[i]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: RouteName,
    peer: PublicKeyValue,
    #[serde(default)]
    prefixes: Vec<PrefixValue>,
    first_hop: HopAddr,
    out_id: RouteIdValue,
    in_id: RouteIdValue,
    peer_in_id: Option<RouteIdValue>,
    prev_hop: HopAddr,
    persistent_keepalive: Option<DurationValue>,
}

/// `node.relays[i]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    in_id: RouteIdValue,
    prev_hop: HopAddr,
    out_id: RouteIdValue,
    next_hop: HopAddr,
}

impl RawNode {
    /// The typed section, relative paths resolved against `base`, after the checks across
    /// values (see the module docs); the first failing check is the error.
    pub(super) fn resolve(self, base: &Path, at: &Locator<'_>) -> Result<NodeConfig, ConfigError> {
        let node = KeyPath::top("node");
        let defaults = NodeConfig::default();

        let control_socket = self
            .control_socket
            .map_or(defaults.control_socket, |path| path.resolve(base));
        if control_socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(at.invalid(&node.key("control_socket"), Problem::SocketPathTooLong));
        }

        let tun = self.tun.map(|raw| TunSetup {
            name: raw.name.0,
            addresses: raw.addresses.into_iter().map(|p| p.0).collect(),
            mtu: raw.mtu.map_or(DEFAULT_MTU, |mtu| mtu.0),
        });
        if let Some(tun) = &tun {
            let path = node.key("tun");
            if tun.addresses.is_empty() {
                return Err(at.invalid(&path.key("addresses"), Problem::TunWithoutAddresses));
            }
            let has_ipv6 = tun.addresses.iter().any(|a| a.addr().is_ipv6());
            if has_ipv6 && tun.mtu < MIN_IPV6_MTU {
                return Err(at.invalid(&path.key("mtu"), Problem::MtuTooSmallForIpv6));
            }
        }

        let routes: Vec<RouteSetup> = self
            .routes
            .unwrap_or_default()
            .into_iter()
            .map(|raw| RouteSetup {
                name: raw.name.0,
                peer: raw.peer.0,
                prefixes: raw.prefixes.into_iter().map(|p| p.0).collect(),
                first_hop: raw.first_hop.0,
                out_id: raw.out_id.0,
                in_id: raw.in_id.0,
                // Without relays the first hop is the peer, which receives with `out_id`.
                peer_in_id: raw.peer_in_id.map_or(raw.out_id.0, |id| id.0),
                prev_hop: raw.prev_hop.0,
                persistent_keepalive: raw.persistent_keepalive.map(|d| d.0),
            })
            .collect();
        let relays: Vec<RelaySetup> = self
            .relays
            .unwrap_or_default()
            .into_iter()
            .map(|raw| RelaySetup {
                in_id: raw.in_id.0,
                prev_hop: raw.prev_hop.0,
                out_id: raw.out_id.0,
                next_hop: raw.next_hop.0,
            })
            .collect();
        let listen = self.listen.map_or(defaults.listen, |listen| listen.0);
        let manager = match self.manager {
            None => None,
            Some(raw) => {
                let path = node.key("manager");
                // `listen` is a valid endpoint only when another node can send to it.
                let sendable = !listen.ip().is_unspecified() && listen.port() != 0;
                let endpoint = match raw.endpoint {
                    Some(endpoint) => endpoint.0,
                    None if sendable => listen,
                    None => {
                        let endpoint = path.key("endpoint");
                        return Err(at.invalid(&endpoint, Problem::ManagerEndpointRequired));
                    }
                };
                let mut accept = Vec::new();
                for rule in raw.accept.unwrap_or_default() {
                    accept.push(AcceptRule {
                        peer: rule.peer.0,
                        prefixes: rule.prefixes.into_iter().map(|p| p.0).collect(),
                    });
                }
                Some(ManagerLink {
                    address: raw.address.0,
                    key: raw.key.0,
                    endpoint,
                    accept,
                })
            }
        };
        if tun.is_none()
            && let Some(i) = routes.iter().position(|r| !r.prefixes.is_empty())
        {
            let prefixes = node.key("routes").index(i).key("prefixes");
            return Err(at.invalid(&prefixes, Problem::RoutesWithoutTun));
        }
        check_unique(&node, &routes, &relays, at)?;
        let fwmark = match self.fwmark {
            Some(value) => value.0,
            None => tun.as_ref().map(|_| Fwmark::DEFAULT),
        };
        let apps = self
            .apps
            .unwrap_or_default()
            .resolve(base, &control_socket, at)?;

        Ok(NodeConfig {
            key: self.key.map_or(defaults.key, |key| key.resolve(base)),
            listen,
            control_socket,
            state_dir: self
                .state_dir
                .map_or(defaults.state_dir, |path| path.resolve(base)),
            tun,
            routes,
            relays,
            offload: self.offload.unwrap_or(defaults.offload),
            fwmark,
            manager,
            apps,
            metrics: self.metrics.map(MetricsConfig::from),
        })
    }
}

/// Route names, incoming route ids and prefixes are each used once; a repeat is reported
/// at the later value, naming the earlier one.
fn check_unique(
    node: &KeyPath,
    routes: &[RouteSetup],
    relays: &[RelaySetup],
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    let mut names: HashMap<&str, KeyPath> = HashMap::new();
    let mut in_ids: HashMap<RouteId, KeyPath> = HashMap::new();
    // A prefix by its network and length: `10.0.0.1/24` and `10.0.0.0/24` are the same.
    let mut prefixes: HashMap<(IpAddr, u8), (usize, KeyPath)> = HashMap::new();

    for (i, route) in routes.iter().enumerate() {
        let path = node.key("routes").index(i);
        let name = path.key("name");
        if let Some(first) = names.get(route.name.as_str()) {
            return Err(at.conflict(&name, first, Problem::DuplicateRouteName));
        }
        names.insert(&route.name, name);

        let in_id = path.key("in_id");
        if let Some(first) = in_ids.get(&route.in_id) {
            return Err(at.conflict(&in_id, first, Problem::DuplicateIncomingId));
        }
        in_ids.insert(route.in_id, in_id);

        for (j, prefix) in route.prefixes.iter().enumerate() {
            let this = path.key("prefixes").index(j);
            match prefixes.get(&(prefix.network(), prefix.len())) {
                // Repeating a prefix within one route changes nothing.
                Some((owner, _)) if *owner == i => {}
                Some((_, first)) => {
                    return Err(at.conflict(&this, first, Problem::DuplicatePrefix));
                }
                None => {
                    prefixes.insert((prefix.network(), prefix.len()), (i, this));
                }
            }
        }
    }

    for (i, relay) in relays.iter().enumerate() {
        let in_id = node.key("relays").index(i).key("in_id");
        if let Some(first) = in_ids.get(&relay.in_id) {
            return Err(at.conflict(&in_id, first, Problem::DuplicateIncomingId));
        }
        in_ids.insert(relay.in_id, in_id);
        if relay.prev_hop == relay.next_hop {
            let next_hop = node.key("relays").index(i).key("next_hop");
            return Err(at.invalid(&next_hop, Problem::RelayLoop));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
