//! The benchmark's topology on the namespace lab ([`crate::lab`]): a chain of namespaces
//! joined by veth pairs, the tunnel processes in them, and the global settings changed for a
//! run, all owned by one [`Chain`] whose lab removes and restores them again, also when the
//! run fails or is interrupted.
//!
//! ```text
//!   end 0 ---- relay 1 ---- ... ---- relay n ---- end n+1
//!        link 1         link 2             link n+1
//!   link k joins node k-1 (198.18.k.1/24, `rightk`) and node k (198.18.k.2/24, `leftk`)
//! ```
//!
//! No namespace has a default route or IP forwarding, so the ends reach each other only
//! through a tunnel: skywire's route through every relay, or boringtun's direct tunnel
//! (WireGuard has no relays; it runs on the chain without relays only). Hosts added beside
//! the chain ([`Chain::add_host`]) have no link at all: they hold comparisons on plain
//! loopback.

use core::time::Duration;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use skywire_dataplane::crypto::PublicKey;

use super::BenchError;
use crate::config::ConfigFile;
use crate::lab::{Lab, LabOptions, LinkEnd, Spawn};

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

/// A chain of namespaces in a lab; everything undone by [`Chain::teardown`] or on drop.
#[derive(Debug)]
pub(super) struct Chain {
    lab: Lab,
    /// Number of relays between the two ends.
    pub(super) relays: usize,
}

impl Chain {
    /// Build a chain with `relays` relays: namespaces, veths, addresses, loopback up.
    pub(super) fn build(relays: usize, interrupted: Arc<AtomicBool>) -> Result<Self, BenchError> {
        let mut options = LabOptions::new("skybench");
        options.interrupted = interrupted;
        let mut chain = Self {
            lab: Lab::new(options)?,
            relays,
        };
        for node in 0..chain.nodes() {
            chain.lab.add_host(&node.to_string())?;
        }
        for link in 1..chain.nodes() {
            let end = |node: usize, name: String, left: bool| {
                LinkEnd::new(node.to_string(), name).address(Self::link_address(link, left), 24)
            };
            chain.lab.link(
                &end(link - 1, format!("right{link}"), true)?,
                &end(link, format!("left{link}"), false)?,
            )?;
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
        self.lab.namespace(&i.to_string())
    }

    /// The address on link `link` of its left node (`left`) or its right node.
    pub(super) fn link_address(link: usize, left: bool) -> Ipv4Addr {
        let third = u8::try_from(link).unwrap_or(u8::MAX);
        Ipv4Addr::new(198, 18, third, if left { 1 } else { 2 })
    }

    /// A file in the chain's folder.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.lab.file(name)
    }

    /// A new private key (0600) in the chain's folder; its public key.
    pub(super) fn write_key(&self, name: &str) -> Result<PublicKey, BenchError> {
        Ok(self.lab.write_key(name)?)
    }

    /// Write `config` into the chain's folder as `name`; its path.
    pub(super) fn write_config(
        &self,
        name: &str,
        config: &ConfigFile,
    ) -> Result<PathBuf, BenchError> {
        Ok(self.lab.write_config(name, config)?)
    }

    /// `ip -n NAMESPACE ARGS` for node `i`.
    pub(super) fn ip_in(&self, i: usize, args: &[&str]) -> Result<String, BenchError> {
        Ok(self.lab.ip_in(&i.to_string(), args)?)
    }

    /// The flag SIGINT and SIGTERM raise (the measuring tools watch it too).
    pub(super) fn interrupted(&self) -> Arc<AtomicBool> {
        self.lab.interrupted()
    }

    /// Fail with [`BenchError::Interrupted`] once SIGINT or SIGTERM arrived.
    pub(super) fn check_interrupted(&self) -> Result<(), BenchError> {
        Ok(self.lab.check_interrupted()?)
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
        self.spawn_on(&i.to_string(), what, program, args, log)
    }

    /// [`spawn`](Self::spawn) on any host of the lab: a node of the chain (`"0"`, `"1"`,
    /// ...) or one added with [`add_host`](Self::add_host).
    pub(super) fn spawn_on(
        &mut self,
        host: &str,
        what: &str,
        program: &Path,
        args: &[&str],
        log: &str,
    ) -> Result<u32, BenchError> {
        let spawn = Spawn::new(what, program)
            .args(args)
            .log(self.lab.file(log))
            .grace(STOP_GRACE);
        let id = self.lab.start(host, spawn)?;
        Ok(self.lab.process(id).map_or(0, |p| p.pid()))
    }

    /// Add a host beside the chain: a namespace with `lo` up and no link, for what the
    /// bench compares on plain loopback (removed with the chain). Returns its namespace.
    pub(super) fn add_host(&mut self, host: &str) -> Result<String, BenchError> {
        Ok(self.lab.add_host(host)?)
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
        Ok(self.lab.check_processes()?)
    }

    /// Set a global sysctl for the run (saved first, restored by [`teardown`]).
    ///
    /// [`teardown`]: Self::teardown
    pub(super) fn set_sysctl(&mut self, name: &str, value: &str) -> Result<(), BenchError> {
        Ok(self.lab.set_sysctl(name, value)?)
    }

    /// Stop every process (SIGTERM to its group, SIGKILL after a grace period, reaped),
    /// restore sysctls, delete the namespaces and the folder. Returns what went wrong.
    pub(super) fn teardown(&mut self) -> Vec<String> {
        let report = self.lab.teardown();
        let mut problems: Vec<String> = report
            .problems
            .iter()
            .map(|problem| {
                let mut text = problem.to_string();
                let mut cause = std::error::Error::source(problem);
                while let Some(e) = cause {
                    text.push_str(&format!(": {e}"));
                    cause = e.source();
                }
                text
            })
            .collect();
        for (ns, pids) in report.killed_leftovers {
            problems.push(format!("processes {pids:?} were left in {ns}; killed"));
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
