//! `skywire vpn`: the whole machine's traffic through an exit node
//! (`skywire_control::apps::vpn`). `up`, `down` and `status` drive the client app; `exit`
//! and `client` are the two apps themselves (viscript's `meshnet-vpn-server` and
//! `meshnet-vpn-client`). All of it needs root: routes, rules, nftables, sysctls, DNS.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use skywire_control::apps::vpn::client::{self, ClientOptions};
use skywire_control::apps::vpn::exit::{self, ExitOptions};
use skywire_control::apps::vpn::pool::ula_for;
use skywire_control::apps::vpn::state::{ClientState, Phase, create_private_dir, terminate};
use skywire_control::config::{Config, DEFAULT_VPN_CLIENT_STATE, Ipv6Pool};
use skywire_control::node::ctl::client::request_status;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

/// How long `vpn up` waits for the client to connect.
const UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `vpn down` waits for the client to finish tearing down.
const DOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Send this machine's traffic through an exit node, or be an exit
///
/// `skywire vpn up KEY --config FILE` starts the client in the background and returns once
/// the machine's traffic goes through the exit node KEY: a lease of one IPv4 (and IPv6)
/// address from the exit, a routing table and rules of its own (the node's own packets,
/// marked with node.fwmark, bypass it), and DNS to the exit's resolvers. `--lockdown` adds
/// a kill switch in the kernel that holds even when the node is killed. `skywire vpn down`
/// undoes it all; `skywire vpn status` says where it is. On the exit node, `skywire vpn
/// exit --config FILE` serves leases (vpn.exit in the config: pool, clients, LAN
/// exceptions, DNS). All of it needs root.
#[derive(Debug, Args)]
pub(crate) struct VpnArgs {
    #[command(subcommand)]
    command: VpnCommand,
}

#[derive(Debug, Subcommand)]
enum VpnCommand {
    Up(UpArgs),
    Down(DownArgs),
    Status(StatusArgs),
    Client(ClientArgs),
    Exit(ExitArgs),
}

/// What the client is told (shared by `up` and `client`).
#[derive(Debug, Args, Clone)]
struct ClientFlags {
    /// The node's config file: its node section, and vpn.client
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
    /// Add the kill switch: nothing leaves but through the tunnel, even when the node dies
    #[arg(long)]
    lockdown: bool,
    /// Leave this machine's on-link LAN (inside vpn.client.lan_ranges) out of the tunnel
    #[arg(long)]
    allow_lan: bool,
}

/// Start the VPN client in the background and wait until it is connected
///
/// Runs `skywire vpn client` detached (its log in the state file's folder,
/// vpn-client.log) and returns once its state says connected: exit 0. If it is not
/// connected within 15 seconds, stops the client (which undoes what it did), prints the
/// log's end and exits 1. Exits 69 at once when the node does not answer.
#[derive(Debug, Args)]
struct UpArgs {
    /// The exit node's public key [default: vpn.client.exit in --config]
    #[arg(value_name = "KEY")]
    exit: Option<PublicKey>,
    #[command(flatten)]
    flags: ClientFlags,
}

/// Stop the VPN client and undo what it changed
///
/// Sends SIGTERM to the client and waits for it to restore routes, rules, DNS and sysctls;
/// if the client is gone already (killed), does the same from its state file. The kill
/// switch stays when vpn.client.lockdown is true, until --unlock.
#[derive(Debug, Args)]
struct DownArgs {
    /// Remove the kill switch too, even when vpn.client.lockdown is true
    #[arg(long)]
    unlock: bool,
    /// The config file (for vpn.client.state) [default: the state in /run/skywire]
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// Show the VPN client's state
///
/// The phase (connecting, connected, reconnecting), the exit, the leased addresses, DNS,
/// the kill switch, and the route to the exit's traffic counters. Exits 3 when no client
/// runs.
#[derive(Debug, Args)]
struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// The config file (for vpn.client.state) [default: the state in /run/skywire]
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// Run the VPN client in the foreground (what `vpn up` starts)
///
/// Runs until SIGINT or SIGTERM, then undoes what it changed. Exits 78 when the node's
/// config lacks a TUN device or a firewall mark, 77 when the exit refuses this node, 75
/// when another client runs.
#[derive(Debug, Args)]
struct ClientArgs {
    /// The exit node's public key [default: vpn.client.exit in --config]
    #[arg(long, value_name = "KEY")]
    exit: Option<PublicKey>,
    #[command(flatten)]
    flags: ClientFlags,
    /// Shown only (viscript passes the app's name, node address and port)
    #[arg(hide = true)]
    rest: Vec<String>,
}

/// Serve VPN leases on this node: its uplinks become the clients' internet
///
/// Reads vpn.exit from --config; runs until SIGINT or SIGTERM, then takes every grant
/// back, removes its nftables table and routes, and restores the sysctls. `skywire vpn exit
/// status` shows the leases and counters.
#[derive(Debug, Args)]
struct ExitArgs {
    /// The node's config file: its node section, and vpn.exit
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print JSON (with `status`)
    #[arg(long)]
    json: bool,
    /// `status` shows the leases; anything else is viscript's name, node and port
    #[arg(value_name = "status")]
    rest: Vec<String>,
}

pub(crate) fn vpn(args: &VpnArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        VpnCommand::Up(args) => up(args),
        VpnCommand::Down(args) => down(args),
        VpnCommand::Status(args) => status(args),
        VpnCommand::Client(args) => run_client(args),
        VpnCommand::Exit(args) => run_exit(args),
    }
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    Ok(stop)
}

/// The client's options from the config and flags.
fn client_options(
    exit: Option<PublicKey>,
    flags: &ClientFlags,
) -> anyhow::Result<Result<ClientOptions, ExitCode>> {
    let config = Config::load(&flags.config)?;
    let section = &config.vpn.client;
    let Some(exit) = exit.or(section.exit) else {
        eprintln!("skywire vpn: which exit? Give its key (or vpn.client.exit in --config)");
        return Ok(Err(ExitCode::from(2)));
    };
    let Some(tun) = config.node.tun() else {
        eprintln!(
            "skywire vpn: {} has no node.tun: the VPN needs the node's TUN device",
            flags.config.display()
        );
        return Ok(Err(ExitCode::from(78)));
    };
    if config.node.fwmark().is_none() {
        eprintln!(
            "skywire vpn: {} sets node.fwmark: off, so the tunnel would carry the node's own \
             packets; remove it",
            flags.config.display()
        );
        return Ok(Err(ExitCode::from(78)));
    }
    Ok(Ok(ClientOptions {
        control_socket: config.node.control_socket().to_owned(),
        app_socket: section
            .app_socket
            .clone()
            .unwrap_or_else(|| config.node.app_socket()),
        exit,
        exit_port: section.exit_port,
        lockdown: flags.lockdown || section.lockdown,
        lockdown_configured: section.lockdown,
        allow_lan: flags.allow_lan || section.allow_lan,
        lan_ranges: section.lan_ranges.clone(),
        dns: section.dns,
        table: section.table,
        priority: section.priority,
        state: section.state.clone(),
        mesh: tun.addresses.clone(),
        tun: tun.name.clone(),
        node_port: config.node.listen().port(),
    }))
}

fn run_client(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let options = match client_options(args.exit, &args.flags)? {
        Ok(options) => options,
        Err(code) => return Ok(code),
    };
    let stop = stop_flag()?;
    log::info!(
        "skywire vpn client: through exit {} (port {}){}",
        options.exit,
        options.exit_port,
        if options.lockdown {
            ", kill switch on"
        } else {
            ""
        }
    );
    match client::run(&options, &stop) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            log::error!("skywire vpn client: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// The client's log file, beside its state.
fn log_path(state: &Path) -> PathBuf {
    state.with_extension("log")
}

fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let options = match client_options(args.exit, &args.flags)? {
        Ok(options) => options,
        Err(code) => return Ok(code),
    };
    if let Ok(Some(state)) = ClientState::load(&options.state)
        && state.pid_alive()
    {
        eprintln!(
            "skywire vpn up: a client runs already (pid {}, {}, exit {}); `skywire vpn down` \
             first",
            state.pid, state.phase, state.exit
        );
        return Ok(ExitCode::from(75));
    }
    // No node, no VPN: say so now rather than after the wait.
    if let Err(e) = request_status(&options.control_socket, Duration::from_secs(2)) {
        eprintln!("skywire vpn up: {e}");
        return Ok(ExitCode::from(if e.is_permission() { 77 } else { 69 }));
    }
    let log = log_path(&options.state);
    if let Some(dir) = log.parent() {
        create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log_file = fs::File::options()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    let me = std::env::current_exe().context("cannot find this program")?;
    let mut command = Command::new(me);
    command
        .args(["vpn", "client", "--exit"])
        .arg(options.exit.to_string())
        .arg("--config")
        .arg(&args.flags.config);
    if args.flags.lockdown {
        command.arg("--lockdown");
    }
    if args.flags.allow_lan {
        command.arg("--allow-lan");
    }
    use std::os::unix::process::CommandExt as _;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .context("cannot start the VPN client")?;
    let deadline = Instant::now() + UP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("skywire vpn up: the client stopped ({status}):");
            print_tail(&log, start);
            return Ok(ExitCode::from(
                status.code().map_or(1, |c| c.clamp(1, 255) as u8),
            ));
        }
        if let Ok(Some(state)) = ClientState::load(&options.state)
            && state.pid == child.id()
            && state.phase == Phase::Connected
        {
            if let Some(lease) = &state.lease {
                println!(
                    "connected through {} as {}{}{}",
                    state.exit,
                    lease.ipv4,
                    lease.ipv6.map(|a| format!(" and {a}")).unwrap_or_default(),
                    if state.lockdown {
                        " (kill switch on)"
                    } else {
                        ""
                    }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            // Not half up: the client undoes what it did (a configured kill switch stays).
            terminate(child.id());
            let _ = child.wait();
            eprintln!(
                "skywire vpn up: not connected after {} s; stopped the client. Its log, {}:",
                UP_TIMEOUT.as_secs(),
                log.display()
            );
            print_tail(&log, start);
            return Ok(ExitCode::from(1));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The log from `start`, its last 20 lines.
fn print_tail(log: &Path, start: u64) {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(log)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().skip(lines.len().saturating_sub(20)) {
        eprintln!("  {line}");
    }
}

/// The client's state file: the config's, or the default.
fn state_path(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(match config {
        Some(path) => Config::load(path)?.vpn.client.state,
        None => PathBuf::from(DEFAULT_VPN_CLIENT_STATE),
    })
}

fn down(args: &DownArgs) -> anyhow::Result<ExitCode> {
    let path = state_path(args.config.as_deref())?;
    let Some(mut state) = ClientState::load(&path)? else {
        if args.unlock {
            // A kill switch left by a client whose state is gone: remove the table.
            use skywire_control::apps::vpn::nft;
            nft::run(&nft::remove_table(nft::Table::Client))?;
            println!("the VPN is down; no kill switch is left");
            return Ok(ExitCode::SUCCESS);
        }
        println!("the VPN is not up (no state in {})", path.display());
        return Ok(ExitCode::SUCCESS);
    };
    if state.pid_alive() {
        terminate(state.pid);
        let deadline = Instant::now() + DOWN_TIMEOUT;
        while state.pid_alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        if state.pid_alive() {
            anyhow::bail!(
                "the VPN client (pid {}) did not stop within {} s",
                state.pid,
                DOWN_TIMEOUT.as_secs()
            );
        }
        match ClientState::load(&path)? {
            Some(left) => state = left,
            None => {
                println!("the VPN is down");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    // The client is gone and its state is left: undo it from here.
    let control_socket = state.control_socket.clone();
    let problems = client::teardown(&mut state, &control_socket, args.unlock);
    for problem in &problems {
        eprintln!("skywire vpn down: {problem}");
    }
    if state.table {
        state.enter(Phase::Stopping);
        state.pid = 0;
        state.save(&path)?;
        println!(
            "the VPN is down; the kill switch stays (vpn.client.lockdown: true): `skywire vpn down --unlock` removes it"
        );
    } else {
        let _ = fs::remove_file(&path);
        println!("the VPN is down");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let path = state_path(args.config.as_deref())?;
    let state = ClientState::load(&path)?;
    let running = state.as_ref().is_some_and(ClientState::pid_alive);
    let route = state.as_ref().and_then(|s| {
        let status = request_status(&s.control_socket, Duration::from_secs(2)).ok()?;
        status.routes.into_iter().rev().find(|r| r.peer == s.exit)
    });
    if args.json {
        let value = serde_json::json!({
            "running": running,
            "state": state,
            "route": route.as_ref().map(|r| serde_json::json!({
                "in_id": r.in_id,
                "rx_bytes": r.rx_bytes,
                "tx_bytes": r.tx_bytes,
                "last_handshake_secs": r.last_handshake_secs,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        match &state {
            None => println!("vpn: down"),
            Some(s) => {
                println!(
                    "vpn: {}{}",
                    if running {
                        s.phase.to_string()
                    } else {
                        "stopped".into()
                    },
                    if running {
                        ""
                    } else {
                        " (the client is not running; `skywire vpn down` cleans up)"
                    }
                );
                println!("  exit: {} port {}", s.exit, s.exit_port);
                if let Some(lease) = &s.lease {
                    println!(
                        "  address: {}{}",
                        lease.ipv4,
                        lease
                            .ipv6
                            .map(|a| format!(", {a}"))
                            .unwrap_or_else(|| ", no IPv6 (blocked)".into())
                    );
                }
                if !s.dns_servers.is_empty() {
                    let servers: Vec<String> =
                        s.dns_servers.iter().map(ToString::to_string).collect();
                    println!("  dns: {}", servers.join(", "));
                }
                println!(
                    "  kill switch: {}",
                    match (s.lockdown, s.lockdown_configured) {
                        (true, true) => "on (configured: stays after down)",
                        (true, false) => "on",
                        _ => "off",
                    }
                );
                if !s.lan.is_empty() {
                    println!("  lan outside the tunnel: {}", s.lan.join(", "));
                }
                if let Some(r) = &route {
                    println!(
                        "  transfer: {} bytes received, {} bytes sent",
                        r.rx_bytes, r.tx_bytes
                    );
                }
                if let Some(problem) = &s.problem {
                    println!("  problem: {problem}");
                }
            }
        }
    }
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn run_exit(args: &ExitArgs) -> anyhow::Result<ExitCode> {
    let Some(config_path) = &args.config else {
        eprintln!("skywire vpn exit: give --config FILE (its node section and vpn.exit)");
        return Ok(ExitCode::from(2));
    };
    let config = Config::load(config_path)?;
    let section = &config.vpn.exit;
    if args.rest.first().map(String::as_str) == Some("status") {
        let status = exit::status(&section.state)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            println!("leases: {}", status.leases.len());
            for lease in &status.leases {
                println!(
                    "  {}: {}{}",
                    lease.key,
                    lease.ipv4,
                    lease.ipv6.map(|a| format!(", {a}")).unwrap_or_default()
                );
            }
            for (name, (packets, bytes)) in &status.counters {
                println!("  {name}: {packets} packets, {bytes} bytes");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(tun) = config.node.tun() else {
        eprintln!(
            "skywire vpn exit: {} has no node.tun: the exit forwards through the node's TUN device",
            config_path.display()
        );
        return Ok(ExitCode::from(78));
    };
    if !section.public && section.clients.is_empty() {
        eprintln!(
            "skywire vpn exit: it would serve nobody: list the client keys in vpn.exit.clients \
             (or set vpn.exit.public: true)"
        );
        return Ok(ExitCode::from(2));
    }
    // No node, no exit: say so now (once serving, the exit waits for a node that stops).
    if let Err(e) = request_status(config.node.control_socket(), Duration::from_secs(2)) {
        eprintln!("skywire vpn exit: {e}");
        return Ok(ExitCode::from(if e.is_permission() { 77 } else { 69 }));
    }
    let key = skywire_control::keyfile::load_private_key(&config.node.key)
        .map(|k| k.public_key())
        .with_context(|| format!("cannot read the node's key {}", config.node.key.display()))?;
    let pool6 = match &section.pool_ipv6 {
        Ipv6Pool::Auto => Some(ula_for(&key)),
        Ipv6Pool::None => None,
        Ipv6Pool::Prefix(p) => Some(*p),
    };
    let mut mesh: Vec<Prefix> = tun.addresses.clone();
    for route in config.node.routes() {
        mesh.extend(route.prefixes.iter().copied());
    }
    let options = ExitOptions {
        control_socket: config.node.control_socket().to_owned(),
        app_socket: section
            .app_socket
            .clone()
            .unwrap_or_else(|| config.node.app_socket()),
        port: section.port,
        clients: (!section.public).then(|| section.clients.clone()),
        pool4: section.pool_ipv4,
        pool6,
        allow_lan: section.allow_lan.clone(),
        allow_clients: section.allow_clients,
        dns: section.dns.clone(),
        uplinks: section.uplinks.clone(),
        lease_grace: section.lease_grace,
        state: section.state.clone(),
        mesh,
        mtu: tun.mtu,
    };
    log::info!(
        "skywire vpn exit: pool {}{}, serving {}",
        options.pool4,
        options
            .pool6
            .map(|p| format!(" and {p}"))
            .unwrap_or_default(),
        match &options.clients {
            None => "every node".to_owned(),
            Some(c) => format!("{} client keys", c.len()),
        }
    );
    let stop = stop_flag()?;
    match exit::run(options, &stop) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            log::error!("skywire vpn exit: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
