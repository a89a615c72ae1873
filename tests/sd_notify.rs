//! systemd's notification protocol, spoken by the daemons to a `NOTIFY_SOCKET` listener of
//! the test's own (a Unix datagram socket in a scratch folder: no running systemd needed),
//! with `WATCHDOG_USEC` set to 1 s, so pings come every 0.5 s.
//!
//! - `skywire node` (root: a TUN device, in a namespace of `tests/netns`): `READY=1` first,
//!   and only once it forwards (when it arrives the TUN device is up with its address, the
//!   configured route is in the kernel, and the control socket answers `status`); then
//!   `WATCHDOG=1` pings; `STOPPING=1` on SIGTERM, and nothing after it.
//! - A node whose engine loop is stalled (the test hook `SKYWIRE_TEST_STALL_ENGINE_AFTER`)
//!   stops pinging, while the process still runs: the pings come from the engine loop.
//! - A node (no TUN, loopback, any user) with `WATCHDOG_PID` naming another process gets
//!   ready but never pings: the watchdog is not its own.
//! - `skywire manager` and headless `skywire viscript` (any user): ready, pings, stopping;
//!   viscript's apps do not inherit the notification variables.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scratch, path_arg, skywire_binary};
use netns::{Node, Topology, addr, route, skip_unless_root, tun, wait_until};
use rustix::process::{Pid, Signal, kill_process};
use skywire_control::config::{ConfigFile, ManagerSection, NodeSection};
use skywire_control::keyfile;
use skywire_control::node::ctl::request_status;

/// The watchdog period the tests give: pings are due every half of it.
const WATCHDOG_USEC: &str = "1000000";
const PING_EVERY: Duration = Duration::from_millis(500);
/// How long a daemon may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(15);

const READY: &str = "READY=1";
const WATCHDOG: &str = "WATCHDOG=1\n";
const STOPPING: &str = "STOPPING=1";

/// The test's `NOTIFY_SOCKET`: a datagram socket in a folder of its own.
struct Listener {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Listener {
    fn new(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self { socket, path }
    }

    /// `NOTIFY_SOCKET=...` and `WATCHDOG_USEC=...`, and `extra`, for `env`.
    fn env(&self, extra: &[&str]) -> Vec<String> {
        let mut vars = vec![
            format!("NOTIFY_SOCKET={}", self.path.display()),
            format!("WATCHDOG_USEC={WATCHDOG_USEC}"),
        ];
        vars.extend(extra.iter().map(|s| (*s).to_owned()));
        vars
    }

    /// The next datagram within `timeout`, or `None`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// The first datagram, which must be `READY=1` with a status line.
    fn expect_ready(&self, what: &str) -> String {
        let first = self
            .next(READY_WITHIN)
            .unwrap_or_else(|| panic!("{what}: no READY=1 within {READY_WITHIN:?}"));
        assert!(
            first.starts_with(&format!("{READY}\nSTATUS=")),
            "{what}: the first message is not READY=1: {first:?}"
        );
        first
    }

    /// Every datagram for `window`: (when, text).
    fn collect(&self, window: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + window;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(message) => got.push((Instant::now(), message)),
                None => break,
            }
        }
        got
    }

    /// Datagrams until none came for `quiet` (at most 20 s in all).
    fn drain(&self, quiet: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < Duration::from_secs(20) {
            match self.next(quiet) {
                Some(message) => got.push(message),
                None => break,
            }
        }
        got
    }
}

/// Pings over a window of `window`: all must be `WATCHDOG=1`, about one per half period.
fn expect_pings(listener: &Listener, window: Duration, what: &str) -> usize {
    let got = listener.collect(window);
    for (_, message) in &got {
        assert_eq!(message, WATCHDOG, "{what}: {got:?}");
    }
    // 0.5 s pace: 6 in 3 s; fewer than half or more than twice as many is wrong.
    let expected = (window.as_millis() / PING_EVERY.as_millis()) as usize;
    assert!(
        got.len() >= expected / 2 && got.len() <= expected * 2 + 1,
        "{what}: {} pings in {window:?}, expected about {expected}",
        got.len()
    );
    got.len()
}

/// What follows a SIGTERM: at most a few pings, then `STOPPING=1`, then nothing.
fn expect_stopping(listener: &Listener, what: &str) {
    let rest = listener.drain(Duration::from_secs(2));
    let stopping = rest
        .iter()
        .position(|m| m.starts_with(STOPPING))
        .unwrap_or_else(|| panic!("{what}: no STOPPING=1 after SIGTERM: {rest:?}"));
    assert!(
        rest[..stopping].iter().all(|m| m == WATCHDOG),
        "{what}: {rest:?}"
    );
    assert_eq!(
        stopping,
        rest.len() - 1,
        "{what}: messages after STOPPING=1: {rest:?}"
    );
    assert!(rest[stopping].contains("\nSTATUS="), "{what}: {rest:?}");
}

/// A node in host `a` with a TUN device `swn0` (10.77.0.1/24) and one configured route to
/// 10.78.0.0/24 (its peer, b, never runs: the route only has to be in the kernel).
fn tun_node(topology: &mut Topology) -> Node {
    topology.host("a");
    let peer = Node::new(topology, "a", "b").key();
    let node = Node::new(topology, "a", "a");
    node.configure(|n| {
        n.listen = addr("127.0.0.1:6000");
        n.tun = Some(tun("swn0", &["10.77.0.1/24"]));
        n.routes = vec![route(
            "to-b",
            peer,
            &["10.78.0.0/24"],
            "127.0.0.1:6001",
            (1, 2, 1),
            "127.0.0.1:6001",
        )];
    });
    node
}

/// `env VARS... skywire node ...` as the wrapper of [`Node::spawn_under`] (`env` executes
/// the node in its own place, so the pid is the node's).
fn env_wrapper(vars: &[String]) -> Vec<&str> {
    let mut wrapper = vec!["env"];
    wrapper.extend(vars.iter().map(String::as_str));
    wrapper
}

#[test]
fn a_node_is_ready_once_it_forwards_then_pings_from_its_engine_and_says_stopping() {
    if !skip_unless_root("a_node_is_ready_once_it_forwards") {
        return;
    }
    let mut topology = Topology::new();
    let mut node = tun_node(&mut topology);
    let listener = Listener::new(topology.dir());
    let vars = listener.env(&[]);
    node.spawn_under(&env_wrapper(&vars));
    let ready = listener.expect_ready("node");
    // At this moment, before anything else: everything the node brings up is up.
    let link = topology.output("a", "ip", &["-o", "link", "show", "dev", "swn0"]);
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    assert!(link.contains(",UP"), "swn0 is not up at READY=1: {link}");
    let address = topology.output("a", "ip", &["-o", "addr", "show", "dev", "swn0"]);
    let address = String::from_utf8_lossy(&address.stdout).into_owned();
    assert!(
        address.contains("10.77.0.1/24"),
        "swn0 has no address at READY=1: {address}"
    );
    let routes = topology.output("a", "ip", &["route", "show", "10.78.0.0/24"]);
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains("dev swn0"),
        "the configured route is not in the kernel at READY=1: {routes:?}"
    );
    let status = node
        .try_status()
        .expect("the control socket does not answer at READY=1");
    assert_eq!(status.routes.len(), 1);
    assert!(ready.contains("TUN swn0"), "{ready:?}");
    assert!(ready.contains("1 routes"), "{ready:?}");
    let pings = expect_pings(&listener, Duration::from_secs(3), "node");
    // `systemctl reload` (SIGHUP): RELOADING=1, then READY=1 once the config is read again.
    topology.output("a", "kill", &["-HUP", &node.pid().unwrap().to_string()]);
    let reload: Vec<String> = listener
        .collect(Duration::from_secs(2))
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| !m.starts_with("WATCHDOG=1"))
        .collect();
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[0].starts_with("RELOADING=1\n"), "{reload:?}");
    assert!(
        reload[1].starts_with("READY=1\nSTATUS=config reloaded: routes: 0 added"),
        "{reload:?}"
    );
    let (exit, _) = node.sigterm_and_wait(Duration::from_secs(10));
    assert!(exit.success(), "{exit}\n{}", node.log_text());
    expect_stopping(&listener, "node");
    println!(
        "node: READY=1 ({ready:?}), {pings} pings in 3 s, RELOADING=1 and READY=1 on SIGHUP, \
         STOPPING=1 on SIGTERM"
    );
}

#[test]
fn a_stalled_engine_loop_stops_the_watchdog_pings() {
    if !skip_unless_root("a_stalled_engine_loop_stops_the_watchdog_pings") {
        return;
    }
    let mut topology = Topology::new();
    let mut node = tun_node(&mut topology);
    let listener = Listener::new(topology.dir());
    let vars = listener.env(&["SKYWIRE_TEST_STALL_ENGINE_AFTER=2"]);
    node.spawn_under(&env_wrapper(&vars));
    listener.expect_ready("node");
    // Pings while the loop turns (about two seconds' worth), then none from the moment it
    // stalls: wait for a gap of three periods.
    let start = Instant::now();
    let mut pings = 0;
    while let Some(message) = listener.next(PING_EVERY * 6) {
        assert_eq!(message, WATCHDOG);
        pings += 1;
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pings never stopped ({pings}); log:\n{}",
            node.log_text()
        );
    }
    let stalled_after = start.elapsed().saturating_sub(PING_EVERY * 6);
    assert!(
        pings >= 2,
        "only {pings} pings before the stall; log:\n{}",
        node.log_text()
    );
    assert!(
        node.is_running(),
        "the node exited; log:\n{}",
        node.log_text()
    );
    // Still none: the process lives, its engine does not turn, and systemd would restart it.
    assert_eq!(listener.next(Duration::from_secs(2)), None);
    assert!(node.is_running());
    assert!(
        node.log_text()
            .contains("test hook SKYWIRE_TEST_STALL_ENGINE_AFTER"),
        "{}",
        node.log_text()
    );
    println!("stall: {pings} pings, then none from {stalled_after:?} on while the node ran");
}

/// A child killed (SIGKILL) and reaped on drop, unless it already was.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn spawn(program_args: &[&str], vars: &[String], log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let mut command = Command::new(skywire_binary());
        command.args(program_args);
        for var in vars {
            let (key, value) = var.split_once('=').unwrap();
            command.env(key, value);
        }
        Self(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// SIGTERM, then the exit within 15 s, which must be a success.
    fn terminate(&mut self, log: &Path) {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).unwrap()).unwrap();
        kill_process(pid, Signal::TERM).unwrap();
        let exited = wait_until(Duration::from_secs(15), || {
            self.0.try_wait().unwrap().is_some()
        });
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(exited.is_some(), "no exit after SIGTERM:\n{text}");
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}:\n{text}");
    }
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    keyfile::write_new_key(dir.join("node.key")).unwrap();
    let mut section = NodeSection::new("node.key");
    section.listen = free_udp();
    section.control_socket = dir.join("ctl").join("node.sock");
    let socket = section.control_socket.clone();
    let config = dir.join("node.yaml");
    ConfigFile::node(section).write(&config).unwrap();
    let listener = Listener::new(dir);
    // As systemd would set it for viscript, seen by one of its children.
    let vars = listener.env(&["WATCHDOG_PID=1"]);
    let log = dir.join("node.log");
    let mut node = Proc::spawn(&["node", "--config", path_arg(&config)], &vars, &log);
    let ready = listener.expect_ready("node without TUN");
    assert!(ready.contains("0 routes"), "{ready:?}");
    request_status(&socket, Duration::from_secs(2)).expect("status at READY=1");
    assert_eq!(
        listener.next(Duration::from_secs(2)),
        None,
        "a ping for a watchdog of pid 1"
    );
    node.terminate(&log);
    let rest = listener.drain(Duration::from_secs(1));
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert!(rest[0].starts_with("STOPPING=1\nSTATUS="), "{rest:?}");
}

#[test]
fn the_manager_is_ready_once_it_listens_pings_and_says_stopping() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    keyfile::write_new_key(dir.join("manager.key")).unwrap();
    let mut section = ManagerSection::new("manager.key");
    section.listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("manager.yaml");
    ConfigFile::manager(section.clone()).write(&config).unwrap();
    let listener = Listener::new(dir);
    let log = dir.join("manager.log");
    let mut manager = Proc::spawn(
        &["manager", "--config", path_arg(&config)],
        &listener.env(&[]),
        &log,
    );
    let ready = listener.expect_ready("manager");
    assert!(
        ready.contains(&format!("listening on {}", section.listen)),
        "{ready:?}"
    );
    // Listening at READY=1.
    std::net::TcpStream::connect(section.listen).expect("the manager does not listen");
    expect_pings(&listener, Duration::from_secs(3), "manager");
    manager.terminate(&log);
    expect_stopping(&listener, "manager");
}

#[test]
fn headless_viscript_notifies_and_its_apps_do_not_inherit_the_variables() {
    let scratch = Scratch::new();
    let dir = scratch.dir();
    // An app that writes down its environment.
    let config = scratch.write(
        "config.yaml",
        "apps:\n  envdump:\n    desc: writes its environment to env.txt\n    path: /bin/sh\n    \
         default_args: [\"-c\", \"env > env.txt\"]\n",
    );
    let socket = dir.join("run").join("viscript.sock");
    let listener = Listener::new(dir);
    let log = dir.join("viscript.log");
    let mut viscript = Proc::spawn(
        &[
            "viscript",
            "--headless",
            "--config",
            path_arg(&config),
            "--socket",
            path_arg(&socket),
            "--signal-address",
            "127.0.0.1:0",
        ],
        &listener.env(&[]),
        &log,
    );
    let ready = listener.expect_ready("viscript");
    assert!(ready.contains(&socket.display().to_string()), "{ready:?}");
    let exec = |words: &[&str]| {
        let out = Command::new(skywire_binary())
            .args(["viscript", "exec", "--socket", path_arg(&socket)])
            .args(words)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "exec {words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The socket answers at READY=1.
    exec(&["la"]);
    exec(&["start", "envdump"]);
    let env_file = dir.join("env.txt");
    let written = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&env_file).is_ok_and(|t| t.contains("SIGNAL_CLIENT_ID="))
    });
    assert!(written.is_some(), "the app did not write env.txt");
    let env = std::fs::read_to_string(&env_file).unwrap();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{var}="))),
            "the app inherited {var}:\n{env}"
        );
    }
    expect_pings(&listener, Duration::from_secs(3), "viscript");
    viscript.terminate(&log);
    expect_stopping(&listener, "viscript");
}
