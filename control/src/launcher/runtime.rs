//! The running launcher: the [`Supervisor`] table under a lock, the process driver, the
//! signal server's handle and `/proc`, put together behind [`Launcher::execute`], which
//! runs one [`Command`] and returns its [`Reply`] (text for people, JSON for scripts). The
//! console, the headless socket and the GUI all call it.
//!
//! A ticker thread wakes every 50 ms to restart daemons whose backoff passed, to escalate
//! shutdowns (SIGTERM, then SIGKILL, each after the grace period) and to log the signal
//! registrations the server refused ([`super::refusals`]), and once a second samples every
//! running app's CPU and memory for `la` and the GUI. It also polls the [`Heartbeat`]
//! given with [`Launcher::set_heartbeat`] (headless viscript's systemd watchdog), so a
//! ticker that hangs (on the table's lock, say) stops the pings.
//!
//! Signal secrets: every start of an app gets a fresh secret, given to the signal server
//! before the process exists and to the process in its environment; it is revoked when
//! that process ends. It is never printed.
//!
//! Text for people ([`Reply::text`]) shows what came from an app (its output, what it
//! reports over signal, its error texts) through [`crate::terminal::safe`]; the JSON
//! ([`Reply::data`]) keeps it exact.
//!
//! Locking: the table lock is never held while waiting on the network or sleeping;
//! signal requests (ping, top, shutdown) run unlocked. Reaper threads take the lock to
//! report exits, so an exit reported during a spawn waits until the spawn is recorded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skywire_dataplane::engine::Heartbeat;

use super::command::{Command, HELP};
use super::log::LogBuffer;
use super::process::{self, SpawnSpec};
use super::refusals::RefusalLog;
use super::supervisor::{
    Exit, Instance, RestartPolicy, Sig, State, StopOrder, Supervisor, SupervisorError,
};
use crate::config::{App, Apps};
use crate::procfs;
use crate::signal::client::vars;
use crate::signal::frame::op;
use crate::signal::{Secret, SignalError, SignalHandle};
use crate::terminal;

/// How the launcher behaves.
#[derive(Debug, Clone)]
pub struct LauncherOptions {
    /// The folder apps run in (viscript's own when `None`); viscript passes the config
    /// file's folder, so relative arguments mean the same as relative `path`s.
    pub workdir: Option<PathBuf>,
    /// How long a shutdown waits before SIGTERM (after asking) and before SIGKILL.
    pub grace: Duration,
    /// How daemons are restarted.
    pub policy: RestartPolicy,
    /// How long a signal request (ping, top, shutdown) waits for the app.
    pub signal_timeout: Duration,
    /// Also write refused signal registrations to standard error (viscript does, except
    /// in the GUI, which owns the terminal). They always go to the named app's log.
    pub refusals_to_stderr: bool,
}

impl Default for LauncherOptions {
    fn default() -> Self {
        Self {
            workdir: None,
            grace: Duration::from_secs(5),
            policy: RestartPolicy::default(),
            signal_timeout: Duration::from_secs(2),
            refusals_to_stderr: false,
        }
    }
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// For people: what the console prints.
    pub text: String,
    /// For scripts: what `--json` prints.
    pub data: Value,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// No app of that name in `config.yaml`.
    #[error("no app `{name}` in the config (apps: {known})")]
    UnknownApp {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The id is unknown or the app is not running.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The app never registered over signal.
    #[error(
        "app {id} ({app}) is not a signal client: it has not registered with viscript, so it cannot be pinged (ru and sd still work)"
    )]
    NotSignalClient {
        /// The id.
        id: u64,
        /// The app's name.
        app: String,
    },
    /// The signal request failed.
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The app's executable cannot be run.
    #[error("cannot start {app}: {reason}")]
    CannotStart {
        /// The app's name.
        app: String,
        /// Why not.
        reason: String,
    },
}

impl LauncherError {
    /// The error kind on the headless socket: `not_found` (unknown app or id),
    /// `failed` (anything else).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownApp { .. } | Self::Supervisor(SupervisorError::UnknownId(_)) => {
                "not_found"
            }
            _ => "failed",
        }
    }
}

/// A row of `la` and of the GUI's list.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Sequence id.
    pub id: u64,
    /// App name.
    pub app: String,
    /// Arguments.
    pub args: Vec<String>,
    /// A daemon.
    pub daemon: bool,
    /// Live process id.
    pub pid: Option<u32>,
    /// State word.
    pub state: &'static str,
    /// How it ended, or when it restarts, or why it failed.
    pub detail: String,
    /// Seconds since the current process started.
    pub uptime_secs: Option<u64>,
    /// Restarts so far.
    pub restarts: u32,
    /// Registered over signal.
    pub signal: bool,
    /// CPU % over the last second.
    pub cpu_percent: Option<f64>,
    /// Resident memory in bytes.
    pub rss_bytes: Option<u64>,
}

struct Table {
    sup: Supervisor,
    logs: HashMap<u64, Arc<LogBuffer>>,
    /// Last sample and the CPU % computed from the one before, per id.
    samples: HashMap<u64, (procfs::Sample, Option<f64>)>,
    /// Refused signal registrations.
    refusals: RefusalLog,
}

struct Inner {
    apps: Apps,
    table: Mutex<Table>,
    signal: SignalHandle,
    options: LauncherOptions,
    stop: AtomicBool,
    quit: AtomicBool,
    /// Polled by the ticker after every tick.
    heartbeat: Mutex<Option<Heartbeat>>,
}

/// The launcher; cheap to clone (shared).
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How often the ticker wakes.
const TICK: Duration = Duration::from_millis(50);

impl Launcher {
    /// A launcher for `apps`, whose apps register with the signal server behind `signal`.
    /// Starts the ticker thread.
    pub fn new(
        apps: Apps,
        signal: SignalHandle,
        options: LauncherOptions,
    ) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            apps,
            table: Mutex::new(Table {
                sup: Supervisor::new(options.policy, options.grace),
                logs: HashMap::new(),
                samples: HashMap::new(),
                refusals: RefusalLog::new(),
            }),
            signal,
            options,
            stop: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            heartbeat: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        thread::Builder::new()
            .name("viscript-tick".to_owned())
            .spawn(move || tick_loop(&weak))?;
        Ok(Self { inner })
    }

    /// Have the ticker poll `heartbeat` after every tick (the systemd watchdog,
    /// [`crate::notify::Notifier::heartbeat`]), replacing any earlier one: its beats stop
    /// when the ticker hangs. The ticker wakes every 50 ms, the finest pace it keeps.
    pub fn set_heartbeat(&self, heartbeat: Heartbeat) {
        *lock(&self.inner.heartbeat) = Some(heartbeat);
    }

    /// The configured apps.
    pub fn apps(&self) -> &Apps {
        &self.inner.apps
    }

    /// Whether `quit` was given.
    pub fn quit_requested(&self) -> bool {
        self.inner.quit.load(Ordering::Relaxed)
    }

    /// Run one command.
    pub fn execute(&self, command: &Command) -> Result<Reply, LauncherError> {
        match command {
            Command::Apps => Ok(self.apps_reply()),
            Command::Help(app) => self.help(app.as_deref()),
            Command::Start { app, args } => self.start(app, args.as_deref()),
            Command::ListApps => Ok(self.list()),
            Command::Ping(id) => self.ping(*id),
            Command::ResUsage(id) => self.res_usage(*id),
            Command::Shutdown(id) => self.shutdown_app(*id),
            Command::Attach(id) => {
                let (lines, next, alive) = self.output_since(*id, 0)?;
                Ok(Reply {
                    text: shown_lines(&lines),
                    data: json!({"id": id, "lines": lines, "next": next, "alive": alive}),
                })
            }
            Command::Quit => {
                self.inner.quit.store(true, Ordering::Relaxed);
                Ok(Reply {
                    text: "stopping every app and quitting".to_owned(),
                    data: json!({"quit": true}),
                })
            }
        }
    }

    /// The output of `id` from line `since` on, the next line's number, and whether it has
    /// a live process (or will be restarted).
    pub fn output_since(
        &self,
        id: u64,
        since: u64,
    ) -> Result<(Vec<String>, u64, bool), LauncherError> {
        let table = lock(&self.inner.table);
        let inst = table.sup.get(id).ok_or(SupervisorError::UnknownId(id))?;
        let alive = matches!(
            inst.state,
            State::Running { .. }
                | State::Stopping { .. }
                | State::Starting
                | State::Backoff { .. }
        );
        let (lines, next) = table
            .logs
            .get(&id)
            .map_or((Vec::new(), 0), |log| log.since(since));
        Ok((lines, next, alive))
    }

    /// How many signal registrations were refused since viscript started (each is logged:
    /// in the app's output when it named one of ours, and on standard error when
    /// [`LauncherOptions::refusals_to_stderr`]).
    pub fn refused_registrations(&self) -> u64 {
        lock(&self.inner.table).refusals.total()
    }

    /// The last `n` output lines of `id`.
    pub fn tail(&self, id: u64, n: usize) -> Vec<String> {
        lock(&self.inner.table)
            .logs
            .get(&id)
            .map(|log| log.tail(n))
            .unwrap_or_default()
    }

    /// Every started app, by id.
    pub fn rows(&self) -> Vec<Row> {
        let table = lock(&self.inner.table);
        let now = Instant::now();
        table
            .sup
            .iter()
            .map(|inst| self.row(inst, &table, now))
            .collect()
    }

    fn row(&self, inst: &Instance, table: &Table, now: Instant) -> Row {
        let pid = inst.state.pid();
        let detail = match &inst.state {
            State::Backoff { until, exit } => format!(
                "{}; restart in {:.1}s",
                exit.map_or_else(|| "did not start".to_owned(), |e| e.to_string()),
                until.saturating_duration_since(now).as_secs_f64()
            ),
            State::Exited(exit) | State::Stopped(Some(exit)) | State::GaveUp(Some(exit)) => {
                exit.to_string()
            }
            State::GaveUp(None) => "did not start".to_owned(),
            State::FailedToStart(reason) => reason.clone(),
            _ => String::new(),
        };
        let sample = pid.and_then(|_| table.samples.get(&inst.id));
        Row {
            id: inst.id,
            app: inst.app.clone(),
            args: inst.args.clone(),
            daemon: inst.daemon,
            pid,
            state: inst.state.word(),
            detail,
            uptime_secs: pid
                .and(inst.started_at)
                .map(|at| now.saturating_duration_since(at).as_secs()),
            restarts: inst.restarts,
            signal: self.inner.signal.is_registered(inst.id),
            cpu_percent: sample.and_then(|(_, cpu)| *cpu),
            rss_bytes: sample.and_then(|(s, _)| s.usage.rss_bytes),
        }
    }

    fn apps_reply(&self) -> Reply {
        let mut text = String::new();
        let mut data = Vec::new();
        for app in &self.inner.apps {
            let problem = path_problem(app);
            let _ = writeln!(
                text,
                "{:<24} {}{}{}",
                app.name.as_str(),
                if app.daemon { "[daemon] " } else { "" },
                app.desc,
                problem
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            );
            data.push(json!({
                "name": app.name.as_str(),
                "daemon": app.daemon,
                "desc": app.desc,
                "path": app.path.resolved(),
                "problem": problem,
            }));
        }
        if text.is_empty() {
            text.push_str("no apps configured (the `apps:` section of the config)\n");
        }
        Reply {
            text: text.trim_end().to_owned(),
            data: Value::Array(data),
        }
    }

    fn help(&self, app: Option<&str>) -> Result<Reply, LauncherError> {
        match app {
            None => {
                let names: Vec<&str> = self.inner.apps.iter().map(|a| a.name.as_str()).collect();
                let apps = if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                };
                Ok(Reply {
                    text: format!("{HELP}\napps: {apps} (`help <app>` for an app's arguments)"),
                    data: json!({"help": HELP, "apps": names}),
                })
            }
            Some(name) => {
                let app = self.app(name)?;
                let text = if app.help.is_empty() {
                    format!("{name}: no help text in the config")
                } else {
                    app.help.trim_end().to_owned()
                };
                Ok(Reply {
                    data: json!({"app": name, "help": app.help}),
                    text,
                })
            }
        }
    }

    fn app(&self, name: &str) -> Result<&App, LauncherError> {
        self.inner
            .apps
            .get(name)
            .ok_or_else(|| LauncherError::UnknownApp {
                name: name.to_owned(),
                known: self
                    .inner
                    .apps
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn start(&self, name: &str, args: Option<&[String]>) -> Result<Reply, LauncherError> {
        let app = self.app(name)?;
        if let Some(reason) = path_problem(app) {
            return Err(LauncherError::CannotStart {
                app: name.to_owned(),
                reason,
            });
        }
        let args = args.map_or_else(|| app.default_args.clone(), <[String]>::to_vec);
        let mut table = lock(&self.inner.table);
        let id = table.sup.start(name, args.clone(), app.daemon);
        table.logs.insert(id, Arc::new(LogBuffer::new()));
        match spawn_instance(&self.inner, &mut table, id) {
            Some(pid) => Ok(Reply {
                text: format!("started {name}: id {id}, pid {pid}"),
                data: json!({"id": id, "app": name, "pid": pid, "args": args}),
            }),
            None => {
                let reason = match table.sup.get(id).map(|i| &i.state) {
                    Some(State::FailedToStart(reason)) => reason.clone(),
                    _ => "spawn failed".to_owned(),
                };
                Err(LauncherError::CannotStart {
                    app: name.to_owned(),
                    reason: format!("{reason} (id {id})"),
                })
            }
        }
    }

    fn list(&self) -> Reply {
        let rows = self.rows();
        let mut text = format!(
            "{:<4} {:<20} {:<8} {:<9} {:>8} {:>8} {:<6} {:>6} {:>9}  {}",
            "ID", "APP", "PID", "STATE", "UPTIME", "RESTARTS", "SIGNAL", "CPU%", "RSS", "DETAIL"
        );
        let mut data = Vec::new();
        for row in &rows {
            let _ = write!(
                text,
                "\n{:<4} {:<20} {:<8} {:<9} {:>8} {:>8} {:<6} {:>6} {:>9}  {}",
                row.id,
                terminal::safe(&row.app).to_string(),
                row.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                row.state,
                row.uptime_secs
                    .map(format_secs)
                    .unwrap_or_else(|| "-".into()),
                row.restarts,
                if row.signal { "yes" } else { "no" },
                row.cpu_percent
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or_else(|| "-".into()),
                row.rss_bytes
                    .map(format_bytes)
                    .unwrap_or_else(|| "-".into()),
                terminal::safe(&row.detail)
            );
            data.push(json!({
                "id": row.id,
                "app": row.app,
                "args": row.args,
                "daemon": row.daemon,
                "pid": row.pid,
                "state": row.state,
                "detail": row.detail,
                "uptime_secs": row.uptime_secs,
                "restarts": row.restarts,
                "signal": row.signal,
                "cpu_percent": row.cpu_percent,
                "rss_bytes": row.rss_bytes,
            }));
        }
        if rows.is_empty() {
            text.push_str("\n(no apps started; `start <app>`)");
        }
        let refused = lock(&self.inner.table).refusals.total();
        if refused > 0 {
            let _ = write!(
                text,
                "\n({refused} signal registrations refused: a process without the app's secret; see the app's output{})",
                if self.inner.options.refusals_to_stderr {
                    " and viscript's standard error"
                } else {
                    ""
                }
            );
        }
        Reply {
            text,
            data: Value::Array(data),
        }
    }

    /// The instance's app name, and its pid if it has a live process.
    fn lookup(&self, id: u64) -> Result<(String, Option<u32>), LauncherError> {
        let table = lock(&self.inner.table);
        let inst = table.sup.get(id).ok_or(SupervisorError::UnknownId(id))?;
        Ok((inst.app.clone(), inst.state.pid()))
    }

    fn ping(&self, id: u64) -> Result<Reply, LauncherError> {
        let (app, pid) = self.lookup(id)?;
        if pid.is_none() {
            // Exited (or not started): say so, as `ru` does, not that it never registered.
            let state = lock(&self.inner.table)
                .sup
                .get(id)
                .map_or("gone", |i| i.state.word());
            return Err(SupervisorError::NotRunning { id, state }.into());
        }
        if !self.inner.signal.is_registered(id) {
            return Err(LauncherError::NotSignalClient { id, app });
        }
        let sent = Instant::now();
        self.inner
            .signal
            .request(id, op::PING, Value::Null, self.inner.options.signal_timeout)?;
        let rtt = sent.elapsed();
        Ok(Reply {
            text: format!(
                "pong from {id} ({app}): round trip {:.3} ms",
                rtt.as_secs_f64() * 1000.0
            ),
            data: json!({"id": id, "app": app, "rtt_ms": rtt.as_secs_f64() * 1000.0}),
        })
    }

    fn res_usage(&self, id: u64) -> Result<Reply, LauncherError> {
        let (app, pid) = self.lookup(id)?;
        let state_word = || {
            lock(&self.inner.table)
                .sup
                .get(id)
                .map_or("gone", |i| i.state.word())
        };
        let pid = pid.ok_or_else(|| SupervisorError::NotRunning {
            id,
            state: state_word(),
        })?;
        let first = procfs::read(pid);
        thread::sleep(Duration::from_millis(250));
        let Some(second) = procfs::read(pid) else {
            return Err(SupervisorError::NotRunning {
                id,
                state: state_word(),
            }
            .into());
        };
        let cpu = first.and_then(|f| procfs::cpu_percent(&f, &second));
        let u = &second.usage;
        let report = if self.inner.signal.is_registered(id) {
            match self.inner.signal.request(
                id,
                op::TOP,
                Value::Null,
                self.inner.options.signal_timeout,
            ) {
                Ok(value) => value,
                Err(e) => json!({"Error": e.to_string()}),
            }
        } else {
            Value::Null
        };
        let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let mut text = format!(
            "{id} ({app}), pid {pid}:\n  cpu          {}\n  rss          {}\n  threads      {}\n  open files   {}\n  read bytes   {}\n  write bytes  {}",
            cpu.map_or_else(|| "n/a".to_owned(), |c| format!("{c:.1}%")),
            u.rss_bytes.map_or_else(|| "n/a".to_owned(), format_bytes),
            opt(u.threads),
            opt(u.open_files),
            opt(u.read_bytes),
            opt(u.write_bytes),
        );
        text.push_str(&report_text(&report));
        Ok(Reply {
            text,
            data: json!({
                "id": id,
                "app": app,
                "pid": pid,
                "cpu_percent": cpu,
                "rss_bytes": u.rss_bytes,
                "threads": u.threads,
                "open_files": u.open_files,
                "read_bytes": u.read_bytes,
                "write_bytes": u.write_bytes,
                "app_report": report,
            }),
        })
    }

    fn shutdown_app(&self, id: u64) -> Result<Reply, LauncherError> {
        let registered = self.inner.signal.is_registered(id);
        let (app, order) = {
            let mut table = lock(&self.inner.table);
            let order = table.sup.stop(id, registered, Instant::now())?;
            let app = table.sup.get(id).map(|i| i.app.clone()).unwrap_or_default();
            (app, order)
        };
        let (pid, term_now) = match order {
            StopOrder::Signal { pid, term_now } => (pid, term_now),
            StopOrder::AlreadyStopping { pid } => {
                return Ok(Reply {
                    text: format!("{id} ({app}), pid {pid}, is already shutting down"),
                    data: json!({"id": id, "app": app, "pid": pid, "how": "already"}),
                });
            }
            StopOrder::Cancelled => {
                return Ok(Reply {
                    text: format!("{id} ({app}) had no process; it will not be restarted"),
                    data: json!({"id": id, "app": app, "pid": null, "how": "cancelled"}),
                });
            }
        };
        let how = if term_now {
            let _ = process::signal_group(pid, Sig::Term);
            "SIGTERM"
        } else {
            match self.inner.signal.request(
                id,
                op::SHUTDOWN,
                Value::Null,
                self.inner.options.signal_timeout,
            ) {
                Ok(_) => "signal",
                Err(_) => {
                    let pid = lock(&self.inner.table)
                        .sup
                        .terminate_now(id, Instant::now());
                    if let Some(pid) = pid {
                        let _ = process::signal_group(pid, Sig::Term);
                    }
                    "SIGTERM (signal request failed)"
                }
            }
        };
        Ok(Reply {
            text: format!(
                "shutting down {id} ({app}), pid {pid}: asked by {how}; SIGKILL after {}s",
                self.inner.options.grace.as_secs_f64()
            ),
            data: json!({"id": id, "app": app, "pid": pid, "how": how}),
        })
    }

    /// Stop every app (SIGTERM, SIGKILL after the grace period) and wait for them all to
    /// be reaped, then stop the ticker. Call once, when leaving.
    pub fn shutdown(&self) {
        let pids = lock(&self.inner.table).sup.stop_all(Instant::now());
        for pid in pids {
            let _ = process::signal_group(pid, Sig::Term);
        }
        let deadline = Instant::now() + self.inner.options.grace * 3 + Duration::from_secs(2);
        while lock(&self.inner.table).sup.any_alive() && Instant::now() < deadline {
            thread::sleep(TICK);
        }
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.signal.stop();
    }
}

/// Why `app` cannot be started, if it cannot: its path is missing, not a file or not
/// executable.
fn path_problem(app: &App) -> Option<String> {
    let path = app.path.resolved();
    match std::fs::metadata(path) {
        Err(_) => Some(format!("path {} does not exist", path.display())),
        Ok(meta) if !meta.is_file() => Some(format!("path {} is not a file", path.display())),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Some(format!("path {} is not executable", path.display()))
        }
        Ok(_) => None,
    }
}

/// Spawn instance `id` (state `Starting`); returns its pid, or records the failure.
fn spawn_instance(inner: &Arc<Inner>, table: &mut Table, id: u64) -> Option<u32> {
    let (name, args) = table.sup.get(id).map(|i| (i.app.clone(), i.args.clone()))?;
    let log = Arc::clone(table.logs.entry(id).or_default());
    let Some(app) = inner.apps.get(&name) else {
        table
            .sup
            .spawn_failed(id, "not in the config".to_owned(), Instant::now());
        return None;
    };
    let secret = match Secret::generate() {
        Ok(secret) => secret,
        Err(e) => {
            log.push(format!("[viscript] cannot start: {e}").as_bytes());
            table.sup.spawn_failed(id, e.to_string(), Instant::now());
            return None;
        }
    };
    // Known to the server before the process exists, so its first registration counts.
    inner.signal.expect(id, secret.clone());
    let env = [
        (vars::CLIENT.to_owned(), "true".to_owned()),
        (vars::ID.to_owned(), id.to_string()),
        (
            vars::SERVER.to_owned(),
            inner.signal.local_addr().to_string(),
        ),
        (vars::SECRET.to_owned(), secret.to_hex()),
    ];
    let spec = SpawnSpec {
        path: app.path.resolved(),
        args: &args,
        env: &env,
        cwd: inner.options.workdir.as_deref(),
        outlives: app.outlives_viscript,
    };
    let weak = Arc::downgrade(inner);
    let exit_log = Arc::clone(&log);
    let spawned = process::spawn(&spec, &log, move |pid, exit: Exit| {
        exit_log.push(format!("[viscript] pid {pid} ended: {exit}").as_bytes());
        if let Some(inner) = weak.upgrade() {
            let mut table = lock(&inner.table);
            if table.sup.get(id).and_then(|i| i.state.pid()) == Some(pid) {
                inner.signal.revoke(id);
            }
            table.sup.exited(id, pid, exit, Instant::now());
        }
    });
    let now = Instant::now();
    match spawned {
        Ok(pid) => {
            log.push(format!("[viscript] started pid {pid}").as_bytes());
            table.sup.spawned(id, pid, now);
            Some(pid)
        }
        Err(e) => {
            inner.signal.revoke(id);
            log.push(format!("[viscript] cannot start: {e}").as_bytes());
            table.sup.spawn_failed(id, e.to_string(), now);
            None
        }
    }
}

/// Log the registrations the signal server refused since the last tick.
fn log_refusals(inner: &Inner, table: &mut Table, now: Instant) {
    let (refused, dropped) = inner.signal.take_refusals();
    for refused in &refused {
        let is_app = refused
            .refusal
            .id()
            .is_some_and(|id| table.sup.get(id).is_some());
        let Some(line) = table.refusals.record(refused, is_app, now) else {
            continue;
        };
        if let Some(log) = line.app.and_then(|id| table.logs.get(&id)) {
            log.push(line.text.as_bytes());
        }
        if inner.options.refusals_to_stderr {
            // The log, not `eprintln!`: that panics when standard error is gone, and this is
            // the ticker thread.
            log::warn!("skywire: viscript: {}", line.text);
        }
    }
    table.refusals.record_dropped(dropped);
}

/// Output lines as text for people: each shown escaped, one per line.
pub fn shown_lines(lines: &[String]) -> String {
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let _ = write!(text, "{}", terminal::safe(line));
    }
    text
}

/// What an app reported about itself (`Top`), as the last line of `ru`: each key and value
/// shown escaped.
fn report_text(report: &Value) -> String {
    match report {
        Value::Null => "\n  app report   none (not a signal client)".to_owned(),
        Value::Object(map) => {
            let mut text = "\n  app report  ".to_owned();
            for (k, v) in map {
                let v = v.to_string();
                let _ = write!(text, " {}={}", terminal::safe(k), terminal::safe(&v));
            }
            text
        }
        other => format!("\n  app report   {}", terminal::safe(&other.to_string())),
    }
}

/// The ticker: restarts, shutdown escalation, CPU samples.
fn tick_loop(weak: &Weak<Inner>) {
    let mut last_sample = Instant::now();
    loop {
        thread::sleep(TICK);
        let Some(inner) = weak.upgrade() else { return };
        if inner.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut table = lock(&inner.table);
        for id in table.sup.poll_restarts(now) {
            spawn_instance(&inner, &mut table, id);
        }
        for (_, pid, sig) in table.sup.poll_signals(now) {
            let _ = process::signal_group(pid, sig);
        }
        log_refusals(&inner, &mut table, now);
        if now.saturating_duration_since(last_sample) >= Duration::from_secs(1) {
            last_sample = now;
            let live: Vec<(u64, u32)> = table
                .sup
                .iter()
                .filter_map(|i| Some((i.id, i.state.pid()?)))
                .collect();
            let mut samples = HashMap::new();
            for (id, pid) in live {
                if let Some(sample) = procfs::read(pid) {
                    let cpu = table
                        .samples
                        .get(&id)
                        .and_then(|(prev, _)| procfs::cpu_percent(prev, &sample));
                    samples.insert(id, (sample, cpu));
                }
            }
            table.samples = samples;
        }
        drop(table);
        if let Some(heartbeat) = lock(&inner.heartbeat).as_mut() {
            heartbeat.poll(Instant::now());
        }
    }
}

/// `93s` as `1m33s`.
pub fn format_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Bytes in binary units.
pub fn format_bytes(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // display only
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1}GiB", b / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1}MiB", b / f64::from(1u32 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1}KiB", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_app_sends_is_shown_escaped() {
        let lines = ["\u{1b}]2;title\u{7}ok".to_owned(), "over\rwrite".to_owned()];
        assert_eq!(shown_lines(&lines), "\\e]2;title\\x07ok\nover\\rwrite");
        let report = json!({"Pid": 7, "\u{1b}[2J": "\u{9b}31m", "Name": "a\nb"});
        assert_eq!(
            report_text(&report),
            "\n  app report   \\e[2J=\"\\u{9b}31m\" Name=\"a\\nb\" Pid=7"
        );
        assert_eq!(
            report_text(&Value::Null),
            "\n  app report   none (not a signal client)"
        );
        assert_eq!(
            report_text(&json!(["\u{9b}"])),
            "\n  app report   [\"\\u{9b}\"]"
        );
    }
}
