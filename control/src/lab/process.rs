//! A program run inside a namespace: `ip netns exec NAMESPACE PROGRAM ARGS`, which enters
//! the namespace and then executes the program in its own place, so the child's process id
//! is the program's. Each runs in a process group of its own (a Ctrl-C at the terminal
//! reaches only the lab's owner), with its output in a log file.
//!
//! Stopping is SIGTERM to the group, then SIGKILL to the group once the process's grace
//! period is over, then the child reaped. A group is signalled only while its leader is
//! not reaped: until then its id cannot belong to another process.

use core::time::Duration;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::time::Instant;

use rustix::process::{Pid, kill_process_group};

use super::LabError;
use super::command::netns_command;

pub use rustix::process::Signal;

/// How long a process gets after SIGTERM before it is killed, unless [`Spawn::grace`] says
/// otherwise.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How much of a log error messages quote (its end).
pub(super) const LOG_TAIL: u64 = 2048;

/// How much of its log a process prints when it is dropped during a panic (its end).
const LOG_ON_PANIC: u64 = 64 << 10;

/// What to run, and how; see [`super::Lab::spawn`] and [`super::Lab::start`].
#[derive(Debug, Clone)]
pub struct Spawn {
    what: String,
    program: OsString,
    args: Vec<OsString>,
    log: Option<PathBuf>,
    append: bool,
    piped: bool,
    grace: Duration,
}

impl Spawn {
    /// Run `program` (a path, or a name looked up on `PATH` inside the namespace), called
    /// `what` in messages and reports (`node A`, `iperf3 server`).
    pub fn new(what: impl Into<String>, program: impl AsRef<OsStr>) -> Self {
        Self {
            what: what.into(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            log: None,
            append: false,
            piped: false,
            grace: STOP_GRACE,
        }
    }

    /// Add an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Standard output and error go to the file `log`, created afresh. Without a log they
    /// are discarded.
    pub fn log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self.append = false;
        self
    }

    /// Standard output and error are appended to the file `log` (a restarted process keeps
    /// its earlier runs' lines).
    pub fn append_log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self.append = true;
        self
    }

    /// Standard input and output are pipes ([`Process::take_stdin`],
    /// [`Process::take_stdout`]); only standard error goes to the log.
    pub fn piped(mut self) -> Self {
        self.piped = true;
        self
    }

    /// How long the process gets after SIGTERM before SIGKILL (default [`STOP_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

/// How a process ended when it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited after SIGTERM, with this status.
    OnTerm(ExitStatus),
    /// It had exited before it was asked to.
    Before(ExitStatus),
    /// It was killed: it ran past its grace period, or [`Process::kill`] was asked.
    Killed,
    /// It could not even be killed or reaped (should not happen).
    Lost,
}

/// A running (or ended) program in a namespace; stopped when dropped.
#[derive(Debug)]
pub struct Process {
    what: String,
    child: Child,
    /// Set once the child was reaped.
    exited: Option<ExitStatus>,
    log: Option<PathBuf>,
    grace: Duration,
}

impl Process {
    /// Start `spawn` inside the namespace named `namespace` (one of a lab's, see
    /// [`super::Lab::namespace`]; [`super::Lab::spawn`] is the usual way). The caller owns
    /// the process; the lab's teardown still kills it if it runs inside one of its
    /// namespaces then.
    pub fn spawn_in(namespace: &str, spawn: Spawn) -> Result<Self, LabError> {
        let mut command = netns_command(namespace, &spawn.program);
        command.args(&spawn.args).process_group(0);
        let log_error = |path: &Path| {
            let path = path.to_owned();
            move |source| LabError::Io {
                what: format!("cannot create {}", path.display()),
                source,
            }
        };
        let (out, err) = match &spawn.log {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(spawn.append)
                    .truncate(!spawn.append)
                    .open(path)
                    .map_err(log_error(path))?;
                let copy = file.try_clone().map_err(log_error(path))?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        if spawn.piped {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(err);
        } else {
            command.stdin(Stdio::null()).stdout(out).stderr(err);
        }
        let child = command.spawn().map_err(|source| LabError::Io {
            what: format!(
                "cannot start {} in namespace {namespace} (is iproute2 installed?)",
                spawn.what
            ),
            source,
        })?;
        Ok(Self {
            what: spawn.what,
            child,
            exited: None,
            log: spawn.log,
            grace: spawn.grace,
        })
    }

    /// Its label (`node A`).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Its process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it was seen to end (by an earlier call that reaped it); does not look again.
    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    /// How it ended, once it has (reaping it); `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Send `signal` to its process group. Fails if it has exited already.
    pub fn signal(&mut self, signal: Signal) -> Result<(), LabError> {
        if self.exited().is_some() {
            return Err(LabError::Io {
                what: format!("cannot signal {}: it has exited", self.what),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        // Not reaped yet, so the group id is still this child's.
        kill_process_group(Pid::from_child(&self.child), signal).map_err(|e| LabError::Io {
            what: format!("cannot signal {}", self.what),
            source: e.into(),
        })
    }

    /// Wait at most `timeout` for it to end: how it ended, or `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL after its grace period; reaped either way.
    pub fn stop(&mut self) -> Stopped {
        stop_all(std::slice::from_mut(self))
            .pop()
            .unwrap_or(Stopped::Lost)
    }

    /// SIGKILL at once (kill -9), and reaped.
    pub fn kill(&mut self) -> Stopped {
        if let Some(status) = self.exited() {
            return Stopped::Before(status);
        }
        self.kill_and_reap()
    }

    fn kill_and_reap(&mut self) -> Stopped {
        // The child is not reaped, so its group id is still its own.
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        match self.child.wait() {
            Ok(status) => {
                self.exited = Some(status);
                Stopped::Killed
            }
            Err(_) => Stopped::Lost,
        }
    }

    /// Its standard input, when spawned [`Spawn::piped`] (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Its standard output, when spawned [`Spawn::piped`] (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Its log file, if it has one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Everything in its log so far (empty without one).
    pub fn log_text(&self) -> String {
        self.log
            .as_deref()
            .and_then(|path| std::fs::read(path).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `max` bytes of its log, each line indented by four spaces, or `(its log is
    /// empty)`: for error messages.
    pub fn log_tail(&self, max: u64) -> String {
        let text = self
            .log
            .as_deref()
            .map(|p| tail(p, max))
            .unwrap_or_default();
        let text = text.trim_end();
        if text.is_empty() {
            "(its log is empty)".to_owned()
        } else {
            text.lines()
                .map(|line| format!("    {line}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.stop();
        }
        let log = match &self.log {
            Some(path) if std::thread::panicking() => tail(path, LOG_ON_PANIC),
            _ => String::new(),
        };
        if !log.trim().is_empty() {
            eprintln!(
                "----- log of {} (pid {}) -----\n{log}\n----- end of the log of {} -----",
                self.what,
                self.pid(),
                self.what
            );
        }
    }
}

/// Stop every process of `processes` that still runs: SIGTERM to all first, then each is
/// waited for until its own grace period is over and killed after. How each ended, in
/// order.
pub fn stop_all(processes: &mut [Process]) -> Vec<Stopped> {
    let start = Instant::now();
    let mut before = Vec::with_capacity(processes.len());
    for process in processes.iter_mut() {
        let exited = process.exited();
        if exited.is_none() {
            // A failure means it is already gone; the wait below finds out.
            let _ = kill_process_group(Pid::from_child(&process.child), Signal::TERM);
        }
        before.push(exited);
    }
    processes
        .iter_mut()
        .zip(before)
        .map(|(process, before)| {
            if let Some(status) = before {
                return Stopped::Before(status);
            }
            let left = process.grace.saturating_sub(start.elapsed());
            match process.wait_timeout(left) {
                Some(status) => Stopped::OnTerm(status),
                None => process.kill_and_reap(),
            }
        })
        .collect()
}

/// The last `max` bytes of the file at `path` (lossy UTF-8), empty if it cannot be read.
fn tail(path: &Path, max: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
        let mut bytes = Vec::new();
        let _ = file.take(max).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}
