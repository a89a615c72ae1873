//! Scaffolding shared by the integration tests that run the built `skywire` binary: a
//! scratch folder removed on drop, running the binary (also as `nobody`), file modes, keys.
//!
//! A test file includes it as `mod common;` (a module in a subfolder of `tests/` is not a
//! test crate of its own); `tests/netns` uses it too, so the files that include `netns`
//! include `common` as well.

// Every test file is its own crate and uses only part of this module: the rest would be
// reported as dead code there, although another test file uses it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The `skywire` binary cargo built for these tests.
pub(crate) fn skywire_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skywire"))
}

/// Run `skywire args...` and return its output, stdout and stderr as text.
pub(crate) fn skywire(args: &[&str]) -> (Output, String, String) {
    run(Command::new(skywire_binary()).args(args))
}

/// Run `skywire args...` from `cwd` and return its output, stdout and stderr as text.
pub(crate) fn skywire_in(cwd: &Path, args: &[&str]) -> (Output, String, String) {
    run(Command::new(skywire_binary()).args(args).current_dir(cwd))
}

/// Run `cmd` (without `RUST_BACKTRACE`, so a panic's message is the same everywhere) and
/// return its output, stdout and stderr as text.
fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.env_remove("RUST_BACKTRACE").output().unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    (out, stdout, stderr)
}

/// A command that runs `program` as `nobody` (uid and gid 65534, no supplementary groups)
/// through `setpriv` (util-linux); only root may.
pub(crate) fn as_nobody(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program);
    cmd
}

/// Output that must be UTF-8, as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A path as a command-line argument (the test folders' paths are UTF-8).
pub(crate) fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The permission bits of `path` (with setuid, setgid and sticky).
pub(crate) fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Set the permission bits of `path` to `mode`.
pub(crate) fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether the effective user is root (from `/proc/self/status`: no libc in this crate).
pub(crate) fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// `skywire keygen --out PATH`, which must exit 0: its stdout (the public key line) and
/// stderr.
pub(crate) fn keygen(path: &Path) -> (String, String) {
    let (out, stdout, stderr) = skywire(&["keygen", "--out", path_arg(path)]);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    (stdout, stderr)
}

/// A fresh folder under the system temp dir, `skywire-<test file>-<pid>-<n>`, removed on
/// drop.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let test = env!("CARGO_CRATE_NAME").replace('_', "-");
        let dir = std::env::temp_dir().join(format!("skywire-{test}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        Self(dir)
    }

    /// A fresh folder with mode `mode` (0755 lets another user reach a folder inside it).
    pub(crate) fn with_mode(mode: u32) -> Self {
        let scratch = Self::new();
        chmod(scratch.dir(), mode);
        scratch
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.0
    }

    /// `name` inside the folder (nothing is created).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write `contents` to `name` (and the folders it needs), with the default mode.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, contents).unwrap();
        path
    }

    /// Write `contents` to `name` with `mode`.
    pub(crate) fn file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        let path = self.write(name, contents);
        chmod(&path, mode);
        path
    }

    /// A new private key at `name`, made by `skywire keygen` (mode 0600).
    pub(crate) fn keygen(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        keygen(&path);
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
