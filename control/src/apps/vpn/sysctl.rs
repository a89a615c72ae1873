//! The kernel settings the VPN apps change (`/proc/sys`), and how they put them back.
//!
//! Both apps change as little as they can and record each setting's original value
//! before the first write ([`Sysctls::set`]), in their state file, so that a restart after
//! a crash never takes the apps' own values for the originals. [`Sysctls::restore`] writes
//! the originals back, newest first. A setting of an interface that is gone (the TUN device
//! of a stopped node) has nothing to restore: its values died with it.
//!
//! - The exit turns on forwarding per interface, never globally: for IPv4 the kernel asks
//!   the *input* interface (`net.ipv4.conf.<if>.forwarding`), so the TUN device and the
//!   uplinks get it and `net.ipv4.ip_forward` stays as it is. For IPv6 it uses
//!   `net.ipv6.conf.<if>.force_forwarding` where the kernel has it (6.17 and later);
//!   before that only `net.ipv6.conf.all.forwarding` exists, set after `accept_ra = 2` on
//!   uplinks that had 1, since a forwarding host otherwise ignores router advertisements
//!   and loses its SLAAC default route.
//! - The client sets `net.ipv4.conf.all.src_valid_mark = 1`, as wg-quick does: the reverse
//!   path filter then looks up a packet's source with its firewall mark, so the mesh's
//!   marked UDP passes `rp_filter` although unmarked lookups lead into the tunnel.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the kernel's settings are.
pub const PROC_SYS: &str = "/proc/sys";

/// A setting, by the segments of its path under `/proc/sys` (an interface name may hold a
/// dot, which the dotted `sysctl` spelling could not tell from a separator).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key(pub Vec<String>);

impl Key {
    /// `net.ipv4.conf.<interface>.<name>`.
    pub fn ipv4_conf(interface: &str, name: &str) -> Self {
        Self(
            ["net", "ipv4", "conf", interface, name]
                .map(str::to_owned)
                .to_vec(),
        )
    }

    /// `net.ipv6.conf.<interface>.<name>`.
    pub fn ipv6_conf(interface: &str, name: &str) -> Self {
        Self(
            ["net", "ipv6", "conf", interface, name]
                .map(str::to_owned)
                .to_vec(),
        )
    }

    /// Its file under `root` (normally [`PROC_SYS`]).
    pub fn path(&self, root: &Path) -> PathBuf {
        let mut path = root.to_owned();
        path.extend(&self.0);
        path
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A setting the app changed, with its value from before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The setting.
    pub key: Key,
    /// Its value before the app's first change.
    pub original: String,
}

/// A setting could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {key}: {source}")]
pub struct SysctlError {
    /// `read` or `write`.
    pub action: &'static str,
    /// The setting.
    pub key: Key,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The settings under one root, and the originals of those changed (kept in the state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctls {
    /// What was changed, oldest first.
    pub recorded: Vec<Recorded>,
}

impl Sysctls {
    /// The setting's current value, without the newline.
    pub fn read(root: &Path, key: &Key) -> Result<String, SysctlError> {
        fs::read_to_string(key.path(root))
            .map(|v| v.trim_end().to_owned())
            .map_err(|source| SysctlError {
                action: "read",
                key: key.clone(),
                source,
            })
    }

    /// Whether the kernel has this setting.
    pub fn exists(root: &Path, key: &Key) -> bool {
        key.path(root).exists()
    }

    /// Record `key`'s original before it is set to `value`, unless it was recorded already
    /// (by this run or one before a crash) or already has the value. Returns whether it
    /// needs [`Self::set`]. The caller saves the record before setting, so that a crash in
    /// between never loses an original.
    pub fn record(&mut self, root: &Path, key: &Key, value: &str) -> Result<bool, SysctlError> {
        let current = Self::read(root, key)?;
        if current == value {
            return Ok(false);
        }
        if !self.recorded.iter().any(|r| &r.key == key) {
            self.recorded.push(Recorded {
                key: key.clone(),
                original: current,
            });
        }
        Ok(true)
    }

    /// Set `key` to `value`, recording its original first ([`Self::record`]).
    pub fn set(&mut self, root: &Path, key: &Key, value: &str) -> Result<(), SysctlError> {
        if !self.record(root, key, value)? {
            return Ok(());
        }
        fs::write(key.path(root), value).map_err(|source| SysctlError {
            action: "write",
            key: key.clone(),
            source,
        })
    }

    /// Write every original back, newest first, and forget them. A setting whose file is
    /// gone (its interface was removed) is skipped; other failures are returned after the
    /// rest were tried (and those settings stay recorded).
    pub fn restore(&mut self, root: &Path) -> Vec<SysctlError> {
        let mut failed = Vec::new();
        let mut kept = Vec::new();
        for r in self.recorded.drain(..).rev() {
            match fs::write(r.key.path(root), &r.original) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    failed.push(SysctlError {
                        action: "write",
                        key: r.key.clone(),
                        source,
                    });
                    kept.push(r);
                }
            }
        }
        kept.reverse();
        self.recorded = kept;
        failed
    }
}

/// What the exit changes: forwarding on the TUN device and the uplinks, IPv4 and (with an
/// IPv6 pool) IPv6, as the module docs explain; `force_forwarding` is per interface when
/// the kernel has it (checked under `root`).
pub fn exit_plan(root: &Path, tun: &str, uplinks: &[String], ipv6: bool) -> Vec<(Key, String)> {
    let one = || "1".to_owned();
    let mut plan: Vec<(Key, String)> = std::iter::once(tun)
        .chain(uplinks.iter().map(String::as_str))
        .map(|i| (Key::ipv4_conf(i, "forwarding"), one()))
        .collect();
    if ipv6 {
        if Sysctls::exists(root, &Key::ipv6_conf("all", "force_forwarding")) {
            plan.extend(
                std::iter::once(tun)
                    .chain(uplinks.iter().map(String::as_str))
                    .map(|i| (Key::ipv6_conf(i, "force_forwarding"), one())),
            );
        } else {
            for uplink in uplinks {
                let accept_ra = Key::ipv6_conf(uplink, "accept_ra");
                if Sysctls::read(root, &accept_ra).is_ok_and(|v| v == "1") {
                    plan.push((accept_ra, "2".to_owned()));
                }
            }
            plan.push((Key::ipv6_conf("all", "forwarding"), one()));
        }
    }
    plan
}

/// What the client changes.
pub fn client_plan() -> Vec<(Key, String)> {
    vec![(Key::ipv4_conf("all", "src_valid_mark"), "1".to_owned())]
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

    /// A fake `/proc/sys` with the given settings.
    fn fake(settings: &[(&Key, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "skywire-sysctl-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        for (key, value) in settings {
            let path = key.path(&root);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, format!("{value}\n")).unwrap();
        }
        root
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn originals_are_recorded_once_and_restored_newest_first() {
        let fwd = Key::ipv4_conf("sw0", "forwarding");
        let up = Key::ipv4_conf("eth0", "forwarding");
        let root = fake(&[(&fwd, "0"), (&up, "1")]);
        let mut s = Sysctls::default();
        s.set(&root, &fwd, "1").unwrap();
        // Already 1: not touched, not recorded.
        s.set(&root, &up, "1").unwrap();
        assert_eq!(s.recorded.len(), 1);
        // A second change (or one after a crash) keeps the first original.
        s.set(&root, &fwd, "0").unwrap();
        s.set(&root, &fwd, "1").unwrap();
        assert_eq!(
            s.recorded,
            vec![Recorded {
                key: fwd.clone(),
                original: "0".into()
            }]
        );
        assert_eq!(Sysctls::read(&root, &fwd).unwrap(), "1");
        assert!(s.restore(&root).is_empty());
        assert_eq!(Sysctls::read(&root, &fwd).unwrap(), "0");
        assert!(s.recorded.is_empty());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_vanished_interface_has_nothing_to_restore() {
        let fwd = Key::ipv4_conf("sw0", "forwarding");
        let root = fake(&[(&fwd, "0")]);
        let mut s = Sysctls::default();
        s.set(&root, &fwd, "1").unwrap();
        fs::remove_file(fwd.path(&root)).unwrap();
        assert!(s.restore(&root).is_empty());
        assert!(s.recorded.is_empty());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_exit_forwards_per_interface_and_ipv6_as_the_kernel_allows() {
        let force = Key::ipv6_conf("all", "force_forwarding");
        let ra = Key::ipv6_conf("x-wan", "accept_ra");
        let new = fake(&[(&force, "0")]);
        let uplinks = vec!["x-wan".to_owned()];
        let plan = exit_plan(&new, "sw0", &uplinks, true);
        let keys: Vec<String> = plan.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "net.ipv4.conf.sw0.forwarding=1",
                "net.ipv4.conf.x-wan.forwarding=1",
                "net.ipv6.conf.sw0.force_forwarding=1",
                "net.ipv6.conf.x-wan.force_forwarding=1",
            ]
        );
        let old = fake(&[(&ra, "1")]);
        let plan = exit_plan(&old, "sw0", &uplinks, true);
        let keys: Vec<String> = plan.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys[2..],
            [
                "net.ipv6.conf.x-wan.accept_ra=2",
                "net.ipv6.conf.all.forwarding=1"
            ]
        );
        assert_eq!(exit_plan(&old, "sw0", &uplinks, false).len(), 2);
        fs::remove_dir_all(new).unwrap();
        fs::remove_dir_all(old).unwrap();
    }
}
