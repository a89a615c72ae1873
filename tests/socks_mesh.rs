//! The SOCKS5 proxy over the mesh with real clients, in network namespaces (root only):
//! `skywire socks client` in A, `skywire socks exit` in C, and curl, PySocks, OpenBSD
//! netcat and proxychains4 with iperf3 as the applications, all run in A's namespace.
//!
//! ```text
//!        B
//!      /   \          nodes carry app streams only (no TUN); C accepts route ends from A
//!   A        C ---- srv     198.18.200.0/24, C .1, srv .2: reachable from C only.
//!      \   /                srv runs `python3 -m http.server` (a 100 MiB file of random
//!        D                  bytes), a UDP echo, a TCP echo, a drain-then-answer service
//!                           (tests/tools/socks_services.py) and `iperf3 -s`
//! ```
//!
//! srv sits on C's own subnet, which the exit refuses by default; the main exit (port 1080
//! on C) serves A's key with an exception per service port (`--allow
//! 198.18.200.2/32:PORT`). The name `srv.test` resolves in C only: C's namespace has its
//! own `/etc/hosts` (`/etc/netns/<ns>/hosts`, which `ip netns exec` mounts for what it
//! starts there), so only a name resolved at the exit (socks5h) reaches it.
//!
//! Checked, in order:
//! 1. curl: the 100 MiB file through `--socks5-hostname` (SHA-256 equal, speed printed),
//!    by IP with `--socks5`, and by the name only the exit can resolve; `--socks5` with
//!    that name fails in A (resolved locally), `localhost` is refused with reply 2.
//! 2. PySocks: CONNECT with rdns to the HTTP server by name, UDP ASSOCIATE to the echo.
//! 3. Refusals: `nc -X 5` for loopback, IPv6 loopback and mapped forms, 0.0.0.0, cloud
//!    metadata, the exit's own address and LAN without an exception, port 25 (nc's message
//!    for reply 2); the numeric and `localhost` names as names (ATYP 3) from our own
//!    client, which nc and curl would turn into addresses first.
//! 4. proxychains4 + iperf3 for 3 s (the bitrate is printed, not asserted).
//! 5. RFC 1929: a second client with a username and a 0600 password file.
//! 6. Bad input to the client's port: each gets a reply or a close; everything stays up.
//! 7. Half-close: 8 MiB, FIN, then the whole 1 MiB answer.
//! 8. An exit without the exception refuses srv with reply 2; an exit serving another key
//!    gives A no stream (reply 2 from the client).
//! 9. Many connections open at once through the proxy to the TCP echo ([`CONNECTIONS`]),
//!    16 bytes each way; the resident memory per connection of both apps and of nodes A
//!    and C. The main exit and client raise their limits for it from a `socks:` config
//!    file written with the typed writer.
//! 10. kill -9 of the relay on the route during a rate-limited download: the download ends
//!     one way or the other within 30 s, and a new curl through the proxy works within
//!     10 s of the kill.
//!
//! Skipped (with a message) when not root or when a tool is missing; `scripts/test`
//! installs them, and CI runs it as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use netns::managed::ManagedMesh;
use netns::{Proc, wait_until};
use sha2::{Digest, Sha256};
use skywire_control::apps::socks::wire::{Dest, Name, Rep};
use skywire_control::config::{
    AcceptRule, ConfigFile, SocksClientConfig, SocksConfig, SocksExitConfig, derive_app_socket,
};
use skywire_control::demo::socks::socks_connect;
use skywire_control::lab::in_namespace;
use skywire_control::local::raise_fd_limit;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
/// A-B, B-C, A-D, D-C: two disjoint two-hop paths from A to C.
const LINKS: [(usize, usize, u8); 4] = [(0, 1, 1), (1, 2, 2), (0, 3, 3), (3, 2, 4)];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// srv's address, and C's on the same link.
const SRV: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const C_LAN: &str = "198.18.200.1";
/// The name only C resolves.
const SRV_NAME: &str = "srv.test";
const HTTP_PORT: u16 = 8080;
const UDP_ECHO_PORT: u16 = 7007;
const TCP_ECHO_PORT: u16 = 7;
const DRAIN_PORT: u16 = 9009;
const IPERF_PORT: u16 = 5201;
/// An address the policy allows (198.18.0.0/15 is the tests' "internet") on no subnet of
/// C, where nothing answers.
const NOWHERE: &str = "198.18.250.1";

/// The exits on C: the main one, one without exceptions, one serving another key.
const EXIT_PORT: u16 = 1080;
const EXIT_STRICT_PORT: u16 = 1081;
const EXIT_OTHER_KEY_PORT: u16 = 1082;
/// The clients' listeners in A: the main one, one with RFC 1929 credentials, one for each
/// of the other two exits.
const PROXY: &str = "127.0.0.1:1080";
const PROXY_AUTH: &str = "127.0.0.1:1081";
const PROXY_STRICT: &str = "127.0.0.1:1082";
const PROXY_OTHER_KEY: &str = "127.0.0.1:1083";
const PASSWORD: &str = "correct horse";
/// The small page.
const HELLO: &[u8] = b"hello through the mesh\n";

/// The big file's size.
const BIG: u64 = 100 << 20;
/// Connections held open at once in check 9; `SOCKS_MESH_CONNECTIONS` sets another count.
/// A node holds one descriptor per connection (the handed-over socket; the apps' one
/// watch reports all their ends), the apps none, so 10 000 fit in the 20 000 open files
/// this machine allows a process; they took 9 s here in the debug build.
const CONNECTIONS: usize = 10_000;

/// [`CONNECTIONS`], or `SOCKS_MESH_CONNECTIONS`.
fn connections() -> usize {
    std::env::var("SOCKS_MESH_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CONNECTIONS)
}

/// The tools the test runs: the program, arguments that show it works, the Debian package
/// that has it, and a text its output must hold (else it must exit 0).
const TOOLS: [(&str, &[&str], &str, Option<&str>); 5] = [
    ("curl", &["--version"], "curl", None),
    // OpenBSD's netcat has -X (the proxy protocol); the traditional one has not.
    ("nc", &["-h"], "netcat-openbsd", Some("-X proto")),
    ("proxychains4", &["--help"], "proxychains4", Some("Usage:")),
    ("iperf3", &["--version"], "iperf3", None),
    ("python3", &["-c", "import socks"], "python3-socks", None),
];

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of a file, in hex.
fn sha256_file(path: &Path) -> String {
    let mut file = File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

/// `len` random bytes (from /dev/urandom) at `path`: their SHA-256.
fn random_file(path: &Path, len: u64) -> String {
    let mut source = File::open("/dev/urandom").unwrap().take(len);
    let mut out = File::create(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
    }
    hex(&hasher.finalize())
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// The tools missing here, as "tool (package)".
fn missing_tools() -> Vec<String> {
    TOOLS
        .iter()
        .filter(|(tool, args, _, expected)| {
            let program = if *tool == "python3" {
                netns::python3()
            } else {
                PathBuf::from(tool)
            };
            let ran = Command::new(program)
                .args(*args)
                .stdin(Stdio::null())
                .output();
            match (ran, expected) {
                (Ok(out), Some(text)) => {
                    let said = [out.stdout, out.stderr].concat();
                    !String::from_utf8_lossy(&said).contains(text)
                }
                (Ok(out), None) => !out.status.success(),
                (Err(_), _) => true,
            }
        })
        .map(|(tool, _, package, _)| format!("{tool} ({package})"))
        .collect()
}

/// The mesh, srv, and what runs in them.
struct Lab {
    /// Apps and services: killed before the mesh goes.
    procs: Vec<Proc>,
    mesh: ManagedMesh,
    /// The main exit and client, and the exit without exceptions (indices in `procs`).
    exit: usize,
    client: usize,
    exit_strict: usize,
    /// The SHA-256 of srv's big file and of its small page.
    big_sha: String,
    hello_sha: String,
}

impl Lab {
    /// The mesh with room for `count` connections at once, srv with its services, the
    /// exits and the clients.
    fn start(count: usize) -> Self {
        let mut mesh = ManagedMesh::start(&NAMES, &LINKS, |i, node, nodes| {
            if let Some(manager) = &mut node.manager
                && i == C
            {
                manager.accept = vec![AcceptRule {
                    peer: Some(nodes[A].key()),
                    prefixes: Vec::new(),
                }];
            }
            // Check 9's connections: one stream each at A and C; the stack reserves buffer
            // space per stream (`memory` is what it may reserve, not what it uses).
            let stack = &mut node.apps.stack;
            stack.max_streams = 4 * count;
            stack.max_streams_per_peer = 4 * count;
            stack.max_streams_per_app = 4 * count;
            stack.memory = 8 << 30;
        });
        mesh.topo.host("srv");
        mesh.topo.link(
            ("c", "eth-srv", &format!("{C_LAN}/24")),
            ("srv", "eth-c", &format!("{SRV}/24")),
        );
        // Before the exits start: `ip netns exec` mounts it when it starts a program.
        mesh.topo.etc_file(
            "c",
            "hosts",
            &format!("127.0.0.1 localhost\n::1 localhost\n{SRV} {SRV_NAME}\n"),
        );
        let www = mesh.topo.dir().join("www");
        fs::create_dir(&www).unwrap();
        let big_sha = random_file(&www.join("big"), BIG);
        fs::write(www.join("hello.txt"), HELLO).unwrap();
        let mut lab = Self {
            procs: Vec::new(),
            mesh,
            exit: 0,
            client: 0,
            exit_strict: 0,
            big_sha,
            hello_sha: hex(&Sha256::digest(HELLO)),
        };
        lab.start_services(&www);

        // The exits, started after srv's link exists (they read C's addresses at start).
        // The main exit and client take their limits from a config file: check 9 opens
        // more connections of one key at once, and faster, than an exit allows by default.
        let a_key = lab.mesh.key(A).to_owned();
        let b_key = lab.mesh.key(B).to_owned();
        let limits = lab.path("socks.yaml");
        ConfigFile::socks(SocksConfig {
            client: SocksClientConfig {
                connections: 4 * count,
                ..SocksClientConfig::default()
            },
            exit: SocksExitConfig {
                streams: 4 * count,
                streams_per_client: 4 * count,
                rate_per_client: 100 * count,
                ..SocksExitConfig::default()
            },
        })
        .with_comment("tests/socks_mesh.rs: the limits of its main exit and client")
        .write(&limits)
        .unwrap();
        let limits = limits.to_str().unwrap().to_owned();
        let allow: Vec<String> = [
            HTTP_PORT,
            UDP_ECHO_PORT,
            TCP_ECHO_PORT,
            DRAIN_PORT,
            IPERF_PORT,
        ]
        .iter()
        .map(|port| format!("{SRV}/32:{port}"))
        .collect();
        let mut args = vec!["--config", &limits, "--client", &a_key];
        for exception in &allow {
            args.extend_from_slice(&["--allow", exception]);
        }
        lab.exit = lab.start_exit("exit", EXIT_PORT, &args);
        lab.exit_strict = lab.start_exit("exit-strict", EXIT_STRICT_PORT, &["--client", &a_key]);
        lab.start_exit("exit-other-key", EXIT_OTHER_KEY_PORT, &["--client", &b_key]);

        lab.client = lab.start_client("client", PROXY, EXIT_PORT, &["--config", &limits]);
        let password = lab.path("password");
        fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        common::chmod(&password, 0o600);
        let password = password.to_str().unwrap().to_owned();
        let credentials = ["--username", "u", "--password-file", &password];
        lab.start_client("client-auth", PROXY_AUTH, EXIT_PORT, &credentials);
        lab.start_client("client-strict", PROXY_STRICT, EXIT_STRICT_PORT, &[]);
        lab.start_client(
            "client-other-key",
            PROXY_OTHER_KEY,
            EXIT_OTHER_KEY_PORT,
            &[],
        );
        lab
    }

    /// In srv: `python3 -m http.server` serving `www`, tests/tools/socks_services.py,
    /// `iperf3 -s`.
    fn start_services(&mut self, www: &Path) {
        let srv = SRV.to_string();
        let topo = &self.mesh.topo;
        let http = topo.spawn(
            "srv",
            "http.server",
            &netns::python3(),
            &[
                "-u",
                "-m",
                "http.server",
                &HTTP_PORT.to_string(),
                "--bind",
                &srv,
                "--directory",
                www.to_str().unwrap(),
            ],
        );
        let line = http.line(Duration::from_secs(10));
        assert!(line.starts_with("Serving HTTP"), "{line}");
        let services = topo.spawn_tool(
            "srv",
            "socks_services.py",
            &[
                "--bind",
                &srv,
                "--udp-echo",
                &UDP_ECHO_PORT.to_string(),
                "--tcp-echo",
                &TCP_ECHO_PORT.to_string(),
                "--drain",
                &DRAIN_PORT.to_string(),
            ],
        );
        services.expect_line("ready", Duration::from_secs(10));
        let iperf = topo.spawn(
            "srv",
            "iperf3",
            Path::new("iperf3"),
            &[
                "-s",
                "--forceflush",
                "-B",
                &srv,
                "-p",
                &IPERF_PORT.to_string(),
            ],
        );
        // "-----", "Server listening on 5201 (test #1)", "-----".
        let listening = (0..3).any(|_| iperf.line(Duration::from_secs(10)).contains("listening"));
        assert!(listening, "iperf3: {}", iperf.stderr());
        self.procs.extend([http, services, iperf]);
    }

    fn app_socket(&self, i: usize) -> PathBuf {
        derive_app_socket(self.mesh.nodes[i].socket())
    }

    /// Start `skywire ARGS` in `host` and wait for its first line (the apps print one when
    /// they serve); returns its index in `procs`.
    fn start_app(&mut self, host: &str, label: &str, args: &[&str]) -> usize {
        let proc = self
            .mesh
            .topo
            .spawn(host, label, &common::skywire_binary(), args);
        let line = proc.line(Duration::from_secs(15));
        assert!(
            line.starts_with("skywire socks"),
            "{label}: {line}\n{}",
            proc.stderr()
        );
        self.procs.push(proc);
        self.procs.len() - 1
    }

    /// `skywire socks exit` on C at `port`, with `args`.
    fn start_exit(&mut self, label: &str, port: u16, args: &[&str]) -> usize {
        let socket = self.app_socket(C);
        let port = port.to_string();
        let mut all = vec![
            "socks",
            "exit",
            "--socket",
            socket.to_str().unwrap(),
            "--port",
            &port,
        ];
        all.extend_from_slice(args);
        self.start_app("c", label, &all)
    }

    /// `skywire socks client` in A on `listen`, to the exit at `exit_port` on C.
    fn start_client(&mut self, label: &str, listen: &str, exit_port: u16, args: &[&str]) -> usize {
        let socket = self.app_socket(A);
        let exit = self.mesh.key(C).to_owned();
        let exit_port = exit_port.to_string();
        let mut all = vec![
            "socks",
            "client",
            "--socket",
            socket.to_str().unwrap(),
            "--exit",
            &exit,
            "--exit-port",
            &exit_port,
            "--listen",
            listen,
        ];
        all.extend_from_slice(args);
        self.start_app("a", label, &all)
    }

    /// `program ARGS` in `host` to its end: (exit code, stdout, stderr).
    fn run(&self, host: &str, program: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.mesh.topo.output(host, program, args);
        netns::outcome(&out)
    }

    /// curl ARGS in A, printing `%{http_code} %{size_download} %{speed_download}`.
    fn curl(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec![
            "-sS",
            "--max-time",
            "60",
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
        ];
        all.extend_from_slice(args);
        self.run("a", "curl", &all)
    }

    /// A small page fetched through `proxy` (`-x` form) succeeds.
    fn curl_ok(&self, proxy: &str, url: &str) -> bool {
        let out = self.path("page");
        let (code, stdout, _) = self.curl(&["-x", proxy, "-o", out.to_str().unwrap(), url]);
        code == 0 && stdout.starts_with("200 ")
    }

    /// `name` in the lab's scratch folder.
    fn path(&self, name: &str) -> PathBuf {
        self.mesh.topo.dir().join(name)
    }

    /// `f` on a thread in A's namespace: sockets it makes connect from A.
    fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.mesh.topo.ns("a"), f).unwrap()
    }

    /// A Python tool in A, to its end: (exit code, stdout, stderr).
    fn python_in_a(&self, script: &str, args: &[&str]) -> (i32, String, String) {
        let out = self
            .mesh
            .topo
            .command("a", netns::python3())
            .arg(netns::tool(script))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        netns::outcome(&out)
    }

    /// The path of A's only route, as node indices.
    fn route_path(&self) -> Vec<usize> {
        self.mesh.only_route_path(A)
    }

    /// What the app or service `procs[proc]` printed on stderr so far.
    fn stderr_of(&self, proc: usize) -> String {
        self.procs[proc].stderr()
    }

    /// The pids of the main client and exit apps and of nodes A and C.
    fn pids(&self) -> [(&'static str, u32); 4] {
        [
            ("client app", self.procs[self.client].pid()),
            ("exit app", self.procs[self.exit].pid()),
            ("node A", self.mesh.nodes[A].pid().unwrap()),
            ("node C", self.mesh.nodes[C].pid().unwrap()),
        ]
    }
}

/// How a connection that was sent `bytes` ended: what came back, and whether it closed
/// (EOF) or was reset. Panics if it neither answers nor closes within 20 s.
fn poke(proxy: SocketAddr, bytes: &[u8], half_close: bool) -> (Vec<u8>, &'static str) {
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A write may fail when the client already closed; what came back says what happened.
    let _ = conn.write_all(bytes);
    if half_close {
        let _ = conn.shutdown(Shutdown::Write);
    }
    let mut back = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (back, "closed"),
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (back, "reset"),
            Err(e) => panic!("no reply and no close ({e}) after {bytes:02x?}; got {back:02x?}"),
        }
    }
}

/// What `poke` saw, for the output: "method 00, reply 8, closed".
fn describe(back: &[u8], end: &str) -> String {
    match back {
        [] => format!("no reply, {end}"),
        [5, method] => format!("method {method:02x}, no reply, {end}"),
        [5, method, 5, rep, ..] => format!("method {method:02x}, reply {rep}, {end}"),
        other => format!("{other:02x?}, {end}"),
    }
}

/// `http://HOST:8080/PATH` on srv.
fn url(host: &str, path: &str) -> String {
    format!("http://{host}:{HTTP_PORT}/{path}")
}

/// 1. curl: socks5h, socks5, a name only the exit can resolve, `localhost`.
fn check_curl(lab: &Lab) {
    let srv = SRV.to_string();
    // The first connection also makes the route (on demand).
    let t = Instant::now();
    let first = lab.curl_ok(&format!("socks5h://{PROXY}"), &url(&srv, "hello.txt"));
    assert!(first, "the first page");
    println!(
        "1. first page through the proxy (route made on demand): {:?}, path {:?}",
        t.elapsed(),
        lab.route_path()
    );
    let download = lab.path("download");
    let download_arg = download.to_str().unwrap();
    let (code, out, err) = lab.curl(&[
        "--socks5-hostname",
        PROXY,
        "-o",
        download_arg,
        &url(&srv, "big"),
    ]);
    assert_eq!(code, 0, "curl --socks5-hostname: {err}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[..2], ["200", &BIG.to_string()], "{out}");
    assert_eq!(
        sha256_file(&download),
        lab.big_sha,
        "the 100 MiB file changed"
    );
    let speed: f64 = fields[2].parse().unwrap();
    println!(
        "   curl --socks5-hostname: 100 MiB, SHA-256 equal, {:.1} MB/s ({:.2} Gbit/s)",
        speed / 1e6,
        speed * 8.0 / 1e9
    );
    let fetched = |flag: &str, host: &str| {
        let (code, out, err) =
            lab.curl(&[flag, PROXY, "-o", download_arg, &url(host, "hello.txt")]);
        assert_eq!(
            (code, out.split(' ').next()),
            (0, Some("200")),
            "{flag} {host}: {err}"
        );
        assert_eq!(sha256_file(&download), lab.hello_sha, "{flag} {host}");
    };
    fetched("--socks5", &srv);
    // The name only C resolves: through socks5h it works; through socks5 curl resolves it
    // in A, and cannot.
    let (code, _, _) = lab.run("a", "getent", &["hosts", SRV_NAME]);
    assert_ne!(code, 0, "{SRV_NAME} resolves in A");
    let (code, out, _) = lab.run("c", "getent", &["hosts", SRV_NAME]);
    assert!(code == 0 && out.starts_with(&srv), "{SRV_NAME} in C: {out}");
    fetched("--socks5-hostname", SRV_NAME);
    fs::remove_file(&download).unwrap();
    let (code, _, local) = lab.curl(&["--socks5", PROXY, &url(SRV_NAME, "hello.txt")]);
    assert_ne!(code, 0, "{SRV_NAME} resolved in A");
    let (code, _, localhost) = lab.curl(&["--socks5-hostname", PROXY, &url("localhost", "x")]);
    assert!(code == 97 && localhost.contains("(2)"), "{localhost}");
    let exit_log = lab.stderr_of(lab.exit);
    assert!(
        exit_log.contains("refused localhost:"),
        "the exit did not get the name: {exit_log}"
    );
    println!(
        "   --socks5 ok; {SRV_NAME}, known to C only: --socks5-hostname ok, --socks5 \"{}\"; localhost: \"{}\"",
        local.trim(),
        localhost.trim()
    );
}

/// 2. PySocks: CONNECT with rdns, UDP ASSOCIATE.
fn check_pysocks(lab: &Lab) {
    let port = HTTP_PORT.to_string();
    let (code, out, err) = lab.python_in_a(
        "pysocks_client.py",
        &[
            "http", "--proxy", PROXY, "--host", SRV_NAME, "--port", &port, "--path", "/big",
        ],
    );
    assert_eq!(code, 0, "PySocks http: {err}");
    let expected = format!("status=200 bytes={BIG} sha256={}", lab.big_sha);
    assert_eq!(out.trim(), expected, "PySocks http");
    let srv = SRV.to_string();
    let port = UDP_ECHO_PORT.to_string();
    let (code, out, err) = lab.python_in_a(
        "pysocks_client.py",
        &[
            "udp", "--proxy", PROXY, "--host", &srv, "--port", &port, "--count", "50",
        ],
    );
    assert_eq!(code, 0, "PySocks UDP: {err}");
    assert_eq!(out.trim(), "sent=50 echoed=50");
    println!(
        "2. PySocks: rdns CONNECT to {SRV_NAME} (100 MiB, SHA-256 equal); UDP ASSOCIATE to the echo: {}",
        out.trim()
    );
}

/// 3. Refusals, by nc and as names.
fn check_refusals(lab: &Lab) {
    // What nc (OpenBSD) prints for reply 2.
    const NOT_ALLOWED: &str = "SOCKSv5 error: Connection not allowed by ruleset";
    let srv = SRV.to_string();
    let http = HTTP_PORT.to_string();
    // nc sends what it can read as an address as one (127.1 goes as ATYP 1 127.0.0.1),
    // other names as ATYP 3.
    let cases: [(&str, &str); 16] = [
        ("127.0.0.1", "80"),
        ("127.1", "80"),
        ("2130706433", "80"),
        ("0x7f000001", "80"),
        ("localhost", "80"),
        ("::1", "80"),
        ("::ffff:127.0.0.1", "80"),
        ("0.0.0.0", "80"),
        ("169.254.169.254", "80"),
        ("10.0.0.1", "80"),
        ("100.64.0.1", "80"),
        ("fd00::1", "80"),
        // C's own address, and srv on a port without an exception: the exit's LAN.
        (C_LAN, &http),
        (&srv, "22"),
        // Port 25, where the policy would allow the address.
        (NOWHERE, "25"),
        (&srv, "25"),
    ];
    let nc = |host: &str, port: &str| {
        lab.run("a", "nc", &["-X", "5", "-x", PROXY, "-w", "10", host, port])
    };
    let mut said = String::new();
    for (host, port) in cases {
        let (code, _, err) = nc(host, port);
        assert!(
            code == 1 && err.contains(NOT_ALLOWED),
            "nc {host} {port}: exit {code}, {err}"
        );
        said = err.trim().to_owned();
    }
    // The contrast to port 25: the same address on another port passes the policy, and
    // the dial fails (C has no route there).
    let (code, _, nowhere) = nc(NOWHERE, "26");
    assert!(code == 1 && !nowhere.contains(NOT_ALLOWED), "{nowhere}");
    println!(
        "3. nc -X 5, {} destinations refused, each: \"{said}\"; {NOWHERE}:26 (allowed, nothing there): \"{}\"",
        cases.len(),
        nowhere.trim()
    );
    // As names (ATYP 3), which nc and curl do not send for these.
    let names = [
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "localhost",
        "LOCALHOST.",
        "x.localhost",
        "[::1]",
        "169.254.169.254",
        C_LAN,
    ];
    let proxy = addr(PROXY);
    for name in names {
        let dest = Dest::Name(Name::new(name).unwrap());
        let rep = lab.in_a(|| socks_connect(proxy, dest, 80).map(drop));
        assert_eq!(rep, Err(Rep::NotAllowed), "{name} as a name");
        let exit_log = lab.stderr_of(lab.exit);
        assert!(
            exit_log.contains(&format!("refused {name}:80")),
            "the exit did not log {name}: {exit_log}"
        );
    }
    println!(
        "   as names (ATYP 3), each reply 2, logged by the exit under the name: {}",
        names.join(", ")
    );
}

/// 4. proxychains4 + iperf3 for 3 s.
fn check_iperf(lab: &Lab) {
    let conf = lab.path("proxychains.conf");
    fs::write(
        &conf,
        format!(
            "strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n\
             [ProxyList]\nsocks5 {}\n",
            PROXY.replace(':', " ")
        ),
    )
    .unwrap();
    let (code, out, err) = lab.run(
        "a",
        "proxychains4",
        &[
            "-f",
            conf.to_str().unwrap(),
            "iperf3",
            "-c",
            &SRV.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            "3",
            "-J",
        ],
    );
    assert_eq!(code, 0, "proxychains4 iperf3: {out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let received = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    println!(
        "4. proxychains4 iperf3 -t 3: {:.2} Gbit/s received",
        received / 1e9
    );
}

/// 5. RFC 1929 on the second client.
fn check_auth(lab: &Lab) {
    let page = url(&SRV.to_string(), "hello.txt");
    let password = PASSWORD.replace(' ', "%20");
    let (code, _, none) = lab.curl(&["--socks5-hostname", PROXY_AUTH, &page]);
    assert_eq!(code, 97, "{none}");
    let (code, _, wrong) = lab.curl(&["-x", &format!("socks5h://u:wrong@{PROXY_AUTH}"), &page]);
    assert_eq!(code, 97, "{wrong}");
    let other_user = format!("socks5h://v:{password}@{PROXY_AUTH}");
    let (code, _, other) = lab.curl(&["-x", &other_user, &page]);
    assert_eq!(code, 97, "{other}");
    let right = format!("socks5h://u:{password}@{PROXY_AUTH}");
    assert!(lab.curl_ok(&right, &page), "the right credentials");
    println!(
        "5. RFC 1929: no credentials \"{}\"; wrong password \"{}\"; another user refused too; the right ones work",
        none.trim(),
        wrong.trim()
    );
}

/// 6. Bad input to the client's port: a reply or a close each, and nothing breaks.
fn check_bad_input(lab: &Lab) {
    let mut name_255 = vec![5, 1, 0, 5, 1, 0, 3, 255];
    name_255.extend_from_slice(&[b'a'; 255]);
    name_255.extend_from_slice(&80u16.to_be_bytes());
    // (what, bytes after a greeting where one is sent, FIN after them)
    let bad: [(&str, Vec<u8>, bool); 8] = [
        (
            "garbage (a TLS hello)",
            vec![0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3],
            false,
        ),
        (
            "a truncated request, then FIN",
            vec![5, 1, 0, 5, 1, 0, 1, 198, 18],
            true,
        ),
        ("an HTTP request", b"GET / HTTP/1.1\r\n\r\n".to_vec(), false),
        (
            "a domain name of length 0",
            vec![5, 1, 0, 5, 1, 0, 3, 0, 0, 80],
            false,
        ),
        ("a domain name of length 255", name_255, false),
        (
            "address type 9",
            vec![5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80],
            false,
        ),
        (
            "a SOCKS4 request (first byte 4)",
            vec![4, 1, 0, 80, 127, 0, 0, 1, 0],
            false,
        ),
        ("a greeting with no methods", vec![5, 0], false),
    ];
    println!("6. bad input to the client's port:");
    let proxy = addr(PROXY);
    for (what, bytes, half_close) in &bad {
        let (back, end) = lab.in_a(|| poke(proxy, bytes, *half_close));
        println!("   {what}: {}", describe(&back, end));
        if let [5, 0, 5, rep, ..] = back[..] {
            assert_ne!(rep, 0, "{what} succeeded");
        }
    }
    for (what, pid) in lab.pids() {
        assert!(alive(pid), "{what} died");
    }
    let page = url(&SRV.to_string(), "hello.txt");
    assert!(lab.curl_ok(&format!("socks5h://{PROXY}"), &page));
    println!("   then: the apps and nodes run, and curl works");
}

/// 7. Half-close: 8 MiB, FIN, then the whole 1 MiB answer.
fn check_half_close(lab: &Lab) {
    let proxy = addr(PROXY);
    let (sent, answer) = lab.in_a(|| {
        let mut conn = socks_connect(proxy, Dest::Ip(IpAddr::V4(SRV)), DRAIN_PORT).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut hasher = Sha256::new();
        for _ in 0..8 {
            conn.write_all(&block).unwrap();
            hasher.update(&block);
        }
        conn.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        (hex(&hasher.finalize()), answer)
    });
    assert_eq!(answer.len(), 1 << 20, "the answer after the FIN");
    let head = answer.split(|b| *b == b'\n').next().unwrap();
    let head = String::from_utf8_lossy(head);
    assert_eq!(head, format!("received={} sha256={sent}", 8 << 20));
    println!(
        "7. half-close: 8 MiB sent, then FIN; srv got them intact, and its 1 MiB answer came back whole"
    );
}

/// 8. An exit without the exception, and one that serves another key.
fn check_other_exits(lab: &Lab) {
    let page = url(&SRV.to_string(), "hello.txt");
    let (code, _, strict) = lab.curl(&["--socks5-hostname", PROXY_STRICT, &page]);
    assert!(code == 97 && strict.contains("(2)"), "{strict}");
    let strict_log = lab.stderr_of(lab.exit_strict);
    assert!(
        strict_log.contains("on a subnet of the exit host"),
        "{strict_log}"
    );
    let proxy = addr(PROXY_OTHER_KEY);
    let other = lab.in_a(|| socks_connect(proxy, Dest::Ip(IpAddr::V4(SRV)), HTTP_PORT).map(drop));
    assert_eq!(other, Err(Rep::NotAllowed));
    let (code, _, other) = lab.curl(&["--socks5-hostname", PROXY_OTHER_KEY, &page]);
    assert!(code == 97 && other.contains("(2)"), "{other}");
    println!(
        "8. srv through an exit without the exception: \"{}\"; through an exit serving another key: \"{}\"",
        strict.trim(),
        other.trim()
    );
}

/// 9. `count` connections open at once through the proxy to srv's TCP echo.
fn check_many_connections(lab: &Lab, count: usize) {
    const WORKERS: usize = 32;
    let proxy = addr(PROXY);
    let pids = lab.pids();
    let before = pids.map(|(_, pid)| rss_kib(pid));
    let t = Instant::now();
    let conns: Vec<TcpStream> = lab.in_a(|| {
        // Threads started here are in A's namespace too.
        thread::scope(|scope| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    scope.spawn(move || {
                        let mut mine = Vec::new();
                        for i in (w..count).step_by(WORKERS) {
                            let mut conn =
                                socks_connect(proxy, Dest::Ip(IpAddr::V4(SRV)), TCP_ECHO_PORT)
                                    .unwrap_or_else(|rep| panic!("connection {i}: reply {rep}"));
                            // 16 bytes: "0000000042 echo!".
                            let message = format!("{i:010} echo!");
                            conn.write_all(message.as_bytes()).unwrap();
                            let mut back = [0u8; 16];
                            conn.read_exact(&mut back).unwrap();
                            assert_eq!(&back, message.as_bytes(), "connection {i}");
                            mine.push(conn);
                        }
                        mine
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        })
    });
    let opened = t.elapsed();
    assert_eq!(conns.len(), count);
    let streams = [A, C].map(|i| lab.mesh.nodes[i].status_json().streams.open);
    let after = pids.map(|(_, pid)| rss_kib(pid));
    let fds = pids.map(|(_, pid)| fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count());
    drop(conns);
    println!(
        "9. {count} connections open at once, 16 bytes echoed on each: {opened:?} ({:.2} ms each); streams open at A and C: {streams:?}",
        opened.as_secs_f64() * 1e3 / count as f64
    );
    for (i, (what, _)) in pids.iter().enumerate() {
        println!(
            "   {what}: RSS {} -> {} KiB, {:.1} KiB per connection; {} descriptors open",
            before[i],
            after[i],
            after[i].saturating_sub(before[i]) as f64 / count as f64,
            fds[i]
        );
    }
    assert!(streams.iter().all(|open| *open >= count), "{streams:?}");
}

/// 10. kill -9 of the relay on the route during a rate-limited download.
fn check_relay_kill(lab: &mut Lab) {
    let srv = SRV.to_string();
    let download = lab.path("download");
    let relay = lab.route_path()[1];
    // 100 MiB at 10 MB/s: about 10 s.
    let mut long = lab
        .mesh
        .topo
        .command("a", "curl")
        .args([
            "-sS",
            "--limit-rate",
            "10M",
            "--max-time",
            "60",
            "--socks5-hostname",
            PROXY,
            "-o",
            download.to_str().unwrap(),
            "-w",
            "%{size_download}",
            &url(&srv, "big"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    lab.mesh.nodes[relay].kill9();
    let page = url(&srv, "hello.txt");
    let again = wait_until(Duration::from_secs(10), || {
        let (code, out, _) = lab.curl(&[
            "--max-time",
            "2",
            "--socks5-hostname",
            PROXY,
            "-o",
            "/dev/null",
            &page,
        ]);
        code == 0 && out.starts_with("200")
    });
    assert!(
        again.is_some(),
        "no new connection within 10 s of killing relay {relay}:\n{}",
        lab.mesh.manager_log()
    );
    let new_path = lab.route_path();
    assert!(!new_path.contains(&relay), "{new_path:?}");
    let finished = wait_until(
        Duration::from_secs(30).saturating_sub(killed.elapsed()),
        || matches!(long.try_wait(), Ok(Some(_))),
    );
    let ended = killed.elapsed();
    if finished.is_none() {
        let _ = long.kill();
        panic!("the download across the kill still ran 30 s after it");
    }
    let out = long.wait_with_output().unwrap();
    let outcome = if out.status.success() {
        assert_eq!(
            sha256_file(&download),
            lab.big_sha,
            "the download across the kill"
        );
        "completed, SHA-256 equal".to_owned()
    } else {
        format!(
            "failed ({}, {} bytes)",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )
    };
    println!(
        "10. kill -9 of relay {relay}: a new curl worked {:?} after it, over {new_path:?}; the download across it {outcome}, {ended:?} after the kill",
        again.unwrap()
    );
}

#[test]
fn real_socks_clients_cross_the_mesh() {
    if !netns::skip_unless_root("real_socks_clients_cross_the_mesh") {
        return;
    }
    let missing = missing_tools();
    if !missing.is_empty() {
        println!(
            "real_socks_clients_cross_the_mesh: skipped: missing {} (scripts/test installs them)",
            missing.join(", ")
        );
        return;
    }
    // Every process started from here inherits the limit: the nodes, the apps, the tools.
    raise_fd_limit();
    let started = Instant::now();
    let count = connections();
    let mut lab = Lab::start(count);
    println!(
        "set up in {:?}: 4 nodes and a manager, srv behind C with its services, 3 exits, 4 clients",
        started.elapsed()
    );
    check_curl(&lab);
    check_pysocks(&lab);
    check_refusals(&lab);
    check_iperf(&lab);
    check_auth(&lab);
    check_bad_input(&lab);
    check_half_close(&lab);
    check_other_exits(&lab);
    check_many_connections(&lab, count);
    check_relay_kill(&mut lab);
    println!("all checks in {:?}", started.elapsed());
}
