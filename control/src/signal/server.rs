//! The signal server (inside viscript): accepts clients over TCP, lets in only those that
//! prove they hold their app's secret, keeps who registered with which id, and sends them
//! requests.
//!
//! - **Secrets.** The launcher tells the server each app's secret before it starts the app
//!   ([`SignalHandle::expect`]) and withdraws it when the app ends
//!   ([`SignalHandle::revoke`]). A connection opens with `Hello` and the server's nonce;
//!   the client's `Reg` must carry a proof made with the secret of the id it names, and
//!   only then is it registered and answered with the server's own proof
//!   ([`super::auth`]). A registration without a proof, with a wrong one or for an id
//!   nobody expects is answered `{"Error": ...}`, the connection is closed, and the
//!   refusal is queued for the launcher to log ([`SignalHandle::take_refusals`]).
//! - **Threads.** One accept thread, waiting in `poll(2)` for a connection or the stop
//!   ([`StopSignal::accept_until_stopped`]: a client is accepted at once, `stop` ends the
//!   thread at once, and an idle server never wakes), and one reader thread per
//!   connection that decodes frames and hands each reply to the request waiting for it.
//!   Requests are written from the caller's thread under the connection's write lock, so
//!   any number of requests, to one client or many, may be outstanding at once; each
//!   waits on its own channel, with its own timeout.
//! - **Registration.** A connection must register within [`REGISTER_TIMEOUT`] or is
//!   closed. A client that proves the secret of an id already held by another connection
//!   takes it over (it is the same app, reconnected); the old connection is closed. A
//!   connection registers once: a request from it afterwards closes it. The echo is
//!   written before any request can be.
//! - **Bad input.** A malformed frame (see [`super::frame`]), a reply nobody waits for
//!   with a bad id, or a request from a registered client close that connection only.
//!   At most [`MAX_CLIENTS`] connections are served at once.
//!
//! Locks are taken in one order: a connection's writer, then the secrets, then the
//! clients. Closing a connection uses a clone of its socket and takes no lock of it.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use super::auth::{self, Nonce, Refusal, Secret};
use super::frame::{Decoder, Frame};
use crate::local::{ConnectionSlot, StopSignal};
use crate::terminal;

/// A connection that has not registered within this time is closed.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many client connections at once.
pub const MAX_CLIENTS: usize = 256;

/// A write that blocks this long (a client that stopped reading) closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Refusals kept until the launcher takes them; more are only counted.
const MAX_QUEUED_REFUSALS: usize = 64;

/// Why a request to a client failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No client is registered with that id.
    #[error("no signal client is registered with id {0}")]
    NotRegistered(u64),
    /// The client did not answer in time.
    #[error("signal client {id} did not answer within {timeout:?}")]
    Timeout {
        /// The client's id.
        id: u64,
        /// How long we waited.
        timeout: Duration,
    },
    /// The connection closed before the answer came.
    #[error("signal client {0} disconnected before answering")]
    Disconnected(u64),
    /// The client answered with an error.
    #[error("signal client {id} refused: {}", terminal::safe(.message))]
    Refused {
        /// The client's id.
        id: u64,
        /// Its `Error` text, as it sent it (shown with control characters escaped).
        message: String,
    },
}

/// A registration the server refused, for the launcher to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Where the connection came from.
    pub peer: Option<SocketAddr>,
    /// Why it was refused.
    pub refusal: Refusal,
}

/// Refusals not yet taken, and how many more there were.
#[derive(Debug, Default)]
struct Refusals {
    queue: VecDeque<Refused>,
    dropped: u64,
}

/// A connected client.
struct Conn {
    writer: Mutex<TcpStream>,
    /// A clone of the socket, to close it without waiting for the writer.
    closer: TcpStream,
    /// Requests waiting for their reply, by request id.
    pending: Mutex<HashMap<u64, mpsc::Sender<Frame>>>,
}

/// State shared by the accept thread, the connection threads and the handles.
struct Shared {
    /// The secret of every app expected to register, by id.
    secrets: Mutex<HashMap<u64, Secret>>,
    clients: Mutex<HashMap<u64, Arc<Conn>>>,
    refusals: Mutex<Refusals>,
    next_request: AtomicU64,
    stop: StopSignal,
    active: Arc<AtomicUsize>,
    local: SocketAddr,
}

/// Lock a mutex, carrying on after a panic elsewhere: the maps stay consistent under every
/// single operation done on them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A bound signal server, not yet accepting.
pub struct SignalServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Sends requests to registered clients; cheap to clone.
#[derive(Clone)]
pub struct SignalHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SignalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalHandle")
            .field("local", &self.shared.local)
            .finish_non_exhaustive()
    }
}

impl SignalServer {
    /// Bind to `addr` (`127.0.0.1:0` picks a free port).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                secrets: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                refusals: Mutex::new(Refusals::default()),
                next_request: AtomicU64::new(1),
                stop: StopSignal::new()?,
                active: Arc::new(AtomicUsize::new(0)),
                local,
            }),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Accept clients on a new thread until [`SignalHandle::stop`].
    pub fn spawn(self) -> io::Result<SignalHandle> {
        let handle = SignalHandle {
            shared: Arc::clone(&self.shared),
        };
        thread::Builder::new()
            .name("signal-accept".to_owned())
            .spawn(move || self.serve())?;
        Ok(handle)
    }

    fn serve(self) {
        let shared = &self.shared;
        shared.stop.accept_until_stopped(
            "signal server",
            self.listener.as_fd(),
            || self.listener.accept(),
            |(stream, _)| {
                let Some(slot) = ConnectionSlot::take_of(&shared.active, MAX_CLIENTS) else {
                    return; // dropped: closed
                };
                let shared = Arc::clone(shared);
                let _ = thread::Builder::new()
                    .name("signal-conn".to_owned())
                    .spawn(move || {
                        let _slot = slot;
                        serve_connection(stream, &shared);
                    });
            },
        );
    }
}

impl SignalHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Whether a client is registered with `id`.
    pub fn is_registered(&self, id: u64) -> bool {
        lock(&self.shared.clients).contains_key(&id)
    }

    /// The registered ids, in no order.
    pub fn registered(&self) -> Vec<u64> {
        lock(&self.shared.clients).keys().copied().collect()
    }

    /// Send request `op` with `body` to client `id` and wait at most `timeout` for its
    /// reply body. A reply body `{"Error": text}` is [`SignalError::Refused`].
    pub fn request(
        &self,
        id: u64,
        op: u8,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, SignalError> {
        let conn = lock(&self.shared.clients)
            .get(&id)
            .cloned()
            .ok_or(SignalError::NotRegistered(id))?;
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        lock(&conn.pending).insert(request, tx);
        let bytes = Frame::request(op, request, body)
            .encode()
            .map_err(|_| SignalError::Disconnected(id))?;
        let written = lock(&conn.writer).write_all(&bytes);
        if written.is_err() {
            lock(&conn.pending).remove(&request);
            let _ = conn.closer.shutdown(Shutdown::Both);
            return Err(SignalError::Disconnected(id));
        }
        let reply = rx.recv_timeout(timeout);
        lock(&conn.pending).remove(&request);
        match reply {
            Ok(frame) => match frame.body.get("Error") {
                Some(message) => Err(SignalError::Refused {
                    id,
                    message: message.as_str().unwrap_or("(not text)").to_owned(),
                }),
                None => Ok(frame.body),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => Err(SignalError::Timeout { id, timeout }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(SignalError::Disconnected(id)),
        }
    }

    /// Expect app `id` to register with `secret` (call before starting it). A connection
    /// registered as `id` before, with an older secret, is closed.
    pub fn expect(&self, id: u64, secret: Secret) {
        let mut secrets = lock(&self.shared.secrets);
        secrets.insert(id, secret);
        close_registration(&self.shared, id);
    }

    /// App `id` ended: forget its secret and close its registration, so nobody else can
    /// register as `id`.
    pub fn revoke(&self, id: u64) {
        let mut secrets = lock(&self.shared.secrets);
        secrets.remove(&id);
        close_registration(&self.shared, id);
    }

    /// The refusals since the last call, oldest first, and how many more were refused but
    /// not kept (at most 64 are kept between calls).
    pub fn take_refusals(&self) -> (Vec<Refused>, u64) {
        let mut refusals = lock(&self.shared.refusals);
        let dropped = std::mem::take(&mut refusals.dropped);
        (refusals.queue.drain(..).collect(), dropped)
    }

    /// Stop accepting and close every connection.
    pub fn stop(&self) {
        self.shared.stop.stop();
        for conn in lock(&self.shared.clients).drain().map(|(_, c)| c) {
            let _ = conn.closer.shutdown(Shutdown::Both);
        }
    }
}

/// Close the connection registered as `id`, if any (the secrets lock is held).
fn close_registration(shared: &Shared, id: u64) {
    if let Some(conn) = lock(&shared.clients).remove(&id) {
        let _ = conn.closer.shutdown(Shutdown::Both);
    }
}

/// Queue a refusal for the launcher.
fn record(shared: &Shared, peer: Option<SocketAddr>, refusal: Refusal) {
    let mut refusals = lock(&shared.refusals);
    if refusals.queue.len() < MAX_QUEUED_REFUSALS {
        refusals.queue.push_back(Refused { peer, refusal });
    } else {
        refusals.dropped = refusals.dropped.saturating_add(1);
    }
}

/// Read frames from one connection until it closes or misbehaves.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_read_timeout(Some(REGISTER_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    let (Ok(writer), Ok(closer), Ok(()), Ok(nonce)) = (
        stream.try_clone(),
        stream.try_clone(),
        setup,
        Nonce::random(),
    ) else {
        return;
    };
    let peer = stream.peer_addr().ok();
    let conn = Arc::new(Conn {
        writer: Mutex::new(writer),
        closer,
        pending: Mutex::new(HashMap::new()),
    });
    if !send(&conn, &auth::hello(&nonce)) {
        return;
    }
    let mut registered: Option<u64> = None;
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut reader = &stream;
    'read: loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break, // includes the registration timeout
        };
        decoder.push(buf.get(..n).unwrap_or_default());
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            if registered.is_none() {
                match register(shared, &conn, &nonce, &frame) {
                    Ok(id) => registered = Some(id),
                    Err(refusal) => {
                        let _ = send(&conn, &frame.reply(json!({"Error": refusal.to_string()})));
                        record(shared, peer, refusal);
                        break 'read;
                    }
                }
                // Registered clients may stay quiet for as long as they like.
                if stream.set_read_timeout(None).is_err() {
                    break 'read;
                }
                continue;
            }
            if !frame.is_reply() {
                break 'read; // a client makes no requests once registered
            }
            // A reply nobody waits for any more (timed out) is dropped quietly.
            if let Some(tx) = lock(&conn.pending).remove(&frame.request) {
                let _ = tx.send(frame);
            }
        }
    }
    if let Some(id) = registered {
        unregister(shared, id, &conn);
    }
    let _ = stream.shutdown(Shutdown::Both);
    // Waiting requests see their channel close: `Disconnected`.
    lock(&conn.pending).clear();
}

/// Write `frame` on `conn`; whether it was written.
fn send(conn: &Conn, frame: &Frame) -> bool {
    frame
        .encode()
        .ok()
        .is_some_and(|bytes| lock(&conn.writer).write_all(&bytes).is_ok())
}

/// Check the client's first frame and, if it proves its secret, register `conn` under
/// its id and write the echo, before any request can be written to it.
fn register(
    shared: &Shared,
    conn: &Arc<Conn>,
    nonce: &Nonce,
    frame: &Frame,
) -> Result<u64, Refusal> {
    let mut writer = lock(&conn.writer);
    let accepted = {
        let secrets = lock(&shared.secrets);
        let accepted = auth::check_registration(nonce, frame, |id| secrets.get(&id).cloned())?;
        let previous = lock(&shared.clients).insert(accepted.id, Arc::clone(conn));
        if let Some(previous) = previous
            && !Arc::ptr_eq(&previous, conn)
        {
            let _ = previous.closer.shutdown(Shutdown::Both);
        }
        accepted
    };
    // A failed write closes the connection: the reader sees it end and unregisters it.
    if let Ok(bytes) = accepted.echo.encode()
        && writer.write_all(&bytes).is_err()
    {
        let _ = conn.closer.shutdown(Shutdown::Both);
    }
    Ok(accepted.id)
}

/// Forget `id` if it is still this connection's.
fn unregister(shared: &Shared, id: u64, conn: &Arc<Conn>) {
    let mut clients = lock(&shared.clients);
    if clients.get(&id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
        clients.remove(&id);
    }
}
