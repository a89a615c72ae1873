//! The control socket under abuse (issue 16, row 10), against a real `skywire node`: 1000
//! idle connections, a client that sends a byte at a time, a 100 MB request line, garbage,
//! and `status` while the node starts and while it stops. `status` must answer within 1 s
//! throughout. (That a user other than root and the owner gets a permission error is
//! `cli_status`'s `another_user_gets_exit_77`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Scratch, path_arg, skywire_binary};

/// `skywire status --socket PATH`: its exit code (with what it said on stderr when not
/// 0) and how long it took.
fn status(socket: &Path) -> (Option<i32>, Duration) {
    let started = Instant::now();
    let out = Command::new(skywire_binary())
        .args(["status", "--socket", path_arg(socket)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let code = out.status.code();
    if !matches!(code, Some(0 | 69)) {
        eprintln!(
            "status exited {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (code, started.elapsed())
}

/// The node under test, killed if the test fails before it stops it.
struct Node(std::process::Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn status_answers_within_a_second_whatever_else_the_socket_gets() {
    let dir = Scratch::new();
    dir.keygen("node.key");
    let socket = dir.path("ctl/node.sock");
    let port = 20_000 + std::process::id() % 20_000;
    let config = dir.write(
        "node.yaml",
        &format!(
            "node:\n  key: node.key\n  listen: 127.0.0.1:{port}\n  control_socket: {}\n",
            socket.display()
        ),
    );
    let mut node = Node(
        Command::new(skywire_binary())
            .args(["node", "--config", path_arg(&config)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // While it starts: each call is answered or refused (69) at once, never hangs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut slowest = Duration::ZERO;
    loop {
        let (code, took) = status(&socket);
        slowest = slowest.max(took);
        assert!(
            matches!(code, Some(0 | 69)),
            "status during start: {code:?}"
        );
        if code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not come up");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "status during start took {slowest:?}"
    );

    // 1000 connections that say nothing.
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let running = Arc::new(AtomicBool::new(true));
    let mut abusers = Vec::new();
    // A client that sends a byte every 50 ms and never ends its line.
    abusers.push({
        let (socket, running) = (socket.clone(), Arc::clone(&running));
        thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            while running.load(Ordering::Relaxed) && s.write_all(b"{").is_ok() {
                thread::sleep(Duration::from_millis(50));
            }
        })
    });
    // A 100 MB request line: refused after the first 64 KiB, the connection closed.
    abusers.push({
        let socket = socket.clone();
        thread::spawn(move || {
            let mut s = UnixStream::connect(&socket).unwrap();
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            while sent < 100 << 20 && s.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
            assert!(sent < 100 << 20, "the node read a 100 MB request line");
        })
    });
    // Garbage, over and over: each gets an error line and its connection is closed.
    abusers.push({
        let (socket, running) = (socket.clone(), Arc::clone(&running));
        thread::spawn(move || {
            let mut n = 0u32;
            while running.load(Ordering::Relaxed) {
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    continue;
                };
                let _ = s.write_all(b"\x00\xff{{{ not json\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if !answer.is_empty() {
                    assert!(answer.contains("\"error\""), "{answer}");
                    n += 1;
                }
            }
            assert!(n > 0, "no garbage was answered");
        })
    });

    let mut times = Vec::new();
    for _ in 0..20 {
        let (code, took) = status(&socket);
        assert_eq!(code, Some(0), "status under abuse");
        times.push(took);
    }
    times.sort();
    let worst = times[times.len() - 1];
    println!(
        "status under abuse: median {:?}, worst {worst:?} (20 calls, process start included)",
        times[times.len() / 2]
    );
    assert!(worst < Duration::from_secs(1), "status took {worst:?}");
    running.store(false, Ordering::Relaxed);
    for abuser in abusers {
        abuser.join().unwrap();
    }
    drop(idle);

    // While it stops: answered or refused at once, never a hang.
    let pid = node.0.id().to_string();
    let stopping = {
        let socket = socket.clone();
        thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            for _ in 0..30 {
                let (code, took) = status(&socket);
                assert!(matches!(code, Some(0 | 69)), "status during stop: {code:?}");
                slowest = slowest.max(took);
            }
            slowest
        })
    };
    thread::sleep(Duration::from_millis(30));
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exit = node.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let slowest = stopping.join().unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "status during stop took {slowest:?}"
    );
}
