//! Private key files: created 0600, read back only when they are ours and nobody else can
//! read them.
//!
//! A key file holds one X25519 private key as 64 hex digits and a newline, the format of
//! [`PrivateKey::to_key_file_text`]. This module writes new ones and loads existing ones; it
//! does not decide where they live (the caller passes the path) and never formats key
//! material: errors name the file, its mode or its length, never its content.
//!
//! Invariants:
//!
//! - [`write_new_key`] never replaces anything: the file is created with `O_CREAT | O_EXCL`,
//!   which also refuses a symlink (dangling or not) at the path without following it. A missing parent directory
//!   is created 0700.
//! - [`load_private_key`] refuses a file whose mode gives group or others any access, even
//!   when the caller could read it anyway (root can read a 0644 file; we still refuse it),
//!   and a file owned by another user than the effective one: its owner could rewrite the
//!   key at any time. That holds for root too, which reads only keys owned by root (a key
//!   a user owns is that user's to change, so a daemon running as root must not trust it).
//!   It refuses anything but a regular file and reads at most [`MAX_KEY_FILE_LEN`] bytes.
//! - Buffers that held key text are zeroed before they are dropped.

use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

use skywire_dataplane::crypto::keys::{KeyParseError, RngError};
use skywire_dataplane::crypto::{PrivateKey, PublicKey};

/// The largest key file [`load_private_key`] reads. A key file is 65 bytes; the slack allows
/// for stray whitespace, and the bound keeps a wrong path (a log, a disk image) from being
/// read whole.
pub const MAX_KEY_FILE_LEN: usize = 4096;

/// Mode bits that give the group or others any access.
const GROUP_OTHER_BITS: u32 = 0o077;

/// A key file could not be written or loaded. Every message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Something already exists at the path (a file, a directory or a symlink); key files
    /// are never overwritten.
    #[error(
        "{}: already exists; refusing to overwrite it (move it away first to replace the key)",
        .path.display()
    )]
    Exists {
        /// The key file path.
        path: PathBuf,
    },
    /// The path is a symlink (dangling or not); key files are written only as new regular
    /// files, never through a link.
    #[error(
        "{}: is a symlink; refusing to write a key through it (give the real path, or \
         remove the link)",
        .path.display()
    )]
    Symlink {
        /// The key file path.
        path: PathBuf,
    },
    /// The missing parent directory could not be created.
    #[error("{}: cannot create the key file's directory", .path.display())]
    CreateDir {
        /// The directory path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The file could not be created, written or synced to disk. A partly written file is
    /// removed.
    #[error("{}: cannot write the key file", .path.display())]
    Write {
        /// The key file path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The file could not be opened, inspected or read.
    #[error("{}: cannot read the key file", .path.display())]
    Read {
        /// The key file path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The path names something other than a regular file (a directory, a FIFO, a device).
    #[error("{}: not a regular file, so not a key file", .path.display())]
    NotRegularFile {
        /// The key file path.
        path: PathBuf,
    },
    /// The file's mode lets the group or others read or write it.
    #[error(
        "{}: key file has mode {:04o}, which gives group or others access; \
         run `chmod 600 {}`",
        .path.display(), .mode, .path.display()
    )]
    Permissions {
        /// The key file path.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The file belongs to another user than the one running skywire. Its owner can
    /// rewrite it, or give it looser modes, whenever they like, so the key is not ours to
    /// trust (even for root, which could read it anyway).
    #[error(
        "{}: key file is owned by uid {owner}, but skywire runs as uid {user}, and whoever \
         owns a key file can replace the key; run `chown {user} {}` or run skywire as \
         uid {owner}",
        .path.display(), .path.display()
    )]
    Owner {
        /// The key file path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The effective uid of this process.
        user: u32,
    },
    /// The file is longer than [`MAX_KEY_FILE_LEN`].
    #[error(
        "{}: {len} bytes is too long for a key file (at most {MAX_KEY_FILE_LEN})",
        .path.display()
    )]
    TooLarge {
        /// The key file path.
        path: PathBuf,
        /// The file's length in bytes, as far as it was measured.
        len: u64,
    },
    /// The content is not a private key in hex.
    #[error("{}: not a key file", .path.display())]
    Parse {
        /// The key file path.
        path: PathBuf,
        /// What is wrong with the content (lengths and classes of characters, never the
        /// characters themselves).
        #[source]
        source: KeyParseError,
    },
    /// The system random number generator failed, so no key was generated.
    #[error("{}: cannot generate a key", .path.display())]
    Random {
        /// The key file path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: RngError,
    },
}

impl KeyFileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Exists { path }
            | Self::Symlink { path }
            | Self::CreateDir { path, .. }
            | Self::Write { path, .. }
            | Self::Read { path, .. }
            | Self::NotRegularFile { path }
            | Self::Permissions { path, .. }
            | Self::Owner { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Parse { path, .. }
            | Self::Random { path, .. } => path,
        }
    }

    /// Whether the file is there but unusable as a key file: its type, mode, owner, size
    /// or content is wrong. That is a configuration mistake for the operator to fix, as
    /// opposed to an I/O failure.
    pub fn is_bad_key_file(&self) -> bool {
        matches!(
            self,
            Self::NotRegularFile { .. }
                | Self::Permissions { .. }
                | Self::Owner { .. }
                | Self::TooLarge { .. }
                | Self::Parse { .. }
        )
    }
}

/// Generate a private key, write it to a new file at `path` with mode 0600, sync it, and
/// return its public key.
///
/// Refuses if anything exists at `path`, including a symlink. Creates a missing parent
/// directory (and its missing ancestors) with mode 0700. On a failure after the file was
/// created, the file is removed so that a retry can succeed.
pub fn write_new_key(path: impl AsRef<Path>) -> Result<PublicKey, KeyFileError> {
    let path = path.as_ref();
    let key = PrivateKey::generate().map_err(|source| KeyFileError::Random {
        path: path.to_owned(),
        source,
    })?;

    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        // A no-op when the directory exists: its mode is the operator's business then.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| KeyFileError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
    }

    // `create_new` is O_CREAT | O_EXCL: atomic with respect to the existence check, and it
    // fails on a symlink at the path instead of following it.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            let symlink = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if source.kind() == io::ErrorKind::AlreadyExists && symlink {
                KeyFileError::Symlink {
                    path: path.to_owned(),
                }
            } else if source.kind() == io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_owned(),
                }
            } else {
                KeyFileError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;

    let mut text = key.to_key_file_text().into_bytes();
    let written = file.write_all(&text).and_then(|()| file.sync_all());
    text.zeroize();
    drop(file);
    if let Err(source) = written {
        // We created the file, so it is ours to remove; a half-written key must not block
        // the retry with `Exists`. Removal failing leaves the original error the one to report.
        let _ = fs::remove_file(path);
        return Err(KeyFileError::Write {
            path: path.to_owned(),
            source,
        });
    }

    // Make the new directory entry durable too, so a crash right after `keygen` (whose public
    // key may already have been handed out) does not lose the file. Best effort: some file
    // systems refuse fsync on a directory, and the file's own data is already synced.
    let dir = parent.unwrap_or_else(|| Path::new("."));
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }

    Ok(key.public_key())
}

/// Load the private key in the key file at `path`.
///
/// Refuses anything but a regular file (symlinks are followed; the target is checked), a
/// file whose mode gives group or others any access, a file owned by another user than
/// the effective one (root included: root reads only keys owned by root), and a file
/// longer than [`MAX_KEY_FILE_LEN`]. Surrounding whitespace, such as the trailing newline, is allowed.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKey, KeyFileError> {
    let path = path.as_ref();
    let read_error = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };

    // O_NONBLOCK: opening a FIFO (or a device) for reading must not block; what was opened is
    // then checked through the open descriptor, so swapping the path cannot race the check.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    check_key_file_metadata(path, &meta)?;

    let mut buf = [0u8; MAX_KEY_FILE_LEN + 1];
    let read = read_up_to(&mut file, &mut buf);
    let result = match read {
        Err(source) => Err(read_error(source)),
        Ok(len) if len > MAX_KEY_FILE_LEN => Err(KeyFileError::TooLarge {
            path: path.to_owned(),
            len: u64::try_from(len).unwrap_or(u64::MAX),
        }),
        Ok(len) => parse_key_text(buf.get(..len).unwrap_or_default()).map_err(|source| {
            KeyFileError::Parse {
                path: path.to_owned(),
                source,
            }
        }),
    };
    buf.zeroize();
    result
}

/// Refuse a non-regular file, a mode that gives group or others access, another owner, or
/// an oversized file.
fn check_key_file_metadata(path: &Path, meta: &Metadata) -> Result<(), KeyFileError> {
    if !meta.is_file() {
        return Err(KeyFileError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user {
        return Err(KeyFileError::Owner {
            path: path.to_owned(),
            owner: meta.uid(),
            user,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE_LEN as u64 {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    Ok(())
}

/// Read until `buf` is full or the file ends; the number of bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

fn parse_key_text(bytes: &[u8]) -> Result<PrivateKey, KeyParseError> {
    // Bytes that are not UTF-8 are certainly not hex digits.
    let text = std::str::from_utf8(bytes).map_err(|_| KeyParseError::NotHex)?;
    PrivateKey::from_hex(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// RFC 7748 section 6.1, Alice: a known key so content checks have something to look for.
    const PRIVATE_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const PUBLIC_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("skywire-keyfile-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Write `content` to `name` with `mode`, as an operator might have.
        fn file(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
            let path = self.path(name);
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_then_load_roundtrip() {
        let dir = Scratch::new();
        let path = dir.path("node.key");
        let public = write_new_key(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let key = load_private_key(&path).unwrap();
        assert_eq!(key.public_key(), public);
        assert_eq!(key.to_key_file_text(), text);
    }

    #[test]
    fn write_creates_missing_parents_0700() {
        let dir = Scratch::new();
        let path = dir.path("etc/skywire/node.key");
        write_new_key(&path).unwrap();
        assert_eq!(mode_of(&dir.path("etc/skywire")), 0o700);
        assert_eq!(mode_of(&dir.path("etc")), 0o700);
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn write_leaves_an_existing_parent_alone() {
        let dir = Scratch::new();
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        write_new_key(dir.path("node.key")).unwrap();
        assert_eq!(mode_of(&dir.0), 0o755);
    }

    #[test]
    fn write_refuses_an_existing_file() {
        let dir = Scratch::new();
        let path = dir.path("node.key");
        write_new_key(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let err = write_new_key(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
        assert!(err.to_string().starts_with(&path.display().to_string()));
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn write_refuses_symlinks_dangling_or_not() {
        let dir = Scratch::new();
        let dangling = dir.path("dangling.key");
        symlink(dir.path("nowhere"), &dangling).unwrap();
        let err = write_new_key(&dangling).unwrap_err();
        assert!(matches!(err, KeyFileError::Symlink { .. }), "{err:?}");
        assert!(!dir.path("nowhere").exists(), "followed the symlink");

        let target = dir.file("target", b"keep me", 0o600);
        let link = dir.path("link.key");
        symlink(&target, &link).unwrap();
        let err = write_new_key(&link).unwrap_err();
        assert!(matches!(err, KeyFileError::Symlink { .. }), "{err:?}");
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn write_refuses_a_directory_and_a_file_as_parent() {
        let dir = Scratch::new();
        let err = write_new_key(&dir.0).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");

        let file = dir.file("plain", b"", 0o600);
        let err = write_new_key(file.join("node.key")).unwrap_err();
        assert!(matches!(err, KeyFileError::CreateDir { .. }), "{err:?}");
        assert!(!err.is_bad_key_file());
    }

    #[test]
    fn load_accepts_with_and_without_newline_and_uppercase() {
        let dir = Scratch::new();
        for (name, text) in [
            ("nl", format!("{PRIVATE_HEX}\n")),
            ("bare", PRIVATE_HEX.to_owned()),
            ("crlf", format!("  {PRIVATE_HEX}\r\n")),
            ("upper", PRIVATE_HEX.to_uppercase()),
        ] {
            let path = dir.file(name, text.as_bytes(), 0o600);
            let key = load_private_key(&path).unwrap();
            assert_eq!(key.public_key().to_string(), PUBLIC_HEX, "{name}");
        }
    }

    #[test]
    fn load_accepts_owner_only_modes() {
        let dir = Scratch::new();
        for mode in [0o400, 0o600, 0o700] {
            let path = dir.file(&format!("k{mode:o}"), PRIVATE_HEX.as_bytes(), mode);
            load_private_key(&path).unwrap();
        }
    }

    #[test]
    fn load_refuses_group_or_other_access() {
        let dir = Scratch::new();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o601] {
            let path = dir.file(&format!("k{mode:o}"), PRIVATE_HEX.as_bytes(), mode);
            let err = load_private_key(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Permissions { mode: m, .. } if m == mode),
                "{err:?}"
            );
            assert!(err.is_bad_key_file());
            let msg = err.to_string();
            let shown = path.display().to_string();
            assert!(msg.starts_with(&shown), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(msg.contains(&format!("chmod 600 {shown}")), "{msg}");
            assert!(!msg.contains(PRIVATE_HEX), "{msg}");
        }
    }

    /// Root, as in CI, can give a file away; another user cannot, and skips.
    fn give_away(path: &Path) -> Option<u32> {
        let me = rustix::process::geteuid().as_raw();
        let other = if me == 65534 { 65533 } else { 65534 };
        std::os::unix::fs::chown(path, Some(other), None)
            .ok()
            .map(|()| other)
    }

    #[test]
    fn load_refuses_a_key_owned_by_another_user() {
        let dir = Scratch::new();
        let path = dir.file("theirs.key", PRIVATE_HEX.as_bytes(), 0o600);
        let Some(other) = give_away(&path) else {
            println!("skipped: only root can give a file to another user");
            return;
        };
        let err = load_private_key(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Owner { owner, .. } if owner == other),
            "{err:?}"
        );
        assert!(err.is_bad_key_file());
        let msg = err.to_string();
        let shown = path.display().to_string();
        assert!(msg.starts_with(&shown), "{msg}");
        assert!(msg.contains(&format!("uid {other}")), "{msg}");
        let me = rustix::process::geteuid().as_raw();
        assert!(msg.contains(&format!("chown {me} {shown}")), "{msg}");

        // Through a symlink the target's owner counts, not the link's.
        let link = dir.path("link.key");
        symlink(&path, &link).unwrap();
        let err = load_private_key(&link).unwrap_err();
        assert!(matches!(err, KeyFileError::Owner { .. }), "{err:?}");
    }

    #[test]
    fn load_refuses_non_regular_files() {
        let dir = Scratch::new();
        let sub = dir.path("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        let err = load_private_key(&sub).unwrap_err();
        assert!(
            matches!(err, KeyFileError::NotRegularFile { .. }),
            "{err:?}"
        );
        assert!(err.is_bad_key_file());
    }

    #[test]
    fn load_follows_a_symlink_and_checks_the_target() {
        let dir = Scratch::new();
        let target = dir.file("target", PRIVATE_HEX.as_bytes(), 0o600);
        let link = dir.path("link.key");
        symlink(&target, &link).unwrap();
        assert_eq!(
            load_private_key(&link).unwrap().public_key().to_string(),
            PUBLIC_HEX
        );
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_private_key(&link).unwrap_err();
        assert!(matches!(err, KeyFileError::Permissions { .. }), "{err:?}");
    }

    #[test]
    fn load_refuses_a_large_file_without_reading_it() {
        let dir = Scratch::new();
        let path = dir.file("big", &vec![b'a'; MAX_KEY_FILE_LEN + 1], 0o600);
        let err = load_private_key(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::TooLarge { len, .. } if len == MAX_KEY_FILE_LEN as u64 + 1),
            "{err:?}"
        );
        assert!(err.is_bad_key_file());
    }

    #[test]
    fn load_refuses_garbage_without_echoing_it() {
        let dir = Scratch::new();
        let half = PRIVATE_HEX.get(..32).unwrap();
        let cases: [(&str, Vec<u8>); 5] = [
            ("empty", Vec::new()),
            ("short", half.as_bytes().to_vec()),
            ("long", format!("{PRIVATE_HEX}00").into_bytes()),
            (
                "nothex",
                format!("{}zz", PRIVATE_HEX.get(..62).unwrap()).into_bytes(),
            ),
            ("binary", vec![0xff; 64]),
        ];
        for (name, content) in cases {
            let path = dir.file(name, &content, 0o600);
            let err = load_private_key(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Parse { .. }), "{name}: {err:?}");
            assert!(err.is_bad_key_file());
            let shown = format!("{err} {err:?} {}", std::error::Error::source(&err).unwrap());
            assert!(!shown.contains(half), "{name}: {shown}");
            assert!(
                shown.contains(&path.display().to_string()),
                "{name}: {shown}"
            );
        }
    }

    #[test]
    fn load_reports_a_missing_file_as_io() {
        let dir = Scratch::new();
        let err = load_private_key(dir.path("missing.key")).unwrap_err();
        match &err {
            KeyFileError::Read { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_bad_key_file());
        assert_eq!(err.path(), dir.path("missing.key"));
    }
}
