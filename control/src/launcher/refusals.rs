//! Refused signal registrations, turned into log lines at a bounded rate. Sans-IO.
//!
//! Every refusal the signal server reports (a process that tried to register as an app
//! without its secret) is logged, but a process that retries in a loop must not flood
//! the logs and push an app's real output out of its bounded log. So each app gets at most
//! one line a second about registrations refused in its name, and all ids that are no
//! app's share one more such line; the refusals in between are counted and the count is
//! given with the next line. The total is kept for `la` and the GUI.
//!
//! The state is bounded: one entry per app id the launcher has started, plus one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::signal::Refused;

/// The shortest time between two lines about the same app (or about unknown ids).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The app the refused registration named, when it is one of ours: its log gets the
    /// line too.
    pub app: Option<u64>,
    /// The text (with no control characters: addresses, numbers and fixed words).
    pub text: String,
}

/// When a key last logged, and how many refusals it counted since.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    last: Option<Instant>,
    counted: u64,
}

/// The refusals of one launcher.
#[derive(Debug, Default)]
pub struct RefusalLog {
    keys: HashMap<Option<u64>, Entry>,
    total: u64,
}

impl RefusalLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many registrations were refused in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Record `refused`; `is_app` says whether the id it named is an app of ours. The line
    /// to log, unless one was logged for the same key less than [`INTERVAL`] ago.
    pub fn record(&mut self, refused: &Refused, is_app: bool, now: Instant) -> Option<Line> {
        self.total = self.total.saturating_add(1);
        let app = refused.refusal.id().filter(|_| is_app);
        let entry = self.keys.entry(app).or_default();
        if entry
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < INTERVAL)
        {
            entry.counted = entry.counted.saturating_add(1);
            return None;
        }
        let since = std::mem::take(&mut entry.counted);
        entry.last = Some(now);
        let from = refused
            .peer
            .map_or_else(|| "an unknown address".to_owned(), |p| p.to_string());
        let more = match since {
            0 => String::new(),
            n => format!(" ({n} more refused since the last report)"),
        };
        Some(Line {
            app,
            text: format!(
                "[viscript] refused a signal registration from {from}: {}{more}",
                refused.refusal
            ),
        })
    }

    /// Count `n` refusals the server did not keep (it keeps 64 between two looks); they
    /// are reported with the next line about an unknown id.
    pub fn record_dropped(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
        let entry = self.keys.entry(None).or_default();
        entry.counted = entry.counted.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Refusal;

    fn refused(refusal: Refusal) -> Refused {
        Refused {
            peer: Some("127.0.0.1:4000".parse().unwrap()),
            refusal,
        }
    }

    #[test]
    fn one_line_a_second_per_app_with_the_count_between() {
        let mut log = RefusalLog::new();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let first = log.record(&refused(Refusal::WrongProof(3)), true, at(0));
        assert_eq!(
            first,
            Some(Line {
                app: Some(3),
                text: "[viscript] refused a signal registration from 127.0.0.1:4000: \
                       registration as id 3 has a wrong proof: not made with the secret of \
                       that app"
                    .to_owned()
            })
        );
        // Another app and the unknown ids have lines of their own.
        assert!(
            log.record(&refused(Refusal::NoProof(4)), true, at(10))
                .is_some()
        );
        let unknown = log.record(&refused(Refusal::UnknownId(99)), false, at(20));
        assert_eq!(unknown.map(|l| l.app), Some(None));
        for ms in 100..110 {
            assert_eq!(
                log.record(&refused(Refusal::WrongProof(3)), true, at(ms)),
                None
            );
        }
        let next = log
            .record(&refused(Refusal::NoProof(3)), true, at(1000))
            .unwrap();
        assert!(
            next.text
                .ends_with("(10 more refused since the last report)"),
            "{}",
            next.text
        );
        assert_eq!(log.total(), 14);
        log.record_dropped(5);
        assert_eq!(log.total(), 19);
        let after = log
            .record(&refused(Refusal::NoId), false, at(2000))
            .unwrap();
        assert!(
            after
                .text
                .ends_with("(5 more refused since the last report)"),
            "{}",
            after.text
        );
    }
}
