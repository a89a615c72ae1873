//! The 3-hop route of `tests/node_three_hops.rs` with the impairment relay
//! (`skywire lab impair`) on its first link, for the fault tests (`tests/faults.rs`):
//!
//! ```text
//!   A eth-u 198.18.1.1 -- eth-a 198.18.1.2 U eth-b 198.18.3.1 -- eth-u 198.18.3.2 B eth-c 198.18.2.2 -- eth-b 198.18.2.3 C
//!   sky0 10.77.0.1          relay: listens on .1.2:6000,                   (relay only)                    sky0 10.77.0.3
//!                           sends to B from .3.1:6000
//! ```
//!
//! A's route to C takes the relay's address as its first hop and previous hop; B's rules
//! take the relay's sending address as their neighbour on that side, so every datagram
//! between A and B crosses the relay, impaired as [`ImpairedHops::set`] says. Route ids as
//! in `node_three_hops.rs`: A -> B 100, B -> C 101, C -> B 200, B -> A 201.

use std::path::PathBuf;
use std::time::Duration;

use skywire_control::node::ctl::StatusReply;

use super::{Node, Proc, Topology, addr, relay_rule, route, tun, wait_until};
use crate::common::skywire_binary;

/// A's and C's TUN addresses.
pub(crate) const A_TUN_V4: &str = "10.77.0.1";
pub(crate) const C_TUN_V4: &str = "10.77.0.3";
/// Where A sends: the relay's listening address.
pub(crate) const RELAY_LISTEN: &str = "198.18.1.2:6000";
/// Where the relay sends to B from.
pub(crate) const RELAY_TO_B: &str = "198.18.3.1:6000";
/// B's transport address on the relay's side.
pub(crate) const B_FROM_U: &str = "198.18.3.2:6000";
/// C's transport address.
pub(crate) const C_TRANSPORT: &str = "198.18.2.3:6000";

/// One direction's counters in the relay's JSON report.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub(crate) struct Lane {
    pub(crate) received: u64,
    pub(crate) sent: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) held: u64,
    pub(crate) flipped: u64,
    pub(crate) truncated: u64,
    pub(crate) replayed: u64,
    pub(crate) send_failed: u64,
    /// Sent `late_by` later (`late`).
    #[serde(default)]
    pub(crate) late: u64,
    /// Bytes that arrived.
    #[serde(default)]
    pub(crate) bytes_received: u64,
}

/// The relay's report: A -> B is `forward`, B -> A `back`.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub(crate) struct Report {
    pub(crate) forward: Lane,
    pub(crate) back: Lane,
}

/// Nodes and relay before the topology: fields drop in order, so a failing test prints the
/// nodes' logs before the topology deletes its folder.
pub(crate) struct ImpairedHops {
    pub(crate) a: Node,
    pub(crate) b: Node,
    pub(crate) c: Node,
    pub(crate) relay: Proc,
    /// The relay's per-datagram log.
    pub(crate) log: PathBuf,
    pub(crate) topo: Topology,
}

impl ImpairedHops {
    /// Build the four namespaces, start the relay with `seed` and the settings `forward`
    /// (A -> B) and `back` (B -> A), then B, C and A; the TUN addresses are usable when it
    /// returns (the route itself comes up with the first packet).
    pub(crate) fn start(seed: u64, forward: &str, back: &str) -> Self {
        let mut topo = Topology::new();
        for host in ["a", "u", "b", "c"] {
            topo.host(host);
        }
        topo.link(
            ("a", "eth-u", "198.18.1.1/24"),
            ("u", "eth-a", "198.18.1.2/24"),
        );
        topo.link(
            ("u", "eth-b", "198.18.3.1/24"),
            ("b", "eth-u", "198.18.3.2/24"),
        );
        topo.link(
            ("b", "eth-c", "198.18.2.2/24"),
            ("c", "eth-b", "198.18.2.3/24"),
        );
        let seed = seed.to_string();
        let log_path = topo.dir().join("impair.jsonl");
        let log = log_path.to_str().unwrap().to_owned();
        let relay = topo.spawn(
            "u",
            "impair",
            &skywire_binary(),
            &[
                "lab",
                "impair",
                "--listen",
                RELAY_LISTEN,
                "--target",
                B_FROM_U,
                "--bind",
                RELAY_TO_B,
                "--seed",
                &seed,
                "--forward",
                forward,
                "--back",
                back,
                "--log",
                &log,
            ],
        );
        let ready = relay.line(Duration::from_secs(10));
        assert_eq!(ready, format!("ready {RELAY_LISTEN}"), "{}", relay.stderr());
        let a = Node::new(&topo, "a", "a");
        let b = Node::new(&topo, "b", "b");
        let c = Node::new(&topo, "c", "c");
        a.configure(|node| {
            node.listen = addr("198.18.1.1:6000");
            node.tun = Some(tun("sky0", &["10.77.0.1/24"]));
            node.routes = vec![route(
                "to-c",
                c.key(),
                &["10.77.0.3/32"],
                RELAY_LISTEN,
                (100, 201, 101),
                RELAY_LISTEN,
            )];
        });
        b.configure(|node| {
            node.listen = addr("0.0.0.0:6000");
            node.relays = vec![
                relay_rule(100, RELAY_TO_B, 101, C_TRANSPORT),
                relay_rule(200, C_TRANSPORT, 201, RELAY_TO_B),
            ];
        });
        c.configure(|node| {
            node.listen = addr(C_TRANSPORT);
            node.tun = Some(tun("sky0", &["10.77.0.3/24"]));
            node.routes = vec![route(
                "to-a",
                a.key(),
                &["10.77.0.1/32"],
                "198.18.2.2:6000",
                (200, 101, 201),
                "198.18.2.2:6000",
            )];
        });
        let mut hops = Self {
            a,
            b,
            c,
            relay,
            log: log_path,
            topo,
        };
        hops.b.start();
        hops.c.start();
        hops.a.start();
        hops
    }

    /// New settings for `dir` (`forward`: A -> B, `back`: B -> A), e.g. `loss=5%`.
    pub(crate) fn set(&mut self, dir: &str, settings: &str) {
        self.relay.send_line(&format!("{dir} {settings}"));
    }

    /// The relay's counters now.
    pub(crate) fn report(&mut self) -> Report {
        self.relay.send_line("report");
        let line = self.relay.line(Duration::from_secs(5));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("relay report {line:?}: {e}; {}", self.relay.stderr()))
    }

    /// The packet types (byte 1 of the route header) of the datagrams the relay saw going
    /// `dir` (`forward`, `back`) numbered `from..to` in that direction, from its log (which
    /// [`Self::report`] flushes).
    pub(crate) fn types_seen(&self, dir: &str, from: u64, to: u64) -> Vec<u8> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|d| d["dir"] == dir)
            .filter(|d| (from..to).contains(&d["n"].as_u64().unwrap()))
            .map(|d| d["head"][1].as_u64().unwrap() as u8)
            .collect()
    }

    /// Ping C from A once at a time (each waiting `wait` for its reply) until one comes, at
    /// most `deadline`: how long it took.
    pub(crate) fn ping_until_reply(&self, deadline: Duration, wait: &str) -> Option<Duration> {
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            let out = self.topo.output(
                "a",
                "ping",
                &["-n", "-c", "1", "-W", wait, "-I", A_TUN_V4, C_TUN_V4],
            );
            if out.status.success() {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// Every drop counter of `status` (node-wide and of each route), summed.
    pub(crate) fn all_drops(status: &StatusReply) -> u64 {
        let node: u64 = status.drops.0.iter().map(|(_, n)| n).sum();
        let routes: u64 = status
            .routes
            .iter()
            .flat_map(|r| r.drops.0.iter().map(|(_, n)| n))
            .sum();
        node + routes
    }

    /// One drop counter of C's only route.
    pub(crate) fn c_route_drop(&self, reason: &str) -> u64 {
        let status = self.c.status_json();
        let route = status.routes.first().expect("C has its route");
        route
            .drops
            .0
            .iter()
            .find(|(r, _)| r == reason)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no drop reason {reason:?} in {:?}", route.drops))
    }

    /// Poll `value` until it stops changing for 300 ms (at most `deadline`): its value.
    pub(crate) fn settled(deadline: Duration, mut value: impl FnMut() -> u64) -> u64 {
        let mut last = value();
        let mut stable_since = std::time::Instant::now();
        let _ = wait_until(deadline, || {
            let now = value();
            if now != last {
                last = now;
                stable_since = std::time::Instant::now();
            }
            stable_since.elapsed() >= Duration::from_millis(300)
        });
        last
    }
}
