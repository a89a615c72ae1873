use super::*;
use crate::manager::proto::{self, Neighbours, RouteState, kind};
use serde::de::IgnoredAny;
use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::wire::RouteId;

#[derive(Default)]
struct Fake {
    applied: Vec<Vec<RuleChange>>,
    probes: Vec<(SocketAddr, u64)>,
    refuse: bool,
    /// Refuse ends as the engine does when their prefix is another peer's.
    claimed: bool,
    neighbours: Vec<(SocketAddr, PublicKey)>,
}

impl Dataplane for Fake {
    fn apply(&mut self, changes: Vec<RuleChange>) -> Result<(), ApplyFailure> {
        if self.refuse {
            return Err(ApplyError::InUse(RouteId::new(7).unwrap()).into());
        }
        if self.claimed {
            return Err(ApplyError::PrefixClaimed {
                in_id: RouteId::new(9).unwrap(),
                prefix: "10.77.0.9/32".parse().unwrap(),
            }
            .into());
        }
        self.applied.push(changes);
        Ok(())
    }
    fn probe(&mut self, to: SocketAddr, nonce: u64) {
        self.probes.push((to, nonce));
    }
    fn set_neighbours(&mut self, neighbours: &[(SocketAddr, PublicKey)]) {
        self.neighbours = neighbours.to_vec();
    }
}

fn agent() -> Agent {
    Agent::new(
        AgentParams {
            key: PrivateKey::from_bytes([3; 32]).public_key(),
            endpoint: "198.18.0.1:6000".parse().unwrap(),
            tun: vec!["10.77.0.1/32".parse().unwrap()],
            reserved: vec![21],
            accept: vec![AcceptRule {
                peer: Some(peer().0),
                prefixes: vec!["10.77.0.0/24".parse().unwrap()],
            }],
        },
        Rng::seeded(5),
    )
}

fn registered(now: Instant) -> Agent {
    let mut a = agent();
    a.connected(now);
    let frames = a.drain();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].kind, kind::REGISTER);
    let reg: Register = frames[0].parse().unwrap();
    assert_eq!(reg.reserved, vec![21]);
    let reply = Frame::ok(
        kind::REGISTER,
        frames[0].id,
        &Registered {
            heartbeat_ms: 1000,
            expire_ms: 9000,
        },
    );
    a.frame(reply, now, &mut Fake::default());
    assert!(a.is_registered());
    a
}

fn peer() -> Key {
    Key(PrivateKey::from_bytes([4; 32]).public_key())
}

#[test]
fn requests_without_a_manager_fail_at_once() {
    let mut a = agent();
    a.user_request(9, UserRequest::Nodes);
    let done = a.completions();
    assert_eq!(done[0].token, 9);
    assert_eq!(
        done[0].result.as_ref().unwrap_err().kind,
        ErrorKind::Unavailable
    );
    assert!(a.drain().is_empty());
}

#[test]
fn install_is_one_batch_with_expiry_and_keepalive_and_remove_touches_only_the_route() {
    let now = Instant::now();
    let mut a = registered(now);
    let mut dp = Fake::default();
    let install = Install {
        route: MeshRouteId(77),
        rules: vec![
            RuleSpec::Relay {
                in_id: 5,
                prev_hop: "198.18.0.2:6000".parse().unwrap(),
                out_id: 6,
                next_hop: "198.18.0.3:6000".parse().unwrap(),
            },
            RuleSpec::End {
                peer: peer(),
                prefixes: vec![WirePrefix("10.77.0.9/32".parse().unwrap())],
                first_hop: "198.18.0.2:6000".parse().unwrap(),
                out_id: 8,
                in_id: 9,
                peer_in_id: 10,
                prev_hop: "198.18.0.2:6000".parse().unwrap(),
            },
        ],
        expire_ms: 9000,
    };
    a.frame(Frame::request(kind::INSTALL, 40, &install), now, &mut dp);
    let reply = a.drain().pop().unwrap();
    assert_eq!(reply.kind, kind::INSTALL | proto::REPLY);
    assert!(reply.reply::<IgnoredAny>().is_ok());
    assert_eq!(dp.applied.len(), 1);
    assert_eq!(dp.applied[0].len(), 2);
    match &dp.applied[0][1] {
        RuleChange::AddEnd { route, origin } => {
            assert_eq!(route.persistent_keepalive, Some(Duration::from_secs(3)));
            assert_eq!(
                (
                    route.out_id.get(),
                    route.in_id.get(),
                    route.peer_in_id.get()
                ),
                (8, 9, 10)
            );
            assert_eq!(
                *origin,
                Origin::Manager {
                    route: 77,
                    expire_after: Duration::from_secs(9)
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.held().len(), 2);
    // Another route's REMOVE naming these ids changes nothing.
    a.frame(
        Frame::request(
            kind::REMOVE,
            41,
            &Remove {
                route: MeshRouteId(78),
                in_ids: vec![5, 9, 21],
            },
        ),
        now,
        &mut dp,
    );
    assert_eq!(dp.applied.len(), 1);
    assert!(a.drain().pop().unwrap().reply::<IgnoredAny>().is_ok());
    a.frame(
        Frame::request(
            kind::REMOVE,
            42,
            &Remove {
                route: MeshRouteId(77),
                in_ids: vec![5, 9],
            },
        ),
        now,
        &mut dp,
    );
    assert_eq!(dp.applied.len(), 2);
    assert!(a.held().is_empty());
    // A refused install is an error reply, and nothing is held.
    dp.refuse = true;
    a.frame(Frame::request(kind::INSTALL, 43, &install), now, &mut dp);
    let reply = a.drain().pop().unwrap();
    assert_eq!(
        reply.reply::<IgnoredAny>().unwrap_err().kind,
        ErrorKind::IdInUse
    );
    assert!(a.held().is_empty());
    // A route id 0 is a bad request.
    dp.refuse = false;
    let mut bad = install.clone();
    bad.rules.truncate(1);
    if let RuleSpec::Relay { out_id, .. } = &mut bad.rules[0] {
        *out_id = 0;
    }
    a.frame(Frame::request(kind::INSTALL, 44, &bad), now, &mut dp);
    let reply = a.drain().pop().unwrap();
    assert_eq!(
        reply.reply::<IgnoredAny>().unwrap_err().kind,
        ErrorKind::BadRequest
    );
}

#[test]
fn probes_measure_round_trip_and_loss_and_report_a_dead_link_at_once() {
    let t0 = Instant::now();
    let mut a = registered(t0);
    let mut dp = Fake::default();
    let endpoint: SocketAddr = "198.18.0.2:6000".parse().unwrap();
    a.frame(
        Frame::request(
            kind::NEIGHBOURS,
            50,
            &Neighbours {
                neighbours: vec![Neighbour {
                    peer: peer(),
                    endpoint,
                }],
            },
        ),
        t0,
        &mut dp,
    );
    a.drain();
    // Three answered probes, 300 µs each.
    let mut now = t0;
    for _ in 0..3 {
        a.tick(now, &mut dp);
        let (to, nonce) = *dp.probes.last().unwrap();
        assert_eq!(to, endpoint);
        a.probe_reply(endpoint, nonce, Duration::from_micros(300));
        // A reply from elsewhere is ignored.
        a.probe_reply(
            "198.18.0.9:6000".parse().unwrap(),
            nonce,
            Duration::from_micros(1),
        );
        now += PROBE_INTERVAL;
    }
    a.tick(now, &mut dp);
    let report = a
        .drain()
        .into_iter()
        .find(|f| f.kind == kind::LINK_REPORT)
        .expect("a report");
    let report: LinkReport = report.parse().unwrap();
    assert_eq!(report.links[0].rtt_us, Some(300));
    assert!(report.links[0].up);
    assert!(report.links[0].loss < 0.01);
    // Then nothing answers: after three lost probes the link is reported down at once.
    let mut down = None;
    for _ in 0..5 {
        now += PROBE_INTERVAL;
        a.tick(now, &mut dp);
        if let Some(f) = a.drain().into_iter().find(|f| f.kind == kind::LINK_REPORT) {
            let r: LinkReport = f.parse().unwrap();
            if !r.links[0].up {
                down = Some(r);
                break;
            }
        }
    }
    let down = down.expect("the link reported down");
    assert!(down.links[0].loss > 0.3);
}

#[test]
fn what_the_node_owns_is_registered_again_after_a_reconnect() {
    let now = Instant::now();
    let mut a = registered(now);
    let dst = peer();
    a.user_request(
        1,
        UserRequest::RouteAdd(RouteRequest {
            id: None,
            nonce: None,
            dst,
            min_hops: Some(2),
            max_hops: None,
            avoid: Vec::new(),
            weight: None,
        }),
    );
    let req = a.drain().pop().unwrap();
    let info = RouteInfo {
        id: MeshRouteId(99),
        src: Key(a.key()),
        dst,
        path: vec![Key(a.key()), dst],
        state: RouteState::Active,
        min_hops: 2,
        max_hops: 16,
        avoid: vec![],
        weight: crate::manager::topology::RouteWeight::Hops,
        repairs: 0,
        reason: None,
        retry_in_ms: None,
    };
    a.frame(
        Frame::ok(kind::ROUTE_ADD, req.id, &info),
        now,
        &mut Fake::default(),
    );
    assert!(a.completions()[0].result.is_ok());
    a.user_request(2, UserRequest::LinkAdd(dst.0));
    let req = a.drain().pop().unwrap();
    a.frame(
        Frame::ok(kind::LINK_ADD, req.id, &LinkAdded { usable: false }),
        now,
        &mut Fake::default(),
    );
    // A request in flight when the connection drops fails.
    a.user_request(3, UserRequest::Nodes);
    a.disconnected();
    let done = a.completions();
    assert!(done.iter().any(|c| c.token == 3 && c.result.is_err()));
    a.connected(now);
    let reg: Register = a.drain().pop().unwrap().parse().unwrap();
    assert_eq!(reg.routes.len(), 1);
    assert_eq!(reg.routes[0].id, Some(MeshRouteId(99)));
    assert_eq!(reg.routes[0].min_hops, Some(2));
    assert_eq!(reg.links, vec![dst]);
}

#[test]
fn the_same_route_asked_twice_keeps_the_nonce_that_derives_its_id() {
    let now = Instant::now();
    let mut a = registered(now);
    let dst = peer();
    let ask = |a: &mut Agent, token: u64| {
        a.user_request(
            token,
            UserRequest::RouteAdd(RouteRequest {
                id: None,
                nonce: None,
                dst,
                min_hops: None,
                max_hops: None,
                avoid: Vec::new(),
                weight: None,
            }),
        );
        a.drain().pop().unwrap()
    };
    let first = ask(&mut a, 1);
    let asked: RouteRequest = first.parse().unwrap();
    let nonce = asked.nonce.unwrap();
    let id = MeshRouteId::derive(&a.key(), &nonce).unwrap();
    let info = RouteInfo {
        id,
        src: Key(a.key()),
        dst,
        path: vec![Key(a.key()), dst],
        state: RouteState::Active,
        min_hops: 1,
        max_hops: 16,
        avoid: vec![],
        weight: crate::manager::topology::RouteWeight::Hops,
        repairs: 0,
        reason: None,
        retry_in_ms: None,
    };
    a.frame(
        Frame::ok(kind::ROUTE_ADD, first.id, &info),
        now,
        &mut Fake::default(),
    );
    // Asked again (with a fresh nonce): the manager answers with the same route.
    let second = ask(&mut a, 2);
    a.frame(
        Frame::ok(kind::ROUTE_ADD, second.id, &info),
        now,
        &mut Fake::default(),
    );
    assert!(a.completions().iter().all(|c| c.result.is_ok()));
    let owned = a.owned_routes();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].id, Some(id));
    assert_eq!(
        owned[0].nonce,
        Some(nonce),
        "the first nonce, which derives the id"
    );
}

#[test]
fn a_silent_manager_is_given_up() {
    let t0 = Instant::now();
    let mut a = agent();
    a.connected(t0);
    assert_eq!(a.stale(t0 + Duration::from_secs(5)), None);
    assert!(
        a.stale(t0 + REGISTER_TIMEOUT + Duration::from_secs(1))
            .is_some()
    );
    let mut a = registered(t0);
    let mut dp = Fake::default();
    // Heartbeats go out; as long as the manager answers, the connection is fine.
    let mut now = t0;
    for _ in 0..10 {
        now += Duration::from_secs(1);
        a.tick(now, &mut dp);
        for f in a.drain() {
            if f.kind == kind::HEARTBEAT {
                a.frame(Frame::ok(kind::HEARTBEAT, f.id, &()), now, &mut dp);
            }
        }
        assert_eq!(a.stale(now), None);
    }
    // Then it stops answering.
    for _ in 0..3 {
        now += Duration::from_secs(1);
        a.tick(now, &mut dp);
        a.drain();
    }
    assert_eq!(a.stale(now), None);
    now += Duration::from_secs(1);
    assert!(matches!(a.stale(now), Some(Stale::Silent(_))));
}

/// An INSTALL of one route end for `peer` with `prefixes`, as route `route`.
fn end_install(route: u64, peer: Key, prefixes: &[&str]) -> Install {
    Install {
        route: MeshRouteId(route),
        rules: vec![RuleSpec::End {
            peer,
            prefixes: prefixes
                .iter()
                .map(|p| WirePrefix(p.parse().unwrap()))
                .collect(),
            first_hop: "198.18.0.2:6000".parse().unwrap(),
            out_id: 8,
            in_id: 9,
            peer_in_id: 8,
            prev_hop: "198.18.0.2:6000".parse().unwrap(),
        }],
        expire_ms: 9000,
    }
}

/// Send `install` to the agent; the error kind it answered with, if it refused.
fn install_refusal(a: &mut Agent, dp: &mut Fake, install: &Install, id: u64) -> Option<ErrorKind> {
    a.frame(
        Frame::request(kind::INSTALL, id, install),
        Instant::now(),
        dp,
    );
    let reply = a.drain().pop().unwrap();
    reply.reply::<IgnoredAny>().err().map(|e| e.kind)
}

#[test]
fn a_manager_cannot_install_what_the_node_did_not_ask_for() {
    let now = Instant::now();
    let mut a = registered(now);
    let mut dp = Fake::default();
    let stranger = Key(PrivateKey::from_bytes([6; 32]).public_key());
    // Unsolicited ends: a peer no accept rule names, or the accepted peer with an address
    // outside its rule, or with a network instead of host addresses.
    for (install, what) in [
        (end_install(70, stranger, &["10.77.0.9/32"]), "a stranger"),
        (
            end_install(71, peer(), &["10.99.0.9/32"]),
            "outside the rule",
        ),
        (end_install(72, peer(), &["10.77.0.0/24"]), "a network"),
        (end_install(73, peer(), &["0.0.0.0/0"]), "everything"),
    ] {
        assert_eq!(
            install_refusal(&mut a, &mut dp, &install, 60),
            Some(ErrorKind::NotAllowed),
            "{what}"
        );
    }
    assert!(dp.applied.is_empty(), "something was applied");
    assert!(a.held().is_empty());
    // The accepted peer with a host address inside its rule is fine.
    assert_eq!(
        install_refusal(
            &mut a,
            &mut dp,
            &end_install(74, peer(), &["10.77.0.9/32"]),
            61
        ),
        None
    );
    assert_eq!(dp.applied.len(), 1);
}

#[test]
fn a_route_the_node_asked_for_must_end_at_the_node_it_asked_for() {
    let now = Instant::now();
    let mut a = registered(now);
    let mut dp = Fake::default();
    let wanted = Key(PrivateKey::from_bytes([6; 32]).public_key());
    a.user_request(
        1,
        UserRequest::RouteAdd(RouteRequest {
            id: None,
            nonce: None,
            dst: wanted,
            min_hops: None,
            max_hops: None,
            avoid: Vec::new(),
            weight: None,
        }),
    );
    let request = a.drain().pop().unwrap();
    let sent: RouteRequest = request.parse().unwrap();
    // The node picked the nonce, so it knows the route's id before the manager answers.
    let id = MeshRouteId::derive(&a.key(), &sent.nonce.unwrap()).unwrap();
    // The manager puts another node (here the accepted peer) at the end of it: refused,
    // although an accept rule would let that peer in on a route of its own.
    let hijack = end_install(id.0, peer(), &["10.77.0.9/32"]);
    assert_eq!(
        install_refusal(&mut a, &mut dp, &hijack, 62),
        Some(ErrorKind::NotAllowed)
    );
    // The end it asked for is installed, although no accept rule names that node.
    let honest = end_install(id.0, wanted, &["10.50.0.1/32"]);
    assert_eq!(install_refusal(&mut a, &mut dp, &honest, 63), None);
    assert_eq!(dp.applied.len(), 1);
}

#[test]
fn an_end_taking_another_peers_prefix_is_not_allowed() {
    let now = Instant::now();
    let mut a = registered(now);
    let mut dp = Fake {
        claimed: true,
        ..Fake::default()
    };
    assert_eq!(
        install_refusal(
            &mut a,
            &mut dp,
            &end_install(75, peer(), &["10.77.0.9/32"]),
            64
        ),
        Some(ErrorKind::NotAllowed)
    );
}

#[test]
fn a_refused_registration_gives_the_connection_up_at_once_with_the_managers_reason() {
    let now = Instant::now();
    let mut a = agent();
    a.connected(now);
    let frames = a.drain();
    let refusal = ProtoError::new(
        ErrorKind::NotAllowed,
        "address 10.77.0.1/32 belongs to node 0404",
    );
    a.frame(
        Frame::error(kind::REGISTER, frames[0].id, &refusal),
        now,
        &mut Fake::default(),
    );
    assert!(!a.is_registered());
    assert_eq!(a.stale(now), Some(Stale::Refused(refusal.clone())));
    assert_eq!(
        Stale::Refused(refusal).to_string(),
        "the manager refused to register this node: not_allowed: address 10.77.0.1/32 belongs to node 0404"
    );
    // A new connection starts clean: REGISTER again, and no stale refusal.
    a.disconnected();
    a.connected(now);
    assert_eq!(a.stale(now), None);
    assert_eq!(a.drain()[0].kind, kind::REGISTER);
}
