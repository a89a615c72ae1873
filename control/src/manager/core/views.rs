//! How much of the manager's views each node may ask for. `NODES` (the whole mesh) and
//! `ROUTE_LIST` are the only requests whose answers grow with the mesh: up to a frame
//! (1 MiB) of JSON, built and serialised on the core thread every time. A node asking in a
//! loop would keep the core busy for everyone; so each node has a budget of answer bytes,
//! and a view asked for with the budget spent is refused with `rate_limited` at once,
//! before anything is built. Every other request is served as before.
//!
//! The budget is a token bucket in bytes, one per node key (not per connection, so
//! reconnecting does not refill it). It fills at [`VIEW_BYTES_PER_SEC`] up to
//! [`VIEW_BURST`]; a view is served while the balance is above zero and then costs the
//! size of its answer, at least [`VIEW_MIN_COST`]. The size is known only once the answer
//! is built, so the balance may go below zero by one answer, and the node waits until it
//! is paid back: over any stretch of time, a node gets at most the burst, plus the rate
//! times the time, plus one answer.
//!
//! What the figures mean: a mesh of a few dozen nodes has views of a few KiB, each
//! counted as 8 KiB: a node gets 128 in a row and then 32 a second. `skywire nodes` by
//! hand, a monitor polling every second, or a test polling every 50 ms stays well inside.
//! A mesh of several thousand nodes has a view of about 1 MiB: a node gets one every 4 s.
//!
//! Sans-IO, like the rest of the core: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use skywire_dataplane::crypto::PublicKey;

use super::super::proto::{ErrorKind, ProtoError};

/// How fast a node's view budget fills, in bytes of answers per second.
pub const VIEW_BYTES_PER_SEC: u64 = 256 * 1024;
/// The most a node's view budget holds: what it can have at once after a quiet spell.
/// One frame's worth, so the largest view is always served from a full budget.
pub const VIEW_BURST: u64 = 1 << 20;
/// The least a view costs, however small: the work of serving it is not only its bytes.
pub const VIEW_MIN_COST: u64 = 8 * 1024;
/// How often budgets that filled up again are forgotten (a new one starts full).
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// At most one log line per node this often about its refused views.
pub const VIEW_LOG_EVERY: Duration = Duration::from_secs(10);

/// The view budgets of the nodes that asked for views lately.
#[derive(Debug, Default)]
pub(super) struct ViewBudgets {
    nodes: HashMap<PublicKey, Budget>,
    next_prune: Option<Instant>,
}

/// One node's budget: bytes it may still be served (below zero: owed), as of `at`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    balance: i64,
    at: Instant,
    /// When a refusal of this node was last logged.
    logged: Option<Instant>,
}

impl Budget {
    fn full(now: Instant) -> Self {
        Self {
            balance: burst(),
            at: now,
            logged: None,
        }
    }

    /// The balance at `now`, with what accrued since `at`.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let gained = elapsed.as_nanos() * u128::from(VIEW_BYTES_PER_SEC) / 1_000_000_000;
        let gained = i64::try_from(gained).unwrap_or(i64::MAX);
        self.balance = self.balance.saturating_add(gained).min(burst());
        self.at = now;
    }

    /// How long until the balance is above zero again.
    fn wait(&self) -> Duration {
        let owed = u64::try_from(1 - self.balance).unwrap_or(0);
        let nanos = u128::from(owed) * 1_000_000_000 / u128::from(VIEW_BYTES_PER_SEC);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn burst() -> i64 {
    i64::try_from(VIEW_BURST).unwrap_or(i64::MAX)
}

impl ViewBudgets {
    /// Whether `node` may be served a view at `now`; if not, a `rate_limited` error that
    /// says when to ask again. Serving it must be followed by [`Self::spend`].
    pub(super) fn admit(&mut self, node: &PublicKey, now: Instant) -> Result<(), ProtoError> {
        let budget = self.nodes.entry(*node).or_insert_with(|| Budget::full(now));
        budget.refill(now);
        if budget.balance > 0 {
            return Ok(());
        }
        Err(ProtoError::new(
            ErrorKind::RateLimited,
            format!(
                "this node asks for NODES and ROUTE_LIST faster than the manager serves them \
                 ({} KiB of answers a second, each counted as at least {} KiB); ask again \
                 in {} ms",
                VIEW_BYTES_PER_SEC / 1024,
                VIEW_MIN_COST / 1024,
                budget.wait().as_millis().max(1)
            ),
        ))
    }

    /// `node` was served a view of `bytes` bytes at `now`.
    pub(super) fn spend(&mut self, node: &PublicKey, bytes: usize, now: Instant) {
        let cost = u64::try_from(bytes).unwrap_or(u64::MAX).max(VIEW_MIN_COST);
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        let budget = self.nodes.entry(*node).or_insert_with(|| Budget::full(now));
        budget.refill(now);
        budget.balance = budget.balance.saturating_sub(cost);
    }

    /// Whether a refusal of `node`'s views at `now` deserves a log line: the first, then
    /// at most one every [`VIEW_LOG_EVERY`], so a node asking in a loop cannot flood the
    /// log either.
    pub(super) fn log_due(&mut self, node: &PublicKey, now: Instant) -> bool {
        let Some(budget) = self.nodes.get_mut(node) else {
            return true;
        };
        let due = budget
            .logged
            .is_none_or(|at| now.saturating_duration_since(at) >= VIEW_LOG_EVERY);
        if due {
            budget.logged = Some(now);
        }
        due
    }

    /// Forget the budgets that are full again, at most every [`PRUNE_EVERY`]: the table
    /// holds only nodes that asked for views lately.
    pub(super) fn prune(&mut self, now: Instant) {
        if self.next_prune.is_some_and(|at| now < at) {
            return;
        }
        self.next_prune = Some(now + PRUNE_EVERY);
        self.nodes.retain(|_, budget| {
            budget.refill(now);
            budget.balance < burst()
        });
    }

    /// How many nodes have a budget in the table.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use skywire_dataplane::crypto::PrivateKey;

    use super::super::super::proto::{Frame, REPLY, Register, kind};
    use super::super::{ConnId, ManagerCore, Output, Params, Rng};
    use super::*;

    fn key(i: u32) -> PublicKey {
        // Not in byte 0 or 31, which X25519 clamps.
        let mut bytes = [7u8; 32];
        bytes[1..5].copy_from_slice(&i.to_le_bytes());
        PrivateKey::from_bytes(bytes).public_key()
    }

    /// Small views until `node`'s budget is refused; how many were served.
    fn served_in_a_row(budgets: &mut ViewBudgets, node: &PublicKey, now: Instant) -> u64 {
        let mut served = 0;
        while budgets.admit(node, now).is_ok() {
            budgets.spend(node, 100, now);
            served += 1;
            assert!(served <= 10_000, "never refused");
        }
        served
    }

    #[test]
    fn a_node_gets_the_burst_then_the_rate_and_others_are_untouched() {
        let mut budgets = ViewBudgets::default();
        let now = Instant::now();
        let (a, b) = (key(1), key(2));
        assert_eq!(
            served_in_a_row(&mut budgets, &a, now),
            VIEW_BURST / VIEW_MIN_COST
        );
        let err = budgets.admit(&a, now).unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.message.contains("ask again in 1 ms"), "{err}");
        // Another node has its own budget.
        assert_eq!(
            served_in_a_row(&mut budgets, &b, now),
            VIEW_BURST / VIEW_MIN_COST
        );
        // A second later: one second's worth.
        let later = now + Duration::from_secs(1);
        assert_eq!(
            served_in_a_row(&mut budgets, &a, later),
            VIEW_BYTES_PER_SEC / VIEW_MIN_COST
        );
    }

    #[test]
    fn a_large_answer_is_served_whole_and_paid_back_before_the_next() {
        let mut budgets = ViewBudgets::default();
        let now = Instant::now();
        let a = key(1);
        // A full budget serves the largest view, and one more while anything is left.
        budgets.admit(&a, now).unwrap();
        budgets.spend(&a, 1 << 20, now);
        let err = budgets.admit(&a, now).unwrap_err();
        // Owed: 1 byte more than nothing; the time to earn one byte, rounded up to 1 ms.
        assert!(err.message.contains("ask again in 1 ms"), "{err}");
        budgets.admit(&a, now + Duration::from_millis(1)).unwrap();
        budgets.spend(&a, 1 << 20, now + Duration::from_millis(1));
        // Now about 1 MiB is owed: 4 s at 256 KiB/s.
        let err = budgets
            .admit(&a, now + Duration::from_millis(2))
            .unwrap_err();
        assert!(err.message.contains("ask again in 39"), "{err}");
        assert!(
            budgets
                .admit(&a, now + Duration::from_millis(3900))
                .is_err()
        );
        budgets
            .admit(&a, now + Duration::from_millis(4010))
            .unwrap();
    }

    #[test]
    fn full_budgets_are_forgotten() {
        let mut budgets = ViewBudgets::default();
        let now = Instant::now();
        for i in 0..100 {
            budgets.admit(&key(i), now).unwrap();
            budgets.spend(&key(i), 100, now);
        }
        budgets.prune(now);
        assert_eq!(budgets.len(), 100);
        // 8 KiB spent is back within 40 ms; the next prune is due after PRUNE_EVERY.
        budgets.prune(now + Duration::from_secs(1));
        assert_eq!(budgets.len(), 100);
        budgets.prune(now + PRUNE_EVERY);
        assert_eq!(budgets.len(), 0);
    }

    /// A core with nodes `1..=n` registered on connections of the same numbers.
    fn core_with(n: u32, now: Instant) -> ManagerCore {
        let mut core = ManagerCore::new(Params::default(), Rng::seeded(5));
        for i in 1..=n {
            let conn = ConnId(u64::from(i));
            core.authenticated(conn, key(i), now);
            let register = Register {
                endpoint: Some(
                    format!("198.18.{}.{}:6000", i / 250, i % 250)
                        .parse()
                        .unwrap(),
                ),
                ..Register::default()
            };
            core.frame(conn, Frame::request(kind::REGISTER, 1, &register), now);
        }
        core.drain();
        core
    }

    /// The replies on `conn`, in order, as `Ok(body length)` or `Err(kind)`.
    fn replies(out: &[Output], conn: ConnId) -> Vec<(u8, Result<usize, ErrorKind>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(c, f) if *c == conn => Some((
                    f.kind & !REPLY,
                    f.reply::<Value>().map(|_| f.body.len()).map_err(|e| e.kind),
                )),
                _ => None,
            })
            .collect()
    }

    /// A node asking for NODES in a loop used to get a full view every time; now it gets
    /// `rate_limited` once its budget is spent, while its other requests and other nodes'
    /// views are served as before.
    #[test]
    fn a_node_hammering_nodes_is_limited_and_nothing_else_is() {
        let now = Instant::now();
        let mut core = core_with(3, now);
        for id in 0..200 {
            core.frame(
                ConnId(1),
                Frame::request(kind::NODES, id, &Value::Null),
                now,
            );
        }
        core.frame(
            ConnId(1),
            Frame::request(kind::HEARTBEAT, 500, &Value::Null),
            now,
        );
        core.frame(
            ConnId(1),
            Frame::request(kind::ROUTE_LIST, 501, &Value::Null),
            now,
        );
        core.frame(ConnId(2), Frame::request(kind::NODES, 1, &Value::Null), now);
        let out = core.drain();
        let to_1 = replies(&out, ConnId(1));
        let served = to_1
            .iter()
            .filter(|(k, r)| *k == kind::NODES && r.is_ok())
            .count();
        let limited = to_1
            .iter()
            .filter(|(k, r)| *k == kind::NODES && *r == Err(ErrorKind::RateLimited))
            .count();
        let expected = usize::try_from(VIEW_BURST / VIEW_MIN_COST).unwrap();
        assert_eq!((served, limited), (expected, 200 - expected));
        // The heartbeat is answered; ROUTE_LIST shares the spent budget.
        assert!(
            to_1.iter().any(|(k, r)| *k == kind::HEARTBEAT && r.is_ok()),
            "{to_1:?}"
        );
        assert!(
            to_1.contains(&(kind::ROUTE_LIST, Err(ErrorKind::RateLimited))),
            "{to_1:?}"
        );
        // Node 2 is served; nobody is closed.
        assert!(matches!(
            replies(&out, ConnId(2)).as_slice(),
            [(kind::NODES, Ok(_))]
        ));
        assert!(!out.iter().any(|o| matches!(o, Output::Close(..))));
        // One log line about it, not 72.
        let lines = out
            .iter()
            .filter(|o| matches!(o, Output::Log(log::Level::Warn, l) if l.contains("rate_limited")))
            .count();
        assert_eq!(lines, 1, "{out:?}");
        // The error travels under its wire name and says when to ask again.
        let limited_frame = out
            .iter()
            .find_map(|o| match o {
                Output::Send(ConnId(1), f) if f.reply::<Value>().is_err() => Some(f),
                _ => None,
            })
            .unwrap();
        assert!(
            String::from_utf8_lossy(&limited_frame.body).contains("\"rate_limited\""),
            "{limited_frame:?}"
        );
        assert!(
            limited_frame
                .reply::<Value>()
                .unwrap_err()
                .message
                .contains("ask again in"),
        );
        // A moment later node 1 is served again.
        let later = now + Duration::from_millis(100);
        core.tick(later);
        core.drain();
        core.frame(
            ConnId(1),
            Frame::request(kind::NODES, 900, &Value::Null),
            later,
        );
        assert!(matches!(
            replies(&core.drain(), ConnId(1)).as_slice(),
            [(kind::NODES, Ok(_))]
        ));
    }

    /// In a large mesh each view costs its size: four views of about 300 KiB use up the
    /// budget, and the next waits for a view's worth of refill.
    #[test]
    fn large_views_cost_their_size() {
        let now = Instant::now();
        let mut core = core_with(2000, now);
        for id in 0..10 {
            core.frame(
                ConnId(1),
                Frame::request(kind::NODES, id, &Value::Null),
                now,
            );
        }
        let to_1 = replies(&core.drain(), ConnId(1));
        let sizes: Vec<usize> = to_1.iter().filter_map(|(_, r)| r.ok()).collect();
        let size = sizes[0];
        assert!(size > 200 * 1024, "a view of {size} bytes");
        let expected = usize::try_from(VIEW_BURST).unwrap().div_ceil(size);
        assert_eq!(sizes.len(), expected, "{to_1:?}");
        let size = u64::try_from(size).unwrap();
        // Paid back after about `size` bytes' worth of time, not before.
        let owed = size * u64::try_from(expected).unwrap() - VIEW_BURST;
        let wait = Duration::from_millis(owed * 1000 / VIEW_BYTES_PER_SEC);
        core.frame(
            ConnId(1),
            Frame::request(kind::NODES, 20, &Value::Null),
            now + wait.saturating_sub(Duration::from_millis(5)),
        );
        core.frame(
            ConnId(1),
            Frame::request(kind::NODES, 21, &Value::Null),
            now + wait + Duration::from_millis(5),
        );
        let to_1 = replies(&core.drain(), ConnId(1));
        assert_eq!(to_1[0].1, Err(ErrorKind::RateLimited));
        assert!(to_1[1].1.is_ok(), "{to_1:?}");
    }
}
