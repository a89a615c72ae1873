//! `skywire socks client` and `skywire socks exit`: the SOCKS5 proxy over the mesh
//! (`skywire_control::apps::socks`). Both are clients of their node's app socket, so they
//! need no root: only a user the node lets in.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use skywire_control::apps::socks::client::{ClientOptions, SocksClient};
use skywire_control::apps::socks::exit::{ExitOptions, SocksExit, exit_policy};
use skywire_control::apps::socks::policy::Exception;
use skywire_control::apps::socks::tally::Tally;
use skywire_control::config::{Config, DEFAULT_APP_SOCKET, SocksClientConfig, SocksExitConfig};
use skywire_control::node::apps::AppClient;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::route::Prefix;

/// A SOCKS5 proxy over the mesh: a local SOCKS server and an exit that dials for it
///
/// `skywire socks client --exit KEY` runs a SOCKS5 server on 127.0.0.1:1080 that carries
/// every connection over the mesh to the node KEY, where `skywire socks exit` resolves the
/// name, checks the destination against its policy, and connects. Use `socks5h://` (curl
/// `--socks5-hostname`) so names are resolved at the exit: with `socks5://` the
/// application resolves them itself, and your own DNS server sees every name you visit.
#[derive(Debug, Args)]
pub(crate) struct SocksArgs {
    #[command(subcommand)]
    command: SocksCommand,
}

#[derive(Debug, Subcommand)]
enum SocksCommand {
    Client(ClientArgs),
    Exit(ExitArgs),
}

/// Run a SOCKS5 server here that carries connections to an exit node
///
/// Listens on 127.0.0.1:1080 unless told otherwise; an address other than loopback needs
/// RFC 1929 credentials (--username and --password-file), or anyone who reaches it would
/// use your exit. Each connection becomes a stream to the exit app's port on the exit
/// node, through this machine's node (its app socket); once the SOCKS exchange is done the
/// node moves the bytes itself. Runs until SIGINT or SIGTERM; prints the connections and
/// bytes when it stops. Exits 69 when no node answers on the app socket, 77 when this user
/// may not use it, 78 for a bad config.
#[derive(Debug, Args)]
struct ClientArgs {
    /// The exit node's public key [default: socks.client.exit in --config]
    #[arg(long, value_name = "KEY")]
    exit: Option<PublicKey>,
    /// The exit app's port on that node [default: 1080]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    exit_port: Option<u16>,
    /// Where the SOCKS5 server listens [default: 127.0.0.1:1080]
    #[arg(long, short, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// The username clients must give (RFC 1929), with --password-file
    #[arg(long, value_name = "NAME", requires = "password_file")]
    username: Option<String>,
    /// A file holding the password clients must give (its first line), with --username
    #[arg(long, value_name = "PATH", requires = "username")]
    password_file: Option<PathBuf>,
    /// A config file: its `socks.client` section, and its node's app socket
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The node's app socket [default: the config's, else /run/skywire-apps/node.sock]
    #[arg(long, short, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Dial destinations for the SOCKS clients of allowed nodes
///
/// Listens on its port (1080) of this machine's node for streams from the nodes given
/// with --client (or every node with --public; with neither it refuses to start). Names
/// are resolved here. Refused as destinations, whatever they resolve to: loopback,
/// private and link-local addresses (169.254.169.254 included), CGNAT, multicast,
/// unique-local IPv6, the mesh's ranges, this host's own addresses and the subnets they
/// are on, and port 25; --allow PREFIX:PORT (or PREFIX:*) makes exceptions, for example
/// --allow 10.1.2.0/24:443. Refusals are answered with SOCKS reply 2 and logged.
///
/// The original's form `meshnet-socks-server NAME NODE PORT` works too: NAME is a label
/// for the log, NODE the node's address (the node is reached through its app socket; the
/// address is only shown), PORT the exit's port.
#[derive(Debug, Args)]
struct ExitArgs {
    /// A label for the log (the original's app name)
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The node's address, as the original took it (shown only)
    #[arg(value_name = "NODE")]
    node: Option<String>,
    /// The exit's port on the node (the original's third argument)
    #[arg(value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "port")]
    port_positional: Option<u16>,
    /// The exit's port on the node [default: 1080]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Serve this node (repeat the option)
    #[arg(long = "client", value_name = "KEY")]
    clients: Vec<PublicKey>,
    /// Serve every node that has a route to this one
    #[arg(long, conflicts_with = "clients")]
    public: bool,
    /// A destination to allow although private: PREFIX:PORT or PREFIX:* (repeat the option)
    #[arg(long, value_name = "PREFIX:PORT")]
    allow: Vec<Exception>,
    /// A config file: its `socks.exit` section, and its node's app socket
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The node's app socket [default: the config's, else /run/skywire-apps/node.sock]
    #[arg(long, short, value_name = "PATH")]
    socket: Option<PathBuf>,
}

pub(crate) fn socks(args: &SocksArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        SocksCommand::Client(args) => client(args),
        SocksCommand::Exit(args) => exit(args),
    }
}

/// The config, if one was given.
fn load(config: Option<&Path>) -> anyhow::Result<Option<Config>> {
    config.map(Config::load).transpose().map_err(Into::into)
}

/// The app socket: the flag, the section's, the config's node's, or the default.
fn app_socket(
    flag: Option<&PathBuf>,
    section: Option<&PathBuf>,
    config: Option<&Config>,
) -> PathBuf {
    flag.or(section).cloned().unwrap_or_else(|| {
        config.map_or_else(
            || PathBuf::from(DEFAULT_APP_SOCKET),
            |c| c.node.apps().socket_path(c.node.control_socket()),
        )
    })
}

/// SIGINT and SIGTERM raise the flag.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    Ok(stop)
}

fn log_tally(app: &str, tally: &Tally) {
    for (key, t) in tally.snapshot() {
        log::info!(
            "skywire socks {app}: {key}: {} open, {} opened, {} refused, {} reset; {} bytes sent, {} received (of those that ended)",
            t.open,
            t.opened,
            t.refused,
            t.reset,
            t.sent,
            t.received
        );
    }
}

fn client(args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let config = load(args.config.as_deref())?;
    let section = config
        .as_ref()
        .map_or_else(SocksClientConfig::default, |c| c.socks.client.clone());
    let Some(exit) = args.exit.or(section.exit) else {
        eprintln!(
            "skywire socks client: which exit? Give --exit KEY (or socks.client.exit in --config)"
        );
        return Ok(ExitCode::from(2));
    };
    let listen = args.listen.unwrap_or(section.listen);
    let auth = match (&args.username, &args.password_file) {
        (Some(user), Some(file)) => Some((user.clone(), file.clone())),
        _ => section.auth.clone(),
    };
    if !listen.ip().is_loopback() && auth.is_none() {
        eprintln!(
            "skywire socks client: {listen} is not a loopback address: anyone who reaches it \
             would use your exit. Give --username and --password-file, or listen on 127.0.0.1"
        );
        return Ok(ExitCode::from(2));
    }
    let auth = match auth {
        None => None,
        Some((user, file)) => Some((user.into_bytes(), read_password(&file)?)),
    };
    let options = ClientOptions {
        app_socket: app_socket(
            args.socket.as_ref(),
            section.app_socket.as_ref(),
            config.as_ref(),
        ),
        exit,
        exit_port: args.exit_port.unwrap_or(section.exit_port),
        listen,
        auth,
        connections: section.connections,
        half_open: section.half_open,
        negotiation_timeout: section.negotiation_timeout,
        dial_timeout: section.dial_timeout,
    };
    let socket = options.app_socket.clone();
    let exit_port = options.exit_port;
    // No node, no proxy: say so now rather than at the first connection.
    AppClient::new(&socket).check()?;
    let server =
        SocksClient::bind(options).with_context(|| format!("cannot listen on {listen}"))?;
    let stop = stop_flag()?;
    println!(
        "skywire socks client: SOCKS5 on {} -> exit {exit} port {exit_port}, through the node at {}",
        server.local_addr().unwrap_or(listen),
        socket.display()
    );
    let tally = server.tally();
    server.serve(&stop)?;
    log_tally("client", &tally);
    Ok(ExitCode::SUCCESS)
}

/// The password: the file's first line, from a file only its owner may read.
fn read_password(file: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable or writable by others than its owner: chmod 600 it",
            file.display()
        );
    }
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() || password.len() > 255 {
        anyhow::bail!("the password in {} must be 1 to 255 bytes", file.display());
    }
    Ok(password.as_bytes().to_vec())
}

fn exit(args: &ExitArgs) -> anyhow::Result<ExitCode> {
    let config = load(args.config.as_deref())?;
    let section = config
        .as_ref()
        .map_or_else(SocksExitConfig::default, |c| c.socks.exit.clone());
    let public = args.public || section.public;
    let clients: Vec<PublicKey> = if args.clients.is_empty() {
        section.clients.clone()
    } else {
        args.clients.clone()
    };
    if !public && clients.is_empty() {
        eprintln!(
            "skywire socks exit: it would serve nobody: give --client KEY for each node to \
             serve (or socks.exit.clients in --config), or --public to serve every node"
        );
        return Ok(ExitCode::from(2));
    }
    let mut allow = section.allow.clone();
    allow.extend(args.allow.iter().copied());
    let mesh = section
        .mesh_ranges
        .clone()
        .unwrap_or_else(|| config.as_ref().map_or_else(Vec::new, mesh_of));
    let policy = exit_policy(allow, section.deny_ports.clone(), mesh)
        .context("cannot list this host's addresses (netlink)")?;
    let port = args.port.or(args.port_positional).unwrap_or(section.port);
    let options = ExitOptions {
        app_socket: app_socket(
            args.socket.as_ref(),
            section.app_socket.as_ref(),
            config.as_ref(),
        ),
        port,
        clients: (!public).then_some(clients.clone()),
        policy,
        streams: section.streams,
        streams_per_client: section.streams_per_client,
        rate_per_client: section.rate_per_client,
        half_open: section.half_open,
        dial_timeout: section.dial_timeout,
    };
    let socket = options.app_socket.clone();
    let exceptions = options.policy.allow.len();
    let exit = SocksExit::listen(options)?;
    let label = args.name.as_deref().unwrap_or("exit");
    let node = args
        .node
        .as_deref()
        .map_or_else(String::new, |n| format!(" (node {n})"));
    println!(
        "skywire socks exit {label}: port {port} of the node at {}{node}, serving {}; {exceptions} destination exceptions",
        socket.display(),
        if public {
            "every node".to_owned()
        } else {
            format!("{} client keys", clients.len())
        }
    );
    let stop = stop_flag()?;
    let tally = exit.tally();
    let serving = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || exit.serve(&stop))
    };
    while !stop.load(Ordering::Relaxed) && !serving.is_finished() {
        thread::sleep(Duration::from_millis(100));
    }
    log_tally("exit", &tally);
    if serving.is_finished()
        && let Ok(Err(error)) = serving.join()
    {
        return Err(error.into());
    }
    Ok(ExitCode::SUCCESS)
}

/// The mesh's ranges a config knows: its TUN addresses' prefixes and its routes' prefixes.
fn mesh_of(config: &Config) -> Vec<Prefix> {
    let mut mesh: Vec<Prefix> = config
        .node
        .tun()
        .map(|tun| tun.addresses.clone())
        .unwrap_or_default();
    for route in config.node.routes() {
        mesh.extend(route.prefixes.iter().copied());
    }
    mesh
}
