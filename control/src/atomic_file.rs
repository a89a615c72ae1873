//! State files that survive a crash at any instant: the VPN exit's leases and the client's
//! record of what it changed (`docs/design/vpn-plan.md`, D6).
//!
//! [`write()`] never leaves a half-written file at the path: the bytes go to a new file in
//! the same folder (created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, so nothing
//! already there is opened or followed), which is synced and then renamed over the path;
//! the folder is synced last so the rename itself is durable. A reader sees the old bytes
//! or the new ones, never a mix.
//!
//! A state file that no longer parses is not deleted, and not silently replaced either:
//! [`set_aside`] renames it to `<name>.corrupt-<unix seconds>` for the operator to read, and
//! the caller starts afresh. [`read_json`] and [`write_json`] put serde's JSON on top, with
//! the file and the line in every error.
//!
//! Not for files the user names on the command line (those are [`crate::output_file`]'s),
//! nor for key files ([`crate::keyfile`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A state file could not be read, parsed or written. Every message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The file is there but is not the JSON this program writes.
    #[error("{}:{line}:{column}: not a valid state file: {source}", .path.display())]
    Parse {
        /// The state file.
        path: PathBuf,
        /// The line of the error, from 1.
        line: usize,
        /// The column of the error, from 1.
        column: usize,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
}

/// Replace the file at `path` with `bytes`, atomically and durably (see the module doc).
/// The file ends up with mode 0600. A symlink at `path` is replaced, never followed.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let dir = folder(path);
    // Unique within the process by the counter and across processes by the pid; O_EXCL
    // makes a leftover from a crashed writer (or anything planted there) a retry, never a
    // file we write through.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut attempts = 0;
    let (temp, mut file) = loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    drop(file);
    sync_folder(dir)
}

/// Rename a state file that could not be parsed to `<name>.corrupt-<unix seconds>` (with
/// `-2`, `-3`, ... if that name is taken) and return the new path. Nothing is overwritten.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = folder(path);
    for n in 1..=100u32 {
        let mut new_name = name.to_owned();
        new_name.push(format!(".corrupt-{secs}"));
        if n > 1 {
            new_name.push(format!("-{n}"));
        }
        let new_path = dir.join(new_name);
        // A hard link fails with EEXIST instead of replacing what is there, as rename would.
        match fs::hard_link(path, &new_path) {
            Ok(()) => {
                fs::remove_file(path)?;
                sync_folder(dir)?;
                return Ok(new_path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{}: too many corrupt copies already", path.display()),
    ))
}

/// The largest state file read: every file this program writes is far smaller, so a
/// larger one is not its own, and is refused before it fills the memory.
pub const MAX_STATE_FILE: u64 = 64 << 20;

/// Read at most [`MAX_STATE_FILE`] bytes of `path`; more is an error.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_STATE_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB: not a state file", MAX_STATE_FILE >> 20),
        ));
    }
    Ok(bytes)
}

/// Read a JSON state file (at most [`MAX_STATE_FILE`] bytes): `None` when there is none.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match read_bounded(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_owned(),
            line: source.line(),
            column: source.column(),
            source,
        })
}

/// Write `value` as pretty JSON (one trailing newline) with [`write()`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let io_error = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| io_error(e.into()))?;
    bytes.push(b'\n');
    write(path, &bytes).map_err(io_error)
}

/// The folder holding `path` (`.` for a bare name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_folder(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::local::socket::tests::TempDir;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replaces_and_leaves_no_temp_file() {
        let dir = TempDir::new();
        let path = dir.0.join("state.json");
        write(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        assert_eq!(names(&dir.0), ["state.json"]);
    }

    #[test]
    fn a_symlink_at_the_path_is_replaced_not_followed() {
        let dir = TempDir::new();
        let target = dir.0.join("target");
        fs::write(&target, b"precious").unwrap();
        let path = dir.0.join("state.json");
        symlink(&target, &path).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        let dir = TempDir::new();
        let err = write(&dir.0.join("no/such/state.json"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(write(Path::new("/"), b"x").is_err());
    }

    #[test]
    fn set_aside_renames_without_overwriting() {
        let dir = TempDir::new();
        let path = dir.0.join("vpn.json");
        fs::write(&path, b"{broken").unwrap();
        let first = set_aside(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(fs::read(&first).unwrap(), b"{broken");
        let first_name = first.file_name().unwrap().to_string_lossy().into_owned();
        assert!(first_name.starts_with("vpn.json.corrupt-"), "{first_name}");
        fs::write(&path, b"{broken again").unwrap();
        let second = set_aside(&path).unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read(&first).unwrap(), b"{broken");
        assert_eq!(fs::read(&second).unwrap(), b"{broken again");
    }

    #[test]
    fn json_round_trip_absent_and_parse_errors() {
        let dir = TempDir::new();
        let path = dir.0.join("s.json");
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), None);
        write_json(&path, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![1, 2, 3]));
        fs::write(&path, b"[1,\n2,\n\"x\"]").unwrap();
        let err = read_json::<Vec<u32>>(&path).unwrap_err();
        assert!(matches!(err, StateError::Parse { line: 3, .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:3:", path.display())),
            "{text}"
        );
    }

    #[test]
    fn a_file_larger_than_any_state_is_refused_unread() {
        let dir = TempDir::new();
        let path = dir.0.join("huge.json");
        let file = fs::File::create(&path).unwrap();
        // Sparse: no disk used.
        file.set_len(MAX_STATE_FILE + 1).unwrap();
        let err = read_json::<serde_json::Value>(&path).unwrap_err();
        assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
        fs::File::create(&path).unwrap().set_len(0).unwrap();
        assert!(matches!(
            read_json::<serde_json::Value>(&path),
            Err(StateError::Parse { .. })
        ));
    }
}
