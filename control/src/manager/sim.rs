//! An in-process mesh for the manager's tests: a [`ManagerCore`], and per node an
//! [`Agent`] beside a real engine core, on the data plane's one in-memory mesh
//! ([`skywire_dataplane::sim::Mesh`]: real `NodeCore`s, in-memory UDP and TUN, simulated
//! time). The control connections are in-memory queues instead of TCP, but every frame
//! between manager and agents goes through the real encoder and decoder, with MACs.
//!
//! The data plane's mesh moves datagrams, runs the cores' timers and records what reaches
//! each TUN; this layer adds, per node, the agent (ticked with the core as its
//! [`Dataplane`]), its connection to the manager (which can be cut, go silent, lose acks or
//! refuse installs), and the manager itself, which can stop and start again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::engine::{EngineEvent, NodeSetup, Origin, RuleChange};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::sim::{Mesh, NodeId, NodeParts, ipv4};
use skywire_dataplane::wire::RouteId;

use super::core::{ConnId, ManagerCore, Output, Params, Rng};
use super::proto::{self, Bytes32, Decoder, Frame, Mac, session_keys};
use crate::config::AcceptRule;
use crate::node::agent::{Agent, AgentParams, ApplyFailure, Completion, Dataplane, UserRequest};

/// The agent's view of its node's core, lent by the data plane's mesh.
struct Dp<'a>(NodeParts<'a>);

impl Dataplane for Dp<'_> {
    fn apply(&mut self, changes: Vec<RuleChange>) -> Result<(), ApplyFailure> {
        Ok(self.0.core.apply(self.0.now, changes)?)
    }
    fn probe(&mut self, to: SocketAddr, nonce: u64) {
        self.0.core.probe(self.0.now, to, nonce, self.0.io);
    }
    fn set_neighbours(&mut self, neighbours: &[(SocketAddr, PublicKey)]) {
        self.0.core.set_neighbours(neighbours);
    }
}

/// Request ids of frames injected with [`Sim::raw`]: far above any the agents use.
const RAW_IDS: u64 = 1 << 62;

/// How a node's connection to the manager behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Frames flow both ways.
    Up,
    /// The node handles frames but its replies to INSTALL are lost.
    AcksLost,
    /// Nothing reaches the node, nothing leaves it (a hung node).
    Silent,
    /// The node refuses every INSTALL (as if its ids were taken).
    Refuses,
}

/// The control-plane side of one simulated node; its engine core is in the mesh.
pub(crate) struct SimNode {
    /// Its key.
    pub(crate) key: PrivateKey,
    /// Its manager agent.
    pub(crate) agent: Agent,
    /// Its connection to the manager (None: not connected).
    pub(crate) conn: Option<ConnId>,
    /// Whether the node runs at all (false: killed or hung).
    pub(crate) alive: bool,
    /// How its connection behaves.
    pub(crate) wire: Wire,
    /// Pongs received: nonce, rtt.
    pub(crate) pongs: Vec<(u64, Duration)>,
    /// Answers to its user's requests.
    pub(crate) answers: Vec<Completion>,
    /// The manager's replies to frames injected with [`Sim::raw`], by request id.
    pub(crate) raw_replies: HashMap<u64, Frame>,
    /// MACs for the current connection: node -> manager (sent, checked), manager -> node
    /// (sent, checked).
    macs: Option<(Mac, Mac, Mac, Mac)>,
}

/// The whole mesh.
pub(crate) struct Sim {
    /// The data plane: engine cores, datagrams, TUN records, simulated time.
    pub(crate) mesh: Mesh,
    /// The manager (None while it is down).
    pub(crate) manager: Option<ManagerCore>,
    /// Its configuration, for restarts.
    pub(crate) params: Params,
    /// The nodes' control-plane sides, by index (the mesh's `NodeId`s are the same).
    pub(crate) nodes: Vec<SimNode>,
    by_conn: HashMap<ConnId, usize>,
    next_conn: u64,
    next_token: u64,
    /// Log lines of the manager, with their levels.
    pub(crate) log: Vec<(log::Level, String)>,
}

/// The agent of node `i`, which tells the manager `endpoint` and its TUN address, and lets
/// any node set up routes to it with addresses in 10.0.0.0/8 (the simulation's).
fn agent_for(i: usize, key: &PrivateKey, endpoint: SocketAddr) -> Agent {
    let tun = Prefix::new(IpAddr::V4(tun_addr(i)), 32).unwrap_or_else(|| unreachable!());
    Agent::new(
        AgentParams {
            key: key.public_key(),
            endpoint,
            tun: vec![tun],
            reserved: Vec::new(),
            accept: vec![AcceptRule {
                peer: None,
                prefixes: vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
            }],
        },
        Rng::seeded(i as u64 + 7),
    )
}

/// The node's TUN address in the simulation.
pub(crate) fn tun_addr(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).unwrap_or(0);
    Ipv4Addr::from(0x0a00_0000 + i + 1)
}

impl Sim {
    /// `n` nodes (not connected yet), a manager with `params`, links as given.
    pub(crate) fn new(n: usize, params: Params, keys: Vec<PrivateKey>) -> Self {
        let mut mesh = Mesh::new(Instant::now());
        let mut nodes = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate().take(n) {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 18, (i / 200) as u8, (i % 200) as u8 + 1)),
                6000,
            );
            let setup = NodeSetup {
                private_key: key.clone(),
                listen: addr,
                tun: None,
                routes: Vec::new(),
                relays: Vec::new(),
                offload: false,
                stack: skywire_dataplane::stack::StackSetup::default(),
                fwmark: None,
                peers: Vec::new(),
            };
            let id = mesh
                .add_node(setup)
                .unwrap_or_else(|e| panic!("node core: {e}"));
            assert_eq!(id, NodeId(i));
            let agent = agent_for(i, &key, addr);
            nodes.push(SimNode {
                key,
                agent,
                conn: None,
                alive: true,
                wire: Wire::Up,
                pongs: Vec::new(),
                answers: Vec::new(),
                raw_replies: HashMap::new(),
                macs: None,
            });
        }
        Self {
            mesh,
            manager: Some(ManagerCore::new(params.clone(), Rng::seeded(42))),
            params,
            nodes,
            by_conn: HashMap::new(),
            next_conn: 1,
            next_token: 1,
            log: Vec::new(),
        }
    }

    /// Node `i` tells the manager `endpoint` as its transport address (before it connects):
    /// one that is not its own, where nothing holding its key answers.
    pub(crate) fn set_endpoint(&mut self, i: usize, endpoint: SocketAddr) {
        let node = &mut self.nodes[i];
        node.agent = agent_for(i, &node.key, endpoint);
    }

    /// The public key of node `i`.
    pub(crate) fn pk(&self, i: usize) -> PublicKey {
        self.nodes[i].key.public_key()
    }

    /// Connect node `i` to the manager (the key proof is checked for real).
    pub(crate) fn connect(&mut self, i: usize) {
        let now = self.mesh.now();
        let Some(manager) = self.manager.as_mut() else {
            return;
        };
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let node = &mut self.nodes[i];
        let mkey = PrivateKey::from_bytes([9u8; 32]);
        let (nm, nn) = (Bytes32([1; 32]), Bytes32([2; 32]));
        let at_node = session_keys(
            &node.key,
            &mkey.public_key(),
            &mkey.public_key(),
            &node.key.public_key(),
            &nm,
            &nn,
        )
        .unwrap_or_else(|| unreachable!());
        let at_manager = session_keys(
            &mkey,
            &node.key.public_key(),
            &mkey.public_key(),
            &node.key.public_key(),
            &nm,
            &nn,
        )
        .unwrap_or_else(|| unreachable!());
        assert!(proto::proof_matches(
            &at_node.node_proof,
            &at_manager.node_proof
        ));
        node.macs = Some((
            at_node.node_to_manager,
            at_manager.node_to_manager,
            at_manager.manager_to_node,
            at_node.manager_to_node,
        ));
        node.conn = Some(conn);
        self.by_conn.insert(conn, i);
        manager.authenticated(conn, node.key.public_key(), now);
        node.agent.connected(now);
    }

    /// Node `i` is killed: its connection drops, its engine and rules are gone.
    pub(crate) fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        let _ = self.mesh.kill(NodeId(i));
        self.drop_connection(i);
    }

    /// Node `i` hangs: its engine stops, no frames reach it or leave it, but its
    /// connection stays open (the manager must notice the silence).
    pub(crate) fn hang(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].wire = Wire::Silent;
        let _ = self.mesh.kill(NodeId(i));
    }

    /// Cut the link between nodes `a` and `b`: every datagram between them is lost.
    pub(crate) fn cut(&mut self, a: usize, b: usize) {
        self.mesh.cut(NodeId(a), NodeId(b));
    }

    /// Mend every link [`Sim::cut`] cut between `a` and `b`.
    pub(crate) fn mend(&mut self, a: usize, b: usize) {
        self.mesh.mend(NodeId(a), NodeId(b));
    }

    /// Node `i`'s connection to the manager closes (the manager sees it at once).
    pub(crate) fn drop_connection(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn.take() {
            self.by_conn.remove(&conn);
            if let Some(m) = self.manager.as_mut() {
                m.disconnected(conn, self.mesh.now());
            }
        }
        self.nodes[i].agent.disconnected();
        self.nodes[i].macs = None;
    }

    /// The manager stops; nodes notice their connections closing.
    pub(crate) fn stop_manager(&mut self) {
        self.manager = None;
        for node in &mut self.nodes {
            node.conn = None;
            node.macs = None;
            node.agent.disconnected();
        }
        self.by_conn.clear();
    }

    /// A fresh manager starts, and every live node reconnects.
    pub(crate) fn start_manager(&mut self) {
        self.manager = Some(ManagerCore::new(self.params.clone(), Rng::seeded(4242)));
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                self.connect(i);
            }
        }
    }

    /// Node `i`'s user asks the manager something; returns the token of the answer.
    pub(crate) fn user(&mut self, i: usize, request: UserRequest) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.nodes[i].agent.user_request(token, request);
        token
    }

    /// Send a frame of any kind and body from node `i` to the manager, past its agent (as
    /// a broken or hostile node would), MAC'd like the rest; returns its request id. The
    /// reply lands in the node's `raw_replies`.
    pub(crate) fn raw(&mut self, i: usize, kind: u8, body: &Value) -> u64 {
        let id = RAW_IDS + self.next_token;
        self.next_token += 1;
        let now = self.mesh.now();
        let node = &mut self.nodes[i];
        let (Some(conn), Some(macs)) = (node.conn, node.macs.as_mut()) else {
            return id;
        };
        let frame = Self::frame_through(&Frame::request(kind, id, body), &mut macs.0, &mut macs.1);
        if let Some(m) = self.manager.as_mut() {
            m.frame(conn, frame, now);
        }
        id
    }

    /// The answer to `token` at node `i`, if it came.
    pub(crate) fn answer(&self, i: usize, token: u64) -> Option<&Completion> {
        self.nodes[i].answers.iter().find(|c| c.token == token)
    }

    fn frame_through(frame: &Frame, send: &mut Mac, recv: &mut Mac) -> Frame {
        let bytes = proto::encode(frame, Some(send)).unwrap_or_else(|e| panic!("encode: {e}"));
        let mut d = Decoder::new();
        d.push(&bytes);
        d.next_frame(Some(recv))
            .unwrap_or_else(|e| panic!("decode: {e}"))
            .unwrap_or_else(|| panic!("a whole frame"))
    }

    /// IP packets that reached node `i`'s TUN device so far.
    pub(crate) fn delivered(&self, i: usize) -> &[Vec<u8>] {
        self.mesh.tun(NodeId(i)).unwrap_or_default()
    }

    /// Send IP packet `payload` from node `src`'s TUN towards node `dst`'s address.
    pub(crate) fn send_ip(&mut self, src: usize, dst: usize, payload: &[u8]) {
        let packet = ipv4(tun_addr(src), tun_addr(dst), payload);
        let _ = self.mesh.tun_input(NodeId(src), &packet);
    }

    /// Ping node `src`'s route end with incoming id `in_id`.
    pub(crate) fn ping(&mut self, src: usize, in_id: u32, nonce: u64) -> bool {
        let Some(id) = RouteId::new(in_id) else {
            return false;
        };
        self.mesh.ping(NodeId(src), id, nonce).is_ok()
    }

    /// Run for `duration` in steps of `step`.
    pub(crate) fn run(&mut self, duration: Duration, step: Duration) {
        let end = self.mesh.now() + duration;
        while self.mesh.now() < end {
            self.mesh.advance_clock(step);
            self.settle();
        }
    }

    /// Deliver everything queued and fire every due timer, without advancing time.
    pub(crate) fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = self.manager_to_nodes();
            for i in 0..self.nodes.len() {
                moved |= self.step_node(i);
            }
            moved |= self.mesh.deliver_all() > 0;
            if !moved {
                return;
            }
        }
    }

    /// The manager's timers and outputs: frames to the agents, connections closed.
    fn manager_to_nodes(&mut self) -> bool {
        let now = self.mesh.now();
        let outputs = match self.manager.as_mut() {
            Some(m) => {
                m.tick(now);
                m.drain()
            }
            None => Vec::new(),
        };
        let moved = !outputs.is_empty();
        for output in outputs {
            match output {
                Output::Log(level, line) => self.log.push((level, line)),
                Output::Send(conn, frame) => self.deliver_to_node(conn, &frame),
                Output::Close(conn, _) => {
                    if let Some(i) = self.by_conn.remove(&conn) {
                        self.nodes[i].conn = None;
                        self.nodes[i].macs = None;
                        self.nodes[i].agent.disconnected();
                        if let Some(m) = self.manager.as_mut() {
                            m.disconnected(conn, now);
                        }
                    }
                }
            }
        }
        moved
    }

    /// A frame from the manager reaches the node on `conn` (as its wire allows).
    fn deliver_to_node(&mut self, conn: ConnId, frame: &Frame) {
        let now = self.mesh.now();
        let Some(&i) = self.by_conn.get(&conn) else {
            return;
        };
        let node = &mut self.nodes[i];
        if !node.alive || node.wire == Wire::Silent {
            return;
        }
        let Some(macs) = node.macs.as_mut() else {
            return;
        };
        let frame = Self::frame_through(frame, &mut macs.2, &mut macs.3);
        if frame.is_reply() && frame.id >= RAW_IDS {
            node.raw_replies.insert(frame.id, frame);
            return;
        }
        if node.wire == Wire::Refuses && frame.kind == proto::kind::INSTALL {
            let refusal = Frame::error(
                frame.kind,
                frame.id,
                &proto::ProtoError::new(proto::ErrorKind::IdInUse, "route id taken"),
            );
            let refusal = Self::frame_through(&refusal, &mut macs.0, &mut macs.1);
            if let Some(m) = self.manager.as_mut() {
                m.frame(conn, refusal, now);
            }
            return;
        }
        let SimNode { agent, .. } = node;
        if let Ok(parts) = self.mesh.parts(NodeId(i)) {
            agent.frame(frame, now, &mut Dp(parts));
        }
    }

    /// Node `i`'s agent and engine: timers, engine events, frames to the manager.
    fn step_node(&mut self, i: usize) -> bool {
        if !self.nodes[i].alive {
            return false;
        }
        let now = self.mesh.now();
        let id = NodeId(i);
        if let Ok(parts) = self.mesh.parts(id) {
            self.nodes[i].agent.tick(now, &mut Dp(parts));
        }
        let _ = self.mesh.poll_timers(id);
        let mut moved = !self.mesh.in_flight().is_empty();
        for event in self.mesh.drain_events(id).unwrap_or_default() {
            let node = &mut self.nodes[i];
            match event {
                EngineEvent::Expired { in_id, .. } => node.agent.expired(in_id.get()),
                EngineEvent::ProbeReply { from, nonce, rtt } => {
                    node.agent.probe_reply(from, nonce, rtt);
                }
                EngineEvent::ProbedFrom { peer, from } => {
                    if let Ok(parts) = self.mesh.parts(id) {
                        node.agent.probed_from(peer, from, &mut Dp(parts));
                    }
                }
                EngineEvent::Pong { nonce, rtt, .. } => node.pongs.push((nonce, rtt)),
                // In-memory links always have a way.
                EngineEvent::Unreachable { .. } | EngineEvent::RoutingLoop { .. } => {}
            }
        }
        let node = &mut self.nodes[i];
        let answers = node.agent.completions();
        node.answers.extend(answers);
        let frames = node.agent.drain();
        let (Some(conn), Some(macs)) = (node.conn, node.macs.as_mut()) else {
            return moved;
        };
        if node.wire == Wire::Silent {
            return moved;
        }
        for frame in frames {
            if node.wire == Wire::AcksLost
                && frame.is_reply()
                && frame.base_kind() == proto::kind::INSTALL
            {
                continue;
            }
            let frame = Self::frame_through(&frame, &mut macs.0, &mut macs.1);
            moved = true;
            if let Some(m) = self.manager.as_mut() {
                m.frame(conn, frame, now);
            }
        }
        moved
    }

    /// Rules the manager installed that node `i` holds (relays and ends).
    pub(crate) fn manager_rules(&self, i: usize) -> usize {
        let Ok(status) = self.mesh.status(NodeId(i)) else {
            return 0;
        };
        status
            .routes
            .iter()
            .filter(|r| matches!(r.origin, Origin::Manager { .. }))
            .count()
            + status
                .relays
                .iter()
                .filter(|r| matches!(r.origin, Origin::Manager { .. }))
                .count()
    }

    /// The incoming id of node `i`'s newest manager route end to node `peer`.
    pub(crate) fn end_to(&self, i: usize, peer: usize) -> Option<u32> {
        let peer = self.pk(peer);
        self.mesh
            .status(NodeId(i))
            .ok()?
            .routes
            .iter()
            .filter(|r| r.peer == peer && matches!(r.origin, Origin::Manager { .. }))
            .map(|r| r.in_id.get())
            .next_back()
    }
}
