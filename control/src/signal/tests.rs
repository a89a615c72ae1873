//! The server and the client library over real loopback sockets, and each of them against
//! a peer that does not know the app's secret.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::auth::{self, AuthError, Nonce, Refusal, Secret};
use super::client::{self, ClientConfig, ClientHandle};
use super::frame::{Decoder, Frame, op};
use super::server::{Refused, SignalError, SignalHandle, SignalServer};

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn server() -> (SignalHandle, SocketAddr) {
    let server = SignalServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    (server.spawn().unwrap(), addr)
}

fn config(id: u64, server: impl ToString, secret: &Secret) -> ClientConfig {
    ClientConfig {
        enabled: true,
        id,
        server: server.to_string(),
        secret: Some(secret.clone()),
    }
}

/// A client whose shutdowns and warnings are collected.
struct Recorded {
    client: ClientHandle,
    shutdowns: mpsc::Receiver<()>,
    warnings: Arc<Mutex<Vec<AuthError>>>,
}

fn recorded(config: ClientConfig) -> Recorded {
    let (tx, shutdowns) = mpsc::channel();
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = Arc::clone(&warnings);
    let client = client::spawn(
        config,
        Box::new(move || {
            let _ = tx.send(());
        }),
        Box::new(move |e| w.lock().unwrap().push(e.clone())),
    )
    .unwrap();
    Recorded {
        client,
        shutdowns,
        warnings,
    }
}

/// One end of a raw connection, frames in and out.
struct Peer {
    stream: TcpStream,
    decoder: Decoder,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            stream,
            decoder: Decoder::new(),
        }
    }

    fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&frame.encode().unwrap()).unwrap();
    }

    /// The next frame, `None` once the other end closed.
    fn recv(&mut self) -> Option<Frame> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(frame);
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.push(&buf[..n]),
            }
        }
    }
}

#[test]
fn the_rust_client_registers_answers_and_shuts_down() {
    let (handle, addr) = server();
    let secret = Secret::generate().unwrap();
    handle.expect(42, secret.clone());
    let client = recorded(config(42, addr, &secret));
    wait_until("registration", || {
        handle.is_registered(42) && client.client.is_registered()
    });
    let timeout = Duration::from_secs(5);
    assert_eq!(
        handle.request(42, op::PING, Value::Null, timeout).unwrap(),
        Value::Null
    );
    // Many outstanding requests at once, from several threads.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let h = handle.clone();
            thread::spawn(move || h.request(42, op::TOP, Value::Null, timeout).unwrap())
        })
        .collect();
    for t in threads {
        let top = t.join().unwrap();
        assert_eq!(top["Pid"], json!(std::process::id()));
        assert!(top["RssBytes"].as_u64().unwrap() > 0);
    }
    let reply = handle
        .request(42, op::SHUTDOWN, Value::Null, timeout)
        .unwrap();
    assert_eq!(reply, json!({"Pid": std::process::id()}));
    client.shutdowns.recv_timeout(timeout).unwrap();
    assert!(matches!(
        handle.request(7, op::PING, Value::Null, timeout),
        Err(SignalError::NotRegistered(7))
    ));
    assert!(client.warnings.lock().unwrap().is_empty());
    assert_eq!(handle.take_refusals(), (Vec::new(), 0));
    client.client.stop();
    wait_until("unregistration", || !handle.is_registered(42));
    handle.stop();
}

#[test]
fn the_client_reconnects_when_the_server_comes_back() {
    // Find a free port, start the client first, then the server on that port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = Secret::generate().unwrap();
    let client = recorded(config(5, format!("127.0.0.1:{port}"), &secret));
    thread::sleep(Duration::from_millis(300));
    assert!(!client.client.is_registered());
    let handle = SignalServer::bind(("127.0.0.1", port))
        .unwrap()
        .spawn()
        .unwrap();
    handle.expect(5, secret.clone());
    wait_until("registration", || handle.is_registered(5));
    handle.stop();
    wait_until("the client to notice", || !client.client.is_registered());
    // The stopped server's accept thread lets go of the port within its poll interval.
    let rebind = || loop {
        match SignalServer::bind(("127.0.0.1", port)) {
            Ok(server) => return server.spawn().unwrap(),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    };
    let handle = rebind();
    handle.expect(5, secret);
    wait_until("registration again", || handle.is_registered(5));
    client.client.stop();
    handle.stop();
}

#[test]
fn garbage_closes_only_that_connection() {
    let (handle, addr) = server();
    let secret = Secret::generate().unwrap();
    handle.expect(1, secret.clone());
    let client = recorded(config(1, addr, &secret));
    wait_until("registration", || handle.is_registered(1));
    for garbage in [&[0xffu8, 0xff, 0xff, 0xff][..], &[0, 0, 0, 10, 9, 0, 0, 0]] {
        let mut bad = Peer::new(TcpStream::connect(addr).unwrap());
        bad.stream.write_all(garbage).unwrap();
        // The server's Hello, then it closes: end of stream or a reset.
        assert_eq!(bad.recv().map(|f| f.op), Some(op::HELLO));
        assert_eq!(bad.recv(), None);
    }
    assert_eq!(
        handle
            .request(1, op::PING, Value::Null, Duration::from_secs(5))
            .unwrap(),
        Value::Null
    );
    client.client.stop();
    handle.stop();
}

/// Makes a registration from the server's nonce.
type MakeRegistration<'a> = dyn FnOnce(&Nonce) -> Frame + 'a;

/// Connect to the server, take its Hello and send `registration(nonce)`; the answer.
fn register_raw(addr: SocketAddr, registration: impl FnOnce(&Nonce) -> Frame) -> Option<Frame> {
    let mut peer = Peer::new(TcpStream::connect(addr).unwrap());
    let hello = peer.recv().unwrap();
    assert_eq!((hello.op, hello.request), (op::HELLO, 0));
    peer.send(&registration(&auth::hello_nonce(&hello).unwrap()));
    let answer = peer.recv();
    assert_eq!(
        peer.recv(),
        None,
        "the connection stays open after {answer:?}"
    );
    answer
}

#[test]
fn registrations_without_the_secret_are_refused_and_recorded() {
    let (handle, addr) = server();
    let secret = Secret::generate().unwrap();
    handle.expect(1, secret.clone());
    let client = recorded(config(1, addr, &secret));
    wait_until("registration", || handle.is_registered(1));

    let wrong = Secret::generate().unwrap();
    let client_nonce = Nonce([7; 32]);
    let attempts: [(Box<MakeRegistration<'_>>, Refusal); 3] = [
        // The original protocol: an id, nothing else.
        (
            Box::new(|_| Frame::request(op::REG, 1, json!({"Id": 1}))),
            Refusal::NoProof(1),
        ),
        // A proof made with another secret.
        (
            Box::new(|ns| {
                let proof = auth::proof(&wrong, auth::CLIENT_LABEL, 1, ns, &client_nonce);
                Frame::request(
                    op::REG,
                    1,
                    json!({"Id": 1, "Nonce": client_nonce.to_hex(), "Proof": proof.to_hex()}),
                )
            }),
            Refusal::WrongProof(1),
        ),
        // An id nobody expects.
        (
            Box::new(|_| Frame::request(op::REG, 1, json!({"Id": 9}))),
            Refusal::UnknownId(9),
        ),
    ];
    for (attempt, refusal) in attempts {
        let answer = register_raw(addr, attempt).unwrap();
        assert_eq!(answer.op, op::REG | 0x80);
        assert_eq!(answer.body, json!({"Error": refusal.to_string()}));
    }
    let (refused, dropped) = handle.take_refusals();
    let reasons: Vec<Refusal> = refused.iter().map(|r: &Refused| r.refusal).collect();
    assert_eq!(
        reasons,
        [
            Refusal::NoProof(1),
            Refusal::WrongProof(1),
            Refusal::UnknownId(9)
        ]
    );
    assert!(
        refused
            .iter()
            .all(|r| r.peer.is_some_and(|p| p.ip().is_loopback()))
    );
    assert_eq!(dropped, 0);

    // The real client kept its registration throughout.
    assert!(client.client.is_registered());
    let top = handle
        .request(1, op::TOP, Value::Null, Duration::from_secs(5))
        .unwrap();
    assert_eq!(top["Pid"], json!(std::process::id()));

    // Once the app is gone its secret is, too: the same proof no longer registers.
    client.client.stop();
    handle.revoke(1);
    let answer = register_raw(addr, |ns| {
        let proof = auth::proof(&secret, auth::CLIENT_LABEL, 1, ns, &client_nonce);
        Frame::request(
            op::REG,
            1,
            json!({"Id": 1, "Nonce": client_nonce.to_hex(), "Proof": proof.to_hex()}),
        )
    });
    assert_eq!(
        answer.unwrap().body["Error"],
        Refusal::UnknownId(1).to_string()
    );
    handle.stop();
}

#[test]
fn a_client_obeys_no_server_that_does_not_know_its_secret() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let secret = Secret::generate().unwrap();
    let client = recorded(config(3, addr, &secret));

    // The original server: echo the registration (here none comes: no Hello), shut down.
    let mut fake = Peer::new(listener.accept().unwrap().0);
    fake.send(&Frame::request(op::SHUTDOWN, 7, Value::Null));
    assert_eq!(fake.recv(), None, "the client answered");

    // A server that says Hello but cannot prove the secret.
    let mut fake = Peer::new(listener.accept().unwrap().0);
    fake.send(&auth::hello(&Nonce([1; 32])));
    let reg = fake.recv().unwrap();
    assert_eq!((reg.op, reg.body["Id"].as_u64()), (op::REG, Some(3)));
    fake.send(&reg.reply(json!({"Id": 3, "Proof": "00".repeat(32)})));
    fake.send(&Frame::request(op::SHUTDOWN, 8, Value::Null));
    assert_eq!(fake.recv(), None, "the client answered");

    // A genuine exchange, recorded (this test knows the secret), then replayed.
    let mut real = Peer::new(listener.accept().unwrap().0);
    let nonce = Nonce([2; 32]);
    real.send(&auth::hello(&nonce));
    let reg = real.recv().unwrap();
    let accepted = auth::check_registration(&nonce, &reg, |_| Some(secret.clone())).unwrap();
    real.send(&accepted.echo);
    real.send(&Frame::request(op::PING, 9, Value::Null));
    assert_eq!(real.recv().map(|f| f.op), Some(op::PING | 0x80));
    drop(real);
    let mut replay = Peer::new(listener.accept().unwrap().0);
    replay.send(&auth::hello(&nonce));
    let fresh = replay.recv().unwrap();
    assert_ne!(fresh.body["Nonce"], reg.body["Nonce"]);
    replay.send(&accepted.echo);
    replay.send(&Frame::request(op::SHUTDOWN, 10, Value::Null));
    assert_eq!(replay.recv(), None, "the client answered a replay");

    assert!(client.shutdowns.try_recv().is_err(), "the client shut down");
    // One warning per new failure, none repeated, none for the genuine server.
    assert_eq!(
        *client.warnings.lock().unwrap(),
        [
            AuthError::NoHello,
            AuthError::WrongServerProof,
            AuthError::WrongServerProof
        ]
    );
    client.client.stop();
}

#[test]
fn a_client_without_a_secret_does_not_start() {
    let config = ClientConfig {
        enabled: true,
        ..ClientConfig::default()
    };
    let error = client::spawn(config, Box::new(|| {}), Box::new(|_| {})).unwrap_err();
    assert!(matches!(error, client::SpawnError::NoSecret), "{error}");
}
