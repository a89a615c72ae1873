//! The client's side of the app socket: open a stream (dial or accept) and use it as a
//! byte stream, or listen and take what arrives.
//!
//! - [`AppClient`] knows the socket's path; every call opens a connection of its own, as
//!   the protocol wants (one thing per connection).
//! - [`AppStream`] is a stream: `Read` gives the peer's bytes, `Ok(0)` after its FIN, and
//!   an `io::Error` of kind `ConnectionReset` when the stream is reset, carrying a
//!   [`StreamReset`] with the reason ([`reset_of`] finds it); `Write` sends DATA frames,
//!   [`AppStream::shutdown_write`] a FIN, [`AppStream::reset`] a RESET. [`AppStream::split`]
//!   gives a read half and a write half to use from two threads.
//! - [`AppListener`] reads `incoming` lines; [`AppListener::accept`] takes the next stream.
//! - [`join`] joins a stream to a reader (sent, then FIN) and a writer (what arrives), as
//!   `skywire nc` does.
//! - [`AppStream::hand_over`] gives the stream to a stream socket of the program's (a TCP
//!   connection, say): the node then moves the stream's bytes over that socket itself, and
//!   the program keeps nothing of it; an [`AppWatch`] hears when such streams end.
//!
//! The reply line is read through a buffer, and whatever came after it (the first frames,
//! or `incoming` lines) is kept, so nothing is lost however the node's writes are cut.

use std::io::{self, BufReader, ErrorKind as IoErrorKind, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::WatchId;
use skywire_dataplane::stack::appframe::{self, Decoder, Frame, FrameError, Kind};
use skywire_dataplane::stack::{ListenerId, StreamId};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::protocol::{
    AppRequest, DEFAULT_BACKLOG, Ended, ErrorKind, Handed, Incoming, ListenerLine, Listening,
    Reply, ResetReason, StreamOpened, WatchLine, WatchOpened,
};
use crate::local::{self, ConnectFailure, LineRead, read_line};

/// The longest reply or `incoming` line read, without its newline.
const MAX_REPLY: usize = 64 * 1024;

/// How long to wait for the node's answer to `listen` and `accept`, and beyond its own
/// timeout for a `dial`.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most stream bytes one DATA frame carries when writing.
const MAX_DATA: usize = 64 * 1024;

/// Why an app socket request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The socket does not exist or nothing listens on it.
    #[error("is `skywire node` running? cannot connect to its app socket {}", path.display())]
    NotRunning {
        /// The socket's path.
        path: PathBuf,
        /// `NotFound` or `ConnectionRefused`.
        #[source]
        source: io::Error,
    },
    /// The operating system refused the connection (the socket or its folder is not open
    /// to this user).
    #[error(
        "permission denied on the app socket {}: run as root, as the node's user, or as a user \
         node.apps.users or node.apps.group in the node's config lets in",
        path.display()
    )]
    PermissionDenied {
        /// The socket's path.
        path: PathBuf,
        /// The `connect` error.
        #[source]
        source: io::Error,
    },
    /// Connecting failed for another reason.
    #[error("cannot connect to the app socket {}", path.display())]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// The `connect` error.
        #[source]
        source: io::Error,
    },
    /// The node answered with an error.
    #[error("{message} ({kind})")]
    Refused {
        /// Its kind.
        kind: ErrorKind,
        /// Its explanation.
        message: String,
    },
    /// The node did not answer in time.
    #[error("the node at {} did not answer within {} s", path.display(), timeout.as_secs_f64())]
    Timeout {
        /// The socket's path.
        path: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// Sending the request or reading the answer failed.
    #[error("talking to the node at {} failed", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The answer was not a line of the protocol.
    #[error("the node at {} sent a bad answer: {reason}", path.display())]
    BadReply {
        /// The socket's path.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

impl AppError {
    /// The kind the node answered with, if it answered with an error.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Refused { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Whether no node is there to serve (exit code 69): no socket, nobody on it, no
    /// answer in time, or a node shutting down.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::NotRunning { .. }
                | Self::Timeout { .. }
                | Self::Refused {
                    kind: ErrorKind::Shutdown | ErrorKind::EngineGone,
                    ..
                }
        )
    }

    /// Whether this user may not do that (exit code 77).
    pub fn is_permission(&self) -> bool {
        matches!(
            self,
            Self::PermissionDenied { .. }
                | Self::Refused {
                    kind: ErrorKind::Permission,
                    ..
                }
        )
    }
}

/// What to listen on ([`AppClient::listen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenRequest {
    /// The port on this node.
    pub port: u16,
    /// Streams that may wait at once to be accepted.
    pub backlog: usize,
    /// Only streams from these keys; `None`: from any node.
    pub allow: Option<Vec<PublicKey>>,
}

impl ListenRequest {
    /// Listen on `port` with the default backlog, for streams from any node.
    pub fn on(port: u16) -> Self {
        Self {
            port,
            backlog: DEFAULT_BACKLOG,
            allow: None,
        }
    }
}

/// The way to a node's app socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppClient {
    path: PathBuf,
}

impl AppClient {
    /// A client of the app socket at `path`. Nothing is opened until a request.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a node answers on the socket and lets this user in at the file level
    /// (connects and closes; the node logs nothing for a connection that sent nothing).
    pub fn check(&self) -> Result<(), AppError> {
        self.connect().map(drop)
    }

    /// Open a stream to `port` on `peer`, trying for at most `timeout` (at most 120 s; a
    /// route is asked for on the way when this node has none).
    pub fn dial(
        &self,
        peer: PublicKey,
        port: u16,
        timeout: Duration,
    ) -> Result<AppStream, AppError> {
        let request = AppRequest::Dial {
            peer,
            port,
            timeout,
        };
        let wait = timeout.min(super::protocol::MAX_DIAL_TIMEOUT) + REPLY_TIMEOUT;
        let (opened, reader) = self.open::<StreamOpened>(&request, wait)?;
        AppStream::new(opened, reader).map_err(|source| self.io_error(source, wait))
    }

    /// Listen as `request` says.
    pub fn listen(&self, request: ListenRequest) -> Result<AppListener, AppError> {
        let request = AppRequest::Listen {
            port: request.port,
            backlog: request.backlog,
            allow: request.allow,
        };
        let (listening, reader) = self.open::<Listening>(&request, REPLY_TIMEOUT)?;
        Ok(AppListener {
            client: self.clone(),
            listening,
            reader,
        })
    }

    /// Take `stream`, which arrived on one of this user's listeners.
    pub fn accept(&self, stream: StreamId) -> Result<AppStream, AppError> {
        let request = AppRequest::Accept { stream };
        let (opened, reader) = self.open::<StreamOpened>(&request, REPLY_TIMEOUT)?;
        AppStream::new(opened, reader).map_err(|source| self.io_error(source, REPLY_TIMEOUT))
    }

    /// A watch ([`AppWatch`]): a connection of its own on which the node reports the end
    /// of every stream handed over with it.
    pub fn watch(&self) -> Result<AppWatch, AppError> {
        let (opened, reader) = self.open::<WatchOpened>(&AppRequest::Watch, REPLY_TIMEOUT)?;
        Ok(AppWatch {
            id: WatchId(opened.watch),
            client: self.clone(),
            reader,
        })
    }

    /// Send a `hand_over` line with `socket` passed along, and read the `ok`.
    fn send_with_fd(&self, request: &AppRequest, socket: &OwnedFd) -> Result<(), AppError> {
        let stream = self.connect()?;
        let line = request.to_line();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [socket.as_fd()];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(self.bad_reply("no room to pass the socket".to_owned()));
        }
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(|source| self.io_error(source, REPLY_TIMEOUT))?;
        let sent = rustix::net::sendmsg(
            &stream,
            &[IoSlice::new(&line)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| self.io_error(e.into(), REPLY_TIMEOUT))?;
        // A line this short goes whole into an empty socket; the rest, should it not.
        (&stream)
            .write_all(line.get(sent..).unwrap_or_default())
            .map_err(|source| self.io_error(source, REPLY_TIMEOUT))?;
        let mut reader = BufReader::new(stream);
        let line = self.read_reply_line(&mut reader, REPLY_TIMEOUT)?;
        match serde_json::from_slice::<Reply<Handed>>(&line) {
            Ok(Reply::Ok(_)) => Ok(()),
            Ok(Reply::Error(body)) => Err(AppError::Refused {
                kind: body.kind,
                message: body.message,
            }),
            Err(e) => Err(self.bad_reply(e.to_string())),
        }
    }

    fn connect(&self) -> Result<UnixStream, AppError> {
        local::connect(&self.path).map_err(|failure| {
            let path = self.path.clone();
            match failure {
                ConnectFailure::NotRunning(source) => AppError::NotRunning { path, source },
                ConnectFailure::PermissionDenied(source) => {
                    AppError::PermissionDenied { path, source }
                }
                ConnectFailure::Other(source) => AppError::Connect { path, source },
            }
        })
    }

    /// Connect, send `request`, read the reply within `wait`; the connection comes back
    /// with its read timeout cleared, in the buffer that read the reply.
    fn open<T: serde::de::DeserializeOwned>(
        &self,
        request: &AppRequest,
        wait: Duration,
    ) -> Result<(T, BufReader<UnixStream>), AppError> {
        let stream = self.connect()?;
        stream
            .set_read_timeout(Some(wait))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .and_then(|()| (&stream).write_all(&request.to_line()))
            .map_err(|source| self.io_error(source, wait))?;
        let mut reader = BufReader::new(stream);
        let line = self.read_reply_line(&mut reader, wait)?;
        let reply: Reply<T> =
            serde_json::from_slice(&line).map_err(|e| self.bad_reply(e.to_string()))?;
        match reply {
            Reply::Ok(body) => {
                let stream = reader.get_ref();
                stream
                    .set_read_timeout(None)
                    .and_then(|()| stream.set_write_timeout(None))
                    .map_err(|source| self.io_error(source, wait))?;
                Ok((body, reader))
            }
            Reply::Error(body) => Err(AppError::Refused {
                kind: body.kind,
                message: body.message,
            }),
        }
    }

    /// One line from the node, within [`MAX_REPLY`] bytes.
    fn read_reply_line(
        &self,
        reader: &mut BufReader<UnixStream>,
        wait: Duration,
    ) -> Result<Vec<u8>, AppError> {
        let mut line = Vec::new();
        match read_line(reader, MAX_REPLY, &mut line) {
            Ok(LineRead::Line) => Ok(line),
            Ok(LineRead::Eof | LineRead::Truncated) => {
                Err(self.bad_reply("the node closed the connection without an answer".into()))
            }
            Ok(LineRead::TooLong) => {
                Err(self.bad_reply(format!("an answer longer than {MAX_REPLY} bytes")))
            }
            Err(source) => Err(self.io_error(source, wait)),
        }
    }

    fn io_error(&self, source: io::Error, timeout: Duration) -> AppError {
        if matches!(
            source.kind(),
            IoErrorKind::WouldBlock | IoErrorKind::TimedOut
        ) {
            AppError::Timeout {
                path: self.path.clone(),
                timeout,
            }
        } else {
            AppError::Io {
                path: self.path.clone(),
                source,
            }
        }
    }

    fn bad_reply(&self, reason: String) -> AppError {
        AppError::BadReply {
            path: self.path.clone(),
            reason,
        }
    }
}

/// A listening connection: `incoming` lines, one per arrived stream.
#[derive(Debug)]
pub struct AppListener {
    client: AppClient,
    listening: Listening,
    reader: BufReader<UnixStream>,
}

impl AppListener {
    /// The listener's id on the node.
    pub fn id(&self) -> ListenerId {
        self.listening.listener
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.listening.port
    }

    /// Wait for the next arrived stream. An `error` line (the node stopping) is
    /// [`AppError::Refused`]; the connection closing is [`AppError::BadReply`].
    pub fn next_incoming(&mut self) -> Result<Incoming, AppError> {
        let line = self
            .client
            .read_reply_line(&mut self.reader, Duration::MAX)?;
        match serde_json::from_slice::<ListenerLine>(&line) {
            Ok(ListenerLine::Incoming(incoming)) => Ok(incoming),
            Ok(ListenerLine::Error(body)) => Err(AppError::Refused {
                kind: body.kind,
                message: body.message,
            }),
            Err(e) => Err(self.client.bad_reply(e.to_string())),
        }
    }

    /// Wait for the next arrived stream and take it.
    pub fn accept(&mut self) -> Result<AppStream, AppError> {
        let incoming = self.next_incoming()?;
        self.client.accept(incoming.stream)
    }
}

/// A RESET: the reason the node (or the peer's app) gave. Found inside the
/// `ConnectionReset` errors [`AppStream`] returns ([`reset_of`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream reset: {reason}")]
pub struct StreamReset {
    /// The reason, as sent.
    pub reason: ResetReason,
}

/// The [`StreamReset`] inside `error`, if it is one.
pub fn reset_of(error: &io::Error) -> Option<&StreamReset> {
    error.get_ref()?.downcast_ref::<StreamReset>()
}

/// An open stream.
#[derive(Debug)]
pub struct AppStream {
    opened: StreamOpened,
    reader: AppReadHalf,
    writer: AppWriteHalf,
}

impl AppStream {
    fn new(opened: StreamOpened, reader: BufReader<UnixStream>) -> io::Result<Self> {
        // Frames that came with the reply stay in the buffer's bytes.
        let early = reader.buffer().to_vec();
        let socket = reader.into_inner();
        let writer = socket.try_clone()?;
        let mut buf = vec![0; MAX_DATA];
        let end = early.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..end), early.get(..end)) {
            dst.copy_from_slice(src);
        }
        // A BufReader's buffer is 8 KiB, smaller than ours: nothing is left over.
        Ok(Self {
            opened,
            reader: AppReadHalf {
                socket,
                buf,
                start: 0,
                end,
                decoder: Decoder::new(),
                ended: None,
            },
            writer: AppWriteHalf {
                socket: writer,
                frame: Vec::new(),
                finished: false,
            },
        })
    }

    /// The stream as the node described it.
    pub fn info(&self) -> StreamOpened {
        self.opened
    }

    /// The key of the node at the far end.
    pub fn peer(&self) -> PublicKey {
        self.opened.peer
    }

    /// The stream's id on this node.
    pub fn id(&self) -> StreamId {
        self.opened.stream
    }

    /// Send FIN: no more bytes from this side (reading goes on until the peer's FIN).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.writer.finish()
    }

    /// Abort the stream with `reason` (the peer sees a reset).
    pub fn reset(&mut self, reason: &str) -> io::Result<()> {
        self.writer.reset(reason)
    }

    /// Give up a read after `timeout` (`None`: wait for ever, the default) with an error of
    /// kind `WouldBlock` or `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.socket.set_read_timeout(timeout)
    }

    /// A read half and a write half, for two threads.
    pub fn split(self) -> (AppReadHalf, AppWriteHalf) {
        (self.reader, self.writer)
    }

    /// Hand the stream over to `socket`, a connected stream socket (TCP or Unix) of this
    /// program's, through `client` (the node this stream is on): from then on the node
    /// moves the stream's bytes between the stack and `socket` as they are, without frames
    /// and without this program (`docs/APPS.md`, "Handing a stream to a socket"). `watch`
    /// (one of [`AppClient::watch`]'s, of the same user) hears when the stream ends.
    ///
    /// Bytes the node had sent in frames before the hand-over are written to `socket`
    /// here, in order, and a FIN among them shuts `socket`'s writing side; bytes waiting in
    /// `socket` (read by nobody yet) go to the peer first. On success this program's copy
    /// of `socket` is closed and the stream's connection too: the stream holds nothing of
    /// this program's any more. On an error the stream is reset.
    pub fn hand_over(
        self,
        client: &AppClient,
        socket: OwnedFd,
        watch: Option<WatchId>,
    ) -> Result<StreamId, AppError> {
        let id = self.id();
        let mut writer = self.writer;
        let mut reader = self.reader;
        let request = AppRequest::HandOver { stream: id, watch };
        if let Err(error) = client.send_with_fd(&request, &socket) {
            let _ = writer.reset("hand_over_failed: the node did not take the socket");
            return Err(error);
        }
        // The node shares the socket's file description now: its blocking mode is left as
        // it is, and the early bytes are written without depending on it.
        if let Err(source) = reader.pass_on_until_handed(&socket) {
            let _ = writer.reset("hand_over_failed: passing on the early bytes failed");
            return Err(client.io_error(source, REPLY_TIMEOUT));
        }
        // Closing the stream's connection tells the node every early byte is passed on.
        drop(writer);
        drop(reader);
        Ok(id)
    }
}

/// A watch: one `ended` line per stream handed over with it, as each ends
/// ([`AppClient::watch`]). Dropping it ends the watch; the streams go on.
#[derive(Debug)]
pub struct AppWatch {
    id: WatchId,
    client: AppClient,
    reader: BufReader<UnixStream>,
}

impl AppWatch {
    /// Its id, for [`AppStream::hand_over`].
    pub fn id(&self) -> WatchId {
        self.id
    }

    /// Wait for the next stream to end: its id, the bytes each way, and the error kind if
    /// it was reset. The node closing the watch (it stops) is [`AppError::BadReply`].
    pub fn next_ended(&mut self) -> Result<Ended, AppError> {
        let line = self
            .client
            .read_reply_line(&mut self.reader, Duration::MAX)?;
        match serde_json::from_slice::<WatchLine>(&line) {
            Ok(WatchLine::Ended(ended)) => Ok(ended),
            Err(e) => Err(self.client.bad_reply(e.to_string())),
        }
    }
}

impl Read for AppStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reader.read(out)
    }
}

impl Write for AppStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.writer.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// How reading ended.
#[derive(Debug, Clone)]
enum ReadEnd {
    /// The peer's FIN.
    Fin,
    /// A RESET.
    Reset(StreamReset),
    /// The node broke the frame protocol.
    Broken(FrameError),
    /// The connection closed without FIN or RESET.
    Cut,
}

/// The reading side of an [`AppStream`]: the peer's bytes out of DATA frames.
#[derive(Debug)]
pub struct AppReadHalf {
    socket: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    decoder: Decoder,
    ended: Option<ReadEnd>,
}

impl AppReadHalf {
    fn ended_error(end: &ReadEnd) -> io::Result<usize> {
        match end {
            ReadEnd::Fin => Ok(0),
            ReadEnd::Reset(reset) => {
                Err(io::Error::new(IoErrorKind::ConnectionReset, reset.clone()))
            }
            ReadEnd::Broken(error) => Err(io::Error::new(
                IoErrorKind::InvalidData,
                format!("the node broke the stream's frames: {error}"),
            )),
            ReadEnd::Cut => Err(io::Error::new(
                IoErrorKind::UnexpectedEof,
                "the node closed the stream without FIN or RESET",
            )),
        }
    }
}

/// Write all of `data` to `out` whatever its blocking mode (`MSG_DONTWAIT`, waiting for
/// room with `poll`), within [`REPLY_TIMEOUT`] for each wait.
fn send_all_now(out: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    let wait = Timespec::try_from(REPLY_TIMEOUT).unwrap_or_default();
    while !data.is_empty() {
        match rustix::net::send(out, data, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(Errno::AGAIN) => {
                let mut fds = [PollFd::new(out, PollFlags::OUT)];
                if rustix::event::poll(&mut fds, Some(&wait))? == 0 {
                    return Err(IoErrorKind::TimedOut.into());
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl AppReadHalf {
    /// After a hand-over: write the DATA the node sent before HANDED to `out`, shut
    /// `out`'s writing side at a FIN, and stop at HANDED.
    fn pass_on_until_handed(&mut self, out: &OwnedFd) -> io::Result<()> {
        let shut =
            || rustix::net::shutdown(out, rustix::net::Shutdown::Write).map_err(io::Error::from);
        match &self.ended {
            None => {}
            Some(ReadEnd::Fin) => shut()?,
            Some(end) => return Self::ended_error(end).map(drop),
        }
        loop {
            if self.start >= self.end {
                let n = (&self.socket).read(&mut self.buf)?;
                if n == 0 {
                    return Err(io::Error::new(
                        IoErrorKind::UnexpectedEof,
                        "the node closed the stream before HANDED",
                    ));
                }
                self.start = 0;
                self.end = n;
            }
            let input = self.buf.get(self.start..self.end).unwrap_or_default();
            let (used, frame) = self
                .decoder
                .decode(input)
                .map_err(|e| io::Error::new(IoErrorKind::InvalidData, e))?;
            self.start += used;
            match frame {
                Some(Frame::Data(piece)) => send_all_now(out, piece)?,
                Some(Frame::Fin) => shut()?,
                Some(Frame::Reset(text)) => {
                    return Err(io::Error::new(
                        IoErrorKind::ConnectionReset,
                        StreamReset {
                            reason: ResetReason::parse(&text),
                        },
                    ));
                }
                Some(Frame::Handed) => return Ok(()),
                None => {}
            }
        }
    }
}

impl Read for AppReadHalf {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(end) = &self.ended {
                return Self::ended_error(end);
            }
            if self.start >= self.end {
                let n = (&self.socket).read(&mut self.buf)?;
                if n == 0 {
                    self.ended = Some(ReadEnd::Cut);
                    continue;
                }
                self.start = 0;
                self.end = n;
            }
            // Inside a DATA frame, take no more than fits in `out`.
            let cap = if self.decoder.data_left() > 0 {
                out.len()
            } else {
                usize::MAX
            };
            let stop = self.end.min(self.start.saturating_add(cap));
            let input = self.buf.get(self.start..stop).unwrap_or_default();
            match self.decoder.decode(input) {
                Ok((used, frame)) => {
                    self.start += used;
                    match frame {
                        Some(Frame::Data(piece)) => {
                            let n = piece.len().min(out.len());
                            if let (Some(dst), Some(src)) = (out.get_mut(..n), piece.get(..n)) {
                                dst.copy_from_slice(src);
                            }
                            return Ok(n);
                        }
                        Some(Frame::Fin) => self.ended = Some(ReadEnd::Fin),
                        Some(Frame::Reset(text)) => {
                            self.ended = Some(ReadEnd::Reset(StreamReset {
                                reason: ResetReason::parse(&text),
                            }));
                        }
                        // Only an answer to a hand-over, which this reader never asked for.
                        Some(Frame::Handed) => {
                            self.ended =
                                Some(ReadEnd::Broken(FrameError::UnknownKind(Kind::Handed as u8)));
                        }
                        None => {}
                    }
                }
                Err(error) => self.ended = Some(ReadEnd::Broken(error)),
            }
        }
    }
}

/// The writing side of an [`AppStream`]: DATA frames, then FIN or RESET.
#[derive(Debug)]
pub struct AppWriteHalf {
    socket: UnixStream,
    frame: Vec<u8>,
    finished: bool,
}

impl AppWriteHalf {
    /// Send FIN (once; later calls do nothing).
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        (&self.socket).write_all(&appframe::header(Kind::Fin, 0))
    }

    /// Send RESET with `reason` (cut to 1024 bytes) and stop writing.
    pub fn reset(&mut self, reason: &str) -> io::Result<()> {
        self.finished = true;
        (&self.socket).write_all(&appframe::reset(reason))?;
        self.socket.shutdown(std::net::Shutdown::Write)
    }
}

impl Write for AppWriteHalf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::new(
                IoErrorKind::BrokenPipe,
                "this side of the stream is finished (FIN or RESET sent)",
            ));
        }
        let n = data.len().min(MAX_DATA);
        if n == 0 {
            return Ok(0);
        }
        self.frame.clear();
        self.frame
            .extend_from_slice(&appframe::header(Kind::Data, n));
        self.frame
            .extend_from_slice(data.get(..n).unwrap_or_default());
        (&self.socket).write_all(&self.frame)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How [`join`] failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The stream was reset.
    #[error(transparent)]
    Reset(StreamReset),
    /// The stream failed otherwise (the node closed it, or broke the protocol).
    #[error("the stream failed")]
    Stream(#[source] io::Error),
    /// Reading the input failed (the stream was reset).
    #[error("reading the input failed")]
    Input(#[source] io::Error),
    /// Writing the output failed (the stream is left to end when dropped).
    #[error("writing the output failed")]
    Output(#[source] io::Error),
}

/// Join `stream` to `input` and `output`: `input`'s bytes are sent, and FIN at its end; the
/// peer's bytes are written to `output` (flushed as they come) until the peer's FIN, when
/// `output` is dropped (so a child process reading it sees its end of input before this
/// waits for its output). Returns once both directions finished; on a reset, as soon as it
/// arrives (the thread reading `input` is then left to end by itself).
pub fn join(
    stream: AppStream,
    input: impl Read + Send + 'static,
    mut output: impl Write,
) -> Result<(), JoinError> {
    let (mut reader, mut writer) = stream.split();
    let sender = thread::Builder::new()
        .name("skywire-join".to_owned())
        .spawn(move || send_all(input, &mut writer))
        .map_err(JoinError::Stream)?;
    let failed = |error: io::Error| match reset_of(&error) {
        Some(reset) => JoinError::Reset(reset.clone()),
        None => JoinError::Stream(error),
    };
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output
                .write_all(buf.get(..n).unwrap_or_default())
                .and_then(|()| output.flush())
                .map_err(JoinError::Output)?,
            Err(e) if e.kind() == IoErrorKind::Interrupted => {}
            Err(e) => return Err(failed(e)),
        }
    }
    // The peer is done; ours may still be on its way.
    drop(output);
    match sender.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(SendError::Input(e))) => Err(JoinError::Input(e)),
        Ok(Err(SendError::Stream(e))) => {
            // A RESET after the peer's FIN says why sending failed.
            match reader.read(&mut buf) {
                Err(reset) if reset_of(&reset).is_some() => Err(failed(reset)),
                _ => Err(JoinError::Stream(e)),
            }
        }
        Err(_) => Err(JoinError::Stream(io::Error::other(
            "the thread sending the input panicked",
        ))),
    }
}

enum SendError {
    Input(io::Error),
    Stream(io::Error),
}

/// Copy `input` into the stream, then FIN; a failing input resets the stream.
fn send_all(mut input: impl Read, writer: &mut AppWriteHalf) -> Result<(), SendError> {
    let mut buf = vec![0u8; MAX_DATA];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = writer.reset(&format!("the app's input failed: {e}"));
                return Err(SendError::Input(e));
            }
        };
        writer
            .write_all(buf.get(..n).unwrap_or_default())
            .map_err(SendError::Stream)?;
    }
    writer.finish().map_err(SendError::Stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skywire_dataplane::stack::StreamId;

    /// A stream whose node side is `node`, already past its `ok`.
    fn pair() -> (AppStream, UnixStream) {
        let (app, node) = UnixStream::pair().unwrap();
        let opened = StreamOpened {
            stream: StreamId(1),
            peer: PublicKey::from_bytes([1; 32]),
            local_port: 5,
            port: 6,
        };
        (AppStream::new(opened, BufReader::new(app)).unwrap(), node)
    }

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut f = appframe::header(kind, payload.len()).to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn reads_join_data_and_end_at_fin() {
        let (mut stream, mut node) = pair();
        let mut input = frame(Kind::Data, b"hello ");
        input.extend(frame(Kind::Data, b""));
        input.extend(frame(Kind::Data, b"world"));
        input.extend(frame(Kind::Fin, b""));
        node.write_all(&input).unwrap();
        // Small reads cut frames anywhere.
        let mut got = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world");
        assert_eq!(stream.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_reset_is_an_error_with_its_reason() {
        let (mut stream, mut node) = pair();
        node.write_all(&frame(Kind::Data, b"x")).unwrap();
        node.write_all(&appframe::reset(
            "route_gone: the route to the peer is gone",
        ))
        .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).unwrap(), 1);
        for _ in 0..2 {
            let err = stream.read(&mut buf).unwrap_err();
            assert_eq!(err.kind(), IoErrorKind::ConnectionReset);
            let reset = reset_of(&err).unwrap();
            assert_eq!(reset.reason.kind, ErrorKind::RouteGone);
            assert_eq!(
                err.to_string(),
                "stream reset: route_gone: the route to the peer is gone"
            );
        }
    }

    #[test]
    fn a_cut_or_broken_stream_is_an_error() {
        let (mut stream, node) = pair();
        (&node).write_all(&[0, 0, 0, 9, b'a']).unwrap();
        drop(node);
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).unwrap(), 1);
        assert_eq!(
            stream.read(&mut buf).unwrap_err().kind(),
            IoErrorKind::UnexpectedEof
        );
        let (mut stream, node) = pair();
        (&node).write_all(&[9, 0, 0, 0]).unwrap();
        assert_eq!(
            stream.read(&mut buf).unwrap_err().kind(),
            IoErrorKind::InvalidData
        );
    }

    #[test]
    fn writes_are_data_frames_then_fin() {
        let (mut stream, node) = pair();
        stream.write_all(b"abc").unwrap();
        assert_eq!(stream.write(b"").unwrap(), 0);
        let big = vec![7u8; MAX_DATA + 10];
        stream.write_all(&big).unwrap();
        stream.shutdown_write().unwrap();
        stream.shutdown_write().unwrap();
        assert_eq!(
            stream.write(b"late").unwrap_err().kind(),
            IoErrorKind::BrokenPipe
        );
        drop(stream);
        let mut sent = Vec::new();
        (&node).read_to_end(&mut sent).unwrap();
        let mut want = frame(Kind::Data, b"abc");
        want.extend(frame(Kind::Data, &big[..MAX_DATA]));
        want.extend(frame(Kind::Data, &big[MAX_DATA..]));
        want.extend(frame(Kind::Fin, b""));
        assert_eq!(sent, want);
    }

    #[test]
    fn frames_that_came_with_the_reply_are_kept() {
        let (app, mut node) = UnixStream::pair().unwrap();
        let mut sent = b"{\"ok\":{}}\n".to_vec();
        sent.extend(frame(Kind::Data, b"early"));
        sent.extend(frame(Kind::Fin, b""));
        node.write_all(&sent).unwrap();
        let mut reader = BufReader::new(app);
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, MAX_REPLY, &mut line).unwrap(),
            LineRead::Line
        );
        let opened = StreamOpened {
            stream: StreamId(1),
            peer: PublicKey::from_bytes([1; 32]),
            local_port: 5,
            port: 6,
        };
        let mut stream = AppStream::new(opened, reader).unwrap();
        let mut got = String::new();
        stream.read_to_string(&mut got).unwrap();
        assert_eq!(got, "early");
    }
}
