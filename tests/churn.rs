//! Route churn under load (issue 16, row 7 of RELIABILITY.md), with a manager and real
//! nodes in namespaces (root only; skipped with a message otherwise): iperf3 from A's TUN
//! to D's over a 3-hop route (A - B - D or A - C - D) while `skywire route add` and
//! `route rm` change 10 other routes a second for 60 s, each crossing B or C and ending
//! at A, D or E (the churn mesh of `tests/netns/churn.rs`), so the relays' and the ends'
//! rule tables change under the flow. Then the relay of the iperf3 route is killed with
//! SIGKILL while the churn goes on.
//!
//! What must hold: every churn command before the kill succeeds, at least 9 changes a
//! second; the iperf3 flow never stops for a second during the churn and is back within
//! 5 s of the kill (the receiver's 0.1 s intervals); the file descriptors and resident
//! memory of every node and of the manager stay flat after a 10 s warm-up (at most
//! [`FD_MARGIN`] more descriptors and [`RSS_MARGIN_KIB`] more memory at the end); no node
//! but the killed one dies; no log mentions a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::thread;
use std::time::{Duration, Instant};

use netns::churn::{self, Churn, NAMES};
use netns::iperf::Iperf;
use netns::managed::ManagedMesh;
use netns::usage::{Usage, growth, panic_lines, usage};
use netns::{skip_unless_root, wait_until};

/// Route changes a second.
const RATE: u32 = 10;
/// How long the churn runs before the kill.
const CHURN: Duration = Duration::from_secs(60);
/// Into the churn, when the "after warm-up" sample is taken.
const WARM_UP: Duration = Duration::from_secs(10);
/// The traffic must be back this soon after the kill.
const BACK_WITHIN: Duration = Duration::from_secs(5);
/// Descriptors a process may hold at the end beyond its warm-up count: a control
/// connection or two open at the moment of the sample (the churn's own commands).
const FD_MARGIN: i64 = 4;
/// Resident memory a process may gain from the warm-up to the end (allocator noise; a
/// per-change leak of 1 KiB would be ~600 KiB, of 10 KiB ~6 MiB).
const RSS_MARGIN_KIB: i64 = 4 * 1024;
/// iperf3's rate cap: enough to load the path, not so much that the debug-build nodes
/// starve the churn's commands of the machine's two cores.
const BITRATE: &str = "0";

/// The usage of node `i` (the manager for `i == NAMES.len()`), if it runs.
fn sample(mesh: &ManagedMesh, i: usize) -> Option<Usage> {
    let pid = if i < NAMES.len() {
        mesh.nodes[i].pid()?
    } else {
        mesh.manager_pid()?
    };
    usage(pid)
}

fn label(i: usize) -> &'static str {
    NAMES.get(i).copied().unwrap_or("manager")
}

#[test]
fn routes_churn_under_iperf3_and_the_relay_is_killed() {
    if !skip_unless_root("routes_churn_under_iperf3_and_the_relay_is_killed") {
        return;
    }
    let test_start = Instant::now();
    let mut mesh = ManagedMesh::start(&NAMES, &churn::LINKS, |i, node, _| {
        churn::configure(i, node);
    });
    let everyone = NAMES.len() + 1;
    let at_start: Vec<Option<Usage>> = (0..everyone).map(|i| sample(&mesh, i)).collect();

    // The route under test, A -> D.
    let (code, out, err) = mesh.sky(0, &["route", "add", mesh.key(3), "--json"]);
    assert_eq!(code, 0, "route add: {err}\n{}", mesh.manager_log());
    let route: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = route["id"].as_str().unwrap().to_owned();
    let (a_tun, d_tun) = (churn::tun_address(0), churn::tun_address(3));
    let up = wait_until(Duration::from_secs(10), || {
        mesh.topo.ping_args("a", &a_tun, &d_tun, 1, &["-W", "1"]) == 1
    });
    assert!(up.is_some(), "no ping A -> D over route {id}");

    let seconds = CHURN.as_secs() + 12;
    let mut iperf = Iperf::start(
        &mesh.topo,
        ("d", &d_tun),
        ("a", &a_tun),
        seconds,
        0.1,
        BITRATE,
    );
    thread::sleep(Duration::from_secs(2));
    let churn_start = Instant::now();
    let churn = Churn::start(churn::slots(&mesh), RATE);
    thread::sleep(WARM_UP);
    let warm: Vec<Option<Usage>> = (0..everyone).map(|i| sample(&mesh, i)).collect();
    thread::sleep(CHURN - WARM_UP);

    // The relay the iperf3 flow crosses now, sampled once more, then killed.
    let (path, state) = mesh.route_path(0, &id).expect("A lists its route");
    assert_eq!((path.len(), state.as_str()), (3, "active"), "{path:?}");
    let relay = path[1];
    let relay_last = sample(&mesh, relay);
    let kill = Instant::now();
    mesh.nodes[relay].kill9();
    let back = iperf.back_after(kill, Duration::from_secs(15));
    // The churn goes on through the repair for a few more seconds.
    thread::sleep(Duration::from_secs(3));
    let report = churn.stop();
    let end: Vec<Option<Usage>> = (0..everyone).map(|i| sample(&mesh, i)).collect();
    let (mean, longest_stall) = iperf.between(churn_start, kill);
    let new_path = mesh.route_path(0, &id).map(|(p, _)| p);

    // The figures first, so that a failing run shows them too.
    println!(
        "route {id}: {} then {new_path:?}; {} killed",
        path.iter().map(|&i| NAMES[i]).collect::<Vec<_>>().join("-"),
        NAMES[relay]
    );
    println!(
        "churn: {} changes ({} adds, {} removes) in {:.1} s = {:.2}/s; slowest command {:?}; \
         {} failed ({} before the kill)",
        report.changes(),
        report.adds,
        report.removes,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.slowest,
        report.failures.len(),
        report.failures_before(kill).len()
    );
    for failure in &report.failures {
        println!(
            "  failed {:.1} s {} the kill: {}: {}",
            if failure.at < kill {
                (kill - failure.at).as_secs_f64()
            } else {
                (failure.at - kill).as_secs_f64()
            },
            if failure.at < kill { "before" } else { "after" },
            failure.what,
            failure.error
        );
    }
    println!(
        "iperf3 during the churn: {mean:.1} Mbit/s mean (cap {BITRATE}), longest stall {longest_stall:?}"
    );
    println!("traffic back after the kill: {back:?} (0.1 s intervals: an upper bound)");
    for i in 0..everyone {
        let show = |u: &Option<Usage>| u.map_or_else(|| "-".to_owned(), |u| u.to_string());
        let last = if i == relay { &relay_last } else { &end[i] };
        println!(
            "{:>8}: start {}, after warm-up {}, end {}",
            label(i),
            show(&at_start[i]),
            show(&warm[i]),
            show(last)
        );
    }

    // Churn: all through, at the rate asked.
    let early = report.failures_before(kill);
    assert!(early.is_empty(), "churn commands failed: {early:#?}");
    let changes_before_kill = report.rate() * CHURN.as_secs_f64();
    assert!(
        report.rate() >= f64::from(RATE) * 0.9,
        "only {:.2} changes a second (~{changes_before_kill:.0} in the churn)",
        report.rate()
    );
    // Traffic: never stopped by the churn, back after the kill.
    assert!(
        longest_stall < Duration::from_secs(1),
        "iperf3 stalled for {longest_stall:?} during the churn"
    );
    let back = back.unwrap_or_else(|| {
        panic!(
            "no traffic 15 s after the kill of {}; route: {:?}\nmanager:\n{}",
            NAMES[relay],
            mesh.sky(0, &["route", "ls"]),
            mesh.manager_log()
        )
    });
    assert!(back <= BACK_WITHIN, "traffic back only after {back:?}");
    iperf.finish(Duration::from_secs(30));
    // Nobody else died; resources flat after the warm-up.
    for i in 0..everyone {
        if i == relay {
            continue;
        }
        let alive = if i < NAMES.len() {
            mesh.nodes[i].is_running()
        } else {
            mesh.manager_pid().is_some()
        };
        assert!(alive, "{} died", label(i));
    }
    for i in 0..everyone {
        let last = if i == relay { relay_last } else { end[i] };
        let (Some(warm), Some(last)) = (warm[i], last) else {
            panic!(
                "{}: no sample (warm-up {:?}, end {last:?})",
                label(i),
                warm[i]
            );
        };
        let (fds, kib) = growth(warm, last);
        assert!(
            fds <= FD_MARGIN && kib <= RSS_MARGIN_KIB,
            "{}: grew by {fds} descriptors and {kib} KiB after the warm-up ({warm} -> {last})",
            label(i)
        );
    }
    // No panic anywhere.
    for node in &mesh.nodes {
        let panics = panic_lines(&node.log_text());
        assert!(panics.is_empty(), "{}: {panics:#?}", node.host());
    }
    let panics = panic_lines(&mesh.manager_log());
    assert!(panics.is_empty(), "manager: {panics:#?}");
    println!("whole test: {:?}", test_start.elapsed());
}
