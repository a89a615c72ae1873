//! The VPN client's policy routing: its own table and two rules, in the style of wg-quick
//! and Tailscale, and the kernel calls that add and remove them.
//!
//! Every packet without the node's firewall mark (`node.fwmark`) looks up the client's
//! table (`vpn.client.table`, 29547) first, at `vpn.client.priority` (5190: after the
//! `local` rule, before Tailscale's 5210-5270 and before `main`). The table holds:
//!
//! - `default dev <tun> src <lease>` for each family the lease has; for IPv6 without a
//!   leased address `unreachable default` instead, so IPv6 fails at once (happy eyeballs
//!   moves on) and never leaves through `main`;
//! - the mesh's own prefixes (the TUN device's addresses) through the TUN from the node's
//!   mesh address, so the mesh keeps its addresses;
//! - `throw` for on-link LAN prefixes, only with `--allow-lan` (the lookup goes on in
//!   `main`);
//! - `blackhole default` at the highest metric, for both families: when the TUN device is
//!   gone (its routes go with it) lookups still end in this table, closed.
//!
//! The node's own packets carry the mark and skip the table: that, and nothing per
//! destination, keeps the tunnel's transport out of the tunnel. There is no
//! `suppress_prefixlength 0` on `main` (wg-quick's), which would let any more specific
//! route in `main` win: the TunnelVision leak.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use skywire_dataplane::engine::Fwmark;
use skywire_dataplane::route::Prefix;
use skywire_dataplane::sys::netlink::{self, RouteKind, RouteSpec, RuleSpec};
use skywire_dataplane::sys::netns::interface_index;

use super::proto::LeaseReply;

/// What a recorded route does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Out through this interface (by name: a restarted node's TUN has a new index).
    Device(String),
    /// Dropped.
    Blackhole,
    /// Refused with "network unreachable".
    Unreachable,
    /// Looked up in the next rule's table.
    Throw,
}

/// A route the client adds, as its state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    #[serde(with = "text")]
    pub prefix: Prefix,
    /// What it does.
    pub kind: Kind,
    /// The table.
    pub table: u32,
    /// The metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// The source address for new packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
}

/// A rule the client adds: `not fwmark MARK/MASK lookup TABLE pref PRIORITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
    /// `pref`.
    pub priority: u32,
    /// The node's mark.
    pub mark: u32,
    /// Its mask.
    pub mask: u32,
    /// The table.
    pub table: u32,
}

impl Rule {
    fn spec(&self) -> RuleSpec {
        RuleSpec {
            ipv6: self.ipv6,
            priority: self.priority,
            fwmark: Some((self.mark, self.mask)),
            invert: true,
            table: self.table,
        }
    }
}

/// The client's table for `lease` through `tun` (see the module doc). `mesh` are the TUN
/// device's own addresses (with their lengths), `lan` the on-link prefixes to leave to
/// `main` (empty without `--allow-lan`).
pub fn client_routes(
    tun: &str,
    mesh: &[Prefix],
    lease: &LeaseReply,
    table: u32,
    lan: &[Prefix],
) -> Vec<Route> {
    let route = |prefix: Prefix, kind, metric, source| Route {
        prefix,
        kind,
        table,
        metric,
        source,
    };
    let (any4, any6) = defaults();
    let device = || Kind::Device(tun.to_owned());
    let mut routes = vec![route(any4, device(), None, Some(IpAddr::V4(lease.ipv4)))];
    match lease.ipv6 {
        Some(v6) => routes.push(route(any6, device(), None, Some(IpAddr::V6(v6)))),
        None => routes.push(route(any6, Kind::Unreachable, None, None)),
    }
    for own in mesh {
        routes.push(Route {
            prefix: network(own),
            kind: device(),
            table,
            metric: None,
            source: Some(own.addr()),
        });
    }
    for prefix in lan {
        routes.push(Route {
            prefix: network(prefix),
            kind: Kind::Throw,
            table,
            metric: None,
            source: None,
        });
    }
    for default in [any4, any6] {
        routes.push(route(default, Kind::Blackhole, Some(u32::MAX), None));
    }
    routes
}

/// `0.0.0.0/0` and `::/0`.
pub fn defaults() -> (Prefix, Prefix) {
    let any = |ip: IpAddr| Prefix::new(ip, 0).unwrap_or_else(|| unreachable!());
    (
        any(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        any(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    )
}

/// `prefix` with its host bits cleared.
pub fn network(prefix: &Prefix) -> Prefix {
    Prefix::new(prefix.network(), prefix.len()).unwrap_or(*prefix)
}

/// The client's two rules (IPv4 and IPv6).
pub fn client_rules(fwmark: Fwmark, table: u32, priority: u32) -> [Rule; 2] {
    [false, true].map(|ipv6| Rule {
        ipv6,
        priority,
        mark: fwmark.mark,
        mask: fwmark.mask,
        table,
    })
}

/// Whether the kernel has no IPv6 (then the IPv6 half is skipped).
fn no_ipv6(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAFNOSUPPORT)
}

/// Add `route`; present already counts as added.
pub fn add_route(route: &Route) -> io::Result<()> {
    let Some(spec) = spec(route)? else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface for the route to {}", route.prefix),
        ));
    };
    match netlink::add_route_spec(&spec) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if no_ipv6(&e) && route.prefix.addr().is_ipv6() => Ok(()),
        other => other,
    }
}

/// Remove `route`; absent (or its interface gone) counts as removed.
pub fn delete_route(route: &Route) -> io::Result<()> {
    let Some(spec) = spec(route)? else {
        return Ok(());
    };
    match netlink::delete_route_spec(&spec) {
        Err(e) if e.kind() == io::ErrorKind::NotFound || no_ipv6(&e) => Ok(()),
        other => other,
    }
}

/// Add `rule` exactly once: copies left by a crashed run are removed first.
pub fn add_rule(rule: &Rule) -> io::Result<()> {
    delete_rule(rule)?;
    match netlink::add_rule(&rule.spec()) {
        Err(e) if no_ipv6(&e) && rule.ipv6 => Ok(()),
        other => other,
    }
}

/// Remove every copy of `rule`.
pub fn delete_rule(rule: &Rule) -> io::Result<()> {
    for _ in 0..64 {
        match netlink::delete_rule(&rule.spec()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound || no_ipv6(&e) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The kernel's form of `route`; `None` when its interface is gone.
fn spec(route: &Route) -> io::Result<Option<RouteSpec>> {
    let kind = match &route.kind {
        Kind::Device(name) => match interface_index(name) {
            Ok(index) => RouteKind::Device(index),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
        Kind::Blackhole => RouteKind::Blackhole,
        Kind::Unreachable => RouteKind::Unreachable,
        Kind::Throw => RouteKind::Throw,
    };
    Ok(Some(RouteSpec {
        prefix: route.prefix,
        kind,
        table: route.table,
        metric: route.metric,
        source: route.source,
    }))
}

/// Serde as text, for types with `Display` and `FromStr` (prefixes, keys).
pub(crate) mod text {
    use core::fmt::Display;
    use core::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    /// As its `Display`.
    pub(crate) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// From its `FromStr`.
    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn lease(v6: bool) -> LeaseReply {
        LeaseReply {
            ipv4: "198.19.128.2".parse().unwrap(),
            ipv6: v6.then(|| "fd00:5b::2".parse().unwrap()),
            dns: Vec::new(),
            mtu: 1420,
        }
    }

    fn show(routes: &[Route]) -> Vec<String> {
        routes
            .iter()
            .map(|r| {
                let kind = match &r.kind {
                    Kind::Device(d) => format!("dev {d}"),
                    Kind::Blackhole => "blackhole".into(),
                    Kind::Unreachable => "unreachable".into(),
                    Kind::Throw => "throw".into(),
                };
                let mut s = format!("{} {kind} table {}", r.prefix, r.table);
                if let Some(m) = r.metric {
                    s.push_str(&format!(" metric {m}"));
                }
                if let Some(src) = r.source {
                    s.push_str(&format!(" src {src}"));
                }
                s
            })
            .collect()
    }

    #[test]
    fn the_table_tunnels_both_families_and_ends_in_blackholes() {
        let routes = client_routes(
            "sw0",
            &[p("198.19.77.1/24")],
            &lease(true),
            29547,
            &[p("192.168.1.7/24")],
        );
        assert_eq!(
            show(&routes),
            [
                "0.0.0.0/0 dev sw0 table 29547 src 198.19.128.2",
                "::/0 dev sw0 table 29547 src fd00:5b::2",
                "198.19.77.0/24 dev sw0 table 29547 src 198.19.77.1",
                "192.168.1.0/24 throw table 29547",
                "0.0.0.0/0 blackhole table 29547 metric 4294967295",
                "::/0 blackhole table 29547 metric 4294967295",
            ]
        );
        // An exit without IPv6: refused at once, never through main.
        let routes = client_routes("sw0", &[], &lease(false), 7, &[]);
        assert_eq!(show(&routes)[1], "::/0 unreachable table 7");
        // The state file keeps them as they are.
        let json = serde_json::to_string(&routes).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Route>>(&json).unwrap(), routes);
    }

    #[test]
    fn the_rules_send_every_unmarked_packet_to_the_table() {
        let rules = client_rules(Fwmark::DEFAULT, 29547, 5190);
        assert_eq!(rules.map(|r| r.ipv6), [false, true]);
        let spec = rules[0].spec();
        assert_eq!(spec.fwmark, Some((0x736b_0000, 0xffff_0000)));
        assert!(spec.invert);
        assert_eq!((spec.table, spec.priority), (29547, 5190));
    }
}
