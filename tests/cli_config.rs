//! `skywire pubkey --config`, run as the real binary: the key named by `node.key` (relative to
//! the config file's folder), `FILE:LINE` and the key path in errors, and exit codes (78 for
//! a bad or missing config, 2 for usage).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fs;
use std::path::PathBuf;

use common::{Scratch, path_arg, skywire_in};

/// RFC 7748 section 6.1, Alice: a known private key and its public key.
const PRIVATE_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const PUBLIC_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

/// A 0600 key file `name` in `dir` holding the known key.
fn known_key(dir: &Scratch, name: &str) -> PathBuf {
    dir.file(name, &format!("{PRIVATE_HEX}\n"), 0o600)
}

#[test]
fn pubkey_with_config_prints_the_public_key_of_node_key() {
    let dir = Scratch::new();
    known_key(&dir, "keys/node.key");
    let config = dir.file("config.yaml", "node:\n  key: keys/node.key\n", 0o644);

    // Run from somewhere else: the relative key path follows the config file, not the cwd.
    let (out, stdout, stderr) = skywire_in(
        &std::env::temp_dir(),
        &["pubkey", "--config", path_arg(&config)],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{PUBLIC_HEX}\n"));
    assert!(!stdout.contains(PRIVATE_HEX) && !stderr.contains(PRIVATE_HEX));

    // The short form and a config named relative to the cwd work the same way.
    let (out, stdout, stderr) = skywire_in(dir.dir(), &["pubkey", "-c", "config.yaml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{PUBLIC_HEX}\n"));
}

#[test]
fn the_repo_example_config_names_a_key_next_to_it() {
    // Copy the example next to a key, as `skywire keygen --out node.key` would leave it.
    let dir = Scratch::new();
    known_key(&dir, "node.key");
    let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")).unwrap();
    let config = dir.file("config.yaml", &example, 0o644);
    let (out, stdout, stderr) = skywire_in(dir.dir(), &["pubkey", "--config", path_arg(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{PUBLIC_HEX}\n"));
}

#[test]
fn an_unknown_key_exits_78_naming_file_line_and_key() {
    let dir = Scratch::new();
    known_key(&dir, "node.key");
    let config = dir.file(
        "config.yaml",
        "# comment\nnode:\n  key: node.key\n  kee: typo\n",
        0o644,
    );
    let (out, stdout, stderr) = skywire_in(dir.dir(), &["pubkey", "--config", path_arg(&config)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{}:4:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("node.kee"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_wrong_type_in_apps_exits_78_too() {
    let dir = Scratch::new();
    known_key(&dir, "node.key");
    let config = dir.file(
        "config.yaml",
        "node:\n  key: node.key\napps:\n  foo:\n    path: p\n    daemon: sometimes\n",
        0o644,
    );
    let (out, _, stderr) = skywire_in(dir.dir(), &["pubkey", "--config", path_arg(&config)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("{}:6:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("apps.foo.daemon"), "{stderr}");
}

#[test]
fn a_missing_config_exits_78() {
    let dir = Scratch::new();
    let missing = dir.path("nope.yaml");
    let (out, _, stderr) = skywire_in(dir.dir(), &["pubkey", "--config", path_arg(&missing)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains(path_arg(&missing)), "{stderr}");
}

#[test]
fn a_loose_key_named_by_the_config_exits_78_and_names_both_files() {
    let dir = Scratch::new();
    let key = dir.file("node.key", &format!("{PRIVATE_HEX}\n"), 0o644);
    let config = dir.file("config.yaml", "node:\n  key: node.key\n", 0o644);
    let (out, stdout, stderr) = skywire_in(dir.dir(), &["pubkey", "--config", path_arg(&config)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!("{}: node.key", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains(path_arg(&key)), "{stderr}");
    assert!(!stderr.contains(PRIVATE_HEX), "{stderr}");
}

#[test]
fn key_and_config_are_exclusive_and_one_is_required() {
    let dir = Scratch::new();
    let key = known_key(&dir, "node.key");
    let config = dir.file("config.yaml", "node:\n  key: node.key\n", 0o644);
    let (out, stdout, stderr) = skywire_in(
        dir.dir(),
        &[
            "pubkey",
            "--key",
            path_arg(&key),
            "--config",
            path_arg(&config),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("--config"), "{stderr}");

    let (out, _, stderr) = skywire_in(dir.dir(), &["pubkey"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
}
