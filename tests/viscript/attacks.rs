//! The attacks of issue 17 (item 7) on signal and on the terminal, each tried for real:
//! a local process that registers as an app without its secret, a fake signal server
//! that tells an app to shut down (instead of viscript, and after viscript died, with the
//! original protocol, with a made-up proof and with a recorded exchange), and apps whose
//! output and reports carry escape sequences.
//!
//! Each test failed before signal was authenticated and output escaped (the commit that
//! added them says how); the assertions say what must hold now.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use serde_json::{Value, json};
use skywire_control::signal::auth::{self, Nonce, Secret};
use skywire_control::signal::frame::{Decoder, Frame, op};

use super::*;

/// A free loopback address (bound and let go; the tests run on one machine).
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// One end of a signal connection, frames in and out with the library's codec.
struct Peer {
    stream: TcpStream,
    decoder: Decoder,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Self {
            stream,
            decoder: Decoder::new(),
        }
    }

    fn connect(addr: &str) -> Self {
        Self::new(TcpStream::connect(addr).unwrap())
    }

    /// The next connection to `listener` (which must be non-blocking).
    fn accept(listener: &TcpListener) -> Self {
        let stream = wait_for("the app to connect", || listener.accept().ok()).0;
        stream.set_nonblocking(false).unwrap();
        Self::new(stream)
    }

    fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&frame.encode().unwrap()).unwrap();
    }

    /// The next frame, or `None` once the other end closed the connection.
    fn recv(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(frame);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the signal peer: {e}"),
            }
        }
    }

    /// Every frame until the other end closes.
    fn rest(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.recv()).collect()
    }
}

/// Connect to viscript's signal server as id `id` and send what `registration` makes of
/// its nonce; the answer, after which the server must have closed the connection.
fn register_as(addr: &str, registration: impl FnOnce(&Nonce) -> Frame) -> Frame {
    let mut attacker = Peer::connect(addr);
    let hello = attacker.recv().expect("the server's Hello");
    let nonce = auth::hello_nonce(&hello).expect("a nonce in the Hello");
    attacker.send(&registration(&nonce));
    let answer = attacker.recv().expect("an answer to the registration");
    assert_eq!(attacker.rest(), [], "the connection stays open");
    answer
}

/// The lines of app `id`'s log.
fn log_lines(v: &mut Viscript, id: u64) -> Vec<String> {
    let log = v.json(&["attach", &id.to_string()]);
    log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_registration_without_the_secret_is_refused() {
    let scratch = Scratch::new();
    let addr = free_addr();
    let mut v = Viscript::start_at(&scratch, &addr, &[]);
    let started = v.json(&["s", "pyclient"]);
    let pid = started["pid"].clone();
    wait_for("the Python client to register", || {
        (v.row(1)["signal"] == true).then_some(())
    });

    // The original protocol: `Reg` with the id of a live app and nothing else (it used to
    // take the id over and cut the app off).
    let answer = register_as(&addr, |_| Frame::request(op::REG, 1, json!({"Id": 1})));
    assert_eq!(answer.op, op::REG | 0x80);
    let error = answer.body["Error"].as_str().unwrap();
    assert!(error.contains("carries no Nonce and Proof"), "{error}");

    // A proof made with a secret of its own, for the live app and for the next one
    // (which has no secret yet: nothing can register as it).
    let wrong = Secret::generate().unwrap();
    for (id, refused) in [(1, "wrong proof"), (2, "no app with id 2")] {
        let answer = register_as(&addr, |server_nonce| {
            let nonce = Nonce([9; 32]);
            let proof = auth::proof(&wrong, auth::CLIENT_LABEL, id, server_nonce, &nonce);
            Frame::request(
                op::REG,
                1,
                json!({"Id": id, "Nonce": nonce.to_hex(), "Proof": proof.to_hex()}),
            )
        });
        let error = answer.body["Error"].as_str().unwrap();
        assert!(error.contains(refused), "{error}");
    }

    // The real app still holds its id and answers for itself; the attempts are logged
    // in its output (at most one line a second: the first, then a count).
    assert_eq!(v.row(1)["signal"], true);
    v.json(&["ping", "1"]);
    assert_eq!(v.json(&["ru", "1"])["app_report"]["Pid"], pid);
    let refused = wait_for("the refusal in the app's log", || {
        let lines = log_lines(&mut v, 1);
        lines
            .into_iter()
            .find(|l| l.contains("refused a signal registration from 127.0.0.1:"))
    });
    assert!(refused.contains("carries no Nonce and Proof"), "{refused}");
    let (_, la, _) = v.exec(&["la"]);
    assert!(la.contains("3 signal registrations refused"), "{la}");

    // The next app registers with its own secret, which the attempt as id 2 did not hurt.
    let second = v.json(&["s", "pyclient"]);
    assert_eq!(second["id"], 2);
    wait_for("the second Python client to register", || {
        (v.row(2)["signal"] == true).then_some(())
    });
    let ping = v.json(&["ping", "2"]);
    assert!(ping["rtt_ms"].as_f64().is_some());
    v.stop();
}

/// A skywire subcommand that stays up (a headless viscript with no apps), run as a signal
/// client of `server` with id 1 and `secret`, as viscript would run it. Its stderr is
/// piped.
fn skywire_signal_client(scratch: &Scratch, server: &str, secret: &Secret) -> Child {
    let config = scratch.write("client.yaml", "apps: {}\n");
    Command::new(skywire_binary())
        .args(["viscript", "--headless", "--config", path_arg(&config)])
        .args(["--socket", path_arg(&scratch.path("client/v.sock"))])
        .args(["--signal-address", "127.0.0.1:0"])
        .env("SIGNAL_CLIENT", "true")
        .env("SIGNAL_CLIENT_ID", "1")
        .env("SIGNAL_SERVER_ADDRESS", server)
        .env("SIGNAL_CLIENT_SECRET", secret.to_hex())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A listener for a fake server, non-blocking for [`Peer::accept`].
fn listen(addr: &str) -> Option<TcpListener> {
    let listener = TcpListener::bind(addr).ok()?;
    listener.set_nonblocking(true).unwrap();
    Some(listener)
}

/// Play a server that does not know the app's secret on the app's next two connections:
/// first the original protocol (no Hello; a Shutdown at once), then a Hello answered by
/// an echo with a made-up proof and a Shutdown. Returns what the app answered.
fn fake_server(listener: &TcpListener) -> Vec<Frame> {
    let mut answers = Vec::new();
    let mut original = Peer::accept(listener);
    original.send(&Frame::request(op::SHUTDOWN, 7, Value::Null));
    answers.extend(original.rest());

    let mut made_up = Peer::accept(listener);
    made_up.send(&auth::hello(&Nonce::random().unwrap()));
    let reg = made_up.recv().expect("a registration");
    assert_eq!((reg.op, reg.body["Id"].as_u64()), (op::REG, Some(1)));
    made_up.send(&reg.reply(json!({"Id": 1, "Proof": "00".repeat(32)})));
    made_up.send(&Frame::request(op::SHUTDOWN, 8, Value::Null));
    answers.extend(made_up.rest());
    answers
}

#[test]
fn a_fake_signal_server_cannot_shut_an_app_down() {
    let scratch = Scratch::new();
    let listener = listen("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let secret = Secret::generate().unwrap();
    let mut child = skywire_signal_client(&scratch, &addr, &secret);
    let app = KillOnDrop(u64::from(child.id()));

    let answers = fake_server(&listener);
    assert_eq!(answers, [], "the app answered a server without its secret");

    // A genuine exchange (this test gave the app its secret), recorded...
    let mut real = Peer::accept(&listener);
    let nonce = Nonce::random().unwrap();
    real.send(&auth::hello(&nonce));
    let reg = real.recv().unwrap();
    let accepted = auth::check_registration(&nonce, &reg, |_| Some(secret.clone())).unwrap();
    real.send(&accepted.echo);
    real.send(&Frame::request(op::PING, 9, Value::Null));
    assert_eq!(
        real.recv().map(|f| f.op),
        Some(op::PING | 0x80),
        "a genuine ping"
    );
    drop(real);
    // ... and replayed on the next connection, with a Shutdown after it.
    let mut replay = Peer::accept(&listener);
    replay.send(&auth::hello(&nonce));
    let fresh = replay.recv().unwrap();
    assert_ne!(
        fresh.body["Nonce"], reg.body["Nonce"],
        "the client's nonce is fresh"
    );
    replay.send(&accepted.echo);
    replay.send(&Frame::request(op::SHUTDOWN, 10, Value::Null));
    assert_eq!(replay.rest(), [], "the app answered a replayed exchange");

    assert!(
        alive(app.0),
        "the app obeyed a server that does not know its secret"
    );
    // It said so on its standard error, once for each new failure, and never the secret.
    send_signal(child.id(), "-TERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    let warnings = stderr.matches("; not obeying it").count();
    assert_eq!(warnings, 3, "{stderr}");
    assert!(stderr.contains("did not open with Hello"), "{stderr}");
    assert!(stderr.contains("did not prove it knows"), "{stderr}");
    assert!(!stderr.contains(&secret.to_hex()), "{stderr}");
}

#[test]
fn after_viscript_dies_a_fake_signal_server_cannot_shut_its_apps_down() {
    let scratch = Scratch::new();
    let addr = free_addr();
    let mut v = Viscript::start_at(&scratch, &addr, &[]);
    let started = v.json(&["s", "skywire-self"]);
    let app = KillOnDrop(started["pid"].as_u64().unwrap());
    wait_for("the nested viscript to register", || {
        (v.row(1)["signal"] == true).then_some(())
    });
    // SIGKILL leaves this app running: it is configured to outlive viscript (the others
    // get SIGKILL from the kernel, `a_killed_viscript_takes_its_apps_with_it_...`).
    send_signal(v.child.id(), "-KILL");
    v.child.wait().unwrap();
    let listener = wait_for("the signal address to be free", || listen(&addr));
    let answers = fake_server(&listener);
    assert_eq!(answers, [], "the app answered a server without its secret");
    assert!(
        alive(app.0),
        "the app obeyed a server that does not know its secret"
    );
    v.pids.clear();
}

/// The escaper's line as it must be shown: every control character escaped.
const ESCAPED: &str = r"plain \e]2;pwned\x07 title \e[2J clear \e[8mhidden\e[0m cr\r c1 \u{9b} end";

/// Whether `text` holds a character that drives a terminal.
fn drives_a_terminal(text: &str) -> bool {
    text.contains(['\u{1b}', '\r', '\u{7}', '\u{9b}'])
}

#[test]
fn escape_sequences_from_an_app_are_shown_escaped() {
    let scratch = Scratch::new();
    let mut v = Viscript::start(&scratch, &[]);
    v.json(&["s", "escaper"]);
    let raw = wait_for("the escaper to print", || {
        log_lines(&mut v, 1)
            .into_iter()
            .find(|l| l.starts_with("plain"))
    });
    // JSON keeps the bytes exactly.
    assert_eq!(
        raw,
        "plain \u{1b}]2;pwned\u{7} title \u{1b}[2J clear \u{1b}[8mhidden\u{1b}[0m cr\r c1 \u{9b} end"
    );
    // `exec attach` follows the output until the app ends.
    v.json(&["sd", "1"]);
    v.wait_state(1, "stopped");
    let (code, attach, _) = v.exec(&["attach", "1"]);
    assert_eq!(code, Some(0));
    assert!(attach.contains(ESCAPED), "{attach:?}");
    assert!(!drives_a_terminal(&attach), "{attach:?}");

    // What an app reports about itself over signal (`ru`).
    v.json(&["s", "evilclient"]);
    wait_for("the evil client to register", || {
        (v.row(2)["signal"] == true).then_some(())
    });
    let ru = v.json(&["ru", "2"]);
    assert_eq!(
        ru["app_report"]["\u{1b}]2;pwned\u{7}"],
        "\u{1b}[8mhidden\u{9b}"
    );
    let (code, text, _) = v.exec(&["ru", "2"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains(r#"\e]2;pwned\x07="\u001b[8mhidden\u{9b}""#),
        "{text:?}"
    );
    assert!(!drives_a_terminal(&text), "{text:?}");
    let (_, la, _) = v.exec(&["la"]);
    assert!(!drives_a_terminal(&la), "{la:?}");
    v.stop();
}

#[test]
fn escape_sequences_in_the_console_do_not_reach_the_terminal() {
    let scratch = Scratch::new();
    let Some(tmux) = Tmux::start(&viscript_command(&scratch, "")) else {
        eprintln!("skipped: tmux is not installed (scripts/test installs it)");
        return;
    };
    tmux.wait_screen("viscript>");
    let (_, title) = tmux.tmux(&["display-message", "-p", "#{pane_title}"]);
    tmux.type_line("s escaper");
    let screen = tmux.wait_screen("started escaper: id 1, pid");
    let _guard = KillOnDrop(started_pid(&screen));
    tmux.type_line("attach 1");
    let screen = tmux.wait_screen("c1 ");
    assert!(screen.contains(ESCAPED), "{screen}");
    tmux.send(&["Enter"]);
    tmux.wait_screen("[detached from 1]");
    let (_, after) = tmux.tmux(&["display-message", "-p", "#{pane_title}"]);
    assert_eq!(after, title, "the app retitled the terminal");
    tmux.type_line("quit");
    tmux.wait_exit();
}

#[test]
fn escape_sequences_in_the_gui_do_not_reach_the_terminal() {
    let scratch = Scratch::new();
    let Some(tmux) = Tmux::start(&viscript_command(&scratch, "--gui")) else {
        eprintln!("skipped: tmux is not installed (scripts/test installs it)");
        return;
    };
    tmux.wait_screen("viscript: apps");
    let (_, title) = tmux.tmux(&["display-message", "-p", "#{pane_title}"]);
    tmux.type_line("s escaper");
    let screen = tmux.wait_screen("started escaper: id 1, pid");
    let _guard = KillOnDrop(started_pid(&screen));
    // The output pane is narrower than the line: its start shows, escaped.
    tmux.wait_screen(r"plain \e]2;pwned\x07 title \e[2J");
    let (_, after) = tmux.tmux(&["display-message", "-p", "#{pane_title}"]);
    assert_eq!(after, title, "the app retitled the terminal");
    tmux.send(&["Escape"]);
    tmux.wait_exit();
}
