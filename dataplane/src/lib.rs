//! The skywire data plane, as sans-IO building blocks.
//!
//! Layers, bottom to top:
//!
//! - [`wire`]: zero-copy views and `Repr`s of every packet that crosses a route
//!   (`docs/PROTOCOL.md` is the byte-by-byte reference).
//! - [`crypto`]: static identities, BLAKE3 key derivation, the ChaCha20-Poly1305 route cipher
//!   sealed and opened in place, the anti-replay window, and the route handshake (Noise's IK
//!   pattern with BLAKE3, bound to the route).
//! - [`session`]: the end-to-end state of one route endpoint: handshake, keypair rotation,
//!   rekey and expiry limits, keepalives. Time is passed in; nothing here reads a clock.
//! - [`route`]: the forwarding table (incoming route id to forward or deliver), readable from
//!   forwarding threads without blocking while the control plane swaps it, and the relay's
//!   per-packet decision.
//! - [`engine`]: a node's forwarding engine: the sans-IO [`engine::NodeCore`] with every
//!   per-packet decision (its state split by concern under `engine::core`), and the mio
//!   event loop that drives it over a real UDP socket and TUN device (the pipeline is written
//!   down at the top of that module).
//! - [`sim`]: the in-memory mesh, the test double of the engine's I/O seams: real
//!   [`engine::NodeCore`]s joined by a simulated transport, with in-memory TUN devices and
//!   simulated time. The engine's multi-node tests run on it, and so does
//!   `skywire demo --in-memory`.
//! - [`sys`]: the thin OS layer: TUN device, UDP socket options, rtnetlink. The only module
//!   allowed `unsafe`.
//!
//! Everything but `engine`'s driver and `sys` is sans-IO: no sockets, no TUN, no clock. Bytes
//! from the network never cause a panic: every parser is a checked constructor, and every
//! per-packet function returns a drop reason instead of failing. `sim` allocates per
//! datagram; it is a test double, never on the packet path.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod crypto;
pub mod engine;
pub mod route;
pub mod session;
pub mod sim;
pub mod stack;
pub mod sys;
pub mod wire;
