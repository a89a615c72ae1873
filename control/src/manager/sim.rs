//! An in-process mesh for the manager's tests: a [`ManagerCore`], and per node an
//! [`Agent`] over a real [`NodeCore`] (the engine's sans-IO core: route table, sessions,
//! expiry, probes, pings), joined by in-memory queues instead of TCP and UDP. Time is
//! simulated. Frames between manager and agents go through the real encoder and decoder,
//! with MACs.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use skywire_dataplane::crypto::{PrivateKey, PublicKey};
use skywire_dataplane::engine::{EngineEvent, NodeCore, NodeIo, NodeSetup, Origin, RuleChange};
use skywire_dataplane::route::Prefix;
use skywire_dataplane::session::HEADROOM;

use super::core::{ConnId, ManagerCore, Output, Params, Rng};
use super::proto::{self, Bytes32, Decoder, Frame, Mac, session_keys};
use crate::node::agent::{Agent, AgentParams, ApplyFailure, Completion, Dataplane, UserRequest};

/// What a node's engine sent during one step.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// Datagrams: destination, bytes.
    pub(crate) udp: Vec<(SocketAddr, Vec<u8>)>,
    /// IP packets written to the (absent) TUN device.
    pub(crate) tun: Vec<Vec<u8>>,
}

impl NodeIo for Out {
    fn send_udp(&mut self, to: SocketAddr, packet: &[u8]) {
        self.udp.push((to, packet.to_vec()));
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

struct Dp<'a> {
    core: &'a mut NodeCore,
    now: Instant,
    out: &'a mut Out,
}

impl Dataplane for Dp<'_> {
    fn apply(&mut self, changes: Vec<RuleChange>) -> Result<(), ApplyFailure> {
        Ok(self.core.apply(self.now, changes)?)
    }
    fn probe(&mut self, to: SocketAddr, nonce: u64) {
        self.core.probe(self.now, to, nonce, self.out);
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

/// One simulated node.
pub(crate) struct SimNode {
    /// Its key.
    pub(crate) key: PrivateKey,
    /// Its transport address.
    pub(crate) addr: SocketAddr,
    /// Its engine.
    pub(crate) core: NodeCore,
    /// Its manager agent.
    pub(crate) agent: Agent,
    /// Its connection to the manager (None: not connected).
    pub(crate) conn: Option<ConnId>,
    /// Whether the node runs at all (false: killed).
    pub(crate) alive: bool,
    /// How its connection behaves.
    pub(crate) wire: Wire,
    /// IP packets delivered to its TUN.
    pub(crate) delivered: Vec<Vec<u8>>,
    /// Pongs received: nonce, rtt.
    pub(crate) pongs: Vec<(u64, Duration)>,
    /// Answers to its user's requests.
    pub(crate) answers: Vec<Completion>,
    /// The manager's replies to frames injected with [`Sim::raw`], by request id.
    pub(crate) raw_replies: HashMap<u64, Frame>,
    /// MACs for the current connection: node -> manager, manager -> node.
    macs: Option<(Mac, Mac, Mac, Mac)>,
}

/// The whole mesh.
pub(crate) struct Sim {
    /// Simulated time.
    pub(crate) now: Instant,
    /// The manager (None while it is down).
    pub(crate) manager: Option<ManagerCore>,
    /// Its configuration, for restarts.
    pub(crate) params: Params,
    /// The nodes.
    pub(crate) nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    by_conn: HashMap<ConnId, usize>,
    udp: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    next_conn: u64,
    next_token: u64,
    /// Links that lose every datagram, both ways (by node index, smaller first).
    pub(crate) cut: std::collections::HashSet<(usize, usize)>,
    /// Log lines of the manager.
    pub(crate) log: Vec<String>,
}

/// The node's TUN address in the simulation.
pub(crate) fn tun_addr(i: usize) -> Prefix {
    let i = u32::try_from(i).unwrap_or(0);
    Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i + 1)), 32)
        .unwrap_or_else(|| unreachable!())
}

/// A minimal IPv4 packet to `dst` with `payload`.
pub(crate) fn ip_packet(src: Prefix, dst: Prefix, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (src.addr(), dst.addr()) {
        p[12..16].copy_from_slice(&s.octets());
        p[16..20].copy_from_slice(&d.octets());
    }
    p.extend_from_slice(payload);
    p
}

impl Sim {
    /// `n` nodes (not connected yet), a manager with `params`, links as given.
    pub(crate) fn new(n: usize, params: Params, keys: Vec<PrivateKey>) -> Self {
        let now = Instant::now();
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = HashMap::new();
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
            };
            let core = NodeCore::new(&setup, addr, now, Duration::from_secs(1_800_000_000))
                .unwrap_or_else(|e| panic!("node core: {e}"));
            let agent = Agent::new(
                AgentParams {
                    key: key.public_key(),
                    endpoint: addr,
                    tun: vec![tun_addr(i)],
                    reserved: Vec::new(),
                },
                Rng::seeded(i as u64 + 7),
            );
            by_addr.insert(addr, i);
            nodes.push(SimNode {
                key,
                addr,
                core,
                agent,
                conn: None,
                alive: true,
                wire: Wire::Up,
                delivered: Vec::new(),
                pongs: Vec::new(),
                answers: Vec::new(),
                raw_replies: HashMap::new(),
                macs: None,
            });
        }
        Self {
            now,
            manager: Some(ManagerCore::new(params.clone(), Rng::seeded(42))),
            params,
            nodes,
            by_addr,
            by_conn: HashMap::new(),
            udp: VecDeque::new(),
            next_conn: 1,
            next_token: 1,
            cut: std::collections::HashSet::new(),
            log: Vec::new(),
        }
    }

    /// The public key of node `i`.
    pub(crate) fn pk(&self, i: usize) -> PublicKey {
        self.nodes[i].key.public_key()
    }

    /// Connect node `i` to the manager (the key proof is checked for real).
    pub(crate) fn connect(&mut self, i: usize) {
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
        manager.authenticated(conn, node.key.public_key(), self.now);
        node.agent.connected(self.now);
    }

    /// Node `i` is killed: its connection drops, its engine and rules are gone.
    pub(crate) fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.drop_connection(i);
    }

    /// Node `i`'s connection to the manager closes (the manager sees it at once).
    pub(crate) fn drop_connection(&mut self, i: usize) {
        if let Some(conn) = self.nodes[i].conn.take() {
            self.by_conn.remove(&conn);
            if let Some(m) = self.manager.as_mut() {
                m.disconnected(conn, self.now);
            }
        }
        self.nodes[i].agent.disconnected();
        self.nodes[i].macs = None;
    }

    /// The manager stops; nodes notice their connections closing.
    pub(crate) fn stop_manager(&mut self) {
        self.manager = None;
        for i in 0..self.nodes.len() {
            self.nodes[i].conn = None;
            self.nodes[i].macs = None;
            self.nodes[i].agent.disconnected();
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
        let node = &mut self.nodes[i];
        let (Some(conn), Some(macs)) = (node.conn, node.macs.as_mut()) else {
            return id;
        };
        let frame = Self::frame_through(&Frame::request(kind, id, body), &mut macs.0, &mut macs.1);
        if let Some(m) = self.manager.as_mut() {
            m.frame(conn, frame, self.now);
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

    /// Send IP packet `payload` from node `src`'s TUN towards node `dst`'s address.
    pub(crate) fn send_ip(&mut self, src: usize, dst: usize, payload: &[u8]) {
        let packet = ip_packet(tun_addr(src), tun_addr(dst), payload);
        let mut buf = vec![0u8; HEADROOM + packet.len() + 64];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(&packet);
        let mut out = Out::default();
        let now = self.now;
        let node = &mut self.nodes[src];
        node.core
            .handle_tun_packet(now, &mut buf, packet.len(), &mut out);
        self.collect(src, out);
    }

    /// Ping node `src`'s route end with incoming id `in_id`.
    pub(crate) fn ping(&mut self, src: usize, in_id: u32, nonce: u64) -> bool {
        let Some(id) = skywire_dataplane::wire::RouteId::new(in_id) else {
            return false;
        };
        let mut out = Out::default();
        let now = self.now;
        let ok = self.nodes[src].core.ping(now, id, nonce, &mut out).is_ok();
        self.collect(src, out);
        ok
    }

    fn collect(&mut self, i: usize, out: Out) {
        let from = self.nodes[i].addr;
        for (to, bytes) in out.udp {
            self.udp.push_back((from, to, bytes));
        }
        self.nodes[i].delivered.extend(out.tun);
    }

    /// Run for `duration` in steps of `step`.
    pub(crate) fn run(&mut self, duration: Duration, step: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += step;
            self.settle();
        }
    }

    /// Deliver everything queued and fire every due timer, without advancing time.
    pub(crate) fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            // Manager -> nodes.
            let outputs = match self.manager.as_mut() {
                Some(m) => {
                    m.tick(self.now);
                    m.drain()
                }
                None => Vec::new(),
            };
            {
                for output in outputs {
                    moved = true;
                    match output {
                        Output::Log(line) => self.log.push(line),
                        Output::Send(conn, frame) => {
                            let Some(&i) = self.by_conn.get(&conn) else {
                                continue;
                            };
                            let node = &mut self.nodes[i];
                            if !node.alive || node.wire == Wire::Silent {
                                continue;
                            }
                            let Some(macs) = node.macs.as_mut() else {
                                continue;
                            };
                            let frame = Self::frame_through(&frame, &mut macs.2, &mut macs.3);
                            if frame.is_reply() && frame.id >= RAW_IDS {
                                node.raw_replies.insert(frame.id, frame);
                                continue;
                            }
                            if node.wire == Wire::Refuses && frame.kind == proto::kind::INSTALL {
                                let refusal = Frame::error(
                                    frame.kind,
                                    frame.id,
                                    &proto::ProtoError::new(
                                        proto::ErrorKind::IdInUse,
                                        "route id taken",
                                    ),
                                );
                                let refusal =
                                    Self::frame_through(&refusal, &mut macs.0, &mut macs.1);
                                if let Some(m) = self.manager.as_mut() {
                                    m.frame(conn, refusal, self.now);
                                }
                                continue;
                            }
                            let mut out = Out::default();
                            let now = self.now;
                            let SimNode { core, agent, .. } = node;
                            agent.frame(
                                frame,
                                now,
                                &mut Dp {
                                    core,
                                    now,
                                    out: &mut out,
                                },
                            );
                            self.collect(i, out);
                        }
                        Output::Close(conn, _) => {
                            if let Some(i) = self.by_conn.remove(&conn) {
                                self.nodes[i].conn = None;
                                self.nodes[i].macs = None;
                                self.nodes[i].agent.disconnected();
                                if let Some(m) = self.manager.as_mut() {
                                    m.disconnected(conn, self.now);
                                }
                            }
                        }
                    }
                }
            }
            // Nodes: timers, events, frames to the manager.
            for i in 0..self.nodes.len() {
                if !self.nodes[i].alive {
                    continue;
                }
                let now = self.now;
                let mut out = Out::default();
                {
                    let SimNode { core, agent, .. } = &mut self.nodes[i];
                    agent.tick(
                        now,
                        &mut Dp {
                            core,
                            now,
                            out: &mut out,
                        },
                    );
                    core.poll_timers(now, &mut out);
                }
                let events: Vec<EngineEvent> = self.nodes[i].core.drain_events().collect();
                for event in events {
                    match event {
                        EngineEvent::Expired { in_id, .. } => {
                            self.nodes[i].agent.expired(in_id.get());
                        }
                        EngineEvent::ProbeReply { from, nonce, rtt } => {
                            self.nodes[i].agent.probe_reply(from, nonce, rtt);
                        }
                        EngineEvent::Pong { nonce, rtt, .. } => {
                            self.nodes[i].pongs.push((nonce, rtt));
                        }
                    }
                }
                if !out.udp.is_empty() || !out.tun.is_empty() {
                    moved = true;
                }
                self.collect(i, out);
                let answers = self.nodes[i].agent.completions();
                self.nodes[i].answers.extend(answers);
                let frames = self.nodes[i].agent.drain();
                let node = &mut self.nodes[i];
                let (Some(conn), Some(macs)) = (node.conn, node.macs.as_mut()) else {
                    continue;
                };
                if node.wire == Wire::Silent {
                    continue;
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
                        m.frame(conn, frame, self.now);
                    }
                }
            }
            // Datagrams.
            while let Some((from, to, mut bytes)) = self.udp.pop_front() {
                moved = true;
                let Some(&i) = self.by_addr.get(&to) else {
                    continue;
                };
                if !self.nodes[i].alive {
                    continue;
                }
                if let Some(&j) = self.by_addr.get(&from)
                    && self.cut.contains(&(i.min(j), i.max(j)))
                {
                    continue;
                }
                let mut out = Out::default();
                let now = self.now;
                self.nodes[i]
                    .core
                    .handle_datagram(now, from, &mut bytes, &mut out);
                self.collect(i, out);
            }
            if !moved {
                return;
            }
        }
    }

    /// Rules the manager installed that node `i` holds (relays and ends).
    pub(crate) fn manager_rules(&self, i: usize) -> usize {
        let status = self.nodes[i].core.status(self.now);
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
        self.nodes[i]
            .core
            .status(self.now)
            .routes
            .iter()
            .filter(|r| r.peer == peer && matches!(r.origin, Origin::Manager { .. }))
            .map(|r| r.in_id.get())
            .next_back()
    }
}
