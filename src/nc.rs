//! `skywire nc`: netcat over app streams, the smallest real app. It is a client of the
//! node's app socket (`skywire_control::node::apps`), so it needs no root: only a user the
//! node lets in.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use skywire_control::config::DEFAULT_APP_SOCKET;
use skywire_control::node::apps::client::{self, JoinError, ListenRequest};
use skywire_control::node::apps::{AppClient, AppStream};
use skywire_dataplane::crypto::PublicKey;

/// Join standard input and output to a stream over the mesh, like netcat
///
/// `skywire nc KEY PORT` dials PORT on the node whose public key is KEY: standard input goes
/// to it (its end is a half-close) and what comes back goes to standard output, until both
/// sides are done. The local node carries the stream over a route to that node, asking its
/// node manager for one when it has none.
///
/// `skywire nc --listen PORT` waits for one stream on PORT of the local node and joins it
/// the same way. With --keep it serves streams until stopped, each to its own `--exec`
/// command (or echoing with --echo), several at once.
///
/// Needs no root: any user the node's `node.apps` settings let in (and root, and the node's
/// own user). Exits 1 when the stream fails or is reset (the reason is printed), 69 when no
/// node answers on the app socket, 77 when this user may not use it.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["key", "listen"])))]
pub(crate) struct NcArgs {
    /// The public key of the node to dial (64 hex digits)
    #[arg(value_name = "KEY", requires = "port", conflicts_with = "listen")]
    key: Option<PublicKey>,
    /// The port to dial on that node
    #[arg(value_name = "PORT")]
    port: Option<u16>,
    /// Listen on this port of the local node instead of dialing
    #[arg(long, short, value_name = "PORT")]
    listen: Option<u16>,
    /// Keep listening after the first stream, serving each with --exec or --echo
    #[arg(long, short, requires = "listen")]
    keep: bool,
    /// Run this shell command for each stream, joined to its standard input and output
    #[arg(
        long,
        short,
        value_name = "COMMAND",
        requires = "listen",
        conflicts_with = "echo"
    )]
    exec: Option<String>,
    /// Send every stream's bytes back to it
    #[arg(long, requires = "listen")]
    echo: bool,
    /// Accept streams only from these nodes (repeat the option; default: any node)
    #[arg(long, value_name = "KEY", requires = "listen")]
    allow: Vec<PublicKey>,
    /// Streams that may wait at once to be accepted
    #[arg(long, value_name = "N", default_value_t = 16, requires = "listen", value_parser = clap::value_parser!(u64).range(1..=1024))]
    backlog: u64,
    /// Give up a dial after this many seconds (the route on demand included)
    #[arg(long, short = 'w', value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    timeout: u64,
    /// The node's app socket
    #[arg(long, short, value_name = "PATH", default_value = DEFAULT_APP_SOCKET)]
    socket: PathBuf,
    /// Say on standard error which stream was opened, and from where
    #[arg(long, short)]
    verbose: bool,
}

pub(crate) fn nc(args: &NcArgs) -> anyhow::Result<ExitCode> {
    if args.keep && args.exec.is_none() && !args.echo {
        anyhow::bail!(
            "--keep serves many streams at once, which cannot share standard input: give \
             --exec COMMAND or --echo"
        );
    }
    let app = AppClient::new(&args.socket);
    match (args.key, args.port, args.listen) {
        (Some(key), Some(port), None) => dial(&app, key, port, args),
        (None, None, Some(port)) => listen(&app, port, args),
        // clap's groups leave nothing else.
        _ => anyhow::bail!("give KEY PORT to dial, or --listen PORT"),
    }
}

fn dial(app: &AppClient, key: PublicKey, port: u16, args: &NcArgs) -> anyhow::Result<ExitCode> {
    let stream = app
        .dial(key, port, Duration::from_secs(args.timeout))
        .with_context(|| format!("cannot open a stream to port {port} of {key}"))?;
    if args.verbose {
        let info = stream.info();
        eprintln!(
            "skywire nc: stream {} to {key} port {port} (from local port {})",
            stream.id(),
            info.local_port
        );
    }
    client::join(stream, io::stdin(), io::stdout()).map_err(stream_failed)?;
    Ok(ExitCode::SUCCESS)
}

fn listen(app: &AppClient, port: u16, args: &NcArgs) -> anyhow::Result<ExitCode> {
    let request = ListenRequest {
        port,
        backlog: usize::try_from(args.backlog).unwrap_or(usize::MAX),
        allow: (!args.allow.is_empty()).then(|| args.allow.clone()),
    };
    let mut listener = app
        .listen(request)
        .with_context(|| format!("cannot listen on port {port}"))?;
    if args.verbose {
        eprintln!("skywire nc: listening on port {}", listener.port());
    }
    loop {
        let incoming = listener.next_incoming().context("the listener ended")?;
        let stream = match app.accept(incoming.stream) {
            Ok(stream) => stream,
            // The stream may have ended (or timed out) between its arrival and now.
            Err(e) if args.keep => {
                eprintln!(
                    "skywire nc: cannot take the stream from {}: {e}",
                    incoming.peer
                );
                continue;
            }
            Err(e) => return Err(e).context("cannot take the stream"),
        };
        if args.verbose {
            eprintln!(
                "skywire nc: stream {} from {} port {}",
                stream.id(),
                incoming.peer,
                incoming.port
            );
        }
        if !args.keep {
            serve(stream, args)?;
            return Ok(ExitCode::SUCCESS);
        }
        let exec = args.exec.clone();
        let echo = args.echo;
        let peer = incoming.peer;
        let spawned = thread::Builder::new()
            .name("skywire-nc".to_owned())
            .spawn(move || {
                let served = if echo {
                    echo_stream(stream)
                } else {
                    exec_stream(stream, exec.as_deref().unwrap_or("cat"))
                };
                if let Err(e) = served {
                    eprintln!("skywire nc: stream from {peer}: {e:#}");
                }
            });
        if let Err(e) = spawned {
            eprintln!("skywire nc: cannot serve a stream: {e}");
        }
    }
}

/// Serve one stream as the options say: a command, an echo, or standard input and output.
fn serve(stream: AppStream, args: &NcArgs) -> anyhow::Result<()> {
    match (&args.exec, args.echo) {
        (Some(command), _) => exec_stream(stream, command),
        (None, true) => echo_stream(stream),
        (None, false) => client::join(stream, io::stdin(), io::stdout()).map_err(stream_failed),
    }
}

/// Send the stream's bytes back until its FIN, then FIN.
fn echo_stream(stream: AppStream) -> anyhow::Result<()> {
    let (mut reader, mut writer) = stream.split();
    io::copy(&mut reader, &mut writer).context("the stream failed")?;
    writer.finish().context("the stream failed")?;
    Ok(())
}

/// Run `command` (with `sh -c`) joined to the stream.
fn exec_stream(stream: AppStream, command: &str) -> anyhow::Result<()> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{command}`"))?;
    let (Some(input), Some(output)) = (child.stdout.take(), child.stdin.take()) else {
        anyhow::bail!("`{command}` started without its pipes");
    };
    let joined = client::join(stream, input, output);
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{command}`"))?;
    joined.map_err(stream_failed)?;
    if !status.success() {
        anyhow::bail!("`{command}` ended with {status}");
    }
    Ok(())
}

/// The error to show for a stream that failed: a reset says its reason.
fn stream_failed(error: JoinError) -> anyhow::Error {
    let _ = io::stdout().flush();
    match error {
        JoinError::Reset(reset) => anyhow::Error::new(reset),
        other => anyhow::Error::new(other),
    }
}
