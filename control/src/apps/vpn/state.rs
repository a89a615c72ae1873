//! The VPN client's state file (`vpn.client.state`, `/run/skywire/vpn-client.json`):
//! what the running client changed in the kernel, so that `skywire vpn down`, `vpn
//! status`, and a client started after a crash know it. Written atomically (0600) after
//! every change, before the change is reported done; read with a clear error when it is not
//! ours, and set aside rather than trusted when it cannot be read.

use std::fs::{File, TryLockError};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use super::dns::DnsBackup;
use super::proto::LeaseReply;
use super::routing::{Route, Rule, text};
use super::sysctl::Sysctls;
use crate::atomic_file::{self, StateError};

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started, no lease yet (the kill switch, when on, is already in place).
    Connecting,
    /// Leased and routed: traffic goes through the exit.
    Connected,
    /// The stream to the exit or the node went; the kernel state stays (closed) while the
    /// client comes back.
    Reconnecting,
    /// Tearing down.
    Stopping,
}

impl core::fmt::Display for Phase {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Reconnecting => "reconnecting",
            Phase::Stopping => "stopping",
        })
    }
}

/// An address the client put on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The interface.
    pub dev: String,
    /// The address with its length.
    #[serde(with = "text")]
    pub prefix: Prefix,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    /// The client process.
    pub pid: u32,
    /// Where it is.
    pub phase: Phase,
    /// Since when (unix seconds).
    pub since: u64,
    /// The exit node.
    #[serde(with = "text")]
    pub exit: PublicKey,
    /// The exit app's port.
    pub exit_port: u16,
    /// The node's control socket (to take the exit's grant back).
    pub control_socket: PathBuf,
    /// The node's TUN device.
    #[serde(default)]
    pub tun: Option<String>,
    /// The current lease.
    #[serde(default)]
    pub lease: Option<LeaseReply>,
    /// Routes added (removed on down).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Rules added.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Addresses added.
    #[serde(default)]
    pub addresses: Vec<Address>,
    /// Kernel settings changed, with their originals.
    #[serde(default)]
    pub sysctls: Sysctls,
    /// How to put DNS back.
    #[serde(default)]
    pub dns: Option<DnsBackup>,
    /// The DNS servers in use.
    #[serde(default)]
    pub dns_servers: Vec<IpAddr>,
    /// The kill switch is on.
    pub lockdown: bool,
    /// ... and stays after `vpn down` (`vpn.client.lockdown: true`) until `--unlock`.
    pub lockdown_configured: bool,
    /// LAN prefixes left out of the tunnel (`--allow-lan`).
    #[serde(default)]
    pub lan: Vec<String>,
    /// The nftables table is in place.
    #[serde(default)]
    pub table: bool,
    /// The last problem, for `vpn status`.
    #[serde(default)]
    pub problem: Option<String>,
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ClientState {
    /// Read the file; `None` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        atomic_file::read_json(path)
    }

    /// Write the file (creating its folder, 0700).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        save(path, self)
    }

    /// Move to `phase` now.
    pub fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.since = unix_now();
    }

    /// Whether the process that wrote the file is alive.
    pub fn pid_alive(&self) -> bool {
        pid_alive(self.pid)
    }
}

/// Whether process `pid` exists (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    let status = PathBuf::from(format!("/proc/{pid}/status"));
    match std::fs::read_to_string(status) {
        Ok(text) => !text
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("Z (zombie)")),
        Err(_) => false,
    }
}

/// Write a state file atomically ([`atomic_file::write_json`]), creating its folder
/// (0700) first.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    atomic_file::write_json(path, value)
}

/// Read a state file: `None` when there is none, and when it is not a state file of this
/// program, which is then set aside (`<name>.corrupt-<secs>`) with a line on stderr naming
/// both files: a damaged file costs the app its memory, never its start.
pub fn load<T: DeserializeOwned>(path: &Path, app: &str) -> Result<Option<T>, StateError> {
    match atomic_file::read_json(path) {
        Err(StateError::Parse { path, .. }) => {
            let aside = atomic_file::set_aside(&path).map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
            log::warn!(
                "skywire vpn {app}: {} was not a state file of this program; kept as {}",
                path.display(),
                aside.display()
            );
            Ok(None)
        }
        other => other,
    }
}

/// Take the lock beside a state file (`<state>.lock`, `flock`), which a running app holds
/// until it exits (or dies): `None` when another process holds it.
pub fn lock(state: &Path) -> Result<Option<File>, StateError> {
    let path = state.with_extension("lock");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StateError::Io { path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(io(dir))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(source)) => Err(io(&path)(source)),
    }
}

/// Create `dir` and its parents, the last one 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Ask process `pid` to stop (SIGTERM); false when there is no such process.
pub fn terminate(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok()
}
