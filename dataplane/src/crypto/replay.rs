//! The anti-replay sliding window (RFC 6479's bitmap ring, as in WireGuard).
//!
//! The window remembers which of the last [`WINDOW`] counters below the highest accepted
//! one were seen. [`ReplayWindow::check`] is a pure test done before decryption;
//! [`ReplayWindow::accept`] records a counter and is called only after the packet
//! authenticated, so a forged packet can never move the window.

/// Bits in the ring (128 words of 64 bits: 1 KiB per receiving key).
const RING_BITS: u64 = 8192;
const WORDS: usize = (RING_BITS / 64) as usize;

/// The number of counters the window covers: the highest accepted one and the
/// `WINDOW - 1` below it. A counter `WINDOW` or more below the highest is refused as too
/// old. One word of the ring is kept clear for the advancing edge.
pub const WINDOW: u64 = RING_BITS - 64;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The counter was accepted before.
    #[error("counter already seen")]
    Duplicate,
    /// The counter is further behind the newest than the window reaches.
    #[error("counter too old for the replay window")]
    TooOld,
    /// The counter is `u64::MAX`, which no key ever reaches (keys are retired long before).
    #[error("counter out of range")]
    OutOfRange,
}

/// A sliding window over received counters.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the highest accepted counter; 0 when nothing was accepted.
    next: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

fn position(counter: u64) -> (usize, u64) {
    // The word index is below WORDS by construction of the modulo.
    (
        ((counter / 64) % WORDS as u64) as usize,
        1u64 << (counter % 64),
    )
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self {
            next: 0,
            bits: [0; WORDS],
        }
    }

    /// Would `counter` be accepted? Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter == u64::MAX {
            return Err(ReplayError::OutOfRange);
        }
        if counter >= self.next {
            return Ok(());
        }
        if self.next - counter > WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (word, mask) = position(counter);
        match self.bits.get(word) {
            Some(bits) if bits & mask == 0 => Ok(()),
            _ => Err(ReplayError::Duplicate),
        }
    }

    /// Record `counter` as received (checking it again), sliding the window forward if it
    /// is the newest. Call only once the packet carrying it has authenticated.
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        if counter >= self.next {
            let old_top = self.next.saturating_sub(1) / 64;
            let new_top = counter / 64;
            // Clear the words that the window slides over (all of them after a long jump).
            let advance = if self.next == 0 {
                WORDS as u64
            } else {
                new_top - old_top
            };
            for step in 1..=advance.min(WORDS as u64) {
                let index = if self.next == 0 {
                    step - 1
                } else {
                    old_top + step
                };
                if let Some(word) = self.bits.get_mut(((index) % WORDS as u64) as usize) {
                    *word = 0;
                }
            }
            self.next = counter + 1;
        }
        let (word, mask) = position(counter);
        if let Some(bits) = self.bits.get_mut(word) {
            *bits |= mask;
        }
        Ok(())
    }

    /// One more than the highest accepted counter (0 if none).
    pub fn next_expected(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The obvious model: a set of everything accepted and the highest one.
    #[derive(Default)]
    struct Model {
        seen: HashSet<u64>,
        highest: Option<u64>,
    }

    impl Model {
        fn accept(&mut self, c: u64) -> Result<(), ReplayError> {
            if let Some(h) = self.highest
                && c <= h
                && h - c >= WINDOW
            {
                return Err(ReplayError::TooOld);
            }
            if !self.seen.insert(c) {
                return Err(ReplayError::Duplicate);
            }
            self.highest = Some(self.highest.map_or(c, |h| h.max(c)));
            Ok(())
        }
    }

    #[test]
    fn basic_sequence() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.accept(0), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(2), Ok(()));
        assert_eq!(w.accept(1), Ok(()));
        assert_eq!(w.accept(1), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(10_000), Ok(()));
        assert_eq!(w.accept(10_000 - WINDOW + 1), Ok(()));
        assert_eq!(w.accept(10_000 - WINDOW), Err(ReplayError::TooOld));
        assert_eq!(w.accept(2), Err(ReplayError::TooOld));
        assert_eq!(w.accept(u64::MAX - 1), Ok(()));
        assert_eq!(w.check(u64::MAX - 1), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(u64::MAX), Err(ReplayError::OutOfRange));
    }

    #[test]
    fn check_does_not_move_the_window() {
        let mut w = ReplayWindow::new();
        w.accept(5).unwrap();
        assert_eq!(w.check(1_000_000), Ok(()));
        assert_eq!(w.next_expected(), 6);
        assert_eq!(w.accept(4), Ok(()));
    }

    #[test]
    fn window_is_at_least_2048() {
        const { assert!(WINDOW >= 2048) };
        let mut w = ReplayWindow::new();
        w.accept(5000).unwrap();
        for c in (5000 - 2048..5000).rev() {
            assert_eq!(w.accept(c), Ok(()), "{c}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Counters near each other (the interesting case) and occasional big jumps.
        #[test]
        fn matches_model(ops in prop::collection::vec(
            prop_oneof![
                8 => 0u64..3 * RING_BITS,
                1 => 0u64..u64::MAX / 2,
            ],
            1..600,
        )) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            let mut base = 0u64;
            for (i, op) in ops.into_iter().enumerate() {
                // Drift upwards so the window slides, as a real stream does.
                base += (i as u64) % 7;
                let c = if op >= 3 * RING_BITS { op } else { base + op };
                let pre = w.check(c);
                let got = w.accept(c);
                prop_assert_eq!(pre, got);
                prop_assert_eq!(got, m.accept(c), "counter {}", c);
            }
        }
    }
}
