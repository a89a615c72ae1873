//! What the SOCKS apps count, per node key: connections open now, connections made, bytes
//! each way; how fast a key may open new ones (a token bucket); and the watcher that hears
//! when a handed-over connection ends.
//!
//! A connection handed over to the node (`AppStream::hand_over`) is moved by the node, not
//! by the app; the app keeps only the stream's watch, which the node answers with one
//! `ended` line (bytes each way, and the error if it was reset). [`Watcher`] waits on all of
//! them with one `epoll` thread, so ten thousand open connections cost the app ten thousand
//! idle descriptors and no threads.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::Timespec;
use rustix::event::epoll;
use skywire_dataplane::crypto::PublicKey;

use crate::node::apps::client::HandedStream;

/// One key's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTally {
    /// Connections open now.
    pub open: usize,
    /// Connections opened since the start.
    pub opened: u64,
    /// Connections refused (limits, policy, failed dials).
    pub refused: u64,
    /// Bytes from this side to the far one, of connections that ended.
    pub sent: u64,
    /// Bytes from the far side, of connections that ended.
    pub received: u64,
    /// Connections that ended with a reset.
    pub reset: u64,
}

/// A key's token bucket: `rate` new connections a second, bursts of twice that.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<PublicKey, KeyTally>,
    buckets: HashMap<PublicKey, Bucket>,
    open: usize,
}

/// The figures of every key, shared by an app's threads.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

/// Why a new connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The app's connections at once.
    Total(usize),
    /// One key's connections at once.
    PerKey(usize),
    /// One key's new connections per second.
    Rate(usize),
}

impl core::fmt::Display for Full {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Total(n) => write!(f, "{n} connections are open, the most allowed"),
            Self::PerKey(n) => write!(f, "this key has {n} connections open, the most allowed"),
            Self::Rate(n) => write!(f, "this key opened more than {n} connections a second"),
        }
    }
}

/// The limits [`Tally::admit`] applies (0: none).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections at once.
    pub total: usize,
    /// Connections of one key at once.
    pub per_key: usize,
    /// New connections of one key per second.
    pub rate: usize,
}

impl Tally {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Let a new connection of `key` in, counting it open, or say which limit it hit (and
    /// count it refused).
    pub fn admit(&self, key: PublicKey, limits: Limits, now: Instant) -> Result<(), Full> {
        let mut inner = self.lock();
        let open_total = inner.open;
        let open_key = inner.keys.get(&key).map_or(0, |k| k.open);
        let verdict = if limits.total > 0 && open_total >= limits.total {
            Err(Full::Total(limits.total))
        } else if limits.per_key > 0 && open_key >= limits.per_key {
            Err(Full::PerKey(limits.per_key))
        } else if limits.rate > 0 {
            let rate = limits.rate as f64;
            let burst = 2.0 * rate;
            let bucket = inner.buckets.entry(key).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                Ok(())
            } else {
                Err(Full::Rate(limits.rate))
            }
        } else {
            Ok(())
        };
        let entry = inner.keys.entry(key).or_default();
        match verdict {
            Ok(()) => {
                entry.open += 1;
                entry.opened += 1;
                inner.open += 1;
            }
            Err(_) => entry.refused += 1,
        }
        verdict
    }

    /// A connection of `key` that was admitted ended (or never got going): `sent` and
    /// `received` bytes, reset or not.
    pub fn ended(&self, key: PublicKey, sent: u64, received: u64, reset: bool) {
        let mut inner = self.lock();
        inner.open = inner.open.saturating_sub(1);
        let entry = inner.keys.entry(key).or_default();
        entry.open = entry.open.saturating_sub(1);
        entry.sent += sent;
        entry.received += received;
        entry.reset += u64::from(reset);
    }

    /// Count a refusal of `key` that [`Self::admit`] did not make (policy, a failed dial).
    pub fn refused(&self, key: PublicKey) {
        self.lock().keys.entry(key).or_default().refused += 1;
    }

    /// Every key's figures, sorted by key.
    pub fn snapshot(&self) -> Vec<(PublicKey, KeyTally)> {
        let mut all: Vec<_> = self.lock().keys.iter().map(|(k, t)| (*k, *t)).collect();
        all.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        all
    }

    /// Connections open now, of all keys.
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

/// Hears the end of handed-over connections (see the module doc) and books them in a
/// [`Tally`]. Dropping it stops its thread; connections still open are not affected.
#[derive(Debug)]
pub struct Watcher {
    epoll: Arc<OwnedFd>,
    watched: Arc<Mutex<HashMap<u64, (PublicKey, HandedStream)>>>,
    next: Mutex<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// How often the watcher's thread looks at its stop flag.
const TICK: Duration = Duration::from_millis(200);

impl Watcher {
    /// A watcher booking into `tally`, with its thread.
    pub fn start(tally: Arc<Tally>) -> io::Result<Self> {
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        let watched: Arc<Mutex<HashMap<u64, (PublicKey, HandedStream)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (epoll, watched, stop) =
                (Arc::clone(&epoll), Arc::clone(&watched), Arc::clone(&stop));
            thread::Builder::new()
                .name("socks-watch".to_owned())
                .spawn(move || watch(&epoll, &watched, &tally, &stop))?
        };
        Ok(Self {
            epoll,
            watched,
            next: Mutex::new(0),
            stop,
            thread: Some(thread),
        })
    }

    /// Watch `handed`, a connection of `key` that [`Tally::admit`] let in.
    pub fn add(&self, key: PublicKey, handed: HandedStream) -> io::Result<()> {
        let token = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            *next
        };
        let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        epoll::add(
            &*self.epoll,
            handed.socket().as_fd(),
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        )?;
        watched.insert(token, (key, handed));
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(
    epoll: &OwnedFd,
    watched: &Mutex<HashMap<u64, (PublicKey, HandedStream)>>,
    tally: &Tally,
    stop: &AtomicBool,
) {
    let mut events = Vec::with_capacity(256);
    let tick = Timespec::try_from(TICK).unwrap_or_default();
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        if epoll::wait(
            epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&tick),
        )
        .is_err()
        {
            thread::sleep(TICK);
            continue;
        }
        for event in &events {
            let token = event.data.u64();
            let Some((key, handed)) = watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&token)
            else {
                continue;
            };
            let _ = epoll::delete(epoll, handed.socket().as_fd());
            // The node wrote the whole line at once: this read does not wait.
            match handed.ended() {
                Ok(ended) => tally.ended(key, ended.sent, ended.received, ended.error.is_some()),
                // The node went away without a word: the connection is gone with it.
                Err(_) => tally.ended(key, 0, 0, true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_the_bucket() {
        let tally = Tally::default();
        let (a, b) = (
            PublicKey::from_bytes([1; 32]),
            PublicKey::from_bytes([2; 32]),
        );
        let t0 = Instant::now();
        let limits = Limits {
            total: 3,
            per_key: 2,
            rate: 0,
        };
        assert_eq!(tally.admit(a, limits, t0), Ok(()));
        assert_eq!(tally.admit(a, limits, t0), Ok(()));
        assert_eq!(tally.admit(a, limits, t0), Err(Full::PerKey(2)));
        assert_eq!(tally.admit(b, limits, t0), Ok(()));
        assert_eq!(tally.admit(b, limits, t0), Err(Full::Total(3)));
        tally.ended(a, 10, 20, false);
        assert_eq!(tally.open(), 2);
        assert_eq!(tally.admit(b, limits, t0), Ok(()));
        let snap = tally.snapshot();
        let ta = snap.iter().find(|(k, _)| *k == a).unwrap().1;
        assert_eq!(
            (ta.open, ta.opened, ta.refused, ta.sent, ta.received),
            (1, 2, 1, 10, 20)
        );

        // 5 a second, bursts of 10, then one more every 200 ms.
        let rate = Limits {
            total: 0,
            per_key: 0,
            rate: 5,
        };
        let c = PublicKey::from_bytes([3; 32]);
        for _ in 0..10 {
            assert_eq!(tally.admit(c, rate, t0), Ok(()));
        }
        assert_eq!(tally.admit(c, rate, t0), Err(Full::Rate(5)));
        let later = t0 + Duration::from_millis(210);
        assert_eq!(tally.admit(c, rate, later), Ok(()));
        assert_eq!(tally.admit(c, rate, later), Err(Full::Rate(5)));
    }
}
