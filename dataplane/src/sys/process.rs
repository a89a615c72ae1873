//! Child processes that end with this one.
//!
//! [`die_with_parent`] asks the kernel to send the child SIGKILL when its parent goes
//! (`PR_SET_PDEATHSIG`), so that a launcher killed with SIGKILL, which runs no clean-up,
//! leaves no orphans behind. The signal follows the *thread* that forked the child, not the
//! process: the caller must spawn from a thread that lives as long as the process (the
//! viscript launcher has one for that).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Make the child `command` starts get SIGKILL when the thread that starts it ends (with
/// the process, for a thread that lives as long). A parent that is already gone by the
/// time the child runs (it died between fork and exec) kills the child at once.
pub fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec. It makes only
    // async-signal-safe system calls (prctl, getppid, raise), allocates nothing (an
    // `io::Error` from an OS code is not boxed) and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}
