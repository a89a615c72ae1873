//! What the SOCKS apps count, per node key: connections open now, connections made, bytes
//! each way; how fast a key may open new ones (a token bucket); and the watcher that hears
//! when a handed-over connection ends.
//!
//! A connection handed over to the node (`AppStream::hand_over`) is moved by the node, not
//! by the app, which keeps nothing of it: the node reports its end on the app's one watch
//! (`AppClient::watch`) with an `ended` line (bytes each way, and the error if it was
//! reset). [`Watcher`] reads that watch on one thread, so ten thousand open connections
//! cost the app no descriptor and no thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;
use skywire_dataplane::engine::WatchId;
use skywire_dataplane::stack::StreamId;

use crate::node::apps::{AppClient, AppError};

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
/// [`Tally`]: one watch on the node ([`crate::node::apps::client::AppWatch`]) and a thread
/// reading it.
#[derive(Debug)]
pub struct Watcher {
    /// The watch now open (a new one after the node came back).
    id: Arc<Mutex<WatchId>>,
    /// The key of every stream handed over and not ended yet.
    keys: Arc<Mutex<HashMap<StreamId, PublicKey>>>,
}

/// How often a watcher whose node went away tries to open a watch again.
const REOPEN: Duration = Duration::from_secs(1);

impl Watcher {
    /// A watch on `app`'s node booking into `tally`, with its thread. If the node closes
    /// the watch (it stopped), the connections it carried are booked as ended (reset: they
    /// went with it), and the thread opens a new watch as soon as the node is back.
    pub fn start(app: &AppClient, tally: Arc<Tally>, name: &'static str) -> Result<Self, AppError> {
        let mut watch = app.watch()?;
        let id = Arc::new(Mutex::new(watch.id()));
        let keys: Arc<Mutex<HashMap<StreamId, PublicKey>>> = Arc::default();
        let (for_thread, id_for_thread) = (Arc::clone(&keys), Arc::clone(&id));
        let path = app.path().to_owned();
        let app = app.clone();
        thread::Builder::new()
            .name("socks-watch".to_owned())
            .spawn(move || {
                loop {
                    match watch.next_ended() {
                        Ok(ended) => {
                            let key = lock(&for_thread).remove(&ended.stream);
                            if let Some(key) = key {
                                tally.ended(key, ended.sent, ended.received, ended.error.is_some());
                            }
                        }
                        Err(error) => {
                            let gone: Vec<PublicKey> =
                                lock(&for_thread).drain().map(|(_, key)| key).collect();
                            for key in &gone {
                                tally.ended(*key, 0, 0, true);
                            }
                            let why = match error {
                                // The usual case: the node stopped and closed it.
                                AppError::BadReply { .. } => "the node closed its watch".to_owned(),
                                other => format!("the node's watch failed: {other}"),
                            };
                            log::warn!(
                                "skywire socks {name}: {why}; the {} connections it carried \
                                 ended with it; waiting for the node",
                                gone.len()
                            );
                            watch = loop {
                                thread::sleep(REOPEN);
                                if let Ok(watch) = app.watch() {
                                    break watch;
                                }
                            };
                            *lock(&id_for_thread) = watch.id();
                            log::info!("skywire socks {name}: the node is back; watching again");
                        }
                    }
                }
            })
            .map_err(|source| AppError::Io { path, source })?;
        Ok(Self { id, keys })
    }

    /// The watch to hand `stream` over with; its end is booked for `key` (who must have been
    /// let in by [`Tally::admit`]). Call before the hand-over, and [`Self::forget`] if it
    /// fails.
    pub fn expect(&self, stream: StreamId, key: PublicKey) -> WatchId {
        lock(&self.keys).insert(stream, key);
        *lock(&self.id)
    }

    /// A hand-over that [`Self::expect`] prepared did not happen.
    pub fn forget(&self, stream: StreamId) {
        lock(&self.keys).remove(&stream);
    }
}

/// A lock that survives a panic elsewhere (the maps are consistent after every step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
