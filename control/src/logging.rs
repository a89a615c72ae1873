//! The daemons' log: the `log` facade, filtered by level and module, written to standard
//! error one whole line per record, with a timestamp and a level, or with a priority prefix
//! the systemd journal understands.
//!
//! The daemons (`skywire node`, `manager`, headless `viscript`, the SOCKS and VPN apps) log
//! with `log::{error, warn, info, debug, trace}!`; [`init`] is called once, from the
//! binary's `main`, before any subcommand runs. What a command prints for the person who
//! ran it (`status`, `route add`'s errors, the demo's and the bench's reports) is not a log
//! and does not come here.
//!
//! - **Which records**: `--log-level LEVEL` when given (every module at that level), else
//!   the environment variable `SKYWIRE_LOG` in env_logger's filter syntax
//!   (`skywire_control::manager=debug,warn`; modules not named stay at `info`), else
//!   `info`. A bad `SKYWIRE_LOG` is an error ([`LogSetupError`]), not a warning: a daemon
//!   that silently logs less than asked is worse than one that does not start.
//! - **What a line looks like** ([`LineStyle`], [`write_record`]): on a terminal or in a
//!   file `2026-12-06T15:33:10.123Z INFO  skywire manager: ...` (UTC, RFC 3339 with
//!   milliseconds, the level padded to five); under the journal (`JOURNAL_STREAM` names
//!   standard error's device and inode, as `sd_journal_stream_fd(3)` documents) the
//!   sd-daemon priority prefix instead, `<6>skywire manager: ...`, because the journal
//!   keeps its own timestamps and reads the prefix as the priority.
//!
//! - **Repeated lines** ([`Limiter`]): the same message at most [`BURST`] times per
//!   [`WINDOW`]; the rest are counted, and the next time that message is shown it is
//!   preceded by one line saying how many were left out. So a fault that repeats (a peer
//!   that keeps failing, a socket error per packet) cannot flood the journal, and the
//!   reader still learns it went on.
//!
//! Invariants: logging never panics and never stops a daemon: a write to a closed standard
//! error is dropped (env_logger ignores the error), and each record is written with one
//! `write` call from a per-thread buffer, so threads' lines do not interleave. The
//! formatting is a pure function of the time, the level and the text, tested here without
//! installing a logger.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io;
use std::os::fd::AsFd;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The environment variable with the filter, in env_logger's syntax.
pub const ENV_VAR: &str = "SKYWIRE_LOG";

/// The level when neither the flag nor [`ENV_VAR`] says one.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Info;

/// Why the log could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogSetupError {
    /// `SKYWIRE_LOG` is not a filter env_logger understands.
    #[error("{ENV_VAR}={value:?}: {source}")]
    BadFilter {
        /// The variable's value as given.
        value: String,
        /// What the filter parser said.
        source: env_filter::ParseError,
    },
    /// `SKYWIRE_LOG` is not valid UTF-8.
    #[error("{ENV_VAR} is not valid UTF-8")]
    NotUnicode,
    /// A logger was installed already (a second call of [`init`]).
    #[error("the log was set up twice")]
    Twice,
}

/// How a line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStyle {
    /// `2026-12-06T15:33:10.123Z INFO  `: a terminal or a plain file.
    Plain,
    /// `<6>`: standard error is a stream of the systemd journal.
    Journal,
}

impl LineStyle {
    /// The style for this process: [`LineStyle::Journal`] when `JOURNAL_STREAM` names
    /// standard error's own device and inode (a child that inherited the variable but
    /// whose standard error was redirected elsewhere writes plain lines).
    pub fn detect() -> Self {
        let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
            return Self::Plain;
        };
        let Ok(stat) = rustix::fs::fstat(io::stderr().as_fd()) else {
            return Self::Plain;
        };
        Self::from_journal_stream(value.to_str(), stat.st_dev, stat.st_ino)
    }

    /// The style given `JOURNAL_STREAM`'s value (`DEVICE:INODE`, both decimal) and
    /// standard error's device and inode.
    pub fn from_journal_stream(value: Option<&str>, dev: u64, ino: u64) -> Self {
        let named = value
            .and_then(|v| v.split_once(':'))
            .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)));
        if named == Some((dev, ino)) {
            Self::Journal
        } else {
            Self::Plain
        }
    }
}

/// Set up the log for the whole process: `level` from `--log-level` when given, else
/// [`ENV_VAR`], else [`DEFAULT_LEVEL`]; lines in the style of [`LineStyle::detect`].
pub fn init(level: Option<LevelFilter>) -> Result<(), LogSetupError> {
    let env = match std::env::var(ENV_VAR) {
        Ok(value) => Some(value),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) if level.is_none() => {
            return Err(LogSetupError::NotUnicode);
        }
        Err(std::env::VarError::NotUnicode(_)) => None,
    };
    let logger = logger(level, env.as_deref(), LineStyle::detect())?;
    let max = logger.filter();
    let logger = RateLimited {
        inner: logger,
        limiter: Mutex::new(Limiter::default()),
    };
    log::set_boxed_logger(Box::new(logger)).map_err(|_| LogSetupError::Twice)?;
    log::set_max_level(max);
    Ok(())
}

/// The logger [`init`] installs, built without installing it: the flag's level wins over
/// the filter `env`.
pub fn logger(
    level: Option<LevelFilter>,
    env: Option<&str>,
    style: LineStyle,
) -> Result<env_logger::Logger, LogSetupError> {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(DEFAULT_LEVEL);
    match (level, env) {
        (Some(level), _) => {
            builder.filter_level(level);
        }
        (None, Some(spec)) if !spec.trim().is_empty() => {
            // env_logger's own parser only warns about a bad directive; check first.
            env_filter::Builder::new()
                .try_parse(spec)
                .map_err(|source| LogSetupError::BadFilter {
                    value: spec.to_owned(),
                    source,
                })?;
            builder.parse_filters(spec);
        }
        (None, _) => {}
    }
    builder.format(move |out, record| {
        write_record(out, style, SystemTime::now(), record.level(), record.args())
    });
    Ok(builder.build())
}

/// The same message is shown at most this many times per [`WINDOW`].
pub const BURST: u32 = 5;

/// The window of [`BURST`].
pub const WINDOW: Duration = Duration::from_secs(10);

/// Distinct messages remembered; beyond this the oldest window is forgotten (its left-out
/// count with it).
const MESSAGES: usize = 256;

/// What to do with a line ([`Limiter::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it.
    Show,
    /// Write a line saying this many of it were left out, then it.
    ShowAfter(u32),
    /// Leave it out (counted).
    Suppress,
}

/// How often each message was shown in its current window, and how many were left out.
#[derive(Debug, Default)]
pub struct Limiter {
    windows: HashMap<String, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    shown: u32,
    left_out: u32,
}

impl Limiter {
    /// Whether the line `message` may be written at `now`.
    pub fn admit(&mut self, message: &str, now: Instant) -> Admit {
        if let Some(w) = self.windows.get_mut(message) {
            if now.saturating_duration_since(w.start) >= WINDOW {
                let left_out = w.left_out;
                *w = Window {
                    start: now,
                    shown: 1,
                    left_out: 0,
                };
                return if left_out > 0 {
                    Admit::ShowAfter(left_out)
                } else {
                    Admit::Show
                };
            }
            if w.shown < BURST {
                w.shown += 1;
                return Admit::Show;
            }
            w.left_out = w.left_out.saturating_add(1);
            return Admit::Suppress;
        }
        if self.windows.len() >= MESSAGES {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.windows.remove(&oldest);
            }
        }
        self.windows.insert(
            message.to_owned(),
            Window {
                start: now,
                shown: 1,
                left_out: 0,
            },
        );
        Admit::Show
    }
}

/// The installed logger: env_logger's filter and writer behind a [`Limiter`].
struct RateLimited {
    inner: env_logger::Logger,
    limiter: Mutex<Limiter>,
}

impl Log for RateLimited {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.matches(record) {
            return;
        }
        let text = record.args().to_string();
        let admit = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(&text, Instant::now());
        match admit {
            Admit::Suppress => {}
            Admit::Show => self.inner.log(record),
            Admit::ShowAfter(n) => {
                let plural = if n == 1 { "" } else { "s" };
                self.inner.log(
                    &Record::builder()
                        .args(format_args!(
                            "(the next line was left out {n} more time{plural} in {} s)",
                            WINDOW.as_secs()
                        ))
                        .level(record.level())
                        .target(record.target())
                        .build(),
                );
                self.inner.log(record);
            }
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Write one record as a line (or lines, if the message holds newlines: under the journal
/// each gets the prefix, so none falls back to the default priority).
pub fn write_record(
    out: &mut impl io::Write,
    style: LineStyle,
    at: SystemTime,
    level: Level,
    message: &fmt::Arguments<'_>,
) -> io::Result<()> {
    let mut line = String::with_capacity(128);
    match style {
        LineStyle::Plain => {
            push_timestamp(&mut line, at);
            let _ = write!(line, " {:<5} {message}", level.as_str());
        }
        LineStyle::Journal => {
            let prefix = journal_prefix(level);
            let text = message.to_string();
            for (i, part) in text.split('\n').enumerate() {
                if i > 0 {
                    line.push('\n');
                }
                line.push_str(prefix);
                line.push_str(part);
            }
        }
    }
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// The message of a line this log wrote, without its timestamp and level or its journal
/// priority; any other line as it is. For tools that show a daemon's log lines to people
/// (the demo) or look for a message at the start of a line.
pub fn message(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('<')
        && let Some((digit, text)) = rest.split_once('>')
        && digit.len() == 1
        && digit.bytes().all(|b| b.is_ascii_digit())
    {
        return text;
    }
    // `YYYY-MM-DDTHH:MM:SS.mmmZ LEVEL `: 24 bytes of time, a space, the level padded to 5.
    let Some((time, rest)) = line.split_once(' ') else {
        return line;
    };
    let is_time = time.len() == 24 && time.ends_with('Z') && time.as_bytes().get(10) == Some(&b'T');
    let level = rest.get(..5).map(str::trim_end);
    match (is_time, level, rest.get(6..)) {
        (true, Some("ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE"), Some(text)) => text,
        _ => line,
    }
}

/// The sd-daemon(3) priority prefix of a level.
pub fn journal_prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

/// `at` in UTC as RFC 3339 with milliseconds, `2026-12-06T15:33:10.123Z`; a time before
/// 1970 (a clock set wrong) shows as the epoch.
fn push_timestamp(out: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = crate::civil::civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_is_shown_five_times_per_window_then_counted() {
        let t0 = Instant::now();
        let mut limiter = Limiter::default();
        let seen: Vec<Admit> = (0..8).map(|_| limiter.admit("lost", t0)).collect();
        assert_eq!(seen[..5], [Admit::Show; 5]);
        assert_eq!(seen[5..], [Admit::Suppress; 3]);
        // Another message is not held back by the first.
        assert_eq!(limiter.admit("other", t0), Admit::Show);
        // The next window says how many were left out, once.
        let t1 = t0 + WINDOW;
        assert_eq!(limiter.admit("lost", t1), Admit::ShowAfter(3));
        assert_eq!(limiter.admit("lost", t1), Admit::Show);
        assert_eq!(limiter.admit("lost", t1 + WINDOW * 3), Admit::Show);
    }

    #[test]
    fn the_limiter_remembers_a_bounded_number_of_messages() {
        let t0 = Instant::now();
        let mut limiter = Limiter::default();
        for i in 0..(MESSAGES as u32 + 50) {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(limiter.admit(&format!("line {i}"), at), Admit::Show);
        }
        assert_eq!(limiter.windows.len(), MESSAGES);
        // The oldest went first.
        assert!(!limiter.windows.contains_key("line 0"));
        assert!(
            limiter
                .windows
                .contains_key(&format!("line {}", MESSAGES + 49))
        );
    }

    fn line(style: LineStyle, at: SystemTime, level: Level, text: &str) -> String {
        let mut out = Vec::new();
        write_record(&mut out, style, at, level, &format_args!("{text}")).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn plain_lines_carry_utc_time_with_millis_and_a_padded_level() {
        // 2026-12-06T15:33:10Z, computed independently: `date -u -d @1796571190`.
        let t = at(1_796_571_190, 123);
        assert_eq!(
            line(
                LineStyle::Plain,
                t,
                Level::Info,
                "skywire manager: route 5e active"
            ),
            "2026-12-06T15:33:10.123Z INFO  skywire manager: route 5e active\n"
        );
        assert_eq!(
            line(LineStyle::Plain, t, Level::Error, "x"),
            "2026-12-06T15:33:10.123Z ERROR x\n"
        );
        assert_eq!(
            line(LineStyle::Plain, t, Level::Warn, "x"),
            "2026-12-06T15:33:10.123Z WARN  x\n"
        );
        assert_eq!(
            line(LineStyle::Plain, t, Level::Debug, "x"),
            "2026-12-06T15:33:10.123Z DEBUG x\n"
        );
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_time() {
        let t = at(1_796_571_190, 123);
        for (level, prefix) in [
            (Level::Error, "<3>"),
            (Level::Warn, "<4>"),
            (Level::Info, "<6>"),
            (Level::Debug, "<7>"),
            (Level::Trace, "<7>"),
        ] {
            assert_eq!(
                line(LineStyle::Journal, t, level, "skywire: stopped"),
                format!("{prefix}skywire: stopped\n")
            );
        }
        // Every line of a message keeps its priority.
        assert_eq!(
            line(LineStyle::Journal, t, Level::Warn, "one\ntwo"),
            "<4>one\n<4>two\n"
        );
    }

    #[test]
    fn dates_match_known_days() {
        // (seconds since the epoch, as `date -u -d @SECS +%FT%T` prints it)
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, "2000-02-29T00:00:00.000Z"),
            (951_868_799, "2000-02-29T23:59:59.000Z"),
            (1_709_164_800, "2024-02-29T00:00:00.000Z"),
            (1_735_689_599, "2024-12-31T23:59:59.000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000Z"),
            (253_402_300_799, "9999-12-31T23:59:59.000Z"),
        ] {
            let mut out = String::new();
            push_timestamp(&mut out, at(secs, 0));
            assert_eq!(out, want, "{secs}");
        }
        let mut out = String::new();
        push_timestamp(&mut out, UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn message_takes_off_what_the_log_put_before_it() {
        let t = at(1_796_571_190, 123);
        for style in [LineStyle::Plain, LineStyle::Journal] {
            for level in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
                let text = line(style, t, level, "skywire vpn exit: serving leases");
                assert_eq!(message(text.trim_end()), "skywire vpn exit: serving leases");
            }
        }
        for other in ["skywire: stopped", "", "<x>y", "2026 INFO  z", "  plain"] {
            assert_eq!(message(other), other);
        }
    }

    #[test]
    fn journal_stream_must_name_standard_errors_device_and_inode() {
        let from = LineStyle::from_journal_stream;
        assert_eq!(from(Some("8:1234"), 8, 1234), LineStyle::Journal);
        assert_eq!(from(Some("8:1234"), 8, 1235), LineStyle::Plain);
        assert_eq!(from(Some("9:1234"), 8, 1234), LineStyle::Plain);
        assert_eq!(from(Some("garbage"), 8, 1234), LineStyle::Plain);
        assert_eq!(from(Some(""), 8, 1234), LineStyle::Plain);
        assert_eq!(from(None, 8, 1234), LineStyle::Plain);
    }

    fn enabled(logger: &env_logger::Logger, target: &str, level: Level) -> bool {
        use log::Log as _;
        logger.enabled(&log::Metadata::builder().target(target).level(level).build())
    }

    const MANAGER: &str = "skywire_control::manager::server";
    const UPLINK: &str = "skywire_control::node::uplink";

    #[test]
    fn the_default_is_info() {
        let default = logger(None, None, LineStyle::Plain).unwrap();
        assert!(enabled(&default, MANAGER, Level::Info));
        assert!(!enabled(&default, MANAGER, Level::Debug));
        let blank = logger_with_env("  ");
        assert!(enabled(&blank, MANAGER, Level::Info));
        assert!(!enabled(&blank, MANAGER, Level::Debug));
    }

    fn logger_with_env(spec: &str) -> env_logger::Logger {
        logger(None, Some(spec), LineStyle::Plain).unwrap()
    }

    #[test]
    fn the_env_filter_names_modules_and_the_rest_stays_at_info() {
        let logger = logger_with_env("skywire_control::manager=debug");
        assert!(enabled(&logger, MANAGER, Level::Debug));
        assert!(!enabled(&logger, MANAGER, Level::Trace));
        assert!(enabled(&logger, UPLINK, Level::Info));
        assert!(!enabled(&logger, UPLINK, Level::Debug));

        let logger = logger_with_env("warn,skywire_control::node=trace");
        assert!(!enabled(&logger, MANAGER, Level::Info));
        assert!(enabled(&logger, MANAGER, Level::Warn));
        assert!(enabled(&logger, UPLINK, Level::Trace));
    }

    #[test]
    fn the_flag_wins_over_the_env_filter() {
        let warn = logger(
            Some(LevelFilter::Warn),
            Some("skywire_control::manager=debug"),
            LineStyle::Plain,
        )
        .unwrap();
        assert!(!enabled(&warn, MANAGER, Level::Info));
        assert!(enabled(&warn, MANAGER, Level::Warn));
        // Even a broken variable does not matter when the flag is given.
        assert!(logger(Some(LevelFilter::Debug), Some("a=b=c"), LineStyle::Plain).is_ok());
    }

    #[test]
    fn a_bad_env_filter_is_an_error_naming_the_variable() {
        let err = logger(None, Some("skywire=loud"), LineStyle::Plain).unwrap_err();
        assert!(matches!(err, LogSetupError::BadFilter { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("SKYWIRE_LOG=\"skywire=loud\": "), "{text}");
    }
}
