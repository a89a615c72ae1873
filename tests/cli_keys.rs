//! `skywire keygen` and `skywire pubkey`, run as the real binary: file modes, output format,
//! exit codes, and that private key text never reaches the terminal.
//!
//! CI runs as root, which can read a 0644 file anyway: the 78 for a loose mode must come from
//! skywire's own mode check, and these tests hold whichever user runs them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fs;
use std::path::Path;

use common::{
    Scratch, as_nobody, chmod, is_root, keygen, mode_of, path_arg, skywire, skywire_binary,
};

fn is_lower_hex_key_line(s: &str) -> bool {
    s.len() == 65
        && s.ends_with('\n')
        && s.trim_end_matches('\n')
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Generate a key at `path` and return (public key line, private key text without newline).
fn keygen_ok(path: &Path) -> (String, String) {
    let (stdout, stderr) = keygen(path);
    let secret = fs::read_to_string(path).unwrap().trim_end().to_owned();
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
    (stdout, secret)
}

#[test]
fn keygen_writes_0600_and_pubkey_agrees() {
    let dir = Scratch::new();
    let key = dir.path("node.key");
    let (public, secret) = keygen_ok(&key);

    assert_eq!(mode_of(&key), 0o600);
    assert!(is_lower_hex_key_line(&public), "stdout: {public:?}");
    assert_ne!(public.trim_end(), secret);

    let (out, stdout, stderr) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout, public);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
}

#[test]
fn keygen_says_where_on_stderr_and_creates_the_directory_0700() {
    let dir = Scratch::new();
    let key = dir.path("etc/skywire/node.key");
    let (out, stdout, stderr) = skywire(&["keygen", "-o", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(is_lower_hex_key_line(&stdout), "stdout: {stdout:?}");
    assert!(stderr.contains(path_arg(&key)), "stderr: {stderr}");
    assert_eq!(mode_of(&dir.path("etc/skywire")), 0o700);
    assert_eq!(mode_of(&key), 0o600);
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = Scratch::new();
    let key = dir.path("node.key");
    let (_, secret) = keygen_ok(&key);
    let before = fs::read(&key).unwrap();

    let (out, stdout, stderr) = skywire(&["keygen", "--out", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(stderr.starts_with("skywire: error: "), "stderr: {stderr}");
    assert!(stderr.contains(path_arg(&key)), "stderr: {stderr}");
    assert!(!stderr.contains(&secret));
    assert_eq!(fs::read(&key).unwrap(), before);
    assert_eq!(mode_of(&key), 0o600);
}

#[test]
fn pubkey_refuses_a_key_readable_by_others_with_78() {
    let dir = Scratch::new();
    let key = dir.path("node.key");
    let (_, secret) = keygen_ok(&key);
    chmod(&key, 0o644);

    let (out, stdout, stderr) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(stderr.starts_with("skywire: error: "), "stderr: {stderr}");
    assert!(stderr.contains("0644"), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", path_arg(&key))),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains(&secret));
}

/// A key file another user owns is theirs to rewrite: refused even by root, which could
/// read it. Only root can give a file away, so other users skip this.
#[test]
fn pubkey_refuses_a_key_owned_by_another_user_with_78() {
    if !is_root() {
        println!("skipped: only root can give a file to another user");
        return;
    }
    let dir = Scratch::new();
    let key = dir.path("node.key");
    let (_, secret) = keygen_ok(&key);
    std::os::unix::fs::chown(&key, Some(65534), None).unwrap();

    let (out, stdout, stderr) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(stderr.contains("owned by uid 65534"), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("chown 0 {}", path_arg(&key))),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains(&secret));

    // Given back, the same file is accepted.
    std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    let (out, _, stderr) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

/// `keygen --out` at a symlink neither follows it nor replaces it, dangling or not.
#[test]
fn keygen_refuses_a_symlink_and_leaves_its_target_alone() {
    let dir = Scratch::new();
    let victim = dir.file("victim", "keep me\n", 0o644);
    let link = dir.path("node.key");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (out, stdout, stderr) = skywire(&["keygen", "--out", path_arg(&link)]);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(stderr.contains(path_arg(&link)), "stderr: {stderr}");
    assert!(stderr.contains("symlink"), "stderr: {stderr}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert_eq!(mode_of(&victim), 0o644);

    let dangling = dir.path("dangling.key");
    std::os::unix::fs::symlink(dir.path("nowhere"), &dangling).unwrap();
    let (out, _, stderr) = skywire(&["keygen", "--out", path_arg(&dangling)]);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!dir.path("nowhere").exists(), "keygen followed the symlink");
}

#[test]
fn pubkey_refuses_garbage_with_78() {
    let dir = Scratch::new();
    let key = dir.path("garbage.key");
    fs::write(&key, "this is not a key\n").unwrap();
    chmod(&key, 0o600);

    let (out, stdout, stderr) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(78), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    assert!(stderr.starts_with("skywire: error: "), "stderr: {stderr}");
    assert!(stderr.contains(path_arg(&key)), "stderr: {stderr}");
    assert!(!stderr.contains("this is not a key"), "stderr: {stderr}");
}

#[test]
fn pubkey_of_a_missing_file_is_a_plain_failure() {
    let dir = Scratch::new();
    let key = dir.path("missing.key");
    let (out, stdout, stderr) = skywire(&["pubkey", "--key", path_arg(&key)]);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains(path_arg(&key)), "stderr: {stderr}");
}

/// As root (as in CI) the check runs the binary as `nobody` through `setpriv`, since root
/// writes through directory modes.
#[test]
fn keygen_into_an_unwritable_directory_is_77() {
    let dir = Scratch::new();
    let locked = dir.path("locked");
    fs::create_dir(&locked).unwrap();
    chmod(dir.dir(), 0o755);
    chmod(&locked, 0o500);
    let key = locked.join("node.key");
    let args = ["keygen", "--out", path_arg(&key)];
    let root = fs::write(locked.join("probe"), b"").is_ok();
    let out = if root {
        as_nobody(skywire_binary())
            .args(args)
            .output()
            .expect("setpriv (util-linux) runs the binary as nobody")
    } else {
        skywire(&args).0
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(!key.exists());
    assert!(stderr.contains("ermission"), "stderr: {stderr}");
    chmod(&locked, 0o700);
}

#[test]
fn usage_errors_exit_2() {
    let (out, _, stderr) = skywire(&["pubkey"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let (out, _, _) = skywire(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let (out, _, _) = skywire(&[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_and_version() {
    let (out, stdout, _) = skywire(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("keygen"), "{stdout}");
    assert!(stdout.contains("pubkey"), "{stdout}");
    for sub in ["keygen", "pubkey"] {
        let (out, stdout, _) = skywire(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout.contains("Usage: skywire"), "{stdout}");
    }
    // `ping -c` counts pings sent, as ping(8)'s.
    let (out, stdout, _) = skywire(&["ping", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("How many pings to send"), "{stdout}");
    let (out, stdout, _) = skywire(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.starts_with(&format!("skywire {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
}
