//! `node.apps`: the node's app socket (where it is, who may use it) and the limits of the
//! streams apps open through it, which become the engine's [`StackSetup`].
//!
//! | key | type | default |
//! |---|---|---|
//! | `socket` | path of the app socket | derived from `node.control_socket`: `<its folder>-apps/<its name>` ([`derive_app_socket`]) |
//! | `group` | a group name or gid whose members may use the socket | none |
//! | `users` | list of user names or uids who may use the socket | `[]` |
//! | `streams` | streams on the node at once | 8192 |
//! | `streams_per_peer` | streams with one peer key at once | 2048 |
//! | `streams_per_app` | streams of one app (uid) at once | 4096 |
//! | `half_open` | streams still completing their handshake | 512 |
//! | `listeners` | listening ports on the node | 256 |
//! | `idle_timeout` | a stream with no traffic for this long is reset | 1h |
//! | `take_timeout` | a stream the app does not take within this is reset | 10s |
//! | `buffer` | bytes of buffer per stream and direction | 262144 (256 KiB) |
//! | `memory` | bytes all streams' buffers may take together | 536870912 (512 MiB) |
//!
//! Root and the node's own user may always use the socket. Counts are 1 to 1048576, sizes
//! whole numbers of bytes (no unit), durations as elsewhere (`500ms`, `10s`, `1h`). Checks:
//! `buffer` at least [`MIN_BUFFER`], `memory` at least twice `buffer`; the socket is not
//! the control socket nor in its folder (that folder is private to the node's user, and
//! sharing the app socket would open it to the group), and at most 107 bytes.
//!
//! Names in `users` and `group` are looked up in `/etc/passwd` and `/etc/group` by
//! [`crate::config::Config::apps_config`], not while parsing (parsing reads only the config
//! file); an unknown name is an error there, naming the key and its line.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use skywire_dataplane::stack::{MIN_BUFFER, StackSetup};

use super::MAX_SOCKET_PATH;
use crate::config::error::{ConfigError, Problem};
use crate::config::paths::PathText;
use crate::config::values::{Account, AccountValue, ByteCount, CountValue, DurationValue};
use crate::config::yaml::{KeyPath, Locator};

/// The app socket of a node with the default control socket
/// ([`crate::config::DEFAULT_CONTROL_SOCKET`]).
pub const DEFAULT_APP_SOCKET: &str = "/run/skywire-apps/node.sock";

/// The app socket's path when `node.apps.socket` is not written: beside the control
/// socket's folder, in a folder of its own (`/run/skywire/node.sock` ->
/// `/run/skywire-apps/node.sock`), so that two nodes with different control sockets never
/// share one, and the control socket's private folder stays private.
///
/// A control socket directly in `/` (or in the current folder) has no folder name to
/// extend; its app socket goes into `skywire-apps` there.
pub fn derive_app_socket(control_socket: &Path) -> PathBuf {
    let name = control_socket
        .file_name()
        .map_or_else(|| PathBuf::from("node.sock"), PathBuf::from);
    let parent = control_socket.parent().unwrap_or_else(|| Path::new(""));
    let folder = match parent.file_name() {
        Some(folder) => {
            let mut extended = folder.to_owned();
            extended.push("-apps");
            parent.with_file_name(extended)
        }
        None => parent.join("skywire-apps"),
    };
    folder.join(name)
}

/// `node.apps` as parsed: names not yet looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeApps {
    /// `socket`, resolved against the config file's folder; `None`: derived from the control
    /// socket ([`derive_app_socket`]).
    pub socket: Option<PathBuf>,
    /// `group`: its members may use the socket; the socket and its folder belong to it.
    pub group: Option<Account>,
    /// `users`: they may use the socket.
    pub users: Vec<Account>,
    /// The limits and sizes (`streams` ... `memory`).
    pub stack: StackSetup,
}

/// What the app socket's server needs: [`NodeApps`] with its names looked up and its path
/// decided. Built by [`crate::config::Config::apps_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsConfig {
    /// The app socket's path.
    pub socket: PathBuf,
    /// The uids of `node.apps.users`, in the order written.
    pub users: Vec<u32>,
    /// The gid of `node.apps.group`.
    pub group: Option<u32>,
    /// The stack's limits (the same as the engine's `NodeSetup::stack`).
    pub stack: StackSetup,
}

/// Where names are looked up: the system's files, or a fixed table in tests.
pub(in crate::config) trait AccountBook {
    /// The uid of user `name`, if there is one.
    fn user(&self, name: &str) -> Option<u32>;
    /// The gid of group `name`, if there is one.
    fn group(&self, name: &str) -> Option<u32>;
}

/// `/etc/passwd` and `/etc/group` ([`crate::accounts`]); a file that cannot be read knows
/// no names.
pub(in crate::config) struct SystemAccounts;

impl AccountBook for SystemAccounts {
    fn user(&self, name: &str) -> Option<u32> {
        crate::accounts::user_id(name).ok().flatten()
    }

    fn group(&self, name: &str) -> Option<u32> {
        crate::accounts::group_id(name).ok().flatten()
    }
}

impl NodeApps {
    /// The app socket: `socket`, or the one derived from `control_socket`.
    pub fn socket_path(&self, control_socket: &Path) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| derive_app_socket(control_socket))
    }

    /// The server's view: names looked up in `book` (an unknown one is an error at its
    /// key), the socket's path decided from `control_socket`.
    pub(in crate::config) fn resolve_accounts(
        &self,
        control_socket: &Path,
        book: &dyn AccountBook,
        at: &Locator<'_>,
    ) -> Result<AppsConfig, ConfigError> {
        let apps = KeyPath::top("node").key("apps");
        let group = match &self.group {
            None => None,
            Some(Account::Id(gid)) => Some(*gid),
            Some(Account::Name(name)) => Some(
                book.group(name)
                    .ok_or_else(|| at.invalid(&apps.key("group"), Problem::UnknownGroup))?,
            ),
        };
        let mut users = Vec::with_capacity(self.users.len());
        for (i, user) in self.users.iter().enumerate() {
            users.push(match user {
                Account::Id(uid) => *uid,
                Account::Name(name) => book
                    .user(name)
                    .ok_or_else(|| at.invalid(&apps.key("users").index(i), Problem::UnknownUser))?,
            });
        }
        Ok(AppsConfig {
            socket: self.socket_path(control_socket),
            users,
            group,
            stack: self.stack,
        })
    }
}

/// `node.apps` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawNodeApps {
    socket: Option<PathText>,
    group: Option<AccountValue>,
    users: Option<Vec<AccountValue>>,
    streams: Option<CountValue>,
    streams_per_peer: Option<CountValue>,
    streams_per_app: Option<CountValue>,
    half_open: Option<CountValue>,
    listeners: Option<CountValue>,
    idle_timeout: Option<DurationValue>,
    take_timeout: Option<DurationValue>,
    buffer: Option<ByteCount>,
    memory: Option<ByteCount>,
}

impl RawNodeApps {
    /// The typed section, after its checks (see the module doc), relative paths resolved
    /// against `base`. `control_socket` is the node's, resolved.
    pub(in crate::config) fn resolve(
        self,
        base: &Path,
        control_socket: &Path,
        at: &Locator<'_>,
    ) -> Result<NodeApps, ConfigError> {
        let node = KeyPath::top("node");
        let path = node.key("apps");
        let defaults = StackSetup::default();
        let count = |value: Option<CountValue>, default: usize| value.map_or(default, |v| v.0);
        let bytes = |value: Option<ByteCount>, default: usize| value.map_or(default, |v| v.0);
        let stack = StackSetup {
            max_streams: count(self.streams, defaults.max_streams),
            max_streams_per_peer: count(self.streams_per_peer, defaults.max_streams_per_peer),
            max_streams_per_app: count(self.streams_per_app, defaults.max_streams_per_app),
            max_half_open: count(self.half_open, defaults.max_half_open),
            max_listeners: count(self.listeners, defaults.max_listeners),
            idle_timeout: self.idle_timeout.map_or(defaults.idle_timeout, |d| d.0),
            take_timeout: self.take_timeout.map_or(defaults.take_timeout, |d| d.0),
            buffer: bytes(self.buffer, defaults.buffer),
            memory: bytes(self.memory, defaults.memory),
        };
        if stack.buffer < MIN_BUFFER {
            return Err(at.invalid(&path.key("buffer"), Problem::BufferTooSmall));
        }
        if stack.memory / 2 < stack.buffer {
            return Err(at.invalid(&path.key("memory"), Problem::MemoryBelowTwoBuffers));
        }

        let socket = self.socket.map(|text| text.resolve(base));
        let app_socket = match &socket {
            Some(socket) => {
                let key = path.key("socket");
                if socket.as_os_str().len() > MAX_SOCKET_PATH {
                    return Err(at.invalid(&key, Problem::SocketPathTooLong));
                }
                if socket == control_socket {
                    return Err(at.invalid(&key, Problem::AppSocketIsControlSocket));
                }
                socket.clone()
            }
            None => {
                let derived = derive_app_socket(control_socket);
                if derived.as_os_str().len() > MAX_SOCKET_PATH {
                    let key = node.key("control_socket");
                    return Err(at.invalid(&key, Problem::DerivedAppSocketTooLong));
                }
                derived
            }
        };
        if app_socket.parent() == control_socket.parent() {
            return Err(at.invalid(&path.key("socket"), Problem::AppSocketBesideControlSocket));
        }

        Ok(NodeApps {
            socket,
            group: self.group.map(|g| g.0),
            users: self
                .users
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.0)
                .collect(),
            stack,
        })
    }
}

#[cfg(test)]
mod tests;
