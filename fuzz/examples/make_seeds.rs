//! Write the seed corpus: `fuzz/corpus/<target>/seed-<name>`, real packets made by the
//! crate's own emitters with the fixed keys of `skywire_fuzz::fixtures`.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! Replaces every `seed-*` file (other corpus files, which `.gitignore` keeps out of git,
//! are left alone). Handshake seeds contain fresh random ephemeral keys, so their bytes
//! change on every run; everything else is deterministic.

use std::fs;
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use skywire_control::apps::socks::wire::{
    self as socks, Command as SocksCommand, Credentials, Dest, Greeting, Name, Rep,
    Reply as SocksReply, Request as SocksRequest, UdpHeader,
};
use skywire_control::apps::vpn::proto::{
    self as vpn, ErrorKind as VpnErrorKind, LeaseReply, Reply as VpnReply, Request as VpnRequest,
};
use skywire_control::config::{Config, ConfigFile, ManagerSection, NodeSection};
use skywire_control::frame as codec;
use skywire_control::manager::proto::{
    self, Auth, AuthOk, Bytes32, ErrorKind as ProtoErrorKind, Frame, Hello, Key, LinkMeasure,
    LinkReport, MeshRouteId, NodeRequest, ProtoError, Register, RouteInfo, RouteList, RouteState,
};
use skywire_control::manager::topology::RouteWeight;
use skywire_control::node::apps::protocol::{
    AppRequest, ErrorKind, Incoming, ListenerLine, Listening, Reply, StreamOpened, error_line,
    reset_reason,
};
use skywire_control::signal::auth::{self, ClientAuth, Secret as SignalSecret, Step};
use skywire_control::signal::frame::{Frame as SignalFrame, op};
use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::crypto::cipher::{Limits, SendKey};
use skywire_dataplane::crypto::noise;
use skywire_dataplane::session::HEADROOM;
use skywire_dataplane::stack::appframe::{self, Kind};
use skywire_dataplane::stack::{ListenerId, StreamError, StreamId};
use skywire_dataplane::wire::{
    HANDSHAKE_INIT_LEN, HANDSHAKE_RESPONSE_LEN, PacketType, TRANSPORT_HEADER_LEN,
    TRANSPORT_OVERHEAD,
};
use skywire_fuzz::config::CONFIG_FILE;
use skywire_fuzz::control::{SIGNAL_CLIENT_NONCE, SIGNAL_ID, SIGNAL_SECRET, SIGNAL_SERVER_NONCE};
use skywire_fuzz::fixtures::{
    BINDING, CIPHER_KEY, INITIATOR_IN, INITIATOR_INDEX, INITIATOR_SECRET, RESPONDER_INDEX, ROUTE,
    TIMESTAMP, initiator_keys, responder_keys,
};
use skywire_fuzz::node::{OTHER_IN, RELAY_IN};
use skywire_fuzz::replay::{self, Op as R};
use skywire_fuzz::route::{DELIVER_ID, FORWARD_ID};
use skywire_fuzz::session::{self, Op as S, Side::A, Side::B};
use skywire_fuzz::stack::Pair as StackPair;

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Seal data, keepalive and close packets with `CIPHER_KEY`, starting at counter 0.
fn transport_packets() -> Seeds {
    let mut tx = SendKey::new(&CIPHER_KEY, 0x5566_7788);
    let mut seal = |ty, payload: &[u8]| {
        let mut buf = vec![0u8; TRANSPORT_OVERHEAD + payload.len()];
        buf[TRANSPORT_HEADER_LEN..][..payload.len()].copy_from_slice(payload);
        let n = tx
            .seal(&mut buf, ty, ROUTE, payload.len(), &Limits::WIREGUARD)
            .expect("seal");
        assert_eq!(n, buf.len());
        buf
    };
    // An IPv4 header's worth of bytes, then a full-MTU payload.
    let ipv4 = [
        0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 0x40, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let mtu: Vec<u8> = (0..1400u32).map(|i| (i * 7) as u8).collect();
    vec![
        ("data-counter0", seal(PacketType::Data, b"hello")),
        ("data-counter1-ipv4", seal(PacketType::Data, &ipv4)),
        ("keepalive-counter2", seal(PacketType::Keepalive, b"")),
        ("data-counter3-1400", seal(PacketType::Data, &mtu)),
        ("data-counter4-1byte", seal(PacketType::Data, b"x")),
        ("close-counter5", seal(PacketType::Close, b"")),
    ]
}

/// A genuine initiation from the initiator to the responder, and the responder's answer.
fn handshake() -> ([u8; HANDSHAKE_INIT_LEN], [u8; HANDSHAKE_RESPONSE_LEN]) {
    let mut init = [0u8; HANDSHAKE_INIT_LEN];
    noise::write_init(
        initiator_keys(),
        BINDING,
        ROUTE,
        INITIATOR_INDEX,
        TIMESTAMP,
        &mut init,
    )
    .expect("write_init");
    let received = noise::read_init(responder_keys(), BINDING, &init).expect("read_init");
    let mut response = [0u8; HANDSHAKE_RESPONSE_LEN];
    noise::write_response(
        responder_keys(),
        received,
        INITIATOR_IN,
        RESPONDER_INDEX,
        &mut response,
    )
    .expect("write_response");
    (init, response)
}

fn session_scripts(init: &[u8]) -> Seeds {
    let hello = || b"hello".to_vec();
    let handshake_then_data = vec![
        S::RequestHandshake(A),
        S::Poll(A),
        S::Deliver(B),
        S::Deliver(A),
        S::Deliver(B),
        S::Send(A, hello()),
        S::Deliver(B),
        S::Send(B, b"world".to_vec()),
        S::Deliver(A),
        S::Replay(A),
        S::Tick(11),
        S::Poll(B),
        S::Deliver(A),
    ];
    let mut rekey = vec![
        S::RequestHandshake(A),
        S::Poll(A),
        S::Deliver(B),
        S::Deliver(A),
    ];
    rekey.push(S::Deliver(B));
    for i in 0..12u8 {
        rekey.extend([
            S::Send(A, vec![i; 3]),
            S::Poll(A),
            S::Deliver(B),
            S::Deliver(B),
        ]);
        rekey.extend([S::Deliver(A), S::Deliver(B), S::Tick(3)]);
    }
    rekey.extend([S::Tick(200), S::Send(A, hello()), S::Poll(A), S::Deliver(B)]);
    let restart = vec![
        S::Send(A, hello()),
        S::RequestHandshake(A),
        S::Poll(A),
        S::Deliver(B),
        S::Deliver(A),
        S::Deliver(B),
        S::Restart(B),
        S::Send(A, hello()),
        S::Deliver(B),
        S::Tick(1),
        S::Poll(B),
        S::Deliver(A),
        S::Deliver(B),
        S::Deliver(A),
        S::Send(B, hello()),
        S::Deliver(A),
        S::Send(A, hello()),
        S::Deliver(B),
    ];
    let hostile_network = vec![
        S::PersistentKeepalive(A, 5),
        S::RequestHandshake(A),
        S::Poll(A),
        S::Reorder(B),
        S::Deliver(B),
        S::Deliver(A),
        S::Deliver(B),
        S::Send(A, b"one".to_vec()),
        S::Send(A, b"two".to_vec()),
        S::Send(A, b"three".to_vec()),
        S::Corrupt(B, 5, 0xff),
        S::Reorder(B),
        S::Deliver(B),
        S::Corrupt(B, 30, 0x01),
        S::Deliver(B),
        S::Lose(B),
        S::Deliver(B),
        S::Replay(B),
        S::Tick(6),
        S::Poll(A),
        S::Deliver(B),
        S::Close(A),
        S::Deliver(B),
        S::Send(B, hello()),
    ];
    // The same XOR twice restores the packet, which must then be delivered (a harness
    // false positive the fuzzer once found).
    let corrupted_back = vec![
        S::RequestHandshake(B),
        S::Poll(B),
        S::Deliver(A),
        S::Deliver(B),
        S::Deliver(A),
        S::Send(B, hello()),
        S::Corrupt(A, 12, 0xbc),
        S::Corrupt(A, 12, 0xbc),
        S::Corrupt(A, 6, 0x01),
        S::Deliver(A),
    ];
    let injected_init = vec![
        S::Raw(B, init.to_vec()),
        S::Raw(B, init.to_vec()),
        S::Deliver(A),
        S::Raw(A, init.to_vec()),
        S::Raw(B, vec![1, 3, 0, 0, 0, 0, 0, 1]),
    ];
    // The fixed initiation, accepted, then replayed into a re-installed route end (refused:
    // the node remembers it), overtaken by a genuine handshake, refused again after another
    // re-install, and accepted after a restart (the node forgot everything, as WireGuard).
    let reinstall = vec![
        S::Raw(B, init.to_vec()),
        S::Lose(A),
        S::Reinstall(B),
        S::Raw(B, init.to_vec()),
        S::Tick(1),
        S::RequestHandshake(A),
        S::Poll(A),
        S::Deliver(B),
        S::Deliver(A),
        S::Deliver(B),
        S::Send(A, hello()),
        S::Deliver(B),
        S::Reinstall(B),
        S::Raw(B, init.to_vec()),
        S::Restart(B),
        S::Raw(B, init.to_vec()),
    ];
    vec![
        (
            "handshake-then-data",
            session::encode(false, &handshake_then_data),
        ),
        ("reinstall", session::encode(false, &reinstall)),
        ("tight-limits-rekey", session::encode(true, &rekey)),
        ("restart", session::encode(false, &restart)),
        ("hostile-network", session::encode(true, &hostile_network)),
        ("corrupted-back", session::encode(false, &corrupted_back)),
        ("injected-init", session::encode(false, &injected_init)),
    ]
}

/// IP packets as the TUN device hands them over: headers plus a little payload.
fn ip_packets() -> Seeds {
    let v4 = |dst: [u8; 4]| {
        let mut p = vec![
            0x45, 0, 0, 28, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 10, 77, 0, 1, 0, 0, 0, 0,
        ];
        p[16..20].copy_from_slice(&dst);
        p.extend([8, 0, 0xf7, 0xff, 0, 0, 0, 0]); // ICMP echo request
        p
    };
    let v6 = |dst: Ipv6Addr| {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
        p.extend(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1).octets());
        p.extend(dst.octets());
        p.extend([128, 0, 0, 0, 0, 0, 0, 0]); // ICMPv6 echo request
        p
    };
    vec![
        ("v4-host-route", v4([10, 77, 3, 9])),
        ("v4-narrow", v4([10, 77, 3, 200])),
        ("v4-default", v4([8, 8, 8, 8])),
        ("v6-narrow", v6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 1, 5))),
        (
            "v6-default",
            v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ),
    ]
}

/// Frames of the control plane's protocols, each seed starting with its chunk-size byte
/// (see `skywire_fuzz::control`).
fn control_seeds() -> Vec<(&'static str, Seeds)> {
    let chunked = |chunk: u8, bytes: &[u8]| [&[chunk][..], bytes].concat();
    let manager_key = PrivateKey::from_bytes([9; 32]);
    let node_key = PrivateKey::from_bytes([1; 32]);
    let hello = Frame::request(
        proto::kind::HELLO,
        0,
        &Hello {
            version: proto::VERSION,
            manager: Key(manager_key.public_key()),
            nonce: Bytes32([3; 32]),
        },
    );
    let register = NodeRequest::Register(Register {
        endpoint: Some("198.18.0.1:6000".parse().expect("an address")),
        tun: vec![proto::WirePrefix("10.77.0.1/32".parse().expect("a prefix"))],
        ..Register::default()
    })
    .frame(1);
    // The node's AUTH and the manager's reply (the proofs are not checked here: the
    // decoder and the typed reading are).
    let auth = Frame::request(
        proto::kind::AUTH,
        0,
        &Auth {
            node: Key(node_key.public_key()),
            nonce: Bytes32([4; 32]),
            proof: Bytes32([5; 32]),
        },
    );
    let auth_ok = Frame::ok(
        proto::kind::AUTH,
        0,
        &AuthOk {
            proof: Bytes32([6; 32]),
        },
    );
    let auth_stream = [
        proto::encode(&auth, None).expect("encodes"),
        proto::encode(&auth_ok, None).expect("encodes"),
    ]
    .concat();
    // A LINK_REPORT with and without the newer fields, and a ROUTE_LIST reply with an
    // active route and a waiting one (its reason and retry time).
    let neighbour = Key(PrivateKey::from_bytes([2; 32]).public_key());
    let link_report = NodeRequest::LinkReport(LinkReport {
        links: vec![
            LinkMeasure {
                peer: neighbour,
                rtt_us: Some(1250),
                loss: 0.25,
                up: true,
                endpoint: Some("198.18.0.2:6000".parse().expect("an address")),
            },
            LinkMeasure {
                peer: Key(manager_key.public_key()),
                rtt_us: None,
                loss: 1.0,
                up: false,
                endpoint: None,
            },
        ],
    })
    .frame(5);
    let route = |id, state, reason, retry_in_ms| RouteInfo {
        id: MeshRouteId(id),
        src: Key(node_key.public_key()),
        dst: neighbour,
        path: vec![Key(node_key.public_key()), neighbour],
        state,
        min_hops: 1,
        max_hops: 3,
        avoid: vec![],
        weight: RouteWeight::Latency,
        repairs: 2,
        reason,
        retry_in_ms,
    };
    let route_list = Frame::ok(
        proto::kind::ROUTE_LIST,
        6,
        &RouteList {
            routes: vec![
                route(0x10, RouteState::Active, None, None),
                route(
                    0x11,
                    RouteState::Waiting,
                    Some(ProtoError::new(
                        ProtoErrorKind::NoPath,
                        "no path of 1 to 3 hops",
                    )),
                    Some(4000),
                ),
            ],
        },
    );
    let keys = proto::session_keys(
        &manager_key,
        &node_key.public_key(),
        &manager_key.public_key(),
        &node_key.public_key(),
        &Bytes32([3; 32]),
        &Bytes32([4; 32]),
    )
    .expect("fixed keys are usable");
    let mut mac = keys.node_to_manager;
    let mut tagged = proto::encode(&register, Some(&mut mac)).expect("encodes");
    tagged
        .extend(proto::encode(&NodeRequest::Heartbeat.frame(2), Some(&mut mac)).expect("encodes"));
    let signal = SignalFrame::request(op::REG, 7, json!({"Id": 3}))
        .encode()
        .expect("encodes");
    // The opening of docs/SIGNAL.md's example: the server's Hello and the client's Reg
    // with its proof, then the server's echo with its own.
    let secret = SignalSecret::from_bytes(SIGNAL_SECRET);
    let mut client = ClientAuth::new(SIGNAL_ID, 4242, secret.clone(), SIGNAL_CLIENT_NONCE);
    let signal_hello = auth::hello(&SIGNAL_SERVER_NONCE);
    let Ok(Step::Send(reg)) = client.handle(&signal_hello) else {
        panic!("the client registers after a Hello")
    };
    let accepted = auth::check_registration(&SIGNAL_SERVER_NONCE, &reg, |_| Some(secret))
        .expect("the registration is accepted");
    let signal_stream = |frames: &[&SignalFrame]| -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| f.encode().expect("encodes"))
            .collect()
    };
    let key = node_key.public_key();
    let link = skywire_dataplane::crypto::link::LinkKey::new(
        &PrivateKey::from_bytes([1; 32]),
        &PrivateKey::from_bytes([2; 32]).public_key(),
    )
    .expect("fixed keys are usable");
    let probe = |ty: u8| {
        let mut p = vec![1, ty, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        p.extend_from_slice(&PrivateKey::from_bytes([1; 32]).public_key().as_bytes()[..8]);
        let tag = link.tag(&p);
        p.extend_from_slice(&tag);
        p
    };
    vec![
        ("link_probe", vec![("probe", probe(8)), ("reply", probe(9))]),
        (
            "frame_codec",
            vec![
                (
                    "two-frames",
                    chunked(
                        5,
                        &[
                            codec::encode(1, 0x12, 7, &[b"{}"], 512).expect("encodes"),
                            codec::encode(1, 0x92, 7, &[b"{\"ok\":null}"], 512).expect("encodes"),
                        ]
                        .concat(),
                    ),
                ),
                (
                    "empty-payload",
                    chunked(63, &codec::encode(1, 0x18, 1, &[], 512).expect("encodes")),
                ),
            ],
        ),
        (
            "manager_frame",
            vec![
                (
                    "hello",
                    chunked(63, &proto::encode(&hello, None).expect("encodes")),
                ),
                (
                    "register",
                    chunked(7, &proto::encode(&register, None).expect("encodes")),
                ),
                ("tagged-register-heartbeat", chunked(11, &tagged)),
                ("auth-then-ok", chunked(13, &auth_stream)),
                (
                    "link-report",
                    chunked(17, &proto::encode(&link_report, None).expect("encodes")),
                ),
                (
                    "route-list-reply",
                    chunked(29, &proto::encode(&route_list, None).expect("encodes")),
                ),
            ],
        ),
        (
            "signal_frame",
            vec![
                ("register", chunked(3, &signal)),
                ("opening", chunked(9, &signal_stream(&[&signal_hello, &reg, &accepted.echo]))),
            ],
        ),
        (
            "signal_auth",
            vec![
                ("register", chunked(5, &signal_stream(&[&reg]))),
                ("hello-echo", chunked(63, &signal_stream(&[&signal_hello, &accepted.echo]))),
                ("original-register", chunked(3, &signal)),
            ],
        ),
        (
            "ctl_request",
            vec![
                ("status", br#"{"id":1,"op":"status"}"#.to_vec()),
                (
                    "route-add",
                    format!(
                        r#"{{"id":2,"op":"route_add","dst":"{key}","min_hops":3,"avoid":["{key}"],"weight":"latency"}}"#
                    )
                    .into_bytes(),
                ),
                ("route-rm", br#"{"id":3,"op":"route_rm","route":"00ff"}"#.to_vec()),
                ("ping", format!(r#"{{"id":4,"op":"ping","peer":"{key}"}}"#).into_bytes()),
            ],
        ),
        (
            "metrics_http",
            vec![
                (
                    "scrape",
                    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9586\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: text/plain;version=0.0.4\r\n\r\n".to_vec(),
                ),
                ("head-http10", b"HEAD /metrics?x=1 HTTP/1.0\nConnection: keep-alive\n\n".to_vec()),
                ("pipelined", b"GET /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n".to_vec()),
                ("body", b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
            ],
        ),
    ]
}

/// Scripts for `stack_ingress` (format in `src/stack.rs`), with real segments A's stack
/// sends.
fn stack_seeds() -> Vec<(&'static str, Seeds)> {
    let mut pair = StackPair::new();
    pair.a.app_send(pair.now, pair.at_a, b"hello from a");
    let (_, buf, len) = pair.a.pop_egress().expect("a data segment");
    let segment = buf[HEADROOM..HEADROOM + len].to_vec();
    let segment_len = u8::try_from(segment.len()).expect("a short segment");
    let inject = |op: u8| [&[op, segment_len][..], &segment[..]].concat();
    vec![(
        "stack_ingress",
        vec![
            ("settle-send-wait", vec![3, 4, 100, 3, 2, 50, 3, 4, 255, 3]),
            ("segment-then-settle", [inject(0), vec![3]].concat()),
            ("segment-twice", [inject(0), inject(0), vec![3]].concat()),
            ("segment-from-a-stranger", [inject(1), vec![3]].concat()),
            ("timers", vec![2, 255, 2, 255, 2, 255, 3]),
        ],
    )]
}

/// Seeds for `app_request` (a chunk-size byte, then what a program or the node writes on
/// the app socket) and `app_frames` (chunk sizes, then a stream's frames), made with the
/// protocol's own writers.
fn app_seeds() -> Vec<(&'static str, Seeds)> {
    let key = PrivateKey::from_bytes([1; 32]).public_key();
    let other = PrivateKey::from_bytes([2; 32]).public_key();
    let line = |chunk: u8, bytes: &[u8]| [&[chunk][..], bytes].concat();
    let data =
        |payload: &[u8]| [&appframe::header(Kind::Data, payload.len())[..], payload].concat();
    let fin = appframe::header(Kind::Fin, 0).to_vec();
    let dial = AppRequest::Dial {
        peer: key,
        port: 7,
        timeout: Duration::from_millis(5000),
    }
    .to_line();
    // A listen as long as the request limit allows: 60 keys.
    let many = AppRequest::Listen {
        port: 7,
        backlog: 1024,
        allow: Some(
            (0..60u8)
                .map(|i| PrivateKey::from_bytes([i; 32]).public_key())
                .collect(),
        ),
    }
    .to_line();
    assert!(many.len() <= 4097, "the long listen fits the limit");
    let opened = StreamOpened {
        stream: StreamId(1),
        peer: key,
        local_port: 49152,
        port: 7,
    };
    let incoming = ListenerLine::Incoming(Incoming {
        stream: StreamId(1),
        peer: other,
        port: 49152,
    });
    let route_gone = reset_reason(StreamError::RouteGone);
    let hello_world = [
        data(b"hello "),
        data(b""),
        data(b"world"),
        fin.clone(),
        appframe::reset(&route_gone),
    ]
    .concat();
    let big: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    vec![
        (
            "app_request",
            vec![
                (
                    "dial-then-frames",
                    line(4, &[&dial[..], &data(b"hello"), &fin].concat()),
                ),
                (
                    "listen-allow",
                    line(
                        0,
                        &AppRequest::Listen {
                            port: 7,
                            backlog: 4,
                            allow: Some(vec![key, other]),
                        }
                        .to_line(),
                    ),
                ),
                ("listen-60-keys", line(200, &many)),
                (
                    "listen-minimal",
                    line(63, b"{\"op\":\"listen\",\"port\":7}\r\n"),
                ),
                (
                    "accept",
                    line(
                        1,
                        &AppRequest::Accept {
                            stream: StreamId(42),
                        }
                        .to_line(),
                    ),
                ),
                (
                    "hand-over",
                    line(
                        5,
                        &AppRequest::HandOver {
                            stream: StreamId(42),
                            watch: Some(skywire_dataplane::engine::WatchId(1)),
                        }
                        .to_line(),
                    ),
                ),
                ("watch", line(2, &AppRequest::Watch.to_line())),
                (
                    "ended",
                    line(
                        33,
                        b"{\"ended\":{\"stream\":42,\"sent\":10,\"received\":20,\"error\":\"reset\"}}\n",
                    ),
                ),
                ("unknown-op", line(7, b"{\"op\":\"teleport\",\"port\":7}\n")),
                ("ok-stream", line(9, &Reply::Ok(opened).to_line())),
                (
                    "ok-listening",
                    line(
                        9,
                        &Reply::Ok(Listening {
                            listener: ListenerId(3),
                            port: 7,
                        })
                        .to_line(),
                    ),
                ),
                ("incoming", line(127, &incoming.to_line())),
                (
                    "error-refused",
                    line(
                        128,
                        &error_line(ErrorKind::Refused, StreamError::Refused.to_string()),
                    ),
                ),
                (
                    "reset-reason",
                    line(255, format!("{route_gone}\n").as_bytes()),
                ),
            ],
        ),
        (
            "app_frames",
            vec![
                ("data-fin-reset", [&[3, 0, 4, 6][..], &hello_world].concat()),
                ("one-chunk", [&[0][..], &data(&big), &fin].concat()),
                (
                    "reset-utf8",
                    [&[1, 2][..], &appframe::reset("app_protocol: é ü ∞")].concat(),
                ),
                (
                    "cut-in-data",
                    [
                        &[2, 0, 1][..],
                        &appframe::header(Kind::Data, 70_000),
                        &big[..100],
                    ]
                    .concat(),
                ),
                (
                    "data-after-fin",
                    [&[1, 3][..], &data(b"x"), &fin, &data(b"y")].concat(),
                ),
            ],
        ),
    ]
}

/// Seeds for `socks_wire`: a chunk-size byte, then SOCKS5 messages made with the codec's
/// own encoders, and the text and foreign protocols the parsers must refuse.
fn socks_seeds() -> Vec<(&'static str, Seeds)> {
    let with = |chunk: u8, bytes: &[u8]| [&[chunk][..], bytes].concat();
    let name = |s: &str| Dest::Name(Name::new(s).expect("a SOCKS name"));
    let request = |command: SocksCommand, dest: Dest, port: u16| {
        let mut out = Vec::new();
        socks::encode_request(
            &SocksRequest {
                command,
                dest,
                port,
            },
            &mut out,
        );
        out
    };
    let connect = |dest: Dest, port: u16| request(SocksCommand::Connect, dest, port);
    let ip = |s: &str| Dest::Ip(s.parse().expect("an address"));
    let mut greeting = Vec::new();
    socks::encode_greeting(&Greeting { methods: &[0, 2] }, &mut greeting);
    let mut auth = Vec::new();
    socks::encode_auth(
        &Credentials {
            username: b"alice",
            password: b"secret",
        },
        &mut auth,
    );
    let mut reply_named = Vec::new();
    socks::encode_reply(
        &SocksReply {
            rep: Rep::Succeeded,
            bound: name("exit.example"),
            port: 1080,
        },
        &mut reply_named,
    );
    let mut datagram = Vec::new();
    socks::encode_udp_header(
        &UdpHeader {
            dest: ip("2001:db8::53"),
            port: 53,
        },
        &mut datagram,
    );
    datagram.extend_from_slice(b"\x12\x34\x01\x00");
    let mut fragment = datagram.clone();
    fragment[2] = 1;
    vec![(
        "socks_wire",
        vec![
            ("greeting", with(0, &greeting)),
            (
                "greeting-then-connect",
                with(
                    3,
                    &[greeting.clone(), connect(ip("192.0.2.7"), 443)].concat(),
                ),
            ),
            ("auth", with(1, &auth)),
            ("connect-ipv4", with(255, &connect(ip("192.0.2.7"), 443))),
            ("connect-ipv6", with(4, &connect(ip("2001:db8::1"), 443))),
            (
                "connect-mapped-loopback",
                with(7, &connect(ip("::ffff:127.0.0.1"), 80)),
            ),
            ("connect-nat64", with(0, &connect(ip("64:ff9b::a00:1"), 25))),
            ("connect-name", with(5, &connect(name("example.com"), 80))),
            (
                "connect-name-255",
                with(31, &connect(name(&"a".repeat(255)), 8080)),
            ),
            (
                "connect-numeric-name",
                with(2, &connect(name("0x7f000001"), 80)),
            ),
            (
                "connect-localhost",
                with(9, &connect(name("db.localhost"), 5432)),
            ),
            (
                "udp-associate",
                with(255, &request(SocksCommand::UdpAssociate, ip("0.0.0.0"), 0)),
            ),
            (
                "reply-refused",
                with(0, &socks::reply(Rep::ConnectionRefused)),
            ),
            ("reply-named", with(6, &reply_named)),
            ("udp-datagram", with(255, &datagram)),
            ("udp-fragment", with(255, &fragment)),
            (
                "http-get",
                with(3, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            ),
            ("socks4", with(0, &[4, 1, 0, 80, 127, 0, 0, 1, 0])),
            ("numeric-host", with(0, b"0177.0.0.1")),
            ("ipv6-literal", with(0, b"[::ffff:10.0.0.1]")),
        ],
    )]
}

/// Seeds for `vpn_lease`: a chunk-size byte, then lease protocol lines made with the
/// module's own encoders, and the lines it must refuse.
fn vpn_seeds() -> Vec<(&'static str, Seeds)> {
    let with = |chunk: u8, bytes: &[u8]| [&[chunk][..], bytes].concat();
    let request = vpn::encode_request;
    let granted = vpn::encode_reply(&VpnReply::Granted(LeaseReply {
        ipv4: "198.19.128.2".parse().expect("an address"),
        ipv6: Some("fd00:5b::2".parse().expect("an address")),
        dns: vec!["198.18.9.53".parse().expect("an address")],
        mtu: 1420,
    }));
    let v4_only = vpn::encode_reply(&VpnReply::Granted(LeaseReply {
        ipv4: "10.213.0.7".parse().expect("an address"),
        ipv6: None,
        dns: vec![],
        mtu: 1280,
    }));
    let error = |kind, message: &str| {
        vpn::encode_reply(&VpnReply::Error {
            kind,
            message: message.to_owned(),
        })
    };
    let errors = [
        error(VpnErrorKind::Forbidden, "key not among the exit's clients"),
        error(
            VpnErrorKind::Exhausted,
            "all 5 addresses of 10.0.0.0/29 are leased",
        ),
        error(
            VpnErrorKind::BadRequest,
            "lease protocol version 2 is not supported",
        ),
        error(VpnErrorKind::Unavailable, "the node is down"),
    ]
    .concat();
    let long_message = error(VpnErrorKind::Unavailable, &"\u{e9}\u{1}".repeat(600));
    let mut too_long = vec![b'{'; vpn::MAX_LINE + 10];
    too_long.push(b'\n');
    vec![
        (
            "vpn_lease",
            vec![
                ("lease", with(255, &request(VpnRequest::Lease))),
                (
                    "session",
                    with(
                        6,
                        &[
                            request(VpnRequest::Lease),
                            request(VpnRequest::Keepalive),
                            request(VpnRequest::Keepalive),
                            request(VpnRequest::Release),
                        ]
                        .concat(),
                    ),
                ),
                ("granted", with(255, &granted)),
                ("granted-ipv4-only", with(3, &v4_only)),
                ("errors", with(17, &errors)),
                ("long-message", with(255, &long_message)),
                (
                    "keepalive-reply",
                    with(0, &vpn::encode_reply(&VpnReply::Keepalive)),
                ),
                ("version-2", with(255, b"{\"v\":2,\"op\":\"lease\"}\n")),
                ("unknown-op", with(255, b"{\"v\":1,\"op\":\"steal\"}\n")),
                ("too-long", with(100, &too_long)),
                ("truncated", with(1, b"{\"v\":1,\"op\":\"lea")),
            ],
        ),
        (
            "vpn_state",
            vec![
                ("client", VPN_CLIENT_STATE.as_bytes().to_vec()),
                ("exit", VPN_EXIT_STATE.as_bytes().to_vec()),
                ("empty-object", b"{}".to_vec()),
            ],
        ),
    ]
}

/// A client's state file as `skywire vpn client` writes it while connected.
const VPN_CLIENT_STATE: &str = r#"{"pid":4242,"phase":"connected","since":1765000000,
"exit":"ee7b140895b3c79d67ef2057511b6a260265b868cae37419bce3b3c676ef6382","exit_port":44,
"control_socket":"/run/skywire/node.sock","tun":"sw0",
"lease":{"ipv4":"198.19.128.2","ipv6":"fd00:5b::2","dns":["198.18.9.53"],"mtu":1420},
"routes":[{"prefix":"0.0.0.0/0","kind":{"device":"sw0"},"table":29547,"source":"198.19.128.2"},
{"prefix":"::/0","kind":"blackhole","table":29547,"metric":4294967295}],
"rules":[{"ipv6":false,"priority":5190,"mark":1936392192,"mask":4294901760,"table":29547}],
"addresses":[{"dev":"sw0","prefix":"198.19.128.2/32"}],
"sysctls":{"recorded":[{"key":["net","ipv4","conf","all","src_valid_mark"],"original":"0"}]},
"dns":{"file":{"path":"/etc/resolv.conf","contents":"nameserver 198.18.1.1
"}},
"dns_servers":["198.18.9.53"],"lockdown":true,"lockdown_configured":false,"lan":[],
"table":true,"problem":null}"#;

/// An exit's state file with one lease.
const VPN_EXIT_STATE: &str = r#"{"pool":{"leases":[{"key":"ee7b140895b3c79d67ef2057511b6a260265b868cae37419bce3b3c676ef6382",
"ipv4":"198.19.128.2","ipv6":"fd00:5b::2"}],"free":["198.19.128.3"]},
"sysctls":{"recorded":[{"key":["net","ipv4","conf","x-wan","forwarding"],"original":"0"}]},
"routes":[{"prefix":"198.19.128.0/24","kind":{"device":"sw0"},"table":254}],"table":true,"tun":"sw0"}"#;

/// The config loader's seeds: the project's example `config.yaml` (every section, with its
/// comments), each of its top-level sections alone, an empty file, and the example as the
/// config's own writer writes it back.
fn config_seeds() -> Seeds {
    let example = include_str!("../../config.yaml");
    let mut seeds = vec![
        ("example", example.as_bytes().to_vec()),
        ("empty", Vec::new()),
    ];
    // Each top-level section of the example, alone (a section runs to the next line that
    // starts a key at column 0).
    let starts: Vec<usize> = example
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .filter(|&i| example[i..].starts_with(|c: char| c.is_ascii_lowercase()))
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(example.len());
        let section = &example[start..end];
        let name = match section.split(':').next() {
            Some("node") => "node",
            Some("manager") => "manager",
            Some("socks") => "socks",
            Some("vpn") => "vpn",
            Some("apps") => "apps",
            other => panic!("an unknown section in config.yaml: {other:?}"),
        };
        seeds.push((name, section.as_bytes().to_vec()));
    }
    let config = Config::parse(example, CONFIG_FILE).expect("the example loads");
    let written = ConfigFile {
        comment: "the example, written back".into(),
        node: Some(NodeSection::from(&config.node)),
        manager: Some(ManagerSection::from(&config.manager)),
        socks: Some(config.socks.clone()),
        vpn: Some(config.vpn.clone()),
    }
    .to_yaml()
    .expect("the example writes back");
    seeds.push(("example-written", written.into_bytes()));
    seeds
}

/// The node core's seeds (`node_datagram`, all from `skywire_fuzz::node::FROM`): a genuine
/// initiation on the route end's id, a transport packet and a response on it (no session
/// yet), a packet for the relay rule and one for the rule of another previous hop, a link
/// probe and a reply made with the link key of the fixed keys, and a datagram too short for
/// a header.
fn node_seeds(init: &[u8], response: &[u8], data: &[u8], probes: &Seeds) -> Seeds {
    let with_id = |packet: &[u8], id: u32| {
        let mut p = packet.to_vec();
        p[4..8].copy_from_slice(&id.to_be_bytes());
        p
    };
    let mut seeds = vec![
        ("init", init.to_vec()),
        ("response", response.to_vec()),
        ("data-no-session", data.to_vec()),
        ("relay", with_id(data, RELAY_IN.get())),
        ("relay-wrong-previous-hop", with_id(data, OTHER_IN.get())),
        ("short", vec![4, 0, 0]),
    ];
    seeds.extend(probes.iter().cloned());
    seeds
}

fn main() {
    let (init, response) = handshake();
    let transport = transport_packets();
    let with_from = |from: u8, packet: &[u8]| [&[from][..], packet].concat();
    let mut routed = transport[0].1.clone();
    routed[4..8].copy_from_slice(&FORWARD_ID.to_be_bytes());
    let mut delivered = init.to_vec();
    delivered[4..8].copy_from_slice(&DELIVER_ID.to_be_bytes());
    let near = |n: i16| R::AcceptNear(n);

    let targets: Vec<(&str, Seeds)> = vec![
        (
            "route_header",
            vec![
                ("data", transport[0].1.clone()),
                ("keepalive", transport[2].1.clone()),
                ("init", init.to_vec()),
                ("response", response.to_vec()),
            ],
        ),
        ("transport", transport.clone()),
        ("handshake_init", vec![("init", init.to_vec())]),
        ("handshake_response", vec![("response", response.to_vec())]),
        ("noise_read_init", vec![("init", init.to_vec())]),
        ("noise_read_response", vec![("response", response.to_vec())]),
        ("cipher_open", transport.clone()),
        (
            "replay_window",
            vec![
                ("in-order", replay::encode(&[near(0); 16])),
                (
                    "reordered",
                    replay::encode(&[near(5), near(-3), near(-1), near(-6), near(-2), near(-4)]),
                ),
                (
                    "duplicates",
                    replay::encode(&[near(0), near(-1), near(3), near(-1), R::CheckNear(-2)]),
                ),
                (
                    "window-edge",
                    replay::encode(&[
                        R::AcceptAt(10_000),
                        R::AcceptAt(10_000 - 8127),
                        R::CheckAt(10_000 - 8128),
                        R::AcceptAt(10_000 - 8128),
                        near(64),
                        near(-8128),
                    ]),
                ),
                (
                    "huge-jumps",
                    replay::encode(&[
                        R::AcceptAt(1 << 40),
                        R::AcceptAt(u64::MAX - 1),
                        R::CheckAt(u64::MAX),
                        R::AcceptAt(u64::MAX),
                        near(-1),
                    ]),
                ),
            ],
        ),
        (
            "route_forward",
            vec![
                ("forward", with_from(0, &routed)),
                ("deliver", with_from(1, &delivered)),
                ("wrong-previous-hop", with_from(2, &routed)),
                ("unknown-route", with_from(0, &transport[0].1)),
            ],
        ),
        ("session_decapsulate", session_scripts(&init)),
        ("ip_destination", ip_packets()),
        (
            "text_parsers",
            vec![
                ("prefix-v4", b"10.77.0.1/24".to_vec()),
                ("prefix-v6", b"fd77::/64".to_vec()),
                (
                    "public-key",
                    initiator_keys().local_public().to_string().into_bytes(),
                ),
                (
                    "private-key-file",
                    PrivateKey::from_bytes(INITIATOR_SECRET)
                        .to_key_file_text()
                        .into_bytes(),
                ),
            ],
        ),
    ];

    let probes = control_seeds()
        .into_iter()
        .find(|(target, _)| *target == "link_probe")
        .map(|(_, seeds)| seeds)
        .expect("link_probe seeds");
    let more = vec![
        ("config_parse", config_seeds()),
        (
            "node_datagram",
            node_seeds(&init, &response, &transport[0].1, &probes),
        ),
    ];

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in targets
        .into_iter()
        .chain(control_seeds())
        .chain(stack_seeds())
        .chain(app_seeds())
        .chain(socks_seeds())
        .chain(vpn_seeds())
        .chain(more)
    {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        for entry in fs::read_dir(&dir).expect("read corpus dir") {
            let path = entry.expect("dir entry").path();
            let stale = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"));
            if stale {
                fs::remove_file(&path).expect("remove old seed");
            }
        }
        for (name, bytes) in seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        }
        println!("{target}: written");
    }
}
