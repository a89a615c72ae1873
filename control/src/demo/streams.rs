//! `skywire demo streams`: an app stream from A to C through the relay B, with no root, no
//! TUN device and no IP addresses to plan.
//!
//! Three real `skywire node` processes on loopback (ports picked by the system), each with
//! a fresh key and a built-in config: A and C have a static route to each other through B
//! without prefixes (it carries app streams only), B holds the two relay rules and can
//! read nothing. The demo itself is the app at both ends, through the nodes' app sockets
//! (`docs/APPS.md`): it listens on C, dials C's key from A, sends a stream of
//! pseudo-random bytes for the given size or time, and checks the BLAKE3 digest of what
//! arrived against what was sent; then the same bytes back, half-closes, and prints the
//! counters of every node. Everything it created (processes, folder) is gone when it
//! returns, also on failure.

use core::time::Duration;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{RelaySetup, RouteSetup};

use super::loopback::{LoopbackError, LoopbackMesh, LoopbackNode, route_id as id};
use crate::node::apps::client::ListenRequest;
use crate::node::apps::{AppClient, AppStream};
use crate::node::ctl::{StatusReply, request_status};

/// The port C listens on.
const PORT: u16 = 7;

/// What to run.
#[derive(Debug, Clone)]
pub struct StreamsOptions {
    /// The `skywire` binary that runs the nodes.
    pub node_program: PathBuf,
    /// Stop sending after this many bytes...
    pub bytes: u64,
    /// ...or after this long, whichever comes first.
    pub time: Duration,
    /// Raised to stop early (Ctrl-C): the demo then cleans up and fails.
    pub interrupted: Arc<AtomicBool>,
}

/// What the demo measured; [`Self::failed`] lists the checks that did not hold.
#[derive(Debug, Default)]
pub struct StreamsSummary {
    /// Time from dial to the stream being open (route handshake included).
    pub dial: Option<Duration>,
    /// Bytes sent A -> C, and how long until C had them all.
    pub sent: u64,
    /// How long that took.
    pub took: Option<Duration>,
    /// The checks that did not hold.
    pub failed: Vec<String>,
}

impl StreamsSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Why the demo could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// Making or starting the nodes failed.
    #[error(transparent)]
    Nodes(#[from] LoopbackError),
    /// Writing the report failed.
    #[error("cannot write the report")]
    Output(#[source] io::Error),
}

/// Run the demo, reporting to `out`.
pub fn run(out: &mut impl Write, options: &StreamsOptions) -> Result<StreamsSummary, StreamsError> {
    let say =
        |out: &mut dyn Write, text: &str| writeln!(out, "{text}").map_err(StreamsError::Output);
    let mut mesh = LoopbackMesh::new(&options.node_program, "demo-streams")?;
    let (a, b, c) = (mesh.plan("A")?, mesh.plan("B")?, mesh.plan("C")?);
    let (ka, kb, kc, aa, ab, ac) = (a.key, b.key, c.key, a.addr, b.addr, c.addr);
    // A -> C: A sends 100 to B, B sends 101 to C; C -> A: 200 to B, 201 to A.
    let route = |name: &str, peer: PublicKey, (out_id, in_id, peer_in_id)| RouteSetup {
        name: name.to_owned(),
        peer,
        prefixes: Vec::new(),
        first_hop: ab,
        out_id: id(out_id),
        in_id: id(in_id),
        peer_in_id: id(peer_in_id),
        prev_hop: ab,
        persistent_keepalive: None,
    };
    let relay = |in_id, prev_hop, out_id, next_hop| RelaySetup {
        in_id: id(in_id),
        prev_hop,
        out_id: id(out_id),
        next_hop,
    };
    let sections = [
        (&a, vec![route("to-c", kc, (100, 201, 101))], Vec::new()),
        (
            &b,
            Vec::new(),
            vec![relay(100, aa, 101, ac), relay(200, ac, 201, aa)],
        ),
        (&c, vec![route("to-a", ka, (200, 101, 201))], Vec::new()),
    ];
    for (plan, routes, relays) in sections {
        let mut section = LoopbackMesh::section(plan);
        section.routes = routes;
        section.relays = relays;
        mesh.start(plan, section)?;
    }
    say(
        out,
        &format!(
            "skywire demo streams: three nodes on loopback, no root, no TUN:\n  A {ka} {aa}\n  B {kb} {ab} (relay only)\n  C {kc} {ac}"
        ),
    )?;
    let mut summary = StreamsSummary::default();
    let result = stream_a_to_c(out, options, &mesh.nodes, kc, &mut summary);
    if let Err(why) = result {
        summary.failed.push(why);
    }
    say(out, "\ncounters:")?;
    for node in &mesh.nodes {
        match request_status(&node.socket, Duration::from_secs(2)) {
            Ok(status) => say(out, &counters(&node.plan.name, &status))?,
            Err(e) => summary
                .failed
                .push(format!("node {}: no status: {e}", node.plan.name)),
        }
    }
    // The relay holds no stream and can read nothing: it has no route end at all.
    if let Some(b) = mesh.nodes.get(1)
        && let Ok(status) = request_status(&b.socket, Duration::from_secs(2))
        && (!status.routes.is_empty() || status.streams.open > 0)
    {
        summary
            .failed
            .push("the relay B has a route end or a stream".to_owned());
    }
    drop(mesh);
    say(
        out,
        if summary.passed() {
            "\nall checks passed; nodes stopped and files removed"
        } else {
            "\nsome checks FAILED; nodes stopped and files removed"
        },
    )?;
    Ok(summary)
}

fn counters(name: &str, status: &StatusReply) -> String {
    let s = &status.streams;
    let transfer: String = status
        .routes
        .iter()
        .map(|r| {
            format!(
                ", route {}: {} packets out, {} in",
                r.name, r.tx_packets, r.rx_packets
            )
        })
        .collect();
    let relayed: u64 = status.relays.iter().map(|r| r.packets).sum();
    format!(
        "  {name}: streams {} dialed, {} arrived, {} open{transfer}{}",
        s.dialed,
        s.arrived,
        s.open,
        if status.relays.is_empty() {
            String::new()
        } else {
            format!(", relayed {relayed} packets it cannot read")
        }
    )
}

/// Pseudo-random bytes, the same for the same seed.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            word.copy_from_slice(bytes.get(..word.len()).unwrap_or_default());
        }
    }
}

fn stream_a_to_c(
    out: &mut impl Write,
    options: &StreamsOptions,
    nodes: &[LoopbackNode],
    kc: PublicKey,
    summary: &mut StreamsSummary,
) -> Result<(), String> {
    let [a, _, c] = nodes else {
        return Err("three nodes were not started".to_owned());
    };
    let app_a = AppClient::new(&a.app_socket);
    let app_c = AppClient::new(&c.app_socket);
    let mut listener = app_c
        .listen(ListenRequest::on(PORT))
        .map_err(|e| format!("C cannot listen on port {PORT}: {e}"))?;
    // C's side: read everything, hash it, send it back, half-close.
    let receiver = thread::spawn(move || -> Result<(u64, blake3::Hash), String> {
        let mut stream = listener.accept().map_err(|e| format!("C: accept: {e}"))?;
        let mut hasher = blake3::Hasher::new();
        let mut got = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stream.read(&mut buf).map_err(|e| format!("C: read: {e}"))?;
            if n == 0 {
                break;
            }
            let piece = buf.get(..n).unwrap_or_default();
            hasher.update(piece);
            got += n as u64;
        }
        let digest = hasher.finalize();
        stream
            .write_all(digest.as_bytes())
            .and_then(|()| stream.shutdown_write())
            .map_err(|e| format!("C: write: {e}"))?;
        Ok((got, digest))
    });
    let dialed = Instant::now();
    let mut stream: AppStream = app_a
        .dial(kc, PORT, Duration::from_secs(10))
        .map_err(|e| format!("A cannot open a stream to C: {e}"))?;
    summary.dial = Some(dialed.elapsed());
    let _ = writeln!(
        out,
        "\nA dialed C's key, port {PORT}: stream open after {:.1} ms (route handshake included)",
        dialed.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let mut pattern = Pattern(0x5EED_F00D_5C1E_7E57);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < options.bytes && started.elapsed() < options.time {
        if options.interrupted.load(Ordering::Relaxed) {
            return Err("interrupted".to_owned());
        }
        let n = usize::try_from(options.bytes - sent)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let piece = buf.get_mut(..n).unwrap_or_default();
        pattern.fill(piece);
        hasher.update(piece);
        stream
            .write_all(piece)
            .map_err(|e| format!("A: write: {e}"))?;
        sent += n as u64;
    }
    stream
        .shutdown_write()
        .map_err(|e| format!("A: half-close: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("A: read C's digest: {e}"))?;
    let took = started.elapsed();
    let (got, theirs) = receiver
        .join()
        .map_err(|_| "C's side panicked".to_owned())??;
    let ours = hasher.finalize();
    summary.sent = sent;
    summary.took = Some(took);
    let _ = writeln!(
        out,
        "A -> B -> C: {:.1} MiB in {:.2} s: {:.2} Gbit/s through the relay, end to end encrypted",
        sent as f64 / 1048576.0,
        took.as_secs_f64(),
        sent as f64 * 8.0 / took.as_secs_f64().max(1e-9) / 1e9
    );
    if got != sent {
        return Err(format!("C received {got} bytes of {sent}"));
    }
    if answer.as_slice() != theirs.as_bytes() {
        return Err("C's digest did not come back intact".to_owned());
    }
    if theirs != ours {
        return Err(format!(
            "BLAKE3 differs: A sent {}, C received {}",
            ours.to_hex(),
            theirs.to_hex()
        ));
    }
    let _ = writeln!(
        out,
        "BLAKE3 of the bytes: A sent {}..., C received the same, and its digest came back after A's half-close",
        ours.to_hex().get(..16).unwrap_or_default()
    );
    Ok(())
}
