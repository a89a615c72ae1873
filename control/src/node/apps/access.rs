//! Who may use the app socket: root, the node's own user, the users of `node.apps.users`
//! and the members of `node.apps.group`; everyone else is refused with a message naming
//! the config keys that would let them in.
//!
//! The decision is a pure function of the peer's ids ([`Access::allows`]). Where they come
//! from is the server's business: the uid and primary gid from `SO_PEERCRED` (the kernel's
//! word, taken when the app connected), the supplementary groups from
//! `/proc/<pid>/status` of the pid `SO_PEERCRED` names, read only when the group decides.
//! Those are the process's groups when the node looks, which can differ from those it had
//! when it connected (a process that dropped a group after connecting still counts as a
//! member; one whose pid was reused by the time the node looks is seen with the new
//! process's groups). The socket's file modes are checked by the kernel at `connect`, so
//! a process needs the group (or, with `users` listed, nothing) to get that far anyway.

use crate::config::AppsConfig;

/// The rule of one app socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The node's effective uid.
    node_uid: u32,
    /// `node.apps.users`.
    users: Vec<u32>,
    /// `node.apps.group`.
    group: Option<u32>,
}

impl Access {
    /// The rule for a node running as `node_uid` with `users` and `group` from its config.
    pub fn new(node_uid: u32, users: Vec<u32>, group: Option<u32>) -> Self {
        Self {
            node_uid,
            users,
            group,
        }
    }

    /// The rule of `config` for a node running as `node_uid`.
    pub fn of(config: &AppsConfig, node_uid: u32) -> Self {
        Self::new(node_uid, config.users.clone(), config.group)
    }

    /// `node.apps.group`, if set.
    pub fn group(&self) -> Option<u32> {
        self.group
    }

    /// Whether `uid` is let in by its uid alone (root, the node's user, a listed user).
    pub fn allows_user(&self, uid: u32) -> bool {
        uid == 0 || uid == self.node_uid || self.users.contains(&uid)
    }

    /// Whether a process with `uid`, primary `gid` and supplementary `groups` may use the
    /// socket.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        self.allows_user(uid)
            || self
                .group
                .is_some_and(|group| gid == group || groups.contains(&group))
    }

    /// Why `uid` is refused, and what would let it in.
    pub fn refusal(&self, uid: u32) -> String {
        let group = match self.group {
            Some(gid) => format!(" and the members of group {gid} (node.apps.group)"),
            None => String::new(),
        };
        format!(
            "uid {uid} may not use this node's app socket: only root, uid {} (the node's user), \
             the users listed in node.apps.users{group} may; add the user to node.apps.users \
             or to the group node.apps.group names, in the node's config",
            self.node_uid
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_the_node_listed_users_and_the_group_are_let_in() {
        let access = Access::new(998, vec![1001, 1002], Some(500));
        assert!(access.allows(0, 0, &[]));
        assert!(access.allows(998, 998, &[]));
        assert!(access.allows(1001, 1001, &[]));
        assert!(access.allows(1002, 100, &[7]));
        // The group as the primary or a supplementary group.
        assert!(access.allows(2000, 500, &[]));
        assert!(access.allows(2000, 100, &[4, 500, 27]));
        // Anyone else is refused.
        assert!(!access.allows(2000, 100, &[4, 27]));
        assert!(!access.allows(65534, 65534, &[]));
        assert!(access.allows_user(1001) && !access.allows_user(2000));

        let no_group = Access::new(1000, vec![], None);
        assert!(!no_group.allows(2000, 500, &[500]));
        assert!(no_group.allows(1000, 1, &[]));
        assert_eq!(no_group.group(), None);
    }

    #[test]
    fn a_refusal_names_the_keys_to_change() {
        let message = Access::new(998, vec![], Some(500)).refusal(2000);
        assert!(message.starts_with("uid 2000 may not use"), "{message}");
        for part in ["uid 998", "node.apps.users", "group 500", "node.apps.group"] {
            assert!(message.contains(part), "{message}");
        }
        let message = Access::new(998, vec![], None).refusal(2000);
        assert!(!message.contains("group 500"), "{message}");
    }
}
