//! The console commands, parsed: one parser for the interactive console, the headless
//! socket and the GUI's command line. Pure.
//!
//! A line is split into words at whitespace; single or double quotes keep spaces inside a
//! word (`s app 'two words'`), and a backslash escapes the next character outside single
//! quotes. Words are kept exactly as typed (the original lower-cased them).

use std::fmt;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `apps`: the configured apps.
    Apps,
    /// `help [app]`, `h`, `?`.
    Help(Option<String>),
    /// `start|s <app> [args...]`; `None` args means the app's `default_args`.
    Start {
        /// The app's name.
        app: String,
        /// The arguments typed, if any.
        args: Option<Vec<String>>,
    },
    /// `list_apps|la`.
    ListApps,
    /// `ping <id>`.
    Ping(u64),
    /// `res_usage|ru <id>`.
    ResUsage(u64),
    /// `shutdown|sd <id>`.
    Shutdown(u64),
    /// `attach <id>`: follow its output.
    Attach(u64),
    /// `quit`: stop every app and leave.
    Quit,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The first word is no command.
    #[error("unknown command `{0}` (type `help`)")]
    Unknown(String),
    /// A command's argument is missing.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// An id is not a number.
    #[error("`{0}` is not an app id (a number from `la`)")]
    BadId(String),
    /// A quote is not closed.
    #[error("unclosed quote")]
    UnclosedQuote,
}

/// The general help text.
pub const HELP: &str = "\
commands:
  apps                     the configured apps
  help [app], h, ?         this help, or an app's help text
  start|s <app> [args...]  start an app (args replace its default_args); prints its id
  list_apps|la             started apps: id, name, pid, state, uptime, restarts
  ping <id>                round trip to the app over signal
  res_usage|ru <id>        CPU, memory, threads, files and I/O of the app
  shutdown|sd <id>         stop the app (signal, then SIGTERM, then SIGKILL); prints its pid
  attach <id>              follow the app's output
  quit                     stop every app and leave";

/// Split a line into words (see the module doc).
pub fn split_words(line: &str) -> Result<Vec<String>, CommandError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(CommandError::UnclosedQuote);
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parse a typed line; `Ok(None)` for an empty line.
pub fn parse_line(line: &str) -> Result<Option<Command>, CommandError> {
    parse_words(&split_words(line)?)
}

/// Parse words (as given to `skywire viscript exec`); `Ok(None)` for none.
pub fn parse_words(words: &[String]) -> Result<Option<Command>, CommandError> {
    let Some((first, rest)) = words.split_first() else {
        return Ok(None);
    };
    let id = |usage: &'static str| -> Result<u64, CommandError> {
        match rest {
            [id] => id.parse().map_err(|_| CommandError::BadId(id.clone())),
            _ => Err(CommandError::Usage(usage)),
        }
    };
    let command = match first.as_str() {
        "apps" => Command::Apps,
        "help" | "h" | "?" => Command::Help(rest.first().cloned()),
        "start" | "s" => match rest.split_first() {
            Some((app, args)) => Command::Start {
                app: app.clone(),
                args: (!args.is_empty()).then(|| args.to_vec()),
            },
            None => return Err(CommandError::Usage("start <app> [args...]")),
        },
        "list_apps" | "la" => Command::ListApps,
        "ping" => Command::Ping(id("ping <id>")?),
        "res_usage" | "ru" => Command::ResUsage(id("res_usage <id>")?),
        "shutdown" | "sd" => Command::Shutdown(id("shutdown <id>")?),
        "attach" => Command::Attach(id("attach <id>")?),
        "quit" | "exit" => Command::Quit,
        other => return Err(CommandError::Unknown(other.to_owned())),
    };
    Ok(Some(command))
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Apps => f.write_str("apps"),
            Self::Help(None) => f.write_str("help"),
            Self::Help(Some(app)) => write!(f, "help {app}"),
            Self::Start { app, args } => {
                write!(f, "start {app}")?;
                for arg in args.iter().flatten() {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
            Self::ListApps => f.write_str("list_apps"),
            Self::Ping(id) => write!(f, "ping {id}"),
            Self::ResUsage(id) => write!(f, "res_usage {id}"),
            Self::Shutdown(id) => write!(f, "shutdown {id}"),
            Self::Attach(id) => write!(f, "attach {id}"),
            Self::Quit => f.write_str("quit"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_command_and_its_short_form() {
        let cases = [
            ("apps", Command::Apps),
            ("help", Command::Help(None)),
            ("h vpn", Command::Help(Some("vpn".into()))),
            ("? vpn", Command::Help(Some("vpn".into()))),
            ("la", Command::ListApps),
            ("list_apps", Command::ListApps),
            ("ping 3", Command::Ping(3)),
            ("ru 3", Command::ResUsage(3)),
            ("res_usage 3", Command::ResUsage(3)),
            ("sd 4", Command::Shutdown(4)),
            ("shutdown 4", Command::Shutdown(4)),
            ("attach 1", Command::Attach(1)),
            ("quit", Command::Quit),
            (
                "s apptracker 127.0.0.1:20000",
                Command::Start {
                    app: "apptracker".into(),
                    args: Some(words(&["127.0.0.1:20000"])),
                },
            ),
            (
                "start App",
                Command::Start {
                    app: "App".into(),
                    args: None,
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(line), Ok(Some(expected)), "{line}");
        }
        assert_eq!(parse_line("   "), Ok(None));
    }

    #[test]
    fn arguments_are_kept_as_typed() {
        let cmd = parse_line(r#"s Socks MyName "two  words" 'a"b' c\ d"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            cmd,
            Command::Start {
                app: "Socks".into(),
                args: Some(words(&["MyName", "two  words", "a\"b", "c d"])),
            }
        );
        assert_eq!(
            parse_line("s a ''").unwrap().unwrap().to_string(),
            "start a "
        );
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(
            parse_line("frob"),
            Err(CommandError::Unknown("frob".into()))
        );
        assert_eq!(parse_line("ping"), Err(CommandError::Usage("ping <id>")));
        assert_eq!(
            parse_line("ping 1 2"),
            Err(CommandError::Usage("ping <id>"))
        );
        assert_eq!(parse_line("sd x"), Err(CommandError::BadId("x".into())));
        assert_eq!(
            parse_line("s"),
            Err(CommandError::Usage("start <app> [args...]"))
        );
        assert_eq!(parse_line("s 'a"), Err(CommandError::UnclosedQuote));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any line parses to a command or an error, never a panic.
            #[test]
            fn any_line_is_a_command_or_an_error(line in "\\PC{0,80}") {
                let _ = parse_line(&line);
            }

            /// Plain words come back exactly as typed, case included.
            #[test]
            fn start_keeps_plain_arguments(
                app in "[A-Za-z][A-Za-z0-9_.-]{0,10}",
                args in proptest::collection::vec("[A-Za-z0-9:./=-]{1,12}", 1..6),
            ) {
                let line = format!("s {app} {}", args.join("   "));
                prop_assert_eq!(
                    parse_line(&line).unwrap(),
                    Some(Command::Start { app, args: Some(args) })
                );
            }
        }
    }
}
