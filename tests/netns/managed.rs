//! A mesh of `skywire node`s in namespaces with a node manager, for the tests that need
//! routes set up (and repaired) by the manager.
//!
//! ```text
//!   nodes N0..Nk, each in its namespace      mesh links (UDP, the data plane): veth pairs
//!   M: skywire manager                          198.18.<net>.1 and .2 per link
//!                                            management: a bridge in namespace M,
//!                                              198.18.100.0/24, the manager at .100,
//!                                              nodes at .1, .2, ...
//! ```
//!
//! Each node's transport endpoint is 198.19.0.N on its loopback, reachable only from its
//! neighbours (a host route per link, no IP forwarding), so traffic between nodes that are
//! not neighbours can only cross the mesh through relays.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use skywire_control::config::{ConfigFile, ManagerLink, ManagerSection, NodeSection};

use super::{Node, Proc, Topology, addr, ip, wait_until};
use crate::common::{keygen, skywire_binary};

/// The manager's address on the management bridge.
pub(crate) const MANAGER_ADDR: &str = "198.18.100.100:5999";

/// Nodes and the manager before the topology: fields drop in order.
pub(crate) struct ManagedMesh {
    pub(crate) nodes: Vec<Node>,
    manager: Option<Proc>,
    manager_dir: PathBuf,
    manager_key: String,
    /// The manager's config as written.
    manager_section: ManagerSection,
    pub(crate) topo: Topology,
}

/// Host `m` with the management bridge `br0` (198.18.100.0/24, the manager's
/// [`MANAGER_ADDR`] at .100), and host `names[i]` on it as 198.18.100.`i + 1` through its
/// interface `mg`. The manager's TCP to the nodes crosses only this network, never the
/// links the tests look at.
pub(crate) fn management_network(topo: &mut Topology, names: &[&str]) {
    topo.host("m");
    let m = topo.ns("m");
    ip(&["-n", &m, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &m, "addr", "add", "198.18.100.100/24", "dev", "br0"]);
    ip(&["-n", &m, "link", "set", "br0", "up"]);
    for (i, name) in names.iter().enumerate() {
        let ns = topo.ns(name);
        let peer = format!("mg-{name}");
        ip(&[
            "link", "add", "mg", "netns", &ns, "type", "veth", "peer", "name", &peer, "netns", &m,
        ]);
        let management = format!("198.18.100.{}/24", i + 1);
        ip(&["-n", &ns, "addr", "add", &management, "dev", "mg"]);
        ip(&["-n", &ns, "link", "set", "mg", "up"]);
        ip(&["-n", &m, "link", "set", &peer, "master", "br0"]);
        ip(&["-n", &m, "link", "set", &peer, "up"]);
    }
}

/// Node `i`'s transport address (port 6000).
pub(crate) fn endpoint(i: usize) -> String {
    format!("198.19.0.{}", i + 1)
}

impl ManagedMesh {
    /// Hosts `names`, joined by `links` (host, host, third byte of the link's subnet), the
    /// manager knowing those links, and a node in each host registered with it; `setup`
    /// adds to node `i`'s config (`tun`, `manager.accept`, ...) before it starts. Returns
    /// once every node is online at the manager and every link is proven by both ends.
    pub(crate) fn start(
        names: &[&str],
        links: &[(usize, usize, u8)],
        setup: impl FnMut(usize, &mut NodeSection, &[Node]),
    ) -> Self {
        Self::start_with(names, links, &[], |_| (), setup).0
    }

    /// [`Self::start`], with links the manager knows that are not veth pairs between the
    /// nodes: `wire` builds them in the topology (more hosts, a relay between two nodes:
    /// `tests/netns/impair.rs`) after the hosts, the management network and the veth links
    /// exist and before any node starts, and what it returns comes back with the mesh;
    /// `extra_links` (node, node) go into the manager's config and must come up too.
    pub(crate) fn start_with<T>(
        names: &[&str],
        links: &[(usize, usize, u8)],
        extra_links: &[(usize, usize)],
        wire: impl FnOnce(&mut Topology) -> T,
        mut setup: impl FnMut(usize, &mut NodeSection, &[Node]),
    ) -> (Self, T) {
        let mut topo = Topology::new();
        for name in names {
            topo.host(name);
        }
        management_network(&mut topo, names);
        for (i, name) in names.iter().enumerate() {
            let own = format!("{}/32", endpoint(i));
            ip(&["-n", &topo.ns(name), "addr", "add", &own, "dev", "lo"]);
        }
        for &(x, y, net) in links {
            let (ix, iy) = (format!("eth-{}", names[y]), format!("eth-{}", names[x]));
            topo.link(
                (names[x], &ix, &format!("198.18.{net}.1/24")),
                (names[y], &iy, &format!("198.18.{net}.2/24")),
            );
            for (from, to, via) in [(x, y, 2), (y, x, 1)] {
                ip(&[
                    "-n",
                    &topo.ns(names[from]),
                    "route",
                    "add",
                    &format!("{}/32", endpoint(to)),
                    "via",
                    &format!("198.18.{net}.{via}"),
                ]);
            }
        }
        let wired = wire(&mut topo);
        // The manager: its own key, the links in its config.
        let manager_dir = topo.dir().join("manager");
        fs::create_dir(&manager_dir).unwrap();
        let manager_key = keygen(&manager_dir.join("manager.key")).0.trim().to_owned();
        let nodes: Vec<Node> = names
            .iter()
            .map(|name| Node::new(&topo, name, &format!("node-{name}")))
            .collect();
        let mut manager = ManagerSection::new("manager.key");
        manager.listen = addr(MANAGER_ADDR);
        manager.rule_expiry = Duration::from_secs(10);
        manager.heartbeat = Duration::from_millis(500);
        manager.links = links
            .iter()
            .map(|(x, y, _)| (*x, *y))
            .chain(extra_links.iter().copied())
            .map(|(x, y)| [nodes[x].key(), nodes[y].key()])
            .collect();
        ConfigFile::manager(manager.clone())
            .write(manager_dir.join("manager.yaml"))
            .unwrap();
        let mut mesh = Self {
            nodes,
            manager: None,
            manager_dir,
            manager_key,
            manager_section: manager,
            topo,
        };
        mesh.start_manager();
        let manager_key = mesh.manager_key.parse().unwrap();
        for i in 0..mesh.nodes.len() {
            mesh.nodes[i].configure(|section| {
                section.listen = addr(&format!("{}:6000", endpoint(i)));
                section.manager = Some(ManagerLink {
                    address: addr(MANAGER_ADDR),
                    key: manager_key,
                    // What `endpoint` defaults to when left out: `listen`.
                    endpoint: section.listen,
                    accept: Vec::new(),
                });
                setup(i, section, &mesh.nodes);
            });
            mesh.nodes[i].start();
        }
        // Every node registered.
        let count = names.len();
        let online = wait_until(Duration::from_secs(10), || {
            mesh.nodes_json().is_some_and(|v| {
                v["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == count && n.iter().all(|n| n["online"] == true))
            })
        });
        assert!(
            online.is_some(),
            "nodes did not register:\n{}",
            mesh.manager_log()
        );
        // And every link proven by both its ends (routes use no other).
        let links = links.len() + extra_links.len();
        let proven = wait_until(Duration::from_secs(10), || {
            mesh.nodes_json().is_some_and(|v| {
                v["links"]
                    .as_array()
                    .is_some_and(|l| l.len() == links && l.iter().all(|l| l["state"] == "up"))
            })
        });
        assert!(
            proven.is_some(),
            "links not proven: {:?}\n{}",
            mesh.nodes_json(),
            mesh.manager_log()
        );
        (mesh, wired)
    }

    /// Start `skywire manager` in namespace `m`.
    pub(crate) fn start_manager(&mut self) {
        let proc = self.topo.spawn(
            "m",
            "manager",
            &skywire_binary(),
            &[
                "manager",
                "--config",
                self.manager_dir.join("manager.yaml").to_str().unwrap(),
            ],
        );
        self.manager = Some(proc);
    }

    /// Change the manager's config file (it takes effect when the manager starts again).
    pub(crate) fn configure_manager(&mut self, edit: impl FnOnce(&mut ManagerSection)) {
        edit(&mut self.manager_section);
        ConfigFile::manager(self.manager_section.clone())
            .write(self.manager_dir.join("manager.yaml"))
            .unwrap();
    }

    /// The manager's pid while it runs (not a zombie waiting to be reaped).
    pub(crate) fn manager_pid(&self) -> Option<u32> {
        let pid = self.manager.as_ref()?.pid();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let state = status.lines().find_map(|l| l.strip_prefix("State:"))?;
        (!state.trim_start().starts_with('Z')).then_some(pid)
    }

    /// What the manager wrote to its standard error so far.
    pub(crate) fn manager_log(&self) -> String {
        self.manager.as_ref().map(Proc::stderr).unwrap_or_default()
    }

    /// SIGTERM the manager and wait for it to exit cleanly.
    pub(crate) fn stop_manager(&mut self) {
        if let Some(mut proc) = self.manager.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &proc.pid().to_string()])
                .status();
            let status = proc.wait(Duration::from_secs(5));
            assert!(status.success(), "manager exit: {status}");
        }
    }

    /// SIGKILL the manager and reap it (no clean-up of its own runs).
    pub(crate) fn kill9_manager(&mut self) {
        if let Some(mut proc) = self.manager.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &proc.pid().to_string()])
                .status();
            let _ = proc.wait(Duration::from_secs(5));
        }
    }

    /// `skywire ARGS --socket <node i's socket>`: (exit code, stdout, stderr).
    pub(crate) fn sky(&self, i: usize, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(skywire_binary())
            .args(args)
            .arg("--socket")
            .arg(self.nodes[i].socket())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        super::outcome(&out)
    }

    /// `skywire nodes --json` on node 0, if it answers.
    pub(crate) fn nodes_json(&self) -> Option<serde_json::Value> {
        let (code, out, _) = self.sky(0, &["nodes", "--json"]);
        (code == 0)
            .then(|| serde_json::from_str(&out).ok())
            .flatten()
    }

    /// Node `i`'s public key.
    pub(crate) fn key(&self, i: usize) -> &str {
        &self.nodes[i].public_key
    }

    /// The index of the node with `key`.
    pub(crate) fn index(&self, key: &str) -> usize {
        self.nodes.iter().position(|n| n.public_key == key).unwrap()
    }

    /// The path of node `i`'s only route (from `route ls --json`), as node indices.
    pub(crate) fn only_route_path(&self, i: usize) -> Vec<usize> {
        let (code, out, err) = self.sky(i, &["route", "ls", "--json"]);
        assert_eq!(code, 0, "route ls: {err}");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let routes = list["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 1, "{list}");
        self.path(&routes[0])
    }

    /// The path of route `id` (16 hex digits) as node `i`'s `route ls --json` shows it,
    /// as node indices, and its state; `None` if node `i` does not list it.
    pub(crate) fn route_path(&self, i: usize, id: &str) -> Option<(Vec<usize>, String)> {
        let (code, out, _) = self.sky(i, &["route", "ls", "--json"]);
        if code != 0 {
            return None;
        }
        let list: serde_json::Value = serde_json::from_str(&out).ok()?;
        let route = list["routes"].as_array()?.iter().find(|r| r["id"] == id)?;
        let state = route["state"].as_str().unwrap_or_default().to_owned();
        Some((self.path(route), state))
    }

    /// A route's path (from `route add --json`) as node indices.
    pub(crate) fn path(&self, route: &serde_json::Value) -> Vec<usize> {
        route["path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| self.index(k.as_str().unwrap()))
            .collect()
    }
}
