//! The fault table of issue 16 (RELIABILITY.md), first rows: three `skywire node`s in
//! namespaces on a 3-hop route A -> B -> C whose first link crosses the seeded impairment
//! relay (`skywire lab impair`, `tests/netns/impair.rs`), with real TUN devices and real
//! tools (ping, the Python helpers in `tests/tools/`). Root only; skipped with a message
//! otherwise.
//!
//! - loss of 20 %, 5 % and 1 % both ways on the link: the route comes up, TCP transfers
//!   arrive with a matching SHA-256;
//! - reordering (holds of 64) with 10 % duplication, then replays of earlier datagrams:
//!   every datagram reaches C's TUN once, the duplicates and replays are C's `replay`
//!   drops, exactly;
//! - every bit-flipped datagram of a burst, and junk sent through the relay: all dropped
//!   and counted, none answered, traffic works afterwards;
//! - datagrams of 0, 1, 16, 1472 (the link MTU) and 65 507 bytes at B's and C's ports:
//!   counted, no harm.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::time::{Duration, Instant};

use netns::impair::{
    A_TUN_V4, B_FROM_U, C_TRANSPORT, C_TUN_V4, ImpairedHops, RELAY_LISTEN, Report,
};
use netns::{key_values, python3};

/// The relay's seed in every test: a failure reproduces with the same decisions.
const SEED: u64 = 16;

/// Taken by every test here: they count datagrams exactly, at high rates, and when two
/// ran at once on the two cores, queues the nodes cannot see (a veth's backlog) overflowed
/// and a count was off by a few.
static EXACT_COUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    EXACT_COUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Datagrams the kernel dropped at B's and C's sockets (`RcvbufErrors`): lost before a
/// node could count them.
fn kernel_drops(hops: &ImpairedHops) -> u64 {
    ["b", "c"]
        .iter()
        .map(|h| {
            hops.topo
                .udp_snmp(h)
                .get("RcvbufErrors")
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// Bring the route up (the first ping starts the handshake): how long the first reply took.
fn route_up(hops: &ImpairedHops, deadline: Duration) -> Duration {
    hops.ping_until_reply(deadline, "1")
        .unwrap_or_else(|| panic!("no ping reply A -> C within {deadline:?}"))
}

/// `bytes` over TCP from A's TUN address to C's, with a seeded payload: (elapsed, sha256).
fn tcp_transfer(hops: &ImpairedHops, bytes: u64, port: u16) -> (Duration, String) {
    let port = port.to_string();
    let mut sink = hops.topo.spawn_tool(
        "c",
        "tcp_sink.py",
        &["--listen", C_TUN_V4, "--port", &port, "--timeout", "60"],
    );
    sink.expect_line("listening", Duration::from_secs(10));
    let started = Instant::now();
    let mut source = hops.topo.spawn_tool(
        "a",
        "tcp_source.py",
        &[
            "--connect",
            C_TUN_V4,
            "--port",
            &port,
            "--bind",
            A_TUN_V4,
            "--bytes",
            &bytes.to_string(),
            "--seed",
            "1616",
            "--timeout",
            "60",
        ],
    );
    let sent = key_values(&source.finish(Duration::from_secs(90)).join(" "));
    let received = key_values(&sink.finish(Duration::from_secs(30)).join(" "));
    let elapsed = started.elapsed();
    assert_eq!(sent["bytes"], bytes.to_string());
    assert_eq!(received["bytes"], bytes.to_string(), "bytes received by C");
    assert_eq!(received["sha256"], sent["sha256"], "SHA-256 at C");
    (elapsed, sent["sha256"].clone())
}

/// Numbered UDP datagrams A -> C through the tunnel: C's receiver's report (`highest` is
/// left out when nothing came); it stops after `idle` seconds without a datagram.
fn udp_sequence(
    hops: &ImpairedHops,
    count: u64,
    port: u16,
    idle: &str,
) -> std::collections::HashMap<String, u64> {
    let port = port.to_string();
    let mut recv = hops.topo.spawn_tool(
        "c",
        "udp_seq.py",
        &[
            "recv",
            "--listen",
            C_TUN_V4,
            "--port",
            &port,
            "--idle",
            idle,
            "--idle-first",
            "3",
        ],
    );
    recv.expect_line("listening", Duration::from_secs(10));
    let mut send = hops.topo.spawn_tool(
        "a",
        "udp_seq.py",
        &[
            "send",
            "--to",
            C_TUN_V4,
            "--port",
            &port,
            "--bind",
            A_TUN_V4,
            "--count",
            &count.to_string(),
        ],
    );
    send.finish(Duration::from_secs(60));
    let out = recv.finish(Duration::from_secs(60)).join(" ");
    key_values(&out)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

/// Packet types that answer another packet (PROTOCOL.md §3): handshake response, pong,
/// link probe reply.
const ANSWERS: [u8; 3] = [2, 7, 9];

/// Nothing B or C sent back through the relay between the two reports answered a packet:
/// while every datagram towards them is corrupted, an answer could only be to a corrupted
/// one. What the nodes send on their own (keepalives, handshake initiations, link probes)
/// may cross.
fn assert_no_answers(hops: &ImpairedHops, before: &Report, after: &Report) {
    let types = hops.types_seen("back", before.back.received, after.back.received);
    println!("back through the relay meanwhile: packet types {types:?}");
    assert!(
        types.iter().all(|t| !ANSWERS.contains(t)),
        "an answer to a corrupted packet: types {types:?}"
    );
}

/// `after - before` of both directions, field by field, for the figures.
fn delta(before: &Report, after: &Report) -> String {
    let lane = |b: &netns::impair::Lane, a: &netns::impair::Lane| {
        format!(
            "received {} sent {} lost {} duplicated {} held {} flipped {} truncated {} \
             replayed {} send_failed {}",
            a.received - b.received,
            a.sent - b.sent,
            a.lost - b.lost,
            a.duplicated - b.duplicated,
            a.held - b.held,
            a.flipped - b.flipped,
            a.truncated - b.truncated,
            a.replayed - b.replayed,
            a.send_failed - b.send_failed
        )
    };
    format!(
        "forward: {}; back: {}",
        lane(&before.forward, &after.forward),
        lane(&before.back, &after.back)
    )
}

#[test]
fn tcp_arrives_intact_under_20_5_and_1_percent_loss() {
    if !netns::skip_unless_root("tcp_arrives_intact_under_20_5_and_1_percent_loss") {
        return;
    }
    let _exact = one_at_a_time();
    let started = Instant::now();
    let mut hops = ImpairedHops::start(SEED, "loss=20%", "loss=20%");
    // The handshake crosses the lossy link too.
    let up = route_up(&hops, Duration::from_secs(45));
    let a = hops.a.status_json();
    assert!(a.routes[0].last_handshake_secs.is_some(), "{a:?}");
    println!("20 % loss both ways: first ping reply after {up:?}");
    for (loss, bytes, port) in [
        ("20%", 2_000_000u64, 5001u16),
        ("5%", 4_000_000, 5002),
        ("1%", 5_000_000, 5003),
    ] {
        hops.set("forward", &format!("loss={loss}"));
        hops.set("back", &format!("loss={loss}"));
        let before = hops.report();
        let (elapsed, sha) = tcp_transfer(&hops, bytes, port);
        let after = hops.report();
        let (f, b) = (
            after.forward.lost - before.forward.lost,
            after.back.lost - before.back.lost,
        );
        let (fr, br) = (
            after.forward.received - before.forward.received,
            after.back.received - before.back.received,
        );
        println!(
            "loss {loss}: {bytes} bytes in {elapsed:?} ({:.2} MB/s), sha256 {sha}; relay lost \
             {f}/{fr} forward, {b}/{br} back",
            bytes as f64 / elapsed.as_secs_f64() / 1e6
        );
        // The ACKs going back are few (a few hundred, coalesced), so at 1 % that direction
        // may lose none.
        assert!(f > 0, "the relay lost nothing forward at {loss}");
    }
    // Delay with jitter (which reorders as well) and 1 % loss: still intact.
    hops.set("forward", "loss=1%,delay=10ms,jitter=10ms");
    hops.set("back", "loss=1%,delay=10ms,jitter=10ms");
    let (elapsed, sha) = tcp_transfer(&hops, 2_000_000, 5004);
    println!(
        "delay 10 ms + jitter 0-10 ms + loss 1 % both ways: 2000000 bytes in {elapsed:?} \
         ({:.2} MB/s), sha256 {sha}",
        2e6 / elapsed.as_secs_f64() / 1e6
    );
    let a = hops.a.status_json();
    println!("A's route after: {:?}", a.routes[0]);
    assert!(hops.b.is_running() && hops.c.is_running() && hops.a.is_running());
    println!("ok in {:?}", started.elapsed());
}

#[test]
fn reordered_duplicated_and_replayed_packets_reach_the_tun_once() {
    if !netns::skip_unless_root("reordered_duplicated_and_replayed_packets_reach_the_tun_once") {
        return;
    }
    let _exact = one_at_a_time();
    let started = Instant::now();
    let mut hops = ImpairedHops::start(SEED, "none", "none");
    route_up(&hops, Duration::from_secs(10));
    const N: u64 = 3000;

    // Holds of 64 shuffled, and 10 % sent twice: all within C's replay window.
    hops.set("forward", "reorder=64,dup=10%");
    let replay0 = hops.c_route_drop("replay");
    let before = hops.report();
    let got = udp_sequence(&hops, N, 7001, "1.5");
    let after = hops.report();
    let replay = ImpairedHops::settled(Duration::from_secs(5), || hops.c_route_drop("replay"));
    let duplicated = after.forward.duplicated - before.forward.duplicated;
    println!(
        "reorder 64 + dup 10 %: C's TUN got {got:?}; C's replay drops +{}; relay {}",
        replay - replay0,
        delta(&before, &after)
    );
    assert_eq!(after.forward.send_failed, 0);
    assert_eq!(got["duplicates"], 0, "a datagram reached C's TUN twice");
    assert_eq!(got["unique"], N, "in-window datagrams lost");
    assert!(
        got["out_of_order"] > 0,
        "nothing arrived reordered: the relay did not reorder"
    );
    assert!(duplicated > 0);
    assert_eq!(
        replay - replay0,
        duplicated,
        "C's replay drops vs the relay's duplicates"
    );

    // Earlier datagrams (up to 1024 back) sent again: already seen, dropped and counted.
    hops.set("forward", "replay=5%");
    let before = hops.report();
    let got = udp_sequence(&hops, N, 7002, "1.5");
    let after = hops.report();
    let replay2 = ImpairedHops::settled(Duration::from_secs(5), || hops.c_route_drop("replay"));
    let replayed = after.forward.replayed - before.forward.replayed;
    println!(
        "replay 5 %: C's TUN got {got:?}; C's replay drops +{}; relay {}",
        replay2 - replay,
        delta(&before, &after)
    );
    assert_eq!(got["duplicates"], 0, "a replay reached C's TUN");
    assert_eq!(got["unique"], N);
    assert!(replayed > 0);
    assert_eq!(
        replay2 - replay,
        replayed,
        "C's replay drops vs the relay's replays"
    );

    // A hold of 9000, wider than C's replay window (8128): datagrams released after one
    // 8128 or more above them are too old, dropped and counted as replays; the rest
    // arrive once. Sent on at 20 000 a second, which B's and C's queues absorb; the hold
    // waits up to 2 s for its next datagram (20 ms by default), so a sender slowed by a
    // busy machine still fills it.
    const M: u64 = 12_000;
    hops.set("forward", "reorder=9000,hold=2s,rate=20000");
    let kernel0 = kernel_drops(&hops);
    let before = hops.report();
    let got = udp_sequence(&hops, M, 7004, "3");
    let after = hops.report();
    let replay3 = ImpairedHops::settled(Duration::from_secs(5), || hops.c_route_drop("replay"));
    let too_old = replay3 - replay2;
    println!(
        "reorder 9000: C's TUN got {got:?}; C's replay drops +{too_old}; relay {}",
        delta(&before, &after)
    );
    assert_eq!(
        kernel_drops(&hops),
        kernel0,
        "a socket buffer overflowed: counts are not exact"
    );
    assert_eq!(after.forward.send_failed, before.forward.send_failed);
    assert_eq!(got["duplicates"], 0);
    assert!(too_old > 0, "nothing came too late for the window");
    assert_eq!(
        got["unique"] + too_old,
        M,
        "every datagram delivered once or counted"
    );

    hops.set("forward", "none");
    assert_eq!(hops.topo.ping("a", A_TUN_V4, C_TUN_V4, 3), 3);
    println!("ok in {:?}", started.elapsed());
}

#[test]
fn flipped_bits_and_junk_are_dropped_counted_and_unanswered() {
    if !netns::skip_unless_root("flipped_bits_and_junk_are_dropped_counted_and_unanswered") {
        return;
    }
    let _exact = one_at_a_time();
    let started = Instant::now();
    let mut hops = ImpairedHops::start(SEED, "none", "none");
    route_up(&hops, Duration::from_secs(10));
    // What B and C counted, and what the kernel dropped at their sockets before they could
    // (none, mostly; counted so the equalities stay exact on a busy machine).
    let drops = |hops: &ImpairedHops| {
        ImpairedHops::all_drops(&hops.b.status_json())
            + ImpairedHops::all_drops(&hops.c.status_json())
            + kernel_drops(hops)
    };

    // A burst of N datagrams, every one with one bit flipped on the first link.
    const N: u64 = 100_000;
    let drops0 = drops(&hops);
    let window = |hops: &ImpairedHops| hops.c.status_json().routes[0].replay_window;
    let window0 = window(&hops);
    assert!(window0.is_some(), "C has no keys");
    hops.set("forward", "flip=1");
    let before = hops.report();
    let got = udp_sequence(&hops, N, 7003, "1.5");
    // Read before the flips stop: A, hearing nothing back for 15 s, keeps starting
    // handshakes, and the first one that crosses unharmed gives C new keys.
    let window1 = window(&hops);
    hops.set("forward", "none");
    let after = hops.report();
    let flipped = after.forward.flipped - before.forward.flipped;
    let dropped = ImpairedHops::settled(Duration::from_secs(5), || drops(&hops)) - drops0;
    println!(
        "flips: C's TUN got {got:?}; B+C dropped {dropped}; relay {}; B {:?}; C {:?} {:?}",
        delta(&before, &after),
        hops.b.status_json().drops,
        hops.c.status_json().drops,
        hops.c.status_json().routes[0].drops
    );
    assert_eq!(got["received"], 0, "a corrupted datagram reached C's TUN");
    // Some datagrams are lost before the relay, which logs every one (a full socket
    // buffer on the way there; seen: 150 to 1514 of 100 000). What the relay sent on, B
    // and C must all have counted.
    assert!(flipped >= N - N / 10, "the relay flipped {flipped}");
    assert_eq!(dropped, flipped, "B's and C's drops vs the relay's flips");
    assert_no_answers(&hops, &before, &after);
    // Everything towards C was corrupted, so its replay window cannot have moved.
    assert_eq!(window1, window0, "C's replay window");

    // Every datagram of a burst cut to a random shorter length (0 included).
    let drops_t = drops(&hops);
    hops.set("forward", "truncate=1");
    let before = hops.report();
    let got = udp_sequence(&hops, 500, 7005, "1.5");
    hops.set("forward", "none");
    let after = hops.report();
    let truncated = after.forward.truncated - before.forward.truncated;
    let dropped = ImpairedHops::settled(Duration::from_secs(5), || drops(&hops)) - drops_t;
    println!(
        "truncation: C's TUN got {got:?}; B+C dropped {dropped}; relay {}",
        delta(&before, &after)
    );
    assert_eq!(got["received"], 0, "a truncated datagram reached C's TUN");
    assert!(truncated >= 500, "the relay truncated {truncated}");
    assert_eq!(dropped, truncated, "B's and C's drops vs the relay's cuts");
    assert_no_answers(&hops, &before, &after);

    // Junk through the relay, so that it arrives from B's real neighbour: random bytes,
    // empty datagrams, route headers with unknown ids and with B's own.
    // The route up again first: A, unanswered through the corrupted bursts, is starting
    // handshakes, and C's responses to them would read as answers to the junk.
    assert!(
        hops.ping_until_reply(Duration::from_secs(15), "1")
            .is_some(),
        "no ping reply after the corrupted bursts"
    );
    const JUNK: u64 = 100_000;
    let handshakes = |hops: &ImpairedHops| hops.c.status_json().routes[0].handshakes;
    let handshakes1 = handshakes(&hops);
    let drops1 = drops(&hops);
    let relay_lost = |hops: &ImpairedHops| {
        hops.topo
            .udp_snmp("u")
            .get("RcvbufErrors")
            .copied()
            .unwrap_or(0)
    };
    let relay_lost0 = relay_lost(&hops);
    let before = hops.report();
    let mut junk = hops.topo.spawn_tool(
        "a",
        "inject.py",
        &[
            "garbage",
            "--dst",
            RELAY_LISTEN,
            "--count",
            &JUNK.to_string(),
            "--known-ids",
            "100,200",
            // 5000 a second: faster, the relay's socket buffer overflows now and then,
            // and exact counts need every datagram to arrive.
            "--per-10ms",
            "50",
        ],
    );
    let sent = key_values(&junk.finish(Duration::from_secs(60)).join(" "));
    let probes: u64 = sent["probe"].parse().unwrap();
    let dropped = ImpairedHops::settled(Duration::from_secs(5), || drops(&hops)) - drops1;
    let after = hops.report();
    println!(
        "junk: sent {sent:?}; B+C dropped {dropped}; relay {}",
        delta(&before, &after)
    );
    // All the junk but what the kernel dropped at the relay's own socket (a busy CI
    // machine: 29 of 100 000 once), and perhaps a keepalive or handshake of A's own
    // (which C accepts).
    let lost_at_relay = relay_lost(&hops) - relay_lost0;
    let relayed = after.forward.received - before.forward.received;
    assert!(
        relayed + lost_at_relay >= JUNK,
        "the relay received {relayed}, its kernel dropped {lost_at_relay}"
    );
    assert_eq!(
        dropped,
        JUNK - probes - lost_at_relay,
        "B's and C's drops vs the junk that reached the relay ({lost_at_relay} lost before it)"
    );
    let types = hops.types_seen("back", before.back.received, after.back.received);
    println!("back through the relay meanwhile: packet types {types:?}");
    // Over 20 s, junk data packets with C's route id and unknown key ids prompt C to
    // start handshakes with A (at most one per 5 s, to its configured next hop: PROTOCOL.md
    // §7.7), and A may start one: a handshake response from C then answers A's real
    // initiation, which C's handshake count shows. Nothing else may be an answer.
    let responses = types.iter().filter(|&&t| t == 2).count() as u64;
    let completed = handshakes(&hops) - handshakes1;
    assert!(
        responses <= completed,
        "{responses} handshake responses from C, {completed} handshakes: types {types:?}"
    );
    let answers = types
        .iter()
        .filter(|&&t| t != 2 && ANSWERS.contains(&t))
        .count() as u64;
    assert_eq!(answers, probes, "answers to junk: types {types:?}");

    // Traffic works again (A's next datagram makes it the relay's client again).
    let back = hops.ping_until_reply(Duration::from_secs(15), "1");
    println!("first ping reply after the faults: {back:?}");
    assert!(back.is_some(), "no ping reply after the faults");
    assert_eq!(hops.topo.ping("a", A_TUN_V4, C_TUN_V4, 3), 3);
    assert!(hops.b.is_running() && hops.c.is_running());
    println!("ok in {:?}", started.elapsed());
}

#[test]
fn datagrams_of_edge_sizes_at_a_nodes_port_are_counted_and_harmless() {
    if !netns::skip_unless_root("datagrams_of_edge_sizes_at_a_nodes_port_are_counted_and_harmless")
    {
        return;
    }
    let _exact = one_at_a_time();
    let started = Instant::now();
    let mut hops = ImpairedHops::start(SEED, "none", "none");
    route_up(&hops, Duration::from_secs(10));
    const SIZES: [usize; 5] = [0, 1, 16, 1472, 65_507];
    let sizes = SIZES.map(|s| s.to_string()).join(",");
    for (host, node, target) in [("u", "b", B_FROM_U), ("b", "c", C_TRANSPORT)] {
        let status = |hops: &ImpairedHops| match node {
            "b" => hops.b.status_json(),
            _ => hops.c.status_json(),
        };
        let drops0 = ImpairedHops::all_drops(&status(&hops));
        let (ip, port) = target.rsplit_once(':').unwrap();
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for n in [{sizes}]:\n    s.sendto(b'\\x01' * n, ('{ip}', {port}))\nprint('sent')"
        );
        let out = hops
            .topo
            .output(host, python3().to_str().unwrap(), &["-c", &script]);
        assert!(out.status.success(), "{out:?}");
        let dropped = ImpairedHops::settled(Duration::from_secs(3), || {
            ImpairedHops::all_drops(&status(&hops))
        }) - drops0;
        let s = status(&hops);
        println!(
            "{node}: {} datagrams of {sizes} bytes: {dropped} counted as drops: {:?}",
            SIZES.len(),
            s.drops
        );
        assert_eq!(dropped, SIZES.len() as u64, "{node}'s drops");
    }
    assert!(hops.b.is_running() && hops.c.is_running());
    assert_eq!(hops.topo.ping("a", A_TUN_V4, C_TUN_V4, 3), 3);
    let _ = hops.report();
    println!("ok in {:?}", started.elapsed());
}
