//! The driver's side of apps' streams: the app connections the control plane attached
//! (Unix sockets, one per stream), the sockets apps handed streams over to, the dials and
//! listeners waiting for the stack, and the pumping of bytes between each connection and
//! its stream's socket.
//!
//! A connection carries the stream in [`appframe`] frames. Towards the app, a DATA frame's
//! header announces what the socket's receive buffer holds and its payload is written
//! straight from that buffer (`writev` of header and payload; nothing is dequeued until
//! the kernel took it). From the app, the engine reads at most as many bytes as the stream's
//! send buffer has room for, so every DATA payload read fits; a stream whose send buffer is
//! full is not read from until its ACKs make room (the stack then lists it as ready). So
//! both directions are paced by TCP's windows and the socket buffers: a slow reader at
//! either end slows the writer, and nothing queues without bound.
//!
//! **Handing over.** An app may give the engine a stream socket of its own for an attached
//! stream (`docs/APPS.md`, "Handing a stream to a socket"; the SOCKS apps hand over the
//! client's TCP connection and the connection to the destination). The engine then finishes
//! the frame it is writing, sends a HANDED frame, and stops writing frames; it goes on
//! reading the app's frames until the app closes the connection (the app meanwhile writes
//! the bytes it had received before HANDED to its socket, so nothing is reordered). From
//! then on the stream's bytes move between the stack and that socket as they are, with no
//! frames: the socket's end of input is the app's FIN, the stack's FIN is a
//! `shutdown(SHUT_WR)`, and a reset closes the socket abortively (the program on it sees
//! a TCP reset).
//!
//! **Watches.** An app may keep one connection as a watch (`{"op":"watch"}`) and name it
//! when it hands streams over: the engine writes one `ended` line on it per such stream
//! when it ends (its id, the bytes moved each way, the error if it was reset). One watch
//! serves any number of streams, so a handed-over stream costs the node one descriptor (its
//! socket) and the app none. Lines the app does not read wait in the watch's buffer, up to
//! [`WATCH_BACKLOG`] bytes; past that the watch is closed (its app is not reading).
//!
//! End of a connection: the app's end of input at a frame boundary is its FIN (a
//! half-close); in the middle of a frame, or a RESET frame, or a write that fails, aborts the
//! stream. A stream that ends cleanly gets its FIN frame and the connection is closed; one
//! that is reset gets a RESET frame with the reason (best effort) and is closed.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::core::{NodeCore, NodeIo};
use crate::stack::appframe::{self, Decoder, Frame, Kind};
use crate::stack::{ListenerId, Owner, StackEvent, StreamError, StreamId, StreamInfo};
use crate::sys::socket as sock;

/// Tokens of app connections are this plus the stream id.
pub(super) const APP_TOKEN_BASE: usize = 16;

/// Tokens of watches are this plus the watch id (far above any stream's).
const WATCH_TOKEN_BASE: usize = 1 << 48;

/// Bytes of `ended` lines a watch holds for an app that does not read them.
pub const WATCH_BACKLOG: usize = 4 << 20;

/// A watch's id on its node, never reused while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u64);

/// A watch: its connection, its owner, and the lines not written yet.
#[derive(Debug)]
struct Watch {
    socket: UnixStream,
    owner: Owner,
    pending: Vec<u8>,
}

/// Bytes read from an app connection at once (at most the stream's free send buffer).
const READ_CHUNK: usize = 256 * 1024;

/// One attached stream's app side.
#[derive(Debug)]
struct AppConn {
    owner: Owner,
    side: Side,
    /// The node sent the app its FIN (a FIN frame, or `shutdown(SHUT_WR)` on a handed
    /// socket).
    fin_sent: bool,
    /// The app's end of input was seen (its FIN).
    read_eof: bool,
    /// The stack said the stream ended cleanly; close once the FIN is out.
    closing: bool,
    /// Stream bytes taken from the app, and given to it.
    from_app: u64,
    to_app: u64,
    /// The watch told how a handed-over stream ended.
    watch: Option<WatchId>,
}

/// How the app side moves the stream's bytes.
#[derive(Debug)]
enum Side {
    /// In frames on the app's connection; `handing` once the app handed a socket over.
    Framed {
        conn: Framed,
        handing: Option<Handing>,
    },
    /// As they are, on the socket the app handed over.
    Plain(OwnedFd),
}

/// A hand-over in progress: the socket, and whether the HANDED frame is out.
#[derive(Debug)]
struct Handing {
    socket: OwnedFd,
    marker_sent: bool,
}

/// The framed connection and where its writing stands.
#[derive(Debug)]
struct Framed {
    socket: UnixStream,
    decoder: Decoder,
    /// The header of the frame being written, and how many of its bytes are still to go.
    header: [u8; appframe::HEADER_LEN],
    header_left: usize,
    /// Payload bytes of the DATA frame being written still to go.
    frame_left: usize,
}

impl Framed {
    fn mid_frame(&self) -> bool {
        self.header_left > 0 || self.frame_left > 0
    }

    fn start(&mut self, kind: Kind, len: usize) {
        self.header = appframe::header(kind, len);
        self.header_left = appframe::HEADER_LEN;
        self.frame_left = if kind == Kind::Data { len } else { 0 };
    }
}

/// Every app connection of the engine, and the dials and listeners in flight.
#[derive(Debug, Default)]
pub(super) struct Apps {
    conns: HashMap<StreamId, AppConn>,
    dials: HashMap<StreamId, Sender<Result<StreamInfo, StreamError>>>,
    listeners: HashMap<ListenerId, Sender<StreamInfo>>,
    next_listener: u64,
    watches: HashMap<WatchId, Watch>,
    next_watch: u64,
    /// Streams to serve this turn (readiness from mio and from the stack).
    due: Vec<StreamId>,
    scratch: Vec<u8>,
}

/// What became of a connection after serving it.
enum Fate {
    Keep,
    /// Close it.
    Close(Ending),
    /// The app closed its framed connection after handing the stream over.
    Switch,
}

/// How a stream's app side ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Both sides closed the stream.
    Clean,
    /// The stream was reset for this reason: the app gets a RESET frame, or its handed
    /// socket an abortive close.
    Reset(StreamError),
    /// The app broke the stream or went away (it was told already, or cannot be): no
    /// RESET frame, but a handed socket still closes abortively.
    Broken(StreamError),
}

impl Ending {
    fn error(self) -> Option<StreamError> {
        match self {
            Self::Clean => None,
            Self::Reset(e) | Self::Broken(e) => Some(e),
        }
    }
}

impl Apps {
    /// A listener id, never reused.
    pub(super) fn new_listener(&mut self, sender: Sender<StreamInfo>) -> ListenerId {
        self.next_listener += 1;
        let id = ListenerId(self.next_listener);
        self.listeners.insert(id, sender);
        id
    }

    pub(super) fn forget_listener(&mut self, id: ListenerId) {
        self.listeners.remove(&id);
    }

    pub(super) fn wait_dial(
        &mut self,
        id: StreamId,
        reply: Sender<Result<StreamInfo, StreamError>>,
    ) {
        self.dials.insert(id, reply);
    }

    /// Take over an attached stream's connection, after writing `greeting` on it.
    pub(super) fn add(
        &mut self,
        registry: &Registry,
        id: StreamId,
        owner: Owner,
        socket: std::os::unix::net::UnixStream,
        greeting: &[u8],
    ) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        // A line into a connection that carried only the app's request: it fits whole.
        if (&socket).write(greeting)? < greeting.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut socket = UnixStream::from_std(socket);
        registry.register(
            &mut socket,
            token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns.insert(
            id,
            AppConn {
                owner,
                side: Side::Framed {
                    conn: Framed {
                        socket,
                        decoder: Decoder::new(),
                        header: [0; appframe::HEADER_LEN],
                        header_left: 0,
                        frame_left: 0,
                    },
                    handing: None,
                },
                fin_sent: false,
                read_eof: false,
                closing: false,
                from_app: 0,
                to_app: 0,
                watch: None,
            },
        );
        self.due.push(id);
        Ok(())
    }

    /// The app hands an attached stream over to `socket` (a stream socket of its own);
    /// `watch`, if given, is told how the stream ended. Only the stream's owner (and the
    /// watch's) or root may.
    pub(super) fn hand_over(
        &mut self,
        id: StreamId,
        owner: Owner,
        socket: OwnedFd,
        watch: Option<WatchId>,
    ) -> Result<(), StreamError> {
        let mine = |o: Owner| o == owner || owner == Owner(0);
        if let Some(w) = watch
            && !self.watches.get(&w).is_some_and(|w| mine(w.owner))
        {
            return Err(StreamError::UnknownStream);
        }
        let conn = self
            .conns
            .get_mut(&id)
            .filter(|c| mine(c.owner))
            .ok_or(StreamError::UnknownStream)?;
        let Side::Framed { handing, .. } = &mut conn.side else {
            return Err(StreamError::UnknownStream);
        };
        if handing.is_some() || !sock::is_stream_socket(socket.as_fd()) {
            return Err(StreamError::UnknownStream);
        }
        *handing = Some(Handing {
            socket,
            marker_sent: false,
        });
        conn.watch = watch;
        self.due.push(id);
        Ok(())
    }

    /// A new watch on `socket` for `owner`, after writing the `ok` line with its id (so no
    /// `ended` line can come first).
    pub(super) fn watch(
        &mut self,
        registry: &Registry,
        owner: Owner,
        socket: std::os::unix::net::UnixStream,
    ) -> io::Result<WatchId> {
        self.next_watch += 1;
        let id = WatchId(self.next_watch);
        socket.set_nonblocking(true)?;
        let ok = format!("{{\"ok\":{{\"watch\":{}}}}}\n", id.0);
        if (&socket).write(ok.as_bytes())? < ok.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut socket = UnixStream::from_std(socket);
        registry.register(
            &mut socket,
            watch_token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.watches.insert(
            id,
            Watch {
                socket,
                owner,
                pending: Vec::new(),
            },
        );
        Ok(id)
    }

    /// A watch's connection is ready: write what waits; an app that closed it (or sent
    /// anything: it must not) ends it.
    fn serve_watch(&mut self, registry: &Registry, id: WatchId) {
        let Some(watch) = self.watches.get_mut(&id) else {
            return;
        };
        let mut byte = [0u8; 1];
        let gone = match watch.socket.read(&mut byte) {
            Ok(_) => true,
            Err(e) => !would_block(&e),
        };
        if gone || flush_watch(watch).is_err() {
            self.drop_watch(registry, id);
        }
    }

    fn drop_watch(&mut self, registry: &Registry, id: WatchId) {
        if let Some(mut watch) = self.watches.remove(&id) {
            let _ = registry.deregister(&mut watch.socket);
        }
    }

    /// Queue `line` on watch `id` and write what it can.
    fn tell_watch(&mut self, registry: &Registry, id: WatchId, line: &str) {
        let Some(watch) = self.watches.get_mut(&id) else {
            return;
        };
        if watch.pending.len() + line.len() > WATCH_BACKLOG {
            // Its app does not read: it would hold memory without bound.
            self.drop_watch(registry, id);
            return;
        }
        watch.pending.extend_from_slice(line.as_bytes());
        if flush_watch(watch).is_err() {
            self.drop_watch(registry, id);
        }
    }

    /// mio said the connection of this token is ready.
    pub(super) fn wake(&mut self, registry: &Registry, token: Token) {
        if let Some(id) = token
            .0
            .checked_sub(WATCH_TOKEN_BASE)
            .and_then(|n| u64::try_from(n).ok())
        {
            self.serve_watch(registry, WatchId(id));
        } else if let Some(id) = token
            .0
            .checked_sub(APP_TOKEN_BASE)
            .and_then(|n| u64::try_from(n).ok())
        {
            self.due.push(StreamId(id));
        }
    }

    /// Serve the connections that are due, pass the stack's events on, and send what the
    /// stack queued meanwhile.
    pub(super) fn serve(
        &mut self,
        registry: &Registry,
        core: &mut NodeCore,
        now: Instant,
        io: &mut impl NodeIo,
    ) {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK];
        }
        for _ in 0..4 {
            core.stack().drain_ready(&mut self.due);
            self.due.sort_unstable();
            self.due.dedup();
            let due = std::mem::take(&mut self.due);
            for id in &due {
                let Some(conn) = self.conns.get_mut(id) else {
                    continue;
                };
                match serve_one(core, now, *id, conn, &mut self.scratch) {
                    Fate::Keep => {}
                    Fate::Close(ending) => self.close(registry, *id, ending),
                    Fate::Switch => {
                        if switch(registry, *id, conn).is_err() {
                            core.stack().abort(now, *id, StreamError::AppGone);
                            self.close(registry, *id, Ending::Broken(StreamError::AppGone));
                        } else {
                            // Serve it again at once: bytes may wait either way.
                            self.due.push(*id);
                        }
                    }
                }
            }
            let mut due = due;
            due.clear();
            due.append(&mut self.due);
            self.due = due;
            core.flush_stack(now, io);
            let events: Vec<StackEvent> = core.stack().drain_events().collect();
            if events.is_empty() && self.due.is_empty() {
                break;
            }
            for event in events {
                self.event(registry, core, now, event);
            }
            core.flush_stack(now, io);
        }
    }

    fn event(&mut self, registry: &Registry, core: &mut NodeCore, now: Instant, event: StackEvent) {
        match event {
            StackEvent::Connected(info) => {
                let taken = self
                    .dials
                    .remove(&info.id)
                    .is_some_and(|reply| reply.send(Ok(info)).is_ok());
                if !taken {
                    // Whoever dialed gave up: nobody will attach it.
                    core.stack().abort(now, info.id, StreamError::NotTaken);
                }
            }
            StackEvent::DialFailed(id, error) => {
                if let Some(reply) = self.dials.remove(&id) {
                    let _ = reply.send(Err(error));
                }
            }
            StackEvent::Arrived { listener, info } => {
                let taken = self
                    .listeners
                    .get(&listener)
                    .is_some_and(|tx| tx.try_send(info).is_ok());
                if !taken {
                    core.stack().abort(now, info.id, StreamError::NotTaken);
                }
            }
            StackEvent::Ended { id, error } => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                match error {
                    Some(error) => self.close(registry, id, Ending::Reset(error)),
                    None => {
                        conn.closing = true;
                        if let Fate::Close(ending) = finish_clean(conn) {
                            self.close(registry, id, ending);
                        }
                    }
                }
            }
        }
    }

    /// Close a stream's app side (see [`Ending`]); the watch of a handed-over stream gets
    /// the `ended` line.
    fn close(&mut self, registry: &Registry, id: StreamId, ending: Ending) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let AppConn {
            side,
            watch,
            from_app,
            to_app,
            ..
        } = conn;
        let abortive = ending.error().is_some();
        match side {
            Side::Framed { mut conn, handing } => {
                if let Ending::Reset(error) = ending {
                    // Best effort: the app may be gone or full; it is closed either way.
                    let reason = format!("{}: {error}", error.kind());
                    let _ = conn.socket.write(&appframe::reset(&reason));
                }
                let _ = registry.deregister(&mut conn.socket);
                if let Some(handing) = handing
                    && abortive
                {
                    let _ = sock::reset_on_close(handing.socket.as_fd());
                }
            }
            Side::Plain(socket) => {
                if abortive {
                    let _ = sock::reset_on_close(socket.as_fd());
                }
                let _ = registry.deregister(&mut SourceFd(&socket.as_raw_fd()));
            }
        }
        if let Some(watch) = watch {
            let error = ending
                .error()
                .map_or_else(|| "null".to_owned(), |e| format!("\"{}\"", e.kind()));
            let line = format!(
                "{{\"ended\":{{\"stream\":{},\"sent\":{from_app},\"received\":{to_app},\"error\":{error}}}}}\n",
                id.0
            );
            self.tell_watch(registry, watch, &line);
        }
    }

    /// Close every connection (the node stops).
    pub(super) fn close_all(&mut self, registry: &Registry) {
        let ids: Vec<StreamId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(registry, id, Ending::Reset(StreamError::Shutdown));
        }
        for (_, reply) in self.dials.drain() {
            let _ = reply.send(Err(StreamError::Shutdown));
        }
        self.listeners.clear();
        let watches: Vec<WatchId> = self.watches.keys().copied().collect();
        for id in watches {
            if let Some(watch) = self.watches.get_mut(&id) {
                let _ = flush_watch(watch);
            }
            self.drop_watch(registry, id);
        }
    }
}

fn watch_token(id: WatchId) -> Token {
    Token(WATCH_TOKEN_BASE + usize::try_from(id.0).unwrap_or(usize::MAX - WATCH_TOKEN_BASE))
}

/// Write what a watch holds, as far as its socket takes it; an error when it is broken.
fn flush_watch(watch: &mut Watch) -> io::Result<()> {
    while !watch.pending.is_empty() {
        match watch.socket.write(&watch.pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                watch.pending.drain(..n.min(watch.pending.len()));
            }
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn token(id: StreamId) -> Token {
    Token(APP_TOKEN_BASE + usize::try_from(id.0).unwrap_or(usize::MAX - APP_TOKEN_BASE))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// The app closed its framed connection after handing over: move to the handed socket.
fn switch(registry: &Registry, id: StreamId, conn: &mut AppConn) -> io::Result<()> {
    let Side::Framed {
        conn: framed,
        handing,
    } = &mut conn.side
    else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let handing = handing.take().ok_or(io::ErrorKind::InvalidInput)?;
    let _ = registry.deregister(&mut framed.socket);
    let socket = handing.socket;
    registry.register(
        &mut SourceFd(&socket.as_raw_fd()),
        token(id),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    if conn.fin_sent {
        // The FIN frame went out before HANDED; the app passed it on to its socket.
        let _ = sock::shutdown_write(socket.as_fd());
    }
    // Drops (closes) the framed connection.
    conn.side = Side::Plain(socket);
    Ok(())
}

/// Move what can move between one app side and its stream.
fn serve_one(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    conn: &mut AppConn,
    scratch: &mut [u8],
) -> Fate {
    let to = match &mut conn.side {
        Side::Framed {
            conn: framed,
            handing,
        } => to_app_framed(
            core,
            now,
            id,
            framed,
            handing.as_mut(),
            &mut conn.fin_sent,
            &mut conn.to_app,
        ),
        Side::Plain(socket) => {
            to_app_plain(core, now, id, socket, &mut conn.fin_sent, &mut conn.to_app)
        }
    };
    if !to {
        core.stack().abort(now, id, StreamError::AppGone);
        return Fate::Close(Ending::Broken(StreamError::AppGone));
    }
    if conn.closing {
        return finish_clean(conn);
    }
    let from = match &mut conn.side {
        Side::Framed {
            conn: framed,
            handing,
        } => from_app_framed(
            core,
            now,
            id,
            framed,
            handing.is_some(),
            &mut conn.read_eof,
            &mut conn.from_app,
            scratch,
        ),
        Side::Plain(socket) => from_app_plain(
            core,
            now,
            id,
            socket,
            &mut conn.read_eof,
            &mut conn.from_app,
            scratch,
        )
        .map(|()| false),
    };
    match from {
        Ok(false) => Fate::Keep,
        Ok(true) => Fate::Switch,
        Err(error) => {
            if error == StreamError::AppProtocol
                && let Side::Framed { conn: framed, .. } = &mut conn.side
            {
                let frame = appframe::reset("app_protocol: the app broke the stream protocol");
                let _ = framed.socket.write(&frame);
            }
            core.stack().abort(now, id, error);
            Fate::Close(Ending::Broken(error))
        }
    }
}

/// After a clean end: the FIN out (if the stack had not let it go yet), then close.
fn finish_clean(conn: &mut AppConn) -> Fate {
    match &mut conn.side {
        Side::Framed {
            conn: framed,
            handing,
        } => {
            if framed.mid_frame() {
                return Fate::Keep;
            }
            if handing.is_some() {
                // The app is still passing on what it got before HANDED; the FIN goes
                // once it switched.
                return Fate::Keep;
            }
            if !conn.fin_sent {
                framed.start(Kind::Fin, 0);
                conn.fin_sent = true;
            }
            match write_header(framed) {
                Ok(true) => Fate::Close(Ending::Clean),
                Ok(false) => Fate::Keep,
                Err(_) => Fate::Close(Ending::Clean),
            }
        }
        Side::Plain(socket) => {
            if !conn.fin_sent {
                let _ = sock::shutdown_write(socket.as_fd());
                conn.fin_sent = true;
            }
            Fate::Close(Ending::Clean)
        }
    }
}

/// Write what is left of the current header; whether all of it went.
fn write_header(conn: &mut Framed) -> io::Result<bool> {
    while conn.header_left > 0 {
        let start = appframe::HEADER_LEN - conn.header_left;
        match conn
            .socket
            .write(conn.header.get(start..).unwrap_or_default())
        {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.header_left -= n.min(conn.header_left),
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Node to app in frames: DATA frames from the receive buffer, then FIN once the peer's
/// arrived; while handing over, the HANDED frame after the frame being written, then
/// nothing. False when the connection failed.
fn to_app_framed(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    conn: &mut Framed,
    mut handing: Option<&mut Handing>,
    fin_sent: &mut bool,
    counted: &mut u64,
) -> bool {
    loop {
        if !conn.mid_frame() {
            if let Some(handing) = handing.as_deref_mut() {
                if handing.marker_sent {
                    return true;
                }
                conn.start(Kind::Handed, 0);
                handing.marker_sent = true;
            } else {
                let Some(view) = core.stack().app_view(id) else {
                    return true;
                };
                if view.readable > 0 {
                    conn.start(Kind::Data, view.readable.min(appframe::MAX_PAYLOAD));
                } else if view.peer_fin && !*fin_sent {
                    conn.start(Kind::Fin, 0);
                    *fin_sent = true;
                } else {
                    return true;
                }
            }
        }
        if conn.frame_left == 0 {
            match write_header(conn) {
                Ok(true) => continue,
                Ok(false) => return true,
                Err(_) => return false,
            }
        }
        // Header remainder and payload together, straight from the receive buffer.
        let mut blocked = false;
        let mut failed = false;
        let moved = core.stack().app_recv(now, id, |payload| {
            let take = payload.len().min(conn.frame_left);
            let start = appframe::HEADER_LEN - conn.header_left;
            let header = conn.header.get(start..).unwrap_or_default();
            let parts = [
                IoSlice::new(header),
                IoSlice::new(payload.get(..take).unwrap_or_default()),
            ];
            match conn.socket.write_vectored(&parts) {
                Ok(n) => {
                    let from_header = n.min(conn.header_left);
                    conn.header_left -= from_header;
                    let sent = n - from_header;
                    conn.frame_left -= sent;
                    sent
                }
                Err(e) if would_block(&e) => {
                    blocked = true;
                    0
                }
                Err(_) => {
                    failed = true;
                    0
                }
            }
        });
        *counted += moved as u64;
        if failed {
            return false;
        }
        if blocked || (moved == 0 && conn.frame_left > 0) {
            return true;
        }
    }
}

/// Node to app on a handed socket: the receive buffer as it is, then `shutdown(SHUT_WR)`
/// once the peer's FIN arrived. False when the socket failed.
fn to_app_plain(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    socket: &OwnedFd,
    fin_sent: &mut bool,
    counted: &mut u64,
) -> bool {
    loop {
        let Some(view) = core.stack().app_view(id) else {
            return true;
        };
        if view.readable == 0 {
            if view.peer_fin && !*fin_sent {
                *fin_sent = true;
                return sock::shutdown_write(socket.as_fd()).is_ok();
            }
            return true;
        }
        let mut blocked = false;
        let mut failed = false;
        let moved = core.stack().app_recv(now, id, |payload| {
            match sock::send_now(socket.as_fd(), payload) {
                Ok(n) => n,
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    blocked = true;
                    0
                }
                Err(_) => {
                    failed = true;
                    0
                }
            }
        });
        *counted += moved as u64;
        if failed {
            return false;
        }
        if blocked || moved == 0 {
            return true;
        }
    }
}

/// App to node in frames: read what the send buffer takes, decode, and pass it on.
/// `Ok(true)`: the app closed the connection after handing the stream over.
#[allow(clippy::too_many_arguments)]
fn from_app_framed(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    conn: &mut Framed,
    handing: bool,
    read_eof: &mut bool,
    counted: &mut u64,
    scratch: &mut [u8],
) -> Result<bool, StreamError> {
    while !*read_eof || handing {
        let Some(view) = core.stack().app_view(id) else {
            return Ok(false);
        };
        // After the app's FIN, only a RESET (or the end) may come: read a little to see it.
        let room = if view.may_send { view.writable } else { 64 };
        if room == 0 {
            // Full: the stack lists the stream as ready when its ACKs make room.
            return Ok(false);
        }
        let want = room.min(scratch.len());
        let buf = scratch.get_mut(..want).unwrap_or_default();
        let n = match conn.socket.read(buf) {
            Ok(0) => {
                if !conn.decoder.at_boundary() {
                    return Err(StreamError::AppProtocol);
                }
                if handing {
                    // Every frame the app sent is in; a frame of ours cut off by the
                    // close would lose bytes.
                    if conn.mid_frame() {
                        return Err(StreamError::AppProtocol);
                    }
                    *read_eof = conn.decoder.fin();
                    return Ok(true);
                }
                *read_eof = true;
                if !conn.decoder.fin() {
                    core.stack().app_fin(now, id);
                }
                return Ok(false);
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(StreamError::AppGone),
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while !input.is_empty() {
            let (used, frame) = conn
                .decoder
                .decode(input)
                .map_err(|_| StreamError::AppProtocol)?;
            match frame {
                // Cannot fall short: at most `writable` bytes were read.
                Some(Frame::Data(piece)) if core.stack().app_send(now, id, piece) < piece.len() => {
                    return Err(StreamError::AppProtocol);
                }
                Some(Frame::Data(piece)) => *counted += piece.len() as u64,
                Some(Frame::Fin) => core.stack().app_fin(now, id),
                Some(Frame::Reset(_)) => return Err(StreamError::AppGone),
                // Only the node sends HANDED.
                Some(Frame::Handed) => return Err(StreamError::AppProtocol),
                None => {}
            }
            input = input.get(used..).unwrap_or_default();
            if used == 0 {
                break;
            }
        }
    }
    Ok(false)
}

/// App to node on a handed socket: read what the send buffer takes and pass it on; the
/// socket's end of input is the app's FIN.
fn from_app_plain(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    socket: &OwnedFd,
    read_eof: &mut bool,
    counted: &mut u64,
    scratch: &mut [u8],
) -> Result<(), StreamError> {
    while !*read_eof {
        let Some(view) = core.stack().app_view(id) else {
            return Ok(());
        };
        if !view.may_send || view.writable == 0 {
            // Full (the stack lists the stream as ready when ACKs make room), or reset.
            return Ok(());
        }
        let want = view.writable.min(scratch.len());
        let buf = scratch.get_mut(..want).unwrap_or_default();
        match sock::recv_now(socket.as_fd(), buf) {
            Ok(0) => {
                *read_eof = true;
                core.stack().app_fin(now, id);
            }
            Ok(n) => {
                let piece = buf.get(..n).unwrap_or_default();
                if core.stack().app_send(now, id, piece) < n {
                    return Err(StreamError::AppProtocol);
                }
                *counted += n as u64;
            }
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(StreamError::AppGone),
        }
    }
    Ok(())
}
