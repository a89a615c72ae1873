//! The manager's TCP server: the I/O around [`ManagerCore`].
//!
//! - One thread accepts. It refuses (closes at once) a connection over any of three caps:
//!   [`MAX_CONNECTIONS`] in all; [`MAX_UNAUTHENTICATED`] that have not finished the key
//!   proof; [`MAX_UNAUTHENTICATED_PER_SOURCE`] of those from one source (an IPv4 address
//!   or an IPv6 /64). A place before the proof costs its sender only a TCP handshake, so
//!   without the last two, one host could hold every place for the whole auth timeout and
//!   lock every other node out. Refusals are logged through a budget (ten lines, then one
//!   a second, with a count of those left out), so a flood cannot flood the log.
//! - Each connection gets a reader thread: it runs the key proof under an absolute
//!   [`AUTH_TIMEOUT`], with frames before the proof limited to
//!   [`proto::MAX_AUTH_FRAME`] bytes, then decodes frames, checking their MACs, and
//!   passes them on stamped with the time they arrived. A connection that sends garbage,
//!   an oversized or truncated frame, a bad proof or a bad tag is closed and logged (before
//!   the proof, through a budget like refusals); nothing else is touched.
//! - Each authenticated connection gets a writer thread fed by a queue bounded in frames
//!   ([`SEND_QUEUE`]) and in bytes ([`SEND_QUEUE_BYTES`]): the core never blocks on a
//!   socket. A node that does not read its frames fills its queue and is closed; the byte
//!   bound keeps one that reads slowly from pinning a thousand 1 MiB views.
//! - One core thread owns the [`ManagerCore`] and the MAC states of what it sends. The
//!   channel into it is bounded, so readers slow down (TCP pushes back on their nodes)
//!   instead of growing memory; and it serves every event that is waiting before it
//!   looks at the clock, so a busy moment never makes heartbeats look missed.
//!
//! - A [`Heartbeat`] given with [`Manager::set_heartbeat`] (the systemd watchdog) is
//!   polled by the core thread after every round, which never waits longer than its
//!   deadline: a core thread that hangs stops the pings.
//!
//! The figures are [`ServerLimits::default`]; tests start servers with smaller ones.

mod admission;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use log::Level;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::engine::Heartbeat;

use super::core::{ConnId, ManagerCore, ManagerStats, Output};
use super::proto::{
    self, Auth, AuthOk, Bytes32, ConnectionEnd, Decoder, ErrorKind, Frame, FrameError, Hello, Key,
    Mac, ProtoError, kind,
};
use crate::local::ConnectionSlot;
use admission::{Admission, LogBudget, Proving, Refusal};

/// How long a new connection has, in all, to prove its key.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A single write blocked this long closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many connections at once; more are refused at accept.
pub const MAX_CONNECTIONS: usize = 4096;

/// At most this many connections that have not finished the key proof, from everyone.
/// An honest proof takes a round trip and an X25519, so 256 places let thousands of nodes
/// through a second (a restarted manager's whole mesh within its 2 s reconnect backoff),
/// and an attacker needs 32 sources to fill them.
pub const MAX_UNAUTHENTICATED: usize = 256;

/// At most this many of those from one source (an IPv4 address, an IPv6 /64). A node
/// has one connection; eight leave room for a few nodes behind one NAT reconnecting at
/// once (a refused node tries again within 2 s), and hold one host to 1/32 of the places.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 8;

/// Frames queued for one node; a node that lets more pile up is closed.
pub const SEND_QUEUE: usize = 1024;

/// Bytes queued for one node; a node that lets more pile up is closed. Room for four
/// full-size frames (the largest `NODES` answer is one), while one slow node pins at
/// most this, not [`SEND_QUEUE`] megabyte frames. A single frame larger than the bound is
/// still queued when nothing else is.
pub const SEND_QUEUE_BYTES: usize = 4 << 20;

/// The server's bounds. [`Default`] has the figures above; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`MAX_UNAUTHENTICATED`].
    pub max_unauthenticated: usize,
    /// See [`MAX_UNAUTHENTICATED_PER_SOURCE`].
    pub max_unauthenticated_per_source: usize,
    /// See [`AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// See [`SEND_QUEUE`].
    pub send_queue: usize,
    /// See [`SEND_QUEUE_BYTES`].
    pub send_queue_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_unauthenticated: MAX_UNAUTHENTICATED,
            max_unauthenticated_per_source: MAX_UNAUTHENTICATED_PER_SOURCE,
            auth_timeout: AUTH_TIMEOUT,
            send_queue: SEND_QUEUE,
            send_queue_bytes: SEND_QUEUE_BYTES,
        }
    }
}

/// Events waiting for the core thread; readers wait when it is full.
pub const EVENT_QUEUE: usize = 4096;

enum Event {
    Authenticated {
        conn: ConnId,
        key: PublicKey,
        writer: TcpStream,
        mac: Mac,
    },
    Frame(ConnId, Frame, Instant),
    Closed(ConnId, SocketAddr, ServeEnd),
    /// Poll this heartbeat after every round from now on.
    Heartbeat(Heartbeat),
    /// A snapshot for the metrics, answered on the channel.
    Stats(Sender<ManagerStats>),
}

/// How serving one connection ended.
#[derive(Debug, thiserror::Error)]
enum ServeEnd {
    /// The connection ended or failed while reading.
    #[error(transparent)]
    Read(#[from] ConnectionEnd),
    /// A socket call failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] FrameError),
    /// The peer failed the key proof (it was told why).
    #[error(transparent)]
    Refused(ProtoError),
    /// The system's random source failed.
    #[error("no randomness")]
    NoRandomness,
    /// The manager is stopping.
    #[error("manager stopping")]
    Stopping,
}

impl ServeEnd {
    /// The peer simply closed the connection: nothing worth a log line.
    fn is_quiet(&self) -> bool {
        matches!(self, Self::Read(ConnectionEnd::Closed))
    }
}

/// A running manager.
#[derive(Debug)]
pub struct Manager {
    /// The bound address.
    pub listen: SocketAddr,
    stats: StatsHandle,
    stop: Arc<AtomicBool>,
    /// Into the core thread (for [`Manager::set_heartbeat`]).
    events: Sender<Event>,
    accept: Option<std::thread::JoinHandle<()>>,
    core: Option<std::thread::JoinHandle<()>>,
}

impl Manager {
    /// Bind and start serving, with [`ServerLimits::default`].
    pub fn start(listen: SocketAddr, key: PrivateKey, core: ManagerCore) -> io::Result<Self> {
        Self::start_with(listen, key, core, ServerLimits::default())
    }

    /// Bind and start serving within `limits`.
    pub fn start_with(
        listen: SocketAddr,
        key: PrivateKey,
        core: ManagerCore,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (events, inbox) = bounded(EVENT_QUEUE);
        let stats = StatsHandle {
            events: events.clone(),
        };
        let key = Arc::new(key);
        let accept = {
            let (stop, events) = (Arc::clone(&stop), events.clone());
            std::thread::Builder::new()
                .name("manager-accept".into())
                .spawn(move || accept_loop(&listener, &key, &events, &stop, limits))?
        };
        let core_thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("manager-core".into())
                .spawn(move || core_loop(core, &inbox, &stop, limits))?
        };
        Ok(Self {
            listen,
            stats,
            stop,
            events,
            accept: Some(accept),
            core: Some(core_thread),
        })
    }

    /// Have the core thread poll `heartbeat` after every round (the systemd watchdog,
    /// [`crate::notify::Notifier::heartbeat`]): its beats stop when that thread hangs.
    /// False if the core thread is gone.
    pub fn set_heartbeat(&self, heartbeat: Heartbeat) -> bool {
        self.events.send(Event::Heartbeat(heartbeat)).is_ok()
    }

    /// A handle that asks the core for [`ManagerStats`] (the metrics' source).
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Stop accepting, close every connection and return.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Some(t) = self.core.take() {
            let _ = t.join();
        }
    }
}

/// Asks the running manager's core for a [`ManagerStats`] snapshot, between its events:
/// what the manager's metrics are written from. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    events: Sender<Event>,
}

/// Why no stats came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// The manager stopped.
    #[error("the manager has stopped")]
    Stopped,
    /// The core did not answer in time (its queue is full, or it is busy).
    #[error("the manager did not answer within {0:?}")]
    Timeout(Duration),
}

impl StatsHandle {
    /// A snapshot, waiting at most `timeout` in all.
    pub fn stats(&self, timeout: Duration) -> Result<ManagerStats, StatsError> {
        let (reply, answer) = bounded(1);
        self.events
            .send_timeout(Event::Stats(reply), timeout)
            .map_err(|e| match e {
                crossbeam_channel::SendTimeoutError::Timeout(_) => StatsError::Timeout(timeout),
                crossbeam_channel::SendTimeoutError::Disconnected(_) => StatsError::Stopped,
            })?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => StatsError::Timeout(timeout),
            RecvTimeoutError::Disconnected => StatsError::Stopped,
        })
    }
}

fn log(level: Level, line: &str) {
    log::log!(level, "skywire manager: {line}");
}

fn accept_loop(
    listener: &TcpListener,
    key: &Arc<PrivateKey>,
    events: &Sender<Event>,
    stop: &AtomicBool,
    limits: ServerLimits,
) {
    let live = Arc::new(AtomicUsize::new(0));
    let admission = Admission::new(
        limits.max_unauthenticated,
        limits.max_unauthenticated_per_source,
    );
    let mut refusals = LogBudget::new(Instant::now());
    let mut next = 1u64;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let admitted = ConnectionSlot::take_of(&live, limits.max_connections)
                    .ok_or(Refusal::Connections {
                        max: limits.max_connections,
                    })
                    .and_then(|slot| Ok((slot, admission.admit(peer.ip())?)));
                let (slot, proving) = match admitted {
                    Ok(places) => places,
                    Err(refusal) => {
                        // Closed at once: the peer sees the connection end before HELLO.
                        drop(stream);
                        let line = format!("connection from {peer} refused: {refusal}");
                        if let Some(line) = refusals.line(Instant::now(), line) {
                            log(Level::Warn, &line);
                        }
                        continue;
                    }
                };
                let conn = ConnId(next);
                next += 1;
                let (key, events) = (Arc::clone(key), events.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("manager-conn-{conn}"))
                    .spawn(move || {
                        let _slot = slot;
                        let end = match serve_connection(
                            conn,
                            stream,
                            &key,
                            &events,
                            proving,
                            limits.auth_timeout,
                        ) {
                            Ok(()) => ServeEnd::Read(ConnectionEnd::Closed),
                            Err(end) => end,
                        };
                        let _ = events.send(Event::Closed(conn, peer, end));
                    });
                // A failed spawn drops the closure, and the places with it.
                if spawned.is_err() {
                    log(Level::Error, "cannot start a connection thread");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(line) = refusals.flush(Instant::now()) {
                    log(Level::Warn, &format!("connections refused: {line}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log(Level::Error, &format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    if let Some(line) = refusals.finish() {
        log(Level::Warn, &format!("connections refused: {line}"));
    }
}

/// The key proof, then frames until the connection ends. `proving` is the connection's
/// place among those proving their keys, given back once the proof is done.
fn serve_connection(
    conn: ConnId,
    mut stream: TcpStream,
    key: &PrivateKey,
    events: &Sender<Event>,
    proving: Proving,
    auth_timeout: Duration,
) -> Result<(), ServeEnd> {
    let deadline = Some(Instant::now() + auth_timeout);
    stream.set_nonblocking(false)?;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let nonce = Bytes32::random().map_err(|_| ServeEnd::NoRandomness)?;
    let manager = key.public_key();
    let hello = Hello {
        version: proto::VERSION,
        manager: Key(manager),
        nonce,
    };
    let bytes = proto::encode(&Frame::request(kind::HELLO, 0, &hello), None)?;
    stream.write_all(&bytes)?;
    let mut decoder = Decoder::with_limit(proto::MAX_AUTH_FRAME);
    let frame = proto::read_frame(&mut stream, &mut decoder, None, deadline)?;
    let refuse = |stream: &mut TcpStream, id: u64, error: ProtoError| {
        if let Ok(bytes) = proto::encode(&Frame::error(kind::AUTH, id, &error), None) {
            let _ = stream.write_all(&bytes);
        }
        Err(ServeEnd::Refused(error))
    };
    if frame.kind != kind::AUTH {
        return refuse(
            &mut stream,
            frame.id,
            ProtoError::new(ErrorKind::Unauthenticated, "expected AUTH"),
        );
    }
    let auth: Auth = match frame.parse() {
        Ok(auth) => auth,
        Err(e) => return refuse(&mut stream, frame.id, e),
    };
    let Some(keys) = proto::session_keys(
        key,
        &auth.node.0,
        &manager,
        &auth.node.0,
        &nonce,
        &auth.nonce,
    ) else {
        return refuse(
            &mut stream,
            frame.id,
            ProtoError::new(ErrorKind::Unauthenticated, "unusable node key"),
        );
    };
    if !proto::proof_matches(&keys.node_proof, &auth.proof) {
        return refuse(
            &mut stream,
            frame.id,
            ProtoError::new(
                ErrorKind::Unauthenticated,
                format!("the proof for key {} is wrong", auth.node.0),
            ),
        );
    }
    let ok = Frame::ok(
        kind::AUTH,
        frame.id,
        &AuthOk {
            proof: keys.manager_proof,
        },
    );
    let bytes = proto::encode(&ok, None)?;
    stream.write_all(&bytes)?;
    drop(proving);
    let writer = stream.try_clone()?;
    events
        .send(Event::Authenticated {
            conn,
            key: auth.node.0,
            writer,
            mac: keys.manager_to_node,
        })
        .map_err(|_| ServeEnd::Stopping)?;
    // From here on the core closes silent nodes (heartbeats); no read timeout.
    stream.set_read_timeout(None)?;
    decoder.set_limit(proto::MAX_FRAME);
    let mut mac = keys.node_to_manager;
    loop {
        let frame = proto::read_frame(&mut stream, &mut decoder, Some(&mut mac), None)?;
        events
            .send(Event::Frame(conn, frame, Instant::now()))
            .map_err(|_| ServeEnd::Stopping)?;
    }
}

/// Why a frame could not be queued for a node.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] FrameError),
    /// The node does not read what is sent to it: its queue holds the most frames.
    #[error("{max} frames waiting: the node does not read")]
    Frames {
        /// The bound.
        max: usize,
    },
    /// The node does not read what is sent to it: its queue holds the most bytes.
    #[error("{queued} bytes waiting and {len} more to send, over {max}: the node does not read")]
    Bytes {
        /// Bytes in the queue (or being written).
        queued: usize,
        /// The frame that did not fit.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The writer thread ended (the connection failed).
    #[error("the connection is gone")]
    Gone,
}

/// The core's side of one connection: the queue to its writer thread, and the bytes in
/// it (counted until the writer has written them, so a blocked write still counts).
struct Writer {
    queue: Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    max_frames: usize,
    max_bytes: usize,
    stream: TcpStream,
    mac: Mac,
}

impl Writer {
    fn start(conn: ConnId, stream: TcpStream, mac: Mac, limits: &ServerLimits) -> io::Result<Self> {
        let (queue, frames) = bounded::<Vec<u8>>(limits.send_queue);
        let queued = Arc::new(AtomicUsize::new(0));
        let mut out = stream.try_clone()?;
        let written = Arc::clone(&queued);
        std::thread::Builder::new()
            .name(format!("manager-write-{conn}"))
            .spawn(move || {
                for bytes in frames {
                    let sent = out.write_all(&bytes);
                    written.fetch_sub(bytes.len(), Ordering::AcqRel);
                    if sent.is_err() {
                        let _ = out.shutdown(Shutdown::Both);
                        break;
                    }
                }
            })?;
        Ok(Self {
            queue,
            queued,
            max_frames: limits.send_queue,
            max_bytes: limits.send_queue_bytes,
            stream,
            mac,
        })
    }

    /// Queue `frame`; an error when the connection must be closed (a full queue, a dead
    /// writer).
    fn send(&mut self, frame: &Frame) -> Result<(), WriteError> {
        let bytes = proto::encode(frame, Some(&mut self.mac))?;
        let len = bytes.len();
        // Only the core thread adds, so the check and the add cannot race each other;
        // the writer only takes away.
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(len) > self.max_bytes {
            return Err(WriteError::Bytes {
                queued,
                len,
                max: self.max_bytes,
            });
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        match self.queue.try_send(bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => WriteError::Frames {
                        max: self.max_frames,
                    },
                    TrySendError::Disconnected(_) => WriteError::Gone,
                })
            }
        }
    }

    /// Bytes queued or being written now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn core_loop(
    mut core: ManagerCore,
    inbox: &Receiver<Event>,
    stop: &AtomicBool,
    limits: ServerLimits,
) {
    let mut writers: HashMap<ConnId, Writer> = HashMap::new();
    // Connections that failed before their proof come in floods too.
    let mut unproven = LogBudget::new(Instant::now());
    let mut heartbeat: Option<Heartbeat> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = core
            .next_deadline()
            .map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(now)
            })
            .min(Duration::from_millis(200))
            .min(heartbeat.as_ref().map_or(Duration::MAX, |h| h.wait(now)));
        let first = match inbox.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Everything already waiting, before the clock is looked at.
        let waiting = first.into_iter().chain(inbox.try_iter().take(EVENT_QUEUE));
        for event in waiting {
            match event {
                Event::Authenticated {
                    conn,
                    key,
                    writer,
                    mac,
                } => match Writer::start(conn, writer, mac, &limits) {
                    Ok(w) => {
                        writers.insert(conn, w);
                        core.authenticated(conn, key, Instant::now());
                    }
                    Err(e) => log(
                        Level::Error,
                        &format!("cannot start a writer for {key}: {e}"),
                    ),
                },
                Event::Frame(conn, frame, at) => core.frame(conn, frame, at),
                Event::Stats(reply) => {
                    // The asker may have given up; nothing to do then.
                    let _ = reply.try_send(core.stats());
                }
                Event::Closed(conn, peer, end) => {
                    if let Some(key) = core.conn_key(conn) {
                        log(
                            Level::Info,
                            &format!("connection of {key} ended: {peer}: {end}"),
                        );
                    } else if !end.is_quiet() {
                        let line = format!("connection refused: {peer}: {end}");
                        if let Some(line) = unproven.line(Instant::now(), line) {
                            log(Level::Warn, &line);
                        }
                    }
                    if let Some(w) = writers.remove(&conn) {
                        w.close();
                    }
                    core.disconnected(conn, Instant::now());
                }
                Event::Heartbeat(beat) => heartbeat = Some(beat),
            }
            apply(&mut core, &mut writers);
        }
        if let Some(line) = unproven.flush(Instant::now()) {
            log(Level::Warn, &format!("connections refused: {line}"));
        }
        core.tick(Instant::now());
        apply(&mut core, &mut writers);
        if let Some(heartbeat) = &mut heartbeat {
            heartbeat.poll(Instant::now());
        }
    }
    if let Some(line) = unproven.finish() {
        log(Level::Warn, &format!("connections refused: {line}"));
    }
    for (_, w) in writers {
        w.close();
    }
}

/// Carry out what the core asked for.
fn apply(core: &mut ManagerCore, writers: &mut HashMap<ConnId, Writer>) {
    for output in core.drain() {
        match output {
            Output::Log(level, line) => log(level, &line),
            Output::Send(conn, frame) => {
                let Some(w) = writers.get_mut(&conn) else {
                    continue;
                };
                if let Err(e) = w.send(&frame) {
                    log(Level::Warn, &format!("connection {conn}: {e}; closing"));
                    if let Some(w) = writers.remove(&conn) {
                        w.close();
                    }
                }
            }
            Output::Close(conn, reason) => {
                if let Some(w) = writers.remove(&conn) {
                    log(Level::Warn, &format!("closing connection {conn}: {reason}"));
                    w.close();
                }
            }
        }
    }
}
