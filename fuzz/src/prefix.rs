//! Target for `route::prefix`: the destination address of a packet read from the TUN device,
//! the longest-prefix match that picks its route, and the source address of a packet a
//! peer sealed (checked against the peer's prefixes).
//!
//! `destination` and `source` are compared with a restatement of the IPv4 and IPv6 header
//! layouts, and
//! `PrefixTable::lookup` (a table built once per process, with nested, overlapping and
//! default prefixes of both families) with a naive scan for the longest containing prefix.

use std::net::IpAddr;
use std::sync::OnceLock;

use skywire_dataplane::route::prefix::{destination as parse_destination, source as parse_source};
use skywire_dataplane::route::{Prefix, PrefixTable};

/// The table's prefixes; each maps to its index here.
pub const PREFIXES: [&str; 8] = [
    "0.0.0.0/0",
    "10.77.0.0/16",
    "10.77.3.1/24",
    "10.77.3.9/32",
    "192.168.0.0/17",
    "fd77::/64",
    "fd77::1:0/112",
    "::/0",
];

fn prefixes() -> &'static [(Prefix, usize)] {
    static PARSED: OnceLock<Vec<(Prefix, usize)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        PREFIXES
            .iter()
            .enumerate()
            .map(|(i, s)| (s.parse().expect("a valid prefix"), i))
            .collect()
    })
}

fn table() -> &'static PrefixTable<usize> {
    static TABLE: OnceLock<PrefixTable<usize>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = PrefixTable::default();
        for (prefix, i) in prefixes() {
            table.insert(*prefix, *i);
        }
        table
    })
}

/// Find the destination of a packet and look it up.
pub fn destination(data: &[u8]) {
    let expected = match data.first().map(|b| b >> 4) {
        Some(4) if data.len() >= 20 => {
            Some(IpAddr::from(<[u8; 4]>::try_from(&data[16..20]).expect("4")))
        }
        Some(6) if data.len() >= 40 => Some(IpAddr::from(
            <[u8; 16]>::try_from(&data[24..40]).expect("16"),
        )),
        _ => None,
    };
    let found = parse_destination(data);
    assert_eq!(found, expected);
    // The source: bytes 12..16 of an IPv4 header (long enough for them), 8..24 of IPv6.
    let expected_source = match data.first().map(|b| b >> 4) {
        Some(4) if data.len() >= 16 => {
            Some(IpAddr::from(<[u8; 4]>::try_from(&data[12..16]).expect("4")))
        }
        Some(6) if data.len() >= 24 => Some(IpAddr::from(
            <[u8; 16]>::try_from(&data[8..24]).expect("16"),
        )),
        _ => None,
    };
    assert_eq!(parse_source(data), expected_source);
    let Some(ip) = found else { return };

    let naive = prefixes()
        .iter()
        .filter(|(p, _)| p.contains(ip))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, i)| *i);
    assert_eq!(table().lookup(ip).copied(), naive, "lookup({ip})");
}
