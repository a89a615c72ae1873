//! The forwarding engine of a node: the TUN device and the UDP transport on one mio loop.
//!
//! # Pipeline
//!
//! ```text
//!            +------------------------- engine thread (mio) ---------------------------+
//!  UDP  ---> | recv_from -> forward(): header, id lookup, prev-hop check              |
//!            |     |-- Forward: rewrite id in place ---------------------> send_to next hop
//!            |     '-- Deliver: Session::decapsulate in place                          |
//!            |            |-- Deliver: plaintext ---------------------------> TUN write
//!            |            '-- Reply (handshake response, confirmation) -----> send_to first hop
//!  TUN  ---> | read at buf[HEADROOM..] -> destination -> longest prefix -> route end     |
//!            |     |-- keys: Session::encapsulate in place ------------------> send_to first hop
//!            |     '-- no keys yet: copy into the route's staging ring, start handshake  |
//!  timers -> | Session::poll: initiations, retransmissions, keepalives, expiry          |
//!  control ->| commands over a bounded channel + mio Waker: status, shutdown           |
//!            +--------------------------------------------------------------------------+
//! ```
//!
//! - **Stages and order.** Everything runs on one thread, in order: a packet is read,
//!   decided on and sent before the next is read, so order within a route is kept and no
//!   stage needs a lock. UDP and TUN are served alternately, at most 64 packets each per
//!   turn, so neither starves the other; timers are polled after every turn.
//! - **Buffers.** The loop owns two buffers for its whole life: one for datagrams (64 KiB),
//!   one for TUN packets (header room + MTU + tag room). A packet is decrypted, encrypted
//!   and forwarded in place in that buffer; the kernel copies it out on send. Packets that
//!   wait for a handshake are copied into a fixed ring of 16 preallocated buffers per route.
//!   Nothing is allocated per packet and no lock is taken.
//! - **Backpressure.** The transport socket has 4 MiB buffers each way; when a send still
//!   fails (buffer full) or a TUN write is refused, the packet is dropped and counted as
//!   `queue full`, as a router does. The staging ring drops its oldest packet when full.
//! - **Control.** The control plane never touches the engine's state: it sends a command
//!   over a bounded crossbeam channel and wakes the loop; the loop answers between batches.
//!   Route rules live in a [`RouteTable`](crate::route::RouteTable) whose snapshots the
//!   loop reads without locks, so a future control plane can change rules while it runs.
//!
//! The sans-IO [`core::NodeCore`] holds every per-packet decision and is tested with
//! in-memory I/O; `driver` is the thin loop around it. The fast-path work (recvmmsg and
//! sendmmsg, UDP GSO/GRO, TUN offloads and multi-queue, worker threads with batch handoff
//! between them) changes the driver and the buffer handling, not the core's decisions.

pub mod core;
mod driver;
mod handle;
mod setup;
mod status;

pub use core::{NodeCore, NodeDrop, NodeIo, SetupError};
pub use driver::{EngineError, RunningEngine, SOCKET_BUFFER, start};
pub use handle::{EngineGone, EngineHandle};
pub use setup::{NodeSetup, RelaySetup, RouteSetup, TunSetup};
pub use status::{NodeStatus, RelayStatus, RouteStatus};
