//! A bounded number of connections served at once: each holds a [`ConnectionSlot`],
//! given back when it is dropped, on every path out of the connection's thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A place among a bounded number of connections; given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A place among `max`, if one is free.
    pub fn take_of(active: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(Arc::clone(active)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let active = Arc::new(AtomicUsize::new(0));
        let a = ConnectionSlot::take_of(&active, 2).unwrap();
        let b = ConnectionSlot::take_of(&active, 2).unwrap();
        assert!(ConnectionSlot::take_of(&active, 2).is_none());
        drop(a);
        assert!(ConnectionSlot::take_of(&active, 2).is_some());
        drop(b);
        assert_eq!(active.load(Ordering::Relaxed), 0);
    }
}
