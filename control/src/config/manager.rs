//! The `manager:` section: the node manager (`skywire manager`), which nodes reach over TCP
//! (their side is `node.manager`, see [`super::ManagerLink`]), prove their key to, and get
//! route rules from. This module only reads the settings; the manager itself lives
//! elsewhere.
//!
//! | key | type | default |
//! |---|---|---|
//! | `key` | path of the manager's private key file | [`DEFAULT_MANAGER_KEY`] |
//! | `listen` | `IP:PORT`, the TCP address nodes connect to | [`DEFAULT_MANAGER_LISTEN`] |
//! | `allow` | list of node public keys that may register | absent: any node that proves its key |
//! | `links` | list of `[KEY, KEY]`, links the manager may route over | `[]` |
//! | `addresses` | list of `{node: KEY, addresses: [HOST/32, ...]}`, TUN addresses pinned to a node | `[]` |
//! | `address_ranges` | list of prefixes the TUN addresses of nodes must lie in | absent: anywhere but special-purpose addresses |
//! | `rule_expiry` | duration, 3s to 1h | [`DEFAULT_RULE_EXPIRY`] |
//! | `setup_timeout` | duration, 100ms to 30s | [`DEFAULT_SETUP_TIMEOUT`] |
//! | `heartbeat` | duration, 100ms to 60s | [`DEFAULT_HEARTBEAT`] |
//! | `weight` | `hops` or `latency` ([`RouteWeight`]) | `hops` |
//! | `min_hops`, `max_hops` | 1 to [`MAX_HOPS`] | 1 and [`MAX_HOPS`] |
//! | `metrics` | `{listen}`: Prometheus metrics on `GET /metrics` (see `metrics.rs`) | none: no metrics |
//!
//! Durations are written as `persistent_keepalive` is (`500ms`, `2s`, `1m`, `1h`, or a plain
//! number of seconds). Checks across values, after parsing, each naming the key and its line:
//!
//! - `allow`, when written, lists at least one key (an empty list would lock every node
//!   out; leaving `allow` out is how to admit any node), and each key once;
//! - a link is exactly two keys, of two different nodes, and no two links join the same
//!   pair, in either order;
//! - `min_hops` is at most `max_hops`;
//! - a pinned address is a host address (`/32`, `/128`), pinned to one node only, inside
//!   `address_ranges` when those are written.
//!
//! How the manager uses `addresses` and `address_ranges` (`ManagerCore`'s registry): a
//! node may register only TUN addresses inside the ranges, none pinned to another node,
//! and only its pinned ones when it has any; an address registered once stays bound to
//! its node while the manager runs, also while that node is offline.

use core::time::Duration;
use std::collections::HashMap;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};

use super::error::{ConfigError, Problem};
use super::metrics::RawManagerMetrics;
use super::paths::PathText;
use super::values::{
    Heartbeat, HopCount, ListenAddr, MAX_HOPS, PrefixValue, PublicKeyValue, RuleExpiry,
    SetupTimeout,
};
use super::yaml::{self, KeyPath, Locator};
use crate::manager::core::Params;
use crate::manager::topology::RouteWeight;
use skywire_dataplane::route::Prefix;

/// Where the manager's private key lives when the config does not say (`skywire keygen
/// --out` creates one).
pub const DEFAULT_MANAGER_KEY: &str = "/etc/skywire/manager.key";

/// The manager's TCP address when the config does not say: loopback only, port 5999, so a
/// manager never listens on a network it was not told to.
pub const DEFAULT_MANAGER_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5999));

/// How long a node keeps a rule that is not kept alive, when the config does not say.
pub const DEFAULT_RULE_EXPIRY: Duration = Duration::from_secs(30);

/// How long a hop has to acknowledge a rule, when the config does not say.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a node sends a heartbeat, when the config does not say.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// How many heartbeat intervals a node may stay silent before the manager takes it for dead.
pub const HEARTBEATS_BEFORE_DEAD: u32 = 3;

/// The `manager:` section.
///
/// `key` is a plain field, like `node.key`; the rest is read through methods, because it
/// was checked as a whole (distinct links, `min_hops <= max_hops`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// `manager.key`: the manager's private key file (see [`crate::keyfile`]), resolved
    /// against the config file's folder. Default [`DEFAULT_MANAGER_KEY`].
    pub key: PathBuf,
    listen: SocketAddr,
    allow: Option<Vec<PublicKey>>,
    links: Vec<[PublicKey; 2]>,
    addresses: Vec<(PublicKey, Vec<Prefix>)>,
    address_ranges: Option<Vec<Prefix>>,
    rule_expiry: Duration,
    setup_timeout: Duration,
    heartbeat: Duration,
    weight: RouteWeight,
    min_hops: u8,
    max_hops: u8,
    metrics: Option<SocketAddr>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            key: PathBuf::from(DEFAULT_MANAGER_KEY),
            listen: DEFAULT_MANAGER_LISTEN,
            allow: None,
            links: Vec::new(),
            addresses: Vec::new(),
            address_ranges: None,
            rule_expiry: DEFAULT_RULE_EXPIRY,
            setup_timeout: DEFAULT_SETUP_TIMEOUT,
            heartbeat: DEFAULT_HEARTBEAT,
            weight: RouteWeight::Hops,
            min_hops: 1,
            max_hops: MAX_HOPS,
            metrics: None,
        }
    }
}

impl ManagerConfig {
    /// `manager.listen`: the TCP address to listen on for nodes. Default
    /// [`DEFAULT_MANAGER_LISTEN`]; port 0 lets the system pick one.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// `manager.allow`: the node keys that may register, in the order of the file, each
    /// once and at least one; `None` when any node that proves its key may.
    pub fn allow(&self) -> Option<&[PublicKey]> {
        self.allow.as_deref()
    }

    /// `manager.addresses`: TUN addresses pinned to nodes, in the order of the file.
    pub fn addresses(&self) -> &[(PublicKey, Vec<Prefix>)] {
        &self.addresses
    }

    /// `manager.address_ranges`: where the TUN addresses of nodes must lie; `None` when not
    /// written (anywhere but special-purpose addresses).
    pub fn address_ranges(&self) -> Option<&[Prefix]> {
        self.address_ranges.as_deref()
    }

    /// Whether the node with key `node` may register: it is in `manager.allow`, or there is
    /// no allow list.
    pub fn allows(&self, node: &PublicKey) -> bool {
        self.allow.as_ref().is_none_or(|allow| allow.contains(node))
    }

    /// `manager.links`: the links between nodes the manager may route over besides those
    /// the nodes report, as written (each of two different keys; no pair twice, in either
    /// order), in the order of the file.
    pub fn links(&self) -> &[[PublicKey; 2]] {
        &self.links
    }

    /// `manager.rule_expiry`: how long a node keeps a rule that is not kept alive. Default
    /// [`DEFAULT_RULE_EXPIRY`]; 3s to 1h.
    pub fn rule_expiry(&self) -> Duration {
        self.rule_expiry
    }

    /// `manager.setup_timeout`: how long a hop has to acknowledge a rule. Default
    /// [`DEFAULT_SETUP_TIMEOUT`]; 100ms to 30s.
    pub fn setup_timeout(&self) -> Duration {
        self.setup_timeout
    }

    /// `manager.heartbeat`: how often nodes send a heartbeat. Default [`DEFAULT_HEARTBEAT`];
    /// 100ms to 60s.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long a node may stay silent before it counts as dead:
    /// [`HEARTBEATS_BEFORE_DEAD`] heartbeat intervals.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat.saturating_mul(HEARTBEATS_BEFORE_DEAD)
    }

    /// `manager.weight`: the route metric. Default [`RouteWeight::Hops`].
    pub fn weight(&self) -> RouteWeight {
        self.weight
    }

    /// `manager.min_hops`: the fewest hops of a route added without constraints. Default 1;
    /// at most [`Self::max_hops`].
    pub fn min_hops(&self) -> u8 {
        self.min_hops
    }

    /// `manager.max_hops`: the most hops of a route added without constraints. Default and
    /// at most [`MAX_HOPS`].
    pub fn max_hops(&self) -> u8 {
        self.max_hops
    }

    /// `manager.metrics.listen`: where the manager serves its Prometheus metrics; `None`
    /// (the default) for none.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// What the manager's core runs with: this section, as the core's own [`Params`].
    pub fn params(&self) -> Params {
        Params {
            allow: self
                .allow
                .as_ref()
                .map(|keys| keys.iter().copied().collect()),
            links: self.links.iter().map(|[a, b]| (*a, *b)).collect(),
            pinned: self.addresses.clone(),
            address_ranges: self.address_ranges.clone(),
            listen_ip: Some(self.listen.ip()),
            rule_expiry: self.rule_expiry,
            setup_timeout: self.setup_timeout,
            heartbeat: self.heartbeat,
            weight: self.weight,
            min_hops: usize::from(self.min_hops),
            max_hops: usize::from(self.max_hops),
        }
    }

    /// The manager's private key, loaded from [`Self::key`]; an error names `manager.key`.
    pub(super) fn private_key(&self, at: &Locator<'_>) -> Result<PrivateKey, ConfigError> {
        super::load_key(&self.key, &KeyPath::top("manager").key("key"), at)
    }
}

/// `manager:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManager {
    key: Option<PathText>,
    listen: Option<ListenAddr>,
    // Written with no value is not the same as left out: it is an empty list, refused.
    #[serde(default, deserialize_with = "yaml::written")]
    allow: Option<Option<Vec<PublicKeyValue>>>,
    links: Option<Vec<Vec<PublicKeyValue>>>,
    addresses: Option<Vec<RawPinned>>,
    address_ranges: Option<Vec<PrefixValue>>,
    rule_expiry: Option<RuleExpiry>,
    setup_timeout: Option<SetupTimeout>,
    heartbeat: Option<Heartbeat>,
    weight: Option<WeightValue>,
    min_hops: Option<HopCount>,
    max_hops: Option<HopCount>,
    metrics: Option<RawManagerMetrics>,
}

/// `manager.addresses[i]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPinned {
    node: PublicKeyValue,
    addresses: Vec<PrefixValue>,
}

/// `manager.weight` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct WeightValue(RouteWeight);

impl TryFrom<String> for WeightValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse().map(Self).map_err(|_| Problem::NotARouteWeight)
    }
}

impl RawManager {
    /// The typed section, relative paths resolved against `base`, after the checks across
    /// values (see the module docs); the first failing check is the error.
    pub(super) fn resolve(
        self,
        base: &Path,
        at: &Locator<'_>,
    ) -> Result<ManagerConfig, ConfigError> {
        let manager = KeyPath::top("manager");
        let defaults = ManagerConfig::default();

        let allow = match self.allow {
            None => None,
            Some(keys) => {
                let keys: Vec<PublicKey> =
                    keys.unwrap_or_default().into_iter().map(|k| k.0).collect();
                check_allow(&manager.key("allow"), &keys, at)?;
                Some(keys)
            }
        };
        let links = check_links(&manager.key("links"), self.links.unwrap_or_default(), at)?;
        let address_ranges: Option<Vec<Prefix>> = self
            .address_ranges
            .map(|ranges| ranges.into_iter().map(|p| p.0).collect());
        let addresses = check_pinned(
            &manager.key("addresses"),
            self.addresses.unwrap_or_default(),
            address_ranges.as_deref(),
            at,
        )?;

        let min_hops = self.min_hops.map_or(defaults.min_hops, |hops| hops.0);
        let max_hops = self.max_hops.map_or(defaults.max_hops, |hops| hops.0);
        if min_hops > max_hops {
            return Err(at.invalid(&manager.key("max_hops"), Problem::MaxHopsBelowMinHops));
        }

        Ok(ManagerConfig {
            key: self.key.map_or(defaults.key, |key| key.resolve(base)),
            listen: self.listen.map_or(defaults.listen, |listen| listen.0),
            allow,
            links,
            addresses,
            address_ranges,
            rule_expiry: self.rule_expiry.map_or(defaults.rule_expiry, |d| d.0),
            setup_timeout: self.setup_timeout.map_or(defaults.setup_timeout, |d| d.0),
            heartbeat: self.heartbeat.map_or(defaults.heartbeat, |d| d.0),
            weight: self.weight.map_or(defaults.weight, |weight| weight.0),
            min_hops,
            max_hops,
            metrics: self.metrics.map(|m| m.listen.0),
        })
    }
}

/// An allow list names at least one key, and each once.
fn check_allow(path: &KeyPath, keys: &[PublicKey], at: &Locator<'_>) -> Result<(), ConfigError> {
    if keys.is_empty() {
        return Err(at.invalid(path, Problem::EmptyAllowList));
    }
    let mut seen: HashMap<&PublicKey, KeyPath> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let this = path.index(i);
        if let Some(first) = seen.get(key) {
            return Err(at.conflict(&this, first, Problem::DuplicateAllowedKey));
        }
        seen.insert(key, this);
    }
    Ok(())
}

/// Each link is two keys of two different nodes, and no pair is linked twice.
fn check_links(
    path: &KeyPath,
    raw: Vec<Vec<PublicKeyValue>>,
    at: &Locator<'_>,
) -> Result<Vec<[PublicKey; 2]>, ConfigError> {
    let mut links = Vec::with_capacity(raw.len());
    // A link by its two keys in order, so that [A, B] and [B, A] are the same.
    let mut seen: HashMap<(PublicKey, PublicKey), KeyPath> = HashMap::new();
    for (i, keys) in raw.into_iter().enumerate() {
        let this = path.index(i);
        let &[PublicKeyValue(a), PublicKeyValue(b)] = keys.as_slice() else {
            return Err(at.invalid(&this, Problem::LinkNotTwoKeys));
        };
        if a == b {
            return Err(at.invalid(&this, Problem::LinkToItself));
        }
        let pair = (a.min(b), a.max(b));
        if let Some(first) = seen.get(&pair) {
            return Err(at.conflict(&this, first, Problem::DuplicateLink));
        }
        seen.insert(pair, this);
        links.push([a, b]);
    }
    Ok(links)
}

#[cfg(test)]
mod tests;

/// `manager.addresses`, checked: host addresses, each pinned once, inside the ranges.
fn check_pinned(
    path: &KeyPath,
    raw: Vec<RawPinned>,
    ranges: Option<&[Prefix]>,
    at: &Locator<'_>,
) -> Result<Vec<(PublicKey, Vec<Prefix>)>, ConfigError> {
    let mut seen: HashMap<Prefix, usize> = HashMap::new();
    let mut pinned = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let mut addresses = Vec::with_capacity(entry.addresses.len());
        for (j, address) in entry.addresses.into_iter().enumerate() {
            let here = path.index(i).key("addresses").index(j);
            let address = address.0;
            let host = if address.addr().is_ipv4() { 32 } else { 128 };
            if address.len() != host {
                return Err(at.invalid(&here, Problem::PinnedAddressNotHost));
            }
            if ranges.is_some_and(|r| !r.iter().any(|q| q.contains(address.addr()))) {
                return Err(at.invalid(&here, Problem::PinnedAddressOutsideRanges));
            }
            if seen.insert(address, i).is_some() {
                return Err(at.invalid(&here, Problem::DuplicatePinnedAddress));
            }
            addresses.push(address);
        }
        pinned.push((entry.node.0, addresses));
    }
    Ok(pinned)
}
