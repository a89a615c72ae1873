//! The node's side of the control socket: bind it safely, check who connects, answer.
//!
//! - **Binding.** [`crate::local::socket`]: 0600 in a folder only its owner can write, a
//!   stale socket replaced, a live one never taken over.
//! - **Who may ask.** Each connection's peer uid comes from `SO_PEERCRED` (the kernel's
//!   word, not the client's). Root and the socket file's owner are served; anyone else gets
//!   a `permission` error and the connection is closed.
//! - **Threads.** [`ControlServer::serve`] accepts on a non-blocking listener and sleeps
//!   50 ms when there is nothing to accept. std has no accept with a timeout, and this
//!   keeps the loop std-only: `stop` is seen within 50 ms, an idle node wakes 20 times a
//!   second (negligible), and a `skywire status` waits at most 50 ms more. Each connection
//!   gets a short-lived thread with 5 s read and write timeouts, so a slow or idle client
//!   holds only its own thread; at most [`MAX_CONNECTIONS`] are served at once, and a
//!   connection beyond that gets `unavailable` and is closed.
//! - **Bad input.** A line longer than [`MAX_REQUEST`], not UTF-8 or not JSON gets a
//!   `bad_request` answer and closes that connection only; lines are read with a bounded
//!   reader, so a long line is never buffered whole.
//! - **Cleanup.** When [`ControlServer::serve`] returns (after `stop`), or the server is
//!   dropped, the socket file is removed, if it is still the one this server bound.
//!
//! The answering itself is [`respond`]: a pure function from a line and a
//! [`NodeApi`] to a response, tested without sockets.

use core::time::Duration;
use std::io::{self, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{EngineGone, EngineHandle, NodeStatus};

use crate::local::{
    BoundSocket, ConnectionSlot, LineRead, bind_private, is_allowed, peer_uid, read_line,
};
use crate::manager::proto::{ErrorKind as ManagerErrorKind, Key, ProtoError, RouteRequest};
use crate::node::agent::{UserReply, UserRequest};
use crate::node::uplink::{PingError, PingReply};

use super::protocol::{
    ErrorKind, MAX_REQUEST, Op, Outcome, ParsedRequest, PongReply, Reply, Response, StatusReply,
    parse_request,
};

/// At most this many connections are served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A connection idle this long, or a peer that does not read its answer for this long, is
/// closed.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a `status` request waits for the engine.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the accept loop sleeps when nobody is connecting.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// What the control socket serves: the running node ([`crate::node::NodeHandle`]), or a
/// fake in tests. Only `status` is required; a node without a manager answers the manager
/// ops `unavailable`, and one that cannot ping says so.
pub trait NodeApi {
    /// A snapshot of the node, waiting at most `timeout`.
    fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone>;

    /// A request to the node manager, through the node.
    fn manager(&self, request: UserRequest) -> Result<UserReply, ProtoError> {
        let _ = request;
        Err(ProtoError::new(
            ManagerErrorKind::Unavailable,
            "this node has no manager (node.manager in its config)",
        ))
    }

    /// One round trip over the route to `peer`.
    fn ping(&self, peer: PublicKey) -> Result<PingReply, PingError> {
        let _ = peer;
        Err(PingError::Unsupported)
    }
}

impl NodeApi for EngineHandle {
    fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone> {
        EngineHandle::status(self, timeout)
    }
}

/// The answer to one well-formed request, or its error kind and message.
fn answer(op: Op, node: &dyn NodeApi) -> Result<Reply, (ErrorKind, String)> {
    let manager = |request| {
        node.manager(request).map_err(|e| match e.kind {
            ManagerErrorKind::Unavailable | ManagerErrorKind::Timeout => {
                (ErrorKind::Unavailable, e.message)
            }
            _ => (ErrorKind::Failed, e.to_string()),
        })
    };
    let unexpected = |reply: UserReply| {
        (
            ErrorKind::Failed,
            format!("the node answered with the wrong kind of reply: {reply:?}"),
        )
    };
    match op {
        Op::Status => node
            .status(ENGINE_TIMEOUT)
            .map(|status| Reply::Status(Box::new(StatusReply::from(&status))))
            .map_err(|gone| (ErrorKind::Unavailable, gone.to_string())),
        Op::RouteAdd {
            dst,
            min_hops,
            max_hops,
            avoid,
            weight,
        } => match manager(UserRequest::RouteAdd(RouteRequest {
            id: None,
            dst: Key(dst),
            min_hops,
            max_hops,
            avoid: avoid.into_iter().map(Key).collect(),
            weight,
        }))? {
            UserReply::Route(info) => Ok(Reply::Route(info)),
            other => Err(unexpected(other)),
        },
        Op::RouteLs => match manager(UserRequest::RouteList)? {
            UserReply::Routes(list) => Ok(Reply::Routes(list)),
            other => Err(unexpected(other)),
        },
        Op::RouteRm { route } => manager(UserRequest::RouteRemove(route)).map(|_| Reply::Done),
        Op::Nodes => match manager(UserRequest::Nodes)? {
            UserReply::Mesh(mesh) => Ok(Reply::Mesh(mesh)),
            other => Err(unexpected(other)),
        },
        Op::LinkAdd { peer } => match manager(UserRequest::LinkAdd(peer))? {
            UserReply::LinkAdded(added) => Ok(Reply::LinkAdded(added)),
            other => Err(unexpected(other)),
        },
        Op::LinkRm { peer } => manager(UserRequest::LinkRemove(peer)).map(|_| Reply::Done),
        Op::Ping { peer } => node
            .ping(peer)
            .map(|pong| {
                Reply::Pong(PongReply {
                    route: pong.route,
                    in_id: pong.in_id,
                    rtt_us: u64::try_from(pong.rtt.as_micros()).unwrap_or(u64::MAX),
                    manager_route: pong.manager_route,
                })
            })
            .map_err(|e| match e {
                PingError::NoReply { .. } => (ErrorKind::NoReply, e.to_string()),
                _ => (ErrorKind::Failed, e.to_string()),
            }),
    }
}

/// A response line to send, and whether to close the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response, newline included.
    pub line: Vec<u8>,
    /// Close the connection after sending it.
    pub close: bool,
}

/// Answer one request line (without its newline). Pure apart from asking `node`.
pub fn respond(line: &[u8], node: &dyn NodeApi) -> Answer {
    match parse_request(line) {
        ParsedRequest::Malformed { reason } => Answer {
            line: Response::<Reply>::error(None, ErrorKind::BadRequest, reason).to_line(),
            close: true,
        },
        ParsedRequest::Unsupported { id, reason } => Answer {
            line: Response::<Reply>::error(Some(id), ErrorKind::BadRequest, reason).to_line(),
            close: false,
        },
        ParsedRequest::Request(request) => {
            let response = match answer(request.op, node) {
                Ok(reply) => Response {
                    id: Some(request.id),
                    outcome: Outcome::Ok(reply),
                },
                Err((kind, message)) => Response::error(Some(request.id), kind, message),
            };
            Answer {
                line: response.to_line(),
                close: false,
            }
        }
    }
}

/// A bound control socket, not yet serving. Dropping it removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    socket: BoundSocket,
}

impl ControlServer {
    /// Bind the control socket at `path` (see the module doc for the checks).
    ///
    /// Errors name the path and say what to do: `PermissionDenied` for a folder others may
    /// write to, `AddrInUse` when another process serves the socket, `AlreadyExists` when
    /// the path is something other than a socket.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let (listener, socket) = bind_private(path)?;
        Ok(Self { listener, socket })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Serve requests for `node` on this thread until `stop` is set, then remove the
    /// socket file. Connections already open finish on their own threads (within
    /// [`CONNECTION_TIMEOUT`] of their last request).
    ///
    /// `node` is shared by the connection threads, hence `Sync`.
    pub fn serve(self, node: impl NodeApi + Send + Sync + 'static, stop: Arc<AtomicBool>) {
        let node: Arc<dyn NodeApi + Send + Sync> = Arc::new(node);
        let active = Arc::new(AtomicUsize::new(0));
        while !stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((stream, _)) => self.start_connection(stream, &node, &active),
                // Nothing to accept (or a transient failure such as EMFILE or a peer that
                // went away): one bad moment never ends the loop.
                Err(_) => thread::sleep(ACCEPT_POLL),
            }
        }
    }

    /// [`Self::serve`] on a new thread named `skywire-ctl`.
    pub fn spawn(
        self,
        node: impl NodeApi + Send + Sync + 'static,
        stop: Arc<AtomicBool>,
    ) -> io::Result<thread::JoinHandle<()>> {
        thread::Builder::new()
            .name("skywire-ctl".to_owned())
            .spawn(move || self.serve(node, stop))
    }

    fn start_connection(
        &self,
        stream: UnixStream,
        node: &Arc<dyn NodeApi + Send + Sync>,
        active: &Arc<AtomicUsize>,
    ) {
        let slot = ConnectionSlot::take_of(active, MAX_CONNECTIONS);
        let setup = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(CONNECTION_TIMEOUT)))
            .and_then(|()| stream.set_write_timeout(Some(CONNECTION_TIMEOUT)));
        if setup.is_err() {
            return;
        }
        let Some(slot) = slot else {
            // A few dozen bytes into a fresh socket's buffer: this write does not block.
            let busy = Response::<Reply>::error(
                None,
                ErrorKind::Unavailable,
                format!("the node is already serving {MAX_CONNECTIONS} control connections"),
            );
            let _ = (&stream).write_all(&busy.to_line());
            return;
        };
        let node = Arc::clone(node);
        let owner_uid = self.socket.owner_uid();
        // If no thread can be had, the connection is dropped (closed) with the closure.
        let _ = thread::Builder::new()
            .name("skywire-ctl-conn".to_owned())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &*node, owner_uid);
            });
    }
}

/// One connection: check the peer, then answer lines until it closes, errs or idles out.
fn serve_connection(stream: UnixStream, node: &dyn NodeApi, owner_uid: u32) {
    let mut writer = &stream;
    let Ok(peer_uid) = peer_uid(&stream) else {
        return;
    };
    if !is_allowed(peer_uid, owner_uid) {
        let denied = Response::<Reply>::error(
            None,
            ErrorKind::Permission,
            format!(
                "uid {peer_uid} may not use this control socket: only root and uid \
                 {owner_uid}, its owner, may"
            ),
        );
        let _ = writer.write_all(&denied.to_line());
        return;
    }

    let mut reader = BufReader::new(&stream);
    let mut line = Vec::new();
    loop {
        let answer = match read_line(&mut reader, MAX_REQUEST, &mut line) {
            Ok(LineRead::Line) if line.trim_ascii().is_empty() => continue,
            Ok(LineRead::Line) => respond(&line, node),
            Ok(LineRead::TooLong) => Answer {
                line: Response::<Reply>::error(
                    None,
                    ErrorKind::BadRequest,
                    format!("a request line is at most {MAX_REQUEST} bytes"),
                )
                .to_line(),
                close: true,
            },
            // Closed, cut off mid-line, idle too long, or a socket error: nobody to answer.
            Ok(LineRead::Eof | LineRead::Truncated) | Err(_) => return,
        };
        if writer.write_all(&answer.line).is_err() || answer.close {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
    }

    /// A server with the sample status on `path`, and the flag that stops it.
    pub(crate) struct Running {
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Running {
        pub(crate) fn start(path: &Path, source: FakeSource) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let thread = ControlServer::bind(path)
                .unwrap()
                .spawn(source, Arc::clone(&stop))
                .unwrap();
            Self {
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
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
        };
        let fake = FakeManager {
            seen: std::sync::Mutex::new(Vec::new()),
            answer: Ok(UserReply::Route(info)),
        };
        let line = format!(
            r#"{{"id":1,"op":"route_add","dst":"{key}","min_hops":3,"avoid":["{key}"],"weight":"latency"}}"#
        );
        let answer = respond(line.as_bytes(), &fake);
        assert!(String::from_utf8_lossy(&answer.line).contains(r#""ok":{"id":1,"#));
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![UserRequest::RouteAdd(RouteRequest {
                id: None,
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
        let answer = respond(br#"{"id":3,"op":"route_rm","route":"00ff"}"#, &fake);
        assert!(!answer.close);
        assert_eq!(
            fake.seen.lock().unwrap().last(),
            Some(&UserRequest::RouteRemove(MeshRouteId(255)))
        );
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
    fn connections_beyond_the_limit_are_turned_away() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let _running = Running::start(&path, FakeSource(Some(sample_status())));
        // Each connection proves it holds a slot by getting an answer.
        let mut held = Vec::new();
        for id in 0..MAX_CONNECTIONS {
            let (mut stream, mut reader) = connect(&path);
            stream
                .write_all(format!("{{\"id\":{id},\"op\":\"status\"}}\n").as_bytes())
                .unwrap();
            assert!(next_line(&mut reader).is_some());
            held.push((stream, reader));
        }
        let (_stream, mut reader) = connect(&path);
        let line = next_line(&mut reader).unwrap();
        assert_eq!(error_kind(&line), ErrorKind::Unavailable);
        assert_closed(&mut reader);

        // Closing one frees its slot (its thread ends on EOF).
        drop(held.pop());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (mut stream, mut reader) = connect(&path);
            let _ = stream.write_all(b"{\"id\":99,\"op\":\"status\"}\n");
            let answer = response(&next_line(&mut reader).unwrap());
            if answer.id == Some(99) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "slot never freed");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn stop_ends_serving_and_removes_the_socket() {
        let tmp = TempDir::new();
        let path = tmp.0.join("node.sock");
        let running = Running::start(&path, FakeSource(None));
        assert!(path.exists());
        drop(running);
        assert!(!path.exists());
        let err = UnixStream::connect(&path).unwrap_err();
        assert_eq!(err.kind(), IoErrorKind::NotFound);
    }
}
