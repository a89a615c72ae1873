//! `skywire lab impair`: the impairment relay of the namespace tests
//! (`skywire_control::lab::impair`), hidden from `--help` because it is a test tool. Here
//! only the command line, stdin commands, signals and the report lines.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use skywire_control::lab::impair::Impairments;
use skywire_control::lab::impair::driver::{self, Relay, RelayCommand, RelayOptions};

/// Test tools of the namespace lab (not for production use)
#[derive(Debug, Args)]
pub(crate) struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    Impair(ImpairArgs),
}

/// A seeded UDP impairment relay: forward datagrams from --listen to --target and replies
/// back, losing, duplicating, reordering, delaying, corrupting, cutting and replaying them
///
/// Prints `ready ADDRESS` once listening. Reads commands on stdin, one a line:
/// `forward SETTINGS`, `back SETTINGS` (new settings for a direction) and `report` (print
/// the counters as one JSON line); SIGUSR1 prints them too. SIGTERM, SIGINT or the end of
/// stdin print them a last time and exit 0. SETTINGS: comma-separated `loss=5%`, `dup=0.1`,
/// `reorder=64`, `delay=10ms`, `jitter=2ms`, `flip=1%`, `truncate=1%`, `replay=1%`,
/// `late=1%` (with `late_by=5ms`: that share sent later, overtaken by the next), or `none`.
#[derive(Debug, Args)]
struct ImpairArgs {
    /// Where clients send to
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Where their datagrams go
    #[arg(long, value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// The local address datagrams to the target leave from [default: any]
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// The seed of every decision
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Settings from the client to the target
    #[arg(long, value_name = "SETTINGS", default_value = "none")]
    forward: Impairments,
    /// Settings from the target back to the client
    #[arg(long, value_name = "SETTINGS", default_value = "none")]
    back: Impairments,
    /// Write one JSON line per datagram (what was done to it) to this file
    #[arg(long, value_name = "PATH")]
    log: Option<PathBuf>,
}

pub(crate) fn lab(args: &LabArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        LabCommand::Impair(args) => impair(args),
    }
}

fn impair(args: &ImpairArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let report_now = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    signal_hook::flag::register(SIGUSR1, Arc::clone(&report_now))
        .context("cannot install signal handlers")?;
    let relay = Relay::bind(RelayOptions {
        listen: args.listen,
        target: args.target,
        bind: args.bind,
        seed: args.seed,
        forward: args.forward,
        back: args.back,
        log: args.log.clone(),
    })?;
    let (tx, commands) = mpsc::channel();
    let stdin_stop = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("impair-stdin".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                match line.parse::<RelayCommand>() {
                    Ok(command) => {
                        if tx.send(command).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("skywire lab impair: {line:?}: {e}"),
                }
            }
            stdin_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
        .context("cannot start the stdin thread")?;
    let mut out = io::stdout();
    writeln!(out, "ready {}", relay.listen_addr()?)?;
    out.flush()?;
    let report = relay.run(&commands, &stop, &report_now, &mut out)?;
    driver::write_report(&mut out, &report)?;
    Ok(ExitCode::SUCCESS)
}
