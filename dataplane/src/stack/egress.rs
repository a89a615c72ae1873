//! The stack's outgoing packets, waiting for the engine to seal them onto a route: a ring
//! of buffers allocated once, each with room for the route header before the packet and the
//! tag after it, so a packet is built by smoltcp once and sealed where it lies.
//!
//! The ring is the device queue smoltcp sees: when it is full, `transmit` says so and
//! smoltcp keeps its data for later (pushback, not loss). The engine drains it after every
//! call into the stack, so it only ever holds what one call produced.

use crate::crypto::PublicKey;
use crate::session::HEADROOM;

/// Packets the ring holds.
pub const EGRESS_SLOTS: usize = 256;

/// A fixed ring of packet buffers.
#[derive(Debug)]
pub(super) struct Egress {
    bufs: Vec<Vec<u8>>,
    peers: Vec<PublicKey>,
    lens: Vec<usize>,
    head: usize,
    len: usize,
    /// Where a packet smoltcp insists on writing goes when the ring is full (a reply to an
    /// incoming segment); it is then dropped and counted.
    spill: Vec<u8>,
    /// Packets that went to `spill`.
    pub(super) spilled: u64,
}

impl Egress {
    /// A ring of [`EGRESS_SLOTS`] buffers of `buf_len` bytes (header room, packet, tag).
    pub(super) fn new(buf_len: usize) -> Self {
        Self {
            bufs: (0..EGRESS_SLOTS).map(|_| vec![0; buf_len]).collect(),
            peers: vec![PublicKey::from_bytes([0; 32]); EGRESS_SLOTS],
            lens: vec![0; EGRESS_SLOTS],
            head: 0,
            len: 0,
            spill: vec![0; buf_len],
            spilled: 0,
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.len == EGRESS_SLOTS
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Let `fill` write a packet of `len` bytes to `peer` into the next free buffer (or, when
    /// the ring is full or `len` does not fit, into the spill buffer, which is dropped).
    pub(super) fn push_with<R>(
        &mut self,
        peer: PublicKey,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        let at = (self.head + self.len) % EGRESS_SLOTS;
        let fits = !self.is_full() && self.bufs.get(at).is_some_and(|b| HEADROOM + len <= b.len());
        if !fits {
            self.spilled += 1;
            if self.spill.len() < len {
                self.spill.resize(len, 0);
            }
            let buf = self.spill.get_mut(..len).unwrap_or_default();
            return fill(buf);
        }
        let buf = self
            .bufs
            .get_mut(at)
            .and_then(|b| b.get_mut(HEADROOM..HEADROOM + len))
            .unwrap_or_default();
        let r = fill(buf);
        if let (Some(p), Some(l)) = (self.peers.get_mut(at), self.lens.get_mut(at)) {
            *p = peer;
            *l = len;
        }
        self.len += 1;
        r
    }

    /// The oldest packet: its peer, its buffer (the packet at `HEADROOM..HEADROOM + len`,
    /// room for the tag after it) and its length. The buffer stays valid until the next
    /// push.
    pub(super) fn pop(&mut self) -> Option<(PublicKey, &mut [u8], usize)> {
        if self.len == 0 {
            return None;
        }
        let at = self.head;
        self.head = (self.head + 1) % EGRESS_SLOTS;
        self.len -= 1;
        let peer = *self.peers.get(at)?;
        let len = *self.lens.get(at)?;
        let buf = self.bufs.get_mut(at)?;
        Some((peer, buf.as_mut_slice(), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_in_order_that_spills_when_full() {
        let peer = PublicKey::from_bytes([7; 32]);
        let mut e = Egress::new(HEADROOM + 100);
        for i in 0..EGRESS_SLOTS {
            e.push_with(peer, 10, |b| b.fill(i as u8));
        }
        assert!(e.is_full());
        e.push_with(peer, 10, |b| b.fill(0xee));
        assert_eq!(e.spilled, 1);
        // Too long for a slot: spilled as well.
        let (_, buf, len) = e.pop().unwrap();
        assert_eq!((len, buf[HEADROOM]), (10, 0));
        e.push_with(peer, 200, |b| b.fill(1));
        assert_eq!(e.spilled, 2);
        let mut n = 1;
        while let Some((p, buf, len)) = e.pop() {
            assert_eq!((p, len, buf[HEADROOM]), (peer, 10, n as u8));
            n += 1;
        }
        assert_eq!(n, EGRESS_SLOTS);
        assert!(e.is_empty());
    }
}
