//! The app socket's server: bind it, check who connects, read the opening line, and hand
//! each stream's connection to the engine.
//!
//! - **Binding.** [`crate::local::socket::bind_shared`]: the socket 0660 in a folder of its
//!   own (0750), both given `node.apps.group` (else the node's group); with
//!   `node.apps.users` listed, 0666 in a 0751 folder, since file modes cannot name single
//!   users and the check below decides anyway. A stale socket is replaced, a live one
//!   never taken over; the file is removed when the server stops.
//! - **Threads.** [`AppServer::serve`] waits in `poll(2)` for a connection or the node's
//!   stop ([`StopSignal::accept_until_stopped`], as the control socket does), so it never
//!   polls while idle and stops at once. Each connection gets a thread for its opening:
//!   at most [`MAX_OPENING`] at once, counted with [`crate::local::ConnectionSlot`]s, and
//!   one beyond that gets a `limit` error. A dial
//!   holds its slot while it waits for the peer (up to its timeout); a `listen` gives its
//!   slot back once answered and keeps its thread, plus one that watches for the app
//!   closing the connection, for as long as it listens (the engine's `listeners` limit
//!   bounds those); a dialed or accepted stream holds nothing here once attached.
//! - **Opening.** The peer's uid, gid and pid come from `SO_PEERCRED`. The line is read
//!   with `MSG_PEEK` first and only up to its newline ([`super::protocol::scan_opening`]), within
//!   [`super::protocol::MAX_REQUEST`] bytes and [`super::protocol::OPENING_TIMEOUT`]; then the user is
//!   checked ([`Access`]), then the request parsed. Any failure is one `error` line, and
//!   the connection closes; the server goes on.
//! - **Dial.** `Streams::dial`; on `no_route`, `Routes::ensure_route` within the same
//!   deadline and one more dial with the time left. Then the `ok` line, then
//!   `Streams::attach`; if the line cannot be written the stream is aborted, and if attach
//!   fails the app gets a RESET with the reason on a duplicate of its connection.
//! - **Listen.** `Streams::listen`, the `ok` line, then each arrival goes into the
//!   [`Arrivals`] table before its `incoming` line is written. The app sends nothing more:
//!   closing its connection (or its writing half) ends the listener, and so does sending
//!   anything (with a `bad_request` line). The node stopping ends it with a `shutdown`
//!   line.
//! - **Accept.** The stream is taken from the table by its listener's user or root, and
//!   handed over as a dialed one.
//! - **Hand-over.** The line comes with a stream socket (`SCM_RIGHTS`, received with the
//!   line's last read; descriptors passed with any other op are closed). The engine checks
//!   the stream is the user's and attached, answers `ok` on the connection itself and keeps
//!   it as the stream's watch, which gets the `ended` line.

use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::WatchId;
use skywire_dataplane::stack::{
    ListenOptions, ListenerId, Owner, StreamError, StreamId, StreamInfo,
};

use super::access::Access;
use super::arrivals::{Arrivals, TakeError};
use super::protocol::{
    AppRequest, ErrorBody, ErrorKind, Handed, ListenerLine, Listening, MAX_REQUEST,
    OPENING_TIMEOUT, Reply, RequestError, Scan, StreamOpened, error_line, parse_request,
    scan_opening,
};
use super::{RouteFailure, Routes, Streams};
use crate::config::AppsConfig;
use crate::local::{BoundSocket, ConnectionSlot, Sharing, StopSignal, bind_shared};
use crate::procfs;

/// Descriptors a request line may bring (`hand_over` takes one; more are refused).
const MAX_PASSED: usize = 2;

/// At most this many connections are in their opening at once.
pub const MAX_OPENING: usize = 1024;

/// A reply or `incoming` line the app does not read within this is not written, and that
/// connection is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a listening connection's thread looks at the stop flag.
const LISTENER_TICK: Duration = Duration::from_millis(500);

/// A bound app socket, not yet serving. Dropping it removes the socket file.
#[derive(Debug)]
pub struct AppServer {
    listener: UnixListener,
    socket: BoundSocket,
    access: Access,
    take_timeout: Duration,
    opening_timeout: Duration,
}

/// What the connection threads share.
struct Shared {
    streams: Box<dyn Streams>,
    routes: Box<dyn Routes>,
    access: Access,
    opening_timeout: Duration,
    arrivals: Mutex<Arrivals>,
    stop: StopSignal,
}

impl Shared {
    fn arrivals(&self) -> MutexGuard<'_, Arrivals> {
        // The table is consistent after every method, so a panic elsewhere leaves it usable.
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AppServer {
    /// Bind the app socket `config` describes (see the module doc), serving root, this
    /// process's effective user and those `config` lets in.
    ///
    /// Errors name the path and say what to do, as the control socket's do; giving the
    /// socket to `node.apps.group` needs root or membership of that group.
    pub fn bind(config: &AppsConfig) -> io::Result<Self> {
        let node_uid = rustix::process::geteuid().as_raw();
        let group = config
            .group
            .unwrap_or_else(|| rustix::process::getegid().as_raw());
        let sharing = Sharing {
            group,
            others: !config.users.is_empty(),
        };
        let (listener, socket) = bind_shared(&config.socket, sharing)?;
        Ok(Self {
            listener,
            socket,
            access: Access::of(config, node_uid),
            take_timeout: config.stack.take_timeout,
            opening_timeout: OPENING_TIMEOUT,
        })
    }

    /// The same server waiting `timeout` for opening lines (tests of slow apps).
    #[cfg(test)]
    pub(crate) fn with_opening_timeout(mut self, timeout: Duration) -> Self {
        self.opening_timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Serve apps with `streams` and `routes` on this thread until `stop` is stopped, then
    /// remove the socket file. Connections in their opening finish on their own threads;
    /// listening ones end within half a second of `stop`.
    pub fn serve(self, streams: impl Streams, routes: impl Routes, stop: StopSignal) {
        let shared = Arc::new(Shared {
            streams: Box::new(streams),
            routes: Box::new(routes),
            access: self.access.clone(),
            opening_timeout: self.opening_timeout,
            arrivals: Mutex::new(Arrivals::new(self.take_timeout)),
            stop: stop.clone(),
        });
        let opening = Arc::new(AtomicUsize::new(0));
        stop.accept_until_stopped(
            &format!("app socket {}", self.socket.path().display()),
            self.listener.as_fd(),
            || self.listener.accept(),
            |(stream, _)| start_connection(&shared, stream, &opening),
        );
    }

    /// [`Self::serve`] on a new thread named `skywire-apps`.
    pub fn spawn(
        self,
        streams: impl Streams,
        routes: impl Routes,
        stop: StopSignal,
    ) -> io::Result<thread::JoinHandle<()>> {
        thread::Builder::new()
            .name("skywire-apps".to_owned())
            .spawn(move || self.serve(streams, routes, stop))
    }
}

fn start_connection(shared: &Arc<Shared>, stream: UnixStream, opening: &Arc<AtomicUsize>) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if setup.is_err() {
        return;
    }
    let Some(slot) = ConnectionSlot::take_of(opening, MAX_OPENING) else {
        // A few dozen bytes into a fresh socket's buffer: this write does not block.
        let busy = error_line(
            ErrorKind::Limit,
            format!("the node is already opening {MAX_OPENING} app connections; try again"),
        );
        let _ = (&stream).write_all(&busy);
        return;
    };
    let shared = Arc::clone(shared);
    // If no thread can be had, the connection is dropped (closed) with the closure.
    let _ = thread::Builder::new()
        .name("skywire-app".to_owned())
        .spawn(move || serve_connection(&shared, stream, slot));
}

/// One connection: the opening, then what it asked for.
fn serve_connection(shared: &Shared, stream: UnixStream, slot: ConnectionSlot) {
    let Ok(cred) = rustix::net::sockopt::socket_peercred(&stream) else {
        return;
    };
    let uid = cred.uid.as_raw();
    let (line, passed) = match read_opening(&stream, Instant::now() + shared.opening_timeout) {
        Opening::Line(line, passed) => (line, passed),
        Opening::Closed => return,
        Opening::Bad(error) => return refuse(&stream, ErrorKind::BadRequest, error.to_string()),
    };
    if !allowed(
        &shared.access,
        uid,
        cred.gid.as_raw(),
        cred.pid.as_raw_pid(),
    ) {
        return refuse(&stream, ErrorKind::Permission, shared.access.refusal(uid));
    }
    match parse_request(&line) {
        Err(error) => refuse(&stream, ErrorKind::BadRequest, error.to_string()),
        Ok(AppRequest::Dial {
            peer,
            port,
            timeout,
        }) => dial(shared, stream, Owner(uid), peer, port, timeout),
        Ok(AppRequest::Listen {
            port,
            backlog,
            allow,
        }) => {
            let options = ListenOptions {
                port,
                backlog,
                allow,
                owner: Owner(uid),
            };
            listen(shared, stream, options, slot);
        }
        Ok(AppRequest::Accept { stream: id }) => accept(shared, stream, uid, id),
        Ok(AppRequest::HandOver { stream: id, watch }) => {
            hand_over_socket(shared, &stream, Owner(uid), id, watch, passed);
        }
        Ok(AppRequest::Watch) => watch(shared, stream, Owner(uid)),
    }
}

/// A `watch`: the engine takes the connection and answers on it.
fn watch(shared: &Shared, stream: UnixStream, owner: Owner) {
    let Ok(spare) = stream.try_clone() else {
        return refuse(
            &stream,
            ErrorKind::Limit,
            "no descriptor to spare".to_owned(),
        );
    };
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    if let Err(error) = shared.streams.watch(owner, stream) {
        refuse(&spare, error.into(), error.to_string());
    }
}

/// The descriptors that came with a request line.
#[derive(Debug, Default)]
struct Passed {
    fds: Vec<OwnedFd>,
    /// Some could not be received (`MSG_CTRUNC`): more than the line may bring, or this
    /// process had no descriptor left for them.
    cut: bool,
}

/// A `hand_over`: the engine takes the passed socket; the answer goes on this connection,
/// which then closes.
fn hand_over_socket(
    shared: &Shared,
    stream: &UnixStream,
    owner: Owner,
    id: StreamId,
    watch: Option<WatchId>,
    passed: Passed,
) {
    let Passed {
        fds: mut passed,
        cut,
    } = passed;
    if cut && passed.len() < MAX_PASSED {
        return refuse(
            stream,
            ErrorKind::Limit,
            "the node could not receive the socket: it has no file descriptor left (raise \
             its open files limit, or lower node.apps.streams)"
                .to_owned(),
        );
    }
    if passed.len() != 1 {
        return refuse(
            stream,
            ErrorKind::BadRequest,
            format!(
                "hand_over takes exactly one stream socket, passed with the line (SCM_RIGHTS); \
                 {} came",
                passed.len()
            ),
        );
    }
    let Some(socket) = passed.pop() else {
        return;
    };
    match shared.streams.hand_over(id, owner, socket, watch) {
        Ok(()) => {
            let _ = (&*stream).write_all(&Reply::Ok(Handed { handed: id }).to_line());
        }
        Err(error) => {
            let message = match error {
                StreamError::UnknownStream => format!(
                    "stream {id} is not one of this user's streams attached in frames, the \
                     socket passed is not a stream socket, or the watch is not this user's"
                ),
                other => other.to_string(),
            };
            refuse(stream, error.into(), message);
        }
    }
}

/// How reading the opening line ended.
enum Opening {
    /// The line, without its newline, and the descriptors passed with it.
    Line(Vec<u8>, Passed),
    /// Closed before a byte came, or a socket error: nobody to answer.
    Closed,
    /// Too long, cut off, or too slow.
    Bad(RequestError),
}

/// Read the opening line by peeking first, so that not a byte after its newline is read.
/// The bytes are taken with `recvmsg`, so descriptors passed with them are received (and
/// closed if the op does not take them) rather than left to the kernel.
fn read_opening(stream: &UnixStream, deadline: Instant) -> Opening {
    let mut line = Vec::new();
    let mut passed = Passed::default();
    let mut waiting = vec![0u8; MAX_REQUEST + 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Opening::Bad(RequestError::TimedOut);
        }
        let room = (MAX_REQUEST + 1).saturating_sub(line.len()).max(1);
        let Some(buf) = waiting.get_mut(..room) else {
            return Opening::Bad(RequestError::TooLong);
        };
        let peeked = match rustix::net::recv(stream, &mut *buf, RecvFlags::PEEK) {
            Ok((n, _)) => n,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Opening::Bad(RequestError::TimedOut),
            Err(_) => return Opening::Closed,
        };
        if peeked == 0 {
            return if line.is_empty() {
                Opening::Closed
            } else {
                Opening::Bad(RequestError::Truncated)
            };
        }
        let (take, done) = match scan_opening(line.len(), buf.get(..peeked).unwrap_or_default()) {
            Scan::TooLong => return Opening::Bad(RequestError::TooLong),
            Scan::Line(n) => (n, true),
            Scan::Partial(n) => (n, false),
        };
        let start = line.len();
        line.resize(start + take, 0);
        // The bytes are waiting already (we just peeked them): this does not block.
        let read = line
            .get_mut(start..)
            .map_or(Ok(()), |part| read_with_fds(stream, part, &mut passed));
        if read.is_err() {
            return Opening::Closed;
        }
        if done {
            line.pop();
            return Opening::Line(line, passed);
        }
    }
}

/// Fill `buf` from `stream`, keeping the descriptors that come with the bytes (at most
/// [`MAX_PASSED`] per read; the kernel closes any beyond).
fn read_with_fds(stream: &UnixStream, buf: &mut [u8], passed: &mut Passed) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_PASSED))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        let got = match rustix::net::recvmsg(
            stream,
            &mut [IoSliceMut::new(rest)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => {
                // Descriptors the kernel could not give us (this process is at its limit).
                passed.cut |= got.flags.contains(ReturnFlags::CTRUNC);
                got.bytes
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                passed.fds.extend(fds);
            }
        }
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += got;
    }
    Ok(())
}

/// Whether the process at the other end may use the socket: by its uid or primary group,
/// or by a supplementary group from `/proc/<pid>/status` (read only then).
fn allowed(access: &Access, uid: u32, gid: u32, pid: i32) -> bool {
    if access.allows(uid, gid, &[]) {
        return true;
    }
    let Some(_group) = access.group() else {
        return false;
    };
    u32::try_from(pid)
        .ok()
        .and_then(procfs::groups)
        .is_some_and(|groups| access.allows(uid, gid, &groups))
}

/// Answer with an error line; the connection closes when `stream` is dropped.
fn refuse(stream: &UnixStream, kind: ErrorKind, message: String) {
    let _ = (&*stream).write_all(&error_line(kind, message));
}

fn dial(
    shared: &Shared,
    stream: UnixStream,
    owner: Owner,
    peer: PublicKey,
    port: u16,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let result = match shared.streams.dial(peer, port, owner, timeout) {
        Err(StreamError::NoRoute) => shared.routes.ensure_route(peer, deadline).and_then(|()| {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(RouteFailure::plain(StreamError::TimedOut))
            } else {
                shared
                    .streams
                    .dial(peer, port, owner, left)
                    .map_err(RouteFailure::plain)
            }
        }),
        other => other.map_err(RouteFailure::plain),
    };
    match result {
        Ok(info) => hand_over(shared, stream, info, owner),
        Err(failure) => refuse(&stream, failure.error.into(), failure.to_string()),
    }
}

/// Give the connection to the engine, which tells the app its stream (`ok`) before
/// anything else; if it cannot, the app gets an error line instead.
fn hand_over(shared: &Shared, stream: UnixStream, info: StreamInfo, owner: Owner) {
    let ok = Reply::Ok(StreamOpened::from(info)).to_line();
    // The engine decides its own timeouts and blocking mode.
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    let spare = stream.try_clone().ok();
    match shared.streams.attach(info.id, owner, stream, ok) {
        Ok(()) => {}
        // The `ok` could not be written: nobody to tell.
        Err(StreamError::AppGone) => shared.streams.abort(info.id),
        Err(error) => {
            shared.streams.abort(info.id);
            if let Some(spare) = spare {
                let _ = spare.set_write_timeout(Some(WRITE_TIMEOUT));
                refuse(&spare, error.into(), error.to_string());
            }
        }
    }
}

fn accept(shared: &Shared, stream: UnixStream, uid: u32, id: StreamId) {
    let taken = shared.arrivals().take(id, uid, Instant::now());
    match taken {
        Ok((info, owner)) => hand_over(shared, stream, info, owner),
        Err(TakeError::Unknown) => refuse(
            &stream,
            StreamError::UnknownStream.into(),
            format!(
                "no stream {id} waits to be accepted (it was taken, reset, not taken in time, \
                 or its listener closed)"
            ),
        ),
        Err(TakeError::NotYours { owner }) => refuse(
            &stream,
            ErrorKind::Permission,
            format!(
                "stream {id} arrived on a listener of uid {}; only that user and root may \
                 accept it",
                owner.0
            ),
        ),
    }
}

fn listen(shared: &Shared, stream: UnixStream, options: ListenOptions, slot: ConnectionSlot) {
    let (owner, backlog, port) = (options.owner, options.backlog, options.port);
    let (id, arrived) = match shared.streams.listen(options) {
        Ok(listening) => listening,
        Err(error) => return refuse(&stream, error.into(), error.to_string()),
    };
    let ok = Reply::Ok(Listening { listener: id, port }).to_line();
    // The listener's thread is bounded by the engine's listeners limit, not the slots.
    drop(slot);
    let watch = if (&stream).write_all(&ok).is_ok() {
        watch_for_close(&stream)
    } else {
        None
    };
    if let Some((closed, watcher)) = watch {
        serve_listener(shared, &stream, id, owner, backlog, &arrived, &closed);
        let _ = stream.shutdown(Shutdown::Both);
        let _ = watcher.join();
    }
    // No new arrivals; those the app did not accept are reset now (a stream accepted a
    // moment ago is no longer in the table and goes on to the engine).
    shared.streams.unlisten(id);
    let mut unaccepted = shared.arrivals().forget_listener(id);
    unaccepted.extend(arrived.try_iter().map(|info| info.id));
    for stream in unaccepted {
        shared.streams.abort(stream);
    }
}

/// A thread that blocks reading the listening connection and reports when it returns:
/// `true` if the app sent a byte, `false` if it closed (or the read failed).
fn watch_for_close(stream: &UnixStream) -> Option<(Receiver<bool>, thread::JoinHandle<()>)> {
    let reader = stream.try_clone().ok()?;
    reader.set_read_timeout(None).ok()?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let watcher = thread::Builder::new()
        .name("skywire-app-watch".to_owned())
        .spawn(move || {
            let mut byte = [0u8; 1];
            let sent = matches!((&reader).read(&mut byte), Ok(n) if n > 0);
            let _ = tx.send(sent);
        })
        .ok()?;
    Some((rx, watcher))
}

/// Announce arrivals until the app closes, breaks the protocol, or the node stops.
fn serve_listener(
    shared: &Shared,
    mut stream: &UnixStream,
    id: ListenerId,
    owner: Owner,
    backlog: usize,
    arrived: &Receiver<StreamInfo>,
    closed: &Receiver<bool>,
) {
    let ended = |kind: ErrorKind, message: &str| {
        ListenerLine::Error(ErrorBody {
            kind,
            message: message.to_owned(),
        })
        .to_line()
    };
    loop {
        select! {
            recv(arrived) -> info => {
                let Ok(info) = info else {
                    let _ = stream.write_all(&ended(
                        StreamError::Shutdown.into(),
                        "the node's engine stopped; the listener is closed",
                    ));
                    return;
                };
                let announced =
                    shared.arrivals().arrived(id, owner, info, backlog, Instant::now());
                if !announced {
                    shared.streams.abort(info.id);
                    continue;
                }
                if stream.write_all(&ListenerLine::Incoming(info.into()).to_line()).is_err() {
                    return;
                }
            }
            recv(closed) -> sent => {
                if sent == Ok(true) {
                    let _ = stream.write_all(&ended(
                        ErrorKind::BadRequest,
                        "a listening connection sends nothing after its request; close it to \
                         stop listening",
                    ));
                }
                return;
            }
            default(LISTENER_TICK) => {
                if shared.stop.is_stopped() {
                    let _ = stream.write_all(&ended(
                        StreamError::Shutdown.into(),
                        "the node is shutting down",
                    ));
                    return;
                }
            }
        }
    }
}
