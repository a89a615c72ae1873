//! `skywire demo socks`: a SOCKS5 proxy over the mesh, on loopback, without root.
//!
//! Two real `skywire node` processes A and B with a route between them (carrying app
//! streams only), `skywire socks client` on A and `skywire socks exit` on B (serving A's
//! key only, with one exception: the demo's HTTP server on 127.0.0.1, which the policy
//! would otherwise refuse as loopback). The demo is the SOCKS client, and `curl` too when
//! it is installed. It shows and checks:
//!
//! 1. a page fetched through the proxy, the name resolved at the exit (socks5h);
//! 2. refusals with their reply codes: loopback and the cloud metadata address (2, not
//!    allowed), `localhost` (2), BIND (7);
//! 3. a large download through the proxy, with a BLAKE3 digest of what the server sent and
//!    of what arrived, and its throughput;
//! 4. connection setup (CONNECT to the first byte of the reply) over 50 connections;
//! 5. the exit's own count of connections and bytes per client key, and the nodes'.
//!
//! Everything it started is stopped and its folder removed when it returns.

use core::time::Duration;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Instant;

use super::loopback::{LoopbackError, LoopbackMesh, stop_child};
use crate::apps::socks::wire::{self, Command as SocksCommand, Dest, Name, Rep, Request};
use crate::node::ctl::request_status;

/// What to run.
#[derive(Debug, Clone)]
pub struct SocksDemoOptions {
    /// The `skywire` binary.
    pub program: PathBuf,
    /// Bytes of the large download.
    pub bytes: u64,
    /// Raised to stop early (Ctrl-C).
    pub interrupted: Arc<AtomicBool>,
}

/// Why the demo could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SocksDemoError {
    /// Making or starting the nodes failed.
    #[error(transparent)]
    Nodes(#[from] LoopbackError),
    /// An app or the HTTP server did not start.
    #[error("{0}")]
    Start(String),
    /// Writing the report failed.
    #[error("cannot write the report")]
    Output(#[source] io::Error),
}

/// The checks that failed.
#[derive(Debug, Default)]
pub struct SocksDemoSummary {
    /// One line per failed check.
    pub failed: Vec<String>,
}

impl SocksDemoSummary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.failed.is_empty()
    }
}

/// An app process, stopped with SIGTERM (then SIGKILL) when dropped.
struct AppProc {
    child: Child,
    log: PathBuf,
}

impl AppProc {
    fn start(program: &Path, args: &[String], log: PathBuf) -> Result<Self, SocksDemoError> {
        let file = std::fs::File::create(&log)
            .map_err(|e| SocksDemoError::Start(format!("cannot create {}: {e}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(|e| SocksDemoError::Start(e.to_string()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| SocksDemoError::Start(format!("cannot run {}: {e}", program.display())))?;
        Ok(Self { child, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until its log holds `text`, or it exited, or 15 s passed.
    fn wait_for(&mut self, text: &str) -> Result<(), SocksDemoError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.log_text().contains(text) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(SocksDemoError::Start(format!(
                    "it exited with {status}:\n{}",
                    self.log_text()
                )));
            }
            if Instant::now() > deadline {
                return Err(SocksDemoError::Start(format!(
                    "no `{text}` within 15 s:\n{}",
                    self.log_text()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and its log once it exited.
    fn stop(&mut self) -> String {
        stop_child(&mut self.child);
        self.log_text()
    }
}

impl Drop for AppProc {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The HTTP server's `len` pseudo-random bytes (the same for the same length), handed to
/// `each` in blocks of 64 KiB; stops at the first error.
fn pattern(len: u64, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut block = vec![0u8; 64 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut left = len;
    while left > 0 {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            word.copy_from_slice(bytes.get(..word.len()).unwrap_or_default());
        }
        let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        each(block.get(..n).unwrap_or_default())?;
        left -= n as u64;
    }
    Ok(())
}

/// The BLAKE3 digest of [`pattern`]'s `len` bytes.
fn pattern_digest(len: u64) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let _ = pattern(len, |block| {
        hasher.update(block);
        Ok(())
    });
    hasher.finalize()
}

/// A tiny HTTP/1.0 server on loopback: `GET /bytes/N` answers N pattern bytes.
pub fn http_server() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::Builder::new()
        .name("demo-http".to_owned())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let _ = serve_http(conn);
                });
            }
        })?;
    Ok(addr)
}

fn serve_http(conn: TcpStream) -> io::Result<()> {
    // A request head of at most 64 KiB: whoever connects cannot make it grow further.
    let mut reader = BufReader::new(conn.try_clone()?.take(64 * 1024));
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let len: u64 = first
        .split_whitespace()
        .nth(1)
        .and_then(|path| path.strip_prefix("/bytes/"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut out = &conn;
    write!(
        out,
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )?;
    pattern(len, |block| out.write_all(block))
}

/// A SOCKS5 CONNECT through `proxy` (no authentication): the connection after a
/// successful reply, or the reply's code.
pub fn socks_connect(proxy: SocketAddr, dest: Dest, port: u16) -> Result<TcpStream, Rep> {
    socks_request(proxy, SocksCommand::Connect, dest, port)
}

fn socks_request(
    proxy: SocketAddr,
    command: SocksCommand,
    dest: Dest,
    port: u16,
) -> Result<TcpStream, Rep> {
    let fail = |_| Rep::GeneralFailure;
    let mut conn = TcpStream::connect(proxy).map_err(fail)?;
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(fail)?;
    let mut hello = vec![wire::VERSION, 1, 0];
    wire::encode_request(
        &Request {
            command,
            dest,
            port,
        },
        &mut hello,
    );
    // The greeting and the request at once, as many clients do.
    conn.write_all(&hello).map_err(fail)?;
    let mut method = [0u8; 2];
    conn.read_exact(&mut method).map_err(fail)?;
    if method != wire::method_reply(wire::Method::NoAuth) {
        return Err(Rep::GeneralFailure);
    }
    let mut reply = [0u8; wire::REPLY_LEN];
    conn.read_exact(&mut reply).map_err(fail)?;
    match wire::parse_reply(&reply) {
        Ok(Some((r, _))) if r.rep == Rep::Succeeded => Ok(conn),
        Ok(Some((r, _))) => Err(r.rep),
        _ => Err(Rep::GeneralFailure),
    }
}

/// GET /bytes/N through `conn`: the body's digest and length.
fn fetch(mut conn: TcpStream, n: u64) -> io::Result<(blake3::Hash, u64)> {
    write!(conn, "GET /bytes/{n} HTTP/1.0\r\nHost: demo\r\n\r\n")?;
    let mut reader = BufReader::with_capacity(256 * 1024, conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut hasher = blake3::Hasher::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = reader.read(&mut buf)?;
        if k == 0 {
            break;
        }
        hasher.update(buf.get(..k).unwrap_or_default());
        got += k as u64;
    }
    Ok((hasher.finalize(), got))
}

/// Run the demo, reporting to `out`.
pub fn run(
    out: &mut impl Write,
    options: &SocksDemoOptions,
) -> Result<SocksDemoSummary, SocksDemoError> {
    let mut say = |text: String| writeln!(out, "{text}").map_err(SocksDemoError::Output);
    let mesh = LoopbackMesh::pair(&options.program, "demo-socks")?;
    let (Some(a), Some(b)) = (mesh.nodes.first(), mesh.nodes.get(1)) else {
        return Err(SocksDemoError::Start(
            "two nodes were not started".to_owned(),
        ));
    };
    let http = http_server().map_err(|e| SocksDemoError::Start(format!("HTTP server: {e}")))?;
    let proxy = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| SocksDemoError::Start(e.to_string()))?;
    let mut exit = AppProc::start(
        &options.program,
        &[
            "socks".into(),
            "exit".into(),
            "--client".into(),
            a.plan.key.to_string(),
            "--allow".into(),
            format!("127.0.0.1/32:{}", http.port()),
            "--socket".into(),
            b.app_socket.display().to_string(),
        ],
        mesh.dir().join("exit.log"),
    )?;
    exit.wait_for("skywire socks exit")?;
    let mut client = AppProc::start(
        &options.program,
        &[
            "socks".into(),
            "client".into(),
            "--exit".into(),
            b.plan.key.to_string(),
            "--listen".into(),
            proxy.to_string(),
            "--socket".into(),
            a.app_socket.display().to_string(),
        ],
        mesh.dir().join("client.log"),
    )?;
    client.wait_for("skywire socks client")?;
    say(format!(
        "skywire demo socks: two nodes on loopback, no root:\n  A {} (socks client, SOCKS5 on {proxy})\n  B {} (socks exit, serving A only)\n  HTTP server on {http}, reachable through the exit by an exception (127.0.0.1/32:{})",
        a.plan.key,
        b.plan.key,
        http.port()
    ))?;
    let mut summary = SocksDemoSummary::default();
    let name = |text: &str| {
        Name::new(text)
            .map(Dest::Name)
            .unwrap_or(Dest::Ip(Ipv4Addr::LOCALHOST.into()))
    };

    // 1. A page, the name resolved at the exit.
    say("\n1. a page through the proxy (socks5h: the exit resolves the name)".into())?;
    let started = Instant::now();
    match socks_connect(proxy, name("127.0.0.1"), http.port()).map(|c| fetch(c, 1024)) {
        Ok(Ok((digest, 1024))) if digest == pattern_digest(1024) => say(format!(
            "   GET http://127.0.0.1:{}/bytes/1024: 1024 bytes, digest matches, {:.1} ms",
            http.port(),
            started.elapsed().as_secs_f64() * 1e3
        ))?,
        other => summary.failed.push(format!("the page: {other:?}")),
    }
    if let Some(line) = curl(proxy, http) {
        say(format!("   curl --socks5-hostname: {line}"))?;
        if !line.starts_with("200") {
            summary.failed.push(format!("curl: {line}"));
        }
    }

    // 2. Refusals.
    say("\n2. refused, with SOCKS reply codes".into())?;
    let refusals: [(&str, Dest, u16, SocksCommand, Rep); 5] = [
        (
            "127.0.0.1:22 (loopback)",
            Dest::Ip(Ipv4Addr::LOCALHOST.into()),
            22,
            SocksCommand::Connect,
            Rep::NotAllowed,
        ),
        (
            "2130706433:80 (127.0.0.1 written as a number)",
            name("2130706433"),
            80,
            SocksCommand::Connect,
            Rep::NotAllowed,
        ),
        (
            "localhost:80",
            name("localhost"),
            80,
            SocksCommand::Connect,
            Rep::NotAllowed,
        ),
        (
            "169.254.169.254:80 (cloud metadata)",
            Dest::Ip(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))),
            80,
            SocksCommand::Connect,
            Rep::NotAllowed,
        ),
        (
            "BIND",
            Dest::Ip(Ipv4Addr::UNSPECIFIED.into()),
            0,
            SocksCommand::Bind,
            Rep::CommandNotSupported,
        ),
    ];
    for (what, dest, port, command, want) in refusals {
        match socks_request(proxy, command, dest, port) {
            Err(rep) if rep == want => say(format!("   {what}: reply {} ({rep})", u8::from(rep)))?,
            Err(rep) => summary
                .failed
                .push(format!("{what}: reply {rep}, expected {want}")),
            Ok(_) => summary.failed.push(format!("{what}: allowed")),
        }
    }

    // 3. Throughput.
    say(format!(
        "\n3. {} MiB through the proxy",
        options.bytes >> 20
    ))?;
    let started = Instant::now();
    match socks_connect(proxy, Dest::Ip(http.ip()), http.port()).map(|c| fetch(c, options.bytes)) {
        Ok(Ok((digest, got)))
            if got == options.bytes && digest == pattern_digest(options.bytes) =>
        {
            let secs = started.elapsed().as_secs_f64();
            say(format!(
                "   {got} bytes in {secs:.2} s: {:.2} Gbit/s; BLAKE3 of what arrived matches what the server sent ({})",
                got as f64 * 8.0 / secs / 1e9,
                &digest.to_hex()[..16]
            ))?;
        }
        other => summary.failed.push(format!("the download: {other:?}")),
    }

    // 4. Setup.
    let mut setups = Vec::new();
    for _ in 0..50 {
        if options.interrupted.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        match socks_connect(proxy, Dest::Ip(http.ip()), http.port()) {
            Ok(_) => setups.push(started.elapsed()),
            Err(rep) => {
                summary
                    .failed
                    .push(format!("a CONNECT for the setup figures: {rep}"));
                break;
            }
        }
    }
    setups.sort_unstable();
    if let (Some(p50), Some(p99)) = (
        setups.get(setups.len() / 2),
        setups.get(setups.len() * 99 / 100),
    ) {
        say(format!(
            "\n4. connection setup (CONNECT to the exit's reply, {} connections): p50 {:.2} ms, p99 {:.2} ms",
            setups.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ))?;
    }

    // 5. Counts.
    thread::sleep(Duration::from_millis(300));
    let exit_log = exit.stop();
    let client_log = client.stop();
    if !summary.passed() {
        say(format!(
            "\nthe client's log:\n{client_log}\nthe exit's log:\n{exit_log}"
        ))?;
    }
    say("\n5. the exit's count per client key (printed when it stops):".into())?;
    let mut counted = false;
    for line in exit_log.lines().filter(|l| l.contains(" opened, ")) {
        counted = true;
        say(format!("   {}", crate::logging::message(line)))?;
    }
    if !counted {
        summary.failed.push("the exit printed no count".to_owned());
    }
    say("   and each node's, in `skywire status` (stream bytes per peer key):".into())?;
    for node in &mesh.nodes {
        if let Ok(status) = request_status(&node.socket, Duration::from_secs(2)) {
            let s = &status.streams;
            for p in &s.per_peer {
                say(format!(
                    "   node {}: streams with {}: {} open, {} bytes sent, {} received",
                    node.plan.name, p.peer, p.open, p.sent, p.received
                ))?;
            }
            // The exit's node sent the download to the client's node, and said so.
            if node.plan.name == "B"
                && !s
                    .per_peer
                    .iter()
                    .any(|p| p.peer == a.plan.key && p.sent >= options.bytes)
            {
                summary
                    .failed
                    .push("node B's status does not count the download to A".to_owned());
            }
        }
    }
    if options.interrupted.load(Ordering::Relaxed) {
        summary.failed.push("interrupted".to_owned());
    }
    drop(exit);
    drop(client);
    drop(mesh);
    say(if summary.passed() {
        "\nall checks passed; apps and nodes stopped, files removed".into()
    } else {
        "\nsome checks FAILED; apps and nodes stopped, files removed".into()
    })?;
    Ok(summary)
}

/// `curl --socks5-hostname` of a small page, if curl is installed: its status and size.
fn curl(proxy: SocketAddr, http: SocketAddr) -> Option<String> {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} bytes in %{time_total} s",
            "--max-time",
            "15",
            "--socks5-hostname",
            &proxy.to_string(),
            &format!("http://127.0.0.1:{}/bytes/4096", http.port()),
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
