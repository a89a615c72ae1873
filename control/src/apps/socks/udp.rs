//! UDP ASSOCIATE (RFC 1928 §6, §7): datagrams between a SOCKS client and destinations,
//! carried over one mesh stream per association.
//!
//! - **Client side**: the relay is a UDP socket bound to the listener's address (loopback
//!   by default) on a port the system picks; the reply to UDP ASSOCIATE names it. It takes
//!   datagrams only from the IP address of the client's TCP connection (the first one pins
//!   the port too), drops malformed ones and fragments, and lives as long as that TCP
//!   connection: when the client closes it, the association ends.
//! - **Over the mesh**: the client app dials the exit as for CONNECT and sends the UDP
//!   ASSOCIATE request; the exit answers with a reply, then each datagram travels as a
//!   2-byte big-endian length and the datagram with its SOCKS UDP header, both ways.
//! - **Exit side**: one UDP socket per association (dual-stack, port picked by the system).
//!   Each datagram's destination goes through the same resolution and policy as a CONNECT
//!   ([`super::exit::candidates`]); refused ones are dropped and counted. Answers are
//!   taken only from addresses the association sent to, and go back with the sender's
//!   address in their header.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use skywire_dataplane::crypto::PublicKey;

use super::client::{ClientOptions, dial_failure};
use super::exit::{ExitOptions, candidates};
use super::wire::{self, Dest, Rep, Reply, Request, UdpHeader};
use crate::node::apps::client::{AppReadHalf, AppWriteHalf};
use crate::node::apps::{AppClient, AppStream};

/// How often a relay thread looks at the association's end.
const TICK: Duration = Duration::from_millis(200);
/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_507;

/// One datagram onto the stream: its length, then it.
fn send_frame(out: &mut AppWriteHalf, datagram: &[u8]) -> io::Result<()> {
    let len = u16::try_from(datagram.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut frame = Vec::with_capacity(2 + datagram.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(datagram);
    out.write_all(&frame)
}

/// The next datagram from the stream; `None` at its end.
fn recv_frame(input: &mut AppReadHalf, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    let mut len = [0u8; 2];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    buf.resize(usize::from(u16::from_be_bytes(len)), 0);
    input.read_exact(buf)?;
    Ok(Some(()))
}

/// IPv4-mapped addresses as IPv4, for headers.
fn plain(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The client's side: `conn` sent UDP ASSOCIATE (consumed); answer it and relay until it
/// closes.
pub(super) fn client_association(
    app: AppClient,
    options: &ClientOptions,
    conn: TcpStream,
    peer: SocketAddr,
    request: &Request,
) {
    let answer = |rep: Rep, bound: SocketAddr| {
        let mut out = Vec::new();
        wire::encode_reply(
            &Reply {
                rep,
                bound: Dest::Ip(bound.ip()),
                port: bound.port(),
            },
            &mut out,
        );
        (&conn).write_all(&out)
    };
    let unbound = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0);
    let Ok(udp) = UdpSocket::bind(SocketAddr::new(options.listen.ip(), 0)) else {
        let _ = answer(Rep::GeneralFailure, unbound);
        return;
    };
    let mut stream = match app.dial(options.exit, options.exit_port, options.dial_timeout) {
        Ok(stream) => stream,
        Err(error) => {
            log::warn!("skywire socks client: no stream to the exit for UDP: {error}");
            let _ = answer(dial_failure(&error), unbound);
            return;
        }
    };
    let mut forwarded = Vec::new();
    wire::encode_request(request, &mut forwarded);
    let mut exit_reply = [0u8; wire::REPLY_LEN];
    let exchanged = stream
        .write_all(&forwarded)
        .and_then(|()| stream.set_read_timeout(Some(options.dial_timeout)))
        .and_then(|()| stream.read_exact(&mut exit_reply))
        .and_then(|()| stream.set_read_timeout(None));
    let rep = match (exchanged, wire::parse_reply(&exit_reply)) {
        (Ok(()), Ok(Some((reply, _)))) => reply.rep,
        _ => Rep::GeneralFailure,
    };
    let Ok(local) = udp.local_addr() else {
        return;
    };
    if rep != Rep::Succeeded {
        let _ = answer(rep, unbound);
        return;
    }
    if answer(Rep::Succeeded, local).is_err() {
        return;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let (mut from_exit, mut to_exit) = stream.split();
    let Ok(udp_in) = udp.try_clone() else {
        return;
    };
    let _ = udp_in.set_read_timeout(Some(TICK));
    // Client -> exit.
    let up = {
        let (ended, client) = (Arc::clone(&ended), Arc::clone(&client));
        thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !ended.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp_in.recv_from(&mut buf) else {
                    continue;
                };
                if from.ip() != peer.ip() {
                    continue;
                }
                {
                    let mut pinned = client.lock().unwrap_or_else(PoisonError::into_inner);
                    match *pinned {
                        None => *pinned = Some(from),
                        Some(pinned) if pinned != from => continue,
                        Some(_) => {}
                    }
                }
                let datagram = buf.get(..n).unwrap_or_default();
                if wire::parse_udp(datagram).is_err() {
                    continue;
                }
                if send_frame(&mut to_exit, datagram).is_err() {
                    break;
                }
            }
            let _ = to_exit.finish();
        })
    };
    // Exit -> client.
    let down = {
        let (ended, client) = (Arc::clone(&ended), Arc::clone(&client));
        thread::spawn(move || {
            let mut buf = Vec::with_capacity(MAX_DATAGRAM);
            while let Ok(Some(())) = recv_frame(&mut from_exit, &mut buf) {
                let to = *client.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(to) = to {
                    let _ = udp.send_to(&buf, to);
                }
            }
            ended.store(true, Ordering::Relaxed);
        })
    };
    // The association lives as long as the client's TCP connection.
    let mut sink = [0u8; 512];
    while matches!((&conn).read(&mut sink), Ok(n) if n > 0) {}
    ended.store(true, Ordering::Relaxed);
    let _ = up.join();
    let _ = conn.shutdown(std::net::Shutdown::Both);
    let _ = down.join();
}

/// The exit's side: the stream asked for UDP ASSOCIATE; relay until it ends.
pub(super) fn exit_association(options: &ExitOptions, mut stream: AppStream, key: PublicKey) {
    let udp = UdpSocket::bind("[::]:0").or_else(|_| UdpSocket::bind("0.0.0.0:0"));
    let Ok(udp) = udp else {
        let _ = stream.write_all(&wire::reply(Rep::GeneralFailure));
        let _ = stream.shutdown_write();
        return;
    };
    if stream.write_all(&wire::reply(Rep::Succeeded)).is_err() {
        return;
    }
    let v6 = udp.local_addr().is_ok_and(|a| a.is_ipv6());
    let sent_to: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let ended = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let (mut from_client, mut to_client) = stream.split();
    let Ok(udp_in) = udp.try_clone() else {
        return;
    };
    let _ = udp_in.set_read_timeout(Some(TICK));
    // Destinations -> client.
    let down = {
        let (ended, sent_to) = (Arc::clone(&ended), Arc::clone(&sent_to));
        thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut datagram = Vec::with_capacity(MAX_DATAGRAM + 32);
            while !ended.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp_in.recv_from(&mut buf) else {
                    continue;
                };
                let from = plain(from);
                if !sent_to
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&from)
                {
                    continue;
                }
                datagram.clear();
                wire::encode_udp_header(
                    &UdpHeader {
                        dest: Dest::Ip(from.ip()),
                        port: from.port(),
                    },
                    &mut datagram,
                );
                datagram.extend_from_slice(buf.get(..n).unwrap_or_default());
                if send_frame(&mut to_client, &datagram).is_err() {
                    break;
                }
            }
            let _ = to_client.finish();
        })
    };
    // Client -> destinations.
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    while let Ok(Some(())) = recv_frame(&mut from_client, &mut buf) {
        let Ok((header, data)) = wire::parse_udp(&buf) else {
            continue;
        };
        let to = match candidates(
            &options.policy,
            &header.dest,
            header.port,
            options.dial_timeout,
        ) {
            Ok(addrs) => addrs.into_iter().next(),
            Err((_, why)) => {
                if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::warn!(
                        "skywire socks exit: {key}: UDP to {}:{} dropped: {why}",
                        header.dest,
                        header.port
                    );
                }
                None
            }
        };
        let Some(to) = to else {
            continue;
        };
        sent_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(to);
        let to = match (v6, to.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), to.port()),
            _ => to,
        };
        let _ = udp.send_to(data, to);
    }
    ended.store(true, Ordering::Relaxed);
    let _ = down.join();
}
