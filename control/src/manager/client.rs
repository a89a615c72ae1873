//! The node's manager client: the I/O around [`Agent`], on one thread.
//!
//! It connects to the manager (backoff from 100 ms to 2 s between attempts, so a restarted
//! manager is found again within about 2 s), checks the manager's key proof and proves the
//! node's, then feeds the agent frames, engine events and the time, and answers the local
//! user's requests (`skywire route`, `nodes`, `link`, `ping`) that the control socket
//! passes on. Pings go over the route's session and need no manager: a node without
//! `node.manager` runs this thread too, only never connects.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};
use serde_json::Value;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::engine::{EngineEvent, EngineHandle, Origin, RuleChange};

use super::agent::{Agent, AgentParams, Dataplane};
use super::core::Rng;
use super::proto::{
    self, Auth, AuthOk, Bytes32, Decoder, ErrorKind, Frame, Hello, Key, Mac, ProtoError, kind,
};

/// How long the manager has to answer the connection's first frames.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait between connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How a ping that got no pong is reported (distinct from a refused ping).
pub const NO_REPLY: &str = "no reply";

/// How long a user request waits for the manager (a route setup included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the manager is and who it must be.
#[derive(Debug, Clone, Copy)]
pub struct ManagerAddress {
    /// Its TCP address.
    pub address: SocketAddr,
    /// Its static public key.
    pub key: PublicKey,
}

/// A round trip over a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReply {
    /// The route end's name.
    pub route: String,
    /// Its incoming id.
    pub in_id: u32,
    /// The round trip.
    pub rtt: Duration,
    /// The manager's route id, if the route came from the manager.
    pub manager_route: Option<u64>,
}

enum Request {
    Manager {
        kind: u8,
        body: Value,
        reply: Sender<Result<Value, ProtoError>>,
    },
    Ping {
        peer: PublicKey,
        reply: Sender<Result<PingReply, String>>,
    },
    Stop,
}

/// The control socket's handle on the client thread.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    requests: Sender<Request>,
    manager: Option<SocketAddr>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Manager { kind, .. } => write!(f, "Manager({kind:#04x})"),
            Self::Ping { peer, .. } => write!(f, "Ping({peer})"),
            Self::Stop => write!(f, "Stop"),
        }
    }
}

impl AgentHandle {
    /// The manager's address, if the node has one.
    pub fn manager(&self) -> Option<SocketAddr> {
        self.manager
    }

    /// Send a request of `kind` to the manager and wait for its answer.
    pub fn manager_request(&self, kind: u8, body: Value) -> Result<Value, ProtoError> {
        let (reply, answer) = bounded(1);
        self.requests
            .send(Request::Manager { kind, body, reply })
            .map_err(|_| ProtoError::new(ErrorKind::Unavailable, "the node is stopping"))?;
        answer.recv_timeout(REQUEST_TIMEOUT).map_err(|_| {
            ProtoError::new(ErrorKind::Timeout, "the manager did not answer in time")
        })?
    }

    /// One round trip over the route to `peer`.
    pub fn ping(&self, peer: PublicKey, timeout: Duration) -> Result<PingReply, String> {
        let (reply, answer) = bounded(1);
        self.requests
            .send(Request::Ping { peer, reply })
            .map_err(|_| "the node is stopping".to_owned())?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| format!("{NO_REPLY} within {} ms", timeout.as_millis()))?
    }

    /// Stop the client thread.
    pub fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
    }
}

struct Engine<'a>(&'a EngineHandle);

impl Dataplane for Engine<'_> {
    fn apply(&mut self, changes: Vec<RuleChange>) -> Result<(), String> {
        match self.0.apply(changes, Duration::from_secs(2)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn probe(&mut self, to: SocketAddr, nonce: u64) {
        let _ = self.0.probe(to, nonce);
    }
}

struct Connection {
    writer: TcpStream,
    mac: Mac,
    frames: Receiver<Result<Frame, String>>,
}

/// Start the client thread. With `manager` `None` it serves pings only.
pub fn start(
    engine: EngineHandle,
    key: PrivateKey,
    manager: Option<ManagerAddress>,
    params: AgentParams,
) -> io::Result<(AgentHandle, JoinHandle<()>)> {
    let (requests, inbox) = unbounded();
    let handle = AgentHandle {
        requests,
        manager: manager.map(|m| m.address),
    };
    let thread = std::thread::Builder::new()
        .name("skywire-manager-client".into())
        .spawn(move || run(&engine, &key, manager, params, &inbox))?;
    Ok((handle, thread))
}

fn log(line: &str) {
    eprintln!("skywire: manager client: {line}");
}

struct PendingPing {
    reply: Sender<Result<PingReply, String>>,
    route: String,
    in_id: u32,
    manager_route: Option<u64>,
    deadline: Instant,
}

#[allow(clippy::too_many_lines)]
fn run(
    engine: &EngineHandle,
    key: &PrivateKey,
    manager: Option<ManagerAddress>,
    params: AgentParams,
    inbox: &Receiver<Request>,
) {
    let mut agent = Agent::new(params, Rng::system());
    let events = engine.events();
    let mut conn: Option<Connection> = None;
    let mut connecting: Option<Receiver<Result<Connection, String>>> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_attempt = Instant::now();
    let mut tokens: HashMap<u64, Sender<Result<Value, ProtoError>>> = HashMap::new();
    let mut next_token = 1u64;
    let mut pings: HashMap<u64, PendingPing> = HashMap::new();
    let mut last_error = String::new();
    let never: Receiver<Result<Frame, String>> = crossbeam_channel::never();
    let never_conn: Receiver<Result<Connection, String>> = crossbeam_channel::never();
    loop {
        let now = Instant::now();
        if let Some(m) = manager
            && conn.is_none()
            && connecting.is_none()
            && now >= next_attempt
        {
            let (tx, rx) = bounded(1);
            let key = key.clone();
            let spawned = std::thread::Builder::new()
                .name("skywire-manager-connect".into())
                .spawn(move || {
                    let _ = tx.send(connect(m, &key));
                });
            if spawned.is_ok() {
                connecting = Some(rx);
            }
        }
        let deadline = [
            agent.next_deadline(),
            pings.values().map(|p| p.deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(Duration::from_millis(200), |d| {
            d.saturating_duration_since(now)
        })
        .min(Duration::from_millis(200));
        let frames = conn.as_ref().map_or(&never, |c| &c.frames);
        let connects = connecting.as_ref().unwrap_or(&never_conn);
        let mut lost: Option<String> = None;
        select! {
            recv(inbox) -> request => match request {
                Ok(Request::Manager { kind, body, reply }) => {
                    let token = next_token;
                    next_token += 1;
                    tokens.insert(token, reply);
                    agent.user_request(token, kind, body);
                }
                Ok(Request::Ping { peer, reply }) => {
                    start_ping(engine, peer, reply, &mut pings, &mut agent);
                }
                Ok(Request::Stop) | Err(_) => break,
            },
            recv(frames) -> frame => match frame {
                Ok(Ok(frame)) => agent.frame(frame, Instant::now(), &mut Engine(engine)),
                Ok(Err(e)) => lost = Some(e),
                Err(_) => lost = Some("reader stopped".to_owned()),
            },
            recv(events) -> event => match event {
                Ok(EngineEvent::Expired { in_id, .. }) => agent.expired(in_id.get()),
                Ok(EngineEvent::ProbeReply { from, nonce, rtt }) => agent.probe_reply(from, nonce, rtt),
                Ok(EngineEvent::Pong { nonce, rtt, .. }) => {
                    if let Some(p) = pings.remove(&nonce) {
                        let _ = p.reply.send(Ok(PingReply {
                            route: p.route,
                            in_id: p.in_id,
                            rtt,
                            manager_route: p.manager_route,
                        }));
                    }
                }
                Err(_) => break,
            },
            recv(connects) -> result => {
                connecting = None;
                match result {
                    Ok(Ok(c)) => {
                        log(&format!("connected to the manager at {}", c.writer.peer_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string())));
                        conn = Some(c);
                        backoff = Duration::from_millis(100);
                        last_error.clear();
                        agent.connected(Instant::now());
                    }
                    Ok(Err(e)) => {
                        if e != last_error {
                            log(&format!("cannot reach the manager: {e} (retrying)"));
                            last_error = e;
                        }
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(_) => {}
                }
            },
            default(deadline) => {},
        }
        let now = Instant::now();
        agent.tick(now, &mut Engine(engine));
        if conn.is_some()
            && lost.is_none()
            && let Some(reason) = agent.stale(now)
        {
            lost = Some(reason);
        }
        pings.retain(|_, p| {
            if p.deadline <= now {
                let _ = p.reply.send(Err(NO_REPLY.to_owned()));
                false
            } else {
                true
            }
        });
        let frames = agent.drain();
        if let Some(c) = conn.as_mut() {
            for frame in frames {
                let sent = proto::encode(&frame, Some(&mut c.mac))
                    .map_err(|e| e.to_string())
                    .and_then(|b| c.writer.write_all(&b).map_err(|e| e.to_string()));
                if let Err(e) = sent {
                    lost = Some(e);
                    break;
                }
            }
        }
        if let Some(reason) = lost {
            if let Some(c) = conn.take() {
                let _ = c.writer.shutdown(Shutdown::Both);
                log(&format!(
                    "lost the manager connection: {reason} (reconnecting)"
                ));
            }
            agent.disconnected();
            next_attempt = Instant::now() + backoff;
        }
        for done in agent.completions() {
            if let Some(reply) = tokens.remove(&done.token) {
                let _ = reply.send(done.result);
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.writer.shutdown(Shutdown::Both);
    }
}

fn start_ping(
    engine: &EngineHandle,
    peer: PublicKey,
    reply: Sender<Result<PingReply, String>>,
    pings: &mut HashMap<u64, PendingPing>,
    agent: &mut Agent,
) {
    let status = match engine.status(Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
    };
    // The newest manager route to the peer, else a configured one.
    let Some(end) = status
        .routes
        .iter()
        .filter(|r| r.peer == peer)
        .max_by_key(|r| matches!(r.origin, Origin::Manager { .. }))
    else {
        let _ = reply.send(Err(format!(
            "no route to {peer}{}",
            if agent.is_registered() {
                "; add one with `skywire route add`"
            } else {
                ""
            }
        )));
        return;
    };
    let mut nonce = [0u8; 8];
    let _ = skywire_dataplane::crypto::keys::fill_random(&mut nonce);
    let nonce = u64::from_le_bytes(nonce);
    let manager_route = match end.origin {
        Origin::Manager { route, .. } => Some(route),
        Origin::Config => None,
    };
    match engine.ping(end.in_id, nonce) {
        Ok(Ok(())) => {
            pings.insert(
                nonce,
                PendingPing {
                    reply,
                    route: end.name.clone(),
                    in_id: end.in_id.get(),
                    manager_route,
                    deadline: Instant::now() + Duration::from_secs(5),
                },
            );
        }
        Ok(Err(e)) => {
            let _ = reply.send(Err(e.to_string()));
        }
        Err(e) => {
            let _ = reply.send(Err(e.to_string()));
        }
    }
}

/// Connect, check the manager's proof, prove the node's key, and start a reader thread.
fn connect(manager: ManagerAddress, key: &PrivateKey) -> Result<Connection, String> {
    let mut stream =
        TcpStream::connect_timeout(&manager.address, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    let mut decoder = Decoder::with_limit(proto::MAX_AUTH_FRAME);
    let hello = proto::read_frame(&mut stream, &mut decoder, None, deadline)?;
    if hello.kind != kind::HELLO {
        return Err("the server did not say HELLO: is this a skywire manager?".to_owned());
    }
    let hello: Hello = hello.parse().map_err(|e| e.to_string())?;
    if hello.version != proto::VERSION {
        return Err(format!(
            "manager speaks version {}, we speak {}",
            hello.version,
            proto::VERSION
        ));
    }
    if hello.manager.0 != manager.key {
        return Err(format!(
            "the manager's key is {}, not the configured {}",
            hello.manager.0, manager.key
        ));
    }
    let nonce = Bytes32::random().map_err(|_| "no randomness".to_owned())?;
    let node = key.public_key();
    let keys = proto::session_keys(key, &manager.key, &manager.key, &node, &hello.nonce, &nonce)
        .ok_or_else(|| "unusable manager key".to_owned())?;
    let auth = Auth {
        node: Key(node),
        nonce,
        proof: keys.node_proof,
    };
    let bytes =
        proto::encode(&Frame::request(kind::AUTH, 1, &auth), None).map_err(|e| e.to_string())?;
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    let reply = proto::read_frame(&mut stream, &mut decoder, None, deadline)?;
    let ok: AuthOk = reply
        .reply()
        .map_err(|e| format!("the manager refused us: {e}"))?;
    if !proto::proof_matches(&ok.proof, &keys.manager_proof) {
        return Err("the manager's proof is wrong: not the configured manager".to_owned());
    }
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    decoder.set_limit(proto::MAX_FRAME);
    let writer = stream.try_clone().map_err(|e| e.to_string())?;
    let (tx, frames) = unbounded();
    let mut mac = keys.manager_to_node;
    std::thread::Builder::new()
        .name("skywire-manager-reader".into())
        .spawn(move || {
            loop {
                let result = proto::read_frame(&mut stream, &mut decoder, Some(&mut mac), None);
                let end = result.is_err();
                if tx.send(result).is_err() || end {
                    break;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(Connection {
        writer,
        mac: keys.node_to_manager,
        frames,
    })
}
