//! `skywire pubkey --config`, run as the real binary: the key named by `node.key` (relative to
//! the config file's folder), `FILE:LINE` and the key path in errors, and exit codes (78 for
//! a bad or missing config, 2 for usage).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// RFC 7748 section 6.1, Alice: a known private key and its public key.
const PRIVATE_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const PUBLIC_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("skywire-cli-config-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    /// Write `content` to `name` with `mode`.
    fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A 0600 key file `name` holding the known key.
    fn key(&self, name: &str) -> PathBuf {
        self.file(name, &format!("{PRIVATE_HEX}\n"), 0o600)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Run `skywire args...` from `cwd` and return its output, stdout and stderr as text.
fn skywire_in(cwd: &Path, args: &[&str]) -> (Output, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skywire"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    (out, stdout, stderr)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn pubkey_with_config_prints_the_public_key_of_node_key() {
    let dir = Scratch::new();
    dir.key("keys/node.key");
    let config = dir.file("config.yaml", "node:\n  key: keys/node.key\n", 0o644);

    // Run from somewhere else: the relative key path follows the config file, not the cwd.
    let (out, stdout, stderr) =
        skywire_in(&std::env::temp_dir(), &["pubkey", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{PUBLIC_HEX}\n"));
    assert!(!stdout.contains(PRIVATE_HEX) && !stderr.contains(PRIVATE_HEX));

    // The short form and a config named relative to the cwd work the same way.
    let (out, stdout, stderr) = skywire_in(&dir.0, &["pubkey", "-c", "config.yaml"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{PUBLIC_HEX}\n"));
}

#[test]
fn the_repo_example_config_names_a_key_next_to_it() {
    // Copy the example next to a key, as `skywire keygen --out node.key` would leave it.
    let dir = Scratch::new();
    dir.key("node.key");
    let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")).unwrap();
    let config = dir.file("config.yaml", &example, 0o644);
    let (out, stdout, stderr) = skywire_in(&dir.0, &["pubkey", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{PUBLIC_HEX}\n"));
}

#[test]
fn an_unknown_key_exits_78_naming_file_line_and_key() {
    let dir = Scratch::new();
    dir.key("node.key");
    let config = dir.file(
        "config.yaml",
        "# comment\nnode:\n  key: node.key\n  kee: typo\n",
        0o644,
    );
    let (out, stdout, stderr) = skywire_in(&dir.0, &["pubkey", "--config", arg(&config)]);
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
    dir.key("node.key");
    let config = dir.file(
        "config.yaml",
        "node:\n  key: node.key\napps:\n  foo:\n    path: p\n    daemon: sometimes\n",
        0o644,
    );
    let (out, _, stderr) = skywire_in(&dir.0, &["pubkey", "--config", arg(&config)]);
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
    let missing = dir.0.join("nope.yaml");
    let (out, _, stderr) = skywire_in(&dir.0, &["pubkey", "--config", arg(&missing)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stderr.contains(arg(&missing)), "{stderr}");
}

#[test]
fn a_loose_key_named_by_the_config_exits_78_and_names_both_files() {
    let dir = Scratch::new();
    let key = dir.file("node.key", &format!("{PRIVATE_HEX}\n"), 0o644);
    let config = dir.file("config.yaml", "node:\n  key: node.key\n", 0o644);
    let (out, stdout, stderr) = skywire_in(&dir.0, &["pubkey", "--config", arg(&config)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!("{}: node.key", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains(arg(&key)), "{stderr}");
    assert!(!stderr.contains(PRIVATE_HEX), "{stderr}");
}

#[test]
fn key_and_config_are_exclusive_and_one_is_required() {
    let dir = Scratch::new();
    let key = dir.key("node.key");
    let config = dir.file("config.yaml", "node:\n  key: node.key\n", 0o644);
    let (out, stdout, stderr) = skywire_in(
        &dir.0,
        &["pubkey", "--key", arg(&key), "--config", arg(&config)],
    );
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("--config"), "{stderr}");

    let (out, _, stderr) = skywire_in(&dir.0, &["pubkey"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
}
