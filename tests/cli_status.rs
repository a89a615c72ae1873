//! `skywire status`, run as the real binary against a control server in this test process
//! that answers with a fixed status: the `wg show`-style text, `--json`, exit 69 when no
//! node answers, and (as root, with `setpriv`) exit 77 for a user who may not use the socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use common::{
    Scratch, as_nobody, chmod, is_root, mode_of, path_arg, skywire, skywire_binary, text,
};
use skywire_control::local::StopSignal;
use skywire_control::node::ctl::{ControlServer, NodeApi, StatusReply};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{EngineGone, NodeStatus, Origin, RelayStatus, RouteStatus};
use skywire_dataplane::wire::RouteId;

/// A fresh scratch folder, mode 0755 so another user can reach a socket folder inside it.
fn scratch() -> Scratch {
    Scratch::with_mode(0o755)
}

/// Answers with a fixed status, or as a stopped engine.
struct FakeSource(Option<NodeStatus>);

impl NodeApi for FakeSource {
    fn status(&self, _timeout: Duration) -> Result<NodeStatus, EngineGone> {
        self.0.clone().ok_or(EngineGone::Stopped)
    }
}

/// A control server on `<dir>/ctl/node.sock`, stopped on drop.
struct Node {
    socket: PathBuf,
    stop: StopSignal,
    thread: Option<thread::JoinHandle<()>>,
}

impl Node {
    fn start(dir: &Path, source: FakeSource) -> Self {
        let socket = dir.join("ctl").join("node.sock");
        let stop = StopSignal::new().unwrap();
        let thread = ControlServer::bind(&socket)
            .unwrap()
            .spawn(source, stop.clone())
            .unwrap();
        Self {
            socket,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_C: [u8; 32] = [0xc3; 32];

fn sample_status() -> NodeStatus {
    let id = |n| RouteId::new(n).unwrap();
    NodeStatus {
        public_key: PublicKey::from_bytes(KEY_A),
        listen: "0.0.0.0:6000".parse().unwrap(),
        tun: Some("sky0".to_owned()),
        routes: vec![RouteStatus {
            name: "to-c".to_owned(),
            peer: PublicKey::from_bytes(KEY_C),
            first_hop: "198.18.0.2:6000".parse().unwrap(),
            out_id: id(100),
            in_id: id(201),
            prefixes: vec![
                "10.77.0.3/32".parse().unwrap(),
                "fd77::3/128".parse().unwrap(),
            ],
            last_handshake: Some(Duration::from_millis(3250)),
            handshakes: 1,
            receiving: Some((0xcafe_babe, 812)),
            tx_packets: 2330,
            tx_bytes: 3_565_158,
            rx_packets: 812,
            rx_bytes: 1_268_776,
            drops: vec![("replay", 1), ("bad tag", 2), ("too short", 0)],
            origin: Origin::Config,
            idle: None,
        }],
        relays: vec![RelayStatus {
            in_id: id(100),
            prev_hop: "198.18.0.1:6000".parse().unwrap(),
            out_id: id(101),
            next_hop: "198.18.0.3:6000".parse().unwrap(),
            packets: 2330,
            bytes: 3_649_044,
            origin: Origin::Config,
            idle: None,
        }],
        drops: vec![("no route", 0), ("not ip", 5)],
        expired: 0,
        events_dropped: 0,
        stack: Default::default(),
        fwmark: None,
        grants: Vec::new(),
        under_load: false,
        retired: Default::default(),
    }
}

#[test]
fn status_prints_routes_and_relays_like_wg_show() {
    let scratch = scratch();
    let node = Node::start(scratch.dir(), FakeSource(Some(sample_status())));
    let (out, stdout, stderr) = skywire(&["status", "--socket", path_arg(&node.socket)]);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let a = "a1".repeat(32);
    let c = "c3".repeat(32);
    assert_eq!(
        stdout,
        format!(
            "node: {a}
  listening: 0.0.0.0:6000
  tun: sky0
  drops: not ip 5

route: to-c
  peer: {c}
  first hop: 198.18.0.2:6000 (out id 100, in id 201)
  prefixes: 10.77.0.3/32, fd77::3/128
  latest handshake: 3 seconds ago
  transfer: 1.21 MiB received, 3.40 MiB sent (812 / 2330 packets)
  drops: replay 1, bad tag 2

relay: 100 from 198.18.0.1:6000 -> 101 to 198.18.0.3:6000
  forwarded: 2330 packets, 3.48 MiB
"
        )
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn status_json_has_every_field_and_counter() {
    let scratch = scratch();
    let node = Node::start(scratch.dir(), FakeSource(Some(sample_status())));
    let (out, json, stderr) = skywire(&["status", "--json", "--socket", path_arg(&node.socket)]);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(json.ends_with("}\n"), "{json}");
    let reply = StatusReply::from_json(&json).unwrap();
    assert_eq!(reply, StatusReply::from(&sample_status()));
    // Zero counters are kept in JSON, unlike in the text.
    for field in [
        "\"too short\": 0",
        "\"no route\": 0",
        "\"last_handshake_secs\": 3.25",
        "\"first_hop\": \"198.18.0.2:6000\"",
        "\"out_id\": 100",
        "\"prefixes\": [\n        \"10.77.0.3/32\",",
    ] {
        assert!(json.contains(field), "{field} missing in {json}");
    }
}

#[test]
fn no_node_means_exit_69() {
    let scratch = scratch();
    let socket = scratch.path("node.sock");
    let (out, stdout, err) = skywire(&["status", "--socket", path_arg(&socket)]);
    assert_eq!(out.status.code(), Some(69));
    assert!(err.contains("is `skywire node` running?"), "{err}");
    assert!(err.contains(path_arg(&socket)), "{err}");
    assert!(stdout.is_empty());

    // A socket file left behind by a node that is gone: connecting is refused.
    drop(UnixListener::bind(&socket).unwrap());
    let (out, _, err) = skywire(&["status", "--json", "--socket", path_arg(&socket)]);
    assert_eq!(out.status.code(), Some(69));
    assert!(err.contains("is `skywire node` running?"));
}

#[test]
fn a_stopped_engine_means_exit_69() {
    let scratch = scratch();
    let node = Node::start(scratch.dir(), FakeSource(None));
    let (out, _, err) = skywire(&["status", "--socket", path_arg(&node.socket)]);
    assert_eq!(out.status.code(), Some(69));
    assert!(err.contains("unavailable"), "{err}");
    assert!(err.contains("stopped"), "{err}");
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Run `skywire status --socket SOCKET` as `nobody`, from a copy of the binary that
/// `nobody` can execute (the build folder may not be reachable).
fn status_as_nobody(binary: &Path, socket: &Path) -> Output {
    as_nobody(binary)
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn another_user_gets_exit_77() {
    let scratch = scratch();
    if !is_root() || !have_setpriv() {
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let binary = scratch.path("skywire");
    fs::copy(skywire_binary(), &binary).unwrap();
    chmod(&binary, 0o755);
    let node = Node::start(scratch.dir(), FakeSource(Some(sample_status())));
    let folder = node.socket.parent().unwrap();
    assert_eq!(mode_of(folder) & 0o777, 0o700);

    // The kernel refuses: the socket's folder is root's and 0700.
    let out = status_as_nobody(&binary, &node.socket);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("permission denied on the control socket"),
        "{err}"
    );
    assert!(err.contains(path_arg(&node.socket)), "{err}");
    assert!(out.stdout.is_empty());

    // The node refuses: the socket is reachable, but SO_PEERCRED says uid 65534.
    chmod(folder, 0o755);
    chmod(&node.socket, 0o666);
    let out = status_as_nobody(&binary, &node.socket);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("permission denied by the node"), "{err}");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(out.stdout.is_empty());

    // Root is still served.
    let (out, _, stderr) = skywire(&["status", "--socket", path_arg(&node.socket)]);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
