#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use skywire_dataplane::crypto::PrivateKey;
use skywire_dataplane::engine::Origin;
use skywire_dataplane::engine::usage::{EndCounts, EndUsage, RelayUsage, StreamUsage};
use skywire_dataplane::wire::RouteId;

use super::report::{By, report};
use super::*;
use crate::local::socket::tests::TempDir;

fn key(n: u8) -> PublicKey {
    PrivateKey::from_bytes([n; 32]).public_key()
}

fn count(packets: u64, bytes: u64) -> Count {
    Count { packets, bytes }
}

fn day(text: &str) -> Day {
    text.parse().unwrap()
}

/// One route end's traffic to `peer`, one relay's, one stream service's.
fn usage(peer: PublicKey, n: u64) -> Usage {
    Usage {
        ends: vec![EndUsage {
            name: "to-c".into(),
            peer,
            in_id: RouteId::new(201).unwrap(),
            origin: Origin::Config,
            counts: EndCounts {
                wire_sent: count(n, n * 136),
                wire_received: count(n, n * 40),
                sealed: count(n, n * 100),
                opened: count(n, n * 4),
                tun_read: count(n, n * 100),
                tun_written: count(n, n * 4),
            },
        }],
        relays: vec![RelayUsage {
            in_id: RouteId::new(100).unwrap(),
            prev_hop: "198.18.1.1:6000".parse().unwrap(),
            next_hop: "198.18.2.3:6000".parse().unwrap(),
            origin: Origin::Config,
            forwarded: count(n, n * 136),
        }],
        streams: vec![StreamUsage {
            peer,
            port: 1080,
            sent: n * 1000,
            received: n * 7,
        }],
    }
}

#[test]
fn a_day_adds_up_is_written_0600_and_read_back_after_a_restart() {
    let dir = TempDir::new();
    let (me, peer) = (key(1), key(2));
    let now = Instant::now();
    let today = day("2026-12-06");
    let mut ledger = Ledger::open(&dir.0, me, today);
    ledger.add(today, &usage(peer, 3), now);
    ledger.add(today, &usage(peer, 2), now);
    ledger.save(now, Save::WhenDue);
    let path = Ledger::folder(&dir.0, &me).join("2026-12-06.json");
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let record: DayRecord = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(record.day, "2026-12-06");
    assert_eq!(record.routes.len(), 1);
    let line = &record.routes[0];
    assert_eq!((line.sent.packets, line.sent.bytes), (5, 680));
    assert_eq!(
        (line.payload_sent.packets, line.payload_sent.bytes),
        (5, 500)
    );
    assert_eq!(record.relays[0].forwarded.packets, 5);
    let apps: Vec<(&str, u64, u64)> = record
        .apps
        .iter()
        .map(|a| (a.app.as_str(), a.sent.bytes, a.received.bytes))
        .collect();
    assert_eq!(apps, vec![("tun", 500, 20), ("socks", 5000, 35)]);

    // A restart on the same day goes on from the file.
    let mut again = Ledger::open(&dir.0, me, today);
    again.add(today, &usage(peer, 1), now);
    let days = again.days(today, today).unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].routes[0].sent.packets, 6);
}

#[test]
fn a_new_day_writes_the_last_one_and_starts_from_zero() {
    let dir = TempDir::new();
    let (me, peer) = (key(1), key(2));
    let now = Instant::now();
    let mut ledger = Ledger::open(&dir.0, me, day("2026-12-05"));
    ledger.add(day("2026-12-05"), &usage(peer, 4), now);
    // Not due yet after a write: the change waits in memory.
    ledger.save(now, Save::Now);
    ledger.add(day("2026-12-05"), &usage(peer, 1), now);
    ledger.save(now, Save::WhenDue);
    // The day changes: the 5th is written whatever the timer says.
    ledger.add(day("2026-12-06"), &usage(peer, 2), now);
    let days = ledger.days(day("2026-12-01"), day("2026-12-31")).unwrap();
    let totals: Vec<(&str, u64)> = days
        .iter()
        .map(|d| (d.day.as_str(), d.routes[0].sent.packets))
        .collect();
    assert_eq!(totals, vec![("2026-12-05", 5), ("2026-12-06", 2)]);
    // The range is honoured.
    let only = ledger.days(day("2026-12-06"), day("2026-12-06")).unwrap();
    assert_eq!(only.len(), 1);
    assert!(
        ledger
            .days(day("2026-11-01"), day("2026-11-30"))
            .unwrap()
            .is_empty()
    );

    // Added up over the period, by route, peer and app.
    let by_route = report(Key(me), "2026-12-05", "2026-12-06", &days, By::Route);
    assert_eq!(by_route.rows.len(), 1);
    assert_eq!(by_route.rows[0].sent.packets, 7);
    assert_eq!(by_route.rows[0].payload_sent.unwrap().bytes, 700);
    assert_eq!(by_route.relayed[0].forwarded.bytes, 7 * 136);
    let by_peer = report(Key(me), "2026-12-05", "2026-12-06", &days, By::Peer);
    assert_eq!(by_peer.rows[0].peer, Some(Key(peer)));
    assert_eq!(by_peer.rows[0].name, None);
    let by_app = report(Key(me), "2026-12-05", "2026-12-06", &days, By::App);
    let apps: Vec<(Option<&str>, u64)> = by_app
        .rows
        .iter()
        .map(|r| (r.name.as_deref(), r.sent.bytes))
        .collect();
    assert_eq!(apps, vec![(Some("socks"), 7000), (Some("tun"), 700)]);
    assert!(by_app.relayed.is_empty());
    let text = by_route.to_string();
    assert!(text.contains("route to-c to"), "{text}");
    assert!(
        text.contains("198.18.1.1:6000 -> 198.18.2.3:6000"),
        "{text}"
    );
    let json: super::report::Report =
        serde_json::from_str(&serde_json::to_string(&by_route).unwrap()).unwrap();
    assert_eq!(json, by_route);
}

#[test]
fn a_damaged_or_foreign_day_file_is_set_aside_and_the_day_starts_from_zero() {
    let dir = TempDir::new();
    let (me, other, peer) = (key(1), key(3), key(2));
    let today = day("2026-12-06");
    let folder = Ledger::folder(&dir.0, &me);
    fs::create_dir_all(&folder).unwrap();
    let path = folder.join("2026-12-06.json");
    fs::write(&path, b"{\"version\": 1, \"node\": tru").unwrap();
    let mut ledger = Ledger::open(&dir.0, me, today);
    assert!(!path.exists(), "set aside");
    let aside: Vec<_> = fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    ledger.add(today, &usage(peer, 1), Instant::now());
    assert_eq!(
        ledger.days(today, today).unwrap()[0].routes[0].sent.packets,
        1
    );

    // Another node's ledger under this node's name.
    let mut theirs = Ledger::open(&dir.0, other, today);
    theirs.add(today, &usage(peer, 9), Instant::now());
    theirs.save(Instant::now(), Save::Now);
    let their_file = Ledger::folder(&dir.0, &other).join("2026-12-06.json");
    fs::copy(&their_file, &path).unwrap();
    let fresh = Ledger::open(&dir.0, me, today);
    assert!(fresh.days(today, today).unwrap().is_empty());
    assert!(!path.exists(), "set aside");
}

#[test]
fn a_folder_that_cannot_be_written_keeps_the_figures_in_memory() {
    let dir = TempDir::new();
    let (me, peer) = (key(1), key(2));
    // A file where the ledger's folder should be.
    fs::write(Ledger::folder(&dir.0, &me), b"in the way").unwrap();
    let today = day("2026-12-06");
    let mut ledger = Ledger::open(&dir.0, me, today);
    ledger.add(today, &usage(peer, 2), Instant::now());
    ledger.save(Instant::now(), Save::Now);
    assert!(ledger.failing);
    // `days` reads the folder: it is not one.
    assert!(ledger.days(today, today).is_err());
    assert_eq!(ledger.totals.routes.values().next().unwrap()[0].packets, 2);
}

#[test]
fn the_managers_routes_to_a_peer_add_up_on_one_line() {
    let dir = TempDir::new();
    let (me, peer) = (key(1), key(2));
    let today = day("2026-12-06");
    let mut ledger = Ledger::open(&dir.0, me, today);
    // Route churn: a new manager route (and name) each time, and a configured route.
    for n in 0..100u64 {
        let mut u = usage(peer, 1);
        u.ends[0].name = format!("mgr-{n}");
        u.ends[0].origin = Origin::Manager {
            route: n,
            expire_after: Duration::from_secs(30),
        };
        ledger.add(today, &u, Instant::now());
    }
    ledger.add(today, &usage(peer, 1), Instant::now());
    let days = ledger.days(today, today).unwrap();
    let lines: Vec<(&str, u64)> = days[0]
        .routes
        .iter()
        .map(|r| (r.route.as_str(), r.sent.packets))
        .collect();
    assert_eq!(lines, vec![(MANAGED, 100), ("to-c", 1)]);
    let text = report(Key(me), "2026-12-06", "2026-12-06", &days, By::Route).to_string();
    assert!(text.contains("the manager's routes to"), "{text}");
}
