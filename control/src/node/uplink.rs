//! The node's uplink to its manager: the I/O around [`Agent`], on one thread.
//!
//! It connects to the manager (when, and what it says about it, is [`Reconnect`]'s: 100 ms
//! to 2 s between attempts after transient failures, 10 s to 5 min after refusals), checks
//! the manager's key proof and proves the node's, then feeds the agent frames, engine
//! events and the time, and answers the local user's requests (`skywire route`, `nodes`,
//! `link`, `ping`) that the control socket passes on. While the node is not registered,
//! a request to the manager is answered at once with the connection's real state
//! ([`Reconnect::unavailable`]); [`UplinkHandle::manager_link`] is what `status` shows. Pings go over the route's session and need no manager: a node without
//! `node.manager` runs this thread too, only never connects.
//!
//! Stopping ([`UplinkHandle::stop`]) never waits for the manager: the thread is woken
//! through its request channel, and the manager connection is shut down from the
//! stopping thread, so a write blocked on a manager that stopped reading fails at once.
//! Connection attempts run on threads of their own that nobody joins.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};
use log::Level;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::engine::{self, EngineEvent, EngineGone, EngineHandle, Origin, RuleChange};
use skywire_dataplane::sys::socket;

use super::agent::{Agent, AgentParams, ApplyFailure, Dataplane, Stale, UserReply, UserRequest};
use super::reconnect::{Failure, ManagerLink, Reconnect};
use super::state::{Owned, PeerRecord, StateFile};
use super::usage;

/// How often the engine's memory of peers is copied to the state file.
const PEERS_EVERY: Duration = Duration::from_secs(3);
use crate::manager::core::Rng;
use crate::manager::proto::{
    self, Auth, AuthOk, Bytes32, ConnectionEnd, Decoder, ErrorKind, Frame, Hello, Key, Mac,
    MeshRouteId, ProtoError, kind,
};

/// How long the manager has to answer the connection's first frames.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a user request waits for the manager (a route setup included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the manager is and who it must be.
#[derive(Debug, Clone, Copy)]
pub struct ManagerAddress {
    /// Its TCP address.
    pub address: SocketAddr,
    /// Its static public key.
    pub key: PublicKey,
    /// The firewall mark of the connection (the node's `node.fwmark`), set before its SYN
    /// so that a VPN client's policy routing lets it bypass the tunnel.
    pub mark: Option<u32>,
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
    pub manager_route: Option<MeshRouteId>,
}

/// Why a ping got no pong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// The node has no route to the peer.
    #[error("no route to {peer}{}", if *.registered { "; add one with `skywire route add`" } else { "" })]
    NoRoute {
        /// The peer asked for.
        peer: PublicKey,
        /// Whether the node is registered with a manager (which could add one).
        registered: bool,
    },
    /// The ping went out and no pong came back in time.
    #[error("no reply within {} ms", .timeout.as_millis())]
    NoReply {
        /// How long the pong was waited for.
        timeout: Duration,
    },
    /// The engine refused to send it.
    #[error(transparent)]
    Refused(#[from] engine::PingError),
    /// The engine is gone or did not answer.
    #[error(transparent)]
    Engine(#[from] EngineGone),
    /// The node is stopping.
    #[error("the node is stopping")]
    Stopping,
    /// What was asked cannot ping at all (an engine without an uplink, in tests).
    #[error("this node cannot ping")]
    Unsupported,
}

enum Request {
    Manager {
        request: UserRequest,
        reply: Sender<Result<UserReply, ProtoError>>,
    },
    Ping {
        peer: PublicKey,
        reply: Sender<Result<PingReply, PingError>>,
    },
    Stop,
}

/// The node's handle on the uplink thread: requests for the manager, and pings.
#[derive(Debug, Clone)]
pub struct UplinkHandle {
    requests: Sender<Request>,
    manager: Option<SocketAddr>,
    /// A clone of the manager connection while there is one, to shut it down on stop.
    closer: Closer,
    /// The connection's state, kept by the uplink thread.
    link: Option<Arc<Mutex<Reconnect>>>,
}

/// The manager connection's clone, shared by the uplink thread and its handles. Once shut
/// down it stays so: a connection made after the stop is shut down as it is set.
#[derive(Debug, Clone, Default)]
struct Closer(Arc<Mutex<Closing>>);

#[derive(Debug, Default)]
struct Closing {
    stream: Option<TcpStream>,
    stopped: bool,
}

impl Closer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Closing> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, stream: Option<TcpStream>) {
        let mut closing = self.lock();
        if closing.stopped
            && let Some(stream) = &stream
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        closing.stream = stream;
    }

    fn shut_down(&self) {
        let mut closing = self.lock();
        closing.stopped = true;
        if let Some(stream) = closing.stream.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Manager { request, .. } => write!(f, "Manager({request:?})"),
            Self::Ping { peer, .. } => write!(f, "Ping({peer})"),
            Self::Stop => write!(f, "Stop"),
        }
    }
}

impl UplinkHandle {
    /// The manager's address, if the node has one.
    pub fn manager(&self) -> Option<SocketAddr> {
        self.manager
    }

    /// The manager connection as `skywire status` shows it, if the node has a manager.
    pub fn manager_link(&self) -> Option<ManagerLink> {
        let link = self.link.as_ref()?;
        let link = link.lock().unwrap_or_else(PoisonError::into_inner);
        Some(link.view(Instant::now()))
    }

    /// Send `request` to the manager and wait for its answer.
    pub fn manager_request(&self, request: UserRequest) -> Result<UserReply, ProtoError> {
        let (reply, answer) = bounded(1);
        self.requests
            .send(Request::Manager { request, reply })
            .map_err(|_| ProtoError::new(ErrorKind::Unavailable, "the node is stopping"))?;
        answer.recv_timeout(REQUEST_TIMEOUT).map_err(|_| {
            ProtoError::new(ErrorKind::Timeout, "the manager did not answer in time")
        })?
    }

    /// One round trip over the route to `peer`.
    pub fn ping(&self, peer: PublicKey, timeout: Duration) -> Result<PingReply, PingError> {
        let (reply, answer) = bounded(1);
        self.requests
            .send(Request::Ping { peer, reply })
            .map_err(|_| PingError::Stopping)?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| PingError::NoReply { timeout })?
    }

    /// Stop the uplink thread: it sees the request at once, or, if it is blocked writing
    /// to the manager, its write fails at once because the connection is shut down here.
    pub fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
        self.closer.shut_down();
    }
}

struct Engine<'a>(&'a EngineHandle);

impl Dataplane for Engine<'_> {
    fn apply(&mut self, changes: Vec<RuleChange>) -> Result<(), ApplyFailure> {
        Ok(self.0.apply(changes, Duration::from_secs(2))??)
    }

    fn probe(&mut self, to: SocketAddr, nonce: u64) {
        let _ = self.0.probe(to, nonce);
    }

    fn set_neighbours(&mut self, neighbours: &[(SocketAddr, PublicKey)]) {
        let _ = self.0.set_neighbours(neighbours.to_vec());
    }
}

struct Connection {
    writer: TcpStream,
    mac: Mac,
    frames: Receiver<Result<Frame, ConnectionEnd>>,
}

/// Why the node could not open a connection to its manager.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection or the exchange on it failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The connection ended during the key proof.
    #[error(transparent)]
    Ended(#[from] ConnectionEnd),
    /// The first frame was not `HELLO`.
    #[error("the server did not say HELLO: is this a skywire manager?")]
    NotAManager,
    /// The manager's `HELLO` or `AUTH` reply is malformed.
    #[error("the manager's {what} is malformed: {error}")]
    Malformed {
        /// Which frame.
        what: &'static str,
        /// What is wrong with it.
        error: ProtoError,
    },
    /// The manager speaks another protocol version.
    #[error("manager speaks version {0}, we speak {v}", v = proto::VERSION)]
    Version(u8),
    /// The manager presented another key than the configured one.
    #[error("the manager's key is {found}, not the configured {configured}")]
    WrongKey {
        /// The key it presented.
        found: PublicKey,
        /// The key in the node's config.
        configured: PublicKey,
    },
    /// The configured manager key is unusable (a low-order point).
    #[error("unusable manager key")]
    UnusableKey,
    /// The system's random source failed.
    #[error("no randomness")]
    NoRandomness,
    /// The manager refused the node's proof (not allowed, or a wrong key).
    #[error("the manager refused us: {0}")]
    Refused(ProtoError),
    /// The manager's proof is wrong: whoever answered is not the configured manager.
    #[error("the manager's proof is wrong: not the configured manager")]
    BadProof,
    /// A frame could not be encoded.
    #[error(transparent)]
    Frame(#[from] proto::FrameError),
}

/// What the uplink keeps up to date besides the manager: the node's state file (and what
/// it held at start) and its usage ledger.
#[derive(Debug)]
pub struct Keeping {
    /// The state file.
    pub state: Option<(StateFile, Owned)>,
    /// The usage ledger.
    pub meter: Option<usage::Meter>,
}

/// Start the uplink thread. With `manager` `None` it serves pings only. With
/// `keeping.state`, the node's state file and what it held ([`super::state`]), the agent owns that again
/// before it first registers, and the file follows what it owns;
/// `keeping.meter`'s ledger is brought up to date every [`usage::TAKE_EVERY`].
pub fn start(
    engine: EngineHandle,
    key: PrivateKey,
    manager: Option<ManagerAddress>,
    params: AgentParams,
    keeping: Keeping,
) -> io::Result<(UplinkHandle, JoinHandle<()>)> {
    let (requests, inbox) = unbounded();
    let closer = Closer::default();
    let link = manager.map(|m| Arc::new(Mutex::new(Reconnect::new(m.address, Instant::now()))));
    let handle = UplinkHandle {
        requests,
        manager: manager.map(|m| m.address),
        closer: closer.clone(),
        link: link.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("skywire-uplink".into())
        .spawn(move || {
            let link = link.as_deref();
            run(
                &engine, &key, manager, params, &inbox, &closer, link, keeping,
            );
        })?;
    Ok((handle, thread))
}

fn log(level: Level, line: &str) {
    log::log!(level, "skywire: manager client: {line}");
}

/// How long a ping sent over a route waits for its pong, at most.
const PONG_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a failed attempt is worth repeating soon: a refusal, or a server that is not
/// the configured manager, stands until an operator changes a config.
fn failure(error: &ConnectError) -> Failure {
    let text = error.to_string();
    match error {
        ConnectError::Refused(_)
        | ConnectError::WrongKey { .. }
        | ConnectError::BadProof
        | ConnectError::Version(_)
        | ConnectError::NotAManager
        | ConnectError::UnusableKey => Failure::Refused(text),
        ConnectError::Io(_)
        | ConnectError::Ended(_)
        | ConnectError::Malformed { .. }
        | ConnectError::NoRandomness
        | ConnectError::Frame(_) => Failure::Transient(text),
    }
}

/// The reconnection state, locked for a moment.
fn lock(link: &Mutex<Reconnect>) -> std::sync::MutexGuard<'_, Reconnect> {
    link.lock().unwrap_or_else(PoisonError::into_inner)
}

struct PendingPing {
    reply: Sender<Result<PingReply, PingError>>,
    route: String,
    in_id: u32,
    manager_route: Option<MeshRouteId>,
    deadline: Instant,
}

#[allow(clippy::too_many_lines)]
#[allow(clippy::too_many_arguments)]
fn run(
    engine: &EngineHandle,
    key: &PrivateKey,
    manager: Option<ManagerAddress>,
    params: AgentParams,
    inbox: &Receiver<Request>,
    closer: &Closer,
    link: Option<&Mutex<Reconnect>>,
    keeping: Keeping,
) {
    let Keeping { state, meter } = keeping;
    let mut next_meter = Instant::now() + usage::TAKE_EVERY;
    let mut agent = Agent::new(params, Rng::system());
    let mut peers: Vec<PeerRecord> = Vec::new();
    let mut next_peers = Instant::now();
    let mut state = state.map(|(file, owned)| {
        if !owned.routes.is_empty() || !owned.links.is_empty() || !owned.peers.is_empty() {
            log::info!(
                "skywire: restored from {}: {} owned routes, {} declared links, the newest \
                 initiation of {} peer keys",
                file.file().display(),
                owned.routes.len(),
                owned.links.len(),
                owned.peers.len()
            );
        }
        peers.clone_from(&owned.peers);
        agent.restore(owned);
        file
    });
    let events = engine.events();
    let mut conn: Option<Connection> = None;
    let mut connecting: Option<Receiver<Result<Connection, ConnectError>>> = None;
    let mut tokens: HashMap<u64, Sender<Result<UserReply, ProtoError>>> = HashMap::new();
    let mut next_token = 1u64;
    let mut pings: HashMap<u64, PendingPing> = HashMap::new();
    let mut registered = false;
    let never: Receiver<Result<Frame, ConnectionEnd>> = crossbeam_channel::never();
    let never_conn: Receiver<Result<Connection, ConnectError>> = crossbeam_channel::never();
    loop {
        let now = Instant::now();
        if let Some(m) = manager
            && let Some(link) = link
            && conn.is_none()
            && connecting.is_none()
            && lock(link).due(now)
        {
            lock(link).attempting(now);
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
        let mut lost: Option<Failure> = None;
        select! {
            recv(inbox) -> request => match request {
                Ok(Request::Manager { request, reply }) => {
                    if let Some(link) = link.filter(|_| !agent.is_registered()) {
                        let text = lock(link).unavailable(Instant::now());
                        let _ = reply.send(Err(ProtoError::new(ErrorKind::Unavailable, text)));
                    } else {
                        let token = next_token;
                        next_token += 1;
                        tokens.insert(token, reply);
                        agent.user_request(token, request);
                    }
                }
                Ok(Request::Ping { peer, reply }) => {
                    start_ping(engine, peer, reply, &mut pings, &mut agent);
                }
                Ok(Request::Stop) | Err(_) => break,
            },
            recv(frames) -> frame => match frame {
                Ok(Ok(frame)) => agent.frame(frame, Instant::now(), &mut Engine(engine)),
                Ok(Err(e)) => lost = Some(Failure::Transient(e.to_string())),
                Err(_) => lost = Some(Failure::Transient("reader stopped".to_owned())),
            },
            recv(events) -> event => match event {
                Ok(EngineEvent::Expired { in_id, .. }) => agent.expired(in_id.get()),
                Ok(EngineEvent::ProbeReply { from, nonce, rtt }) => agent.probe_reply(from, nonce, rtt),
                Ok(EngineEvent::ProbedFrom { peer, from }) => {
                    agent.probed_from(peer, from, &mut Engine(engine));
                }
                // Rate-limited by the engine: once a minute per next hop.
                Ok(EngineEvent::Unreachable { to, os_error }) => log::warn!(
                    "skywire: sending to {to}: {}; its packets are dropped (said once a minute)",
                    std::io::Error::from_raw_os_error(os_error)
                ),
                Ok(EngineEvent::RoutingLoop { to }) => log::error!(
                    "skywire: routing loop: this host routes {} into the tunnel, so the node's own \
                     packets to {to} came back through its TUN device; they are dropped. Route \
                     it outside the tunnel (node.fwmark with a policy rule, or a more specific \
                     route via the underlay) (said once a minute)",
                    to.ip()
                ),
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
                match (result, link) {
                    (Ok(Ok(c)), Some(link)) => {
                        if let Some(line) = lock(link).connected(Instant::now()) {
                            log(Level::Info, &line);
                        }
                        closer.set(c.writer.try_clone().ok());
                        conn = Some(c);
                        agent.connected(Instant::now());
                    }
                    (Ok(Err(e)), Some(link)) => {
                        if let Some(line) = lock(link).failed(failure(&e), Instant::now()) {
                            log(Level::Warn, &line);
                        }
                    }
                    _ => {}
                }
            },
            default(deadline) => {},
        }
        let now = Instant::now();
        agent.tick(now, &mut Engine(engine));
        if let Some(meter) = &meter
            && now >= next_meter
        {
            next_meter = now + usage::TAKE_EVERY;
            let _ = meter.update(now, usage::Save::WhenDue);
        }
        if let Some(file) = state.as_mut() {
            // The engine's memory of peers changes at each handshake: asked every few
            // seconds, not on every turn of this loop.
            if now >= next_peers {
                next_peers = now + PEERS_EVERY;
                if let Ok(accepted) = engine.accepted_initiations(Duration::from_secs(1)) {
                    let mut fresh: Vec<PeerRecord> =
                        accepted.into_iter().map(PeerRecord::from).collect();
                    fresh.sort_by_key(|p| p.key);
                    peers = fresh;
                }
            }
            let mut owned = agent.owned();
            owned.peers.clone_from(&peers);
            file.save(&owned, now);
        }
        if agent.is_registered() != registered {
            registered = agent.is_registered();
            if registered && let Some(link) = link {
                log(Level::Info, &lock(link).registered(now));
            }
        }
        if conn.is_some()
            && lost.is_none()
            && let Some(reason) = agent.stale(now)
        {
            // A refusal stands until an operator changes a config (this node's or the
            // manager's): it is asked again only slowly.
            lost = Some(match reason {
                Stale::Refused(_) => Failure::Refused(reason.to_string()),
                Stale::NotRegistered(_) | Stale::Silent(_) => {
                    Failure::Transient(reason.to_string())
                }
            });
        }
        pings.retain(|_, p| {
            if p.deadline <= now {
                let _ = p.reply.send(Err(PingError::NoReply {
                    timeout: PONG_TIMEOUT,
                }));
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
                    lost = Some(Failure::Transient(e));
                    break;
                }
            }
        }
        if let Some(failure) = lost {
            if let Some(c) = conn.take() {
                closer.set(None);
                let _ = c.writer.shutdown(Shutdown::Both);
            }
            if let Some(line) = link.and_then(|l| lock(l).failed(failure, Instant::now())) {
                log(Level::Warn, &line);
            }
            agent.disconnected();
        }
        for done in agent.completions() {
            if let Some(reply) = tokens.remove(&done.token) {
                let _ = reply.send(done.result);
            }
        }
    }
    closer.set(None);
    if let Some(c) = conn {
        let _ = c.writer.shutdown(Shutdown::Both);
    }
}

fn start_ping(
    engine: &EngineHandle,
    peer: PublicKey,
    reply: Sender<Result<PingReply, PingError>>,
    pings: &mut HashMap<u64, PendingPing>,
    agent: &mut Agent,
) {
    let status = match engine.status(Duration::from_secs(1)) {
        Ok(s) => s,
        Err(e) => {
            let _ = reply.send(Err(e.into()));
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
        let _ = reply.send(Err(PingError::NoRoute {
            peer,
            registered: agent.is_registered(),
        }));
        return;
    };
    let mut nonce = [0u8; 8];
    let _ = skywire_dataplane::crypto::keys::fill_random(&mut nonce);
    let nonce = u64::from_le_bytes(nonce);
    let manager_route = match end.origin {
        Origin::Manager { route, .. } => Some(MeshRouteId(route)),
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
                    deadline: Instant::now() + PONG_TIMEOUT,
                },
            );
        }
        Ok(Err(e)) => {
            let _ = reply.send(Err(e.into()));
        }
        Err(e) => {
            let _ = reply.send(Err(e.into()));
        }
    }
}

/// Connect, check the manager's proof, prove the node's key, and start a reader thread.
fn connect(manager: ManagerAddress, key: &PrivateKey) -> Result<Connection, ConnectError> {
    let mut stream = match manager.mark {
        Some(mark) => socket::connect_tcp_marked(manager.address, mark, CONNECT_TIMEOUT)?,
        None => TcpStream::connect_timeout(&manager.address, CONNECT_TIMEOUT)?,
    };
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    let mut decoder = Decoder::with_limit(proto::MAX_AUTH_FRAME);
    let hello = proto::read_frame(&mut stream, &mut decoder, None, deadline)?;
    if hello.kind != kind::HELLO {
        return Err(ConnectError::NotAManager);
    }
    let hello: Hello = hello.parse().map_err(|error| ConnectError::Malformed {
        what: "HELLO",
        error,
    })?;
    if hello.version != proto::VERSION {
        return Err(ConnectError::Version(hello.version));
    }
    if hello.manager.0 != manager.key {
        return Err(ConnectError::WrongKey {
            found: hello.manager.0,
            configured: manager.key,
        });
    }
    let nonce = Bytes32::random().map_err(|_| ConnectError::NoRandomness)?;
    let node = key.public_key();
    let keys = proto::session_keys(key, &manager.key, &manager.key, &node, &hello.nonce, &nonce)
        .ok_or(ConnectError::UnusableKey)?;
    let auth = Auth {
        node: Key(node),
        nonce,
        proof: keys.node_proof,
    };
    let bytes = proto::encode(&Frame::request(kind::AUTH, 1, &auth), None)?;
    stream.write_all(&bytes)?;
    let reply = proto::read_frame(&mut stream, &mut decoder, None, deadline)?;
    let ok: AuthOk = reply.reply().map_err(ConnectError::Refused)?;
    if !proto::proof_matches(&ok.proof, &keys.manager_proof) {
        return Err(ConnectError::BadProof);
    }
    stream.set_read_timeout(None)?;
    decoder.set_limit(proto::MAX_FRAME);
    let writer = stream.try_clone()?;
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
        })?;
    Ok(Connection {
        writer,
        mac: keys.node_to_manager,
        frames,
    })
}
