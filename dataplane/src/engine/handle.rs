//! The control plane's handle on a running engine: commands go over a bounded channel and a
//! mio waker wakes the event loop, so the engine never takes a lock to serve them. Events
//! come back over another bounded channel.

use core::time::Duration;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::core::{AcceptedInitiation, PingError};
use super::event::{EVENT_QUEUE, EngineEvent};
use super::heartbeat::Heartbeat;
use super::setup::{ApplyError, GrantError, RuleChange};
use super::status::NodeStatus;
use crate::crypto::PublicKey;
use crate::route::Prefix;
use crate::stack::{ListenOptions, ListenerId, Owner, StreamError, StreamId, StreamInfo};
use crate::wire::RouteId;
use std::os::unix::net::UnixStream;

use super::apps::WatchId;

/// How long a stream command waits for room in the command queue.
const STREAM_COMMAND_WAIT: Duration = Duration::from_secs(2);

/// How long [`EngineHandle::ping`] waits for the event loop to take the ping.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A request to the engine's event loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send back a status snapshot.
    Status(Sender<NodeStatus>),
    /// Apply a batch of rule changes and send back the result.
    Apply(Vec<RuleChange>, Sender<Result<(), ApplyError>>),
    /// Replace a peer key's granted prefixes and send back the result.
    Grant(PublicKey, Vec<Prefix>, Sender<Result<(), GrantError>>),
    /// Send back the newest initiation accepted from each peer key.
    AcceptedInitiations(Sender<Vec<AcceptedInitiation>>),
    TakeUsage(Sender<super::usage::Usage>),
    /// Remember initiations accepted before a restart.
    /// Send a link probe.
    Probe(SocketAddr, u64),
    /// Replace the list of neighbours (address and key).
    Neighbours(Vec<(SocketAddr, PublicKey)>),
    /// Ping over a route end and send back whether the route end exists.
    Ping(RouteId, u64, Sender<Result<(), PingError>>),
    /// Open a stream and send back its outcome once established or failed.
    Dial {
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
        reply: Sender<Result<StreamInfo, StreamError>>,
    },
    /// Listen on a port; arrived streams go to the listener's channel.
    Listen {
        options: ListenOptions,
        reply: Sender<Result<(ListenerId, Receiver<StreamInfo>), StreamError>>,
    },
    /// Stop listening.
    Unlisten(ListenerId),
    /// Hand a stream's app connection to the engine.
    Attach {
        stream: StreamId,
        owner: Owner,
        socket: UnixStream,
        greeting: Vec<u8>,
        reply: Sender<Result<(), StreamError>>,
    },
    /// Hand an attached stream over to a stream socket of the app's (`engine::apps`).
    HandOver {
        stream: StreamId,
        owner: Owner,
        socket: std::os::fd::OwnedFd,
        watch: Option<WatchId>,
        reply: Sender<Result<(), StreamError>>,
    },
    /// A watch on an app's connection (`engine::apps`).
    Watch {
        owner: Owner,
        socket: UnixStream,
        reply: Sender<Result<WatchId, StreamError>>,
    },
    /// Reset a stream.
    Abort(StreamId),
    /// Poll this heartbeat once per turn from now on (replacing any earlier one).
    Heartbeat(Heartbeat),
    /// Test hook: block the event loop for this long, as a hung loop would
    /// ([`EngineHandle::stall`]).
    Stall(Duration),
    /// Close every route, remove the TUN device and return from the event loop.
    Shutdown,
}

/// The engine is not running any more (it stopped, or did not answer in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EngineGone {
    /// The event loop has exited.
    #[error("the node's engine has stopped")]
    Stopped,
    /// The event loop did not answer within the timeout.
    #[error("the node's engine did not answer in time")]
    Timeout,
}

/// A cloneable handle on a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    events: Receiver<EngineEvent>,
}

impl EngineHandle {
    /// A handle, the loop's end of the command channel and its end of the event channel.
    pub(crate) fn new(waker: Arc<mio::Waker>) -> (Self, Receiver<Command>, Sender<EngineEvent>) {
        let (commands, receiver) = bounded(64);
        let (event_sender, events) = bounded(EVENT_QUEUE);
        (
            Self {
                commands,
                waker,
                events,
            },
            receiver,
            event_sender,
        )
    }

    /// Wait at most `timeout` for the answer to a command.
    fn answer<T>(answer: &Receiver<T>, timeout: Duration) -> Result<T, EngineGone> {
        answer.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => EngineGone::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => EngineGone::Stopped,
        })
    }

    fn send(&self, command: Command) -> Result<(), EngineGone> {
        self.commands.try_send(command).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => EngineGone::Timeout,
            crossbeam_channel::TrySendError::Disconnected(_) => EngineGone::Stopped,
        })?;
        self.waker.wake().map_err(|_| EngineGone::Stopped)
    }

    /// A snapshot of the node's state, waiting at most `timeout` for the event loop.
    pub fn status(&self, timeout: Duration) -> Result<NodeStatus, EngineGone> {
        let (reply, answer) = bounded(1);
        self.send(Command::Status(reply))?;
        Self::answer(&answer, timeout)
    }

    /// Apply a batch of rule changes, all or nothing (see [`NodeCore::apply`]), waiting at
    /// most `timeout` for the event loop. The outer error says the engine did not answer;
    /// the inner one that it refused the batch and changed nothing. On a timeout the batch
    /// may still be applied later: ask [`status`](Self::status) to find out.
    ///
    /// When the node has a TUN device, prefixes of new route ends get a kernel route
    /// through it (best effort: one the kernel refuses, say because another interface
    /// routes that prefix, is left out), and a kernel route goes when no route end claims
    /// its prefix any more (removed, or expired).
    ///
    /// [`NodeCore::apply`]: super::NodeCore::apply
    pub fn apply(
        &self,
        changes: Vec<RuleChange>,
        timeout: Duration,
    ) -> Result<Result<(), ApplyError>, EngineGone> {
        let (reply, answer) = bounded(1);
        self.send(Command::Apply(changes, reply))?;
        Self::answer(&answer, timeout)
    }

    /// Give `peer` the `prefixes` beyond its route ends' own, replacing its grant (empty
    /// takes it back); see [`NodeCore::grant`](super::NodeCore::grant).
    pub fn grant(
        &self,
        peer: PublicKey,
        prefixes: Vec<Prefix>,
        timeout: Duration,
    ) -> Result<Result<(), GrantError>, EngineGone> {
        let (reply, answer) = bounded(1);
        self.send(Command::Grant(peer, prefixes, reply))?;
        Self::answer(&answer, timeout)
    }

    /// The newest initiation accepted from each peer key, for the node's state file; see
    /// [`NodeCore::accepted_initiations`](super::NodeCore::accepted_initiations).
    pub fn accepted_initiations(
        &self,
        timeout: Duration,
    ) -> Result<Vec<AcceptedInitiation>, EngineGone> {
        let (reply, answer) = bounded(1);
        self.send(Command::AcceptedInitiations(reply))?;
        Self::answer(&answer, timeout)
    }

    /// What the node carried since the last call, for its ledger; see
    /// [`NodeCore::take_usage`](super::NodeCore::take_usage). One reader only: each call
    /// moves the marks.
    pub fn take_usage(&self, timeout: Duration) -> Result<super::usage::Usage, EngineGone> {
        let (reply, answer) = bounded(1);
        self.send(Command::TakeUsage(reply))?;
        Self::answer(&answer, timeout)
    }

    /// Send a link probe with `nonce` to the neighbour at `to` (fire and forget). A reply
    /// arrives as [`EngineEvent::ProbeReply`] on [`events`](Self::events); none means loss.
    /// Only a neighbour given to [`set_neighbours`](Self::set_neighbours) is probed.
    pub fn probe(&self, to: SocketAddr, nonce: u64) -> Result<(), EngineGone> {
        self.send(Command::Probe(to, nonce))
    }

    /// The node's neighbours, their registered addresses and keys (the whole list, which
    /// replaces the previous one): the only nodes whose link probes are answered and the
    /// only ones probed ([`NodeCore::set_neighbours`](super::NodeCore::set_neighbours)).
    pub fn set_neighbours(
        &self,
        neighbours: Vec<(SocketAddr, PublicKey)>,
    ) -> Result<(), EngineGone> {
        self.send(Command::Neighbours(neighbours))
    }

    /// Ping the far end of the route end whose incoming id is `in_id` (like `tailscale
    /// ping`). Returns once the ping is sent, or queued behind the handshake it started
    /// (waiting at most [`PING_TIMEOUT`] for the event loop); the inner error says there is no
    /// such route end. The pong arrives as [`EngineEvent::Pong`] on
    /// [`events`](Self::events); none means loss.
    pub fn ping(&self, in_id: RouteId, nonce: u64) -> Result<Result<(), PingError>, EngineGone> {
        let (reply, answer) = bounded(1);
        self.send(Command::Ping(in_id, nonce, reply))?;
        Self::answer(&answer, PING_TIMEOUT)
    }

    /// The engine's events: expired rules, probe replies, pongs. Every clone of the
    /// receiver takes from the same queue, so there should be one consumer (the node
    /// manager). The queue holds [`EVENT_QUEUE`] events; while it is full new ones are
    /// dropped and counted in [`NodeStatus::events_dropped`].
    pub fn events(&self) -> Receiver<EngineEvent> {
        self.events.clone()
    }

    /// Send a command, waiting up to [`STREAM_COMMAND_WAIT`] for room (many apps may dial
    /// at once).
    fn send_stream(&self, command: Command) -> Result<(), StreamError> {
        self.commands
            .send_timeout(command, STREAM_COMMAND_WAIT)
            .map_err(|_| StreamError::EngineGone)?;
        self.waker.wake().map_err(|_| StreamError::EngineGone)
    }

    /// Open a stream to `port` on `peer` for `owner`, waiting until it is established,
    /// refused, or `timeout` passed. The stream then waits for [`attach`](Self::attach)
    /// (for the node's `take_timeout`).
    pub fn dial(
        &self,
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
    ) -> Result<StreamInfo, StreamError> {
        let (reply, answer) = bounded(1);
        self.send_stream(Command::Dial {
            peer,
            port,
            owner,
            timeout,
            reply,
        })?;
        // The stack times the dial out itself; the margin covers a busy loop.
        answer
            .recv_timeout(timeout + STREAM_COMMAND_WAIT)
            .map_err(|_| StreamError::EngineGone)?
    }

    /// Listen on `options.port`. Established streams to it come on the receiver (it holds
    /// `options.backlog` of them); each must be [attached](Self::attach) within the node's
    /// `take_timeout` or it is reset.
    pub fn listen(
        &self,
        options: ListenOptions,
    ) -> Result<(ListenerId, Receiver<StreamInfo>), StreamError> {
        let (reply, answer) = bounded(1);
        self.send_stream(Command::Listen { options, reply })?;
        answer
            .recv_timeout(STREAM_COMMAND_WAIT)
            .map_err(|_| StreamError::EngineGone)?
    }

    /// Stop listening: streams still in their handshake are reset; those already on the
    /// receiver are the caller's to attach or abort (or the take timeout resets them).
    pub fn unlisten(&self, listener: ListenerId) {
        let _ = self.send_stream(Command::Unlisten(listener));
    }

    /// Hand the app's connection for `stream` to the engine, which writes `greeting` on it
    /// (the app socket's `ok` line) before anything else, and then moves the stream's bytes
    /// over it in frames (`stack::appframe`). Since the engine holds the connection before
    /// the app can read its `ok`, whatever the app asks next about the stream (a hand-over)
    /// finds it attached. [`StreamError::AppGone`] means the greeting could not be written
    /// (or was, and the connection could not be watched); any other error, that nothing
    /// was written.
    pub fn attach(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: UnixStream,
        greeting: Vec<u8>,
    ) -> Result<(), StreamError> {
        let (reply, answer) = bounded(1);
        self.send_stream(Command::Attach {
            stream,
            owner,
            socket,
            greeting,
            reply,
        })?;
        answer
            .recv_timeout(STREAM_COMMAND_WAIT)
            .map_err(|_| StreamError::EngineGone)?
    }

    /// Hand the attached `stream` over to `socket`, a stream socket of the app's (TCP or
    /// Unix): the engine finishes the frame it is writing on the stream's connection,
    /// sends HANDED, reads the app's frames until it closes that connection, and then moves
    /// the stream's bytes over `socket` as they are. `watch`, if given, gets one `ended`
    /// line when the stream ends. Only the stream's owner (and the watch's, or root) may;
    /// a stream not attached in frames, already handed over, an unknown watch, or a socket
    /// that is not a stream socket is `UnknownStream`.
    pub fn hand_over(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: std::os::fd::OwnedFd,
        watch: Option<WatchId>,
    ) -> Result<(), StreamError> {
        let (reply, answer) = bounded(1);
        self.send_stream(Command::HandOver {
            stream,
            owner,
            socket,
            watch,
            reply,
        })?;
        answer
            .recv_timeout(STREAM_COMMAND_WAIT)
            .map_err(|_| StreamError::EngineGone)?
    }

    /// Make `socket` a watch of `owner`'s: the engine writes `{"ok":{"watch":ID}}` on it,
    /// then one `ended` line for every stream handed over with that watch, as it ends.
    pub fn watch(&self, owner: Owner, socket: UnixStream) -> Result<WatchId, StreamError> {
        let (reply, answer) = bounded(1);
        self.send_stream(Command::Watch {
            owner,
            socket,
            reply,
        })?;
        answer
            .recv_timeout(STREAM_COMMAND_WAIT)
            .map_err(|_| StreamError::EngineGone)?
    }

    /// Reset a stream (one dialed or arrived that the app side could not take).
    pub fn abort(&self, stream: StreamId) {
        let _ = self.send_stream(Command::Abort(stream));
    }

    /// Ask the event loop to close routes, remove the TUN device and return.
    pub fn shutdown(&self) -> Result<(), EngineGone> {
        self.send(Command::Shutdown)
    }

    /// Have the event loop poll `heartbeat` once per turn from now on, replacing any earlier
    /// one: its beats then come from the loop's own thread and stop when the loop hangs
    /// (the node's systemd watchdog; see [`Heartbeat`]).
    pub fn set_heartbeat(&self, heartbeat: Heartbeat) -> Result<(), EngineGone> {
        self.send(Command::Heartbeat(heartbeat))
    }

    /// **Test hook**, not for anything else: block the event loop for `duration`, as a loop
    /// stuck in a system call would, so a test can show that the heartbeat stops (`skywire
    /// node` calls it only when `SKYWIRE_TEST_STALL_ENGINE_AFTER` is set). Nothing is
    /// forwarded or answered meanwhile.
    #[doc(hidden)]
    pub fn stall(&self, duration: Duration) -> Result<(), EngineGone> {
        self.send(Command::Stall(duration))
    }
}
