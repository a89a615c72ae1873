//! What a node remembers about one peer key, shared by every route end it has with that
//! peer: [`PeerMemory`].
//!
//! A route end's [`Session`](super::Session) is created and dropped with the route end
//! (installed, repaired, removed), but what protects the handshake must outlive it:
//!
//! - **Replay memory.** The newest initiation accepted from the peer's key, on any route
//!   end of this node: its timestamp and its mac1. An initiation is accepted only if its
//!   timestamp is greater, so one captured earlier cannot be replayed into a fresh session
//!   after a re-install or repair (WireGuard keeps the same per peer, since it has one
//!   session per peer). A node restart loses it, as in WireGuard, which is why the
//!   initiator's timestamps come from its wall clock.
//! - **Timestamps sent.** The newest timestamp this node put into an initiation to the
//!   peer, on any route end: every initiation to the peer carries a greater one, so two
//!   route ends that initiate in the same instant do not send the same timestamp (the
//!   responder would refuse the second as a replay).
//! - **Rate of initiations.** A peer with a valid key may send valid initiations (new
//!   timestamps each time) as fast as it likes; answering one costs an ephemeral key and
//!   three Diffie-Hellman computations. Accepted initiations are limited per peer key to a
//!   burst of [`INITIATION_BURST`] and one per [`INITIATION_INTERVAL`] after it (a token
//!   bucket, kept as the instant it is full again). While the budget is spent, every
//!   initiation on a route end with this peer is refused before any Diffie-Hellman
//!   (`HandshakeRateLimited`). Only accepted initiations spend the budget, so a sender
//!   that cannot make valid initiations cannot spend it for the peer.
//!
//! The engine keeps one per peer key node-wide (`engine::core::peers`); a standalone
//! session keeps one beside it. The methods the session calls are crate-private: only the
//! session changes the memory.

use core::time::Duration;
use std::time::Instant;

use crate::wire::MAC_LEN;

/// Accepted initiations from one peer key that may come at once (the token bucket's size).
pub const INITIATION_BURST: u32 = 10;

/// After a burst, one accepted initiation per this interval from one peer key (2 a second).
/// A route end sends at most one initiation per `rekey_timeout` (5 s), so this leaves room
/// for 10 route ends with the same peer handshaking at their highest rate.
pub const INITIATION_INTERVAL: Duration = Duration::from_millis(500);

/// The node's memory of one peer key, shared by every route end with that peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMemory {
    /// The newest initiation accepted from the peer: its timestamp and its mac1.
    accepted: Option<(u64, [u8; MAC_LEN])>,
    /// The newest timestamp sent to the peer (0: none yet).
    sent: u64,
    /// When the rate budget is full again (`None`: it is full). Spending one initiation
    /// moves it [`INITIATION_INTERVAL`] later; the budget is spent while it lies more than
    /// `(INITIATION_BURST - 1) * INITIATION_INTERVAL` ahead.
    full_at: Option<Instant>,
}

impl PeerMemory {
    /// A memory with nothing in it, as after a node starts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The timestamp of the newest initiation accepted from the peer.
    pub fn newest_accepted(&self) -> Option<u64> {
        self.accepted.map(|(timestamp, _)| timestamp)
    }

    /// The newest initiation accepted from the peer, its timestamp and mac1: what a node
    /// keeps across a restart so that initiations captured before it stay refused.
    pub fn accepted_initiation(&self) -> Option<(u64, [u8; MAC_LEN])> {
        self.accepted
    }

    /// Remember an initiation accepted before the node restarted (its state file), unless
    /// a newer one was accepted since.
    pub fn restore_accepted(&mut self, timestamp: u64, mac: [u8; MAC_LEN]) {
        if self.is_newer(timestamp) {
            self.accepted = Some((timestamp, mac));
        }
    }

    /// The newest timestamp sent to the peer (0 before the first).
    pub fn newest_sent(&self) -> u64 {
        self.sent
    }

    /// Is `mac` the mac1 of the newest accepted initiation (an exact replay of it, refused
    /// before any Diffie-Hellman)? mac1 is no secret: it is keyed from a public key.
    pub(crate) fn is_last_accepted(&self, mac: &[u8; MAC_LEN]) -> bool {
        self.accepted.is_some_and(|(_, last)| &last == mac)
    }

    /// May an initiation from the peer be read at `now`, or is its rate budget spent?
    pub(crate) fn rate_allows(&self, now: Instant) -> bool {
        let headroom = INITIATION_INTERVAL.saturating_mul(INITIATION_BURST.saturating_sub(1));
        self.full_at
            .is_none_or(|full| full.saturating_duration_since(now) <= headroom)
    }

    /// Is `timestamp` newer than every initiation accepted from the peer?
    pub(crate) fn is_newer(&self, timestamp: u64) -> bool {
        self.accepted.is_none_or(|(newest, _)| timestamp > newest)
    }

    /// An initiation was accepted at `now`: remember it and spend one from the budget.
    pub(crate) fn accept(&mut self, now: Instant, timestamp: u64, mac: [u8; MAC_LEN]) {
        self.accepted = Some((timestamp, mac));
        let from = self.full_at.map_or(now, |full| full.max(now));
        self.full_at = Some(from.checked_add(INITIATION_INTERVAL).unwrap_or(from));
    }

    /// The timestamp of the next initiation to the peer: `wall_clock` (nanoseconds since
    /// the Unix epoch), or one more than the newest sent if that is not later.
    pub(crate) fn next_timestamp(&mut self, wall_clock: u64) -> u64 {
        let timestamp = wall_clock.max(self.sent.saturating_add(1));
        self.sent = timestamp;
        timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; MAC_LEN] = [7; MAC_LEN];

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut memory = PeerMemory::new();
        let t0 = Instant::now();
        for ts in 1..=u64::from(INITIATION_BURST) {
            assert!(memory.rate_allows(t0), "initiation {ts} of the burst");
            memory.accept(t0, ts, MAC);
        }
        assert!(!memory.rate_allows(t0));
        let almost = t0 + INITIATION_INTERVAL - Duration::from_nanos(1);
        assert!(!memory.rate_allows(almost));
        let t1 = t0 + INITIATION_INTERVAL;
        assert!(memory.rate_allows(t1));
        memory.accept(t1, 100, MAC);
        assert!(!memory.rate_allows(t1));
        // Idle long enough and the whole burst is back.
        let t2 = t1 + INITIATION_INTERVAL * INITIATION_BURST;
        for ts in 0..u64::from(INITIATION_BURST) {
            assert!(memory.rate_allows(t2));
            memory.accept(t2, 200 + ts, MAC);
        }
        assert!(!memory.rate_allows(t2));
    }

    #[test]
    fn timestamps_and_exact_replays() {
        let mut memory = PeerMemory::new();
        let now = Instant::now();
        assert!(memory.is_newer(0) && !memory.is_last_accepted(&MAC));
        memory.accept(now, 50, MAC);
        assert_eq!(memory.newest_accepted(), Some(50));
        assert!(memory.is_last_accepted(&MAC) && !memory.is_last_accepted(&[8; MAC_LEN]));
        assert!(!memory.is_newer(50) && !memory.is_newer(49) && memory.is_newer(51));
    }

    #[test]
    fn sent_timestamps_follow_the_wall_clock_and_never_repeat() {
        let mut memory = PeerMemory::new();
        assert_eq!(memory.next_timestamp(1_000), 1_000);
        assert_eq!(memory.next_timestamp(1_000), 1_001);
        assert_eq!(memory.next_timestamp(900), 1_002);
        assert_eq!(memory.next_timestamp(5_000), 5_000);
        assert_eq!(memory.newest_sent(), 5_000);
        let mut end = PeerMemory::new();
        end.next_timestamp(u64::MAX);
        assert_eq!(end.next_timestamp(0), u64::MAX);
    }

    /// One initiation offered to the memory: after `gap_ms` milliseconds, with this
    /// timestamp; or the route end is re-installed (the memory must not care).
    #[derive(Debug, Clone)]
    enum Event {
        Offer { gap_ms: u64, timestamp: u64 },
        Reinstall,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            8 => (0u64..1_500, 0u64..64).prop_map(|(gap_ms, timestamp)| Event::Offer { gap_ms, timestamp }),
            1 => Just(Event::Reinstall),
        ]
    }

    proptest! {
        /// Against a naive model: every timestamp ever accepted in a list, and a token
        /// bucket counted in nanoseconds of credit (capacity `BURST * INTERVAL`, one
        /// initiation costs `INTERVAL`).
        #[test]
        fn agrees_with_a_naive_model(events in prop::collection::vec(event(), 1..200)) {
            let interval = u64::try_from(INITIATION_INTERVAL.as_nanos()).unwrap();
            let capacity = interval * u64::from(INITIATION_BURST);
            let mut memory = PeerMemory::new();
            let mut accepted: Vec<u64> = Vec::new();
            let mut credit = capacity;
            let mut now = Instant::now();
            for event in events {
                let Event::Offer { gap_ms, timestamp } = event else {
                    // A fresh session on the same node: the memory is the node's, not the
                    // session's, so nothing happens to it.
                    continue;
                };
                now += Duration::from_millis(gap_ms);
                credit = (credit + gap_ms * 1_000_000).min(capacity);
                let model_allows = credit >= interval;
                prop_assert_eq!(memory.rate_allows(now), model_allows);
                if !model_allows {
                    continue;
                }
                let model_newer = accepted.iter().all(|&t| timestamp > t);
                prop_assert_eq!(memory.is_newer(timestamp), model_newer);
                if model_newer {
                    memory.accept(now, timestamp, MAC);
                    accepted.push(timestamp);
                    credit -= interval;
                }
                prop_assert_eq!(memory.newest_accepted(), accepted.iter().copied().max());
            }
        }
    }
}
