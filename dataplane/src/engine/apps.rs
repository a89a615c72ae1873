//! The driver's side of apps' streams: the app connections the control plane attached
//! (Unix sockets, one per stream), the dials and listeners waiting for the stack, and the
//! pumping of bytes between each connection and its stream's socket.
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
//! End of a connection: the app's end of input at a frame boundary is its FIN (a
//! half-close); in the middle of a frame, or a RESET frame, or a write that fails, aborts the
//! stream. A stream that ends cleanly gets its FIN frame and the connection is closed; one
//! that is reset gets a RESET frame with the reason (best effort) and is closed.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use super::core::{NodeCore, NodeIo};
use crate::stack::appframe::{self, Decoder, Frame, Kind};
use crate::stack::{ListenerId, StackEvent, StreamError, StreamId, StreamInfo};

/// Tokens of app connections are this plus the stream id.
pub(super) const APP_TOKEN_BASE: usize = 16;

/// Bytes read from an app connection at once (at most the stream's free send buffer).
const READ_CHUNK: usize = 256 * 1024;

/// One attached stream's connection.
#[derive(Debug)]
struct AppConn {
    socket: UnixStream,
    decoder: Decoder,
    /// The header of the frame being written, and how many of its bytes are still to go.
    header: [u8; appframe::HEADER_LEN],
    header_left: usize,
    /// Payload bytes of the DATA frame being written still to go.
    frame_left: usize,
    fin_sent: bool,
    /// The app's end of input was seen.
    read_eof: bool,
    /// The stack said the stream ended cleanly; close once the FIN frame is out.
    closing: bool,
}

/// Every app connection of the engine, and the dials and listeners in flight.
#[derive(Debug, Default)]
pub(super) struct Apps {
    conns: HashMap<StreamId, AppConn>,
    dials: HashMap<StreamId, Sender<Result<StreamInfo, StreamError>>>,
    listeners: HashMap<ListenerId, Sender<StreamInfo>>,
    next_listener: u64,
    /// Streams to serve this turn (readiness from mio and from the stack).
    due: Vec<StreamId>,
    scratch: Vec<u8>,
}

/// What became of a connection after serving it.
enum Fate {
    Keep,
    Close,
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

    /// Take over an attached stream's connection.
    pub(super) fn add(
        &mut self,
        registry: &Registry,
        id: StreamId,
        socket: std::os::unix::net::UnixStream,
    ) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let mut socket = UnixStream::from_std(socket);
        registry.register(
            &mut socket,
            token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns.insert(
            id,
            AppConn {
                socket,
                decoder: Decoder::new(),
                header: [0; appframe::HEADER_LEN],
                header_left: 0,
                frame_left: 0,
                fin_sent: false,
                read_eof: false,
                closing: false,
            },
        );
        self.due.push(id);
        Ok(())
    }

    /// mio said the connection of this token is ready.
    pub(super) fn wake(&mut self, token: Token) {
        if let Some(id) = token
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
                if let Fate::Close = serve_one(core, now, *id, conn, &mut self.scratch) {
                    self.close(registry, *id);
                }
            }
            self.due = due;
            self.due.clear();
            core.flush_stack(now, io);
            let events: Vec<StackEvent> = core.stack().drain_events().collect();
            if events.is_empty() {
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
                    Some(error) => {
                        let frame = appframe::reset(&format!("{}: {error}", error.kind()));
                        // Best effort: the app may be gone or full; it is closed either way.
                        let _ = conn.socket.write(&frame);
                        self.close(registry, id);
                    }
                    None => {
                        conn.closing = true;
                        if let Fate::Close = finish_clean(conn) {
                            self.close(registry, id);
                        }
                    }
                }
            }
        }
    }

    fn close(&mut self, registry: &Registry, id: StreamId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = registry.deregister(&mut conn.socket);
        }
    }

    /// Close every connection (the node stops).
    pub(super) fn close_all(&mut self, registry: &Registry) {
        let ids: Vec<StreamId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(conn) = self.conns.get_mut(&id) {
                let _ = conn
                    .socket
                    .write(&appframe::reset("shutdown: the node is shutting down"));
            }
            self.close(registry, id);
        }
        for (_, reply) in self.dials.drain() {
            let _ = reply.send(Err(StreamError::Shutdown));
        }
        self.listeners.clear();
    }
}

fn token(id: StreamId) -> Token {
    Token(APP_TOKEN_BASE + usize::try_from(id.0).unwrap_or(usize::MAX - APP_TOKEN_BASE))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Move what can move between one connection and its stream.
fn serve_one(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    conn: &mut AppConn,
    scratch: &mut [u8],
) -> Fate {
    if let Fate::Close = to_app(core, now, id, conn) {
        core.stack().abort(now, id, StreamError::AppGone);
        return Fate::Close;
    }
    if conn.closing {
        return finish_clean(conn);
    }
    match from_app(core, now, id, conn, scratch) {
        Ok(()) => Fate::Keep,
        Err(error) => {
            if error == StreamError::AppProtocol {
                let frame = appframe::reset("app_protocol: the app broke the stream protocol");
                let _ = conn.socket.write(&frame);
            }
            core.stack().abort(now, id, error);
            Fate::Close
        }
    }
}

/// After a clean end: the FIN frame out (if the stack had not let it go yet), then close.
fn finish_clean(conn: &mut AppConn) -> Fate {
    if conn.header_left > 0 || conn.frame_left > 0 {
        return Fate::Keep;
    }
    if !conn.fin_sent {
        conn.header = appframe::header(Kind::Fin, 0);
        conn.header_left = appframe::HEADER_LEN;
        conn.fin_sent = true;
    }
    match write_header(conn) {
        Ok(true) => Fate::Close,
        Ok(false) => Fate::Keep,
        Err(_) => Fate::Close,
    }
}

/// Write what is left of the current header; whether all of it went.
fn write_header(conn: &mut AppConn) -> io::Result<bool> {
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

/// Node to app: DATA frames from the receive buffer, then FIN once the peer's arrived.
fn to_app(core: &mut NodeCore, now: Instant, id: StreamId, conn: &mut AppConn) -> Fate {
    loop {
        if conn.frame_left == 0 && conn.header_left == 0 {
            let Some(view) = core.stack().app_view(id) else {
                return Fate::Keep;
            };
            if view.readable > 0 {
                let len = view.readable.min(appframe::MAX_PAYLOAD);
                conn.header = appframe::header(Kind::Data, len);
                conn.header_left = appframe::HEADER_LEN;
                conn.frame_left = len;
            } else if view.peer_fin && !conn.fin_sent {
                conn.header = appframe::header(Kind::Fin, 0);
                conn.header_left = appframe::HEADER_LEN;
                conn.fin_sent = true;
            } else {
                return Fate::Keep;
            }
        }
        if conn.frame_left == 0 {
            match write_header(conn) {
                Ok(true) => continue,
                Ok(false) => return Fate::Keep,
                Err(_) => return Fate::Close,
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
        if failed {
            return Fate::Close;
        }
        if blocked || (moved == 0 && conn.frame_left > 0) {
            return Fate::Keep;
        }
    }
}

/// App to node: read what the send buffer takes, decode, and pass it on.
fn from_app(
    core: &mut NodeCore,
    now: Instant,
    id: StreamId,
    conn: &mut AppConn,
    scratch: &mut [u8],
) -> Result<(), StreamError> {
    while !conn.read_eof {
        let Some(view) = core.stack().app_view(id) else {
            return Ok(());
        };
        // After the app's FIN, only a RESET may come: read a little to see it (or the end).
        let room = if view.may_send { view.writable } else { 64 };
        if room == 0 {
            // Full: the stack lists the stream as ready when its ACKs make room.
            return Ok(());
        }
        let want = room.min(scratch.len());
        let buf = scratch.get_mut(..want).unwrap_or_default();
        let n = match conn.socket.read(buf) {
            Ok(0) => {
                conn.read_eof = true;
                if !conn.decoder.at_boundary() {
                    return Err(StreamError::AppProtocol);
                }
                if !conn.decoder.fin() {
                    core.stack().app_fin(now, id);
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if would_block(&e) => return Ok(()),
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
                Some(Frame::Data(_)) => {}
                Some(Frame::Fin) => core.stack().app_fin(now, id),
                Some(Frame::Reset(_)) => return Err(StreamError::AppGone),
                None => {}
            }
            input = input.get(used..).unwrap_or_default();
            if used == 0 {
                break;
            }
        }
    }
    Ok(())
}
