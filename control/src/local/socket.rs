//! Binding a Unix socket and checking who connects to it.
//!
//! - **Binding.** [`bind_private`]: the socket's folder is created 0700 when missing and
//!   refused when it exists and others may write to it, or it belongs to another user than
//!   us or root (either could swap the socket). An old socket file is removed only when
//!   nothing answers on it (connecting is refused); a live one is never taken over. The
//!   socket itself is made 0600. Between `bind` and that `chmod` the socket has the umask's
//!   mode; the folder's mode and the peer check below cover that moment.
//! - **Shared with a group.** [`bind_shared`] does the same for a socket other users reach
//!   (the node's app socket): the folder 0750 and the socket 0660, both given the
//!   [`Sharing`]'s group, or, when the server lets in users outside that group, the folder
//!   0751 and the socket 0666, so that only the server's `SO_PEERCRED` check decides. A
//!   folder of ours that exists is given that group and mode (a 0700 folder left by an
//!   older setup would lock the group out); one writable by group or others is refused as
//!   for private sockets, since they could swap the socket.
//! - **Who may connect.** A connection's peer uid comes from `SO_PEERCRED` (the kernel's
//!   word, not the client's); [`is_allowed`] lets in root and the socket file's owner.
//! - **Cleanup.** Dropping the [`BoundSocket`] removes the socket file, if it is still the
//!   one this process bound.

use std::fs::{self, DirBuilder};
use std::io::{self, ErrorKind as IoErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Whether a peer with `peer_uid` may use a socket owned by `owner_uid`.
pub fn is_allowed(peer_uid: u32, owner_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == owner_uid
}

/// Bind a Unix socket at `path` (see the module doc): folder 0700 or not writable by
/// others, a stale socket replaced, a live one refused, the socket 0600, the listener
/// non-blocking.
///
/// Errors name the path and say what to do: `PermissionDenied` for a folder others may
/// write to or another user owns, `AddrInUse` when another process serves the socket, `AlreadyExists` when
/// the path is something other than a socket.
pub fn bind_private(path: &Path) -> io::Result<(UnixListener, BoundSocket)> {
    bind_with(path, None)
}

/// Who besides the socket's owner may reach a socket bound with [`bind_shared`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sharing {
    /// The group the folder and the socket belong to; its members can connect.
    pub group: u32,
    /// Whether every user can connect (folder 0751, socket 0666): for a server that lets in
    /// users outside the group, which file modes cannot name, and checks every peer itself.
    pub others: bool,
}

impl Sharing {
    /// The folder's mode: the owner writes, the group (and with `others`, everyone) only
    /// passes through or lists it.
    pub fn folder_mode(self) -> u32 {
        if self.others { 0o751 } else { 0o750 }
    }

    /// The socket's mode: connecting needs write permission on it.
    pub fn socket_mode(self) -> u32 {
        if self.others { 0o666 } else { 0o660 }
    }
}

/// Bind a Unix socket at `path` that the users `sharing` names may connect to (see the
/// module doc): the checks of [`bind_private`], then the folder and the socket given
/// `sharing.group` and [`Sharing::folder_mode`] / [`Sharing::socket_mode`].
///
/// Giving a file to a group needs root or membership of that group; otherwise this fails
/// with `PermissionDenied`, naming the group.
pub fn bind_shared(path: &Path, sharing: Sharing) -> io::Result<(UnixListener, BoundSocket)> {
    bind_with(path, Some(sharing))
}

fn bind_with(path: &Path, sharing: Option<Sharing>) -> io::Result<(UnixListener, BoundSocket)> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    prepare_folder(parent, sharing)?;
    remove_stale_socket(path)?;

    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the socket {}: {e}", path.display()),
        )
    })?;
    let meta = fs::symlink_metadata(path)?;
    // From here on, dropping `socket` removes the file, also when the chmod fails.
    let socket = BoundSocket {
        path: path.to_owned(),
        owner_uid: meta.uid(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let mode = match sharing {
        None => 0o600,
        Some(sharing) => {
            give_to_group(path, sharing.group)?;
            sharing.socket_mode()
        }
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot make {} mode {mode:04o}: {e}", path.display()),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok((listener, socket))
}

/// Give `path` to group `gid` (its owner unchanged).
fn give_to_group(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot give {} to group {gid}: {e} (only root and members of the group may)",
                path.display()
            ),
        )
    })
}

/// The uid of the process at the other end of `stream`, from `SO_PEERCRED`.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?.uid.as_raw())
}

/// The socket file this server created; removed on drop if it is still that file.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    owner_uid: u32,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid owning the socket file: with root, the only user served.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        // Someone may have removed ours and bound another in its place; leave that alone.
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Create the socket's folder (0700, or shared as `sharing` says), or check an existing one
/// is ours or root's and not writable by others; an existing folder of ours is shared as
/// `sharing` says.
fn prepare_folder(folder: &Path, sharing: Option<Sharing>) -> io::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    match fs::metadata(folder) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(io::Error::new(
                    IoErrorKind::NotADirectory,
                    format!("{} is not a folder", folder.display()),
                ));
            }
            if meta.uid() != me && meta.uid() != 0 {
                return Err(io::Error::new(
                    IoErrorKind::PermissionDenied,
                    format!(
                        "{} belongs to uid {}, who could replace the socket in it; use \
                         a folder owned by uid {me} or root (chown {me} {})",
                        folder.display(),
                        meta.uid(),
                        folder.display()
                    ),
                ));
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                let want = sharing.map_or(0o700, Sharing::folder_mode);
                return Err(io::Error::new(
                    IoErrorKind::PermissionDenied,
                    format!(
                        "{} has mode {mode:04o}: others could replace the socket in \
                         it; make it {want:04o} (chmod {want:o} {})",
                        folder.display(),
                        folder.display()
                    ),
                ));
            }
            match sharing {
                Some(sharing) if meta.uid() == me => share_folder(folder, sharing),
                _ => Ok(()),
            }
        }
        Err(e) if e.kind() == IoErrorKind::NotFound => {
            let mode = sharing.map_or(0o700, Sharing::folder_mode);
            DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(folder)
                .and_then(|()| fs::set_permissions(folder, fs::Permissions::from_mode(mode)))
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create the folder {}: {e}", folder.display()),
                    )
                })?;
            match sharing {
                Some(sharing) => share_folder(folder, sharing),
                None => Ok(()),
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot inspect {}: {e}", folder.display()),
        )),
    }
}

/// Give our `folder` the group and mode `sharing` asks for.
fn share_folder(folder: &Path, sharing: Sharing) -> io::Result<()> {
    give_to_group(folder, sharing.group)?;
    let mode = sharing.folder_mode();
    fs::set_permissions(folder, fs::Permissions::from_mode(mode)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot make {} mode {mode:04o}: {e}", folder.display()),
        )
    })
}

/// Remove a socket file at `path` that nothing serves any more; refuse anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            IoErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not removing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            IoErrorKind::AddrInUse,
            format!(
                "another process is serving the socket {} (another `skywire node`, or a \
                 viscript daemon, already runs with it)",
                path.display()
            ),
        )),
        Err(e) if e.kind() == IoErrorKind::ConnectionRefused => fs::remove_file(path),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether the socket {} is in use: {e}",
                path.display()
            ),
        )),
    }
}

/// Why a client could not connect to a local socket, sorted the way the CLI's exit codes
/// need it.
#[derive(Debug)]
pub enum ConnectFailure {
    /// No socket there, or nobody listening on it (exit code 69).
    NotRunning(io::Error),
    /// The socket or its folder is closed to this user (exit code 77).
    PermissionDenied(io::Error),
    /// Anything else.
    Other(io::Error),
}

/// Connect to the local socket at `path`, sorting a failure by its cause.
pub fn connect(path: &Path) -> Result<UnixStream, ConnectFailure> {
    UnixStream::connect(path).map_err(|e| match e.kind() {
        IoErrorKind::NotFound | IoErrorKind::ConnectionRefused => ConnectFailure::NotRunning(e),
        IoErrorKind::PermissionDenied => ConnectFailure::PermissionDenied(e),
        _ => ConnectFailure::Other(e),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh 0700 folder under the system's temp folder, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "skywire-ctl-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            DirBuilder::new().mode(0o700).create(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A folder another user owns is theirs to change: the socket in it could be swapped
    /// (before this check, such a folder with mode 0755 was accepted). Only root can give
    /// a folder away, so other users skip this.
    #[test]
    fn a_folder_another_user_owns_is_refused() {
        let dir = TempDir::new();
        let folder = dir.0.join("theirs");
        DirBuilder::new().mode(0o755).create(&folder).unwrap();
        let me = rustix::process::geteuid().as_raw();
        let other = if me == 65534 { 65533 } else { 65534 };
        if std::os::unix::fs::chown(&folder, Some(other), None).is_err() {
            println!("skipped: only root can give a folder to another user");
            return;
        }
        let err = bind_private(&folder.join("ctl.sock")).unwrap_err();
        assert_eq!(err.kind(), IoErrorKind::PermissionDenied, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("uid {other}")), "{msg}");
        assert!(
            msg.contains(&format!("chown {me} {}", folder.display())),
            "{msg}"
        );
        assert!(!folder.join("ctl.sock").exists());

        // Ours (or root's) with the same mode is fine.
        std::os::unix::fs::chown(&folder, Some(me), None).unwrap();
        let (_listener, socket) = bind_private(&folder.join("ctl.sock")).unwrap();
        assert_eq!(socket.owner_uid(), me);
    }

    #[test]
    fn a_shared_socket_gets_its_group_and_modes() {
        let dir = TempDir::new();
        let egid = rustix::process::getegid().as_raw();
        for others in [false, true] {
            let folder = dir.0.join(format!("apps-{others}"));
            let path = folder.join("node.sock");
            let sharing = Sharing {
                group: egid,
                others,
            };
            let (_listener, socket) = bind_shared(&path, sharing).unwrap();
            let folder_meta = fs::metadata(&folder).unwrap();
            assert_eq!(folder_meta.mode() & 0o7777, sharing.folder_mode());
            assert_eq!(folder_meta.gid(), egid);
            let meta = fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.mode() & 0o7777, sharing.socket_mode());
            assert_eq!(meta.gid(), egid);
            drop(socket);
            assert!(!path.exists());
        }
        assert_eq!(
            (
                Sharing {
                    group: 0,
                    others: false
                }
                .folder_mode(),
                Sharing {
                    group: 0,
                    others: false
                }
                .socket_mode()
            ),
            (0o750, 0o660)
        );
    }

    /// A folder of ours left 0700 (by a private socket, or an older node) would lock the
    /// group out: it is opened up to the sharing's mode. One others may write is refused.
    #[test]
    fn a_shared_socket_fixes_its_own_folder_and_refuses_a_writable_one() {
        let dir = TempDir::new();
        let egid = rustix::process::getegid().as_raw();
        let sharing = Sharing {
            group: egid,
            others: false,
        };
        let folder = dir.0.join("apps");
        DirBuilder::new().mode(0o700).create(&folder).unwrap();
        let (_listener, _socket) = bind_shared(&folder.join("a.sock"), sharing).unwrap();
        assert_eq!(fs::metadata(&folder).unwrap().mode() & 0o7777, 0o750);

        let open = dir.0.join("open");
        DirBuilder::new().mode(0o700).create(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o770)).unwrap();
        let err = bind_shared(&open.join("a.sock"), sharing).unwrap_err();
        assert_eq!(err.kind(), IoErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("chmod 750"), "{err}");
    }

    #[test]
    fn only_root_and_the_owner_are_allowed() {
        assert!(is_allowed(0, 1000));
        assert!(is_allowed(1000, 1000));
        assert!(is_allowed(0, 0));
        assert!(!is_allowed(1001, 1000));
        assert!(!is_allowed(65534, 0));
    }
}
