//! The exit's destination policy: may `skywire socks exit` connect to this address and
//! port? Decided on the address the exit is about to dial, never on a name (a public name
//! may resolve to 127.0.0.1). Pure: no resolution, no I/O.
//!
//! What the exit does with a request's destination, in this order:
//!
//! 1. A name first goes through [`numeric_host`]: `127.1`, `2130706433`, `0x7f000001`,
//!    `0177.0.0.1`, `[::1]` are addresses (getaddrinfo would read them so without asking
//!    DNS), and are checked as addresses, never sent to the resolver.
//! 2. Any other name goes through [`check_name`] (`localhost` and `*.localhost` are
//!    loopback, RFC 6761), then to the resolver.
//! 3. Each address (the request's, or each one the name resolved to) goes through
//!    [`Policy::check`]; the exit dials only allowed ones, and answers a refusal with
//!    reply 2 (not allowed by ruleset).
//!
//! [`Policy::check`], in order:
//!
//! 1. **Unwrap.** An IPv6 address that carries an IPv4 one is judged by the IPv4 address
//!    it carries: IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96`,
//!    IPv4-compatible `::/96` (other than `::` and `::1`), NAT64 `64:ff9b::/96`, 6to4
//!    `2002::/16`. The local-use NAT64 prefix `64:ff9b:1::/48` may embed at /96, /64, /56
//!    or /48 (RFC 6052); each of the four readings is checked, and all must be allowed.
//! 2. **Exceptions** ([`Policy::allow`]): one whose prefix contains the address (or the
//!    IPv6 address it came in) and whose port matches allows it. An exception with an
//!    explicit port (`prefix:25`) allows that port even if it is denied; one with `*`
//!    allows every port but the denied ones.
//! 3. **Special ranges**, refused whatever the configuration: IPv4 `0.0.0.0/8`, `10/8`,
//!    `100.64/10`, `127/8`, `169.254/16`, `172.16/12`, `192.0.0.0/24`, `192.168/16`,
//!    `224/4`, `240/4` (with 255.255.255.255); IPv6 `::/128`, `::1/128`, `fc00::/7`,
//!    `fe80::/10`, `fec0::/10`, `ff00::/8`, and Teredo `2001::/32` (its IPv4 address is
//!    obfuscated, so it cannot be checked). Not refused: `198.18.0.0/15` (benchmarking) and
//!    the TEST-NETs, which the project's namespace tests use as their "internet"; a
//!    deployment reaches a private target through an exception.
//! 4. **The mesh's ranges** ([`Policy::mesh`]), given by the caller.
//! 5. **The exit host's own addresses and the subnets they sit in** ([`Policy::own`]).
//! 6. **Denied ports** ([`Policy::deny_ports`], by default 25: no spam through the exit).
//!
//! An exception is written `PREFIX:PORT` or `PREFIX:*`, with an IPv6 prefix in brackets:
//! `198.18.0.0/15:8080`, `198.18.0.0/15:*`, `[2001:db8::/32]:443` ([`Exception`]'s
//! `FromStr`). The prefix needs its length (`/32` for one address); ports are 1 to 65535.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use skywire_dataplane::route::Prefix;

// The exceptions' syntax is the config's (a typed value read from text, below the apps
// in the crate's layers); the policy uses it as it is.
pub use crate::config::{DEFAULT_DENY_PORTS, Exception, ExceptionError, Ports};

/// Why the exit refuses a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `127.0.0.0/8`, `::1`, `localhost`.
    Loopback,
    /// `10/8`, `172.16/12`, `192.168/16`, and IPv6 site-local `fec0::/10`.
    Private,
    /// `169.254/16`, `fe80::/10` (cloud metadata services live here).
    LinkLocal,
    /// `100.64.0.0/10`, carrier-grade NAT.
    Cgnat,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// Unspecified, "this network", reserved or broadcast: `0/8`, `192.0.0.0/24`, `240/4`,
    /// `::`.
    Reserved,
    /// `fc00::/7`.
    UniqueLocal,
    /// Teredo `2001::/32`: the IPv4 address inside is obfuscated, so it cannot be checked.
    Teredo,
    /// One of the mesh's own ranges.
    Mesh,
    /// An address of the exit host itself.
    OwnAddress,
    /// A subnet the exit host sits in.
    OwnLan,
    /// A denied port, and no exception names it.
    PortDenied(u16),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::Cgnat => "a carrier-grade NAT address (100.64.0.0/10)",
            Self::Multicast => "a multicast address",
            Self::Reserved => "an unspecified or reserved address",
            Self::UniqueLocal => "a unique local address (fc00::/7)",
            Self::Teredo => "a Teredo address (2001::/32)",
            Self::Mesh => "an address of the mesh",
            Self::OwnAddress => "an address of the exit host",
            Self::OwnLan => "on a subnet of the exit host",
            Self::PortDenied(port) => return write!(f, "port {port} is denied"),
        };
        f.write_str(text)
    }
}

/// The exit's policy. [`Policy::default`] allows no exception, denies port 25, and knows
/// neither the mesh's ranges nor the host's addresses: the exit fills those in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Exceptions, checked before everything else.
    pub allow: Vec<Exception>,
    /// Ports refused unless an exception names them ([`DEFAULT_DENY_PORTS`]).
    pub deny_ports: Vec<u16>,
    /// The exit host's interface addresses with their prefix lengths (`192.0.2.2/24`, as
    /// `sys::netlink::list_addresses` gives them): the address itself is
    /// [`Refusal::OwnAddress`], the rest of its subnet [`Refusal::OwnLan`].
    pub own: Vec<Prefix>,
    /// The mesh's own ranges.
    pub mesh: Vec<Prefix>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny_ports: DEFAULT_DENY_PORTS.to_vec(),
            own: Vec::new(),
            mesh: Vec::new(),
        }
    }
}

impl Policy {
    /// May the exit connect to `addr`? See the module doc for the order of the checks.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip();
        let port = addr.port();
        let embedded = match ip {
            IpAddr::V4(_) => [None; 4],
            IpAddr::V6(v6) => embedded_v4(v6),
        };
        if embedded.iter().all(Option::is_none) {
            return self.check_one(ip, None, port);
        }
        for v4 in embedded.into_iter().flatten() {
            self.check_one(IpAddr::V4(v4), Some(ip), port)?;
        }
        Ok(())
    }

    /// `ip`, which came as `wrapper` if it was unwrapped.
    fn check_one(&self, ip: IpAddr, wrapper: Option<IpAddr>, port: u16) -> Result<(), Refusal> {
        let forms = [Some(ip), wrapper];
        let covers = |prefix: &Prefix| forms.into_iter().flatten().any(|a| prefix.contains(a));
        let mut any_port = false;
        for exception in self.allow.iter().filter(|e| covers(&e.prefix)) {
            match exception.ports {
                Ports::One(p) if p == port => return Ok(()),
                Ports::One(_) => {}
                Ports::All => any_port = true,
            }
        }
        if !any_port {
            special(ip)?;
            if self.mesh.iter().any(covers) {
                return Err(Refusal::Mesh);
            }
            let own = |a: IpAddr| self.own.iter().any(|p| p.addr() == a);
            if forms.into_iter().flatten().any(own) {
                return Err(Refusal::OwnAddress);
            }
            if self.own.iter().any(covers) {
                return Err(Refusal::OwnLan);
            }
        }
        if self.deny_ports.contains(&port) {
            return Err(Refusal::PortDenied(port));
        }
        Ok(())
    }
}

/// The ranges refused whatever the configuration: network, prefix length, why.
const SPECIAL_V4: [(u32, u8, Refusal); 10] = [
    (0x0000_0000, 8, Refusal::Reserved),
    (0x0a00_0000, 8, Refusal::Private),
    (0x6440_0000, 10, Refusal::Cgnat),
    (0x7f00_0000, 8, Refusal::Loopback),
    (0xa9fe_0000, 16, Refusal::LinkLocal),
    (0xac10_0000, 12, Refusal::Private),
    (0xc000_0000, 24, Refusal::Reserved),
    (0xc0a8_0000, 16, Refusal::Private),
    (0xe000_0000, 4, Refusal::Multicast),
    (0xf000_0000, 4, Refusal::Reserved),
];

const SPECIAL_V6: [(u128, u8, Refusal); 7] = [
    (0, 128, Refusal::Reserved),
    (1, 128, Refusal::Loopback),
    (0xfc00 << 112, 7, Refusal::UniqueLocal),
    (0xfe80 << 112, 10, Refusal::LinkLocal),
    (0xfec0 << 112, 10, Refusal::Private),
    (0xff00 << 112, 8, Refusal::Multicast),
    (0x2001_0000 << 96, 32, Refusal::Teredo),
];

/// The ranges refused whatever the configuration, with why; the VPN exit's nftables deny
/// set starts from the same list (`apps::vpn::nft::default_deny`).
pub fn special_ranges() -> impl Iterator<Item = (Prefix, Refusal)> {
    let v4 = SPECIAL_V4
        .iter()
        .map(|&(net, len, why)| (IpAddr::V4(Ipv4Addr::from(net)), len, why));
    let v6 = SPECIAL_V6
        .iter()
        .map(|&(net, len, why)| (IpAddr::V6(Ipv6Addr::from(net)), len, why));
    v4.chain(v6)
        .filter_map(|(net, len, why)| Some((Prefix::new(net, len)?, why)))
}

fn special(ip: IpAddr) -> Result<(), Refusal> {
    let found = match ip {
        IpAddr::V4(ip) => {
            let ip = u32::from(ip);
            SPECIAL_V4
                .iter()
                .find(|(net, len, _)| ip & mask32(*len) == *net)
                .map(|(_, _, why)| *why)
        }
        IpAddr::V6(ip) => {
            let ip = u128::from(ip);
            SPECIAL_V6
                .iter()
                .find(|(net, len, _)| ip & mask128(*len) == *net)
                .map(|(_, _, why)| *why)
        }
    };
    found.map_or(Ok(()), Err)
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// The IPv4 addresses `ip` may carry (see the module doc), `None` in unused slots.
fn embedded_v4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 4] {
    let o = ip.octets();
    let bits = u128::from(ip);
    // RFC 6052: where the four bytes sit for a translation prefix of this length (byte 8,
    // bits 64 to 71, is always skipped).
    let at = |len: u8| {
        let [a, b, c, d] = match len {
            48 => [6, 7, 9, 10],
            56 => [7, 9, 10, 11],
            64 => [9, 10, 11, 12],
            _ => [12, 13, 14, 15],
        };
        let byte = |i: usize| o.get(i).copied().unwrap_or(0);
        Some(Ipv4Addr::new(byte(a), byte(b), byte(c), byte(d)))
    };
    let low = Some(Ipv4Addr::from(bits as u32));
    let in_prefix = |net: u128, len: u8| bits & mask128(len) == net;
    let mapped = in_prefix(0xffff << 32, 96);
    let translated = in_prefix(0xffff << 48, 96);
    let compatible = in_prefix(0, 96) && bits > 1;
    let nat64 = in_prefix(0x0064_ff9b << 96, 96);
    if mapped || translated || compatible || nat64 {
        [low, None, None, None]
    } else if in_prefix(0x0064_ff9b_0001 << 80, 48) {
        [at(96), at(64), at(56), at(48)]
    } else if in_prefix(0x2002 << 112, 16) {
        [Some(Ipv4Addr::from((bits >> 80) as u32)), None, None, None]
    } else {
        [None; 4]
    }
}

/// The address a host name stands for without asking DNS, as getaddrinfo reads it: an
/// IPv4 address in any of inet_aton's forms (1 to 4 parts, each decimal, octal with a
/// leading `0` or hex with `0x`: `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`), or an
/// IPv6 address with or without brackets (a `%zone` is dropped). One trailing dot is
/// ignored, so `127.0.0.1.` is an address too. `None`: a name for the resolver.
pub fn numeric_host(name: &str) -> Option<IpAddr> {
    let inner = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if inner.contains(':') {
        let addr = inner.split_once('%').map_or(inner, |(addr, _zone)| addr);
        return addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut parts = [0u32; 4];
    let mut count = 0;
    for part in name.split('.') {
        *parts.get_mut(count)? = aton_part(part)?;
        count += 1;
    }
    let [a, b, c, d] = parts;
    let byte = |v: u32| v <= 0xff;
    let ip = match count {
        1 => a,
        2 if byte(a) && b <= 0xff_ffff => (a << 24) | b,
        3 if byte(a) && byte(b) && c <= 0xffff => (a << 24) | (b << 16) | c,
        4 if byte(a) && byte(b) && byte(c) && byte(d) => (a << 24) | (b << 16) | (c << 8) | d,
        _ => return None,
    };
    Some(IpAddr::V4(Ipv4Addr::from(ip)))
}

/// One part of an inet_aton address: `0x` hex, `0` octal, else decimal; at most 32 bits.
fn aton_part(part: &str) -> Option<u32> {
    let (digits, radix) = match part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if part.len() > 1 && part.starts_with('0') => (part.get(1..)?, 8),
        None => (part, 10),
    };
    // from_str_radix takes a leading `+`, inet_aton does not.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Refuse a name before it reaches the resolver: `localhost` and `*.localhost` are
/// loopback (RFC 6761), whatever DNS says. Apply it after [`numeric_host`] found no
/// address; every address a name resolves to still goes through [`Policy::check`].
pub fn check_name(name: &str) -> Result<(), Refusal> {
    let name = name.strip_suffix('.').unwrap_or(name);
    const SUFFIX: &str = ".localhost";
    let tail = name
        .len()
        .checked_sub(SUFFIX.len())
        .and_then(|at| name.get(at..));
    if name.eq_ignore_ascii_case("localhost")
        || tail.is_some_and(|t| t.eq_ignore_ascii_case(SUFFIX))
    {
        return Err(Refusal::Loopback);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
