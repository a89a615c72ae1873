//! `skywire bench`: the end-to-end benchmark harness. It builds its own chains of network
//! namespaces (0 to 3 relays between two ends), runs skywire and, when installed,
//! boringtun on the same chain, and measures them with real tools (iperf3, ping) in
//! alternating runs, never both at once.
//!
//! # What it measures
//!
//! On the chain without relays (one hop), for every tunnel, each repeated
//! [`BenchOptions::repetitions`] times, the tunnels taking turns within each phase:
//!
//! | metric | how |
//! |---|---|
//! | `tcp_1_stream_forward`, `_reverse` | `iperf3 -c END -t S -O 1 -J` (`-R`): receiver goodput, Gbit/s |
//! | `tcp_retransmits_forward` | iperf3's sender retransmissions in that run |
//! | `tcp_4_streams` | `iperf3 -P 4` |
//! | `cpu_seconds_per_gbit` | user+system CPU of every tunnel process during the forward run, per Gbit received |
//! | `rss_idle_mib`, `rss_load_mib` | `VmRSS` of the largest tunnel process, before traffic and right after the forward run |
//! | `ping_under_load_p50_ms`, `_p99_ms` | ping through the tunnel every 20 ms during the forward run |
//! | `latency_added_one_way_p50_us`, `_p99_us` | (ping RTT through the tunnel - RTT over the bare veth) / 2 / hops, at idle |
//! | `udp64_received_pps` | `iperf3 -u -l 64 -b 0`: datagrams received per second |
//! | `udp64_lossless_pps` | the highest offered rate (searched downwards) with under 0.1 % loss |
//!
//! On the same two skywire ends, unless left out, the apps' paths next to the TUN path:
//!
//! | metric | how |
//! |---|---|
//! | `stream_*`, `rss_per_idle_stream_kib` | the app streams through the stack (`streams.rs`; `--skip-streams`) |
//! | `socks_1_gbps`, `socks_4_gbps` | `proxychains4 iperf3 -c 127.0.0.1` (`-P 4`) through `skywire socks client` and `exit` (`socks.rs`; `--skip-socks`) |
//! | `socks_cpu_seconds_per_gbit` | CPU of both nodes and both SOCKS apps during the one-stream run, per Gbit received |
//! | `socks_setup_p50_ms`, `_p99_ms` | 500 SOCKS5 CONNECTs, each from the TCP connect to the proxy to its success reply |
//!
//! The SOCKS figures are measured for microsocks on plain loopback too
//! (`microsocks-loopback`, 0 hops), the baseline skywire's SOCKS proxy is held to.
//!
//! On a chain of its own, client c - exit x - internet i (`vpn.rs`; `--skip-vpn`), the
//! VPN next to the same path without a tunnel (`no-tunnel-nat`: x forwards and
//! masquerades), the two taking turns, one TCP stream each way:
//!
//! | metric | how |
//! |---|---|
//! | `vpn_tcp_1_stream_forward`, `_reverse` | `iperf3 -c DEST -O 1 -J` (`-R`) from c to a server in i through `skywire vpn client` and `skywire vpn exit`, Gbit/s |
//! | `vpn_cpu_seconds_per_gbit_forward`, `_reverse` | CPU of both nodes and both VPN apps during the run, per Gbit received |
//! | `vpn_host_cpu_s_per_gbit_forward`, `_reverse` | busy time of all CPUs (`/proc/stat`) during the run, per Gbit, for both paths (an idle machine's figure) |
//! | `vpn_ping_under_load_p50_ms_*`, `_p99_ms_*` | ping c to i every 20 ms during the run |
//!
//! On the chains with relays (skywire only: WireGuard has no relays) the one-stream TCP
//! run and the idle latency give the relay hop cost. An optional soak (`--soak`) runs one
//! TCP stream for that long and samples the tunnel processes' memory every 10 s.
//!
//! # What it changes, and restores
//!
//! Namespaces, veths, TUN devices and processes live in `chain::Chain`, a chain of hosts in
//! the namespace lab ([`crate::lab`]), which removes them on every path out (errors,
//! Ctrl-C); node configs come from the typed writer ([`crate::config::ConfigFile`]). It
//! sets `net.core.{r,w}mem_{default,max}` to 4 MiB for the run (boringtun's best
//! configuration; these sysctls are global on Linux) and the lab writes the old values
//! back.

mod chain;
mod report;
mod socks;
mod streams;
mod tools;
mod vpn;

use core::time::Duration;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use report::{Measurement, Meta, Report, Target, median, percentile};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{RelaySetup, RouteSetup, TunSetup};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::wire::RouteId;

use crate::config::{ConfigFile, NodeSection};
use crate::keyfile::KeyFileError;
use crate::lab::LabError;
use chain::Chain;
use tools::{TcpResult, cpu_seconds, parse_tcp, parse_udp, ping, rss_mib, run_in, version_of};

/// The harness could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Namespaces need root.
    #[error("the benchmark builds network namespaces, which needs root")]
    NotRoot,
    /// A required tool is missing.
    #[error("{tool} is not installed; install it with: {install}")]
    Missing {
        /// The program.
        tool: &'static str,
        /// The command that installs it.
        install: &'static str,
    },
    /// A step of the namespace lab failed (an `ip` command, a config that does not load).
    #[error(transparent)]
    Lab(LabError),
    /// A measuring tool failed.
    #[error("`{command}` failed: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// Its standard error.
        detail: String,
    },
    /// A tunnel process exited during the run.
    #[error("{what} exited ({status}); the end of its log:\n{log}")]
    Exited {
        /// Which process.
        what: String,
        /// How it ended.
        status: String,
        /// The end of its log, indented.
        log: String,
    },
    /// A tunnel did not carry a ping within its deadline.
    #[error("the {tunnel} tunnel did not come up (no ping through it within 10 s)")]
    NotUp {
        /// Which tunnel.
        tunnel: String,
    },
    /// A process the bench started did not get ready (listening, or its start line in its
    /// log) in time.
    #[error("{what} was not ready within {} s; the end of its log:\n{log}", waited.as_secs())]
    NotReady {
        /// Which process.
        what: String,
        /// How long it was given.
        waited: Duration,
        /// The end of its log, indented.
        log: String,
    },
    /// A system call or file failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A key file could not be written.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// SIGINT or SIGTERM arrived; everything was cleaned up.
    #[error("interrupted; everything the benchmark had started is removed")]
    Interrupted,
    /// Another `skywire bench` holds the lock: two runs would disturb each other's figures
    /// and each other's restoring of the sysctls.
    #[error("another skywire bench is running (it holds {lock}); wait for it to finish")]
    Busy {
        /// The lock file.
        lock: String,
    },
}

impl From<LabError> for BenchError {
    /// The lab's errors as the bench reports them; the rest as they are.
    fn from(error: LabError) -> Self {
        match error {
            LabError::NotRoot => Self::NotRoot,
            LabError::Interrupted => Self::Interrupted,
            LabError::Io { what, source } => Self::Io { what, source },
            LabError::Key(source) => Self::Key(source),
            LabError::Exited { what, status, log } => Self::Exited {
                what,
                status: status.to_string(),
                log,
            },
            other => Self::Lab(other),
        }
    }
}

/// The install command for the optional comparison (documented in BENCHMARKS.md too).
pub const BORINGTUN_INSTALL: &str = "apt-get install -y wireguard-tools && \
     cargo install boringtun-cli --version 0.7.1 --locked";

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `skywire` binary the nodes run.
    pub program: PathBuf,
    /// Seconds per throughput run.
    pub seconds: u64,
    /// Runs per metric and tunnel (at least 1).
    pub repetitions: usize,
    /// Relay counts of the chains measured besides the one without relays.
    pub relays: Vec<usize>,
    /// Also measure skywire with `offload: false`.
    pub no_offload_too: bool,
    /// Leave boringtun out even if installed.
    pub skip_boringtun: bool,
    /// Leave the 64-byte packet rate phase out.
    pub skip_udp: bool,
    /// Leave the app streams' figures out.
    pub skip_streams: bool,
    /// Leave the SOCKS proxies' figures out.
    pub skip_socks: bool,
    /// Leave the VPN's figures (client, exit and the path without a tunnel) out.
    pub skip_vpn: bool,
    /// Run one TCP stream this long, sampling memory, at the end.
    pub soak: Option<Duration>,
    /// The command line, for the record.
    pub command: String,
    /// TCP congestion control for iperf3's connections (`iperf3 -C`, both ends); `None`
    /// keeps the host's default.
    pub congestion_control: Option<String>,
    /// Set by SIGINT/SIGTERM handlers: stop and clean up.
    pub interrupted: Arc<AtomicBool>,
}

impl BenchOptions {
    /// Defaults: 5 s runs, 3 repetitions, chains with 0, 1, 2 and 3 relays, boringtun if
    /// installed.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            seconds: 5,
            repetitions: 3,
            relays: vec![1, 2, 3],
            no_offload_too: false,
            skip_boringtun: false,
            skip_udp: false,
            skip_streams: false,
            skip_socks: false,
            skip_vpn: false,
            soak: None,
            command: String::new(),
            congestion_control: None,
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// One tunnel installed on a chain.
#[derive(Debug, Clone)]
struct Tunnel {
    name: String,
    /// Its processes (for CPU and memory).
    pids: Vec<u32>,
    /// The receiving end's address inside the tunnel.
    far: String,
    /// skywire's app sockets at the two ends (for the streams' figures).
    apps: Option<streams::Ends>,
}

/// The transport port and inner subnet of skywire variant `v` (0: offloads on).
fn skywire_variant(v: usize) -> (u16, u8) {
    let v8 = u8::try_from(v).unwrap_or(0);
    (6000 + u16::from(v8), 77 + 2 * v8)
}

/// `n` as a route id: the chain's ids are 100 and up (forward) and 200 and up (reverse).
fn route_id(n: usize) -> Result<RouteId, BenchError> {
    u32::try_from(n)
        .ok()
        .and_then(RouteId::new)
        .ok_or_else(|| BenchError::Io {
            what: format!("{n} is not a route id"),
            source: io::ErrorKind::InvalidInput.into(),
        })
}

/// The config of skywire node `i` of `chain` in variant `variant` (`keys`: every node's
/// public key). Forward ids are 100.., reverse ids 200.. (see chain.rs for the link
/// numbering); the ends hold the route, the relays two rules each.
fn skywire_config(
    chain: &Chain,
    i: usize,
    variant: usize,
    offload: bool,
    keys: &[PublicKey],
) -> Result<ConfigFile, BenchError> {
    let (port, net) = skywire_variant(variant);
    let (last, n) = (chain.last(), chain.nodes());
    let hop = |link: usize, left: bool| SocketAddr::from((Chain::link_address(link, left), port));
    let mut node = NodeSection::new(format!("v{variant}-n{i}.key"));
    node.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    node.control_socket = PathBuf::from(format!("v{variant}-n{i}.sock"));
    node.state_dir = PathBuf::from(format!("v{variant}-n{i}-state"));
    node.offload = offload;
    // The app socket inside the chain's folder (removed with it), and room for the idle
    // streams of the streams' figures.
    node.apps.socket = Some(PathBuf::from(app_socket_name(variant, i)));
    node.apps.stack.max_streams = 16_384;
    node.apps.stack.max_streams_per_peer = 16_384;
    node.apps.stack.max_streams_per_app = 16_384;
    node.apps.stack.memory = 4 << 30;
    if i == 0 || i == last {
        let (me, peer, peer_key) = if i == 0 {
            (1, 2, keys.get(last))
        } else {
            (2, 1, keys.first())
        };
        // The ids each end receives with bind the route's handshakes: each end knows both.
        let (first_hop, out_id, in_id, peer_in_id) = if i == 0 {
            (hop(1, false), 100, 200 + n - 2, 100 + n - 2)
        } else {
            (hop(last, true), 200, 100 + n - 2, 200 + n - 2)
        };
        let address = |host| Prefix::new(Ipv4Addr::new(10, net, 0, host).into(), 24);
        node.tun = Some(TunSetup {
            name: format!("sky{variant}{me}"),
            addresses: address(me).into_iter().collect(),
            mtu: 1420,
        });
        // Both ends have a key (`keys` has one per node), so the route is always there.
        if let Some(peer_key) = peer_key {
            node.routes.push(RouteSetup {
                name: "bench".to_owned(),
                peer: *peer_key,
                prefixes: Prefix::new(Ipv4Addr::new(10, net, 0, peer).into(), 32)
                    .into_iter()
                    .collect(),
                first_hop,
                out_id: route_id(out_id)?,
                in_id: route_id(in_id)?,
                peer_in_id: route_id(peer_in_id)?,
                prev_hop: first_hop,
                persistent_keepalive: None,
            });
        }
    } else {
        let k = i;
        node.relays = vec![
            RelaySetup {
                in_id: route_id(100 + k - 1)?,
                prev_hop: hop(k, true),
                out_id: route_id(100 + k)?,
                next_hop: hop(k + 1, false),
            },
            RelaySetup {
                in_id: route_id(200 + n - 2 - k)?,
                prev_hop: hop(k + 1, false),
                out_id: route_id(200 + n - 1 - k)?,
                next_hop: hop(k, true),
            },
        ];
    }
    Ok(ConfigFile::node(node))
}

/// Write configs and start a skywire node on every node of the chain.
fn start_skywire(
    chain: &mut Chain,
    program: &std::path::Path,
    variant: usize,
    offload: bool,
) -> Result<Tunnel, BenchError> {
    let (_, net) = skywire_variant(variant);
    let mut keys = Vec::new();
    for i in 0..chain.nodes() {
        keys.push(chain.write_key(&format!("v{variant}-n{i}.key"))?);
    }
    let mut pids = Vec::new();
    let mut folder = PathBuf::new();
    for i in 0..chain.nodes() {
        let config = skywire_config(chain, i, variant, offload, &keys)?;
        let config = chain.write_config(&format!("v{variant}-n{i}.yaml"), &config)?;
        if let Some(parent) = config.parent() {
            folder = parent.to_owned();
        }
        let config = config.to_string_lossy().into_owned();
        pids.push(chain.spawn(
            i,
            &format!("skywire node {i}"),
            program,
            &["node", "--config", &config],
            &format!("v{variant}-n{i}.log"),
        )?);
    }
    Ok(Tunnel {
        name: if offload {
            "skywire".to_owned()
        } else {
            "skywire-no-offload".to_owned()
        },
        pids,
        far: format!("10.{net}.0.2"),
        apps: keys
            .first()
            .zip(keys.get(chain.last()))
            .map(|(near_key, far_key)| streams::Ends {
                near: folder.join(app_socket_name(variant, 0)),
                far: folder.join(app_socket_name(variant, chain.last())),
                far_key: *far_key,
                near_key: *near_key,
            }),
    })
}

/// Node `i`'s app socket of skywire variant `variant`, relative to the chain's folder.
fn app_socket_name(variant: usize, i: usize) -> String {
    format!("apps-v{variant}-n{i}/node.sock")
}

/// Start boringtun (best configuration: one thread, one queue) on both ends of a chain
/// without relays, configured with `wg`.
fn start_boringtun(chain: &mut Chain, boringtun: &str) -> Result<Tunnel, BenchError> {
    let last = chain.last();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let private = command_output("wg", &["genkey"], None)?;
        let public = command_output("wg", &["pubkey"], Some(&private))?;
        keys.push((private.trim().to_owned(), public.trim().to_owned()));
    }
    let mut pids = Vec::new();
    for (end, node) in [(0usize, 0usize), (1, last)] {
        let name = format!("skybt{end}");
        let pid = chain.spawn(
            node,
            &format!("boringtun {name}"),
            std::path::Path::new(boringtun),
            &[
                &name,
                "--foreground",
                "--disable-drop-privileges",
                "--threads",
                "1",
                "--disable-multi-queue",
            ],
            &format!("{name}.log"),
        )?;
        pids.push(pid);
        let ns = chain.namespace(node);
        let deadline = Instant::now() + Duration::from_secs(10);
        while chain.ip_in(node, &["link", "show", &name]).is_err() {
            chain.check_processes()?;
            if Instant::now() > deadline {
                return Err(BenchError::NotUp {
                    tunnel: "boringtun".to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (own, peer) = if end == 0 {
            (keys.first(), keys.get(1))
        } else {
            (keys.get(1), keys.first())
        };
        let (Some((private, _)), Some((_, peer_public))) = (own, peer) else {
            continue;
        };
        let key_file = chain.file(&format!("{name}.key"));
        keyfile_write(&key_file, private)?;
        let (me, other, endpoint) = if end == 0 {
            (1, 2, Chain::link_address(1, false))
        } else {
            (2, 1, Chain::link_address(last, true))
        };
        run_in(
            &ns,
            "wg",
            &[
                "set",
                &name,
                "listen-port",
                "51820",
                "private-key",
                &key_file.to_string_lossy(),
                "peer",
                peer_public,
                "allowed-ips",
                &format!("10.78.0.{other}/32"),
                "endpoint",
                &format!("{endpoint}:51820"),
            ],
            &chain.interrupted(),
        )?;
        chain.ip_in(
            node,
            &["addr", "add", &format!("10.78.0.{me}/24"), "dev", &name],
        )?;
        chain.ip_in(node, &["link", "set", &name, "mtu", "1420", "up"])?;
    }
    Ok(Tunnel {
        name: "boringtun".to_owned(),
        pids,
        far: "10.78.0.2".to_owned(),
        apps: None,
    })
}

fn keyfile_write(path: &std::path::Path, text: &str) -> Result<(), BenchError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BenchError::Io {
            what: format!("cannot create {}", path.display()),
            source,
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| BenchError::Io {
            what: format!("cannot write {}", path.display()),
            source,
        })
}

/// Run a program (outside the namespaces) with optional standard input; its output.
fn command_output(program: &str, args: &[&str], input: Option<&str>) -> Result<String, BenchError> {
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Io {
            what: format!("cannot run {program}"),
            source,
        })?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| BenchError::Io {
        what: format!("cannot run {program}"),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BenchError::Tool {
            command: format!("{program} {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Wait until a ping crosses the tunnel (the first one also starts skywire's handshake).
fn wait_up(chain: &mut Chain, tunnel: &Tunnel) -> Result<(), BenchError> {
    let ns = chain.namespace(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        chain.check_interrupted()?;
        chain.check_processes()?;
        let reply = ping(
            &ns,
            &tunnel.far,
            1,
            Duration::from_millis(200),
            &chain.interrupted(),
        )?;
        if !reply.is_empty() {
            return Ok(());
        }
    }
    Err(BenchError::NotUp {
        tunnel: tunnel.name.clone(),
    })
}

fn total_cpu(tunnel: &Tunnel) -> f64 {
    tunnel.pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

fn largest_rss(tunnel: &Tunnel) -> Option<f64> {
    tunnel
        .pids
        .iter()
        .filter_map(|&p| rss_mib(p))
        .fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.max(v))))
}

/// Shared state of one run: options, output, the report.
struct Run<'a> {
    out: &'a mut dyn Write,
    options: &'a BenchOptions,
    report: Report,
    started: Instant,
}

impl Run<'_> {
    fn progress(&mut self, line: &str) {
        let t = self.started.elapsed().as_secs();
        let _ = writeln!(self.out, "[{:>3}:{:02}] {line}", t / 60, t % 60);
        let _ = self.out.flush();
    }

    fn iperf(&self, chain: &Chain, tunnel: &Tunnel, extra: &[&str]) -> Result<String, BenchError> {
        let seconds = self.options.seconds.to_string();
        let mut args = vec!["-c", &tunnel.far, "-t", &seconds, "-J"];
        // Per connection (TCP_CONGESTION, which root may set to any algorithm): a
        // namespace's default can only be one the host allows non-root users.
        if let Some(cc) = &self.options.congestion_control
            && !extra.contains(&"-u")
        {
            args.extend(["-C", cc.as_str()]);
        }
        args.extend_from_slice(extra);
        run_in(&chain.namespace(0), "iperf3", &args, &chain.interrupted())
    }

    /// One TCP run; also CPU, memory and ping under load for the forward direction.
    fn tcp(
        &mut self,
        chain: &mut Chain,
        tunnel: &Tunnel,
        metric: &str,
        extra: &[&str],
        with_load_figures: bool,
    ) -> Result<Option<TcpResult>, BenchError> {
        chain.check_interrupted()?;
        let hops = chain.relays + 1;
        let cpu0 = total_cpu(tunnel);
        let pinger = with_load_figures.then(|| {
            let ns = chain.namespace(0);
            let far = tunnel.far.clone();
            let count = u32::try_from(self.options.seconds * 50).unwrap_or(u32::MAX);
            let interrupted = chain.interrupted();
            std::thread::spawn(move || {
                ping(&ns, &far, count, Duration::from_millis(20), &interrupted)
            })
        });
        let json = self.iperf(chain, tunnel, extra);
        let rss = largest_rss(tunnel);
        let cpu = total_cpu(tunnel) - cpu0;
        let pings = pinger.and_then(|p| p.join().ok()).transpose()?;
        chain.check_processes()?;
        let Some(result) = parse_tcp(&json?) else {
            self.progress(&format!(
                "  {metric}, {}: iperf3 gave no result",
                tunnel.name
            ));
            return Ok(None);
        };
        self.report
            .add(metric, "Gbit/s", &tunnel.name, hops, result.gbps);
        let mut line = format!(
            "  {metric}, {}, {hops} hop(s): {:.2} Gbit/s",
            tunnel.name, result.gbps
        );
        if with_load_figures {
            let gbit = result.bytes * 8.0 / 1e9;
            self.report.add(
                "tcp_retransmits_forward",
                "count",
                &tunnel.name,
                hops,
                result.retransmits as f64,
            );
            if gbit > 0.0 {
                self.report.add(
                    "cpu_seconds_per_gbit",
                    "s/Gbit",
                    &tunnel.name,
                    hops,
                    cpu / gbit,
                );
            }
            if let Some(rss) = rss {
                self.report
                    .add("rss_load_mib", "MiB", &tunnel.name, hops, rss);
            }
            if let Some(pings) = pings.filter(|p| !p.is_empty()) {
                let (p50, p99) = (percentile(&pings, 50.0), percentile(&pings, 99.0));
                self.report
                    .add("ping_under_load_p50_ms", "ms", &tunnel.name, hops, p50);
                self.report
                    .add("ping_under_load_p99_ms", "ms", &tunnel.name, hops, p99);
                line.push_str(&format!(
                    ", ping under load p50 {p50:.3} ms p99 {p99:.3} ms"
                ));
            }
            line.push_str(&format!(
                ", {} retransmits, {:.2} CPU s/Gbit",
                result.retransmits,
                if gbit > 0.0 { cpu / gbit } else { f64::NAN }
            ));
        }
        self.progress(&line);
        Ok(Some(result))
    }

    /// Idle latency: the tunnel's RTT against the bare first link's, per hop, one way.
    fn latency(&mut self, chain: &mut Chain, tunnel: &Tunnel) -> Result<(), BenchError> {
        const PINGS: u32 = 200;
        let ns = chain.namespace(0);
        let bare = ping(
            &ns,
            &Chain::link_address(1, false).to_string(),
            PINGS,
            Duration::from_millis(5),
            &chain.interrupted(),
        )?;
        let through = ping(
            &ns,
            &tunnel.far,
            PINGS,
            Duration::from_millis(5),
            &chain.interrupted(),
        )?;
        let hops = chain.relays + 1;
        if bare.is_empty() || through.is_empty() {
            self.progress(&format!("  latency, {}: no replies", tunnel.name));
            return Ok(());
        }
        // Each hop crosses one bare link: subtract one bare RTT per hop.
        let base = median(&bare) * hops as f64;
        let per_hop_us = |rtt_ms: f64| ((rtt_ms - base) / 2.0 / hops as f64 * 1000.0).max(0.0);
        let (p50, p99) = (
            per_hop_us(percentile(&through, 50.0)),
            per_hop_us(percentile(&through, 99.0)),
        );
        self.report.add(
            "latency_added_one_way_p50_us",
            "µs/hop",
            &tunnel.name,
            hops,
            p50,
        );
        self.report.add(
            "latency_added_one_way_p99_us",
            "µs/hop",
            &tunnel.name,
            hops,
            p99,
        );
        self.progress(&format!(
            "  latency, {}, {hops} hop(s): +{p50:.1} µs p50, +{p99:.1} µs p99 one way per hop \
             (bare link RTT {:.3} ms)",
            tunnel.name,
            median(&bare)
        ));
        Ok(())
    }

    /// 64-byte datagrams: the most received, then the highest offered rate under 0.1 % loss.
    fn udp64(&mut self, chain: &mut Chain, tunnel: &Tunnel) -> Result<(), BenchError> {
        chain.check_interrupted()?;
        let hops = chain.relays + 1;
        let json = self.iperf(chain, tunnel, &["-u", "-l", "64", "-b", "0"])?;
        let Some(max) = parse_udp(&json) else {
            return Ok(());
        };
        self.report.add(
            "udp64_received_pps",
            "packets/s",
            &tunnel.name,
            hops,
            max.received_pps,
        );
        let mut rate = max.received_pps * 0.95;
        let mut lossless = 0.0;
        for _ in 0..5 {
            chain.check_interrupted()?;
            let bits = format!("{:.0}", rate * 64.0 * 8.0);
            let json = self.iperf(chain, tunnel, &["-u", "-l", "64", "-b", &bits])?;
            match parse_udp(&json) {
                Some(r) if r.loss_percent < 0.1 => {
                    lossless = r.received_pps;
                    break;
                }
                _ => rate *= 0.8,
            }
        }
        self.report.add(
            "udp64_lossless_pps",
            "packets/s",
            &tunnel.name,
            hops,
            lossless,
        );
        self.progress(&format!(
            "  udp 64 B, {}: {:.0} packets/s received at most ({:.1} % loss), {:.0}/s with < 0.1 % loss",
            tunnel.name, max.received_pps, max.loss_percent, lossless
        ));
        Ok(())
    }
}

/// Run the benchmark, printing progress to `out`; returns the report (the caller writes
/// the table, JSON and picture). Cleans up before it returns, whatever the outcome.
pub fn run(out: &mut dyn Write, options: &BenchOptions) -> Result<Report, BenchError> {
    if !crate::demo::running_as_root() {
        return Err(BenchError::NotRoot);
    }
    let Some(iperf3) = version_of("iperf3") else {
        return Err(BenchError::Missing {
            tool: "iperf3",
            install: "apt-get install -y iperf3",
        });
    };
    // Every tunnel is proven up with a ping first, and the lab is built with `ip`: say so
    // now, not "the tunnel did not come up" later.
    for (tool, install) in [
        ("ping", "apt-get install -y iputils-ping"),
        ("ip", "apt-get install -y iproute2"),
    ] {
        if !tools::installed(tool) {
            return Err(BenchError::Missing { tool, install });
        }
    }
    // One run at a time, machine-wide: held until this function returns.
    let _lock = take_lock()?;
    let mut run = Run {
        out,
        options,
        report: Report::default(),
        started: Instant::now(),
    };
    let boringtun = if options.skip_boringtun {
        run.report
            .skipped
            .push("boringtun: left out (--skip-boringtun)".to_owned());
        None
    } else if version_of("wg").is_none() && !wg_present() {
        run.report.skipped.push(format!(
            "boringtun: `wg` is not installed; install with: {BORINGTUN_INSTALL}"
        ));
        None
    } else {
        match version_of("boringtun-cli") {
            Some(v) => Some(v),
            None => {
                run.report.skipped.push(format!(
                    "boringtun: boringtun-cli is not installed; install with: {BORINGTUN_INSTALL}"
                ));
                None
            }
        }
    };
    run.report.meta = meta(options, &iperf3, boringtun.as_deref());
    for s in run.report.skipped.clone() {
        run.progress(&format!("skipped: {s}"));
    }
    let reps = options.repetitions.max(1);

    // The chain without relays: every metric, every tunnel, taking turns.
    run.progress("chain without relays (1 hop): building namespaces, starting tunnels");
    let mut chain = Chain::build(0, Arc::clone(&options.interrupted))?;
    for key in chain::SYSCTLS {
        chain.set_sysctl(key, "4194304")?;
    }
    let program = options.program.as_path();
    let mut tunnels = vec![start_skywire(&mut chain, program, 0, true)?];
    if options.no_offload_too {
        tunnels.push(start_skywire(&mut chain, program, 1, false)?);
    }
    if boringtun.is_some() {
        tunnels.push(start_boringtun(&mut chain, "boringtun-cli")?);
    }
    chain.start_iperf3_server()?;
    for t in &tunnels {
        wait_up(&mut chain, t)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    for t in &tunnels {
        if let Some(rss) = largest_rss(t) {
            run.report.add("rss_idle_mib", "MiB", &t.name, 1, rss);
            run.progress(&format!(
                "  idle RSS, {}: {rss:.1} MiB (largest process)",
                t.name
            ));
        }
    }
    for _ in 0..reps {
        for t in &tunnels {
            run.latency(&mut chain, t)?;
        }
    }
    for (metric, extra, figures) in [
        ("tcp_1_stream_forward", &[][..], true),
        ("tcp_1_stream_reverse", &["-R"][..], false),
        ("tcp_4_streams", &["-P", "4"][..], false),
    ] {
        run.progress(&format!("{metric}: {reps} runs per tunnel, alternating"));
        for _ in 0..reps {
            for t in &tunnels {
                let mut args = vec!["-O", "1"];
                args.extend_from_slice(extra);
                run.tcp(&mut chain, t, metric, &args, figures)?;
            }
        }
    }
    if !options.skip_udp {
        run.progress(&format!(
            "udp 64 B packet rate: {reps} runs per tunnel, alternating"
        ));
        for _ in 0..reps {
            for t in &tunnels {
                run.udp64(&mut chain, t)?;
            }
        }
    }
    if options.skip_streams {
        run.report
            .skipped
            .push("app streams: left out (--skip-streams)".to_owned());
    } else if let Some((tunnel, ends)) = tunnels
        .first()
        .and_then(|t| t.apps.clone().map(|ends| (t, ends)))
    {
        streams::measure(&mut run, &mut chain, tunnel, &ends, reps)?;
    }
    if options.skip_socks {
        run.report
            .skipped
            .push("SOCKS proxies: left out (--skip-socks)".to_owned());
    } else if let Some((tunnel, ends)) = tunnels
        .first()
        .and_then(|t| t.apps.clone().map(|ends| (t, ends)))
    {
        socks::measure(&mut run, &mut chain, tunnel, &ends, reps)?;
    }
    if let Some(soak) = options.soak {
        soak_run(&mut run, &mut chain, &tunnels, soak)?;
    }
    report_problems(&mut run, chain.teardown());
    drop(chain);

    // The VPN on a chain of its own: client, exit, internet.
    if options.skip_vpn {
        run.report
            .skipped
            .push("VPN: left out (--skip-vpn)".to_owned());
    } else {
        vpn::measure(&mut run, reps)?;
    }

    // Chains with relays: skywire's relay hop cost.
    for &relays in &options.relays {
        run.progress(&format!(
            "chain with {relays} relay(s) ({} hops): skywire",
            relays + 1
        ));
        let mut chain = Chain::build(relays, Arc::clone(&options.interrupted))?;
        let tunnel = start_skywire(&mut chain, program, 0, true)?;
        chain.start_iperf3_server()?;
        wait_up(&mut chain, &tunnel)?;
        run.latency(&mut chain, &tunnel)?;
        for _ in 0..reps {
            run.tcp(
                &mut chain,
                &tunnel,
                "tcp_1_stream_forward",
                &["-O", "1"],
                false,
            )?;
        }
        if !options.skip_streams
            && let Some(ends) = tunnel.apps.clone()
        {
            streams::one_stream(&mut run, &mut chain, &ends, reps)?;
        }
        report_problems(&mut run, chain.teardown());
    }
    check_targets(&mut run.report, options);
    Ok(run.report)
}

fn wg_present() -> bool {
    Command::new("wg")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty())
}

fn report_problems(run: &mut Run<'_>, problems: Vec<String>) {
    for p in problems {
        run.progress(&format!("cleanup problem: {p}"));
        run.report.skipped.push(format!("cleanup problem: {p}"));
    }
}

/// Where concurrent runs are kept apart.
const LOCK_FILE: &str = "/run/skywire-bench.lock";

/// Take the machine-wide bench lock (released when the file is dropped, also on a crash).
fn take_lock() -> Result<std::fs::File, BenchError> {
    let io_error = |source| BenchError::Io {
        what: format!("cannot open the lock file {LOCK_FILE}"),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BenchError::Busy {
            lock: LOCK_FILE.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
    }
}

/// One long TCP stream per tunnel, memory sampled every 10 s: growth means a leak.
fn soak_run(
    run: &mut Run<'_>,
    chain: &mut Chain,
    tunnels: &[Tunnel],
    soak: Duration,
) -> Result<(), BenchError> {
    let Some(tunnel) = tunnels.first() else {
        return Ok(());
    };
    run.progress(&format!(
        "soak: one TCP stream through {} for {} s",
        tunnel.name,
        soak.as_secs()
    ));
    let ns = chain.namespace(0);
    let far = tunnel.far.clone();
    let seconds = soak.as_secs().to_string();
    let interrupted = chain.interrupted();
    let iperf = std::thread::spawn(move || {
        run_in(
            &ns,
            "iperf3",
            &["-c", &far, "-t", &seconds, "-J"],
            &interrupted,
        )
    });
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < soak {
        let next = Instant::now() + Duration::from_secs(10).min(soak);
        while Instant::now() < next {
            chain.check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(rss) = largest_rss(tunnel) {
            samples.push(rss);
            run.progress(&format!(
                "  soak {:>4} s: RSS {rss:.2} MiB",
                start.elapsed().as_secs()
            ));
        }
    }
    let result = iperf
        .join()
        .ok()
        .and_then(|r| r.ok())
        .and_then(|j| parse_tcp(&j));
    if let (Some(first), Some(last)) = (samples.get(1).or(samples.first()), samples.last()) {
        run.report
            .add("soak_rss_start_mib", "MiB", &tunnel.name, 1, *first);
        run.report
            .add("soak_rss_end_mib", "MiB", &tunnel.name, 1, *last);
    }
    if let Some(r) = result {
        run.report
            .add("soak_tcp_gbps", "Gbit/s", &tunnel.name, 1, r.gbps);
    }
    Ok(())
}

/// The issue's targets, checked against the medians.
fn check_targets(report: &mut Report, options: &BenchOptions) {
    let ours = |r: &Report, m: &str, hops| r.median_of(m, "skywire", hops);
    let theirs = |r: &Report, m: &str| r.median_of(m, "boringtun", 1);
    let one = ours(report, "tcp_1_stream_forward", 1);
    report.target("one TCP stream, 1 hop, >= 2.5 Gbit/s", one, 2.5, false);
    let ratio = one
        .zip(theirs(report, "tcp_1_stream_forward"))
        .map(|(a, b)| a / b);
    report.target("one TCP stream, 1 hop, >= 4 x boringtun", ratio, 4.0, false);
    if !options.skip_udp {
        let pps = ours(report, "udp64_received_pps", 1);
        report.target(
            "64-byte packets received, 1 hop, >= 250000/s",
            pps,
            250_000.0,
            false,
        );
    }
    let lat = ours(report, "latency_added_one_way_p50_us", 1);
    let bt_lat = theirs(report, "latency_added_one_way_p50_us");
    if let Some(bound) = bt_lat {
        report.target(
            "added one-way latency p50 <= boringtun's (µs)",
            lat,
            bound,
            true,
        );
    }
    let p99 = ours(report, "ping_under_load_p99_ms", 1);
    report.target("ping under full load p99 < 3 ms", p99, 3.0, true);
    if options.relays.contains(&3) {
        let three = ours(report, "tcp_1_stream_forward", 4);
        let kept = three.zip(one).map(|(a, b)| a / b);
        report.target(
            "3 relays keep >= 80 % of 1-hop throughput",
            kept,
            0.8,
            false,
        );
    }
    if !options.skip_streams {
        let stream = report.median_of("stream_1_gbps", streams::NAME, 1);
        report.target("one app stream, 1 hop, >= 2 Gbit/s", stream, 2.0, false);
        for idle in ["stream_1_idle_1000_gbps", "stream_1_idle_5000_gbps"] {
            let kept = report
                .median_of(idle, streams::NAME, 1)
                .zip(stream)
                .map(|(a, b)| a / b);
            report.target(
                &format!("{idle} keeps >= 85 % of one stream alone"),
                kept,
                0.85,
                false,
            );
        }
    }
    if !options.skip_socks {
        let socks = report.median_of("socks_1_gbps", socks::NAME, 1);
        report.target("SOCKS one stream, 1 hop, >= 2 Gbit/s", socks, 2.0, false);
        let ratio = socks
            .zip(report.median_of("socks_1_gbps", socks::MICROSOCKS, 0))
            .map(|(a, b)| a / b);
        report.target(
            "SOCKS one stream, 1 hop, >= microsocks on loopback (ratio)",
            ratio,
            1.0,
            false,
        );
        let setup = report.median_of("socks_setup_p50_ms", socks::NAME, 1);
        report.target("SOCKS connection setup p50 <= 2 ms", setup, 2.0, true);
    }
    if !options.skip_vpn {
        for direction in ["forward", "reverse"] {
            let gbps = report.median_of(&format!("vpn_tcp_1_stream_{direction}"), vpn::NAME, 1);
            report.target(
                &format!(
                    "VPN one TCP stream {direction}, 1 hop and NAT, >= {} Gbit/s",
                    vpn::TARGET_GBPS
                ),
                gbps,
                vpn::TARGET_GBPS,
                false,
            );
        }
    }
    let rss = ours(report, "rss_idle_mib", 1);
    // 16 MB = 15.26 MiB.
    report.target("idle RSS < 16 MB (MiB)", rss, 16e6 / 1_048_576.0, true);
    let soak = ours(report, "soak_rss_end_mib", 1).zip(ours(report, "soak_rss_start_mib", 1));
    if let Some((end, start)) = soak {
        report.target(
            "no memory growth over the soak (end - start, MiB)",
            Some(end - start),
            1.0,
            true,
        );
    }
}

/// Facts for the record.
fn meta(options: &BenchOptions, iperf3: &str, boringtun: Option<&str>) -> Meta {
    let text = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let commit = text("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !text("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    Meta {
        date: text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        kernel: text("uname", &["-r"]),
        tcp_congestion_control: options.congestion_control.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
                .map(|s| format!("{} (the host's default)", s.trim()))
                .unwrap_or_default()
        }),
        cpus: format!("{cpus} x {model}"),
        skywire: format!(
            "{} (commit {}{})",
            env!("CARGO_PKG_VERSION"),
            if commit.is_empty() {
                "unknown"
            } else {
                &commit
            },
            if dirty {
                ", with uncommitted changes"
            } else {
                ""
            }
        ),
        boringtun: boringtun.map_or_else(|| "not run".to_owned(), str::to_owned),
        iperf3: iperf3.to_owned(),
        command: options.command.clone(),
        seconds: options.seconds,
        repetitions: options.repetitions.max(1),
    }
}
