//! `skywire node`: load the config, start the node (`skywire_control::node::Node`), and run
//! until SIGTERM or SIGINT; then the node closes its routes, removes the TUN device and the
//! control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use skywire_control::config::Config;
use skywire_control::node::Node;

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
    if !config.has_node_section() {
        // An empty file, or a manager's or the apps' config given by mistake: say that,
        // not that the default key file /etc/skywire/node.key is missing.
        eprintln!(
            "skywire: error: {} has no node: section (is it a manager's config, or empty? A \
             node's needs at least `node: {{key: PATH}}`; config.yaml has an example)",
            args.config.display()
        );
        return Ok(ExitCode::from(78));
    }
    if args.check {
        let setup = config.node_setup()?;
        println!(
            "{}: ok (node {}, {} routes, {} relay rules)",
            args.config.display(),
            setup.public_key(),
            setup.routes.len(),
            setup.relays.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Signals first, so a SIGTERM during start-up is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    // App streams hold descriptors in the node: one or two each.
    skywire_control::local::raise_fd_limit();
    let node = Node::start(&config)?;
    let handle = node.handle();
    log::info!(
        "skywire: node {} listening on {}{}; control socket {}, app socket {}",
        handle.public_key(),
        node.listen,
        node.tun_name
            .as_deref()
            .map(|t| format!(", TUN {t}"))
            .unwrap_or_default(),
        node.socket().display(),
        node.app_socket().display()
    );
    if let Some(manager) = node.manager {
        log::info!("skywire: node registers with the manager at {manager}");
    }
    if let Some(metrics) = node.metrics_listen {
        log::info!("skywire: node metrics on http://{metrics}/metrics");
    }
    let signal_handle = signals.handle();
    let waiter = std::thread::Builder::new()
        .name("skywire-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::info!("skywire: signal {signal}, shutting down");
            }
            let _ = handle.shutdown();
        })
        .context("cannot start the signal thread")?;
    let result = node.wait();
    signal_handle.close();
    let _ = waiter.join();
    result?;
    log::info!("skywire: stopped");
    Ok(ExitCode::SUCCESS)
}
