//! The app socket's protocol, sans-IO: the opening request line, the JSON lines the node
//! answers with, and the error kinds. The full text for app writers is `docs/APPS.md`.
//!
//! A connection does one thing, chosen by its first line, a JSON object of at most
//! [`MAX_REQUEST`] bytes before its `\n`:
//!
//! | request | answer | then |
//! |---|---|---|
//! | `{"op":"dial","peer":KEY,"port":N,"timeout_ms":M}` | `{"ok":{"stream":ID,"peer":KEY,"local_port":L,"port":N}}` | the stream's frames both ways |
//! | `{"op":"listen","port":N,"backlog":B,"allow":[KEY,...]}` | `{"ok":{"listener":ID,"port":N}}` | `{"incoming":{"stream":ID,"peer":KEY,"port":P}}` lines |
//! | `{"op":"accept","stream":ID}` | `{"ok":{"stream":ID,"peer":KEY,"local_port":N,"port":P}}` | the stream's frames both ways |
//!
//! or `{"error":{"kind":KIND,"message":TEXT}}` and the connection closes. `timeout_ms`
//! ([`DEFAULT_DIAL_TIMEOUT`], at most [`MAX_DIAL_TIMEOUT`]), `backlog` ([`DEFAULT_BACKLOG`],
//! at most [`MAX_BACKLOG`]) and `allow` (any key) are optional. Unknown fields and fields
//! of another op are errors, so a typo is never silently ignored. Keys are 64 hex digits.
//! The frames are those of [`skywire_dataplane::stack::appframe`].
//!
//! Here: [`parse_request`] (a line, without its newline, to an [`AppRequest`] or a
//! [`RequestError`]), [`scan_opening`] (how much of the bytes waiting on a connection
//! belong to its opening line, so that the server never reads past it: bytes after the
//! line are the stream's, and go to the engine with the connection), the typed lines both
//! sides write and read ([`Reply`], [`ListenerLine`]), the error kinds ([`ErrorKind`]) and
//! the text of a RESET the node sends ([`reset_reason`], [`ResetReason`]).

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::WatchId;
use skywire_dataplane::stack::{ListenerId, StreamError, StreamId, StreamInfo};

/// The longest opening line, in bytes, without its newline.
pub const MAX_REQUEST: usize = 4096;
/// How long the node waits for a whole opening line.
pub const OPENING_TIMEOUT: Duration = Duration::from_secs(5);
/// A dial's timeout when the request gives none.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest dial timeout a request may ask for.
pub const MAX_DIAL_TIMEOUT: Duration = Duration::from_secs(120);
/// A listener's backlog when the request gives none.
pub const DEFAULT_BACKLOG: usize = 16;
/// The largest backlog a request may ask for.
pub const MAX_BACKLOG: usize = 1024;

/// What a connection asks for, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppRequest {
    /// Open a stream to `port` on `peer`, giving up after `timeout`.
    Dial {
        /// The far node's key.
        peer: PublicKey,
        /// The port on it.
        port: u16,
        /// How long to try, routes on demand included (whole milliseconds).
        timeout: Duration,
    },
    /// Listen on `port`.
    Listen {
        /// The port on this node.
        port: u16,
        /// Streams that may wait at once to be accepted.
        backlog: usize,
        /// Only streams from these keys; `None`: from any node.
        allow: Option<Vec<PublicKey>>,
    },
    /// Take a stream that arrived on one of this user's listeners.
    Accept {
        /// The stream's id, from an `incoming` line.
        stream: StreamId,
    },
    /// Hand one of this user's attached streams over to the stream socket that comes with
    /// the line (`SCM_RIGHTS`).
    HandOver {
        /// The stream's id, from the `ok` of its dial or accept.
        stream: StreamId,
        /// The watch (one of this user's) to tell when the stream ends.
        watch: Option<WatchId>,
    },
    /// Make this connection a watch: one `ended` line for every stream handed over with it.
    Watch,
}

impl AppRequest {
    /// The request as the line an app sends, newline included. A dial's timeout is written
    /// in whole milliseconds, rounded up and kept within 1 ms and [`MAX_DIAL_TIMEOUT`].
    pub fn to_line(&self) -> Vec<u8> {
        let wire = match self {
            Self::Dial {
                peer,
                port,
                timeout,
            } => {
                let ms = timeout
                    .max(&Duration::from_millis(1))
                    .min(&MAX_DIAL_TIMEOUT)
                    .as_nanos()
                    .div_ceil(1_000_000);
                WireRequest {
                    op: "dial".to_owned(),
                    peer: Some(peer.to_string()),
                    port: Some(u64::from(*port)),
                    timeout_ms: Some(u64::try_from(ms).unwrap_or(u64::MAX)),
                    ..WireRequest::default()
                }
            }
            Self::Listen {
                port,
                backlog,
                allow,
            } => WireRequest {
                op: "listen".to_owned(),
                port: Some(u64::from(*port)),
                backlog: Some(u64::try_from(*backlog).unwrap_or(u64::MAX)),
                allow: allow
                    .as_ref()
                    .map(|keys| keys.iter().map(ToString::to_string).collect()),
                ..WireRequest::default()
            },
            Self::Accept { stream } => WireRequest {
                op: "accept".to_owned(),
                stream: Some(stream.0),
                ..WireRequest::default()
            },
            Self::HandOver { stream, watch } => WireRequest {
                op: "hand_over".to_owned(),
                stream: Some(stream.0),
                watch: watch.map(|w| w.0),
                ..WireRequest::default()
            },
            Self::Watch => WireRequest {
                op: "watch".to_owned(),
                ..WireRequest::default()
            },
        };
        json_line(&wire)
    }
}

/// Why an opening line was refused (all `bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// More than [`MAX_REQUEST`] bytes came without a newline.
    #[error("the request line is longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// The app closed (or shut down) its side before the newline.
    #[error("the connection ended before the request line's newline")]
    Truncated,
    /// No newline within [`OPENING_TIMEOUT`].
    #[error("no whole request line within {} seconds", OPENING_TIMEOUT.as_secs())]
    TimedOut,
    /// The line is not UTF-8.
    #[error("the request line is not UTF-8")]
    NotUtf8,
    /// The line is not a JSON object of the protocol's fields (the parser's words).
    #[error("a request is a JSON object with an `op` and its fields: {0}")]
    NotJson(String),
    /// The op is none of `dial`, `listen`, `accept`, `hand_over`, `watch` (shown cut to 64
    /// characters).
    #[error("unknown op {0:?}: the ops are dial, listen, accept, hand_over and watch")]
    UnknownOp(String),
    /// A field the op needs is missing.
    #[error("{op} needs `{field}`")]
    Missing {
        /// The op.
        op: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field of another op.
    #[error("{op} takes no `{field}`")]
    Unexpected {
        /// The op.
        op: &'static str,
        /// The field.
        field: &'static str,
    },
    /// `peer` is not 64 hex digits.
    #[error("`peer` is not a public key (64 hex digits)")]
    BadPeer,
    /// `port` is 0 or above 65535.
    #[error("`port` is a number from 1 to 65535")]
    BadPort,
    /// `timeout_ms` is 0 or above the maximum.
    #[error("`timeout_ms` is a number from 1 to {}", MAX_DIAL_TIMEOUT.as_millis())]
    BadTimeout,
    /// `backlog` is 0 or above the maximum.
    #[error("`backlog` is a number from 1 to {MAX_BACKLOG}")]
    BadBacklog,
    /// An `allow` entry is not 64 hex digits.
    #[error("`allow[{0}]` is not a public key (64 hex digits)")]
    BadAllow(usize),
    /// `allow` is an empty list.
    #[error(
        "an empty `allow` would accept no stream; leave it out to accept streams from any node"
    )]
    EmptyAllow,
}

/// The fields any request may have, as JSON has them. Both directions: the server reads
/// it, [`AppRequest::to_line`] writes it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backlog: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watch: Option<u64>,
}

impl WireRequest {
    /// The first field present that `op` does not take (`allowed` lists those it does).
    fn unexpected(&self, allowed: &[&'static str]) -> Option<&'static str> {
        let present = [
            ("peer", self.peer.is_some()),
            ("port", self.port.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("backlog", self.backlog.is_some()),
            ("allow", self.allow.is_some()),
            ("stream", self.stream.is_some()),
            ("watch", self.watch.is_some()),
        ];
        present
            .into_iter()
            .find(|(name, here)| *here && !allowed.contains(name))
            .map(|(name, _)| name)
    }
}

/// The request on an opening line (`line` without its newline; a `\r` before it is JSON
/// whitespace and fine).
pub fn parse_request(line: &[u8]) -> Result<AppRequest, RequestError> {
    let text = core::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    // Serde would also read a struct from a JSON array.
    if !text.trim_start().starts_with('{') {
        return Err(RequestError::NotJson("not an object".to_owned()));
    }
    let wire: WireRequest =
        serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let (op, allowed): (&'static str, &[&'static str]) = match wire.op.as_str() {
        "dial" => ("dial", &["peer", "port", "timeout_ms"]),
        "listen" => ("listen", &["port", "backlog", "allow"]),
        "accept" => ("accept", &["stream"]),
        "hand_over" => ("hand_over", &["stream", "watch"]),
        "watch" => ("watch", &[]),
        other => {
            return Err(RequestError::UnknownOp(other.chars().take(64).collect()));
        }
    };
    if let Some(field) = wire.unexpected(allowed) {
        return Err(RequestError::Unexpected { op, field });
    }
    let missing = |field| RequestError::Missing { op, field };
    match op {
        "dial" => {
            let peer = wire
                .peer
                .ok_or(missing("peer"))?
                .parse()
                .map_err(|_| RequestError::BadPeer)?;
            let port = port(wire.port.ok_or(missing("port"))?)?;
            let timeout = match wire.timeout_ms {
                None => DEFAULT_DIAL_TIMEOUT,
                Some(ms) => Some(Duration::from_millis(ms))
                    .filter(|t| !t.is_zero() && *t <= MAX_DIAL_TIMEOUT)
                    .ok_or(RequestError::BadTimeout)?,
            };
            Ok(AppRequest::Dial {
                peer,
                port,
                timeout,
            })
        }
        "listen" => {
            let port = port(wire.port.ok_or(missing("port"))?)?;
            let backlog = match wire.backlog {
                None => DEFAULT_BACKLOG,
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_BACKLOG).contains(n))
                    .ok_or(RequestError::BadBacklog)?,
            };
            let allow = match wire.allow {
                None => None,
                Some(keys) if keys.is_empty() => return Err(RequestError::EmptyAllow),
                Some(keys) => Some(
                    keys.iter()
                        .enumerate()
                        .map(|(i, key)| key.parse().map_err(|_| RequestError::BadAllow(i)))
                        .collect::<Result<Vec<PublicKey>, _>>()?,
                ),
            };
            Ok(AppRequest::Listen {
                port,
                backlog,
                allow,
            })
        }
        "accept" => Ok(AppRequest::Accept {
            stream: StreamId(wire.stream.ok_or(missing("stream"))?),
        }),
        "hand_over" => Ok(AppRequest::HandOver {
            stream: StreamId(wire.stream.ok_or(missing("stream"))?),
            watch: wire.watch.map(WatchId),
        }),
        _ => Ok(AppRequest::Watch),
    }
}

fn port(n: u64) -> Result<u16, RequestError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(RequestError::BadPort)
}

/// How much of the bytes waiting on a connection belong to its opening line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The line ends within the first `n` bytes (its newline is the last of them): take
    /// exactly those.
    Line(usize),
    /// No newline yet: all `n` bytes are part of the line; take them and wait for more.
    Partial(usize),
    /// The line is longer than [`MAX_REQUEST`].
    TooLong,
}

/// Given `have` bytes of the opening line already taken and `waiting`, the bytes the
/// connection holds now (read without consuming them, `MSG_PEEK`), what to take. Never
/// more than the line, so the bytes after it stay for the stream.
pub fn scan_opening(have: usize, waiting: &[u8]) -> Scan {
    match waiting.iter().position(|&b| b == b'\n') {
        Some(end) if have + end > MAX_REQUEST => Scan::TooLong,
        Some(end) => Scan::Line(end + 1),
        None if have + waiting.len() > MAX_REQUEST => Scan::TooLong,
        None => Scan::Partial(waiting.len()),
    }
}

/// An error's kind on the app socket: `bad_request`, `permission`, or a
/// [`StreamError::kind`]. Kinds this version does not know (from a newer node) are kept
/// as [`ErrorKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The opening line was not a request of the protocol.
    BadRequest,
    /// This user may not do that.
    Permission,
    /// [`StreamError::NoRoute`].
    NoRoute,
    /// [`StreamError::Refused`].
    Refused,
    /// [`StreamError::TimedOut`].
    Timeout,
    /// [`StreamError::RouteGone`].
    RouteGone,
    /// [`StreamError::PeerReset`].
    Reset,
    /// [`StreamError::IdleTimeout`].
    IdleTimeout,
    /// [`StreamError::Limit`]; also a node already serving its most app connections.
    Limit,
    /// [`StreamError::PortInUse`].
    PortInUse,
    /// [`StreamError::UnknownStream`].
    UnknownStream,
    /// [`StreamError::NotTaken`].
    NotTaken,
    /// [`StreamError::AppGone`].
    AppGone,
    /// [`StreamError::AppProtocol`].
    AppProtocol,
    /// [`StreamError::Shutdown`].
    Shutdown,
    /// [`StreamError::EngineGone`].
    EngineGone,
    /// A kind this version does not know.
    Other(String),
}

impl ErrorKind {
    /// Every kind but [`ErrorKind::Other`].
    const KNOWN: [Self; 16] = [
        Self::BadRequest,
        Self::Permission,
        Self::NoRoute,
        Self::Refused,
        Self::Timeout,
        Self::RouteGone,
        Self::Reset,
        Self::IdleTimeout,
        Self::Limit,
        Self::PortInUse,
        Self::UnknownStream,
        Self::NotTaken,
        Self::AppGone,
        Self::AppProtocol,
        Self::Shutdown,
        Self::EngineGone,
    ];

    /// The kind as the protocol writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Permission => "permission",
            Self::NoRoute => StreamError::NoRoute.kind(),
            Self::Refused => StreamError::Refused.kind(),
            Self::Timeout => StreamError::TimedOut.kind(),
            Self::RouteGone => StreamError::RouteGone.kind(),
            Self::Reset => StreamError::PeerReset.kind(),
            Self::IdleTimeout => StreamError::IdleTimeout.kind(),
            Self::Limit => "limit",
            Self::PortInUse => StreamError::PortInUse.kind(),
            Self::UnknownStream => StreamError::UnknownStream.kind(),
            Self::NotTaken => StreamError::NotTaken.kind(),
            Self::AppGone => StreamError::AppGone.kind(),
            Self::AppProtocol => StreamError::AppProtocol.kind(),
            Self::Shutdown => StreamError::Shutdown.kind(),
            Self::EngineGone => StreamError::EngineGone.kind(),
            Self::Other(kind) => kind,
        }
    }

    /// The kind written `text`.
    pub fn from_text(text: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .unwrap_or_else(|| Self::Other(text.to_owned()))
    }
}

impl From<StreamError> for ErrorKind {
    fn from(error: StreamError) -> Self {
        match error {
            StreamError::NoRoute => Self::NoRoute,
            StreamError::Refused => Self::Refused,
            StreamError::TimedOut => Self::Timeout,
            StreamError::RouteGone => Self::RouteGone,
            StreamError::PeerReset => Self::Reset,
            StreamError::IdleTimeout => Self::IdleTimeout,
            StreamError::Limit(_) => Self::Limit,
            StreamError::PortInUse => Self::PortInUse,
            StreamError::UnknownStream => Self::UnknownStream,
            StreamError::NotTaken => Self::NotTaken,
            StreamError::AppGone => Self::AppGone,
            StreamError::AppProtocol => Self::AppProtocol,
            StreamError::Shutdown => Self::Shutdown,
            StreamError::EngineGone => Self::EngineGone,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::from_text(&text))
    }
}

/// The text of a RESET frame the node sends an app: `<kind>: <message>`, such as
/// `route_gone: the route to the peer is gone`.
pub fn reset_reason(error: StreamError) -> String {
    format!("{}: {error}", error.kind())
}

/// A RESET's text, read back: its kind and message (see [`reset_reason`]). A text without
/// a kind (an app's own reason) is kind `reset` with the whole text as its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReason {
    /// The kind before the colon.
    pub kind: ErrorKind,
    /// The words after it.
    pub message: String,
}

impl ResetReason {
    /// Read a RESET frame's text.
    pub fn parse(text: &str) -> Self {
        match text.split_once(": ") {
            Some((kind, message))
                if !kind.is_empty()
                    && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                Self {
                    kind: ErrorKind::from_text(kind),
                    message: message.to_owned(),
                }
            }
            _ => Self {
                kind: ErrorKind::Reset,
                message: text.to_owned(),
            },
        }
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// An error line's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
}

/// The answer to an opening: `{"ok": T}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// It worked: the op's body ([`StreamOpened`], [`Listening`]).
    Ok(T),
    /// It did not; the connection closes after this line.
    Error(ErrorBody),
}

impl<T: Serialize> Reply<T> {
    /// The line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        json_line(self)
    }
}

/// An error reply line of `kind` (for any op: the body type does not matter).
pub fn error_line(kind: ErrorKind, message: impl Into<String>) -> Vec<u8> {
    Reply::<()>::Error(ErrorBody {
        kind,
        message: message.into(),
    })
    .to_line()
}

/// A line the node writes on a listening connection after its `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerLine {
    /// A stream arrived; `accept` it on a new connection.
    Incoming(Incoming),
    /// The listener ended (the engine stopped, or the app broke the protocol); the
    /// connection closes after this line.
    Error(ErrorBody),
}

impl ListenerLine {
    /// The line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        json_line(self)
    }
}

/// The `ok` body of `dial` and `accept`: the stream, as the app is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOpened {
    /// The stream's id on this node.
    #[serde(with = "stream_id")]
    pub stream: StreamId,
    /// The key of the node at the far end.
    #[serde(with = "key_text")]
    pub peer: PublicKey,
    /// The port on this node.
    pub local_port: u16,
    /// The port on the far node.
    pub port: u16,
}

impl From<StreamInfo> for StreamOpened {
    fn from(info: StreamInfo) -> Self {
        Self {
            stream: info.id,
            peer: info.peer,
            local_port: info.local_port,
            port: info.remote_port,
        }
    }
}

/// The `ok` body of `hand_over`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handed {
    /// The stream handed over.
    #[serde(with = "stream_id")]
    pub handed: StreamId,
}

/// The `ok` body of `watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOpened {
    /// The watch's id, for `hand_over`.
    pub watch: u64,
}

/// A line the node writes on a watch (`{"ended":{"stream":ID,"sent":N,"received":M,
/// "error":null}}`; the engine writes it, `dataplane::engine`'s `apps` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchLine {
    /// How a stream handed over with this watch ended.
    Ended(Ended),
}

/// A handed-over stream's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    /// The stream.
    #[serde(with = "stream_id")]
    pub stream: StreamId,
    /// Stream bytes the node took from the app (both before and after the hand-over).
    pub sent: u64,
    /// Stream bytes the node gave to the app.
    pub received: u64,
    /// `None`: both sides closed it; else the error kind it was reset with.
    pub error: Option<String>,
}

/// The `ok` body of `listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    /// The listener's id on this node.
    #[serde(with = "listener_id")]
    pub listener: ListenerId,
    /// The port listened on.
    pub port: u16,
}

/// A stream that arrived on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The id to `accept`.
    #[serde(with = "stream_id")]
    pub stream: StreamId,
    /// The key of the node it came from (the route's authenticated peer).
    #[serde(with = "key_text")]
    pub peer: PublicKey,
    /// The port on that node.
    pub port: u16,
}

impl From<StreamInfo> for Incoming {
    fn from(info: StreamInfo) -> Self {
        Self {
            stream: info.id,
            peer: info.peer,
            port: info.remote_port,
        }
    }
}

/// `value` as one JSON line. Every value written here is a struct of strings and numbers,
/// which always serialises; the fallback is never taken.
fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// A public key as its 64 hex digits.
mod key_text {
    use super::{Deserialize, Deserializer, PublicKey, Serializer};
    use serde::de::Error as _;

    pub(super) fn serialize<S: Serializer>(key: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// A stream id as its number.
mod stream_id {
    use super::{Deserialize, Deserializer, Serializer, StreamId};

    pub(super) fn serialize<S: Serializer>(id: &StreamId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(id.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StreamId, D::Error> {
        u64::deserialize(d).map(StreamId)
    }
}

/// A listener id as its number.
mod listener_id {
    use super::{Deserialize, Deserializer, ListenerId, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &ListenerId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(id.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ListenerId, D::Error> {
        u64::deserialize(d).map(ListenerId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abababababababababababababababababababababababababababababababab";

    fn key() -> PublicKey {
        KEY.parse().unwrap()
    }

    #[test]
    fn requests_parse_with_their_defaults() {
        assert_eq!(
            parse_request(format!(r#"{{"op":"dial","peer":"{KEY}","port":7}}"#).as_bytes()),
            Ok(AppRequest::Dial {
                peer: key(),
                port: 7,
                timeout: DEFAULT_DIAL_TIMEOUT
            })
        );
        assert_eq!(
            parse_request(
                format!(r#" {{"op":"dial","peer":"{KEY}","port":65535,"timeout_ms":120000}}"#)
                    .as_bytes()
            ),
            Ok(AppRequest::Dial {
                peer: key(),
                port: 65535,
                timeout: MAX_DIAL_TIMEOUT
            })
        );
        assert_eq!(
            parse_request(br#"{"op":"listen","port":80}"#),
            Ok(AppRequest::Listen {
                port: 80,
                backlog: DEFAULT_BACKLOG,
                allow: None
            })
        );
        assert_eq!(
            parse_request(
                format!(r#"{{"op":"listen","port":80,"backlog":1024,"allow":["{KEY}"]}}"#)
                    .as_bytes()
            ),
            Ok(AppRequest::Listen {
                port: 80,
                backlog: 1024,
                allow: Some(vec![key()])
            })
        );
        assert_eq!(
            parse_request(b"{\"op\":\"accept\",\"stream\":18446744073709551615}\r"),
            Ok(AppRequest::Accept {
                stream: StreamId(u64::MAX)
            })
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let dial = |fields: &str| format!(r#"{{"op":"dial","peer":"{KEY}"{fields}}}"#);
        let cases: Vec<(Vec<u8>, RequestError)> = vec![
            (vec![0xff, b'{'], RequestError::NotUtf8),
            (
                br#"["op","dial"]"#.to_vec(),
                RequestError::NotJson("not an object".into()),
            ),
            (
                br#"{"op":"frobnicate"}"#.to_vec(),
                RequestError::UnknownOp("frobnicate".into()),
            ),
            (
                dial("").into_bytes(),
                RequestError::Missing {
                    op: "dial",
                    field: "port",
                },
            ),
            (
                dial(r#","port":1,"stream":3"#).into_bytes(),
                RequestError::Unexpected {
                    op: "dial",
                    field: "stream",
                },
            ),
            (
                br#"{"op":"dial","peer":"abc","port":1}"#.to_vec(),
                RequestError::BadPeer,
            ),
            (dial(r#","port":0"#).into_bytes(), RequestError::BadPort),
            (dial(r#","port":65536"#).into_bytes(), RequestError::BadPort),
            (
                dial(r#","port":1,"timeout_ms":0"#).into_bytes(),
                RequestError::BadTimeout,
            ),
            (
                dial(r#","port":1,"timeout_ms":120001"#).into_bytes(),
                RequestError::BadTimeout,
            ),
            (
                br#"{"op":"listen","port":1,"backlog":1025}"#.to_vec(),
                RequestError::BadBacklog,
            ),
            (
                br#"{"op":"listen","port":1,"allow":[]}"#.to_vec(),
                RequestError::EmptyAllow,
            ),
            (
                format!(r#"{{"op":"listen","port":1,"allow":["{KEY}","x"]}}"#).into_bytes(),
                RequestError::BadAllow(1),
            ),
            (
                br#"{"op":"accept"}"#.to_vec(),
                RequestError::Missing {
                    op: "accept",
                    field: "stream",
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_request(&line),
                Err(want),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
        for bad in [
            &br#"{"op":"dial","port":1.5}"#[..],
            br#"{"op":"dial","port":-1}"#,
            br#"{"op":"dial","colour":"red"}"#,
            br#"{"op":"accept","stream":1,"stream":2}"#,
            br#"{"op":"accept""#,
            b"",
            b"{}",
        ] {
            assert!(
                matches!(parse_request(bad), Err(RequestError::NotJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_op = format!(r#"{{"op":"{}"}}"#, "x".repeat(500));
        match parse_request(long_op.as_bytes()) {
            Err(RequestError::UnknownOp(op)) => assert_eq!(op.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_written_parse_to_themselves() {
        let requests = [
            AppRequest::Dial {
                peer: key(),
                port: 9,
                timeout: Duration::from_millis(1500),
            },
            AppRequest::Listen {
                port: 1,
                backlog: 3,
                allow: Some(vec![key(), PublicKey::from_bytes([1; 32])]),
            },
            AppRequest::Listen {
                port: 65535,
                backlog: 1,
                allow: None,
            },
            AppRequest::Accept {
                stream: StreamId(42),
            },
        ];
        for request in requests {
            let line = request.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(parse_request(&line[..line.len() - 1]), Ok(request.clone()));
        }
        // Timeouts are whole milliseconds within the bounds.
        let odd = AppRequest::Dial {
            peer: key(),
            port: 9,
            timeout: Duration::from_micros(1),
        };
        let line = odd.to_line();
        assert!(String::from_utf8_lossy(&line).contains(r#""timeout_ms":1"#));
        let long = AppRequest::Dial {
            peer: key(),
            port: 9,
            timeout: Duration::from_secs(1000),
        };
        let line = long.to_line();
        assert!(String::from_utf8_lossy(&line).contains(r#""timeout_ms":120000"#));
    }

    #[test]
    fn scanning_takes_the_line_and_nothing_after_it() {
        assert_eq!(scan_opening(0, b"{}\n\x00\x00\x00\x05hello"), Scan::Line(3));
        assert_eq!(scan_opening(0, b"{\"op\""), Scan::Partial(5));
        assert_eq!(scan_opening(5, b":1}\n"), Scan::Line(4));
        assert_eq!(scan_opening(0, b""), Scan::Partial(0));
        let full = vec![b'a'; MAX_REQUEST];
        assert_eq!(scan_opening(0, &full), Scan::Partial(MAX_REQUEST));
        assert_eq!(scan_opening(MAX_REQUEST, b"\n"), Scan::Line(1));
        assert_eq!(scan_opening(MAX_REQUEST, b"a"), Scan::TooLong);
        assert_eq!(scan_opening(MAX_REQUEST - 1, b"ab\n"), Scan::TooLong);
    }

    #[test]
    fn replies_are_the_documented_lines() {
        let opened = StreamOpened {
            stream: StreamId(5),
            peer: key(),
            local_port: 49152,
            port: 7,
        };
        assert_eq!(
            String::from_utf8(Reply::Ok(opened).to_line()).unwrap(),
            format!(r#"{{"ok":{{"stream":5,"peer":"{KEY}","local_port":49152,"port":7}}}}"#) + "\n"
        );
        let listening = Listening {
            listener: ListenerId(2),
            port: 80,
        };
        assert_eq!(
            Reply::Ok(listening).to_line(),
            b"{\"ok\":{\"listener\":2,\"port\":80}}\n"
        );
        let incoming = ListenerLine::Incoming(Incoming {
            stream: StreamId(9),
            peer: key(),
            port: 50000,
        });
        let line = incoming.to_line();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            format!(r#"{{"incoming":{{"stream":9,"peer":"{KEY}","port":50000}}}}"#) + "\n"
        );
        assert_eq!(
            serde_json::from_slice::<ListenerLine>(&line).unwrap(),
            incoming
        );
        assert_eq!(
            error_line(ErrorKind::Permission, "no"),
            b"{\"error\":{\"kind\":\"permission\",\"message\":\"no\"}}\n"
        );
        // Readers ignore fields they do not know.
        let newer = format!(
            r#"{{"ok":{{"stream":5,"peer":"{KEY}","local_port":49152,"port":7,"rtt_us":3}}}}"#
        );
        assert_eq!(
            serde_json::from_str::<Reply<StreamOpened>>(&newer).unwrap(),
            Reply::Ok(opened)
        );
    }

    #[test]
    fn error_kinds_are_the_stream_errors_kinds() {
        use skywire_dataplane::stack::Limit;
        let all = [
            StreamError::NoRoute,
            StreamError::Refused,
            StreamError::TimedOut,
            StreamError::RouteGone,
            StreamError::PeerReset,
            StreamError::IdleTimeout,
            StreamError::Limit(Limit::Peer),
            StreamError::PortInUse,
            StreamError::UnknownStream,
            StreamError::NotTaken,
            StreamError::AppGone,
            StreamError::AppProtocol,
            StreamError::Shutdown,
            StreamError::EngineGone,
        ];
        for error in all {
            let kind = ErrorKind::from(error);
            assert_eq!(kind.as_str(), error.kind());
            assert_eq!(ErrorKind::from_text(error.kind()), kind);
        }
        for kind in ErrorKind::KNOWN {
            assert_eq!(ErrorKind::from_text(kind.as_str()), kind);
        }
        assert_eq!(
            ErrorKind::from_text("quantum"),
            ErrorKind::Other("quantum".into())
        );
        let body: ErrorBody =
            serde_json::from_str(r#"{"kind":"port_in_use","message":"taken"}"#).unwrap();
        assert_eq!(body.kind, ErrorKind::PortInUse);
    }

    #[test]
    fn reset_reasons_carry_the_kind() {
        let text = reset_reason(StreamError::RouteGone);
        assert_eq!(text, "route_gone: the route to the peer is gone");
        let reason = ResetReason::parse(&text);
        assert_eq!(reason.kind, ErrorKind::RouteGone);
        assert_eq!(reason.message, "the route to the peer is gone");
        assert_eq!(reason.to_string(), text);
        let own = ResetReason::parse("Giving up: bye");
        assert_eq!(own.kind, ErrorKind::Reset);
        assert_eq!(own.message, "Giving up: bye");
        assert_eq!(ResetReason::parse("").message, "");
    }
}
