//! Apps' streams on the mesh's nodes: the app side of each node's stack
//! ([`crate::stack`]), driven through its core as the engine's driver drives it, with what
//! the stack sends going onto the mesh's wire.

use std::time::Duration;

use super::{Mesh, NodeId, SimError};
use crate::crypto::PublicKey;
use crate::stack::{
    ListenOptions, ListenerId, Owner, StackEvent, StreamError, StreamId, StreamInfo,
};

/// The owner the mesh's streams belong to.
pub const SIM_OWNER: Owner = Owner(1000);

impl Mesh {
    /// Dial `port` on `peer` from node `id` ([`NodeCore::dial`](crate::engine::NodeCore::dial)).
    pub fn dial(
        &mut self,
        id: NodeId,
        peer: PublicKey,
        port: u16,
        timeout: Duration,
    ) -> Result<Result<StreamId, StreamError>, SimError> {
        let parts = self.parts(id)?;
        Ok(parts
            .core
            .dial(parts.now, peer, port, SIM_OWNER, timeout, parts.io))
    }

    /// Listen on `port` at node `id`, for any key.
    pub fn listen(
        &mut self,
        id: NodeId,
        listener: ListenerId,
        port: u16,
    ) -> Result<Result<(), StreamError>, SimError> {
        let parts = self.parts(id)?;
        Ok(parts.core.stack().listen(
            listener,
            ListenOptions {
                port,
                backlog: 64,
                allow: None,
                owner: SIM_OWNER,
            },
        ))
    }

    /// The stack events of node `id` since the last call.
    pub fn stack_events(&mut self, id: NodeId) -> Result<Vec<StackEvent>, SimError> {
        let parts = self.parts(id)?;
        Ok(parts.core.stack().drain_events().collect())
    }

    /// Take a stream that waits at node `id`.
    pub fn attach(
        &mut self,
        id: NodeId,
        stream: StreamId,
    ) -> Result<Result<StreamInfo, StreamError>, SimError> {
        let parts = self.parts(id)?;
        let r = parts.core.stack().attach(parts.now, stream, SIM_OWNER);
        parts.core.flush_stack(parts.now, parts.io);
        Ok(r)
    }

    /// Bytes from the app at node `id` into `stream`: how many the stream took.
    pub fn app_send(
        &mut self,
        id: NodeId,
        stream: StreamId,
        data: &[u8],
    ) -> Result<usize, SimError> {
        let parts = self.parts(id)?;
        let n = parts.core.stack().app_send(parts.now, stream, data);
        parts.core.flush_stack(parts.now, parts.io);
        Ok(n)
    }

    /// Everything `stream` has for the app at node `id`.
    pub fn app_recv(&mut self, id: NodeId, stream: StreamId) -> Result<Vec<u8>, SimError> {
        let parts = self.parts(id)?;
        let mut out = Vec::new();
        parts.core.stack().app_recv(parts.now, stream, |b| {
            out.extend_from_slice(b);
            b.len()
        });
        parts.core.flush_stack(parts.now, parts.io);
        Ok(out)
    }

    /// The app at node `id` closes its side of `stream`.
    pub fn app_fin(&mut self, id: NodeId, stream: StreamId) -> Result<(), SimError> {
        let parts = self.parts(id)?;
        parts.core.stack().app_fin(parts.now, stream);
        parts.core.flush_stack(parts.now, parts.io);
        Ok(())
    }

    /// Reset `stream` at node `id`, as an app that went away.
    pub fn app_abort(&mut self, id: NodeId, stream: StreamId) -> Result<(), SimError> {
        let parts = self.parts(id)?;
        parts
            .core
            .stack()
            .abort(parts.now, stream, StreamError::AppGone);
        parts.core.flush_stack(parts.now, parts.io);
        Ok(())
    }
}
