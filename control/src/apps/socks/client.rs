//! `skywire socks client`: a SOCKS5 server on this machine (`127.0.0.1:1080` by default)
//! that carries every connection over the mesh to one exit node.
//!
//! Per connection, on a thread of its own while it negotiates:
//!
//! 1. **Greeting and credentials** are answered here. A first byte other than 5 closes
//!    the connection at once (no reply: HTTP or another protocol sent to the port, such as
//!    a browser's cross-protocol request). With `username` and `password_file` configured
//!    only RFC 1929 is offered, and both must match.
//! 2. **The request** is only peeked at (`MSG_PEEK`): its bytes stay in the socket.
//!    BIND is answered with 7 (command not supported); UDP ASSOCIATE sets up a UDP relay
//!    on this machine ([`super::udp`]).
//! 3. **CONNECT**: a stream is dialed to the exit app's port on the exit node through the
//!    node's app socket, and the client's TCP connection is **handed over** to the node
//!    (`AppStream::hand_over`). The node then moves the bytes between the connection and
//!    the stream itself, starting with the request it finds in the socket; the exit reads
//!    the request, dials, and its SOCKS reply reaches the client as the stream's first
//!    bytes. This app keeps only the stream's watch ([`super::tally::Watcher`]), so an
//!    open connection costs it one idle descriptor and no thread.
//! 4. A failed dial is answered here: no route to the exit 3 (network unreachable), the
//!    exit refusing the stream (not running, or this node not among its clients) 2, a
//!    timeout 6, anything else 1.
//!
//! Limits: `connections` open at once (more are answered 1 after their request),
//! `half_open` negotiating or dialing at once (the listener stops accepting until one
//! finishes; the kernel's backlog holds the rest), `negotiation_timeout` for a client's
//! greeting, credentials and request. `RLIMIT_NOFILE` is raised to its hard limit at
//! start; when descriptors run out anyway, the listener accepts with a spare descriptor,
//! answers "no acceptable method" and closes, and backs off for 50 ms, instead of spinning
//! on `EMFILE` or dying.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::RecvFlags;
use skywire_dataplane::crypto::PublicKey;

use super::tally::{Limits, Tally, Watcher};
use super::wire::{self, Command, Method, Rep};
use crate::node::apps::protocol::ErrorKind;
use crate::node::apps::{AppClient, AppError};

/// How long the accept loop waits before it looks at the stop flag again.
const ACCEPT_TICK: Duration = Duration::from_millis(200);
/// The pause after running out of descriptors.
const EMFILE_BACKOFF: Duration = Duration::from_millis(50);
/// The stack of a negotiating connection's thread.
const THREAD_STACK: usize = 128 * 1024;

/// What the client serves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The node's app socket.
    pub app_socket: PathBuf,
    /// The exit node's key.
    pub exit: PublicKey,
    /// The exit app's port on it.
    pub exit_port: u16,
    /// Where to listen.
    pub listen: SocketAddr,
    /// RFC 1929 credentials clients must give.
    pub auth: Option<(Vec<u8>, Vec<u8>)>,
    /// Connections open at once.
    pub connections: usize,
    /// Connections negotiating or dialing at once.
    pub half_open: usize,
    /// For a client's greeting, credentials and request.
    pub negotiation_timeout: Duration,
    /// For the stream to the exit.
    pub dial_timeout: Duration,
}

/// The client, bound and ready to serve.
#[derive(Debug)]
pub struct SocksClient {
    listener: TcpListener,
    options: Arc<ClientOptions>,
    tally: Arc<Tally>,
}

/// What one connection's thread shares with the others.
struct Shared {
    options: Arc<ClientOptions>,
    app: AppClient,
    tally: Arc<Tally>,
    watcher: Watcher,
    half_open: AtomicUsize,
}

impl SocksClient {
    /// Bind the listener (after raising the descriptor limit).
    pub fn bind(options: ClientOptions) -> io::Result<Self> {
        // Every connection holds two descriptors while it negotiates, one (the watch) after.
        crate::local::raise_fd_limit();
        let listener = TcpListener::bind(options.listen)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            options: Arc::new(options),
            tally: Arc::new(Tally::default()),
        })
    }

    /// The address it listens on (the port the system picked, if 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The figures, shared.
    pub fn tally(&self) -> Arc<Tally> {
        Arc::clone(&self.tally)
    }

    /// Serve until `stop` is set. Connections already handed over go on (the node carries
    /// them); those negotiating finish on their own threads.
    pub fn serve(self, stop: &AtomicBool) -> Result<(), AppError> {
        let app = AppClient::new(&self.options.app_socket);
        let shared = Arc::new(Shared {
            watcher: Watcher::start(&app, Arc::clone(&self.tally), "client")?,
            app,
            options: self.options,
            tally: self.tally,
            half_open: AtomicUsize::new(0),
        });
        let mut spare = File::open("/dev/null").ok();
        let tick = Timespec::try_from(ACCEPT_TICK).unwrap_or_default();
        let mut last_emfile_note: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if shared.half_open.load(Ordering::Acquire) >= shared.options.half_open.max(1) {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            match self.listener.accept() {
                Ok((conn, peer)) => {
                    shared.half_open.fetch_add(1, Ordering::AcqRel);
                    let shared_for_thread = Arc::clone(&shared);
                    let started = thread::Builder::new()
                        .name("socks-conn".to_owned())
                        .stack_size(THREAD_STACK)
                        .spawn(move || {
                            serve_connection(&shared_for_thread, conn, peer);
                            shared_for_thread.half_open.fetch_sub(1, Ordering::AcqRel);
                        });
                    if started.is_err() {
                        shared.half_open.fetch_sub(1, Ordering::AcqRel);
                        thread::sleep(EMFILE_BACKOFF);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
                    let _ = rustix::event::poll(&mut fds, Some(&tick));
                }
                Err(e) if is_out_of_descriptors(&e) => {
                    // Free the spare, take the connection, say no, take the spare back.
                    drop(spare.take());
                    if let Ok((conn, _)) = self.listener.accept() {
                        let _ = (&conn).write_all(&wire::method_reply(Method::NoAcceptable));
                    }
                    spare = File::open("/dev/null").ok();
                    if last_emfile_note.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        log::warn!(
                            "skywire socks client: out of file descriptors ({} open \
                             connections): refusing new ones for now",
                            shared.tally.open()
                        );
                        last_emfile_note = Some(Instant::now());
                    }
                    thread::sleep(EMFILE_BACKOFF);
                }
                Err(_) => thread::sleep(EMFILE_BACKOFF),
            }
        }
        Ok(())
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// How a negotiation ended early.
enum Stop {
    /// Close without a word.
    Close,
    /// Answer the request with this code, then close.
    Reply(Rep),
}

fn serve_connection(shared: &Shared, conn: TcpStream, peer: SocketAddr) {
    let options = &shared.options;
    let deadline = Instant::now() + options.negotiation_timeout;
    let _ = conn.set_nodelay(true);
    let request = match negotiate(&conn, options.auth.as_ref(), deadline) {
        Ok(request) => request,
        Err(Stop::Close) => return,
        Err(Stop::Reply(rep)) => return answer(&conn, rep, None),
    };
    let (request, len) = request;
    match request.command {
        Command::Bind => answer(&conn, Rep::CommandNotSupported, Some(len)),
        Command::UdpAssociate => {
            if consume(&conn, len).is_err() {
                return;
            }
            super::udp::client_association(shared.app.clone(), options, conn, peer, &request);
        }
        Command::Connect => connect(shared, conn, len),
    }
}

/// Greeting, credentials, and the request peeked: the request and its length.
fn negotiate(
    conn: &TcpStream,
    auth: Option<&(Vec<u8>, Vec<u8>)>,
    deadline: Instant,
) -> Result<(wire::Request, usize), Stop> {
    let mut buf: Vec<u8> = Vec::with_capacity(wire::MAX_AUTH_LEN);
    // Greeting: VER NMETHODS, then the methods.
    read_more(conn, &mut buf, 2, deadline)?;
    let (version, count) = match buf.as_slice() {
        [v, n] => (*v, usize::from(*n)),
        _ => return Err(Stop::Close),
    };
    if version != wire::VERSION {
        return Err(Stop::Close);
    }
    read_more(conn, &mut buf, count, deadline)?;
    let Ok(Some((greeting, _))) = wire::parse_greeting(&buf) else {
        return Err(Stop::Close);
    };
    let method = match auth {
        Some(_) if greeting.offers(Method::UsernamePassword) => Method::UsernamePassword,
        None if greeting.offers(Method::NoAuth) => Method::NoAuth,
        _ => Method::NoAcceptable,
    };
    write_all(conn, &wire::method_reply(method))?;
    if method == Method::NoAcceptable {
        return Err(Stop::Close);
    }
    if let Some((user, password)) = auth {
        // VER ULEN UNAME PLEN PASSWD, read piece by piece so nothing after it is taken.
        buf.clear();
        read_more(conn, &mut buf, 2, deadline)?;
        let ulen = usize::from(buf.get(1).copied().unwrap_or(0));
        read_more(conn, &mut buf, ulen + 1, deadline)?;
        let plen = usize::from(buf.last().copied().unwrap_or(0));
        read_more(conn, &mut buf, plen, deadline)?;
        let ok = matches!(
            wire::parse_auth(&buf),
            Ok(Some((credentials, _))) if credentials.matches(user, password)
        );
        write_all(conn, &wire::auth_reply(ok))?;
        if !ok {
            return Err(Stop::Close);
        }
    }
    // The request, peeked: VER CMD RSV ATYP and the first address byte tell its length.
    let mut request = [0u8; wire::MAX_REQUEST_LEN];
    let head = peek_exact(conn, &mut request, 5, deadline)?;
    let len = match (head.get(3), head.get(4)) {
        (Some(1), _) => 10,
        (Some(4), _) => 22,
        (Some(3), Some(n)) => 7 + usize::from(*n),
        _ => 5,
    };
    let whole = peek_exact(conn, &mut request, len, deadline)?;
    match wire::parse_request(whole) {
        Ok(Some((parsed, used))) => Ok((parsed, used)),
        Ok(None) => Err(Stop::Close),
        Err(e) => Err(e.rep().map_or(Stop::Close, Stop::Reply)),
    }
}

/// Read `n` more bytes onto `buf`.
fn read_more(conn: &TcpStream, buf: &mut Vec<u8>, n: usize, deadline: Instant) -> Result<(), Stop> {
    let start = buf.len();
    buf.resize(start + n, 0);
    read_exact(conn, buf.get_mut(start..).unwrap_or_default(), deadline)
}

fn read_exact(conn: &TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), Stop> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
        return Err(Stop::Close);
    }
    (&*conn).read_exact(buf).map_err(|_| Stop::Close)
}

/// Wait until `len` bytes are in the socket and copy them into `buf`, leaving them there.
fn peek_exact<'b>(
    conn: &TcpStream,
    buf: &'b mut [u8],
    len: usize,
    deadline: Instant,
) -> Result<&'b [u8], Stop> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
        return Err(Stop::Close);
    }
    let buf = buf.get_mut(..len).ok_or(Stop::Close)?;
    match rustix::net::recv(conn, &mut *buf, RecvFlags::PEEK | RecvFlags::WAITALL) {
        Ok((n, _)) if n == len => Ok(buf),
        _ => Err(Stop::Close),
    }
}

fn write_all(conn: &TcpStream, bytes: &[u8]) -> Result<(), Stop> {
    (&*conn).write_all(bytes).map_err(|_| Stop::Close)
}

/// Take `len` peeked bytes out of the socket.
fn consume(conn: &TcpStream, len: usize) -> io::Result<()> {
    let mut sink = [0u8; wire::MAX_REQUEST_LEN];
    (&*conn).read_exact(sink.get_mut(..len).unwrap_or_default())
}

/// Answer the request (its `len` bytes still in the socket, if known) with `rep` and close.
fn answer(conn: &TcpStream, rep: Rep, len: Option<usize>) {
    // Unread bytes would turn the close into a reset, which can overtake the reply.
    match len {
        Some(len) => {
            if consume(conn, len).is_err() {
                return;
            }
        }
        None => {
            let mut sink = [0u8; wire::MAX_REQUEST_LEN];
            let _ = rustix::net::recv(conn, &mut sink[..], RecvFlags::DONTWAIT);
        }
    }
    let _ = (&*conn).write_all(&wire::reply(rep));
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// The reply for a stream the node could not open to the exit.
pub(super) fn dial_failure(error: &AppError) -> Rep {
    match error.kind() {
        Some(ErrorKind::NoRoute) => Rep::NetworkUnreachable,
        Some(ErrorKind::Refused) => Rep::NotAllowed,
        Some(ErrorKind::Timeout) => Rep::TtlExpired,
        _ if matches!(error, AppError::Timeout { .. }) => Rep::TtlExpired,
        _ => Rep::GeneralFailure,
    }
}

fn connect(shared: &Shared, conn: TcpStream, len: usize) {
    let options = &shared.options;
    let limits = Limits {
        total: options.connections,
        per_key: 0,
        rate: 0,
    };
    let exit = options.exit;
    if let Err(full) = shared.tally.admit(exit, limits, Instant::now()) {
        log::warn!("skywire socks client: refused a connection: {full}");
        return answer(&conn, Rep::GeneralFailure, Some(len));
    }
    let stream = match shared
        .app
        .dial(exit, options.exit_port, options.dial_timeout)
    {
        Ok(stream) => stream,
        Err(error) => {
            shared.tally.ended(exit, 0, 0, true);
            shared.tally.refused(exit);
            log::warn!("skywire socks client: no stream to the exit: {error}");
            return answer(&conn, dial_failure(&error), Some(len));
        }
    };
    let _ = conn.set_read_timeout(None);
    let spare = conn.try_clone().ok();
    let id = stream.id();
    let watch = shared.watcher.expect(id, exit);
    match stream.hand_over(&shared.app, OwnedFd::from(conn), Some(watch)) {
        Ok(_) => {}
        Err(error) => {
            shared.watcher.forget(id);
            shared.tally.ended(exit, 0, 0, true);
            log::warn!("skywire socks client: the node did not take the connection: {error}");
            if let Some(conn) = spare {
                answer(&conn, Rep::GeneralFailure, Some(len));
            }
        }
    }
}
