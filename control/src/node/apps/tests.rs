//! The app socket end to end: a real [`AppServer`] on a Unix socket, the client library
//! or raw sockets on one side, [`FakeEngine`] on the other.

use super::client::{JoinError, ListenRequest, reset_of};
use super::fake::FakeEngine;
use super::protocol::{AppRequest, ErrorKind, MAX_REQUEST, Reply, StreamOpened};
use super::*;
use crate::config::AppsConfig;
use crate::local::StopSignal;
use crate::local::socket::tests::TempDir;
use skywire_dataplane::stack::StackSetup;
use skywire_dataplane::stack::appframe::{self, Kind};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

mod python;

/// The key dials go to (the fake answers every key it has a route to).
fn peer() -> PublicKey {
    PublicKey::from_bytes([0xb0; 32])
}

const SECOND: Duration = Duration::from_secs(1);

/// A server with a fake engine, on a socket in a fresh folder.
struct Harness {
    _dir: TempDir,
    path: PathBuf,
    engine: FakeEngine,
    stop: StopSignal,
    thread: Option<thread::JoinHandle<()>>,
}

impl Harness {
    fn start() -> Self {
        Self::with(StackSetup::default(), vec![], |server, engine| {
            (server, engine.clone())
        })
    }

    /// A server with `stack` limits and `users`; `streams` picks the `Streams` it serves
    /// (the fake, or a wrapper around it).
    fn with<S: Streams>(
        stack: StackSetup,
        users: Vec<u32>,
        streams: impl FnOnce(AppServer, &FakeEngine) -> (AppServer, S),
    ) -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("apps").join("node.sock");
        let config = AppsConfig {
            socket: path.clone(),
            users,
            group: None,
            stack,
        };
        let engine = FakeEngine::new(PublicKey::from_bytes([0xa0; 32]), stack);
        engine.add_route(peer());
        let server = AppServer::bind(&config)
            .unwrap()
            .with_opening_timeout(Duration::from_millis(300));
        let (server, streams) = streams(server, &engine);
        let stop = StopSignal::new().unwrap();
        let thread = server.spawn(streams, engine.clone(), stop.clone()).unwrap();
        Self {
            _dir: dir,
            path,
            engine,
            stop,
            thread: Some(thread),
        }
    }

    fn client(&self) -> AppClient {
        AppClient::new(&self.path)
    }

    /// A raw connection with the first reply line read (and the reader for more).
    fn raw(&self, request: &[u8]) -> (UnixStream, BufReader<UnixStream>, String) {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream.set_read_timeout(Some(10 * SECOND)).unwrap();
        (&stream).write_all(request).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (stream, reader, line)
    }

    /// The kind of the error line `line`.
    fn error_kind(line: &str) -> ErrorKind {
        match serde_json::from_str::<Reply<serde_json::Value>>(line) {
            Ok(Reply::Error(body)) => body.kind,
            other => panic!("not an error line: {line:?} {other:?}"),
        }
    }

    /// The server still serves: a stream opens and echoes.
    fn assert_serving(&self) {
        let mut listener = self.client().listen(ListenRequest::on(9)).unwrap();
        let echo = thread::spawn(move || echo_one(&mut listener));
        let mut stream = self.client().dial(peer(), 9, SECOND).unwrap();
        stream.write_all(b"still here").unwrap();
        stream.shutdown_write().unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        assert_eq!(got, "still here");
        echo.join().unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accept one stream and send back what it sends, then FIN.
fn echo_one(listener: &mut AppListener) {
    let mut stream = listener.accept().unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    stream.write_all(&all).unwrap();
    stream.shutdown_write().unwrap();
}

#[test]
fn dial_listen_accept_and_echo() {
    let h = Harness::start();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    assert_eq!(listener.port(), 7);
    let dialer = {
        let client = h.client();
        thread::spawn(move || {
            let mut stream = client.dial(peer(), 7, SECOND).unwrap();
            assert_eq!((stream.peer(), stream.info().port), (peer(), 7));
            assert!(stream.info().local_port >= 49152);
            let message = vec![0x5a; 300_000];
            stream.write_all(&message).unwrap();
            stream.shutdown_write().unwrap();
            let mut back = Vec::new();
            stream.read_to_end(&mut back).unwrap();
            assert_eq!(back, message);
        })
    };
    let incoming = listener.next_incoming().unwrap();
    assert_eq!(incoming.peer, h.engine.key());
    let mut stream = h.client().accept(incoming.stream).unwrap();
    assert_eq!(stream.id(), incoming.stream);
    assert_eq!(stream.info().local_port, 7);
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    stream.write_all(&all).unwrap();
    stream.shutdown_write().unwrap();
    dialer.join().unwrap();
    // Both FINs: the streams are gone from the engine.
    let deadline = Instant::now() + 5 * SECOND;
    while h.engine.live_streams() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.engine.live_streams(), 0);
}

#[test]
fn half_close_works_both_ways() {
    let h = Harness::start();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let server = thread::spawn(move || {
        let mut stream = listener.accept().unwrap();
        // The dialer finished first; this side keeps talking after its FIN.
        let mut request = String::new();
        stream.read_to_string(&mut request).unwrap();
        assert_eq!(request, "question");
        for word in ["first ", "second ", "third"] {
            stream.write_all(word.as_bytes()).unwrap();
        }
        stream.shutdown_write().unwrap();
    });
    let mut stream = h.client().dial(peer(), 7, SECOND).unwrap();
    stream.write_all(b"question").unwrap();
    stream.shutdown_write().unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "first second third");
    server.join().unwrap();

    // The listener finishes first; the dialer reads it all, then sends and finishes.
    let mut listener = h.client().listen(ListenRequest::on(8)).unwrap();
    let server = thread::spawn(move || {
        let mut stream = listener.accept().unwrap();
        stream.write_all(b"greeting").unwrap();
        stream.shutdown_write().unwrap();
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        rest
    });
    let mut stream = h.client().dial(peer(), 8, SECOND).unwrap();
    let mut greeting = String::new();
    stream.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "greeting");
    stream.write_all(b"reply after FIN").unwrap();
    stream.shutdown_write().unwrap();
    assert_eq!(server.join().unwrap(), "reply after FIN");
}

#[test]
fn shutting_down_the_socket_at_a_frame_boundary_is_fin_and_pipelined_frames_count() {
    let h = Harness::start();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let server = thread::spawn(move || {
        let mut stream = listener.accept().unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        stream.write_all(got.to_uppercase().as_bytes()).unwrap();
        stream.shutdown_write().unwrap();
    });
    // The request line and the first frame in one write, before the answer: the server
    // reads no further than the newline, so the frame is the stream's.
    let mut request = AppRequest::Dial {
        peer: peer(),
        port: 7,
        timeout: SECOND,
    }
    .to_line();
    request.extend_from_slice(&appframe::header(Kind::Data, 5));
    request.extend_from_slice(b"hello");
    let (stream, mut reader, line) = h.raw(&request);
    let opened: Reply<StreamOpened> = serde_json::from_str(&line).unwrap();
    assert!(matches!(opened, Reply::Ok(_)), "{line}");
    // No FIN frame: shutting the socket's writing half down says the same.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let mut want = appframe::header(Kind::Data, 5).to_vec();
    want.extend_from_slice(b"HELLO");
    want.extend_from_slice(&appframe::header(Kind::Fin, 0));
    assert_eq!(rest, want);
    server.join().unwrap();
}

#[test]
fn resets_reach_the_apps_with_their_reason() {
    let h = Harness::start();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let mut dialed = h.client().dial(peer(), 7, SECOND).unwrap();
    let mut accepted = listener.accept().unwrap();
    dialed.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    accepted.read_exact(&mut one).unwrap();
    // The engine fails the stream (its route went away): both apps hear why.
    assert!(h.engine.reset(dialed.id(), StreamError::RouteGone));
    for stream in [&mut dialed, &mut accepted] {
        let err = stream.read(&mut one).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            reset_of(&err).unwrap().reason.to_string(),
            "route_gone: the route to the peer is gone"
        );
    }

    // An app's own RESET: the peer sees a reset by the peer.
    let mut dialed = h.client().dial(peer(), 7, SECOND).unwrap();
    let mut accepted = listener.accept().unwrap();
    dialed.reset("changed my mind").unwrap();
    let err = accepted.read(&mut one).unwrap_err();
    let reason = &reset_of(&err).unwrap().reason;
    assert_eq!(reason.kind, ErrorKind::Reset);
    assert_eq!(reason.to_string(), "reset: the peer reset the stream");

    // An app that closes its connection before both FINs aborts the stream.
    let dialed = h.client().dial(peer(), 7, SECOND).unwrap();
    let mut accepted = listener.accept().unwrap();
    drop(dialed);
    let mut rest = Vec::new();
    // Its close reads as a FIN; writing to it then fails, and the stream is reset.
    assert_eq!(accepted.read_to_end(&mut rest).unwrap(), 0);
    let mut failed = false;
    for _ in 0..100 {
        if accepted.write_all(&[0; 4096]).is_err() {
            failed = true;
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        failed,
        "writing to a stream whose peer app went away kept working"
    );
}

#[test]
fn a_stream_the_engine_will_not_take_is_refused_with_the_reason() {
    /// The fake, but every attach fails as if the route went just then.
    struct NoAttach(FakeEngine);
    impl Streams for NoAttach {
        fn dial(
            &self,
            peer: PublicKey,
            port: u16,
            owner: Owner,
            timeout: Duration,
        ) -> Result<StreamInfo, StreamError> {
            self.0.dial(peer, port, owner, timeout)
        }
        fn listen(
            &self,
            options: ListenOptions,
        ) -> Result<(ListenerId, crossbeam_channel::Receiver<StreamInfo>), StreamError> {
            self.0.listen(options)
        }
        fn unlisten(&self, listener: ListenerId) {
            self.0.unlisten(listener);
        }
        fn attach(
            &self,
            _: StreamId,
            _: Owner,
            _: UnixStream,
            _: Vec<u8>,
        ) -> Result<(), StreamError> {
            Err(StreamError::RouteGone)
        }
        fn hand_over(
            &self,
            stream: StreamId,
            owner: Owner,
            socket: std::os::fd::OwnedFd,
            watch: Option<skywire_dataplane::engine::WatchId>,
        ) -> Result<(), StreamError> {
            self.0.hand_over(stream, owner, socket, watch)
        }
        fn watch(
            &self,
            owner: Owner,
            socket: UnixStream,
        ) -> Result<skywire_dataplane::engine::WatchId, StreamError> {
            self.0.watch(owner, socket)
        }
        fn abort(&self, stream: StreamId) {
            self.0.abort(stream);
        }
    }
    let h = Harness::with(StackSetup::default(), vec![], |server, engine| {
        (server, NoAttach(engine.clone()))
    });
    let _listener = h.client().listen(ListenRequest::on(7)).unwrap();
    // The engine writes the `ok` itself once it holds the connection: refused before
    // that, the dial gets an error line instead.
    let err = h.client().dial(peer(), 7, SECOND).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::RouteGone), "{err}");
    assert!(
        err.to_string().contains("the route to the peer is gone"),
        "{err}"
    );
}

#[test]
fn dial_failures_are_typed_and_routes_are_asked_for() {
    let h = Harness::start();
    let client = h.client();
    let kind = |result: Result<AppStream, AppError>| result.unwrap_err().kind().cloned();
    // Nothing listens.
    assert_eq!(
        kind(client.dial(peer(), 7, SECOND)),
        Some(ErrorKind::Refused)
    );
    // No route, none to be had: asked once.
    let stranger = PublicKey::from_bytes([0xcc; 32]);
    assert_eq!(
        kind(client.dial(stranger, 7, SECOND)),
        Some(ErrorKind::NoRoute)
    );
    assert_eq!(h.engine.ensure_route_calls(), vec![stranger]);
    // A route on demand: asked, then the second dial gets through.
    let far = PublicKey::from_bytes([0xdd; 32]);
    h.engine.route_on_demand(far);
    let _listener = client.listen(ListenRequest::on(7)).unwrap();
    let stream = client.dial(far, 7, SECOND).unwrap();
    assert_eq!(stream.peer(), far);
    assert_eq!(h.engine.ensure_route_calls(), vec![stranger, far]);
    // No answer: the dial's own timeout.
    let silent = PublicKey::from_bytes([0xee; 32]);
    h.engine.black_hole(silent);
    let started = Instant::now();
    let err = client
        .dial(silent, 7, Duration::from_millis(200))
        .unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(!err.is_unavailable() && !err.is_permission());
}

#[test]
fn listeners_end_with_their_connection() {
    let h = Harness::start();
    let listener = h.client().listen(ListenRequest::on(7)).unwrap();
    assert_eq!(h.engine.listeners(), 1);
    // The port is taken while it listens.
    let err = h.client().listen(ListenRequest::on(7)).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::PortInUse));
    // A stream arrives but nobody accepts it; closing the listener resets it.
    let mut waiting = h.client().dial(peer(), 7, SECOND).unwrap();
    drop(listener);
    let deadline = Instant::now() + 5 * SECOND;
    while h.engine.listeners() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.engine.listeners(), 0);
    let err = waiting.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(reset_of(&err).unwrap().reason.kind, ErrorKind::Reset);
    assert_eq!(
        h.client().dial(peer(), 7, SECOND).unwrap_err().kind(),
        Some(&ErrorKind::Refused)
    );

    // A listening connection that sends anything is told so and closed.
    let (stream, mut reader, line) = h.raw(b"{\"op\":\"listen\",\"port\":7}\n");
    assert!(line.starts_with("{\"ok\":{\"listener\":"), "{line}");
    (&stream)
        .write_all(b"{\"op\":\"accept\",\"stream\":1}\n")
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(Harness::error_kind(&line), ErrorKind::BadRequest);
    // Closed (a reset, since the server left the rest of our line unread).
    assert!(matches!(reader.read_line(&mut line), Ok(0) | Err(_)));
    h.assert_serving();
}

#[test]
fn accept_takes_only_waiting_streams() {
    let h = Harness::start();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let err = h.client().accept(StreamId(12345)).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::UnknownStream));
    let _dialed = h.client().dial(peer(), 7, SECOND).unwrap();
    let incoming = listener.next_incoming().unwrap();
    let _stream = h.client().accept(incoming.stream).unwrap();
    // Taken once only.
    let err = h.client().accept(incoming.stream).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::UnknownStream));
}

#[test]
fn engine_limits_and_stops_reach_the_app() {
    let stack = StackSetup {
        max_listeners: 1,
        max_streams: 2,
        ..StackSetup::default()
    };
    let h = Harness::with(stack, vec![], |server, engine| (server, engine.clone()));
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let err = h.client().listen(ListenRequest::on(8)).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::Limit));
    assert!(err.to_string().contains("too many listeners"), "{err}");
    let _one = h.client().dial(peer(), 7, SECOND).unwrap();
    let err = h.client().dial(peer(), 7, SECOND).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::Limit));
    // The engine stops: the listener hears it, and so does the next request.
    let _ = listener.next_incoming().unwrap();
    h.engine.shutdown();
    let err = listener.next_incoming().unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::Shutdown));
    assert!(err.is_unavailable());
    let err = h.client().dial(peer(), 7, SECOND).unwrap_err();
    assert_eq!(err.kind(), Some(&ErrorKind::Shutdown));
}

#[test]
fn bad_openings_close_only_their_connection() {
    let h = Harness::start();
    let long = vec![b'{'; MAX_REQUEST + 1];
    let cases: &[(&[u8], &str)] = &[
        (b"not json\n", "a request is a JSON object"),
        (b"{\"op\":\"teleport\"}\n", "unknown op"),
        (b"{\"op\":\"dial\",\"port\":7}\n", "dial needs `peer`"),
        (b"{\"op\":\"listen\",\"port\":0}\n", "`port` is a number"),
        (b"\xff\xfe\n", "not UTF-8"),
        (&long, "longer than 4096 bytes"),
    ];
    for (request, words) in cases {
        let (_stream, mut reader, line) = h.raw(request);
        assert_eq!(Harness::error_kind(&line), ErrorKind::BadRequest, "{line}");
        assert!(line.contains(words), "{line}");
        let mut more = String::new();
        // Closed after the error (a reset when the server left bytes unread).
        assert!(
            matches!(reader.read_line(&mut more), Ok(0) | Err(_)),
            "{more}"
        );
    }
    // Cut off before the newline.
    let stream = UnixStream::connect(&h.path).unwrap();
    (&stream).write_all(b"{\"op\":").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert!(
        line.contains("ended before the request line's newline"),
        "{line}"
    );
    // Too slow (the harness waits 300 ms).
    let stream = UnixStream::connect(&h.path).unwrap();
    (&stream).write_all(b"{\"op\":").unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    assert!(line.contains("no whole request line"), "{line}");
    // Connected and gone without a word: nothing to answer.
    drop(UnixStream::connect(&h.path).unwrap());
    h.assert_serving();
}

#[test]
fn the_socket_is_shared_as_configured() {
    use std::os::unix::fs::MetadataExt;
    let h = Harness::start();
    let meta = fs::metadata(&h.path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(
        fs::metadata(h.path.parent().unwrap()).unwrap().mode() & 0o777,
        0o750
    );
    let listed = Harness::with(StackSetup::default(), vec![4242], |s, e| (s, e.clone()));
    assert_eq!(fs::metadata(&listed.path).unwrap().mode() & 0o777, 0o666);
    drop(h);
}

/// Run `python3 -c PROGRAM ARGS...` as uid and gid 65534 (nobody); `None` when that is not
/// possible here (not root, no /usr/bin/python3).
fn as_nobody(program: &str, args: &[&str]) -> Option<String> {
    let python = Path::new("/usr/bin/python3");
    if rustix::process::geteuid().as_raw() != 0 || !python.exists() {
        println!("skipped: needs root and /usr/bin/python3 to connect as another user");
        return None;
    }
    let out = Command::new(python)
        .arg("-c")
        .arg(program)
        .args(args)
        .uid(65534)
        .gid(65534)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Send one line, print the first line of the answer.
const ONE_LINE: &str = "import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b'\\n')
sys.stdout.write(s.makefile('rb').readline().decode())";

#[test]
fn other_users_are_refused_unless_let_in() {
    // uid 4242 is let in, so the socket is open to all and the node decides.
    let h = Harness::with(StackSetup::default(), vec![4242], |s, e| (s, e.clone()));
    fs::set_permissions(&h._dir.0, fs::Permissions::from_mode(0o711)).unwrap();
    let path = h.path.to_str().unwrap();
    let Some(line) = as_nobody(ONE_LINE, &[path, r#"{"op":"listen","port":7}"#]) else {
        return;
    };
    assert_eq!(Harness::error_kind(&line), ErrorKind::Permission, "{line}");
    assert!(line.contains("uid 65534 may not use"), "{line}");
    assert!(line.contains("node.apps.users"), "{line}");
    assert_eq!(h.engine.listeners(), 0);

    // Let in, nobody may use the socket but not take root's streams.
    let h = Harness::with(StackSetup::default(), vec![65534], |s, e| (s, e.clone()));
    fs::set_permissions(&h._dir.0, fs::Permissions::from_mode(0o711)).unwrap();
    let path = h.path.to_str().unwrap();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let _dialed = h.client().dial(peer(), 7, SECOND).unwrap();
    let incoming = listener.next_incoming().unwrap();
    let accept = format!(r#"{{"op":"accept","stream":{}}}"#, incoming.stream);
    let line = as_nobody(ONE_LINE, &[path, &accept]).unwrap();
    assert_eq!(Harness::error_kind(&line), ErrorKind::Permission, "{line}");
    assert!(line.contains("listener of uid 0"), "{line}");
    // Still there for its owner.
    h.client().accept(incoming.stream).unwrap();
    let listen = r#"{"op":"listen","port":8}"#;
    let line = as_nobody(ONE_LINE, &[path, listen]).unwrap();
    assert!(line.starts_with(r#"{"ok":{"listener":"#), "{line}");
}

#[test]
fn join_sends_the_input_and_writes_what_arrives() {
    let h = Harness::start();
    let mut listener = h.client().listen(ListenRequest::on(7)).unwrap();
    let server = thread::spawn(move || echo_one(&mut listener));
    let stream = h.client().dial(peer(), 7, SECOND).unwrap();
    let mut output = Vec::new();
    client::join(stream, &b"through and back"[..], &mut output).unwrap();
    assert_eq!(output, b"through and back");
    server.join().unwrap();

    // A reset ends it at once, with the reason.
    let mut listener = h.client().listen(ListenRequest::on(8)).unwrap();
    let stream = h.client().dial(peer(), 8, SECOND).unwrap();
    let id = stream.id();
    let engine = h.engine.clone();
    let resetter = thread::spawn(move || {
        let _accepted = listener.accept().unwrap();
        engine.reset(id, StreamError::IdleTimeout);
        thread::sleep(Duration::from_millis(100));
    });
    // An input that never ends: join must not wait for it.
    let (never, _keep) = UnixStream::pair().unwrap();
    let mut output = Vec::new();
    match client::join(stream, never, &mut output) {
        Err(JoinError::Reset(reset)) => assert_eq!(
            reset.to_string(),
            "stream reset: idle_timeout: the stream was idle too long"
        ),
        other => panic!("{other:?}"),
    }
    resetter.join().unwrap();
}
