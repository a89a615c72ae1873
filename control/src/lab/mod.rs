//! The namespace lab: hosts as network namespaces, links as veth pairs, real processes in
//! them, all owned by one [`Lab`] that removes them again. `skywire demo`, `skywire bench`
//! and the root-only integration tests build their topologies with it; nothing else in the
//! workspace creates a named namespace (the data plane's own root tests run in anonymous
//! ones that vanish with their thread).
//!
//! ```text
//! Lab::new("skydemo")          /tmp/skydemo-PID/  (keys 0600, configs, logs, sockets)
//!   add_host("a")              namespace skydemo-PID-a, lo up, no default route
//!   link(a end, b end)         veth pair created inside both namespaces, addresses, up
//!   start / spawn(host, Spawn) `ip netns exec NS PROGRAM`, own process group, log file
//!   set_sysctl(name, value)    old value saved (also to the folder, see below)
//!   teardown()                 everything undone, in reverse, and checked
//! ```
//!
//! What it does: names every namespace `TAG-PID-HOST` (`TAG-PID.N-HOST` for the N-th lab of
//! a process), so labs of parallel tests and processes never clash and `ip netns list`
//! shows whose a namespace is; gives the lab a scratch folder named like its namespaces
//! (0700 unless asked otherwise); writes keys ([`Lab::write_key`]) and configs
//! ([`Lab::write_config`], through the typed [`ConfigFile`] writer) into it; starts
//! processes inside a namespace ([`Process`], [`Spawn`]) with their output in a log file,
//! each in a process group of its own, so a Ctrl-C at the terminal reaches only the program
//! that owns the lab, which then stops them in order; raises global sysctls and puts them back; and
//! checks an interruption flag (set by the owner's signal handler) before each step.
//!
//! What it does not do: install signal handlers (the owner does, and sets the flag), add
//! default routes (no namespace has one, so nothing leaves the machine: use 198.18.0.0/15
//! and fd00::/8 inside), or measure anything.
//!
//! # Cleanup, on every path
//!
//! [`Lab::teardown`] stops the processes the lab owns (SIGTERM to each group, SIGKILL to
//! what still runs after its grace period, every child reaped), kills whatever else still
//! runs inside its namespaces, restores the sysctls, deletes the namespaces (with their
//! veths and TUN devices) and the folder, checks that `ip netns list` shows none of them,
//! and reports what it did and every problem ([`Teardown`]). `Drop` does the same when the
//! owner never got there (an error, a panic), printing the problems; a process's own
//! `Drop` stops it and, during a panic, prints its log. Runs once: later calls report
//! nothing. A lab never deletes a namespace it did not create.
//!
//! What a SIGKILLed owner leaves behind (no destructor runs) goes at the next start: the
//! first [`Lab::new`] of a tag in a process removes the namespaces and folders of that tag
//! whose process id no longer exists, killing what runs in them and restoring the sysctls
//! recorded in the folder. Names of live processes are never touched.

mod command;
pub mod flood;
pub mod impair;
mod process;
mod stale;

use core::time::Duration;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

use crate::config::{ConfigFile, WriteError};
use crate::keyfile::{self, KeyFileError};
use crate::node::ctl::{CtlError, StatusReply, request_status};

pub use command::{in_namespace, ip, ip_output, netns_command};
pub use process::{Process, STOP_GRACE, Signal, Spawn, Stopped, stop_all};

/// Why a lab step failed, or what its teardown could not undo.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Namespaces need root.
    #[error("network namespaces need root")]
    NotRoot,
    /// A lab tag, host or interface name that the lab does not accept.
    #[error("{name:?} is not a usable {what} name ({rule})")]
    BadName {
        /// `tag`, `host`, `interface` or `sysctl`.
        what: &'static str,
        /// The name.
        name: String,
        /// What a name must be.
        rule: &'static str,
    },
    /// An `ip` command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error, or its exit status.
        detail: String,
    },
    /// A file, a folder, a sysctl or a program could not be used.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The interruption flag was raised (SIGINT, SIGTERM).
    #[error("interrupted")]
    Interrupted,
    /// A process the lab started has exited.
    #[error("{what} exited ({status}); the end of its log:\n{log}")]
    Exited {
        /// Which process.
        what: String,
        /// How it ended.
        status: ExitStatus,
        /// The end of its log, indented.
        log: String,
    },
    /// A `skywire node` did not answer on its control socket in time.
    #[error(
        "{what} did not answer on {} within {} s ({source}); the end of its log:\n{log}",
        socket.display(),
        waited.as_secs()
    )]
    NotServing {
        /// Which process.
        what: String,
        /// Its control socket.
        socket: PathBuf,
        /// How long it was given.
        waited: Duration,
        /// The end of its log, indented.
        log: String,
        /// The last answer of the socket.
        #[source]
        source: Box<CtlError>,
    },
    /// A `skywire node`'s control socket answered with an error.
    #[error("asking {what} for its status failed")]
    Status {
        /// Which process.
        what: String,
        /// Why.
        #[source]
        source: Box<CtlError>,
    },
    /// A process could not be killed or reaped (should not happen).
    #[error("{what} could not be stopped")]
    StillRunning {
        /// Which process.
        what: String,
    },
    /// Processes still ran in a namespace after SIGKILL.
    #[error("processes {pids:?} are still in namespace {namespace}")]
    ProcessesLeft {
        /// The namespace.
        namespace: String,
        /// Their ids.
        pids: Vec<u32>,
    },
    /// A link did not come up: the kernel did not start its queue in time.
    #[error("interface {interface} in namespace {namespace} did not come up within {} s", waited.as_secs())]
    LinkNotUp {
        /// The namespace.
        namespace: String,
        /// The interface.
        interface: String,
        /// How long it was given.
        waited: Duration,
    },
    /// `ip netns list` still shows namespaces of the lab after teardown.
    #[error("namespaces left behind: {}", names.join(", "))]
    NamespacesLeft {
        /// Their names.
        names: Vec<String>,
    },
    /// A config file could not be written.
    #[error(transparent)]
    Config(#[from] WriteError),
    /// A key file could not be written.
    #[error(transparent)]
    Key(#[from] KeyFileError),
}

/// What a lab is called and how its folder is made.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The start of every name: `skydemo`, `skybench`, `swt`. Lowercase letters and digits.
    pub tag: String,
    /// Raised to stop: every lab step then fails with [`LabError::Interrupted`].
    pub interrupted: Arc<AtomicBool>,
    /// Mode of the scratch folder (0700 by default; 0755 lets other users reach folders
    /// inside it).
    pub dir_mode: u32,
}

impl LabOptions {
    /// A lab tagged `tag`, folder 0700, with a flag of its own.
    pub fn new(tag: impl Into<String>) -> Self {
        Self {
            tag: tag.into(),
            interrupted: Arc::new(AtomicBool::new(false)),
            dir_mode: 0o700,
        }
    }
}

/// A process the lab owns (see [`Lab::start`]); valid for the lab that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId(usize);

/// One end of a veth link: the host, the interface's name there, its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEnd {
    /// The host (namespace) the end lives in.
    pub host: String,
    /// The interface name in that namespace.
    pub interface: String,
    /// Addresses with prefix lengths (`198.18.1.1/24`, `fd00:1::1/64`).
    pub addresses: Vec<Prefix>,
}

impl LinkEnd {
    /// The end `interface` in `host`, without addresses.
    pub fn new(host: impl Into<String>, interface: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            interface: interface.into(),
            addresses: Vec::new(),
        }
    }

    /// The same end with `address/len` added; fails (as the `ip` command would) only for a
    /// length beyond the address's bits.
    pub fn address(mut self, address: impl Into<IpAddr>, len: u8) -> Result<Self, LabError> {
        let address = address.into();
        let prefix = Prefix::new(address, len).ok_or_else(|| LabError::BadName {
            what: "address",
            name: format!("{address}/{len}"),
            rule: "the prefix length must fit the address",
        })?;
        self.addresses.push(prefix);
        Ok(self)
    }

    /// The same end with `prefix` added.
    pub fn prefix(mut self, prefix: Prefix) -> Self {
        self.addresses.push(prefix);
        self
    }
}

/// A process the lab stopped in [`Lab::teardown`].
#[derive(Debug)]
pub struct StoppedProcess {
    /// The id [`Lab::start`] returned.
    pub id: ProcessId,
    /// Its label.
    pub what: String,
    /// How it ended.
    pub stopped: Stopped,
}

/// What [`Lab::teardown`] did and what it could not do.
#[derive(Debug, Default)]
pub struct Teardown {
    /// The processes the lab owned, in the order they were started.
    pub processes: Vec<StoppedProcess>,
    /// Other processes found running inside a namespace, killed: (namespace, their ids).
    pub killed_leftovers: Vec<(String, Vec<u32>)>,
    /// Sysctls written back: (name, value).
    pub restored_sysctls: Vec<(String, String)>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// The scratch folder, if it was removed.
    pub removed_dir: Option<PathBuf>,
    /// Whatever could not be cleaned up.
    pub problems: Vec<LabError>,
}

/// The namespaces, processes, folder and sysctls of one topology; see the module docs.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    /// `TAG-PID-` or `TAG-PID.N-`: the start of every namespace name.
    prefix: String,
    dir: PathBuf,
    /// Namespaces this lab created, in order.
    namespaces: Vec<String>,
    processes: Vec<Process>,
    /// Sysctls changed: name and the value to restore, in the order first changed.
    sysctls: Vec<(String, String)>,
    /// `/proc/sys`, or a stand-in folder in tests.
    sysctl_root: PathBuf,
    interrupted: Arc<AtomicBool>,
    torn_down: bool,
}

/// The file in a lab's folder that records the sysctls to restore, one `NAME\tVALUE` per
/// line: what the next run restores if this one is killed before its teardown.
const SYSCTL_RECORD: &str = "sysctls-to-restore";

/// Where global sysctls live.
const PROC_SYS: &str = "/proc/sys";

/// How long a new link may take to carry traffic. `ip link set up` returns before the
/// kernel has seen the carrier: its link watcher, which starts the interface's queue (until
/// then every packet sent is dropped), runs at most once a second, later when the machine
/// is busy with other links.
pub const LINK_UP_WAIT: Duration = Duration::from_secs(5);

/// How long killing the leftover processes of a namespace may take.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(5);

impl Lab {
    /// A new lab with its scratch folder; leftovers of dead processes with the same tag are
    /// removed first (once per tag and process). Needs root.
    pub fn new(options: LabOptions) -> Result<Self, LabError> {
        check_name(
            "tag",
            &options.tag,
            32,
            "lowercase letters and digits",
            |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        )?;
        if !rustix::process::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        stale::sweep_once(&options.tag, Path::new(PROC_SYS));
        static LABS: AtomicU32 = AtomicU32::new(0);
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = if n == 0 {
            format!("{}-{pid}-", options.tag)
        } else {
            format!("{}-{pid}.{n}-", options.tag)
        };
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        make_dir(&dir, options.dir_mode)?;
        Ok(Self {
            tag: options.tag,
            prefix,
            dir,
            namespaces: Vec::new(),
            processes: Vec::new(),
            sysctls: Vec::new(),
            sysctl_root: PathBuf::from(PROC_SYS),
            interrupted: options.interrupted,
            torn_down: false,
        })
    }

    /// The start of every namespace name of this lab (`skydemo-1234-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The scratch folder: keys, configs, logs, sockets. Removed at teardown.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file `name` in the scratch folder (nothing is created).
    pub fn file(&self, name: impl AsRef<Path>) -> PathBuf {
        self.dir.join(name)
    }

    /// The namespace name of `host`, whether or not it was added.
    pub fn namespace(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// The interruption flag, for loops of the owner's own (traffic, measurements).
    pub fn interrupted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupted)
    }

    /// Fail with [`LabError::Interrupted`] once the flag is raised.
    pub fn check_interrupted(&self) -> Result<(), LabError> {
        if self.interrupted.load(Ordering::Relaxed) {
            Err(LabError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Add a host: a namespace with `lo` up, no other interface and no route. Returns the
    /// namespace's name.
    pub fn add_host(&mut self, host: &str) -> Result<String, LabError> {
        check_name("host", host, 64, "letters, digits, _ and -", |c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-'
        })?;
        self.check_interrupted()?;
        let ns = self.namespace(host);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Join two hosts with a veth pair. Each end is created directly inside its namespace
    /// (the host's namespace never sees them, so names cannot clash there), gets its
    /// addresses (IPv6 ones without duplicate address detection, usable at once) and is
    /// set up. Returns once both ends carry traffic (see [`LINK_UP_WAIT`]).
    pub fn link(&self, a: &LinkEnd, b: &LinkEnd) -> Result<(), LabError> {
        for end in [a, b] {
            check_name(
                "interface",
                &end.interface,
                15,
                "at most 15 letters, digits, _, . and -",
                |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
            )?;
        }
        self.check_interrupted()?;
        let (ns_a, ns_b) = (self.namespace(&a.host), self.namespace(&b.host));
        ip(&[
            "link",
            "add",
            &a.interface,
            "netns",
            &ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &b.interface,
            "netns",
            &ns_b,
        ])?;
        for (ns, end) in [(&ns_a, a), (&ns_b, b)] {
            for address in &end.addresses {
                let text = address.to_string();
                let mut args = vec!["-n", ns, "addr", "add", &text, "dev", &end.interface];
                if address.addr().is_ipv6() {
                    args.push("nodad");
                }
                ip(&args)?;
            }
            ip(&["-n", ns, "link", "set", &end.interface, "up"])?;
        }
        for (ns, end) in [(&ns_a, a), (&ns_b, b)] {
            command::wait_link_up(ns, &end.interface, LINK_UP_WAIT)?;
        }
        Ok(())
    }

    /// `ip -n NAMESPACE ARGS` for `host`: whatever else a topology needs (a bridge, a
    /// route, an address on `lo`).
    pub fn ip_in(&self, host: &str, args: &[&str]) -> Result<String, LabError> {
        self.check_interrupted()?;
        let ns = self.namespace(host);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        ip_output(&all)
    }

    /// A command that runs `program` inside `host`'s namespace (`ip netns exec`), to run to
    /// its end; for long-running processes use [`Self::spawn`] or [`Self::start`].
    pub fn command(&self, host: &str, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.namespace(host), program)
    }

    /// Start a process in `host`'s namespace that the caller owns (and stops, or its `Drop`
    /// does). What is still running inside the namespace at teardown is killed anyway.
    pub fn spawn(&self, host: &str, spawn: Spawn) -> Result<Process, LabError> {
        self.check_interrupted()?;
        Process::spawn_in(&self.namespace(host), spawn)
    }

    /// Start a process in `host`'s namespace that the lab owns: [`Self::teardown`] stops it
    /// and reports how. Returns its id, for [`Self::process_mut`].
    pub fn start(&mut self, host: &str, spawn: Spawn) -> Result<ProcessId, LabError> {
        let process = self.spawn(host, spawn)?;
        self.processes.push(process);
        Ok(ProcessId(self.processes.len() - 1))
    }

    /// A process the lab owns.
    pub fn process(&self, id: ProcessId) -> Option<&Process> {
        self.processes.get(id.0)
    }

    /// A process the lab owns, to signal or wait for.
    pub fn process_mut(&mut self, id: ProcessId) -> Option<&mut Process> {
        self.processes.get_mut(id.0)
    }

    /// Fail with [`LabError::Exited`] (quoting its log) if a process the lab owns has
    /// exited.
    pub fn check_processes(&mut self) -> Result<(), LabError> {
        for process in &mut self.processes {
            if let Some(status) = process.exited() {
                return Err(LabError::Exited {
                    what: process.what().to_owned(),
                    status,
                    log: process.log_tail(process::LOG_TAIL),
                });
            }
        }
        Ok(())
    }

    /// Wait until the `skywire node` `id` answers `status` on its control socket `socket`,
    /// at most `timeout`; see [`wait_until_serving`].
    pub fn wait_until_serving(
        &mut self,
        id: ProcessId,
        socket: &Path,
        timeout: Duration,
    ) -> Result<StatusReply, LabError> {
        let interrupted = Arc::clone(&self.interrupted);
        let process = self.processes.get_mut(id.0).ok_or_else(|| LabError::Io {
            what: "no such process in this lab".to_owned(),
            source: io::ErrorKind::NotFound.into(),
        })?;
        wait_until_serving(process, socket, timeout, &interrupted)
    }

    /// A new private key (mode 0600) in the scratch folder as `name`; its public key.
    pub fn write_key(&self, name: impl AsRef<Path>) -> Result<PublicKey, LabError> {
        Ok(keyfile::write_new_key(self.file(name))?)
    }

    /// Write `config` (checked: see [`ConfigFile::write`]) into the scratch folder as
    /// `name`; its path.
    pub fn write_config(
        &self,
        name: impl AsRef<Path>,
        config: &ConfigFile,
    ) -> Result<PathBuf, LabError> {
        let path = self.file(name);
        config.write(&path)?;
        Ok(path)
    }

    /// Set the global sysctl `name` (`net/core/rmem_max`) to `value` for the lab's life.
    /// The old value is saved first, in memory and in the scratch folder, and written back
    /// at teardown (or, if this process is killed first, by the next lab of the same tag).
    pub fn set_sysctl(&mut self, name: &str, value: &str) -> Result<(), LabError> {
        let relative = Path::new(name);
        let plain = !name.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(LabError::BadName {
                what: "sysctl",
                name: name.to_owned(),
                rule: "a path under /proc/sys such as net/core/rmem_max",
            });
        }
        self.check_interrupted()?;
        let path = self.sysctl_root.join(relative);
        let io_error = |what: &str, source| LabError::Io {
            what: format!("cannot {what} {}", path.display()),
            source,
        };
        if !self.sysctls.iter().any(|(n, _)| n == name) {
            let old = fs::read_to_string(&path).map_err(|e| io_error("read", e))?;
            self.sysctls.push((name.to_owned(), old.trim().to_owned()));
            let record: String = self
                .sysctls
                .iter()
                .map(|(n, v)| format!("{n}\t{v}\n"))
                .collect();
            let record_file = self.file(SYSCTL_RECORD);
            fs::write(&record_file, record).map_err(|source| LabError::Io {
                what: format!("cannot write {}", record_file.display()),
                source,
            })?;
        }
        fs::write(&path, value).map_err(|e| io_error("set", e))
    }

    /// Undo everything, in reverse (see the module docs), and report. Runs once; later
    /// calls return an empty report.
    pub fn teardown(&mut self) -> Teardown {
        let mut report = Teardown::default();
        if self.torn_down {
            return report;
        }
        self.torn_down = true;

        let stopped = stop_all(&mut self.processes);
        for (i, (process, stopped)) in self.processes.iter().zip(stopped).enumerate() {
            if stopped == Stopped::Lost {
                report.problems.push(LabError::StillRunning {
                    what: process.what().to_owned(),
                });
            }
            report.processes.push(StoppedProcess {
                id: ProcessId(i),
                what: process.what().to_owned(),
                stopped,
            });
        }
        // Each is stopped and reaped; dropping them now only closes their pipes.
        self.processes.clear();

        for ns in &self.namespaces {
            match command::kill_all_in(ns, LEFTOVER_KILL_WAIT) {
                Ok(killed) if killed.is_empty() => {}
                Ok(killed) => report.killed_leftovers.push((ns.clone(), killed)),
                Err(e) => report.problems.push(e),
            }
        }

        for (name, value) in self.sysctls.drain(..).rev() {
            let path = self.sysctl_root.join(&name);
            match fs::write(&path, &value) {
                Ok(()) => report.restored_sysctls.push((name, value)),
                Err(source) => report.problems.push(LabError::Io {
                    what: format!("cannot restore {} to {value}", path.display()),
                    source,
                }),
            }
        }

        for ns in self.namespaces.drain(..) {
            match ip(&["netns", "delete", &ns]) {
                Ok(()) => report.namespaces.push(ns),
                Err(e) => report.problems.push(e),
            }
        }
        match ip_output(&["netns", "list"]) {
            Ok(list) => {
                let names: Vec<String> = list
                    .lines()
                    .filter_map(|line| line.split_whitespace().next())
                    .filter(|name| name.starts_with(&self.prefix))
                    .map(str::to_owned)
                    .collect();
                if !names.is_empty() {
                    report.problems.push(LabError::NamespacesLeft { names });
                }
            }
            Err(e) => report.problems.push(e),
        }

        match fs::remove_dir_all(&self.dir) {
            Ok(()) => report.removed_dir = Some(self.dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => report.problems.push(LabError::Io {
                what: format!("cannot remove {}", self.dir.display()),
                source,
            }),
        }
        report
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let report = self.teardown();
        for problem in report.problems {
            eprintln!("lab {}: cleanup: {problem}", self.tag);
        }
    }
}

/// Wait until the `skywire node` `process` answers `status` on its control socket `socket`,
/// at most `timeout`. The node serves the socket only once its engine runs, so an answer
/// means its UDP socket and TUN device are up.
///
/// Fails with [`LabError::Exited`] if the process exits first, [`LabError::NotServing`] if
/// the socket is still unavailable at the deadline, [`LabError::Status`] if it answers
/// with an error, and [`LabError::Interrupted`] once `interrupted` is raised.
pub fn wait_until_serving(
    process: &mut Process,
    socket: &Path,
    timeout: Duration,
    interrupted: &AtomicBool,
) -> Result<StatusReply, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if interrupted.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        if let Some(status) = process.exited() {
            return Err(LabError::Exited {
                what: process.what().to_owned(),
                status,
                log: process.log_tail(process::LOG_TAIL),
            });
        }
        match request_status(socket, Duration::from_secs(1)) {
            Ok(status) => return Ok(status),
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) if source.is_unavailable() => {
                return Err(LabError::NotServing {
                    what: process.what().to_owned(),
                    socket: socket.to_owned(),
                    waited: timeout,
                    log: process.log_tail(process::LOG_TAIL),
                    source: Box::new(source),
                });
            }
            Err(source) => {
                return Err(LabError::Status {
                    what: process.what().to_owned(),
                    source: Box::new(source),
                });
            }
        }
    }
}

/// `name` is 1 to `max` bytes and every character passes `allowed`; otherwise a
/// [`LabError::BadName`] saying `rule`.
fn check_name(
    what: &'static str,
    name: &str,
    max: usize,
    rule: &'static str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), LabError> {
    if name.is_empty() || name.len() > max || !name.chars().all(allowed) {
        return Err(LabError::BadName {
            what,
            name: name.to_owned(),
            rule,
        });
    }
    Ok(())
}

/// Create the scratch folder `dir` with `mode`. One left by an earlier process that had
/// this process's id (and this user) is replaced; anything else in the way is an error.
fn make_dir(dir: &Path, mode: u32) -> Result<(), LabError> {
    let io_error = |source| LabError::Io {
        what: format!("cannot create the folder {}", dir.display()),
        source,
    };
    if let Ok(meta) = fs::symlink_metadata(dir) {
        let ours = meta.is_dir() && meta.uid() == rustix::process::geteuid().as_raw();
        if !ours {
            return Err(io_error(io::ErrorKind::AlreadyExists.into()));
        }
        fs::remove_dir_all(dir).map_err(io_error)?;
    }
    DirBuilder::new().mode(mode).create(dir).map_err(io_error)?;
    // The umask may have taken bits away.
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_error)
}

#[cfg(test)]
mod tests;
