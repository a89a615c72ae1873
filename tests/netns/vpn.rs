//! The VPN tests' topology (docs/design/vpn-plan.md §3): a client machine behind an ISP, a
//! second client, an "internet" with services, and an exit with a LAN of its own.
//!
//! ```text
//!  c    c-wan  198.18.1.2/24 fd00:1::2/64 ── isp-c  .1 ┐
//!       c-lan  198.18.60.1/24 ── clan 198.18.60.10     │ isp (router)  isp-inet 198.18.2.1 fd00:2::1
//!  c2   c2-wan 198.18.3.2/24 fd00:3::2/64 ── isp-c2 .1 ┘                   │
//!                                                          inet (router)  inet-isp 198.18.2.2 fd00:2::2
//!       lo: 198.18.9.10 fd00:9::10 (HTTP :80, UDP echo :7), 198.18.9.53 fd00:9::53 (DNS :53)
//!  x    x-wan  198.18.4.2/24 fd00:4::2/64 ── inet-x 198.18.4.1 fd00:4::1
//!       x-lan  198.19.50.1/24 fd00:50::1/64 ── xlan 198.19.50.10 fd00:50::10 (HTTP "lan" :80)
//!       lo: 169.254.169.254/32 (HTTP "metadata" :80); HTTP "exit-own" on 198.18.4.2:8081
//!  m    the manager on the management bridge (198.18.100.0/24, [`MANAGER_ADDR`]):
//!       c .1, c2 .2, x .3, each through its interface `mg` (as in `managed.rs`)
//! ```
//!
//! Addresses come only from 198.18.0.0/15 and fd00::/8, and nothing has a default route:
//! c's stand-in for one is `198.18.0.0/15 via 198.18.1.1` and `fd00::/8 via fd00:1::1`
//! (c2 likewise through 198.18.3.1), x's is the same through inet. isp and inet forward
//! (IPv4 and IPv6) with static routes; x does not (the exit app turns forwarding on for
//! its interfaces); c runs with `rp_filter=1` (plan, R1).
//!
//! [`VpnLab::build`] makes the namespaces, links, routes and sysctls; [`VpnLab::start_services`]
//! starts `tests/tools/vpn_services.py` in inet, x and xlan. The nodes, the manager and the
//! VPN apps are the tests' to start: node transport addresses [`C_LISTEN`], [`C2_LISTEN`],
//! [`X_LISTEN`]; the manager listens on [`MANAGER_ADDR`] in host [`M`] (its config and
//! process as in `managed.rs`); the mesh and pool prefixes of the plan are here as
//! constants.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use skywire_control::config::{AcceptRule, ConfigFile, ManagerLink, ManagerSection};

use super::managed::management_network;
use super::{Node, Proc, Topology, addr, ip, outcome, prefix, route, tun, wait_until};
use crate::common::{keygen, skywire_binary};

// Each test binary uses only part of this module.
#[allow(unused_imports)]
pub(crate) use super::managed::MANAGER_ADDR;

/// The client.
pub(crate) const C: &str = "c";
/// The second client.
pub(crate) const C2: &str = "c2";
/// The clients' ISP: a router.
pub(crate) const ISP: &str = "isp";
/// The "internet": a router with the services on its loopback.
pub(crate) const INET: &str = "inet";
/// The exit.
pub(crate) const X: &str = "x";
/// A host on the exit's LAN.
pub(crate) const XLAN: &str = "xlan";
/// A host on the client's LAN.
pub(crate) const CLAN: &str = "clan";
/// The manager's host (its management bridge).
pub(crate) const M: &str = "m";

/// c's uplink and its addresses.
pub(crate) const C_WAN_IF: &str = "c-wan";
/// See [`C_WAN_IF`].
pub(crate) const C_WAN4: &str = "198.18.1.2";
/// See [`C_WAN_IF`].
pub(crate) const C_WAN6: &str = "fd00:1::2";
/// isp's side of c's link: c's gateway.
pub(crate) const ISP_C4: &str = "198.18.1.1";
/// See [`ISP_C4`].
pub(crate) const ISP_C6: &str = "fd00:1::1";
/// c's LAN interface, its address and the host on it.
pub(crate) const C_LAN_IF: &str = "c-lan";
/// See [`C_LAN_IF`].
pub(crate) const C_LAN4: &str = "198.18.60.1";
/// See [`C_LAN_IF`].
pub(crate) const CLAN4: &str = "198.18.60.10";
/// c's LAN.
pub(crate) const C_LAN_NET: &str = "198.18.60.0/24";

/// c2's uplink and its addresses.
pub(crate) const C2_WAN_IF: &str = "c2-wan";
/// See [`C2_WAN_IF`].
pub(crate) const C2_WAN4: &str = "198.18.3.2";
/// See [`C2_WAN_IF`].
pub(crate) const C2_WAN6: &str = "fd00:3::2";
/// isp's side of c2's link: c2's gateway.
pub(crate) const ISP_C2_4: &str = "198.18.3.1";
/// See [`ISP_C2_4`].
pub(crate) const ISP_C2_6: &str = "fd00:3::1";

/// The link between isp and inet: isp's end.
pub(crate) const ISP_INET4: &str = "198.18.2.1";
/// See [`ISP_INET4`].
pub(crate) const ISP_INET6: &str = "fd00:2::1";
/// The link between isp and inet: inet's end.
pub(crate) const INET_ISP4: &str = "198.18.2.2";
/// See [`INET_ISP4`].
pub(crate) const INET_ISP6: &str = "fd00:2::2";

/// x's uplink and its addresses (also the first hop c's node sends to).
pub(crate) const X_WAN_IF: &str = "x-wan";
/// See [`X_WAN_IF`].
pub(crate) const X_WAN4: &str = "198.18.4.2";
/// See [`X_WAN_IF`].
pub(crate) const X_WAN6: &str = "fd00:4::2";
/// inet's side of x's link: x's gateway.
pub(crate) const INET_X4: &str = "198.18.4.1";
/// See [`INET_X4`].
pub(crate) const INET_X6: &str = "fd00:4::1";
/// x's LAN interface and its addresses.
pub(crate) const X_LAN_IF: &str = "x-lan";
/// See [`X_LAN_IF`].
pub(crate) const X_LAN4: &str = "198.19.50.1";
/// See [`X_LAN_IF`].
pub(crate) const X_LAN6: &str = "fd00:50::1";
/// The host on x's LAN ("lan" on port 80).
pub(crate) const XLAN4: &str = "198.19.50.10";
/// See [`XLAN4`].
pub(crate) const XLAN6: &str = "fd00:50::10";
/// x's LAN.
pub(crate) const X_LAN_NET4: &str = "198.19.50.0/24";
/// See [`X_LAN_NET4`].
pub(crate) const X_LAN_NET6: &str = "fd00:50::/64";
/// The cloud metadata address, on x's loopback ("metadata" on port 80).
pub(crate) const METADATA4: &str = "169.254.169.254";
/// The port of x's own service ("exit-own", on [`X_WAN4`]).
pub(crate) const EXIT_OWN_PORT: u16 = 8081;

/// The web server and UDP echo (port 7) in inet.
pub(crate) const WEB4: &str = "198.18.9.10";
/// See [`WEB4`].
pub(crate) const WEB6: &str = "fd00:9::10";
/// The DNS stub in inet; it answers `*.test` with [`WEB4`] and [`WEB6`].
pub(crate) const DNS4: &str = "198.18.9.53";
/// See [`DNS4`].
pub(crate) const DNS6: &str = "fd00:9::53";
/// The services' network in inet.
pub(crate) const SERVICES_NET6: &str = "fd00:9::/64";

/// The nodes' transport addresses.
pub(crate) const C_LISTEN: &str = "198.18.1.2:6000";
/// See [`C_LISTEN`].
pub(crate) const C2_LISTEN: &str = "198.18.3.2:6000";
/// See [`C_LISTEN`].
pub(crate) const X_LISTEN: &str = "198.18.4.2:6000";
/// The plan's mesh TUN prefixes.
pub(crate) const MESH4: &str = "198.19.77.0/24";
/// See [`MESH4`].
pub(crate) const MESH6: &str = "fd00:77::/64";
/// The plan's exit pools.
pub(crate) const POOL4: &str = "198.19.128.0/24";
/// See [`POOL4`].
pub(crate) const POOL6: &str = "fd00:5b::/64";

/// The topology, with the service processes (which drop before it).
pub(crate) struct VpnLab {
    services: Vec<Proc>,
    /// The DNS stub's query log: one `<source ip> <name> <type>` line per query.
    pub(crate) dns_log: PathBuf,
    pub(crate) topo: Topology,
}

impl VpnLab {
    /// The namespaces, links, addresses, routes and sysctls of the module doc; no process.
    pub(crate) fn build() -> Self {
        let mut topo = Topology::new();
        for host in [C, C2, ISP, INET, X, XLAN, CLAN] {
            topo.host(host);
        }
        let v4 = |a: &str| format!("{a}/24");
        let v6 = |a: &str| format!("{a}/64");
        topo.link_addresses(
            (C, C_WAN_IF, &[&v4(C_WAN4), &v6(C_WAN6)]),
            (ISP, "isp-c", &[&v4(ISP_C4), &v6(ISP_C6)]),
        );
        topo.link_addresses(
            (C2, C2_WAN_IF, &[&v4(C2_WAN4), &v6(C2_WAN6)]),
            (ISP, "isp-c2", &[&v4(ISP_C2_4), &v6(ISP_C2_6)]),
        );
        topo.link_addresses(
            (ISP, "isp-inet", &[&v4(ISP_INET4), &v6(ISP_INET6)]),
            (INET, "inet-isp", &[&v4(INET_ISP4), &v6(INET_ISP6)]),
        );
        topo.link_addresses(
            (X, X_WAN_IF, &[&v4(X_WAN4), &v6(X_WAN6)]),
            (INET, "inet-x", &[&v4(INET_X4), &v6(INET_X6)]),
        );
        topo.link_addresses(
            (X, X_LAN_IF, &[&v4(X_LAN4), &v6(X_LAN6)]),
            (XLAN, "xlan-x", &[&v4(XLAN4), &v6(XLAN6)]),
        );
        topo.link_addresses(
            (C, C_LAN_IF, &[&v4(C_LAN4)]),
            (CLAN, "clan-c", &[&v4(CLAN4)]),
        );
        let lo = |host: &str, address: &str| {
            ip(&["-n", &topo.ns(host), "addr", "add", address, "dev", "lo"]);
        };
        for address in [WEB4, DNS4] {
            lo(INET, &format!("{address}/32"));
        }
        for address in [WEB6, DNS6] {
            lo(INET, &format!("{address}/128"));
        }
        lo(X, &format!("{METADATA4}/32"));
        let route = |host: &str, to: &str, via: &str| {
            ip(&["-n", &topo.ns(host), "route", "add", to, "via", via]);
        };
        // The stand-ins for default routes.
        for (host, gw4, gw6) in [
            (C, ISP_C4, ISP_C6),
            (C2, ISP_C2_4, ISP_C2_6),
            (X, INET_X4, INET_X6),
        ] {
            route(host, "198.18.0.0/15", gw4);
            route(host, "fd00::/8", gw6);
        }
        // The routers: isp knows x's and the services' networks behind inet, inet the
        // clients' behind isp (nothing broader, so an unknown address is unreachable
        // instead of looping between them).
        for to in ["198.18.4.0/24", "198.18.9.0/24"] {
            route(ISP, to, INET_ISP4);
        }
        for to in ["fd00:4::/64", SERVICES_NET6] {
            route(ISP, to, INET_ISP6);
        }
        for to in ["198.18.1.0/24", "198.18.3.0/24"] {
            route(INET, to, ISP_INET4);
        }
        for to in ["fd00:1::/64", "fd00:3::/64"] {
            route(INET, to, ISP_INET6);
        }
        for host in [ISP, INET] {
            topo.sysctl(host, "net.ipv4.ip_forward", "1");
            topo.sysctl(host, "net.ipv6.conf.all.forwarding", "1");
        }
        // rp_filter takes the larger of `all` and the interface's value.
        topo.sysctl(C, "net.ipv4.conf.all.rp_filter", "1");
        topo.sysctl(C, &format!("net.ipv4.conf.{C_WAN_IF}.rp_filter"), "1");
        management_network(&mut topo, &[C, C2, X]);
        let dns_log = topo.dir().join("dns-queries.log");
        Self {
            services: Vec::new(),
            dns_log,
            topo,
        }
    }

    /// Start the services (`tests/tools/vpn_services.py`): the internet's in inet, "lan"
    /// in xlan, "exit-own" and "metadata" in x; returns once each is bound.
    pub(crate) fn start_services(&mut self) {
        let log = self.dns_log.to_str().unwrap().to_owned();
        let exit_own = format!("{X_WAN4}:{EXIT_OWN_PORT}");
        let lan6 = format!("[{XLAN6}]:80");
        let lan4 = format!("{XLAN4}:80");
        let metadata = format!("{METADATA4}:80");
        let runs: [(&str, Vec<&str>); 4] = [
            (
                INET,
                vec![
                    "internet",
                    "--web",
                    WEB4,
                    "--web",
                    WEB6,
                    "--dns",
                    DNS4,
                    "--dns",
                    DNS6,
                    "--dns-log",
                    &log,
                ],
            ),
            (
                XLAN,
                vec![
                    "named", "--name", "lan", "--listen", &lan4, "--listen", &lan6,
                ],
            ),
            (
                X,
                vec!["named", "--name", "exit-own", "--listen", &exit_own],
            ),
            (
                X,
                vec!["named", "--name", "metadata", "--listen", &metadata],
            ),
        ];
        for (host, args) in runs {
            let proc = self.topo.spawn_tool(host, "vpn_services.py", &args);
            proc.expect_line("ready", Duration::from_secs(10));
            self.services.push(proc);
        }
    }

    /// The DNS stub's log so far: (source address, name, type) per query.
    pub(crate) fn dns_queries(&self) -> Vec<(String, String, u16)> {
        fs::read_to_string(&self.dns_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let source = fields.next()?.to_owned();
                let name = fields.next()?.to_owned();
                let kind = fields.next()?.parse().ok()?;
                Some((source, name, kind))
            })
            .collect()
    }

    /// `curl --silent --show-error --max-time 5 ARGS` in host `host`: (exit code, body,
    /// stderr).
    pub(crate) fn curl(&self, host: &str, args: &[&str]) -> (i32, String, String) {
        let out = self
            .topo
            .command(host, "curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        outcome(&out)
    }

    /// `http://ADDRESS:PORT/PATH`, IPv6 in brackets.
    pub(crate) fn url(address: &str, port: u16, path: &str) -> String {
        if address.contains(':') {
            format!("http://[{address}]:{port}{path}")
        } else {
            format!("http://{address}:{port}{path}")
        }
    }
}

/// The mesh addresses of the plan: c .1, c2 .2, x .3 (IPv4 /24 and IPv6 /64 on `sw0`).
pub(crate) fn mesh_addresses(n: u8) -> [String; 2] {
    [format!("198.19.77.{n}/24"), format!("fd00:77::{n}/64")]
}

/// Nodes c, c2 and x with static routes c - x and c2 - x (no relays), and the exit's and
/// the clients' `vpn:` sections appended to their configs; the exit app is started by
/// [`VpnMesh::start_exit`], the client by `skywire vpn up` in the tests.
pub(crate) struct VpnMesh {
    /// The exit app.
    pub(crate) exit_app: Option<Proc>,
    /// The node manager, when the routes are the manager's ([`VpnMesh::start_managed`]).
    pub(crate) manager: Option<Proc>,
    pub(crate) c: Node,
    pub(crate) c2: Node,
    pub(crate) x: Node,
}

impl VpnMesh {
    /// Configure and start the three nodes; the exit's pools are `pool4` and `pool6`
    /// (`none` for an IPv4-only exit), `exit_extra` is added to `vpn.exit` (YAML lines
    /// indented by four spaces), `client_extra` to each `vpn.client`.
    pub(crate) fn start(
        lab: &VpnLab,
        (pool4, pool6): (&str, &str),
        exit_extra: &str,
        client_extra: &str,
    ) -> Self {
        let mut c = Node::new(&lab.topo, C, "node-c");
        let mut c2 = Node::new(&lab.topo, C2, "node-c2");
        let mut x = Node::new(&lab.topo, X, "node-x");
        let host = |n: u8| [format!("198.19.77.{n}/32"), format!("fd00:77::{n}/128")];
        let prefixes = |n: u8| host(n);
        // c - x: x takes 100 from c, c takes 200 from x; c2 - x: 101 and 201.
        for (client, n, listen, (to_x, from_x)) in [
            (&c, 1u8, C_LISTEN, (100, 200)),
            (&c2, 2, C2_LISTEN, (101, 201)),
        ] {
            let xk = x.key();
            client.configure(|s| {
                s.listen = addr(listen);
                let a = mesh_addresses(n);
                s.tun = Some(tun("sw0", &[&a[0], &a[1]]));
                let p = prefixes(3);
                s.routes = vec![route(
                    "to-x",
                    xk,
                    &[&p[0], &p[1]],
                    X_LISTEN,
                    (to_x, from_x, to_x),
                    X_LISTEN,
                )];
            });
        }
        let (ck, c2k) = (c.key(), c2.key());
        x.configure(|s| {
            s.listen = addr(X_LISTEN);
            let a = mesh_addresses(3);
            s.tun = Some(tun("sw0", &[&a[0], &a[1]]));
            let (p1, p2) = (prefixes(1), prefixes(2));
            s.routes = vec![
                route(
                    "to-c",
                    ck,
                    &[&p1[0], &p1[1]],
                    C_LISTEN,
                    (200, 100, 200),
                    C_LISTEN,
                ),
                route(
                    "to-c2",
                    c2k,
                    &[&p2[0], &p2[1]],
                    C2_LISTEN,
                    (201, 101, 201),
                    C2_LISTEN,
                ),
            ];
        });
        Self::append_vpn(&x, &[&c, &c2], (pool4, pool6), exit_extra, client_extra);
        for node in [&mut x, &mut c, &mut c2] {
            node.start();
        }
        Self {
            exit_app: None,
            manager: None,
            c,
            c2,
            x,
        }
    }

    /// The same three nodes with no static routes: a node manager in host [`M`] (on the
    /// management network) knows the links c - x and c2 - x, and x accepts route ends from
    /// c and c2 with their mesh addresses. The client's stream to the exit asks the manager
    /// for its route; the nodes' manager connections cross the management network, marked
    /// like their UDP.
    pub(crate) fn start_managed(lab: &VpnLab, client_extra: &str) -> Self {
        let dir = lab.topo.dir().join("manager");
        fs::create_dir(&dir).unwrap();
        let manager_key: skywire_dataplane::crypto::PublicKey =
            keygen(&dir.join("manager.key")).0.trim().parse().unwrap();
        let mut c = Node::new(&lab.topo, C, "node-c");
        let mut c2 = Node::new(&lab.topo, C2, "node-c2");
        let mut x = Node::new(&lab.topo, X, "node-x");
        let mut manager = ManagerSection::new("manager.key");
        manager.listen = addr(MANAGER_ADDR);
        manager.heartbeat = Duration::from_millis(500);
        manager.links = vec![[c.key(), x.key()], [c2.key(), x.key()]];
        ConfigFile::manager(manager)
            .write(dir.join("manager.yaml"))
            .unwrap();
        let mesh_prefixes = vec![prefix(MESH4), prefix(MESH6)];
        let (ck, c2k) = (c.key(), c2.key());
        for (node, n, listen) in [(&c, 1u8, C_LISTEN), (&c2, 2, C2_LISTEN), (&x, 3, X_LISTEN)] {
            let accept = if n == 3 {
                [ck, c2k]
                    .into_iter()
                    .map(|peer| AcceptRule {
                        peer: Some(peer),
                        prefixes: mesh_prefixes.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            node.configure(|s| {
                s.listen = addr(listen);
                let a = mesh_addresses(n);
                s.tun = Some(tun("sw0", &[&a[0], &a[1]]));
                s.manager = Some(ManagerLink {
                    address: addr(MANAGER_ADDR),
                    key: manager_key,
                    endpoint: addr(listen),
                    accept,
                });
            });
        }
        Self::append_vpn(&x, &[&c, &c2], (POOL4, POOL6), "", client_extra);
        let manager = lab.topo.spawn(
            M,
            "manager",
            &skywire_binary(),
            &[
                "manager",
                "--config",
                dir.join("manager.yaml").to_str().unwrap(),
            ],
        );
        for node in [&mut x, &mut c, &mut c2] {
            node.start();
        }
        Self {
            exit_app: None,
            manager: Some(manager),
            c,
            c2,
            x,
        }
    }

    /// Append the exit's `vpn:` section to x's config and the clients' to theirs.
    fn append_vpn(
        x: &Node,
        clients: &[&Node],
        (pool4, pool6): (&str, &str),
        exit_extra: &str,
        client_extra: &str,
    ) {
        let append = |node: &Node, text: String| {
            let mut config = fs::read_to_string(node.config_path()).unwrap();
            config.push_str(&text);
            fs::write(node.config_path(), config).unwrap();
        };
        let dir = |node: &Node| node.config_path().parent().unwrap().to_owned();
        let keys: Vec<String> = clients.iter().map(|c| c.key().to_string()).collect();
        append(
            x,
            format!(
                "vpn:\n  exit:\n    clients: [{}]\n    pool:\n      ipv4: {pool4}\n      ipv6: {pool6}\n    allow_lan: [{SERVICES_NET6}]\n    dns: [{DNS4}, \"{DNS6}\"]\n    uplinks: [{X_WAN_IF}]\n    state: {}\n{exit_extra}",
                keys.join(", "),
                dir(x).join("vpn-exit.json").display()
            ),
        );
        let xk = x.key();
        for client in clients {
            append(
                client,
                format!(
                    "vpn:\n  client:\n    exit: {xk}\n    state: {}\n{client_extra}",
                    dir(client).join("vpn-client.json").display()
                ),
            );
        }
    }

    /// Start `skywire vpn exit` in x and wait until it serves.
    pub(crate) fn start_exit(&mut self, lab: &VpnLab) {
        let config = self.x.config_path().to_str().unwrap().to_owned();
        let proc = lab.topo.spawn(
            X,
            "vpn-exit",
            &skywire_binary(),
            &["vpn", "exit", "--config", &config],
        );
        let serving = wait_until(Duration::from_secs(10), || {
            proc.stderr().contains("serving leases")
        });
        assert!(serving.is_some(), "vpn exit:\n{}", proc.stderr());
        self.exit_app = Some(proc);
    }

    /// SIGTERM the exit app and wait for it (its teardown) to finish.
    pub(crate) fn stop_exit(&mut self) -> String {
        let mut proc = self.exit_app.take().expect("the exit runs");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &proc.pid().to_string()])
            .status();
        let status = proc.wait(Duration::from_secs(10));
        assert!(status.success(), "vpn exit: {status}\n{}", proc.stderr());
        proc.stderr()
    }

    /// `skywire vpn ARGS --config <node's config>` in the node's host: (code, stdout,
    /// stderr).
    pub(crate) fn vpn(lab: &VpnLab, node: &Node, args: &[&str]) -> (i32, String, String) {
        let out = lab
            .topo
            .command(node.host(), skywire_binary())
            .arg("vpn")
            .args(args)
            .arg("--config")
            .arg(node.config_path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        outcome(&out)
    }
}
