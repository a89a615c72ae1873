//! What the engine does with a stream socket an app handed over (`engine::apps`): check
//! that it is a stream socket, read and write it without blocking, and close it
//! abortively.
//!
//! The socket's open file description is shared with the app that passed it
//! (`SCM_RIGHTS`), so its `O_NONBLOCK` flag is the app's to set: the engine never changes
//! it, and instead asks for a non-blocking call each time (`MSG_DONTWAIT`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsFd;

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
