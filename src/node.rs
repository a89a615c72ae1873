//! `skywire node`: load the config, start the engine and the control socket, and run until
//! SIGTERM or SIGINT; then close routes, remove the TUN device and the socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use skywire_control::config::Config;
use skywire_control::ctl::{ControlServer, NodeServices};
use skywire_control::manager::agent::AgentParams;
use skywire_control::manager::client::{self as manager_client, ManagerAddress};
use skywire_dataplane::engine;
use skywire_dataplane::route::Prefix;

/// Run a node: the UDP transport, the TUN device and the routes of a config file
///
/// Needs root (or CAP_NET_ADMIN) to create the TUN device. Runs in the foreground until
/// SIGTERM or SIGINT, then closes its routes (telling the peers), removes the TUN device and
/// its control socket. With --check, only validates the config (and the key file it names)
/// and exits: 0 if it is good, 78 with the file, key and line of the first error.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// The configuration file
    #[arg(long, short, value_name = "PATH")]
    config: PathBuf,
    /// Validate the configuration and exit without starting anything
    #[arg(long)]
    check: bool,
}

pub(crate) fn node(args: &NodeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let setup = config.node_setup()?;
    if args.check {
        println!(
            "{}: ok (node {}, {} routes, {} relay rules)",
            args.config.display(),
            setup.public_key(),
            setup.routes.len(),
            setup.relays.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let socket_path = config.node.control_socket().to_owned();
    // Signals first, so a SIGTERM during start-up is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let server = ControlServer::bind(&socket_path)
        .with_context(|| format!("cannot create the control socket {}", socket_path.display()))?;
    let running = engine::start(&setup)?;
    eprintln!(
        "skywire: node {} listening on {}{}; control socket {}",
        setup.public_key(),
        running.listen,
        running
            .tun_name
            .as_deref()
            .map(|t| format!(", TUN {t}"))
            .unwrap_or_default(),
        socket_path.display()
    );
    // The manager client (which also serves pings, so it runs without a manager too).
    let link = config.node.manager();
    let params = AgentParams {
        key: setup.public_key(),
        endpoint: link.map_or(running.listen, |m| m.endpoint),
        tun: setup
            .tun
            .iter()
            .flat_map(|t| &t.addresses)
            .filter_map(|p| Prefix::new(p.addr(), if p.addr().is_ipv4() { 32 } else { 128 }))
            .collect(),
        reserved: setup
            .routes
            .iter()
            .map(|r| r.in_id.get())
            .chain(setup.relays.iter().map(|r| r.in_id.get()))
            .collect(),
    };
    let manager = link.map(|m| ManagerAddress {
        address: m.address,
        key: m.key,
    });
    if let Some(m) = manager {
        eprintln!("skywire: node registers with the manager at {}", m.address);
    }
    let (agent, agent_thread) = manager_client::start(
        running.handle.clone(),
        setup.private_key.clone(),
        manager,
        params,
    )
    .context("cannot start the manager client thread")?;
    let stop = Arc::new(AtomicBool::new(false));
    let control = {
        let services = NodeServices {
            engine: running.handle.clone(),
            agent: agent.clone(),
        };
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("skywire-control".into())
            .spawn(move || server.serve(services, stop))
            .context("cannot start the control socket thread")?
    };
    let engine_handle = running.handle.clone();
    let signal_handle = signals.handle();
    let waiter = std::thread::Builder::new()
        .name("skywire-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("skywire: signal {signal}, shutting down");
            }
            let _ = engine_handle.shutdown();
        })
        .context("cannot start the signal thread")?;
    let result = running.wait();
    agent.stop();
    let _ = agent_thread.join();
    stop.store(true, Ordering::Relaxed);
    signal_handle.close();
    let _ = waiter.join();
    let _ = control.join();
    remove_stale(&socket_path);
    result?;
    eprintln!("skywire: stopped");
    Ok(ExitCode::SUCCESS)
}

/// The control server removes its socket when it stops; make sure of it on every path.
fn remove_stale(path: &Path) {
    let _ = std::fs::remove_file(path);
}
