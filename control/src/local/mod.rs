//! Local control sockets, and what every server in this crate shares: the node's control
//! socket, viscript's headless socket and the signal server build on these, so none of
//! them depends on another.
//!
//! - [`socket`]: bind a Unix socket 0600 inside a 0700 folder (a stale socket replaced, a
//!   live one never taken over), or shared with a group (0660 in 0750), and let in only
//!   root and the socket's owner (`SO_PEERCRED`); and, for clients, [`connect`] with its
//!   failure sorted (not running, not allowed, other).
//! - [`lines`]: read one newline-terminated request of at most a given size.
//! - [`slots`]: serve at most a given number of connections at once.

pub mod lines;
pub mod slots;
pub mod socket;

pub use lines::{LineRead, read_line};
pub use slots::ConnectionSlot;
pub use socket::{
    BoundSocket, ConnectFailure, Sharing, bind_private, bind_shared, connect, is_allowed, peer_uid,
};
