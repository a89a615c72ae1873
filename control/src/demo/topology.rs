//! The demo's topology on the namespace lab ([`crate::lab`]): three namespaces joined by
//! veth pairs, a key and a built-in config for each node, and three `skywire node`
//! processes, all owned by one [`DemoLab`] that removes them again.
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
//! The lab does it (see [`crate::lab`]): [`DemoLab::teardown`] stops the nodes (SIGTERM,
//! then SIGKILL after [`STOP_GRACE`]), deletes the namespaces this demo created (never one
//! it did not create) and the temporary folder, and checks that `ip netns list` shows none
//! of them; dropping the lab does the same when the demo ends early (an error, a panic,
//! Ctrl-C). The TUN devices and veths live inside the namespaces and go with them. The
//! nodes run in their own process groups, so a Ctrl-C at the terminal reaches the demo
//! only, and the demo stops them in order.

use core::time::Duration;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{RelaySetup, RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::wire::RouteId;

use super::DemoError;
use crate::config::{ConfigFile, NodeSection};
use crate::lab::{Lab, LabError, LabOptions, LinkEnd, ProcessId, Spawn};
use crate::node::ctl::StatusReply;

pub(super) use crate::lab::Stopped;

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
/// The attacker X of `skywire demo flood`, on a link of its own to C: X's address...
pub(super) const X_LINK: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
/// ...and C's.
pub(super) const C_LINK_X: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 3);
/// C's interface to X.
pub(super) const C_TO_X: &str = "to-x";
/// The prefix length of every link and TUN address.
const LINK_PREFIX: u8 = 24;

/// `n` as a route id, evaluated at compile time only (a zero would fail the build).
#[allow(clippy::panic)]
pub(super) const fn route_id(n: u32) -> RouteId {
    match RouteId::new(n) {
        Some(id) => id,
        None => panic!("a route id is never 0"),
    }
}

/// Route ids, as in `config.yaml`'s three-node example: A -> B 100, B -> C 101,
/// C -> B 200, B -> A 201.
pub(super) const A_TO_B: RouteId = route_id(100);
/// See [`A_TO_B`].
pub(super) const B_TO_C: RouteId = route_id(101);
/// See [`A_TO_B`].
pub(super) const C_TO_B: RouteId = route_id(200);
/// See [`A_TO_B`].
pub(super) const B_TO_A: RouteId = route_id(201);

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

    /// Its host name in the lab, which names its namespace and its files.
    fn host(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
            Node::C => "c",
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

    fn key_file(self) -> String {
        format!("{}.key", self.host())
    }

    fn config_file(self) -> String {
        format!("{}.yaml", self.host())
    }

    fn socket_file(self) -> String {
        format!("{}.sock", self.host())
    }

    fn log_file(self) -> String {
        format!("{}.log", self.host())
    }
}

fn hop(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, PORT))
}

/// `ip/len` (`len` is at most 32, so this never fails).
fn prefix(ip: Ipv4Addr, len: u8) -> Vec<Prefix> {
    Prefix::new(ip.into(), len).into_iter().collect()
}

/// A route end's TUN device `name` with `address`.
fn tun(name: &str, address: Ipv4Addr) -> TunSetup {
    TunSetup {
        name: name.to_owned(),
        addresses: prefix(address, LINK_PREFIX),
        mtu: 1420,
    }
}

/// A route `name` to `peer`, whose TUN address is `to`, through the relay's address `via`
/// on this end's link, sending with `out_id` and receiving `in_id`; the peer receives with
/// `peer_in_id`.
fn route(
    name: &str,
    peer: PublicKey,
    to: Ipv4Addr,
    via: Ipv4Addr,
    (out_id, in_id, peer_in_id): (RouteId, RouteId, RouteId),
) -> RouteSetup {
    RouteSetup {
        name: name.to_owned(),
        peer,
        prefixes: prefix(to, 32),
        first_hop: hop(via),
        out_id,
        in_id,
        peer_in_id,
        prev_hop: hop(via),
        persistent_keepalive: None,
    }
}

/// The built-in config of `node`, given the public keys of A and C (the route's ends). Keys
/// and the control socket are files named relative to the config, all in the lab's folder.
pub(super) fn config_file(node: Node, a_key: &PublicKey, c_key: &PublicKey) -> ConfigFile {
    let mut section = NodeSection::new(node.key_file());
    section.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT));
    section.control_socket = PathBuf::from(node.socket_file());
    section.state_dir = PathBuf::from(format!("{}-state", node.host()));
    match node {
        Node::A => {
            section.tun = Some(tun(A_TUN_NAME, A_TUN));
            section.routes = vec![route(
                "to-c",
                *c_key,
                C_TUN,
                B_LINK_A,
                (A_TO_B, B_TO_A, B_TO_C),
            )];
        }
        Node::B => {
            section.relays = vec![
                RelaySetup {
                    in_id: A_TO_B,
                    prev_hop: hop(A_LINK),
                    out_id: B_TO_C,
                    next_hop: hop(C_LINK),
                },
                RelaySetup {
                    in_id: C_TO_B,
                    prev_hop: hop(C_LINK),
                    out_id: B_TO_A,
                    next_hop: hop(A_LINK),
                },
            ];
        }
        Node::C => {
            section.tun = Some(tun(C_TUN_NAME, C_TUN));
            section.routes = vec![route(
                "to-a",
                *a_key,
                A_TUN,
                B_LINK_C,
                (C_TO_B, B_TO_C, B_TO_A),
            )];
        }
    }
    ConfigFile::node(section).with_comment(format!(
        "Written by `skywire demo` for node {}; removed when the demo ends.",
        node.label()
    ))
}

/// What [`DemoLab::teardown`] did and what it could not do.
#[derive(Debug, Default)]
pub(super) struct Teardown {
    /// Each node and how it stopped.
    pub(super) nodes: Vec<(Node, Stopped)>,
    /// Namespaces deleted.
    pub(super) namespaces: Vec<String>,
    /// The temporary folder, if it was removed.
    pub(super) removed_dir: Option<PathBuf>,
    /// Whatever could not be cleaned up, in words.
    pub(super) problems: Vec<String>,
}

/// The demo's lab: the namespace lab and which of its processes is which node.
#[derive(Debug)]
pub(super) struct DemoLab {
    lab: Lab,
    nodes: Vec<(Node, ProcessId)>,
}

impl DemoLab {
    /// Create the lab and its temporary folder (0700). Names are unique to this process and
    /// run.
    pub(super) fn new(interrupted: Arc<AtomicBool>) -> Result<Self, DemoError> {
        let mut options = LabOptions::new("skydemo");
        options.interrupted = interrupted;
        Ok(Self {
            lab: Lab::new(options)?,
            nodes: Vec::new(),
        })
    }

    /// Every namespace name starts with this (`skydemo-PID-`).
    pub(super) fn prefix(&self) -> &str {
        self.lab.prefix()
    }

    /// The temporary folder with keys, configs, control sockets and node logs.
    pub(super) fn dir(&self) -> &Path {
        self.lab.dir()
    }

    /// The namespace of `node`.
    pub(super) fn namespace(&self, node: Node) -> String {
        self.lab.namespace(node.host())
    }

    /// The control socket of `node` (as its config names it).
    pub(super) fn socket(&self, node: Node) -> PathBuf {
        self.lab.file(node.socket_file())
    }

    /// Fail with [`DemoError::Interrupted`] once SIGINT or SIGTERM arrived.
    pub(super) fn check_interrupted(&self) -> Result<(), DemoError> {
        Ok(self.lab.check_interrupted()?)
    }

    /// Build the three namespaces and the two veth pairs, addresses up, loopback up.
    pub(super) fn build_topology(&mut self) -> Result<(), DemoError> {
        for node in Node::ALL {
            self.lab.add_host(node.host())?;
        }
        // Each end with the name and address `Node::links` gives it.
        let end = |node: Node, name: &str, address: Ipv4Addr| {
            LinkEnd::new(node.host(), name).address(address, LINK_PREFIX)
        };
        self.lab.link(
            &end(Node::A, "to-b", A_LINK)?,
            &end(Node::B, "to-a", B_LINK_A)?,
        )?;
        self.lab.link(
            &end(Node::B, "to-c", B_LINK_C)?,
            &end(Node::C, "to-b", C_LINK)?,
        )?;
        Ok(())
    }

    /// A fresh key for each node and its built-in config, in the lab's folder. Only the
    /// route's ends need each other's public keys; B's key is its own business.
    pub(super) fn write_keys_and_configs(&self) -> Result<(), DemoError> {
        let a_key = self.lab.write_key(Node::A.key_file())?;
        self.lab.write_key(Node::B.key_file())?;
        let c_key = self.lab.write_key(Node::C.key_file())?;
        for node in Node::ALL {
            self.lab
                .write_config(node.config_file(), &config_file(node, &a_key, &c_key))?;
        }
        Ok(())
    }

    /// Start `skywire node --config CONFIG` for `node` inside its namespace, with `program`
    /// as the `skywire` binary; its output goes to its log file. Returns its process id.
    pub(super) fn start_node(&mut self, node: Node, program: &Path) -> Result<u32, DemoError> {
        let spawn = Spawn::new(format!("node {}", node.label()), program)
            .arg("node")
            .arg("--config")
            .arg(self.lab.file(node.config_file()))
            .log(self.lab.file(node.log_file()))
            .grace(STOP_GRACE);
        let id = self.lab.start(node.host(), spawn)?;
        self.nodes.push((node, id));
        Ok(self.lab.process(id).map_or(0, |p| p.pid()))
    }

    /// Wait until `node` answers `status` on its control socket, until `deadline` (see
    /// [`crate::lab::wait_until_serving`]).
    pub(super) fn wait_ready(
        &mut self,
        node: Node,
        deadline: Instant,
        start_timeout: Duration,
    ) -> Result<StatusReply, DemoError> {
        let Some(id) = self.id(node) else {
            return Err(DemoError::Node {
                node: node.label(),
                problem: "was never started".to_owned(),
                log: String::new(),
            });
        };
        let socket = self.socket(node);
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lab.wait_until_serving(id, &socket, left) {
            Ok(status) => Ok(status),
            Err(LabError::Exited { status, log, .. }) => Err(DemoError::Node {
                node: node.label(),
                problem: format!("exited at start ({status})"),
                log,
            }),
            Err(LabError::NotServing { source, log, .. }) => Err(DemoError::Node {
                node: node.label(),
                problem: format!(
                    "did not answer on {} within {} s ({source})",
                    socket.display(),
                    start_timeout.as_secs()
                ),
                log,
            }),
            Err(LabError::Status { source, .. }) => Err(DemoError::Status {
                node: node.label(),
                source: *source,
            }),
            Err(other) => Err(other.into()),
        }
    }

    /// The process of `node`'s latest start.
    fn id(&self, node: Node) -> Option<ProcessId> {
        self.nodes
            .iter()
            .rev()
            .find(|(n, _)| *n == node)
            .map(|&(_, id)| id)
    }

    /// The pid of `node`, while it runs.
    pub(super) fn pid(&self, node: Node) -> Option<u32> {
        self.id(node)
            .and_then(|id| self.lab.process(id))
            .filter(|p| !p.has_exited())
            .map(crate::lab::Process::pid)
    }

    /// Kill `node` with SIGKILL, as a crash would, and reap it; the cleanup report leaves it
    /// out (it did not stop on SIGTERM, by design). Start it again with
    /// [`Self::start_node`].
    pub(super) fn kill_node(&mut self, node: Node) {
        if let Some(id) = self.id(node) {
            if let Some(process) = self.lab.process_mut(id) {
                process.kill();
            }
            self.nodes.retain(|&(_, i)| i != id);
        }
    }

    /// Add the attacker X of `skywire demo flood`: a namespace joined to C only
    /// (`to-c` [`X_LINK`] - [`C_TO_X`] [`C_LINK_X`]) that routes B's link towards C, so its
    /// datagrams with B's address as their source reach C; and C's reverse-path filter
    /// off, so C takes them. X's namespace name.
    pub(super) fn add_attacker(&mut self) -> Result<String, DemoError> {
        let namespace = self.lab.add_host("x")?;
        self.lab.link(
            &LinkEnd::new("x", "to-c").address(X_LINK, LINK_PREFIX)?,
            &LinkEnd::new(Node::C.host(), C_TO_X).address(C_LINK_X, LINK_PREFIX)?,
        )?;
        let b_link = format!(
            "{}/{LINK_PREFIX}",
            Ipv4Addr::from(u32::from(B_LINK_C) & !0xff)
        );
        self.lab.ip_in(
            "x",
            &["route", "add", &b_link, "via", &C_LINK_X.to_string()],
        )?;
        let c = self.namespace(Node::C);
        super::traffic::in_ns(&c, "cannot turn C's reverse-path filter off", || {
            for conf in ["all", "default", C_TO_X] {
                std::fs::write(format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter"), "0")?;
            }
            Ok(())
        })?;
        Ok(namespace)
    }

    /// Stop the nodes, delete the namespaces and the folder, and check that none of the
    /// namespaces is left. Runs once; later calls return an empty report.
    pub(super) fn teardown(&mut self) -> Teardown {
        let report = self.lab.teardown();
        let mut nodes = Vec::new();
        for stopped in &report.processes {
            if let Some(&(node, _)) = self.nodes.iter().find(|(_, id)| *id == stopped.id) {
                nodes.push((node, stopped.stopped));
            }
        }
        let mut problems: Vec<String> = report.problems.iter().map(with_causes).collect();
        for (ns, pids) in &report.killed_leftovers {
            problems.push(format!(
                "processes {pids:?} the demo did not start were running in {ns}; killed"
            ));
        }
        Teardown {
            nodes,
            namespaces: report.namespaces,
            removed_dir: report.removed_dir,
            problems,
        }
    }
}

/// An error and its causes, `what: why: ...`, on one line.
fn with_causes(error: &LabError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
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
                let text = config_file(node, &a, &c).to_yaml().unwrap();
                Config::parse(&text, format!("/demo/{}.yaml", node.host()))
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
