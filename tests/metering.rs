//! Metering (issue 15), through the real binary as root: 1 GB of iperf3 from A to C through
//! the relay B (`netns::three_hops`), then `skywire usage --json` at all three nodes.
//!
//! - **Ledgers against each other, exactly.** B's relay lines (by neighbours) against A's
//!   and C's route lines (on the wire): every datagram an end sent is one B forwarded or
//!   one lost on the way, and every one B forwarded is one the other end accepted or one
//!   lost on the way. Losses are not guessed: each is a counter somebody keeps (the
//!   namespaces' kernel UDP `InErrors`, the nodes' drop counters), so the sums must match
//!   to the packet and to the byte.
//! - **Ledgers against iperf3.** The IP packets C's ledger says it wrote to its TUN device
//!   from A carry iperf3's bytes (the receiver's count) plus IP and TCP headers: 40 to 52
//!   bytes a packet on average (20 + 20, plus 12 of TCP timestamps on Linux); what the
//!   route carried on the wire is those IP packets plus 36 bytes each (route header,
//!   transport header, tag), plus handshakes and keepalives.
//! - **Persistence.** After a clean stop of A its day file holds what `skywire usage` said,
//!   and after a start the node goes on from it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::process::Command;
use std::time::{Duration, Instant};

use netns::three_hops::{A_TUN_V4, C_TUN_V4, ThreeHops};
use netns::{Node, run_ok};
use skywire_control::civil::Day;
use skywire_control::node::usage::report::{RelayRow, Report, Row};
use skywire_control::node::usage::{DayRecord, Ledger, Tally};
use skywire_dataplane::wire::TRANSPORT_OVERHEAD;

use crate::common::skywire_binary;

const A_TRANSPORT: &str = "198.18.1.1:6000";
const C_TRANSPORT: &str = "198.18.2.3:6000";

/// `skywire usage --json --by BY` at `node`, parsed.
fn usage(node: &Node, by: &str) -> Report {
    let out = run_ok(
        Command::new(skywire_binary())
            .args(["usage", "--json", "--by", by, "--socket"])
            .arg(node.socket()),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("usage --json: {e}: {out}"))
}

fn route_row<'a>(report: &'a Report, name: &str) -> &'a Row {
    report
        .rows
        .iter()
        .find(|r| r.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no route {name} in {report:?}"))
}

fn relay_row(report: &Report, from: &str, to: &str) -> Tally {
    report
        .relayed
        .iter()
        .find(|r: &&RelayRow| r.from.to_string() == from && r.to.to_string() == to)
        .map_or_else(Tally::default, |r| r.forwarded)
}

fn app_row(report: &Report, app: &str) -> Row {
    report
        .rows
        .iter()
        .find(|r| r.name.as_deref() == Some(app))
        .unwrap_or_else(|| panic!("no app {app} in {report:?}"))
        .clone()
}

/// Datagrams the kernel of `host`'s namespace dropped before a socket read them.
fn kernel_drops(hops: &ThreeHops, host: &str) -> u64 {
    let snmp = hops.topo.udp_snmp(host);
    // InErrors counts RcvbufErrors as well (and checksum errors).
    snmp.get("InErrors").copied().unwrap_or(0)
}

/// A node's drops of datagrams that reached it (the forwarding decision's and its route
/// ends'), and of datagrams it could not send (a full socket buffer, no way there).
fn drops(node: &Node) -> (u64, u64) {
    let status = node.status_json();
    let count = |names: &[&str]| -> u64 {
        status
            .drops
            .0
            .iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let routes: u64 = status
        .routes
        .iter()
        .flat_map(|r| r.drops.0.iter().map(|(_, n)| n))
        .sum();
    (
        count(&["malformed", "unknown route", "wrong previous hop"]) + routes,
        count(&["queue full", "unreachable"]),
    )
}

#[test]
fn ledgers_of_source_relay_and_destination_agree_under_a_1_gb_iperf3_transfer() {
    if !netns::skip_unless_root("metering") {
        return;
    }
    let mut hops = ThreeHops::start();
    assert_eq!(hops.ping_v4(2), 2, "the route works");
    let before: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|h| kernel_drops(&hops, h))
        .collect();
    let drops_before: Vec<(u64, u64)> = [&hops.a, &hops.b, &hops.c]
        .iter()
        .map(|n| drops(n))
        .collect();

    // 1 GB from A to C: the receiver's byte count is the one that arrived.
    let mut server = hops.topo.spawn(
        "c",
        "iperf3-server",
        std::path::Path::new("iperf3"),
        &["-s", "-1", "-B", C_TUN_V4, "-p", "5201", "-J"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let client = hops.topo.output(
        "a",
        "iperf3",
        &[
            "-c", C_TUN_V4, "-B", A_TUN_V4, "-p", "5201", "-n", "1G", "-J",
        ],
    );
    let took = started.elapsed();
    assert!(
        client.status.success(),
        "iperf3 -c: {}",
        String::from_utf8_lossy(&client.stdout)
    );
    let server_lines = server.finish(Duration::from_secs(10));
    let server_json: serde_json::Value =
        serde_json::from_str(&server_lines.join("\n")).expect("iperf3 -s -J prints JSON");
    let received = server_json["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap();
    let client_json: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    let sent = client_json["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    let retransmits = client_json["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "iperf3: {sent} bytes sent, {received} received, {retransmits} retransmits, in {took:.1?}"
    );
    // The client wrote 1 GiB into its socket and closed it: TCP delivers every byte to C's
    // kernel, through C's TUN device. (The server's own count stops at the end of the
    // test, while the last bytes may still be in flight, so it can be a little short.)
    assert_eq!(sent, 1 << 30, "iperf3 sent 1 GiB");
    assert!(received <= sent);

    // Wait until the route is quiet (no keepalive due mid-read), then read all ledgers.
    std::thread::sleep(Duration::from_millis(300));
    let a = usage(&hops.a, "route");
    let b = usage(&hops.b, "route");
    let c = usage(&hops.c, "route");
    let (a_apps, c_apps) = (usage(&hops.a, "app"), usage(&hops.c, "app"));
    let after: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|h| kernel_drops(&hops, h))
        .collect();
    let lost: Vec<u64> = after.iter().zip(&before).map(|(x, y)| x - y).collect();
    let (inbound, unsent): (Vec<u64>, Vec<u64>) = [&hops.a, &hops.b, &hops.c]
        .iter()
        .zip(&drops_before)
        .map(|(n, (i, u))| {
            let (i2, u2) = drops(n);
            (i2 - i, u2 - u)
        })
        .unzip();
    println!(
        "datagrams lost (a, b, c): kernel {lost:?}, dropped by the node {inbound:?}, not sent {unsent:?}"
    );
    for (node, by) in [
        (&hops.a, "route"),
        (&hops.b, "route"),
        (&hops.c, "app"),
        (&hops.c, "peer"),
    ] {
        let text = run_ok(
            Command::new(skywire_binary())
                .args(["usage", "--by", by, "--socket"])
                .arg(node.socket()),
        );
        println!("--- skywire usage --by {by} ({}):\n{text}", node.host());
        assert!(text.contains("usage on"), "{text}");
    }

    let a_route = route_row(&a, "to-c");
    let c_route = route_row(&c, "to-a");
    let b_ac = relay_row(&b, A_TRANSPORT, C_TRANSPORT);
    let b_ca = relay_row(&b, C_TRANSPORT, A_TRANSPORT);
    assert!(b_ac.packets > 700_000, "B relayed the transfer: {b_ac:?}");

    // Each end's datagrams against B's, both directions: what B did not forward was not
    // sent by its end, or dropped by B's kernel or by B; what B forwarded and an end did
    // not accept was not sent by B, or dropped by that end's kernel or by that end. Each
    // of those is a counter: the sums are exact.
    let sent_by_ends = a_route.sent.packets + c_route.sent.packets;
    let forwarded = b_ac.packets + b_ca.packets;
    assert_eq!(
        sent_by_ends,
        forwarded + unsent[0] + unsent[2] + lost[1] + inbound[1],
        "datagrams sent by A and C = forwarded by B + lost before B's rules"
    );
    let accepted_by_ends = a_route.received.packets + c_route.received.packets;
    assert_eq!(
        forwarded,
        accepted_by_ends + unsent[1] + lost[0] + lost[2] + inbound[0] + inbound[2],
        "datagrams forwarded by B = accepted by A and C + lost after B's rules"
    );
    // Each direction on its own: never more downstream than upstream, and equal when
    // nothing was lost (bytes too).
    assert!(b_ac.packets <= a_route.sent.packets && c_route.received.packets <= b_ac.packets);
    assert!(b_ca.packets <= c_route.sent.packets && a_route.received.packets <= b_ca.packets);
    if lost.iter().chain(&inbound).chain(&unsent).all(|&n| n == 0) {
        assert_eq!(a_route.sent, b_ac, "A -> C: A's ledger and B's agree");
        assert_eq!(b_ac, c_route.received, "A -> C: B's ledger and C's agree");
        assert_eq!(c_route.sent, b_ca, "C -> A: C's ledger and B's agree");
        assert_eq!(b_ca, a_route.received, "C -> A: B's ledger and A's agree");
        println!("no datagram was lost: the three ledgers agree exactly, both directions");
    }

    // Inside the wire: each data datagram is its IP packet plus 36 bytes; the other
    // datagrams (handshakes, keepalives, pings) are few.
    for (name, wire, payload) in [
        ("A sent", a_route.sent, a_route.payload_sent.unwrap()),
        (
            "A received",
            a_route.received,
            a_route.payload_received.unwrap(),
        ),
        ("C sent", c_route.sent, c_route.payload_sent.unwrap()),
        (
            "C received",
            c_route.received,
            c_route.payload_received.unwrap(),
        ),
    ] {
        let control = wire.packets - payload.packets;
        let control_bytes =
            wire.bytes - payload.bytes - payload.packets * TRANSPORT_OVERHEAD as u64;
        assert!(control < 50, "{name}: {control} datagrams besides data");
        assert!(
            control_bytes >= control * TRANSPORT_OVERHEAD as u64 && control_bytes <= control * 200,
            "{name}: {control} other datagrams in {control_bytes} bytes"
        );
    }

    // Against iperf3: the IP packets C wrote to its TUN device from A hold the 1 GiB
    // iperf3 sent plus 40 to 52 bytes of headers each (the control connection's few
    // hundred bytes are within that).
    let c_tun = app_row(&c_apps, "tun");
    let overhead = (c_tun.received.bytes - sent) as f64 / c_tun.received.packets as f64;
    println!(
        "C wrote {} IP packets, {} bytes, to its TUN device: {overhead:.2} bytes of headers a packet over iperf3's {sent}",
        c_tun.received.packets, c_tun.received.bytes
    );
    assert!(
        (40.0..=52.5).contains(&overhead),
        "headers per packet {overhead:.2}"
    );
    // What came out of C's TUN device is what C sealed; A opened it and wrote it to its own.
    let a_tun = app_row(&a_apps, "tun");
    assert_eq!(c_tun.received, c_route.payload_received.unwrap());
    assert_eq!(a_tun.sent.bytes, a_route.payload_sent.unwrap().bytes);
    assert!(a_tun.sent.bytes >= sent);

    // A clean stop writes the day file; a start goes on from it.
    let state = hops.a.dir().join("state");
    hops.a.sigterm_and_wait(Duration::from_secs(10));
    let day_file = Ledger::folder(&state, &hops.a.key()).join(format!("{}.json", Day::today()));
    let record: DayRecord =
        serde_json::from_slice(&std::fs::read(&day_file).unwrap()).expect("the day file");
    let mode = common::mode_of(&day_file);
    assert_eq!(mode & 0o777, 0o600, "{}", day_file.display());
    let line = record.routes.iter().find(|r| r.route == "to-c").unwrap();
    assert!(line.sent.packets >= a_route.sent.packets && line.sent.bytes >= a_route.sent.bytes);
    assert!(line.sent.packets - a_route.sent.packets < 50, "{line:?}");
    // With the node stopped, `--config` reads the same files.
    let out = run_ok(
        Command::new(skywire_binary())
            .args(["usage", "--json", "--config"])
            .arg(hops.a.config_path()),
    );
    let offline: Report = serde_json::from_str(&out).unwrap();
    assert_eq!(route_row(&offline, "to-c").sent, line.sent, "{out}");
    hops.a.start();
    let again = usage(&hops.a, "route");
    let again_route = route_row(&again, "to-c");
    assert!(again_route.sent.packets >= line.sent.packets, "{again:?}");
    println!("after a restart A's ledger goes on from its file: {again_route:?}");
}
