//! The VPN (issue 14) on its own chain: `skywire vpn client` in a client namespace, `skywire
//! vpn exit` one hop away, and an "internet" namespace behind the exit, against the same
//! path with no tunnel (the exit namespace forwarding with a plain nftables masquerade).
//!
//! ```text
//!   c (node 0)          link 1          x (node 1)          link 2          i (node 2)
//!   right1 198.18.1.1 ─────── left1 198.18.1.2   right2 198.18.2.1 ─────── left2 198.18.2.2
//!   sw0 198.19.77.1/24                sw0 198.19.77.3/24                lo 198.18.9.10/32
//!   vpn client                        vpn exit, uplink right2              198.18.9.20/32
//!                                     pool 198.19.128.0/24               iperf3 -s
//! ```
//!
//! - **`skywire-vpn`**: skywire nodes in c and x with a static route between them (ids
//!   100 c to x, 200 x to c), `vpn.exit` in x (its pool 198.19.128.0/24, no IPv6, c's key
//!   the only client, `right2` the uplink), `vpn.client` in c (DNS left alone). The client
//!   routes everything of c's but the node's own marked packets into the tunnel; the exit
//!   masquerades the pool out of `right2`. Measured against [`VPN_DEST`] on i's loopback:
//!   an address of the "internet", not of a subnet of the exit's own (which the exit
//!   refuses).
//! - **`no-tunnel-nat`**: the same namespaces, veths and iperf3 server, to [`PLAIN_DEST`]:
//!   c routes it via x (a route in `main` through `right1`, and a rule before the VPN
//!   client's, so the tunnel does not take it), x forwards (`forwarding` on `left1` and `right2`) and
//!   masquerades c's link out of `right2` (table `ip skybench-nat`).
//!
//! Both take turns, `reps` times each, per direction: `iperf3 -c DEST -t S -O 1 -J` (`-R`
//! for the reverse), one stream. Recorded, at 1 hop (x):
//!
//! | metric | how |
//! |---|---|
//! | `vpn_tcp_1_stream_forward`, `_reverse` | receiver goodput, Gbit/s (forward: c sends) |
//! | `vpn_cpu_seconds_per_gbit_forward`, `_reverse` | user+system CPU of both nodes and both VPN apps during the run, per Gbit received (VPN only: the baseline has no process, its cost is the kernel's) |
//! | `vpn_host_cpu_s_per_gbit_forward`, `_reverse` | busy time of every CPU (`/proc/stat`) during the run, per Gbit: iperf3 and the kernel included, for both paths; meaningful on an otherwise idle machine only |
//! | `vpn_ping_under_load_p50_ms_forward`, ... `_p99_ms_reverse` | ping c to the destination every 20 ms during the run |
//!
//! The target of the issue: one stream through one hop and NAT at least 4 Gbit/s, each
//! way. Everything lives in the chain's namespaces and processes: the apps' nftables
//! tables, routes and sysctls, and the baseline's, go with the namespaces when the chain is
//! torn down, on every path out (the apps get SIGTERM first and undo their own changes).

use core::time::Duration;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;

use super::chain::{self, Chain};
use super::tools::{TcpResult, cpu_seconds, installed, parse_tcp, ping, run_in};
use super::{BenchError, Run, Tunnel, median, percentile, route_id, wait_up};
use crate::config::{
    ConfigFile, DEFAULT_MTU, Ipv6Pool, NodeSection, VpnClientConfig, VpnConfig, VpnExitConfig,
};

/// The report's name for the VPN's figures.
pub(super) const NAME: &str = "skywire-vpn";
/// The report's name for the path without a tunnel.
pub(super) const PLAIN: &str = "no-tunnel-nat";
/// The destination through the VPN, on i's loopback.
pub(super) const VPN_DEST: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 10);
/// The destination of the path without a tunnel, on i's loopback.
pub(super) const PLAIN_DEST: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 20);
/// The issue's target, Gbit/s for one stream through one hop and NAT.
pub(super) const TARGET_GBPS: f64 = 4.0;
/// The Debian package of `nft`.
pub(super) const NFT_INSTALL: &str = "apt-get install -y nftables";
/// The nodes: c, x, i on a chain with one relay position (x).
const C: usize = 0;
const X: usize = 1;
const I: usize = 2;
/// The x-i link (its interface on x is the exit's uplink).
const UPLINK: &str = "right2";
/// c's link on x.
const X_DOWNLINK: &str = "left1";
/// x's link on c.
const C_LINK: &str = "right1";
/// The nodes' transport port.
const PORT: u16 = 6100;
/// How long a VPN app gets to be ready.
const READY_WAIT: Duration = Duration::from_secs(15);

/// One path under test.
struct Measured {
    /// Its report name, pids (for CPU) and destination.
    tunnel: Tunnel,
    /// Whether its processes' CPU is a figure (the baseline has none).
    process_cpu: bool,
}

/// Every VPN figure on a chain of its own; the chain is torn down before this returns.
pub(super) fn measure(run: &mut Run<'_>, reps: usize) -> Result<(), BenchError> {
    if !installed("nft") {
        let why = format!(
            "VPN: nft is not installed (the VPN apps and the baseline's masquerade need it); \
             install with: {NFT_INSTALL}"
        );
        run.progress(&format!("skipped: {why}"));
        run.report.skipped.push(why);
        return Ok(());
    }
    run.progress("VPN: client c - exit x - internet i: building namespaces, starting the VPN");
    let mut chain = Chain::build(1, std::sync::Arc::clone(&run.options.interrupted))?;
    let result = measure_on(run, &mut chain, reps);
    super::report_problems(run, chain.teardown());
    result
}

fn measure_on(run: &mut Run<'_>, chain: &mut Chain, reps: usize) -> Result<(), BenchError> {
    for key in chain::SYSCTLS {
        chain.set_sysctl(key, "4194304")?;
    }
    let program = run.options.program.clone();
    let paths = [
        Measured {
            tunnel: start_vpn(chain, &program)?,
            process_cpu: true,
        },
        Measured {
            tunnel: start_plain(chain)?,
            process_cpu: false,
        },
    ];
    chain.start_iperf3_server()?;
    for p in &paths {
        wait_up(chain, &p.tunnel)?;
    }
    thread::sleep(Duration::from_millis(300));
    for (direction, extra) in [("forward", &[][..]), ("reverse", &["-R"][..])] {
        run.progress(&format!(
            "VPN, one TCP stream {direction}: {reps} runs per path, taking turns"
        ));
        for _ in 0..reps {
            for p in &paths {
                once(run, chain, p, direction, extra)?;
            }
        }
    }
    Ok(())
}

/// One iperf3 run through `path` in `direction`, with CPU and ping under load.
fn once(
    run: &mut Run<'_>,
    chain: &mut Chain,
    path: &Measured,
    direction: &str,
    extra: &[&str],
) -> Result<(), BenchError> {
    chain.check_interrupted()?;
    let tunnel = &path.tunnel;
    let name = tunnel.name.as_str();
    let pinger = {
        let ns = chain.namespace(C);
        let far = tunnel.far.clone();
        let count = u32::try_from(run.options.seconds * 50).unwrap_or(u32::MAX);
        let interrupted = chain.interrupted();
        thread::spawn(move || ping(&ns, &far, count, Duration::from_millis(20), &interrupted))
    };
    let cpu0 = process_cpu(&tunnel.pids);
    let machine0 = machine_cpu();
    let mut args = vec!["-O", "1"];
    args.extend_from_slice(extra);
    let json = run.iperf(chain, tunnel, &args);
    let cpu = process_cpu(&tunnel.pids) - cpu0;
    let machine = machine_cpu().zip(machine0).map(|(b, a)| b - a);
    let pings = pinger.join().ok().transpose()?;
    chain.check_processes()?;
    let Some(TcpResult { gbps, bytes, .. }) = parse_tcp(&json?) else {
        run.progress(&format!("  {name}, {direction}: iperf3 gave no result"));
        return Ok(());
    };
    let report = &mut run.report;
    report.add(
        &format!("vpn_tcp_1_stream_{direction}"),
        "Gbit/s",
        name,
        1,
        gbps,
    );
    let mut line = format!("  {name}, {direction}: {gbps:.2} Gbit/s");
    let gbit = bytes * 8.0 / 1e9;
    if gbit > 0.0 {
        if path.process_cpu {
            report.add(
                &format!("vpn_cpu_seconds_per_gbit_{direction}"),
                "s/Gbit",
                name,
                1,
                cpu / gbit,
            );
            line.push_str(&format!(", {:.2} CPU s/Gbit (nodes, apps)", cpu / gbit));
        }
        if let Some(machine) = machine {
            report.add(
                &format!("vpn_host_cpu_s_per_gbit_{direction}"),
                "s/Gbit",
                name,
                1,
                machine / gbit,
            );
            line.push_str(&format!(", {:.2} CPU s/Gbit (all CPUs)", machine / gbit));
        }
    }
    if let Some(pings) = pings.filter(|p| !p.is_empty()) {
        let (p50, p99) = (median(&pings), percentile(&pings, 99.0));
        report.add(
            &format!("vpn_ping_under_load_p50_ms_{direction}"),
            "ms",
            name,
            1,
            p50,
        );
        report.add(
            &format!("vpn_ping_under_load_p99_ms_{direction}"),
            "ms",
            name,
            1,
            p99,
        );
        line.push_str(&format!(
            ", ping under load p50 {p50:.3} ms p99 {p99:.3} ms"
        ));
    }
    run.progress(&line);
    Ok(())
}

fn process_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

/// Busy time of all CPUs so far, in seconds: the `cpu` line of `/proc/stat` without idle
/// and iowait (guest time is counted in user time already).
fn machine_cpu() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some(busy / ticks)
}

/// The mesh address of a node on `sw0` (c .1, x .3, as in the VPN tests).
fn mesh(host: u8, len: u8) -> Option<Prefix> {
    Prefix::new(Ipv4Addr::new(198, 19, 77, host).into(), len)
}

fn prefix(address: Ipv4Addr, len: u8) -> Result<Prefix, BenchError> {
    Prefix::new(address.into(), len).ok_or_else(|| BenchError::Io {
        what: format!("{address}/{len} is not a prefix"),
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

/// The `node:` section of c (`client`) or x: `sw0` with its mesh address, the route to the
/// other one.
fn node_section(client: bool, peer: PublicKey) -> Result<NodeSection, BenchError> {
    let (me, other, key, first_hop, out_id, in_id) = if client {
        (1, 3, "vpn-c.key", Chain::link_address(1, false), 100, 200)
    } else {
        (3, 1, "vpn-x.key", Chain::link_address(1, true), 200, 100)
    };
    let first_hop = SocketAddr::from((first_hop, PORT));
    let mut node = NodeSection::new(key);
    node.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT));
    node.control_socket = PathBuf::from(if client { "vpn-c.sock" } else { "vpn-x.sock" });
    node.state_dir = PathBuf::from(if client { "vpn-c-state" } else { "vpn-x-state" });
    // Inside the chain's folder (removed with it), not the sibling folder derived from the
    // control socket.
    node.apps.socket = Some(PathBuf::from(if client {
        "apps-vpn-c/node.sock"
    } else {
        "apps-vpn-x/node.sock"
    }));
    node.tun = Some(TunSetup {
        name: "sw0".to_owned(),
        addresses: mesh(me, 24).into_iter().collect(),
        mtu: DEFAULT_MTU,
    });
    node.routes.push(RouteSetup {
        name: if client { "to-x" } else { "to-c" }.to_owned(),
        peer,
        prefixes: mesh(other, 32).into_iter().collect(),
        first_hop,
        out_id: route_id(out_id)?,
        in_id: route_id(in_id)?,
        peer_in_id: route_id(out_id)?,
        prev_hop: first_hop,
        persistent_keepalive: None,
    });
    Ok(node)
}

/// The nodes in c and x, `skywire vpn exit` in x and `skywire vpn client` in c, the
/// destination on i's loopback and x's route to it; returns once the client is connected.
fn start_vpn(chain: &mut Chain, program: &Path) -> Result<Tunnel, BenchError> {
    chain.ip_in(I, &["addr", "add", &format!("{VPN_DEST}/32"), "dev", "lo"])?;
    chain.ip_in(
        X,
        &[
            "route",
            "add",
            &format!("{VPN_DEST}/32"),
            "via",
            &Chain::link_address(2, false).to_string(),
            "dev",
            UPLINK,
        ],
    )?;
    let c_key = chain.write_key("vpn-c.key")?;
    let x_key = chain.write_key("vpn-x.key")?;
    let mut x_config = ConfigFile::node(node_section(false, c_key)?);
    x_config.vpn = Some(VpnConfig {
        exit: VpnExitConfig {
            clients: vec![c_key],
            pool_ipv4: prefix(Ipv4Addr::new(198, 19, 128, 0), 24)?,
            pool_ipv6: Ipv6Pool::None,
            uplinks: vec![UPLINK.to_owned()],
            state: chain.file("vpn-exit.json"),
            ..VpnExitConfig::default()
        },
        ..VpnConfig::default()
    });
    let mut c_config = ConfigFile::node(node_section(true, x_key)?);
    c_config.vpn = Some(VpnConfig {
        client: VpnClientConfig {
            exit: Some(x_key),
            dns: false,
            state: chain.file("vpn-client.json"),
            ..VpnClientConfig::default()
        },
        ..VpnConfig::default()
    });
    let x_path = path_text(&chain.write_config(
        "vpn-x.yaml",
        &x_config.with_comment("skywire bench: the VPN exit's node"),
    )?);
    let c_path = path_text(&chain.write_config(
        "vpn-c.yaml",
        &c_config.with_comment("skywire bench: the VPN client's node"),
    )?);
    let mut pids = Vec::new();
    for (node, what, config, log) in [
        (X, "skywire node x (VPN)", &x_path, "vpn-x.log"),
        (C, "skywire node c (VPN)", &c_path, "vpn-c.log"),
    ] {
        pids.push(chain.spawn(node, what, program, &["node", "--config", config], log)?);
    }
    // The apps need their node's control socket at once (they exit 69 without it): wait
    // for each node's start line, which it logs once the socket is bound.
    for (what, log) in [
        ("skywire node x (VPN)", "vpn-x.log"),
        ("skywire node c (VPN)", "vpn-c.log"),
    ] {
        wait_for_log(chain, what, log, "listening on")?;
    }
    pids.push(chain.spawn(
        X,
        "skywire vpn exit",
        program,
        &["vpn", "exit", "--config", &x_path],
        "vpn-exit.log",
    )?);
    wait_for_log(
        chain,
        "skywire vpn exit",
        "vpn-exit.log",
        "skywire vpn exit: serving leases",
    )?;
    pids.push(chain.spawn(
        C,
        "skywire vpn client",
        program,
        &["vpn", "client", "--config", &c_path],
        "vpn-client.log",
    )?);
    wait_for_log(
        chain,
        "skywire vpn client",
        "vpn-client.log",
        "skywire vpn client: connected through",
    )?;
    Ok(Tunnel {
        name: NAME.to_owned(),
        pids,
        far: VPN_DEST.to_string(),
        apps: None,
    })
}

/// The path without a tunnel: [`PLAIN_DEST`] on i, c's route and rule to it via x, x's
/// forwarding and masquerade.
fn start_plain(chain: &mut Chain) -> Result<Tunnel, BenchError> {
    let dest = format!("{PLAIN_DEST}/32");
    chain.ip_in(I, &["addr", "add", &dest, "dev", "lo"])?;
    let via_x = Chain::link_address(1, false).to_string();
    let via_i = Chain::link_address(2, false).to_string();
    // With the device named: the gateway's own lookup would otherwise follow the VPN
    // client's rule into the tunnel.
    chain.ip_in(C, &["route", "add", &dest, "via", &via_x, "dev", C_LINK])?;
    // Before the VPN client's rule (5190), which would take it into the tunnel.
    chain.ip_in(
        C,
        &[
            "rule", "add", "to", &dest, "lookup", "main", "priority", "100",
        ],
    )?;
    chain.ip_in(X, &["route", "add", &dest, "via", &via_i, "dev", UPLINK])?;
    let x_ns = chain.namespace(X);
    for interface in [X_DOWNLINK, UPLINK] {
        run_in(
            &x_ns,
            "sysctl",
            &["-qw", &format!("net.ipv4.conf.{interface}.forwarding=1")],
            &chain.interrupted(),
        )?;
    }
    let rules = chain.file("no-tunnel-nat.nft");
    let c_link = Chain::link_address(1, true);
    let text = format!(
        "# skywire bench: the path without a tunnel, c's link masqueraded out of x's uplink\n\
         table ip skybench-nat {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{UPLINK}\" ip saddr {c_link}/32 masquerade\n\
         \t}}\n\
         }}\n"
    );
    std::fs::write(&rules, text).map_err(|source| BenchError::Io {
        what: format!("cannot write {}", rules.display()),
        source,
    })?;
    run_in(
        &x_ns,
        "nft",
        &["-f", &path_text(&rules)],
        &chain.interrupted(),
    )?;
    Ok(Tunnel {
        name: PLAIN.to_owned(),
        pids: Vec::new(),
        far: PLAIN_DEST.to_string(),
        apps: None,
    })
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Wait until the log `log` of the process `what` holds `text`.
fn wait_for_log(chain: &mut Chain, what: &str, log: &str, text: &str) -> Result<(), BenchError> {
    let path = chain.file(log);
    let deadline = Instant::now() + READY_WAIT;
    while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains(text)) {
        chain.check_interrupted()?;
        chain.check_processes()?;
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines
                .get(lines.len().saturating_sub(20)..)
                .unwrap_or_default();
            return Err(BenchError::NotReady {
                what: what.to_owned(),
                waited: READY_WAIT,
                log: tail
                    .iter()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_cpu_counts_up() {
        let a = machine_cpu().unwrap();
        assert!(a >= 0.0);
        assert!(machine_cpu().unwrap() >= a);
    }

    #[test]
    fn addresses_are_of_the_benchmark_range() {
        let bench = Prefix::new(Ipv4Addr::new(198, 18, 0, 0).into(), 15).unwrap();
        for a in [VPN_DEST, PLAIN_DEST, Ipv4Addr::new(198, 19, 128, 0)] {
            assert!(bench.contains(a.into()), "{a}");
        }
        assert!(bench.contains(mesh(1, 24).unwrap().network()));
    }
}
