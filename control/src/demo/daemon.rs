//! `skywire demo daemon`: what a node does as a daemon (issue 15), shown and checked on
//! loopback without root.
//!
//! Real `skywire node` processes with fresh keys ([`super::loopback`]); the demo plays
//! systemd and the operator. Step by step:
//!
//! 1. **Readiness and watchdog**: node A is started the way systemd starts a
//!    `Type=notify` service with a watchdog (`NOTIFY_SOCKET` naming a datagram socket of
//!    the demo's own, `WATCHDOG_USEC`, and `WATCHDOG_PID` its own pid). `READY=1` must be
//!    the first message, and the control socket must answer the moment it arrives; then
//!    `WATCHDOG=1` pings arrive at half the period.
//! 2. **Reload**: a broken config makes `skywire reload` exit 78 with FILE:LINE:COL and
//!    the key, and changes nothing; a good one that adds a route and removes another is
//!    applied as that difference only, while the route it keeps carries on (the same
//!    handshake count, and pings over it all through the reloads, none lost). SIGHUP, as
//!    `systemctl reload` sends it, gives `RELOADING=1` then `READY=1`.
//! 3. **Metrics**: A serves `node.metrics` on a free loopback port; `GET /metrics` over a
//!    plain TCP connection is read as the Prometheus text format (`exposition.rs`,
//!    and `promtool check metrics` when it is installed; a missing promtool is said, not
//!    failed), and its per-route bytes rise by what an app stream sent.
//! 4. **State across restarts**: a `skywire manager` and nodes D and E; D adds a route
//!    to E and keeps it in its state file (0600, in `node.state_dir` inside the demo's
//!    folder); D is killed with SIGKILL and started again, and the route must come back
//!    by itself within 5 s.
//! 5. **Usage ledger**: `skywire usage` at A and B after the stream of step 3: by app,
//!    the stream's bytes exactly at both ends; by route, what A sent on the wire is what
//!    B received and the other way round, to the packet; after A's clean stop, its day
//!    file read with `skywire usage --config` holds the same figures.
//!
//! Each step is a function in `STEPS` over the shared `Stage`; they run in order
//! (steps 2 and 3 use the node A of step 1). Another step is one more function and one
//! more entry. A step records its checks (PASS, FAIL, or SKIP for a check whose tool is
//! missing) and goes on where it can; only an error of the demo itself (its output, its
//! folder, a node that does not start, Ctrl-C) stops it. The watchdog period is 1 s (the
//! units say 10 s) so that the demo need not wait; everything else is as in production.
//! Nodes, manager and folder are gone when [`run`] returns, also on failure.

use core::fmt::Write as _;
use core::time::Duration;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use rustix::process::Signal;
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::RouteSetup;

use super::exposition::{Exposition, parse_exposition};
use super::loopback::{Launch, LoopbackError, LoopbackMesh, Planned, direct_route, free_tcp_addr};
use crate::config::{AcceptRule, MetricsConfig, NodeSection};
use crate::manager::proto::{LinkState, Mesh, MeshRouteId, RouteInfo, RouteList, RouteState};
use crate::manager::show::short;
use crate::node::apps::AppClient;
use crate::node::apps::client::ListenRequest;
use crate::node::ctl::{self, CtlError, Op, PongReply, StatusReply, request_status};
use crate::node::reload::ReloadSummary;
use crate::node::state::StateFile;
use crate::node::usage::report::{Report, Row};
use crate::node::usage::{Ledger, Tally};
use crate::notify;

/// The watchdog period given to A, in microseconds: pings are due every half of it.
const WATCHDOG_USEC: u64 = 1_000_000;
/// How long a node may take to say `READY=1`.
const READY_WITHIN: Duration = Duration::from_secs(15);
/// How long the demo listens to watchdog pings.
const PING_WINDOW: Duration = Duration::from_millis(2600);
/// The bound on a restarted node's routes coming back by themselves.
const ROUTE_BACK_WITHIN: Duration = Duration::from_secs(5);
/// How long a request to a node's control socket may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(5);
/// A route setup through the manager waits for every hop.
const ROUTE_ADD_TIMEOUT: Duration = Duration::from_secs(15);
/// The pinger's pace on the route that a reload keeps.
const PING_EVERY: Duration = Duration::from_millis(20);
/// Bytes of the app stream A -> B in the metrics step.
const STREAM_BYTES: u64 = 256 * 1024;
/// The port B listens on for it.
const STREAM_PORT: u16 = 9;

/// What to run.
#[derive(Debug, Clone)]
pub struct DaemonDemoOptions {
    /// The `skywire` binary: the nodes, the manager and `skywire reload`.
    pub program: PathBuf,
    /// Raised to stop early (Ctrl-C): the demo cleans up and returns
    /// [`DaemonDemoError::Interrupted`].
    pub interrupted: Arc<AtomicBool>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It held.
    Pass,
    /// It did not: the demo fails.
    Fail,
    /// It could not be made (a tool is not installed); said, not failed.
    Skip,
}

impl Verdict {
    fn tag(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One check, as printed.
#[derive(Debug, Clone)]
pub struct Check {
    /// The step it belongs to.
    pub step: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was checked, with what was measured.
    pub text: String,
}

/// Every check the demo made, and what it measured.
#[derive(Debug, Default)]
pub struct DaemonDemoSummary {
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// How long D's route took to come back after its restart (step 4).
    pub route_back: Option<Duration>,
    /// The demo's folder (removed by the time [`run`] returns).
    pub folder: PathBuf,
    /// How long the whole demo took.
    pub took: Duration,
}

impl DaemonDemoSummary {
    /// Whether checks were made and none failed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.count(Verdict::Fail) == 0
    }

    /// The failed checks, `step: text` each.
    pub fn failed(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| format!("{}: {}", c.step, c.text))
            .collect()
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }
}

/// Why the demo could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum DaemonDemoError {
    /// Making or starting the nodes or the manager failed.
    #[error(transparent)]
    Nodes(#[from] LoopbackError),
    /// The notification socket could not be made.
    #[error("cannot listen for notifications on {}", path.display())]
    Notify {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Ctrl-C (or SIGTERM): the demo stopped and cleaned up.
    #[error("interrupted")]
    Interrupted,
    /// Writing the report failed.
    #[error("cannot write the report")]
    Output(#[source] io::Error),
}

/// A step of the demo: its title and its function.
struct Step {
    title: &'static str,
    run: fn(&mut Stage<'_>) -> Result<(), DaemonDemoError>,
}

/// The steps, in order (see the module docs).
const STEPS: [Step; 5] = [
    Step {
        title: "readiness and watchdog",
        run: readiness,
    },
    Step {
        title: "reload",
        run: reload,
    },
    Step {
        title: "metrics",
        run: metrics,
    },
    Step {
        title: "state across restarts",
        run: restart_state,
    },
    Step {
        title: "usage ledger",
        run: usage,
    },
];

/// Run the demo, reporting to `out` as it goes.
pub fn run(
    out: &mut dyn Write,
    options: &DaemonDemoOptions,
) -> Result<DaemonDemoSummary, DaemonDemoError> {
    let started = Instant::now();
    let mesh = LoopbackMesh::new(&options.program, "demo-daemon")?;
    let folder = mesh.dir().to_owned();
    let notify_path = folder.join("notify.sock");
    let notify = NotifyListener::bind(&notify_path).map_err(|source| DaemonDemoError::Notify {
        path: notify_path.clone(),
        source,
    })?;
    let (a, b, c) = (mesh.plan("A")?, mesh.plan("B")?, mesh.plan("C")?);
    let metrics = free_tcp_addr().map_err(|source| LoopbackError::Prepare {
        dir: folder.clone(),
        source,
    })?;
    let mut stage = Stage {
        out,
        options,
        mesh,
        notify,
        notify_path,
        a,
        b,
        c,
        metrics,
        summary: DaemonDemoSummary {
            folder,
            ..DaemonDemoSummary::default()
        },
        step: "",
    };
    let result = stage.run_steps();
    let Stage {
        out,
        mesh,
        notify,
        mut summary,
        ..
    } = stage;
    // The nodes first: they say STOPPING=1 to a socket that is still there.
    drop(mesh);
    drop(notify);
    summary.took = started.elapsed();
    result?;
    report(out, &summary)?;
    Ok(summary)
}

/// The summary and the verdict.
fn report(out: &mut dyn Write, summary: &DaemonDemoSummary) -> Result<(), DaemonDemoError> {
    let (passed, failed, skipped) = (
        summary.count(Verdict::Pass),
        summary.count(Verdict::Fail),
        summary.count(Verdict::Skip),
    );
    let mut text = format!(
        "\nsummary: {} checks in {:.1} s: {passed} passed, {failed} failed, {skipped} skipped",
        summary.checks.len(),
        summary.took.as_secs_f64()
    );
    for check in summary.checks.iter().filter(|c| c.verdict == Verdict::Skip) {
        let _ = write!(text, "\n  skipped: {}: {}", check.step, check.text);
    }
    if summary.passed() {
        text.push_str("\nall checks passed; nodes and manager stopped, files removed");
    } else {
        text.push_str("\nsome checks FAILED:");
        for failure in summary.failed() {
            let _ = write!(text, "\n  - {failure}");
        }
        text.push_str("\nnodes and manager stopped, files removed");
    }
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(DaemonDemoError::Output)
}

/// What the steps share: the nodes, the notification socket, the report.
struct Stage<'a> {
    out: &'a mut dyn Write,
    options: &'a DaemonDemoOptions,
    mesh: LoopbackMesh,
    notify: NotifyListener,
    notify_path: PathBuf,
    /// A (the node under systemd's eye), B and C (its peers).
    a: Planned,
    b: Planned,
    c: Planned,
    /// Where A serves its metrics.
    metrics: SocketAddr,
    summary: DaemonDemoSummary,
    /// The step running, for the checks it records.
    step: &'static str,
}

impl Stage<'_> {
    fn run_steps(&mut self) -> Result<(), DaemonDemoError> {
        self.say(&format!(
            "skywire demo daemon: the node as a daemon, on loopback, no root \
             (folder {})",
            self.mesh.dir().display()
        ))?;
        for (n, step) in STEPS.iter().enumerate() {
            self.interrupted()?;
            self.step = step.title;
            self.say(&format!("\n{}. {}", n + 1, step.title))?;
            (step.run)(self)?;
        }
        Ok(())
    }

    fn say(&mut self, text: &str) -> Result<(), DaemonDemoError> {
        writeln!(self.out, "{text}").map_err(DaemonDemoError::Output)
    }

    /// Record and print a check; returns `ok`.
    fn check(&mut self, ok: bool, text: impl Into<String>) -> Result<bool, DaemonDemoError> {
        self.record(if ok { Verdict::Pass } else { Verdict::Fail }, text.into())?;
        Ok(ok)
    }

    fn record(&mut self, verdict: Verdict, text: String) -> Result<(), DaemonDemoError> {
        self.say(&format!("   {}  {text}", verdict.tag()))?;
        self.summary.checks.push(Check {
            step: self.step,
            verdict,
            text,
        });
        Ok(())
    }

    fn interrupted(&self) -> Result<(), DaemonDemoError> {
        if self.options.interrupted.load(Ordering::Relaxed) {
            return Err(DaemonDemoError::Interrupted);
        }
        Ok(())
    }

    /// A's config: `routes`, and metrics on [`Self::metrics`] with per-route series.
    fn section_of_a(&self, routes: Vec<RouteSetup>) -> NodeSection {
        let mut section = LoopbackMesh::section(&self.a);
        section.routes = routes;
        section.metrics = Some(MetricsConfig {
            listen: self.metrics,
            per_route: true,
        });
        section
    }

    /// The control socket and pid of the running node `name`; a failed check if it is
    /// not running.
    fn running(&mut self, name: &str) -> Result<Option<(PathBuf, u32)>, DaemonDemoError> {
        let found = self.mesh.node(name).map(|(i, _)| i);
        let alive = found
            .and_then(|i| self.mesh.nodes.get_mut(i))
            .and_then(|node| node.is_running().then(|| (node.socket.clone(), node.pid())));
        if alive.is_none() {
            self.check(false, format!("node {name} is not running"))?;
        }
        Ok(alive)
    }

    /// Run `skywire ARGS`.
    fn skywire(&self, args: &[&str], socket: &Path) -> io::Result<Output> {
        Command::new(&self.options.program)
            .args(args)
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .output()
    }
}

/// A ping over the route to `peer`, through the node's control socket (`skywire ping`).
fn ping(socket: &Path, peer: PublicKey) -> Result<PongReply, CtlError> {
    ctl::request(socket, Op::Ping { peer }, CTL_TIMEOUT)
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A count, or `?` when it could not be read.
fn count_text(count: Option<u64>) -> String {
    count.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn route_names(status: &StatusReply) -> Vec<&str> {
    status.routes.iter().map(|r| r.name.as_str()).collect()
}

fn handshakes(status: &StatusReply, route: &str) -> Option<u64> {
    status
        .routes
        .iter()
        .find(|r| r.name == route)
        .map(|r| r.handshakes)
}

/// A pong's text, or the error's.
fn pong_text(pong: &Result<PongReply, CtlError>) -> String {
    match pong {
        Ok(p) => format!(
            "via {} in {}",
            p.route,
            millis(Duration::from_micros(p.rtt_us))
        ),
        Err(e) => format!("no pong: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Readiness and watchdog

fn readiness(stage: &mut Stage<'_>) -> Result<(), DaemonDemoError> {
    let (a, b, c) = (stage.a.clone(), stage.b.clone(), stage.c.clone());
    // B and C first, so that A's routes have their far ends from the start.
    for (plan, routes) in [
        (&b, vec![direct_route("to-a", &a, 200, 100)]),
        (
            &c,
            vec![
                direct_route("to-a", &a, 400, 300),
                // A's at the next reload (step 2); C has it from the start.
                direct_route("to-a2", &a, 600, 500),
            ],
        ),
    ] {
        let mut section = LoopbackMesh::section(plan);
        section.routes = routes;
        stage.mesh.start(plan, section)?;
    }
    stage.say(&format!(
        "   B {} {} and C {} {}: A's peers, started as usual",
        short(&b.key),
        b.addr,
        short(&c.key),
        c.addr
    ))?;
    let launch = Launch {
        env: vec![
            (
                notify::NOTIFY_SOCKET.to_owned(),
                OsString::from(stage.notify_path.as_os_str()),
            ),
            (
                notify::WATCHDOG_USEC.to_owned(),
                OsString::from(WATCHDOG_USEC.to_string()),
            ),
        ],
        watchdog_pid: true,
        no_wait: true,
    };
    let section = stage.section_of_a(vec![
        direct_route("to-b", &b, 100, 200),
        direct_route("to-c", &c, 300, 400),
    ]);
    let started = Instant::now();
    let (socket, pid) = {
        let node = stage.mesh.start_with(&a, section, launch)?;
        (node.socket.clone(), node.pid())
    };
    stage.say(&format!(
        "   A {} {} started as systemd starts a Type=notify service with WatchdogSec=1s:\n   \
         NOTIFY_SOCKET={} WATCHDOG_USEC={WATCHDOG_USEC} WATCHDOG_PID={pid} (its own pid)",
        short(&a.key),
        a.addr,
        stage.notify_path.display()
    ))?;
    let mut first: Option<(Duration, String)> = None;
    while first.is_none() && started.elapsed() < READY_WITHIN {
        stage.interrupted()?;
        first = stage
            .notify
            .next(Duration::from_millis(100))
            .map(|message| (message.at.duration_since(started), message.text));
    }
    // The moment READY=1 is read, the control socket must answer.
    let at_ready = request_status(&socket, CTL_TIMEOUT);
    let Some((ready_after, ready)) = first else {
        stage.check(
            false,
            format!("no message on the notify socket within {READY_WITHIN:?}"),
        )?;
        return Ok(());
    };
    stage.say(&format!(
        "   after {}: {:?}",
        millis(ready_after),
        ready.trim_end()
    ))?;
    stage.check(
        ready.starts_with("READY=1\nSTATUS=forwarding: node "),
        format!(
            "READY=1 is the first message, {} after the start, with a status line",
            millis(ready_after)
        ),
    )?;
    match at_ready {
        Ok(status) => stage.check(
            status.routes.len() == 2,
            format!(
                "the control socket answered the moment READY=1 was read: {} routes",
                status.routes.len()
            ),
        )?,
        Err(e) => stage.check(
            false,
            format!("the control socket did not answer at READY=1: {e}"),
        )?,
    };
    let pings = stage.notify.collect(PING_WINDOW);
    let others: Vec<&str> = pings
        .iter()
        .map(|m| m.text.as_str())
        .filter(|t| *t != "WATCHDOG=1\n")
        .collect();
    let every = Duration::from_micros(WATCHDOG_USEC / 2);
    let expected = PING_WINDOW.as_millis() / every.as_millis().max(1);
    let count = pings.len() as u128;
    let gaps: Vec<Duration> = pings
        .windows(2)
        .filter_map(|w| match w {
            [x, y] => Some(y.at.duration_since(x.at)),
            _ => None,
        })
        .collect();
    let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len().max(1)).unwrap_or(1);
    stage.check(
        others.is_empty() && count >= expected / 2 && count <= expected * 2 + 1,
        format!(
            "WATCHDOG=1 pings from the engine loop: {count} in {:.1} s, {} apart on average \
             (due every {}){}",
            PING_WINDOW.as_secs_f64(),
            millis(mean),
            millis(every),
            if others.is_empty() {
                String::new()
            } else {
                format!("; other messages: {others:?}")
            }
        ),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Reload

fn reload(stage: &mut Stage<'_>) -> Result<(), DaemonDemoError> {
    let Some((socket, pid)) = stage.running("A")? else {
        return Ok(());
    };
    let (a, b, c) = (stage.a.clone(), stage.b.clone(), stage.c.clone());
    let config = a.config();
    let (pong_b, pong_c) = (ping(&socket, b.key), ping(&socket, c.key));
    let before = request_status(&socket, CTL_TIMEOUT).ok();
    let to_b_handshakes = before.as_ref().and_then(|s| handshakes(s, "to-b"));
    stage.say(&format!(
        "   A's routes: to-b (B) and to-c (C); ping B {}, ping C {}; to-b: {} handshake(s)",
        pong_text(&pong_b),
        pong_text(&pong_c),
        count_text(to_b_handshakes)
    ))?;
    stage.check(
        pong_b.as_ref().is_ok_and(|p| p.route == "to-b")
            && pong_c.as_ref().is_ok_and(|p| p.route == "to-c"),
        "both routes carry pings before the reloads",
    )?;
    // Pings over to-b, the route every reload keeps, from here to the end of the step.
    let pinger = Pinger::start(socket.clone(), b.key);

    // A broken file: a misspelt key.
    let mut lines: Vec<String> = fs::read_to_string(&config)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let typo = lines
        .iter()
        .position(|l| l.trim_start().starts_with("per_route:"));
    if let Some(index) = typo
        && let Some(line) = lines.get_mut(index)
    {
        *line = line.replacen("per_route:", "per_rout:", 1);
        let (line_no, broken_line) = (index + 1, line.trim().to_owned());
        let broken = lines.join("\n") + "\n";
        let wrote = fs::write(&config, broken);
        stage.say(&format!(
            "   a broken config: line {line_no} of {} now reads `{broken_line}`\n   $ skywire reload",
            config.display(),
        ))?;
        let outcome = wrote.and_then(|()| stage.skywire(&["reload"], &socket));
        match outcome {
            Ok(output) => {
                let code = output.status.code();
                let err = String::from_utf8_lossy(&output.stderr).trim().to_owned();
                let shown = code.map_or_else(|| output.status.to_string(), |c| c.to_string());
                stage.say(&format!("   exit {shown}: {err}"))?;
                let place = format!("{}:{line_no}:", config.display());
                let (exit_ok, place_ok, key_ok) = (
                    code == Some(78),
                    err.contains(&place),
                    err.contains("node.metrics.per_rout"),
                );
                let missing: Vec<&str> = [
                    (exit_ok, "exit 78"),
                    (place_ok, "FILE:LINE"),
                    (key_ok, "the key"),
                ]
                .into_iter()
                .filter_map(|(ok, what)| (!ok).then_some(what))
                .collect();
                stage.check(
                    missing.is_empty(),
                    format!(
                        "refused with exit {shown}{}, the message naming the file, line \
                         {line_no} and the key{}",
                        if exit_ok {
                            " (bad configuration)"
                        } else {
                            " (78, bad configuration, expected)"
                        },
                        if missing.is_empty() {
                            String::new()
                        } else {
                            format!("; missing: {}", missing.join(", "))
                        }
                    ),
                )?;
            }
            Err(e) => {
                stage.check(false, format!("cannot run skywire reload: {e}"))?;
            }
        }
        let still = request_status(&socket, CTL_TIMEOUT);
        let running = stage
            .mesh
            .node("A")
            .map(|(i, _)| i)
            .and_then(|i| stage.mesh.nodes.get_mut(i))
            .is_some_and(|node| node.is_running());
        let names = still.as_ref().map(route_names).unwrap_or_default();
        stage.check(
            running && names == ["to-b", "to-c"],
            format!("the node runs on with its old routes: {}", names.join(", ")),
        )?;
    } else {
        stage.check(false, "A's config has no `per_route:` line to misspell")?;
    }

    // A good file: to-b as it was, to-c gone, to-c2 new.
    stage.mesh.write_config(
        &a,
        stage.section_of_a(vec![
            direct_route("to-b", &b, 100, 200),
            direct_route("to-c2", &c, 500, 600),
        ]),
    )?;
    stage.say("   a good config: to-b as it was, to-c removed, to-c2 (C) added\n   $ skywire reload --json")?;
    let applied = stage
        .skywire(&["reload", "--json"], &socket)
        .map_err(|e| e.to_string())
        .and_then(|output| {
            if output.status.success() {
                serde_json::from_slice::<ReloadSummary>(&output.stdout)
                    .map_err(|e| format!("its answer: {e}"))
            } else {
                Err(format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        });
    match applied {
        Ok(summary) => {
            stage.say(&format!("   reloaded: {summary}"))?;
            stage.check(
                (
                    summary.routes_added,
                    summary.routes_removed,
                    summary.routes_kept,
                ) == (1, 1, 1)
                    && summary.relays_added + summary.relays_removed == 0
                    && summary.restart_needed.is_empty(),
                "only the difference was applied: 1 route added, 1 removed, 1 kept",
            )?;
        }
        Err(e) => {
            stage.check(false, format!("skywire reload failed: {e}"))?;
        }
    }
    let after = request_status(&socket, CTL_TIMEOUT).ok();
    let names = after.as_ref().map(route_names).unwrap_or_default();
    let pong_c2 = ping(&socket, c.key);
    stage.check(
        names == ["to-b", "to-c2"] && pong_c2.as_ref().is_ok_and(|p| p.route == "to-c2"),
        format!(
            "A's routes now: {}; ping C {}",
            names.join(", "),
            pong_text(&pong_c2)
        ),
    )?;
    let to_b_after = after.as_ref().and_then(|s| handshakes(s, "to-b"));
    stage.check(
        to_b_handshakes.is_some() && to_b_after == to_b_handshakes,
        format!(
            "to-b kept its session: {} handshake(s) before the reload, {} after",
            count_text(to_b_handshakes),
            count_text(to_b_after)
        ),
    )?;

    // SIGHUP, as `systemctl reload` sends it (the unit's ExecReload).
    stage.notify.discard();
    let hup = stage
        .mesh
        .node("A")
        .map_or(Err(io::Error::other("A is gone")), |(_, node)| {
            node.signal(Signal::HUP)
        });
    stage.say(&format!("   $ kill -HUP {pid}"))?;
    if let Err(e) = hup {
        stage.check(false, format!("cannot send SIGHUP: {e}"))?;
    }
    let said: Vec<String> = stage
        .notify
        .collect(Duration::from_millis(1500))
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t != "WATCHDOG=1\n")
        .collect();
    for message in &said {
        stage.say(&format!("   {:?}", message.trim_end()))?;
    }
    let in_order = matches!(said.as_slice(), [reloading, ready]
        if reloading.starts_with("RELOADING=1\n")
            && ready.starts_with("READY=1\nSTATUS=config reloaded: routes: 0 added, 0 removed, 2 kept"));
    stage.check(
        in_order,
        "SIGHUP: RELOADING=1, then READY=1 once the config was read again (nothing to change)",
    )?;

    let (answered, lost) = pinger.stop();
    stage.check(
        answered > 0 && lost.is_empty(),
        format!(
            "pings over to-b every {} all through the reloads: {answered} answered, {} lost{}",
            millis(PING_EVERY),
            lost.len(),
            lost.first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
    )?;
    Ok(())
}

/// Pings over the route to one peer, one every [`PING_EVERY`], on a thread of their own.
struct Pinger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, Vec<String>)>>,
}

impl Pinger {
    fn start(socket: PathBuf, peer: PublicKey) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("demo-pinger".to_owned())
            .spawn(move || {
                let (mut answered, mut lost) = (0u64, Vec::new());
                while !flag.load(Ordering::Relaxed) {
                    match ping(&socket, peer) {
                        Ok(_) => answered += 1,
                        Err(e) => lost.push(e.to_string()),
                    }
                    thread::sleep(PING_EVERY);
                }
                (answered, lost)
            })
            .ok();
        Self { stop, thread }
    }

    /// Stop it: pings answered, and why each other one failed.
    fn stop(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(counts)) => counts,
            Some(Err(_)) => (0, vec!["the pinger panicked".to_owned()]),
            None => (0, vec!["no thread for the pinger".to_owned()]),
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. Metrics

fn metrics(stage: &mut Stage<'_>) -> Result<(), DaemonDemoError> {
    if stage.running("A")?.is_none() {
        return Ok(());
    }
    let addr = stage.metrics;
    stage.say(&format!(
        "   node.metrics: {{listen: {addr}, per_route: true}} in A's config\n   \
         GET http://{addr}/metrics (a plain TCP connection)"
    ))?;
    let first = match scrape(addr) {
        Ok(first) => first,
        Err(e) => {
            stage.check(false, format!("GET /metrics: {e}"))?;
            return Ok(());
        }
    };
    stage.check(
        first.status == "HTTP/1.1 200 OK"
            && first.content_type.starts_with("text/plain; version=0.0.4"),
        format!(
            "{}, Content-Type: {}, {} bytes",
            first.status,
            first.content_type,
            first.body.len()
        ),
    )?;
    let parsed = match parse_exposition(&first.body) {
        Ok(parsed) => {
            stage.check(
                !parsed.samples.is_empty(),
                format!(
                    "it reads as the Prometheus text format: {} families (each with TYPE, {} \
                     with HELP), {} samples, each in its family",
                    parsed.families,
                    parsed.helps,
                    parsed.samples.len()
                ),
            )?;
            Some(parsed)
        }
        Err(e) => {
            stage.check(false, format!("not the Prometheus text format: {e}"))?;
            None
        }
    };
    match promtool_check(&first.body) {
        None => stage.record(
            Verdict::Skip,
            "promtool check metrics: promtool is not on PATH (Debian: apt-get install prometheus)"
                .to_owned(),
        )?,
        Some(Ok(said)) => {
            stage.check(true, format!("promtool check metrics: passed{said}"))?;
        }
        Some(Err(said)) => {
            stage.check(false, format!("promtool check metrics: {said}"))?;
        }
    }
    let b = stage.b.clone();
    let to_b = |e: &Exposition, name: &str| e.value(name, Some(("route", "to-b")));
    if let Some(parsed) = &parsed {
        let mut lines = String::new();
        for (name, label) in [
            ("skywire_build_info", None),
            ("skywire_node_routes", None),
            ("skywire_node_handshakes_total", None),
            ("skywire_route_handshakes_total", Some(("route", "to-b"))),
            ("skywire_route_tx_bytes_total", Some(("route", "to-b"))),
        ] {
            if let Some(sample) = parsed.find(name, label) {
                let _ = write!(lines, "\n   | {sample}");
            }
        }
        stage.say(&format!("   a few of its series:{lines}"))?;
    }

    // Traffic on to-b: an app stream A -> B.
    let (app_a, app_b) = match (stage.mesh.node("A"), stage.mesh.node("B")) {
        (Some((_, a)), Some((_, b))) => (a.app_socket.clone(), b.app_socket.clone()),
        _ => {
            stage.check(false, "A or B is gone")?;
            return Ok(());
        }
    };
    let sent = stream(&app_a, &app_b, b.key, STREAM_BYTES);
    stage.say(&format!(
        "   {} KiB over an app stream A -> B (route to-b): {}",
        STREAM_BYTES / 1024,
        match &sent {
            Ok(n) => format!("{n} bytes arrived"),
            Err(e) => format!("failed: {e}"),
        }
    ))?;
    let second = scrape(addr).map_err(|e| e.to_string()).and_then(|s| {
        parse_exposition(&s.body).map_err(|e| format!("not the Prometheus text format: {e}"))
    });
    match (&parsed, &second, &sent) {
        (Some(before), Ok(after), Ok(sent)) => {
            let series = "skywire_route_tx_bytes_total";
            let (x, y) = (to_b(before, series), to_b(after, series));
            if let Some(sample) = after.find(series, Some(("route", "to-b"))) {
                stage.say(&format!("   | {sample}"))?;
            }
            let rose = match (x, y) {
                (Some(x), Some(y)) => y - x,
                _ => f64::NAN,
            };
            stage.check(
                rose >= *sent as f64,
                format!(
                    "{series}{{route=\"to-b\"}} rose by {rose} bytes, at least the {sent} \
                     the stream carried (TCP/IP headers on top)"
                ),
            )?;
        }
        (_, Err(e), _) => {
            stage.check(false, format!("the second GET /metrics: {e}"))?;
        }
        _ => {
            stage.check(false, "no figures to compare (see above)")?;
        }
    }
    Ok(())
}

/// A `/metrics` response.
struct Scrape {
    status: String,
    content_type: String,
    body: String,
}

/// `GET /metrics` from `addr` over a plain TCP connection, as a scraper sends it.
fn scrape(addr: SocketAddr) -> Result<Scrape, String> {
    let mut conn = TcpStream::connect_timeout(&addr, CTL_TIMEOUT).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(CTL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain;version=0.0.4\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8(response).map_err(|_| "a response that is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("a response without the end of its head")?;
    let status = head.split("\r\n").next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let content_type = header("content-type").unwrap_or_default();
    if let Some(length) = header("content-length")
        && length.parse::<usize>().ok() != Some(body.len())
    {
        return Err(format!(
            "Content-Length {length}, but {} bytes came",
            body.len()
        ));
    }
    Ok(Scrape {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// `promtool check metrics` on `text`: `None` when promtool is not on PATH, else whether it
/// passed, with what it said.
fn promtool_check(text: &str) -> Option<Result<String, String>> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("cannot run promtool: {e}"))),
    };
    let wrote = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(text.as_bytes()));
    let output = match child.wait_with_output() {
        Ok(output) => output,
        Err(e) => return Some(Err(format!("promtool: {e}"))),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_owned();
    Some(match wrote {
        Some(Err(e)) => Err(format!("cannot write to promtool: {e}")),
        _ if output.status.success() && said.is_empty() => Ok(" (no problems found)".to_owned()),
        _ if output.status.success() => Ok(format!(": {said}")),
        _ => Err(format!("{}: {said}", output.status)),
    })
}

/// `bytes` over an app stream from the node of `from` to port [`STREAM_PORT`] of the node
/// of `to` (key `to_key`): how many arrived, once the far end read to the end.
fn stream(from: &Path, to: &Path, to_key: PublicKey, bytes: u64) -> Result<u64, String> {
    let mut listener = AppClient::new(to)
        .listen(ListenRequest::on(STREAM_PORT))
        .map_err(|e| format!("B cannot listen: {e}"))?;
    let reader = thread::spawn(move || -> Result<u64, String> {
        let mut stream = listener.accept().map_err(|e| format!("B: accept: {e}"))?;
        io::copy(&mut stream, &mut io::sink()).map_err(|e| format!("B: read: {e}"))
    });
    let mut stream = AppClient::new(from)
        .dial(to_key, STREAM_PORT, CTL_TIMEOUT)
        .map_err(|e| format!("A cannot open a stream to B: {e}"))?;
    let block = vec![0x5a_u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(block.len());
        stream
            .write_all(block.get(..n).unwrap_or_default())
            .map_err(|e| format!("A: write: {e}"))?;
        left -= n as u64;
    }
    stream
        .shutdown_write()
        .map_err(|e| format!("A: half-close: {e}"))?;
    let got = reader
        .join()
        .map_err(|_| "B's side panicked".to_owned())??;
    if got != bytes {
        return Err(format!("B read {got} bytes of {bytes}"));
    }
    Ok(got)
}

// ---------------------------------------------------------------------------------------
// 4. State across restarts

fn restart_state(stage: &mut Stage<'_>) -> Result<(), DaemonDemoError> {
    let (d, e) = (stage.mesh.plan("D")?, stage.mesh.plan("E")?);
    // E lets D's route ends in, for streams (no prefixes: neither has a TUN device).
    let accept_d = AcceptRule {
        peer: Some(d.key),
        prefixes: Vec::new(),
    };
    let (sd, se, listen, manager_key) = {
        let manager = stage
            .mesh
            .start_manager(|m| m.links = vec![[d.key, e.key]])?;
        (
            LoopbackMesh::managed_section(&d, manager, Vec::new()),
            LoopbackMesh::managed_section(&e, manager, vec![accept_d]),
            manager.listen,
            manager.key,
        )
    };
    let state_dir = sd.state_dir.clone();
    stage.mesh.start(&d, sd)?;
    stage.mesh.start(&e, se)?;
    stage.say(&format!(
        "   skywire manager {} on {listen}, with the link D - E in its config\n   \
         D {} {} and E {} {} registered with it; D's node.state_dir: {}",
        short(&manager_key),
        short(&d.key),
        d.addr,
        short(&e.key),
        e.addr,
        state_dir.display()
    ))?;
    let Some((socket, pid)) = stage.running("D")? else {
        return Ok(());
    };
    // Both online and the link proven by both ends: routes use no other.
    let ready = wait_for(Duration::from_secs(10), || {
        ctl::request::<Mesh>(&socket, Op::Nodes, CTL_TIMEOUT).is_ok_and(|mesh| {
            mesh.nodes.len() == 2
                && mesh.nodes.iter().all(|n| n.online)
                && mesh.links.iter().any(|l| l.state == LinkState::Up)
        })
    });
    if !stage.check(
        ready.is_some(),
        "D and E online at the manager, their link up",
    )? {
        return Ok(());
    }
    stage.say("   $ skywire route add E (on D)")?;
    let mut added: Option<RouteInfo> = None;
    let mut refusal = String::new();
    let _ = wait_for(Duration::from_secs(10), || {
        let op = Op::RouteAdd {
            dst: e.key,
            min_hops: None,
            max_hops: None,
            avoid: Vec::new(),
            weight: None,
        };
        match ctl::request::<RouteInfo>(&socket, op, ROUTE_ADD_TIMEOUT) {
            Ok(route) => added = Some(route),
            Err(why) => refusal = why.to_string(),
        }
        added.is_some()
    });
    let Some(route) = added else {
        stage.check(false, format!("route add failed: {refusal}"))?;
        return Ok(());
    };
    let id = route.id;
    let pong = ping(&socket, e.key);
    stage.check(
        route.state == RouteState::Active && pong_ok(&pong, id),
        format!(
            "route {id}: D -> E, {}; ping E {}",
            route.state,
            pong_text(&pong)
        ),
    )?;
    let file = StateFile::path(&state_dir, &d.key);
    let saved = wait_for(Duration::from_secs(5), || {
        fs::read_to_string(&file).is_ok_and(|t| t.contains(&id.to_string()))
    });
    let mode = |path: &Path| {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default()
    };
    let (file_mode, dir_mode) = (mode(&file), mode(&state_dir));
    let text = fs::read_to_string(&file).unwrap_or_default();
    let shown: String = text.lines().map(|l| format!("\n   | {l}")).collect();
    stage.say(&format!("   {}:{shown}", file.display()))?;
    stage.check(
        saved.is_some() && file_mode == 0o600 && dir_mode == 0o700,
        format!(
            "D's state file {} lists route {id}: mode {file_mode:04o} in a {dir_mode:04o} folder",
            file.display()
        ),
    )?;

    // kill -9, and a start from the same config.
    let Some(index) = stage.mesh.node("D").map(|(i, _)| i) else {
        return Ok(());
    };
    if let Some(node) = stage.mesh.nodes.get_mut(index) {
        node.kill();
    }
    stage.say(&format!(
        "   $ kill -9 {pid}; then D is started again from the same config (no route add)"
    ))?;
    let restarted = Instant::now();
    stage.mesh.restart(index)?;
    let answering = restarted.elapsed();
    // From the new process's start to the first pong over the route it owned.
    let back = wait_for(ROUTE_BACK_WITHIN * 3, || pong_ok(&ping(&socket, e.key), id))
        .map(|_| restarted.elapsed());
    stage.summary.route_back = back;
    let restored = stage
        .mesh
        .nodes
        .get(index)
        .map(|node| node.log_text())
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.contains("restored from"))
        .map(|l| crate::logging::message(l).to_owned());
    if let Some(line) = restored {
        stage.say(&format!("   D's log: {line}"))?;
    }
    match back {
        Some(took) => {
            stage.say(&format!(
                "   after the start: control socket answering at {}, the first pong over route \
                 {id} at {}",
                millis(answering),
                millis(took)
            ))?;
            stage.check(
                took < ROUTE_BACK_WITHIN,
                format!(
                    "the route came back by itself in {:.2} s (the bound: {} s)",
                    took.as_secs_f64(),
                    ROUTE_BACK_WITHIN.as_secs()
                ),
            )?;
        }
        None => {
            stage.check(
                false,
                format!(
                    "the route did not come back within {} s",
                    (ROUTE_BACK_WITHIN * 3).as_secs()
                ),
            )?;
        }
    }
    let listed = ctl::request::<RouteList>(&socket, Op::RouteLs, CTL_TIMEOUT);
    let ids: Vec<String> = listed
        .as_ref()
        .map(|l| {
            l.routes
                .iter()
                .map(|r| format!("{} ({})", r.id, r.state))
                .collect()
        })
        .unwrap_or_default();
    stage.check(
        listed.is_ok_and(|l| l.routes.len() == 1 && l.routes.iter().all(|r| r.id == id)),
        format!(
            "D owns the same route, and only it: route ls: {}",
            ids.join(", ")
        ),
    )?;
    Ok(())
}

/// Whether `pong` came over the manager's route `id`.
fn pong_ok(pong: &Result<PongReply, CtlError>, id: MeshRouteId) -> bool {
    pong.as_ref().is_ok_and(|p| p.manager_route == Some(id))
}

/// Ask `done` every 50 ms until it holds (how long that took) or `within` passed (`None`).
fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// The notification socket

/// One datagram from a node, and when it arrived.
struct Message {
    at: Instant,
    text: String,
}

/// The demo's `NOTIFY_SOCKET`: a datagram socket read at once by a thread of its own, as
/// systemd reads its own. A reader that waited would let the queue fill (10 datagrams,
/// `net.unix.max_dgram_qlen`), and the node's pings would then fail.
struct NotifyListener {
    messages: Receiver<Message>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NotifyListener {
    fn bind(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::bind(path)?;
        // Woken now and then to see whether it should stop.
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let (send, messages) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("demo-notify".to_owned())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
                        let message = Message {
                            at: Instant::now(),
                            text: text.into_owned(),
                        };
                        if send.send(message).is_err() {
                            break;
                        }
                    }
                }
            })?;
        Ok(Self {
            messages,
            stop,
            thread: Some(thread),
        })
    }

    /// The next message within `timeout`.
    fn next(&self, timeout: Duration) -> Option<Message> {
        self.messages.recv_timeout(timeout).ok()
    }

    /// Every message for `window`.
    fn collect(&self, window: Duration) -> Vec<Message> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) => got.push(message),
                None => break,
            }
        }
        got
    }

    /// Forget what came so far.
    fn discard(&self) {
        while self.messages.try_recv().is_ok() {}
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Usage ledger

/// `skywire usage --json --by BY` at the node on `socket` (or, with `config`, from its
/// files).
fn usage_report(
    stage: &Stage<'_>,
    socket: &Path,
    by: &str,
    config: Option<&Path>,
) -> Result<Report, String> {
    let mut args = vec!["usage", "--json", "--by", by];
    let config_text = config.map(|c| c.display().to_string());
    if let Some(c) = config_text.as_deref() {
        args.extend(["--config", c]);
    }
    let out = stage.skywire(&args, socket).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("usage --json: {e}"))
}

/// The line of `report` for the route to `peer`, or for the app `name`.
fn row<'r>(report: &'r Report, peer: Option<PublicKey>, name: Option<&str>) -> Option<&'r Row> {
    report.rows.iter().find(|r| {
        peer.is_none_or(|k| r.peer.is_some_and(|p| p.0 == k))
            && name.is_none_or(|n| r.name.as_deref() == Some(n))
    })
}

fn tally(t: Option<Tally>) -> String {
    t.map_or_else(
        || "?".to_owned(),
        |t| format!("{} packets, {} bytes", t.packets, t.bytes),
    )
}

fn usage(stage: &mut Stage<'_>) -> Result<(), DaemonDemoError> {
    let (Some((sa, _)), Some((sb, _))) = (stage.running("A")?, stage.running("B")?) else {
        return Ok(());
    };
    let (a, b) = (stage.a.clone(), stage.b.clone());
    let service = format!("port {STREAM_PORT}");
    stage.say(&format!(
        "   $ skywire usage --by app (A, then B): the {} KiB stream of step 3 on {service}",
        STREAM_BYTES / 1024
    ))?;
    let apps = (
        usage_report(stage, &sa, "app", None),
        usage_report(stage, &sb, "app", None),
    );
    match apps {
        (Ok(at_a), Ok(at_b)) => {
            let sent = row(&at_a, None, Some(&service)).map(|r| r.sent.bytes);
            let got = row(&at_b, None, Some(&service)).map(|r| r.received.bytes);
            stage.check(
                sent == Some(STREAM_BYTES) && got == Some(STREAM_BYTES),
                format!(
                    "{service}: A's apps sent {} bytes, B's received {}: the stream's {STREAM_BYTES}, exactly",
                    count_text(sent),
                    count_text(got)
                ),
            )?;
        }
        (Err(e), _) | (_, Err(e)) => {
            stage.check(false, format!("skywire usage --by app: {e}"))?;
        }
    }
    // The route A - B on the wire, both ways. Nothing else uses it now, but a keepalive
    // may cross between the two asks: then ask again.
    let mut agreed = None;
    for _ in 0..5 {
        let (at_a, at_b) = match (
            usage_report(stage, &sa, "route", None),
            usage_report(stage, &sb, "route", None),
        ) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => {
                stage.check(false, format!("skywire usage: {e}"))?;
                return Ok(());
            }
        };
        let ab = row(&at_a, Some(b.key), None).map(|r| (r.sent, r.received));
        let ba = row(&at_b, Some(a.key), None).map(|r| (r.sent, r.received));
        let same = matches!((ab, ba), (Some((s1, r1)), Some((s2, r2))) if s1 == r2 && r1 == s2);
        agreed = Some((same, ab, ba));
        if same {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    if let Some((same, ab, ba)) = agreed {
        stage.check(
            same,
            format!(
                "on the wire, A -> B: A sent {}, B received {}; B -> A: B sent {}, A received {}",
                tally(ab.map(|x| x.0)),
                tally(ba.map(|x| x.1)),
                tally(ba.map(|x| x.0)),
                tally(ab.map(|x| x.1)),
            ),
        )?;
    }
    let text = stage.skywire(&["usage"], &sa);
    if let Ok(out) = text {
        let mut lines = String::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = write!(lines, "\n   | {line}");
        }
        stage.say(&format!("   $ skywire usage (A){lines}"))?;
    }

    // A clean stop writes the day file; `--config` reads it without the node.
    let before = usage_report(stage, &sa, "route", None)
        .ok()
        .and_then(|r| row(&r, Some(b.key), None).map(|r| r.sent));
    let Some(index) = stage.mesh.node("A").map(|(i, _)| i) else {
        return Ok(());
    };
    if let Some(node) = stage.mesh.nodes.get_mut(index) {
        let _ = node.signal(Signal::TERM);
        let stopped = wait_for(Duration::from_secs(10), || !node.is_running());
        if stopped.is_none() {
            stage.check(false, "A did not stop on SIGTERM within 10 s")?;
            return Ok(());
        }
    }
    let folder = Ledger::folder(&a.dir.join("state"), &a.key);
    stage.say(&format!(
        "   A stopped (SIGTERM); $ skywire usage --config {}  (its files in {})",
        a.config().display(),
        folder.display()
    ))?;
    match usage_report(stage, &sa, "route", Some(&a.config())) {
        Ok(offline) => {
            let after = row(&offline, Some(b.key), None).map(|r| r.sent);
            stage.check(
                before.is_some()
                    && after.is_some_and(|x| {
                        before.is_some_and(|y| x.packets >= y.packets && x.packets - y.packets < 10)
                    }),
                format!(
                    "A's day file holds what it said while it ran: sent {} then, {} from the file",
                    tally(before),
                    tally(after)
                ),
            )?;
        }
        Err(e) => {
            stage.check(false, format!("skywire usage --config: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    #[test]
    fn the_daemon_demo_passes_and_leaves_nothing_behind() {
        let program = match super::super::tests::node_program() {
            Ok(program) => program,
            Err(reason) => {
                println!("demo daemon: skipped: {reason}");
                return;
            }
        };
        let options = DaemonDemoOptions {
            program,
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        let mut out = Vec::new();
        let result = run(&mut out, &options);
        let text = String::from_utf8_lossy(&out);
        println!("{text}");
        let summary = result.unwrap();
        assert!(summary.passed(), "{:?}", summary.failed());
        assert!(text.contains("all checks passed"), "{text}");
        for step in STEPS {
            assert!(
                summary.checks.iter().any(|c| c.step == step.title),
                "no check in step {}",
                step.title
            );
        }
        assert!(summary.route_back.is_some_and(|t| t < ROUTE_BACK_WITHIN));
        assert!(
            !summary.folder.exists(),
            "{} left behind",
            summary.folder.display()
        );
    }
}
