//! The TUN device against the kernel: offloads, super-packet splitting and coalescing, in a
//! network namespace (root only).

use super::*;

use crate::route::prefix::destination;
use crate::sys::testns;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn setup() -> TunSetup {
    TunSetup {
        name: "skytest0".into(),
        addresses: vec![p("10.99.0.1/24"), p("fd99::1/64")],
        mtu: 1400,
    }
}

/// Output of `ip ARGS` (reading state with `ip` is fine in a test).
fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The next packet out of the TUN device addressed to `dst`, skipping others (the
/// kernel sends IPv6 router solicitations and MLD reports of its own).
fn recv_to(tun: &TunDevice, dst: IpAddr) -> Vec<u8> {
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(
            &mut SourceFd(&tun.as_raw_fd()),
            Token(0),
            Interest::READABLE,
        )
        .unwrap();
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tun.recv(&mut buf) {
            Ok(n) if destination(&buf[..n]) == Some(dst) => return buf[..n].to_vec(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll.poll(&mut events, Some(Duration::from_millis(100)))
                    .unwrap();
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no packet to {dst} came out of the TUN device");
}

/// Send a UDP datagram to `to` port 9 from this namespace; return what came out of
/// the TUN device for it, after checking it is that datagram.
fn send_through(tun: &TunDevice, to: IpAddr, payload: &[u8]) -> Vec<u8> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(bind).unwrap();
    socket.send_to(payload, (to, 9)).unwrap();
    let packet = recv_to(tun, to);
    let (protocol, udp) = if to.is_ipv4() {
        (packet[9], 4 * usize::from(packet[0] & 0x0f))
    } else {
        (packet[6], 40)
    };
    assert_eq!(protocol, 17, "UDP");
    assert_eq!(&packet[udp + 2..udp + 4], &9u16.to_be_bytes(), "port 9");
    assert_eq!(&packet[udp + 8..], payload);
    packet
}

/// An IPv4/UDP packet (no UDP checksum, which IPv4 allows).
fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut pkt = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    pkt.extend(src.octets());
    pkt.extend(dst.octets());
    let sum: u32 = pkt
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((folded & 0xffff) + (folded >> 16)).unwrap();
    pkt[10..12].copy_from_slice(&checksum.to_be_bytes());
    pkt.extend(5555u16.to_be_bytes());
    pkt.extend(dport.to_be_bytes());
    pkt.extend((total - 20).to_be_bytes());
    pkt.extend([0, 0]);
    pkt.extend(payload);
    pkt
}

// ---- super-packet splitting (no device needed) ----

const V4: (u8, u8) = (4, 20);
const V6: (u8, u8) = (6, 40);

/// A super-packet as the kernel hands it over with offloads: the virtio-net header
/// (`hdr_len` deliberately wrong: the whole packet, as the kernel may set it), then one
/// IP packet with a TCP (32-byte header with options) or UDP header whose checksum
/// field holds only the pseudo-header sum, and `payload`.
fn super_packet(ip: (u8, u8), udp: bool, payload: &[u8], gso: u16, seq: u32) -> Vec<u8> {
    let (version, iph) = ip;
    let th = if udp { 8 } else { 32 };
    let len = usize::from(iph) + th + payload.len();
    let mut p = Vec::new();
    let proto = if udp { 17 } else { 6 };
    if version == 4 {
        p.extend([0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        p[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        p.extend([10, 77, 0, 1, 10, 77, 0, 2]);
    } else {
        p.extend([0x60, 0, 0, 0, 0, 0, proto, 64]);
        p[4..6].copy_from_slice(&u16::try_from(len - 40).unwrap().to_be_bytes());
        p.extend("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend("fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }
    let t = p.len();
    if udp {
        p.extend(4444u16.to_be_bytes());
        p.extend(5555u16.to_be_bytes());
        p.extend(u16::try_from(8 + payload.len()).unwrap_or(0).to_be_bytes());
        p.extend([0, 0]);
    } else {
        p.extend(5201u16.to_be_bytes());
        p.extend(40000u16.to_be_bytes());
        p.extend(seq.to_be_bytes());
        p.extend(77u32.to_be_bytes());
        p.extend([0x80, 0x19]); // 32-byte header; ACK, PSH, FIN
        p.extend([0xff, 0xff, 0, 0, 0, 0]);
        p.extend([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
    }
    p.extend(payload);
    // The partial checksum: the pseudo-header without the length, as for TSO.
    let partial = pseudo_sum(&p, version, proto, 0);
    let at = t + if udp { 6 } else { 16 };
    p[at..at + 2].copy_from_slice(&fold(partial).to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: match (version, udp) {
            (_, true) => VIRTIO_NET_HDR_GSO_UDP_L4,
            (4, false) => 1,
            _ => 4,
        },
        hdr_len: u16::try_from(p.len()).unwrap_or(u16::MAX),
        gso_size: gso,
        csum_start: u16::from(iph),
        csum_offset: if udp { 6 } else { 16 },
    };
    let mut raw = vec![0u8; VIRTIO_NET_HDR_LEN];
    hdr.encode(&mut raw).unwrap();
    raw.extend(p);
    raw
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo-header sum (addresses, protocol, `len`) of an IP packet, unfolded.
fn pseudo_sum(packet: &[u8], version: u8, proto: u8, len: usize) -> u32 {
    let addrs = if version == 4 {
        &packet[12..20]
    } else {
        &packet[8..40]
    };
    let mut sum: u32 = addrs
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    sum += u32::from(proto) + u32::try_from(len).unwrap();
    sum
}

/// Check one segment on its own, the way a receiving stack would; its payload.
fn check_segment(seg: &[u8], version: u8, udp: bool) -> (Vec<u8>, u32, u8) {
    let (iph, proto, total) = if version == 4 {
        assert_eq!(
            ones_complement_sum(&seg[..20], 0),
            0xffff,
            "IPv4 header checksum"
        );
        (
            20,
            seg[9],
            usize::from(u16::from_be_bytes([seg[2], seg[3]])),
        )
    } else {
        (
            40,
            seg[6],
            40 + usize::from(u16::from_be_bytes([seg[4], seg[5]])),
        )
    };
    assert_eq!(total, seg.len(), "IP length field");
    let transport = &seg[iph..];
    let pseudo = pseudo_sum(seg, version, proto, transport.len());
    assert_eq!(
        ones_complement_sum(transport, pseudo),
        0xffff,
        "transport checksum"
    );
    if udp {
        assert_eq!(
            usize::from(u16::from_be_bytes([transport[4], transport[5]])),
            transport.len()
        );
        (transport[8..].to_vec(), 0, 0)
    } else {
        let seq = u32::from_be_bytes(transport[4..8].try_into().unwrap());
        let off = usize::from(transport[12] >> 4) * 4;
        (transport[off..].to_vec(), seq, transport[13])
    }
}

fn split_and_check(ip: (u8, u8), udp: bool, payload_len: usize, gso: u16) {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + i / 251) as u8).collect();
    let seq = 0xffff_f000; // wraps inside the super-packet
    let mut raw = super_packet(ip, udp, &payload, gso, seq);
    let mut bufs = vec![vec![0u8; HEADROOM_FOR_TEST + 1500]; 64];
    let mut sizes = vec![0usize; 64];
    let n = split(&mut raw, &mut bufs, &mut sizes, HEADROOM_FOR_TEST).unwrap();
    let gso = usize::from(gso);
    assert_eq!(n, payload_len.div_ceil(gso), "segments");
    let mut joined = Vec::new();
    let mut ip_ids = Vec::new();
    for i in 0..n {
        let seg = &bufs[i][HEADROOM_FOR_TEST..HEADROOM_FOR_TEST + sizes[i]];
        let (data, seg_seq, flags) = check_segment(seg, ip.0, udp);
        let expected = if i + 1 < n {
            gso
        } else {
            payload_len - gso * (n - 1)
        };
        assert_eq!(data.len(), expected, "segment {i} length");
        if !udp {
            assert_eq!(seg_seq, seq.wrapping_add(u32::try_from(i * gso).unwrap()));
            let last = i + 1 == n;
            assert_eq!(flags & 0x09 != 0, last, "PSH/FIN on the last segment only");
            assert_ne!(flags & 0x10, 0, "ACK on every segment");
        }
        if ip.0 == 4 {
            ip_ids.push(u16::from_be_bytes([seg[4], seg[5]]));
        }
        joined.extend(data);
    }
    assert_eq!(joined, payload, "the payloads, in order, are the original");
    if ip.0 == 4 {
        let want: Vec<u16> = (0..n).map(|i| 0x1234 + i as u16).collect();
        assert_eq!(ip_ids, want, "IPv4 ids count up");
    }
}

/// Room the engine leaves in front of a packet; any value works for `split`.
const HEADROOM_FOR_TEST: usize = 20;

#[test]
fn super_packets_split_tcp_and_udp_v4_and_v6_with_odd_sizes() {
    for ip in [V4, V6] {
        for udp in [false, true] {
            for (payload, gso) in [
                (1368 * 5, 1368),       // exact multiple
                (1368 * 3 + 1, 1368),   // a last segment of one byte
                (1001 * 7 + 500, 1001), // odd segment size, short last one
                (700, 1368),            // smaller than one segment
                (1368 * 40, 1368),      // about 54 KiB, many segments
            ] {
                split_and_check(ip, udp, payload, gso);
            }
        }
    }
}

#[test]
fn a_plain_packet_gets_its_checksum_completed() {
    // A super-packet with one segment, told to the splitter as a plain packet.
    let payload = vec![9u8; 333];
    let mut raw = super_packet(V4, false, &payload, 1368, 5);
    let mut hdr = VirtioNetHdr::decode(&raw).unwrap();
    hdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
    hdr.encode(&mut raw[..VIRTIO_NET_HDR_LEN]).unwrap();
    // A plain packet's IPv4 header checksum is the kernel's job, and its partial
    // transport checksum includes the length (unlike a super-packet's): set both as
    // the kernel would.
    let ip = &mut raw[VIRTIO_NET_HDR_LEN..];
    let c = !ones_complement_sum(&ip[..20], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let partial = fold(pseudo_sum(ip, 4, 6, ip.len() - 20));
    ip[36..38].copy_from_slice(&partial.to_be_bytes());
    let mut bufs = vec![vec![0u8; 2000]; 2];
    let mut sizes = vec![0; 2];
    assert_eq!(split(&mut raw, &mut bufs, &mut sizes, 20).unwrap(), 1);
    let (data, seq, _) = check_segment(&bufs[0][20..20 + sizes[0]], 4, false);
    assert_eq!((data, seq), (payload, 5));
}

#[test]
fn broken_super_packets_are_invalid_data_not_panics() {
    let mut bufs = vec![vec![0u8; 1600]; 8];
    let mut sizes = vec![0; 8];
    let mut check = |mut raw: Vec<u8>| {
        let err = split(&mut raw, &mut bufs, &mut sizes, 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    };
    check(vec![]); // no header
    check(vec![0; VIRTIO_NET_HDR_LEN]); // header, no packet
    let good = super_packet(V4, false, &[1; 5000], 1000, 1);
    let mut bad_version = good.clone();
    bad_version[VIRTIO_NET_HDR_LEN] = 0x55;
    check(bad_version);
    let mut bad_tcp_len = good.clone();
    bad_tcp_len[VIRTIO_NET_HDR_LEN + 20 + 12] = 0x10; // 4-byte TCP header
    check(bad_tcp_len);
    check(good[..VIRTIO_NET_HDR_LEN + 30].to_vec()); // cut inside the TCP header
    // More segments than buffers.
    check(super_packet(V4, false, &[1; 9000], 1000, 1));
    // Segments larger than a buffer.
    check(super_packet(V6, true, &[1; 4000], 1590, 1));
    // A checksum position outside a plain packet.
    let mut plain = super_packet(V4, true, &[1; 10], 1000, 1);
    let mut hdr = VirtioNetHdr::decode(&plain).unwrap();
    hdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
    hdr.csum_start = 4000;
    hdr.encode(&mut plain[..VIRTIO_NET_HDR_LEN]).unwrap();
    check(plain);
}

#[test]
fn random_bytes_never_panic_the_splitter() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bufs = vec![vec![0u8; 1600]; 48];
    let mut sizes = vec![0; 48];
    let template = super_packet(V6, false, &[3; 20_000], 1200, 9);
    for _ in 0..20_000 {
        let mut raw = template.clone();
        let cut = (next() as usize) % raw.len();
        raw.truncate(cut.max(1));
        for _ in 0..(next() % 6) {
            let at = (next() as usize) % raw.len();
            raw[at] = next() as u8;
        }
        let _ = split(&mut raw, &mut bufs, &mut sizes, 20);
    }
}

#[test]
fn cut_packets_are_recognised() {
    let v4 = udp_v4([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 9, &[1; 100]);
    assert!(!cut_short(&v4));
    assert!(cut_short(&v4[..60]));
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend([0; 32 + 8]);
    assert!(!cut_short(&v6));
    assert!(cut_short(&v6[..47]));
    // Too short to tell, or not IP: passed on for the engine to drop.
    assert!(!cut_short(&v4[..3]));
    assert!(!cut_short(&[0x50; 64]));
    assert!(!cut_short(&[]));
}

#[test]
fn create_configure_read_and_write() {
    testns::run("tun::create_configure_read_and_write", || {
        let tun = TunDevice::create(&setup(), false).unwrap();
        assert_eq!(tun.name(), "skytest0");
        let index = tun.if_index().unwrap();

        // MTU, link state and addresses, as the kernel reports them.
        let (ok, link) = ip(&["-o", "link", "show", "dev", "skytest0"]);
        assert!(ok, "{link}");
        assert!(link.starts_with(&format!("{index}: skytest0: <")), "{link}");
        let flags = link.split(['<', '>']).nth(1).unwrap();
        assert!(flags.split(',').any(|f| f == "UP"), "{link}");
        assert!(flags.split(',').any(|f| f == "LOWER_UP"), "{link}");
        assert!(link.contains(" mtu 1400 "), "{link}");
        let (_, addrs) = ip(&["-o", "address", "show", "dev", "skytest0"]);
        assert!(addrs.contains("inet 10.99.0.1/24 "), "{addrs}");
        assert!(addrs.contains("inet6 fd99::1/64 "), "{addrs}");
        assert!(!addrs.contains("tentative"), "{addrs}");

        // Packets the kernel routes into the device come out of recv.
        let v4 = send_through(&tun, "10.99.0.2".parse().unwrap(), b"hello v4");
        assert_eq!(&v4[12..16], &[10, 99, 0, 1], "source is the TUN's address");
        send_through(&tun, "fd99::2".parse().unwrap(), b"hello v6");

        // Non-blocking: once drained, recv says WouldBlock.
        let mut buf = [0u8; 2048];
        loop {
            match tun.recv(&mut buf) {
                Ok(_) => continue,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }

        // A packet written with send reaches a socket of this namespace.
        let local = UdpSocket::bind("10.99.0.1:0").unwrap();
        local
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = local.local_addr().unwrap().port();
        let pkt = udp_v4([10, 99, 0, 2].into(), [10, 99, 0, 1].into(), port, b"in");
        assert_eq!(tun.send(&pkt).unwrap(), pkt.len());
        let mut got = [0u8; 16];
        let (n, from) = local.recv_from(&mut got).unwrap();
        assert_eq!(&got[..n], b"in");
        assert_eq!(from, "10.99.0.2:5555".parse().unwrap());

        // A packet longer than the buffer is an error, not a silently cut packet.
        let sender = UdpSocket::bind("0.0.0.0:0").unwrap();
        sender.send_to(&[7u8; 200], ("10.99.0.2", 9)).unwrap();
        let mut small = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match tun.recv(&mut small) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "nothing came out");
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.unwrap_err(),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    });
}

#[test]
fn routes_through_the_device_and_cleanup() {
    testns::run("tun::routes_through_the_device_and_cleanup", || {
        let tun = TunDevice::create(&setup(), false).unwrap();
        let index = tun.if_index().unwrap();
        let wide = p("10.98.0.0/16");
        netlink::add_route(index, &wide).unwrap();
        let (_, routes) = ip(&["route", "show"]);
        assert!(
            routes.contains("10.98.0.0/16 dev skytest0 proto static scope link"),
            "{routes}"
        );
        send_through(&tun, "10.98.1.1".parse().unwrap(), b"routed");

        let twice = netlink::add_route(index, &wide).unwrap_err();
        assert_eq!(twice.kind(), io::ErrorKind::AlreadyExists);

        netlink::delete_route(index, &wide).unwrap();
        let (_, routes) = ip(&["route", "show"]);
        assert!(!routes.contains("10.98.0.0/16"), "{routes}");

        // A peer's host route and an IPv6 subnet, then the device goes away with them.
        netlink::add_route(index, &p("10.97.0.5/32")).unwrap();
        netlink::add_route(index, &p("fd98::/48")).unwrap();
        send_through(&tun, "fd98::7".parse().unwrap(), b"routed v6");
        assert!(ip(&["route", "show"]).1.contains("10.97.0.5 dev skytest0"));
        assert!(
            ip(&["-6", "route", "show"])
                .1
                .contains("fd98::/48 dev skytest0")
        );
        drop(tun);
        let (exists, _) = ip(&["link", "show", "dev", "skytest0"]);
        assert!(!exists, "the device is removed when dropped");
        assert!(!ip(&["route", "show"]).1.contains("skytest0"));
        assert!(!ip(&["-6", "route", "show"]).1.contains("skytest0"));
    });
}

#[test]
fn an_existing_name_is_refused() {
    testns::run("tun::an_existing_name_is_refused", || {
        let _first = TunDevice::create(&setup(), false).unwrap();
        let err = TunDevice::create(&setup(), false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let mut lo = setup();
        lo.name = "lo".into();
        assert_eq!(
            TunDevice::create(&lo, false).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
    });
}

#[test]
fn a_failed_step_removes_the_device() {
    testns::run("tun::a_failed_step_removes_the_device", || {
        // The same address twice: the second is refused, and the device goes away.
        let mut bad = setup();
        bad.addresses.push(p("10.99.0.1/24"));
        let err = TunDevice::create(&bad, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(
            err.to_string().contains("adding address 10.99.0.1/24"),
            "{err}"
        );
        let (exists, _) = ip(&["link", "show", "dev", "skytest0"]);
        assert!(!exists);
        // An IPv6 address needs an MTU of at least 1280.
        let mut small = setup();
        small.mtu = 1200;
        assert!(TunDevice::create(&small, false).is_err());
        assert!(!ip(&["link", "show", "dev", "skytest0"]).0);
    });
}
