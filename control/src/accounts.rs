//! User and group names as the system knows them: `/etc/passwd` and `/etc/group`.
//!
//! The config names the users and the group that may use a node's app socket
//! (`node.apps.users`, `node.apps.group`); the node checks peers by their ids. Names are
//! looked up in the two files only, not through NSS (a C library call, which would need
//! `unsafe` here): a user or group that only a directory service knows (LDAP, sssd) is
//! written as its numeric id instead.
//!
//! The parser ([`id_of`]) is a pure function over the file's text; [`user_id`] and
//! [`group_id`] read the files.

use std::fs;
use std::io;

/// The system's user database.
pub const PASSWD: &str = "/etc/passwd";
/// The system's group database.
pub const GROUP: &str = "/etc/group";

/// The uid of user `name` in [`PASSWD`]; `Ok(None)` when it has no entry.
pub fn user_id(name: &str) -> io::Result<Option<u32>> {
    Ok(id_of(&fs::read_to_string(PASSWD)?, name))
}

/// The gid of group `name` in [`GROUP`]; `Ok(None)` when it has no entry.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    Ok(id_of(&fs::read_to_string(GROUP)?, name))
}

/// The id of the entry named `name` in the text of `/etc/passwd` or `/etc/group`: both
/// are lines of `:`-separated fields with the name first and the numeric id third
/// (`alice:x:1000:1000:...`, `skywire:x:998:alice,bob`). Comments, blank lines and lines
/// that do not have that shape are skipped; the first entry of a name counts, as for the C
/// library.
pub fn id_of(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_by_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      \n\
                      alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
                      broken:x:notanumber:1:::\n\
                      alice:x:2000:2000::/:/bin/sh\n";
        assert_eq!(id_of(passwd, "root"), Some(0));
        assert_eq!(id_of(passwd, "alice"), Some(1000));
        assert_eq!(id_of(passwd, "broken"), None);
        assert_eq!(id_of(passwd, "bob"), None);
        assert_eq!(id_of(passwd, "ali"), None);
        assert_eq!(id_of(passwd, ""), None);
        let group = "root:x:0:\nskywire:x:998:alice,bob\n";
        assert_eq!(id_of(group, "skywire"), Some(998));
    }

    #[test]
    fn root_is_in_the_system_files() {
        assert_eq!(user_id("root").unwrap(), Some(0));
        assert_eq!(group_id("root").unwrap(), Some(0));
    }
}
