//! Apps' streams over the mesh, with real `skywire node`s and a node manager in network
//! namespaces (root only):
//!
//! ```text
//!        B
//!      /   \          no TUN devices anywhere: the nodes carry app streams only, and C
//!   A        C        accepts route ends from any node for streams (an accept rule
//!      \   /          without prefixes)
//!        D
//! ```
//!
//! Checked, with `skywire nc` on C and the app socket's client library (or `skywire nc`) on
//! A:
//! - the first dial to C finds no route and asks the manager for one (routes on demand);
//!   `skywire nc` echo;
//! - 1 GiB through one stream: SHA-256 of what A sent equals SHA-256 of what C received
//!   (`sha256sum` run by `skywire nc --exec` on C, whose answer comes back on the stream);
//! - 1000 streams open at once, 1 MiB each, every checksum matching;
//! - a reader that does not read for 5 s: the writer blocks, the nodes' buffers stay
//!   bounded, then everything arrives;
//! - 5 % of the UDP packets dropped at the relays (nftables `numgen`): the transfer
//!   completes with the same checksum;
//! - users: one the node does not let in is refused, an allowed non-root user can dial;
//! - kill -9 of the relay on the route during a transfer: the manager repairs the route,
//!   the stream carries on over it and completes intact, and a new dial succeeds within
//!   5 s of the kill.
//!
//! Skipped (with a message) when not root; CI runs it as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use netns::managed::ManagedMesh;
use netns::{Proc, wait_until};
use sha2::{Digest, Sha256};
use skywire_control::config::{AcceptRule, Account, derive_app_socket};
use skywire_control::node::apps::{AppClient, AppStream};
use skywire_dataplane::crypto::PublicKey;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// A-B, B-C, A-D, D-C: two disjoint two-hop paths from A to C.
const LINKS: [(usize, usize, u8); 4] = [(0, 1, 1), (1, 2, 2), (0, 3, 3), (3, 2, 4)];
const A: usize = 0;
const C: usize = 2;
/// The uid A lets use its app socket besides root: `nobody`.
const ALLOWED_UID: u32 = 65_534;
/// A uid A does not let in: `daemon`.
const REFUSED_UID: u32 = 1;

const DIAL: Duration = Duration::from_secs(10);

/// Deterministic bytes: stream `seed`'s content, `len` long, fed to `sink` in pieces.
fn pattern(seed: u64, len: usize, mut sink: impl FnMut(&[u8])) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(buf.len());
        sink(&buf[..n]);
        left -= n;
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Send `len` bytes of `pattern(seed)` on `stream`, then FIN; read the far side's answer
/// (what `sha256sum` printed) to its FIN. Returns (our SHA-256, the answer's first word).
fn send_and_hash(
    mut stream: AppStream,
    seed: u64,
    len: usize,
    sent: Option<&AtomicU64>,
) -> Result<(String, String), String> {
    let mut hasher = Sha256::new();
    let mut failed = None;
    pattern(seed, len, |piece| {
        if failed.is_some() {
            return;
        }
        hasher.update(piece);
        match stream.write_all(piece) {
            Ok(()) => {
                if let Some(sent) = sent {
                    sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
            }
            Err(e) => failed = Some(format!("write: {e}")),
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    stream
        .shutdown_write()
        .map_err(|e| format!("shutdown_write: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let theirs = answer
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((hex(&hasher.finalize()), theirs))
}

struct Streams {
    mesh: ManagedMesh,
    /// `skywire nc --listen --keep` servers on C, kept running.
    servers: Vec<Proc>,
}

impl Streams {
    fn start() -> Self {
        let mesh = ManagedMesh::start(&NAMES, &LINKS, |i, node, _| {
            // Every node takes route ends for streams from any node (nobody has a TUN).
            if let Some(manager) = &mut node.manager {
                manager.accept = vec![AcceptRule {
                    peer: None,
                    prefixes: Vec::new(),
                }];
            }
            if i == A {
                node.apps.users = vec![Account::Id(ALLOWED_UID)];
            }
        });
        Self {
            mesh,
            servers: Vec::new(),
        }
    }

    fn app_socket(&self, i: usize) -> PathBuf {
        derive_app_socket(self.mesh.nodes[i].socket())
    }

    fn app(&self, i: usize) -> AppClient {
        AppClient::new(self.app_socket(i))
    }

    fn key(&self, i: usize) -> PublicKey {
        self.mesh.nodes[i].key()
    }

    /// `skywire nc --listen PORT --keep ARGS` on C, serving until the test ends.
    fn serve(&mut self, port: u16, args: &[&str]) {
        let socket = self.app_socket(C);
        let port = port.to_string();
        let mut all = vec![
            "nc",
            "--socket",
            socket.to_str().unwrap(),
            "--listen",
            &port,
            "--keep",
            "--backlog",
            "1024",
            "--verbose",
        ];
        all.extend_from_slice(args);
        let proc = self
            .mesh
            .topo
            .spawn("c", "nc", &common::skywire_binary(), &all);
        let listening = wait_until(Duration::from_secs(10), || {
            proc.stderr().contains("listening on port")
        });
        assert!(listening.is_some(), "nc --listen: {}", proc.stderr());
        self.servers.push(proc);
    }

    /// `skywire` ARGS in host `host`, as `uid` (root when `None`), with `input` on its
    /// standard input: (exit code, stdout, stderr).
    fn sky_as(
        &self,
        host: &str,
        uid: Option<u32>,
        args: &[&str],
        input: &[u8],
    ) -> (i32, String, String) {
        let binary = common::skywire_binary();
        let mut cmd = match uid {
            Some(uid) => {
                let mut cmd = self.mesh.topo.command(host, "setpriv");
                cmd.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".to_owned(),
                ]);
                cmd.arg(&binary);
                cmd
            }
            None => self.mesh.topo.command(host, &binary),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        netns::outcome(&out)
    }

    /// The path of A's only route, as node indices.
    fn route_path(&self) -> Vec<usize> {
        self.mesh.only_route_path(A)
    }

    /// Every veth end's largest GSO batch: 1 makes the kernel split the nodes' batched
    /// sends into single datagrams before they cross a link, so that nftables sees (and
    /// drops) datagrams one by one instead of whole batches.
    fn gso_segments(&self, segments: u32) {
        for (x, y, _) in LINKS {
            for (host, other) in [(NAMES[x], NAMES[y]), (NAMES[y], NAMES[x])] {
                let dev = format!("eth-{other}");
                let ns = self.mesh.topo.ns(host);
                netns::ip(&[
                    "-n",
                    &ns,
                    "link",
                    "set",
                    "dev",
                    &dev,
                    "gso_max_segs",
                    &segments.to_string(),
                ]);
            }
        }
    }

    /// nftables on both relays: drop `percent` of the UDP transport packets they receive.
    fn lossy_relays(&self, percent: u32) {
        for host in ["b", "d"] {
            let rules = format!(
                "table inet skyloss {{\n  chain input {{\n    type filter hook input priority 0;\n    \
                 udp dport 6000 numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
            );
            let mut child = self
                .mesh
                .topo
                .command(host, "nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(rules.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "nft on {host}");
        }
    }

    fn lossless_relays(&self) -> u64 {
        let mut dropped = 0;
        for host in ["b", "d"] {
            let out = self
                .mesh
                .topo
                .output(host, "nft", &["list", "table", "inet", "skyloss"]);
            let text = String::from_utf8_lossy(&out.stdout);
            dropped += text
                .split("packets ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let out = self
                .mesh
                .topo
                .output(host, "nft", &["delete", "table", "inet", "skyloss"]);
            assert!(out.status.success(), "nft delete on {host}");
        }
        dropped
    }
}

/// One stream of `len` bytes from A to C's `sha256sum` server; panics on a mismatch.
/// Returns how long it took.
fn transfer(s: &Streams, port: u16, seed: u64, len: usize) -> Duration {
    let started = Instant::now();
    let stream = s.app(A).dial(s.key(C), port, DIAL).unwrap();
    let (ours, theirs) = send_and_hash(stream, seed, len, None).unwrap();
    assert_eq!(ours, theirs, "stream {seed} of {len} bytes arrived changed");
    started.elapsed()
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn gbits(bytes: usize, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e9
}

#[test]
fn app_streams_cross_the_mesh_intact() {
    if !netns::skip_unless_root("app_streams_cross_the_mesh_intact") {
        return;
    }
    let mut s = Streams::start();
    s.serve(7, &["--echo"]);
    s.serve(9, &["--exec", "sha256sum"]);
    s.serve(10, &["--exec", "sleep 5; sha256sum"]);
    let c_key = s.key(C).to_string();
    let a_socket = s.app_socket(A);
    let a_socket = a_socket.to_str().unwrap();

    // Routes on demand: A has no route to C; `skywire nc` asks the manager for one.
    let (code, _, _) = s.mesh.sky(A, &["route", "ls", "--json"]);
    assert_eq!(code, 0);
    let started = Instant::now();
    let (code, out, err) = s.sky_as(
        "a",
        None,
        &["nc", "--socket", a_socket, &c_key, "7"],
        b"hello over the mesh\n",
    );
    assert_eq!((code, out.as_str()), (0, "hello over the mesh\n"), "{err}");
    let path = s.route_path();
    println!(
        "nc echo with a route on demand: {:?}, path {path:?}",
        started.elapsed()
    );
    assert_eq!(path.len(), 3, "{path:?}");
    assert_eq!((path[0], path[2]), (A, C));

    // 1 GiB through one stream.
    const GIB: usize = 1 << 30;
    let took = transfer(&s, 9, 1, GIB);
    println!(
        "1 GiB through one stream A -> C: {took:?} ({:.2} Gbit/s), SHA-256 equal",
        gbits(GIB, took)
    );

    // The ledgers' app lines, exact: the bytes the apps wrote and read, by service port,
    // at both ends (A dialed ports 7 and 9; C listens on them).
    let apps = |i: usize| -> Vec<(String, u64, u64)> {
        let (code, out, err) = s.mesh.sky(i, &["usage", "--by", "app", "--json"]);
        assert_eq!(code, 0, "{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["sent"]["bytes"].as_u64().unwrap(),
                    r["received"]["bytes"].as_u64().unwrap(),
                )
            })
            .filter(|(name, _, _)| name.starts_with("port "))
            .collect()
    };
    // sha256sum's answer: 64 hex digits, "  -", a newline.
    let hash_line = 68;
    let hello = "hello over the mesh\n".len() as u64;
    let want_a = vec![
        ("port 7".to_owned(), hello, hello),
        ("port 9".to_owned(), GIB as u64, hash_line),
    ];
    let want_c = vec![
        ("port 7".to_owned(), hello, hello),
        ("port 9".to_owned(), hash_line, GIB as u64),
    ];
    assert_eq!(apps(A), want_a, "A's ledger by app");
    assert_eq!(apps(C), want_c, "C's ledger by app");

    // 1000 streams open at once, 1 MiB each.
    const MIB: usize = 1 << 20;
    let started = Instant::now();
    let streams: Vec<AppStream> = (0..1000)
        .map(|i| {
            s.app(A)
                .dial(s.key(C), 9, DIAL)
                .unwrap_or_else(|e| panic!("dial {i}: {e}"))
        })
        .collect();
    let dialed = started.elapsed();
    let status = s.mesh.nodes[A].status_json();
    assert!(status.streams.open >= 1000, "{:?}", status.streams);
    let workers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || send_and_hash(stream, 100 + i as u64, MIB, None))
                .unwrap()
        })
        .collect();
    for (i, worker) in workers.into_iter().enumerate() {
        let (ours, theirs) = worker
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("stream {i}: {e}"));
        assert_eq!(ours, theirs, "stream {i}");
    }
    println!(
        "1000 streams of 1 MiB open at once: dialed in {dialed:?}, all checksums equal after {:?}; A's status then: {:?}",
        started.elapsed(),
        status.streams
    );

    // A reader that does not read for 5 s.
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stream = s.app(A).dial(s.key(C), 10, DIAL).unwrap();
    let writer = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || send_and_hash(stream, 7, 64 * MIB, Some(&sent)))
    };
    thread::sleep(Duration::from_secs(3));
    let blocked_at = sent.load(Ordering::Relaxed);
    let sample = |s: &Streams| {
        [A, C].map(|i| {
            let node = &s.mesh.nodes[i];
            (
                node.status_json().streams.memory_bytes,
                rss_kib(node.pid().unwrap()),
            )
        })
    };
    let before = sample(&s);
    thread::sleep(Duration::from_secs(1));
    let still = sent.load(Ordering::Relaxed);
    let after = sample(&s);
    assert!(
        blocked_at < 8 * MIB as u64 && still == blocked_at,
        "the writer should be blocked: {blocked_at} bytes after 3 s, {still} after 4 s"
    );
    for ((buffers, rss), (buffers_then, rss_then)) in before.into_iter().zip(after) {
        // Streams of the earlier phases still lingering in TIME-WAIT may be freed
        // meanwhile; nothing may grow.
        assert!(
            buffers_then <= buffers,
            "stream buffers grew from {buffers} to {buffers_then} bytes while blocked"
        );
        assert!(
            rss_then < rss + 4096,
            "a node grew from {rss} KiB to {rss_then} KiB while its reader slept"
        );
    }
    let memory = after;
    let (ours, theirs) = writer.join().unwrap().unwrap();
    assert_eq!(ours, theirs);
    println!(
        "reader stopped for 5 s: the writer blocked after {blocked_at} bytes ((stream buffers, RSS KiB) of A and C: {memory:?}), then 64 MiB arrived intact after {:?}",
        started.elapsed()
    );

    // Users: `daemon` is refused, `nobody` (node.apps.users) may dial.
    let (code, _, refusal) = s.sky_as(
        "a",
        Some(REFUSED_UID),
        &["nc", "--socket", a_socket, &c_key, "7"],
        b"",
    );
    assert_eq!(code, 77, "{refusal}");
    assert!(refusal.contains("permission"), "{refusal}");
    let (code, out, err) = s.sky_as(
        "a",
        Some(ALLOWED_UID),
        &["nc", "--socket", a_socket, &c_key, "7"],
        b"not root\n",
    );
    assert_eq!((code, out.as_str()), (0, "not root\n"), "{err}");
    println!(
        "users: uid {REFUSED_UID} refused ({}), uid {ALLOWED_UID} dials",
        refusal.trim()
    );

    // 5 % loss at the relays.
    s.gso_segments(1);
    s.lossy_relays(5);
    let len = 2 * MIB;
    let took = transfer(&s, 9, 3, len);
    let dropped = s.lossless_relays();
    s.gso_segments(65_535);
    assert!(dropped > 50, "nftables dropped only {dropped} packets");
    println!(
        "5 % loss at the relays ({dropped} packets dropped): {} MiB intact in {took:?} ({:.3} Gbit/s)",
        len / MIB,
        gbits(len, took)
    );

    // kill -9 of the relay on the route, during a transfer.
    let relay = s.route_path()[1];
    let sent = Arc::new(AtomicU64::new(0));
    let stream = s.app(A).dial(s.key(C), 10, DIAL).unwrap();
    let writer = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || send_and_hash(stream, 8, 16 * MIB, Some(&sent)))
    };
    thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    s.mesh.nodes[relay].kill9();
    let redial = wait_until(Duration::from_secs(5), || {
        s.app(A)
            .dial(s.key(C), 7, Duration::from_secs(1))
            .map(|mut stream| {
                stream.write_all(b"again").ok();
                stream.shutdown_write().ok();
                let mut back = Vec::new();
                stream.read_to_end(&mut back).ok();
                back == b"again"
            })
            .unwrap_or(false)
    });
    assert!(
        redial.is_some(),
        "no new stream within 5 s of killing relay {relay}:\n{}",
        s.mesh.manager_log()
    );
    let new_path = s.route_path();
    assert!(!new_path.contains(&relay), "{new_path:?}");
    let result = writer.join().unwrap();
    let (ours, theirs) = result.unwrap_or_else(|e| panic!("the stream across the kill: {e}"));
    assert_eq!(ours, theirs);
    println!(
        "kill -9 of relay {relay}: a new stream after {:?} over {new_path:?}; the stream across it completed intact after {:?}",
        redial.unwrap(),
        killed.elapsed()
    );
}
