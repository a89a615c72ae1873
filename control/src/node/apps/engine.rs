//! The app socket served by a real node: [`Streams`] is the engine's handle, and
//! [`ManagerRoutes`] asks the node manager for routes on demand.
//!
//! A dial to a key with no route end asks the manager for a route, the way
//! `skywire route add KEY` does, then waits until the route's end is installed here. Many
//! dials to the same key at once make one request: the others wait for it. A route made
//! on demand stays, like one added by hand (`skywire route ls` shows it, `skywire route rm`
//! removes it), so that later dials to that key find it.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::{EngineHandle, WatchId};
use skywire_dataplane::stack::{
    ListenOptions, ListenerId, Owner, StreamError, StreamId, StreamInfo,
};

use super::{RouteFailure, Routes, Streams};
use crate::manager::proto::{ErrorKind, Key, RouteRequest};
use crate::node::NodeHandle;
use crate::node::agent::{UserReply, UserRequest};

/// How often a dial waiting for its route looks for the route's end.
const ROUTE_POLL: Duration = Duration::from_millis(10);

/// How long one look at the engine's routes may take.
const STATUS_WAIT: Duration = Duration::from_secs(1);

impl Streams for EngineHandle {
    fn dial(
        &self,
        peer: PublicKey,
        port: u16,
        owner: Owner,
        timeout: Duration,
    ) -> Result<StreamInfo, StreamError> {
        EngineHandle::dial(self, peer, port, owner, timeout)
    }

    fn listen(
        &self,
        options: ListenOptions,
    ) -> Result<(ListenerId, crossbeam_channel::Receiver<StreamInfo>), StreamError> {
        EngineHandle::listen(self, options)
    }

    fn unlisten(&self, listener: ListenerId) {
        EngineHandle::unlisten(self, listener);
    }

    fn attach(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: UnixStream,
        greeting: Vec<u8>,
    ) -> Result<(), StreamError> {
        EngineHandle::attach(self, stream, owner, socket, greeting)
    }

    fn hand_over(
        &self,
        stream: StreamId,
        owner: Owner,
        socket: OwnedFd,
        watch: Option<WatchId>,
    ) -> Result<(), StreamError> {
        EngineHandle::hand_over(self, stream, owner, socket, watch)
    }

    fn watch(&self, owner: Owner, socket: UnixStream) -> Result<WatchId, StreamError> {
        EngineHandle::watch(self, owner, socket)
    }

    fn abort(&self, stream: StreamId) {
        EngineHandle::abort(self, stream);
    }
}

/// Routes on demand from the node manager, through the node's uplink.
#[derive(Debug)]
pub struct ManagerRoutes {
    node: NodeHandle,
    /// Keys a request is out for.
    asking: Mutex<HashSet<PublicKey>>,
    /// Told when a request ends.
    answered: Condvar,
}

impl ManagerRoutes {
    /// Routes for `node`'s apps.
    pub fn new(node: NodeHandle) -> Self {
        Self {
            node,
            asking: Mutex::new(HashSet::new()),
            answered: Condvar::new(),
        }
    }

    fn asking(&self) -> MutexGuard<'_, HashSet<PublicKey>> {
        self.asking.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the engine has a route end to `peer`.
    fn has_route(&self, peer: PublicKey) -> Result<bool, RouteFailure> {
        let status = self
            .node
            .status(STATUS_WAIT)
            .map_err(|_| RouteFailure::plain(StreamError::EngineGone))?;
        Ok(status.routes.iter().any(|r| r.peer == peer))
    }

    /// Ask the manager for a route to `peer` (this thread is the one asking).
    fn ask(&self, peer: PublicKey) -> Result<(), RouteFailure> {
        let request = UserRequest::RouteAdd(RouteRequest {
            id: None,
            nonce: None,
            dst: Key(peer),
            min_hops: None,
            max_hops: None,
            avoid: Vec::new(),
            weight: None,
        });
        match self.node.manager(request) {
            Ok(UserReply::Route(_)) => Ok(()),
            Ok(other) => Err(RouteFailure {
                error: StreamError::NoRoute,
                why: Some(format!("the manager answered {other:?} to a route request")),
            }),
            Err(e) => Err(RouteFailure {
                error: if e.kind == ErrorKind::Timeout {
                    StreamError::TimedOut
                } else {
                    StreamError::NoRoute
                },
                why: Some(format!(
                    "the manager says: {} ({})",
                    e.message,
                    e.kind.as_str()
                )),
            }),
        }
    }
}

impl Routes for ManagerRoutes {
    fn ensure_route(&self, peer: PublicKey, deadline: Instant) -> Result<(), RouteFailure> {
        // One request per key at a time; the other dials wait for it, then look again.
        let mut asking = self.asking();
        while asking.contains(&peer) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RouteFailure::plain(StreamError::TimedOut));
            }
            asking = self
                .answered
                .wait_timeout(asking, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(asking);
        if self.has_route(peer)? {
            return Ok(());
        }
        self.asking().insert(peer);
        let asked = self.ask(peer);
        // The manager answers once the route is active on every hop; its end here is
        // installed by the uplink, which may come a moment after.
        let installed = asked.and_then(|()| {
            loop {
                if self.has_route(peer)? {
                    break Ok(());
                }
                if Instant::now() >= deadline {
                    break Err(RouteFailure {
                        error: StreamError::TimedOut,
                        why: Some(
                            "the manager made a route but its end was not installed in time"
                                .to_owned(),
                        ),
                    });
                }
                thread::sleep(ROUTE_POLL);
            }
        });
        self.asking().remove(&peer);
        self.answered.notify_all();
        installed
    }
}
