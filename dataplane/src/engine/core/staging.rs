//! The staging ring of a route end: TUN packets that arrived while the route had no keys,
//! kept in order in a fixed ring of preallocated buffers until the handshake completes.
//!
//! The ring is allocated when the route end is created; pushing and popping copy into and
//! lend out its buffers and never allocate. When it is full the oldest packet is dropped
//! (the caller counts it): newer packets are the ones a sender is still waiting for.

use crate::session::HEADROOM;

/// Packets kept per route while its handshake runs; older ones are dropped first.
pub const STAGED_PER_ROUTE: usize = 16;

/// A fixed ring of preallocated buffers for payloads waiting for a handshake. Each payload
/// sits at `HEADROOM` in its buffer, so it can be sealed in place when keys arrive.
#[derive(Debug)]
pub(super) struct Staged {
    slots: Vec<Vec<u8>>,
    lens: [usize; STAGED_PER_ROUTE],
    head: usize,
    len: usize,
}

impl Staged {
    /// A ring of buffers of `buffer_len` bytes each.
    pub(super) fn new(buffer_len: usize) -> Self {
        Self {
            slots: (0..STAGED_PER_ROUTE)
                .map(|_| vec![0u8; buffer_len])
                .collect(),
            lens: [0; STAGED_PER_ROUTE],
            head: 0,
            len: 0,
        }
    }

    /// Whether no payload waits.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep a copy of `payload`; returns false if the oldest one had to be dropped.
    pub(super) fn push(&mut self, payload: &[u8]) -> bool {
        let dropped_oldest = self.len == STAGED_PER_ROUTE;
        if dropped_oldest {
            self.head = (self.head + 1) % STAGED_PER_ROUTE;
            self.len -= 1;
        }
        let at = (self.head + self.len) % STAGED_PER_ROUTE;
        if let (Some(slot), Some(len)) = (self.slots.get_mut(at), self.lens.get_mut(at))
            && let Some(dst) = slot.get_mut(HEADROOM..HEADROOM + payload.len())
        {
            dst.copy_from_slice(payload);
            *len = payload.len();
            self.len += 1;
        }
        !dropped_oldest
    }

    /// The oldest buffer and its payload length, removed from the queue.
    pub(super) fn pop(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        if self.len == 0 {
            return None;
        }
        let at = self.head;
        self.head = (self.head + 1) % STAGED_PER_ROUTE;
        self.len -= 1;
        let len = *self.lens.get(at)?;
        Some((self.slots.get_mut(at)?, len))
    }
}
