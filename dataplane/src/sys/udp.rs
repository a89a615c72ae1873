//! The UDP transport socket: non-blocking, large kernel buffers, dual-stack when bound to
//! IPv6, and datagrams sent without the Don't Fragment bit.
//!
//! Built on libc rather than socket2: the options that must be set before `bind`
//! (`IPV6_V6ONLY`) need a socket we create ourselves, and the fast paths to come
//! (`recvmmsg`/`sendmmsg`, `UDP_SEGMENT`/`UDP_GRO` control messages) are raw libc calls
//! that socket2 does not wrap, so libc is needed here anyway; the few lines socket2 would
//! save (building a `sockaddr`) do not pay for a second dependency.
//!
//! # Path MTU discovery: off (`IP_PMTUDISC_DONT`)
//!
//! An IP packet of MTU bytes from the TUN device leaves as a datagram of MTU + 36 bytes
//! (route header and tag) + 28 (UDP/IPv4) or + 48 (UDP/IPv6). Linux's default
//! (`IP_PMTUDISC_WANT`) sets DF on every IPv4 datagram and relies on ICMP "fragmentation
//! needed" coming back: where a path's MTU is smaller than the configured one and ICMP is
//! filtered, the route black-holes large packets; where ICMP does come back, the first
//! packets are lost anyway and nothing tells the inner connection. We do not run our own
//! path MTU discovery (a relay could not even tell the sender), so we send without DF and
//! let the kernel (and, for IPv4, routers) fragment the outer datagram when a path needs
//! it: slower on such a path, never silent. Kernel WireGuard makes the same choice (it
//! sends with `ignore_df` and DF clear). The right MTU on the TUN device keeps fragmentation
//! the exception. A later PLPMTUD probe can switch a socket to `IP_PMTUDISC_PROBE`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// Bind a non-blocking UDP socket to `addr` with receive and send buffers of
/// `buffer_bytes` each (see [`buffer_sizes`] for what the kernel granted).
///
/// The buffers are set with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` when the process may
/// (`CAP_NET_ADMIN`), which ignores `net.core.rmem_max`/`wmem_max`; otherwise with
/// `SO_RCVBUF`/`SO_SNDBUF`, which the kernel caps at those limits. An IPv6 socket also
/// accepts IPv4 (`IPV6_V6ONLY` off), so `[::]:port` serves both families.
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<mio::net::UdpSocket> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket() takes no pointers; its result is checked before use.
    let fd = super::check(unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let bytes = libc::c_int::try_from(buffer_bytes).unwrap_or(libc::c_int::MAX);
    set_buffer(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)?;
    set_buffer(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes)?;
    let fd = socket.as_fd();
    if addr.is_ipv6() {
        // Off for every IPv6 socket, not only the wildcard: it is also what lets a socket
        // bound to an IPv4-mapped address (`::ffff:a.b.c.d`) work.
        let off: libc::c_int = 0;
        super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, off)?;
        super::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        )?;
    }
    // On an IPv6 socket this governs the IPv4 datagrams it sends to mapped addresses.
    super::setsockopt(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    bind(&socket, addr)?;
    Ok(mio::net::UdpSocket::from_std(std::net::UdpSocket::from(
        socket,
    )))
}

/// The receive and send buffer sizes the kernel reports for `socket`, in bytes. Linux
/// reports twice the size asked for (the other half is its bookkeeping allowance), capped
/// as [`bind_udp`] explains.
pub fn buffer_sizes(socket: &impl AsFd) -> io::Result<(usize, usize)> {
    let fd = socket.as_fd();
    let size = |name| {
        let value = super::getsockopt_int(fd, libc::SOL_SOCKET, name)?;
        usize::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    };
    Ok((size(libc::SO_RCVBUF)?, size(libc::SO_SNDBUF)?))
}

/// Set a buffer size with the `FORCE` option, falling back to the capped one when the
/// process lacks `CAP_NET_ADMIN`.
fn set_buffer(
    socket: &OwnedFd,
    force: libc::c_int,
    plain: libc::c_int,
    bytes: libc::c_int,
) -> io::Result<()> {
    match super::setsockopt(socket.as_fd(), libc::SOL_SOCKET, force, bytes) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            super::setsockopt(socket.as_fd(), libc::SOL_SOCKET, plain, bytes)
        }
        other => other,
    }
}

fn bind(socket: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_in is plain integers; all zeroes is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { core::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: the pointer and length describe `sa`, a local sockaddr_in.
            super::check(unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    (&raw const sa).cast::<libc::sockaddr>(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            })?;
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain integers; all zeroes is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { core::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_port = a.port().to_be();
            sa.sin6_flowinfo = a.flowinfo().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            sa.sin6_scope_id = a.scope_id();
            // SAFETY: the pointer and length describe `sa`, a local sockaddr_in6.
            super::check(unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    (&raw const sa).cast::<libc::sockaddr>(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::getsockopt_int;
    use mio::{Events, Interest, Poll, Token};
    use std::time::Duration;

    /// More than the usual `net.core.rmem_max` (208 KiB by default, 4 MiB here), so the
    /// root test shows the FORCE options at work.
    const REQUESTED: usize = 8 << 20;

    /// Receive one datagram on `socket`, waiting for it with mio.
    fn recv_one(socket: &mut mio::net::UdpSocket, buf: &mut [u8]) -> (usize, SocketAddr) {
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(socket, Token(0), Interest::READABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        for _ in 0..50 {
            match socket.recv_from(buf) {
                Ok(got) => return got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poll.poll(&mut events, Some(Duration::from_millis(100)))
                        .unwrap();
                }
                Err(e) => panic!("recv_from: {e}"),
            }
        }
        panic!("no datagram arrived");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid() takes no arguments and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn loopback_v4_send_recv_and_options() {
        let mut a = bind_udp("127.0.0.1:0".parse().unwrap(), REQUESTED).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap(), REQUESTED).unwrap();
        let (rcv, snd) = buffer_sizes(&a).unwrap();
        if is_root() {
            // FORCE ignores rmem_max; the kernel reports twice what it was asked.
            assert!(rcv >= REQUESTED && snd >= REQUESTED, "{rcv} {snd}");
        } else {
            println!("not root: buffers capped by net.core.*mem_max: {rcv} {snd}");
            assert!(rcv > 0 && snd > 0);
        }
        let pmtu = getsockopt_int(a.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER).unwrap();
        assert_eq!(pmtu, libc::IP_PMTUDISC_DONT);

        let to = a.local_addr().unwrap();
        assert_eq!(b.send_to(b"over loopback", to).unwrap(), 13);
        let mut buf = [0u8; 64];
        let (n, from) = recv_one(&mut a, &mut buf);
        assert_eq!(&buf[..n], b"over loopback");
        assert_eq!(from, b.local_addr().unwrap());
        // Non-blocking: nothing more to read.
        let err = a.recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn wildcard_v6_is_dual_stack() {
        let any: SocketAddr = "[::]:0".parse().unwrap();
        let mut a = match bind_udp(any, REQUESTED) {
            Ok(a) => a,
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                println!("skipped: no IPv6 on this host");
                return;
            }
            Err(e) => panic!("bind [::]: {e}"),
        };
        let fd = a.as_fd();
        assert_eq!(
            getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap(),
            0
        );
        assert_eq!(
            getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER).unwrap(),
            libc::IPV6_PMTUDISC_DONT
        );
        let port = a.local_addr().unwrap().port();
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.send_to(b"v4 to a v6 socket", ("127.0.0.1", port))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = recv_one(&mut a, &mut buf);
        assert_eq!(&buf[..n], b"v4 to a v6 socket");
        // The sender appears as an IPv4-mapped address.
        let SocketAddr::V6(from) = from else {
            panic!("{from}")
        };
        assert_eq!(from.ip().to_ipv4_mapped(), Some([127, 0, 0, 1].into()));
    }

    #[test]
    fn bind_errors_are_reported() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), REQUESTED).unwrap();
        let taken = a.local_addr().unwrap();
        let err = bind_udp(taken, REQUESTED).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // 192.0.2.1 (TEST-NET-1) is not an address of this host.
        let err = bind_udp("192.0.2.1:0".parse().unwrap(), REQUESTED).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
    }
}
