//! The daemons' log, through the real binary on loopback (no root): a `skywire manager` and
//! a `skywire node` registered with it write lines with a UTC timestamp and a level by
//! default; `--log-level warn` leaves the info lines out (also over `SKYWIRE_LOG`); under
//! the journal (`JOURNAL_STREAM` naming standard error) the lines carry `<6>` instead; a
//! bad level or filter is a usage error (exit 2).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Scratch, skywire, skywire_binary};
use rustix::process::{Pid, Signal, kill_process};
use skywire_control::config::{ConfigFile, ManagerLink, ManagerSection, NodeSection};
use skywire_control::keyfile;
use skywire_dataplane::crypto::PublicKey;

/// A child process killed (SIGKILL) and reaped on drop, unless it already was.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then the exit (within 10 s).
    fn stop(&mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).unwrap()).unwrap();
        let _ = kill_process(pid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `skywire ARGS` with standard error into `log` and the environment `env` (and neither
/// `SKYWIRE_LOG` nor `JOURNAL_STREAM` from ours unless `env` sets them).
fn spawn(args: &[&str], log: &Path, env: &[(&str, String)]) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(skywire_binary());
    cmd.args(args)
        .env_remove("SKYWIRE_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    for (key, value) in env {
        cmd.env(key, value);
    }
    Proc(cmd.spawn().unwrap())
}

/// The log file's device and inode as `JOURNAL_STREAM` gives them.
fn journal_stream_of(log: &Path) -> String {
    let meta = std::fs::metadata(log).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Wait until `log` has a line containing `text`; return that line.
fn wait_for_line(log: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(line) = read(log).lines().find(|l| l.contains(text)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {text:?} within 15 s:\n{}",
            read(log)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A manager config in `dir` listening on a free port; returns its path, address and key.
fn manager_config(dir: &Path) -> (String, SocketAddr, PublicKey) {
    let key = keyfile::write_new_key(dir.join("manager.key")).unwrap();
    let mut section = ManagerSection::new("manager.key");
    section.listen = free_tcp();
    let config = dir.join("manager.yaml");
    ConfigFile::manager(section.clone()).write(&config).unwrap();
    (config.to_str().unwrap().to_owned(), section.listen, key)
}

/// A node config in `dir` (no TUN device) registering with the manager at `manager`.
fn node_config(dir: &Path, manager: SocketAddr, manager_key: PublicKey) -> String {
    keyfile::write_new_key(dir.join("node.key")).unwrap();
    let mut section = NodeSection::new("node.key");
    section.listen = free_udp();
    section.control_socket = dir.join("ctl").join("node.sock");
    section.state_dir = dir.join("state");
    section.manager = Some(ManagerLink {
        address: manager,
        key: manager_key,
        endpoint: section.listen,
        accept: Vec::new(),
    });
    let config = dir.join("node.yaml");
    ConfigFile::node(section).write(&config).unwrap();
    config.to_str().unwrap().to_owned()
}

/// Whether `line` starts with `YYYY-MM-DDTHH:MM:SS.mmmZ ` (UTC, RFC 3339, milliseconds).
fn has_timestamp(line: &str) -> bool {
    let Some(stamp) = line.get(..25) else {
        return false;
    };
    stamp.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        23 => b == b'Z',
        24 => b == b' ',
        _ => b.is_ascii_digit(),
    })
}

#[test]
fn by_default_lines_carry_a_utc_timestamp_and_the_level() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    let (config, listen, key) = manager_config(dir);
    let manager_log = dir.join("manager.log");
    // A JOURNAL_STREAM that names another file (an inherited variable) changes nothing.
    let elsewhere = journal_stream_of(&dir.join("manager.yaml"));
    let mut manager = spawn(
        &["manager", "--config", &config],
        &manager_log,
        &[("JOURNAL_STREAM", elsewhere)],
    );
    let line = wait_for_line(&manager_log, "listening on");
    assert!(has_timestamp(&line), "{line}");
    assert!(line[24..].starts_with(" INFO  skywire: manager "), "{line}");

    let node_log = dir.join("node.log");
    let node_config = node_config(dir, listen, key);
    let mut node = spawn(&["node", "--config", &node_config], &node_log, &[]);
    let line = wait_for_line(&node_log, "registered with the manager");
    assert!(has_timestamp(&line), "{line}");
    assert_eq!(
        &line[24..],
        " INFO  skywire: manager client: registered with the manager"
    );
    // The manager logs the registration at info too (its core's `Output::Log` level).
    let line = wait_for_line(&manager_log, "registered: endpoint");
    assert!(
        line[24..].starts_with(" INFO  skywire manager: node "),
        "{line}"
    );

    assert!(node.stop().success(), "{}", read(&node_log));
    assert!(manager.stop().success(), "{}", read(&manager_log));
    for line in read(&manager_log).lines().chain(read(&node_log).lines()) {
        assert!(has_timestamp(line), "a line without a timestamp: {line}");
    }
}

#[test]
fn log_level_warn_leaves_info_lines_out_and_wins_over_skywire_log() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    let (config, listen, _) = manager_config(dir);
    let log = dir.join("manager.log");
    let mut manager = spawn(
        &["manager", "--config", &config, "--log-level", "warn"],
        &log,
        &[("SKYWIRE_LOG", "debug".to_owned())],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "{}", read(&log));
        thread::sleep(Duration::from_millis(20));
    }
    assert!(manager.stop().success(), "{}", read(&log));
    let text = read(&log);
    assert!(!text.contains("INFO"), "{text}");
    assert!(!text.contains("listening on"), "{text}");

    // SKYWIRE_LOG alone: warn for everything but the subcommand's own module.
    let mut manager = spawn(
        &["manager", "--config", &config],
        &log,
        &[("SKYWIRE_LOG", "warn,skywire::mesh=info".to_owned())],
    );
    wait_for_line(&log, "listening on");
    assert!(manager.stop().success(), "{}", read(&log));
}

#[test]
fn under_the_journal_lines_carry_the_priority_instead() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    let (config, _, _) = manager_config(dir);
    let log = dir.join("manager.log");
    std::fs::File::create(&log).unwrap();
    let stream = journal_stream_of(&log);
    // `spawn` creates the file again: truncated, the same inode.
    let mut manager = spawn(
        &["manager", "--config", &config],
        &log,
        &[("JOURNAL_STREAM", stream)],
    );
    let line = wait_for_line(&log, "listening on");
    assert!(line.starts_with("<6>skywire: manager "), "{line}");
    assert!(manager.stop().success(), "{}", read(&log));
    let text = read(&log);
    for line in text.lines() {
        assert!(line.starts_with("<6>"), "{text}");
    }
    assert!(text.contains("<6>skywire: manager stopped"), "{text}");
}

#[test]
fn a_bad_level_or_filter_is_a_usage_error() {
    let (out, _, err) = skywire(&["--log-level", "loud", "keygen", "--out", "/nonexistent/k"]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value 'loud' for '--log-level"),
        "{err}"
    );

    let out = Command::new(skywire_binary())
        .args(["pubkey", "--key", "/nonexistent/k"])
        .env("SKYWIRE_LOG", "skywire=loud")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("skywire: error: SKYWIRE_LOG=\"skywire=loud\": "),
        "{err}"
    );
    // The flag wins: the variable is not even read.
    let out = Command::new(skywire_binary())
        .args(["--log-level", "info", "pubkey", "--key", "/nonexistent/k"])
        .env("SKYWIRE_LOG", "skywire=loud")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(2), "{out:?}");
}
