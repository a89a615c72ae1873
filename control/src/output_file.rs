//! Files the binary writes where the user said (`skywire bench --out`), often as root:
//! created or replaced without following a symlink at the path.
//!
//! A folder someone else can write to may hold a symlink named like our output
//! (`bench.json -> /etc/shadow`); root writing through it would clobber the target. So:
//!
//! - the file is opened with `O_NOFOLLOW`: a symlink as the last part of the path is
//!   refused ([`OutputFileError::Symlink`]), dangling or not, and its target is never
//!   touched. Symlinks in the folders above are the user's choice and are followed.
//! - What was opened is checked through the descriptor (so swapping the path after the
//!   check changes nothing): it must be a regular file with a single name. Writing into a
//!   hard link would change the file under its other names too.
//! - An existing regular file is truncated and rewritten, so a run can be repeated into
//!   the same folder. New files get mode 0644 (less the umask): these are results, not
//!   secrets.
//!
//! [`check`] runs the same checks without writing, so a long run can refuse its output
//! paths before it starts rather than after it measured.
//!
//! Key files have their own, stricter rules in [`crate::keyfile`] (never replaced).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An output file could not be written. Every message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    /// The path is a symlink; it is not followed.
    #[error(
        "{}: is a symlink; refusing to write through it (remove it or choose another \
         output folder)",
        .path.display()
    )]
    Symlink {
        /// The output path.
        path: PathBuf,
    },
    /// The path is something other than a regular file (a folder, a FIFO, a device).
    #[error("{}: exists and is not a regular file; not writing to it", .path.display())]
    NotRegularFile {
        /// The output path.
        path: PathBuf,
    },
    /// The file has other names (hard links), which writing would change too.
    #[error(
        "{}: has {links} hard links; refusing to write through them (remove it first)",
        .path.display()
    )]
    HardLinked {
        /// The output path.
        path: PathBuf,
        /// How many names the file has.
        links: u64,
    },
    /// Opening, inspecting or writing failed.
    #[error("{}: cannot write", .path.display())]
    Io {
        /// The output path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}

/// Write `contents` to `path`, creating it (mode 0644) or replacing the content of the
/// regular file there; never through a symlink or a hard link (see the module doc).
pub fn write(path: impl AsRef<Path>, contents: &[u8]) -> Result<(), OutputFileError> {
    let path = path.as_ref();
    let io_error = |source| OutputFileError::Io {
        path: path.to_owned(),
        source,
    };
    // No O_TRUNC: the file is emptied only once it passed the checks below. O_NONBLOCK:
    // opening a FIFO must not wait for a reader (it is refused below anyway).
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| open_error(path, source))?;
    check_opened(path, &file)?;
    file.set_len(0).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Whether [`write()`] would accept `path` now: nothing there yet, or a regular file with
/// one name. Nothing is created.
pub fn check(path: impl AsRef<Path>) -> Result<(), OutputFileError> {
    let path = path.as_ref();
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(OutputFileError::Symlink {
            path: path.to_owned(),
        }),
        Ok(meta) => check_metadata(path, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(OutputFileError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `ELOOP` from `O_NOFOLLOW` is a symlink at the path; say so.
fn open_error(path: &Path, source: io::Error) -> OutputFileError {
    let symlink = source.raw_os_error() == Some(libc::ELOOP)
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if symlink {
        OutputFileError::Symlink {
            path: path.to_owned(),
        }
    } else {
        OutputFileError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

fn check_opened(path: &Path, file: &File) -> Result<(), OutputFileError> {
    let meta = file.metadata().map_err(|source| OutputFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    check_metadata(path, &meta)
}

fn check_metadata(path: &Path, meta: &fs::Metadata) -> Result<(), OutputFileError> {
    if !meta.is_file() {
        return Err(OutputFileError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    if meta.nlink() > 1 {
        return Err(OutputFileError::HardLinked {
            path: path.to_owned(),
            links: meta.nlink(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh folder under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("skywire-output-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            Self(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn creates_then_replaces_a_regular_file() {
        let dir = Scratch::new();
        let path = dir.path("bench.json");
        check(&path).unwrap();
        write(&path, b"a longer first version").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a longer first version");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "{mode:o}");
        check(&path).unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
    }

    /// What the bench did before (`fs::write`) goes through a symlink and rewrites its
    /// target; `write` refuses the link and leaves the target as it was.
    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = Scratch::new();
        let victim = dir.path("victim");
        fs::write(&victim, b"keep me").unwrap();
        let link = dir.path("bench.json");
        symlink(&victim, &link).unwrap();

        fs::write(&link, b"clobbered").unwrap();
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"clobbered",
            "the old way follows"
        );
        fs::write(&victim, b"keep me").unwrap();

        let err = check(&link).unwrap_err();
        assert!(matches!(err, OutputFileError::Symlink { .. }), "{err:?}");
        let err = write(&link, b"clobbered").unwrap_err();
        assert!(matches!(err, OutputFileError::Symlink { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&link.display().to_string()), "{msg}");
        assert!(msg.contains("symlink"), "{msg}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");

        // Dangling: nothing is created at the target.
        let dangling = dir.path("bench.svg");
        symlink(dir.path("nowhere"), &dangling).unwrap();
        let err = write(&dangling, b"x").unwrap_err();
        assert!(matches!(err, OutputFileError::Symlink { .. }), "{err:?}");
        assert!(!dir.path("nowhere").exists());
    }

    #[test]
    fn a_hard_link_is_refused_and_the_other_name_untouched() {
        let dir = Scratch::new();
        let victim = dir.path("victim");
        fs::write(&victim, b"keep me").unwrap();
        let link = dir.path("bench.json");
        fs::hard_link(&victim, &link).unwrap();
        let err = check(&link).unwrap_err();
        assert!(
            matches!(err, OutputFileError::HardLinked { links: 2, .. }),
            "{err:?}"
        );
        let err = write(&link, b"clobbered").unwrap_err();
        assert!(
            matches!(err, OutputFileError::HardLinked { links: 2, .. }),
            "{err:?}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn a_folder_is_refused() {
        let dir = Scratch::new();
        let sub = dir.path("bench.json");
        fs::create_dir(&sub).unwrap();
        let err = check(&sub).unwrap_err();
        assert!(
            matches!(err, OutputFileError::NotRegularFile { .. }),
            "{err:?}"
        );
        let err = write(&sub, b"x").unwrap_err();
        // Opening a folder for writing fails before the check (EISDIR).
        assert!(
            matches!(
                err,
                OutputFileError::Io { .. } | OutputFileError::NotRegularFile { .. }
            ),
            "{err:?}"
        );
    }
}
