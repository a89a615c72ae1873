//! `skywire viscript`: the app launcher (console, headless daemon or terminal GUI) and
//! `skywire viscript exec`, its non-interactive client; plus the signal client that makes
//! every `skywire` subcommand reachable by viscript when `SIGNAL_CLIENT` (or the original
//! `-signal-client` flag) says so.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use skywire_control::config::Config;
use skywire_control::launcher::headless::{self, HeadlessClient, HeadlessServer};
use skywire_control::launcher::{self, Launcher, LauncherOptions, RestartPolicy};
use skywire_control::local::StopSignal;
use skywire_control::signal::{self, SignalServer};

/// Run viscript, the app launcher: start, ping, inspect and stop the apps of a config
///
/// Reads the `apps:` section of the config. Every app started gets a sequence id (from 1,
/// never reused) and the environment SIGNAL_CLIENT=true, SIGNAL_CLIENT_ID=ID,
/// SIGNAL_SERVER_ADDRESS=ADDR (this server) and SIGNAL_CLIENT_SECRET (fresh for every
/// start), so it can register over the signal protocol; a registration that does not prove
/// the app's secret is refused and logged. Output from apps is shown with control
/// characters escaped.
/// Without --headless or --gui: an interactive console (type `help`). Every app is stopped
/// when viscript leaves. Exits 78 for a bad config.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ViscriptArgs {
    #[command(subcommand)]
    exec: Option<ViscriptCommand>,
    /// The configuration file with the `apps:` section
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Run as a daemon serving console commands on --socket (see `viscript exec`)
    #[arg(long, conflicts_with = "gui")]
    headless: bool,
    /// Run the terminal GUI: apps with live CPU and memory, output, command line
    #[arg(long)]
    gui: bool,
    /// The headless control socket (created 0600 in a 0700 folder)
    #[arg(long, short, value_name = "PATH", default_value = headless::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the signal server listens (loopback by default; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = signal::DEFAULT_SERVER)]
    signal_address: String,
    /// Shutdown grace period: after asking over signal before SIGTERM, and after SIGTERM
    /// before SIGKILL (500ms, 5s, or seconds)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    grace: Duration,
    /// A daemon's first restart delay; it doubles with each crash in a row
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    restart_delay: Duration,
    /// The longest restart delay
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    restart_max: Duration,
    /// A daemon that ran this long starts counting crashes from zero again
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    restart_stable: Duration,
    /// Crashes in a row after which a daemon is given up
    #[arg(long, value_name = "N", default_value_t = 5)]
    restart_limit: u32,
}

#[derive(Debug, Subcommand)]
enum ViscriptCommand {
    Exec(ExecArgs),
}

/// Send one console command to a headless viscript and print its answer
///
/// For example `skywire viscript exec s skywire-demo` (an app of the shipped config.yaml),
/// then `exec la`, `exec ping 1`, `exec ru 1`, `exec sd 1`. `exec attach <id>` follows the app's output
/// until it ends (Ctrl-C to stop). Exits 69 when no viscript answers on the socket, 77
/// when this user may not use it, 2 for a line that is not a command, 1 when the command
/// failed.
#[derive(Debug, Args)]
struct ExecArgs {
    /// The headless viscript's socket
    #[arg(long, short, value_name = "PATH", default_value = headless::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the answer's data as JSON
    #[arg(long)]
    json: bool,
    /// The command and its arguments, kept exactly
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    words: Vec<String>,
}

/// `500ms`, `5s`, `2m`, or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (500ms, 5s, 2m)");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

pub(crate) fn viscript(args: &ViscriptArgs) -> anyhow::Result<ExitCode> {
    if let Some(ViscriptCommand::Exec(exec_args)) = &args.exec {
        return exec(exec_args);
    }
    let Some(config_path) = &args.config else {
        eprintln!("skywire: viscript: --config PATH is required (or `viscript exec ...`)");
        return Ok(ExitCode::from(2));
    };
    let config = Config::load(config_path)?;
    let server = SignalServer::bind(args.signal_address.as_str()).with_context(|| {
        format!(
            "cannot listen for signal clients on {}",
            args.signal_address
        )
    })?;
    let signal_addr = server.local_addr();
    let workdir = config
        .file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf);
    let options = LauncherOptions {
        workdir,
        grace: args.grace,
        policy: RestartPolicy {
            initial: args.restart_delay,
            max: args.restart_max,
            stable: args.restart_stable,
            limit: args.restart_limit,
        },
        // The GUI owns the terminal: refusals go to the apps' output and its title there.
        refusals_to_stderr: !args.gui,
        ..LauncherOptions::default()
    };
    let launcher = Launcher::new(config.apps, server.spawn()?, options)?;
    let stop = Arc::new(AtomicBool::new(false));

    let result = if args.headless {
        // Bind before announcing, so a second viscript on the same socket fails here.
        let socket = HeadlessServer::bind(&args.socket).with_context(|| {
            format!(
                "cannot create the viscript socket {}",
                args.socket.display()
            )
        })?;
        // A signal stops the accept loop at once (it waits in poll(2) on the socket and
        // this stop's eventfd, never on a timer).
        let stop_socket = StopSignal::new().context("cannot create the stop signal")?;
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .context("cannot install signal handlers")?;
        let notifier = crate::systemd_notifier();
        let on_signal = stop_socket.clone();
        let stopping = notifier.clone();
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                stopping.warn(stopping.stopping(&format!("signal {signal}: stopping the apps")));
                on_signal.stop();
            }
        });
        log::info!(
            "skywire: viscript: signal server on {signal_addr}; control socket {}",
            socket.path().display()
        );
        // Under systemd: ready once both sockets listen, and the watchdog pinged by the
        // launcher's ticker (the loop that restarts apps and escalates shutdowns).
        notifier.warn(notifier.ready(&format!(
            "signal server on {signal_addr}; control socket {}",
            socket.path().display()
        )));
        if let Some(heartbeat) = notifier.heartbeat() {
            launcher.set_heartbeat(heartbeat);
        }
        socket.serve(&launcher, &stop_socket);
        // After `exec quit` too (sent once: after a signal, nothing more).
        notifier.warn(notifier.stopping("stopping the apps"));
        Ok(())
    } else {
        // The console and GUI block in the terminal: a SIGTERM or hang-up stops the apps
        // and leaves from a thread of its own. Ctrl-C must not kill viscript and orphan
        // the apps (the prompt and the GUI read it as a key; during `attach`, Enter
        // detaches), so SIGINT only raises a flag nobody reads.
        signal_hook::flag::register(SIGINT, Arc::new(AtomicBool::new(false)))
            .context("cannot install signal handlers")?;
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP])
            .context("cannot install signal handlers")?;
        let on_signal = launcher.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                on_signal.shutdown();
                launcher::gui::restore_terminal();
                std::process::exit(0);
            }
        });
        eprintln!("skywire: viscript: signal server on {signal_addr}");
        if args.gui {
            launcher::gui::run(&launcher, &stop)
        } else {
            launcher::console::run(&launcher, &stop)
        }
    };
    log::info!("skywire: viscript: stopping every app");
    launcher.shutdown();
    result.context("the console failed")?;
    Ok(ExitCode::SUCCESS)
}

fn exec(args: &ExecArgs) -> anyhow::Result<ExitCode> {
    // A console command never starts with `-`: this is an option given after the first
    // word of the command line, or one exec does not have (`--config`: a headless
    // viscript is found by its socket), which would otherwise be sent as the command.
    if let Some(option) = args.words.first().filter(|w| w.starts_with('-')) {
        eprintln!(
            "skywire: viscript exec: {option}: not an option of exec and not a console \
             command; exec takes --socket PATH (default {}) and --json before the command, \
             as in `skywire viscript exec --socket PATH la`",
            headless::DEFAULT_SOCKET
        );
        return Ok(ExitCode::from(2));
    }
    let mut client = HeadlessClient::connect(&args.socket)?;
    let mut out = io::stdout().lock();
    if let [first, id] = args.words.as_slice()
        && first == "attach"
        && !args.json
        && let Ok(id) = id.parse()
    {
        let stop = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGINT, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
        client.follow(id, &mut out, &stop)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ok = client.exec(&args.words, None)?;
    let shown = if args.json {
        ok.get("data").cloned().unwrap_or_default().to_string()
    } else {
        ok.get("text")
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    writeln!(out, "{shown}")
        .and_then(|()| out.flush())
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// The signal client's settings from the environment and the original flags, and the
/// command line without those flags; a bad setting comes back as the error to report once
/// the log is set up (the client is then not started: it never stops a program from
/// running).
pub(crate) fn signal_client_from_env_and_args() -> (
    Result<signal::ClientConfig, signal::ClientConfigError>,
    Vec<OsString>,
) {
    let args: Vec<OsString> = std::env::args_os().collect();
    match signal::ClientConfig::from_env_and_args(args.clone()) {
        Ok((config, rest)) => (Ok(config), rest),
        Err(e) => (Err(e), args),
    }
}

/// Start the signal client when its settings say so; problems are logged as warnings.
pub(crate) fn start_signal_client(config: Result<signal::ClientConfig, signal::ClientConfigError>) {
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            log::warn!("skywire: warning: not a signal client: {e}");
            return;
        }
    };
    if !config.enabled {
        return;
    }
    // Shutdown over signal is SIGTERM to ourselves: every subcommand already handles it (or
    // dies of it) the way it should.
    let hook = Box::new(|| {
        let _ = signal_hook::low_level::raise(SIGTERM);
    });
    let server = config.server.clone();
    // The log, not `eprintln!`, which panics when standard error is gone (it is when
    // viscript died, which is when a fake server is most likely); the log drops the line.
    let warn = Box::new(move |e: &signal::AuthError| {
        log::warn!("skywire: warning: signal server {server}: {e}; not obeying it");
    });
    if let Err(e) = signal::client::spawn(config, hook, warn) {
        log::warn!("skywire: warning: not a signal client: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
