//! Who may hold a connection that has not proved its key yet, and how refusals are logged.
//!
//! Before the key proof a connection is anyone's: it costs its sender nothing but a TCP
//! handshake, and it holds a thread and a place for up to the auth timeout. So such
//! connections are counted per source ([`Source`]: an IPv4 address, or an IPv6 /64, which
//! one host usually has whole) and in all; one over either cap is refused at accept, so
//! one host cannot hold every place and lock the others out. A connection leaves the
//! count when its key proof ends, whichever way ([`Proving`] is dropped).
//!
//! Refusals come in floods, so their log lines go through a [`LogBudget`]: a few at once,
//! then one a second, and a count of those left out.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Where a connection comes from, as far as limits go: an IPv4 address (also when it
/// arrives as an IPv4-mapped IPv6 address), or the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// One IPv4 address.
    V4(std::net::Ipv4Addr),
    /// An IPv6 /64, as its first address.
    V6(Ipv6Addr),
}

impl Source {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Why a new connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    /// The manager holds as many connections as it serves.
    #[error("{max} connections already open")]
    Connections {
        /// The cap.
        max: usize,
    },
    /// As many connections as allowed are proving their keys.
    #[error("{max} connections are already proving their keys")]
    Unproven {
        /// The cap.
        max: usize,
    },
    /// As many connections from this source as allowed are proving their keys.
    #[error("{max} connections from {from} are already proving their keys")]
    Source {
        /// The cap per source.
        max: usize,
        /// The source.
        from: Source,
    },
}

/// The count of connections proving their keys, shared by the accept loop and the
/// connection threads.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<Source, usize>,
}

/// Admits connections that have not proved a key, within a cap in all and per source.
#[derive(Debug, Clone)]
pub(super) struct Admission {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_source: usize,
}

/// A connection's place among those proving their keys; given back when dropped (the
/// proof succeeded, failed or timed out, or the thread ended).
#[derive(Debug)]
pub(super) struct Proving {
    counts: Arc<Mutex<Counts>>,
    source: Source,
}

/// The counts stay usable after a panic elsewhere: they are plain integers, each update
/// complete under the lock.
fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission {
    /// At most `max_total` connections proving their keys, `max_per_source` from one
    /// [`Source`].
    pub(super) fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total,
            max_per_source,
        }
    }

    /// A place for a new connection from `ip`, or why not.
    pub(super) fn admit(&self, ip: IpAddr) -> Result<Proving, Refusal> {
        let source = Source::of(ip);
        let mut counts = lock(&self.counts);
        if counts.total >= self.max_total {
            return Err(Refusal::Unproven {
                max: self.max_total,
            });
        }
        let from_source = counts.by_source.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return Err(Refusal::Source {
                max: self.max_per_source,
                from: source,
            });
        }
        *from_source += 1;
        counts.total += 1;
        Ok(Proving {
            counts: Arc::clone(&self.counts),
            source,
        })
    }

    /// Connections proving their keys now: in all, and from `ip`'s source.
    #[cfg(test)]
    pub(super) fn proving(&self, ip: IpAddr) -> (usize, usize) {
        let counts = lock(&self.counts);
        let from = counts.by_source.get(&Source::of(ip)).copied();
        (counts.total, from.unwrap_or(0))
    }
}

impl Drop for Proving {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_source.remove(&self.source);
            }
        }
    }
}

/// Log lines that may come in floods: at most [`LogBudget::BURST`] at once, then one a
/// second. The next line written says how many were left out; [`LogBudget::flush`]
/// reports them when no line follows.
#[derive(Debug)]
pub(super) struct LogBudget {
    lines: u64,
    at: Instant,
    left_out: u64,
}

impl LogBudget {
    /// Lines written at once after a quiet spell.
    pub(super) const BURST: u64 = 10;
    /// One more line allowed this often.
    pub(super) const EVERY: Duration = Duration::from_secs(1);

    pub(super) fn new(now: Instant) -> Self {
        Self {
            lines: Self::BURST,
            at: now,
            left_out: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let every = Self::EVERY.as_nanos().max(1);
        let periods = now.saturating_duration_since(self.at).as_nanos() / every;
        let periods = u64::try_from(periods).unwrap_or(u64::MAX);
        if periods == 0 {
            return;
        }
        self.lines = self.lines.saturating_add(periods).min(Self::BURST);
        self.at = if self.lines == Self::BURST {
            now
        } else {
            // Whole periods only, so the fraction counts towards the next line.
            let elapsed = Self::EVERY.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
            self.at + elapsed
        };
    }

    /// `line` happened at `now`: it, with a note of the lines left out before it, if the
    /// budget allows a line; otherwise `None`, and it is counted as left out.
    pub(super) fn line(&mut self, now: Instant, line: impl fmt::Display) -> Option<String> {
        self.refill(now);
        if self.lines == 0 {
            self.left_out += 1;
            return None;
        }
        self.lines -= 1;
        Some(match std::mem::take(&mut self.left_out) {
            0 => line.to_string(),
            n => format!("{line} ({n} similar line(s) left out before this one)"),
        })
    }

    /// A line about the lines left out, once the budget allows one and there are any.
    pub(super) fn flush(&mut self, now: Instant) -> Option<String> {
        if self.left_out == 0 {
            return None;
        }
        self.refill(now);
        if self.lines == 0 {
            return None;
        }
        self.lines -= 1;
        let n = std::mem::take(&mut self.left_out);
        Some(format!("{n} similar line(s) left out"))
    }

    /// The lines left out, if any, budget or not: for the last line before stopping.
    pub(super) fn finish(&mut self) -> Option<String> {
        match std::mem::take(&mut self.left_out) {
            0 => None,
            n => Some(format!("{n} similar line(s) left out")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn sources_are_v4_addresses_and_v6_slash_64s() {
        assert_eq!(Source::of(ip("192.0.2.7")).to_string(), "192.0.2.7");
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.7")),
            Source::of(ip("192.0.2.7"))
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")),
            Source::of(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("2001:db8:1:2:aaaa::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn caps_hold_per_source_and_in_all_and_places_come_back() {
        let admission = Admission::new(5, 2);
        let a = ip("192.0.2.1");
        let held: Vec<Proving> = (0..2).map(|_| admission.admit(a).unwrap()).collect();
        assert_eq!(
            admission.admit(a).unwrap_err(),
            Refusal::Source {
                max: 2,
                from: Source::of(a)
            }
        );
        // Others still get in, up to the total.
        let b = admission.admit(ip("192.0.2.2")).unwrap();
        let c = admission.admit(ip("2001:db8::1")).unwrap();
        let d = admission.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.3")).unwrap_err(),
            Refusal::Unproven { max: 5 }
        );
        assert_eq!(admission.proving(a), (5, 2));
        drop(held);
        assert_eq!(admission.proving(a), (3, 0));
        let again = admission.admit(a).unwrap();
        drop((again, b, c, d));
        assert_eq!(admission.proving(a), (0, 0));
        assert!(lock(&admission.counts).by_source.is_empty());
    }

    #[test]
    fn a_flood_of_lines_is_cut_to_one_a_second_with_a_count() {
        let start = Instant::now();
        let mut budget = LogBudget::new(start);
        let written: Vec<String> = (0..1000)
            .filter_map(|i| budget.line(start, format!("refused {i}")))
            .collect();
        assert_eq!(written.len(), 10);
        assert_eq!(written[0], "refused 0");
        // Within the second, nothing more.
        let soon = start + Duration::from_millis(999);
        assert_eq!(budget.line(soon, "refused 1000"), None);
        assert_eq!(budget.flush(soon), None);
        // A second on: one line, saying how many were left out.
        let later = start + Duration::from_secs(1);
        assert_eq!(
            budget.line(later, "refused 1001").as_deref(),
            Some("refused 1001 (991 similar line(s) left out before this one)")
        );
        assert_eq!(budget.line(later, "refused 1002"), None);
        // When the flood stops, the rest is reported once the budget allows.
        let after = start + Duration::from_secs(2);
        assert_eq!(
            budget.flush(after).as_deref(),
            Some("1 similar line(s) left out")
        );
        assert_eq!(budget.flush(after), None);
        assert_eq!(budget.line(after, "refused 1003"), None);
        assert_eq!(
            budget.finish().as_deref(),
            Some("1 similar line(s) left out")
        );
        assert_eq!(budget.finish(), None);
        // After a quiet spell the burst is back.
        let quiet = start + Duration::from_secs(60);
        let written = (0..20).filter_map(|i| budget.line(quiet, i)).count();
        assert_eq!(written, 10);
    }
}
