//! The launcher's core: the table of started apps, their sequence ids and states, the
//! daemon restart policy and the shutdown escalation. Sans-IO: it never spawns, signals or
//! reads the clock; the driver (`runtime`) passes `now` in, does what the returned values
//! say, and reports back with [`Supervisor::spawned`], [`Supervisor::spawn_failed`] and
//! [`Supervisor::exited`].
//!
//! Call order for one instance: [`Supervisor::start`] (state `Starting`), then the driver
//! spawns and calls `spawned` or `spawn_failed`; when the process ends, `exited`. A daemon
//! that ends without being asked goes to `Backoff`, and [`Supervisor::poll_restarts`]
//! hands its id back to the driver to spawn again when the delay has passed. A shutdown is
//! [`Supervisor::stop`], then [`Supervisor::poll_signals`] says when to send SIGTERM and
//! SIGKILL to the process group.
//!
//! Invariants: ids start at 1 and are never reused; a restarted daemon keeps its id (its
//! pid changes); an exit report for a pid that is not the instance's current one changes
//! nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// How daemons are restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The delay before the first restart; it doubles with each crash in a row.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A daemon that ran this long before it died starts counting crashes from zero.
    pub stable: Duration,
    /// After this many crashes in a row, the daemon is given up (not restarted).
    pub limit: u32,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable: Duration::from_secs(30),
            limit: 5,
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `crash` (1-based) of a row.
    pub fn delay(&self, crash: u32) -> Duration {
        let doublings = crash.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit {code}"),
            Self::Signal(9) => f.write_str("killed by SIGKILL"),
            Self::Signal(15) => f.write_str("killed by SIGTERM"),
            Self::Signal(2) => f.write_str("killed by SIGINT"),
            Self::Signal(n) => write!(f, "killed by signal {n}"),
        }
    }
}

/// Where a shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStage {
    /// Asked over signal; SIGTERM follows after the grace period.
    Asked,
    /// SIGTERM sent; SIGKILL follows after the grace period.
    Terminated,
    /// SIGKILL sent; only the exit report is awaited.
    Killed,
}

/// A process signal the driver sends to an instance's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
}

/// An instance's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The driver is spawning it.
    Starting,
    /// Its process runs.
    Running {
        /// The process (and process group) id.
        pid: u32,
    },
    /// It is being shut down.
    Stopping {
        /// The process (and process group) id.
        pid: u32,
        /// How far the escalation went.
        stage: StopStage,
        /// When that stage began.
        stage_since: Instant,
    },
    /// A daemon that died, waiting to be restarted.
    Backoff {
        /// When to restart it.
        until: Instant,
        /// How it ended.
        exit: Option<Exit>,
    },
    /// It ended on its own (not a daemon).
    Exited(Exit),
    /// It ended after a shutdown (`None`: it was not running then).
    Stopped(Option<Exit>),
    /// A daemon that crashed too often in a row: not restarted any more.
    GaveUp(Option<Exit>),
    /// It could not be started.
    FailedToStart(String),
}

impl State {
    /// A short word for `la`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running { .. } => "running",
            Self::Stopping { .. } => "stopping",
            Self::Backoff { .. } => "backoff",
            Self::Exited(_) => "exited",
            Self::Stopped(_) => "stopped",
            Self::GaveUp(_) => "gave-up",
            Self::FailedToStart(_) => "failed",
        }
    }

    /// The pid of a live process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Running { pid } | Self::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// One started app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The sequence id.
    pub id: u64,
    /// The app's name.
    pub app: String,
    /// The arguments it runs with.
    pub args: Vec<String>,
    /// Restarted when it dies.
    pub daemon: bool,
    /// Where it stands.
    pub state: State,
    /// When its current (or last) process started.
    pub started_at: Option<Instant>,
    /// How often it was restarted.
    pub restarts: u32,
    /// Crashes since it last ran stably.
    pub crashes_in_row: u32,
    /// The pid of its last process, alive or not.
    pub last_pid: Option<u32>,
}

/// Why a request about an id cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// No instance has this id.
    #[error("no app with id {0} (see `la`)")]
    UnknownId(u64),
    /// It is not running.
    #[error("app {id} is not running (it is {state})")]
    NotRunning {
        /// The id.
        id: u64,
        /// Its state word.
        state: &'static str,
    },
}

/// What [`Supervisor::stop`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOrder {
    /// Nothing runs (it was starting or waiting to restart); it is now stopped.
    Cancelled,
    /// A shutdown of `pid` is already under way; nothing new to send.
    AlreadyStopping {
        /// The process group.
        pid: u32,
    },
    /// It runs as `pid`; if `term_now`, send SIGTERM to its group now (it was not asked
    /// over signal).
    Signal {
        /// The process group.
        pid: u32,
        /// Send SIGTERM now.
        term_now: bool,
    },
}

/// The table of instances.
#[derive(Debug)]
pub struct Supervisor {
    policy: RestartPolicy,
    grace: Duration,
    next_id: u64,
    instances: BTreeMap<u64, Instance>,
}

impl Supervisor {
    /// An empty table. `grace` is how long a shutdown waits at each stage.
    pub fn new(policy: RestartPolicy, grace: Duration) -> Self {
        Self {
            policy,
            grace,
            next_id: 1,
            instances: BTreeMap::new(),
        }
    }

    /// The restart policy.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// A new instance in state `Starting`; returns its id.
    pub fn start(&mut self, app: &str, args: Vec<String>, daemon: bool) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.instances.insert(
            id,
            Instance {
                id,
                app: app.to_owned(),
                args,
                daemon,
                state: State::Starting,
                started_at: None,
                restarts: 0,
                crashes_in_row: 0,
                last_pid: None,
            },
        );
        id
    }

    /// The instance `id`.
    pub fn get(&self, id: u64) -> Option<&Instance> {
        self.instances.get(&id)
    }

    /// Every instance, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// The driver started `id` as `pid`.
    pub fn spawned(&mut self, id: u64, pid: u32, now: Instant) {
        if let Some(inst) = self.instances.get_mut(&id)
            && inst.state == State::Starting
        {
            inst.state = State::Running { pid };
            inst.started_at = Some(now);
            inst.last_pid = Some(pid);
        }
    }

    /// The driver could not start `id`. A daemon being restarted counts it as a crash.
    pub fn spawn_failed(&mut self, id: u64, reason: String, now: Instant) {
        let policy = self.policy;
        if let Some(inst) = self.instances.get_mut(&id) {
            if inst.daemon && inst.restarts > 0 {
                crashed(inst, None, now, &policy);
            } else {
                inst.state = State::FailedToStart(reason);
            }
        }
    }

    /// Process `pid` of `id` ended with `exit`.
    pub fn exited(&mut self, id: u64, pid: u32, exit: Exit, now: Instant) {
        let policy = self.policy;
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        match inst.state {
            State::Stopping { pid: p, .. } if p == pid => inst.state = State::Stopped(Some(exit)),
            State::Running { pid: p } if p == pid => {
                if inst.daemon {
                    let ran = inst
                        .started_at
                        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                    if ran >= policy.stable {
                        inst.crashes_in_row = 0;
                    }
                    crashed(inst, Some(exit), now, &policy);
                } else {
                    inst.state = State::Exited(exit);
                }
            }
            _ => {}
        }
    }

    /// Begin shutting `id` down. `asked` says whether it was asked over signal (then
    /// SIGTERM waits a grace period).
    pub fn stop(
        &mut self,
        id: u64,
        asked: bool,
        now: Instant,
    ) -> Result<StopOrder, SupervisorError> {
        let inst = self
            .instances
            .get_mut(&id)
            .ok_or(SupervisorError::UnknownId(id))?;
        match inst.state {
            State::Running { pid } => {
                inst.state = State::Stopping {
                    pid,
                    stage: if asked {
                        StopStage::Asked
                    } else {
                        StopStage::Terminated
                    },
                    stage_since: now,
                };
                Ok(StopOrder::Signal {
                    pid,
                    term_now: !asked,
                })
            }
            State::Stopping { pid, .. } => Ok(StopOrder::AlreadyStopping { pid }),
            State::Starting | State::Backoff { .. } => {
                inst.state = State::Stopped(None);
                Ok(StopOrder::Cancelled)
            }
            ref other => Err(SupervisorError::NotRunning {
                id,
                state: other.word(),
            }),
        }
    }

    /// Asking over signal failed: go straight to SIGTERM. Returns the pid to send it to,
    /// if `id` was waiting for its answer.
    pub fn terminate_now(&mut self, id: u64, now: Instant) -> Option<u32> {
        let inst = self.instances.get_mut(&id)?;
        match inst.state {
            State::Stopping {
                pid,
                stage: StopStage::Asked,
                ..
            } => {
                inst.state = State::Stopping {
                    pid,
                    stage: StopStage::Terminated,
                    stage_since: now,
                };
                Some(pid)
            }
            _ => None,
        }
    }

    /// Signals due now for shutdowns in progress: `(id, pid, signal)` for the driver to
    /// send to the process group.
    pub fn poll_signals(&mut self, now: Instant) -> Vec<(u64, u32, Sig)> {
        let mut due = Vec::new();
        for inst in self.instances.values_mut() {
            if let State::Stopping {
                pid,
                stage,
                stage_since,
            } = inst.state
                && now.saturating_duration_since(stage_since) >= self.grace
            {
                let next = match stage {
                    StopStage::Asked => Some((StopStage::Terminated, Sig::Term)),
                    StopStage::Terminated => Some((StopStage::Killed, Sig::Kill)),
                    StopStage::Killed => None,
                };
                if let Some((stage, sig)) = next {
                    inst.state = State::Stopping {
                        pid,
                        stage,
                        stage_since: now,
                    };
                    due.push((inst.id, pid, sig));
                }
            }
        }
        due
    }

    /// Daemons whose restart delay has passed, now `Starting` again: the driver spawns them.
    pub fn poll_restarts(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        for inst in self.instances.values_mut() {
            if let State::Backoff { until, .. } = inst.state
                && now >= until
            {
                inst.state = State::Starting;
                inst.restarts = inst.restarts.saturating_add(1);
                due.push(inst.id);
            }
        }
        due
    }

    /// Shut everything down (viscript is quitting): stops pending restarts and returns the
    /// pids to send SIGTERM to now; [`Self::poll_signals`] escalates to SIGKILL.
    pub fn stop_all(&mut self, now: Instant) -> Vec<u32> {
        let ids: Vec<u64> = self.instances.keys().copied().collect();
        let mut pids = Vec::new();
        for id in ids {
            if let Ok(StopOrder::Signal {
                pid,
                term_now: true,
            }) = self.stop(id, false, now)
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Whether any instance still has a process (running or stopping) or is starting.
    pub fn any_alive(&self) -> bool {
        self.instances.values().any(|i| {
            matches!(
                i.state,
                State::Running { .. } | State::Stopping { .. } | State::Starting
            )
        })
    }
}

/// A daemon ended without being asked: back off, or give up.
fn crashed(inst: &mut Instance, exit: Option<Exit>, now: Instant, policy: &RestartPolicy) {
    inst.crashes_in_row = inst.crashes_in_row.saturating_add(1);
    inst.state = if inst.crashes_in_row > policy.limit {
        State::GaveUp(exit)
    } else {
        State::Backoff {
            until: now + policy.delay(inst.crashes_in_row),
            exit,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            stable: Duration::from_secs(10),
            limit: 3,
        }
    }

    #[test]
    fn ids_start_at_one_and_are_never_reused() {
        let mut s = Supervisor::new(policy(), GRACE);
        let now = Instant::now();
        assert_eq!(s.start("a", vec![], false), 1);
        s.spawned(1, 100, now);
        s.exited(1, 100, Exit::Code(0), now);
        assert_eq!(s.start("a", vec!["x".into()], false), 2);
        assert_eq!(s.get(1).unwrap().state, State::Exited(Exit::Code(0)));
        assert_eq!(s.get(2).unwrap().args, ["x"]);
        assert_eq!(s.start("b", vec![], true), 3);
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let p = policy();
        let delays: Vec<_> = (1..=5).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 4, 4]);
        assert_eq!(p.delay(u32::MAX), p.max);
    }

    #[test]
    fn a_crashing_daemon_backs_off_then_gives_up() {
        let mut s = Supervisor::new(policy(), GRACE);
        let mut now = Instant::now();
        let id = s.start("d", vec![], true);
        let mut pid = 10;
        s.spawned(id, pid, now);
        for crash in 1..=3u32 {
            s.exited(id, pid, Exit::Code(1), now);
            let State::Backoff { until, .. } = s.get(id).unwrap().state else {
                panic!("{:?}", s.get(id))
            };
            assert_eq!(until - now, policy().delay(crash));
            assert!(s.poll_restarts(until - Duration::from_millis(1)).is_empty());
            now = until;
            assert_eq!(s.poll_restarts(now), [id]);
            pid += 1;
            s.spawned(id, pid, now);
        }
        s.exited(id, pid, Exit::Signal(11), now);
        assert_eq!(
            s.get(id).unwrap().state,
            State::GaveUp(Some(Exit::Signal(11)))
        );
        assert_eq!(s.get(id).unwrap().restarts, 3);
        assert!(s.poll_restarts(now + Duration::from_secs(100)).is_empty());
    }

    #[test]
    fn a_stable_run_resets_the_crash_count() {
        let mut s = Supervisor::new(policy(), GRACE);
        let now = Instant::now();
        let id = s.start("d", vec![], true);
        s.spawned(id, 1, now);
        s.exited(id, 1, Exit::Code(1), now);
        let later = now + Duration::from_secs(1);
        s.poll_restarts(later);
        s.spawned(id, 2, later);
        s.exited(id, 2, Exit::Code(1), later);
        assert_eq!(s.get(id).unwrap().crashes_in_row, 2);
        let later = later + Duration::from_secs(2);
        s.poll_restarts(later);
        s.spawned(id, 3, later);
        let much_later = later + Duration::from_secs(60);
        s.exited(id, 3, Exit::Code(1), much_later);
        assert_eq!(s.get(id).unwrap().crashes_in_row, 1);
    }

    #[test]
    fn shutdown_escalates_ask_term_kill() {
        let mut s = Supervisor::new(policy(), GRACE);
        let now = Instant::now();
        let id = s.start("a", vec![], true);
        s.spawned(id, 50, now);
        assert_eq!(
            s.stop(id, true, now),
            Ok(StopOrder::Signal {
                pid: 50,
                term_now: false
            })
        );
        assert_eq!(
            s.stop(id, false, now),
            Ok(StopOrder::AlreadyStopping { pid: 50 })
        );
        assert!(s.poll_signals(now + Duration::from_secs(1)).is_empty());
        assert_eq!(s.poll_signals(now + GRACE), [(id, 50, Sig::Term)]);
        assert_eq!(s.poll_signals(now + GRACE * 2), [(id, 50, Sig::Kill)]);
        assert!(s.poll_signals(now + GRACE * 10).is_empty());
        // A stale report for another pid changes nothing; the real one stops it, no restart.
        s.exited(id, 49, Exit::Code(0), now);
        assert_eq!(s.get(id).unwrap().state.word(), "stopping");
        s.exited(id, 50, Exit::Signal(9), now);
        assert_eq!(
            s.get(id).unwrap().state,
            State::Stopped(Some(Exit::Signal(9)))
        );
        assert!(s.poll_restarts(now + Duration::from_secs(100)).is_empty());
        assert_eq!(
            s.stop(id, false, now),
            Err(SupervisorError::NotRunning {
                id,
                state: "stopped"
            })
        );
        assert_eq!(s.stop(99, false, now), Err(SupervisorError::UnknownId(99)));
    }

    #[test]
    fn stop_all_terms_running_and_cancels_restarts() {
        let mut s = Supervisor::new(policy(), GRACE);
        let now = Instant::now();
        let a = s.start("a", vec![], false);
        s.spawned(a, 7, now);
        let d = s.start("d", vec![], true);
        s.spawned(d, 8, now);
        s.exited(d, 8, Exit::Code(1), now);
        assert_eq!(s.stop_all(now), [7]);
        assert_eq!(s.get(d).unwrap().state, State::Stopped(None));
        assert!(s.any_alive());
        s.exited(a, 7, Exit::Signal(15), now);
        assert!(!s.any_alive());
    }
}
