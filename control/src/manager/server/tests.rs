//! The server with real TCP sockets on loopback: the caps on connections that have not
//! proved a key, and the byte bound of a node's send queue; honest nodes get through.
//!
//! Every address in 127.0.0.0/8 is loopback on Linux, so a client bound to 127.0.0.2 is
//! another source to the manager than one bound to 127.0.0.1.

use std::net::Ipv4Addr;

use rustix::net::{AddressFamily, SocketType};
use serde_json::Value;

use super::*;
use crate::manager::core::{Params, Rng};
use crate::manager::proto::{Register, session_keys};

const WAIT: Duration = Duration::from_secs(5);

fn manager_key() -> PrivateKey {
    PrivateKey::from_bytes([9; 32])
}

fn start(limits: ServerLimits) -> Manager {
    // The manager listens on loopback, so nodes on this machine may register loopback
    // endpoints.
    let params = Params {
        listen_ip: Some("127.0.0.1".parse().unwrap()),
        ..Params::default()
    };
    let core = ManagerCore::new(params, Rng::seeded(1));
    Manager::start_with("127.0.0.1:0".parse().unwrap(), manager_key(), core, limits).unwrap()
}

fn local(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::from((from, 0))).unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

/// The manager's first frame on a new connection: `Ok(HELLO)` when it took the
/// connection; the end of the connection when it closed it at once.
fn hello(stream: &mut TcpStream, decoder: &mut Decoder) -> Result<Hello, ConnectionEnd> {
    let frame = proto::read_frame(stream, decoder, None, Some(Instant::now() + WAIT))?;
    assert_eq!(frame.kind, kind::HELLO, "{frame:?}");
    Ok(frame.parse().unwrap())
}

/// Open `n` connections from `from` that never prove anything; the ones the manager took
/// (it sent HELLO), and how many it closed at once.
fn flood(from: Ipv4Addr, to: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let mut stream = connect_from(from, to);
        let mut decoder = Decoder::with_limit(proto::MAX_AUTH_FRAME);
        match hello(&mut stream, &mut decoder) {
            Ok(_) => held.push(stream),
            Err(ConnectionEnd::TimedOut) => panic!("neither HELLO nor a close"),
            Err(_) => refused += 1,
        }
    }
    (held, refused)
}

/// A node that proved its key and registered.
struct Node {
    stream: TcpStream,
    decoder: Decoder,
    to_manager: Mac,
    from_manager: Mac,
    /// Every byte it sent, as an eavesdropper on the connection would capture it.
    sent: Vec<u8>,
}

impl Node {
    /// Connect from `from`, prove key `seed`, register: the connection, or how it ended
    /// before HELLO.
    fn join(from: Ipv4Addr, to: SocketAddr, seed: u8) -> Result<Self, ConnectionEnd> {
        let key = PrivateKey::from_bytes([seed; 32]);
        let mut stream = connect_from(from, to);
        let mut decoder = Decoder::with_limit(proto::MAX_AUTH_FRAME);
        let hello = hello(&mut stream, &mut decoder)?;
        let manager = manager_key().public_key();
        assert_eq!(hello.manager.0, manager);
        let nonce = Bytes32([seed; 32]);
        let node = key.public_key();
        let keys = session_keys(&key, &manager, &manager, &node, &hello.nonce, &nonce).unwrap();
        let auth = Auth {
            node: Key(node),
            nonce,
            proof: keys.node_proof,
        };
        let sent = proto::encode(&Frame::request(kind::AUTH, 1, &auth), None).unwrap();
        stream.write_all(&sent).unwrap();
        let deadline = Some(Instant::now() + WAIT);
        let ok: AuthOk = proto::read_frame(&mut stream, &mut decoder, None, deadline)
            .unwrap()
            .reply()
            .unwrap();
        assert!(proto::proof_matches(&ok.proof, &keys.manager_proof));
        decoder.set_limit(proto::MAX_FRAME);
        let mut node = Self {
            stream,
            decoder,
            to_manager: keys.node_to_manager,
            from_manager: keys.manager_to_node,
            sent,
        };
        let register = Register {
            endpoint: Some(SocketAddr::from((local(seed), 6000))),
            ..Register::default()
        };
        node.ask(Frame::request(kind::REGISTER, 2, &register))
            .reply::<Value>()
            .unwrap();
        Ok(node)
    }

    fn send(&mut self, frame: &Frame) {
        let bytes = proto::encode(frame, Some(&mut self.to_manager)).unwrap();
        self.stream.write_all(&bytes).unwrap();
        self.sent.extend_from_slice(&bytes);
    }

    /// Send `request` and read frames until its reply.
    fn ask(&mut self, request: Frame) -> Frame {
        self.send(&request);
        loop {
            let frame = proto::read_frame(
                &mut self.stream,
                &mut self.decoder,
                Some(&mut self.from_manager),
                Some(Instant::now() + WAIT),
            )
            .unwrap();
            if frame.is_reply() && frame.id == request.id {
                return frame;
            }
        }
    }

    fn nodes(&mut self) -> Value {
        self.ask(Frame::request(kind::NODES, 3, &Value::Null))
            .reply()
            .unwrap()
    }
}

/// Connections that never prove a key: as the server was (no cap per source, here the
/// per-source cap as large as the total), one host holds every place and an honest node
/// is turned away; with the cap per source it holds its share, honest nodes get in, and
/// only many sources together fill the total.
#[test]
fn one_source_cannot_lock_out_the_others_before_the_key_proof() {
    let limits = ServerLimits {
        max_unauthenticated: 16,
        max_unauthenticated_per_source: 4,
        ..ServerLimits::default()
    };

    let without = start(ServerLimits {
        max_unauthenticated_per_source: 16,
        ..limits
    });
    let (held, refused) = flood(local(2), without.listen, 40);
    assert_eq!((held.len(), refused), (16, 24));
    assert!(
        Node::join(local(1), without.listen, 1).is_err(),
        "an honest node got in"
    );
    drop(held);
    without.stop();

    let manager = start(limits);
    let (held, refused) = flood(local(2), manager.listen, 40);
    assert_eq!((held.len(), refused), (4, 36));
    let mut honest = Node::join(local(1), manager.listen, 1).unwrap();
    assert_eq!(honest.nodes()["nodes"].as_array().unwrap().len(), 1);
    // Its proof done, its place is free again: another node from the same address.
    let mut second = Node::join(local(1), manager.listen, 2).unwrap();
    assert_eq!(second.nodes()["nodes"].as_array().unwrap().len(), 2);

    // Four sources of four fill the total; then everyone new waits, honest or not.
    let mut floods = vec![held];
    for source in 3..=5 {
        let (held, refused) = flood(local(source), manager.listen, 6);
        assert_eq!((held.len(), refused), (4, 2));
        floods.push(held);
    }
    assert_eq!(flood(local(6), manager.listen, 1).0.len(), 0);
    assert!(Node::join(local(1), manager.listen, 3).is_err());
    // Nodes already in are not touched.
    assert_eq!(honest.nodes()["nodes"].as_array().unwrap().len(), 2);
    // The flood ends (here its sender leaves; otherwise the auth timeout ends it).
    drop(floods);
    let third = wait_for(|| Node::join(local(1), manager.listen, 3).ok());
    drop((honest, second, third));
    manager.stop();
}

/// The absolute auth timeout still ends connections that never prove a key, and their
/// places come back.
#[test]
fn the_auth_timeout_gives_the_places_back() {
    let manager = start(ServerLimits {
        max_unauthenticated: 4,
        max_unauthenticated_per_source: 4,
        auth_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    });
    let (mut held, _) = flood(local(2), manager.listen, 4);
    assert_eq!(held.len(), 4);
    assert!(Node::join(local(1), manager.listen, 1).is_err());
    for stream in &mut held {
        let mut decoder = Decoder::new();
        let end = proto::read_frame(stream, &mut decoder, None, Some(Instant::now() + WAIT));
        assert!(
            matches!(end, Err(ConnectionEnd::Closed | ConnectionEnd::Io(_))),
            "{end:?}"
        );
    }
    let _node = wait_for(|| Node::join(local(1), manager.listen, 1).ok());
    manager.stop();
}

/// Row 3 of the fault table, manager frames: a registered node's whole byte stream (its
/// key proof, `REGISTER` and a request), captured as an eavesdropper would and replayed
/// on 1000 new connections, gets no connection past the key proof (the manager's nonce is
/// new each time); a captured frame replayed inside the node's own connection fails its
/// tag and ends that connection. The manager's view is unchanged throughout.
#[test]
fn replayed_manager_frames_get_nowhere() {
    let manager = start(ServerLimits::default());
    let mut node = Node::join(local(1), manager.listen, 1).unwrap();
    let before = node.nodes();
    assert_eq!(before["nodes"].as_array().unwrap().len(), 1);
    let captured = node.sent.clone();
    let (mut refused, mut closed_early) = (0, 0);
    for i in 0..1000u32 {
        // The node is still there, as it was (asking also keeps its connection from
        // going idle: the test node sends no heartbeats).
        if i % 50 == 0 {
            assert_eq!(node.nodes()["nodes"], before["nodes"], "after {i} replays");
        }
        // Spread over sources: the per-source cap on connections still proving a key
        // must not be what stops them.
        let source = local(2 + u8::try_from(i % 200).unwrap());
        let mut stream = connect_from(source, manager.listen);
        let mut decoder = Decoder::with_limit(proto::MAX_AUTH_FRAME);
        if hello(&mut stream, &mut decoder).is_err() {
            closed_early += 1;
            continue;
        }
        // The manager may close before it has read everything: a failed write is fine.
        let _ = stream.write_all(&captured);
        let deadline = Some(Instant::now() + WAIT);
        match proto::read_frame(&mut stream, &mut decoder, None, deadline) {
            Ok(frame) => {
                let err = frame.reply::<AuthOk>().unwrap_err();
                assert_eq!(err.kind, ErrorKind::Unauthenticated, "{err:?}");
                refused += 1;
                // Then nothing more: the connection ends.
                let end = proto::read_frame(&mut stream, &mut decoder, None, deadline);
                assert!(
                    matches!(end, Err(ConnectionEnd::Closed | ConnectionEnd::Io(_))),
                    "{end:?}"
                );
            }
            Err(ConnectionEnd::TimedOut) => panic!("replay {i}: neither a reply nor a close"),
            Err(_) => closed_early += 1,
        }
    }
    eprintln!("1000 replays: {refused} refused as unauthenticated, {closed_early} closed");
    assert_eq!(refused + closed_early, 1000);
    assert!(
        refused > 900,
        "{refused} refused with a reason, {closed_early} closed"
    );
    assert_eq!(node.nodes()["nodes"], before["nodes"]);

    // Inside its own connection: the REGISTER frame again, byte for byte (tagged with a
    // sequence number already used). The manager ends the connection.
    let auth_len = proto::encode(&Frame::request(kind::AUTH, 1, &Value::Null), None)
        .unwrap()
        .len();
    assert!(captured.len() > auth_len);
    let mut rest = &captured[..];
    // Skip the AUTH frame (its length is in its first 4 bytes), then take REGISTER's.
    let frame_len = |bytes: &[u8]| u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize + 4;
    rest = &rest[frame_len(rest)..];
    let register = &rest[..frame_len(rest)];
    node.stream.write_all(register).unwrap();
    let end = loop {
        match proto::read_frame(
            &mut node.stream,
            &mut node.decoder,
            Some(&mut node.from_manager),
            Some(Instant::now() + WAIT),
        ) {
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert!(
        matches!(end, ConnectionEnd::Closed | ConnectionEnd::Io(_)),
        "{end:?}"
    );
    manager.stop();
}

/// Retry `f` until it gives something: the server frees places on its own threads.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A writer to a peer, that peer, and the MAC state to read what the writer sends.
fn writer_to_peer(limits: &ServerLimits) -> (Writer, TcpStream, Mac) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    let node = PrivateKey::from_bytes([3; 32]);
    let manager = manager_key();
    let nonce = Bytes32([0; 32]);
    let keys = session_keys(
        &manager,
        &node.public_key(),
        &manager.public_key(),
        &node.public_key(),
        &nonce,
        &nonce,
    )
    .unwrap();
    let mac = keys.manager_to_node;
    let writer = Writer::start(ConnId(1), ours, mac.clone(), limits).unwrap();
    (writer, peer, mac)
}

/// A reply of about 64 KiB, like a view of a mesh of a few hundred nodes.
fn big_reply(id: u64) -> Frame {
    Frame::ok(kind::NODES, id, &"x".repeat(64 * 1024))
}

/// A node that does not read: as the server was (a bound in frames only), its queue took
/// all 1024 frames of 64 KiB, tens of MiB pinned; bounded in bytes, the queue stops at
/// 4 MiB and the connection is to be closed.
#[test]
fn a_slow_reader_pins_at_most_the_byte_bound() {
    let frames_only = ServerLimits {
        send_queue_bytes: usize::MAX,
        ..ServerLimits::default()
    };
    // The peer never reads.
    let (mut writer, peer, _) = writer_to_peer(&frames_only);
    let mut sent = 0u64;
    let err = loop {
        match writer.send(&big_reply(sent)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 4 * SEND_QUEUE as u64, "never full");
    };
    assert!(
        matches!(err, WriteError::Frames { max: SEND_QUEUE }),
        "{err}"
    );
    // The kernel's socket buffers take a few MiB; the rest waits in the queue.
    assert!(writer.queued() > 32 << 20, "{} bytes", writer.queued());
    writer.close();
    drop(peer);

    let limits = ServerLimits::default();
    let (mut writer, peer, _) = writer_to_peer(&limits);
    let mut sent = 0u64;
    let err = loop {
        match writer.send(&big_reply(sent)) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(writer.queued() <= SEND_QUEUE_BYTES, "{}", writer.queued());
    };
    assert!(
        matches!(
            err,
            WriteError::Bytes {
                max: SEND_QUEUE_BYTES,
                ..
            }
        ),
        "{err}"
    );
    assert!(sent < SEND_QUEUE as u64, "{sent} frames queued");
    assert!(err.to_string().contains("the node does not read"), "{err}");
    writer.close();
    drop(peer);
}

/// A frame larger than the whole byte bound still goes out on an idle connection; the
/// bound only stops frames piling up.
#[test]
fn one_large_frame_passes_an_empty_queue() {
    let limits = ServerLimits {
        send_queue_bytes: 1024,
        ..ServerLimits::default()
    };
    let (mut writer, mut peer, mut mac) = writer_to_peer(&limits);
    writer.send(&big_reply(1)).unwrap();
    let mut decoder = Decoder::new();
    let deadline = Some(Instant::now() + WAIT);
    let frame = proto::read_frame(&mut peer, &mut decoder, Some(&mut mac), deadline).unwrap();
    assert_eq!(frame, big_reply(1));
    // Now that it is written, the next one goes out too.
    wait_for(|| (writer.queued() == 0).then_some(()));
    writer.send(&big_reply(2)).unwrap();
    writer.close();
}
