//! What a node owns on the mesh, kept across restarts (issue 15): the routes it added with
//! `skywire route add` (each with the nonce its id is derived from, so the manager knows the
//! restarted node as their owner), the links it declared with `skywire link add`, and the
//! newest handshake initiation it accepted from each peer key, so that an initiation
//! captured before a restart is still refused after it (`docs/PROTOCOL.md` §5.6; WireGuard
//! forgets these on a restart).
//!
//! One JSON file per node key in `node.state_dir` (default `/var/lib/skywire`, systemd's
//! `StateDirectory=`): `node-<first 16 hex digits of the key>.json`, so nodes sharing a
//! folder never share a file. It is written with [`crate::atomic_file`] (a new file, fsync,
//! rename, 0600; the folder made 0700) whenever what the node owns changes, and read once
//! at start, before the first `REGISTER`, which then lists the routes again: a manager that
//! kept them rebuilds the rules the restarted node lost instead of dropping the routes.
//!
//! A file that does not parse, or that belongs to another key, is set aside
//! (`<name>.corrupt-<secs>`) with a warning, and the node starts owning nothing: a damaged
//! file costs the node its memory, never its start. A file that cannot be read or written
//! (permissions, a read-only folder) is said once in the log, and the node runs on without
//! it. Routes whose id is not derived from the node's key and their nonce are dropped on
//! load: the manager would refuse them anyway.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::AcceptedInitiation;

use crate::atomic_file::{self, StateError};
use crate::manager::proto::{Key, MeshRouteId, RouteRequest};

/// The version this program writes and reads.
const VERSION: u32 = 1;

/// What a node owns, as the state file holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owned {
    /// The routes it added, with their ids and nonces.
    pub routes: Vec<RouteRequest>,
    /// The peers of the links it declared.
    pub links: Vec<Key>,
    /// The newest initiation accepted from each peer key, sorted by key.
    pub peers: Vec<PeerRecord>,
}

/// The newest handshake initiation a node accepted from a peer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRecord {
    /// The peer's key.
    pub key: Key,
    /// The initiation's timestamp (nanoseconds since the Unix epoch).
    pub timestamp: u64,
    /// Its mac1.
    pub mac1: [u8; 16],
}

impl From<AcceptedInitiation> for PeerRecord {
    fn from(a: AcceptedInitiation) -> Self {
        Self {
            key: Key(a.peer),
            timestamp: a.timestamp,
            mac1: a.mac1,
        }
    }
}

impl From<PeerRecord> for AcceptedInitiation {
    fn from(r: PeerRecord) -> Self {
        Self {
            peer: r.key.0,
            timestamp: r.timestamp,
            mac1: r.mac1,
        }
    }
}

/// The file as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    /// The node whose state this is.
    key: Key,
    routes: Vec<RouteRequest>,
    links: Vec<Key>,
    #[serde(default)]
    peers: Vec<PeerRecord>,
}

/// A node's state file: where it is, and what it last wrote there.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    key: PublicKey,
    /// What the file holds now, as far as this process knows.
    saved: Owned,
    /// A failure to write was logged (said once, until a write succeeds), and when to try
    /// again.
    failing: bool,
    retry_at: Option<Instant>,
}

/// How long a failed write waits before the next try.
pub const SAVE_RETRY: Duration = Duration::from_secs(10);

impl StateFile {
    /// The state file of the node with `key` in `dir`.
    pub fn path(dir: &Path, key: &PublicKey) -> PathBuf {
        let hex = key.to_string();
        dir.join(format!("node-{}.json", hex.get(..16).unwrap_or(&hex)))
    }

    /// Open the state file of `key` in `dir` and read what the node owned: nothing when
    /// there is no file, or when it was set aside or could not be read (logged).
    pub fn load(dir: &Path, key: PublicKey) -> (Self, Owned) {
        let path = Self::path(dir, &key);
        let owned = match read(&path, &key) {
            Ok(owned) => owned,
            Err(e) => {
                log::warn!("skywire: cannot read the node's state: {e}; starting without it");
                Owned::default()
            }
        };
        let file = Self {
            path,
            key,
            saved: owned.clone(),
            failing: false,
            retry_at: None,
        };
        (file, owned)
    }

    /// The file's path.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// Write `owned` if it differs from what the file holds. A failure is logged once
    /// (and its end once), never fatal, and tried again [`SAVE_RETRY`] later.
    pub fn save(&mut self, owned: &Owned, now: Instant) {
        if *owned == self.saved || self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        match write(&self.path, &self.key, owned) {
            Ok(()) => {
                if self.failing {
                    log::info!(
                        "skywire: the node's state is saved again in {}",
                        self.path.display()
                    );
                }
                self.failing = false;
                self.retry_at = None;
                self.saved = owned.clone();
            }
            Err(e) => {
                if !self.failing {
                    log::warn!(
                        "skywire: cannot save the node's state: {e}; the routes and links it \
                         owns will not survive a restart (check node.state_dir)"
                    );
                }
                self.failing = true;
                self.retry_at = Some(now + SAVE_RETRY);
            }
        }
    }
}

/// Read `path`, setting it aside when it is not this node's state.
fn read(path: &Path, key: &PublicKey) -> Result<Owned, StateError> {
    let doc = match atomic_file::read_json::<StateDoc>(path) {
        Ok(None) => return Ok(Owned::default()),
        Ok(Some(doc)) if doc.version == VERSION && doc.key.0 == *key => doc,
        Ok(Some(doc)) => {
            let why = if doc.version == VERSION {
                format!("it is the state of another node ({})", doc.key.0)
            } else {
                format!("its version is {}, not {VERSION}", doc.version)
            };
            set_aside(path, &why)?;
            return Ok(Owned::default());
        }
        Err(StateError::Parse {
            line,
            column,
            source,
            ..
        }) => {
            set_aside(path, &format!("line {line}, column {column}: {source}"))?;
            return Ok(Owned::default());
        }
        Err(e) => return Err(e),
    };
    let mut owned = Owned {
        routes: doc.routes,
        links: doc.links,
        peers: doc.peers,
    };
    owned.routes.retain(|route| {
        let derived = route.nonce.and_then(|n| MeshRouteId::derive(key, &n));
        let keep = derived.is_some() && derived == route.id;
        if !keep {
            log::warn!(
                "skywire: {}: a route whose id is not derived from this node's key and its \
                 nonce is not restored",
                path.display()
            );
        }
        keep
    });
    Ok(owned)
}

fn set_aside(path: &Path, why: &str) -> Result<(), StateError> {
    let aside = atomic_file::set_aside(path).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })?;
    log::warn!(
        "skywire: {} is not this node's state ({why}); kept as {}, starting without it",
        path.display(),
        aside.display()
    );
    Ok(())
}

fn write(path: &Path, key: &PublicKey, owned: &Owned) -> Result<(), StateError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        make_private_dir(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    atomic_file::write_json(
        path,
        &StateDoc {
            version: VERSION,
            key: Key(*key),
            routes: owned.routes.clone(),
            links: owned.links.clone(),
            peers: owned.peers.clone(),
        },
    )
}

/// Make `dir` (and its parents) if missing, the last one 0700.
pub(crate) fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
