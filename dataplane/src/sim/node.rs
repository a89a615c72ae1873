//! One node of the mesh: a real [`NodeCore`] and the test doubles at its two seams, the
//! transport (an [`Outbox`] the mesh empties onto its wire) and the TUN device (a record of
//! every packet the core wrote to it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::engine::{NodeCore, NodeIo, NodeSetup, SetupError};

/// What a node's core sent since the mesh last collected it: the in-memory UDP socket and
/// TUN device behind [`NodeIo`]. The mesh moves datagrams onto its wire and TUN packets into
/// the node's TUN record; a caller holding a [`NodeParts`] writes here through the core.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Datagrams: destination, bytes.
    pub(super) udp: Vec<(SocketAddr, Vec<u8>)>,
    /// IP packets written to the TUN device.
    pub(super) tun: Vec<Vec<u8>>,
}

impl Outbox {
    /// Whether nothing waits to be collected.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tun.is_empty()
    }

    /// Everything in the outbox, which is left empty.
    pub(super) fn take(&mut self) -> Outbox {
        std::mem::take(self)
    }
}

impl NodeIo for Outbox {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) {
        self.udp.push((to, packet.to_vec()));
    }

    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

/// A node's core with its output sink and the mesh's clock, lent out by
/// [`Mesh::parts`](super::Mesh::parts) so a caller can drive the core itself (an agent beside
/// it, a request the mesh has no method for). What the core sends goes on the wire at the
/// mesh's next step, or at [`Mesh::flush`](super::Mesh::flush).
#[derive(Debug)]
pub struct NodeParts<'a> {
    /// The node's engine core.
    pub core: &'a mut NodeCore,
    /// Where the core's output goes: pass it as the core's [`NodeIo`].
    pub io: &'a mut Outbox,
    /// The mesh's clock.
    pub now: Instant,
}

/// A node of the mesh.
#[derive(Debug)]
pub(super) struct SimNode {
    /// What the node was built from (and is rebuilt from when it restarts).
    pub(super) setup: NodeSetup,
    pub(super) core: NodeCore,
    /// False while the node is down: it receives nothing and its timers do not run.
    pub(super) up: bool,
    pub(super) outbox: Outbox,
    /// Every IP packet the core wrote to the TUN device, oldest first, until taken.
    pub(super) tun: Vec<Vec<u8>>,
}

impl SimNode {
    /// A node running `setup` at its `listen` address from `now`.
    pub(super) fn new(
        setup: NodeSetup,
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, SetupError> {
        let core = NodeCore::new(&setup, setup.listen, now, unix_time)?;
        Ok(Self {
            setup,
            core,
            up: true,
            outbox: Outbox::default(),
            tun: Vec::new(),
        })
    }

    /// The node's transport address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.setup.listen
    }
}
