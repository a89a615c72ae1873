//! `skywire node` exits at once on SIGTERM, whatever its manager connection is doing: the
//! node's threads are woken by their stop (the control and app sockets' accept threads
//! from `poll(2)`, the uplink through its channel and a shut-down manager connection), and
//! nothing waits out a timeout. Real processes on loopback, no root needed:
//!
//! - a manager address that accepts TCP and never says a word (the node waits for `HELLO`);
//! - a black-holed manager address (TEST-NET-1: the SYN goes nowhere, or is refused);
//! - a real `skywire manager`, the node registered, then the manager frozen (SIGSTOP) while
//!   a `skywire route add` waits for it through the node's control socket.
//!
//! Each asserts the exit within [`EXIT_LIMIT`], which leaves a margin for slow CI; the
//! target is under 200 ms, and the measured times are printed (`--nocapture`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Scratch, skywire_binary};
use rustix::process::{Pid, Signal, kill_process};
use skywire_control::config::{ConfigFile, ManagerLink, ManagerSection, NodeSection};
use skywire_control::keyfile;
use skywire_control::node::ctl::request_status;
use skywire_dataplane::crypto::PublicKey;

/// SIGTERM to exit, at most.
const EXIT_LIMIT: Duration = Duration::from_millis(500);

/// A child process killed (SIGKILL) and reaped on drop, unless it already was.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    kill_process(pid, signal).unwrap();
}

/// A free loopback UDP address (bound and released; the node binds it a moment later).
fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A free loopback TCP address.
fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spawn(dir: &Path, args: &[&str], log: &str) -> Proc {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Proc(
        Command::new(skywire_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A node in `dir` registering with the manager at `manager` (key `manager_key`); returns
/// once its control socket answers.
fn start_node(dir: &Path, manager: SocketAddr, manager_key: PublicKey) -> (Proc, PathBuf) {
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
    let socket = section.control_socket.clone();
    let config = dir.join("node.yaml");
    ConfigFile::node(section).write(&config).unwrap();
    let mut node = spawn(
        dir,
        &["node", "--config", config.to_str().unwrap()],
        "node.log",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while request_status(&socket, Duration::from_millis(500)).is_err() {
        assert!(node.0.try_wait().unwrap().is_none(), "{}", log(dir, "node"));
        assert!(Instant::now() < deadline, "{}", log(dir, "node"));
        thread::sleep(Duration::from_millis(20));
    }
    (node, socket)
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// SIGTERM `node` and return how long it took to exit; it must exit with success.
fn terminate(dir: &Path, node: &mut Proc, case: &str) -> Duration {
    signal(&node.0, Signal::TERM);
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "{case}: no exit 10 s after SIGTERM:\n{}",
            log(dir, "node")
        );
        thread::sleep(Duration::from_millis(1));
    };
    let took = sent.elapsed();
    eprintln!(
        "{case}: SIGTERM to exit in {:.1} ms",
        took.as_secs_f64() * 1000.0
    );
    assert!(status.success(), "{case}: {status}\n{}", log(dir, "node"));
    assert!(
        took < EXIT_LIMIT,
        "{case}: the node took {took:?} to exit after SIGTERM:\n{}",
        log(dir, "node")
    );
    took
}

#[test]
fn sigterm_during_a_manager_handshake_that_never_answers() {
    let scratch = Scratch::new();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    // Accept and hold every connection, never writing a byte.
    thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let (mut node, _) = start_node(scratch.dir(), address, PublicKey::from_bytes([7; 32]));
    // Long enough to be waiting for HELLO (the connect timeout is 3 s).
    thread::sleep(Duration::from_millis(300));
    terminate(scratch.dir(), &mut node, "silent manager");
}

#[test]
fn sigterm_while_the_manager_address_is_black_holed() {
    let scratch = Scratch::new();
    let nowhere: SocketAddr = "192.0.2.1:6000".parse().unwrap();
    let (mut node, _) = start_node(scratch.dir(), nowhere, PublicKey::from_bytes([7; 32]));
    thread::sleep(Duration::from_millis(300));
    terminate(scratch.dir(), &mut node, "black-holed manager");
}

#[test]
fn sigterm_while_a_frozen_manager_holds_a_request() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    let manager_key = keyfile::write_new_key(dir.join("manager.key")).unwrap();
    let mut section = ManagerSection::new("manager.key");
    section.listen = free_tcp();
    let config = dir.join("manager.yaml");
    ConfigFile::manager(section.clone()).write(&config).unwrap();
    let manager = spawn(
        dir,
        &["manager", "--config", config.to_str().unwrap()],
        "manager.log",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(section.listen).is_err() {
        assert!(Instant::now() < deadline, "{}", log(dir, "manager"));
        thread::sleep(Duration::from_millis(20));
    }
    let (mut node, socket) = start_node(dir, section.listen, manager_key);
    let socket = socket.to_str().unwrap().to_owned();
    // Registered once the manager answers through the node.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = Command::new(skywire_binary())
            .args(["nodes", "--socket", &socket])
            .output()
            .unwrap();
        if nodes.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", log(dir, "node"));
        thread::sleep(Duration::from_millis(50));
    }
    signal(&manager.0, Signal::STOP);
    // A request the frozen manager will never answer, waiting in the node.
    let unknown = PublicKey::from_bytes([9; 32]).to_string();
    let waiting = Proc(
        Command::new(skywire_binary())
            .args(["route", "add", &unknown, "--socket", &socket])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    thread::sleep(Duration::from_millis(300));
    terminate(dir, &mut node, "frozen manager");
    signal(&manager.0, Signal::CONT);
    drop(waiting);
}
