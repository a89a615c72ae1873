//! The node's local control socket, in the style of `wg show`: `skywire status`,
//! `skywire route`, `nodes`, `link` and `ping` ask a running node over a Unix socket.
//!
//! - [`protocol`]: the wire format, newline-delimited JSON requests and responses, with its
//!   full description (ops, error kinds, the `status` body). Sans-IO.
//! - [`server`]: the node's side: binds the socket 0600 inside a 0700 folder, serves root
//!   and the socket's owner only (checked with `SO_PEERCRED`), answers from a
//!   [`NodeApi`] (the node, or a fake in tests).
//! - [`client`]: one request, one typed answer, with errors that tell "not running" (exit
//!   69) from "not allowed" (exit 77).
//! - `show`: the `wg show`-style text of a [`StatusReply`] (its `Display`).
//!
//! Invariants: nothing here trusts the peer. Every line read is bounded (64 KiB for
//! requests, 16 MiB for responses), a malformed request closes that connection only, and
//! the server never takes over a socket another process still serves.

pub mod client;
pub mod protocol;
pub mod server;
pub(crate) mod show;

pub use client::{CtlError, DEFAULT_TIMEOUT, request, request_status};
pub use protocol::{Op, PongReply, StatusReply};
pub use server::{ControlServer, NodeApi};

/// Where a node's control socket lives unless told otherwise: the default of the config's
/// `node.control_socket`, so `skywire status` finds a node started without a config.
pub const DEFAULT_SOCKET: &str = crate::config::DEFAULT_CONTROL_SOCKET;
