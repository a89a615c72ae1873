//! The node's app socket: programs on this machine get reliable byte streams to
//! `(public key, port)` on other nodes, carried by the engine's userspace TCP/IP stack
//! over routes. This module is the control plane's side: the socket, who may use it, the
//! opening of each connection, and the client library; moving a stream's bytes is the
//! engine's, behind [`Streams`].
//!
//! ```text
//!  app ──connect──> app socket (server.rs: slots, SO_PEERCRED, one opening line)
//!                      │ dial ──> Streams::dial ─(NoRoute)─> Routes::ensure_route, dial again
//!                      │ listen ─> Streams::listen: arrivals ─> `incoming` lines, table
//!                      │ accept ─> the table (arrivals.rs), the listener's user or root
//!                      ▼
//!   `ok` line written, then Streams::attach(stream, owner, the connection):
//!   from then on the engine moves the stream's frames (DATA, FIN, RESET) over it
//! ```
//!
//! - [`protocol`]: the request line, the reply lines and the error kinds, sans-IO; the
//!   protocol for app writers in any language is `docs/APPS.md`.
//! - [`access`]: who may use the socket (root, the node's user, `node.apps.users`, members
//!   of `node.apps.group`).
//! - [`arrivals`]: streams that arrived and wait for an `accept`, bounded, sans-IO.
//! - [`server`]: [`AppServer`]: binds the socket (its own folder beside the control
//!   socket's, shared with the group), a thread per connection.
//! - [`client`]: [`AppClient`], [`AppStream`] (`Read`/`Write` over the frames),
//!   [`AppListener`], and [`client::join`] (a stream joined to a reader and a writer, as
//!   `skywire nc` does).
//! - [`engine`]: what a real node serves apps with: the engine's handle as [`Streams`],
//!   and [`ManagerRoutes`] (routes on demand from the node manager).
//! - [`fake`]: [`fake::FakeEngine`], an in-memory [`Streams`] and [`Routes`] that pumps
//!   frames between the app connections it is given, for tests of the server, the client
//!   and the tools built on them, without an engine.
//!
//! Invariants: the server never panics on input, and a bad request closes that connection
//! only. A connection's opening is bounded in bytes ([`protocol::MAX_REQUEST`]), time
//! ([`protocol::OPENING_TIMEOUT`]) and number ([`server::MAX_OPENING`]); the server never
//! reads past the opening line, so bytes an app sends right after it are the stream's.
//! The state the server keeps (waiting arrivals) is bounded by the listeners' backlogs and
//! the stack's `take_timeout`; established streams hold nothing here, they are the
//! engine's and bounded by its limits (`node.apps` in the config).

pub mod access;
pub mod arrivals;
pub mod client;
pub mod engine;
pub mod fake;
pub mod protocol;
pub mod server;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::WatchId;
use skywire_dataplane::stack::{
    ListenOptions, ListenerId, Owner, StreamError, StreamId, StreamInfo,
};

pub use client::{AppClient, AppError, AppListener, AppStream};
pub use engine::ManagerRoutes;
pub use server::AppServer;

/// What the app socket needs from the node's engine.
///
/// The server calls these from its connection threads, several at once. Their contract:
///
/// - A stream the engine handed out ([`Streams::dial`] returned it, or it came on a
///   listener's receiver) is the server's to [`Streams::attach`] or [`Streams::abort`];
///   one neither attached nor aborted within the stack's `take_timeout` is reset by the
///   engine ([`StreamError::NotTaken`]).
/// - After [`Streams::attach`], the connection is the engine's: it reads the app's frames
///   ([`skywire_dataplane::stack::appframe`]; an end of input at a frame boundary means
///   FIN), writes the peer's, writes a RESET `<kind>: <message>`
///   ([`protocol::reset_reason`]) when the stream fails, and closes the connection once
///   both sides sent FIN or the stream was reset. An app that closes its connection
///   before both FINs aborts the stream.
pub trait Streams: Send + Sync + 'static {
    /// Open a stream to `port` on `peer`; returns once the peer accepted (TCP
    /// established) or failed, within `timeout`. [`StreamError::NoRoute`] when this node
    /// has no route to `peer` (the server then asks [`Routes::ensure_route`] and dials
    /// once more).
    fn dial(
        &self,
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
    ) -> Result<StreamInfo, StreamError>;

    /// Listen on a port; arrived (established) streams come on the receiver. The engine
    /// drops the sender only when the listener is unlistened or the engine stops.
    fn listen(
        &self,
        options: ListenOptions,
    ) -> Result<(ListenerId, crossbeam_channel::Receiver<StreamInfo>), StreamError>;

    /// Stop listening: streams still in their handshake are reset. Those already handed out
    /// on the receiver stay the server's to attach or abort (or the take timeout resets
    /// them). Unknown ids are ignored.
    fn unlisten(&self, listener: ListenerId);

    /// Hand the app's connection to the engine, which writes `greeting` (the `ok` line)
    /// on it first and from then on moves the stream's frames over it. `owner` is the
    /// stream's owner (the dialing app's user, or the listener's). On an error the engine
    /// drops `socket`: [`StreamError::AppGone`] when the greeting could not be written (the
    /// app is gone), any other error before anything was written (the server then answers
    /// with an error line).
    fn attach(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: UnixStream,
        greeting: Vec<u8>,
    ) -> Result<(), StreamError>;

    /// Hand an attached stream of `owner`'s (or any, for root) over to `socket`, a stream
    /// socket the app passed with its `hand_over` line; `watch`, one of the owner's
    /// watches, hears when it ends.
    fn hand_over(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: OwnedFd,
        watch: Option<WatchId>,
    ) -> Result<(), StreamError>;

    /// Make `socket` a watch of `owner`'s; the engine writes its `ok` line on it.
    fn watch(&self, owner: Owner, socket: UnixStream) -> Result<WatchId, StreamError>;

    /// Reset a dialed or arrived stream the server could not hand over. Unknown ids are
    /// ignored.
    fn abort(&self, stream: StreamId);
}

/// Routes on demand.
pub trait Routes: Send + Sync + 'static {
    /// Make sure this node has a route to `peer` (asking the node manager), waiting at
    /// most until `deadline`.
    fn ensure_route(&self, peer: PublicKey, deadline: Instant) -> Result<(), RouteFailure>;
}

/// Why no route to a key could be had: the error the app sees, and what the manager (or
/// the node) said, for its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailure {
    /// The app's error ([`StreamError::NoRoute`] or [`StreamError::TimedOut`], mostly).
    pub error: StreamError,
    /// Why, in words, when there is more to say than the error's own text.
    pub why: Option<String>,
}

impl RouteFailure {
    /// A failure with nothing more to say.
    pub const fn plain(error: StreamError) -> Self {
        Self { error, why: None }
    }
}

impl core::fmt::Display for RouteFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.why {
            Some(why) => write!(f, "{}: {why}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// A node that gets no routes on demand (no manager): a dial without a route fails with
/// [`StreamError::NoRoute`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRoutes;

impl Routes for NoRoutes {
    fn ensure_route(&self, _peer: PublicKey, _deadline: Instant) -> Result<(), RouteFailure> {
        Err(RouteFailure {
            error: StreamError::NoRoute,
            why: Some("this node has no manager to ask for one (node.manager)".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests;
