//! The control plane's handle on a running engine: commands go over a bounded channel and a
//! mio waker wakes the event loop, so the engine never takes a lock to serve them.

use core::time::Duration;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::status::NodeStatus;

/// A request to the engine's event loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send back a status snapshot.
    Status(Sender<NodeStatus>),
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
}

impl EngineHandle {
    pub(crate) fn new(waker: Arc<mio::Waker>) -> (Self, Receiver<Command>) {
        let (commands, receiver) = bounded(64);
        (Self { commands, waker }, receiver)
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
        answer.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => EngineGone::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => EngineGone::Stopped,
        })
    }

    /// Ask the event loop to close routes, remove the TUN device and return.
    pub fn shutdown(&self) -> Result<(), EngineGone> {
        self.send(Command::Shutdown)
    }
}
