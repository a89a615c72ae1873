//! The process driver: spawn an app in its own process group with the signal environment
//! (and without systemd's `NOTIFY_SOCKET` and watchdog variables, which are viscript's),
//! copy its output into its [`LogBuffer`], reap it, and send signals to its group.
//!
//! Every child is waited for by a thread of its own (`Child::wait`), so none is left a
//! zombie; the exit is then reported through the caller's callback.
//!
//! Apps end with viscript, also when it is killed with SIGKILL and runs no clean-up: each
//! is started with a parent-death signal ([`die_with_parent`]). That signal follows the
//! thread that forked, so every app is forked by one thread that lives as long as the
//! process (the spawner), never by the short-lived thread that asked. An app configured
//! with `outlives_viscript: true` is started without it. Output is read line by
//! line by two more threads (stdout, stderr) that end when the pipe closes, which may be
//! after the app itself if it left children holding the pipe.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;

use crossbeam_channel::{Sender, bounded, unbounded};
use rustix::process::{Pid, Signal, kill_process_group};
use skywire_dataplane::sys::process::die_with_parent;

use super::log::LogBuffer;
use super::supervisor::{Exit, Sig};

/// What to run.
#[derive(Clone)]
pub struct SpawnSpec<'a> {
    /// The executable.
    pub path: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// Extra environment variables.
    pub env: &'a [(String, String)],
    /// The folder to run in (the caller's when `None`).
    pub cwd: Option<&'a Path>,
    /// Whether the app keeps running when viscript is gone (`outlives_viscript`).
    pub outlives: bool,
}

impl std::fmt::Debug for SpawnSpec<'_> {
    /// The environment's names only: a value may be the app's signal secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SpawnSpec")
            .field("path", &self.path)
            .field("args", &self.args)
            .field("env", &names)
            .field("cwd", &self.cwd)
            .field("outlives", &self.outlives)
            .finish()
    }
}

/// Start `spec` in a new process group (its pid is the group id); its output goes to
/// `log`, and `on_exit(pid, exit)` runs on the reaper thread when it ends. Returns the pid.
pub fn spawn(
    spec: &SpawnSpec<'_>,
    log: &Arc<LogBuffer>,
    on_exit: impl FnOnce(u32, Exit) + Send + 'static,
) -> io::Result<u32> {
    let mut command = Command::new(spec.path);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    // systemd's notification variables are viscript's own: an app that inherited them
    // could speak for viscript's unit (its readiness, its watchdog).
    for var in crate::notify::ENV_VARS {
        command.env_remove(var);
    }
    command
        .args(spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = if spec.outlives {
        command.spawn()?
    } else {
        die_with_parent(&mut command);
        from_spawner(command)?
    };
    let pid = child.id();
    if let Some(out) = child.stdout.take() {
        copy_lines(out, Arc::clone(log));
    }
    if let Some(err) = child.stderr.take() {
        copy_lines(err, Arc::clone(log));
    }
    let reaper = thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let exit = child.wait().map_or(Exit::Code(-1), exit_of);
            on_exit(pid, exit);
        });
    if let Err(e) = reaper {
        // Without a reaper the child would become a zombie: kill it. Dropping `child` in
        // the failed closure does not wait, so the error is returned after best efforts.
        let _ = signal_group(pid, Sig::Kill);
        return Err(e);
    }
    Ok(pid)
}

/// A request to the spawner thread.
struct SpawnJob {
    command: Command,
    reply: Sender<io::Result<Child>>,
}

/// The spawner thread's queue, started on first use; `None` if the thread could not start.
static SPAWNER: OnceLock<Option<Sender<SpawnJob>>> = OnceLock::new();

/// Start `command` from the spawner thread, which lives as long as the process, so a
/// parent-death signal fires only when the process goes.
fn from_spawner(command: Command) -> io::Result<Child> {
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = unbounded::<SpawnJob>();
        thread::Builder::new()
            .name("viscript-spawner".to_owned())
            .spawn(move || {
                for mut job in queue {
                    let _ = job.reply.send(job.command.spawn());
                }
            })
            .ok()
            .map(|_| jobs)
    });
    let gone = || io::Error::other("the thread that starts apps is gone");
    let jobs = spawner.as_ref().ok_or_else(gone)?;
    let (reply, answer) = bounded(1);
    jobs.send(SpawnJob { command, reply }).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// How an exit status reads.
fn exit_of(status: ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Code(-1),
    }
}

/// Copy lines from `pipe` into `log` on a thread of its own.
fn copy_lines(pipe: impl Read + Send + 'static, log: Arc<LogBuffer>) {
    let _ = thread::Builder::new()
        .name("app-output".to_owned())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                // Bounded: a line longer than the log keeps is read in pieces.
                let limit = u64::try_from(super::log::MAX_LINE).unwrap_or(u64::MAX);
                match (&mut reader).take(limit).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        log.push(&line);
                    }
                }
            }
        });
}

/// Send `sig` to the process group `pgid`.
pub fn signal_group(pgid: u32, sig: Sig) -> io::Result<()> {
    let pid = i32::try_from(pgid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad process group id"))?;
    let signal = match sig {
        Sig::Term => Signal::TERM,
        Sig::Kill => Signal::KILL,
    };
    kill_process_group(pid, signal).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawn_spec_does_not_show_environment_values() {
        let env = [("SIGNAL_CLIENT_SECRET".to_owned(), "ab".repeat(32))];
        let spec = SpawnSpec {
            path: Path::new("/bin/true"),
            args: &[],
            env: &env,
            cwd: None,
            outlives: false,
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("SIGNAL_CLIENT_SECRET"), "{shown}");
        assert!(!shown.contains(&"ab".repeat(32)), "{shown}");
    }
}
