//! The thin OS layer of the data plane (Linux): the TUN device, the UDP transport socket,
//! and the few rtnetlink requests that configure them. Everything above this module is
//! sans-IO; everything here is a system call with as little logic around it as possible.
//!
//! - [`tun`]: [`TunDevice`](tun::TunDevice), a layer-3 TUN device without packet
//!   information header, single queue, non-blocking, with offloads (virtio-net header,
//!   TSO/GRO super-packets, [`split`](tun::split)) when asked and allowed; its MTU, link
//!   state and addresses are set over rtnetlink. Dropping it removes the device, and with it
//!   every route through it.
//! - [`udp`]: [`bind_udp`](udp::bind_udp), the non-blocking transport socket with large
//!   buffers, dual-stack on IPv6, and no Don't Fragment bit.
//! - [`batch`]: `recvmmsg` with UDP GRO ([`RecvBatch`](batch::RecvBatch)) and `sendmmsg`
//!   with UDP GSO ([`SendBatch`](batch::SendBatch)), each falling back when refused.
//! - [`netlink`]: a minimal rtnetlink client (routes, addresses, link state) that waits for
//!   the kernel's acknowledgement of every request, so no error is lost, and lists the
//!   host's addresses ([`list_addresses`](netlink::list_addresses), for the SOCKS exit's
//!   policy).
//! - [`socket`]: what the engine does with a stream socket an app handed it (its type,
//!   non-blocking calls, an abortive close), and the firewall mark of the node's own
//!   sockets (`SO_MARK`, a TCP connection marked from its SYN).
//!
//! Demo and test helpers, fenced off from the node: no code path of `skywire node` or the
//! engine reaches them; only `skywire demo`, the namespace lab and tests do.
//!
//! - [`netns`]: [`in_namespace`](netns::in_namespace), a closure run on a thread that
//!   entered a named network namespace (`ip netns`), for sockets that live there; for the
//!   control crate's namespace lab (the demo and the tests) only.
//! - [`capture`]: [`PacketCapture`](capture::PacketCapture), an `AF_PACKET` socket that
//!   sees every frame of one interface (the demo's proof that relays see no plaintext).
//! - [`process`]: [`die_with_parent`](process::die_with_parent), so that viscript's apps
//!   end with it even when it is killed with SIGKILL (`PR_SET_PDEATHSIG`).
//!
//! What it does not do: decide anything. Which routes to add, which packet goes where, when
//! to read: that is the engine's business.
//!
//! # Invariants
//!
//! - This is the only module of the workspace allowed `unsafe`. Every `unsafe` block is one
//!   system call (or the zeroing of a plain C struct) with a `// SAFETY:` comment; pointers
//!   handed to the kernel always come with the length of the Rust value they point into.
//! - Every descriptor is owned by an `OwnedFd` (or a type wrapping one) from the moment the
//!   kernel returns it, so nothing leaks on an error path, and each is opened `CLOEXEC`.
//! - The host is changed only on request (creating a device, adding a route); nothing here
//!   runs `ip` or other programs. Tests that need root run in a fresh network namespace.
#![allow(unsafe_code)]

pub mod batch;
pub mod capture;
pub mod netlink;
pub mod netns;
pub mod process;
pub mod socket;
pub mod tun;
pub mod udp;

#[cfg(test)]
pub(crate) mod testns;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Turn a `-1` return of a system call into the thread's `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `setsockopt(fd, level, name, &value)`. `T` must be the type the option expects (an
/// `int` for most, a `timeval` for timeouts); every caller is in this module.
fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a live descriptor (borrowed), the pointer refers to `value`, which
    // lives across the call, and `len` is its exact size; the kernel only reads from it.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            len,
        )
    };
    check(ret).map(drop)
}

/// `getsockopt(fd, level, name)` for an `int` option.
fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a live descriptor; `value` and `len` are writable locals, and `len`
    // tells the kernel how many bytes `value` has, so it writes no further.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    check(ret)?;
    Ok(value)
}
