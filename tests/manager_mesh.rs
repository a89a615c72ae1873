//! The node manager with five `skywire node` daemons in network namespaces (root only):
//!
//! ```text
//!            B                     mesh links (UDP, the data plane):
//!          /   \                     A-B 198.18.1.0/24   B-E 198.18.2.0/24
//!   A(tun)       E(tun)              A-C 198.18.3.0/24   C-D 198.18.4.0/24
//!          \   /                     D-E 198.18.5.0/24
//!       C --- D
//!                                  management: a bridge in namespace M, 198.18.100.0/24,
//!   M: skywire manager               the manager at .100, nodes at .1 to .5
//! ```
//!
//! Each node's transport endpoint is 198.19.0.N on its loopback, reachable only from its
//! neighbours (a host route per link, no IP forwarding), so traffic between A and E can only
//! cross the mesh through relays. Two disjoint paths join A and E: A-B-E and A-C-D-E.
//!
//! Checked with the real binary, `ping`, and the Python TCP tools:
//! - `route add E --min-hops 3` takes A-C-D-E (B holds no rule); ping, `skywire ping` and a
//!   TCP transfer go through; `route rm` removes the rules on every hop;
//! - `route add E --min-hops 2` takes A-B-E; kill -9 of B: the manager rebuilds the route
//!   over A-C-D-E and pings resume within 5 s;
//! - the manager restarted (SIGTERM, then started again) during a ping every 50 ms: no
//!   reply is missing beyond the odd packet; the route comes back under the same id;
//! - bad input on the manager's port (garbage, a 4 GiB length, a truncated frame, a node
//!   claiming another's key, a body that is not JSON, a peer trickling bytes past the 10 s
//!   limit for its key proof) closes each of those connections,
//!   is logged, and the manager keeps serving; an unknown route id is refused.
//!
//! Skipped (with a message) when not root; CI runs it as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use netns::managed::ManagedMesh;
use netns::{Proc, ip, key_values, tun, wait_until};
use skywire_control::config::AcceptRule;
use skywire_control::node::ctl::protocol::OriginReply;

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// (host, host, subnet third byte) of each mesh link.
const LINKS: [(usize, usize, u8); 5] = [(0, 1, 1), (1, 4, 2), (0, 2, 3), (2, 3, 4), (3, 4, 5)];
const A_TUN: &str = "10.77.0.1";
const E_TUN: &str = "10.77.0.5";

/// The five-node mesh, with E accepting routes from A.
struct Mesh(ManagedMesh);

impl Deref for Mesh {
    type Target = ManagedMesh;
    fn deref(&self) -> &ManagedMesh {
        &self.0
    }
}

impl DerefMut for Mesh {
    fn deref_mut(&mut self) -> &mut ManagedMesh {
        &mut self.0
    }
}

impl Mesh {
    fn start() -> Self {
        Self(ManagedMesh::start(&NAMES, &LINKS, |i, node, nodes| {
            // E lets A set up routes to it with A's address; nobody else accepts routes it
            // did not ask for.
            if i == 4
                && let Some(manager) = &mut node.manager
            {
                manager.accept = vec![AcceptRule {
                    peer: Some(nodes[0].key()),
                    prefixes: vec!["10.77.0.1/32".parse().unwrap()],
                }];
            }
            if i == 0 || i == 4 {
                // Host addresses: the kernel reaches the other end only through the route
                // the engine adds for a route end's prefix (and removes with it).
                node.tun = Some(tun("sky0", &[&format!("10.77.0.{}/32", i + 1)]));
            }
        }))
    }

    /// Relay rules (from the manager) node `i` holds.
    fn manager_relays(&self, i: usize) -> usize {
        let status = self.nodes[i].status_json();
        status
            .relays
            .iter()
            .filter(|r| !matches!(r.origin, OriginReply::Config))
            .count()
    }

    fn route_add(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["route", "add", self.key(4)];
        all.extend_from_slice(args);
        all.push("--json");
        let (code, out, err) = self.sky(0, &all);
        assert_eq!(code, 0, "route add: {err}\n{}", self.manager_log());
        serde_json::from_str(&out).unwrap()
    }

    /// A's routes as the manager lists them now (none while A has no manager).
    fn route_ls(&self) -> Vec<serde_json::Value> {
        let (code, out, _) = self.sky(0, &["route", "ls", "--json"]);
        if code != 0 {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["routes"].as_array().cloned().unwrap_or_default()
    }
}

/// Ping from A's TUN to E's every `interval` for `count` packets, in the background.
fn start_pings(mesh: &Mesh, count: u32, interval: &str) -> Proc {
    let count = count.to_string();
    mesh.topo.spawn(
        "a",
        "ping",
        Path::new("ping"),
        &[
            "-n", "-i", interval, "-c", &count, "-W", "1", "-I", A_TUN, E_TUN,
        ],
    )
}

/// The sequence numbers that got replies, from ping's output.
fn replied(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The longest run of missing replies, in packets (counting a tail cut short as missing).
fn longest_gap(seqs: &[u32], count: u32) -> u32 {
    let mut prev = 0;
    let mut worst = 0;
    for &s in seqs {
        worst = worst.max(s.saturating_sub(prev + 1));
        prev = s;
    }
    worst.max(count.saturating_sub(prev))
}

#[test]
fn manager_sets_up_repairs_and_survives_a_restart() {
    if !netns::skip_unless_root("manager_sets_up_repairs_and_survives_a_restart") {
        return;
    }
    let mut mesh = Mesh::start();

    // The manager's view: five nodes, five links measured by probes.
    let measured = wait_until(Duration::from_secs(8), || {
        mesh.nodes_json().is_some_and(|v| {
            v["links"].as_array().is_some_and(|l| {
                l.len() == 5 && l.iter().all(|l| l["rtt_us"].is_u64() && l["state"] == "up")
            })
        })
    });
    assert!(
        measured.is_some(),
        "links not measured: {:?}",
        mesh.nodes_json()
    );
    let (code, text, _) = mesh.sky(0, &["nodes"]);
    assert_eq!(code, 0);
    assert!(text.contains("online"), "{text}");
    println!("skywire nodes:\n{text}");

    // --min-hops 3: the longer path, A-C-D-E; B holds nothing.
    let asked = Instant::now();
    let route = mesh.route_add(&["--min-hops", "3"]);
    println!(
        "route add --min-hops 3 (3 hops, both phases acknowledged): {:?}",
        asked.elapsed()
    );
    assert_eq!(mesh.path(&route), vec![0, 2, 3, 4], "{route}");
    assert_eq!(route["state"], "active");
    assert_eq!(mesh.topo.ping("a", A_TUN, E_TUN, 5), 5);
    assert_eq!(mesh.manager_relays(1), 0);
    assert_eq!(mesh.manager_relays(2), 2);
    assert_eq!(mesh.manager_relays(3), 2);
    let (code, text, err) = mesh.sky(0, &["ping", mesh.key(4), "-c", "3", "-i", "0.1"]);
    assert_eq!(code, 0, "skywire ping: {err}");
    assert_eq!(text.matches("pong from").count(), 3, "{text}");
    // A accepts no route it did not ask for: E's route to it is refused by A itself,
    // rolled back, and the refusal reaches E's user.
    let (code, _, err) = mesh.sky(4, &["route", "add", mesh.key(0)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not_allowed") && err.contains("accept"),
        "{err}"
    );
    assert_eq!(mesh.manager_relays(1), 0);
    // The node's status says which route came from the manager.
    let (_, status, _) = mesh.sky(0, &["status"]);
    assert!(status.contains("manager"), "{status}");
    let (_, relay_status, _) = mesh.sky(2, &["status"]);
    let (_, routes, _) = mesh.sky(0, &["route", "ls"]);
    println!(
        "skywire ping:\n{text}\nskywire status on A:\n{status}\non C:\n{relay_status}\nroute ls:\n{routes}"
    );
    // A TCP transfer over the route.
    let mut sink = mesh
        .topo
        .spawn_tool("e", "tcp_sink.py", &["--listen", E_TUN, "--port", "5001"]);
    sink.expect_line("listening", Duration::from_secs(10));
    let mut source = mesh.topo.spawn_tool(
        "a",
        "tcp_source.py",
        &[
            "--connect",
            E_TUN,
            "--port",
            "5001",
            "--bind",
            A_TUN,
            "--bytes",
            "20000000",
        ],
    );
    let sent = key_values(&source.finish(Duration::from_secs(60)).join(" "));
    let got = key_values(&sink.finish(Duration::from_secs(30)).join(" "));
    assert_eq!(got["bytes"], "20000000");
    assert_eq!(got["sha256"], sent["sha256"]);
    // The engine routed E's address into A's TUN device for the route end.
    let kernel_route = |mesh: &Mesh| ip(&["-n", &mesh.topo.ns("a"), "route", "show", E_TUN]);
    assert!(
        kernel_route(&mesh).contains("sky0"),
        "{}",
        kernel_route(&mesh)
    );
    // Removed on every hop.
    // The id as every command shows it, text and JSON: 16 hex digits.
    let id = route["id"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{route}"
    );
    let (code, _, err) = mesh.sky(0, &["route", "rm", id]);
    assert_eq!(code, 0, "route rm: {err}");
    let cleared = wait_until(Duration::from_secs(3), || {
        mesh.manager_relays(2) == 0 && mesh.manager_relays(3) == 0
    });
    assert!(cleared.is_some(), "relays kept rules after route rm");
    // ... and the kernel route went with A's route end: no hijack outlives its route.
    let unrouted = wait_until(Duration::from_secs(3), || kernel_route(&mesh).is_empty());
    assert!(unrouted.is_some(), "{}", kernel_route(&mesh));
    // With no route to a node, `skywire ping` says so at once.
    let started = Instant::now();
    let (code, _, err) = mesh.sky(0, &["ping", mesh.key(1), "-c", "3"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no route"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // An unknown route id is refused, and nothing else changes.
    let (code, _, err) = mesh.sky(0, &["route", "rm", "123456789abcdef"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown_route"), "{err}");

    // --min-hops 2: A-B-E. Kill B under a stream of pings: the route moves to A-C-D-E.
    let route = mesh.route_add(&["--min-hops", "2"]);
    assert_eq!(mesh.path(&route), vec![0, 1, 4], "{route}");
    let mut pings = start_pings(&mesh, 240, "0.05");
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    mesh.nodes[1].kill9();
    let repaired = wait_until(Duration::from_secs(5), || {
        mesh.route_ls()
            .first()
            .is_some_and(|r| r["state"] == "active" && mesh.path(r) == vec![0, 2, 3, 4])
    });
    assert!(
        repaired.is_some(),
        "not repaired: {:?}\n{}",
        mesh.route_ls(),
        mesh.manager_log()
    );
    let repaired_in = killed.elapsed();
    let lines = pings.finish(Duration::from_secs(30));
    let seqs = replied(&lines);
    let gap = longest_gap(&seqs, 240);
    let outage = Duration::from_millis(50) * gap;
    println!(
        "kill -9 of the relay: route rebuilt in {:?}, pings missing for {outage:?} ({gap} of 240 lost)",
        repaired_in
    );
    assert!(
        outage < Duration::from_secs(5),
        "outage {outage:?}: {lines:?}"
    );
    assert!(mesh.route_ls()[0]["repairs"].as_u64().unwrap() >= 1);
    // B is gone: its links are offline, with nothing left of what was measured.
    let b = mesh.key(1).to_owned();
    let view = mesh.nodes_json().expect("the manager's view");
    let b_links: Vec<&serde_json::Value> = view["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["a"] == b.as_str() || l["b"] == b.as_str())
        .collect();
    assert_eq!(b_links.len(), 2, "{view}");
    for l in b_links {
        assert_eq!(l["state"], "offline", "{l}");
        assert!(l["rtt_us"].is_null(), "{l}");
        assert_eq!(l["up"], false, "{l}");
    }

    // Restart the manager while pings flow: installed routes keep forwarding.
    let mut pings = start_pings(&mesh, 200, "0.05");
    std::thread::sleep(Duration::from_secs(2));
    mesh.stop_manager();
    std::thread::sleep(Duration::from_secs(2));
    mesh.start_manager();
    let back = wait_until(Duration::from_secs(8), || {
        mesh.route_ls()
            .first()
            .is_some_and(|r| r["state"] == "active" && r["id"] == route["id"])
    });
    assert!(
        back.is_some(),
        "route not re-adopted:\n{}",
        mesh.manager_log()
    );
    let lines = pings.finish(Duration::from_secs(30));
    let seqs = replied(&lines);
    let gap = longest_gap(&seqs, 200);
    println!(
        "manager restart: {} of 200 pings answered, longest gap {gap} packets",
        seqs.len()
    );
    assert!(
        gap <= 2,
        "traffic stopped during the manager restart: {lines:?}"
    );
    assert!(seqs.len() >= 198, "{} of 200 answered", seqs.len());

    // Bad input on the manager's port: each connection closed, the manager serves on.
    let mut bad = mesh.topo.spawn_tool(
        "a",
        "manager_bad.py",
        &[
            "--connect",
            "198.18.100.100",
            "--port",
            "5999",
            "--victim",
            mesh.key(2),
        ],
    );
    let verdicts = key_values(&bad.finish(Duration::from_secs(40)).join(" "));
    assert_eq!(verdicts["garbage"], "closed", "{verdicts:?}");
    assert_eq!(verdicts["oversized"], "closed", "{verdicts:?}");
    assert_eq!(verdicts["truncated"], "closed", "{verdicts:?}");
    assert_eq!(
        verdicts["impostor"], "refused:unauthenticated",
        "{verdicts:?}"
    );
    assert_eq!(verdicts["not_json"], "closed", "{verdicts:?}");
    // The first recv returns HELLO; trickling then gets closed at the 10 s deadline.
    let trickle = verdicts["trickle"]
        .trim_start_matches("closed:")
        .trim_end_matches('s');
    let secs: u64 = trickle.parse().unwrap_or_else(|_| panic!("{verdicts:?}"));
    assert!((8..=13).contains(&secs), "{verdicts:?}");
    let log = mesh.manager_log();
    assert!(log.contains("proof for key"), "{log}");
    assert!(mesh.nodes_json().is_some(), "the manager stopped serving");
    assert_eq!(mesh.topo.ping("a", A_TUN, E_TUN, 3), 3);
}
