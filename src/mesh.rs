//! `skywire manager` (the node manager daemon) and the commands that talk to it through
//! the local node: `route add|ls|rm`, `nodes`, `link add|rm`, and `ping` (which needs no
//! manager: it times a round trip over any route to a peer).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use skywire_control::civil::Day;
use skywire_control::config::Config;
use skywire_control::local::StopSignal;
use skywire_control::manager::core::{ManagerCore, Rng};
use skywire_control::manager::proto::Key;
use skywire_control::manager::proto::{LinkAdded, Mesh, MeshRouteId, RouteInfo, RouteList};
use skywire_control::manager::server::Manager;
use skywire_control::manager::show;
use skywire_control::manager::topology::RouteWeight;
use skywire_control::metrics::MetricsServer;
use skywire_control::node::ctl::protocol::UsageReply;
use skywire_control::node::ctl::{self, CtlError, Op, PongReply};
use skywire_control::node::reload::ReloadSummary;
use skywire_control::node::usage::Ledger;
use skywire_control::node::usage::report::{self, By};
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
    if !config.has_manager_section() {
        // A node's config given by mistake: say that, not that a default key is missing.
        eprintln!(
            "skywire manager: {} has no manager: section (is it a node's config? A manager's \
             needs at least `manager: {{key: PATH, listen: IP:PORT}}`; config.yaml has an example)",
            args.config.display()
        );
        return Ok(ExitCode::from(78));
    }
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
    let notifier = crate::systemd_notifier();
    // Bound before the manager starts, so a taken metrics port stops nothing half-way.
    let metrics = config
        .manager
        .metrics_listen()
        .map(|addr| {
            MetricsServer::bind(addr, "manager")
                .with_context(|| format!("cannot serve metrics on {addr}"))
        })
        .transpose()?;
    let server = Manager::start(listen, key, ManagerCore::new(params, Rng::system()))
        .with_context(|| format!("cannot listen on {listen}"))?;
    log::info!("skywire: manager {public} listening on {}", server.listen);
    let metrics_stop = StopSignal::new().context("cannot create the metrics' stop signal")?;
    let metrics_thread = match metrics {
        None => None,
        Some(metrics) => {
            log::info!(
                "skywire: manager metrics on http://{}/metrics",
                metrics.local_addr()
            );
            let stats = server.stats_handle();
            let source = move || skywire_control::manager::metrics::scrape(&stats);
            Some(
                metrics
                    .spawn("manager-metrics", source, metrics_stop.clone())
                    .context("cannot start the metrics thread")?,
            )
        }
    };
    // Under systemd: ready once it listens, and the watchdog pinged by the core thread.
    notifier.warn(notifier.ready(&format!("manager {public} listening on {}", server.listen)));
    if let Some(heartbeat) = notifier.heartbeat() {
        server.set_heartbeat(heartbeat);
    }
    if let Some(signal) = signals.forever().next() {
        log::info!("skywire: manager: signal {signal}, stopping");
        notifier.warn(notifier.stopping(&format!("signal {signal}: stopping")));
    }
    metrics_stop.stop();
    if let Some(thread) = metrics_thread {
        let _ = thread.join();
    }
    server.stop();
    log::info!("skywire: manager stopped");
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

/// Send `op` to the local node and read its answer as `T`, the op's reply type.
fn ask<T: DeserializeOwned>(socket: &NodeSocket, op: Op) -> Result<T, CtlError> {
    ctl::request(&socket.socket, op, REQUEST_TIMEOUT)
}

/// Print an answer as indented JSON, the `--json` output.
fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
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
        id: MeshRouteId,
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
            let info: RouteInfo = ask(
                node,
                Op::RouteAdd {
                    dst: *dst,
                    min_hops: *min_hops,
                    max_hops: *max_hops,
                    avoid: avoid.clone(),
                    weight: *weight,
                },
            )?;
            if node.json {
                print_json(&info)?;
            } else {
                println!("{}", show::route(&info));
            }
        }
        RouteCommand::Ls => {
            let list: RouteList = ask(node, Op::RouteLs)?;
            if node.json {
                print_json(&list)?;
            } else {
                let me = ctl::request_status(&node.socket, ctl::DEFAULT_TIMEOUT)
                    .ok()
                    .map(|s| s.public_key);
                print!("{}", show::routes(&list, me.as_ref()));
            }
        }
        RouteCommand::Rm { id } => {
            let () = ask(node, Op::RouteRm { route: *id })?;
            if node.json {
                print_json(&())?;
            } else {
                println!("route {id} removed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Make the running node read its config file again
///
/// The same as SIGHUP to `skywire node`: the file is read and checked whole; a bad one
/// changes nothing (exit 78, with its file, line and key, and the node runs on). A good
/// one changes only what differs in `node.routes` and `node.relays`, in one batch; routes
/// that did not change keep forwarding without a lost packet. Other keys (`listen`, `tun`,
/// `manager`, ...) apply at the next start, and the answer names them.
#[derive(Debug, Args)]
pub(crate) struct ReloadArgs {
    #[command(flatten)]
    node: NodeSocket,
}

pub(crate) fn reload(args: &ReloadArgs) -> anyhow::Result<ExitCode> {
    let summary: ReloadSummary = ask(&args.node, Op::Reload)?;
    if args.node.json {
        print_json(&summary)?;
    } else if summary.is_noop() && summary.restart_needed.is_empty() {
        println!("reloaded: nothing changed ({summary})");
    } else {
        println!("reloaded: {summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Show what the node carried: its usage ledger by route, peer or app
///
/// The node counts every packet once, where it saw it: at its route ends (originated
/// traffic: the datagrams each route sent and received on the wire, and the IP packets
/// inside), at its relay rules (relayed traffic, by the neighbours it came from and went
/// to), and on app streams (the bytes apps sent and received, by service). The ledger
/// keeps one file per UTC day in `node.state_dir`, written every 10 s while traffic flows
/// and when the node stops; `skywire usage` brings it up to date first. The two ends of a
/// route and its relays agree to the packet, less what a link lost. With `--config`, the
/// files are read directly, for a node that is not running.
#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    #[command(flatten)]
    node: NodeSocket,
    /// Read the ledger files of the node this config file describes (its `node.state_dir`
    /// and key) instead of asking the running node; the last seconds before it stopped
    /// are there only if it stopped cleanly
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The first day: YYYY-MM-DD (UTC), `today`, `Nd` (N days ago) or `all`
    #[arg(long, value_name = "DAY", default_value = "today", value_parser = parse_day)]
    since: Since,
    /// The last day: YYYY-MM-DD (UTC) or `today`
    #[arg(long, value_name = "DAY", default_value = "today", value_parser = parse_day)]
    until: Since,
    /// Group the figures by route (and relayed traffic by neighbours), by peer, or by app
    #[arg(long, value_enum, default_value_t = By::Route)]
    by: By,
}

/// A day as `--since` and `--until` take it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since(Day);

fn parse_day(text: &str) -> Result<Since, String> {
    let today = Day::today();
    let day = match text {
        "today" => today,
        "all" => Day::from_days(0),
        _ => match text.strip_suffix('d').map(str::parse::<u32>) {
            Some(Ok(n)) => today.minus(n),
            Some(Err(_)) | None => text.parse::<Day>().map_err(|e| e.to_string())?,
        },
    };
    Ok(Since(day))
}

pub(crate) fn usage(args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let (since, until) = (args.since.0, args.until.0);
    anyhow::ensure!(since <= until, "--since {since} is after --until {until}");
    let reply: UsageReply = match &args.config {
        None => ask(
            &args.node,
            Op::Usage {
                since: Some(since),
                until: Some(until),
            },
        )?,
        Some(path) => {
            let config = Config::load(path)?;
            let key = skywire_control::keyfile::load_private_key(&config.node.key)
                .with_context(|| format!("{}: node.key", config.file.display()))?
                .public_key();
            let ledger = Ledger::open(config.node.state_dir(), key, Day::today());
            let days = ledger.days(since, until)?;
            UsageReply {
                node: key,
                since,
                until,
                days,
            }
        }
    };
    let report = report::report(
        Key(reply.node),
        &reply.since.to_string(),
        &reply.until.to_string(),
        &reply.days,
        args.by,
    );
    if args.node.json {
        print_json(&report)?;
    } else {
        print!("{report}");
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
    let mesh: Mesh = ask(&args.node, Op::Nodes)?;
    if args.node.json {
        print_json(&mesh)?;
    } else {
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
    match &args.command {
        LinkCommand::Add { peer } => {
            let added: LinkAdded = ask(&args.node, Op::LinkAdd { peer: *peer })?;
            if args.node.json {
                print_json(&added)?;
            } else if added.usable {
                println!("link added");
            } else {
                println!("link added; routes use it once the other node adds it too");
            }
        }
        LinkCommand::Rm { peer } => {
            let () = ask(&args.node, Op::LinkRm { peer: *peer })?;
            if args.node.json {
                print_json(&())?;
            } else {
                println!("link removed");
            }
        }
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
    /// How many pings to send, as ping(8)'s -c (each waits up to 3 s for its pong; one
    /// without is counted as lost)
    #[arg(long, short, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    count: u32,
    /// Time between pings, in seconds
    #[arg(long, short, default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    node: NodeSocket,
}

/// Why pings to a peer go unanswered, beyond a lost packet, as `ping` says it once.
#[derive(Debug)]
struct Outage {
    /// What stays the same while the outage lasts (the route, its state and reason, or
    /// the missing manager), so it is said once, not at every ping.
    key: String,
    /// For people.
    text: String,
}

/// Ask the node why a ping to `peer` went unanswered: its manager route to `peer` is not
/// active (with the manager's reason), or it has no manager to ask. `None` when a route to
/// `peer` is active (the ping was lost) or the manager has none (a configured route).
fn outage(node: &NodeSocket, peer: &PublicKey) -> Option<Outage> {
    match ask::<RouteList>(node, Op::RouteLs) {
        Ok(list) => show::inactive_route(peer, &list).map(|info| Outage {
            key: format!("{} {} {:?}", info.id, info.state, info.reason),
            text: show::route_outage(info),
        }),
        // No manager, or it does not answer: its routes are not being repaired.
        Err(e) if e.is_unavailable() => {
            let why = match &e {
                CtlError::Refused { message, .. } => message.clone(),
                other => other.to_string(),
            };
            Some(Outage {
                key: why.clone(),
                text: format!("no reply, and the node cannot ask its manager: {why}"),
            })
        }
        Err(_) => None,
    }
}

pub(crate) fn ping(args: &PingArgs) -> anyhow::Result<ExitCode> {
    let interval =
        Duration::try_from_secs_f64(args.interval.max(0.01)).unwrap_or(Duration::from_secs(1));
    let mut replies = Vec::new();
    let mut lost = 0u32;
    let mut said: Option<String> = None;
    for i in 0..args.count {
        let started = Instant::now();
        let pong: Result<PongReply, CtlError> = ctl::request(
            &args.node.socket,
            Op::Ping { peer: args.peer },
            Duration::from_secs(5),
        );
        match pong {
            Ok(pong) => {
                if args.node.json {
                    println!("{}", serde_json::to_string(&pong)?);
                } else {
                    println!(
                        "pong from {} via route {} in {:.3} ms",
                        show::short(&args.peer),
                        pong.route,
                        pong.rtt_us as f64 / 1000.0
                    );
                }
                replies.push(pong);
            }
            // No pong in time: counted as lost, and the next ping goes out. A route that
            // is not active, or no manager to repair it, is said once instead.
            Err(e) if e.is_no_reply() => {
                lost += 1;
                let outage = outage(&args.node, &args.peer);
                if !args.node.json {
                    match outage {
                        Some(outage) if said.as_ref() == Some(&outage.key) => {}
                        Some(outage) => {
                            println!("ping: {}", outage.text);
                            said = Some(outage.key);
                        }
                        None => {
                            println!("no pong from {}: {e}", show::short(&args.peer));
                            said = None;
                        }
                    }
                }
            }
            // No route, an unknown key, a stopped node: no point in asking again.
            Err(e) => return Err(e.into()),
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
