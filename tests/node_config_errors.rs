//! `skywire node --config F --check`, run as the real binary (no root needed): a good config
//! exits 0; each kind of bad config exits 78 with one error line naming the file, the line
//! and the key: a YAML syntax error, an unknown key, a bad prefix, a missing key file, a key
//! file others can read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{Scratch, chmod, path_arg, skywire, text};

/// Bad configuration (DESIGN.md, "User surface").
const EXIT_CONFIG: i32 = 78;

/// Node A of the three-hop topology, every key written; the line numbers below refer to
/// this text.
const GOOD: &str = "\
node:
  key: node.key
  listen: 198.18.1.1:6000
  control_socket: ctl/node.sock
  tun:
    name: sky0
    addresses: [10.77.0.1/24, fd77::1/64]
  routes:
    - name: to-c
      peer: c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0
      prefixes: [10.77.0.3/32, fd77::3/128]
      first_hop: 198.18.1.2:6000
      out_id: 100
      in_id: 201
      prev_hop: 198.18.1.2:6000
      persistent_keepalive: 25s
  relays:
    - { in_id: 300, prev_hop: 198.18.1.5:6000, out_id: 301, next_hop: 198.18.1.6:6000 }
";

/// `GOOD` with its first `from` replaced by `to` (which must be there).
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} is not in the good config");
    GOOD.replacen(from, to, 1)
}

/// `skywire node --config PATH --check`.
fn check(config: &Path) -> Output {
    skywire(&["node", "--config", path_arg(config), "--check"]).0
}

/// Exit 78, nothing on stdout, and exactly one line on stderr that starts with
/// `skywire: error: FILE:LINE:` and names `key` and `what`. Returns that line.
fn assert_bad_config(config: &Path, line: u32, key: &str, what: &[&str]) -> String {
    let out = check(config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "not one error line: {err}");
    let prefix = format!("skywire: error: {}:{line}:", config.display());
    assert!(err.starts_with(&prefix), "expected {prefix:?}, got: {err}");
    assert!(
        err.contains(&format!(" {key}: ")),
        "the key {key:?} is not named: {err}"
    );
    for fragment in what {
        assert!(err.contains(fragment), "{fragment:?} missing: {err}");
    }
    println!("{}", err.trim_end());
    err
}

#[test]
fn a_good_config_passes_the_check() {
    let dir = Scratch::new();
    let key = dir.keygen("node.key");
    let config = dir.write("good.yaml", GOOD);
    let out = check(&config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let said = text(&out.stdout);
    assert!(said.contains("ok"), "{said}");
    // The check starts nothing: no control socket folder appears.
    assert!(
        !dir.path("ctl").exists(),
        "--check created the socket folder"
    );
    // It names the node by its public key.
    let (_, public, _) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert!(said.contains(public.trim()), "{said}");
}

#[test]
fn a_yaml_syntax_error_names_its_line() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    // `listen` indented one space deeper than `key`: not YAML.
    let config = dir.write(
        "syntax.yaml",
        &edit("  listen: 198.18.1.1:6000", "   listen: 198.18.1.1:6000"),
    );
    assert_bad_config(&config, 3, "node", &["mapping values are not allowed"]);
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    let config = dir.write(
        "unknown.yaml",
        &edit("      in_id: 201\n", "      in_id: 201\n      inid: 3\n"),
    );
    assert_bad_config(
        &config,
        15,
        "node.routes[0].inid",
        &["unknown field", "inid"],
    );

    // In the tun section and at the top of the node section too.
    let config = dir.write(
        "unknown-tun.yaml",
        &edit("    name: sky0", "    nmae: sky0"),
    );
    assert_bad_config(&config, 6, "node.tun.nmae", &["unknown field"]);
    let config = dir.write(
        "unknown-node.yaml",
        &edit("  listen: 198.18.1.1:6000", "  listen_on: 198.18.1.1:6000"),
    );
    assert_bad_config(&config, 3, "node.listen_on", &["unknown field"]);
}

#[test]
fn a_bad_prefix_is_named_with_its_line() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    let config = dir.write("prefix.yaml", &edit("10.77.0.3/32", "10.77.0.3/33"));
    assert_bad_config(&config, 11, "node.routes[0].prefixes[0]", &["prefix"]);
    let config = dir.write("prefix-addr.yaml", &edit("fd77::3/128", "fd77::g/128"));
    assert_bad_config(&config, 11, "node.routes[0].prefixes[1]", &["prefix"]);
    let config = dir.write("tun-addr.yaml", &edit("10.77.0.1/24", "10.77.0.1"));
    assert_bad_config(&config, 7, "node.tun.addresses[0]", &["ADDRESS/LENGTH"]);
}

#[test]
fn a_missing_key_file_is_named_with_the_key_line() {
    let dir = Scratch::new();
    let config = dir.write("nokey.yaml", GOOD);
    // It names the file it looked for, resolved against the config's folder.
    let looked_for = dir.path("node.key").display().to_string();
    assert_bad_config(&config, 2, "node.key", &[&looked_for]);
    let config = dir.write(
        "nokey2.yaml",
        &edit("key: node.key", "key: keys/absent.key"),
    );
    assert_bad_config(&config, 2, "node.key", &["absent.key"]);
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = Scratch::new();
    let key = dir.keygen("node.key");
    chmod(&key, 0o644);
    let config = dir.write("open.yaml", GOOD);
    assert_bad_config(&config, 2, "node.key", &["0644"]);

    // Back to 0600: good again.
    chmod(&key, 0o600);
    assert_eq!(check(&config).status.code(), Some(0));
}
