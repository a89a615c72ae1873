//! Viscript, the app launcher: starts the apps of `config.yaml`'s `apps:` section under
//! sequence ids, restarts daemons with backoff, and pings, inspects and shuts down any of
//! them over the signal protocol or with process signals.
//!
//! Layers, bottom to top:
//!
//! - [`supervisor`]: the sans-IO core: ids (from 1, never reused), states, the daemon
//!   restart policy (exponential backoff, reset after a stable run, a give-up limit) and
//!   the shutdown escalation (ask over signal, SIGTERM, SIGKILL).
//! - [`command`]: the console commands and their parser, shared by every front end.
//! - [`log`]: each app's bounded output log.
//! - [`refusals`]: refused signal registrations as log lines, at a bounded rate.
//! - [`process`]: the driver: spawn in a new process group with `SIGNAL_CLIENT`,
//!   `SIGNAL_CLIENT_ID`, `SIGNAL_SERVER_ADDRESS` and the start's fresh
//!   `SIGNAL_CLIENT_SECRET` set, reap, signal the group.
//! - [`runtime`]: [`Launcher`]: the above behind a lock, with a ticker thread;
//!   `execute(command) -> Reply` for every front end.
//! - Front ends: [`console`] (line editing and history), [`headless`] (a Unix control
//!   socket, and the client `skywire viscript exec` uses), [`gui`] (ratatui).
//!
//! Invariants: every child is reaped by a thread of its own (no zombies); apps live in
//! their own process groups and are stopped with their groups when viscript leaves; no
//! lock is held while waiting on an app; every start of an app has a fresh signal secret,
//! passed in its environment only and never printed; whatever an app sends reaches a
//! terminal with its control characters escaped ([`crate::terminal`]), and JSON keeps it
//! exact.

pub mod command;
pub mod console;
pub mod gui;
pub mod headless;
pub mod log;
pub mod process;
pub mod refusals;
pub mod runtime;
pub mod supervisor;

pub use command::{Command, CommandError};
pub use runtime::{Launcher, LauncherError, LauncherOptions, Reply};
pub use supervisor::RestartPolicy;
