use super::*;
use crate::sys::testns;
use crate::sys::udp::bind_udp;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

fn datagram(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

/// Read datagrams until `want` arrived (or a deadline passes); (datagrams, largest GRO
/// segment count seen in one slot).
fn receive(
    batch: &mut RecvBatch,
    socket: &mio::net::UdpSocket,
    want: usize,
) -> (Vec<Vec<u8>>, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut most = 0;
    while got.len() < want && Instant::now() < deadline {
        match batch.recv(socket.as_fd()) {
            Ok(n) => {
                for i in 0..n {
                    let (r, slot) = batch.message(i).unwrap();
                    assert!(!r.truncated);
                    assert!(r.from.is_some());
                    let before = got.len();
                    got.extend(r.segments(slot).map(|s| s.to_vec()));
                    most = most.max(got.len() - before);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
    (got, most)
}

fn send_and_check(gro: bool) {
    let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
    let tx = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
    if gro {
        assert!(enable_gro(rx.as_fd()), "UDP_GRO refused");
    }
    let to = rx.local_addr().unwrap();
    let mut out = SendBatch::new(tx.local_addr().unwrap(), true);
    // Ten equal datagrams and a short last one: one GSO message.
    let mut sent: Vec<Vec<u8>> = (0..10).map(|i| datagram(i, 1000)).collect();
    sent.push(datagram(10, 333));
    // A longer one after the short one starts a new group; then odd sizes.
    sent.push(datagram(11, 1200));
    sent.push(datagram(12, 1));
    sent.push(datagram(13, 1199));
    sent.push(Vec::new()); // an empty datagram is a datagram too
    for d in &sent {
        assert!(out.push(to, d));
    }
    assert_eq!(out.groups.len(), 4, "{:?}", out.groups);
    assert_eq!(out.datagrams(), sent.len());
    let flushed = out.flush(tx.as_fd());
    assert_eq!(flushed.sent, sent.len() as u64);
    assert_eq!(flushed.dropped, 0);
    assert!(!flushed.gso_refused);
    assert!(out.is_empty());

    let mut batch = RecvBatch::new();
    let (got, most) = receive(&mut batch, &rx, sent.len());
    let lens = |v: &[Vec<u8>]| v.iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(lens(&got), lens(&sent));
    assert_eq!(got, sent, "datagrams arrive whole and in order");
    if gro {
        assert!(most > 1, "GRO coalesced nothing");
    } else {
        assert_eq!(most, 1);
    }
}

#[test]
fn gso_send_then_gro_receive_on_loopback() {
    send_and_check(true);
}

#[test]
fn gso_send_then_plain_receive_on_loopback() {
    send_and_check(false);
}

#[test]
fn groups_split_by_destination_length_and_limits() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let mut out = SendBatch::new("127.0.0.1:0".parse().unwrap(), true);
    assert!(out.push(a, &[0; 100]));
    assert!(out.push(a, &[0; 100]));
    assert!(out.push(b, &[0; 100])); // other destination
    assert!(out.push(b, &[0; 100]));
    assert!(out.push(b, &[0; 50])); // short: closes the group
    assert!(out.push(b, &[0; 50])); // so this starts another
    assert_eq!(
        out.groups.iter().map(|g| g.count).collect::<Vec<_>>(),
        [2, 3, 1]
    );
    // At most MAX_GSO_SEGMENTS per message.
    let mut out = SendBatch::new("127.0.0.1:0".parse().unwrap(), true);
    for _ in 0..MAX_GSO_SEGMENTS + 1 {
        assert!(out.push(a, &[0; 10]));
    }
    assert_eq!(out.groups.len(), 2);
    // At most MAX_GSO_BYTES per message.
    let mut out = SendBatch::new("127.0.0.1:0".parse().unwrap(), true);
    for _ in 0..50 {
        assert!(out.push(a, &[0; 1400]));
    }
    assert!(out.groups.iter().all(|g| g.len <= MAX_GSO_BYTES));
    assert_eq!(out.groups.len(), 2);
    // Without GSO every datagram is its own message; refusals.
    let mut out = SendBatch::new("127.0.0.1:0".parse().unwrap(), false);
    assert!(out.push(a, &[0; 10]));
    assert!(out.push(a, &[0; 10]));
    assert_eq!(out.groups.len(), 2);
    assert!(!out.push(a, &vec![0; MAX_GSO_BYTES + 1]));
}

#[test]
fn full_batch_refuses_until_flushed() {
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut out = SendBatch::new("127.0.0.1:0".parse().unwrap(), false);
    for _ in 0..SEND_GROUPS {
        assert!(out.push(a, &[1; 8]));
    }
    assert!(!out.push(a, &[1; 8]));
    let mut out = SendBatch::new("127.0.0.1:0".parse().unwrap(), true);
    let big = vec![0u8; 60_000];
    let mut pushed = 0;
    while out.push(a, &big) {
        pushed += 1;
    }
    assert_eq!(pushed, SEND_BYTES / 60_000);
}

/// A kernel that refuses GSO (here: a segment longer than the loopback MTU, EINVAL) gets the
/// datagrams one by one, and the batch stops asking for GSO.
#[test]
fn gso_refused_falls_back_to_single_datagrams() {
    testns::run("gso_refused_falls_back_to_single_datagrams", || {
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&["link", "set", "lo", "mtu", "1500", "up"]);
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        let tx = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        let to = rx.local_addr().unwrap();
        let mut out = SendBatch::new(tx.local_addr().unwrap(), true);
        let sent: Vec<Vec<u8>> = (0..5).map(|i| datagram(i, 2000)).collect();
        for d in &sent {
            assert!(out.push(to, d));
        }
        let flushed = out.flush(tx.as_fd());
        assert!(flushed.gso_refused, "{flushed:?}");
        assert_eq!(flushed.sent, 5);
        assert!(!out.gso());
        let mut batch = RecvBatch::new();
        let (got, _) = receive(&mut batch, &rx, sent.len());
        assert_eq!(got, sent);
    });
}

#[test]
fn ipv4_destinations_from_a_dual_stack_socket() {
    let Ok(tx) = bind_udp("[::]:0".parse().unwrap(), 1 << 20) else {
        println!("skipped: no IPv6");
        return;
    };
    let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    let mut out = SendBatch::new(tx.local_addr().unwrap(), true);
    assert!(out.push(rx.local_addr().unwrap(), b"mapped"));
    assert_eq!(out.flush(tx.as_fd()).sent, 1);
    let mut batch = RecvBatch::new();
    let (got, _) = receive(&mut batch, &rx, 1);
    assert_eq!(got, [b"mapped".to_vec()]);
}

#[test]
fn nothing_waiting_is_would_block() {
    let rx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
    let mut batch = RecvBatch::new();
    let err = batch.recv(rx.as_fd()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(batch.is_empty());
}

/// Read `want` datagrams: for each, its sender, the local address it reached, its bytes.
fn receive_from(
    batch: &mut RecvBatch,
    socket: &mio::net::UdpSocket,
    want: usize,
) -> Vec<(SocketAddr, Option<IpAddr>, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        match batch.recv(socket.as_fd()) {
            Ok(n) => {
                for i in 0..n {
                    let (r, slot) = batch.message(i).unwrap();
                    let (from, local) = (r.from.unwrap(), r.local);
                    got.extend(r.segments(slot).map(|d| (from, local, d.to_vec())));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("recvmmsg: {e}"),
        }
    }
    assert_eq!(got.len(), want, "datagrams arrived");
    got
}

/// A wildcard socket on a host with two addresses: each datagram says which address it
/// was sent to, and the answer leaves from the address asked for (single datagrams and GSO
/// groups, IPv4 and IPv6), where the host's routes alone would pick its first address.
#[test]
fn pktinfo_says_the_local_address_and_picks_the_source() {
    testns::run(
        "pktinfo_says_the_local_address_and_picks_the_source",
        || {
            let ip = |args: &[&str]| {
                let ok = Command::new("ip").args(args).status().unwrap().success();
                assert!(ok, "ip {args:?}");
            };
            ip(&["link", "set", "lo", "up"]);
            for address in ["10.96.0.1/24", "10.96.0.2/24", "10.96.0.9/32"] {
                ip(&["addr", "add", address, "dev", "lo"]);
            }
            for address in ["fd96::1/64", "fd96::2/64", "fd96::9/128"] {
                ip(&["addr", "add", address, "dev", "lo", "nodad"]);
            }
            for (wildcard, peer, first, second) in [
                ("0.0.0.0:0", "10.96.0.9:0", "10.96.0.1", "10.96.0.2"),
                ("[::]:0", "[fd96::9]:0", "fd96::1", "fd96::2"),
                // IPv4 through a dual-stack socket (the sender is IPv4-mapped).
                ("[::]:0", "10.96.0.9:0", "10.96.0.1", "10.96.0.2"),
            ] {
                let node = bind_udp(wildcard.parse().unwrap(), 4 << 20).unwrap();
                enable_pktinfo(node.as_fd(), node.local_addr().unwrap().is_ipv6()).unwrap();
                let neighbour = bind_udp(peer.parse().unwrap(), 4 << 20).unwrap();
                let port = node.local_addr().unwrap().port();
                let first: IpAddr = first.parse().unwrap();
                let second: IpAddr = second.parse().unwrap();
                // The neighbour reaches the node at its second address.
                let mut out = SendBatch::new(neighbour.local_addr().unwrap(), false);
                assert!(out.push(SocketAddr::new(second, port), b"hello"));
                assert_eq!(out.flush(neighbour.as_fd()).sent, 1);
                let mut batch = RecvBatch::new();
                let got = receive_from(&mut batch, &node, 1);
                let (from, local, bytes) = &got[0];
                assert_eq!((*local, bytes.as_slice()), (Some(second), &b"hello"[..]));
                // Answers: from each address, one datagram and a GSO group of three; the
                // kernel's own choice would be the first address.
                let mut answer = SendBatch::new(node.local_addr().unwrap(), true);
                let mut back = RecvBatch::new();
                for source in [second, first, second] {
                    for count in [1, 3] {
                        for i in 0..count {
                            assert!(answer.push_from(*from, Some(source), &datagram(i, 100)));
                        }
                        assert_eq!(answer.flush(node.as_fd()).sent, count as u64);
                        for (seen, _, _) in receive_from(&mut back, &neighbour, count) {
                            assert_eq!(seen, SocketAddr::new(source, port), "{wildcard} {count}");
                        }
                    }
                }
            }
        },
    );
}

/// A destination the host has no route to is dropped and counted as unreachable, not as a
/// full buffer.
#[test]
fn no_route_is_unreachable() {
    testns::run("no_route_is_unreachable", || {
        let ok = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let tx = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let mut out = SendBatch::new(tx.local_addr().unwrap(), true);
        for i in 0..3 {
            assert!(out.push("198.18.200.1:6000".parse().unwrap(), &datagram(i, 100)));
        }
        let flushed = out.flush(tx.as_fd());
        assert_eq!(
            (flushed.sent, flushed.dropped, flushed.unreachable),
            (0, 3, 3)
        );
        // The destination and the OS error, for the node's log.
        assert_eq!(
            flushed.unreachable_to,
            Some(("198.18.200.1:6000".parse().unwrap(), libc::ENETUNREACH))
        );
    });
}
