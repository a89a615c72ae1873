//! The lab's hands: `ip` (iproute2) for namespaces, links and addresses; `ip netns exec` to
//! run a program inside a namespace; and the data plane's `setns` helper for sockets that
//! must live in one.

use core::time::Duration;
use std::ffi::OsStr;
use std::io;
use std::process::{Command, Stdio};
use std::time::Instant;

use rustix::process::{Pid, Signal, kill_process};

use super::LabError;

/// Run `ip ARGS`, failing with its standard error.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    ip_output(args).map(drop)
}

/// Run `ip ARGS` and return its standard output.
pub fn ip_output(args: &[&str]) -> Result<String, LabError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Io {
            what: format!("cannot run `{command}` (is iproute2 installed?)"),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(LabError::Command {
            command,
            detail: if stderr.is_empty() {
                output.status.to_string()
            } else {
                stderr
            },
        })
    }
}

/// A command that runs `program` inside the namespace `namespace`:
/// `ip netns exec NAMESPACE PROGRAM`, to which the caller adds arguments.
pub fn netns_command(namespace: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", namespace])
        .arg(program.as_ref());
    command
}

/// Run `f` on a new thread that entered the namespace `namespace`, and return its result;
/// sockets it creates stay in that namespace wherever they are used afterwards.
///
/// This is the data plane's `sys::netns::in_namespace`, the workspace's only `setns`; it is
/// for the demo and the tests (the node itself never changes namespace), and reaches them
/// through the lab alone.
pub fn in_namespace<T: Send>(namespace: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    skywire_dataplane::sys::netns::in_namespace(namespace, f)
}

/// Wait, at most `wait`, until the interface `interface` of `namespace` is operationally
/// up with its queue started (`state UP`, and no longer the `noop` queue that drops every
/// packet).
pub(super) fn wait_link_up(
    namespace: &str,
    interface: &str,
    wait: Duration,
) -> Result<(), LabError> {
    let deadline = Instant::now() + wait;
    loop {
        let shown = ip_output(&["-n", namespace, "-o", "link", "show", "dev", interface])?;
        if shown.contains(" state UP ") && !shown.contains(" qdisc noop ") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::LinkNotUp {
                namespace: namespace.to_owned(),
                interface: interface.to_owned(),
                waited: wait,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids of the processes inside namespace `namespace` (`ip netns pids`); none if it
/// cannot be read (a namespace that is gone holds no process).
fn pids_in(namespace: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", namespace])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL every process inside `namespace` until none is left, at most `wait`: the ids
/// killed. These are not the lab's children (those are stopped and reaped before), so they
/// are found by namespace and may exit by themselves between the listing and the signal.
pub(super) fn kill_all_in(namespace: &str, wait: Duration) -> Result<Vec<u32>, LabError> {
    let deadline = Instant::now() + wait;
    let mut killed = Vec::new();
    loop {
        let left = pids_in(namespace);
        if left.is_empty() {
            return Ok(killed);
        }
        if Instant::now() >= deadline {
            return Err(LabError::ProcessesLeft {
                namespace: namespace.to_owned(),
                pids: left,
            });
        }
        for pid in left {
            let Some(id) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
                continue;
            };
            if kill_process(id, Signal::KILL).is_ok() && !killed.contains(&pid) {
                killed.push(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
