//! What the engine does with a stream socket an app handed over (`engine::apps`): check
//! that it is a stream socket, read and write it without blocking, and close it
//! abortively. And the firewall mark (`SO_MARK`) of the node's own sockets, which the VPN
//! client's policy routing will let past the tunnel (`docs/design/vpn-plan.md`, D3):
//! [`set_mark`] for a bound socket, [`connect_tcp_marked`] for a TCP connection whose SYN
//! must already carry it.
//!
//! The socket's open file description is shared with the app that passed it
//! (`SCM_RIGHTS`), so its `O_NONBLOCK` flag is the app's to set: the engine never changes
//! it, and instead asks for a non-blocking call each time (`MSG_DONTWAIT`).

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `recv(fd, buf, MSG_DONTWAIT)`: `WouldBlock` when nothing waits, `Ok(0)` at the end of
/// input.
pub fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `fd` is a live descriptor; the pointer and length are those of `buf`, which
    // the kernel writes at most `buf.len()` bytes into.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `send(fd, buf, MSG_DONTWAIT | MSG_NOSIGNAL)`: `WouldBlock` when the socket is full; a
/// closed peer is an error (`EPIPE`), never a signal.
pub fn send_now(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `fd` is a live descriptor; the pointer and length are those of `buf`, which
    // the kernel only reads.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `shutdown(fd, SHUT_WR)`: the peer reads the end of input.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor; no memory is passed.
    super::check(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// Whether `fd` is a connection-oriented byte-stream socket (`SOCK_STREAM`: TCP, or a Unix
/// stream socket), the only kind a stream's bytes may be handed to.
pub fn is_stream_socket(fd: BorrowedFd<'_>) -> bool {
    super::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
        .is_ok_and(|kind| kind == libc::SOCK_STREAM)
}

/// Make the socket's close abortive (`SO_LINGER` on with a zero timeout): closing it then
/// sends a TCP reset instead of a FIN and drops what was not sent, which is how a stream
/// the mesh reset shows to the program at the other end of the socket.
pub fn reset_on_close(fd: BorrowedFd<'_>) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    super::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, linger)
}

/// Set the socket's firewall mark (`SO_MARK`), which routing rules and nftables match.
/// Needs `CAP_NET_ADMIN` (else `PermissionDenied`).
pub fn set_mark(fd: BorrowedFd<'_>, mark: u32) -> io::Result<()> {
    super::setsockopt(fd, libc::SOL_SOCKET, libc::SO_MARK, mark)
}

/// The socket's firewall mark (0 when none was set).
pub fn mark(fd: BorrowedFd<'_>) -> io::Result<u32> {
    super::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_MARK)
        .map(|v| u32::from_ne_bytes(v.to_ne_bytes()))
}

/// A TCP connection to `to` whose every packet carries `mark`, its SYN included (the mark
/// is set before `connect`), given up after `timeout`. The stream comes back blocking.
pub fn connect_tcp_marked(to: SocketAddr, mark: u32, timeout: Duration) -> io::Result<TcpStream> {
    let family = match to {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket() takes no pointers; the descriptor is owned at once below.
    let fd = super::check(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_mark(socket.as_fd(), mark)?;
    // SAFETY: sockaddr_storage is plain integers; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let len = super::batch::write_sockaddr(to.is_ipv6(), to, &mut storage);
    // SAFETY: the pointer and length describe `storage`, which write_sockaddr filled in.
    let ret = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the pointer is to one local pollfd, and the count says one.
        let ready = super::check(unsafe { libc::poll(&raw mut pfd, 1, ms) })?;
        if ready == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let error = super::getsockopt_int(socket.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR)?;
        if error != 0 {
            return Err(io::Error::from_raw_os_error(error));
        }
    }
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A UDP socket bound to `from` whatever the namespace's own addresses are
/// (`IP_TRANSPARENT`, which also lets it send with that source): the spoofing sender of the
/// handshake-flood tests and `skywire demo flood` (`skywire_control::lab::flood`), never
/// the node. Needs `CAP_NET_ADMIN` (else `PermissionDenied`). Blocking.
pub fn transparent_udp_socket(from: SocketAddr) -> io::Result<UdpSocket> {
    let family = match from {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket() takes no pointers; the descriptor is owned at once below.
    let fd =
        super::check(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let (level, name) = match from {
        SocketAddr::V4(_) => (libc::SOL_IP, libc::IP_TRANSPARENT),
        SocketAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_TRANSPARENT),
    };
    super::setsockopt(socket.as_fd(), level, name, 1 as libc::c_int)?;
    // SAFETY: sockaddr_storage is plain integers; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let len = super::batch::write_sockaddr(from.is_ipv6(), from, &mut storage);
    // SAFETY: the pointer and length describe `storage`, which write_sockaddr filled in.
    super::check(unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const storage).cast::<libc::sockaddr>(),
            len,
        )
    })?;
    Ok(UdpSocket::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsFd;

    #[test]
    fn marks_on_udp_and_on_a_tcp_connection_from_its_syn() {
        // SO_MARK needs CAP_NET_ADMIN (or CAP_NET_RAW), whatever the mark.
        if !is_root() {
            println!("sys::socket marks: skipped: needs root (CI runs as root)");
            return;
        }
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(mark(udp.as_fd()).unwrap(), 0);
        set_mark(udp.as_fd(), 0x736b_0000).unwrap();
        assert_eq!(mark(udp.as_fd()).unwrap(), 0x736b_0000);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let stream = connect_tcp_marked(to, 0x736b_0000, Duration::from_secs(5)).unwrap();
        assert_eq!(mark(stream.as_fd()).unwrap(), 0x736b_0000);
        let (mut server, _) = listener.accept().unwrap();
        (&stream).write_all(b"marked").unwrap();
        let mut got = [0u8; 6];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"marked");

        // Nobody listens on a port just freed: refused, not a hang.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = connect_tcp_marked(free, 1, Duration::from_secs(5)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    /// Whether the tests run as root.
    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
    }

    #[test]
    fn calls_do_not_block_whatever_the_flag() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Blocking sockets (the default), yet nothing waits.
        let mut buf = [0u8; 4];
        let e = recv_now(server.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send_now(client.as_fd(), b"abc").unwrap(), 3);
        let mut got = 0;
        while got < 3 {
            match recv_now(server.as_fd(), &mut buf[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(&buf[..3], b"abc");
        shutdown_write(client.as_fd()).unwrap();
        loop {
            match recv_now(server.as_fd(), &mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn stream_sockets_and_an_abortive_close() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(is_stream_socket(client.as_fd()));
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!is_stream_socket(udp.as_fd()));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(is_stream_socket(a.as_fd()));

        reset_on_close(server.as_fd()).unwrap();
        (&server).write_all(b"x").unwrap();
        drop(server);
        let mut client = client;
        let mut buf = [0u8; 8];
        // The byte may or may not arrive before the reset; the end is a reset, not EOF.
        let mut outcome = client.read(&mut buf);
        if matches!(outcome, Ok(1)) {
            outcome = client.read(&mut buf);
        }
        assert_eq!(
            outcome.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
    }
}
