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
//! | `rule_expiry` | duration, 3s to 1h | [`DEFAULT_RULE_EXPIRY`] |
//! | `setup_timeout` | duration, 100ms to 30s | [`DEFAULT_SETUP_TIMEOUT`] |
//! | `heartbeat` | duration, 100ms to 60s | [`DEFAULT_HEARTBEAT`] |
//! | `weight` | `hops` or `latency` ([`RouteWeight`]) | `hops` |
//! | `min_hops`, `max_hops` | 1 to [`MAX_HOPS`] | 1 and [`MAX_HOPS`] |
//!
//! Durations are written as `persistent_keepalive` is (`500ms`, `2s`, `1m`, `1h`, or a plain
//! number of seconds). Checks across values, after parsing, each naming the key and its line:
//!
//! - `allow`, when written, lists at least one key (an empty list would lock every node
//!   out; leaving `allow` out is how to admit any node), and each key once;
//! - a link is exactly two keys, of two different nodes, and no two links join the same
//!   pair, in either order;
//! - `min_hops` is at most `max_hops`.

use core::time::Duration;
use std::collections::HashMap;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};

use super::error::{ConfigError, Problem};
use super::paths::PathText;
use super::values::{
    Heartbeat, HopCount, ListenAddr, MAX_HOPS, PublicKeyValue, RuleExpiry, SetupTimeout,
};
use super::yaml::{self, KeyPath, Locator};
use crate::manager::core::Params;
use crate::manager::topology::RouteWeight;

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
    rule_expiry: Duration,
    setup_timeout: Duration,
    heartbeat: Duration,
    weight: RouteWeight,
    min_hops: u8,
    max_hops: u8,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            key: PathBuf::from(DEFAULT_MANAGER_KEY),
            listen: DEFAULT_MANAGER_LISTEN,
            allow: None,
            links: Vec::new(),
            rule_expiry: DEFAULT_RULE_EXPIRY,
            setup_timeout: DEFAULT_SETUP_TIMEOUT,
            heartbeat: DEFAULT_HEARTBEAT,
            weight: RouteWeight::Hops,
            min_hops: 1,
            max_hops: MAX_HOPS,
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

    /// What the manager's core runs with: this section, as the core's own [`Params`].
    pub fn params(&self) -> Params {
        Params {
            allow: self
                .allow
                .as_ref()
                .map(|keys| keys.iter().copied().collect()),
            links: self.links.iter().map(|[a, b]| (*a, *b)).collect(),
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
    rule_expiry: Option<RuleExpiry>,
    setup_timeout: Option<SetupTimeout>,
    heartbeat: Option<Heartbeat>,
    weight: Option<WeightValue>,
    min_hops: Option<HopCount>,
    max_hops: Option<HopCount>,
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
            rule_expiry: self.rule_expiry.map_or(defaults.rule_expiry, |d| d.0),
            setup_timeout: self.setup_timeout.map_or(defaults.setup_timeout, |d| d.0),
            heartbeat: self.heartbeat.map_or(defaults.heartbeat, |d| d.0),
            weight: self.weight.map_or(defaults.weight, |weight| weight.0),
            min_hops,
            max_hops,
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
mod tests {
    use super::*;
    use crate::config::tests::{Scratch, assert_at, assert_conflict, assert_invalid, parse};
    use crate::config::{Config, Position};
    use crate::keyfile::{self, KeyFileError};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
    const B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
    const C: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";

    fn key(byte: u8) -> PublicKey {
        PublicKey::from_bytes([byte; 32])
    }

    /// A full manager section, every key written. Line numbers below count from this.
    fn full() -> String {
        format!(
            "\
manager:
  key: keys/manager.key
  listen: \"[::1]:7000\"
  allow: [{A}, {B}]
  links:
    - [{A}, {B}]
    - [{C}, {B}]
  rule_expiry: 1m
  setup_timeout: 500ms
  heartbeat: 2s
  weight: latency
  min_hops: 2
  max_hops: 5
"
        )
    }

    #[test]
    fn a_full_manager_section_becomes_typed_values() {
        let config = Config::parse(&full(), "/etc/skywire/manager.yaml").unwrap();
        let manager = &config.manager;
        assert_eq!(manager.key, Path::new("/etc/skywire/keys/manager.key"));
        assert_eq!(manager.listen(), "[::1]:7000".parse().unwrap());
        assert_eq!(manager.allow(), Some(&[key(0xa0), key(0xb0)][..]));
        assert!(manager.allows(&key(0xb0)));
        assert!(!manager.allows(&key(0xc0)));
        assert_eq!(
            manager.links(),
            [[key(0xa0), key(0xb0)], [key(0xc0), key(0xb0)]]
        );
        assert_eq!(manager.rule_expiry(), Duration::from_secs(60));
        assert_eq!(manager.setup_timeout(), Duration::from_millis(500));
        assert_eq!(manager.heartbeat(), Duration::from_secs(2));
        assert_eq!(manager.dead_after(), Duration::from_secs(6));
        assert_eq!(manager.weight(), RouteWeight::Latency);
        assert_eq!((manager.min_hops(), manager.max_hops()), (2, 5));
        // The node section is untouched.
        assert_eq!(config.node, crate::config::NodeConfig::default());
    }

    #[test]
    fn left_out_keys_take_their_defaults() {
        for text in ["", "manager:\n", "manager: {}\n", "manager:\n  links:\n"] {
            let config = parse(text).unwrap();
            assert_eq!(config.manager, ManagerConfig::default(), "{text:?}");
        }
        let manager = ManagerConfig::default();
        assert_eq!(manager.key, Path::new("/etc/skywire/manager.key"));
        assert_eq!(manager.listen(), "127.0.0.1:5999".parse().unwrap());
        assert_eq!(manager.allow(), None);
        assert!(manager.allows(&key(0x42)));
        assert!(manager.links().is_empty());
        assert_eq!(manager.rule_expiry(), Duration::from_secs(30));
        assert_eq!(manager.setup_timeout(), Duration::from_secs(2));
        assert_eq!(manager.heartbeat(), Duration::from_secs(1));
        assert_eq!(manager.dead_after(), Duration::from_secs(3));
        assert_eq!(manager.weight(), RouteWeight::Hops);
        assert_eq!((manager.min_hops(), manager.max_hops()), (1, 16));
        assert_eq!(RouteWeight::default(), RouteWeight::Hops);
        assert_eq!(RouteWeight::Latency.to_string(), "latency");

        // A relative key follows the config file, like node.key; port 0 is allowed.
        let config = parse("manager:\n  key: m.key\n  listen: 0.0.0.0:0\n").unwrap();
        assert_eq!(config.manager.key, Path::new("conf/m.key"));
        assert_eq!(config.manager.listen(), "0.0.0.0:0".parse().unwrap());
        // Only min_hops or only max_hops: the other keeps its default.
        let config = parse("manager:\n  min_hops: 16\n").unwrap();
        assert_eq!(config.manager.max_hops(), 16);
        let config = parse("manager:\n  max_hops: 1\n").unwrap();
        assert_eq!(config.manager.min_hops(), 1);
        let config = parse("manager:\n  min_hops: 3\n  max_hops: 3\n").unwrap();
        assert_eq!(
            (config.manager.min_hops(), config.manager.max_hops()),
            (3, 3)
        );
    }

    #[test]
    fn an_unknown_or_mistyped_key_is_located() {
        let err = parse("manager:\n  listen: 127.0.0.1:5999\n  rule_expire: 30s\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_at(&err, 3, "manager.rule_expire");
        assert!(err.to_string().contains("rule_expire"), "{err}");
        let err = parse("manager:\n  links: {a: b}\n").unwrap_err();
        assert_at(&err, 2, "manager.links");
        let err = parse(&format!("manager:\n  links:\n    - {A}\n")).unwrap_err();
        assert_at(&err, 3, "manager.links[0]");
        let err = parse("managers: {}\n").unwrap_err();
        assert_at(&err, 1, "managers");
    }

    #[test]
    fn bad_values_are_located_problems() {
        let good = full();
        let cases: [(&str, &str, u64, &str, Problem); 21] = [
            (
                "key: keys/manager.key",
                "key: ''",
                2,
                "manager.key",
                Problem::EmptyPath,
            ),
            (
                "listen: \"[::1]:7000\"",
                "listen: localhost:7000",
                3,
                "manager.listen",
                Problem::NotASocketAddress,
            ),
            (
                &format!("allow: [{A}, {B}]"),
                &format!("allow: [{A}, {}]", &B[1..]),
                4,
                "manager.allow[1]",
                Problem::PublicKeyLength,
            ),
            (
                &format!("- [{C}, {B}]"),
                &format!("- [{C}, {}x]", &B[1..]),
                7,
                "manager.links[1][1]",
                Problem::PublicKeyNotHex,
            ),
            (
                "rule_expiry: 1m",
                "rule_expiry: 2999ms",
                8,
                "manager.rule_expiry",
                Problem::RuleExpiryOutOfRange,
            ),
            (
                "rule_expiry: 1m",
                "rule_expiry: 61m",
                8,
                "manager.rule_expiry",
                Problem::RuleExpiryOutOfRange,
            ),
            (
                "rule_expiry: 1m",
                "rule_expiry: 0",
                8,
                "manager.rule_expiry",
                Problem::RuleExpiryOutOfRange,
            ),
            (
                "rule_expiry: 1m",
                "rule_expiry: 1.5m",
                8,
                "manager.rule_expiry",
                Problem::NotADuration,
            ),
            (
                "setup_timeout: 500ms",
                "setup_timeout: 99ms",
                9,
                "manager.setup_timeout",
                Problem::SetupTimeoutOutOfRange,
            ),
            (
                "setup_timeout: 500ms",
                "setup_timeout: 31s",
                9,
                "manager.setup_timeout",
                Problem::SetupTimeoutOutOfRange,
            ),
            (
                "setup_timeout: 500ms",
                "setup_timeout: 2 s",
                9,
                "manager.setup_timeout",
                Problem::NotADuration,
            ),
            (
                "heartbeat: 2s",
                "heartbeat: 99ms",
                10,
                "manager.heartbeat",
                Problem::HeartbeatOutOfRange,
            ),
            (
                "heartbeat: 2s",
                "heartbeat: 61s",
                10,
                "manager.heartbeat",
                Problem::HeartbeatOutOfRange,
            ),
            (
                "weight: latency",
                "weight: Latency",
                11,
                "manager.weight",
                Problem::NotARouteWeight,
            ),
            (
                "weight: latency",
                "weight: 1",
                11,
                "manager.weight",
                Problem::NotARouteWeight,
            ),
            (
                "min_hops: 2",
                "min_hops: 0",
                12,
                "manager.min_hops",
                Problem::HopCountOutOfRange,
            ),
            (
                "min_hops: 2",
                "min_hops: 17",
                12,
                "manager.min_hops",
                Problem::HopCountOutOfRange,
            ),
            (
                "max_hops: 5",
                "max_hops: -1",
                13,
                "manager.max_hops",
                Problem::HopCountOutOfRange,
            ),
            (
                "max_hops: 5",
                "max_hops: 2.0",
                13,
                "manager.max_hops",
                Problem::HopCountOutOfRange,
            ),
            (
                "max_hops: 5",
                "max_hops: 1",
                13,
                "manager.max_hops",
                Problem::MaxHopsBelowMinHops,
            ),
            (
                "max_hops: 5",
                "max_hops: 256",
                13,
                "manager.max_hops",
                Problem::HopCountOutOfRange,
            ),
        ];
        for (from, to, line, key, problem) in cases {
            assert!(good.contains(from), "{from}");
            assert_invalid(&good.replacen(from, to, 1), line, key, problem);
        }
    }

    #[test]
    fn durations_take_every_form_up_to_their_bounds() {
        let manager = |text: &str| parse(&format!("manager:\n  {text}\n")).map(|c| c.manager);
        let ms = Duration::from_millis;
        assert_eq!(manager("rule_expiry: 3s").unwrap().rule_expiry(), ms(3_000));
        assert_eq!(
            manager("rule_expiry: 1h").unwrap().rule_expiry(),
            ms(3_600_000)
        );
        assert_eq!(
            manager("rule_expiry: 45").unwrap().rule_expiry(),
            ms(45_000)
        );
        assert_eq!(
            manager("setup_timeout: 100ms").unwrap().setup_timeout(),
            ms(100)
        );
        assert_eq!(
            manager("setup_timeout: 30s").unwrap().setup_timeout(),
            ms(30_000)
        );
        assert_eq!(manager("heartbeat: 100ms").unwrap().heartbeat(), ms(100));
        assert_eq!(manager("heartbeat: 1m").unwrap().heartbeat(), ms(60_000));
        assert_eq!(
            manager("heartbeat: \"60\"").unwrap().heartbeat(),
            ms(60_000)
        );
        assert_eq!(manager("weight: hops").unwrap().weight(), RouteWeight::Hops);
    }

    #[test]
    fn an_empty_allow_list_is_refused() {
        for allow in [
            "  allow: []\n",
            "  allow:\n",
            "  allow:\n    # - a key, commented out\n",
        ] {
            let text = format!("manager:\n  listen: 127.0.0.1:5999\n{allow}  heartbeat: 1s\n");
            assert_invalid(&text, 3, "manager.allow", Problem::EmptyAllowList);
        }
    }

    #[test]
    fn an_allowed_key_is_listed_once() {
        let text = format!(
            "manager:\n  allow:\n    - {A}\n    - {B}\n    - {}\n",
            A.to_uppercase()
        );
        assert_conflict(
            &text,
            5,
            "manager.allow[2]",
            (3, "manager.allow[0]"),
            Problem::DuplicateAllowedKey,
        );
    }

    #[test]
    fn a_link_is_two_different_keys() {
        let links = |items: &str| format!("manager:\n  links:\n{items}");
        let text = links(&format!("    - [{A}, {B}]\n    - [{C}]\n"));
        assert_invalid(&text, 4, "manager.links[1]", Problem::LinkNotTwoKeys);
        let text = links(&format!("    - [{A}, {B}, {C}]\n"));
        assert_invalid(&text, 3, "manager.links[0]", Problem::LinkNotTwoKeys);
        let text = links("    - []\n");
        assert_invalid(&text, 3, "manager.links[0]", Problem::LinkNotTwoKeys);
        let text = links(&format!("    - [{A}, {B}]\n    - [{C}, {C}]\n"));
        assert_invalid(&text, 4, "manager.links[1]", Problem::LinkToItself);
        let err = parse(&text).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("manager.links[1]: a link joins two different nodes"),
            "{err}"
        );
        // In block form, a list item is where its first key is.
        let text = links(&format!(
            "    - [{A}, {B}]\n    -\n      - {C}\n      - {C}\n"
        ));
        assert_invalid(&text, 5, "manager.links[1]", Problem::LinkToItself);
    }

    #[test]
    fn a_link_is_listed_once_in_either_order() {
        let links = |items: &str| format!("manager:\n  links:\n{items}");
        let text = links(&format!(
            "    - [{A}, {B}]\n    - [{B}, {C}]\n    - [{B}, {A}]\n"
        ));
        assert_conflict(
            &text,
            5,
            "manager.links[2]",
            (3, "manager.links[0]"),
            Problem::DuplicateLink,
        );
        let text = links(&format!("    - [{A}, {B}]\n    - [{A}, {B}]\n"));
        assert_conflict(
            &text,
            4,
            "manager.links[1]",
            (3, "manager.links[0]"),
            Problem::DuplicateLink,
        );
        // A to B and A to C are different links.
        let text = links(&format!("    - [{A}, {B}]\n    - [{A}, {C}]\n"));
        assert_eq!(parse(&text).unwrap().manager.links().len(), 2);
    }

    #[test]
    fn the_manager_key_loads_with_the_node_keys_checks() {
        let dir = Scratch::new();
        let public = keyfile::write_new_key(dir.0.join("keys/manager.key")).unwrap();
        let path = dir.file(
            "m.yaml",
            b"# the manager\nmanager:\n  key: keys/manager.key\n",
        );
        let config = Config::load(&path).unwrap();
        assert_eq!(config.manager_key().unwrap().public_key(), public);

        // A key file others can read is refused, naming manager.key and its line.
        let key = dir.0.join("keys/manager.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = config.manager_key().unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::Key {
                    source: KeyFileError::Permissions { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.key(), Some("manager.key"));
        assert_eq!(err.position(), Some(Position { line: 3, column: 3 }));
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:3: manager.key: ", path.display())),
            "{err}"
        );
        assert!(err.is_bad_config());

        // A missing key file.
        let path = dir.file("n.yaml", b"manager:\n  key: missing.key\n");
        let err = Config::load(&path).unwrap().manager_key().unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::Key {
                    source: KeyFileError::Read { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.key(), Some("manager.key"));
        assert!(err.is_bad_config());

        // The default key path, not written: the error names manager.key at `manager:`.
        if !Path::new(DEFAULT_MANAGER_KEY).exists() {
            let config = parse("node: {}\nmanager:\n  weight: hops\n").unwrap();
            let err = config.manager_key().unwrap_err();
            assert_eq!(err.key(), Some("manager.key"), "{err}");
            assert_eq!(err.position().map(|p| p.line), Some(2), "{err}");
        }
    }
}
