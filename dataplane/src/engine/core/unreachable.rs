//! Next hops the kernel has no way to: reported to the control plane at most once per
//! [`UNREACHABLE_REPORT_EVERY`] each, so the node can log them without a line per packet.
//!
//! The packet path only counts ([`NodeDrop::Unreachable`](super::NodeDrop::Unreachable));
//! after a flush in which the kernel refused a datagram for want of a route, the driver
//! hands the destination and the OS error to [`NodeCore::unreachable`](super::NodeCore::unreachable),
//! which asks [`Unreachables::due`] whether this next hop was reported in the last
//! [`UNREACHABLE_REPORT_EVERY`]; if not, an
//! [`EngineEvent::Unreachable`](crate::engine::EngineEvent::Unreachable) goes on the bounded
//! event queue. At most [`TRACKED`] next hops are remembered: past that (more next hops
//! failing within one period than a node has neighbours), further ones are counted only.
//! No clock: the time comes in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often one next hop's failures are reported, at most.
pub const UNREACHABLE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Next hops remembered at once.
pub(super) const TRACKED: usize = 64;

/// When each next hop was last reported.
#[derive(Debug, Default)]
pub(super) struct Unreachables {
    reported: Vec<(SocketAddr, Instant)>,
}

impl Unreachables {
    /// A datagram to `to` was refused at `now`: whether to report it (and remember that
    /// it was).
    pub(super) fn due(&mut self, to: SocketAddr, now: Instant) -> bool {
        let fresh = |at: Instant| now.saturating_duration_since(at) < UNREACHABLE_REPORT_EVERY;
        if let Some((_, at)) = self.reported.iter_mut().find(|(addr, _)| *addr == to) {
            if fresh(*at) {
                return false;
            }
            *at = now;
            return true;
        }
        self.reported.retain(|(_, at)| fresh(*at));
        if self.reported.len() >= TRACKED {
            return false;
        }
        self.reported.push((to, now));
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn hop(i: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, 2, 2], 6000 + i))
    }

    #[test]
    fn each_next_hop_is_reported_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut u = Unreachables::default();
        assert!(u.due(hop(0), t0));
        assert!(!u.due(hop(0), t0 + Duration::from_millis(1)));
        assert!(!u.due(hop(0), t0 + Duration::from_secs(59)));
        // Another next hop is its own.
        assert!(u.due(hop(1), t0 + Duration::from_secs(1)));
        assert!(u.due(hop(0), t0 + UNREACHABLE_REPORT_EVERY));
        assert!(!u.due(hop(0), t0 + Duration::from_secs(100)));
        assert!(u.due(hop(1), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_what_is_old() {
        let t0 = Instant::now();
        let mut u = Unreachables::default();
        for i in 0..TRACKED as u16 {
            assert!(u.due(hop(i), t0));
        }
        // Full within the period: one more is only counted.
        assert!(!u.due(hop(1000), t0 + Duration::from_secs(1)));
        assert_eq!(u.reported.len(), TRACKED);
        // A period later the old ones are forgotten and the new one is reported.
        assert!(u.due(hop(1000), t0 + UNREACHABLE_REPORT_EVERY));
        assert_eq!(u.reported.len(), 1);
    }
}
