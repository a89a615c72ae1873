//! A node the manager refuses (issue 18, item 3): it is told why, says so once, asks again
//! only slowly, and `status` and `route add` name the real cause (root only).
//!
//! Two nodes register; the manager is restarted with `manager.allow` listing only A. B's
//! next `REGISTER` is refused with the reason, and B backs off from 10 s (it used to
//! reconnect about 5 times a second, with nothing said but "closed").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod netns;

use std::time::Duration;

use netns::managed::ManagedMesh;
use netns::{skip_unless_root, wait_until};
use skywire_control::node::reconnect::LinkState;

#[test]
fn a_refused_node_says_why_once_and_backs_off() {
    if !skip_unless_root("a_refused_node_says_why_once_and_backs_off") {
        return;
    }
    let mut mesh = ManagedMesh::start(&["a", "b"], &[(0, 1, 1)], |_, _, _| {});
    let link = |mesh: &ManagedMesh, i: usize| mesh.nodes[i].status_json().manager.unwrap();
    let b = link(&mesh, 1);
    assert_eq!(b.state, LinkState::Registered, "{b:?}");
    assert_eq!((b.problem.as_deref(), b.failures), (None, 0));
    let (code, text, _) = mesh.sky(1, &["status"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("  manager: 198.18.100.100:5999, registered for "),
        "{text}"
    );

    let a_key = mesh.nodes[0].key();
    mesh.configure_manager(|m| m.allow = Some(vec![a_key]));
    mesh.stop_manager();
    mesh.start_manager();
    let mut b = link(&mesh, 1);
    let refused = wait_until(Duration::from_secs(10), || {
        b = link(&mesh, 1);
        b.state == LinkState::Refused
    });
    assert!(
        refused.is_some(),
        "B was not refused: {b:?}\n{}",
        mesh.manager_log()
    );
    let problem = b.problem.clone().unwrap();
    assert!(
        problem.contains("not in this manager's manager.allow"),
        "{problem}"
    );
    let next = b.next_attempt_secs.unwrap();
    assert!((5.0..=10.0).contains(&next), "next attempt in {next} s");
    // A, allowed, registered again.
    let online = wait_until(Duration::from_secs(10), || {
        link(&mesh, 0).state == LinkState::Registered
    });
    assert!(online.is_some(), "{:?}", link(&mesh, 0));

    // `route add` on B names the refusal, not "is the manager running?".
    let (code, _, err) = mesh.sky(1, &["route", "add", &a_key.to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not registered with the manager at 198.18.100.100:5999")
            && err.contains("manager.allow")
            && err.contains("next attempt in"),
        "{err}"
    );
    let (_, text, _) = mesh.sky(1, &["status"]);
    assert!(
        text.contains("  manager: 198.18.100.100:5999, refused for "),
        "{text}"
    );

    // Three more seconds: no new attempt, so the refusal was said once by each side.
    std::thread::sleep(Duration::from_secs(3));
    let b_log = mesh.nodes[1].log_text();
    let said = b_log.matches("not in this manager's manager.allow").count();
    assert_eq!(said, 1, "B's log:\n{b_log}");
    let manager_log = mesh.manager_log();
    let refusals = manager_log
        .lines()
        .filter(|l| l.contains("manager.allow"))
        .count();
    assert_eq!(refusals, 1, "the manager's log:\n{manager_log}");
    assert_eq!(
        link(&mesh, 1).failures,
        b.failures,
        "B tried again too soon"
    );
}
