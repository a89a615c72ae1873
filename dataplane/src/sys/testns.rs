//! Tests that need root run inside a fresh network namespace, so they never touch the
//! host's interfaces or routes and leave nothing behind: the namespace, with every device
//! and route in it, disappears when the test's thread ends and its descriptors are closed.

use std::io;

/// Run `test` on a new thread moved into a new network namespace, or print why it is
/// skipped when not root. A panic in `test` fails the caller.
///
/// The namespace belongs to the thread only (`unshare(CLONE_NEWNET)` acts on the calling
/// thread), so the test harness's threads stay in the host's namespace. Sockets, TUN
/// devices and programs (`ip`) started from that thread live in the new namespace; note
/// that `/sys/class/net` does not follow (sysfs shows the namespace it was mounted in),
/// which is why the tests read interface state with `ip`.
pub(crate) fn run<F>(name: &str, test: F)
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: geteuid() takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("{name}: skipped: needs root (CI runs as root)");
        return;
    }
    let result = std::thread::spawn(move || {
        // SAFETY: unshare() takes no pointers; CLONE_NEWNET moves only this thread into a
        // new, empty network namespace.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            ret,
            0,
            "unshare(CLONE_NEWNET): {}",
            io::Error::last_os_error()
        );
        test();
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
