//! Leftovers of labs whose process was killed before it could tear them down: namespaces
//! and scratch folders named `TAG-PID...` whose process id no longer exists. The first lab
//! of a tag in a process removes them; names of live processes are never touched (they may
//! be a lab in use right now, in another process).

use std::fs;
use std::path::{Component, Path};
use std::sync::Mutex;

use super::command::{ip, kill_all_in};
use super::{LEFTOVER_KILL_WAIT, SYSCTL_RECORD};

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Remove the leftovers of tag `tag`, once per tag and process (later calls return at
/// once), restoring sysctls under `sysctl_root`. What it removes is reported on standard
/// error: it was left by a crash worth knowing about.
pub(super) fn sweep_once(tag: &str, sysctl_root: &Path) {
    static SWEPT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    // A poisoned lock only means another sweep panicked; the list is still right.
    let mut swept = SWEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if swept.iter().any(|t| t == tag) {
        return;
    }
    swept.push(tag.to_owned());
    for line in sweep(
        tag,
        Path::new(NETNS_DIR),
        &std::env::temp_dir(),
        sysctl_root,
    ) {
        eprintln!("lab {tag}: {line}");
    }
}

/// Remove the stale namespaces (listed in `netns_dir`) and folders (in `temp_dir`) of
/// `tag`; what was done, in words.
pub(super) fn sweep(
    tag: &str,
    netns_dir: &Path,
    temp_dir: &Path,
    sysctl_root: &Path,
) -> Vec<String> {
    let mut done = Vec::new();
    for name in names_in(netns_dir) {
        let Some(pid) = owner(tag, &name) else {
            continue;
        };
        if is_alive(pid) {
            continue;
        }
        let killed = match kill_all_in(&name, LEFTOVER_KILL_WAIT) {
            Ok(killed) => killed.len(),
            Err(e) => {
                done.push(format!("namespace {name}: {e}"));
                0
            }
        };
        match ip(&["netns", "delete", &name]) {
            Ok(()) => done.push(format!(
                "removed namespace {name} left by process {pid}, which is gone \
                 ({killed} processes in it killed)"
            )),
            Err(e) => done.push(format!("cannot remove namespace {name}: {e}")),
        }
    }
    for name in names_in(temp_dir) {
        let Some(pid) = owner(tag, &name) else {
            continue;
        };
        if is_alive(pid) {
            continue;
        }
        let dir = temp_dir.join(&name);
        // Only folders: a file or a link with such a name is not a lab's.
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        done.extend(restore_recorded_sysctls(&dir, sysctl_root));
        match fs::remove_dir_all(&dir) {
            Ok(()) => done.push(format!("removed {} left by process {pid}", dir.display())),
            Err(e) => done.push(format!("cannot remove {}: {e}", dir.display())),
        }
    }
    done
}

/// Write back the sysctls a dead lab recorded in its folder `dir`.
fn restore_recorded_sysctls(dir: &Path, sysctl_root: &Path) -> Vec<String> {
    let Ok(record) = fs::read_to_string(dir.join(SYSCTL_RECORD)) else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for line in record.lines() {
        let Some((name, value)) = line.split_once('\t') else {
            continue;
        };
        let plain = !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            continue;
        }
        let path = sysctl_root.join(name);
        match fs::write(&path, value) {
            Ok(()) => done.push(format!("restored {} to {value}", path.display())),
            Err(e) => done.push(format!("cannot restore {} to {value}: {e}", path.display())),
        }
    }
    done
}

/// The process id in the name of a namespace or folder of tag `tag`: `TAG-PID`,
/// `TAG-PID-...` or `TAG-PID.N...`; `None` for any other name.
pub(super) fn owner(tag: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(tag)?.strip_prefix('-')?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (pid, after) = rest.split_at(digits);
    if pid.is_empty() || !(after.is_empty() || after.starts_with(['-', '.'])) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with id `pid` exists.
fn is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The names in folder `dir` (none if it cannot be read).
fn names_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
