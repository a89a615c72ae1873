//! The forwarding engine of a node: the TUN device and the UDP transport on one mio loop,
//! in batches.
//!
//! # Pipeline
//!
//! ```text
//!            +------------------------- engine thread (mio) ----------------------------+
//!  UDP  ---> | recvmmsg: 16 messages, each up to 64 KiB of GRO-coalesced datagrams        |
//!            |   link probe (type 8/9)? answer in place -------- copy --> send batch      |
//!            |     or match a reply to its probe ---------------------> event queue       |
//!            |   each datagram -> forward(): header, id lookup, prev-hop check            |
//!            |     |-- Forward: rewrite id in place --------- copy --> send batch          |
//!            |     '-- Deliver: an initiation (type 1) first meets the flood check:      |
//!            |            under load and no valid mac2? cookie reply --> send batch      |
//!            |          then Session::decapsulate in place                              |
//!            |            |-- Deliver: plaintext ------------ copy --> TUN batch           |
//!            |            |-- Reply (handshake response, pong) copy --> send batch         |
//!            |            '-- Pong: matched to its ping --------------> event queue       |
//!  TUN  ---> | read: one packet, or one super-packet (virtio-net header, TSO) cut into    |
//!            |   MTU-sized packets at buf[HEADROOM..] (sys::tun::split)                   |
//!            |   each -> destination -> longest prefix -> route end                       |
//!            |     |-- keys: Session::encapsulate in place ---- copy --> send batch         |
//!            |     '-- no keys yet: copy into the route's staging ring, start handshake   |
//!  timers -> | Session::poll: initiations, retransmissions, keepalives, key expiry       |
//!            | manager rules idle past expire_after removed (sampled once a second)     |
//!  control ->| commands over a bounded channel + mio Waker: status, apply (rule        |
//!            |   batches), probe, ping, shutdown                                        |
//!  events <- | event queue -> bounded channel to the control plane (full: counted)      |
//!            |                                                                          |
//!  flush  -> | send batch: same-destination, same-size runs -> one UDP GSO message each, |
//!            |             all messages in one sendmmsg; a datagram the kernel has no   |
//!            |             way for is counted, its next hop reported (once a minute)    |
//!            | TUN batch:  segments of one TCP/UDP flow coalesced into super-packets     |
//!            |             (GRO), one write each                                         |
//!            +--------------------------------------------------------------------------+
//! ```
//!
//! - **Stages and order.** Everything runs on one thread, in order: a batch is read,
//!   decided on packet by packet, and flushed before the loop turns to the other source,
//!   so order within a route is kept (each batch is a FIFO) and no stage needs a lock. A
//!   turn reads at most 256 datagrams from the transport and at most 128 packets (64 reads)
//!   from the TUN device, so a saturated direction delays the other by about half a
//!   millisecond at most; timers are polled after every turn.
//! - **Why one thread.** Per-packet kernel work, not crypto, was the cost of the 2017
//!   design and of boringtun (a TUN read or UDP send is 3-5 µs; sealing 1420 B is 0.8 µs).
//!   Batching removes it: one read brings ~45 packets, one `sendmmsg` sends hundreds. What
//!   remains is ChaCha20-Poly1305 (46 % of both cores at 5 Gbit/s, `perf`, BENCHMARKS.md)
//!   and the kernel's copies; on the 2-core machine this is measured on, both tunnel ends
//!   and the traffic tools share the cores, so more threads per node would only add
//!   handoffs. A node with spare cores would gain from crypto workers fed in batches (the
//!   per-route counters and the staging rings are already per route end).
//! - **Buffers.** Allocated once when the loop starts: the `recvmmsg` slots (16 x 64 KiB),
//!   the TUN read buffer (64 KiB) and the packets cut from it (one buffer of header room +
//!   MTU + tag per segment a super-packet can hold), the send batch (1 MiB), and the TUN
//!   batch (128 buffers that may grow to 64 KiB as GRO coalesces into them). A packet is
//!   decrypted, encrypted and forwarded in place; it is copied once into a batch (about
//!   40 ns per 1.4 KB, for hundreds of system calls saved), so no buffer is lent across a
//!   flush. Packets that wait for a handshake are copied into a fixed ring of 16
//!   preallocated buffers per route. Nothing is allocated per packet and no lock is taken.
//! - **Backpressure.** The transport socket has 4 MiB buffers each way; a batch the kernel
//!   does not take at once (socket buffer full) or a TUN write it refuses is dropped and
//!   counted as `queue full`, as a router does. The staging ring drops its oldest packet.
//! - **Offloads and their fallbacks.** `NodeSetup::offload` (config `node.offload`, on by
//!   default) asks for the TUN offloads and UDP GRO and GSO. The kernel may refuse each:
//!   a TUN device without `TUNSETOFFLOAD` is reopened plain; a socket without `UDP_GRO`
//!   reads one datagram per slot; a GSO send refused with `EIO`/`EINVAL`/`EMSGSIZE` is
//!   resent datagram by datagram and GSO stays off. The packets are the same either way;
//!   the namespace tests run the 100 MB transfer both ways.
//! - **Control.** The control plane never touches the engine's state: it sends a command
//!   over a bounded crossbeam channel and wakes the loop; the loop answers between batches.
//!   Route rules live in a [`RouteTable`](crate::route::RouteTable) whose snapshots the
//!   loop reads without locks. [`EngineHandle::apply`] changes them while the node runs,
//!   a batch of [`RuleChange`]s at a time, all or nothing: the batch is checked whole and
//!   published in one table update. Rules of [`Origin::Manager`] are removed once no packet
//!   matched them for their `expire_after`.
//! - **Heartbeat.** A [`Heartbeat`] given with [`EngineHandle::set_heartbeat`] (the
//!   node's systemd watchdog) is polled once per turn, after the timers, and the loop never
//!   sleeps past its deadline: its beats come from this thread, so they stop when the loop
//!   hangs, which is what a watchdog must see.
//! - **Events.** What the engine learns on its own (expired rules, link probe replies,
//!   pongs, and next hops the kernel has no way to: after a flush in which a send failed
//!   so, at most once a minute per next hop, `core/unreachable.rs`) goes into a queue of [`EVENT_QUEUE`] preallocated entries in the core, and after
//!   each turn into a bounded channel that [`EngineHandle::events`] reads; when either is
//!   full the event is dropped and counted, so a slow consumer never stalls forwarding.
//!
//! # Where the code is
//!
//! The sans-IO [`core::NodeCore`] holds every per-packet decision. `core/mod.rs` has the
//! per-packet path (the middle of the picture above); the state it reads is split by concern
//! into sibling modules, as quinn splits its connection: `rules` (rule batches and the
//! route-end slots), `expiry` (idle manager rules), `probe` (link probes, pings and pongs),
//! `staging` (the handshake ring), `cookie` (the handshake-flood check: load, cookie
//! secret, per-source budgets; only initiations reach it) and `status`. `driver` is the thin loop around the core,
//! and `sys::batch` and `sys::tun` the system calls. The core's multi-node tests run on
//! [`crate::sim`], which joins real cores with an in-memory transport and TUN devices in
//! simulated time: everything in the picture but the driver's batches and system calls.

mod apps;
pub mod core;
mod driver;
mod event;
mod handle;
mod heartbeat;
mod setup;
mod status;
pub mod usage;

pub use apps::{WATCH_BACKLOG, WatchId};
pub use core::{
    AcceptedInitiation, COOKIE_SECRET_LIFETIME, NodeCore, NodeDrop, NodeIo, PingError,
    SOURCE_NOT_ALLOWED, SetupError,
};
pub use driver::{EngineError, RunningEngine, SOCKET_BUFFER, start};
pub use event::{EVENT_QUEUE, EngineEvent};
pub use handle::{EngineGone, EngineHandle, PING_TIMEOUT};
pub use heartbeat::{Heartbeat, MIN_HEARTBEAT};
pub use setup::{
    ApplyError, Fwmark, FwmarkParseError, GrantError, NodeSetup, Origin, RelaySetup, RouteSetup,
    RuleChange, TunSetup,
};
pub use status::{NodeStatus, RelayStatus, Retired, RouteStatus};
