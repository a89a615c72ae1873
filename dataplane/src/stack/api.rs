//! The types apps' streams are spoken of in, on both sides of the engine: the data plane's
//! stack and the control plane's app socket use the same ids, options and errors.

use core::fmt;

use crate::crypto::PublicKey;

/// A stream's id on its node: given when the stream is dialed or arrives, never reused while
/// the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A listener's id on its node, never reused while the node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u64);

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who a stream or listener belongs to: the user id of the app that asked for it (from
/// `SO_PEERCRED` on the app socket). Limits per app count by owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub u32);

/// What a new listener accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// The port it listens on (1 to 65535).
    pub port: u16,
    /// Streams that may wait at once for the app to accept them, counting those still
    /// completing their handshake; a SYN beyond it is answered with a reset.
    pub backlog: usize,
    /// Only streams from these keys (`None`: from any key the node has a route with).
    pub allow: Option<Vec<PublicKey>>,
    /// The app that listens.
    pub owner: Owner,
}

/// A stream, as the app is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its id on this node.
    pub id: StreamId,
    /// The key at the far end: the route's authenticated peer, never anything the peer
    /// said.
    pub peer: PublicKey,
    /// The port on this node.
    pub local_port: u16,
    /// The port on the peer.
    pub remote_port: u16,
}

/// Which limit a new stream or listener hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Streams on the node.
    Node,
    /// Streams with one peer key.
    Peer,
    /// Streams of one app (owner).
    App,
    /// Streams still completing their handshake.
    HalfOpen,
    /// The memory all streams' buffers may take.
    Memory,
    /// Listeners on the node.
    Listeners,
}

impl Limit {
    /// A short name, for errors and status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Node => "streams on this node",
            Limit::Peer => "streams with this peer",
            Limit::App => "streams of this app",
            Limit::HalfOpen => "half-open streams",
            Limit::Memory => "stream memory",
            Limit::Listeners => "listeners",
        }
    }
}

/// Why a dial, listen or attach failed, or why a stream ended other than by both sides
/// closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum StreamError {
    /// No route end to that key on this node.
    #[error("no route to that node")]
    NoRoute,
    /// The peer answered with a reset: nothing listens on that port, or its listener does
    /// not take streams from this node.
    #[error("connection refused: nothing on that node accepts streams on that port from this node")]
    Refused,
    /// No answer within the dial timeout.
    #[error("the node did not answer in time")]
    TimedOut,
    /// The route to the peer went away (removed, expired, or its node's manager gave up on
    /// it) and no other route to the key is left.
    #[error("the route to the peer is gone")]
    RouteGone,
    /// The peer reset the stream.
    #[error("the peer reset the stream")]
    PeerReset,
    /// Nothing was sent or received for the idle timeout.
    #[error("the stream was idle too long")]
    IdleTimeout,
    /// A limit was reached.
    #[error("too many {}", .0.as_str())]
    Limit(Limit),
    /// Another listener has that port.
    #[error("the port is in use")]
    PortInUse,
    /// No stream or listener has that id (it ended, or was never given to this app).
    #[error("no such stream")]
    UnknownStream,
    /// The app did not take the stream in time (an accepted or dialed stream nobody
    /// attached).
    #[error("the app did not take the stream in time")]
    NotTaken,
    /// The app closed its connection before the stream ended (the stream was reset).
    #[error("the app went away")]
    AppGone,
    /// The app sent something the stream protocol does not allow.
    #[error("the app broke the stream protocol")]
    AppProtocol,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Shutdown,
    /// The engine is not running or did not answer.
    #[error("the node's engine is not answering")]
    EngineGone,
}

impl StreamError {
    /// The error's kind on the app socket (`docs/APPS.md`).
    pub const fn kind(self) -> &'static str {
        match self {
            StreamError::NoRoute => "no_route",
            StreamError::Refused => "refused",
            StreamError::TimedOut => "timeout",
            StreamError::RouteGone => "route_gone",
            StreamError::PeerReset => "reset",
            StreamError::IdleTimeout => "idle_timeout",
            StreamError::Limit(_) => "limit",
            StreamError::PortInUse => "port_in_use",
            StreamError::UnknownStream => "unknown_stream",
            StreamError::NotTaken => "not_taken",
            StreamError::AppGone => "app_gone",
            StreamError::AppProtocol => "app_protocol",
            StreamError::Shutdown => "shutdown",
            StreamError::EngineGone => "engine_gone",
        }
    }
}

/// The limits and sizes of a node's stack (config `node.apps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackSetup {
    /// Streams on the node at once.
    pub max_streams: usize,
    /// Streams with one peer key at once.
    pub max_streams_per_peer: usize,
    /// Streams of one app (owner) at once.
    pub max_streams_per_app: usize,
    /// Streams still completing their handshake, in either direction.
    pub max_half_open: usize,
    /// Listeners on the node.
    pub max_listeners: usize,
    /// A stream with nothing sent or received for this long is reset.
    pub idle_timeout: core::time::Duration,
    /// A dialed or arrived stream the app does not take (attach) within this is reset.
    pub take_timeout: core::time::Duration,
    /// Bytes of buffer per stream and direction, while memory allows (rounded down to
    /// [`window_sized`]).
    pub buffer: usize,
    /// Bytes all streams' buffers may take together; past half of it, new streams get
    /// [`MIN_BUFFER`] per direction, and past all of it no new stream starts.
    pub memory: usize,
}

/// The smallest buffer a stream gets per direction (64 KiB less one byte: see
/// [`window_sized`]).
pub const MIN_BUFFER: usize = 65_535;

/// The buffer size the stack uses for `bytes`: the largest `(64 KiB << k) - 1` not above
/// it (at least [`MIN_BUFFER`]).
///
/// smoltcp 0.14 reads the window of its SYN-ACK (65535 at most, never scaled) as if it were
/// scaled, so until it sends its next segment it accepts data up to `65535 << k` bytes
/// ahead, where `k` is the buffer's bit length less 16. A buffer of `(64 KiB << k) - 1`
/// bytes (bit length `16 + k`) holds all of that; a buffer of 256 KiB (bit length 19, so
/// 512 KiB "accepted") does not, and a peer could send past its end, which trips a debug
/// assertion in smoltcp and, in a release build, hands the app bytes that never arrived.
/// Found by the `stack_ingress` fuzz target.
pub const fn window_sized(bytes: usize) -> usize {
    let mut size = MIN_BUFFER;
    while size <= bytes.saturating_sub(1) / 2 && size < (1 << 29) {
        size = size * 2 + 1;
    }
    size
}

impl Default for StackSetup {
    fn default() -> Self {
        Self {
            max_streams: 8192,
            max_streams_per_peer: 2048,
            max_streams_per_app: 4096,
            max_half_open: 512,
            max_listeners: 256,
            idle_timeout: core::time::Duration::from_secs(3600),
            take_timeout: core::time::Duration::from_secs(10),
            buffer: 256 * 1024,
            memory: 512 * 1024 * 1024,
        }
    }
}
