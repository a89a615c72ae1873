//! When the node tries its manager again, and what it tells its user about the connection,
//! sans-IO.
//!
//! Two kinds of failure wait differently:
//!
//! - **Transient** (the manager is down or unreachable, the connection dropped): from
//!   [`FIRST_RETRY`] doubling to [`MAX_BACKOFF`], so a restarted manager is found again
//!   within about 2 s.
//! - **Refusals** (the manager refused to register this node: its key is not in
//!   `manager.allow`, or is in use by another node; or whoever answered is not the
//!   configured manager): nothing changes until an operator edits a config, so from
//!   [`REFUSED_RETRY`] doubling to [`REFUSED_MAX_BACKOFF`].
//!
//! The transient wait starts over only once the node is registered: a manager that accepts
//! the TCP connection and then drops it is not asked 10 times a second. Each failure is
//! logged when it differs from the previous one, not on every attempt. [`Reconnect::view`]
//! is what `skywire status` shows, and [`Reconnect::unavailable`] what a request to the
//! manager (`route add`, `nodes`) answers while the node is not registered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The first wait after a transient failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The longest wait after transient failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The first wait after a refusal.
pub const REFUSED_RETRY: Duration = Duration::from_secs(10);

/// The longest wait after refusals.
pub const REFUSED_MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why an attempt failed, or a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth trying again soon.
    Transient(String),
    /// The manager refused this node, or is not the configured manager: try again slowly.
    Refused(String),
}

/// Where the connection to the manager stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// An attempt is under way, or due.
    Connecting,
    /// Connected and proven both ways; `REGISTER` not answered yet.
    Connected,
    /// Registered: route and link requests are served.
    Registered,
    /// The last attempt failed; the next is scheduled.
    Retrying,
    /// The manager refused this node; the next attempt is scheduled, slowly.
    Refused,
}

impl LinkState {
    /// Its name, as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Registered => "registered",
            Self::Retrying => "retrying",
            Self::Refused => "refused",
        }
    }
}

/// The connection as `skywire status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerLink {
    /// The manager's address.
    pub address: SocketAddr,
    /// Where the connection stands.
    pub state: LinkState,
    /// Seconds in this state.
    pub since_secs: f64,
    /// The last failure, while not registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Seconds until the next attempt, while one is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_secs: Option<f64>,
    /// Attempts that failed since the node was last registered.
    #[serde(default)]
    pub failures: u64,
}

/// The reconnection schedule and the connection's state.
#[derive(Debug, Clone)]
pub struct Reconnect {
    address: SocketAddr,
    state: LinkState,
    since: Instant,
    next_attempt: Instant,
    backoff: Duration,
    refused_backoff: Duration,
    problem: Option<Failure>,
    failures: u64,
}

impl Reconnect {
    /// A node that has not tried yet: the first attempt is due at `now`.
    pub fn new(address: SocketAddr, now: Instant) -> Self {
        Self {
            address,
            state: LinkState::Connecting,
            since: now,
            next_attempt: now,
            backoff: FIRST_RETRY,
            refused_backoff: REFUSED_RETRY,
            problem: None,
            failures: 0,
        }
    }

    /// Whether an attempt is due (the caller knows whether one is already running).
    pub fn due(&self, now: Instant) -> bool {
        self.next_attempt().is_some_and(|at| now >= at)
    }

    /// When the next attempt is due, while one is scheduled.
    pub fn next_attempt(&self) -> Option<Instant> {
        matches!(
            self.state,
            LinkState::Connecting | LinkState::Retrying | LinkState::Refused
        )
        .then_some(self.next_attempt)
    }

    /// An attempt started.
    pub fn attempting(&mut self, now: Instant) {
        if self.state != LinkState::Connecting {
            self.set(LinkState::Connecting, now);
        }
    }

    /// The connection is up and both keys are proven. Returns the line to log: none when
    /// the last failure was a refusal (the node is asking again, and will most likely be
    /// refused again, which is logged if it changed).
    pub fn connected(&mut self, now: Instant) -> Option<String> {
        self.set(LinkState::Connected, now);
        match self.problem {
            Some(Failure::Refused(_)) => None,
            _ => Some(format!("connected to the manager at {}", self.address)),
        }
    }

    /// The manager answered `REGISTER`: the waits start over. Returns the line to log.
    pub fn registered(&mut self, now: Instant) -> String {
        self.set(LinkState::Registered, now);
        self.backoff = FIRST_RETRY;
        self.refused_backoff = REFUSED_RETRY;
        self.problem = None;
        self.failures = 0;
        "registered with the manager".to_owned()
    }

    /// An attempt failed, or the connection ended (`failure` says why). Schedules the
    /// next attempt; returns the line to log when the failure differs from the last one.
    pub fn failed(&mut self, failure: Failure, now: Instant) -> Option<String> {
        let was_registered = self.state == LinkState::Registered;
        let wait = match &failure {
            Failure::Transient(_) => {
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                wait
            }
            Failure::Refused(_) => {
                let wait = self.refused_backoff;
                self.refused_backoff = (self.refused_backoff * 2).min(REFUSED_MAX_BACKOFF);
                wait
            }
        };
        self.failures = self.failures.saturating_add(1);
        self.next_attempt = now + wait;
        let state = match failure {
            Failure::Transient(_) => LinkState::Retrying,
            Failure::Refused(_) => LinkState::Refused,
        };
        self.set(state, now);
        let line = match (&failure, was_registered) {
            (Failure::Transient(reason), true) => Some(format!(
                "lost the manager connection: {reason} (reconnecting)"
            )),
            _ if self.problem.as_ref() == Some(&failure) => None,
            (Failure::Transient(reason), false) => {
                Some(format!("cannot reach the manager: {reason} (retrying)"))
            }
            (Failure::Refused(reason), _) => Some(format!(
                "{reason} (asking again in {} s, then less and less often, up to every {} \
                 min)",
                wait.as_secs(),
                REFUSED_MAX_BACKOFF.as_secs() / 60
            )),
        };
        self.problem = Some(failure);
        line
    }

    /// The connection as `skywire status` shows it.
    pub fn view(&self, now: Instant) -> ManagerLink {
        ManagerLink {
            address: self.address,
            state: self.state,
            since_secs: now.saturating_duration_since(self.since).as_secs_f64(),
            problem: match &self.problem {
                Some(Failure::Transient(p) | Failure::Refused(p)) => Some(p.clone()),
                None => None,
            },
            next_attempt_secs: self
                .next_attempt()
                .filter(|_| self.state != LinkState::Connecting)
                .map(|at| at.saturating_duration_since(now).as_secs_f64()),
            failures: self.failures,
        }
    }

    /// What a request to the manager answers while the node is not registered: the real
    /// cause, and when the node tries again.
    pub fn unavailable(&self, now: Instant) -> String {
        let next = self
            .next_attempt()
            .map(|at| at.saturating_duration_since(now))
            .filter(|_| self.state != LinkState::Connecting);
        let next = next.map_or_else(String::new, |d| {
            format!(" (next attempt in {:.1} s)", d.as_secs_f64())
        });
        match (&self.state, &self.problem) {
            (LinkState::Refused, Some(Failure::Refused(reason))) => format!(
                "not registered with the manager at {}: {reason}{next}; `skywire status` \
                 shows the connection",
                self.address
            ),
            (_, Some(Failure::Transient(reason) | Failure::Refused(reason))) => format!(
                "not connected to the manager at {}: {reason}{next}",
                self.address
            ),
            (LinkState::Connected, None) => format!(
                "connected to the manager at {}, not registered yet: try again in a moment",
                self.address
            ),
            _ => format!(
                "not connected to the manager at {} yet: try again in a moment",
                self.address
            ),
        }
    }

    fn set(&mut self, state: LinkState, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "198.18.100.100:5999".parse().unwrap()
    }

    fn refused() -> Failure {
        Failure::Refused(
            "the manager refused to register this node: not_allowed: key not allowed".to_owned(),
        )
    }

    #[test]
    fn transient_failures_back_off_to_two_seconds_and_log_once() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(addr(), t0);
        assert!(r.due(t0));
        let mut now = t0;
        let mut waits = Vec::new();
        let mut lines = 0;
        for _ in 0..8 {
            r.attempting(now);
            let refused = Failure::Transient("Connection refused (os error 111)".to_owned());
            lines += usize::from(r.failed(refused, now).is_some());
            let next = r.next_attempt().unwrap();
            waits.push(next - now);
            assert!(!r.due(now));
            now = next;
            assert!(r.due(now));
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(lines, 1, "the same failure is logged once");
        let view = r.view(now);
        assert_eq!(view.state, LinkState::Retrying);
        assert_eq!(view.failures, 8);
        assert_eq!(
            view.problem.as_deref(),
            Some("Connection refused (os error 111)")
        );
    }

    #[test]
    fn a_connection_dropped_before_registering_does_not_reset_the_wait() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(addr(), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            r.attempting(now);
            let _ = r.connected(now);
            let _ = r.failed(Failure::Transient("closed".to_owned()), now);
            let next = r.next_attempt().unwrap();
            waits.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000]);
    }

    #[test]
    fn refusals_back_off_to_five_minutes_and_log_once() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(addr(), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        let mut logged = Vec::new();
        for _ in 0..8 {
            r.attempting(now);
            logged.extend(r.connected(now));
            logged.extend(r.failed(refused(), now));
            let next = r.next_attempt().unwrap();
            waits.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        // "connected" once (the first time), the refusal once.
        assert_eq!(logged.len(), 2, "{logged:?}");
        assert_eq!(logged[0], "connected to the manager at 198.18.100.100:5999");
        assert!(
            logged[1].contains("asking again in 10 s") && logged[1].contains("5 min"),
            "{}",
            logged[1]
        );
        let view = r.view(now - Duration::from_secs(100));
        assert_eq!(view.state, LinkState::Refused);
        assert_eq!(view.next_attempt_secs, Some(100.0));
        let text = r.unavailable(now - Duration::from_secs(100));
        assert!(
            text.starts_with(
                "not registered with the manager at 198.18.100.100:5999: the manager refused"
            ) && text.contains("key not allowed")
                && text.contains("next attempt in 100.0 s"),
            "{text}"
        );
    }

    #[test]
    fn registering_starts_the_waits_over_and_a_later_loss_is_logged() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(addr(), t0);
        for _ in 0..3 {
            r.attempting(t0);
            let _ = r.failed(refused(), t0);
        }
        r.attempting(t0);
        let _ = r.connected(t0);
        assert_eq!(r.registered(t0), "registered with the manager");
        let view = r.view(t0);
        assert_eq!(
            (view.state, view.failures, view.problem),
            (LinkState::Registered, 0, None)
        );
        assert_eq!(view.next_attempt_secs, None);
        let line = r.failed(Failure::Transient("closed".to_owned()), t0);
        assert_eq!(
            line.as_deref(),
            Some("lost the manager connection: closed (reconnecting)")
        );
        assert_eq!(r.next_attempt(), Some(t0 + FIRST_RETRY));
        // A refusal after that starts from the first refusal wait again.
        let _ = r.failed(refused(), t0);
        assert_eq!(r.next_attempt(), Some(t0 + REFUSED_RETRY));
    }

    #[test]
    fn the_unavailable_text_names_the_cause() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(addr(), t0);
        assert_eq!(
            r.unavailable(t0),
            "not connected to the manager at 198.18.100.100:5999 yet: try again in a moment"
        );
        r.attempting(t0);
        let _ = r.failed(
            Failure::Transient("Connection refused (os error 111)".to_owned()),
            t0,
        );
        assert_eq!(
            r.unavailable(t0),
            "not connected to the manager at 198.18.100.100:5999: Connection refused (os error \
             111) (next attempt in 0.1 s)"
        );
        let view = serde_json::to_value(r.view(t0)).unwrap();
        assert_eq!(view["state"], "retrying");
        assert_eq!(view["problem"], "Connection refused (os error 111)");
    }
}
