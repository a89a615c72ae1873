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

#[test]
fn pinned_addresses_and_ranges_are_typed_and_checked() {
    let text = format!(
        "manager:\n  address_ranges: [10.77.0.0/16, \"fd77::/64\"]\n  addresses:\n    \
         - node: {A}\n      addresses: [10.77.0.1/32, \"fd77::1/128\"]\n    \
         - node: {B}\n      addresses: [10.77.0.2/32]\n"
    );
    let manager = parse(&text).unwrap().manager;
    assert_eq!(
        manager.address_ranges(),
        Some(
            &[
                "10.77.0.0/16".parse().unwrap(),
                "fd77::/64".parse().unwrap()
            ][..]
        )
    );
    assert_eq!(manager.addresses().len(), 2);
    let params = manager.params();
    assert_eq!(params.pinned, manager.addresses().to_vec());
    assert_eq!(params.listen_ip, Some(manager.listen().ip()));
    // Absent: no pins, no ranges.
    let plain = parse("manager:\n  listen: 127.0.0.1:5999\n")
        .unwrap()
        .manager;
    assert!(plain.addresses().is_empty());
    assert_eq!(plain.address_ranges(), None);

    let not_host =
        format!("manager:\n  addresses:\n    - node: {A}\n      addresses: [10.77.0.0/24]\n");
    assert_invalid(
        &not_host,
        4,
        "manager.addresses[0].addresses[0]",
        Problem::PinnedAddressNotHost,
    );
    let outside = format!(
        "manager:\n  address_ranges: [10.77.0.0/16]\n  addresses:\n    - node: {A}\n      \
         addresses: [10.78.0.1/32]\n"
    );
    assert_invalid(
        &outside,
        5,
        "manager.addresses[0].addresses[0]",
        Problem::PinnedAddressOutsideRanges,
    );
    let twice = format!(
        "manager:\n  addresses:\n    - node: {A}\n      addresses: [10.77.0.1/32]\n    \
         - node: {B}\n      addresses: [10.77.0.1/32]\n"
    );
    assert_invalid(
        &twice,
        6,
        "manager.addresses[1].addresses[0]",
        Problem::DuplicatePinnedAddress,
    );
}
