//! The benchmark's machine room: a chain of network namespaces joined by veth pairs, the
//! tunnel processes in them, and the global settings changed for a run, all owned by one
//! [`Chain`] that removes and restores them again, also when the run fails or is
//! interrupted.
//!
//! ```text
//!   end 0 ---- relay 1 ---- ... ---- relay n ---- end n+1
//!        link 1         link 2             link n+1
//!   link k joins node k-1 (198.18.k.1/24) and node k (198.18.k.2/24)
//! ```
//!
//! No namespace has a default route or IP forwarding, so the ends reach each other only
//! through a tunnel: skywire's route through every relay, or boringtun's direct tunnel
//! (WireGuard has no relays; it runs on the chain without relays only).

use core::time::Duration;
use std::fs::{self, DirBuilder, File};
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use rustix::process::{Pid, Signal, kill_process_group};

use super::BenchError;
use crate::demo::lab::{ip, ip_output};

/// How long a process gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The global settings a run may change, restored afterwards: socket buffer defaults and
/// limits (boringtun's best configuration needs 4 MiB buffers, and these sysctls are not
/// per namespace on Linux).
pub(super) const SYSCTLS: [&str; 4] = [
    "net/core/rmem_default",
    "net/core/wmem_default",
    "net/core/rmem_max",
    "net/core/wmem_max",
];

/// A process the chain started, in its own process group.
#[derive(Debug)]
struct Process {
    what: String,
    child: Child,
}

/// Namespaces, processes, a scratch folder and changed sysctls; all undone on drop.
#[derive(Debug)]
pub(super) struct Chain {
    prefix: String,
    /// Keys, configs, sockets and logs.
    pub(super) dir: PathBuf,
    /// Number of relays between the two ends.
    pub(super) relays: usize,
    namespaces: Vec<String>,
    processes: Vec<Process>,
    saved_sysctls: Vec<(&'static str, String)>,
    interrupted: Arc<AtomicBool>,
}

impl Chain {
    /// Build a chain with `relays` relays: namespaces, veths, addresses, loopback up.
    pub(super) fn build(relays: usize, interrupted: Arc<AtomicBool>) -> Result<Self, BenchError> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("skybench-{}.{run}-", std::process::id());
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| BenchError::Io {
                what: format!("cannot create the folder {}", dir.display()),
                source,
            })?;
        let mut chain = Self {
            prefix,
            dir,
            relays,
            namespaces: Vec::new(),
            processes: Vec::new(),
            saved_sysctls: Vec::new(),
            interrupted,
        };
        for node in 0..chain.nodes() {
            chain.check_interrupted()?;
            let ns = chain.namespace(node);
            ip(&["netns", "add", &ns])?;
            chain.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        for link in 1..chain.nodes() {
            chain.check_interrupted()?;
            let (left, right) = (chain.namespace(link - 1), chain.namespace(link));
            let (l_name, r_name) = (format!("right{link}"), format!("left{link}"));
            ip(&[
                "link", "add", &l_name, "netns", &left, "type", "veth", "peer", "name", &r_name,
                "netns", &right,
            ])?;
            for (ns, name, address) in [
                (&left, &l_name, Self::link_address(link, true)),
                (&right, &r_name, Self::link_address(link, false)),
            ] {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    name,
                ])?;
                ip(&["-n", ns, "link", "set", name, "up"])?;
            }
        }
        Ok(chain)
    }

    /// Nodes in the chain: the two ends and the relays.
    pub(super) fn nodes(&self) -> usize {
        self.relays + 2
    }

    /// The last node (the receiving end).
    pub(super) fn last(&self) -> usize {
        self.relays + 1
    }

    /// The namespace of node `i`.
    pub(super) fn namespace(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// The address on link `link` of its left node (`left`) or its right node.
    pub(super) fn link_address(link: usize, left: bool) -> Ipv4Addr {
        let third = u8::try_from(link).unwrap_or(u8::MAX);
        Ipv4Addr::new(198, 18, third, if left { 1 } else { 2 })
    }

    /// A file in the chain's folder.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The flag SIGINT and SIGTERM raise (the measuring tools watch it too).
    pub(super) fn interrupted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupted)
    }

    /// Fail with [`BenchError::Interrupted`] once SIGINT or SIGTERM arrived.
    pub(super) fn check_interrupted(&self) -> Result<(), BenchError> {
        if self.interrupted.load(Ordering::Relaxed) {
            Err(BenchError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Start `program args` inside node `i`'s namespace, in its own process group, output
    /// to `log` in the chain's folder. Returns its process id (`ip netns exec` executes the
    /// program in its own place).
    pub(super) fn spawn(
        &mut self,
        i: usize,
        what: &str,
        program: &Path,
        args: &[&str],
        log: &str,
    ) -> Result<u32, BenchError> {
        self.check_interrupted()?;
        let log_path = self.file(log);
        let io_error = |source| BenchError::Io {
            what: format!("cannot create {}", log_path.display()),
            source,
        };
        let out = File::create(&log_path).map_err(io_error)?;
        let err = out.try_clone().map_err(io_error)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(i)])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| BenchError::Io {
                what: format!("cannot start {}", program.display()),
                source,
            })?;
        let pid = child.id();
        self.processes.push(Process {
            what: what.to_owned(),
            child,
        });
        Ok(pid)
    }

    /// Start `iperf3 -s` on the receiving end (it serves one test at a time, which is how
    /// the bench runs them).
    pub(super) fn start_iperf3_server(&mut self) -> Result<u32, BenchError> {
        let last = self.last();
        self.spawn(
            last,
            "iperf3 server",
            Path::new("iperf3"),
            &["-s"],
            "iperf3.log",
        )
    }

    /// Fail if a process started by [`spawn`](Self::spawn) has exited, naming it and
    /// quoting its log.
    pub(super) fn check_processes(&mut self) -> Result<(), BenchError> {
        for process in &mut self.processes {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(BenchError::Exited {
                    what: process.what.clone(),
                    status: status.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Set a global sysctl for the run (saved first, restored by [`teardown`]).
    ///
    /// [`teardown`]: Self::teardown
    pub(super) fn set_sysctl(&mut self, name: &'static str, value: &str) -> Result<(), BenchError> {
        if !SYSCTLS.contains(&name) {
            return Err(BenchError::Io {
                what: format!("refusing to change {name}: not a setting the bench restores"),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        }
        let path = Path::new("/proc/sys").join(name);
        let io_error = |source| BenchError::Io {
            what: format!("cannot set {}", path.display()),
            source,
        };
        if !self.saved_sysctls.iter().any(|(n, _)| *n == name) {
            let old = fs::read_to_string(&path).map_err(io_error)?;
            self.saved_sysctls.push((name, old.trim().to_owned()));
        }
        fs::write(&path, value).map_err(io_error)
    }

    /// Stop every process (SIGTERM to its group, SIGKILL after a grace period, reaped),
    /// restore sysctls, delete the namespaces and the folder. Returns what went wrong.
    pub(super) fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for process in &mut self.processes {
            if let Ok(None) = process.child.try_wait() {
                let _ = kill_process_group(Pid::from_child(&process.child), Signal::TERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for mut process in self.processes.drain(..) {
            loop {
                match process.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = kill_process_group(Pid::from_child(&process.child), Signal::KILL);
                        if process.child.wait().is_err() {
                            problems.push(format!("{} could not be stopped", process.what));
                        }
                        break;
                    }
                }
            }
        }
        for (name, value) in self.saved_sysctls.drain(..) {
            let path = Path::new("/proc/sys").join(name);
            if let Err(e) = fs::write(&path, &value) {
                problems.push(format!("cannot restore {} to {value}: {e}", path.display()));
            }
        }
        for ns in self.namespaces.drain(..) {
            if let Err(e) = ip(&["netns", "delete", &ns]) {
                problems.push(e.to_string());
            }
        }
        if let Ok(list) = ip_output(&["netns", "list"]) {
            let left: Vec<&str> = list
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .filter(|name| name.starts_with(&self.prefix))
                .collect();
            if !left.is_empty() {
                problems.push(format!("namespaces left behind: {}", left.join(", ")));
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot remove {}: {e}", self.dir.display()));
        }
        problems
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("skywire bench: cleanup: {problem}");
        }
    }
}
