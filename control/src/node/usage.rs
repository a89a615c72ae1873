//! Metering (issue 15): the node's usage ledger, one file per UTC day in the state
//! directory, and what `skywire usage` shows of it.
//!
//! The engine counts every packet once, where this node saw it
//! ([`skywire_dataplane::engine::usage`]): at its route ends (originated: the datagrams
//! each end sent and accepted on the wire, and the IP packets inside), at its relay rules
//! (relayed: the datagrams forwarded), and on its app streams (the bytes apps sent and
//! received, by peer and service port). [`Meter::update`] asks the engine for what it
//! counted since the last ask, every [`TAKE_EVERY`], and adds it to the day's ledger;
//! nothing is sampled or estimated, so the ledgers of a route's two ends and of its relays
//! agree to the packet (a datagram lost on a link is the difference). What a route end
//! or relay rule counted before it was removed comes with the next ask, so route churn
//! loses nothing either.
//!
//! Lines are kept by what a person asks about, and stay few under route churn: a route
//! end by its name and peer key (the manager's routes to a peer added up as [`MANAGED`]), a
//! relay by the neighbours it forwarded from and to (the relay does not know the route's
//! end keys), and an app by its service (`tun`: the kernel's traffic through the TUN
//! device, IP packets; otherwise the stream's service port, stream bytes) and peer key.
//!
//! The day's file, `usage-<first 16 hex digits of the key>/<YYYY-MM-DD>.json`, is
//! written with [`crate::atomic_file`] (0600, fsync, rename) at most every
//! [`SAVE_EVERY`] while traffic flows, when the day ends, and when the node stops. So a
//! crash (`kill -9`, power loss) loses at most the last [`SAVE_EVERY`] plus
//! [`TAKE_EVERY`]; a clean stop loses nothing. Traffic counted in the seconds around
//! midnight UTC goes to the day it was taken in. Day files are never pruned: a node with
//! 100 routes writes about 30 KB a day. A day file that does not parse is set aside, with
//! a warning, and the day starts again from zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::usage::{Count, Usage};
use skywire_dataplane::engine::{EngineGone, EngineHandle, Origin};

use crate::atomic_file::{self, StateError};
use crate::civil::Day;
use crate::manager::proto::Key;

/// How often the node asks its engine for what it counted.
pub const TAKE_EVERY: Duration = Duration::from_secs(3);

/// How often the day's file is written while its figures change (and how long a failed
/// write waits before the next try).
pub const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The name under which a day adds up the routes the manager set up to a peer: their own
/// names (`mgr-<route>`) change with every route and repair, and a line per name would
/// grow without bound under route churn.
pub const MANAGED: &str = "manager";

/// The version of the day files this program writes and reads.
const VERSION: u32 = 1;

/// How long the engine gets to answer an ask. Its answer is the only copy of the counts
/// since the last ask, so this is generous: a timed-out answer is lost to the ledger.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Tally {
    /// Add `other`.
    pub fn add(&mut self, other: Tally) {
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

impl From<Count> for Tally {
    fn from(c: Count) -> Self {
        Self {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

/// What a route end of this node carried in a day (originated traffic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLine {
    /// The route's name (a configured route's), or [`MANAGED`]: the manager's routes to
    /// the peer.
    pub route: String,
    /// The node at its far end.
    pub peer: Key,
    /// Datagrams sent on the route's first hop, all types, whole UDP payloads.
    pub sent: Tally,
    /// Datagrams of the route accepted (authenticated), all types.
    pub received: Tally,
    /// Of what was sent, the IP packets carried (their length; each is
    /// [`TRANSPORT_OVERHEAD`](skywire_dataplane::wire::TRANSPORT_OVERHEAD) bytes shorter
    /// than its datagram).
    pub payload_sent: Tally,
    /// Of what was received, the IP packets carried.
    pub payload_received: Tally,
}

/// What this node relayed in a day between two neighbours (one direction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayLine {
    /// The previous hop.
    pub from: SocketAddr,
    /// The next hop.
    pub to: SocketAddr,
    /// Datagrams forwarded, whole UDP payloads.
    pub forwarded: Tally,
}

/// What an app on this node exchanged with a peer in a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppLine {
    /// `tun`, or the service's name ([`app_name`]).
    pub app: String,
    /// The stream's service port; none for `tun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The peer.
    pub peer: Key,
    /// `tun`: IP packets read from the TUN device for routes to the peer; a stream
    /// service: the bytes apps here sent.
    pub sent: Tally,
    /// `tun`: IP packets from the peer written to the TUN device; a stream service: the
    /// bytes apps here received (packets are not counted for streams: 0).
    pub received: Tally,
}

/// One day of a node's ledger, as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayRecord {
    /// The file's version.
    pub version: u32,
    /// The node.
    pub node: Key,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Route ends, by name and peer.
    pub routes: Vec<RouteLine>,
    /// Relayed traffic, by neighbours.
    pub relays: Vec<RelayLine>,
    /// Apps, by service and peer.
    pub apps: Vec<AppLine>,
}

/// The name `skywire usage` gives a stream service: the shipped apps' default ports by
/// name, others as `port N`.
pub fn app_name(port: u16) -> String {
    match port {
        crate::config::DEFAULT_SOCKS_PORT => "socks".to_owned(),
        crate::config::DEFAULT_VPN_PORT => "vpn".to_owned(),
        port => format!("port {port}"),
    }
}

/// A day's figures while they are being added to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DayTotals {
    routes: BTreeMap<(String, PublicKey), [Tally; 4]>,
    relays: BTreeMap<(SocketAddr, SocketAddr), Tally>,
    /// By (service port, none for `tun`; peer).
    apps: BTreeMap<(Option<u16>, PublicKey), [Tally; 2]>,
}

impl DayTotals {
    fn add(&mut self, usage: &Usage) {
        for end in &usage.ends {
            let c = end.counts;
            let name = match end.origin {
                Origin::Config => end.name.clone(),
                Origin::Manager { .. } => MANAGED.to_owned(),
            };
            let line = self.routes.entry((name, end.peer)).or_default();
            for (tally, count) in
                line.iter_mut()
                    .zip([c.wire_sent, c.wire_received, c.sealed, c.opened])
            {
                tally.add(count.into());
            }
            if !(c.tun_read.is_zero() && c.tun_written.is_zero()) {
                let app = self.apps.entry((None, end.peer)).or_default();
                app[0].add(c.tun_read.into());
                app[1].add(c.tun_written.into());
            }
        }
        for relay in &usage.relays {
            self.relays
                .entry((relay.prev_hop, relay.next_hop))
                .or_default()
                .add(relay.forwarded.into());
        }
        for stream in &usage.streams {
            let app = self
                .apps
                .entry((Some(stream.port), stream.peer))
                .or_default();
            app[0].bytes = app[0].bytes.saturating_add(stream.sent);
            app[1].bytes = app[1].bytes.saturating_add(stream.received);
        }
    }

    fn record(&self, node: PublicKey, day: Day) -> DayRecord {
        DayRecord {
            version: VERSION,
            node: Key(node),
            day: day.to_string(),
            routes: self
                .routes
                .iter()
                .map(|((route, peer), [sent, received, ps, pr])| RouteLine {
                    route: route.clone(),
                    peer: Key(*peer),
                    sent: *sent,
                    received: *received,
                    payload_sent: *ps,
                    payload_received: *pr,
                })
                .collect(),
            relays: self
                .relays
                .iter()
                .map(|(&(from, to), &forwarded)| RelayLine {
                    from,
                    to,
                    forwarded,
                })
                .collect(),
            apps: self
                .apps
                .iter()
                .map(|(&(port, peer), &[sent, received])| AppLine {
                    app: port.map_or_else(|| "tun".to_owned(), app_name),
                    port,
                    peer: Key(peer),
                    sent,
                    received,
                })
                .collect(),
        }
    }

    fn from_record(record: DayRecord) -> Self {
        let mut totals = Self::default();
        for r in record.routes {
            totals.routes.insert(
                (r.route, r.peer.0),
                [r.sent, r.received, r.payload_sent, r.payload_received],
            );
        }
        for r in record.relays {
            totals.relays.insert((r.from, r.to), r.forwarded);
        }
        for a in record.apps {
            totals.apps.insert((a.port, a.peer.0), [a.sent, a.received]);
        }
        totals
    }
}

/// A node's ledger: the folder of its day files, and the current day's figures.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    key: PublicKey,
    day: Day,
    totals: DayTotals,
    /// Figures added since the last write.
    dirty: bool,
    /// When the file may next be written (the last write plus [`SAVE_EVERY`]).
    save_at: Option<Instant>,
    /// A failure to write was logged (said once, until a write succeeds).
    failing: bool,
}

/// When to write the day's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Save {
    /// If it changed and [`SAVE_EVERY`] has passed.
    WhenDue,
    /// If it changed (the node stops).
    Now,
}

impl Ledger {
    /// The folder of the day files of the node with `key` in `state_dir`.
    pub fn folder(state_dir: &Path, key: &PublicKey) -> PathBuf {
        let hex = key.to_string();
        state_dir.join(format!("usage-{}", hex.get(..16).unwrap_or(&hex)))
    }

    /// The ledger of `key` in `state_dir`, going on with `day`'s file if there is one.
    pub fn open(state_dir: &Path, key: PublicKey, day: Day) -> Self {
        let dir = Self::folder(state_dir, &key);
        let totals = load_day(&dir, &key, day);
        Self {
            dir,
            key,
            day,
            totals,
            dirty: false,
            save_at: None,
            failing: false,
        }
    }

    /// Add what the engine counted, taken on `day`. A new day writes the previous one's
    /// file first.
    pub fn add(&mut self, day: Day, usage: &Usage, now: Instant) {
        if day != self.day {
            self.save(now, Save::Now);
            self.day = day;
            self.totals = load_day(&self.dir, &self.key, day);
            self.dirty = false;
        }
        if !(usage.ends.is_empty() && usage.relays.is_empty() && usage.streams.is_empty()) {
            self.totals.add(usage);
            self.dirty = true;
        }
    }

    /// Write the day's file if it changed (and, with [`Save::WhenDue`], if
    /// [`SAVE_EVERY`] has passed since the last write or failed try). A failure is
    /// logged once, never fatal.
    pub fn save(&mut self, now: Instant, when: Save) {
        if !self.dirty || (when == Save::WhenDue && self.save_at.is_some_and(|at| now < at)) {
            return;
        }
        self.save_at = Some(now + SAVE_EVERY);
        let path = self.dir.join(format!("{}.json", self.day));
        let written = super::state::make_private_dir(&self.dir)
            .map_err(|source| StateError::Io {
                path: self.dir.clone(),
                source,
            })
            .and_then(|()| atomic_file::write_json(&path, &self.totals.record(self.key, self.day)));
        match written {
            Ok(()) => {
                if self.failing {
                    log::info!(
                        "skywire: the usage ledger is saved again in {}",
                        path.display()
                    );
                }
                self.failing = false;
                self.dirty = false;
            }
            Err(e) => {
                if !self.failing {
                    log::warn!(
                        "skywire: cannot save the usage ledger: {e}; its figures are kept in \
                         memory and written again in {} s (check node.state_dir)",
                        SAVE_EVERY.as_secs()
                    );
                }
                self.failing = true;
            }
        }
    }

    /// The days from `since` to `until` (both included) that have figures, oldest first:
    /// the current day from memory, the others from their files. A file that cannot be
    /// read or parsed is an error naming it.
    pub fn days(&self, since: Day, until: Day) -> Result<Vec<DayRecord>, StateError> {
        let mut days: BTreeMap<Day, DayRecord> = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries.flatten().collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        for entry in entries {
            let name = entry.file_name();
            let Some(day) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<Day>().ok())
            else {
                continue;
            };
            if day < since || day > until || day == self.day {
                continue;
            }
            if let Some(record) = atomic_file::read_json::<DayRecord>(&entry.path())? {
                days.insert(day, record);
            }
        }
        if (since..=until).contains(&self.day) && self.totals != DayTotals::default() {
            days.insert(self.day, self.totals.record(self.key, self.day));
        }
        Ok(days.into_values().collect())
    }
}

/// `day`'s figures from its file: none when there is no file, or when it was set aside or
/// could not be read (logged).
fn load_day(dir: &Path, key: &PublicKey, day: Day) -> DayTotals {
    let path = dir.join(format!("{day}.json"));
    let why = match atomic_file::read_json::<DayRecord>(&path) {
        Ok(None) => return DayTotals::default(),
        Ok(Some(record)) if record.version == VERSION && record.node.0 == *key => {
            return DayTotals::from_record(record);
        }
        Ok(Some(record)) if record.version == VERSION => {
            format!("it is the ledger of another node ({})", record.node.0)
        }
        Ok(Some(record)) => format!("its version is {}, not {VERSION}", record.version),
        Err(StateError::Parse {
            line,
            column,
            source,
            ..
        }) => format!("line {line}, column {column}: {source}"),
        Err(e) => {
            log::warn!("skywire: cannot read the usage ledger: {e}; the day starts from zero");
            return DayTotals::default();
        }
    };
    match atomic_file::set_aside(&path) {
        Ok(aside) => log::warn!(
            "skywire: {} is not this node's usage ledger ({why}); kept as {}, the day starts \
             from zero",
            path.display(),
            aside.display()
        ),
        Err(e) => log::warn!(
            "skywire: {} is not this node's usage ledger ({why}) and cannot be set aside: {e}",
            path.display()
        ),
    }
    DayTotals::default()
}

/// A node's ledger and its engine: what brings the ledger up to date, from any thread.
#[derive(Debug, Clone)]
pub struct Meter {
    ledger: Arc<Mutex<Ledger>>,
    engine: EngineHandle,
}

impl Meter {
    /// Meter `engine` into `ledger`.
    pub fn new(ledger: Ledger, engine: EngineHandle) -> Self {
        Self {
            ledger: Arc::new(Mutex::new(ledger)),
            engine,
        }
    }

    /// Add what the engine counted since the last ask to today's figures, and write them
    /// as `when` says.
    pub fn update(&self, now: Instant, when: Save) -> Result<(), EngineGone> {
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock: two asks never interleave their takes and adds.
        let usage = self.engine.take_usage(ENGINE_TIMEOUT)?;
        ledger.add(Day::today(), &usage, now);
        ledger.save(now, when);
        Ok(())
    }

    /// The ledger from `since` to `until`, brought up to date first (an engine that is
    /// gone leaves the figures as they were).
    pub fn days(&self, since: Day, until: Day) -> Result<Vec<DayRecord>, StateError> {
        let _ = self.update(Instant::now(), Save::WhenDue);
        let ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.days(since, until)
    }
}

pub mod report;

#[cfg(test)]
mod tests;
