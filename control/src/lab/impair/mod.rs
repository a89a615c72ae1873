//! The impairment relay of the namespace tests (`skywire lab impair`): a UDP forwarder that
//! sits on a link between two namespaces and, per direction and from a seed, loses,
//! duplicates, reorders, delays, corrupts, truncates and replays datagrams, because this
//! kernel has no `netem` (RELIABILITY.md has its usage and the figures it produced).
//!
//! This module is the sans-IO core: [`Impairer`] decides what happens to datagram `n` of a
//! direction from the seed, `n` and the settings alone (a hash of the three, not a shared
//! random stream), so a run is reproducible whatever the timing, and a test can predict it.
//! It takes `now` and the datagram, and hands back what to send and when:
//!
//! ```text
//! handle_datagram(now, dir, bytes) -> Decision     (what was done, for the log)
//! poll_transmit(now) -> Option<Transmit>           (call until None)
//! poll_timeout() -> Option<Instant>                (when to call poll_transmit again)
//! ```
//!
//! [`driver`] is the thin loop around it (two UDP sockets, poll(2), the command lines on
//! stdin); [`settings`] parses the per-direction settings.
//!
//! With a `rate`, datagrams of that direction leave at most that many a second, in the
//! order they are due (a bottleneck, and what lets a hold of 9000 leave without the
//! receiving veth's backlog dropping most of it).
//!
//! Per datagram, in this order: loss (nothing else happens), one bit flipped, truncation,
//! then the datagram enters the history (for later replays) and is sent, twice if
//! duplicated, each copy after the delay plus its jitter (plus `late_by` for a `late` one),
//! or into the reorder hold; a replay sends one earlier datagram of the history again
//! right after it.
//!
//! Unlike the data plane this allocates per datagram (a copy is held for the delay, the
//! reorder hold and the replay history): it is a test tool, and rates of a few ten thousand
//! datagrams a second are all the tests need.
//!
//! Invariants: a held or delayed datagram is sent exactly once per copy; the reorder hold
//! is flushed [`HOLD_TIMEOUT`] after its latest datagram even when it is not full, so a stream that stops never
//! strands its last datagrams; the history keeps at most [`HISTORY`] datagrams a direction.

pub mod driver;
pub mod settings;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use settings::{Impairments, SettingsError};

/// How long a reorder hold that is not full waits for its next datagram before it is
/// released anyway, unless the settings' `hold` says otherwise (an idle time: a steady
/// stream fills a hold of any size).
pub const HOLD_TIMEOUT: Duration = Duration::from_millis(20);
/// Datagrams a direction remembers for replays.
pub const HISTORY: usize = 1024;

/// The two directions through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// From the client (whoever sends to the listening address) to the target.
    Forward,
    /// From the target back to the client.
    Back,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Forward => 0,
            Dir::Back => 1,
        }
    }

    /// `forward` or `back`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dir::Forward => "forward",
            Dir::Back => "back",
        }
    }
}

/// What one direction did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Datagrams that arrived.
    pub received: u64,
    /// Datagrams sent on (every copy, replays included).
    pub sent: u64,
    /// Dropped by `loss`.
    pub lost: u64,
    /// Extra copies made by `dup`.
    pub duplicated: u64,
    /// Datagrams that went through a reorder hold.
    pub held: u64,
    /// Holds released.
    pub holds_released: u64,
    /// Datagrams sent later than they came (`delay` or `jitter` above zero).
    pub delayed: u64,
    /// Datagrams with one bit flipped.
    pub flipped: u64,
    /// Datagrams cut short.
    pub truncated: u64,
    /// Earlier datagrams sent again.
    pub replayed: u64,
    /// Bytes that arrived.
    pub bytes_received: u64,
    /// Bytes sent on.
    pub bytes_sent: u64,
    /// Sends the system refused (a full socket buffer): counted in `sent`, never arrived.
    pub send_failed: u64,
    /// Datagrams sent `late_by` later than their delay said (`late`).
    pub late: u64,
}

/// Both directions' counters, as the relay prints them (one JSON object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Client to target.
    pub forward: Counters,
    /// Target to client.
    pub back: Counters,
}

/// What happened to one datagram, for the per-action log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The direction.
    pub dir: Option<Dir>,
    /// The datagram's number in its direction, from 0.
    pub n: u64,
    /// Its length as it came.
    pub len: usize,
    /// Its first 8 bytes as they came (zeros past the end): enough for a test to tell the
    /// kind of packet without the relay knowing any protocol.
    pub head: [u8; 8],
    /// Dropped (nothing else applies).
    pub lost: bool,
    /// The bit inverted (index from the first byte's most significant bit).
    pub flipped_bit: Option<usize>,
    /// The length it was cut to.
    pub truncated_to: Option<usize>,
    /// Sent twice.
    pub duplicated: bool,
    /// Went into the reorder hold.
    pub held: bool,
    /// Extra delay of the first copy.
    pub delay_us: u64,
    /// The number of the earlier datagram replayed after it.
    pub replayed: Option<u64>,
    /// Sent `late_by` later than its delay said (`late`; not for held datagrams).
    pub late: bool,
}

/// A datagram to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Which way: forward goes to the target, back to the client.
    pub dir: Dir,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// SplitMix64: a small, well-mixed generator; one is seeded per datagram.
#[derive(Debug, Clone, Copy)]
struct Rng(u64);

impl Rng {
    /// The generator of datagram `n` of direction `dir` under `seed`.
    fn for_datagram(seed: u64, dir: Dir, n: u64) -> Self {
        let mut rng = Rng(seed ^ (dir.index() as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        rng.0 ^= rng
            .next()
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for 0, always for 1).
    fn chance(&mut self, p: f64) -> bool {
        // Drawn every time, so one setting never shifts the draws of another.
        let draw = self.unit();
        draw < p
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

/// One direction's state.
#[derive(Debug, Default)]
struct Lane {
    settings: Impairments,
    counters: Counters,
    next_n: u64,
    /// The reorder hold and when its latest datagram came.
    hold: Vec<Vec<u8>>,
    hold_since: Option<Instant>,
    /// Earlier datagrams, as sent, with their numbers.
    history: VecDeque<(u64, Vec<u8>)>,
    /// Datagrams waiting for their time: (due, sequence) -> datagram; the sequence keeps
    /// equal due times in the order they were scheduled.
    scheduled: BTreeMap<(Instant, u64), Vec<u8>>,
    /// With a `rate`: when the next datagram may leave.
    next_free: Option<Instant>,
}

impl Lane {
    /// When the first scheduled datagram may leave: its due time, or later under `rate`.
    fn ready_at(&self) -> Option<Instant> {
        let due = self.scheduled.first_key_value().map(|(k, _)| k.0)?;
        Some(self.next_free.map_or(due, |free| due.max(free)))
    }
}

/// The relay's core; see the module docs for the call order.
#[derive(Debug)]
pub struct Impairer {
    seed: u64,
    lanes: [Lane; 2],
    sequence: u64,
}

impl Impairer {
    /// A relay core with `seed` and no impairment in either direction.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            lanes: [Lane::default(), Lane::default()],
            sequence: 0,
        }
    }

    fn lane(&mut self, dir: Dir) -> &mut Lane {
        let [forward, back] = &mut self.lanes;
        match dir {
            Dir::Forward => forward,
            Dir::Back => back,
        }
    }

    /// The settings of `dir` from now on (a hold in progress is released at `now`).
    pub fn set(&mut self, now: Instant, dir: Dir, settings: Impairments) {
        self.release_hold(now, dir);
        self.lane(dir).settings = settings;
    }

    /// The settings of `dir`.
    pub fn settings(&self, dir: Dir) -> Impairments {
        self.lanes
            .get(dir.index())
            .map(|l| l.settings)
            .unwrap_or_default()
    }

    /// Both directions' counters.
    pub fn report(&self) -> Report {
        let [forward, back] = &self.lanes;
        Report {
            forward: forward.counters,
            back: back.counters,
        }
    }

    fn schedule(&mut self, due: Instant, dir: Dir, bytes: Vec<u8>) {
        self.sequence += 1;
        let sequence = self.sequence;
        self.lane(dir).scheduled.insert((due, sequence), bytes);
    }

    /// A datagram arrived going `dir`: decide its fate; what is to be sent comes out of
    /// [`Self::poll_transmit`].
    pub fn handle_datagram(&mut self, now: Instant, dir: Dir, bytes: &[u8]) -> Decision {
        let seed = self.seed;
        let lane = self.lane(dir);
        let n = lane.next_n;
        lane.next_n += 1;
        lane.counters.received += 1;
        lane.counters.bytes_received += bytes.len() as u64;
        let s = lane.settings;
        let mut rng = Rng::for_datagram(seed, dir, n);
        let mut head = [0u8; 8];
        for (to, from) in head.iter_mut().zip(bytes) {
            *to = *from;
        }
        let mut decision = Decision {
            dir: Some(dir),
            n,
            len: bytes.len(),
            head,
            ..Decision::default()
        };
        // Every draw is made whatever the outcome, so that changing one probability never
        // changes what the others decide for the same datagram.
        let lose = rng.chance(s.loss);
        let flip = rng.chance(s.flip);
        let flip_at = rng.below(bytes.len() as u64 * 8);
        let truncate = rng.chance(s.truncate);
        let truncate_to = rng.below(bytes.len() as u64);
        let duplicate = rng.chance(s.duplicate);
        let jitter_us = rng.below(s.jitter.as_micros() as u64 + 1);
        let dup_jitter_us = rng.below(s.jitter.as_micros() as u64 + 1);
        let replay = rng.chance(s.replay);
        let replay_pick = rng.next();
        // Drawn last, so settings without `late` decide as they did before it existed.
        let late = rng.chance(s.late);
        if lose {
            lane.counters.lost += 1;
            decision.lost = true;
            return decision;
        }
        let mut bytes = bytes.to_vec();
        if flip && !bytes.is_empty() {
            let bit = flip_at as usize;
            if let Some(byte) = bytes.get_mut(bit / 8) {
                *byte ^= 0x80 >> (bit % 8);
                lane.counters.flipped += 1;
                decision.flipped_bit = Some(bit);
            }
        }
        if truncate && !bytes.is_empty() {
            bytes.truncate(truncate_to as usize);
            lane.counters.truncated += 1;
            decision.truncated_to = Some(bytes.len());
        }
        let replayed = if replay && !lane.history.is_empty() {
            let pick = (replay_pick % lane.history.len() as u64) as usize;
            lane.history.get(pick).cloned()
        } else {
            None
        };
        if lane.history.len() >= HISTORY {
            lane.history.pop_front();
        }
        lane.history.push_back((n, bytes.clone()));
        let mut copies = vec![(bytes.clone(), jitter_us)];
        if duplicate {
            lane.counters.duplicated += 1;
            decision.duplicated = true;
            copies.push((bytes, dup_jitter_us));
        }
        if let Some((old_n, old)) = replayed {
            lane.counters.replayed += 1;
            decision.replayed = Some(old_n);
            copies.push((old, jitter_us));
        }
        // A late datagram: every copy of it goes `late_by` later (a hold shuffles anyway).
        let late_by = if late && s.reorder == 0 {
            lane.counters.late += 1;
            decision.late = true;
            s.late_by.unwrap_or(settings::LATE_BY)
        } else {
            Duration::ZERO
        };
        decision.delay_us = (s.delay + late_by).as_micros() as u64 + jitter_us;
        if s.reorder > 0 {
            lane.counters.held += copies.len() as u64;
            decision.held = true;
            lane.hold_since = Some(now);
            lane.hold.extend(copies.into_iter().map(|(b, _)| b));
            if lane.hold.len() >= s.reorder {
                self.release_hold(now, dir);
            }
        } else {
            for (copy, jitter_us) in copies {
                let wait = s.delay + late_by + Duration::from_micros(jitter_us);
                if !wait.is_zero() {
                    self.lane(dir).counters.delayed += 1;
                }
                self.schedule(now + wait, dir, copy);
            }
        }
        decision
    }

    /// Send the hold of `dir` shuffled (Fisher-Yates from the seed and the hold's number),
    /// each after the direction's delay and its own jitter.
    fn release_hold(&mut self, now: Instant, dir: Dir) {
        let seed = self.seed;
        let lane = self.lane(dir);
        if lane.hold.is_empty() {
            return;
        }
        let mut hold = std::mem::take(&mut lane.hold);
        lane.hold_since = None;
        let release = lane.counters.holds_released;
        lane.counters.holds_released += 1;
        let s = lane.settings;
        // A stream of its own (`!release`), apart from the datagram numbers.
        let mut rng = Rng::for_datagram(seed, dir, !release);
        for i in (1..hold.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            hold.swap(i, j);
        }
        for copy in hold {
            let jitter = Duration::from_micros(rng.below(s.jitter.as_micros() as u64 + 1));
            let wait = s.delay + jitter;
            if !wait.is_zero() {
                self.lane(dir).counters.delayed += 1;
            }
            self.schedule(now + wait, dir, copy);
        }
    }

    /// The next datagram due at `now`, if any; holds that waited [`HOLD_TIMEOUT`] are
    /// released first.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        for dir in [Dir::Forward, Dir::Back] {
            let since = self.lane(dir).hold_since;
            let wait = self.lane(dir).settings.hold.unwrap_or(HOLD_TIMEOUT);
            if since.is_some_and(|t| now.saturating_duration_since(t) >= wait) {
                self.release_hold(now, dir);
            }
        }
        // The lane whose datagram may leave first goes first.
        let dir = [Dir::Forward, Dir::Back]
            .into_iter()
            .filter_map(|dir| Some((self.lane(dir).ready_at()?, dir)))
            .min()
            .filter(|(at, _)| *at <= now)?
            .1;
        let lane = self.lane(dir);
        let (_, bytes) = lane.scheduled.pop_first()?;
        lane.counters.sent += 1;
        lane.counters.bytes_sent += bytes.len() as u64;
        if lane.settings.rate > 0 {
            let gap = Duration::from_secs(1) / lane.settings.rate;
            lane.next_free = Some(lane.next_free.map_or(now, |free| free.max(now)) + gap);
        }
        Some(Transmit { dir, bytes })
    }

    /// When [`Self::poll_transmit`] next has something: the first due datagram or the end
    /// of a hold's wait.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.lanes.iter().filter_map(Lane::ready_at);
        let holds = self.lanes.iter().filter_map(|l| {
            l.hold_since
                .map(|t| t + l.settings.hold.unwrap_or(HOLD_TIMEOUT))
        });
        due.chain(holds).min()
    }

    /// The driver could not send a datagram [`Self::poll_transmit`] gave it.
    pub fn count_send_failure(&mut self, dir: Dir) {
        self.lane(dir).counters.send_failed += 1;
    }

    /// Datagrams held or scheduled and not sent yet.
    pub fn pending(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.scheduled.len() + l.hold.len())
            .sum()
    }
}

#[cfg(test)]
mod tests;
