//! The SOCKS exit as a viscript app, in the original's form: the reference block of
//! `meshnet-socks-server` (its `path` made absolute, to this checkout's script), started
//! with `start meshnet-socks-server sockssrv0 <node address> <port>` as the original's help
//! text says, is a signal client (`ping`, `ru`, `sd`) and serves a SOCKS client through
//! two real nodes on loopback; `sd` stops it cleanly.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use skywire_control::apps::socks::wire::Dest;
use skywire_control::config::{ConfigFile, SocksConfig};
use skywire_control::demo::loopback::{LoopbackMesh, stop_child};
use skywire_control::demo::socks::socks_connect;

use super::{Scratch, Viscript, path_arg, skywire_binary, wait_for};

#[test]
fn the_original_socks_server_app_runs_under_viscript() {
    let scratch = Scratch::new();
    let mesh = LoopbackMesh::pair(&skywire_binary(), "test-viscript-socks").unwrap();
    let (a, b) = (&mesh.nodes[0], &mesh.nodes[1]);
    // A TCP echo the exit may reach by its exception.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in echo.incoming().flatten() {
            let mut buf = [0u8; 64];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    // What the script's `--config` holds: the exit's clients, exception and node.
    let mut socks = SocksConfig::default();
    socks.exit.clients = vec![a.plan.key];
    socks.exit.allow = vec![format!("127.0.0.1/32:{port}").parse().unwrap()];
    socks.exit.app_socket = Some(b.app_socket.clone());
    let socks_config = scratch.path("socks.yaml");
    ConfigFile::socks(socks).write(&socks_config).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bin/meshnet/meshnet-run-socks-server");
    let config = scratch.write(
        "config.yaml",
        &format!(
            "apps:
  meshnet-socks-server:
    daemon: true
    desc: DESCRIPTION GOES HERE
    path: {}
    default_args: []
    help: |
        [1] Text name of app, must be unique
        [2] Node address which app will be talked with. ex 101.202.34.56:9000
        [3] Port which socks server will use for connecting with target host. ex 8000

        Full Example Command:
            start meshnet-socks-server sockssrv0 101.202.34.56:9000 8001
",
            script.display()
        ),
    );
    let binary = skywire_binary();
    let mut v = Viscript::start_with(
        &scratch,
        &config,
        "127.0.0.1:0",
        &[],
        &[("SKYWIRE", &binary), ("SKYWIRE_CONFIG", &socks_config)],
    );
    let node = b.plan.addr.to_string();
    let started = v.json(&["s", "meshnet-socks-server", "sockssrv0", &node, "8001"]);
    let id = started["id"].as_u64().unwrap().to_string();
    wait_for("the exit to register over signal", || {
        (v.row(started["id"].as_u64().unwrap())["signal"] == true).then_some(())
    });
    assert!(v.json(&["ping", &id])["rtt_ms"].as_f64().is_some());
    let ru = v.json(&["ru", &id]);
    assert!(ru["app_report"]["Pid"].as_u64().is_some(), "{ru}");

    // A client on A pointed at port 8001 of B reaches the echo through the exit.
    let proxy = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut client = Command::new(&binary)
        .args(["socks", "client", "--exit", &b.plan.key.to_string()])
        .args(["--exit-port", "8001", "--listen", &proxy.to_string()])
        .args(["--socket", path_arg(&a.app_socket)])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let echoed = wait_for("a CONNECT through the viscript-run exit", || {
        let mut conn = socks_connect(proxy, Dest::Ip(Ipv4Addr::LOCALHOST.into()), port).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        conn.write_all(b"via viscript").ok()?;
        let mut back = [0u8; 12];
        conn.read_exact(&mut back).ok()?;
        Some(back)
    });
    assert_eq!(&echoed, b"via viscript");
    stop_child(&mut client);

    let sd = v.json(&["sd", &id]);
    assert_eq!(sd["how"], "signal");
    let row = v.wait_state(started["id"].as_u64().unwrap(), "stopped");
    assert_eq!(row["detail"], "exit 0");
    v.stop();
}
