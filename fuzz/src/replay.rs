//! Target for `crypto::replay::ReplayWindow`, checked against a naive model.
//!
//! The input is a list of operations, each a tag byte and its counter:
//!
//! - tag bit 0 clear: the counter is `next_expected()` plus a big-endian `i16` offset (two
//!   bytes), saturating at 0 and `u64::MAX`. This keeps most counters near the window,
//!   where the bitmap ring's edge cases are.
//! - tag bit 0 set: the counter is an absolute big-endian `u64` (eight bytes).
//! - tag bit 1 set: only `check` the counter; otherwise `accept` it.
//!
//! A truncated last operation is ignored. For every counter: `check` is pure, `accept`
//! answers what `check` said just before, both agree with the model (a set of everything
//! accepted, the highest one, and the window size), and an accepted counter is a
//! duplicate from then on.

use std::collections::HashSet;

use skywire_dataplane::crypto::replay::{ReplayError, ReplayWindow, WINDOW};

/// The obvious model, as in the crate's own property test.
#[derive(Default)]
struct Model {
    seen: HashSet<u64>,
    highest: Option<u64>,
}

impl Model {
    fn check(&self, c: u64) -> Result<(), ReplayError> {
        if c == u64::MAX {
            return Err(ReplayError::OutOfRange);
        }
        if self.highest.is_some_and(|h| c <= h && h - c >= WINDOW) {
            return Err(ReplayError::TooOld);
        }
        if self.seen.contains(&c) {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    fn accept(&mut self, c: u64) -> Result<(), ReplayError> {
        self.check(c)?;
        self.seen.insert(c);
        self.highest = Some(self.highest.map_or(c, |h| h.max(c)));
        Ok(())
    }
}

/// One operation of the input format above, for building seeds.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// Accept `next_expected() + offset`.
    AcceptNear(i16),
    /// Check `next_expected() + offset`.
    CheckNear(i16),
    /// Accept an absolute counter.
    AcceptAt(u64),
    /// Check an absolute counter.
    CheckAt(u64),
}

/// Encode operations in the target's input format.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match *op {
            Op::AcceptNear(d) => {
                out.push(0);
                out.extend(d.to_be_bytes());
            }
            Op::CheckNear(d) => {
                out.push(2);
                out.extend(d.to_be_bytes());
            }
            Op::AcceptAt(c) => {
                out.push(1);
                out.extend(c.to_be_bytes());
            }
            Op::CheckAt(c) => {
                out.push(3);
                out.extend(c.to_be_bytes());
            }
        }
    }
    out
}

/// Run a sequence of window operations against the model.
pub fn window(data: &[u8]) {
    let mut window = ReplayWindow::new();
    let mut model = Model::default();
    let mut rest = data;
    while let Some((&tag, tail)) = rest.split_first() {
        let counter = if tag & 1 == 0 {
            let Some((offset, tail)) = tail.split_first_chunk::<2>() else {
                return;
            };
            rest = tail;
            window
                .next_expected()
                .saturating_add_signed(i64::from(i16::from_be_bytes(*offset)))
        } else {
            let Some((counter, tail)) = tail.split_first_chunk::<8>() else {
                return;
            };
            rest = tail;
            u64::from_be_bytes(*counter)
        };
        let before = window.next_expected();
        let checked = window.check(counter);
        assert_eq!(window.check(counter), checked, "check is pure");
        assert_eq!(
            checked,
            model.check(counter),
            "check({counter}), next {before}"
        );
        if tag & 2 != 0 {
            continue;
        }
        let accepted = window.accept(counter);
        assert_eq!(accepted, checked, "accept({counter}) disagrees with check");
        assert_eq!(model.accept(counter), accepted);
        if accepted.is_ok() {
            assert_eq!(window.check(counter), Err(ReplayError::Duplicate));
            assert_eq!(window.next_expected(), before.max(counter + 1));
        } else {
            assert_eq!(window.next_expected(), before);
        }
    }
}
