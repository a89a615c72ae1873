//! `docs/app_client.py`, the client for app writers in other languages, run for real against
//! the harness's server and fake engine: with itself on both ends, and with the Rust
//! client on the other. Skipped (with a line saying so) where `python3` is missing.

use super::*;
use std::process::{Child, ExitStatus, Stdio};

/// `python3`, if this machine has one.
fn python() -> Option<&'static str> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        println!("skipped: python3 is not installed, so docs/app_client.py cannot run");
    }
    found.then_some("python3")
}

/// A run of `app_client.py --socket <the harness's> ARGS...`, its output collected.
struct Run {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: thread::JoinHandle<Vec<u8>>,
    stderr: thread::JoinHandle<Vec<u8>>,
}

/// How a run ended.
struct Ended {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn start(python: &str, h: &Harness, args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/app_client.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--socket")
            .arg(&h.path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |mut from: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut all = Vec::new();
                from.read_to_end(&mut all).unwrap();
                all
            })
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Write `input` to its standard input on a thread of its own (the run reads and
    /// writes at once), then close it.
    fn feed(&mut self, input: Vec<u8>) -> thread::JoinHandle<()> {
        let mut stdin = self.stdin.take().unwrap();
        thread::spawn(move || {
            // A run that failed early stops reading; its error says why, not this write.
            let _ = stdin.write_all(&input);
        })
    }

    /// Wait for it to exit: a run still going after 30 s is killed and fails the test.
    fn wait(mut self) -> Ended {
        let deadline = Instant::now() + 30 * SECOND;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "app_client.py did not finish: {}",
                    String::from_utf8_lossy(&self.stderr.join().unwrap())
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        drop(self.stdin.take());
        Ended {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: String::from_utf8_lossy(&self.stderr.join().unwrap()).into_owned(),
        }
    }
}

impl Ended {
    fn assert_success(&self) {
        assert!(self.status.success(), "{:?}: {}", self.status, self.stderr);
    }

    /// It failed with `code`, naming `words` (an error kind) on standard error.
    fn assert_failed(&self, code: i32, words: &str) {
        assert_eq!(self.status.code(), Some(code), "{}", self.stderr);
        assert!(self.stderr.contains(words), "{}", self.stderr);
    }
}

/// Wait until the fake engine has `n` listeners (a listening run got its `ok`).
fn wait_for_listeners(h: &Harness, n: usize) {
    let deadline = Instant::now() + 10 * SECOND;
    while h.engine.listeners() != n {
        assert!(Instant::now() < deadline, "no listener after 10 s");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn python_dials_a_python_echo_listener() {
    let Some(python) = python() else { return };
    let h = Harness::start();
    let listener = Run::start(python, &h, &["listen", "7", "--echo"]);
    wait_for_listeners(&h, 1);
    // More than the client's frames and the sockets' buffers hold at once.
    let message: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let key = peer().to_string();
    let mut dialer = Run::start(python, &h, &["dial", &key, "7"]);
    let feeding = dialer.feed(message.clone());
    let dialed = dialer.wait();
    feeding.join().unwrap();
    dialed.assert_success();
    assert!(
        dialed.stdout == message,
        "the echo differs from what was sent"
    );
    let listened = listener.wait();
    listened.assert_success();
    assert!(
        listened.stderr.contains("listening on port 7"),
        "{}",
        listened.stderr
    );
    assert!(listened.stdout.is_empty());
}

#[test]
fn half_close_between_python_and_the_rust_client() {
    let Some(python) = python() else { return };
    let h = Harness::start();

    // Python dials and finishes first; the Rust side reads to its FIN, then answers.
    let mut listener = h.client().listen(ListenRequest::on(8)).unwrap();
    let key = peer().to_string();
    let mut dialer = Run::start(python, &h, &["dial", &key, "8"]);
    let feeding = dialer.feed(b"question".to_vec());
    let mut stream = listener.accept().unwrap();
    let mut question = String::new();
    stream.read_to_string(&mut question).unwrap();
    assert_eq!(question, "question");
    stream.write_all(b"an answer after your FIN").unwrap();
    stream.shutdown_write().unwrap();
    let dialed = dialer.wait();
    feeding.join().unwrap();
    dialed.assert_success();
    assert_eq!(dialed.stdout, b"an answer after your FIN");

    // Python listens; both send and finish, each reading the other's bytes to the end.
    drop(listener);
    wait_for_listeners(&h, 0);
    let mut listener = Run::start(python, &h, &["listen", "9"]);
    wait_for_listeners(&h, 1);
    let feeding = listener.feed(b"greeting from python".to_vec());
    let mut stream = h.client().dial(peer(), 9, SECOND).unwrap();
    stream.write_all(b"hello from rust").unwrap();
    stream.shutdown_write().unwrap();
    let mut greeting = String::new();
    if let Err(error) = stream.read_to_string(&mut greeting) {
        panic!("{error}; app_client.py said: {}", listener.wait().stderr);
    }
    assert_eq!(greeting, "greeting from python");
    let listened = listener.wait();
    feeding.join().unwrap();
    listened.assert_success();
    assert_eq!(listened.stdout, b"hello from rust");
}

#[test]
fn error_lines_and_resets_make_python_fail_with_the_kind() {
    let Some(python) = python() else { return };
    let h = Harness::start();
    let key = peer().to_string();
    let run = |args: &[&str]| {
        let mut run = Run::start(python, &h, args);
        let feeding = run.feed(Vec::new());
        let ended = run.wait();
        feeding.join().unwrap();
        ended
    };
    // Nothing listens on port 7.
    run(&["dial", &key, "7"]).assert_failed(1, "(refused)");
    // No route to that key, and none to be had.
    let stranger = PublicKey::from_bytes([0xcc; 32]).to_string();
    run(&["dial", &stranger, "7"]).assert_failed(1, "(no_route)");
    // Not a key: the node says what is wrong.
    run(&["dial", "c0ffee", "7"]).assert_failed(1, "(bad_request)");
    // No node there.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/app_client.py");
    let out = Command::new(python)
        .arg(script)
        .args([
            "--socket",
            "/nonexistent/skywire-apps.sock",
            "dial",
            &key,
            "7",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is skywire node running?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The engine resets an open stream: the run ends at once with the reason, although
    // its input is still open.
    let mut listener = h.client().listen(ListenRequest::on(10)).unwrap();
    let mut dialer = Run::start(python, &h, &["dial", &key, "10"]);
    let accepted = listener.accept().unwrap();
    assert!(h.engine.reset(accepted.id(), StreamError::IdleTimeout));
    let stdin = dialer.stdin.take();
    let ended = dialer.wait();
    drop(stdin);
    ended.assert_failed(
        1,
        "stream reset: idle_timeout: the stream was idle too long",
    );
}
