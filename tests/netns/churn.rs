//! Route churn through the product: a thread that runs `skywire route add` and
//! `skywire route rm` on nodes of a managed mesh (`managed.rs`) at a steady rate, so the
//! route ends and relays on those paths install and remove rules while the test's own
//! traffic flows. Used by `tests/churn.rs` and `tests/soak.rs`.
//!
//! Each tick takes the next slot (a node's control socket and a destination key), round
//! robin: a slot holding a route removes it (`route rm ID`), an empty one adds it
//! (`route add KEY --json`, keeping the id). Each command is one change. The ticks are
//! `1/rate` apart from the start; a command slower than that delays the next ones, which
//! then run back to back until the schedule is caught up, so the rate achieved is the
//! rate asked unless the commands themselves are slower (the report says).
//!
//! Stopping removes every route the churn still holds, so none outlives it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::skywire_binary;

/// A route the churn adds and removes in turn: from the node behind `socket` to `dst`.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// For the report: `e->a`.
    pub(crate) label: String,
    /// The source node's control socket.
    pub(crate) socket: PathBuf,
    /// The destination's public key.
    pub(crate) dst: String,
}

/// A command that failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// When it ended.
    pub(crate) at: Instant,
    /// `add e->a` or `rm e->a`.
    pub(crate) what: String,
    /// Its exit code and stderr.
    pub(crate) error: String,
}

/// What a churn did.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Routes added (exit 0 with an id).
    pub(crate) adds: u64,
    /// Routes removed (exit 0).
    pub(crate) removes: u64,
    /// Commands that failed, in order.
    pub(crate) failures: Vec<Failure>,
    /// The slowest command.
    pub(crate) slowest: Duration,
    /// From the first tick to the stop.
    pub(crate) elapsed: Duration,
}

impl Report {
    /// Successful changes.
    pub(crate) fn changes(&self) -> u64 {
        self.adds + self.removes
    }

    /// Successful changes a second.
    pub(crate) fn rate(&self) -> f64 {
        self.changes() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The failures that ended before `t`.
    pub(crate) fn failures_before(&self, t: Instant) -> Vec<&Failure> {
        self.failures.iter().filter(|f| f.at < t).collect()
    }
}

/// A running churn; [`Churn::stop`] ends it and reports. Dropped without `stop` (a test
/// that panicked), it stops too.
pub(crate) struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

/// `skywire ARGS --socket SOCKET`: Ok(stdout) on exit 0, else the exit code and stderr.
fn sky(socket: &PathBuf, args: &[&str]) -> Result<String, String> {
    let out = Command::new(skywire_binary())
        .args(args)
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run skywire: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Churn {
    /// Start churning `slots` at `per_second` changes a second.
    pub(crate) fn start(slots: Vec<Slot>, per_second: u32) -> Self {
        assert!(!slots.is_empty() && per_second > 0);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || run(&slots, per_second, &stopping));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop (after the command under way) and report.
    pub(crate) fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the churn thread panicked")
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(slots: &[Slot], per_second: u32, stop: &AtomicBool) -> Report {
    let period = Duration::from_secs(1) / per_second;
    let mut held: Vec<Option<String>> = vec![None; slots.len()];
    let mut report = Report {
        adds: 0,
        removes: 0,
        failures: Vec::new(),
        slowest: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let start = Instant::now();
    let mut tick: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + period * tick;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let i = tick as usize % slots.len();
        tick += 1;
        let slot = &slots[i];
        let began = Instant::now();
        let (verb, result) = match held[i].take() {
            Some(id) => (
                "rm",
                sky(&slot.socket, &["route", "rm", &id]).map(|_| {
                    report.removes += 1;
                }),
            ),
            None => (
                "add",
                sky(&slot.socket, &["route", "add", &slot.dst, "--json"]).and_then(|out| {
                    let route: serde_json::Value =
                        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
                    let id = route["id"]
                        .as_str()
                        .ok_or_else(|| format!("no id in {out}"))?;
                    held[i] = Some(id.to_owned());
                    report.adds += 1;
                    Ok(())
                }),
            ),
        };
        report.slowest = report.slowest.max(began.elapsed());
        if let Err(error) = result {
            report.failures.push(Failure {
                at: Instant::now(),
                what: format!("{verb} {}", slot.label),
                error,
            });
        }
    }
    report.elapsed = start.elapsed();
    // Leave nothing behind.
    for (slot, id) in slots.iter().zip(held) {
        if let Some(id) = id {
            let _ = sky(&slot.socket, &["route", "rm", &id]);
        }
    }
    report
}

/// The hosts of the churn mesh (`tests/churn.rs`, `tests/soak.rs`):
///
/// ```text
///        B                 A (TUN 10.77.0.1) carries the tests' traffic to D (10.77.0.4)
///      / | \                 over A - B - D or A - C - D (B or C relays);
///     A  E  D              E (TUN 10.77.0.5) is linked to B and C only, so the churned
///      \ | /                 routes E -> A, E -> D, A -> E and D -> E each cross B or C
///        C                   too, and every churn step changes a relay's rules and an
///                            end's rules on the nodes the traffic crosses.
/// ```
pub(crate) const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
/// (node, node, third byte of the link's subnet) of every veth link of the churn mesh.
pub(crate) const LINKS: [(usize, usize, u8); 6] = [
    (0, 1, 1),
    (1, 3, 2),
    (0, 2, 3),
    (2, 3, 4),
    (4, 1, 5),
    (4, 2, 6),
];
/// The nodes with a TUN device: A, D, E.
pub(crate) const TUN_NODES: [usize; 3] = [0, 3, 4];

/// Node `i`'s TUN address (A, D and E have one).
pub(crate) fn tun_address(i: usize) -> String {
    format!("10.77.0.{}", i + 1)
}

/// The churn mesh's additions to node `i`'s config: a TUN device on A, D and E, each of
/// which accepts route ends from any node for addresses in 10.77.0.0/24.
pub(crate) fn configure(i: usize, node: &mut skywire_control::config::NodeSection) {
    if !TUN_NODES.contains(&i) {
        return;
    }
    node.tun = Some(super::tun("sky0", &[&format!("{}/32", tun_address(i))]));
    if let Some(manager) = &mut node.manager {
        manager.accept = vec![skywire_control::config::AcceptRule {
            peer: None,
            prefixes: vec![super::prefix("10.77.0.0/24")],
        }];
    }
}

/// The churned routes: E -> A, E -> D, A -> E, D -> E.
pub(crate) fn slots(mesh: &super::managed::ManagedMesh) -> Vec<Slot> {
    [(4, 0), (4, 3), (0, 4), (3, 4)]
        .into_iter()
        .map(|(from, to)| Slot {
            label: format!("{}->{}", NAMES[from], NAMES[to]),
            socket: mesh.nodes[from].socket().to_path_buf(),
            dst: mesh.key(to).to_owned(),
        })
        .collect()
}
