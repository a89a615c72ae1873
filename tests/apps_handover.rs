//! Handing a stream over to an app's own socket (`docs/APPS.md`, "Handing a stream to a
//! socket"), against two real `skywire node` processes on loopback (no root):
//!
//! - bytes waiting in the socket when it is handed over go first, and bytes the node had
//!   framed before HANDED are passed on by the app in order (nothing lost or reordered);
//! - 8 MiB one way, a half-close, 1 MiB back, every byte checked, both watches' `ended`
//!   lines count exactly what moved;
//! - a program that resets its socket resets the stream: the far program sees a TCP reset
//!   and both watches say how the stream ended; a stream handed over without a watch
//!   works the same, unreported;
//! - a hand-over of a stream that is not the caller's, without a socket, or of a datagram
//!   socket is refused with a clear error and the stream is reset.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::Duration;

use skywire_control::demo::loopback::LoopbackMesh;
use skywire_control::node::apps::client::ListenRequest;
use skywire_control::node::apps::{AppClient, AppStream};
use skywire_dataplane::engine::WatchId;

/// The next port to listen on.
static NEXT_PORT: AtomicU16 = AtomicU16::new(9);

/// A connected TCP pair on loopback: (the program's end, the end handed to the node).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let user = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (node, _) = listener.accept().unwrap();
    (user, node)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn read_exactly(stream: &mut impl Read, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

/// A stream from A to B, open at both ends.
fn open(
    a: &AppClient,
    b: &AppClient,
    b_key: skywire_dataplane::crypto::PublicKey,
) -> (AppStream, AppStream) {
    // A port of its own: the last listener's port is freed a moment after it closes.
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    let mut listener = b.listen(ListenRequest::on(port)).unwrap();
    let dialer = {
        let a = a.clone();
        thread::spawn(move || a.dial(b_key, port, Duration::from_secs(10)).unwrap())
    };
    let at_b = listener.accept().unwrap();
    (dialer.join().unwrap(), at_b)
}

fn mesh(label: &str) -> LoopbackMesh {
    LoopbackMesh::pair(Path::new(env!("CARGO_BIN_EXE_skywire")), label).unwrap()
}

#[test]
fn handed_streams_keep_every_byte_in_order_and_half_close() {
    let mesh = mesh("test-handover-order");
    let (na, nb) = (&mesh.nodes[0], &mesh.nodes[1]);
    let (a, b) = (
        AppClient::new(&na.app_socket),
        AppClient::new(&nb.app_socket),
    );
    let (mut watch_a, mut watch_b) = (a.watch().unwrap(), b.watch().unwrap());
    let (at_a, mut at_b) = open(&a, &b, nb.plan.key);

    // A's program wrote before the hand-over: those bytes wait in the socket and go first.
    let (mut user_a, node_a) = tcp_pair();
    user_a.write_all(b"waiting-in-the-socket;").unwrap();
    let handed_a = at_a
        .hand_over(&a, OwnedFd::from(node_a), Some(watch_a.id()))
        .unwrap();
    assert_eq!(read_exactly(&mut at_b, 22), b"waiting-in-the-socket;");

    // More from A while B still reads frames: B's hand-over passes them on first.
    user_a.write_all(b"framed-before-handed;").unwrap();
    at_b.write_all(b"B-said-this-in-frames;").unwrap();
    assert_eq!(read_exactly(&mut user_a, 22), b"B-said-this-in-frames;");
    thread::sleep(Duration::from_millis(200));
    let (mut user_b, node_b) = tcp_pair();
    let handed_b = at_b
        .hand_over(&b, OwnedFd::from(node_b), Some(watch_b.id()))
        .unwrap();
    assert_eq!(read_exactly(&mut user_b, 21), b"framed-before-handed;");

    // 8 MiB up, half-close, 1 MiB down.
    let up = pattern(8 << 20, 7);
    let down = pattern(1 << 20, 99);
    let writer = {
        let mut user_a = user_a.try_clone().unwrap();
        let up = up.clone();
        thread::spawn(move || {
            user_a.write_all(&up).unwrap();
            user_a.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    user_b.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == up, "B got {} bytes, not the 8 MiB sent", got.len());
    user_b.write_all(&down).unwrap();
    user_b.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    user_a.read_to_end(&mut back).unwrap();
    assert!(back == down, "A got {} bytes back, not 1 MiB", back.len());
    drop(user_a);
    drop(user_b);

    let ended_a = watch_a.next_ended().unwrap();
    let ended_b = watch_b.next_ended().unwrap();
    assert_eq!((ended_a.stream, ended_b.stream), (handed_a, handed_b));
    assert_eq!(ended_a.error, None);
    assert_eq!(ended_b.error, None);
    let up_total = 22 + 21 + (8u64 << 20);
    let down_total = 22 + (1u64 << 20);
    assert_eq!((ended_a.sent, ended_a.received), (up_total, down_total));
    assert_eq!((ended_b.sent, ended_b.received), (down_total, up_total));
}

#[test]
fn a_reset_socket_resets_the_stream_and_bad_hand_overs_are_refused() {
    let mesh = mesh("test-handover-reset");
    let (na, nb) = (&mesh.nodes[0], &mesh.nodes[1]);
    let (a, b) = (
        AppClient::new(&na.app_socket),
        AppClient::new(&nb.app_socket),
    );

    let (mut watch_a, mut watch_b) = (a.watch().unwrap(), b.watch().unwrap());
    let (at_a, at_b) = open(&a, &b, nb.plan.key);
    let (mut user_a, node_a) = tcp_pair();
    let (user_b, node_b) = tcp_pair();
    at_a.hand_over(&a, OwnedFd::from(node_a), Some(watch_a.id()))
        .unwrap();
    at_b.hand_over(&b, OwnedFd::from(node_b), Some(watch_b.id()))
        .unwrap();
    user_a.write_all(b"ping").unwrap();
    let mut user_b = user_b;
    assert_eq!(read_exactly(&mut user_b, 4), b"ping");
    // B's program aborts its connection (RST): A's program sees a reset, not an EOF.
    socket_reset(&user_b);
    drop(user_b);
    user_a
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    let outcome = user_a.read(&mut buf).map_err(|e| e.kind());
    assert_eq!(outcome, Err(ErrorKind::ConnectionReset));
    assert_eq!(
        watch_b.next_ended().unwrap().error.as_deref(),
        Some("app_gone")
    );
    assert_eq!(
        watch_a.next_ended().unwrap().error.as_deref(),
        Some("reset")
    );

    // Without a watch: the same bytes, nobody told of the end.
    let (at_a, at_b) = open(&a, &b, nb.plan.key);
    let (mut user_a, node_a) = tcp_pair();
    let (mut user_b, node_b) = tcp_pair();
    at_a.hand_over(&a, OwnedFd::from(node_a), None).unwrap();
    at_b.hand_over(&b, OwnedFd::from(node_b), None).unwrap();
    user_a.write_all(b"unwatched").unwrap();
    user_a.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    user_b.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"unwatched");

    // Another user's watch, or none that exists, is refused; so is a datagram socket.
    let (at_a, _at_b) = open(&a, &b, nb.plan.key);
    let (_user_a, node_a) = tcp_pair();
    let refused = at_a
        .hand_over(&a, OwnedFd::from(node_a), Some(WatchId(999)))
        .unwrap_err();
    assert!(refused.to_string().contains("watch"), "{refused}");
    let (at_a, mut at_b) = open(&a, &b, nb.plan.key);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let refused = at_a.hand_over(&a, OwnedFd::from(udp), None).unwrap_err();
    assert!(
        refused.to_string().contains("not a stream socket"),
        "{refused}"
    );
    let mut rest = Vec::new();
    let outcome = at_b.read_to_end(&mut rest).map_err(|e| e.kind());
    assert_eq!(outcome, Err(ErrorKind::ConnectionReset));
}

/// Close `stream` abortively on drop (SO_LINGER 0), as a crashed program's kernel would.
fn socket_reset(stream: &TcpStream) {
    rustix::net::sockopt::set_socket_linger(stream, Some(Duration::ZERO)).unwrap();
}
