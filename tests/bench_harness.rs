//! `skywire bench` as a user runs it (root only): a short run produces the table, JSON and
//! picture with real measurements; an interrupted run still removes its namespaces and
//! processes and restores the sysctls it raised; a missing iperf3 is reported with the
//! command that installs it. Speed is not asserted here (BENCHMARKS.md has the figures).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, is_root, path_arg, skywire_binary, text};
use serde_json::Value;

/// The global settings the bench raises and must restore.
const SYSCTLS: [&str; 4] = [
    "/proc/sys/net/core/rmem_default",
    "/proc/sys/net/core/wmem_default",
    "/proc/sys/net/core/rmem_max",
    "/proc/sys/net/core/wmem_max",
];

fn sysctls() -> Vec<String> {
    SYSCTLS
        .iter()
        .map(|p| fs::read_to_string(p).unwrap().trim().to_owned())
        .collect()
}

/// Namespaces and processes the bench would have left behind.
fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in text(&list.stdout).lines() {
        if line.starts_with("skybench-") {
            left.push(format!("namespace {line}"));
        }
    }
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("/skybench-") {
            left.push(format!("process {cmdline}"));
        }
    }
    left
}

/// The bench changes global settings and its tests check them: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn ready(test: &str) -> bool {
    if !is_root() {
        println!("{test}: skipped: needs root (CI runs as root)");
        return false;
    }
    let iperf3 = Command::new("iperf3").arg("--version").output();
    assert!(
        iperf3.is_ok(),
        "{test}: iperf3 is missing: scripts/test installs it"
    );
    true
}

#[test]
fn a_short_run_measures_writes_json_and_svg_and_leaves_nothing() {
    if !ready("a_short_run_measures_writes_json_and_svg_and_leaves_nothing") {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = sysctls();
    let dir = Scratch::new();
    let out = dir.path("results");
    let run = Command::new(skywire_binary())
        .args([
            "bench",
            "--seconds",
            "1",
            "--repetitions",
            "1",
            "--relays",
            "1",
            "--skip-boringtun",
            "--out",
            path_arg(&out),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", text(&run.stderr));
    assert!(stdout.contains("tcp_1_stream_forward"), "{stdout}");
    assert!(stdout.contains("targets:"), "{stdout}");
    assert!(stdout.contains("skipped: boringtun: left out"), "{stdout}");

    let report: Value =
        serde_json::from_str(&fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let median = |metric: &str, hops: u64| {
        report["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == metric && m["hops"] == hops && m["tunnel"] == "skywire")
            .unwrap_or_else(|| panic!("{metric} at {hops} hops not measured"))["median"]
            .as_f64()
            .unwrap()
    };
    // Real traffic crossed the tunnel, one hop and through a relay.
    assert!(median("tcp_1_stream_forward", 1) > 0.05);
    assert!(median("tcp_1_stream_reverse", 1) > 0.05);
    assert!(median("tcp_1_stream_forward", 2) > 0.05);
    assert!(median("udp64_received_pps", 1) > 100.0);
    assert!(median("rss_idle_mib", 1) > 0.5);
    assert!(median("cpu_seconds_per_gbit", 1) > 0.0);
    let meta = &report["meta"];
    for key in [
        "date",
        "kernel",
        "cpus",
        "skywire",
        "iperf3",
        "tcp_congestion_control",
    ] {
        assert!(
            meta[key].as_str().is_some_and(|v| !v.is_empty()),
            "meta.{key} missing: {meta}"
        );
    }
    let svg = fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("tcp_1_stream_forward"));

    assert_eq!(leftovers(), Vec::<String>::new());
    assert_eq!(sysctls(), before, "socket buffer sysctls restored");
}

/// A bench run that is interrupted (SIGINT) and reaped if the test fails before it does so.
struct Interruptible(Option<std::process::Child>);

impl Drop for Interruptible {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

#[test]
fn an_interrupted_run_cleans_up_and_restores() {
    if !ready("an_interrupted_run_cleans_up_and_restores") {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = sysctls();
    let dir = Scratch::new();
    let mut child = Interruptible(Some(
        Command::new(skywire_binary())
            .args([
                "bench",
                "--seconds",
                "30",
                "--skip-boringtun",
                "--out",
                path_arg(&dir.path("results")),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    // Wait until the chain exists and the sysctls were raised, then Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sysctls() == before || leftovers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the bench never started its chain"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second run meanwhile is refused: it would disturb the figures and the restore.
    let second = Command::new(skywire_binary())
        .args(["bench", "--seconds", "1"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(69));
    assert!(text(&second.stderr).contains("another skywire bench is running"));
    // Interrupted in the middle of a 30-second iperf3 run: it stops at once.
    std::thread::sleep(Duration::from_secs(2));
    let child = child.0.take().unwrap();
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let interrupted_at = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        interrupted_at.elapsed()
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(leftovers(), Vec::<String>::new());
    assert_eq!(sysctls(), before, "socket buffer sysctls restored");
}

#[test]
fn a_missing_iperf3_names_the_install_command() {
    if !is_root() {
        println!("a_missing_iperf3_names_the_install_command: skipped: needs root");
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = Command::new(skywire_binary())
        .args(["bench", "--seconds", "1"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("apt-get install -y iperf3"), "{stderr}");
}

#[test]
fn a_missing_ping_is_named_before_anything_is_measured() {
    if !is_root() {
        println!("a_missing_ping_is_named_before_anything_is_measured: skipped: needs root");
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A PATH with iperf3 (and nothing else): it used to fail much later with "the skywire
    // tunnel did not come up".
    let dir = Scratch::new();
    let bin = dir.path("bin");
    fs::create_dir(&bin).unwrap();
    let iperf3 = Command::new("sh")
        .args(["-c", "command -v iperf3"])
        .output()
        .unwrap();
    let iperf3 = text(&iperf3.stdout).trim().to_owned();
    assert!(!iperf3.is_empty(), "iperf3 is needed for this test");
    std::os::unix::fs::symlink(&iperf3, bin.join("iperf3")).unwrap();
    let out = Command::new(skywire_binary())
        .args(["bench", "--seconds", "1"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("ping is not installed") && stderr.contains("iputils-ping"),
        "{stderr}"
    );
}

/// A symlink planted where the results go (as root, the old `fs::write` rewrote its
/// target) is refused before anything is measured, and its target is left alone.
#[test]
fn a_symlink_at_an_output_path_is_refused_before_the_run() {
    if !is_root() {
        println!("a_symlink_at_an_output_path_is_refused_before_the_run: skipped: needs root");
        return;
    }
    let dir = Scratch::new();
    let victim = dir.write("victim", "keep me\n");
    let out_dir = dir.path("results");
    fs::create_dir(&out_dir).unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("bench.svg")).unwrap();
    let out = Command::new(skywire_binary())
        .args(["bench", "--seconds", "1", "--out", path_arg(&out_dir)])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bench.svg: is a symlink"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "it measured first: {}",
        text(&out.stdout)
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(!out_dir.join("bench.json").exists());
}
