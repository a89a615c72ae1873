//! Apps' streams between two real engines on loopback: real UDP sockets, real event loops,
//! and the app side over real Unix socket pairs speaking the stream frames.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::engine::{self, EngineHandle, NodeSetup, RouteSetup, RuleChange};
use skywire_dataplane::engine::{Origin, RunningEngine};
use skywire_dataplane::stack::appframe::{self, Decoder, Frame, Kind};
use skywire_dataplane::stack::{ListenOptions, Owner, StackSetup, StreamError};
use skywire_dataplane::wire::RouteId;

const OWNER: Owner = Owner(1000);

struct Node {
    engine: RunningEngine,
    key: PublicKey,
}

impl Node {
    fn start() -> Self {
        let private_key = PrivateKey::generate().unwrap();
        let key = private_key.public_key();
        let setup = NodeSetup {
            private_key,
            listen: "127.0.0.1:0".parse().unwrap(),
            tun: None,
            routes: vec![],
            relays: vec![],
            offload: true,
            stack: StackSetup::default(),
            fwmark: None,
            peers: Vec::new(),
        };
        Node {
            engine: engine::start(&setup).unwrap(),
            key,
        }
    }

    fn handle(&self) -> &EngineHandle {
        &self.engine.handle
    }

    fn addr(&self) -> SocketAddr {
        self.engine.listen
    }
}

fn id(n: u32) -> RouteId {
    RouteId::new(n).unwrap()
}

/// A direct route between two nodes (no relay).
fn connect(a: &Node, b: &Node) {
    let end = |name: &str, peer: PublicKey, to: SocketAddr, out: u32, inn: u32| RouteSetup {
        name: name.into(),
        peer,
        prefixes: vec![],
        first_hop: to,
        out_id: id(out),
        in_id: id(inn),
        peer_in_id: id(out),
        prev_hop: to,
        persistent_keepalive: None,
    };
    for (node, route) in [
        (b, end("to-a", a.key, a.addr(), 21, 12)),
        (a, end("to-b", b.key, b.addr(), 12, 21)),
    ] {
        node.handle()
            .apply(
                vec![RuleChange::AddEnd {
                    route,
                    origin: Origin::Config,
                }],
                Duration::from_secs(2),
            )
            .unwrap()
            .unwrap();
    }
}

fn write_frame(socket: &mut UnixStream, kind: Kind, payload: &[u8]) {
    socket
        .write_all(&appframe::header(kind, payload.len()))
        .unwrap();
    socket.write_all(payload).unwrap();
}

/// Read frames until FIN or RESET: the data, and the RESET reason if that ended it.
fn read_to_end(socket: &mut UnixStream) -> (Vec<u8>, Option<String>) {
    let mut decoder = Decoder::new();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "the node closed the connection without FIN or RESET");
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, frame) = decoder.decode(input).unwrap();
            match frame {
                Some(Frame::Data(p)) => data.extend_from_slice(p),
                Some(Frame::Fin) => return (data, None),
                Some(Frame::Reset(r)) => return (data, Some(r)),
                Some(Frame::Handed) => panic!("HANDED without a hand-over"),
                None => {}
            }
            input = &input[used..];
        }
    }
}

/// Dial B's port from A and attach app sockets at both ends.
fn open(a: &Node, b: &Node, port: u16) -> (UnixStream, UnixStream) {
    let (_listener, arrivals) = b
        .handle()
        .listen(ListenOptions {
            port,
            backlog: 8,
            allow: None,
            owner: OWNER,
        })
        .unwrap();
    let info = a
        .handle()
        .dial(b.key, port, OWNER, Duration::from_secs(5))
        .unwrap();
    assert_eq!((info.peer, info.remote_port), (b.key, port));
    let arrived = arrivals.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((arrived.peer, arrived.local_port), (a.key, port));
    let (a_app, a_engine) = UnixStream::pair().unwrap();
    let (b_app, b_engine) = UnixStream::pair().unwrap();
    a.handle()
        .attach(info.id, OWNER, a_engine, Vec::new())
        .unwrap();
    b.handle()
        .attach(arrived.id, OWNER, b_engine, Vec::new())
        .unwrap();
    (a_app, b_app)
}

#[test]
fn a_stream_between_two_engines_carries_64_mib_each_way_with_half_closes() {
    let (a, b) = (Node::start(), Node::start());
    connect(&a, &b);
    let (mut a_app, mut b_app) = open(&a, &b, 7);
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let expected = blake3::hash(&data);
    let mut writer = a_app.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for chunk in data.chunks(100_000) {
            write_frame(&mut writer, Kind::Data, chunk);
        }
        // Half-close by shutting the socket's write side (the same as a FIN frame).
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let (got, reset) = read_to_end(&mut b_app);
    sender.join().unwrap();
    assert_eq!(reset, None);
    assert_eq!(got.len(), 64 << 20);
    assert_eq!(blake3::hash(&got), expected);
    // B answers after A's FIN, then closes with a FIN frame.
    write_frame(&mut b_app, Kind::Data, b"all received");
    write_frame(&mut b_app, Kind::Fin, b"");
    let (back, reset) = read_to_end(&mut a_app);
    assert_eq!((back.as_slice(), reset), (&b"all received"[..], None));
    // Both connections are closed by the node after the clean end.
    let mut rest = Vec::new();
    a_app.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    for node in [a, b] {
        node.handle().shutdown().unwrap();
        node.engine.wait().unwrap();
    }
}

#[test]
fn resets_travel_with_their_reason_and_dials_fail_clearly() {
    let (a, b) = (Node::start(), Node::start());
    assert_eq!(
        a.handle()
            .dial(b.key, 7, OWNER, Duration::from_secs(1))
            .unwrap_err(),
        StreamError::NoRoute
    );
    connect(&a, &b);
    assert_eq!(
        a.handle()
            .dial(b.key, 9, OWNER, Duration::from_secs(2))
            .unwrap_err(),
        StreamError::Refused
    );
    let (mut a_app, mut b_app) = open(&a, &b, 7);
    write_frame(&mut a_app, Kind::Data, b"hello");
    write_frame(&mut a_app, Kind::Reset, b"");
    let (got, reset) = read_to_end(&mut b_app);
    assert!(got.is_empty() || got == b"hello");
    assert_eq!(reset.as_deref(), Some("reset: the peer reset the stream"));
    // An app that breaks the framing resets its stream.
    let (mut a_app, mut b_app) = open(&a, &b, 8);
    a_app.write_all(&[9, 0, 0, 0]).unwrap();
    let (_, reset) = read_to_end(&mut a_app);
    assert_eq!(
        reset.as_deref(),
        Some("app_protocol: the app broke the stream protocol")
    );
    let (_, reset) = read_to_end(&mut b_app);
    assert_eq!(reset.as_deref(), Some("reset: the peer reset the stream"));
    // A node that stops resets its streams.
    let (_a_app, mut b_app) = open(&a, &b, 10);
    a.handle().shutdown().unwrap();
    a.engine.wait().unwrap();
    let (_, reset) = read_to_end(&mut b_app);
    assert_eq!(reset.as_deref(), Some("reset: the peer reset the stream"));
    b.handle().shutdown().unwrap();
    b.engine.wait().unwrap();
}
