//! A bounded set of connections in which a newcomer is never turned away by idle ones:
//! when the set is full, the connection that has waited longest without a request in
//! progress is closed to make room ([`Connections::admit`]).
//!
//! A local socket served by a thread per connection and a cap (so that no client can make
//! the process start threads at will) can otherwise be filled by clients that connect and
//! say nothing, or say it a byte at a time: each holds a place until its read times out,
//! and `skywire status` is refused meanwhile. With eviction, only connections that are
//! being answered keep their place; one that is idle (waiting for its next line, or for
//! the rest of a line) is shut down, which its own thread sees as the end of the stream.

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// The open connections, at most `max`.
#[derive(Debug, Clone)]
pub struct Connections {
    max: usize,
    table: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    entries: HashMap<u64, Entry>,
    evicted: u64,
}

#[derive(Debug)]
struct Entry {
    /// A handle on the connection, to shut it down.
    stream: UnixStream,
    /// Since when it waits for a request; `None` while one is being answered.
    idle_since: Option<Instant>,
}

/// A connection's place in [`Connections`], given back when it is dropped.
#[derive(Debug)]
pub struct Member {
    id: u64,
    table: Arc<Mutex<Table>>,
}

impl Connections {
    /// Room for `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            table: Arc::default(),
        }
    }

    /// A place for `stream` (idle until [`Member::busy`]): free, or made by shutting down
    /// the connection idle longest. `None` when every place is busy answering, or the
    /// stream cannot be cloned.
    pub fn admit(&self, stream: &UnixStream, now: Instant) -> Option<Member> {
        let handle = stream.try_clone().ok()?;
        let mut table = lock(&self.table);
        if table.entries.len() >= self.max {
            let oldest = table
                .entries
                .iter()
                .filter_map(|(id, e)| e.idle_since.map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(evicted) = table.entries.remove(&oldest) {
                let _ = evicted.stream.shutdown(Shutdown::Both);
                table.evicted += 1;
            }
        }
        let id = table.next;
        table.next += 1;
        table.entries.insert(
            id,
            Entry {
                stream: handle,
                idle_since: Some(now),
            },
        );
        Some(Member {
            id,
            table: Arc::clone(&self.table),
        })
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        lock(&self.table).entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many were shut down to make room, since the start.
    pub fn evicted(&self) -> u64 {
        lock(&self.table).evicted
    }
}

impl Member {
    /// A request is being answered: this connection keeps its place until [`Self::idle`].
    pub fn busy(&self) {
        if let Some(e) = lock(&self.table).entries.get_mut(&self.id) {
            e.idle_since = None;
        }
    }

    /// Waiting for the next request from `now`: the first to go when room is needed.
    pub fn idle(&self, now: Instant) {
        if let Some(e) = lock(&self.table).entries.get_mut(&self.id) {
            e.idle_since = Some(now);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        lock(&self.table).entries.remove(&self.id);
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let set = Connections::new(2);
        let t0 = Instant::now();
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        let (c, _c_peer) = UnixStream::pair().unwrap();
        let (d, _d_peer) = UnixStream::pair().unwrap();
        let ma = set.admit(&a, t0).unwrap();
        let mb = set.admit(&b, t0 + Duration::from_millis(1)).unwrap();
        assert_eq!(set.len(), 2);
        // Full: a, idle longest, is shut down for c.
        let mc = set.admit(&c, t0 + Duration::from_millis(2)).unwrap();
        assert_eq!((set.len(), set.evicted()), (2, 1));
        let mut buf = [0u8; 1];
        assert_eq!(a_peer.read(&mut buf).unwrap(), 0, "a was not shut down");
        drop(ma); // its thread ends: nothing else changes
        assert_eq!(set.len(), 2);
        // b and c busy: no room, nobody is shut down.
        mb.busy();
        mc.busy();
        assert!(set.admit(&d, t0 + Duration::from_millis(3)).is_none());
        assert_eq!(set.evicted(), 1);
        // c idle again: it goes for d.
        mc.idle(t0 + Duration::from_millis(4));
        let md = set.admit(&d, t0 + Duration::from_millis(5)).unwrap();
        assert_eq!((set.len(), set.evicted()), (2, 2));
        drop((mb, mc, md));
        assert!(set.is_empty());
    }
}
