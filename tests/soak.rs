//! The soak (issue 16, row 14 of RELIABILITY.md), with a manager and real nodes in
//! namespaces (root only; skipped with a message otherwise). The churn mesh of
//! `tests/netns/churn.rs`, except that the link A - B crosses the impairment relay
//! (`skywire lab impair` in namespace U, 2 % loss and 1 % of datagrams late both ways,
//! `tests/netns/impair.rs`). For the whole run:
//!
//! - checksummed TCP transfers from A's TUN to D's over the 3-hop route A - B - D
//!   (`route add D --avoid C`), one after the other, each a new client and server process
//!   and a new connection (`tests/tools/tcp_source.py`, `tcp_sink.py`, SHA-256 at both
//!   ends); every [`ROUTE_EVERY`]th transfer, the route itself is removed and added again;
//! - route churn on the other routes of the mesh (`route add` / `route rm`, [`RATE`] a
//!   second, some of them over the impaired link);
//! - every node's and the manager's descriptors and resident memory sampled every
//!   [`SAMPLE_EVERY`].
//!
//! What must hold: every transfer arrives whole with the sender's SHA-256; every churn
//! command succeeds; after the warm-up (the first fifth of the run, at most a minute)
//! no process holds more than [`FD_MARGIN`] descriptors above its warm-up count, nor more
//! than [`RSS_MARGIN_KIB`] plus [`RSS_PER_HOUR_KIB`] an hour of memory above it; no
//! process dies; no log mentions a panic.
//!
//! How long: `SKYWIRE_SOAK_SECONDS` (default 300, what CI runs). `scripts/soak 8h` runs it
//! for 8 hours and prints the summary (RELIABILITY.md, "8 hours by hand").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::time::{Duration, Instant};

use netns::churn::{self, Churn, NAMES};
use netns::impair::Report;
use netns::managed::{ManagedMesh, endpoint};
use netns::usage::{Usage, growth, panic_lines, usage};
use netns::{Proc, Topology, ip, key_values, skip_unless_root};

/// The run's length unless `SKYWIRE_SOAK_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 300;
/// Route changes a second (fewer than row 7's 10: the transfers share the two cores).
const RATE: u32 = 5;
/// Bytes of each transfer.
const TRANSFER: u64 = 4_000_000;
/// Every this many transfers, the route A -> D is removed and added again.
const ROUTE_EVERY: u64 = 5;
/// How often the processes are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Descriptors above the warm-up count allowed in any later sample (control connections
/// open at that moment).
const FD_MARGIN: i64 = 4;
/// Memory above the warm-up sample allowed in any later sample...
const RSS_MARGIN_KIB: i64 = 5 * 1024;
/// ... plus this much an hour of run (R27 of the research notes: under 1 MB an hour).
const RSS_PER_HOUR_KIB: i64 = 1024;
/// The relay's seed, and its settings in both directions.
const SEED: &str = "14";
const IMPAIR: &str = "loss=2%,late=1%";

/// Host U between A and B: A reaches B only through the relay, and B reaches A only
/// through it:
///
/// ```text
///   A eth-u 198.18.1.1 -- eth-a 198.18.1.2 U eth-b 198.18.7.1 -- eth-u 198.18.7.2 B
///   listens on 0.0.0.0:6000      relay: listens on A's endpoint 198.19.0.1:6000
///   (endpoint 198.19.0.1)          (B's host route to it goes to U), sends to
///                                  198.18.1.1:6000 from 198.18.1.2:6000
/// ```
///
/// B's probes reach A through the relay, so A learns B at the relay's address (as a node
/// with an address on each link is learned, `tests/multihomed.rs`) and the manager gives
/// A rules with it; A has no route to B's endpoint, so nothing A sends B skips the relay.
fn impaired_link(topo: &mut Topology) -> Proc {
    topo.host("u");
    topo.link(
        ("a", "eth-u", "198.18.1.1/24"),
        ("u", "eth-a", "198.18.1.2/24"),
    );
    topo.link(
        ("u", "eth-b", "198.18.7.1/24"),
        ("b", "eth-u", "198.18.7.2/24"),
    );
    let (a_end, b_end) = (endpoint(0), endpoint(1));
    let (u, b) = (topo.ns("u"), topo.ns("b"));
    ip(&["-n", &u, "addr", "add", &format!("{a_end}/32"), "dev", "lo"]);
    ip(&[
        "-n",
        &u,
        "route",
        "add",
        &format!("{b_end}/32"),
        "via",
        "198.18.7.2",
    ]);
    ip(&[
        "-n",
        &b,
        "route",
        "add",
        &format!("{a_end}/32"),
        "via",
        "198.18.7.1",
    ]);
    let listen = format!("{a_end}:6000");
    let relay = topo.spawn(
        "u",
        "impair",
        &common::skywire_binary(),
        &[
            "lab",
            "impair",
            "--listen",
            &listen,
            "--target",
            "198.18.1.1:6000",
            "--bind",
            "198.18.1.2:6000",
            "--seed",
            SEED,
            "--forward",
            IMPAIR,
            "--back",
            IMPAIR,
        ],
    );
    let ready = relay.line(Duration::from_secs(10));
    assert_eq!(ready, format!("ready {listen}"), "{}", relay.stderr());
    relay
}

fn seconds() -> u64 {
    match std::env::var("SKYWIRE_SOAK_SECONDS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SKYWIRE_SOAK_SECONDS={text:?}: not a number of seconds")),
        Err(_) => DEFAULT_SECONDS,
    }
}

/// `route add D --avoid C` on A: the route's id, over A - B - D.
fn add_route(mesh: &ManagedMesh) -> String {
    let (code, out, err) = mesh.sky(
        0,
        &[
            "route",
            "add",
            mesh.key(3),
            "--avoid",
            mesh.key(2),
            "--json",
        ],
    );
    assert_eq!(code, 0, "route add: {err}\n{}", mesh.manager_log());
    let route: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(mesh.path(&route), [0, 1, 3], "{route}");
    route["id"].as_str().unwrap().to_owned()
}

/// One transfer A -> D: (seconds, whether the SHA-256 matched); panics if it fails.
fn transfer(mesh: &ManagedMesh, n: u64) -> (f64, bool) {
    let (a_tun, d_tun) = (churn::tun_address(0), churn::tun_address(3));
    // A new port each time: no wait for the last one's TIME_WAIT.
    let port = (20_000 + n % 10_000).to_string();
    let mut sink = mesh.topo.spawn_tool(
        "d",
        "tcp_sink.py",
        &["--listen", &d_tun, "--port", &port, "--timeout", "60"],
    );
    sink.expect_line("listening", Duration::from_secs(10));
    let started = Instant::now();
    let mut source = mesh.topo.spawn_tool(
        "a",
        "tcp_source.py",
        &[
            "--connect",
            &d_tun,
            "--port",
            &port,
            "--bind",
            &a_tun,
            "--bytes",
            &TRANSFER.to_string(),
            "--seed",
            &n.to_string(),
            "--timeout",
            "60",
        ],
    );
    let sent = key_values(&source.finish(Duration::from_secs(90)).join(" "));
    let received = key_values(&sink.finish(Duration::from_secs(30)).join(" "));
    assert_eq!(
        received["bytes"],
        TRANSFER.to_string(),
        "transfer {n}: bytes at D"
    );
    (
        started.elapsed().as_secs_f64(),
        received["sha256"] == sent["sha256"],
    )
}

fn label(i: usize) -> &'static str {
    NAMES.get(i).copied().unwrap_or("manager")
}

fn sample_all(mesh: &ManagedMesh) -> Vec<Option<Usage>> {
    (0..=NAMES.len())
        .map(|i| {
            let pid = if i < NAMES.len() {
                mesh.nodes[i].pid()
            } else {
                mesh.manager_pid()
            };
            pid.and_then(usage)
        })
        .collect()
}

#[test]
fn soak_with_loss_reordering_churn_and_restarts() {
    if !skip_unless_root("soak_with_loss_reordering_churn_and_restarts") {
        return;
    }
    let run = Duration::from_secs(seconds());
    let warm_up = (run / 5).min(Duration::from_secs(60));
    // Every veth link of the churn mesh but A - B, which crosses the relay.
    let links: Vec<(usize, usize, u8)> = churn::LINKS
        .iter()
        .copied()
        .filter(|&(x, y, _)| (x, y) != (0, 1))
        .collect();
    let (mut mesh, mut relay) =
        ManagedMesh::start_with(&NAMES, &links, &[(0, 1)], impaired_link, |i, node, _| {
            churn::configure(i, node);
            if i == 0 {
                // The relay sends to A's link address; A registers its endpoint.
                node.listen = netns::addr("0.0.0.0:6000");
            }
        });
    let mut id = add_route(&mesh);
    let churn = Churn::start(churn::slots(&mesh), RATE);
    let start = Instant::now();
    let mut samples: Vec<(Duration, Vec<Option<Usage>>)> =
        vec![(Duration::ZERO, sample_all(&mesh))];
    let mut next_sample = SAMPLE_EVERY;
    let (mut transfers, mut matched, mut slowest, mut route_readds) = (0u64, 0u64, 0f64, 0u64);
    while start.elapsed() < run {
        let (took, ok) = transfer(&mesh, transfers);
        transfers += 1;
        matched += u64::from(ok);
        slowest = slowest.max(took);
        assert!(ok, "transfer {transfers}: SHA-256 differs");
        if transfers % ROUTE_EVERY == 0 {
            let (code, _, err) = mesh.sky(0, &["route", "rm", &id]);
            assert_eq!(code, 0, "route rm {id}: {err}");
            id = add_route(&mesh);
            route_readds += 1;
        }
        if start.elapsed() >= next_sample {
            let now = start.elapsed();
            let sample = sample_all(&mesh);
            if now.as_secs() % 60 < SAMPLE_EVERY.as_secs() {
                // The trend, once a minute: each process's memory (MiB) and descriptors.
                let each: Vec<String> = sample
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        u.map_or_else(
                            || format!("{} -", label(i)),
                            |u| format!("{} {:.1}/{}", label(i), u.rss_kib as f64 / 1024.0, u.fds),
                        )
                    })
                    .collect();
                println!(
                    "soak: {:>6} s: {transfers} transfers; MiB/fds: {}",
                    now.as_secs(),
                    each.join(", ")
                );
            }
            samples.push((now, sample));
            next_sample = now + SAMPLE_EVERY;
        }
    }
    let elapsed = start.elapsed();
    let report = churn.stop();
    samples.push((elapsed, sample_all(&mesh)));
    relay.send_line("report");
    let counters: Report = serde_json::from_str(&relay.line(Duration::from_secs(5))).unwrap();

    // The summary (scripts/soak prints the lines that start with "soak:").
    println!(
        "soak: {:.0} s; {transfers} transfers of {TRANSFER} bytes, {matched} with a matching SHA-256, slowest {slowest:.1} s; the route A-B-D removed and added {route_readds} times",
        elapsed.as_secs_f64()
    );
    println!(
        "soak: churn {} changes ({:.2}/s), {} failed, slowest command {:?}",
        report.changes(),
        report.rate(),
        report.failures.len(),
        report.slowest
    );
    println!(
        "soak: relay A<->B: forward (B to A) {} received, {} lost, {} late; back (A to B) {} received, {} lost, {} late",
        counters.forward.received,
        counters.forward.lost,
        counters.forward.late,
        counters.back.received,
        counters.back.lost,
        counters.back.late
    );
    let warm_index = samples
        .iter()
        .position(|(t, _)| *t >= warm_up)
        .unwrap_or(samples.len() - 1);
    let hours = elapsed.as_secs_f64() / 3600.0;
    let rss_bound = RSS_MARGIN_KIB + (RSS_PER_HOUR_KIB as f64 * hours) as i64;
    let mut worst = Vec::new();
    for i in 0..=NAMES.len() {
        let first = samples[0].1[i];
        let (warm_at, warm) = (samples[warm_index].0, samples[warm_index].1[i]);
        let last = samples.last().unwrap().1[i];
        let Some(warm) = warm else {
            panic!("{}: gone by the warm-up sample", label(i));
        };
        let (mut fds, mut kib) = (i64::MIN, i64::MIN);
        for (_, sample) in &samples[warm_index..] {
            let Some(u) = sample[i] else {
                panic!("{}: died; samples: {samples:?}", label(i));
            };
            let (f, k) = growth(warm, u);
            fds = fds.max(f);
            kib = kib.max(k);
        }
        println!(
            "soak: {:>7}: start {}, after warm-up ({} s) {warm}, end {}; most above warm-up: {fds} fds, {kib} KiB",
            label(i),
            first.map(|u| u.to_string()).unwrap_or_default(),
            warm_at.as_secs(),
            last.map(|u| u.to_string()).unwrap_or_default(),
        );
        worst.push((i, fds, kib));
    }
    println!("soak: bounds: {FD_MARGIN} fds, {rss_bound} KiB above the warm-up sample");

    assert!(report.failures.is_empty(), "churn: {:#?}", report.failures);
    assert_eq!(matched, transfers);
    assert!(transfers > 0);
    for (i, fds, kib) in worst {
        assert!(
            fds <= FD_MARGIN && kib <= rss_bound,
            "{}: {fds} more descriptors, {kib} KiB more memory than after the warm-up",
            label(i)
        );
    }
    for node in &mut mesh.nodes {
        assert!(node.is_running(), "{} died", node.host());
        let panics = panic_lines(&node.log_text());
        assert!(panics.is_empty(), "{}: {panics:#?}", node.host());
    }
    let panics = panic_lines(&mesh.manager_log());
    assert!(panics.is_empty(), "manager: {panics:#?}");
    // The impairment really was there, and every transfer crossed it.
    assert!(
        counters.back.lost > 0 && counters.back.late > 0,
        "{counters:?}"
    );
    assert!(
        counters.back.bytes_received > transfers * TRANSFER,
        "the transfers did not all cross the relay: {counters:?}"
    );
}
