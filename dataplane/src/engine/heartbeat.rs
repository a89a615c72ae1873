//! A beat that a loop gives from its own thread at a steady pace, for liveness checks from
//! outside: the daemons' systemd watchdog (`WATCHDOG=1`, `skywire_control::notify`).
//!
//! The loop that owns a [`Heartbeat`] calls [`Heartbeat::poll`] once per turn and never
//! sleeps past [`Heartbeat::deadline`]; the beat (a callback) runs on the loop's thread.
//! So the beats stop exactly when the loop stops turning: a loop stuck in a system call, a
//! lock or an endless inner loop gives none, and whoever watches the beats (systemd) can
//! restart it. That is why the beat is not sent by a timer thread of its own, which would
//! keep beating for a loop that hangs.
//!
//! The first beat is given at the first poll, then one every `every`. This module knows
//! nothing of what a beat does; it decides only when one is due (time passed in).

use core::fmt;
use core::time::Duration;
use std::time::Instant;

/// The shortest pace a [`Heartbeat`] keeps: a shorter `every` is raised to this, so a tiny
/// value from outside (a `WATCHDOG_USEC` of 1) cannot turn a loop into a busy wait.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// A callback due every `every`, run by the loop that polls it; see the module docs.
pub struct Heartbeat {
    every: Duration,
    /// When the next beat is due; `None` before the first poll (due at once).
    next: Option<Instant>,
    beat: Box<dyn FnMut() + Send>,
}

impl Heartbeat {
    /// A heartbeat that runs `beat` at the first poll and then every `every` (at least
    /// [`MIN_HEARTBEAT`]).
    pub fn new(every: Duration, beat: impl FnMut() + Send + 'static) -> Self {
        Self {
            every: every.max(MIN_HEARTBEAT),
            next: None,
            beat: Box::new(beat),
        }
    }

    /// The pace.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// When the next beat is due: the owning loop must poll again by then, so it caps its
    /// wait at this (`now` before the first beat).
    pub fn deadline(&self, now: Instant) -> Instant {
        self.next.unwrap_or(now)
    }

    /// How long the owning loop may wait from `now` before polling again.
    pub fn wait(&self, now: Instant) -> Duration {
        self.deadline(now).saturating_duration_since(now)
    }

    /// Beat if one is due at `now`; true if it did. The next one is due `every` after
    /// `now`, so a loop that was late does not beat twice in a row to catch up.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        (self.beat)();
        self.next = Some(now + self.every);
        true
    }
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("every", &self.every)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counted(every: Duration) -> (Heartbeat, Arc<AtomicU32>) {
        let beats = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&beats);
        let heartbeat = Heartbeat::new(every, move || {
            count.fetch_add(1, Ordering::Relaxed);
        });
        (heartbeat, beats)
    }

    #[test]
    fn beats_at_once_then_once_per_period_without_catching_up() {
        let (mut heartbeat, beats) = counted(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(
            heartbeat.wait(t0),
            Duration::ZERO,
            "due before the first poll"
        );
        assert!(heartbeat.poll(t0));
        assert_eq!(beats.load(Ordering::Relaxed), 1);
        assert_eq!(heartbeat.deadline(t0), t0 + Duration::from_secs(5));
        assert_eq!(
            heartbeat.wait(t0 + Duration::from_secs(2)),
            Duration::from_secs(3)
        );
        // Polls before the deadline do nothing, however many.
        for ms in [1, 100, 4999] {
            assert!(!heartbeat.poll(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(beats.load(Ordering::Relaxed), 1);
        assert!(heartbeat.poll(t0 + Duration::from_secs(5)));
        // A loop that stalled for a minute beats once when it turns again, not twelve times.
        let late = t0 + Duration::from_secs(65);
        assert!(heartbeat.poll(late));
        assert!(!heartbeat.poll(late + Duration::from_secs(1)));
        assert_eq!(beats.load(Ordering::Relaxed), 3);
        assert_eq!(heartbeat.deadline(late), late + Duration::from_secs(5));
    }

    #[test]
    fn a_tiny_period_is_raised_to_the_minimum() {
        let (heartbeat, _) = counted(Duration::from_nanos(1));
        assert_eq!(heartbeat.every(), MIN_HEARTBEAT);
        let (heartbeat, _) = counted(Duration::ZERO);
        assert_eq!(heartbeat.every(), MIN_HEARTBEAT);
    }
}
