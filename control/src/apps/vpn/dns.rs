//! DNS for the VPN client: the exit's resolvers, reached through the tunnel.
//!
//! Two ways, chosen as Tailscale chooses ([`Resolver::detect`]):
//!
//! - **systemd-resolved** when `/etc/resolv.conf` leads into `/run/systemd/resolve/` and
//!   `resolvectl` exists: the servers are set on the TUN device (`resolvectl dns`), with
//!   `~.` as its routing domain and `default-route yes`, so every name goes to them and
//!   nothing else changes; `resolvectl revert` undoes it.
//! - **`/etc/resolv.conf` itself** otherwise: its bytes (and, for a symlink, its target)
//!   are kept in the client's state, and the file is rewritten **in place** (truncate,
//!   write, fsync), never renamed over: under `ip netns exec` and in containers it is a
//!   bind mount, and a rename onto it fails with `EBUSY`. `down` writes the bytes back the
//!   same way.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The resolver configuration of this machine.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// How DNS is configured here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// systemd-resolved, through `resolvectl`.
    Resolved,
    /// The file, rewritten in place.
    File(PathBuf),
}

/// What `down` needs to put DNS back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsBackup {
    /// `resolvectl revert <tun>`.
    Resolved {
        /// The TUN device.
        tun: String,
    },
    /// The file's bytes before `up`.
    File {
        /// The file.
        path: PathBuf,
        /// Its bytes, as text (resolv.conf is text; anything else is kept lossily).
        contents: String,
    },
}

/// DNS could not be set or put back.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `resolvectl` failed.
    #[error("resolvectl {args}: {message}")]
    Resolvectl {
        /// Its arguments.
        args: String,
        /// What it said, or why it did not run.
        message: String,
    },
}

impl Resolver {
    /// systemd-resolved when `/etc/resolv.conf` leads into `/run/systemd/resolve/` and
    /// `resolvectl` is on the `PATH`; the file otherwise.
    pub fn detect() -> Self {
        let managed = fs::canonicalize(RESOLV_CONF)
            .is_ok_and(|target| target.starts_with("/run/systemd/resolve"));
        if managed && which("resolvectl") {
            Self::Resolved
        } else {
            Self::File(PathBuf::from(RESOLV_CONF))
        }
    }

    /// What puts DNS back after [`Self::apply`]: taken (and saved by the caller) before
    /// anything changes, so that a crash in between never takes our file for the original.
    pub fn backup(&self, tun: &str) -> Result<DnsBackup, DnsError> {
        match self {
            Self::Resolved => Ok(DnsBackup::Resolved {
                tun: tun.to_owned(),
            }),
            Self::File(path) => {
                let contents = fs::read_to_string(path).map_err(|source| DnsError::File {
                    path: path.clone(),
                    source,
                })?;
                Ok(DnsBackup::File {
                    path: path.clone(),
                    contents,
                })
            }
        }
    }

    /// Point DNS at `servers` through `tun`.
    pub fn apply(&self, tun: &str, servers: &[IpAddr]) -> Result<(), DnsError> {
        match self {
            Self::Resolved => {
                let mut dns = vec!["dns".to_owned(), tun.to_owned()];
                dns.extend(servers.iter().map(IpAddr::to_string));
                resolvectl(&dns)?;
                resolvectl(&["domain".into(), tun.into(), "~.".into()])?;
                resolvectl(&["default-route".into(), tun.into(), "yes".into()])
            }
            Self::File(path) => write_in_place(path, resolv_conf(servers).as_bytes()),
        }
    }
}

impl DnsBackup {
    /// Put DNS back as it was.
    pub fn restore(&self) -> Result<(), DnsError> {
        match self {
            Self::Resolved { tun } => resolvectl(&["revert".into(), tun.clone()]),
            Self::File { path, contents } => write_in_place(path, contents.as_bytes()),
        }
    }
}

/// The text of a resolv.conf naming `servers` (at most the three the resolver reads).
pub fn resolv_conf(servers: &[IpAddr]) -> String {
    let mut text = String::from("# written by skywire vpn; restored by `skywire vpn down`\n");
    for server in servers.iter().take(3) {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

/// Truncate `path` and write `bytes` into the same file (no rename), then fsync.
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<(), DnsError> {
    let err = |source| DnsError::File {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn resolvectl(args: &[String]) -> Result<(), DnsError> {
    let failed = |message: String| DnsError::Resolvectl {
        args: args.join(" "),
        message,
    };
    let out = Command::new("resolvectl")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Whether `program` is on the `PATH`.
fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
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

    #[test]
    fn the_file_is_rewritten_in_place_and_restored_byte_for_byte() {
        let dir = std::env::temp_dir().join(format!("skywire-dns-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        let original = "nameserver 198.18.1.1\nsearch lan\n# no newline at the end";
        fs::write(&path, original).unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = inode(&path);
        let servers: Vec<IpAddr> = vec![
            "198.18.9.53".parse().unwrap(),
            "fd00:9::53".parse().unwrap(),
        ];
        let resolver = Resolver::File(path.clone());
        let backup = resolver.backup("sw0").unwrap();
        resolver.apply("sw0", &servers).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# written by skywire vpn; restored by `skywire vpn down`\nnameserver 198.18.9.53\nnameserver fd00:9::53\n"
        );
        assert_eq!(inode(&path), before, "renamed instead of rewritten");
        // The backup survives the state file.
        let json = serde_json::to_string(&backup).unwrap();
        let backup: DnsBackup = serde_json::from_str(&json).unwrap();
        backup.restore().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), original);
        assert_eq!(inode(&path), before);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn at_most_three_servers_are_written() {
        let servers: Vec<IpAddr> = (1..=5).map(|i| IpAddr::from([198, 18, 9, i])).collect();
        assert_eq!(resolv_conf(&servers).matches("nameserver").count(), 3);
    }
}
