//! The namespace harness of `tests/netns` cleans up after itself (root only): a test that
//! panics leaves no namespace, process or folder behind, and namespaces left by a test
//! process that died before its guards ran are removed by the next run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use netns::{Node, Topology, ip};

fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A pid no process has now, for a namespace name that looks left behind.
fn dead_pid() -> u32 {
    (2..4_000_000u32)
        .rev()
        .find(|pid| !Path::new("/proc").join(pid.to_string()).exists())
        .unwrap()
}

/// One test, so the stale namespace exists before this process's first `Topology::new`
/// (the sweep runs once per process).
#[test]
fn stale_namespaces_go_first_and_a_panicking_test_leaves_nothing() {
    if !netns::skip_unless_root("stale_namespaces_go_first_and_a_panicking_test_leaves_nothing") {
        return;
    }
    // Left behind by a test process that no longer exists, with a process still in it.
    let stale = format!("swt-{}-0x", dead_pid());
    let stale_dir = std::env::temp_dir().join(&stale);
    std::fs::create_dir_all(&stale_dir).unwrap();
    ip(&["netns", "add", &stale]);
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "600"])
        .spawn()
        .unwrap();
    let inside = netns::wait_until(std::time::Duration::from_secs(5), || {
        !ip(&["netns", "pids", &stale]).trim().is_empty()
    });
    assert!(inside.is_some(), "sleep did not enter {stale}");

    // A test that builds a topology, starts a node and a helper, and panics.
    let (tx, rx) = mpsc::channel::<(String, u32, u32, PathBuf)>();
    let panicked = thread::spawn(move || {
        let mut topo = Topology::new();
        let ns = topo.host("r");
        let mut node = Node::new(&topo, "r", "r");
        node.configure(|node| node.listen = netns::addr("127.0.0.1:6000"));
        node.start();
        let helper = topo.spawn("r", "sleep", Path::new("sleep"), &["600"]);
        let helper_pid = helper.pid();
        tx.send((ns, node.pid().unwrap(), helper_pid, topo.dir().to_owned()))
            .unwrap();
        let _keep = (helper, node, topo);
        panic!("a test failing on purpose (its node's log follows)");
    })
    .join();
    assert!(panicked.is_err(), "the inner test should have panicked");

    let (ns, node_pid, helper_pid, dir) = rx.recv().unwrap();
    let left = namespaces();
    assert!(!left.contains(&ns), "{ns} left behind: {left:?}");
    assert!(
        !left.contains(&stale),
        "stale {stale} not removed: {left:?}"
    );
    assert!(
        !stale_dir.exists(),
        "stale folder {} not removed",
        stale_dir.display()
    );
    for pid in [node_pid, helper_pid] {
        assert!(
            !Path::new("/proc").join(pid.to_string()).exists(),
            "process {pid} left running"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    // The sweep SIGKILLed the process in the stale namespace.
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "{status}");
    println!("ok: {ns} and stale {stale} removed, processes {node_pid} and {helper_pid} gone");
}
