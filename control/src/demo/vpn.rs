//! `skywire demo vpn`: a machine's traffic through an exit node, its leak capture, and the
//! kill switch holding after `kill -9` (docs/design/vpn-plan.md §2.4). Root only.
//!
//! Three namespaces on the namespace lab ([`crate::lab`]); every address is from
//! 198.18.0.0/15 and nothing has a default route:
//!
//! ```text
//!  c  c-wan 198.18.1.2/24 ── r-c 198.18.1.1  r (router)  r-x 198.18.4.1 ── x-wan 198.18.4.2/24  x
//!     TUN sw0 198.19.77.1/24                 lo 198.18.9.10: HTTP, `/ip` answers       TUN sw0 198.19.77.3/24
//!     198.18.0.0/15 via r, rp_filter=1           the caller's address                 198.18.0.0/15 via r
//! ```
//!
//! Nodes c and x (the real `skywire node`) have static routes to each other; their configs
//! are written with the typed writer, `node:` and `vpn:` (x serves c from 198.19.128.0/24,
//! IPv4 only; c leaves DNS alone). The demo's HTTP server is a thread of its own with its
//! listening socket in r. Then, each step measured and checked:
//!
//! 1. `/ip` from c without the VPN: c's own address;
//! 2. `skywire vpn exit` in x, `skywire vpn up --lockdown` in c: `/ip` shows the exit's
//!    address, with a marker in every request;
//! 3. a leak watch ([`super::leak`]) on c-wan around that traffic: only the mesh's UDP to
//!    the first hop, the marker never in clear (while a watch on x-wan, the positive
//!    control, sees it);
//! 4. `kill -9` of c's node: requests fail and the watch stays clean (the kill switch);
//!    the node restarted, the client reconnects, with one nftables table and one rule;
//! 5. `vpn down --unlock` and the exit stopped: c's and x's rules, routes of every table
//!    and nftables ruleset are as before.
//!
//! A failed check is recorded in [`VpnDemoSummary::failed`] and the demo goes on where it
//! can. The lab removes the namespaces (with the nodes' TUN devices, the client's and the
//! exit's tables and rules), the processes (the client, detached by `vpn up`, included)
//! and the folder holding keys, configs, logs and the apps' state, also on an error or
//! Ctrl-C.

use core::time::Duration;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use serde::Deserialize;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::wire::RouteId;

use super::DemoError;
use super::leak::{LeakReport, LeakRules, LeakWatch};
use super::topology::route_id;
use crate::apps::vpn::nft::CLIENT_TABLE;
use crate::apps::vpn::state::{ClientState, Phase};
use crate::config::{ConfigFile, DEFAULT_MTU, DEFAULT_VPN_TABLE, Ipv6Pool, NodeSection, VpnConfig};
use crate::lab::{Lab, LabOptions, LinkEnd, ProcessId, Signal, Spawn, Stopped, in_namespace};

/// The client's host.
const C: &str = "c";
/// The router, which also holds the web server.
const R: &str = "r";
/// The exit's host.
const X: &str = "x";
/// c's physical link, where the leak watch runs.
const C_WAN: &str = "c-wan";
/// x's uplink: the clients' internet.
const X_WAN: &str = "x-wan";
const C_WAN4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const R_C4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const X_WAN4: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 2);
const R_X4: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 1);
/// The web server, on r's loopback.
const WEB: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 9, 10), 80);
/// The nodes' transport port.
const PORT: u16 = 6000;
/// The TUN device of both nodes, and their mesh addresses (/24).
const TUN: &str = "sw0";
const C_MESH: Ipv4Addr = Ipv4Addr::new(198, 19, 77, 1);
const X_MESH: Ipv4Addr = Ipv4Addr::new(198, 19, 77, 3);
/// The exit's pool.
const POOL4: Ipv4Addr = Ipv4Addr::new(198, 19, 128, 0);
/// Route ids: c sends 100 (x takes it), x sends 200 (c takes it).
const C_TO_X: RouteId = route_id(100);
const X_TO_C: RouteId = route_id(200);

/// How long a node gets to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the client may take to reconnect after its node came back (the plan's 10 s).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetches through the exit in step 3.
const FETCHES: usize = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct VpnDemoOptions {
    /// The `skywire` binary (nodes, `vpn exit`, `vpn up`).
    pub program: PathBuf,
    /// Raised (by a signal handler) to stop: the demo cleans up and returns
    /// [`DemoError::Interrupted`].
    pub interrupted: Arc<AtomicBool>,
}

/// The checks that failed, and what the leak watch saw.
#[derive(Debug, Default)]
pub struct VpnDemoSummary {
    /// Every namespace of this run started with this; none is left.
    pub namespace_prefix: String,
    /// One line per failed check.
    pub failed: Vec<String>,
    /// c-wan while traffic went through the exit, then while c's node was dead and came
    /// back.
    pub watches: Vec<LeakReport>,
}

impl VpnDemoSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// Record a check; returns `ok`.
    fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failed.push(failure());
        }
        ok
    }
}

/// Run the demo, writing the report to `out` as it goes. Cleans up before it returns,
/// whatever the outcome.
pub fn run(out: &mut dyn Write, options: &VpnDemoOptions) -> Result<VpnDemoSummary, DemoError> {
    if !super::running_as_root() {
        return Err(DemoError::NotRoot);
    }
    let mut lab_options = LabOptions::new("skyvpn");
    lab_options.interrupted = Arc::clone(&options.interrupted);
    let mut demo = Demo {
        lab: Lab::new(lab_options)?,
        program: options.program.clone(),
        c_node: None,
        x_node: None,
        exit: None,
        web: None,
    };
    let mut summary = VpnDemoSummary {
        namespace_prefix: demo.lab.prefix().to_owned(),
        ..VpnDemoSummary::default()
    };
    let outcome = demo.scenario(out, &mut summary).map_err(|e| {
        if options.interrupted.load(Ordering::Relaxed) {
            DemoError::Interrupted
        } else {
            e
        }
    });
    if outcome.is_err() || !summary.passed() {
        // What the apps and the nodes said, for whoever reads the failure.
        demo.show_logs(out);
    }
    let cleanup = demo.cleanup(out, &mut summary);
    outcome?;
    cleanup?;
    if summary.passed() {
        writeln!(out, "\nall checks passed")?;
    } else {
        let n = summary.failed.len();
        writeln!(out, "\n{n} check{} failed:", if n == 1 { "" } else { "s" })?;
        for failure in &summary.failed {
            writeln!(out, "  - {failure}")?;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// The lab and what runs in it.
struct Demo {
    lab: Lab,
    program: PathBuf,
    c_node: Option<ProcessId>,
    x_node: Option<ProcessId>,
    exit: Option<ProcessId>,
    web: Option<WebServer>,
}

/// The parts of `skywire vpn status --json` the demo reads.
#[derive(Debug, Deserialize)]
struct VpnStatus {
    running: bool,
    state: Option<ClientState>,
}

impl Demo {
    fn scenario(
        &mut self,
        out: &mut dyn Write,
        summary: &mut VpnDemoSummary,
    ) -> Result<(), DemoError> {
        writeln!(
            out,
            "skywire demo vpn: a client's traffic through an exit node, across three network \
             namespaces\n"
        )?;
        self.build()?;
        writeln!(out, "topology (198.18.0.0/15, no default routes):")?;
        writeln!(
            out,
            "  c  {:<22} c-wan {C_WAN4}/24, 198.18.0.0/15 via {R_C4}; node TUN {TUN} {C_MESH}/24",
            self.lab.namespace(C)
        )?;
        writeln!(
            out,
            "  r  {:<22} router; HTTP on {WEB} (`/ip` answers the caller's address)",
            self.lab.namespace(R)
        )?;
        writeln!(
            out,
            "  x  {:<22} x-wan {X_WAN4}/24, 198.18.0.0/15 via {R_X4}; node TUN {TUN} {X_MESH}/24",
            self.lab.namespace(X)
        )?;
        let (c_key, x_key) = self.configure()?;
        let started = Instant::now();
        self.c_node = Some(self.start_node(C)?);
        self.x_node = Some(self.start_node(X)?);
        writeln!(
            out,
            "  nodes c {} and x {} (static routes to each other) serving after {:.2} s",
            short(&c_key),
            short(&x_key),
            started.elapsed().as_secs_f64()
        )?;

        // 1. Without the VPN.
        writeln!(out, "\n1. GET http://{WEB}/ip from c, no VPN")?;
        let marker = marker();
        match self.fetch(&marker) {
            Ok((body, took)) => {
                writeln!(out, "   answer {body:?} in {}", millis(took))?;
                summary.check(body == C_WAN4.to_string(), || {
                    format!("without the VPN the server saw {body:?}, not c's {C_WAN4}")
                });
            }
            Err(e) => summary
                .failed
                .push(format!("GET /ip from c without the VPN: {e}")),
        }
        let before_c = self.snapshot(C)?;
        let before_x = self.snapshot(X)?;

        // 2. Up, through the exit.
        writeln!(
            out,
            "\n2. `skywire vpn exit` in x, `skywire vpn up --lockdown` in c"
        )?;
        self.start_exit(out)?;
        let mut watch = self.watch(&marker)?;
        let control = LeakWatch::start(
            &self.lab.namespace(X),
            X_WAN,
            LeakRules {
                udp: Vec::new(),
                marker: marker.as_bytes().to_vec(),
            },
        )
        .map_err(io_error("cannot start the capture on x-wan"))?;
        let started = Instant::now();
        let up = self.vpn(C, &["up", "--lockdown"])?;
        let took = started.elapsed();
        let said = String::from_utf8_lossy(&up.stdout).trim().to_owned();
        writeln!(out, "   vpn up ({}): {said}", millis(took))?;
        if !summary.check(up.status.success(), || {
            format!(
                "vpn up --lockdown: {}: {said}{}",
                up.status,
                String::from_utf8_lossy(&up.stderr)
            )
        }) {
            return Err(DemoError::Io {
                what: "the VPN did not come up".into(),
                source: io::ErrorKind::Other.into(),
            });
        }
        self.show_status(out)?;
        let mut times = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..FETCHES {
            self.lab.check_interrupted()?;
            match self.fetch(&marker) {
                Ok((body, took)) => {
                    times.push(took);
                    if !answers.contains(&body) {
                        answers.push(body);
                    }
                }
                Err(e) => answers.push(format!("error: {e}")),
            }
        }
        times.sort();
        writeln!(
            out,
            "   GET /ip from c, {FETCHES} times with the marker in a header: answers {answers:?}; \
             {} of {FETCHES} in a median {}",
            times.len(),
            times
                .get(times.len() / 2)
                .map_or("-".into(), |t| millis(*t))
        )?;
        summary.check(
            times.len() == FETCHES && answers == [X_WAN4.to_string()],
            || format!("through the VPN the server saw {answers:?}, not only x's {X_WAN4}"),
        );

        // 3. What crossed c's physical link meanwhile.
        let report = watch.finish().map_err(io_error("the capture on c-wan"))?;
        let control = control.finish().map_err(io_error("the capture on x-wan"))?;
        writeln!(
            out,
            "\n3. the capture on c-wan during steps 2 and 3 (allowed: UDP {C_WAN4}:{PORT} <-> \
             {X_WAN4}:{PORT}, ARP, neighbour discovery)"
        )?;
        self.judge(out, summary, report, "while the VPN carried the traffic")?;
        writeln!(
            out,
            "   positive control: the capture on x-wan found the marker in {} frames (the exit \
             sends the requests on in clear)",
            control.marker_hits
        )?;
        summary.check(control.marker_hits > 0, || {
            "the marker never appeared on x-wan: the watch would not have seen it".into()
        });

        // 4. The kill switch.
        writeln!(out, "\n4. kill -9 of c's node, with the kill switch on")?;
        watch = self.watch(&marker)?;
        if let Some(process) = self.c_node.and_then(|id| self.lab.process_mut(id)) {
            let pid = process.pid();
            let stopped = process.kill();
            writeln!(out, "   node c (pid {pid}): {stopped:?}")?;
        }
        let noticed = self.wait_phase(|p| p != Phase::Connected, Duration::from_secs(5));
        writeln!(
            out,
            "   the client: {}",
            match &noticed {
                Some((phase, t)) => format!("{phase} after {}", millis(*t)),
                None => "still says connected".into(),
            }
        )?;
        for _ in 0..3 {
            let started = Instant::now();
            match self.fetch(&marker) {
                Ok((body, _)) => {
                    writeln!(out, "   GET /ip: answered {body:?}")?;
                    summary
                        .failed
                        .push(format!("with c's node dead a request got out: {body:?}"));
                }
                // The TUN device went with the node, and its routes with it: the lookup
                // ends in the client's table at its blackhole (EINVAL), and the kill
                // switch's chains would drop whatever took another way.
                Err(e) => writeln!(
                    out,
                    "   GET /ip: fails after {} ({e})",
                    millis(started.elapsed())
                )?,
            }
        }
        let started = Instant::now();
        self.c_node = Some(self.start_node(C)?);
        writeln!(
            out,
            "   node c restarted, serving after {}",
            millis(started.elapsed())
        )?;
        match self.wait_phase(|p| p == Phase::Connected, RECONNECT_TIMEOUT) {
            Some((_, t)) => writeln!(
                out,
                "   `vpn status --json`: connected {} after the restart",
                millis(t)
            )?,
            None => {
                writeln!(
                    out,
                    "   `vpn status --json`: not connected {} s after the restart",
                    RECONNECT_TIMEOUT.as_secs()
                )?;
                summary.failed.push(format!(
                    "the client did not reconnect within {} s of the node's restart",
                    RECONNECT_TIMEOUT.as_secs()
                ));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = String::new();
        let mut works = false;
        while Instant::now() < deadline && !works {
            match self.fetch(&marker) {
                Ok((body, took)) => {
                    works = body == X_WAN4.to_string();
                    last = format!("{body:?} in {}", millis(took));
                }
                Err(e) => last = format!("error: {e}"),
            }
        }
        writeln!(out, "   GET /ip again: {last}")?;
        summary.check(works, || {
            format!("after the reconnect GET /ip gives {last}, not x's {X_WAN4}")
        });
        // Its two tables (inet and arp) once each.
        let listing = self.output(C, "nft", &["list", "tables"])?;
        let count = |family: &str| {
            let want = format!("table {family} {CLIENT_TABLE}");
            listing.lines().filter(|l| l.trim() == want).count()
        };
        let (inet, arp) = (count("inet"), count("arp"));
        let table = format!("lookup {DEFAULT_VPN_TABLE}");
        let rules = self.count_lines(C, "ip", &["-4", "rule", "show"], &table)?;
        let rules6 = self.count_lines(C, "ip", &["-6", "rule", "show"], &table)?;
        writeln!(
            out,
            "   nftables tables `{CLIENT_TABLE}`: {inet} inet, {arp} arp; rules to table {}: \
             {rules} (IPv4), {rules6} (IPv6)",
            table.trim_start_matches("lookup ")
        )?;
        summary.check(inet == 1 && arp == 1 && rules == 1 && rules6 == 1, || {
            format!(
                "after the reconnect: {inet} inet and {arp} arp client tables, {rules} and \
                 {rules6} rules (one of each expected)"
            )
        });
        let report = watch.finish().map_err(io_error("the capture on c-wan"))?;
        self.judge(
            out,
            summary,
            report,
            "while c's node was dead and came back",
        )?;

        // 5. Down.
        writeln!(out, "\n5. `vpn down --unlock` in c, the exit stopped in x")?;
        let down = self.vpn(C, &["down", "--unlock"])?;
        let said = String::from_utf8_lossy(&down.stdout).trim().to_owned();
        writeln!(out, "   vpn down --unlock: {said}")?;
        summary.check(down.status.success(), || {
            format!(
                "vpn down --unlock: {}: {}",
                down.status,
                String::from_utf8_lossy(&down.stderr)
            )
        });
        match self.stop_exit() {
            Ok(status) => {
                writeln!(out, "   vpn exit: stopped on SIGTERM ({status})")?;
                summary.check(status.success(), || {
                    format!("the exit app ended with {status} on SIGTERM")
                });
            }
            Err(problem) => {
                writeln!(out, "   vpn exit: {problem}")?;
                summary.failed.push(format!("the exit app: {problem}"));
            }
        }
        for (host, before) in [(C, before_c), (X, before_x)] {
            let after = self.snapshot(host)?;
            if after == before {
                writeln!(
                    out,
                    "   {host}: `ip rule`, `ip route show table all` and `nft list ruleset` as \
                     before ({} lines)",
                    after.lines().count()
                )?;
            } else {
                writeln!(out, "   {host}: NOT as before:")?;
                for line in diff(&before, &after) {
                    writeln!(out, "     {line}")?;
                }
                summary
                    .failed
                    .push(format!("{host}'s rules, routes or nftables changed"));
            }
        }
        let state = self.lab.file("vpn-client.json");
        summary.check(!state.exists(), || {
            format!("{} is still there after vpn down", state.display())
        });
        Ok(())
    }

    /// The namespaces, links, addresses, routes and sysctls of the module doc.
    fn build(&mut self) -> Result<(), DemoError> {
        for host in [C, R, X] {
            self.lab.add_host(host)?;
        }
        self.lab.link(
            &LinkEnd::new(C, C_WAN).address(C_WAN4, 24)?,
            &LinkEnd::new(R, "r-c").address(R_C4, 24)?,
        )?;
        self.lab.link(
            &LinkEnd::new(X, X_WAN).address(X_WAN4, 24)?,
            &LinkEnd::new(R, "r-x").address(R_X4, 24)?,
        )?;
        self.lab.ip_in(
            R,
            &["addr", "add", &format!("{}/32", WEB.ip()), "dev", "lo"],
        )?;
        for (host, via) in [(C, R_C4), (X, R_X4)] {
            self.lab.ip_in(
                host,
                &["route", "add", "198.18.0.0/15", "via", &via.to_string()],
            )?;
        }
        sysctl(&self.lab, R, "net/ipv4/ip_forward", "1")?;
        // The plan's R1: the client checks the source of what it receives.
        sysctl(&self.lab, C, "net/ipv4/conf/all/rp_filter", "1")?;
        sysctl(
            &self.lab,
            C,
            &format!("net/ipv4/conf/{C_WAN}/rp_filter"),
            "1",
        )?;
        let listener = in_namespace(&self.lab.namespace(R), || TcpListener::bind(WEB))
            .and_then(|bound| bound)
            .map_err(io_error("cannot start the web server in r"))?;
        self.web = Some(WebServer::start(listener)?);
        Ok(())
    }

    /// Keys and configs: `node:` with the static route, `vpn:` for both apps. Returns the
    /// public keys of c and x.
    fn configure(&self) -> Result<(PublicKey, PublicKey), DemoError> {
        let c_key = self.lab.write_key("c.key")?;
        let x_key = self.lab.write_key("x.key")?;
        let mut vpn = VpnConfig::default();
        vpn.exit.clients = vec![c_key];
        vpn.exit.pool_ipv4 = prefix(POOL4, 24);
        vpn.exit.pool_ipv6 = Ipv6Pool::None;
        vpn.exit.uplinks = vec![X_WAN.to_owned()];
        vpn.exit.state = self.lab.file("vpn-exit.json");
        vpn.client.exit = Some(x_key);
        // No DNS servers on this internet: the client leaves resolv.conf alone.
        vpn.client.dns = false;
        vpn.client.state = self.lab.file("vpn-client.json");
        for (host, wan, mesh, route) in [
            (
                C,
                C_WAN4,
                C_MESH,
                mesh_route("to-x", x_key, X_MESH, X_WAN4, (C_TO_X, X_TO_C, C_TO_X)),
            ),
            (
                X,
                X_WAN4,
                X_MESH,
                mesh_route("to-c", c_key, C_MESH, C_WAN4, (X_TO_C, C_TO_X, X_TO_C)),
            ),
        ] {
            let mut node = NodeSection::new(format!("{host}.key"));
            node.listen = SocketAddr::from((wan, PORT));
            node.control_socket = PathBuf::from(format!("{host}.sock"));
            node.state_dir = PathBuf::from(format!("{host}-state"));
            // In the lab's folder too (derived, it would be a folder beside it), so it goes
            // with the folder.
            node.apps.socket = Some(self.lab.file(format!("{host}-apps/node.sock")));
            node.tun = Some(TunSetup {
                name: TUN.to_owned(),
                addresses: vec![prefix(mesh, 24)],
                mtu: DEFAULT_MTU,
            });
            node.routes = vec![route];
            let mut file = ConfigFile::node(node).with_comment(format!(
                "Written by `skywire demo vpn` for node {host}; removed when the demo ends."
            ));
            file.vpn = Some(vpn.clone());
            self.lab.write_config(format!("{host}.yaml"), &file)?;
        }
        Ok((c_key, x_key))
    }

    /// Start `skywire node` in `host` (its log appended to over restarts) and wait until
    /// it serves.
    fn start_node(&mut self, host: &str) -> Result<ProcessId, DemoError> {
        let spawn = Spawn::new(format!("node {host}"), &self.program)
            .arg("node")
            .arg("--config")
            .arg(self.lab.file(format!("{host}.yaml")))
            .append_log(self.lab.file(format!("{host}.log")));
        let id = self.lab.start(host, spawn)?;
        let socket = self.lab.file(format!("{host}.sock"));
        self.lab.wait_until_serving(id, &socket, START_TIMEOUT)?;
        Ok(id)
    }

    /// Start `skywire vpn exit` in x and wait until it serves leases.
    fn start_exit(&mut self, out: &mut dyn Write) -> Result<(), DemoError> {
        let log = self.lab.file("vpn-exit.log");
        let spawn = Spawn::new("vpn exit", &self.program)
            .args(["vpn", "exit", "--config"])
            .arg(self.lab.file("x.yaml"))
            .log(&log);
        let id = self.lab.start(X, spawn)?;
        self.exit = Some(id);
        let started = Instant::now();
        loop {
            self.lab.check_interrupted()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("serving leases")) {
                writeln!(
                    out,
                    "   {} ({})",
                    crate::logging::message(line).trim_start_matches("skywire "),
                    millis(started.elapsed())
                )?;
                return Ok(());
            }
            self.lab.check_processes()?;
            if started.elapsed() > START_TIMEOUT {
                return Err(DemoError::Io {
                    what: format!("the exit app did not serve within 15 s:\n{text}"),
                    source: io::ErrorKind::TimedOut.into(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM the exit app and wait for its teardown: how it ended, or what went wrong.
    fn stop_exit(&mut self) -> Result<ExitStatus, String> {
        let Some(process) = self.exit.take().and_then(|id| self.lab.process_mut(id)) else {
            return Err("was not running".into());
        };
        process.signal(Signal::TERM).map_err(|e| e.to_string())?;
        process
            .wait_timeout(Duration::from_secs(10))
            .ok_or_else(|| "still running 10 s after SIGTERM".into())
    }

    /// `skywire vpn ARGS --config <host's config>` in `host`.
    fn vpn(&self, host: &str, args: &[&str]) -> Result<Output, DemoError> {
        self.lab.check_interrupted()?;
        self.vpn_even_interrupted(host, args)
    }

    /// [`Self::vpn`], also after Ctrl-C (for the cleanup).
    fn vpn_even_interrupted(&self, host: &str, args: &[&str]) -> Result<Output, DemoError> {
        self.lab
            .command(host, &self.program)
            .arg("vpn")
            .args(args)
            .arg("--config")
            .arg(self.lab.file(format!("{host}.yaml")))
            .stdin(Stdio::null())
            .output()
            .map_err(io_error("cannot run skywire vpn"))
    }

    /// `skywire vpn status --json` in c, typed.
    fn vpn_status(&self) -> Option<VpnStatus> {
        let out = self.vpn(C, &["status", "--json"]).ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Print `skywire vpn status` of c, indented.
    fn show_status(&self, out: &mut dyn Write) -> Result<(), DemoError> {
        let status = self.vpn(C, &["status"])?;
        for line in String::from_utf8_lossy(&status.stdout).lines() {
            writeln!(out, "   | {line}")?;
        }
        Ok(())
    }

    /// Poll c's `vpn status --json` until the client runs in a phase `want` accepts, at
    /// most `timeout`: the phase and when.
    fn wait_phase(
        &self,
        want: impl Fn(Phase) -> bool,
        timeout: Duration,
    ) -> Option<(Phase, Duration)> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(VpnStatus {
                running: true,
                state: Some(state),
            }) = self.vpn_status()
                && want(state.phase)
            {
                return Some((state.phase, started.elapsed()));
            }
            if self.lab.check_interrupted().is_err() {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// GET /ip from c, with `marker` in a header: the body and how long it took.
    fn fetch(&self, marker: &str) -> io::Result<(String, Duration)> {
        let started = Instant::now();
        let conn = in_namespace(&self.lab.namespace(C), || {
            TcpStream::connect_timeout(&SocketAddr::V4(WEB), FETCH_TIMEOUT)
        })??;
        conn.set_read_timeout(Some(FETCH_TIMEOUT))?;
        let mut writer = &conn;
        write!(
            writer,
            "GET /ip HTTP/1.0\r\nHost: {WEB}\r\nX-Marker: {marker}\r\n\r\n"
        )?;
        let mut text = String::new();
        (&conn).take(64 * 1024).read_to_string(&mut text)?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_owned())
            .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")))?;
        Ok((body, started.elapsed()))
    }

    /// A leak watch on c-wan: the mesh's UDP between c and x only.
    fn watch(&self, marker: &str) -> Result<LeakWatch, DemoError> {
        LeakWatch::start(
            &self.lab.namespace(C),
            C_WAN,
            LeakRules {
                udp: vec![(
                    SocketAddr::from((C_WAN4, PORT)),
                    SocketAddr::from((X_WAN4, PORT)),
                )],
                marker: marker.as_bytes().to_vec(),
            },
        )
        .map_err(io_error("cannot start the capture on c-wan"))
    }

    /// Print a watch's report and record a failure unless it is clean and saw the mesh.
    fn judge(
        &self,
        out: &mut dyn Write,
        summary: &mut VpnDemoSummary,
        report: LeakReport,
        when: &str,
    ) -> Result<(), DemoError> {
        writeln!(out, "   c-wan {when}: {report}")?;
        if report.clean() && report.allowed > 0 {
            writeln!(
                out,
                "   all of it mesh UDP to the first hop (or ARP and neighbour discovery); the \
                 marker never crossed in clear"
            )?;
        } else {
            summary
                .failed
                .push(format!("the capture on c-wan {when}: {report}"));
        }
        summary.watches.push(report);
        Ok(())
    }

    /// What the VPN may change in `host`: rules, routes of every table, nftables.
    fn snapshot(&self, host: &str) -> Result<String, DemoError> {
        let mut text = String::new();
        for family in ["-4", "-6"] {
            text.push_str(&self.lab.ip_in(host, &[family, "rule", "show"])?);
            let routes = self
                .lab
                .ip_in(host, &[family, "route", "show", "table", "all"])?;
            // The kernel's own link-local and multicast entries of the TUN device come and
            // go with traffic; compare what a program adds.
            for line in routes
                .lines()
                .filter(|l| !l.contains("fe80::") && !l.starts_with("multicast"))
            {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push_str(&self.output(host, "nft", &["list", "ruleset"])?);
        Ok(text)
    }

    /// `program ARGS` in `host`: its standard output.
    fn output(&self, host: &str, program: &str, args: &[&str]) -> Result<String, DemoError> {
        self.lab.check_interrupted()?;
        let out = self
            .lab
            .command(host, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_error(&format!("cannot run {program}")))?;
        if !out.status.success() {
            return Err(DemoError::Io {
                what: format!(
                    "`{program} {}` in {host}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ),
                source: io::ErrorKind::Other.into(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Lines of `program ARGS`'s output in `host` holding `needle`.
    fn count_lines(
        &self,
        host: &str,
        program: &str,
        args: &[&str],
        needle: &str,
    ) -> Result<usize, DemoError> {
        Ok(self
            .output(host, program, args)?
            .lines()
            .filter(|l| l.contains(needle))
            .count())
    }

    /// The client's, the exit's and the nodes' logs, after a failure.
    fn show_logs(&self, out: &mut dyn Write) {
        for name in ["vpn-client.log", "vpn-exit.log", "c.log", "x.log"] {
            let text = std::fs::read_to_string(self.lab.file(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(out, "\nthe end of {name}:");
            for line in lines.iter().skip(lines.len().saturating_sub(15)) {
                let _ = writeln!(out, "  {line}");
            }
        }
    }

    /// Stop the web server, then the lab: processes, namespaces, folder; report it.
    fn cleanup(
        &mut self,
        out: &mut dyn Write,
        summary: &mut VpnDemoSummary,
    ) -> Result<(), DemoError> {
        writeln!(out, "\ncleanup:")?;
        // A client the scenario did not take down (it failed or was interrupted before
        // step 5) is stopped the way a user would, rather than killed with the namespace.
        if self.lab.file("vpn-client.json").exists() {
            match self.vpn_even_interrupted(C, &["down", "--unlock"]) {
                Ok(down) => writeln!(
                    out,
                    "  vpn down --unlock: {}{}",
                    String::from_utf8_lossy(&down.stdout).trim(),
                    String::from_utf8_lossy(&down.stderr).trim()
                )?,
                Err(e) => writeln!(out, "  vpn down --unlock: {e}")?,
            }
        }
        // Its socket holds r's namespace until it is closed.
        drop(self.web.take());
        let teardown = self.lab.teardown();
        let stopped: Vec<String> = teardown
            .processes
            .iter()
            .map(|p| {
                let how = match p.stopped {
                    Stopped::OnTerm(status) => format!("stopped on SIGTERM ({status})"),
                    Stopped::Before(_) => "had ended".to_owned(),
                    Stopped::Killed => "killed".to_owned(),
                    Stopped::Lost => "could not be stopped".to_owned(),
                };
                format!("{} {how}", p.what)
            })
            .collect();
        writeln!(out, "  processes: {}", stopped.join("; "))?;
        writeln!(
            out,
            "  namespaces deleted (with the TUN devices, tables, rules and nftables in them): {}",
            teardown.namespaces.join(", ")
        )?;
        if let Some(dir) = &teardown.removed_dir {
            writeln!(
                out,
                "  removed {} (keys, configs, logs, the client's and the exit's state)",
                dir.display()
            )?;
        }
        let mut problems: Vec<String> = teardown.problems.iter().map(ToString::to_string).collect();
        for (ns, pids) in &teardown.killed_leftovers {
            problems.push(format!(
                "processes {pids:?} were still running in {ns} (the VPN client?); killed"
            ));
        }
        for problem in &problems {
            writeln!(out, "  PROBLEM: {problem}")?;
            summary.failed.push(format!("cleanup: {problem}"));
        }
        if problems.is_empty() {
            writeln!(out, "  nothing left behind")?;
        }
        Ok(())
    }
}

/// Write `value` to the sysctl `name` (`net/ipv4/ip_forward`) of `host`'s namespace.
fn sysctl(lab: &Lab, host: &str, name: &str, value: &str) -> Result<(), DemoError> {
    let path = Path::new("/proc/sys").join(name);
    // /proc/sys/net is the namespace of the thread that opens it.
    in_namespace(&lab.namespace(host), || std::fs::write(&path, value))
        .and_then(|written| written)
        .map_err(io_error(&format!("cannot set {name} in {host}")))
}

/// `ip/len` (`len` is within the family's bits at every call).
fn prefix(ip: Ipv4Addr, len: u8) -> Prefix {
    Prefix::new(ip.into(), len).unwrap_or_else(|| unreachable!("a constant prefix is valid"))
}

/// A route `name` to `peer`, whose TUN address is `to`, straight to its transport address
/// `via`, sending `out_id` and taking `in_id`; the peer takes `peer_in_id`.
fn mesh_route(
    name: &str,
    peer: PublicKey,
    to: Ipv4Addr,
    via: Ipv4Addr,
    (out_id, in_id, peer_in_id): (RouteId, RouteId, RouteId),
) -> RouteSetup {
    let hop = SocketAddr::from((via, PORT));
    RouteSetup {
        name: name.to_owned(),
        peer,
        prefixes: vec![prefix(to, 32)],
        first_hop: hop,
        out_id,
        in_id,
        peer_in_id,
        prev_hop: hop,
        persistent_keepalive: None,
    }
}

/// A marker that must never cross c-wan in clear: new for each run.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("SKYWIRE-LEAK-{nanos:08x}-{}", std::process::id())
}

fn io_error(what: &str) -> impl FnOnce(io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        what: what.to_owned(),
        source,
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn short(key: &PublicKey) -> String {
    key.to_string().chars().take(12).collect::<String>() + "..."
}

/// The lines of `after` not in `before` (`+`) and of `before` not in `after` (`-`).
fn diff(before: &str, after: &str) -> Vec<String> {
    let gone = before
        .lines()
        .filter(|l| !after.lines().any(|a| a == *l))
        .map(|l| format!("- {l}"));
    let new = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .map(|l| format!("+ {l}"));
    gone.chain(new).collect()
}

/// The demo's HTTP server: `GET /ip` answers the caller's address. One thread, one
/// connection at a time (the demo's requests come one by one); stopped when dropped.
struct WebServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    fn start(listener: TcpListener) -> Result<Self, DemoError> {
        listener
            .set_nonblocking(true)
            .map_err(io_error("cannot set up the web server"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("demo-vpn-web".into())
            .spawn(move || {
                // Wait for a connection in poll(2), looking at the stop flag every 100 ms:
                // a fetch's time is the network's, not a sleep's.
                let tick = rustix::event::Timespec::try_from(Duration::from_millis(100))
                    .unwrap_or_default();
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, peer)) => {
                            let _ = answer(conn, peer);
                        }
                        Err(_) => {
                            let mut fds = [rustix::event::PollFd::new(
                                &listener,
                                rustix::event::PollFlags::IN,
                            )];
                            let _ = rustix::event::poll(&mut fds, Some(&tick));
                        }
                    }
                }
            })
            .map_err(io_error("cannot start the web server's thread"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Read a request head (at most 64 KiB) and answer the caller's address for `/ip`, 404
/// otherwise.
fn answer(conn: TcpStream, peer: SocketAddr) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(FETCH_TIMEOUT))?;
    let mut reader = BufReader::new((&conn).take(64 * 1024));
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let (status, body) = match first.split_whitespace().nth(1) {
        Some("/ip") => ("200 OK", peer.ip().to_string()),
        _ => ("404 Not Found", "not found".to_owned()),
    };
    let mut out = &conn;
    write!(
        out,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
