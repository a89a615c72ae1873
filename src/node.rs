//! `skywire node`: load the config, start the node (`skywire_control::node::Node`), and run
//! until SIGTERM or SIGINT; then the node closes its routes, removes the TUN device and the
//! control socket. SIGHUP reloads the config (`skywire_control::node::reload`).
//!
//! Under systemd (`Type=notify`, `skywire_control::notify`): `READY=1` once the node
//! forwards (everything [`Node::start`] brings up is up, and the engine loop answered),
//! watchdog pings from the engine loop itself, `STOPPING=1` when it begins to stop.
//!
//! Test hook: `SKYWIRE_TEST_STALL_ENGINE_AFTER=SECS` blocks the engine loop SECS seconds
//! after start-up, for [`STALL_FOR`], as a hung loop would, so a test can show that the
//! watchdog pings stop (`tests/sd_notify.rs`). Nothing else reads it; never set it in
//! production.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use skywire_control::config::Config;
use skywire_control::node::{Node, NodeHandle};
use skywire_control::notify::Notifier;

/// The test hook's variable (see the module docs).
const STALL_HOOK: &str = "SKYWIRE_TEST_STALL_ENGINE_AFTER";
/// How long the test hook blocks the engine loop: longer than any test waits.
const STALL_FOR: Duration = Duration::from_secs(600);
/// How long the engine loop has to answer before the node is reported ready.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Run a node: the UDP transport, the TUN device and the routes of a config file
///
/// Needs root (or CAP_NET_ADMIN) to create the TUN device. Runs in the foreground until
/// SIGTERM or SIGINT, then closes its routes (telling the peers), removes the TUN device and
/// its control socket. SIGHUP (or `skywire reload`) reads the config again and applies what
/// changed in its routes and relay rules; a bad file is logged and changes nothing. With --check, only validates the config (and the key file it names)
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
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install signal handlers")?;
    let notifier = crate::systemd_notifier();
    // App streams hold descriptors in the node: one or two each.
    skywire_control::local::raise_fd_limit();
    let node = Node::start(&config)?;
    let handle = node.handle();
    notify_ready(&notifier, &handle);
    test_hook_stall(&handle);
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
        .spawn({
            let notifier = notifier.clone();
            move || {
                for signal in signals.forever() {
                    if signal == SIGHUP {
                        // systemd's reload protocol: RELOADING=1, then READY=1 when done
                        // (whether or not the file was good: the node runs either way).
                        notifier.warn(notifier.reloading("reloading the config"));
                        let status = match handle.reload() {
                            Ok(summary) => {
                                log::info!("skywire: SIGHUP: config reloaded: {summary}");
                                format!("config reloaded: {summary}")
                            }
                            Err(e) => {
                                log::error!("skywire: SIGHUP: {e}; running on as before");
                                "the config was not reloaded (see the log); running on as before"
                                    .to_owned()
                            }
                        };
                        notifier.warn(notifier.ready(&status));
                        continue;
                    }
                    log::info!("skywire: signal {signal}, shutting down");
                    notifier.warn(notifier.stopping(&format!("signal {signal}: stopping")));
                    break;
                }
                let _ = handle.shutdown();
            }
        })
        .context("cannot start the signal thread")?;
    let result = node.wait();
    // Also when the engine stopped by itself (sent once: after a signal, nothing more).
    notifier.warn(notifier.stopping("stopping"));
    signal_handle.close();
    let _ = waiter.join();
    result?;
    log::info!("skywire: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Tell systemd the node forwards, once the engine loop answered (everything else
/// [`Node::start`] brings up is up by then), and hand the engine loop the watchdog's ping.
/// An engine that does not answer is not reported ready: `Node::wait` then returns its
/// error, or systemd's start timeout tells.
fn notify_ready(notifier: &Notifier, handle: &NodeHandle) {
    if notifier.is_enabled() {
        match handle.status(READY_TIMEOUT) {
            Ok(status) => {
                let text = format!(
                    "forwarding: node {}, UDP {}{}, {} routes, {} relay rules",
                    status.public_key,
                    status.listen,
                    status
                        .tun
                        .as_deref()
                        .map(|t| format!(", TUN {t}"))
                        .unwrap_or_default(),
                    status.routes.len(),
                    status.relays.len()
                );
                notifier.warn(notifier.ready(&text));
            }
            Err(e) => log::error!("skywire: not telling systemd the node is ready: {e}"),
        }
    }
    if let Some(heartbeat) = notifier.heartbeat() {
        log::debug!(
            "skywire: systemd watchdog: a ping from the engine loop every {:?}",
            heartbeat.every()
        );
        let _ = handle.set_heartbeat(heartbeat);
    }
}

/// The test hook (see the module docs): stall the engine loop after the seconds
/// [`STALL_HOOK`] says, if it is set.
fn test_hook_stall(handle: &NodeHandle) {
    if let Some(after) = std::env::var(STALL_HOOK)
        .ok()
        .and_then(|secs| secs.parse::<u64>().ok())
    {
        log::warn!("skywire: test hook {STALL_HOOK}: the engine loop stalls after {after} s");
        let handle = handle.clone();
        let _ = std::thread::Builder::new()
            .name("skywire-test-stall".into())
            .spawn(move || {
                std::thread::sleep(Duration::from_secs(after));
                let _ = handle.stall_engine(STALL_FOR);
            });
    }
}
