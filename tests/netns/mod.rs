//! Network-namespace topologies for the root-only integration tests: hosts are namespaces,
//! links are veth pairs, nodes are the real `skywire` binary started inside them.
//!
//! A test uses it as `mod common; mod netns;` (it runs the binary and makes keys with
//! `tests/common`) and starts with [`skip_unless_root`]. Then:
//!
//! - [`Topology::new`] makes the guard; [`Topology::host`] adds a namespace (with `lo` up
//!   and no default route) and [`Topology::link`] joins two with a veth pair. Namespaces are
//!   named `swt-<pid>-<n><host>`, unique per process and per topology, so tests may run in
//!   parallel; dropping the guard SIGKILLs every process left in its namespaces (whatever
//!   started them) and deletes the namespaces and its scratch folder, also when the test
//!   panics. Namespaces and folders left by an earlier test process that was killed before
//!   its guards ran (its pid is gone) are removed first.
//! - [`Node::new`] gives a node its key (0600, by `skywire keygen`) and folder;
//!   [`Node::configure`] writes its config, [`Node::start`] runs `skywire node` in its
//!   namespace and waits (bounded) until `skywire status` answers. A node's log is printed
//!   when the test panics.
//! - [`Topology::spawn`] runs a helper (the Python tools in `tests/tools/`) in a namespace,
//!   with its output lines readable with a timeout.
//!
//! Addresses: 198.18.0.0/15 on the veth links, the TUN subnets 10.77.0.0/24 and fd77::/64
//! come from the nodes' configs. Nothing here adds a default route, so no packet can leave
//! the machine.
//!
//! Each test binary uses only part of this module; the rest is not dead code.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use skywire_control::node::ctl::StatusReply;

use crate::common::{chmod, is_root, keygen, mode_of, skywire_binary};

/// How long a node may take from exec to answering `skywire status`.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefix of every namespace and scratch folder this module creates.
const PREFIX: &str = "swt-";

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// `false`, after saying why, when the test cannot run here: it needs root. As root, the
/// tools the tests use must be installed (`scripts/test` installs them), or this panics.
pub(crate) fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        println!("{test}: skipped: needs root (CI runs as root)");
        return false;
    }
    for (tool, package) in [("ip", "iproute2"), ("ping", "iputils-ping")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "{test}: `{tool}` is missing: install {package} (scripts/test does)"
        );
    }
    true
}

/// A helper script in `tests/tools/`.
pub(crate) fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools")
        .join(name)
}

/// The system's Python 3: the first of the usual absolute paths, else `python3` on PATH.
pub(crate) fn python3() -> PathBuf {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Run a command to completion, panicking with its stderr when it fails.
pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS`, which must succeed.
pub(crate) fn ip(args: &[&str]) -> String {
    run_ok(Command::new("ip").args(args))
}

/// `key=value` pairs of a line printed by the tools.
pub(crate) fn key_values(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Poll `check` every 50 ms until it is true or `deadline` passes; the time it took.
pub(crate) fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Remove namespaces and folders left by test processes that no longer exist. Once per
/// process; never touches the names of a live process (which may be a test running now).
fn remove_stale() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stale = |name: &str| {
            let Some(rest) = name.strip_prefix(PREFIX) else {
                return false;
            };
            let pid = rest.split('-').next().unwrap_or("");
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new("/proc").join(pid).exists()
        };
        let names = |dir: &Path| -> Vec<String> {
            fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        for ns in names(Path::new(NETNS_DIR)) {
            if stale(&ns) {
                eprintln!("netns: removing namespace {ns} left by an earlier test run");
                kill_all_in(&ns);
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        for dir in names(&std::env::temp_dir()) {
            if stale(&dir) {
                let _ = fs::remove_dir_all(std::env::temp_dir().join(dir));
            }
        }
    });
}

/// SIGKILL every process in namespace `ns` and wait (bounded) until none is left.
fn kill_all_in(ns: &str) {
    let pids = || -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let _ = wait_until(Duration::from_secs(5), || {
        let left = pids();
        if !left.is_empty() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(&left)
                .stderr(Stdio::null())
                .status();
        }
        left.is_empty()
    });
}

/// The guard of one test's namespaces, processes and scratch folder; see the module docs.
pub(crate) struct Topology {
    /// `swt-<pid>-<n>`: the start of every namespace name of this topology.
    prefix: String,
    namespaces: Vec<String>,
    dir: PathBuf,
}

impl Topology {
    /// An empty topology with its scratch folder (0755, so the nodes' 0700 socket folders
    /// inside it are the only closed ones).
    pub(crate) fn new() -> Self {
        remove_stale();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        Self {
            prefix,
            namespaces: Vec::new(),
            dir,
        }
    }

    /// The scratch folder, removed with the topology.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace name of host `host` (`a`, `b`...).
    pub(crate) fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// Add a host: a namespace with `lo` up and nothing else.
    pub(crate) fn host(&mut self, host: &str) -> String {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Join two hosts with a veth pair: `(host, interface, address/len)` at each end. Both
    /// ends are created directly in their namespaces, so names never clash in the host's.
    pub(crate) fn link(&self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        let (ns_a, ns_b) = (self.ns(a.0), self.ns(b.0));
        ip(&[
            "link", "add", a.1, "netns", &ns_a, "type", "veth", "peer", "name", b.1, "netns", &ns_b,
        ]);
        for (ns, (_, iface, addr)) in [(&ns_a, a), (&ns_b, b)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", iface]);
            ip(&["-n", ns, "link", "set", iface, "up"]);
        }
    }

    /// A command run inside host `host`'s namespace.
    pub(crate) fn command(&self, host: &str, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host)])
            .arg(program.as_ref());
        cmd
    }

    /// Run `program ARGS` in host `host` to completion.
    pub(crate) fn output(&self, host: &str, program: &str, args: &[&str]) -> Output {
        self.command(host, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ping -c COUNT -W 2 -I FROM TO` in host `host`: how many replies came back.
    pub(crate) fn ping(&self, host: &str, from: &str, to: &str, count: u32) -> u32 {
        self.ping_args(host, from, to, count, &[])
    }

    /// [`Self::ping`] with extra arguments (`-p PATTERN`, `-i 0.2`...).
    pub(crate) fn ping_args(
        &self,
        host: &str,
        from: &str,
        to: &str,
        count: u32,
        extra: &[&str],
    ) -> u32 {
        let count = count.to_string();
        let mut args = vec!["-n", "-c", &count, "-i", "0.2", "-W", "2", "-I", from];
        args.extend_from_slice(extra);
        args.push(to);
        let out = self.output(host, "ping", &args);
        let text = String::from_utf8_lossy(&out.stdout);
        // "3 packets transmitted, 3 received, ..."
        text.lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Start `program ARGS` in host `host`, stdin and stdout piped, stderr to a file.
    pub(crate) fn spawn(&self, host: &str, label: &str, program: &Path, args: &[&str]) -> Proc {
        Proc::spawn(label, self.command(host, program).args(args), &self.dir)
    }

    /// Start a Python tool from `tests/tools/` in host `host`.
    pub(crate) fn spawn_tool(&self, host: &str, script: &str, args: &[&str]) -> Proc {
        let mut cmd = self.command(host, python3());
        cmd.arg(tool(script)).args(args);
        Proc::spawn(script, &mut cmd, &self.dir)
    }

    /// Whether interface `iface` exists in host `host`.
    pub(crate) fn has_link(&self, host: &str, iface: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.ns(host), "link", "show", "dev", iface])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Run `cat /proc/net/snmp` in host `host`: the kernel's UDP counters, to tell a drop by
    /// the kernel (full socket buffer) from one by the node.
    pub(crate) fn udp_snmp(&self, host: &str) -> HashMap<String, u64> {
        let out = self.output(host, "cat", &["/proc/net/snmp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
        match udp.as_slice() {
            [names, values] => names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect(),
            _ => HashMap::new(),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_all_in(ns);
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A helper process: its stdout lines arrive through a channel (read with a timeout), its
/// stderr goes to a file shown when something goes wrong. Killed (SIGKILL) when dropped.
pub(crate) struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(label: &str, cmd: &mut Command, dir: &Path) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let stderr = dir.join(format!("{label}-{n}.stderr"));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            label: label.to_owned(),
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line of output; panics (showing stderr) at EOF or after `timeout`.
    pub(crate) fn line(&self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no output within {timeout:?}; stderr:\n{}",
                self.label,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "{}: exited without the expected output; stderr:\n{}",
                self.label,
                self.stderr()
            ),
        }
    }

    /// Wait for the line `expected` (a tool's "ready" signal).
    pub(crate) fn expect_line(&self, expected: &str, timeout: Duration) {
        let line = self.line(timeout);
        assert_eq!(line, expected, "{}: stderr:\n{}", self.label, self.stderr());
    }

    /// Close stdin: the tools that run until told (the sniffer) stop and report.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait for the exit, at most `timeout`; panics if it does not come.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "{}: still running after {timeout:?}; stderr:\n{}",
                self.label,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for a successful exit, then return every remaining line of output.
    pub(crate) fn finish(&mut self, timeout: Duration) -> Vec<String> {
        let status = self.wait(timeout);
        assert!(
            status.success(),
            "{}: {status}; stderr:\n{}",
            self.label,
            self.stderr()
        );
        // The reader thread ends at EOF, which follows the exit.
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `skywire node` in a namespace: its key, config, control socket and log live in the
/// topology's folder under the node's name.
pub(crate) struct Node {
    name: String,
    host: String,
    ns: String,
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// The node's public key, as `skywire keygen` printed it.
    pub(crate) public_key: String,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    /// A node called `name` in host `host`, with a new key; not configured or started.
    pub(crate) fn new(topology: &Topology, host: &str, name: &str) -> Self {
        let dir = topology.dir().join(name);
        fs::create_dir(&dir).unwrap();
        let key = dir.join("node.key");
        let public_key = keygen(&key).0.trim().to_owned();
        assert_eq!(public_key.len(), 64, "keygen printed {public_key:?}");
        let mode = mode_of(&key) & 0o777;
        assert_eq!(mode, 0o600, "keygen made a key file with mode {mode:o}");
        Self {
            name: name.to_owned(),
            host: host.to_owned(),
            ns: topology.ns(host),
            config: dir.join("node.yaml"),
            socket: dir.join("ctl").join("node.sock"),
            log: dir.join("node.log"),
            dir,
            public_key,
            child: None,
            starts: 0,
        }
    }

    /// Write the config: `node:` with this node's key and control socket, then `body`, the
    /// rest of the section (`listen`, `tun`, `routes`, `relays`), indented by two spaces.
    pub(crate) fn configure(&self, body: &str) {
        let text = format!(
            "# {} in namespace {}, written by tests/netns\nnode:\n  key: node.key\n  \
             control_socket: {}\n{body}",
            self.name,
            self.ns,
            self.socket.display()
        );
        fs::write(&self.config, text).unwrap();
    }

    /// The config file.
    pub(crate) fn config_path(&self) -> &Path {
        &self.config
    }

    /// The control socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The host this node runs in.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Start `skywire node --config CONFIG` in the node's namespace, its output appended to
    /// its log, and wait until `skywire status` answers; panics (with the log) if it exits
    /// or does not answer within [`START_TIMEOUT`]. Returns how long that took.
    pub(crate) fn start(&mut self) -> Duration {
        assert!(self.child.is_none(), "{}: already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "=== tests/netns: start {} ===", self.starts).unwrap();
        let started = Instant::now();
        // `ip netns exec` execs the program itself, so the child's pid is the node's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(skywire_binary())
            .args(["node", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                exited = Some(status);
                return true;
            }
            self.try_status().is_some()
        });
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "{}: `skywire node` exited with {status} while starting; log:\n{}",
                self.name,
                self.log_text()
            );
        }
        assert!(
            ready.is_some(),
            "{}: `skywire status` got no answer within {START_TIMEOUT:?}; log:\n{}",
            self.name,
            self.log_text()
        );
        started.elapsed()
    }

    /// Start it again after [`Self::kill9`] or [`Self::sigterm_and_wait`].
    pub(crate) fn restart(&mut self) -> Duration {
        self.start()
    }

    /// The node's pid, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process still runs (reaping it if it exited).
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// `skywire status --json`, parsed, or `None` if the node does not answer.
    pub(crate) fn try_status(&self) -> Option<StatusReply> {
        let out = Command::new(skywire_binary())
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        StatusReply::from_json(&String::from_utf8_lossy(&out.stdout)).ok()
    }

    /// `skywire status --json`, parsed; panics with the log if the node does not answer.
    pub(crate) fn status_json(&self) -> StatusReply {
        self.try_status().unwrap_or_else(|| {
            panic!(
                "{}: `skywire status` failed; log:\n{}",
                self.name,
                self.log_text()
            )
        })
    }

    /// `skywire status` as text, for the test output.
    pub(crate) fn status_text(&self) -> String {
        run_ok(
            Command::new(skywire_binary())
                .args(["status", "--socket"])
                .arg(&self.socket),
        )
    }

    /// SIGKILL the node and reap it.
    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().expect("the node is not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Send SIGTERM and wait at most `timeout` for the exit: its status and how long it
    /// took; panics (with the log) if it is still running then.
    pub(crate) fn sigterm_and_wait(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        self.signal_and_wait("TERM", timeout)
    }

    /// Send `signal` (a name for `kill -s`: `TERM`, `INT`) and wait as
    /// [`Self::sigterm_and_wait`] does.
    pub(crate) fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("the node is not running");
        run_ok(Command::new("kill").args(["-s", signal, &child.id().to_string()]));
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() >= timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: still running {timeout:?} after SIG{signal}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the node printed, over all its starts.
    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's folder (key, config, log, socket folder).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "----- log of node {} ({}) -----\n{}----- end of log of {} -----",
                self.name,
                self.ns,
                self.log_text(),
                self.name
            );
        }
    }
}
