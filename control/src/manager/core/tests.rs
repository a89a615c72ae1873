//! The manager against a simulated mesh of real engine cores (`manager::sim`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use skywire_dataplane::crypto::PrivateKey;

use super::super::proto::{
    Bytes32, LinkAdded, LinkMeasure, LinkReport, LinkState, MeshRouteId, Neighbours,
};
use super::super::proto::{
    ErrorKind, HeldRule, Key, Register, Remove, RouteInfo, RouteRequest, RouteState, WirePrefix,
    kind,
};
use super::super::sim::{Sim, Wire};
use super::*;
use crate::node::agent::{UserReply, UserRequest};

const MS: Duration = Duration::from_millis(1);

fn keys(n: usize) -> Vec<PrivateKey> {
    (0..n)
        .map(|i| {
            let mut b = [0u8; 32];
            b[0] = 1;
            b[1..9].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            PrivateKey::from_bytes(b)
        })
        .collect()
}

/// A ring of `n` nodes with chords: node i links to i+1 and to i+7 (mod n).
fn mesh(n: usize, expiry: Duration) -> Sim {
    let ks = keys(n);
    let pks: Vec<PublicKey> = ks.iter().map(PrivateKey::public_key).collect();
    let mut links = Vec::new();
    for i in 0..n {
        links.push((pks[i], pks[(i + 1) % n]));
        if n > 14 {
            links.push((pks[i], pks[(i + 7) % n]));
        }
    }
    let params = Params {
        links,
        rule_expiry: expiry,
        setup_timeout: Duration::from_millis(500),
        ..Params::default()
    };
    let mut sim = Sim::new(n, params, ks);
    for i in 0..n {
        sim.connect(i);
    }
    sim.run(100 * MS, 10 * MS);
    sim
}

/// A route request from its JSON form.
fn route_from_json(body: Value) -> RouteRequest {
    serde_json::from_value(body).expect("a route request")
}

/// A route request to node `dst`, with the manager's defaults.
fn route_to(sim: &Sim, dst: usize) -> RouteRequest {
    route_from_json(json!({"dst": sim.pk(dst).to_string()}))
}

/// `route rm` of `id` from node `src`, which must succeed.
fn remove_route(sim: &mut Sim, src: usize, id: MeshRouteId) {
    let t = sim.user(src, UserRequest::RouteRemove(id));
    sim.run(50 * MS, 5 * MS);
    assert!(sim.answer(src, t).expect("an answer").result.is_ok());
}

fn add_route(sim: &mut Sim, src: usize, dst: usize, extra: Value) -> Result<RouteInfo, ProtoError> {
    let mut body = json!({"dst": sim.pk(dst).to_string()});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let request = route_from_json(body);
    let token = sim.user(src, UserRequest::RouteAdd(request));
    sim.run(50 * MS, 5 * MS);
    let answer = sim.answer(src, token).expect("an answer").result.clone();
    answer.map(|reply| match reply {
        UserReply::Route(info) => info,
        other => panic!("not a route: {other:?}"),
    })
}

/// An IP packet from src arrives at dst, and a ping comes back.
fn assert_traffic(sim: &mut Sim, src: usize, dst: usize, tag: &[u8]) {
    let before = sim.delivered(dst).len();
    sim.send_ip(src, dst, tag);
    sim.run(20 * MS, 5 * MS);
    assert!(
        sim.delivered(dst)[before..]
            .iter()
            .any(|p| p.ends_with(tag)),
        "packet {tag:?} from {src} did not reach {dst}"
    );
    let in_id = sim.end_to(src, dst).expect("a route end");
    let nonce = u64::from_le_bytes(*b"pingping") ^ before as u64;
    assert!(sim.ping(src, in_id, nonce));
    sim.run(20 * MS, 5 * MS);
    assert!(
        sim.nodes[src].pongs.iter().any(|(n, _)| *n == nonce),
        "no pong"
    );
}

fn path_indices(sim: &Sim, info: &RouteInfo) -> Vec<usize> {
    info.path
        .iter()
        .map(|k| {
            (0..sim.nodes.len())
                .find(|&i| sim.pk(i) == k.0)
                .expect("known node")
        })
        .collect()
}

fn assert_valid_path(sim: &Sim, path: &[usize], src: usize, dst: usize) {
    let n = sim.nodes.len();
    assert_eq!(path.first(), Some(&src));
    assert_eq!(path.last(), Some(&dst));
    let unique: HashSet<_> = path.iter().collect();
    assert_eq!(unique.len(), path.len(), "simple path");
    for w in path.windows(2) {
        let d = (w[1] + n - w[0]) % n;
        assert!([1, 7, n - 1, n - 7].contains(&d), "{w:?} is not a link");
    }
}

#[test]
fn routes_are_found_and_installed_in_a_50_node_mesh() {
    let mut sim = mesh(50, Duration::from_secs(30));
    let pairs = [(0, 25), (3, 40), (10, 11), (49, 20), (7, 33)];
    for (src, dst) in pairs {
        let info = add_route(&mut sim, src, dst, json!({})).unwrap();
        assert_eq!(info.state, RouteState::Active);
        let path = path_indices(&sim, &info);
        assert_valid_path(&sim, &path, src, dst);
        // Every hop holds its rules: ends one, relays two.
        for (pos, &node) in path.iter().enumerate() {
            let expected = if pos == 0 || pos == path.len() - 1 {
                1
            } else {
                2
            };
            assert!(
                sim.manager_rules(node) >= expected,
                "node {node} lacks its rules"
            );
        }
        assert_traffic(&mut sim, src, dst, format!("hello {src}->{dst}").as_bytes());
        assert_traffic(&mut sim, dst, src, format!("back {dst}->{src}").as_bytes());
    }
    // 0 -> 25 with the ring and chords of 7: at least 3 links, at most ~5.
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    assert_eq!(routes.len(), pairs.len());
    // Hop limits and avoid lists are honoured.
    let info = add_route(&mut sim, 1, 2, json!({"min_hops": 3})).unwrap();
    let path = path_indices(&sim, &info);
    assert!(path.len() > 3, "{path:?}");
    assert_valid_path(&sim, &path, 1, 2);
    let avoid = sim.pk(8).to_string();
    let info = add_route(&mut sim, 1, 15, json!({"avoid": [avoid]})).unwrap();
    let path = path_indices(&sim, &info);
    assert!(!path.contains(&8), "{path:?}");
    let err = add_route(&mut sim, 1, 25, json!({"max_hops": 1})).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NoPath);
}

#[test]
fn a_removed_node_gets_its_routes_repaired() {
    let mut sim = mesh(50, Duration::from_secs(30));
    let info = add_route(&mut sim, 0, 25, json!({})).unwrap();
    let path = path_indices(&sim, &info);
    assert_traffic(&mut sim, 0, 25, b"before");
    let victim = path[1];
    sim.kill(victim);
    sim.run(100 * MS, 10 * MS);
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes.iter().find(|r| r.id == info.id).unwrap();
    assert_eq!(route.state, RouteState::Active);
    assert_eq!(route.repairs, 1);
    // The metrics' snapshot tells the same story: two setups that committed (the first,
    // the repair), one of them a repair, a computation for each, the victim offline.
    let stats = sim.manager.as_ref().unwrap().stats();
    assert_eq!(
        (stats.setups_ok, stats.repairs, stats.setups_failed),
        (2, 1, 0)
    );
    assert!(stats.computation.count >= 2, "{stats:?}");
    assert_eq!(stats.nodes_offline, 1);
    assert_eq!(stats.nodes_online, 49);
    assert!(stats.routes.contains(&(RouteState::Active, 1)), "{stats:?}");
    let new_path = path_indices(&sim, route);
    assert!(!new_path.contains(&victim), "{new_path:?}");
    assert_valid_path(&sim, &new_path, 0, 25);
    assert_traffic(&mut sim, 0, 25, b"after the repair");
    assert_traffic(&mut sim, 25, 0, b"and back");
    // The old path's surviving relays no longer hold the route's old rules.
    for &node in &path[2..path.len() - 1] {
        if !new_path.contains(&node) {
            assert_eq!(sim.manager_rules(node), 0, "node {node} kept old rules");
        }
    }
    // A node cannot withdraw a link of the manager's config.
    let a = new_path[1];
    let b = new_path[2];
    let token = sim.user(a, UserRequest::LinkRemove(sim.pk(b)));
    sim.run(20 * MS, 5 * MS);
    // Config links cannot be withdrawn by a node.
    assert_eq!(
        sim.answer(a, token)
            .unwrap()
            .result
            .as_ref()
            .unwrap_err()
            .kind,
        ErrorKind::NotAllowed
    );
}

#[test]
fn a_dead_link_is_found_by_probes_and_routed_around() {
    let mut sim = mesh(50, Duration::from_secs(30));
    let info = add_route(&mut sim, 0, 25, json!({})).unwrap();
    let path = path_indices(&sim, &info);
    let (a, b) = (path[1], path[2]);
    // Probes have measured the links by now.
    sim.run(Duration::from_secs(3), 50 * MS);
    sim.cut(a, b);
    // Three lost probes (one a second), then the report, then the repair.
    sim.run(Duration::from_secs(5), 50 * MS);
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes.iter().find(|r| r.id == info.id).unwrap();
    assert_eq!(route.state, RouteState::Active);
    assert_eq!(route.repairs, 1);
    let new_path = path_indices(&sim, route);
    assert!(
        !new_path
            .windows(2)
            .any(|w| (w[0] == a && w[1] == b) || (w[0] == b && w[1] == a)),
        "{new_path:?} still crosses {a}-{b}"
    );
    assert!(
        sim.log
            .iter()
            .any(|(level, l)| *level == Level::Warn && l.contains("is down")),
        "{:?}",
        sim.log
    );
    assert_traffic(&mut sim, 0, 25, b"around the dead link");
    // The link comes back and is reported up; the route stays where it is.
    sim.mend(a, b);
    sim.run(Duration::from_secs(3), 50 * MS);
    assert!(
        sim.log
            .iter()
            .any(|(level, l)| *level == Level::Info && l.contains("is up")),
        "{:?}",
        sim.log
    );
}

#[test]
fn a_silent_node_is_declared_dead_after_missed_heartbeats() {
    let mut sim = mesh(50, Duration::from_secs(30));
    let info = add_route(&mut sim, 0, 25, json!({})).unwrap();
    let path = path_indices(&sim, &info);
    let victim = path[1];
    // Hung: no frames either way, no packets forwarded.
    sim.hang(victim);
    sim.run(Duration::from_millis(3500), 50 * MS);
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes.iter().find(|r| r.id == info.id).unwrap();
    assert_eq!(route.state, RouteState::Active);
    assert!(!path_indices(&sim, route).contains(&victim));
    assert_traffic(&mut sim, 0, 25, b"around the hung node");
}

#[test]
fn a_hop_that_never_acks_is_rolled_back_and_leaves_no_rule() {
    let mut sim = mesh(12, Duration::from_secs(30));
    // On a ring of 12 without chords, 0 -> 3 goes 0-1-2-3.
    sim.nodes[2].wire = Wire::AcksLost;
    let token = sim.user(0, UserRequest::RouteAdd(route_to(&sim, 3)));
    sim.run(100 * MS, 10 * MS);
    // Hop 2 installed its rules, but its acknowledgement never arrives.
    assert!(sim.manager_rules(2) > 0);
    assert!(sim.answer(0, token).is_none());
    sim.run(Duration::from_millis(500), 10 * MS);
    let err = sim
        .answer(0, token)
        .expect("answered")
        .result
        .clone()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::SetupFailed);
    assert!(err.message.contains("in time"), "{err}");
    for i in 0..12 {
        assert_eq!(
            sim.manager_rules(i),
            0,
            "node {i} kept a rule after rollback"
        );
    }
    assert!(
        sim.manager
            .as_ref()
            .unwrap()
            .routes(sim.mesh.now())
            .is_empty()
    );
    assert!(
        sim.log
            .iter()
            .any(|(level, l)| *level == Level::Warn && l.contains("rolled back")),
        "{:?}",
        sim.log
    );
    // The manager still serves: with the hop fixed, the same route works.
    sim.nodes[2].wire = Wire::Up;
    let info = add_route(&mut sim, 0, 3, json!({})).unwrap();
    assert_eq!(info.state, RouteState::Active);
    assert_traffic(&mut sim, 0, 3, b"after rollback");
}

#[test]
fn a_hop_that_refuses_rolls_back_the_others() {
    let mut sim = mesh(12, Duration::from_secs(30));
    // 0 -> 4 goes 0-1-2-3-4; node 3 refuses its rules.
    sim.nodes[3].wire = Wire::Refuses;
    let err = add_route(&mut sim, 0, 4, json!({})).unwrap_err();
    assert_eq!(err.kind, ErrorKind::SetupFailed);
    assert!(err.message.contains("refused"), "{err}");
    for i in 0..12 {
        assert_eq!(
            sim.manager_rules(i),
            0,
            "node {i} kept a rule after rollback"
        );
    }
    assert!(
        sim.manager
            .as_ref()
            .unwrap()
            .routes(sim.mesh.now())
            .is_empty()
    );
}

#[test]
fn expiry_removes_abandoned_rules() {
    let mut sim = mesh(12, Duration::from_secs(3));
    let info = add_route(&mut sim, 0, 4, json!({})).unwrap();
    let path = path_indices(&sim, &info);
    assert_traffic(&mut sim, 0, 4, b"alive");
    // Kept alive by the ends' keepalives while both run.
    sim.run(Duration::from_secs(8), 100 * MS);
    for &n in &path {
        assert!(
            sim.manager_rules(n) > 0,
            "node {n} lost a live route's rules"
        );
    }
    // The manager goes away and the source dies: nobody removes the rules, and nothing
    // keeps them alive. They expire.
    // The destination's end expires first (nothing arrives), then the relays' rules its
    // keepalives fed: two expiries, each up to a second late.
    sim.stop_manager();
    sim.kill(0);
    sim.run(Duration::from_secs(10), 100 * MS);
    for &n in &path[1..] {
        assert_eq!(sim.manager_rules(n), 0, "node {n} kept an abandoned rule");
        assert!(sim.nodes[n].agent.held().is_empty());
    }
}

#[test]
fn a_manager_restart_never_stops_traffic() {
    let mut sim = mesh(50, Duration::from_secs(30));
    let info = add_route(&mut sim, 0, 25, json!({"min_hops": 2})).unwrap();
    assert_traffic(&mut sim, 0, 25, b"first");
    let mut sent = 0u32;
    let mut send_some = |sim: &mut Sim, rounds: u32| {
        for _ in 0..rounds {
            sent += 1;
            sim.send_ip(0, 25, format!("seq {sent:06}").as_bytes());
            sim.run(10 * MS, 10 * MS);
        }
    };
    send_some(&mut sim, 20);
    sim.stop_manager();
    send_some(&mut sim, 50);
    sim.start_manager();
    send_some(&mut sim, 100);
    let delivered = sim
        .delivered(25)
        .iter()
        .filter(|p| p.windows(4).any(|w| w == b"seq "))
        .count();
    assert_eq!(
        delivered, sent as usize,
        "packets were lost across the restart"
    );
    // The new manager knows the route again (the source re-registered it) and it is
    // active, with no rules of the old setup left behind.
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes
        .iter()
        .find(|r| r.id == info.id)
        .expect("route adopted");
    assert_eq!(route.state, RouteState::Active);
    let path = path_indices(&sim, route);
    let total: usize = (0..50).map(|i| sim.manager_rules(i)).sum();
    assert_eq!(total, 2 + 2 * (path.len() - 2), "stale rules left: {total}");
    assert_traffic(&mut sim, 0, 25, b"after restart");
}

#[test]
fn bad_requests_are_refused_and_the_manager_keeps_serving() {
    let mut sim = mesh(12, Duration::from_secs(30));
    // An unknown route id.
    let t = sim.user(1, UserRequest::RouteRemove(MeshRouteId(12345)));
    sim.run(10 * MS, 5 * MS);
    assert_eq!(
        sim.answer(1, t).unwrap().result.as_ref().unwrap_err().kind,
        ErrorKind::UnknownRoute
    );
    // Another node's route cannot be removed.
    let info = add_route(&mut sim, 0, 3, json!({})).unwrap();
    let t = sim.user(1, UserRequest::RouteRemove(info.id));
    sim.run(10 * MS, 5 * MS);
    assert_eq!(
        sim.answer(1, t).unwrap().result.as_ref().unwrap_err().kind,
        ErrorKind::UnknownRoute
    );
    // A body of the wrong shape, an unknown kind, a route to itself, an unknown node.
    // (The first two are frames no agent would send: injected past it.)
    let t = sim.raw(1, kind::ROUTE_ADD, &json!({"dst": 5}));
    let t2 = sim.raw(1, 0x7e, &json!({}));
    let me = sim.pk(1).to_string();
    let t3 = sim.user(
        1,
        UserRequest::RouteAdd(route_from_json(json!({"dst": me}))),
    );
    let stranger = PrivateKey::from_bytes([77; 32]).public_key().to_string();
    let t4 = sim.user(
        1,
        UserRequest::RouteAdd(route_from_json(json!({"dst": stranger}))),
    );
    let t5 = sim.user(
        1,
        UserRequest::RouteAdd(route_from_json(
            json!({"dst": sim.pk(5).to_string(), "min_hops": 4, "max_hops": 2}),
        )),
    );
    sim.run(10 * MS, 5 * MS);
    let raw = |t: u64| {
        sim.nodes[1].raw_replies[&t]
            .reply::<Value>()
            .unwrap_err()
            .kind
    };
    let typed = |t: u64| sim.answer(1, t).unwrap().result.as_ref().unwrap_err().kind;
    let kinds: Vec<ErrorKind> = vec![raw(t), raw(t2), typed(t3), typed(t4), typed(t5)];
    assert_eq!(
        kinds,
        [
            ErrorKind::BadRequest,
            ErrorKind::BadRequest,
            ErrorKind::BadRequest,
            ErrorKind::UnknownNode,
            ErrorKind::BadRequest
        ]
    );
    // The route still carries traffic and can be removed by its owner.
    assert_traffic(&mut sim, 0, 3, b"still fine");
    let t = sim.user(0, UserRequest::RouteRemove(info.id));
    sim.run(10 * MS, 5 * MS);
    assert!(sim.answer(0, t).unwrap().result.is_ok());
    for i in 0..12 {
        assert_eq!(sim.manager_rules(i), 0);
    }
}

#[test]
fn requests_before_register_and_from_unknown_connections_are_refused() {
    let params = Params::default();
    let mut core = ManagerCore::new(params, Rng::seeded(1));
    let now = Instant::now();
    // A frame on a connection that never authenticated: closed.
    core.frame(ConnId(9), Frame::request(kind::NODES, 1, &Value::Null), now);
    assert!(matches!(
        core.drain().as_slice(),
        [Output::Close(ConnId(9), _)]
    ));
    // Authenticated but not registered: refused, connection kept.
    let key = PrivateKey::from_bytes([5; 32]).public_key();
    core.authenticated(ConnId(3), key, now);
    core.frame(
        ConnId(3),
        Frame::request(kind::ROUTE_LIST, 2, &Value::Null),
        now,
    );
    let out = core.drain();
    let reply = out
        .iter()
        .find_map(|o| match o {
            Output::Send(ConnId(3), f) => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        reply.reply::<Value>().unwrap_err().kind,
        ErrorKind::Unauthenticated
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Close(..))));
    // A key outside `allow` is told so in the answer to its REGISTER, can do nothing
    // else, and is closed if it lingers.
    let mut allow = HashSet::new();
    allow.insert(key);
    let mut core = ManagerCore::new(
        Params {
            allow: Some(allow),
            ..Params::default()
        },
        Rng::seeded(1),
    );
    let other = PrivateKey::from_bytes([6; 32]).public_key();
    core.authenticated(ConnId(4), other, now);
    assert!(core.drain().iter().all(|o| !matches!(o, Output::Close(..))));
    let answer = |core: &mut ManagerCore| {
        core.drain()
            .into_iter()
            .find_map(|o| match o {
                Output::Send(ConnId(4), f) => Some(f),
                _ => None,
            })
            .unwrap()
            .reply::<Value>()
            .unwrap_err()
    };
    core.frame(ConnId(4), Frame::request(kind::NODES, 1, &Value::Null), now);
    assert_eq!(answer(&mut core).message, "REGISTER first");
    let register = Register {
        endpoint: Some("198.18.0.4:6000".parse().unwrap()),
        ..Register::default()
    };
    core.frame(ConnId(4), Frame::request(kind::REGISTER, 2, &register), now);
    let refusal = answer(&mut core);
    assert_eq!(refusal.kind, ErrorKind::NotAllowed);
    assert!(
        refusal.message.contains(&other.to_string()) && refusal.message.contains("manager.allow"),
        "{}",
        refusal.message
    );
    assert!(core.mesh(now).nodes.is_empty(), "a refused key registered");
    core.tick(now + REGISTER_TIMEOUT + Duration::from_secs(1));
    assert!(
        core.drain()
            .iter()
            .any(|o| matches!(o, Output::Close(ConnId(4), CloseReason::NoRegister)))
    );
}

#[test]
fn links_declared_by_nodes_are_routed_over_and_withdrawn_only_by_them() {
    let mut sim = mesh(50, Duration::from_secs(30));
    let before = add_route(&mut sim, 0, 25, json!({})).unwrap();
    assert!(before.path.len() > 2);
    // Node 0 declares a direct link to 25: not used until 25 declares it too.
    let t = sim.user(0, UserRequest::LinkAdd(sim.pk(25)));
    sim.run(Duration::from_secs(1), 50 * MS);
    assert_eq!(
        sim.answer(0, t).unwrap().result,
        Ok(UserReply::LinkAdded(LinkAdded { usable: false }))
    );
    // The same request again is the same route, not a second one.
    let again = add_route(&mut sim, 0, 25, json!({})).unwrap();
    assert_eq!(again.id, before.id);
    remove_route(&mut sim, 0, before.id);
    let still = add_route(&mut sim, 0, 25, json!({})).unwrap();
    assert!(still.path.len() > 2, "a one-sided link was routed over");
    remove_route(&mut sim, 0, still.id);
    let t = sim.user(25, UserRequest::LinkAdd(sim.pk(0)));
    sim.run(Duration::from_secs(2), 50 * MS);
    assert_eq!(
        sim.answer(25, t).unwrap().result,
        Ok(UserReply::LinkAdded(LinkAdded { usable: true }))
    );
    let direct = add_route(&mut sim, 0, 25, json!({})).unwrap();
    assert_eq!(path_indices(&sim, &direct), vec![0, 25]);
    assert_traffic(&mut sim, 0, 25, b"over the declared link");
    // A node that did not declare it cannot withdraw it; a link to oneself is refused.
    let t1 = sim.user(3, UserRequest::LinkRemove(sim.pk(0)));
    let t2 = sim.user(3, UserRequest::LinkAdd(sim.pk(3)));
    sim.run(20 * MS, 5 * MS);
    assert_eq!(
        sim.answer(3, t1).unwrap().result.as_ref().unwrap_err().kind,
        ErrorKind::BadRequest
    );
    assert_eq!(
        sim.answer(3, t2).unwrap().result.as_ref().unwrap_err().kind,
        ErrorKind::BadRequest
    );
    // Its owner withdraws it: the route over it is rebuilt the long way.
    let t = sim.user(0, UserRequest::LinkRemove(sim.pk(25)));
    sim.run(100 * MS, 10 * MS);
    assert!(sim.answer(0, t).unwrap().result.is_ok());
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes.iter().find(|r| r.id == direct.id).unwrap();
    assert_eq!(route.state, RouteState::Active);
    assert!(path_indices(&sim, route).len() > 2);
    assert_traffic(&mut sim, 0, 25, b"the long way again");
}

/// A manager core with nodes 1..=n registered on connections 1..=n, endpoints
/// 198.18.0.N:6000, TUN 10.9.0.N/32, and config links 1-2, 2-3, ... .
fn core_with(n: u8) -> (ManagerCore, Vec<PublicKey>, Instant) {
    let keys: Vec<PublicKey> = (1..=n)
        .map(|i| PrivateKey::from_bytes([i; 32]).public_key())
        .collect();
    let links = keys.windows(2).map(|w| (w[0], w[1])).collect();
    let mut core = ManagerCore::new(
        Params {
            links,
            ..Params::default()
        },
        Rng::seeded(3),
    );
    let now = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        let conn = ConnId(i as u64 + 1);
        core.authenticated(conn, *key, now);
        let register = Register {
            endpoint: Some(format!("198.18.0.{}:6000", i + 1).parse().unwrap()),
            tun: vec![WirePrefix(format!("10.9.0.{}/32", i + 1).parse().unwrap())],
            ..Register::default()
        };
        core.frame(conn, Frame::request(kind::REGISTER, 1, &register), now);
    }
    // Each node answers the NEIGHBOURS it was sent (its reports about a neighbour that
    // registered later count only after that), then reports its links up, as its probes
    // would: a link is routed over only once both ends proved it.
    answer_neighbours(&mut core, now);
    for (i, pair) in keys.windows(2).enumerate() {
        let (a, b) = (i as u64 + 1, i as u64 + 2);
        report_link(&mut core, a, pair[1], 300, now);
        report_link(&mut core, b, pair[0], 300, now);
    }
    core.drain();
    (core, keys, now)
}

/// Every node answers the `NEIGHBOURS` requests the core sent it (drained here).
fn answer_neighbours(core: &mut ManagerCore, now: Instant) {
    let requests: Vec<(ConnId, u64)> = core
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(conn, f) if f.kind == kind::NEIGHBOURS => Some((conn, f.id)),
            _ => None,
        })
        .collect();
    for (conn, id) in requests {
        core.frame(conn, Frame::ok(kind::NEIGHBOURS, id, &Value::Null), now);
    }
}

fn sent(out: &[Output], conn: ConnId, kind_: u8) -> Vec<Frame> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(c, f) if *c == conn && f.kind == kind_ => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn only_the_hop_an_install_went_to_can_acknowledge_it() {
    let (mut core, keys, now) = core_with(4);
    let add = RouteRequest {
        id: None,
        nonce: Some(Bytes32([5; 32])),
        dst: Key(keys[2]),
        min_hops: None,
        max_hops: None,
        avoid: vec![],
        weight: None,
    };
    core.frame(ConnId(1), Frame::request(kind::ROUTE_ADD, 9, &add), now);
    let out = core.drain();
    let to_b = sent(&out, ConnId(2), kind::INSTALL);
    let to_c = sent(&out, ConnId(3), kind::INSTALL);
    assert_eq!((to_b.len(), to_c.len()), (1, 1));
    // Node 4, on no path, answers every INSTALL id it can guess, and refuses some too.
    for id in 0..64 {
        core.frame(ConnId(4), Frame::ok(kind::INSTALL, id, &Value::Null), now);
        let refusal = ProtoError::new(ErrorKind::IdInUse, "no");
        core.frame(ConnId(4), Frame::error(kind::INSTALL, id, &refusal), now);
    }
    assert!(sent(&core.drain(), ConnId(1), kind::INSTALL).is_empty());
    // The real acknowledgements still count: phase 2 goes to the source.
    core.frame(
        ConnId(2),
        Frame::ok(kind::INSTALL, to_b[0].id, &Value::Null),
        now,
    );
    core.frame(
        ConnId(3),
        Frame::ok(kind::INSTALL, to_c[0].id, &Value::Null),
        now,
    );
    let out = core.drain();
    let to_a = sent(&out, ConnId(1), kind::INSTALL);
    assert_eq!(to_a.len(), 1);
    core.frame(
        ConnId(1),
        Frame::ok(kind::INSTALL, to_a[0].id, &Value::Null),
        now,
    );
    let out = core.drain();
    let reply = sent(
        &out,
        ConnId(1),
        kind::ROUTE_ADD | super::super::proto::REPLY,
    );
    let info: RouteInfo = reply[0].reply().unwrap();
    assert_eq!(info.state, RouteState::Active);
}

#[test]
fn addresses_are_host_addresses_and_nobody_takes_another_nodes() {
    let (mut core, keys, now) = core_with(3);
    let thief = PrivateKey::from_bytes([40; 32]).public_key();
    core.authenticated(ConnId(40), thief, now);
    for (tun, expected) in [
        ("10.9.0.2/32", ErrorKind::NotAllowed),
        ("0.0.0.0/0", ErrorKind::BadRequest),
        ("10.9.0.0/24", ErrorKind::BadRequest),
    ] {
        let register = Register {
            endpoint: Some("198.18.0.40:6000".parse().unwrap()),
            tun: vec![WirePrefix(tun.parse().unwrap())],
            ..Register::default()
        };
        core.frame(
            ConnId(40),
            Frame::request(kind::REGISTER, 1, &register),
            now,
        );
        let out = core.drain();
        let reply = sent(
            &out,
            ConnId(40),
            kind::REGISTER | super::super::proto::REPLY,
        );
        assert_eq!(
            reply[0].reply::<Value>().unwrap_err().kind,
            expected,
            "{tun}"
        );
    }
    let _ = keys;
}

#[test]
fn a_route_is_adopted_only_from_a_node_holding_its_end_and_orphans_are_removed() {
    let (mut core, keys, now) = core_with(3);
    // Node 2 (a relay of some route 77 of node 1) claims it after a restart: refused.
    let claim = Register {
        endpoint: Some("198.18.0.2:6000".parse().unwrap()),
        tun: vec![WirePrefix("10.9.0.2/32".parse().unwrap())],
        routes: vec![RouteRequest {
            id: Some(MeshRouteId(77)),
            nonce: Some(Bytes32([5; 32])),
            dst: Key(keys[2]),
            min_hops: None,
            max_hops: None,
            avoid: vec![],
            weight: None,
        }],
        rules: vec![HeldRule {
            route: MeshRouteId(77),
            in_id: 5,
            end: false,
        }],
        ..Register::default()
    };
    core.authenticated(ConnId(22), keys[1], now);
    core.frame(ConnId(22), Frame::request(kind::REGISTER, 1, &claim), now);
    core.drain();
    assert!(core.routes(now).is_empty());
    // Nobody claims route 77: its rule at node 2 is removed after the grace period.
    let later = now + ORPHAN_GRACE + Duration::from_millis(100);
    core.frame(
        ConnId(22),
        Frame::request(kind::HEARTBEAT, 2, &Value::Null),
        later,
    );
    core.tick(later);
    let out = core.drain();
    let removes = sent(&out, ConnId(22), kind::REMOVE);
    assert_eq!(removes.len(), 1);
    let remove: Remove = removes[0].parse().unwrap();
    assert_eq!((remove.route, remove.in_ids), (MeshRouteId(77), vec![5]));
}

#[test]
fn a_route_whose_requester_leaves_during_setup_is_dropped_and_rolled_back() {
    let (mut core, keys, now) = core_with(3);
    let add = RouteRequest {
        id: None,
        nonce: Some(Bytes32([5; 32])),
        dst: Key(keys[2]),
        min_hops: None,
        max_hops: None,
        avoid: vec![],
        weight: None,
    };
    core.frame(ConnId(1), Frame::request(kind::ROUTE_ADD, 9, &add), now);
    core.drain();
    core.disconnected(ConnId(1), now);
    let out = core.drain();
    assert!(core.routes(now).is_empty());
    assert_eq!(sent(&out, ConnId(2), kind::REMOVE).len(), 1);
    assert_eq!(sent(&out, ConnId(3), kind::REMOVE).len(), 1);
}

#[test]
fn routes_of_a_source_gone_for_good_are_dropped() {
    let mut sim = mesh(12, Duration::from_secs(3));
    let _ = add_route(&mut sim, 0, 4, json!({})).unwrap();
    sim.kill(0);
    sim.run(Duration::from_secs(5), 100 * MS);
    assert!(
        sim.manager
            .as_ref()
            .unwrap()
            .routes(sim.mesh.now())
            .is_empty()
    );
    assert!(
        sim.log
            .iter()
            .any(|(level, l)| *level == Level::Warn && l.contains("its source has been away")),
        "{:?}",
        sim.log
    );
}

#[test]
fn a_view_too_large_for_a_frame_is_refused_without_closing_the_connection() {
    let mut core = ManagerCore::new(Params::default(), Rng::seeded(9));
    let now = Instant::now();
    // About 150 bytes per node: 9000 nodes make a view of about 1.3 MiB.
    let n: u32 = 9000;
    for i in 1..=n {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_le_bytes());
        core.authenticated(ConnId(u64::from(i)), PublicKey::from_bytes(bytes), now);
        let register = Register {
            endpoint: Some(
                format!("198.18.{}.{}:6000", i / 250, i % 250)
                    .parse()
                    .unwrap(),
            ),
            ..Register::default()
        };
        core.frame(
            ConnId(u64::from(i)),
            Frame::request(kind::REGISTER, 1, &register),
            now,
        );
    }
    core.drain();
    core.frame(ConnId(1), Frame::request(kind::NODES, 2, &Value::Null), now);
    let out = core.drain();
    let reply = &sent(&out, ConnId(1), kind::NODES | super::super::proto::REPLY)[0];
    let Err(err) = reply.reply::<Value>() else {
        panic!("a view of {n} nodes was sent whole");
    };
    assert!(err.message.contains("more than a frame holds"), "{err}");
    assert!(super::super::proto::encode(reply, None).is_ok());
    assert!(!out.iter().any(|o| matches!(o, Output::Close(..))));
}

/// Register `key` on `conn` with TUN addresses `tun` and endpoint 198.18.0.`n`; the error
/// kind and message of the refusal, if refused.
fn register_with(
    core: &mut ManagerCore,
    conn: u64,
    key: PublicKey,
    n: u8,
    tun: &[&str],
    now: Instant,
) -> Option<(ErrorKind, String)> {
    core.authenticated(ConnId(conn), key, now);
    let register = Register {
        endpoint: Some(format!("198.18.0.{n}:6000").parse().unwrap()),
        tun: tun.iter().map(|p| WirePrefix(p.parse().unwrap())).collect(),
        ..Register::default()
    };
    core.frame(
        ConnId(conn),
        Frame::request(kind::REGISTER, 1, &register),
        now,
    );
    let out = core.drain();
    let reply = sent(
        &out,
        ConnId(conn),
        kind::REGISTER | super::super::proto::REPLY,
    );
    reply[0].reply::<Value>().err().map(|e| (e.kind, e.message))
}

#[test]
fn an_offline_nodes_address_is_not_up_for_grabs() {
    let (mut core, keys, now) = core_with(3);
    // Node 2 (10.9.0.2) goes offline; a member claims its address to draw its traffic.
    core.disconnected(ConnId(2), now);
    let thief = PrivateKey::from_bytes([40; 32]).public_key();
    let (kind, message) =
        register_with(&mut core, 40, thief, 40, &["10.9.0.2/32"], now).expect("refused");
    assert_eq!(kind, ErrorKind::NotAllowed);
    assert!(message.contains("offline"), "{message}");
    // The owner comes back and registers it again.
    assert_eq!(
        register_with(&mut core, 22, keys[1], 2, &["10.9.0.2/32"], now),
        None
    );
    // A node that stops claiming an address gives it up.
    assert_eq!(
        register_with(&mut core, 23, keys[1], 2, &["10.9.0.22/32"], now),
        None
    );
    assert_eq!(
        register_with(&mut core, 41, thief, 40, &["10.9.0.2/32"], now),
        None
    );
}

#[test]
fn addresses_follow_the_managers_policy() {
    let owner = PrivateKey::from_bytes([1; 32]).public_key();
    let other = PrivateKey::from_bytes([2; 32]).public_key();
    let params = Params {
        pinned: vec![(owner, vec!["10.77.0.1/32".parse().unwrap()])],
        address_ranges: Some(vec!["10.77.0.0/16".parse().unwrap()]),
        listen_ip: Some("198.18.100.100".parse().unwrap()),
        ..Params::default()
    };
    let now = Instant::now();
    let mut core = ManagerCore::new(params, Rng::seeded(1));
    // Special-purpose, underlay, outside the ranges, pinned to someone else, not a pin of
    // its own: each refused.
    for (n, (key, tun)) in [
        (other, "127.0.0.1/32"),
        (other, "169.254.169.254/32"),
        (other, "224.0.0.1/32"),
        (other, "fe80::1/128"),
        (other, "198.18.100.100/32"),
        (other, "10.99.0.9/32"),
        (other, "10.77.0.1/32"),
        (owner, "10.77.0.2/32"),
    ]
    .into_iter()
    .enumerate()
    {
        let n = u8::try_from(n).unwrap() + 10;
        let refusal = register_with(&mut core, u64::from(n), key, n, &[tun], now);
        assert_eq!(
            refusal.as_ref().map(|r| r.0),
            Some(ErrorKind::NotAllowed),
            "{tun}: {refusal:?}"
        );
    }
    // Another node's endpoint is an underlay address too.
    assert_eq!(
        register_with(&mut core, 30, owner, 3, &["10.77.0.1/32"], now),
        None
    );
    assert_eq!(
        register_with(&mut core, 31, other, 4, &["198.18.0.3/32"], now).map(|r| r.0),
        Some(ErrorKind::NotAllowed)
    );
    assert_eq!(
        register_with(&mut core, 32, other, 4, &["10.77.0.2/32"], now),
        None
    );
}

#[test]
fn a_node_registers_once_per_connection() {
    let (mut core, keys, now) = core_with(2);
    let register = Register {
        endpoint: Some("198.18.0.1:6000".parse().unwrap()),
        ..Register::default()
    };
    core.frame(ConnId(1), Frame::request(kind::REGISTER, 5, &register), now);
    let out = core.drain();
    let reply = sent(&out, ConnId(1), kind::REGISTER | super::super::proto::REPLY);
    assert_eq!(
        reply[0].reply::<Value>().unwrap_err().kind,
        ErrorKind::NotAllowed
    );
    let _ = keys;
}

#[test]
fn a_route_is_adopted_only_by_the_node_its_id_names() {
    let (mut core, keys, now) = core_with(3);
    let nonce = Bytes32([5; 32]);
    let id = MeshRouteId::derive(&keys[0], &nonce).unwrap();
    let claim = |nonce: Bytes32, end: bool| Register {
        endpoint: Some("198.18.0.2:6000".parse().unwrap()),
        tun: vec![WirePrefix("10.9.0.2/32".parse().unwrap())],
        routes: vec![RouteRequest {
            id: Some(id),
            nonce: Some(nonce),
            dst: Key(keys[2]),
            min_hops: None,
            max_hops: None,
            avoid: vec![],
            weight: None,
        }],
        rules: vec![HeldRule {
            route: id,
            in_id: 5,
            end,
        }],
        ..Register::default()
    };
    // Node 2, a relay of node 1's route, knows its id (and, say, its nonce) and claims
    // to hold its end: the id is not derived from node 2's key, so it is not adopted.
    core.authenticated(ConnId(22), keys[1], now);
    core.frame(
        ConnId(22),
        Frame::request(kind::REGISTER, 1, &claim(nonce, true)),
        now,
    );
    core.drain();
    assert!(core.routes(now).is_empty());
    // Node 1 itself, with the nonce, is.
    let mut own = claim(nonce, true);
    own.endpoint = Some("198.18.0.1:6000".parse().unwrap());
    own.tun = vec![WirePrefix("10.9.0.1/32".parse().unwrap())];
    core.authenticated(ConnId(11), keys[0], now);
    core.frame(ConnId(11), Frame::request(kind::REGISTER, 1, &own), now);
    core.drain();
    assert_eq!(core.routes(now).len(), 1);
    assert_eq!(core.routes(now)[0].id, id);
}

#[test]
fn a_route_its_owner_no_longer_lists_is_dropped() {
    // Node 1 owns a route (adopted from its REGISTER); it restarts (a new process, whose
    // routes lived in memory) and registers without it: the route goes, so its next
    // `route add` makes a route whose id it can derive, not the old one.
    let (mut core, keys, now) = core_with(3);
    let nonce = Bytes32([5; 32]);
    let id = MeshRouteId::derive(&keys[0], &nonce).unwrap();
    let register = |routes: Vec<RouteRequest>, rules: Vec<HeldRule>| Register {
        endpoint: Some("198.18.0.1:6000".parse().unwrap()),
        tun: vec![WirePrefix("10.9.0.1/32".parse().unwrap())],
        routes,
        rules,
        ..Register::default()
    };
    let owned = RouteRequest {
        id: Some(id),
        nonce: Some(nonce),
        dst: Key(keys[2]),
        min_hops: None,
        max_hops: None,
        avoid: vec![],
        weight: None,
    };
    let end = HeldRule {
        route: id,
        in_id: 5,
        end: true,
    };
    core.authenticated(ConnId(11), keys[0], now);
    core.frame(
        ConnId(11),
        Frame::request(kind::REGISTER, 1, &register(vec![owned.clone()], vec![end])),
        now,
    );
    core.drain();
    assert_eq!(core.routes(now).len(), 1);
    // A reconnect that lists it keeps it.
    core.authenticated(ConnId(12), keys[0], now);
    core.frame(
        ConnId(12),
        Frame::request(kind::REGISTER, 1, &register(vec![owned], vec![end])),
        now,
    );
    core.drain();
    assert_eq!(core.routes(now).len(), 1);
    // A restart that does not: dropped, and said.
    core.authenticated(ConnId(13), keys[0], now);
    core.frame(
        ConnId(13),
        Frame::request(kind::REGISTER, 1, &register(vec![], vec![])),
        now,
    );
    let out = core.drain();
    assert!(core.routes(now).is_empty(), "{:?}", core.routes(now));
    assert!(
        out.iter().any(|o| matches!(o, Output::Log(_, line)
            if line.contains("dropped: the node registered without it"))),
        "{out:?}"
    );
}

#[test]
fn endpoints_are_addresses_to_send_to_and_nobody_elses() {
    let (mut core, keys, now) = core_with(2);
    let other = PrivateKey::from_bytes([30; 32]).public_key();
    let with_endpoint = |core: &mut ManagerCore, conn: u64, endpoint: &str| {
        core.authenticated(ConnId(conn), other, now);
        let register = Register {
            endpoint: Some(endpoint.parse().unwrap()),
            ..Register::default()
        };
        core.frame(
            ConnId(conn),
            Frame::request(kind::REGISTER, 1, &register),
            now,
        );
        let out = core.drain();
        let reply = sent(
            &out,
            ConnId(conn),
            kind::REGISTER | super::super::proto::REPLY,
        );
        reply[0].reply::<Value>().err().map(|e| e.kind)
    };
    // The manager listens on no loopback address here (its listen_ip is unknown), so a
    // loopback endpoint would send other machines' traffic to themselves.
    for (conn, bad) in [
        (30, "127.0.0.1:6000"),
        (31, "0.0.0.0:6000"),
        (32, "224.0.0.9:6000"),
        (33, "198.18.0.1:0"),
        // Node 1's endpoint: route traffic and probes meant for this node would go there.
        (34, "198.18.0.1:6000"),
    ] {
        assert_eq!(
            with_endpoint(&mut core, conn, bad),
            Some(ErrorKind::NotAllowed),
            "{bad}"
        );
    }
    assert_eq!(with_endpoint(&mut core, 35, "198.18.0.30:6000"), None);
    // With the manager on loopback, a mesh on one machine may use loopback endpoints.
    let mut local = ManagerCore::new(
        Params {
            listen_ip: Some("127.0.0.1".parse().unwrap()),
            ..Params::default()
        },
        Rng::seeded(2),
    );
    assert_eq!(with_endpoint(&mut local, 36, "127.0.0.1:6001"), None);
    let _ = keys;
}

#[test]
fn a_node_is_reached_where_its_key_answers_not_where_it_registered() {
    // A ring of 12: node 5 registers an endpoint that is not its own (nothing holding its
    // key answers there). Its neighbours' probes to that address prove nothing; its own
    // probes come from where it really is, so they probe it there, and the links are
    // proven at that address: the rules its neighbours get use it, and a route across
    // node 5 carries traffic (the registered address gets nothing).
    let ks = keys(12);
    let pks: Vec<PublicKey> = ks.iter().map(PrivateKey::public_key).collect();
    let links = (0..12).map(|i| (pks[i], pks[(i + 1) % 12])).collect();
    let params = Params {
        links,
        setup_timeout: Duration::from_millis(500),
        ..Params::default()
    };
    let mut sim = Sim::new(12, params, ks);
    sim.set_endpoint(5, "198.18.50.50:6000".parse().unwrap());
    for i in 0..12 {
        sim.connect(i);
    }
    sim.run(Duration::from_secs(4), 50 * MS);
    let info = add_route(&mut sim, 4, 6, json!({})).unwrap();
    let path = path_indices(&sim, &info);
    assert_eq!(path, vec![4, 5, 6], "{path:?}");
    assert_traffic(&mut sim, 4, 6, b"across the node, where it really is");
}

#[test]
fn a_registration_reports_a_bounded_number_of_rules() {
    let mut core = ManagerCore::new(Params::default(), Rng::seeded(4));
    let now = Instant::now();
    let key = PrivateKey::from_bytes([8; 32]).public_key();
    core.authenticated(ConnId(1), key, now);
    let rule = |i: u32| HeldRule {
        route: MeshRouteId(u64::from(i) + 1),
        in_id: i + 1,
        end: false,
    };
    let register = Register {
        endpoint: Some("198.18.0.8:6000".parse().unwrap()),
        rules: (0..=MAX_RULES_PER_NODE as u32).map(rule).collect(),
        ..Register::default()
    };
    core.frame(ConnId(1), Frame::request(kind::REGISTER, 1, &register), now);
    let out = core.drain();
    let reply = sent(&out, ConnId(1), kind::REGISTER | super::super::proto::REPLY);
    assert_eq!(
        reply[0].reply::<Value>().unwrap_err().kind,
        ErrorKind::BadRequest
    );
    // Just within the bound: registered, and every orphaned rule goes after the grace.
    let register = Register {
        rules: (0..MAX_RULES_PER_NODE as u32).map(rule).collect(),
        ..register
    };
    core.frame(ConnId(1), Frame::request(kind::REGISTER, 2, &register), now);
    core.drain();
    let later = now + ORPHAN_GRACE + Duration::from_millis(100);
    core.frame(
        ConnId(1),
        Frame::request(kind::HEARTBEAT, 3, &Value::Null),
        later,
    );
    core.tick(later);
    let removes = sent(&core.drain(), ConnId(1), kind::REMOVE);
    assert_eq!(removes.len(), MAX_RULES_PER_NODE);
}

/// `conn`'s node reports its link to `peer`.
fn report_link(core: &mut ManagerCore, conn: u64, peer: PublicKey, rtt_us: u64, now: Instant) {
    let report = LinkReport {
        links: vec![LinkMeasure {
            peer: Key(peer),
            rtt_us: Some(rtt_us),
            loss: 0.0,
            up: true,
            endpoint: None,
        }],
    };
    core.frame(
        ConnId(conn),
        Frame::request(kind::LINK_REPORT, 50, &report),
        now,
    );
}

/// The link a - b as `nodes` (asked on `conn`) shows it.
fn link_view(
    core: &mut ManagerCore,
    conn: u64,
    a: PublicKey,
    b: PublicKey,
    now: Instant,
) -> super::super::proto::LinkInfo {
    core.frame(
        ConnId(conn),
        Frame::request(kind::NODES, 51, &Value::Null),
        now,
    );
    let out = core.drain();
    let reply = &sent(&out, ConnId(conn), kind::NODES | super::super::proto::REPLY)[0];
    let mesh: super::super::proto::Mesh = reply.reply().unwrap();
    mesh.links
        .into_iter()
        .find(|l| (l.a.0, l.b.0) == (a, b) || (l.a.0, l.b.0) == (b, a))
        .expect("the link")
}

/// `ROUTE_ADD` from `conn` to `dst`: the error kind if it was refused at once.
fn route_add_refusal(
    core: &mut ManagerCore,
    conn: u64,
    dst: PublicKey,
    now: Instant,
) -> Option<ErrorKind> {
    let add = RouteRequest {
        id: None,
        nonce: Some(Bytes32([conn as u8; 32])),
        dst: Key(dst),
        min_hops: None,
        max_hops: None,
        avoid: vec![],
        weight: None,
    };
    core.frame(ConnId(conn), Frame::request(kind::ROUTE_ADD, 52, &add), now);
    let out = core.drain();
    let reply = sent(
        &out,
        ConnId(conn),
        kind::ROUTE_ADD | super::super::proto::REPLY,
    );
    reply
        .first()
        .and_then(|r| r.reply::<Value>().err().map(|e| e.kind))
}

#[test]
fn a_link_is_unproven_until_a_probe_is_answered_and_nodes_says_so() {
    let keys: Vec<PublicKey> = (1..=2u8)
        .map(|i| PrivateKey::from_bytes([i; 32]).public_key())
        .collect();
    let mut core = ManagerCore::new(
        Params {
            links: vec![(keys[0], keys[1])],
            ..Params::default()
        },
        Rng::seeded(5),
    );
    let now = Instant::now();
    assert_eq!(register_with(&mut core, 1, keys[0], 1, &[], now), None);
    // Node 2 registers; node 1 applies the neighbour list that follows.
    core.authenticated(ConnId(2), keys[1], now);
    let register = Register {
        endpoint: Some("198.18.0.2:6000".parse().unwrap()),
        ..Register::default()
    };
    core.frame(ConnId(2), Frame::request(kind::REGISTER, 1, &register), now);
    answer_neighbours(&mut core, now);
    // Both ends online, nothing answered: unproven, no round trip, not routed over.
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!(link.state, LinkState::Unproven);
    assert!(!link.up);
    assert_eq!(link.rtt_us, None);
    assert_eq!(
        route_add_refusal(&mut core, 1, keys[1], now),
        Some(ErrorKind::NoPath)
    );
    // One end's probe is answered: that direction is proven, the other is not yet (the
    // far end may not reach back), so still unproven and not routed over.
    report_link(&mut core, 2, keys[0], 700, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!((link.state, link.up), (LinkState::Unproven, false));
    assert_eq!(
        route_add_refusal(&mut core, 1, keys[1], now),
        Some(ErrorKind::NoPath)
    );
    // The other end's too: up, measured (the longer round trip), routed over.
    report_link(&mut core, 1, keys[1], 650, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!(
        (link.state, link.up, link.rtt_us),
        (LinkState::Up, true, Some(700))
    );
    assert_eq!(route_add_refusal(&mut core, 1, keys[1], now), None);
    // One end reports it down: down, whatever the other said, and not routed over.
    let down = LinkReport {
        links: vec![LinkMeasure {
            peer: Key(keys[1]),
            rtt_us: None,
            loss: 1.0,
            up: false,
            endpoint: None,
        }],
    };
    core.frame(ConnId(1), Frame::request(kind::LINK_REPORT, 51, &down), now);
    core.drain();
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!((link.state, link.up), (LinkState::Down, false));
    report_link(&mut core, 2, keys[0], 700, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!(
        link.state,
        LinkState::Down,
        "the other end alone does not lift it"
    );
    report_link(&mut core, 1, keys[1], 650, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!(link.state, LinkState::Up);
    // An end goes offline: what was measured goes with it.
    core.disconnected(ConnId(2), now);
    core.drain();
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!((link.state, link.rtt_us), (LinkState::Offline, None));
    // A neighbour's report about an offline node is of its previous life: ignored, and
    // the node that comes back starts unproven.
    report_link(&mut core, 1, keys[1], 700, now);
    assert_eq!(register_with(&mut core, 12, keys[1], 2, &[], now), None);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!((link.state, link.rtt_us), (LinkState::Unproven, None));
}

#[test]
fn a_node_that_registers_again_starts_with_unproven_links_and_old_reports_do_not_count() {
    let (mut core, keys, now) = core_with(3);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!((link.state, link.rtt_us), (LinkState::Up, Some(300)));
    // Node 2 comes back on a new connection (a restart the manager did not see end) while
    // its old one is still open.
    core.authenticated(ConnId(12), keys[1], now);
    let register = Register {
        endpoint: Some("198.18.0.2:6000".parse().unwrap()),
        tun: vec![WirePrefix("10.9.0.2/32".parse().unwrap())],
        ..Register::default()
    };
    core.frame(
        ConnId(12),
        Frame::request(kind::REGISTER, 1, &register),
        now,
    );
    let out = core.drain();
    // Node 1 is told to forget node 2, then to probe it afresh.
    let lists: Vec<Neighbours> = sent(&out, ConnId(1), kind::NEIGHBOURS)
        .iter()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(lists[0].neighbours.iter().all(|n| n.peer.0 != keys[1]));
    assert!(lists[1].neighbours.iter().any(|n| n.peer.0 == keys[1]));
    let ids: Vec<u64> = sent(&out, ConnId(1), kind::NEIGHBOURS)
        .iter()
        .map(|f| f.id)
        .collect();
    // Both of node 2's links are unproven: nothing from before is shown or routed over.
    for (a, b) in [(0, 1), (1, 2)] {
        let link = link_view(&mut core, 1, keys[a], keys[b], now);
        assert_eq!((link.state, link.rtt_us), (LinkState::Unproven, None));
    }
    assert_eq!(
        route_add_refusal(&mut core, 1, keys[2], now),
        Some(ErrorKind::NoPath)
    );
    // Node 1's reports until it applied the new list may be of node 2's previous life.
    report_link(&mut core, 1, keys[1], 300, now);
    core.frame(
        ConnId(1),
        Frame::ok(kind::NEIGHBOURS, ids[0], &Value::Null),
        now,
    );
    report_link(&mut core, 1, keys[1], 300, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!(link.state, LinkState::Unproven);
    // Applied: what it reports now is measured afresh; with the restarted node's own
    // report (which counts at once) the link is proven both ways.
    core.frame(
        ConnId(1),
        Frame::ok(kind::NEIGHBOURS, ids[1], &Value::Null),
        now,
    );
    report_link(&mut core, 1, keys[1], 450, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!(link.state, LinkState::Unproven, "one end's proof only");
    report_link(&mut core, 12, keys[0], 400, now);
    let link = link_view(&mut core, 1, keys[0], keys[1], now);
    assert_eq!((link.state, link.rtt_us), (LinkState::Up, Some(450)));
    report_link(&mut core, 12, keys[2], 350, now);
    for f in sent(&out, ConnId(3), kind::NEIGHBOURS) {
        core.frame(
            ConnId(3),
            Frame::ok(kind::NEIGHBOURS, f.id, &Value::Null),
            now,
        );
    }
    report_link(&mut core, 3, keys[1], 350, now);
    let link = link_view(&mut core, 1, keys[1], keys[2], now);
    assert_eq!((link.state, link.rtt_us), (LinkState::Up, Some(350)));
}

#[test]
fn a_second_node_with_the_same_key_is_refused_a_restart_is_not() {
    let (mut core, keys, now) = core_with(3);
    // Node 1 is online from 198.18.0.1:6000 on connection 1. The same key from another
    // endpoint while it is: another node with a copy of the key, refused, and node 1
    // keeps its connection.
    let (kind, message) =
        register_with(&mut core, 40, keys[0], 77, &["10.9.0.1/32"], now).expect("refused");
    assert_eq!(kind, ErrorKind::NotAllowed);
    assert!(message.starts_with("key in use"), "{message}");
    assert!(core.registry.is_current(&keys[0], ConnId(1)));
    // The same endpoint again (a node restarted before its old connection was given up):
    // the new connection replaces the old one.
    assert_eq!(
        register_with(&mut core, 41, keys[0], 1, &["10.9.0.1/32"], now),
        None
    );
    assert!(core.registry.is_current(&keys[0], ConnId(41)));
    // Once the manager has given up on the connection, a node that moved registers.
    core.disconnected(ConnId(41), now);
    assert_eq!(
        register_with(&mut core, 42, keys[0], 78, &["10.9.0.1/32"], now),
        None
    );
}

#[test]
fn a_route_without_a_path_says_why_and_when_it_is_tried_again() {
    // A ring of 6: node 1's two links cut leave no path from 0 to 1.
    let mut sim = mesh(6, Duration::from_secs(30));
    let info = add_route(&mut sim, 0, 1, json!({})).unwrap();
    assert_eq!((info.reason.clone(), info.retry_in_ms), (None, None));
    sim.run(Duration::from_secs(3), 50 * MS);
    sim.cut(0, 1);
    sim.cut(1, 2);
    sim.run(Duration::from_secs(6), 50 * MS);
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes.iter().find(|r| r.id == info.id).unwrap();
    assert_eq!(route.state, RouteState::Repairing);
    let reason = route.reason.clone().expect("a reason");
    assert_eq!(reason.kind, ErrorKind::NoPath);
    assert!(
        reason
            .message
            .starts_with("no path over links that are up from"),
        "{reason}"
    );
    let retry = route.retry_in_ms.expect("a timed retry");
    assert!(retry <= MAX_RETRY.as_millis() as u64, "{retry}");
    // The node's `route ls` gets the same, through the real codec.
    let token = sim.user(0, UserRequest::RouteList);
    sim.run(20 * MS, 5 * MS);
    let listed = match sim.answer(0, token).expect("an answer").result.clone() {
        Ok(UserReply::Routes(list)) => list,
        other => panic!("not a route list: {other:?}"),
    };
    let shown = listed.routes.iter().find(|r| r.id == info.id).unwrap();
    assert_eq!(shown.reason.as_ref(), Some(&reason));
    assert!(shown.retry_in_ms.is_some_and(|ms| ms <= retry), "{shown:?}");
    // The link comes back: active again, and nothing left to explain.
    sim.mend(0, 1);
    sim.mend(1, 2);
    sim.run(Duration::from_secs(40), 50 * MS);
    let routes = sim.manager.as_ref().unwrap().routes(sim.mesh.now());
    let route = routes.iter().find(|r| r.id == info.id).unwrap();
    assert_eq!(route.state, RouteState::Active);
    assert_eq!((route.reason.clone(), route.retry_in_ms), (None, None));
}
