use super::*;
use crate::config::tests::{Scratch, assert_at, assert_conflict, assert_invalid, parse};
use crate::config::{Config, Position};
use crate::keyfile::{self, KeyFileError};
use core::time::Duration;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;
use std::fs;
use std::os::unix::fs::PermissionsExt;

const B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const C: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";

/// A full node section: every key written, both address families, a route through a
/// relay and a relay rule.
const FULL: &str = "\
node:
  key: keys/node.key
  listen: 198.18.0.1:7000
  control_socket: run/a.sock
  tun:
    name: sky0
    addresses: [10.77.0.1/24, fd77::1/64]
    mtu: 1400
  routes:
    - name: to-b
      peer: b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0
      prefixes: [10.77.0.2/32, fd77::2/128]
      first_hop: 198.18.0.2:6000
      out_id: 12
      in_id: 21
      prev_hop: 198.18.0.2:6000
      persistent_keepalive: 25s
    - name: to-c
      peer: C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0C0
      prefixes: [10.77.0.3/32, 10.99.0.0/16]
      first_hop: \"[fd00::2]:6000\"
      out_id: 100
      in_id: 201
      peer_in_id: 101
      prev_hop: \"[fd00::2]:6000\"
  relays:
    - { in_id: 300, prev_hop: 198.18.0.4:6000, out_id: 4294967295, next_hop: 198.18.0.5:6000 }
";

/// The start of a node section with a TUN device; routes go from line 6.
const TUN: &str = "node:\n  tun:\n    name: sky0\n    addresses: [10.77.0.1/24]\n  routes:\n";

/// A route to `B` as one flow-style list item.
fn route(name: &str, in_id: u32, prefixes: &str) -> String {
    format!(
        "    - {{ name: {name}, peer: {B}, prefixes: [{prefixes}], first_hop: 198.18.0.2:6000, \
             out_id: 7, in_id: {in_id}, prev_hop: 198.18.0.2:6000 }}\n"
    )
}

fn prefix(text: &str) -> Prefix {
    text.parse().unwrap()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

/// A manager's public key.
const M: &str = "3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e3e";

/// A node section with `listen` and a manager link; more keys of the link follow from
/// line 6.
fn managed(listen: &str) -> String {
    format!("node:\n  listen: {listen}\n  manager:\n    address: 127.0.0.1:5999\n    key: {M}\n")
}

#[test]
fn a_managed_node_has_its_manager_link() {
    let config = parse(&managed("198.18.0.1:6000")).unwrap();
    let link = ManagerLink {
        address: addr("127.0.0.1:5999"),
        key: PublicKey::from_bytes([0x3e; 32]),
        endpoint: addr("198.18.0.1:6000"),
        accept: Vec::new(),
    };
    assert_eq!(config.node.manager(), Some(&link));

    // A written endpoint wins over listen; IPv6 works for all three addresses.
    let text = format!(
        "node:\n  listen: \"[fd00::1]:6000\"\n  manager:\n    address: \"[fd00::9]:5999\"\n    \
             key: {M}\n    endpoint: \"[fd00::1]:7000\"\n"
    );
    let link = parse(&text).unwrap().node.manager().cloned().unwrap();
    assert_eq!(link.address, addr("[fd00::9]:5999"));
    assert_eq!(link.endpoint, addr("[fd00::1]:7000"));

    // A managed node may have a TUN device and relay rules, and no routes.
    let text = format!(
        "{}  tun: {{ name: sky0, addresses: [10.77.0.1/24] }}\n  routes: []\n  relays:\n    \
             - {{ in_id: 300, prev_hop: 198.18.0.4:6000, out_id: 301, next_hop: 198.18.0.5:6000 }}\n",
        managed("198.18.0.1:6000")
    );
    let node = parse(&text).unwrap().node;
    assert!(node.manager().is_some() && node.tun().is_some());
    assert_eq!((node.routes().len(), node.relays().len()), (0, 1));

    // Without `manager`, or with `manager:` and no value, a node is static.
    assert_eq!(parse("node:\n  key: k\n").unwrap().node.manager(), None);
    assert_eq!(parse("node:\n  manager:\n").unwrap().node.manager(), None);
}

#[test]
fn a_managed_node_needs_an_endpoint_unless_listen_is_one() {
    for listen in ["0.0.0.0:6000", "\"[::]:6000\"", "198.18.0.1:0"] {
        assert_invalid(
            &managed(listen),
            3,
            "node.manager.endpoint",
            Problem::ManagerEndpointRequired,
        );
        let text = format!("{}    endpoint: 198.18.0.1:6000\n", managed(listen));
        let link = parse(&text).unwrap().node.manager().cloned().unwrap();
        assert_eq!(link.endpoint, addr("198.18.0.1:6000"), "{listen}");
    }
    // The default listen, 0.0.0.0:6000, is not one either; the error points at manager.
    let text =
        format!("# a node\nnode:\n  key: k\n  manager: {{ address: 127.0.0.1:5999, key: {M} }}\n");
    assert_invalid(
        &text,
        4,
        "node.manager.endpoint",
        Problem::ManagerEndpointRequired,
    );
}

#[test]
fn a_managed_node_becomes_a_node_setup_without_its_manager() {
    let dir = Scratch::new();
    let public = keyfile::write_new_key(dir.0.join("node.key")).unwrap();
    let text = format!("{}  key: node.key\n", managed("198.18.0.1:6000"));
    let path = dir.file("config.yaml", text.as_bytes());
    let config = Config::load(&path).unwrap();
    let setup = config.node_setup().unwrap();
    assert_eq!(setup.public_key(), public);
    assert_eq!(setup.listen, addr("198.18.0.1:6000"));
    assert!(setup.routes.is_empty());
}

#[test]
fn bad_manager_links_are_located() {
    let good = format!("{}    endpoint: 198.18.0.1:6000\n", managed("0.0.0.0:6000"));
    parse(&good).unwrap();
    let cases: [(&str, &str, u64, &str, Problem); 6] = [
        (
            "address: 127.0.0.1:5999",
            "address: 0.0.0.0:5999",
            4,
            "node.manager.address",
            Problem::UnspecifiedManagerAddress,
        ),
        (
            "address: 127.0.0.1:5999",
            "address: 127.0.0.1:0",
            4,
            "node.manager.address",
            Problem::UnspecifiedManagerAddress,
        ),
        (
            "address: 127.0.0.1:5999",
            "address: localhost:5999",
            4,
            "node.manager.address",
            Problem::NotASocketAddress,
        ),
        (
            &format!("key: {M}"),
            &format!("key: {}", &M[2..]),
            5,
            "node.manager.key",
            Problem::PublicKeyLength,
        ),
        (
            &format!("key: {M}"),
            &format!("key: {}zz", &M[2..]),
            5,
            "node.manager.key",
            Problem::PublicKeyNotHex,
        ),
        (
            "endpoint: 198.18.0.1:6000",
            "endpoint: 0.0.0.0:6000",
            6,
            "node.manager.endpoint",
            Problem::UnspecifiedHopAddress,
        ),
    ];
    for (from, to, line, key, problem) in cases {
        assert!(good.contains(from), "{from}");
        assert_invalid(&good.replacen(from, to, 1), line, key, problem);
    }

    // Unknown and missing keys are parse errors naming the key.
    let err = parse(&good.replace("endpoint:", "endpont:")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert_at(&err, 6, "node.manager.endpont");
    for missing in ["address", "key"] {
        let text: String = good
            .lines()
            .filter(|line| !line.trim_start().starts_with(&format!("{missing}:")))
            .map(|line| format!("{line}\n"))
            .collect();
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
        assert_eq!(err.key(), Some("node.manager"), "{err}");
        assert!(err.to_string().contains(missing), "{err}");
    }
}

#[test]
fn a_full_node_section_becomes_the_expected_setup() {
    let dir = Scratch::new();
    let public = keyfile::write_new_key(dir.0.join("keys/node.key")).unwrap();
    let path = dir.file("config.yaml", FULL.as_bytes());
    let config = Config::load(&path).unwrap();
    let node = &config.node;
    assert_eq!(node.key, dir.0.join("keys/node.key"));
    assert_eq!(node.control_socket(), dir.0.join("run/a.sock"));

    let setup = config.node_setup().unwrap();
    assert_eq!(setup.public_key(), public);
    assert_eq!(setup.listen, addr("198.18.0.1:7000"));
    assert_eq!(
        setup.tun,
        Some(TunSetup {
            name: "sky0".into(),
            addresses: vec![prefix("10.77.0.1/24"), prefix("fd77::1/64")],
            mtu: 1400,
        })
    );
    assert_eq!(
        setup.routes,
        [
            RouteSetup {
                name: "to-b".into(),
                peer: PublicKey::from_bytes([0xb0; 32]),
                prefixes: vec![prefix("10.77.0.2/32"), prefix("fd77::2/128")],
                first_hop: addr("198.18.0.2:6000"),
                out_id: id(12),
                in_id: id(21),
                // Not written: the first hop is the peer, which receives with `out_id`.
                peer_in_id: id(12),
                prev_hop: addr("198.18.0.2:6000"),
                persistent_keepalive: Some(Duration::from_secs(25)),
            },
            RouteSetup {
                name: "to-c".into(),
                peer: PublicKey::from_bytes([0xc0; 32]),
                prefixes: vec![prefix("10.77.0.3/32"), prefix("10.99.0.0/16")],
                first_hop: addr("[fd00::2]:6000"),
                out_id: id(100),
                in_id: id(201),
                peer_in_id: id(101),
                prev_hop: addr("[fd00::2]:6000"),
                persistent_keepalive: None,
            },
        ]
    );
    assert_eq!(
        setup.relays,
        [RelaySetup {
            in_id: id(300),
            prev_hop: addr("198.18.0.4:6000"),
            out_id: id(u32::MAX),
            next_hop: addr("198.18.0.5:6000"),
        }]
    );
    // The accessors show the same values.
    assert_eq!(node.listen(), setup.listen);
    assert_eq!(node.tun(), setup.tun.as_ref());
    assert_eq!(node.routes(), setup.routes);
    assert_eq!(node.relays(), setup.relays);
}

#[test]
fn left_out_keys_take_their_defaults() {
    let config = parse("node:\n  key: k\n").unwrap();
    assert_eq!(config.node.listen(), addr("0.0.0.0:6000"));
    assert_eq!(config.node.listen(), DEFAULT_LISTEN);
    assert_eq!(
        config.node.control_socket(),
        Path::new("/run/skywire/node.sock")
    );
    assert_eq!(config.node.tun(), None);
    assert!(config.node.routes().is_empty() && config.node.relays().is_empty());
    for empty in [
        "node:\n  tun:\n  routes:\n  relays:\n",
        "node: {routes: [], relays: []}\n",
    ] {
        let config = parse(empty).unwrap();
        assert_eq!(config.node, NodeConfig::default(), "{empty}");
    }

    let text = format!("{TUN}{}", route("a", 1, "10.0.0.0/8"));
    let config = parse(&text).unwrap();
    assert_eq!(config.node.tun().unwrap().mtu, DEFAULT_MTU);
    assert_eq!(config.node.routes()[0].persistent_keepalive, None);
    // A relative control socket follows the config file, like every path.
    let config = parse("node:\n  control_socket: s.sock\n").unwrap();
    assert_eq!(config.node.control_socket(), Path::new("conf/s.sock"));
}

#[test]
fn the_three_node_demo_topology_validates() {
    let a = format!(
        "node:\n  tun: {{ name: sky0, addresses: [10.77.0.1/24] }}\n  routes:\n    - {{ name: to-c, \
             peer: {C}, prefixes: [10.77.0.3/32], first_hop: 198.18.0.2:6000, out_id: 100, \
             in_id: 201, prev_hop: 198.18.0.2:6000 }}\n"
    );
    let r = "node:\n  relays:\n    \
                 - { in_id: 100, prev_hop: 198.18.0.1:6000, out_id: 101, next_hop: 198.18.0.3:6000 }\n    \
                 - { in_id: 200, prev_hop: 198.18.0.3:6000, out_id: 201, next_hop: 198.18.0.1:6000 }\n";
    let c = format!(
        "node:\n  tun: {{ name: sky0, addresses: [10.77.0.3/24] }}\n  routes:\n    - {{ name: to-a, \
             peer: {B}, prefixes: [10.77.0.1/32], first_hop: 198.18.0.2:6000, out_id: 200, \
             in_id: 101, prev_hop: 198.18.0.2:6000 }}\n"
    );
    let a = parse(&a).unwrap();
    let r = parse(r).unwrap();
    let c = parse(&c).unwrap();
    assert_eq!(r.node.tun(), None);
    // Each hop's out_id is the next hop's in_id, both ways.
    assert_eq!(a.node.routes()[0].out_id, r.node.relays()[0].in_id);
    assert_eq!(r.node.relays()[0].out_id, c.node.routes()[0].in_id);
    assert_eq!(c.node.routes()[0].out_id, r.node.relays()[1].in_id);
    assert_eq!(r.node.relays()[1].out_id, a.node.routes()[0].in_id);
}

#[test]
fn a_repeated_route_name_is_refused_naming_both() {
    let text = format!(
        "{TUN}{}{}",
        route("a", 1, "10.1.0.0/16"),
        route("a", 2, "10.2.0.0/16")
    );
    assert_conflict(
        &text,
        7,
        "node.routes[1].name",
        (6, "node.routes[0].name"),
        Problem::DuplicateRouteName,
    );
}

#[test]
fn a_repeated_incoming_id_is_refused_across_routes_and_relays() {
    let text = format!(
        "{TUN}{}{}",
        route("a", 5, "10.1.0.0/16"),
        route("b", 5, "10.2.0.0/16")
    );
    assert_conflict(
        &text,
        7,
        "node.routes[1].in_id",
        (6, "node.routes[0].in_id"),
        Problem::DuplicateIncomingId,
    );

    let relay = |in_id: u32| {
        format!(
            "    - {{ in_id: {in_id}, prev_hop: 198.18.0.1:6000, out_id: 9, next_hop: 198.18.0.3:6000 }}\n"
        )
    };
    let text = format!(
        "{TUN}{}  relays:\n{}",
        route("a", 5, "10.1.0.0/16"),
        relay(5)
    );
    assert_conflict(
        &text,
        8,
        "node.relays[0].in_id",
        (6, "node.routes[0].in_id"),
        Problem::DuplicateIncomingId,
    );
    let text = format!("node:\n  relays:\n{}{}{}", relay(1), relay(2), relay(1));
    assert_conflict(
        &text,
        5,
        "node.relays[2].in_id",
        (3, "node.relays[0].in_id"),
        Problem::DuplicateIncomingId,
    );
    // The same id as an out_id elsewhere is fine: out_ids belong to the next hop.
    let text = format!(
        "{TUN}{}  relays:\n{}",
        route("a", 7, "10.1.0.0/16"),
        relay(9)
    );
    parse(&text).unwrap();
}

#[test]
fn a_relay_that_sends_packets_back_where_they_came_from_is_refused() {
    let text = "node:\n  relays:\n    - { in_id: 1, prev_hop: 198.18.0.1:6000, out_id: 2, next_hop: 198.18.0.3:6000 }\n    - { in_id: 3, prev_hop: 198.18.0.3:6000, out_id: 4, next_hop: 198.18.0.3:6000 }\n";
    assert_invalid(text, 4, "node.relays[1].next_hop", Problem::RelayLoop);
    // The same neighbour on another port is another hop.
    parse(&text.replace(
        "next_hop: 198.18.0.3:6000 }\n",
        "next_hop: 198.18.0.3:6001 }\n",
    ))
    .unwrap();
}

#[test]
fn the_same_prefix_on_two_routes_is_refused() {
    let text = format!(
        "{TUN}{}{}",
        route("a", 1, "10.0.0.0/8, 10.1.0.0/16"),
        route("b", 2, "192.168.0.0/16, 10.1.2.3/16")
    );
    assert_conflict(
        &text,
        7,
        "node.routes[1].prefixes[1]",
        (6, "node.routes[0].prefixes[1]"),
        Problem::DuplicatePrefix,
    );
    // Nested prefixes are fine (the longest match wins), and so is a repeat within one
    // route.
    let text = format!(
        "{TUN}{}{}",
        route("a", 1, "10.0.0.0/8, 10.0.0.1/8"),
        route("b", 2, "10.1.0.0/16, 10.1.2.0/24, 10.0.0.0/9")
    );
    parse(&text).unwrap();
}

#[test]
fn routes_with_prefixes_need_a_tun_device() {
    let text = format!(
        "node:\n  key: k\n  routes:\n{}{}",
        route("a", 1, ""),
        route("b", 2, "10.0.0.0/8")
    );
    assert_invalid(
        &text,
        5,
        "node.routes[1].prefixes",
        Problem::RoutesWithoutTun,
    );
    // Routes without prefixes carry app streams only, and need no TUN device.
    let streams_only = format!("node:\n  key: k\n  routes:\n{}", route("a", 1, ""));
    let config = parse(&streams_only).unwrap();
    assert!(config.node.routes()[0].prefixes.is_empty());
}

#[test]
fn a_tun_device_needs_an_address_and_an_ipv6_mtu() {
    assert_invalid(
        "node:\n  tun:\n    name: sky0\n    addresses: []\n",
        4,
        "node.tun.addresses",
        Problem::TunWithoutAddresses,
    );
    assert_invalid(
        "node:\n  tun:\n    name: sky0\n    addresses: [10.0.0.1/24, fd77::1/64]\n    mtu: 1279\n",
        5,
        "node.tun.mtu",
        Problem::MtuTooSmallForIpv6,
    );
    let config = parse("node:\n  tun: {name: sky0, addresses: [10.0.0.1/24], mtu: 576}\n");
    assert_eq!(config.unwrap().node.tun().unwrap().mtu, 576);
    let config = parse("node:\n  tun: {name: sky0, addresses: [fd77::1/64], mtu: 1280}\n");
    assert_eq!(config.unwrap().node.tun().unwrap().mtu, 1280);
    let err = parse("node:\n  tun:\n    name: sky0\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("addresses"), "{err}");
}

#[test]
fn a_route_to_this_node_itself_is_refused_by_node_setup() {
    let dir = Scratch::new();
    let own = keyfile::write_new_key(dir.0.join("node.key")).unwrap();
    let text = format!("{TUN}{}", route("a", 1, "10.0.0.0/8"))
        .replace(B, &own.to_string())
        .replacen("node:\n", "node:\n  key: node.key\n", 1);
    let path = dir.file("test.yaml", text.as_bytes());
    let config = Config::load(&path).unwrap();
    let err = config.node_setup().unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::PeerIsSelf,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.key(), Some("node.routes[0].peer"));
    assert_eq!(err.position().map(|p| p.line), Some(7));
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:7:", path.display())),
        "{shown}"
    );
    assert!(shown.contains("node.routes[0].peer: "), "{shown}");
}

#[test]
fn an_unusable_key_file_is_a_located_config_error_keeping_its_cause() {
    use std::error::Error as _;

    let dir = Scratch::new();
    let path = dir.file("c.yaml", b"# node A\nnode:\n  key: node.key\n");
    let config = Config::load(&path).unwrap();
    let err = config.node_setup().unwrap_err();
    let ConfigError::Key { source, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(source, KeyFileError::Read { .. }), "{source:?}");
    assert_eq!(err.key(), Some("node.key"));
    assert_eq!(err.position(), Some(Position { line: 3, column: 3 }));
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3:3: node.key: ", path.display())),
        "{err}"
    );
    assert!(err.is_bad_config(), "a missing key file is a bad config");
    let cause = err.source().unwrap().to_string();
    assert!(
        cause.contains(&dir.0.join("node.key").display().to_string()),
        "{cause}"
    );

    // A key file others can read: refused, exit 78 (bad config), cause kept.
    let key = dir.file("node.key", format!("{}\n", "11".repeat(32)).as_bytes());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = config.node_setup().unwrap_err();
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
    assert!(err.is_bad_config());

    // Not a key at all.
    fs::write(&key, "not a key\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = config.node_setup().unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Key {
                source: KeyFileError::Parse { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_bad_config());

    // The default key path, not written: the error still names node.key.
    let config = parse("node:\n  listen: 0.0.0.0:0\n").unwrap();
    if !Path::new(DEFAULT_NODE_KEY).exists() {
        let err = config.node_setup().unwrap_err();
        assert_eq!(err.key(), Some("node.key"), "{err}");
    }
}

#[test]
fn an_unknown_key_in_a_route_is_refused_with_its_line() {
    let text = format!(
        "{TUN}    - name: a\n      peer: {B}\n      prefixes: [10.0.0.0/8]\n      \
             first_hop: 198.18.0.2:6000\n      out_id: 1\n      in_id: 2\n      \
             prev_hop: 198.18.0.2:6000\n      keepalive: 25s\n"
    );
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    assert_at(&err, 13, "node.routes[0].keepalive");
    assert!(err.to_string().contains("keepalive"), "{err}");

    let text = format!(
        "{TUN}{}",
        route("a", 1, "10.0.0.0/8").replace(" }", ", mtu: 9 }")
    );
    let err = parse(&text).unwrap_err();
    assert_at(&err, 6, "node.routes[0].mtu");
    let err = parse("node:\n  relays:\n    - { in_id: 1, prev: 198.18.0.1:6000 }\n").unwrap_err();
    assert_at(&err, 3, "node.relays[0].prev");
    let err = parse("node:\n  tun:\n    name: sky0\n    address: [10.0.0.1/8]\n").unwrap_err();
    assert_at(&err, 4, "node.tun.address");
}

#[test]
fn bad_values_are_located_problems() {
    let cases: [(&str, &str, u64, &str, Problem); 10] = [
        (
            "prefixes: [10.0.0.0/8]",
            "prefixes: [10.0.0.0/8, 10.0.0.0/33]",
            8,
            "node.routes[0].prefixes[1]",
            Problem::PrefixBadLength,
        ),
        (
            "prefixes: [10.0.0.0/8]",
            "prefixes: [10.0.0.0]",
            8,
            "node.routes[0].prefixes[0]",
            Problem::PrefixWithoutLength,
        ),
        (
            "out_id: 1",
            "out_id: 0",
            10,
            "node.routes[0].out_id",
            Problem::RouteIdZero,
        ),
        (
            "in_id: 2",
            "in_id: 4294967296",
            11,
            "node.routes[0].in_id",
            Problem::NotARouteId,
        ),
        (
            "in_id: 2",
            "in_id: -2",
            11,
            "node.routes[0].in_id",
            Problem::NotARouteId,
        ),
        (
            &format!("peer: {B}"),
            &format!("peer: {}", &B[1..]),
            7,
            "node.routes[0].peer",
            Problem::PublicKeyLength,
        ),
        (
            &format!("peer: {B}"),
            &format!("peer: {}x", &B[1..]),
            7,
            "node.routes[0].peer",
            Problem::PublicKeyNotHex,
        ),
        (
            "first_hop: 198.18.0.2:6000",
            "first_hop: 198.18.0.2",
            9,
            "node.routes[0].first_hop",
            Problem::NotASocketAddress,
        ),
        (
            "prev_hop: 198.18.0.2:6000",
            "prev_hop: 0.0.0.0:6000",
            12,
            "node.routes[0].prev_hop",
            Problem::UnspecifiedHopAddress,
        ),
        (
            "name: a",
            "name: \"a b\"",
            6,
            "node.routes[0].name",
            Problem::RouteNameNotOneWord,
        ),
    ];
    let good = format!(
        "{TUN}    - name: a\n      peer: {B}\n      prefixes: [10.0.0.0/8]\n      \
             first_hop: 198.18.0.2:6000\n      out_id: 1\n      in_id: 2\n      \
             prev_hop: 198.18.0.2:6000\n"
    );
    parse(&good).unwrap();
    for (from, to, line, key, problem) in cases {
        assert!(good.contains(from), "{from}");
        assert_invalid(&good.replacen(from, to, 1), line, key, problem);
    }

    let base =
        "node:\n  listen: 0.0.0.0:6000\n  tun:\n    name: sky0\n    addresses: [10.0.0.1/8]\n";
    let cases = [
        (
            "listen: 0.0.0.0:6000",
            "listen: localhost:6000",
            2,
            "node.listen",
            Problem::NotASocketAddress,
        ),
        (
            "name: sky0",
            "name: a-name-too-long-x",
            4,
            "node.tun.name",
            Problem::InterfaceNameLength,
        ),
        (
            "name: sky0",
            "name: sky/0",
            4,
            "node.tun.name",
            Problem::InterfaceNameCharacters,
        ),
        (
            "[10.0.0.1/8]",
            "[10.0.0.1/8, 10.0.0/8]",
            5,
            "node.tun.addresses[1]",
            Problem::PrefixBadAddress,
        ),
        (
            "[10.0.0.1/8]",
            "[10.0.0.1/8]\n    mtu: 9001",
            6,
            "node.tun.mtu",
            Problem::MtuOutOfRange,
        ),
    ];
    parse(base).unwrap();
    for (from, to, line, key, problem) in cases {
        assert_invalid(&base.replacen(from, to, 1), line, key, problem);
    }

    let long = format!("node:\n  control_socket: /{}\n", "s".repeat(107));
    assert_invalid(&long, 2, "node.control_socket", Problem::SocketPathTooLong);
    // 107 bytes is fine, given an app socket: the one derived from it would be too long.
    let longest = format!("node:\n  control_socket: /{}\n", "s".repeat(106));
    assert_invalid(
        &longest,
        2,
        "node.control_socket",
        Problem::DerivedAppSocketTooLong,
    );
    parse(&format!("{longest}  apps:\n    socket: /run/apps/a.sock\n")).unwrap();
}

#[test]
fn keepalive_takes_every_duration_form() {
    let keepalive = |value: &str| {
        let text = format!("{TUN}{}", route("a", 1, "10.0.0.0/8"))
            .replace(" }", &format!(", persistent_keepalive: {value} }}"));
        parse(&text).map(|c| c.node.routes()[0].persistent_keepalive)
    };
    assert_eq!(keepalive("25s").unwrap(), Some(Duration::from_secs(25)));
    assert_eq!(keepalive("25").unwrap(), Some(Duration::from_secs(25)));
    assert_eq!(keepalive("\"25\"").unwrap(), Some(Duration::from_secs(25)));
    assert_eq!(keepalive("1m").unwrap(), Some(Duration::from_secs(60)));
    assert_eq!(
        keepalive("500ms").unwrap(),
        Some(Duration::from_millis(500))
    );
    assert_eq!(keepalive("2h").unwrap(), Some(Duration::from_secs(7200)));
    let err = keepalive("1.5s").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::NotADuration,
                ..
            }
        ),
        "{err:?}"
    );
    assert_at(&err, 6, "node.routes[0].persistent_keepalive");
    let err = keepalive("0").unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                problem: Problem::DurationOutOfRange,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unquoted_numbers_and_ipv6_scalars_read_as_written() {
    // Route ids and the MTU written as YAML integers, quoted, and IPv6 prefixes in flow
    // lists all reach their parsers as text.
    let text = format!("{TUN}{}", route("a", 1, "fd77::2/128, \"10.0.0.0/8\""))
        .replace("out_id: 7", "out_id: \"7\"");
    let config = parse(&text).unwrap();
    let route = &config.node.routes()[0];
    assert_eq!(
        route.prefixes,
        [prefix("fd77::2/128"), prefix("10.0.0.0/8")]
    );
    assert_eq!((route.out_id, route.in_id), (id(7), id(1)));
}

#[test]
fn accept_rules_are_typed_and_checked() {
    let text = format!(
        "{}    accept:\n      - peer: any\n        prefixes: [10.77.0.0/24, \"fd77::/64\"]\n      \
         - peer: {B}\n        prefixes: [10.78.0.9/32]\n",
        managed("198.18.0.1:6000")
    );
    let link = parse(&text).unwrap().node.manager().cloned().unwrap();
    assert_eq!(
        link.accept,
        vec![
            AcceptRule {
                peer: None,
                prefixes: vec![prefix("10.77.0.0/24"), prefix("fd77::/64")],
            },
            AcceptRule {
                peer: Some(B.parse().unwrap()),
                prefixes: vec![prefix("10.78.0.9/32")],
            },
        ]
    );
    let b: PublicKey = B.parse().unwrap();
    let c: PublicKey = C.parse().unwrap();
    assert!(link.accept[0].allows(&c, &[prefix("10.77.0.5/32")]));
    assert!(!link.accept[0].allows(&c, &[prefix("10.77.1.5/32")]));
    assert!(!link.accept[1].allows(&c, &[prefix("10.78.0.9/32")]));
    assert!(link.accept[1].allows(&b, &[prefix("10.78.0.9/32")]));
    // A rule's prefix must hold the whole end's prefix, not just overlap it.
    assert!(!link.accept[1].allows(&b, &[prefix("10.78.0.0/24")]));
    // Absent: nobody.
    let plain = parse(&managed("198.18.0.1:6000")).unwrap();
    assert!(plain.node.manager().unwrap().accept.is_empty());

    let bad_peer = format!(
        "{}    accept:\n      - peer: anyone\n        prefixes: [10.77.0.0/24]\n",
        managed("198.18.0.1:6000")
    );
    assert_invalid(
        &bad_peer,
        7,
        "node.manager.accept[0].peer",
        Problem::NotAPeer,
    );
    // Without prefixes (or with none): route ends for app streams only.
    for rule in [
        "      - peer: any\n        prefixes: []\n",
        "      - peer: any\n",
    ] {
        let streams_only = format!("{}    accept:\n{rule}", managed("198.18.0.1:6000"));
        let config = parse(&streams_only).unwrap();
        let accept = &config.node.manager().unwrap().accept;
        assert!(accept[0].allows(&c, &[]));
        assert!(!accept[0].allows(&c, &[prefix("10.77.0.5/32")]));
    }
}
