//! The node's side of the control socket: bind it safely, check who connects, answer.
//!
//! - **Binding.** [`crate::local::socket`]: 0600 in a folder only its owner can write, a
//!   stale socket replaced, a live one never taken over.
//! - **Who may ask.** Each connection's peer uid comes from `SO_PEERCRED` (the kernel's
//!   word, not the client's). Root and the socket file's owner are served; anyone else gets
//!   a `permission` error and the connection is closed.
//! - **Threads.** [`ControlServer::serve`] waits in `poll(2)` on the listener and on a
//!   [`StopSignal`] together ([`StopSignal::accept_until_stopped`]): a connection is
//!   accepted the moment it arrives, `stop` ends the loop at once, and an idle node never
//!   wakes for it. Each connection gets a short-lived thread with 5 s read and write
//!   timeouts, so a slow or idle client holds only its own thread; at most
//!   [`MAX_CONNECTIONS`] are open at once ([`Connections`]). When they are, a newcomer
//!   takes the place of the one that has waited longest without a request being answered
//!   (it is shut down), so clients that connect and say nothing, or say it a byte at a
//!   time, cannot lock `status` out; only when every place is busy answering does a
//!   newcomer get `unavailable`.
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
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{EngineGone, EngineHandle, GrantError, NodeStatus};
use skywire_dataplane::route::Prefix;

use crate::atomic_file::StateError;
use crate::civil::Day;
use crate::local::{
    BoundSocket, Connections, LineRead, Member, StopSignal, bind_private, is_allowed, peer_uid,
    read_line,
};
use crate::manager::proto::{ErrorKind as ManagerErrorKind, Key, ProtoError, RouteRequest};
use crate::node::agent::{UserReply, UserRequest};
use crate::node::reconnect::ManagerLink;
use crate::node::reload::{ReloadError, ReloadSummary};
use crate::node::uplink::{PingError, PingReply};
use crate::node::usage::DayRecord;

use super::protocol::{
    ErrorKind, MAX_REQUEST, Op, Outcome, ParsedRequest, PongReply, Reply, Response, StatusReply,
    UsageReply, parse_request,
};

/// At most this many connections are served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A connection idle this long, or a peer that does not read its answer for this long, is
/// closed.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a `status` request waits for the engine.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the control socket serves: the running node ([`crate::node::NodeHandle`]), or a
/// fake in tests. Only `status` is required; a node without a manager answers the manager
/// ops `unavailable`, and one that cannot ping says so.
pub trait NodeApi {
    /// A snapshot of the node, waiting at most `timeout`.
    fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone>;

    /// The connection to the node manager, if the node has one.
    fn manager_link(&self) -> Option<ManagerLink> {
        None
    }

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

    /// Replace `peer`'s granted prefixes (see `NodeCore::grant`), waiting at most
    /// `timeout`. Without an engine to ask, the engine is gone.
    fn grant(
        &self,
        peer: PublicKey,
        prefixes: Vec<Prefix>,
        timeout: Duration,
    ) -> Result<Result<(), GrantError>, EngineGone> {
        let _ = (peer, prefixes, timeout);
        Err(EngineGone::Stopped)
    }

    /// Read the node's config file again and apply what changed (see
    /// [`crate::node::reload`]).
    fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        Err(ReloadError::NoConfig)
    }

    /// The node's usage ledger from `since` to `until` (see [`crate::node::usage`]):
    /// `None` when it keeps none.
    #[allow(clippy::type_complexity)]
    fn usage(
        &self,
        since: Day,
        until: Day,
    ) -> Option<Result<(PublicKey, Vec<DayRecord>), StateError>> {
        let _ = (since, until);
        None
    }
}

impl NodeApi for EngineHandle {
    fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone> {
        EngineHandle::status(self, timeout)
    }

    fn grant(
        &self,
        peer: PublicKey,
        prefixes: Vec<Prefix>,
        timeout: Duration,
    ) -> Result<Result<(), GrantError>, EngineGone> {
        EngineHandle::grant(self, peer, prefixes, timeout)
    }
}

/// The node's status as the `status` op answers it: the engine's snapshot with the
/// manager connection. The one source of `skywire status` and of the node's Prometheus
/// metrics ([`crate::node::metrics`]).
pub fn status_reply(node: &dyn NodeApi, timeout: Duration) -> Result<StatusReply, EngineGone> {
    let status = node.status(timeout)?;
    let mut reply = StatusReply::from(&status);
    reply.manager = node.manager_link();
    Ok(reply)
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
        Op::Status => status_reply(node, ENGINE_TIMEOUT)
            .map(|reply| Reply::Status(Box::new(reply)))
            .map_err(|gone| (ErrorKind::Unavailable, gone.to_string())),
        Op::RouteAdd {
            dst,
            min_hops,
            max_hops,
            avoid,
            weight,
        } => match manager(UserRequest::RouteAdd(RouteRequest {
            id: None,
            nonce: None,
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
        Op::Grant { peer, prefixes } => match node.grant(peer, prefixes, ENGINE_TIMEOUT) {
            Ok(Ok(())) => Ok(Reply::Done),
            Ok(Err(refused)) => Err((ErrorKind::Failed, refused.to_string())),
            Err(gone) => Err((ErrorKind::Unavailable, gone.to_string())),
        },
        Op::Usage { since, until } => {
            let today = Day::today();
            let (since, until) = (since.unwrap_or(today), until.unwrap_or(today));
            match node.usage(since, until) {
                _ if since > until => Err((
                    ErrorKind::BadRequest,
                    format!("`since` ({since}) is after `until` ({until})"),
                )),
                None => Err((
                    ErrorKind::Unavailable,
                    "this node keeps no usage ledger (it runs without a state folder)".to_owned(),
                )),
                Some(Err(e)) => Err((ErrorKind::Failed, e.to_string())),
                Some(Ok((key, days))) => Ok(Reply::Usage(UsageReply {
                    node: key,
                    since,
                    until,
                    days,
                })),
            }
        }
        Op::Reload => node.reload().map(Reply::Reloaded).map_err(|e| {
            let kind = match &e {
                ReloadError::Config(_) => ErrorKind::BadConfig,
                ReloadError::Engine(_) => ErrorKind::Unavailable,
                ReloadError::NoConfig | ReloadError::Refused(_) => ErrorKind::Failed,
            };
            (kind, e.to_string())
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

    /// Serve requests for `node` on this thread until `stop` is stopped, then remove the
    /// socket file. Connections already open finish on their own threads (within
    /// [`CONNECTION_TIMEOUT`] of their last request).
    ///
    /// `node` is shared by the connection threads, hence `Sync`.
    pub fn serve(self, node: impl NodeApi + Send + Sync + 'static, stop: &StopSignal) {
        let node: Arc<dyn NodeApi + Send + Sync> = Arc::new(node);
        let open = Connections::new(MAX_CONNECTIONS);
        stop.accept_until_stopped(
            &format!("control socket {}", self.socket.path().display()),
            self.listener.as_fd(),
            || self.listener.accept(),
            |(stream, _)| self.start_connection(stream, &node, &open),
        );
    }

    /// [`Self::serve`] on a new thread named `skywire-ctl`.
    pub fn spawn(
        self,
        node: impl NodeApi + Send + Sync + 'static,
        stop: StopSignal,
    ) -> io::Result<thread::JoinHandle<()>> {
        thread::Builder::new()
            .name("skywire-ctl".to_owned())
            .spawn(move || self.serve(node, &stop))
    }

    fn start_connection(
        &self,
        stream: UnixStream,
        node: &Arc<dyn NodeApi + Send + Sync>,
        open: &Connections,
    ) {
        let slot = open.admit(&stream, Instant::now());
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
                format!(
                    "the node is answering {MAX_CONNECTIONS} control requests at once; try \
                     again"
                ),
            );
            let _ = (&stream).write_all(&busy.to_line());
            return;
        };
        let node = Arc::clone(node);
        let owner_uid = self.socket.owner_uid();
        // If no thread can be had, the connection is dropped (closed) with the closure.
        let _ = thread::Builder::new()
            .name("skywire-ctl-conn".to_owned())
            .spawn(move || serve_connection(stream, &*node, owner_uid, &slot));
    }
}

/// One connection: check the peer, then answer lines until it closes, errs or idles out.
fn serve_connection(stream: UnixStream, node: &dyn NodeApi, owner_uid: u32, place: &Member) {
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
        let read = read_line(&mut reader, MAX_REQUEST, &mut line);
        place.busy();
        let answer = match read {
            Ok(LineRead::Line) if line.trim_ascii().is_empty() => {
                place.idle(Instant::now());
                continue;
            }
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
        // Answered: from here the connection waits on its client (to read this answer,
        // then to ask again), so it may make room for a newcomer. (Marked before the
        // write, so a client that has its answer never finds itself still counted busy.)
        place.idle(Instant::now());
        if writer.write_all(&answer.line).is_err() || answer.close {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
