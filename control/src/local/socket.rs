//! Binding a private Unix socket and checking who connects to it.
//!
//! - **Binding.** The socket's folder is created 0700 when missing and refused when it
//!   exists and others may write to it, or it belongs to another user than us or root
//!   (either could swap the socket). An old socket file is
//!   removed only when nothing answers on it (connecting is refused); a live one is never
//!   taken over. The socket itself is made 0600. Between `bind` and that `chmod` the
//!   socket has the umask's mode; the folder's mode and the peer check below cover that
//!   moment.
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
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    prepare_folder(parent)?;
    remove_stale_socket(path)?;

    let listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the control socket {}: {e}", path.display()),
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
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot make {} mode 0600: {e}", path.display()),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok((listener, socket))
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

/// Create the socket's folder 0700, or check an existing one is ours or root's and not
/// writable by others.
fn prepare_folder(folder: &Path) -> io::Result<()> {
    match fs::metadata(folder) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(io::Error::new(
                    IoErrorKind::NotADirectory,
                    format!("{} is not a folder", folder.display()),
                ));
            }
            let me = rustix::process::geteuid().as_raw();
            if meta.uid() != me && meta.uid() != 0 {
                return Err(io::Error::new(
                    IoErrorKind::PermissionDenied,
                    format!(
                        "{} belongs to uid {}, who could replace the control socket in it; use \
                         a folder owned by uid {me} or root (chown {me} {})",
                        folder.display(),
                        meta.uid(),
                        folder.display()
                    ),
                ));
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(io::Error::new(
                    IoErrorKind::PermissionDenied,
                    format!(
                        "{} has mode {mode:04o}: others could replace the control socket in \
                         it; make it 0700 (chmod 700 {})",
                        folder.display(),
                        folder.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == IoErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .and_then(|()| fs::set_permissions(folder, fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create the folder {}: {e}", folder.display()),
                )
            }),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot inspect {}: {e}", folder.display()),
        )),
    }
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
                "another process is serving the control socket {} (is another `skywire node` \
                 running?)",
                path.display()
            ),
        )),
        Err(e) if e.kind() == IoErrorKind::ConnectionRefused => fs::remove_file(path),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether the control socket {} is in use: {e}",
                path.display()
            ),
        )),
    }
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
    fn only_root_and_the_owner_are_allowed() {
        assert!(is_allowed(0, 1000));
        assert!(is_allowed(1000, 1000));
        assert!(is_allowed(0, 0));
        assert!(!is_allowed(1001, 1000));
        assert!(!is_allowed(65534, 0));
    }
}
