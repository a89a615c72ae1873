//! The `vpn:` section: the VPN exit app (`vpn.exit`, which leases addresses from its pool to
//! its clients and forwards their traffic to its uplinks with the kernel's masquerade) and
//! the VPN client app (`vpn.client`, which takes a lease from an exit and routes this
//! machine's traffic into the mesh towards it). See `docs/design/vpn-plan.md` (§2.2, §2.3);
//! the apps themselves live in `control/src/apps/vpn/`.
//!
//! `vpn.exit`:
//!
//! | key | type | default |
//! |---|---|---|
//! | `port` | the port the exit app listens on, on its node | 44 (the original vpn-server's) |
//! | `public` | serve every node | `false` |
//! | `clients` | keys of the nodes it serves (when not public) | `[]`: none |
//! | `pool.ipv4` | the IPv4 prefix client addresses are leased from; at most a /30 | `10.213.0.0/16` |
//! | `pool.ipv6` | `auto` (a ULA /64 derived from the exit's key), `none` (no IPv6), or an IPv6 prefix of at most /126 | `auto` |
//! | `allow_lan` | prefixes of the exit's own networks clients may reach all the same | `[]` |
//! | `allow_clients` | clients may reach each other through the exit | `false` |
//! | `dns` | DNS servers offered with a lease | `[]`: none (the client leaves DNS alone) |
//! | `uplinks` | interfaces forwarding is turned on for | `[]`: every interface that is up but `lo` and the TUN device |
//! | `lease_grace` | how long a lease outlives its client's stream, so a reconnect gets the same address | 2m |
//! | `state` | the state file (leases, original sysctls) | `/var/lib/skywire/vpn-exit.json` |
//! | `app_socket` | the node's app socket | `node.apps` of this file, else the default |
//!
//! `vpn.client`:
//!
//! | key | type | default |
//! |---|---|---|
//! | `exit` | the exit node's public key | none: `--exit` must say |
//! | `exit_port` | the exit app's port on that node | 44 |
//! | `lockdown` | the kill switch: nothing leaves but through the tunnel, also while it is down | `false` |
//! | `allow_lan` | reach the on-link networks inside `lan_ranges` directly | `false` |
//! | `lan_ranges` | what counts as LAN for `allow_lan` | `10/8, 172.16/12, 192.168/16, 169.254/16, fe80::/10` |
//! | `dns` | use the DNS servers of the lease | `true` |
//! | `table` | the routing table of the tunnel's routes (1 to 4294967295 but 253, 254, 255) | 29547 (0x736b) |
//! | `priority` | the priority of its policy rules (1 to 32765) | 5190 |
//! | `state` | the state file | `/run/skywire/vpn-client.json` |
//! | `app_socket` | the node's app socket | as for the exit |
//!
//! Unique-local IPv6 (`fc00::/7`) is deliberately absent from the default `lan_ranges`: a
//! hostile network can number itself from it as easily as from any other range, and the
//! exit's own `allow_lan` is where ULA belongs (plan, R8).
//!
//! Checks: `public: true` with `clients` is an error (one of them is a mistake); the IPv4
//! pool is an IPv4 prefix of at most /30 (a network address, the exit's `.1`, one client
//! and the last address), an IPv6 pool an IPv6 prefix of at most /126; no `allow_lan`
//! prefix overlaps a pool (pool addresses are the clients', not the LAN's). Whether the
//! pool overlaps the machine's own addresses or the mesh is for the exit to check when it
//! starts: it needs more than this file. The node's socket mark (`node.fwmark`), which
//! keeps the node's own packets out of the tunnel, is in the `node:` section.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use super::error::{ConfigError, Problem};
use super::paths::PathText;
use super::values::{
    DurationValue, InterfaceName, PortValue, PrefixValue, PublicKeyValue, is_digits,
};
use super::yaml::{KeyPath, Locator};

/// The VPN exit app's port on its node: the original Skywire vpn-server's.
pub const DEFAULT_VPN_PORT: u16 = 44;
/// The exit's state file when the config does not say.
pub const DEFAULT_VPN_EXIT_STATE: &str = "/var/lib/skywire/vpn-exit.json";
/// The client's state file when the config does not say (it dies with a reboot, as the
/// kernel state it describes does).
pub const DEFAULT_VPN_CLIENT_STATE: &str = "/run/skywire/vpn-client.json";
/// The client's routing table: 0x736b, "sk".
pub const DEFAULT_VPN_TABLE: u32 = 29547;
/// The client's rule priority: after `local` (0), before Tailscale's 5210-5270 and `main`
/// (32766).
pub const DEFAULT_VPN_PRIORITY: u32 = 5190;
/// How long a lease outlives its client's stream when the config does not say.
pub const DEFAULT_LEASE_GRACE: Duration = Duration::from_secs(120);
/// The longest IPv4 pool prefix: a /30 still has one address for a client.
pub const MAX_POOL_IPV4_LEN: u8 = 30;
/// The longest IPv6 pool prefix, for the same reason.
pub const MAX_POOL_IPV6_LEN: u8 = 126;
/// The routing tables the kernel reserves: `default` (253), `main` (254), `local` (255).
pub const RESERVED_TABLES: [u32; 3] = [253, 254, 255];
/// The highest rule priority a client may use: 32766 is `main`'s rule, 32767 `default`'s.
pub const MAX_VPN_PRIORITY: u32 = 32765;

/// A prefix the code knows to be valid (a constant's address and length).
fn known(addr: IpAddr, len: u8) -> Prefix {
    // Every caller passes a length within its family's bits; tests check each default.
    Prefix::new(addr, len).unwrap_or_else(|| unreachable!("a constant prefix is valid"))
}

/// The exit's IPv4 pool when the config does not say: `10.213.0.0/16`.
pub fn default_pool_ipv4() -> Prefix {
    known(Ipv4Addr::new(10, 213, 0, 0).into(), 16)
}

/// The client's LAN ranges when the config does not say: RFC 1918, IPv4 link-local and
/// IPv6 link-local. Unique-local IPv6 is deliberately absent (module doc).
pub fn default_lan_ranges() -> Vec<Prefix> {
    vec![
        known(Ipv4Addr::new(10, 0, 0, 0).into(), 8),
        known(Ipv4Addr::new(172, 16, 0, 0).into(), 12),
        known(Ipv4Addr::new(192, 168, 0, 0).into(), 16),
        known(Ipv4Addr::new(169, 254, 0, 0).into(), 16),
        known(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0).into(), 10),
    ]
}

/// The exit's IPv6 pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ipv6Pool {
    /// `auto`: a unique-local /64 derived from the exit's key (the exit works it out; the
    /// config does not know the key).
    #[default]
    Auto,
    /// `none`: no IPv6 leases; clients route IPv6 nowhere (`unreachable`).
    None,
    /// An IPv6 prefix of at most [`MAX_POOL_IPV6_LEN`].
    Prefix(Prefix),
}

impl fmt::Display for Ipv6Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::None => f.write_str("none"),
            Self::Prefix(prefix) => write!(f, "{prefix}"),
        }
    }
}

/// `vpn.exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnExitConfig {
    /// Its port on its node.
    pub port: u16,
    /// Serve every node.
    pub public: bool,
    /// The nodes it serves (when not public).
    pub clients: Vec<PublicKey>,
    /// Where client IPv4 addresses come from.
    pub pool_ipv4: Prefix,
    /// Where client IPv6 addresses come from.
    pub pool_ipv6: Ipv6Pool,
    /// The exit's own networks clients may reach all the same.
    pub allow_lan: Vec<Prefix>,
    /// Clients may reach each other.
    pub allow_clients: bool,
    /// DNS servers offered with a lease.
    pub dns: Vec<IpAddr>,
    /// Interfaces forwarding is turned on for; empty: every interface that is up but `lo`
    /// and the TUN device. Each a valid interface name.
    pub uplinks: Vec<String>,
    /// How long a lease outlives its client's stream.
    pub lease_grace: Duration,
    /// The state file.
    pub state: PathBuf,
    /// The node's app socket, when written.
    pub app_socket: Option<PathBuf>,
}

impl Default for VpnExitConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_VPN_PORT,
            public: false,
            clients: Vec::new(),
            pool_ipv4: default_pool_ipv4(),
            pool_ipv6: Ipv6Pool::Auto,
            allow_lan: Vec::new(),
            allow_clients: false,
            dns: Vec::new(),
            uplinks: Vec::new(),
            lease_grace: DEFAULT_LEASE_GRACE,
            state: PathBuf::from(DEFAULT_VPN_EXIT_STATE),
            app_socket: None,
        }
    }
}

/// `vpn.client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnClientConfig {
    /// The exit node's key.
    pub exit: Option<PublicKey>,
    /// The exit app's port on it.
    pub exit_port: u16,
    /// The kill switch.
    pub lockdown: bool,
    /// Reach on-link networks inside `lan_ranges` directly.
    pub allow_lan: bool,
    /// What counts as LAN for `allow_lan`.
    pub lan_ranges: Vec<Prefix>,
    /// Use the lease's DNS servers.
    pub dns: bool,
    /// The routing table of the tunnel's routes: not 0, 253, 254 or 255.
    pub table: u32,
    /// The priority of its policy rules: 1 to [`MAX_VPN_PRIORITY`].
    pub priority: u32,
    /// The state file.
    pub state: PathBuf,
    /// The node's app socket, when written.
    pub app_socket: Option<PathBuf>,
}

impl Default for VpnClientConfig {
    fn default() -> Self {
        Self {
            exit: None,
            exit_port: DEFAULT_VPN_PORT,
            lockdown: false,
            allow_lan: false,
            lan_ranges: default_lan_ranges(),
            dns: true,
            table: DEFAULT_VPN_TABLE,
            priority: DEFAULT_VPN_PRIORITY,
            state: PathBuf::from(DEFAULT_VPN_CLIENT_STATE),
            app_socket: None,
        }
    }
}

/// The `vpn:` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpnConfig {
    /// `vpn.exit`.
    pub exit: VpnExitConfig,
    /// `vpn.client`.
    pub client: VpnClientConfig,
}

/// Whether `a` and `b` share an address: one holds the other's network.
fn overlap(a: &Prefix, b: &Prefix) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// `pool.ipv4`: an IPv4 prefix of at most [`MAX_POOL_IPV4_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Ipv4PoolValue(Prefix);

impl TryFrom<String> for Ipv4PoolValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        let PrefixValue(prefix) = PrefixValue::try_from(text)?;
        if prefix.addr().is_ipv4() && prefix.len() <= MAX_POOL_IPV4_LEN {
            Ok(Self(prefix))
        } else {
            Err(Problem::BadIpv4Pool)
        }
    }
}

/// `pool.ipv6`: `auto`, `none` or an IPv6 prefix of at most [`MAX_POOL_IPV6_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct Ipv6PoolValue(Ipv6Pool);

impl TryFrom<String> for Ipv6PoolValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        match text.as_str() {
            "auto" => Ok(Self(Ipv6Pool::Auto)),
            "none" => Ok(Self(Ipv6Pool::None)),
            _ => match text.parse::<Prefix>() {
                Ok(prefix) if prefix.addr().is_ipv6() && prefix.len() <= MAX_POOL_IPV6_LEN => {
                    Ok(Self(Ipv6Pool::Prefix(prefix)))
                }
                _ => Err(Problem::BadIpv6Pool),
            },
        }
    }
}

/// An IP address, `198.18.9.53` or `fd00:9::53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct IpValue(IpAddr);

impl TryFrom<String> for IpValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse().map(Self).map_err(|_| Problem::NotAnIpAddress)
    }
}

/// `vpn.client.table`: a routing table the kernel does not reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct TableValue(u32);

impl TryFrom<String> for TableValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse::<u32>()
            .ok()
            .filter(|t| is_digits(&text) && *t != 0 && !RESERVED_TABLES.contains(t))
            .map(Self)
            .ok_or(Problem::NotARoutingTable)
    }
}

/// `vpn.client.priority`: between `local`'s rule and `main`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct PriorityValue(u32);

impl TryFrom<String> for PriorityValue {
    type Error = Problem;

    fn try_from(text: String) -> Result<Self, Problem> {
        text.parse::<u32>()
            .ok()
            .filter(|p| is_digits(&text) && (1..=MAX_VPN_PRIORITY).contains(p))
            .map(Self)
            .ok_or(Problem::NotARulePriority)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVpn {
    exit: Option<RawExit>,
    client: Option<RawClient>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    ipv4: Option<Ipv4PoolValue>,
    ipv6: Option<Ipv6PoolValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExit {
    port: Option<PortValue>,
    public: Option<bool>,
    clients: Option<Vec<PublicKeyValue>>,
    pool: Option<RawPool>,
    allow_lan: Option<Vec<PrefixValue>>,
    allow_clients: Option<bool>,
    dns: Option<Vec<IpValue>>,
    uplinks: Option<Vec<InterfaceName>>,
    lease_grace: Option<DurationValue>,
    state: Option<PathText>,
    app_socket: Option<PathText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    exit: Option<PublicKeyValue>,
    exit_port: Option<PortValue>,
    lockdown: Option<bool>,
    allow_lan: Option<bool>,
    lan_ranges: Option<Vec<PrefixValue>>,
    dns: Option<bool>,
    table: Option<TableValue>,
    priority: Option<PriorityValue>,
    state: Option<PathText>,
    app_socket: Option<PathText>,
}

impl RawVpn {
    /// The typed section after its checks (module doc); paths resolved against `base`.
    pub(super) fn resolve(self, base: &Path, at: &Locator<'_>) -> Result<VpnConfig, ConfigError> {
        let exit = self.exit.unwrap_or_default().resolve(base, at)?;
        let client = self.client.unwrap_or_default().resolve(base);
        Ok(VpnConfig { exit, client })
    }
}

impl RawExit {
    fn resolve(self, base: &Path, at: &Locator<'_>) -> Result<VpnExitConfig, ConfigError> {
        let path = KeyPath::top("vpn").key("exit");
        let d = VpnExitConfig::default();
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
        let pool = self.pool.unwrap_or_default();
        let pool_ipv4 = pool.ipv4.map_or(d.pool_ipv4, |p| p.0);
        let pool_ipv6 = pool.ipv6.map_or(d.pool_ipv6, |p| p.0);
        let allow_lan: Vec<Prefix> = self
            .allow_lan
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.0)
            .collect();
        for (i, lan) in allow_lan.iter().enumerate() {
            let in_v6_pool = matches!(pool_ipv6, Ipv6Pool::Prefix(p) if overlap(&p, lan));
            if overlap(&pool_ipv4, lan) || in_v6_pool {
                let key = path.key("allow_lan").index(i);
                return Err(at.invalid(&key, Problem::AllowLanOverlapsPool));
            }
        }
        Ok(VpnExitConfig {
            port: self.port.map_or(d.port, |p| p.0),
            public,
            clients,
            pool_ipv4,
            pool_ipv6,
            allow_lan,
            allow_clients: self.allow_clients.unwrap_or(d.allow_clients),
            dns: self
                .dns
                .unwrap_or_default()
                .into_iter()
                .map(|ip| ip.0)
                .collect(),
            uplinks: self
                .uplinks
                .unwrap_or_default()
                .into_iter()
                .map(|name| name.0)
                .collect(),
            lease_grace: self.lease_grace.map_or(d.lease_grace, |t| t.0),
            state: self.state.map_or(d.state, |p| p.resolve(base)),
            app_socket: self.app_socket.map(|p| p.resolve(base)),
        })
    }
}

impl RawClient {
    fn resolve(self, base: &Path) -> VpnClientConfig {
        let d = VpnClientConfig::default();
        VpnClientConfig {
            exit: self.exit.map(|k| k.0),
            exit_port: self.exit_port.map_or(d.exit_port, |p| p.0),
            lockdown: self.lockdown.unwrap_or(d.lockdown),
            allow_lan: self.allow_lan.unwrap_or(d.allow_lan),
            lan_ranges: self.lan_ranges.map_or(d.lan_ranges, |ranges| {
                ranges.into_iter().map(|p| p.0).collect()
            }),
            dns: self.dns.unwrap_or(d.dns),
            table: self.table.map_or(d.table, |t| t.0),
            priority: self.priority.map_or(d.priority, |p| p.0),
            state: self.state.map_or(d.state, |p| p.resolve(base)),
            app_socket: self.app_socket.map(|p| p.resolve(base)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: TryFrom<String, Error = Problem>>(text: &str) -> Result<T, Problem> {
        T::try_from(text.to_owned())
    }

    #[test]
    fn the_defaults_are_the_plans() {
        assert_eq!(default_pool_ipv4().to_string(), "10.213.0.0/16");
        let lan: Vec<String> = default_lan_ranges()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lan,
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "fe80::/10"
            ]
        );
        assert_eq!(DEFAULT_VPN_TABLE, 0x736b);
        let exit = VpnExitConfig::default();
        assert_eq!((exit.port, exit.pool_ipv6), (44, Ipv6Pool::Auto));
        assert_eq!(exit.lease_grace, Duration::from_secs(120));
        let client = VpnClientConfig::default();
        assert!(client.dns && !client.lockdown && !client.allow_lan);
        assert_eq!((client.table, client.priority), (29547, 5190));
    }

    #[test]
    fn pools() {
        let v4 = |t: &str| parse::<Ipv4PoolValue>(t).map(|p| p.0.to_string());
        assert_eq!(v4("198.19.128.0/24"), Ok("198.19.128.0/24".to_owned()));
        assert_eq!(v4("10.0.0.0/30"), Ok("10.0.0.0/30".to_owned()));
        assert_eq!(v4("10.0.0.0/31"), Err(Problem::BadIpv4Pool));
        assert_eq!(v4("fd00::/64"), Err(Problem::BadIpv4Pool));
        assert_eq!(v4("10.0.0.0"), Err(Problem::PrefixWithoutLength));
        let v6 = |t: &str| parse::<Ipv6PoolValue>(t).map(|p| p.0);
        assert_eq!(v6("auto"), Ok(Ipv6Pool::Auto));
        assert_eq!(v6("none"), Ok(Ipv6Pool::None));
        assert_eq!(
            v6("fd00:5b::/64"),
            Ok(Ipv6Pool::Prefix("fd00:5b::/64".parse().unwrap()))
        );
        assert_eq!(
            v6("fd00::/126").map(|p| p.to_string()),
            Ok("fd00::/126".to_owned())
        );
        for bad in ["fd00::/127", "10.0.0.0/8", "Auto", "", "fd00::"] {
            assert_eq!(v6(bad), Err(Problem::BadIpv6Pool), "{bad:?}");
        }
    }

    #[test]
    fn tables_priorities_and_addresses() {
        let table = |t: &str| parse::<TableValue>(t).map(|v| v.0);
        assert_eq!(table("1"), Ok(1));
        assert_eq!(table("252"), Ok(252));
        assert_eq!(table("256"), Ok(256));
        assert_eq!(table("4294967295"), Ok(u32::MAX));
        for bad in [
            "0",
            "253",
            "254",
            "255",
            "4294967296",
            "-1",
            "+5",
            "main",
            "",
        ] {
            assert_eq!(table(bad), Err(Problem::NotARoutingTable), "{bad:?}");
        }
        let priority = |t: &str| parse::<PriorityValue>(t).map(|v| v.0);
        assert_eq!(priority("1"), Ok(1));
        assert_eq!(priority("32765"), Ok(32765));
        for bad in ["0", "32766", "32767", "x", "+1"] {
            assert_eq!(priority(bad), Err(Problem::NotARulePriority), "{bad:?}");
        }
        assert_eq!(
            parse::<IpValue>("fd00:9::53").map(|v| v.0),
            Ok("fd00:9::53".parse().unwrap())
        );
        assert_eq!(
            parse::<IpValue>("198.18.9.53:53"),
            Err(Problem::NotAnIpAddress)
        );
    }

    #[test]
    fn overlaps() {
        let p = |t: &str| -> Prefix { t.parse().unwrap() };
        assert!(overlap(&p("10.213.0.0/16"), &p("10.0.0.0/8")));
        assert!(overlap(&p("10.0.0.0/8"), &p("10.213.7.0/24")));
        assert!(overlap(&p("10.213.7.9/32"), &p("10.213.7.9/32")));
        assert!(!overlap(&p("10.213.0.0/16"), &p("10.214.0.0/16")));
        assert!(!overlap(&p("10.213.0.0/16"), &p("fd00::/8")));
        assert!(overlap(&p("::/0"), &p("fd00::/8")));
    }
}
