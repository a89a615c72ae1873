//! `skywire status`, run as the real binary against a control server in this test process
//! that answers with a fixed status: the `wg show`-style text, `--json`, exit 69 when no
//! node answers, and (as root, with `setpriv`) exit 77 for a user who may not use the socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use skywire_control::ctl::{ControlServer, StatusReply, StatusSource};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{EngineGone, NodeStatus, RelayStatus, RouteStatus};
use skywire_dataplane::wire::RouteId;

/// A fresh directory under the system temp dir, mode 0755 (so another user can reach a
/// socket folder inside it), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("skywire-cli-status-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Answers with a fixed status, or as a stopped engine.
struct FakeSource(Option<NodeStatus>);

impl StatusSource for FakeSource {
    fn status(&self, _timeout: Duration) -> Result<NodeStatus, EngineGone> {
        self.0.clone().ok_or(EngineGone::Stopped)
    }
}

/// A control server on `<dir>/ctl/node.sock`, stopped on drop.
struct Node {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Node {
    fn start(dir: &Path, source: FakeSource) -> Self {
        let socket = dir.join("ctl").join("node.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = ControlServer::bind(&socket)
            .unwrap()
            .spawn(source, Arc::clone(&stop))
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
        self.stop.store(true, Ordering::Relaxed);
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
            tx_packets: 2330,
            tx_bytes: 3_565_158,
            rx_packets: 812,
            rx_bytes: 1_268_776,
            drops: vec![("replay", 1), ("bad tag", 2), ("too short", 0)],
        }],
        relays: vec![RelayStatus {
            in_id: id(100),
            prev_hop: "198.18.0.1:6000".parse().unwrap(),
            out_id: id(101),
            next_hop: "198.18.0.3:6000".parse().unwrap(),
            packets: 2330,
            bytes: 3_649_044,
        }],
        drops: vec![("no route", 0), ("not ip", 5)],
    }
}

fn skywire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skywire"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn status_prints_routes_and_relays_like_wg_show() {
    let scratch = Scratch::new();
    let node = Node::start(&scratch.0, FakeSource(Some(sample_status())));
    let out = skywire(&["status", "--socket", node.socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let a = "a1".repeat(32);
    let c = "c3".repeat(32);
    assert_eq!(
        text(&out.stdout),
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
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn status_json_has_every_field_and_counter() {
    let scratch = Scratch::new();
    let node = Node::start(&scratch.0, FakeSource(Some(sample_status())));
    let out = skywire(&[
        "status",
        "--json",
        "--socket",
        node.socket.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = text(&out.stdout);
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
    let scratch = Scratch::new();
    let socket = scratch.0.join("node.sock");
    let out = skywire(&["status", "--socket", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69));
    let err = text(&out.stderr);
    assert!(err.contains("is `skywire node` running?"), "{err}");
    assert!(err.contains(socket.to_str().unwrap()), "{err}");
    assert!(out.stdout.is_empty());

    // A socket file left behind by a node that is gone: connecting is refused.
    drop(UnixListener::bind(&socket).unwrap());
    let out = skywire(&["status", "--json", "--socket", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains("is `skywire node` running?"));
}

#[test]
fn a_stopped_engine_means_exit_69() {
    let scratch = Scratch::new();
    let node = Node::start(&scratch.0, FakeSource(None));
    let out = skywire(&["status", "--socket", node.socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69));
    let err = text(&out.stderr);
    assert!(err.contains("unavailable"), "{err}");
    assert!(err.contains("stopped"), "{err}");
}

/// Whether this process is root (the owner of a file it creates).
fn is_root(dir: &Path) -> bool {
    let probe = dir.join("probe");
    fs::write(&probe, "").unwrap();
    fs::metadata(&probe).unwrap().uid() == 0
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
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binary)
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn another_user_gets_exit_77() {
    let scratch = Scratch::new();
    if !is_root(&scratch.0) || !have_setpriv() {
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let binary = scratch.0.join("skywire");
    fs::copy(env!("CARGO_BIN_EXE_skywire"), &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    let node = Node::start(&scratch.0, FakeSource(Some(sample_status())));
    let folder = node.socket.parent().unwrap();
    assert_eq!(fs::metadata(folder).unwrap().mode() & 0o777, 0o700);

    // The kernel refuses: the socket's folder is root's and 0700.
    let out = status_as_nobody(&binary, &node.socket);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("permission denied on the control socket"),
        "{err}"
    );
    assert!(err.contains(node.socket.to_str().unwrap()), "{err}");
    assert!(out.stdout.is_empty());

    // The node refuses: the socket is reachable, but SO_PEERCRED says uid 65534.
    fs::set_permissions(folder, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&node.socket, fs::Permissions::from_mode(0o666)).unwrap();
    let out = status_as_nobody(&binary, &node.socket);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("permission denied by the node"), "{err}");
    assert!(err.contains("uid 65534"), "{err}");
    assert!(out.stdout.is_empty());

    // Root is still served.
    let out = skywire(&["status", "--socket", node.socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
