//! The SOCKS client out of file descriptors, on loopback (no root): two real nodes, the
//! exit app, and the client app run under `prlimit --nofile=48` (a hard limit it cannot
//! raise), with a short negotiation timeout from a `socks:` config file.
//!
//! - 200 connections that send nothing pin every descriptor: the client answers the
//!   connections it cannot take with "no acceptable method" (05 FF) instead of spinning
//!   on `EMFILE`, stays alive, and uses little CPU meanwhile;
//! - once those connections time out, a normal CONNECT through it works again.
//!
//! And the apps outlive their nodes: the exit's node, then the client's, restarted; the
//! apps wait for them and serve again.
//!
//! The first test is skipped (with a message) when `prlimit` is missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use skywire_control::apps::socks::wire::Dest;
use skywire_control::config::{ConfigFile, SocksConfig};
use skywire_control::demo::loopback::{LoopbackMesh, stop_child};
use skywire_control::demo::socks::socks_connect;

/// Kills the child when dropped.
struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

fn program() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_skywire"))
}

/// `skywire socks exit` on the pair's node B, serving A, allowed to reach 127.0.0.1:`port`.
fn start_exit(mesh: &LoopbackMesh, port: u16) -> App {
    let (a, b) = (&mesh.nodes[0], &mesh.nodes[1]);
    App(Command::new(program())
        .args(["socks", "exit", "--client", &a.plan.key.to_string()])
        .args(["--allow", &format!("127.0.0.1/32:{port}")])
        .args(["--socket", b.app_socket.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap())
}

/// A loopback address with a port free a moment ago.
fn free_addr() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A TCP echo on loopback.
fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// CPU seconds of process `pid` so far (utime + stime from /proc, at 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn out_of_descriptors_the_client_refuses_and_recovers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let mesh = LoopbackMesh::pair(program(), "test-socks-limits").unwrap();
    let (a, b) = (&mesh.nodes[0], &mesh.nodes[1]);
    let port = echo();
    let _exit = start_exit(&mesh, port);
    let proxy = free_addr();
    let mut socks = SocksConfig::default();
    socks.client.negotiation_timeout = Duration::from_secs(2);
    let config = mesh.dir().join("socks.yaml");
    ConfigFile::socks(socks).write(&config).unwrap();
    let client = App(Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(program())
        .args(["socks", "client", "--exit", &b.plan.key.to_string()])
        .args(["--listen", &proxy.to_string()])
        .args(["--socket", a.app_socket.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let dest = || Dest::Ip(Ipv4Addr::LOCALHOST.into());
    // Up and serving.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match socks_connect(proxy, dest(), port) {
            Ok(_) => break,
            Err(rep) if Instant::now() > deadline => panic!("the proxy never served: {rep}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
    // prlimit runs the client in its own process (exec): its pid is the child's.
    let pid = client.0.id();

    // 200 silent connections: each holds a descriptor of the client until its timeout.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(proxy).unwrap());
    }
    thread::sleep(Duration::from_millis(500));
    let cpu_before = cpu_seconds(pid);
    // Those it could not take got "no acceptable method" (05 FF) and a close.
    let mut refused = 0;
    for conn in &mut silent {
        conn.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut answer = [0u8; 2];
        if conn.read_exact(&mut answer).is_ok() {
            assert_eq!(
                answer,
                [5, 0xff],
                "an unexpected answer to a silent connection"
            );
            refused += 1;
        }
    }
    thread::sleep(Duration::from_millis(1000));
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        refused > 0,
        "no connection was refused: the limit was never reached"
    );
    assert!(
        cpu < 0.5,
        "the client burned {cpu:.2} CPU s in a second out of descriptors (spinning?)"
    );
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the client died"
    );
    eprintln!("{refused} of 200 silent connections refused with 05 FF; {cpu:.2} CPU s meanwhile");

    // The silent ones time out (2 s); then it serves again.
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match socks_connect(proxy, dest(), port) {
            Ok(mut conn) => {
                conn.write_all(b"again").unwrap();
                let mut back = [0u8; 5];
                conn.read_exact(&mut back).unwrap();
                assert_eq!(&back, b"again");
                break;
            }
            Err(rep) if Instant::now() > deadline => {
                panic!("the client did not recover: {rep}")
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Poll a CONNECT through `proxy` to the echo on `port` until it echoes, within `within`.
fn serves_within(proxy: std::net::SocketAddr, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = socks_connect(proxy, Dest::Ip(Ipv4Addr::LOCALHOST.into()), port)
            .map_err(|rep| rep.to_string())
            .and_then(|mut conn| {
                conn.set_read_timeout(Some(Duration::from_secs(2)))
                    .map_err(|e| e.to_string())?;
                conn.write_all(b"ping").map_err(|e| e.to_string())?;
                let mut back = [0u8; 4];
                conn.read_exact(&mut back).map_err(|e| e.to_string())?;
                Ok(())
            });
        match attempt {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() > deadline => return Err(why),
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn the_apps_wait_for_their_nodes_and_serve_again() {
    let mut mesh = LoopbackMesh::pair(program(), "test-socks-restart").unwrap();
    let b_key = mesh.nodes[1].plan.key;
    let a_app = mesh.nodes[0].app_socket.clone();
    let port = echo();
    let mut exit = start_exit(&mesh, port);
    let proxy = free_addr();
    let mut client = App(Command::new(program())
        .args(["socks", "client", "--exit", &b_key.to_string()])
        .args(["--listen", &proxy.to_string()])
        .args(["--socket", a_app.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    serves_within(proxy, port, Duration::from_secs(10)).unwrap();

    mesh.restart(1).unwrap();
    serves_within(proxy, port, Duration::from_secs(15))
        .unwrap_or_else(|why| panic!("not served after the exit's node restarted: {why}"));
    mesh.restart(0).unwrap();
    serves_within(proxy, port, Duration::from_secs(15))
        .unwrap_or_else(|why| panic!("not served after the client's node restarted: {why}"));
    assert!(matches!(exit.0.try_wait(), Ok(None)), "the exit app exited");
    assert!(
        matches!(client.0.try_wait(), Ok(None)),
        "the client app exited"
    );
}
