//! Streams that arrived on a listener and wait for their app's `accept`, sans-IO (the time
//! is passed in).
//!
//! The listening connection's thread adds each stream the engine hands it
//! ([`Arrivals::arrived`]) before it writes the `incoming` line, so an `accept` that
//! follows the line finds it; `accept` takes it out ([`Arrivals::take`]), for the
//! listener's user or root only. The table stays bounded: at most the listener's backlog
//! per listener (the engine counts the same streams against the same backlog, so a stream
//! beyond it is the engine's mistake and is refused here too), and an entry older than the
//! stack's `take_timeout` is forgotten, since the engine reset that stream already.
//! Entries of a listener that closed are forgotten with it ([`Arrivals::forget_listener`]),
//! which returns them for the server to reset; a stream accepted a moment before is no
//! longer among them and goes on to the engine.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use skywire_dataplane::stack::{ListenerId, Owner, StreamId, StreamInfo};

/// Why an `accept` found nothing to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// No waiting stream has that id (never arrived, taken, timed out, or its listener
    /// closed).
    Unknown,
    /// It arrived on another user's listener.
    NotYours {
        /// The listener's user.
        owner: Owner,
    },
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    listener: ListenerId,
    owner: Owner,
    info: StreamInfo,
    at: Instant,
}

/// The arrived, not yet accepted streams of a node.
#[derive(Debug)]
pub struct Arrivals {
    take_timeout: Duration,
    waiting: HashMap<StreamId, Arrival>,
    /// Waiting streams per listener.
    per_listener: HashMap<ListenerId, usize>,
    /// Ids in the order they arrived, to forget the old ones; may hold ids already taken
    /// (skipped, and compacted away when they outnumber the waiting ones).
    order: VecDeque<(Instant, StreamId)>,
}

impl Arrivals {
    /// An empty table forgetting entries after `take_timeout`.
    pub fn new(take_timeout: Duration) -> Self {
        Self {
            take_timeout,
            waiting: HashMap::new(),
            per_listener: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Streams waiting now.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no stream waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// `info` arrived at `now` on `listener` of `owner`, whose backlog is `backlog`.
    /// `false` when that listener already has `backlog` streams waiting: the caller resets
    /// the stream instead of announcing it.
    pub fn arrived(
        &mut self,
        listener: ListenerId,
        owner: Owner,
        info: StreamInfo,
        backlog: usize,
        now: Instant,
    ) -> bool {
        self.forget_old(now);
        let count = self.per_listener.entry(listener).or_insert(0);
        if *count >= backlog || self.waiting.contains_key(&info.id) {
            return false;
        }
        *count += 1;
        self.waiting.insert(
            info.id,
            Arrival {
                listener,
                owner,
                info,
                at: now,
            },
        );
        self.order.push_back((now, info.id));
        true
    }

    /// Take `stream` for a process of `uid`: the stream and the listener's owner (whose
    /// stream it stays), if it waits and `uid` is the owner or root.
    pub fn take(
        &mut self,
        stream: StreamId,
        uid: u32,
        now: Instant,
    ) -> Result<(StreamInfo, Owner), TakeError> {
        self.forget_old(now);
        let arrival = self.waiting.get(&stream).ok_or(TakeError::Unknown)?;
        if arrival.owner.0 != uid && uid != 0 {
            return Err(TakeError::NotYours {
                owner: arrival.owner,
            });
        }
        let arrival = self.remove(stream).ok_or(TakeError::Unknown)?;
        Ok((arrival.info, arrival.owner))
    }

    /// Forget the streams waiting on `listener`, which closed; returns them (to be reset).
    /// Streams already taken are not among them.
    pub fn forget_listener(&mut self, listener: ListenerId) -> Vec<StreamId> {
        let mut forgotten = Vec::new();
        self.waiting.retain(|id, a| {
            let keep = a.listener != listener;
            if !keep {
                forgotten.push(*id);
            }
            keep
        });
        self.per_listener.remove(&listener);
        self.compact();
        forgotten.sort_unstable();
        forgotten
    }

    /// Forget what waited `take_timeout` or longer.
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.order.front() {
            if now.saturating_duration_since(at) < self.take_timeout {
                break;
            }
            self.order.pop_front();
            if self.waiting.get(&id).is_some_and(|a| a.at == at) {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, stream: StreamId) -> Option<Arrival> {
        let arrival = self.waiting.remove(&stream)?;
        if let Some(count) = self.per_listener.get_mut(&arrival.listener) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_listener.remove(&arrival.listener);
            }
        }
        self.compact();
        Some(arrival)
    }

    /// Drop ids no longer waiting from `order` once they are most of it, so it stays within
    /// twice the waiting streams (plus a little) whatever the rate of accepts.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.waiting.len() + 64 {
            let waiting = &self.waiting;
            self.order
                .retain(|(at, id)| waiting.get(id).is_some_and(|a| a.at == *at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skywire_dataplane::crypto::PublicKey;

    fn info(id: u64) -> StreamInfo {
        StreamInfo {
            id: StreamId(id),
            peer: PublicKey::from_bytes([7; 32]),
            local_port: 80,
            remote_port: 50_000,
        }
    }

    const L1: ListenerId = ListenerId(1);
    const L2: ListenerId = ListenerId(2);
    const ALICE: Owner = Owner(1000);

    #[test]
    fn streams_are_taken_once_by_their_owner_or_root() {
        let t0 = Instant::now();
        let mut table = Arrivals::new(Duration::from_secs(10));
        assert!(table.arrived(L1, ALICE, info(1), 4, t0));
        assert!(table.arrived(L1, ALICE, info(2), 4, t0));
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.take(StreamId(1), 1001, t0),
            Err(TakeError::NotYours { owner: ALICE })
        );
        assert_eq!(table.take(StreamId(1), 1000, t0), Ok((info(1), ALICE)));
        assert_eq!(table.take(StreamId(1), 1000, t0), Err(TakeError::Unknown));
        // Root takes it for the owner: the stream stays the owner's.
        assert_eq!(table.take(StreamId(2), 0, t0), Ok((info(2), ALICE)));
        assert!(table.is_empty());
        assert_eq!(table.take(StreamId(9), 0, t0), Err(TakeError::Unknown));
    }

    #[test]
    fn each_listener_holds_at_most_its_backlog() {
        let t0 = Instant::now();
        let mut table = Arrivals::new(Duration::from_secs(10));
        assert!(table.arrived(L1, ALICE, info(1), 2, t0));
        assert!(table.arrived(L1, ALICE, info(2), 2, t0));
        assert!(!table.arrived(L1, ALICE, info(3), 2, t0));
        assert!(table.arrived(L2, ALICE, info(4), 2, t0));
        // The same id twice is refused too.
        assert!(!table.arrived(L2, ALICE, info(4), 2, t0));
        table.take(StreamId(1), 1000, t0).unwrap();
        assert!(table.arrived(L1, ALICE, info(5), 2, t0));
        assert_eq!(table.forget_listener(L1), vec![StreamId(2), StreamId(5)]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.take(StreamId(2), 1000, t0), Err(TakeError::Unknown));
        assert!(table.arrived(L1, ALICE, info(6), 1, t0));
    }

    #[test]
    fn streams_older_than_the_take_timeout_are_forgotten() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut table = Arrivals::new(timeout);
        assert!(table.arrived(L1, ALICE, info(1), 1, t0));
        let later = t0 + timeout - Duration::from_millis(1);
        assert!(table.arrived(L2, ALICE, info(2), 1, later));
        // Still full at 9.999 s...
        assert!(!table.arrived(L1, ALICE, info(3), 1, later));
        // ...free at 10 s, and the old stream is gone.
        assert!(table.arrived(L1, ALICE, info(3), 1, t0 + timeout));
        assert_eq!(
            table.take(StreamId(1), 1000, t0 + timeout),
            Err(TakeError::Unknown)
        );
        assert_eq!(
            table.take(StreamId(2), 1000, t0 + timeout).unwrap().0,
            info(2)
        );
    }

    #[test]
    fn the_arrival_order_stays_bounded_under_many_accepts() {
        let t0 = Instant::now();
        let mut table = Arrivals::new(Duration::from_secs(3600));
        for id in 0..10_000 {
            assert!(table.arrived(L1, ALICE, info(id), 1, t0));
            table.take(StreamId(id), 1000, t0).unwrap();
        }
        assert!(table.order.len() <= 64 + 1, "{}", table.order.len());
        assert!(table.per_listener.is_empty());
    }
}
