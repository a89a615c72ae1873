//! The `skywire` command: parses the command line, calls into `skywire-control` and
//! `skywire-dataplane`, and turns the outcome into output and an exit code. No logic of its
//! own lives here; this is the only place that uses `anyhow`.
//!
//! Adding a subcommand: a variant of [`Command`] holding its `Args` struct (the doc comments
//! are the help text), a function `fn name(args) -> anyhow::Result<ExitCode>`, and an arm in
//! [`run`]. Errors bubble up as `anyhow::Error`; [`exit_code_for`] picks the exit code from
//! the typed errors in the chain, so subcommands need not.
//!
//! Exit codes (DESIGN.md, "User surface"): 0 ok, 1 failure, 2 usage (clap, or a bad
//! `SKYWIRE_LOG`), 69 service unavailable, 77 permission denied, 78 bad configuration (a
//! config file with an error, a config file named on the command line that does not exist,
//! a key file with a bad mode or content).

mod generate;
mod lab;
mod mesh;
mod nc;

mod node;
mod socks;
mod viscript;
mod vpn;

use std::fmt::Display;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use skywire_control::config::{Config, ConfigError};
use skywire_control::demo;
use skywire_control::keyfile::{self, KeyFileError};
use skywire_control::launcher::headless::HeadlessError;
use skywire_control::node::NodeError;
use skywire_control::node::apps::AppError;
use skywire_control::node::ctl::{self, CtlError};
use skywire_control::output_file;

/// Something failed that is none of the cases below.
const EXIT_FAILURE: u8 = 1;
/// Usage: a command line (or a viscript command) that is not understood.
const EXIT_USAGE: u8 = 2;
/// Service unavailable: no node answers on the control socket.
const EXIT_UNAVAILABLE: u8 = 69;
/// Permission denied (EACCES or EPERM): not root, no CAP_NET_ADMIN, a root-owned path.
const EXIT_PERMISSION: u8 = 77;
/// Bad configuration: a config or key file the operator has to fix.
const EXIT_CONFIG: u8 = 78;

/// Where a node's private key lives unless told otherwise (the config's default too).
const DEFAULT_KEY_PATH: &str = skywire_control::config::DEFAULT_NODE_KEY;

/// skywire: encrypted multi-hop mesh network and VPN
///
/// Nodes forward traffic for each other over encrypted multi-hop routes, each node known by
/// its X25519 public key; a VPN carries IP packets over those routes between TUN devices.
/// Start with `skywire keygen`, which gives a node its identity.
#[derive(Debug, Parser)]
#[command(name = "skywire", version)]
struct Cli {
    /// The daemons' log level, for every module; overrides SKYWIRE_LOG, which takes
    /// env_logger's filter syntax (`skywire_control::manager=debug`) [default: info]
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(["error", "warn", "info", "debug", "trace"]),
            |level| level.parse::<log::LevelFilter>()
        )
    )]
    log_level: Option<log::LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, one variant each.
#[derive(Debug, Subcommand)]
enum Command {
    Demo(DemoArgs),
    Node(node::NodeArgs),
    Keygen(KeygenArgs),
    Pubkey(PubkeyArgs),
    Status(StatusArgs),
    Viscript(viscript::ViscriptArgs),
    Bench(BenchArgs),
    Manager(mesh::ManagerArgs),
    Route(mesh::RouteArgs),
    Nodes(mesh::NodesArgs),
    Reload(mesh::ReloadArgs),
    Usage(mesh::UsageArgs),
    Link(mesh::LinkArgs),
    Ping(mesh::PingArgs),
    Nc(nc::NcArgs),
    Socks(socks::SocksArgs),
    Vpn(vpn::VpnArgs),
    Completions(generate::CompletionsArgs),
    Man(generate::ManArgs),
    #[command(hide = true)]
    Lab(lab::LabArgs),
}

/// Packets in the in-memory demo's throughput phase unless `--packets` says otherwise.
const IN_MEMORY_DEMO_PACKETS: u64 = 100_000;

/// Show the data plane working end to end: three nodes, a route through a relay
///
/// As root: builds three network namespaces A - B - C joined by veth pairs, starts a
/// `skywire node` in each (fresh keys, built-in configs; A and C have TUN devices, B only
/// relays), and sends traffic A -> C with its own generator. Reports the handshake, round
/// trips, throughput, packet captures on the relay's links proving it never saw clear text,
/// and the counters at each hop; then removes everything, also on Ctrl-C or failure. Needs
/// only iproute2 (`ip`). Exits 1 if any check fails, 77 when not root.
///
/// With --in-memory (or --packets): the same route between three nodes in memory (no root,
/// no network), which also injects replayed, forged and misrouted packets.
///
/// `skywire demo streams` shows app streams instead, without root: three nodes on
/// loopback with no TUN device, a stream from an app on A to one on C through the relay B,
/// addressed by C's public key; its throughput and a BLAKE3 checksum at both ends (--mib
/// and --seconds bound it).
///
/// `skywire demo socks` shows the SOCKS5 proxy over the mesh, without root: two nodes on
/// loopback, `skywire socks client` on one and `skywire socks exit` on the other, a page
/// and a download (--mib) through the proxy, refused destinations with their reply codes,
/// connection setup times, and the counts per key.
///
/// `skywire demo daemon` shows the node as a daemon, without root: nodes on loopback, one
/// started as systemd starts a `Type=notify` service (READY=1 once its control socket
/// answers, then watchdog pings), `skywire reload` refusing a broken config (exit 78,
/// file and line) and applying only what changed in a good one while a kept route carries
/// on, RELOADING=1 and READY=1 on SIGHUP, `GET /metrics` read as the Prometheus text
/// format (and by promtool when installed) with per-route bytes rising, and a route owned
/// by a node coming back by itself after `kill -9` and a restart (its state file, 0600),
/// and `skywire usage`: a stream's bytes exactly at both ends, the two ends' ledgers
/// agreeing to the packet, and the day file after a clean stop.
///
/// `skywire demo flood` shows handshake-flood protection, as root: the same three nodes
/// and an attacker namespace sending spoofed handshake initiations to C (100 000 a second
/// for 15 s); echoes keep being answered, C spends no Diffie-Hellman beyond its budget and
/// answers with cookie replies smaller than what arrived, and A, killed and restarted,
/// gets back in with a cookie.
///
/// `skywire demo vpn` shows the VPN, as root: a client, a router holding a web server and
/// an exit in network namespaces; the web server's view of the client before and after
/// `skywire vpn up --lockdown`, a leak capture on the client's physical link, the kill
/// switch holding after `kill -9` of the client's node and the client reconnecting after
/// its restart, and `vpn down --unlock` with the exit stopped leaving rules, routes and
/// nftables as they were.
#[derive(Debug, Args)]
struct DemoArgs {
    /// What to show: the VPN data plane (default), `streams` (app streams, no root),
    /// `socks` (the SOCKS5 proxy, no root), `daemon` (readiness, watchdog, reload, metrics,
    /// state across restarts and usage, no root), `vpn` (the VPN client and exit, root) or
    /// `flood` (a handshake flood, root)
    #[arg(value_enum, value_name = "SCENARIO")]
    scenario: Option<DemoScenario>,
    /// Run the in-memory demo instead: no root, no namespaces, no kernel I/O
    #[arg(long, conflicts_with = "scenario")]
    in_memory: bool,
    /// Packets of 1420 bytes to send through the relay in the in-memory demo's throughput
    /// phase [default: 100000]; implies --in-memory
    #[arg(long, value_name = "N", conflicts_with_all = ["pings", "mib", "seconds"], value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    packets: Option<u64>,
    /// UDP echoes in the round-trip phase
    #[arg(long, value_name = "N", default_value_t = 20, conflicts_with = "in_memory", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pings: u32,
    /// Stop the throughput transfer after this many MiB...
    #[arg(long, value_name = "MIB", default_value_t = 1024, conflicts_with = "in_memory", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    mib: u64,
    /// ...or after this many seconds, whichever comes first
    #[arg(long, value_name = "SECS", default_value_t = 10, conflicts_with = "in_memory", value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
}

/// The demo's scenarios besides the default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoScenario {
    /// App streams between nodes without root or TUN devices
    Streams,
    /// A SOCKS5 proxy over the mesh, on loopback without root
    Socks,
    /// The node as a daemon: readiness, watchdog, reload, metrics, state across restarts,
    /// usage (no root)
    Daemon,
    /// The VPN: a client through an exit, its leak capture and kill switch (root)
    Vpn,
    /// A handshake flood from spoofed addresses, and the route staying up (root)
    Flood,
}

/// Generate a node's private key into a new file and print its public key
///
/// The key is written as 64 hex digits to a new file with mode 0600 (a missing directory is
/// created 0700), and the public key, the node's identity, is printed on standard output.
/// An existing file is never overwritten. The private key is never printed.
#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key; must not exist yet
    #[arg(long, short, value_name = "PATH", default_value = DEFAULT_KEY_PATH)]
    out: PathBuf,
}

/// Print the public key of a private key file
///
/// The key file is given directly with `--key`, or as the `node.key` of a config file with
/// `--config`. It must be a regular file that only its owner can read or write (mode 0600
/// or 0400); anything else is refused with exit code 78, as is a config file with an error.
#[derive(Debug, Args)]
struct PubkeyArgs {
    #[command(flatten)]
    source: KeySource,
}

/// Where `pubkey` finds the key file: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct KeySource {
    /// The private key file to read
    #[arg(long, short, value_name = "PATH")]
    key: Option<PathBuf>,
    /// A config file whose `node.key` names the private key file (a relative `node.key` is
    /// relative to the config file's folder); for a manager's file (a `manager:` section
    /// and no `node:`), its `manager.key`
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// Show a running node's routes, relays and counters, like `wg show`
///
/// Asks the `skywire node` listening on the control socket. Exits 69 when no node answers
/// there and 77 when this user may not use the socket (only root and the user running the
/// node may).
#[derive(Debug, Args)]
struct StatusArgs {
    /// The node's control socket
    #[arg(long, short, value_name = "PATH", default_value = ctl::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the status as JSON instead of text
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Under viscript (SIGNAL_CLIENT or the original -signal-* flags), become a signal client:
    // its flags leave the command line first, the client starts once the log is set up.
    let (signal_client, args) = viscript::signal_client_from_env_and_args();
    // Usage errors, `--help` and `--version` exit here, with clap's codes (2, 0, 0).
    let cli = Cli::parse_from(args);
    if let Err(err) = skywire_control::logging::init(cli.log_level) {
        eprintln!("skywire: error: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    viscript::start_signal_client(signal_client);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("skywire: error: {}", error_text(&err));
            exit_code_for(&err)
        }
    }
}

/// An error and its causes on one line, `outer: inner: innermost`, leaving out a cause
/// whose text the line already holds: most of our errors name their cause in their own
/// message ("cannot bind ...: Address already in use"), which `{:#}` would repeat.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Run the chosen subcommand.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo(&args),
        Command::Node(args) => node::node(&args),
        Command::Keygen(args) => keygen(&args),
        Command::Pubkey(args) => pubkey(&args),
        Command::Status(args) => status(&args),
        Command::Viscript(args) => viscript::viscript(&args),
        Command::Bench(args) => bench(&args),
        Command::Manager(args) => mesh::manager(&args),
        Command::Route(args) => mesh::route(&args),
        Command::Nodes(args) => mesh::nodes(&args),
        Command::Reload(args) => mesh::reload(&args),
        Command::Usage(args) => mesh::usage(&args),
        Command::Link(args) => mesh::link(&args),
        Command::Ping(args) => mesh::ping(&args),
        Command::Nc(args) => nc::nc(&args),
        Command::Socks(args) => socks::socks(&args),
        Command::Vpn(args) => vpn::vpn(&args),
        Command::Completions(args) => generate::completions(&args, Cli::command()),
        Command::Man(args) => generate::man(&args, Cli::command()),
        Command::Lab(args) => lab::lab(&args),
    }
}

/// Measure skywire against boringtun, end to end, in network namespaces (root)
///
/// Builds chains of namespaces (0 to 3 relays between two ends), runs skywire nodes and,
/// when installed, boringtun (`boringtun-cli` configured with `wg`) on the same chain, and
/// measures both with iperf3 and ping in alternating runs: TCP throughput (one stream each
/// way, four streams) with retransmits, 64-byte packet rate, added latency at idle and ping
/// under load, CPU seconds per Gbit, memory, and the cost of relay hops; on the same two
/// skywire ends, the app streams and the SOCKS5 proxy (`skywire socks client` and `exit`,
/// driven by proxychains4, next to microsocks on loopback); and on a chain of its own, the
/// VPN (`skywire vpn client` and `exit`, client to an "internet" namespace through one hop
/// and NAT) next to the same path without a tunnel. Prints progress and a table
/// (median [min - max]), checks the targets, and writes bench.json and bench.svg (replacing
/// earlier ones, but never through a symlink or a hard link: those are refused before the
/// run starts).
/// Removes everything it created and restores the socket-buffer sysctls it changes.
///
/// Needs iperf3 (`apt-get install iperf3`); boringtun is optional (see BENCHMARKS.md for
/// the install command), and so are proxychains4 and microsocks (Debian packages; all are
/// installed by scripts/bench-setup): each is reported as skipped when missing.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Seconds per throughput run
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Runs of each measurement per tunnel (median and min-max are reported)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    repetitions: u64,
    /// Relay counts of the chains measured for the relay hop cost (skywire only); the
    /// chain without relays always runs, so `--relays 0` measures only that one
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
    relays: Vec<usize>,
    /// Also measure skywire with offloads off (`offload: false`)
    #[arg(long)]
    no_offload_too: bool,
    /// Leave boringtun out even when installed
    #[arg(long)]
    skip_boringtun: bool,
    /// Leave out the 64-byte packet rate phase
    #[arg(long)]
    skip_udp: bool,
    /// Leave out the app streams' figures (one and four streams through the stack next to
    /// the TUN path, time to first byte of 1000 dials, one stream among 1000 and 5000 idle
    /// ones, RSS per idle stream)
    #[arg(long)]
    skip_streams: bool,
    /// Leave out the SOCKS5 proxies' figures (one and four iperf3 streams through
    /// proxychains4, CPU per Gbit, setup time of 500 CONNECTs; skywire's SOCKS client and
    /// exit on the chain without relays, microsocks on loopback)
    #[arg(long)]
    skip_socks: bool,
    /// Leave out the VPN's figures (one TCP stream each way from a client namespace through
    /// `skywire vpn client` and `skywire vpn exit` to an "internet" namespace, CPU per
    /// Gbit, ping under load; next to the same path with no tunnel, plain NAT)
    #[arg(long)]
    skip_vpn: bool,
    /// At the end, run one TCP stream for this many seconds and watch memory
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// TCP congestion control for the measured connections (for example `cubic`, Linux's
    /// usual default, or `bbr`), set per connection with `iperf3 -C`. Default: the host's
    #[arg(long, value_name = "NAME")]
    congestion_control: Option<String>,
    /// Folder for bench.json and bench.svg
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use skywire_control::bench;
    if !demo::running_as_root() {
        eprintln!("skywire: bench: {}", bench::BenchError::NotRoot);
        return Ok(ExitCode::from(EXIT_PERMISSION));
    }
    if let Some(bad) = args.relays.iter().find(|&&r| r > 3) {
        eprintln!("skywire: bench: --relays takes 0 to 3, not {bad}");
        return Ok(ExitCode::from(2));
    }
    // The output paths are checked before the run (minutes of measuring) and written
    // without following a symlink after it: as root, a link planted in the folder must not
    // aim our write at another file. The folder itself is made only once there are results.
    let json_path = args.out.join("bench.json");
    let svg_path = args.out.join("bench.svg");
    output_file::check(&json_path)?;
    output_file::check(&svg_path)?;
    let mut options = bench::BenchOptions::new(this_program()?);
    options.seconds = args.seconds;
    options.repetitions = usize::try_from(args.repetitions).unwrap_or(3);
    options.relays = args.relays.iter().copied().filter(|&r| r > 0).collect();
    options.no_offload_too = args.no_offload_too;
    options.skip_boringtun = args.skip_boringtun;
    options.skip_udp = args.skip_udp;
    options.skip_streams = args.skip_streams;
    options.skip_socks = args.skip_socks;
    options.skip_vpn = args.skip_vpn;
    options.soak = args.soak.map(Duration::from_secs);
    options.congestion_control = args.congestion_control.clone();
    options.command = std::env::args().collect::<Vec<_>>().join(" ");
    raise_on_signals(&options.interrupted)?;
    let mut out = io::stdout().lock();
    let report = match bench::run(&mut out, &options) {
        Ok(report) => report,
        Err(e @ (bench::BenchError::Missing { .. } | bench::BenchError::Busy { .. })) => {
            eprintln!("skywire: bench: {e}");
            return Ok(ExitCode::from(EXIT_UNAVAILABLE));
        }
        Err(e) => return Err(e.into()),
    };
    writeln!(
        out,
        "
{}",
        report.table()
    )?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    output_file::write(
        &json_path,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    output_file::write(&svg_path, report.svg().as_bytes())?;
    writeln!(
        out,
        "wrote {} and {}",
        json_path.display(),
        svg_path.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// This program's path, for the demos and the bench to start their nodes with.
fn this_program() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find this program's path to start the nodes")
}

/// Make Ctrl-C, SIGTERM and a closed terminal raise `flag` instead of ending the process:
/// a demo or the bench then stops its nodes and removes its namespaces before it exits.
fn raise_on_signals(flag: &Arc<std::sync::atomic::AtomicBool>) -> anyhow::Result<()> {
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register(signal, Arc::clone(flag))
            .context("cannot install signal handlers")?;
    }
    Ok(())
}

/// A demo's verdict as its exit code, with the failed checks on standard error.
fn verdict(name: &str, passed: bool, failed: &[String]) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("skywire: {name}: failed: {}", failed.join("; "));
        ExitCode::from(EXIT_FAILURE)
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    if args.in_memory || args.packets.is_some() {
        let packets = args.packets.unwrap_or(IN_MEMORY_DEMO_PACKETS);
        skywire_dataplane::sim::demo::run(&mut out, packets)?;
        out.flush().context("cannot write to standard output")?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.scenario == Some(DemoScenario::Streams) {
        return demo_streams(args);
    }
    if args.scenario == Some(DemoScenario::Socks) {
        return demo_socks(args);
    }
    if args.scenario == Some(DemoScenario::Daemon) {
        return demo_daemon();
    }
    if args.scenario == Some(DemoScenario::Vpn) {
        return demo_vpn();
    }
    if args.scenario == Some(DemoScenario::Flood) {
        return demo_flood();
    }
    if !demo::running_as_root() {
        eprintln!("skywire: demo: {}", demo::DemoError::NotRoot);
        return Ok(ExitCode::from(EXIT_PERMISSION));
    }
    let mut options = demo::DemoOptions::new(this_program()?);
    options.pings = args.pings;
    options.transfer_bytes = args.mib << 20;
    options.transfer_time = Duration::from_secs(args.seconds);
    raise_on_signals(&options.interrupted)?;
    let summary = demo::run(&mut out, &options)?;
    Ok(verdict("demo", summary.passed(), &summary.failed))
}

fn demo_streams(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let options = demo::streams::StreamsOptions {
        node_program: this_program()?,
        bytes: args.mib << 20,
        time: Duration::from_secs(args.seconds),
        interrupted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    raise_on_signals(&options.interrupted)?;
    let summary = demo::streams::run(&mut io::stdout().lock(), &options)?;
    Ok(verdict("demo streams", summary.passed(), &summary.failed))
}

fn demo_socks(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let options = demo::socks::SocksDemoOptions {
        program: this_program()?,
        bytes: args.mib << 20,
        interrupted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    raise_on_signals(&options.interrupted)?;
    let summary = demo::socks::run(&mut io::stdout().lock(), &options)?;
    Ok(verdict("demo socks", summary.passed(), &summary.failed))
}

fn demo_daemon() -> anyhow::Result<ExitCode> {
    let options = demo::daemon::DaemonDemoOptions {
        program: this_program()?,
        interrupted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    raise_on_signals(&options.interrupted)?;
    let summary = demo::daemon::run(&mut io::stdout().lock(), &options)?;
    Ok(verdict("demo daemon", summary.passed(), &summary.failed()))
}

fn demo_vpn() -> anyhow::Result<ExitCode> {
    if !demo::running_as_root() {
        eprintln!(
            "skywire: demo vpn: the VPN demo builds network namespaces and changes routes, \
             rules and nftables inside them, which needs root; run it as root"
        );
        return Ok(ExitCode::from(EXIT_PERMISSION));
    }
    let options = demo::vpn::VpnDemoOptions {
        program: this_program()?,
        interrupted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    raise_on_signals(&options.interrupted)?;
    let summary = demo::vpn::run(&mut io::stdout().lock(), &options)?;
    Ok(verdict("demo vpn", summary.passed(), &summary.failed))
}

fn demo_flood() -> anyhow::Result<ExitCode> {
    if !demo::running_as_root() {
        eprintln!(
            "skywire: demo flood: the flood demo builds network namespaces and sends spoofed \
             packets inside them, which needs root; run it as root"
        );
        return Ok(ExitCode::from(EXIT_PERMISSION));
    }
    let options = demo::flood::FloodDemoOptions::new(this_program()?);
    raise_on_signals(&options.interrupted)?;
    let summary = demo::flood::run(&mut io::stdout().lock(), &options)?;
    Ok(verdict("demo flood", summary.passed(), &summary.failed))
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let public = keyfile::write_new_key(&args.out)?;
    eprintln!(
        "skywire: wrote a new private key to {} (mode 0600); its public key follows",
        args.out.display()
    );
    print_line(public)?;
    Ok(ExitCode::SUCCESS)
}

fn pubkey(args: &PubkeyArgs) -> anyhow::Result<ExitCode> {
    let key = match (&args.source.key, &args.source.config) {
        (Some(key_path), None) => keyfile::load_private_key(key_path)?,
        (None, Some(config_path)) => {
            let config = Config::load(config_path)?;
            // A manager's own file (a `manager:` section and no `node:`) names its key.
            let (path, field) = if config.has_manager_section() && !config.has_node_section() {
                (&config.manager.key, "manager.key")
            } else {
                (&config.node.key, "node.key")
            };
            keyfile::load_private_key(path)
                .with_context(|| format!("{}: {field}", config.file.display()))?
        }
        // clap's group makes this unreachable; say so rather than panic.
        _ => anyhow::bail!("give exactly one of --key and --config"),
    };
    print_line(key.public_key())?;
    Ok(ExitCode::SUCCESS)
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let reply = ctl::request_status(&args.socket, ctl::DEFAULT_TIMEOUT)?;
    if args.json {
        print_line(reply.to_json_pretty())?;
    } else {
        // The text ends with its own newline.
        let mut out = io::stdout().lock();
        write!(out, "{reply}")
            .and_then(|()| out.flush())
            .context("cannot write to standard output")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemons' systemd notifier (`skywire_control::notify`), from the environment; one
/// whose variables are malformed is reported and replaced by none (systemd's start
/// timeout then tells).
pub(crate) fn systemd_notifier() -> skywire_control::notify::Notifier {
    skywire_control::notify::Notifier::from_env().unwrap_or_else(|e| {
        log::error!("skywire: not notifying systemd: {e}");
        skywire_control::notify::Notifier::disabled()
    })
}

/// Print one line on standard output, reporting a failure (a closed pipe, a full disk)
/// instead of panicking as `println!` would.
fn print_line(line: impl Display) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// The exit code for a failed command, from the first cause in the chain that decides one.
fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(ctl_error) = cause.downcast_ref::<CtlError>() {
            if ctl_error.is_unavailable() {
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            if ctl_error.is_permission() {
                return ExitCode::from(EXIT_PERMISSION);
            }
            if ctl_error.is_bad_config() {
                return ExitCode::from(EXIT_CONFIG);
            }
        }
        if let Some(app_error) = cause.downcast_ref::<AppError>() {
            if app_error.is_unavailable() {
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            if app_error.is_permission() {
                return ExitCode::from(EXIT_PERMISSION);
            }
        }
        if let Some(viscript_error) = cause.downcast_ref::<HeadlessError>() {
            if viscript_error.is_unavailable() {
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            if viscript_error.is_permission() {
                return ExitCode::from(EXIT_PERMISSION);
            }
            if viscript_error.is_usage() {
                return ExitCode::from(EXIT_USAGE);
            }
        }
        if cause
            .downcast_ref::<ConfigError>()
            .is_some_and(ConfigError::is_bad_config)
        {
            return ExitCode::from(EXIT_CONFIG);
        }
        // A node's config error is carried transparently: look inside.
        if let Some(NodeError::Config(config_error)) = cause.downcast_ref::<NodeError>()
            && config_error.is_bad_config()
        {
            return ExitCode::from(EXIT_CONFIG);
        }
        if cause
            .downcast_ref::<KeyFileError>()
            .is_some_and(KeyFileError::is_bad_key_file)
        {
            return ExitCode::from(EXIT_CONFIG);
        }
        // std maps both EACCES and EPERM to `PermissionDenied`.
        if cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
        {
            return ExitCode::from(EXIT_PERMISSION);
        }
    }
    ExitCode::from(EXIT_FAILURE)
}

#[cfg(test)]
mod error_tests {
    #![allow(clippy::unwrap_used)]
    use super::error_text;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let inner = anyhow::Error::new(io);
        let outer = inner.context(format!(
            "cannot bind the UDP transport to 127.0.0.1:6555: {}",
            std::io::Error::from(std::io::ErrorKind::AddrInUse)
        ));
        let text = error_text(&outer);
        assert_eq!(text.matches("address in use").count(), 1, "{text}");
        let plain = anyhow::anyhow!("top").context("outer");
        assert_eq!(error_text(&plain), "outer: top");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
