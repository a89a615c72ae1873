//! `skywire demo`: three real nodes on one machine, and proof of what they do.
//!
//! As root, with nothing but iproute2: three network namespaces A - B - C joined by veth
//! pairs (`topology.rs` has the addresses), a built-in config and a fresh key for each
//! node, and three `skywire node` processes (the binary named in
//! [`DemoOptions::node_program`]), with a route A -> B -> C on which B only relays. Then,
//! with the demo's own traffic generator, it shows and checks, section by section:
//!
//! 1. **handshake**: the route comes up on the first packet (A's `status` before and
//!    after), and how long that first packet took;
//! 2. **round trips**: UDP echoes from A's TUN address to C's and back;
//! 3. **no clear text at the relay**: `AF_PACKET` captures on both of B's links while A
//!    sends a TCP stream with [`MARKER`] every 256 bytes: the marker is never seen there,
//!    while the same capture on C's TUN device finds it, and C's socket receives it intact;
//! 4. **throughput**: a TCP stream A -> C, checksummed at both ends;
//! 5. **counters at each hop**: `status` from every node's control socket;
//! 6. **cleanup**: nodes stopped with SIGTERM, namespaces and files removed; nothing is
//!    left behind, also on an error or Ctrl-C (the namespace lab, [`crate::lab`], sees to
//!    it).
//!
//! A check that fails is reported and the demo goes on where it can; [`DemoSummary`]
//! lists the failures, and the caller exits non-zero when there are any. Every figure
//! printed is measured as the demo runs.
//!
//! What this module does not do: install signal handlers (the caller owns the process's
//! signals; it sets [`DemoOptions::interrupted`]) or run the nodes in-process (they are
//! the real daemon, reached only through their control sockets).

pub mod daemon;
pub mod exposition;
pub mod flood;
pub mod leak;
pub mod loopback;
mod sniff;
pub mod socks;
pub mod streams;
mod topology;
mod traffic;
pub mod vpn;

use core::fmt::Write as _;
use core::time::Duration;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::keyfile::KeyFileError;
use crate::lab::LabError;
use crate::node::ctl::{CtlError, StatusReply, request_status};
use sniff::{Sniffer, Tally};
use topology::{DemoLab, Node, Stopped, Teardown};
use traffic::{Content, EchoClient, EchoServer, Limit, in_ns};

pub use traffic::MARKER;

/// How long the nodes get to answer on their control sockets after they were started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the first echo may take: it waits for the route's handshake.
const FIRST_ECHO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long any later echo may take.
const ECHO_TIMEOUT: Duration = Duration::from_secs(1);

/// The size of the marked stream sent while the captures run.
const MARKER_STREAM: u64 = 2 << 20;

/// What the demo runs and how much traffic it sends.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `skywire` binary to run the nodes with (`skywire node --config FILE`).
    pub node_program: PathBuf,
    /// UDP echoes in the round-trip phase.
    pub pings: u32,
    /// The throughput transfer stops after this many bytes...
    pub transfer_bytes: u64,
    /// ...or after this long, whichever comes first.
    pub transfer_time: Duration,
    /// Set (by a signal handler) to stop the demo; it then cleans up and returns
    /// [`DemoError::Interrupted`].
    pub interrupted: Arc<AtomicBool>,
}

impl DemoOptions {
    /// The defaults: 20 echoes, 1 GiB or 10 s of throughput, nodes run with `program`.
    pub fn new(node_program: PathBuf) -> Self {
        Self {
            node_program,
            pings: 20,
            transfer_bytes: 1 << 30,
            transfer_time: Duration::from_secs(10),
            interrupted: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What the demo measured and which checks failed.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    /// Every namespace of this run started with this; none is left.
    pub namespace_prefix: String,
    /// The checks that did not hold, in words; empty when all did.
    pub failed: Vec<String>,
    /// The first packet's round trip, handshake included.
    pub first_packet: Option<Duration>,
    /// Round-trip times of the echoes that came back.
    pub round_trips: Vec<Duration>,
    /// Frames captured on B's links.
    pub relay_frames: u64,
    /// Frames on B's links that contained the marker in clear (must be 0).
    pub relay_marker_frames: u64,
    /// Packets on C's TUN device that contained the marker (must be more than 0).
    pub tun_marker_frames: u64,
    /// Bytes of the throughput transfer that arrived intact.
    pub transferred: u64,
    /// Their rate, in bits per second.
    pub bits_per_second: f64,
}

impl DemoSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }

    /// Record a check; returns `ok`.
    fn check(&mut self, ok: bool, failure: impl Into<String>) -> bool {
        if !ok {
            self.failed.push(failure.into());
        }
        ok
    }
}

/// Why the demo could not run to its end. Failed checks are not errors: they are in
/// [`DemoSummary::failed`].
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Namespaces need root.
    #[error(
        "the demo builds network namespaces, which needs root; run it as root, or try \
         `skywire demo --in-memory`, which needs no privileges"
    )]
    NotRoot,
    /// A system call or a thread failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A key file could not be written.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A node exited or did not come up; its log is included.
    #[error("node {node} {problem}; the end of its log:\n{log}")]
    Node {
        /// `A`, `B` or `C`.
        node: &'static str,
        /// What happened.
        problem: String,
        /// The last lines of its output.
        log: String,
    },
    /// A node's control socket did not answer `status`.
    #[error("asking node {node} for its status failed")]
    Status {
        /// `A`, `B` or `C`.
        node: &'static str,
        /// Why.
        #[source]
        source: CtlError,
    },
    /// SIGINT or SIGTERM arrived; everything was cleaned up.
    #[error("interrupted; everything the demo had started is removed")]
    Interrupted,
    /// Another step of the namespace lab failed (a config that does not load, a process
    /// that could not be started).
    #[error(transparent)]
    Lab(LabError),
    /// The report could not be written.
    #[error("cannot write the report")]
    Output(#[from] io::Error),
}

impl From<LabError> for DemoError {
    /// The lab's errors as the demo has always reported them; the rest as they are.
    fn from(error: LabError) -> Self {
        match error {
            LabError::NotRoot => Self::NotRoot,
            LabError::Interrupted => Self::Interrupted,
            LabError::Io { what, source } => Self::Io { what, source },
            LabError::Key(source) => Self::Key(source),
            other => Self::Lab(other),
        }
    }
}

/// Whether this process runs as root (effective uid 0), which the demo needs.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Run the demo, writing the report to `out` as it goes. Cleans up before it returns,
/// whatever the outcome.
pub fn run(out: &mut dyn Write, options: &DemoOptions) -> Result<DemoSummary, DemoError> {
    if !running_as_root() {
        return Err(DemoError::NotRoot);
    }
    let mut lab = DemoLab::new(Arc::clone(&options.interrupted))?;
    let mut summary = DemoSummary {
        namespace_prefix: lab.prefix().to_owned(),
        ..DemoSummary::default()
    };
    let outcome = scenario(out, options, &mut lab, &mut summary).map_err(|e| {
        // After Ctrl-C, whatever failed next (an `ip` killed by the same SIGINT, a cut
        // transfer) is the interruption's doing.
        if options.interrupted.load(Ordering::Relaxed) {
            DemoError::Interrupted
        } else {
            e
        }
    });
    let teardown = lab.teardown();
    let cleanup = report_cleanup(out, &teardown, &mut summary.failed);
    outcome?;
    cleanup?;
    report_verdict(out, &summary.failed)?;
    Ok(summary)
}

/// `all checks passed`, or the failed ones listed; then flush.
fn report_verdict(out: &mut dyn Write, failed: &[String]) -> Result<(), DemoError> {
    if failed.is_empty() {
        writeln!(out, "\nall checks passed")?;
    } else {
        let n = failed.len();
        let s = if n == 1 { "" } else { "s" };
        writeln!(out, "\n{n} check{s} failed:")?;
        for failure in failed {
            writeln!(out, "  - {failure}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Everything between creating the lab and tearing it down.
fn scenario(
    out: &mut dyn Write,
    options: &DemoOptions,
    lab: &mut DemoLab,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    writeln!(
        out,
        "skywire demo: a route A -> B -> C across three network namespaces, one `skywire node` \
         process each; B only relays\n"
    )?;
    topology(out, lab, &mut summary.failed)?;
    start_nodes(out, &options.node_program, lab)?;

    let (ns_a, ns_b, ns_c) = (
        lab.namespace(Node::A),
        lab.namespace(Node::B),
        lab.namespace(Node::C),
    );
    // Captures first, so they see the route from its very first packet.
    let sniffers = [
        ("B to-a", Sniffer::start(&ns_b, "to-a")?),
        ("B to-c", Sniffer::start(&ns_b, "to-c")?),
        ("C sky-c", Sniffer::start(&ns_c, topology::C_TUN_NAME)?),
    ];
    let echo_server = EchoServer::start(&ns_c, topology::C_TUN)?;
    let echo = EchoClient::connect(&ns_a, topology::A_TUN, topology::C_TUN)?;
    handshake(out, lab, &echo, summary)?;
    round_trips(out, lab, options, &echo, summary)?;
    drop(echo);
    echo_server.stop()?;
    proof(out, lab, sniffers, options, summary)?;
    throughput(out, lab, options, summary)?;
    counters(out, lab, summary)?;
    Ok(())
}

/// Build the A - B - C namespaces, print them, and check that A cannot reach C but through
/// B (a failure goes to `failed`).
fn topology(
    out: &mut dyn Write,
    lab: &mut DemoLab,
    failed: &mut Vec<String>,
) -> Result<(), DemoError> {
    lab.build_topology()?;
    writeln!(
        out,
        "topology: network namespaces joined by veth pairs (198.18.0.0/15, no default routes; \
         B does not route IP)"
    )?;
    for node in Node::ALL {
        let links: Vec<String> = node
            .links()
            .iter()
            .map(|(name, address)| format!("{name} {address}/24"))
            .collect();
        let tun = match node.tun() {
            Some((name, address)) => format!("TUN {name} {address}/24"),
            None => "relay only, no TUN".to_owned(),
        };
        writeln!(
            out,
            "  {}  {:<18} {:<40} {tun}",
            node.label(),
            lab.namespace(node),
            links.join(", ")
        )?;
    }
    // Prove the claim: A has no way to C's transport address but through the relay.
    let to_c = SocketAddr::from((topology::C_LINK, topology::PORT));
    let direct = in_ns(&lab.namespace(Node::A), "cannot open a UDP socket", || {
        let socket = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
        Ok(socket.send_to(b"direct?", to_c).map(drop))
    })?;
    let unreachable = matches!(&direct, Err(e) if e.kind() == io::ErrorKind::NetworkUnreachable);
    match &direct {
        Ok(()) => writeln!(out, "  A -> {to_c} directly: sent (it should not be!)")?,
        Err(e) => writeln!(
            out,
            "  A -> {to_c} (C) directly: {e}; A reaches C only through B"
        )?,
    }
    if !unreachable {
        failed.push(format!(
            "A could send to C's transport address {to_c} without the relay"
        ));
    }
    Ok(())
}

/// Write keys and configs, start the three nodes with `program`, wait until they answer,
/// and print who they are.
fn start_nodes(out: &mut dyn Write, program: &Path, lab: &mut DemoLab) -> Result<(), DemoError> {
    lab.write_keys_and_configs()?;
    writeln!(
        out,
        "\nnodes: fresh keys and built-in configs in {}; each runs `{} node --config X.yaml` \
         in its namespace",
        lab.dir().display(),
        program.display()
    )?;
    let started = Instant::now();
    let mut pids = Vec::new();
    for node in Node::ALL {
        pids.push(lab.start_node(node, program)?);
    }
    let mut statuses = Vec::new();
    for node in Node::ALL {
        statuses.push(lab.wait_ready(node, started + START_TIMEOUT, START_TIMEOUT)?);
    }
    for ((node, pid), status) in Node::ALL.iter().zip(&pids).zip(&statuses) {
        let role = match &status.tun {
            Some(tun) => format!("TUN {tun}"),
            None => {
                let rules: Vec<String> = status
                    .relays
                    .iter()
                    .map(|r| format!("{} -> {}", r.in_id, r.out_id))
                    .collect();
                format!("relay rules {}", rules.join(", "))
            }
        };
        writeln!(
            out,
            "  {}  pid {pid:<7} key {}  udp {}  {role}",
            node.label(),
            status.public_key,
            status.listen
        )?;
    }
    writeln!(
        out,
        "  all three answered on their control sockets {:.2} s after start",
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

fn status(lab: &DemoLab, node: Node) -> Result<StatusReply, DemoError> {
    request_status(&lab.socket(node), crate::node::ctl::DEFAULT_TIMEOUT).map_err(|source| {
        DemoError::Status {
            node: node.label(),
            source,
        }
    })
}

/// `latest handshake` of A's route, as text.
fn a_handshake(lab: &DemoLab) -> Result<(Option<f64>, String), DemoError> {
    let reply = status(lab, Node::A)?;
    let secs = reply.routes.first().and_then(|r| r.last_handshake_secs);
    let text = match secs {
        Some(secs) => format!("{secs:.3} s ago"),
        None => "never".to_owned(),
    };
    Ok((secs, text))
}

fn handshake(
    out: &mut dyn Write,
    lab: &DemoLab,
    echo: &EchoClient,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    writeln!(
        out,
        "\nhandshake: Noise IK between A and C over the route, started by the first packet"
    )?;
    let (_, before) = a_handshake(lab)?;
    writeln!(out, "  A's route to-c before: latest handshake {before}")?;
    lab.check_interrupted()?;
    let first = echo.ping(0, FIRST_ECHO_TIMEOUT)?;
    match first {
        Some(rtt) => writeln!(
            out,
            "  first UDP echo {} -> {}:{}: answered in {}, handshake included",
            topology::A_TUN,
            topology::C_TUN,
            traffic::ECHO_PORT,
            millis(rtt)
        )?,
        None => writeln!(
            out,
            "  first UDP echo: no answer within {} s",
            FIRST_ECHO_TIMEOUT.as_secs()
        )?,
    }
    let (secs, after) = a_handshake(lab)?;
    writeln!(out, "  A's route to-c after: latest handshake {after}")?;
    summary.first_packet = first;
    summary.check(first.is_some(), "the first packet got no answer");
    summary.check(secs.is_some(), "A reports no completed handshake");
    Ok(())
}

fn round_trips(
    out: &mut dyn Write,
    lab: &DemoLab,
    options: &DemoOptions,
    echo: &EchoClient,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    let mut times = Vec::new();
    for seq in 1..=u64::from(options.pings) {
        lab.check_interrupted()?;
        if let Some(rtt) = echo.ping(seq, ECHO_TIMEOUT)? {
            times.push(rtt);
        }
    }
    writeln!(
        out,
        "\nround trips: {} UDP echoes of {} B, A's TUN -> C's TUN -> back, relayed by B both ways",
        options.pings,
        traffic::ECHO_LEN
    )?;
    let mut sorted = times.clone();
    sorted.sort();
    match (sorted.first(), sorted.get(sorted.len() / 2), sorted.last()) {
        (Some(min), Some(median), Some(max)) => writeln!(
            out,
            "  min {}, median {}, max {}; {} of {} answered",
            millis(*min),
            millis(*median),
            millis(*max),
            times.len(),
            options.pings
        )?,
        _ => writeln!(out, "  none of {} answered", options.pings)?,
    }
    summary.check(
        times.len() == options.pings as usize,
        format!("{} of {} echoes answered", times.len(), options.pings),
    );
    summary.round_trips = times;
    Ok(())
}

fn proof(
    out: &mut dyn Write,
    lab: &DemoLab,
    sniffers: [(&str, Sniffer); 3],
    options: &DemoOptions,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    lab.check_interrupted()?;
    let transfer = traffic::tcp_transfer(
        &lab.namespace(Node::A),
        &lab.namespace(Node::C),
        topology::C_TUN,
        Content::Marked,
        Limit {
            bytes: MARKER_STREAM,
            time: Duration::from_secs(30),
        },
        &options.interrupted,
    );
    // Stop the captures whatever the transfer did, then report.
    let mut tallies: Vec<(&str, Tally)> = Vec::new();
    for (label, sniffer) in sniffers {
        tallies.push((label, sniffer.finish()?));
    }
    let transfer = transfer?;
    writeln!(
        out,
        "\nno clear text at the relay: packet captures (AF_PACKET) on B's two links and on C's \
         TUN,\nduring the handshake, the echoes and a {} TCP stream A -> C with {:?} every 256 B",
        bytes(transfer.sent.bytes),
        String::from_utf8_lossy(MARKER)
    )?;
    for (label, tally) in &tallies {
        let on_tun = label.starts_with('C');
        let drops = if tally.kernel_drops > 0 {
            format!(", {} dropped by the kernel", tally.kernel_drops)
        } else {
            String::new()
        };
        if on_tun {
            writeln!(
                out,
                "  {label:<8} {:>6} packets inside the tunnel{drops}: marker found in {} (the same \
                 capture does see clear text)",
                tally.frames, tally.marker_frames
            )?;
        } else {
            writeln!(
                out,
                "  {label:<8} {:>6} frames ({}){drops}: marker found: {}",
                tally.frames,
                tally.kinds(),
                tally.marker_frames
            )?;
        }
        summary.check(
            tally.kernel_drops == 0,
            format!(
                "the capture on {label} lost {} frames, so it is incomplete",
                tally.kernel_drops
            ),
        );
        if on_tun {
            summary.tun_marker_frames += tally.marker_frames;
            summary.check(
                tally.marker_frames > 0,
                format!("the marker was not seen in clear on {label}, where it should be"),
            );
        } else {
            summary.relay_frames += tally.frames;
            summary.relay_marker_frames += tally.marker_frames;
            summary.check(
                tally.marker_frames == 0,
                format!(
                    "the marker was seen in clear on {label} in {} frames",
                    tally.marker_frames
                ),
            );
            summary.check(
                tally.skywire[2] > 0,
                format!("the capture on {label} saw no skywire data packets"),
            );
        }
    }
    let intact = transfer.intact() && transfer.received.markers == transfer.sent.markers;
    writeln!(
        out,
        "  at C's socket: {} markers in {} received, {}",
        transfer.received.markers,
        bytes(transfer.received.bytes),
        if intact {
            "exactly the bytes A sent (checksums match)"
        } else {
            "NOT what A sent"
        }
    )?;
    summary.check(
        intact,
        format!(
            "the marked stream arrived changed: A sent {} B with {} markers, C received {} B \
             with {}",
            transfer.sent.bytes,
            transfer.sent.markers,
            transfer.received.bytes,
            transfer.received.markers
        ),
    );
    Ok(())
}

fn throughput(
    out: &mut dyn Write,
    lab: &DemoLab,
    options: &DemoOptions,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    writeln!(
        out,
        "\nthroughput: one TCP stream A -> C through the tunnel, {} or {} s, whichever comes first",
        bytes(options.transfer_bytes),
        options.transfer_time.as_secs_f64()
    )?;
    let transfer = traffic::tcp_transfer(
        &lab.namespace(Node::A),
        &lab.namespace(Node::C),
        topology::C_TUN,
        Content::Random,
        Limit {
            bytes: options.transfer_bytes,
            time: options.transfer_time,
        },
        &options.interrupted,
    )?;
    let secs = transfer.received.elapsed.as_secs_f64().max(1e-9);
    let rate = transfer.received.bytes as f64 * 8.0 / secs;
    writeln!(
        out,
        "  {} in {secs:.2} s: {:.2} Gbit/s of TCP payload",
        bytes(transfer.received.bytes),
        rate / 1e9
    )?;
    let intact = transfer.intact();
    if intact {
        writeln!(
            out,
            "  checksum {:016x} at both ends: every byte arrived, in order",
            transfer.received.checksum
        )?;
        summary.transferred = transfer.received.bytes;
        summary.bits_per_second = rate;
    } else {
        writeln!(
            out,
            "  MISMATCH: A sent {} B (checksum {:016x}), C received {} B (checksum {:016x})",
            transfer.sent.bytes,
            transfer.sent.checksum,
            transfer.received.bytes,
            transfer.received.checksum
        )?;
    }
    summary.check(intact, "the throughput stream arrived changed");
    Ok(())
}

fn counters(
    out: &mut dyn Write,
    lab: &DemoLab,
    summary: &mut DemoSummary,
) -> Result<(), DemoError> {
    writeln!(
        out,
        "\ncounters at each hop: `status` from each node's control socket (as `skywire status` \
         prints it)"
    )?;
    let a = show_status(out, lab, Node::A)?;
    let b = show_status(out, lab, Node::B)?;
    let c = show_status(out, lab, Node::C)?;
    let relayed = |in_id| {
        b.relays
            .iter()
            .find(|r| r.in_id == in_id)
            .map_or(0, |r| r.packets)
    };
    let (a_to_c, c_to_a) = (
        relayed(topology::A_TO_B.get()),
        relayed(topology::C_TO_B.get()),
    );
    let rx = |reply: &StatusReply| reply.routes.first().map_or(0, |r| r.rx_packets);
    writeln!(
        out,
        "  B relayed {a_to_c} packets A -> C and {c_to_a} C -> A, and is the end of no route: \
         it holds no key to decrypt them with"
    )?;
    summary.check(
        b.routes.is_empty() && b.tun.is_none(),
        "B holds a route end or a TUN device",
    );
    summary.check(
        a_to_c >= rx(&c) && c_to_a >= rx(&a) && rx(&c) > 0,
        format!(
            "the counters do not add up: B relayed {a_to_c} and {c_to_a} packets, C received \
             {}, A received {}",
            rx(&c),
            rx(&a)
        ),
    );
    Ok(())
}

/// Ask `node` for its status and print it, indented, as `skywire status` would.
fn show_status(out: &mut dyn Write, lab: &DemoLab, node: Node) -> Result<StatusReply, DemoError> {
    let reply = status(lab, node)?;
    writeln!(out, "  {} ({}):", node.label(), lab.namespace(node))?;
    let mut text = String::new();
    // Formatting into a String cannot fail.
    let _ = write!(text, "{reply}");
    for line in text.lines() {
        if line.is_empty() {
            writeln!(out)?;
        } else {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(reply)
}

/// What the teardown did; a node that did not stop cleanly, or anything left behind, goes
/// to `failed`.
fn report_cleanup(
    out: &mut dyn Write,
    teardown: &Teardown,
    failed: &mut Vec<String>,
) -> Result<(), DemoError> {
    writeln!(out, "\ncleanup:")?;
    if !teardown.nodes.is_empty() {
        let nodes: Vec<String> = teardown
            .nodes
            .iter()
            .map(|(node, stopped)| {
                let how = match stopped {
                    Stopped::OnTerm(status) => format!("stopped on SIGTERM ({status})"),
                    Stopped::Before(status) => format!("had exited already ({status})"),
                    Stopped::Killed => format!(
                        "killed: still running {} s after SIGTERM",
                        topology::STOP_GRACE.as_secs()
                    ),
                    Stopped::Lost => "could not be stopped".to_owned(),
                };
                format!("{} {how}", node.label())
            })
            .collect();
        writeln!(out, "  nodes: {}", nodes.join("; "))?;
        for (node, stopped) in &teardown.nodes {
            if !matches!(stopped, Stopped::OnTerm(status) if status.success()) {
                failed.push(format!(
                    "node {} did not stop cleanly on SIGTERM",
                    node.label()
                ));
            }
        }
    }
    if !teardown.namespaces.is_empty() {
        writeln!(
            out,
            "  namespaces deleted (with their veths and TUN devices): {}",
            teardown.namespaces.join(", ")
        )?;
    }
    if let Some(dir) = &teardown.removed_dir {
        writeln!(
            out,
            "  removed {} (keys, configs, sockets, logs)",
            dir.display()
        )?;
    }
    for problem in &teardown.problems {
        writeln!(out, "  PROBLEM: {problem}")?;
        failed.push(format!("cleanup: {problem}"));
    }
    if teardown.problems.is_empty() {
        writeln!(out, "  nothing left behind")?;
    }
    Ok(())
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A byte count for people: `20.00 MiB`.
fn bytes(n: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (MIB * 1024.0))
    } else {
        format!("{:.2} MiB", n as f64 / MIB)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::process::Command;

    /// The `skywire` binary to run nodes with: `$SKYWIRE_BIN`, or a fresh build of this
    /// workspace's (next to this test's own binary, so the same profile). `Err` says why
    /// the test cannot run.
    pub(super) fn node_program() -> Result<PathBuf, String> {
        if let Some(path) = std::env::var_os("SKYWIRE_BIN") {
            return Ok(PathBuf::from(path));
        }
        let exe = std::env::current_exe().map_err(|e| format!("no current exe: {e}"))?;
        // target/PROFILE/deps/skywire_control-HASH
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .ok_or("the test binary is not in a cargo target folder")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "skywire", "--bin", "skywire"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build
            .status()
            .map_err(|e| format!("cannot run cargo to build the skywire binary: {e}"))?;
        assert!(status.success(), "building the skywire binary failed");
        Ok(profile_dir.join("skywire"))
    }

    #[test]
    fn the_namespace_demo_passes_and_leaves_nothing_behind() {
        if !running_as_root() {
            println!("demo: skipped: the namespace demo needs root (CI runs as root)");
            return;
        }
        let program = match node_program() {
            Ok(program) => program,
            Err(reason) => {
                println!("demo: skipped: {reason}");
                return;
            }
        };
        let mut options = DemoOptions::new(program);
        options.transfer_bytes = 20_000_000;
        options.transfer_time = Duration::from_secs(5);
        let mut out = Vec::new();
        let started = Instant::now();
        let result = run(&mut out, &options);
        let text = String::from_utf8_lossy(&out);
        println!("{text}");
        println!("(the demo took {:.1} s)", started.elapsed().as_secs_f64());
        let summary = result.unwrap();
        assert!(summary.passed(), "{:?}", summary.failed);
        assert_eq!(summary.relay_marker_frames, 0);
        assert!(summary.relay_frames > 0 && summary.tun_marker_frames > 0);
        assert_eq!(summary.transferred, 20_000_000);
        assert_eq!(summary.round_trips.len(), 20);
        assert!(text.contains("marker found: 0"), "{text}");
        assert!(text.contains("all checks passed"), "{text}");

        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.contains(&summary.namespace_prefix),
            "namespaces left behind:\n{list}"
        );
        let dir = std::env::temp_dir().join(summary.namespace_prefix.trim_end_matches('-'));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(2 << 20), "2.00 MiB");
        assert_eq!(bytes(20_000_000), "19.07 MiB");
        assert_eq!(bytes(1 << 30), "1.00 GiB");
    }
}
