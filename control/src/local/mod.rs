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
//! - [`evict`]: the same, where a newcomer takes the place of the connection idle longest
//!   (the node's control socket, so that idle clients cannot lock `status` out).
//! - [`stop`]: [`StopSignal`], a stop flag with an eventfd, so that an accept loop waits in
//!   `poll(2)` for a connection or the stop, whichever comes first, and never polls.
//! - [`raise_fd_limit`]: the soft limit of open files raised to the hard one, for the
//!   daemons that hold a descriptor or two per stream (the node, the SOCKS apps).

pub mod evict;
pub mod lines;
pub mod slots;
pub mod socket;
pub mod stop;

pub use evict::{Connections, Member};
pub use lines::{LineRead, read_line};
pub use slots::ConnectionSlot;
pub use socket::{
    BoundSocket, ConnectFailure, Sharing, bind_private, bind_shared, connect, is_allowed, peer_uid,
};
pub use stop::{StopSignal, Wakeup};

/// Raise this process's soft limit of open files (`RLIMIT_NOFILE`) to its hard limit, and
/// return the limit now in force (`None`: unlimited). A node holds one or two descriptors
/// per app stream (its connection, or a handed-over socket and its watch), and the
/// distributions' usual soft limit of 1024 would cap it far below its stream limits.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}
