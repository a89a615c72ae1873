//! The three-node topology of the data-plane tests (`node_three_hops`, `metering`):
//!
//! ```text
//!   A eth-b 198.18.1.1 ---- eth-a 198.18.1.2 B eth-c 198.18.2.2 ---- eth-b 198.18.2.3 C
//!   sky0 10.77.0.1/24                        (relay only)                    sky0 10.77.0.3/24
//!        fd77::1/64                                                               fd77::3/64
//! ```
//!
//! One route A <-> C through B with static ids (A -> B 100, B -> C 101, C -> B 200,
//! B -> A 201; each end's handshakes are bound to 201 and 101, the ids A and C receive
//! with), transport port 6000 everywhere.

use std::time::{Duration, Instant};

use super::{Node, Topology, addr, relay_rule, route, tun, wait_until};

pub(crate) const A_TUN_V4: &str = "10.77.0.1";
pub(crate) const C_TUN_V4: &str = "10.77.0.3";
pub(crate) const A_TUN_V6: &str = "fd77::1";
pub(crate) const C_TUN_V6: &str = "fd77::3";

/// Nodes before the topology: fields drop in order, so a failing test prints the nodes'
/// logs before the topology deletes its folder.
pub(crate) struct ThreeHops {
    pub(crate) a: Node,
    pub(crate) b: Node,
    pub(crate) c: Node,
    pub(crate) topo: Topology,
}

impl ThreeHops {
    /// Build the namespaces and links, write the three configs, start B, C, then A, and
    /// wait until the TUN addresses are usable (IPv6 duplicate address detection done).
    pub(crate) fn start() -> Self {
        Self::start_with(true)
    }

    /// [`start`](Self::start), with the kernel offloads (`node.offload`) on or off.
    pub(crate) fn start_with(offload: bool) -> Self {
        let mut topo = Topology::new();
        for host in ["a", "b", "c"] {
            topo.host(host);
        }
        topo.link(
            ("a", "eth-b", "198.18.1.1/24"),
            ("b", "eth-a", "198.18.1.2/24"),
        );
        topo.link(
            ("b", "eth-c", "198.18.2.2/24"),
            ("c", "eth-b", "198.18.2.3/24"),
        );
        let a = Node::new(&topo, "a", "a");
        let b = Node::new(&topo, "b", "b");
        let c = Node::new(&topo, "c", "c");
        a.configure(|node| {
            node.listen = addr("198.18.1.1:6000");
            node.offload = offload;
            node.tun = Some(tun("sky0", &["10.77.0.1/24", "fd77::1/64"]));
            node.routes = vec![route(
                "to-c",
                c.key(),
                &["10.77.0.3/32", "fd77::3/128"],
                "198.18.1.2:6000",
                (100, 201, 101),
                "198.18.1.2:6000",
            )];
        });
        b.configure(|node| {
            node.listen = addr("0.0.0.0:6000");
            node.offload = offload;
            node.relays = vec![
                relay_rule(100, "198.18.1.1:6000", 101, "198.18.2.3:6000"),
                relay_rule(200, "198.18.2.3:6000", 201, "198.18.1.1:6000"),
            ];
        });
        c.configure(|node| {
            node.listen = addr("198.18.2.3:6000");
            node.offload = offload;
            node.tun = Some(tun("sky0", &["10.77.0.3/24", "fd77::3/64"]));
            node.routes = vec![route(
                "to-a",
                a.key(),
                &["10.77.0.1/32", "fd77::1/128"],
                "198.18.2.2:6000",
                (200, 101, 201),
                "198.18.2.2:6000",
            )];
        });
        let mut hops = Self { a, b, c, topo };
        hops.b.start();
        hops.c.start();
        hops.a.start();
        hops.wait_for_tun_addresses();
        hops
    }

    /// Wait (at most 5 s) until neither TUN has a tentative IPv6 address, which `ping -I`
    /// could not use yet.
    pub(crate) fn wait_for_tun_addresses(&self) {
        for host in ["a", "c"] {
            let settled = wait_until(Duration::from_secs(5), || {
                let out = self.topo.output(
                    host,
                    "ip",
                    &["-6", "addr", "show", "dev", "sky0", "tentative"],
                );
                out.status.success() && out.stdout.is_empty()
            });
            assert!(settled.is_some(), "{host}: sky0 keeps a tentative address");
        }
    }

    pub(crate) fn node(&mut self, host: &str) -> &mut Node {
        match host {
            "a" => &mut self.a,
            "b" => &mut self.b,
            "c" => &mut self.c,
            _ => panic!("no host {host}"),
        }
    }

    /// Ping C's TUN address from A's, `count` times: the replies.
    pub(crate) fn ping_v4(&self, count: u32) -> u32 {
        self.topo.ping("a", A_TUN_V4, C_TUN_V4, count)
    }

    pub(crate) fn ping_v6(&self, count: u32) -> u32 {
        self.topo.ping("a", A_TUN_V6, C_TUN_V6, count)
    }

    /// Ping once at a time (each waiting 250 ms for its reply) until a reply comes, at most
    /// `deadline`: how long it took.
    pub(crate) fn ping_until_reply(&self, deadline: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            let out = self.topo.output(
                "a",
                "ping",
                &["-n", "-c", "1", "-W", "0.25", "-I", A_TUN_V4, C_TUN_V4],
            );
            if out.status.success() {
                return Some(start.elapsed());
            }
        }
        None
    }

    /// All three nodes' status as text, for the test output.
    pub(crate) fn show(&self) {
        for node in [&self.a, &self.b, &self.c] {
            println!(
                "--- skywire status ({}):\n{}",
                node.host(),
                node.status_text()
            );
        }
    }
}
