//! Network-namespace topologies for the root-only integration tests: a thin layer over the
//! namespace lab of the control crate ([`skywire_control::lab`]), with the test's habits
//! (panic on failure, the real `skywire` binary, the Python tools in `tests/tools/`).
//!
//! A test uses it as `mod common; mod netns;` (it runs the binary and makes keys with
//! `tests/common`) and starts with [`skip_unless_root`]. Then:
//!
//! - [`Topology::new`] makes a lab tagged `swt`: [`Topology::host`] adds a namespace (with
//!   `lo` up and no default route) and [`Topology::link`] joins two with a veth pair.
//!   Namespaces are named `swt-<pid>-<host>` (`swt-<pid>.<n>-<host>` after the first
//!   topology of a process), so tests may run in parallel; dropping the topology tears its
//!   lab down: every process left in its namespaces (whatever started them) is killed, and
//!   the namespaces and the scratch folder are deleted, also when the test panics.
//!   Namespaces and folders left by an earlier test process that was killed before its
//!   guards ran (its pid is gone) are removed first.
//! - [`Node::new`] gives a node its key (0600, by `skywire keygen`) and folder;
//!   [`Node::configure`] writes its config with the typed writer
//!   ([`skywire_control::config::ConfigFile`]), [`Node::start`] runs `skywire node` in its
//!   namespace and waits (bounded) until its control socket answers `status`. A node's log
//!   is printed when the test panics.
//! - [`Topology::spawn`] runs a helper (the Python tools in `tests/tools/`) in a namespace,
//!   with its output lines readable with a timeout.
//! - [`Topology::etc_file`] gives a namespace a file of its own under `/etc` (`hosts`:
//!   names only that namespace resolves), which `ip netns exec` mounts for the programs it
//!   starts there; removed with the topology.
//!
//! - Beside it: `managed` (a manager and nodes, routes set up by the manager), `impair`
//!   (the impairment relay on a link), `churn` (`route add` / `route rm` at a steady rate,
//!   and the five-node mesh of the churn and soak tests), `iperf` (iperf3 with the
//!   receiver's intervals timed), `three_hops` (A, relay B, C with
//!   static routes), `usage` (descriptors and memory from `/proc`, panics in logs), `vpn`.
//!
//! Addresses: 198.18.0.0/15 on the veth links, the TUN subnets 10.77.0.0/24 and fd77::/64
//! come from the nodes' configs. Nothing here adds a default route, so no packet can leave
//! the machine.
//!
//! Each test binary uses only part of this module; the rest is not dead code.
#![allow(dead_code)]

pub(crate) mod churn;
pub(crate) mod impair;
pub(crate) mod iperf;
pub(crate) mod managed;
pub(crate) mod three_hops;
pub(crate) mod usage;
pub(crate) mod vpn;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use skywire_control::config::{ConfigFile, NodeSection};
use skywire_control::lab::{Lab, LabOptions, LinkEnd, Process, Signal, Spawn, Stopped};
use skywire_control::node::ctl::StatusReply;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{RelaySetup, RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::wire::RouteId;

use crate::common::{is_root, keygen, mode_of, skywire_binary};

/// How long a node may take from exec to answering `skywire status`.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The lab tag of every namespace and scratch folder of these tests.
const TAG: &str = "swt";

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
/// A finished program's (exit code, stdout, stderr), -1 for a signal.
pub(crate) fn outcome(out: &std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn ip(args: &[&str]) -> String {
    skywire_control::lab::ip_output(args).unwrap_or_else(|e| panic!("{e}"))
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

/// `10.77.0.1/24` as a prefix.
pub(crate) fn prefix(text: &str) -> Prefix {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not a prefix: {e:?}"))
}

/// `198.18.1.2:6000` as a socket address.
pub(crate) fn addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an address: {e}"))
}

/// `n` as a route id (not 0).
pub(crate) fn route_id(n: u32) -> RouteId {
    RouteId::new(n).expect("a route id is not 0")
}

/// A TUN device `name` with `addresses` and the default MTU.
pub(crate) fn tun(name: &str, addresses: &[&str]) -> TunSetup {
    TunSetup {
        name: name.to_owned(),
        addresses: addresses.iter().map(|a| prefix(a)).collect(),
        mtu: skywire_control::config::DEFAULT_MTU,
    }
}

/// A route `name` to `peer` for `prefixes`, sent to `first_hop` with `out_id` and taken
/// with `in_id` from `prev_hop`, where the peer takes it with `peer_in_id`; no keepalive.
pub(crate) fn route(
    name: &str,
    peer: PublicKey,
    prefixes: &[&str],
    first_hop: &str,
    (out_id, in_id, peer_in_id): (u32, u32, u32),
    prev_hop: &str,
) -> RouteSetup {
    RouteSetup {
        name: name.to_owned(),
        peer,
        prefixes: prefixes.iter().map(|p| prefix(p)).collect(),
        first_hop: addr(first_hop),
        out_id: route_id(out_id),
        in_id: route_id(in_id),
        peer_in_id: route_id(peer_in_id),
        prev_hop: addr(prev_hop),
        persistent_keepalive: None,
    }
}

/// A relay rule: from `prev_hop` with `in_id` to `next_hop` with `out_id`.
pub(crate) fn relay_rule(in_id: u32, prev_hop: &str, out_id: u32, next_hop: &str) -> RelaySetup {
    RelaySetup {
        in_id: route_id(in_id),
        prev_hop: addr(prev_hop),
        out_id: route_id(out_id),
        next_hop: addr(next_hop),
    }
}

/// The lab of one test: its namespaces, processes and scratch folder; see the module docs.
pub(crate) struct Topology {
    lab: Lab,
    /// `/etc/netns/<namespace>` folders made by [`Topology::etc_file`].
    etc: Vec<PathBuf>,
}

/// Where `ip netns exec` finds the files it mounts over `/etc` for a namespace.
const ETC_NETNS: &str = "/etc/netns";

impl Topology {
    /// An empty topology with its scratch folder (0755, so the nodes' 0700 socket folders
    /// inside it are the only closed ones).
    pub(crate) fn new() -> Self {
        let mut options = LabOptions::new(TAG);
        options.dir_mode = 0o755;
        Self {
            lab: Lab::new(options).unwrap_or_else(|e| panic!("cannot make a lab: {e}")),
            etc: Vec::new(),
        }
    }

    /// The scratch folder, removed with the topology.
    pub(crate) fn dir(&self) -> &Path {
        self.lab.dir()
    }

    /// The namespace name of host `host` (`a`, `b`...).
    pub(crate) fn ns(&self, host: &str) -> String {
        self.lab.namespace(host)
    }

    /// Add a host: a namespace with `lo` up and nothing else.
    pub(crate) fn host(&mut self, host: &str) -> String {
        self.lab
            .add_host(host)
            .unwrap_or_else(|e| panic!("cannot add host {host}: {e}"))
    }

    /// Join two hosts with a veth pair: `(host, interface, address/len)` at each end. Both
    /// ends are created directly in their namespaces, so names never clash in the host's.
    pub(crate) fn link(&self, a: (&str, &str, &str), b: (&str, &str, &str)) {
        self.link_addresses((a.0, a.1, &[a.2]), (b.0, b.1, &[b.2]));
    }

    /// [`Self::link`] with any number of addresses at each end (both families, or none);
    /// IPv6 ones are usable at once (no duplicate address detection).
    pub(crate) fn link_addresses(&self, a: (&str, &str, &[&str]), b: (&str, &str, &[&str])) {
        let end = |(host, iface, addresses): (&str, &str, &[&str])| {
            addresses
                .iter()
                .fold(LinkEnd::new(host, iface), |end, address| {
                    end.prefix(prefix(address))
                })
        };
        self.lab
            .link(&end(a), &end(b))
            .unwrap_or_else(|e| panic!("cannot link {a:?} and {b:?}: {e}"));
    }

    /// `sysctl -w NAME=VALUE` inside host `host`'s namespace (`net.ipv4.ip_forward`,
    /// `net.ipv4.conf.all.rp_filter`): per-namespace values, gone with the namespace.
    pub(crate) fn sysctl(&self, host: &str, name: &str, value: &str) {
        run_ok(
            self.command(host, "sysctl")
                .arg("-qw")
                .arg(format!("{name}={value}")),
        );
    }

    /// A command run inside host `host`'s namespace.
    pub(crate) fn command(&self, host: &str, program: impl AsRef<Path>) -> Command {
        self.lab.command(host, program.as_ref())
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
        Proc::spawn(
            &self.lab,
            host,
            label,
            Spawn::new(label, program).args(args),
        )
    }

    /// Start a Python tool from `tests/tools/` in host `host`.
    pub(crate) fn spawn_tool(&self, host: &str, script: &str, args: &[&str]) -> Proc {
        let spawn = Spawn::new(script, python3()).arg(tool(script)).args(args);
        Proc::spawn(&self.lab, host, script, spawn)
    }

    /// `/etc/netns/<host's namespace>/NAME` holding `text`: `ip netns exec` mounts it over
    /// `/etc/NAME` for every program it starts in that namespace afterwards (the nodes, the
    /// apps and the tools this module spawns), so `hosts` there gives the host names no
    /// other namespace resolves. Removed with the topology; such folders left by a test
    /// process killed before it could remove them (their namespace is gone) are removed
    /// first.
    pub(crate) fn etc_file(&mut self, host: &str, name: &str, text: &str) {
        if let Ok(entries) = fs::read_dir(ETC_NETNS) {
            for entry in entries.flatten() {
                let namespace = entry.file_name();
                let ours = namespace.to_string_lossy().starts_with(&format!("{TAG}-"));
                if ours && !Path::new("/run/netns").join(&namespace).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = Path::new(ETC_NETNS).join(self.ns(host));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
        if !self.etc.contains(&dir) {
            self.etc.push(dir);
        }
    }

    /// Whether interface `iface` exists in host `host`.
    pub(crate) fn has_link(&self, host: &str, iface: &str) -> bool {
        self.lab
            .ip_in(host, &["link", "show", "dev", iface])
            .is_ok()
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
    /// Load an nftables ruleset (`nft -f`) in host `host`'s namespace; gone with it.
    pub(crate) fn nft(&self, host: &str, ruleset: &str) {
        static FILES: AtomicU32 = AtomicU32::new(0);
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let file = self.dir().join(format!("{host}-{n}.nft"));
        fs::write(&file, ruleset).unwrap();
        run_ok(self.command(host, "nft").arg("-f").arg(&file));
    }

    /// The named nftables counter `name` of table `family table` in host `host`:
    /// (packets, bytes), exact.
    pub(crate) fn nft_counter(&self, host: &str, table: &str, name: &str) -> (u64, u64) {
        let mut args = vec!["list", "counter"];
        args.extend(table.split_whitespace());
        args.push(name);
        let text = run_ok(self.command(host, "nft").args(&args));
        // "packets 12 bytes 3456"
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("packets "))
            .unwrap_or_else(|| panic!("no counter in {text:?}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["packets", p, "bytes", b, ..] => (p.parse().unwrap(), b.parse().unwrap()),
            _ => panic!("cannot read the counter {line:?}"),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for dir in &self.etc {
            let _ = fs::remove_dir_all(dir);
        }
        if !self.etc.is_empty() {
            // Only when nothing else is in it.
            let _ = fs::remove_dir(ETC_NETNS);
        }
    }
}

/// A helper process: its stdout lines arrive through a channel (read with a timeout), its
/// stderr goes to a file shown when something goes wrong. Killed (SIGKILL) when dropped.
pub(crate) struct Proc {
    label: String,
    process: Process,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(lab: &Lab, host: &str, label: &str, spawn: Spawn) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let stderr = lab.file(format!("{label}-{n}.stderr"));
        let mut process = lab
            .spawn(host, spawn.piped().log(stderr))
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let stdin = process.take_stdin();
        let stdout = process.take_stdout().unwrap();
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
            process,
            stdin,
            lines,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What the process wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.process.log_text()
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

    /// From now on, also keep every line of output with the time it arrived (iperf3's
    /// interval lines, to tell when traffic stopped and came back); the lines still come
    /// out of [`Self::line`] and [`Self::finish`].
    pub(crate) fn record_lines(&mut self) -> Arc<Mutex<Vec<(Instant, String)>>> {
        let (tx, lines) = mpsc::channel();
        let upstream = std::mem::replace(&mut self.lines, lines);
        let record = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&record);
        thread::spawn(move || {
            while let Ok(line) = upstream.recv() {
                if let Ok(mut kept) = keep.lock() {
                    kept.push((Instant::now(), line.clone()));
                }
                // Nobody reading any more is fine: the record goes on.
                let _ = tx.send(line);
            }
        });
        record
    }

    /// Write `line` and a newline to the process's stdin (the impairment relay's commands).
    pub(crate) fn send_line(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin is closed", self.label));
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot write to stdin: {e}", self.label));
    }

    /// Close stdin: the tools that run until told (the sniffer) stop and report.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait for the exit, at most `timeout`; panics if it does not come.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "{}: still running after {timeout:?}; stderr:\n{}",
                self.label,
                self.stderr()
            )
        })
    }

    /// Wait for a successful exit, then return every remaining line of output.
    pub(crate) fn finish(&mut self, timeout: Duration) -> Vec<String> {
        let (status, lines) = self.finish_any(timeout);
        assert!(
            status.success(),
            "{}: {status}; stderr:\n{}",
            self.label,
            self.stderr()
        );
        lines
    }

    /// Wait for the exit, whatever its status (`ping` exits 1 when a reply was missing),
    /// then return it and every remaining line of output.
    pub(crate) fn finish_any(&mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let status = self.wait(timeout);
        // The reader thread ends at EOF, which follows the exit.
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        (status, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.process.kill();
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
    /// The latest process, running or ended (kept, so that its log is shown if the test
    /// panics).
    process: Option<Process>,
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
            process: None,
            starts: 0,
        }
    }

    /// The node's public key.
    pub(crate) fn key(&self) -> PublicKey {
        self.public_key.parse().unwrap()
    }

    /// Write the config: `node:` with this node's key and control socket, and whatever
    /// `set` adds (`listen`, `offload`, `tun`, `routes`, `relays`, `manager`).
    pub(crate) fn configure(&self, set: impl FnOnce(&mut NodeSection)) {
        let mut node = NodeSection::new("node.key");
        node.control_socket = self.socket.clone();
        node.state_dir = self.dir.join("state");
        set(&mut node);
        ConfigFile::node(node)
            .with_comment(format!(
                "{} in namespace {}, written by tests/netns",
                self.name, self.ns
            ))
            .write(&self.config)
            .unwrap_or_else(|e| panic!("{}: cannot write its config: {e}: {e:?}", self.name));
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
    /// its log, and wait until its control socket answers `status`; panics (with the log)
    /// if it exits or does not answer within [`START_TIMEOUT`]. Returns how long that took.
    pub(crate) fn start(&mut self) -> Duration {
        self.start_under(&[])
    }

    /// [`Self::start`] through `wrapper`, a program and its arguments that exec the node in
    /// the same process (`prlimit --nofile=64:64 --`), so the node's pid is the one it had.
    pub(crate) fn start_under(&mut self, wrapper: &[&str]) -> Duration {
        let started = Instant::now();
        self.spawn_under(wrapper);
        self.wait_serving();
        started.elapsed()
    }

    /// Start the node through `wrapper` as [`Self::start_under`] does, without waiting for
    /// it: a test does something to the process first (moves it into a cgroup), then calls
    /// [`Self::wait_serving`].
    pub(crate) fn spawn_under(&mut self, wrapper: &[&str]) {
        assert!(self.pid().is_none(), "{}: already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        writeln!(log, "=== tests/netns: start {} ===", self.starts).unwrap();
        let spawn = match wrapper {
            [program, args @ ..] => Spawn::new(format!("node {}", self.name), program)
                .args(args)
                .arg(skywire_binary()),
            [] => Spawn::new(format!("node {}", self.name), skywire_binary()),
        };
        let spawn = spawn
            .arg("node")
            .arg("--config")
            .arg(&self.config)
            .append_log(&self.log);
        self.process = Some(
            Process::spawn_in(&self.ns, spawn)
                .unwrap_or_else(|e| panic!("{}: cannot start: {e}", self.name)),
        );
    }

    /// Wait (bounded) until the node just spawned answers `status`; panics (with the log)
    /// if it exits or does not answer within [`START_TIMEOUT`].
    pub(crate) fn wait_serving(&mut self) {
        let (name, socket) = (self.name.clone(), self.socket.clone());
        let process = self.running();
        let never = AtomicBool::new(false);
        if let Err(e) =
            skywire_control::lab::wait_until_serving(process, &socket, START_TIMEOUT, &never)
        {
            panic!("{name}: `skywire node` did not come up: {e}");
        }
    }

    /// Start it again after [`Self::kill9`] or [`Self::sigterm_and_wait`].
    pub(crate) fn restart(&mut self) -> Duration {
        self.start()
    }

    /// The node's pid, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process
            .as_ref()
            .filter(|p| !p.has_exited())
            .map(Process::pid)
    }

    /// Whether the process still runs (reaping it if it exited).
    pub(crate) fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
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

    /// The running process; panics if there is none.
    fn running(&mut self) -> &mut Process {
        match self.process.as_mut() {
            Some(process) if !process.has_exited() => process,
            _ => panic!("{}: the node is not running", self.name),
        }
    }

    /// SIGKILL the node and reap it.
    pub(crate) fn kill9(&mut self) {
        let stopped = self.running().kill();
        assert_eq!(stopped, Stopped::Killed, "{}", self.name);
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
        let sig = match signal {
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            "HUP" => Signal::HUP,
            other => panic!("no signal {other} in tests/netns"),
        };
        let name = self.name.clone();
        let process = self.running();
        process
            .signal(sig)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let start = Instant::now();
        match process.wait_timeout(timeout) {
            Some(status) => (status, start.elapsed()),
            None => {
                process.kill();
                panic!(
                    "{name}: still running {timeout:?} after SIG{signal}; log:\n{}",
                    self.log_text()
                );
            }
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
        // Killed at once, as a crash would; the process's own `Drop` then prints the log
        // (all of its starts) if the test is panicking.
        if let Some(process) = &mut self.process {
            process.kill();
        }
    }
}

/// A field of `/proc/PID/status` counted in kB (`VmRSS`, `VmHWM`), in bytes; 0 if the process
/// or the field is gone.
pub(crate) fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The CPU time of process `pid` so far (user and system, `/proc/PID/stat` fields 14 and
/// 15), in clock ticks (100 a second on Linux).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11 and stime (15) index 12.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// How many descriptors process `pid` holds open.
pub(crate) fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}
