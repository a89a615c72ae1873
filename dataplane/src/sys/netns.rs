//! Named network namespaces (`ip netns`): run a closure on a thread inside one.
//!
//! **Demo and tests only.** A node never changes namespace; this exists for the namespace
//! lab of the control crate (`skywire_control::lab`, which `skywire demo` and the root-only
//! tests use), which opens sockets and captures inside the namespaces it built. Nothing
//! else calls it, and nothing else should: it is the one `setns` of the workspace, kept
//! here because it is `unsafe`.
//!
//! `ip netns add NAME` leaves a bind mount at `/run/netns/NAME`; opening it and calling
//! `setns(fd, CLONE_NEWNET)` moves the calling thread, and only that thread, into the
//! namespace. [`in_namespace`] does that on a fresh thread, so the caller's own threads
//! never change namespace. A socket belongs to the namespace of the thread that created
//! it for its whole life, so sockets made by the closure can be returned and used from any
//! thread afterwards: they still send, receive and bind in that namespace.
//!
//! What it does not do: create or delete namespaces (that is `ip netns`, run by whoever
//! owns the topology), or change the mount namespace, so `/sys` still shows the caller's
//! view; interface lookups must go through the kernel (`if_nametoindex`, netlink).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Run `f` on a new thread that first entered the named network namespace
/// (`/run/netns/NAME`), and return its result. Needs `CAP_SYS_ADMIN` (root).
///
/// Fails, without running `f`, when the name is not a plain file name, the namespace does
/// not exist, or `setns` is refused. A panic in `f` is passed on to the caller.
pub fn in_namespace<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a namespace name"),
        ));
    }
    let path = PathBuf::from(NETNS_RUN_DIR).join(name);
    // `File::open` opens with O_CLOEXEC, so no child process inherits the descriptor.
    let namespace = File::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {}: {e}", path.display()),
        )
    })?;
    let outcome = std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(scope, move || {
                enter(&namespace).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot enter network namespace {}: {e}", path.display()),
                    )
                })?;
                Ok(f())
            })?;
        Ok::<_, io::Error>(thread.join())
    })?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Move the calling thread into the network namespace open at `namespace`.
fn enter(namespace: &File) -> io::Result<()> {
    // SAFETY: setns() takes a descriptor, live for the call (borrowed from `namespace`), and
    // a flag; with CLONE_NEWNET it moves only the calling thread, which is ours alone.
    let ret = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    super::check(ret).map(drop)
}

/// The index of the interface `name` in the calling thread's network namespace; an error
/// of kind [`io::ErrorKind::NotFound`] when there is none.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name contains a NUL byte",
        )
    })?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call; the function only
    // reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name}"),
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_anything_runs() {
        for name in ["", "a/b", "..", ".", "../etc"] {
            let err = in_namespace(name, || unreachable!()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn a_missing_namespace_is_not_found() {
        let err = in_namespace("skywire-no-such-namespace", || ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("/run/netns/"), "{err}");
    }

    #[test]
    fn loopback_has_an_index_and_nonsense_has_none() {
        assert!(interface_index("lo").unwrap() > 0);
        assert_eq!(
            interface_index("skywire-none").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
