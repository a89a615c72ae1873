//! `skywire manager` (the node manager daemon) and the commands that talk to it through
//! the local node: `route add|ls|rm`, `nodes`, `link add|rm`, and `ping` (which needs no
//! manager: it times a round trip over any route to a peer).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use skywire_control::config::Config;
use skywire_control::ctl::protocol::Op;
use skywire_control::ctl::{self, CtlError};
use skywire_control::manager::client::NO_REPLY;
use skywire_control::manager::core::{ManagerCore, Rng};
use skywire_control::manager::proto::{Mesh, RouteInfo, RouteList};
use skywire_control::manager::server::Manager;
use skywire_control::manager::show;
use skywire_control::manager::topology::RouteWeight;
use skywire_dataplane::crypto::PublicKey;

/// Run the node manager: nodes register with it, and it sets up their routes on every hop
///
/// Listens on TCP (loopback by default, `manager.listen`) for nodes, which prove their key
/// and register their transport endpoints. It computes routes (shortest path by hops or
/// latency, with hop limits and avoid lists), installs them on every hop with
/// acknowledgements and rollback, and rebuilds them around nodes and links that die.
/// Keeps nothing on disk: restarted, it learns the mesh again from the nodes, whose
/// installed routes keep forwarding meanwhile. Runs until SIGTERM or SIGINT. With --check,
/// only validates the config (and the key file it names).
#[derive(Debug, Args)]
pub(crate) struct ManagerArgs {
    /// The configuration file (its `manager:` section)
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
    /// Validate the configuration and exit without starting anything
    #[arg(long)]
    check: bool,
}

pub(crate) fn manager(args: &ManagerArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let key = config.manager_key()?;
    let params = config.manager.params();
    let listen = config.manager.listen();
    if args.check {
        println!(
            "{}: ok (manager {}, listening on {listen}, {} configured links)",
            args.config.display(),
            key.public_key(),
            params.links.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let public = key.public_key();
    let server = Manager::start(listen, key, ManagerCore::new(params, Rng::system()))
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("skywire: manager {public} listening on {}", server.listen);
    if let Some(signal) = signals.forever().next() {
        eprintln!("skywire: manager: signal {signal}, stopping");
    }
    server.stop();
    eprintln!("skywire: manager stopped");
    Ok(ExitCode::SUCCESS)
}

/// The node to ask, and the output format: shared by the commands below.
#[derive(Debug, Args)]
pub(crate) struct NodeSocket {
    /// The local node's control socket
    #[arg(long, short, value_name = "PATH", default_value = ctl::DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
}

/// How long a request through the node may take: a route setup waits for every hop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn ask(socket: &NodeSocket, op: Op) -> Result<serde_json::Value, CtlError> {
    ctl::request(&socket.socket, op, REQUEST_TIMEOUT)
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Routes from the node manager: add, list, remove
///
/// The local node (its control socket) asks its manager, which sets the route up on every
/// hop and answers when all of them acknowledged. Routes belong to the node that added
/// them: it keeps them across manager restarts, and only it can remove them.
#[derive(Debug, Args)]
pub(crate) struct RouteArgs {
    #[command(subcommand)]
    command: RouteCommand,
    #[command(flatten)]
    node: NodeSocket,
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Set up a route from this node to the node with this public key
    Add {
        /// The destination node's public key
        dst: PublicKey,
        /// At least this many links (hops); more hops hide the ends from each relay
        #[arg(long, value_name = "N")]
        min_hops: Option<usize>,
        /// At most this many links
        #[arg(long, value_name = "N")]
        max_hops: Option<usize>,
        /// A node the route must not cross (repeat for more)
        #[arg(long, value_name = "KEY")]
        avoid: Vec<PublicKey>,
        /// What "shortest" means [default: the manager's, usually hops]
        #[arg(long, value_enum)]
        weight: Option<RouteWeight>,
    },
    /// List the manager's routes this node is an end of
    #[command(alias = "list")]
    Ls,
    /// Remove a route this node added, on every hop
    #[command(alias = "remove")]
    Rm {
        /// The route's id (as `route ls` shows it)
        id: String,
    },
}

pub(crate) fn route(args: &RouteArgs) -> anyhow::Result<ExitCode> {
    let node = &args.node;
    match &args.command {
        RouteCommand::Add {
            dst,
            min_hops,
            max_hops,
            avoid,
            weight,
        } => {
            let body = ask(
                node,
                Op::RouteAdd {
                    dst: dst.to_string(),
                    min_hops: *min_hops,
                    max_hops: *max_hops,
                    avoid: avoid.iter().map(ToString::to_string).collect(),
                    weight: weight.map(|w| w.as_str().to_owned()),
                },
            )?;
            if node.json {
                print_json(&body);
            } else {
                let info: RouteInfo =
                    serde_json::from_value(body).context("the node sent a malformed route")?;
                println!("{}", show::route(&info));
            }
        }
        RouteCommand::Ls => {
            let body = ask(node, Op::RouteLs)?;
            if node.json {
                print_json(&body);
            } else {
                let list: RouteList =
                    serde_json::from_value(body).context("the node sent a malformed list")?;
                let me = ctl::request_status(&node.socket, ctl::DEFAULT_TIMEOUT)
                    .ok()
                    .map(|s| s.public_key);
                print!("{}", show::routes(&list, me.as_ref()));
            }
        }
        RouteCommand::Rm { id } => {
            let body = ask(node, Op::RouteRm { route: id.clone() })?;
            if node.json {
                print_json(&body);
            } else {
                println!("route {id} removed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Show the manager's view of the mesh: nodes, endpoints, links and their measurements
#[derive(Debug, Args)]
pub(crate) struct NodesArgs {
    #[command(flatten)]
    node: NodeSocket,
}

pub(crate) fn nodes(args: &NodesArgs) -> anyhow::Result<ExitCode> {
    let body = ask(&args.node, Op::Nodes)?;
    if args.node.json {
        print_json(&body);
    } else {
        let mesh: Mesh = serde_json::from_value(body).context("the node sent a malformed mesh")?;
        print!("{}", show::mesh(&mesh));
    }
    Ok(ExitCode::SUCCESS)
}

/// Declare or withdraw a link from this node to another, for the manager to route over
///
/// The manager routes over a link once both of its nodes declared it (or its own config
/// lists it), so no node can pull other nodes' routes through itself. Both nodes then
/// probe the link once a second and report its round trip and loss.
#[derive(Debug, Args)]
pub(crate) struct LinkArgs {
    #[command(subcommand)]
    command: LinkCommand,
    #[command(flatten)]
    node: NodeSocket,
}

#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// Declare a link to the node with this public key
    Add {
        /// The other node's public key
        peer: PublicKey,
    },
    /// Withdraw a link this node declared
    #[command(alias = "remove")]
    Rm {
        /// The other node's public key
        peer: PublicKey,
    },
}

pub(crate) fn link(args: &LinkArgs) -> anyhow::Result<ExitCode> {
    let (op, done) = match &args.command {
        LinkCommand::Add { peer } => (
            Op::LinkAdd {
                peer: peer.to_string(),
            },
            "added",
        ),
        LinkCommand::Rm { peer } => (
            Op::LinkRm {
                peer: peer.to_string(),
            },
            "removed",
        ),
    };
    let body = ask(&args.node, op)?;
    if args.node.json {
        print_json(&body);
    } else if body.get("usable") == Some(&serde_json::Value::Bool(false)) {
        println!("link {done}; routes use it once the other node adds it too");
    } else {
        println!("link {done}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Time round trips to a node over the route to it, like `tailscale ping`
///
/// Each ping goes through the route's session (encrypted end to end, through every relay)
/// and the far end's node answers it; no IP address or TUN device is involved. Uses the
/// newest manager route to that node, or a configured one.
#[derive(Debug, Args)]
pub(crate) struct PingArgs {
    /// The far end's public key
    peer: PublicKey,
    /// Stop after this many pongs
    #[arg(long, short, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Time between pings, in seconds
    #[arg(long, short, default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    node: NodeSocket,
}

pub(crate) fn ping(args: &PingArgs) -> anyhow::Result<ExitCode> {
    let interval =
        Duration::try_from_secs_f64(args.interval.max(0.01)).unwrap_or(Duration::from_secs(1));
    let mut replies = Vec::new();
    let mut lost = 0u32;
    for i in 0..args.count {
        let started = Instant::now();
        match ctl::request(
            &args.node.socket,
            Op::Ping {
                peer: args.peer.to_string(),
            },
            Duration::from_secs(5),
        ) {
            Ok(body) => {
                if args.node.json {
                    println!("{body}");
                } else {
                    let rtt = body
                        .get("rtt_us")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    let route = body.get("route").and_then(|v| v.as_str()).unwrap_or("?");
                    println!(
                        "pong from {} via route {route} in {:.3} ms",
                        show::short(&args.peer),
                        rtt as f64 / 1000.0
                    );
                }
                replies.push(body);
            }
            // No route, an unknown key, a stopped node: no point in asking again.
            Err(e)
                if e.is_unavailable() || e.is_permission() || !e.to_string().contains(NO_REPLY) =>
            {
                return Err(e.into());
            }
            Err(e) => {
                lost += 1;
                if !args.node.json {
                    println!("no pong from {}: {e}", show::short(&args.peer));
                }
            }
        }
        if i + 1 < args.count {
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
    }
    if replies.is_empty() {
        anyhow::bail!("no pong from {} in {} pings", args.peer, args.count);
    }
    if lost > 0 && !args.node.json {
        println!("{lost} of {} pings lost", args.count);
    }
    Ok(ExitCode::SUCCESS)
}
