//! The demo's machine room: three network namespaces joined by veth pairs, a temporary
//! folder with keys and configs, and three `skywire node` processes, all owned by one
//! [`Lab`] that removes them again.
//!
//! The topology, written down once here (every address is from 198.18.0.0/15, and no
//! namespace has a default route, so nothing can leave this machine):
//!
//! ```text
//!   A                      B (relay only)                   C
//!   to-b 198.18.1.1/24 <-> to-a 198.18.1.2/24
//!                          to-c 198.18.2.2/24 <-> to-b 198.18.2.3/24
//!   TUN sky-a 10.77.0.1/24                                   TUN sky-c 10.77.0.3/24
//! ```
//!
//! B does not route IP (a new namespace has forwarding off), so A and C can reach each
//! other only through the skywire route A -> B -> C that B relays.
//!
//! # Cleanup
//!
//! [`Lab::teardown`] stops the nodes (SIGTERM, then SIGKILL after [`STOP_GRACE`]), deletes
//! the namespaces this lab created (never one it did not create) and the temporary folder,
//! and checks that `ip netns list` shows none of them. `Drop` does the same when the demo
//! ends early (an error, a panic, Ctrl-C), so nothing is left behind on any path: the TUN
//! devices and veths live inside the namespaces and go with them. The nodes run in their
//! own process group, so a Ctrl-C at the terminal reaches the demo only, and the demo stops
//! them in order.

use core::time::Duration;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

use rustix::process::{Pid, Signal, kill_process};
use skywire_dataplane::crypto::PublicKey;

use super::DemoError;

/// How long a node gets to stop after SIGTERM before it is killed.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// The transport port of every node.
pub(super) const PORT: u16 = 6000;

/// A's address on the A - B link.
pub(super) const A_LINK: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// B's address on the A - B link.
pub(super) const B_LINK_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// B's address on the B - C link.
pub(super) const B_LINK_C: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// C's address on the B - C link.
pub(super) const C_LINK: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);
/// A's TUN address: the source of the demo's traffic.
pub(super) const A_TUN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// C's TUN address: the destination of the demo's traffic.
pub(super) const C_TUN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
/// TUN device names (each in its own namespace).
pub(super) const A_TUN_NAME: &str = "sky-a";
/// C's TUN device.
pub(super) const C_TUN_NAME: &str = "sky-c";

/// Route ids, as in `config.yaml`'s three-node example: A -> B 100, B -> C 101,
/// C -> B 200, B -> A 201.
const IDS: [u32; 4] = [100, 101, 200, 201];

/// The three nodes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    /// The sender's end of the route.
    A,
    /// The relay.
    B,
    /// The receiver's end.
    C,
}

impl Node {
    /// All three, in order.
    pub(super) const ALL: [Node; 3] = [Node::A, Node::B, Node::C];

    /// `A`, `B` or `C`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Node::A => "A",
            Node::B => "B",
            Node::C => "C",
        }
    }

    fn lower(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
            Node::C => "c",
        }
    }

    fn index(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
            Node::C => 2,
        }
    }

    /// The node's veth interfaces with their addresses.
    pub(super) fn links(self) -> &'static [(&'static str, Ipv4Addr)] {
        match self {
            Node::A => &[("to-b", A_LINK)],
            Node::B => &[("to-a", B_LINK_A), ("to-c", B_LINK_C)],
            Node::C => &[("to-b", C_LINK)],
        }
    }

    /// The node's TUN device and address, if it is a route end.
    pub(super) fn tun(self) -> Option<(&'static str, Ipv4Addr)> {
        match self {
            Node::A => Some((A_TUN_NAME, A_TUN)),
            Node::B => None,
            Node::C => Some((C_TUN_NAME, C_TUN)),
        }
    }
}

fn hop(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, PORT))
}

/// The built-in config of `node`, given the public keys of A and C (the route's ends) and
/// the lab's folder. Keys and the control socket are files in that folder, named relative
/// to the config, which lives there too.
pub(super) fn config_text(node: Node, a_key: &PublicKey, c_key: &PublicKey) -> String {
    let [a_to_b, b_to_c, c_to_b, b_to_a] = IDS;
    let common = format!(
        "# Written by `skywire demo` for node {label}; removed when the demo ends.\n\
         node:\n  key: {lower}.key\n  listen: 0.0.0.0:{PORT}\n  control_socket: {lower}.sock\n",
        label = node.label(),
        lower = node.lower(),
    );
    let rest = match node {
        Node::A => format!(
            "  tun: {{ name: {A_TUN_NAME}, addresses: [{A_TUN}/24], mtu: 1420 }}\n  routes:\n    \
             - {{ name: to-c, peer: {c_key}, prefixes: [{C_TUN}/32], first_hop: \"{b}\", \
             out_id: {a_to_b}, in_id: {b_to_a}, prev_hop: \"{b}\" }}\n",
            b = hop(B_LINK_A),
        ),
        Node::B => format!(
            "  relays:\n    \
             - {{ in_id: {a_to_b}, prev_hop: \"{a}\", out_id: {b_to_c}, next_hop: \"{c}\" }}\n    \
             - {{ in_id: {c_to_b}, prev_hop: \"{c}\", out_id: {b_to_a}, next_hop: \"{a}\" }}\n",
            a = hop(A_LINK),
            c = hop(C_LINK),
        ),
        Node::C => format!(
            "  tun: {{ name: {C_TUN_NAME}, addresses: [{C_TUN}/24], mtu: 1420 }}\n  routes:\n    \
             - {{ name: to-a, peer: {a_key}, prefixes: [{A_TUN}/32], first_hop: \"{b}\", \
             out_id: {c_to_b}, in_id: {b_to_c}, prev_hop: \"{b}\" }}\n",
            b = hop(B_LINK_C),
        ),
    };
    common + &rest
}

/// A node process started by the lab.
#[derive(Debug)]
struct NodeProcess {
    node: Node,
    child: Child,
    /// Set once the child was reaped.
    exited: Option<ExitStatus>,
}

/// How a node ended when the lab stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// It exited after SIGTERM, with this status.
    OnTerm(ExitStatus),
    /// It had exited before it was asked to.
    Before(ExitStatus),
    /// It did not stop within the grace period and was killed.
    Killed,
    /// It could not even be killed or reaped (should not happen).
    Lost,
}

/// What [`Lab::teardown`] did and what it could not do.
#[derive(Debug, Default)]
pub(super) struct Teardown {
    /// Each node and how it stopped.
    pub(super) nodes: Vec<(Node, Stopped)>,
    /// Namespaces deleted.
    pub(super) namespaces: Vec<String>,
    /// The temporary folder, if it was removed.
    pub(super) removed_dir: Option<PathBuf>,
    /// Whatever could not be cleaned up.
    pub(super) problems: Vec<String>,
}

/// The namespaces, folder and processes of one demo run; removes them when dropped.
#[derive(Debug)]
pub(super) struct Lab {
    /// Every namespace name starts with this (`skydemo-PID-`).
    pub(super) prefix: String,
    /// The temporary folder with keys, configs, control sockets and node logs.
    pub(super) dir: PathBuf,
    /// Namespaces this lab created, to delete.
    namespaces: Vec<String>,
    nodes: Vec<NodeProcess>,
    interrupted: Arc<AtomicBool>,
    torn_down: bool,
}

impl Lab {
    /// Create the lab's temporary folder (0700). Names are unique to this process and run.
    pub(super) fn new(interrupted: Arc<AtomicBool>) -> Result<Self, DemoError> {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = if run == 0 {
            format!("skydemo-{pid}-")
        } else {
            format!("skydemo-{pid}.{run}-")
        };
        let dir = std::env::temp_dir().join(prefix.trim_end_matches('-'));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| DemoError::Io {
                what: format!("cannot create the folder {}", dir.display()),
                source,
            })?;
        Ok(Self {
            prefix,
            dir,
            namespaces: Vec::new(),
            nodes: Vec::new(),
            interrupted,
            torn_down: false,
        })
    }

    /// The namespace of `node`.
    pub(super) fn namespace(&self, node: Node) -> String {
        format!("{}{}", self.prefix, node.lower())
    }

    /// A file in the lab's folder.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The key file of `node`.
    pub(super) fn key_file(&self, node: Node) -> PathBuf {
        self.file(&format!("{}.key", node.lower()))
    }

    /// The config file of `node`.
    pub(super) fn config_file(&self, node: Node) -> PathBuf {
        self.file(&format!("{}.yaml", node.lower()))
    }

    /// The control socket of `node` (as its config names it).
    pub(super) fn socket(&self, node: Node) -> PathBuf {
        self.file(&format!("{}.sock", node.lower()))
    }

    /// The log (standard output and error) of `node`.
    pub(super) fn log_file(&self, node: Node) -> PathBuf {
        self.file(&format!("{}.log", node.lower()))
    }

    /// Fail with [`DemoError::Interrupted`] once SIGINT or SIGTERM arrived.
    pub(super) fn check_interrupted(&self) -> Result<(), DemoError> {
        if self.interrupted.load(Ordering::Relaxed) {
            Err(DemoError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Build the three namespaces and the two veth pairs, addresses up, loopback up.
    pub(super) fn build_topology(&mut self) -> Result<(), DemoError> {
        for node in Node::ALL {
            self.check_interrupted()?;
            let ns = self.namespace(node);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let (a, b, c) = (
            self.namespace(Node::A),
            self.namespace(Node::B),
            self.namespace(Node::C),
        );
        // Each end is created inside its namespace, so the host never sees the veths.
        for (left, left_ns, right, right_ns) in [("to-b", &a, "to-a", &b), ("to-c", &b, "to-b", &c)]
        {
            self.check_interrupted()?;
            ip(&[
                "link", "add", left, "netns", left_ns, "type", "veth", "peer", "name", right,
                "netns", right_ns,
            ])?;
        }
        for node in Node::ALL {
            let ns = self.namespace(node);
            for (name, address) in node.links() {
                self.check_interrupted()?;
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    name,
                ])?;
                ip(&["-n", &ns, "link", "set", name, "up"])?;
            }
        }
        Ok(())
    }

    /// Start `skywire node --config CONFIG` for `node` inside its namespace, with `program`
    /// as the `skywire` binary; its output goes to its log file. Returns its process id.
    pub(super) fn start_node(&mut self, node: Node, program: &Path) -> Result<u32, DemoError> {
        self.check_interrupted()?;
        let log_path = self.log_file(node);
        let log = File::create(&log_path).map_err(|source| DemoError::Io {
            what: format!("cannot create {}", log_path.display()),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| DemoError::Io {
            what: format!("cannot create {}", log_path.display()),
            source,
        })?;
        // `ip netns exec` enters the namespace and then executes the node in its own place,
        // so the child's process id is the node's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace(node)])
            .arg(program)
            .args(["node", "--config"])
            .arg(self.config_file(node))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|source| DemoError::Io {
                what: "cannot run `ip netns exec` (is iproute2 installed?)".to_owned(),
                source,
            })?;
        let pid = child.id();
        self.nodes.push(NodeProcess {
            node,
            child,
            exited: None,
        });
        Ok(pid)
    }

    /// If `node`'s process has exited, how; `None` while it runs.
    pub(super) fn node_exited(&mut self, node: Node) -> Option<ExitStatus> {
        let process = self.nodes.iter_mut().find(|p| p.node == node)?;
        if process.exited.is_none() {
            process.exited = process.child.try_wait().ok().flatten();
        }
        process.exited
    }

    /// The last lines of `node`'s log, for error messages.
    pub(super) fn log_tail(&self, node: Node) -> String {
        const TAIL: u64 = 2048;
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_file(node)) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
            let _ = file.take(TAIL).read_to_string(&mut text);
        }
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

    /// Stop the nodes, delete the namespaces and the folder, and check that none of the
    /// namespaces is left. Runs once; later calls return an empty report.
    pub(super) fn teardown(&mut self) -> Teardown {
        let mut report = Teardown::default();
        if self.torn_down {
            return report;
        }
        self.torn_down = true;
        self.stop_nodes(&mut report);
        for ns in self.namespaces.drain(..) {
            match ip(&["netns", "delete", &ns]) {
                Ok(()) => report.namespaces.push(ns),
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        match ip_output(&["netns", "list"]) {
            Ok(list) => {
                let left: Vec<&str> = list
                    .lines()
                    .filter_map(|line| line.split_whitespace().next())
                    .filter(|name| name.starts_with(&self.prefix))
                    .collect();
                if !left.is_empty() {
                    report
                        .problems
                        .push(format!("namespaces left behind: {}", left.join(", ")));
                }
            }
            Err(e) => report.problems.push(e.to_string()),
        }
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => report.removed_dir = Some(self.dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report
                .problems
                .push(format!("cannot remove {}: {e}", self.dir.display())),
        }
        report
    }

    /// SIGTERM to every node still running, SIGKILL to those still running after the grace
    /// period, and every child reaped.
    fn stop_nodes(&mut self, report: &mut Teardown) {
        for process in &mut self.nodes {
            if process.exited.is_none() {
                process.exited = process.child.try_wait().ok().flatten();
            }
            if let Some(status) = process.exited {
                report.nodes.push((process.node, Stopped::Before(status)));
            } else if let Err(e) = kill_process(Pid::from_child(&process.child), Signal::TERM) {
                report.problems.push(format!(
                    "cannot send SIGTERM to node {}: {e}",
                    process.node.label()
                ));
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for process in &mut self.nodes {
            if process.exited.is_some() {
                continue;
            }
            let stopped = loop {
                match process.child.try_wait() {
                    Ok(Some(status)) => break Stopped::OnTerm(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        // Killing a child we have not reaped cannot hit another process:
                        // its id stays ours until `wait` returns.
                        let _ = process.child.kill();
                        break match process.child.wait() {
                            Ok(_) => Stopped::Killed,
                            Err(_) => Stopped::Lost,
                        };
                    }
                }
            };
            if stopped == Stopped::Lost {
                report.problems.push(format!(
                    "node {} could not be stopped",
                    process.node.label()
                ));
            }
            report.nodes.push((process.node, stopped));
        }
        report.nodes.sort_by_key(|(node, _)| node.index());
        self.nodes.clear();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        let report = self.teardown();
        for problem in report.problems {
            eprintln!("skywire demo: cleanup: {problem}");
        }
    }
}

/// Run `ip ARGS`, failing with its standard error.
pub(crate) fn ip(args: &[&str]) -> Result<(), DemoError> {
    ip_output(args).map(drop)
}

/// Run `ip ARGS` and return its standard output.
pub(crate) fn ip_output(args: &[&str]) -> Result<String, DemoError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DemoError::Io {
            what: format!("cannot run `{command}` (is iproute2 installed?)"),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(DemoError::Command {
            command,
            detail: if stderr.is_empty() {
                output.status.to_string()
            } else {
                stderr
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_built_in_configs_parse_and_mirror_each_other() {
        let a = PublicKey::from_bytes([0xaa; 32]);
        let c = PublicKey::from_bytes([0xcc; 32]);
        let configs: Vec<Config> = Node::ALL
            .iter()
            .map(|&node| {
                let text = config_text(node, &a, &c);
                Config::parse(&text, format!("/demo/{}.yaml", node.lower()))
                    .unwrap_or_else(|e| panic!("{e}\n{text}"))
            })
            .collect();
        let [ca, cb, cc] = &configs[..] else {
            unreachable!()
        };
        assert_eq!(ca.node.key, Path::new("/demo/a.key"));
        assert_eq!(cb.node.control_socket(), Path::new("/demo/b.sock"));
        assert!(cb.node.tun().is_none() && cb.node.routes().is_empty());
        assert_eq!(cb.node.relays().len(), 2);
        let (to_c, to_a) = (&ca.node.routes()[0], &cc.node.routes()[0]);
        assert_eq!((to_c.peer, to_a.peer), (c, a));
        // A's packets reach B with A's out_id, leave B with C's in_id, and back again.
        let relays = cb.node.relays();
        assert_eq!(relays[0].in_id, to_c.out_id);
        assert_eq!(relays[0].out_id, to_a.in_id);
        assert_eq!(relays[1].in_id, to_a.out_id);
        assert_eq!(relays[1].out_id, to_c.in_id);
        assert_eq!(relays[0].prev_hop, hop(A_LINK));
        assert_eq!(relays[0].next_hop, hop(C_LINK));
        assert_eq!(to_c.first_hop, hop(B_LINK_A));
        assert_eq!(to_a.prev_hop, hop(B_LINK_C));
    }
}
