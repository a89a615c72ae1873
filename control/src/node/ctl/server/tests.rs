use super::*;
use crate::local::read_line as read_response_line;
pub(crate) use crate::local::socket::tests::TempDir;
use crate::node::ctl::protocol::Outcome;
use crate::node::ctl::protocol::tests::sample_status;
use std::fs;
use std::io::BufRead;
use std::io::ErrorKind as IoErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

/// A fixed answer, or a stopped engine.
pub(crate) struct FakeSource(pub(crate) Option<NodeStatus>);

impl NodeApi for FakeSource {
    fn status(&self, _timeout: Duration) -> Result<NodeStatus, EngineGone> {
        self.0.clone().ok_or(EngineGone::Stopped)
    }

    /// Refuses the default route (as if another peer owned it), grants anything else.
    fn grant(
        &self,
        _peer: PublicKey,
        prefixes: Vec<Prefix>,
        _timeout: Duration,
    ) -> Result<Result<(), GrantError>, EngineGone> {
        self.0.as_ref().ok_or(EngineGone::Stopped)?;
        match prefixes.iter().find(|p| p.len() == 0) {
            Some(p) => Ok(Err(GrantError::Claimed(*p))),
            None => Ok(Ok(())),
        }
    }
}

/// A server with the sample status on `path`, and the signal that stops it.
pub(crate) struct Running {
    stop: StopSignal,
    thread: Option<thread::JoinHandle<()>>,
}

impl Running {
    pub(crate) fn start(path: &Path, source: FakeSource) -> Self {
        let stop = StopSignal::new().unwrap();
        let thread = ControlServer::bind(path)
            .unwrap()
            .spawn(source, stop.clone())
            .unwrap();
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn connect(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn next_line(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match read_response_line(reader, 1 << 20, &mut line).unwrap() {
        LineRead::Line => Some(line),
        LineRead::Eof => None,
        other => panic!("unexpected {other:?}"),
    }
}

/// The server has closed the connection: end of stream, or a reset when it left
/// bytes of ours unread.
fn assert_closed(reader: &mut impl BufRead) {
    let mut line = Vec::new();
    match read_response_line(reader, 1 << 20, &mut line) {
        Ok(LineRead::Eof) => {}
        Err(e) if e.kind() == IoErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?} {line:?}"),
    }
}

fn response(line: &[u8]) -> Response<StatusReply> {
    serde_json::from_slice(line).unwrap()
}

fn error_kind(line: &[u8]) -> ErrorKind {
    match response(line).outcome {
        Outcome::Error(body) => body.kind,
        Outcome::Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn respond_answers_each_kind_of_line() {
    let live = FakeSource(Some(sample_status()));
    let gone = FakeSource(None);

    let answer = respond(br#"{"id":5,"op":"status"}"#, &live);
    assert!(!answer.close);
    let parsed = response(&answer.line);
    assert_eq!(parsed.id, Some(5));
    assert_eq!(
        parsed.outcome,
        Outcome::Ok(StatusReply::from(&sample_status()))
    );

    let answer = respond(br#"{"id":6,"op":"status"}"#, &gone);
    assert!(!answer.close);
    assert_eq!(response(&answer.line).id, Some(6));
    assert_eq!(error_kind(&answer.line), ErrorKind::Unavailable);

    let answer = respond(br#"{"id":7,"op":"teleport"}"#, &live);
    assert!(!answer.close);
    assert_eq!(response(&answer.line).id, Some(7));
    assert_eq!(error_kind(&answer.line), ErrorKind::BadRequest);

    let answer = respond(b"GET / HTTP/1.1", &live);
    assert!(answer.close);
    assert_eq!(response(&answer.line).id, None);
    assert_eq!(error_kind(&answer.line), ErrorKind::BadRequest);
}

/// Records what reaches the manager and answers from a script.
struct FakeManager {
    seen: std::sync::Mutex<Vec<UserRequest>>,
    answer: Result<UserReply, ProtoError>,
}

impl NodeApi for FakeManager {
    fn status(&self, _timeout: Duration) -> Result<NodeStatus, EngineGone> {
        Err(EngineGone::Stopped)
    }
    fn manager(&self, request: UserRequest) -> Result<UserReply, ProtoError> {
        self.seen.lock().unwrap().push(request);
        self.answer.clone()
    }
}

#[test]
fn manager_ops_are_checked_then_passed_on_and_their_errors_mapped() {
    use crate::manager::proto::{MeshRouteId, RouteInfo, RouteState};
    use crate::manager::topology::RouteWeight;
    let key = "ab".repeat(32);
    let pk: PublicKey = key.parse().unwrap();
    let info = RouteInfo {
        id: MeshRouteId(1),
        src: Key(pk),
        dst: Key(pk),
        path: Vec::new(),
        state: RouteState::Active,
        min_hops: 3,
        max_hops: 16,
        avoid: Vec::new(),
        weight: RouteWeight::Latency,
        repairs: 0,
        reason: None,
        retry_in_ms: None,
    };
    let fake = FakeManager {
        seen: std::sync::Mutex::new(Vec::new()),
        answer: Ok(UserReply::Route(info)),
    };
    let line = format!(
        r#"{{"id":1,"op":"route_add","dst":"{key}","min_hops":3,"avoid":["{key}"],"weight":"latency"}}"#
    );
    let answer = respond(line.as_bytes(), &fake);
    // The route's id in the form every command shows: 16 hex digits.
    assert!(
        String::from_utf8_lossy(&answer.line).contains(r#""ok":{"id":"0000000000000001","#),
        "{}",
        String::from_utf8_lossy(&answer.line)
    );
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![UserRequest::RouteAdd(RouteRequest {
            id: None,
            nonce: None,
            dst: Key(pk),
            min_hops: Some(3),
            max_hops: None,
            avoid: vec![Key(pk)],
            weight: Some(RouteWeight::Latency),
        })]
    );
    // Bad keys, weights and ids never reach the manager.
    for bad in [
        r#"{"id":2,"op":"route_add","dst":"nope"}"#.to_owned(),
        format!(r#"{{"id":2,"op":"route_add","dst":"{key}","weight":"cheapest"}}"#),
        r#"{"id":2,"op":"route_rm","route":"xyz"}"#.to_owned(),
        r#"{"id":2,"op":"link_add","peer":"12"}"#.to_owned(),
    ] {
        let answer = respond(bad.as_bytes(), &fake);
        assert_eq!(error_kind(&answer.line), ErrorKind::BadRequest, "{bad}");
    }
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
    // Every form of the id a client may send: what `route ls` shows, shorter, `0x`, either
    // case, and the number older nodes' `route ls --json` printed.
    for form in [r#""00000000000000ff""#, r#""00ff""#, r#""0xFF""#, "255"] {
        let line = format!(r#"{{"id":3,"op":"route_rm","route":{form}}}"#);
        let answer = respond(line.as_bytes(), &fake);
        assert!(!answer.close);
        assert_eq!(
            fake.seen.lock().unwrap().last(),
            Some(&UserRequest::RouteRemove(MeshRouteId(255))),
            "{form}"
        );
    }
    // The manager's refusals are `failed`, its absence `unavailable`.
    let refused = FakeManager {
        seen: std::sync::Mutex::new(Vec::new()),
        answer: Err(ProtoError::new(ManagerErrorKind::NoPath, "none")),
    };
    let answer = respond(br#"{"id":4,"op":"nodes"}"#, &refused);
    assert_eq!(error_kind(&answer.line), ErrorKind::Failed);
    assert!(String::from_utf8_lossy(&answer.line).contains("no_path: none"));
    let answer = respond(br#"{"id":5,"op":"nodes"}"#, &FakeSource(None));
    assert_eq!(error_kind(&answer.line), ErrorKind::Unavailable);
    // Asking too often is `failed` too, with the manager's word on when to ask again.
    let limited = FakeManager {
        seen: std::sync::Mutex::new(Vec::new()),
        answer: Err(ProtoError::new(
            ManagerErrorKind::RateLimited,
            "this node asks for NODES and ROUTE_LIST faster than the manager serves them; \
             ask again in 40 ms",
        )),
    };
    let answer = respond(br#"{"id":6,"op":"nodes"}"#, &limited);
    assert_eq!(error_kind(&answer.line), ErrorKind::Failed);
    let line = String::from_utf8_lossy(&answer.line);
    assert!(line.contains("rate_limited: this node asks"), "{line}");
    assert!(line.contains("ask again in 40 ms"), "{line}");
}

#[test]
fn bind_creates_a_private_folder_and_socket() {
    let tmp = TempDir::new();
    let path = tmp.0.join("run").join("skywire").join("node.sock");
    let server = ControlServer::bind(&path).unwrap();
    assert_eq!(server.path(), path);
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    drop(server);
    assert!(!path.exists(), "dropping the server removes the socket");
}

#[test]
fn bind_refuses_a_folder_others_can_write() {
    let tmp = TempDir::new();
    for mode in [0o770, 0o702, 0o1777] {
        fs::set_permissions(&tmp.0, fs::Permissions::from_mode(mode)).unwrap();
        let err = ControlServer::bind(&tmp.0.join("node.sock")).unwrap_err();
        assert_eq!(err.kind(), IoErrorKind::PermissionDenied, "{mode:o}");
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }
    fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o755)).unwrap();
    ControlServer::bind(&tmp.0.join("node.sock")).unwrap();
}

#[test]
fn a_stale_socket_is_replaced() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    // A socket file nobody listens on any more, as a crashed node leaves behind.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let _running = Running::start(&path, FakeSource(Some(sample_status())));
    let (mut stream, mut reader) = connect(&path);
    stream.write_all(b"{\"id\":1,\"op\":\"status\"}\n").unwrap();
    assert_eq!(response(&next_line(&mut reader).unwrap()).id, Some(1));
}

#[test]
fn a_live_socket_is_not_replaced() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    let _running = Running::start(&path, FakeSource(Some(sample_status())));
    let err = ControlServer::bind(&path).unwrap_err();
    assert_eq!(err.kind(), IoErrorKind::AddrInUse);
    assert!(err.to_string().contains("another process"), "{err}");
    // The first server still answers.
    let (mut stream, mut reader) = connect(&path);
    stream.write_all(b"{\"id\":2,\"op\":\"status\"}\n").unwrap();
    assert_eq!(response(&next_line(&mut reader).unwrap()).id, Some(2));
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    fs::write(&path, "keep me").unwrap();
    let err = ControlServer::bind(&path).unwrap_err();
    assert_eq!(err.kind(), IoErrorKind::AlreadyExists);
    assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn garbage_closes_only_its_own_connection() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    let _running = Running::start(&path, FakeSource(Some(sample_status())));

    let (mut good, mut good_reader) = connect(&path);
    let (mut bad, mut bad_reader) = connect(&path);

    good.write_all(b"{\"id\":1,\"op\":\"status\"}\n").unwrap();
    assert_eq!(response(&next_line(&mut good_reader).unwrap()).id, Some(1));

    bad.write_all(b"\x00\x01 not json at all\n").unwrap();
    let line = next_line(&mut bad_reader).unwrap();
    assert_eq!(error_kind(&line), ErrorKind::BadRequest);
    assert_closed(&mut bad_reader);

    // Invalid UTF-8 too.
    let (mut bad, mut bad_reader) = connect(&path);
    bad.write_all(b"{\"id\":1,\"op\":\"\xff\"}\n").unwrap();
    assert_eq!(
        error_kind(&next_line(&mut bad_reader).unwrap()),
        ErrorKind::BadRequest
    );
    assert_closed(&mut bad_reader);

    // The other connection is still open and served.
    good.write_all(b"{\"id\":2,\"op\":\"teleport\"}\n").unwrap();
    assert_eq!(
        error_kind(&next_line(&mut good_reader).unwrap()),
        ErrorKind::BadRequest
    );
    good.write_all(b"\n{\"id\":3,\"op\":\"status\"}\n").unwrap();
    let answer = response(&next_line(&mut good_reader).unwrap());
    assert_eq!(answer.id, Some(3));
    assert_eq!(
        answer.outcome,
        Outcome::Ok(StatusReply::from(&sample_status()))
    );
}

#[test]
fn an_oversized_line_is_refused_without_reading_it() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    let _running = Running::start(&path, FakeSource(Some(sample_status())));
    let (mut stream, mut reader) = connect(&path);
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();

    // 64 MiB without a newline: far more than the socket buffers hold (even with
    // net.core.wmem_default raised to a few MiB, as benchmark tuning does), so the write
    // only completes if the server reads it all. It stops after 64 KiB and closes.
    let big = vec![b'x'; 64 << 20];
    let written = stream.write_all(&big);
    let err = written.expect_err("the server stopped reading");
    assert!(
        matches!(
            err.kind(),
            IoErrorKind::BrokenPipe | IoErrorKind::ConnectionReset
        ),
        "{err}"
    );
    let line = next_line(&mut reader).unwrap();
    assert_eq!(error_kind(&line), ErrorKind::BadRequest);
    assert!(String::from_utf8_lossy(&line).contains("65536"));
    assert_closed(&mut reader);

    // And the server goes on serving.
    let (mut stream, mut reader) = connect(&path);
    stream.write_all(b"{\"id\":4,\"op\":\"status\"}\n").unwrap();
    assert_eq!(response(&next_line(&mut reader).unwrap()).id, Some(4));
}

#[test]
fn idle_connections_cannot_lock_a_newcomer_out() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    let _running = Running::start(&path, FakeSource(Some(sample_status())));
    // Each connection proves it holds a place by getting an answer, then idles.
    let mut held = Vec::new();
    for id in 0..MAX_CONNECTIONS {
        let (mut stream, mut reader) = connect(&path);
        stream
            .write_all(format!("{{\"id\":{id},\"op\":\"status\"}}\n").as_bytes())
            .unwrap();
        assert!(next_line(&mut reader).is_some());
        held.push((stream, reader));
    }
    // Full of idle connections: a newcomer is answered, in the place of the one idle
    // longest, which is closed; the rest stay open. (Newcomers stay connected, so the set
    // stays full.)
    let mut newcomers = Vec::new();
    for round in 0..3 {
        let (mut stream, mut reader) = connect(&path);
        let id = 100 + round;
        stream
            .write_all(format!("{{\"id\":{id},\"op\":\"status\"}}\n").as_bytes())
            .unwrap();
        let answer = response(&next_line(&mut reader).unwrap());
        assert_eq!(answer.id, Some(id));
        let (_, oldest) = &mut held[round as usize];
        assert_closed(oldest);
        newcomers.push((stream, reader));
    }
    let (stream, reader) = &mut held[MAX_CONNECTIONS - 1];
    stream.write_all(b"{\"id\":7,\"op\":\"status\"}\n").unwrap();
    assert_eq!(response(&next_line(reader).unwrap()).id, Some(7));
}

#[test]
fn stop_ends_serving_and_removes_the_socket() {
    let tmp = TempDir::new();
    let path = tmp.0.join("node.sock");
    let running = Running::start(&path, FakeSource(None));
    assert!(path.exists());
    // The accept thread is blocked in poll(2) by now; the stop wakes it at once.
    thread::sleep(Duration::from_millis(20));
    let stopping = std::time::Instant::now();
    drop(running);
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    assert!(!path.exists());
    let err = UnixStream::connect(&path).unwrap_err();
    assert_eq!(err.kind(), IoErrorKind::NotFound);
}

#[test]
fn grant_answers_done_failed_or_unavailable() {
    let peer = "ab".repeat(32);
    let ask = |source: &FakeSource, prefixes: &str| {
        let line = format!(r#"{{"id":7,"op":"grant","peer":"{peer}","prefixes":{prefixes}}}"#);
        respond(line.as_bytes(), source)
    };
    let up = FakeSource(Some(sample_status()));
    let done = ask(&up, r#"["198.19.128.2/32","fd00:5b::2/128"]"#);
    assert!(!done.close);
    let done: serde_json::Value = serde_json::from_slice(&done.line).unwrap();
    assert_eq!(done, serde_json::json!({"id": 7, "ok": null}));
    let refused = ask(&up, r#"["0.0.0.0/0"]"#);
    assert_eq!(error_kind(&refused.line), ErrorKind::Failed);
    assert!(String::from_utf8_lossy(&refused.line).contains("0.0.0.0/0 belongs to another peer"));
    let bad = ask(&up, r#"["10.0.0.0/33"]"#);
    assert_eq!(error_kind(&bad.line), ErrorKind::BadRequest);
    let gone = ask(&FakeSource(None), "[]");
    assert_eq!(error_kind(&gone.line), ErrorKind::Unavailable);
}

#[test]
fn usage_checks_its_days_and_says_when_there_is_no_ledger() {
    let up = FakeSource(Some(sample_status()));
    for (line, kind) in [
        // Dates that are not dates, and a period that ends before it starts.
        (
            r#"{"id":1,"op":"usage","since":"2026-13-01"}"#,
            ErrorKind::BadRequest,
        ),
        (
            r#"{"id":2,"op":"usage","since":20261201}"#,
            ErrorKind::BadRequest,
        ),
        (
            r#"{"id":3,"op":"usage","since":"2026-12-02","until":"2026-12-01"}"#,
            ErrorKind::BadRequest,
        ),
        // A node without a state folder keeps no ledger.
        (r#"{"id":4,"op":"usage"}"#, ErrorKind::Unavailable),
        (
            r#"{"id":5,"op":"usage","since":"2026-12-01"}"#,
            ErrorKind::Unavailable,
        ),
    ] {
        let answer = respond(line.as_bytes(), &up);
        assert!(!answer.close, "{line}");
        assert_eq!(error_kind(&answer.line), kind, "{line}");
    }
}
